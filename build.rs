//! Compiles our control protocol and our minimal subset of Ray's GCS protocol.
//! protoc comes from protoc-bin-vendored so a build needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded at this point.
        unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // Kept so a test can compare our Ray subset against the installed wheel's descriptors.
        .file_descriptor_set_path(out_dir.join("ray_hpc_descriptors.bin"))
        .compile_protos(
            &[
                "proto/control.proto",
                "proto/ray/common.proto",
                "proto/ray/autoscaler.proto",
            ],
            &["proto"],
        )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
