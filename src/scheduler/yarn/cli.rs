//! The Hadoop client's `yarn app` commands, for ResourceManagers that do not serve the services
//! REST API: `-launch`, `-status`, `-flex`, `-decommission`, `-stop`, `-destroy`. The user is
//! simple auth's `HADOOP_USER_NAME`; the client finds the ResourceManager in its own
//! configuration (`HADOOP_CONF_DIR`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::super::command::{CommandOutput, CommandSpec};
use super::super::{Runner, SchedulerError};
use super::Api;
use super::rest::{says_gone, short};
use super::status::Service;

/// The client's exit code for "no such service" (`LauncherExitCodes.EXIT_NOT_FOUND`).
const EXIT_NOT_FOUND: i32 = 44;
/// What `-stop` of a stopped service exits with, silently, when the client speaks RPC.
const EXIT_ALREADY_STOPPED: i32 = 40;

pub struct Cli {
    pub user: String,
    pub runner: Arc<dyn Runner>,
}

impl Cli {
    fn spec(&self, args: &[&str]) -> CommandSpec {
        CommandSpec::new("env")
            .arg(format!("HADOOP_USER_NAME={}", self.user))
            .args(["yarn", "app"])
            .args(args.iter().copied())
    }

    async fn run(&self, args: &[&str]) -> Result<(CommandSpec, CommandOutput), SchedulerError> {
        let spec = self.spec(args);
        let out = self.runner.run(&spec).await?;
        Ok((spec, out))
    }

    /// Runs a command whose success is its exit status; a failure carries the client's words.
    async fn act(&self, args: &[&str]) -> Result<Result<(), String>, SchedulerError> {
        let (_, out) = self.run(args).await?;
        Ok(if out.success() {
            Ok(())
        } else {
            Err(words(&out))
        })
    }
}

/// What the client said when it failed: its last lines that say something, on one line.
fn words(out: &CommandOutput) -> String {
    let text = if out.stderr.trim().is_empty() {
        &out.stdout
    } else {
        &out.stderr
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = &lines[lines.len().saturating_sub(3)..];
    format!(
        "exit {}: {}",
        out.code.unwrap_or(-1),
        short(&tail.join(" "))
    )
}

fn refused(spec: &CommandSpec, message: String) -> SchedulerError {
    SchedulerError::Refused {
        command: spec.to_string(),
        message,
    }
}

#[async_trait::async_trait]
impl Api for Cli {
    async fn create(
        &self,
        service: &str,
        _spec: &str,
        spec_file: Option<&Path>,
    ) -> Result<(), SchedulerError> {
        let file = spec_file.ok_or_else(|| {
            SchedulerError::BadRequest("`yarn app -launch` needs the spec in a file".into())
        })?;
        let file = file.display().to_string();
        let args = ["-launch", service, &file];
        match self.act(&args).await? {
            Ok(()) => Ok(()),
            Err(why) => Err(refused(&self.spec(&args), why)),
        }
    }

    async fn status(&self, service: &str) -> Result<Option<Service>, SchedulerError> {
        let (spec, out) = self
            .run(&["-status", service, "-appTypes", "yarn-service"])
            .await?;
        if !out.success() {
            let why = words(&out);
            return if out.code == Some(EXIT_NOT_FOUND) || says_gone(&why) {
                Ok(None)
            } else {
                Err(refused(&spec, why))
            };
        }
        // The JSON is the answer; a client may log lines before it. A client that goes
        // through the REST API says "Service X not found" and exits 0.
        let Some(at) = out.stdout.find('{') else {
            return if says_gone(&out.stdout) {
                Ok(None)
            } else {
                Err(SchedulerError::BadOutput {
                    command: spec.to_string(),
                    why: format!("no service status in {:?}", short(&out.stdout)),
                })
            };
        };
        let json = &out.stdout[at..];
        serde_json::from_str(json)
            .map(Some)
            .map_err(|e| SchedulerError::BadOutput {
                command: spec.to_string(),
                why: format!("not a YARN service's status: {e}"),
            })
    }

    async fn flex(&self, service: &str, component: &str, count: u64) -> Result<(), SchedulerError> {
        let count = count.to_string();
        let args = ["-flex", service, "-component", component, &count];
        match self.act(&args).await? {
            Ok(()) => Ok(()),
            Err(why) => Err(refused(&self.spec(&args), why)),
        }
    }

    async fn decommission(
        &self,
        service: &str,
        instances: &BTreeMap<&str, Vec<&str>>,
    ) -> Result<bool, SchedulerError> {
        let names: Vec<&str> = instances.values().flatten().copied().collect();
        let list = names.join(",");
        let args = ["-decommission", service, "-instances", &list];
        match self.act(&args).await? {
            Ok(()) => Ok(true),
            // A client from before Hadoop 3.3.
            Err(why) if why.contains("Unrecognized option") => Ok(false),
            Err(why) if says_gone(&why) => Ok(true),
            Err(why) => Err(refused(&self.spec(&args), why)),
        }
    }

    async fn stop(&self, service: &str) -> Result<(), SchedulerError> {
        let args = ["-stop", service];
        match self.act(&args).await? {
            Ok(()) => Ok(()),
            Err(why)
                if says_gone(&why)
                    || [EXIT_NOT_FOUND, EXIT_ALREADY_STOPPED]
                        .iter()
                        .any(|code| why.starts_with(&format!("exit {code}:"))) =>
            {
                Ok(())
            }
            Err(why) => Err(refused(&self.spec(&args), why)),
        }
    }

    async fn destroy(&self, service: &str) -> Result<(), SchedulerError> {
        let args = ["-destroy", service];
        match self.act(&args).await? {
            Ok(()) => Ok(()),
            Err(why) if says_gone(&why) || why.starts_with(&format!("exit {EXIT_NOT_FOUND}:")) => {
                Ok(())
            }
            Err(why) => Err(refused(&self.spec(&args), why)),
        }
    }
}
