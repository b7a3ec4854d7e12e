//! `ray-hpc status [NAME] [--json] [--watch [SECONDS]]`: every cluster at a glance, or one in
//! detail. Text and JSON render the same model (src/status/view.rs); the JSON schema is
//! documented in docs/status-json.md.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use crate::config::Config;
use crate::registry;
use crate::status::{gather, render, view};

/// The default and the shortest interval of `--watch`: each round queries the scheduler once,
/// and schedulers ask for a few seconds between queries.
const DEFAULT_WATCH_S: f64 = 2.0;
const MIN_WATCH_S: f64 = 1.0;

#[derive(clap::Args)]
pub struct Args {
    /// A cluster to show in detail (default: every cluster of yours, one line each).
    name: Option<String>,
    /// Print JSON (schema `ray-hpc.status/v1`, documented in docs/status-json.md). With
    /// --watch, one compact document per line each round.
    #[arg(long)]
    json: bool,
    /// Redraw every SECONDS (default 2, at least 1) until Ctrl-C.
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "2")]
    watch: Option<String>,
}

/// The cluster name and the watch interval. `status --watch NAME` reads NAME as the cluster,
/// since a cluster name is not a number of seconds.
fn resolve(args: &Args) -> anyhow::Result<(Option<String>, Option<Duration>)> {
    let Some(w) = &args.watch else {
        return Ok((args.name.clone(), None));
    };
    match w.trim().parse::<f64>() {
        Ok(s) if (MIN_WATCH_S..=86_400.0).contains(&s) => {
            Ok((args.name.clone(), Some(Duration::from_secs_f64(s))))
        }
        Ok(_) => anyhow::bail!(
            "--watch {w}: give an interval of at least {MIN_WATCH_S} second(s) (and at most a day)"
        ),
        Err(_) if args.name.is_none() => Ok((
            Some(w.clone()),
            Some(Duration::from_secs_f64(DEFAULT_WATCH_S)),
        )),
        Err(_) => anyhow::bail!("--watch {w}: expected a number of seconds"),
    }
}

pub fn run(args: &Args, config: Config) -> anyhow::Result<i32> {
    let (name, watch) = resolve(args)?;
    let root = registry::root()?;
    super::runtime()?.block_on(async move {
        match watch {
            None => once(&root, name.as_deref(), args.json, &config).await,
            Some(every) => watch_loop(&root, name.as_deref(), args.json, every, &config).await,
        }
    })
}

/// One round's output, or the error that makes `status NAME` exit 1.
async fn frame(
    root: &Path,
    name: Option<&str>,
    json: bool,
    compact: bool,
    config: &Config,
) -> Result<String, registry::RegistryError> {
    Ok(match name {
        None => {
            let list = gather::list(root, config).await;
            if json {
                render::list_json(&list, compact)
            } else {
                render::list_text(&list)
            }
        }
        Some(name) => {
            let v = gather::one(root, name, config).await?;
            if json {
                render::cluster_json(&v, compact)
            } else {
                render::cluster_text(&v)
            }
        }
    })
}

/// Writes to stdout; false when stdout is gone (a closed pipe), which ends `status` quietly.
fn emit(text: &str) -> bool {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .is_ok()
}

async fn once(root: &Path, name: Option<&str>, json: bool, config: &Config) -> anyhow::Result<i32> {
    match frame(root, name, json, false, config).await {
        Ok(text) => {
            emit(&if json { text + "\n" } else { text });
            Ok(0)
        }
        Err(e) => {
            eprintln!("ray-hpc: error: {e}");
            Ok(1)
        }
    }
}

async fn watch_loop(
    root: &Path,
    name: Option<&str>,
    json: bool,
    every: Duration,
    config: &Config,
) -> anyhow::Result<i32> {
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let tty = std::io::stdout().is_terminal();
    let mut first = true;
    loop {
        let result = tokio::select! {
            r = frame(root, name, json, true, config) => r,
            _ = sigint.recv() => return Ok(0),
            _ = sigterm.recv() => return Ok(0),
        };
        let stamp = view::format_unix(registry::now_unix());
        let text = match result {
            Ok(text) if json => text + "\n",
            Ok(text) => text,
            Err(e) if first => {
                eprintln!("ray-hpc: error: {e}");
                return Ok(1);
            }
            // The cluster went away mid-watch: say so and keep watching.
            Err(e) if json => format!(
                "{}\n",
                serde_json::json!({"schema": view::SCHEMA, "error": e.to_string()})
            ),
            Err(e) => format!("error: {e}\n"),
        };
        let framed = if json {
            text
        } else if tty {
            format!(
                "\x1b[H\x1b[2J\x1b[3JEvery {}s: ray-hpc status{}    {stamp}\n\n{text}",
                render::num(every.as_secs_f64()),
                name.map(|n| format!(" {n}")).unwrap_or_default()
            )
        } else {
            format!("--- {stamp} ---\n{text}")
        };
        if !emit(&framed) {
            return Ok(0);
        }
        first = false;
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = sigint.recv() => return Ok(0),
            _ = sigterm.recv() => return Ok(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(argv: &[&str]) -> anyhow::Result<(Option<String>, Option<Duration>)> {
        let cli = Cli::try_parse_from(std::iter::once("status").chain(argv.iter().copied()))?;
        resolve(&cli.args)
    }

    #[test]
    fn watch_takes_an_optional_interval_and_never_swallows_the_name() {
        let two = Some(Duration::from_secs(2));
        assert_eq!(parse(&[]).unwrap(), (None, None));
        assert_eq!(parse(&["c1"]).unwrap(), (Some("c1".into()), None));
        assert_eq!(parse(&["--watch"]).unwrap(), (None, two));
        assert_eq!(
            parse(&["--watch", "5"]).unwrap(),
            (None, Some(Duration::from_secs(5)))
        );
        assert_eq!(parse(&["c1", "--watch"]).unwrap(), (Some("c1".into()), two));
        assert_eq!(
            parse(&["c1", "--watch", "1.5"]).unwrap(),
            (Some("c1".into()), Some(Duration::from_millis(1500)))
        );
        assert_eq!(parse(&["--watch", "c1"]).unwrap(), (Some("c1".into()), two));
        assert_eq!(
            parse(&["--watch=3", "c1"]).unwrap(),
            (Some("c1".into()), Some(Duration::from_secs(3)))
        );
        assert!(parse(&["--watch", "-1"]).is_err());
        for bad in [&["--watch", "0"][..], &["--watch=-1"], &["--watch=nan"]] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains("at least 1"), "{bad:?}: {err}");
        }
        let err = parse(&["c1", "--watch", "x"]).unwrap_err().to_string();
        assert!(err.contains("number of seconds"), "{err}");
    }
}
