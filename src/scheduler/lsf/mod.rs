//! IBM Spectrum LSF (and the LSF-compatible OpenLava family): the allocation from LSB_*
//! variables and this machine's hostname, host addresses by name resolution, fan-out as one
//! `blaunch` (or one `lsrun` per host where there is no blaunch), and jobs through `bsub`,
//! `bjobs` and `bkill`. lsf/fixtures/README.md gives every LSF behaviour relied on here, with
//! its source.
//!
//! - [`parse`]: host lists, the host file, and the commands' output, bounded.
//! - [`render`]: typed job requests as `#BSUB` scripts.

pub mod parse;
pub mod render;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::IpAddr;
use std::process::Command;
use std::sync::{Arc, OnceLock};

use futures_util::StreamExt;
use serde::Deserialize;

use self::parse::{
    BJOBS_FIELDS, bkill_says_gone, is_job_id, parse_affinity_hostfile, parse_bjobs_json,
    parse_bjobs_table, parse_bsub_id, parse_hostfile, parse_mcpu_hosts, parse_slot_list,
    says_not_found, says_unknown_option, shorten,
};
use super::command::{CommandError, CommandOutput, CommandSpec, DEFAULT_TIMEOUT, batches};
use super::settings::{self, SettingKey, SettingKind, SettingsSchema};
use super::{
    Adapter, Allocation, Env, Host, JobInfo, JobRequest, Runner, Scheduler, SchedulerError, Setup,
    shell_join, shell_quote,
};
use crate::discovery::{GpuGrant, NodeGrant};

pub const NAME: &str = "lsf";

/// The host list variables, in the order they are trusted.
const HOSTFILE_VAR: &str = "LSB_DJOB_HOSTFILE";
const MCPU_VAR: &str = "LSB_MCPU_HOSTS";
const HOSTS_VAR: &str = "LSB_HOSTS";
/// Per-task CPU lists, when the job asked for affinity.
const AFFINITY_VAR: &str = "LSB_AFFINITY_HOSTFILE";

/// The longest one argument may be (the kernel's MAX_ARG_STRLEN is 128 KiB): blaunch takes the
/// other hosts as one `-z` argument.
const MAX_ARG_BYTES: usize = 120 * 1024;

/// How many host names are resolved at once.
const RESOLVE_CONCURRENCY: usize = 32;

/// `[lsf]` in the config file.
pub static SETTINGS: SettingsSchema = SettingsSchema {
    section: NAME,
    keys: &[
        // Extra `#BSUB` lines for every job script `ray-hpc up` and the autoscaler write.
        SettingKey {
            name: "extra_directives",
            kind: SettingKind::TextList(render::directive_problem),
        },
        // How agents are started on the job's other hosts: "auto", "blaunch" or "lsrun".
        SettingKey {
            name: "launcher",
            kind: SettingKind::Text(launcher_problem),
        },
        // How bjobs is read: "auto", "json" (-o -json, LSF 10.1+) or "table" (-w).
        SettingKey {
            name: "bjobs_format",
            kind: SettingKind::Text(bjobs_format_problem),
        },
        // The signal of the walltime warning (`#BSUB -wa SIG -wt 2`): "URG" (default; Ray's
        // processes ignore it, ray-hpc's agents take it as the warning), "USR1", or "none"
        // for schedulers without -wa (the OpenLava family).
        SettingKey {
            name: "warning_signal",
            kind: SettingKind::Text(warning_signal_problem),
        },
    ],
    example: "[lsf]\n\
              extra_directives = [\"#BSUB -x\", \"#BSUB -app ray\"]\n\
              launcher = \"lsrun\"\n\
              bjobs_format = \"table\"\n\
              warning_signal = \"none\"\n",
};

fn one_of(value: &str, allowed: &[&str]) -> Option<String> {
    (!allowed.contains(&value)).then(|| format!("must be one of {}", allowed.join(", ")))
}

fn launcher_problem(value: &str) -> Option<String> {
    one_of(value, &["auto", "blaunch", "lsrun"])
}

fn warning_signal_problem(value: &str) -> Option<String> {
    one_of(value, &["URG", "USR1", "none"])
}

fn bjobs_format_problem(value: &str) -> Option<String> {
    one_of(value, &["auto", "json", "table"])
}

/// How agents are started on the other hosts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Launcher {
    /// blaunch when it is on PATH, else lsrun.
    #[default]
    Auto,
    /// One `blaunch -z "<hosts>"` (IBM LSF).
    Blaunch,
    /// One `lsrun -m <host>` per host (the OpenLava family has no blaunch).
    Lsrun,
}

/// How bjobs is asked and read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum BjobsFormat {
    /// JSON, falling back to the table (for good) when bjobs has no `-o`/`-json`.
    #[default]
    Auto,
    Json,
    Table,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LsfSettings {
    #[serde(default)]
    extra_directives: Vec<String>,
    #[serde(default)]
    launcher: Launcher,
    #[serde(default)]
    bjobs_format: BjobsFormat,
    #[serde(default = "default_warning_signal")]
    warning_signal: String,
}

fn default_warning_signal() -> String {
    "URG".into()
}

impl Default for LsfSettings {
    fn default() -> Self {
        LsfSettings {
            extra_directives: vec![],
            launcher: Launcher::default(),
            bjobs_format: BjobsFormat::default(),
            warning_signal: default_warning_signal(),
        }
    }
}

impl LsfSettings {
    /// The walltime warning's signal; None when the section says "none".
    fn warning(&self) -> Option<&str> {
        (self.warning_signal != "none").then_some(self.warning_signal.as_str())
    }
}

pub static ADAPTER: Adapter = Adapter {
    name: NAME,
    inside_job: |env| env.get("LSB_JOBID").is_some_and(|v| !v.is_empty()),
    submit_tool: Some("bsub"),
    settings: Some(&SETTINGS),
    directive_problem: Some(render::directive_problem),
    open: |setup| Ok(Box::new(Lsf::open(setup)?)),
};

pub struct Lsf {
    env: Env,
    settings: LsfSettings,
    runner: Arc<dyn Runner>,
    hostname: String,
    /// The bjobs format `auto` settled on, once a bjobs call has told.
    settled_format: OnceLock<BjobsFormat>,
}

/// Which jobs one bjobs call asks about.
#[derive(Debug, Clone, Copy)]
enum Selector<'a> {
    Ids(&'a [String]),
    /// This user's unfinished jobs of this name.
    Name(&'a str),
}

/// The launcher `[lsf] launcher` comes to on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Launch {
    Blaunch,
    Lsrun,
}

/// What the JSON form of bjobs answered.
enum JsonAnswer {
    Jobs(Vec<JobInfo>),
    /// This bjobs has no `-o`/`-json`; its words.
    NoJson(CommandError),
}

fn bad(variable: &str, value: &str, why: impl Into<String>) -> SchedulerError {
    SchedulerError::BadVariable {
        variable: variable.into(),
        value: shorten(value),
        why: why.into(),
    }
}

/// The first DNS label, lowercased: `n1.cluster.example.com` → `n1`.
fn short_name(name: &str) -> String {
    name.split('.').next().unwrap_or(name).to_ascii_lowercase()
}

impl Lsf {
    pub fn open(setup: Setup) -> Result<Self, SchedulerError> {
        Ok(Lsf {
            env: setup.env,
            settings: settings::read(NAME, &setup.settings)?,
            runner: setup.runner,
            hostname: setup.hostname,
            settled_format: OnceLock::new(),
        })
    }

    fn var(&self, name: &str) -> Option<&str> {
        self.env
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    /// The allocation's hosts (in order, with their slots) and the variable they came from:
    /// the host file when it can be read, else LSB_MCPU_HOSTS, else LSB_HOSTS.
    fn hosts(&self) -> Result<(Vec<Host>, &'static str), SchedulerError> {
        if let Some(path) = self.var(HOSTFILE_VAR) {
            match open_hostfile(path) {
                Ok(file) => return Ok((parse_hostfile(HOSTFILE_VAR, path, file)?, HOSTFILE_VAR)),
                Err(why) if self.var(MCPU_VAR).is_some() || self.var(HOSTS_VAR).is_some() => {
                    tracing::warn!("{HOSTFILE_VAR}={path}: {why}; using the host list variables");
                }
                Err(why) => return Err(bad(HOSTFILE_VAR, path, why)),
            }
        }
        if let Some(v) = self.var(MCPU_VAR) {
            return Ok((parse_mcpu_hosts(MCPU_VAR, v)?, MCPU_VAR));
        }
        if let Some(v) = self.var(HOSTS_VAR) {
            return Ok((parse_slot_list(HOSTS_VAR, v)?, HOSTS_VAR));
        }
        Err(SchedulerError::NotInAllocation {
            scheduler: NAME,
            why: format!("LSB_JOBID is set, but none of {HOSTFILE_VAR}, {MCPU_VAR}, {HOSTS_VAR}"),
        })
    }

    /// The CPUs LSF's affinity scheduling bound this host's tasks to (LSB_AFFINITY_HOSTFILE,
    /// set when the job asked for affinity[]); None without one.
    fn affinity_cpus(&self, host: &str) -> Result<Option<Vec<u32>>, SchedulerError> {
        let Some(path) = self.var(AFFINITY_VAR) else {
            return Ok(None);
        };
        let file = open_hostfile(path).map_err(|why| bad(AFFINITY_VAR, path, why))?;
        parse_affinity_hostfile(AFFINITY_VAR, path, file, host)
    }

    /// Which of `hosts` this machine is: LSF names no host in a task's environment, so its
    /// hostname decides, matched whole or by its first label (LSF may use short names where
    /// the machine has a fully qualified one, or the other way round).
    fn this_host(&self, hosts: &[Host], source: &str) -> Result<String, SchedulerError> {
        let me = self.hostname.trim();
        let listed = || {
            let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
            names.join(" ")
        };
        if me.is_empty() {
            return Err(bad(
                source,
                &listed(),
                "this machine's hostname is unknown, so which of these hosts it is cannot be told",
            ));
        }
        if let Some(h) = hosts.iter().find(|h| h.name.eq_ignore_ascii_case(me)) {
            return Ok(h.name.clone());
        }
        let short = short_name(me);
        let matches: Vec<&Host> = hosts
            .iter()
            .filter(|h| short_name(&h.name) == short)
            .collect();
        match matches[..] {
            [one] => Ok(one.name.clone()),
            [] => Err(bad(
                source,
                &listed(),
                format!(
                    "this machine's hostname {me:?} is none of these hosts, by full or short name"
                ),
            )),
            _ => {
                let names: Vec<&str> = matches.iter().map(|h| h.name.as_str()).collect();
                Err(bad(
                    source,
                    &listed(),
                    format!(
                        "this machine's hostname {me:?} matches several of these hosts by short name ({})",
                        names.join(", ")
                    ),
                ))
            }
        }
    }

    fn launcher(&self) -> Result<Launch, SchedulerError> {
        match self.settings.launcher {
            Launcher::Blaunch => Ok(Launch::Blaunch),
            Launcher::Lsrun => Ok(Launch::Lsrun),
            Launcher::Auto if super::on_path("blaunch", &self.env) => Ok(Launch::Blaunch),
            Launcher::Auto if super::on_path("lsrun", &self.env) => Ok(Launch::Lsrun),
            Launcher::Auto => Err(SchedulerError::BadSettings {
                section: NAME.into(),
                why: "launcher = \"auto\" found neither blaunch nor lsrun on PATH, so agents \
                      cannot be started on the job's other hosts; put LSF's commands on PATH, or \
                      set launcher = \"blaunch\" or \"lsrun\""
                    .into(),
            }),
        }
    }

    /// The format bjobs is read in now: the configured one, or what `auto` settled on.
    fn bjobs_format(&self) -> BjobsFormat {
        match self.settings.bjobs_format {
            BjobsFormat::Auto => self
                .settled_format
                .get()
                .copied()
                .unwrap_or(BjobsFormat::Auto),
            chosen => chosen,
        }
    }

    /// One bjobs call for `sel`, in the format this LSF speaks.
    async fn bjobs(&self, sel: Selector<'_>) -> Result<Vec<JobInfo>, SchedulerError> {
        match self.bjobs_format() {
            BjobsFormat::Table => self.bjobs_table(sel).await,
            BjobsFormat::Json => match self.bjobs_json(sel).await? {
                JsonAnswer::Jobs(jobs) => Ok(jobs),
                JsonAnswer::NoJson(e) => Err(SchedulerError::BadSettings {
                    section: NAME.into(),
                    why: format!(
                        "bjobs_format = \"json\", but this bjobs has no -o/-json ({e}); set \
                         bjobs_format = \"table\" or \"auto\""
                    ),
                }),
            },
            BjobsFormat::Auto => match self.bjobs_json(sel).await? {
                JsonAnswer::Jobs(jobs) => {
                    let _ = self.settled_format.set(BjobsFormat::Json);
                    Ok(jobs)
                }
                JsonAnswer::NoJson(e) => {
                    tracing::info!(
                        "bjobs has no -o/-json here ({e}); reading its plain table from now on"
                    );
                    let _ = self.settled_format.set(BjobsFormat::Table);
                    self.bjobs_table(sel).await
                }
            },
        }
    }

    async fn bjobs_json(&self, sel: Selector<'_>) -> Result<JsonAnswer, SchedulerError> {
        let spec = match sel {
            Selector::Ids(ids) => CommandSpec::new("bjobs")
                .args(["-a", "-o", BJOBS_FIELDS, "-json"])
                .args(ids.iter().cloned()),
            Selector::Name(name) => {
                CommandSpec::new("bjobs").args(["-o", BJOBS_FIELDS, "-json", "-J", name])
            }
        };
        let out = self.runner.run(&spec).await?;
        if !out.success() && says_unknown_option(&out.stderr) {
            return Ok(JsonAnswer::NoJson(CommandError::failed(&spec, &out)));
        }
        jobs_in(&spec, out, parse_bjobs_json).map(JsonAnswer::Jobs)
    }

    async fn bjobs_table(&self, sel: Selector<'_>) -> Result<Vec<JobInfo>, SchedulerError> {
        let spec = match sel {
            Selector::Ids(ids) => CommandSpec::new("bjobs")
                .args(["-w", "-a"])
                .args(ids.iter().cloned()),
            Selector::Name(name) => CommandSpec::new("bjobs").args(["-w", "-J", name]),
        };
        let out = self.runner.run(&spec).await?;
        jobs_in(&spec, out, parse_bjobs_table)
    }
}

/// Opens the host file, refusing anything but a regular file (a FIFO would block the read).
fn open_hostfile(path: &str) -> Result<std::fs::File, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read the host file: {e}"))?;
    if !meta.is_file() {
        return Err("the host file is not a regular file".into());
    }
    std::fs::File::open(path).map_err(|e| format!("cannot read the host file: {e}"))
}

/// The jobs in a bjobs answer. bjobs exits non-zero when some job it was asked about is not
/// found (any more); that alone is no failure: those jobs are just missing from the answer.
fn jobs_in(
    spec: &CommandSpec,
    out: CommandOutput,
    parse: fn(&str) -> Result<Vec<JobInfo>, SchedulerError>,
) -> Result<Vec<JobInfo>, SchedulerError> {
    if out.success() {
        return parse(&out.stdout);
    }
    let only_not_found = out.stderr.lines().all(says_not_found);
    let said_something = !out.stderr.trim().is_empty() || !out.stdout.trim().is_empty();
    if only_not_found && said_something {
        if out.stdout.trim().is_empty() {
            return Ok(Vec::new());
        }
        return parse(&out.stdout);
    }
    Err(CommandError::failed(spec, &out).into())
}

/// Refuses ids that are not job ids before they reach a command: to bkill and bjobs, `0`
/// means every job of the user.
fn check_ids(ids: &[String]) -> Result<(), SchedulerError> {
    match ids.iter().find(|id| !is_job_id(id)) {
        Some(id) => Err(SchedulerError::BadRequest(format!(
            "{:?} is not an LSF job id (digits, with an optional [index]; 0 would mean all of \
             your jobs)",
            shorten(id)
        ))),
        None => Ok(()),
    }
}

/// The scheduler's own words for a refusal: its stderr, else its stdout.
fn refusal_words(out: &CommandOutput) -> String {
    let words = if out.stderr.trim().is_empty() {
        out.stdout.trim()
    } else {
        out.stderr.trim()
    };
    if words.is_empty() {
        match out.code {
            Some(c) => format!("bsub exited with code {c} and said nothing"),
            None => "bsub was killed by a signal".into(),
        }
    } else {
        words.to_string()
    }
}

async fn resolve_named(name: String) -> (String, Option<IpAddr>) {
    let ip = super::resolve_host(&name).await;
    (name, ip)
}

/// A `sh -c` script that starts `argv` on each host given as its positional arguments with one
/// `lsrun -m HOST` each, in the background, then waits for all of them and exits with the
/// last failure's status. A SIGTERM (how a supervisor stops the fan-out) is passed on to every
/// lsrun, which passes it on to its remote task, and the shell waits for them to end, then
/// exits 143 as a shell killed by it would, whenever the signal came.
///
/// A signal during start-up stops the loop and is passed on once every pid is known. It goes
/// out twice, a second apart: an lsrun still between fork and exec loses the first one (the
/// shell's own handler catches it there, then exec forgets it).
fn lsrun_script(argv: &[String]) -> String {
    format!(
        "rc=0; pids=''; stop=''\n\
         pass_on() {{\n\
         \x20 stop=1\n\
         \x20 kill -TERM $pids 2>/dev/null\n\
         \x20 (sleep 1; kill -TERM $pids 2>/dev/null) &\n\
         }}\n\
         trap 'stop=1' TERM INT HUP\n\
         for host in \"$@\"; do\n\
         \x20 [ -n \"$stop\" ] && break\n\
         \x20 lsrun -m \"$host\" {} &\n\
         \x20 pids=\"$pids $!\"\n\
         done\n\
         trap pass_on TERM INT HUP\n\
         [ -n \"$stop\" ] && pass_on\n\
         for pid in $pids; do wait \"$pid\" || rc=$?; done\n\
         wait\n\
         [ -n \"$stop\" ] && rc=143\n\
         exit \"$rc\"\n",
        shell_join(argv)
    )
}

/// The name the lsrun fan-out shell shows as its `$0` (in `ps` and in its messages).
const LSRUN_SHELL_NAME: &str = "ray-hpc-lsrun-fan-out";

#[async_trait::async_trait]
impl Scheduler for Lsf {
    fn name(&self) -> &'static str {
        NAME
    }

    fn allocation(&self) -> Result<Allocation, SchedulerError> {
        let job_id = self
            .var("LSB_JOBID")
            .ok_or_else(|| SchedulerError::NotInAllocation {
                scheduler: NAME,
                why: "LSB_JOBID is not set".into(),
            })?
            .trim()
            .to_string();
        let (hosts, source) = self.hosts()?;
        let this_node = self.this_host(&hosts, source)?;
        Ok(Allocation {
            scheduler: NAME,
            job_id,
            hosts,
            this_node,
        })
    }

    fn node_grant(&self, alloc: &Allocation) -> Result<NodeGrant, SchedulerError> {
        let cpus = alloc.this_host().and_then(|h| h.cpus);
        // LSF tells a job its GPUs through CUDA_VISIBLE_DEVICES, which discovery reads itself;
        // it names no memory grant in the environment.
        Ok(NodeGrant {
            cpus,
            cpu_ids: self.affinity_cpus(&alloc.this_node)?,
            memory_bytes: None,
            gpus: GpuGrant::Unknown,
        })
    }

    async fn host_addresses(
        &self,
        alloc: &Allocation,
    ) -> Result<BTreeMap<String, IpAddr>, SchedulerError> {
        let deadline = tokio::time::Instant::now() + DEFAULT_TIMEOUT;
        let names: Vec<String> = alloc.hosts.iter().map(|h| h.name.clone()).collect();
        let mut lookups = futures_util::stream::iter(names)
            .map(resolve_named)
            .buffer_unordered(RESOLVE_CONCURRENCY);
        let mut resolved = BTreeMap::new();
        loop {
            match tokio::time::timeout_at(deadline, lookups.next()).await {
                Ok(Some((name, Some(ip)))) => {
                    resolved.insert(name, ip);
                }
                Ok(Some((name, None))) => {
                    tracing::warn!("host {name} of the allocation does not resolve to an address");
                }
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(
                        "resolving the allocation's host names took over {}s; {} of {} resolved",
                        DEFAULT_TIMEOUT.as_secs(),
                        resolved.len(),
                        alloc.hosts.len()
                    );
                    break;
                }
            }
        }
        Ok(resolved)
    }

    fn fan_out(
        &self,
        alloc: &Allocation,
        argv: &[OsString],
    ) -> Result<Option<Command>, SchedulerError> {
        // The first host runs the batch script and the head.
        let others: Vec<&str> = alloc.hosts[1..].iter().map(|h| h.name.as_str()).collect();
        if others.is_empty() {
            return Ok(None);
        }
        match self.launcher()? {
            Launch::Blaunch => {
                let hosts = others.join(" ");
                if hosts.len() > MAX_ARG_BYTES {
                    return Err(SchedulerError::BadRequest(format!(
                        "the {} other hosts make a blaunch -z list of {} bytes, more than one \
                         argument may hold ({MAX_ARG_BYTES})",
                        others.len(),
                        hosts.len()
                    )));
                }
                if argv
                    .iter()
                    .any(|a| a.to_str().is_none_or(|s| shell_quote(s) != s))
                {
                    tracing::warn!(
                        "an agent argument holds characters a shell treats specially; blaunch \
                         passes arguments on like rsh does"
                    );
                }
                tracing::info!(
                    "starting agents on {} host(s) with one blaunch",
                    others.len()
                );
                let mut cmd = Command::new("blaunch");
                cmd.arg("-z").arg(hosts).args(argv);
                Ok(Some(cmd))
            }
            Launch::Lsrun => {
                let argv: Vec<String> = argv
                    .iter()
                    .map(|a| {
                        a.to_str().map(str::to_string).ok_or_else(|| {
                            SchedulerError::BadRequest(format!(
                                "the agent argument {a:?} is not UTF-8, so it cannot be passed \
                                 through lsrun's shell"
                            ))
                        })
                    })
                    .collect::<Result<_, _>>()?;
                tracing::info!(
                    "starting agents on {} host(s) with one lsrun each (no blaunch)",
                    others.len()
                );
                let mut cmd = Command::new("sh");
                cmd.arg("-c")
                    .arg(lsrun_script(&argv))
                    .arg(LSRUN_SHELL_NAME)
                    .args(others);
                Ok(Some(cmd))
            }
        }
    }

    fn render_job(&self, req: &JobRequest) -> Result<String, SchedulerError> {
        let mut req = req.clone();
        req.directives = self
            .settings
            .extra_directives
            .iter()
            .chain(&req.directives)
            .cloned()
            .collect();
        render::render(&req, self.settings.warning())
    }

    async fn submit(&self, script: &str, _req: &JobRequest) -> Result<String, SchedulerError> {
        let spec = CommandSpec::new("bsub").stdin(script);
        let out = self.runner.run(&spec).await?;
        if !out.success() {
            // LSF's own words: "Too many processors requested. Job not submitted." and the like.
            return Err(SchedulerError::Refused {
                command: "bsub".into(),
                message: refusal_words(&out),
            });
        }
        parse_bsub_id(&out.stdout).map_err(|e| {
            let said = format!("{}\n{}", out.stdout, out.stderr);
            if said.contains("not submitted") {
                SchedulerError::Refused {
                    command: "bsub".into(),
                    message: refusal_words(&out),
                }
            } else {
                e
            }
        })
    }

    async fn query(&self, job_ids: &[String]) -> Result<Vec<JobInfo>, SchedulerError> {
        check_ids(job_ids)?;
        let mut jobs = Vec::new();
        for batch in batches(job_ids) {
            jobs.extend(self.bjobs(Selector::Ids(batch)).await?);
        }
        Ok(jobs)
    }

    async fn query_named(&self, name: &str) -> Result<Vec<JobInfo>, SchedulerError> {
        self.bjobs(Selector::Name(name)).await
    }

    async fn cancel(&self, job_ids: &[String]) -> Result<(), SchedulerError> {
        check_ids(job_ids)?;
        for batch in batches(job_ids) {
            let spec = CommandSpec::new("bkill").args(batch.iter().cloned());
            let out = self.runner.run(&spec).await?;
            let gone_already = bkill_says_gone(&out.stderr) && !out.stderr.trim().is_empty();
            if !out.success() && !gone_already {
                return Err(CommandError::failed(&spec, &out).into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
