//! `ray-hpc up` (being written).

use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {}

pub fn run(
    _args: &Args,
    _config: Config,
    _config_path: Option<std::path::PathBuf>,
) -> anyhow::Result<i32> {
    anyhow::bail!("`ray-hpc up` is not written yet")
}
