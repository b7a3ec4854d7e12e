//! `ray-hpc doctor` (being written).

use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: &Args, _config: Config) -> anyhow::Result<i32> {
    anyhow::bail!("`ray-hpc doctor` is not written yet")
}
