//! `ray-hpc completions SHELL`: a completion script for bash, zsh, fish, elvish or PowerShell,
//! generated from the same definitions as the commands, so it cannot drift from them.

use clap_complete::Shell;

const NAME: &str = "ray-hpc";

#[derive(clap::Args)]
#[command(after_help = "\
Install, for example:
  bash: ray-hpc completions bash > ~/.local/share/bash-completion/completions/ray-hpc
  zsh:  ray-hpc completions zsh > ~/.zfunc/_ray-hpc   (with ~/.zfunc in $fpath before compinit)
  fish: ray-hpc completions fish > ~/.config/fish/completions/ray-hpc.fish")]
pub struct Args {
    /// The shell to complete in.
    shell: Shell,
}

/// `command` is the whole command line interface, `version` its `--version`.
pub fn run(args: &Args, command: &clap::Command, version: &'static str) -> i32 {
    let mut visible = without_hidden(command, NAME).version(version);
    clap_complete::generate(args.shell, &mut visible, NAME, &mut std::io::stdout());
    0
}

/// The command without its hidden subcommands (the agents'), which clap_complete would offer.
fn without_hidden(command: &clap::Command, name: &'static str) -> clap::Command {
    clap::Command::new(name)
        .args(command.get_arguments().cloned())
        .subcommand_required(command.is_subcommand_required_set())
        .subcommands(
            command
                .get_subcommands()
                .filter(|s| !s.is_hide_set())
                .cloned(),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_offer_the_commands_but_not_the_hidden_agents() {
        use clap::CommandFactory;
        let cmd = crate::cli::Cli::command();
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut without_hidden(&cmd, NAME), NAME, &mut out);
            let script = String::from_utf8(out).unwrap();
            for word in ["up", "request-resources", "cpus-per-node", "scheduler"] {
                assert!(script.contains(word), "{shell}: {word} missing");
            }
            assert!(!script.contains("watchdog"), "{shell}: {script}");
        }
    }
}
