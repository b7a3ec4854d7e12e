//! Compiles our control protocol and our minimal subset of Ray's GCS protocol, and records the
//! git commit for `ray-hpc --version`.
//! protoc comes from protoc-bin-vendored so a build needs no system protoc.

use std::path::Path;
use std::process::Command;

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
    git_commit();
    Ok(())
}

/// Sets RAY_HPC_GIT_COMMIT for `--version`: `$RAY_HPC_GIT_COMMIT` when the builder gives it
/// (a build from a source archive), else `git rev-parse`, else "unknown" (no .git, no git).
fn git_commit() {
    println!("cargo:rerun-if-env-changed=RAY_HPC_GIT_COMMIT");
    let commit = std::env::var("RAY_HPC_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=RAY_HPC_GIT_COMMIT={}", commit.trim());
    // Rebuild the version when HEAD moves: HEAD itself, the branch it points to, and packed refs.
    // Only files that exist: cargo reruns the script every time for a missing one.
    let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git(&["rev-parse", "--git-path", branch.trim()]));
    }
    watched.push(git(&["rev-parse", "--git-path", "packed-refs"]));
    for path in watched.into_iter().flatten() {
        if Path::new(path.trim()).exists() {
            println!("cargo:rerun-if-changed={}", path.trim());
        }
    }
}

/// One git command's stdout, or None when git is missing or fails (not a repository).
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then_some(text)
}
