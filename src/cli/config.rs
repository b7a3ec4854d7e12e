//! `ray-hpc config check FILE`.

use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Check a config file: every unknown key and bad value, with line and column.
    Check { file: PathBuf },
}

pub fn run(cmd: &Command) -> anyhow::Result<i32> {
    match cmd {
        Command::Check { file } => match crate::config::check_report(file) {
            Ok(report) => {
                print!("{report}");
                Ok(0)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(1)
            }
        },
    }
}
