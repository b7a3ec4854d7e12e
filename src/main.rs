fn main() {
    std::process::exit(ray_hpc::cli::main());
}
