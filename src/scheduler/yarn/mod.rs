//! Apache Hadoop YARN: a cluster is one YARN service, created, read, grown and ended through
//! the ResourceManager's services REST API (`/app/v1`, simple auth with `user.name`), or the
//! Hadoop client's `yarn app` commands where the API is off. The head runs in component
//! `ray-head`, workers in `ray-worker[-<type>]` components; the autoscaler flexes a worker
//! component up by one, and takes away exactly the instance it drained
//! (`decommissioned_instances`). yarn/fixtures/README.md gives every YARN behaviour relied on
//! here, with its source.
//!
//! - [`spec`]: the service spec of a cluster, and the names of its parts.
//! - [`status`]: a service's status as ray-hpc's jobs.
//! - [`rest`] and [`cli`]: the two ways to YARN, behind [`Api`].

pub mod cli;
pub mod rest;
pub mod spec;
pub mod status;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde::Deserialize;

use self::cli::Cli;
use self::rest::{Rest, is_api_off};
use self::spec::{Artifact, Context, HEAD_COMPONENT, component_of, service_name, service_spec};
use self::status::{JobId, Service};
use super::settings::{self, SettingKey, SettingKind, SettingsSchema};
use super::{
    Adapter, Allocation, Env, Host, JobInfo, JobRequest, Scheduler, SchedulerError, Setup,
};
use crate::discovery::{GpuGrant, NodeGrant};

pub const NAME: &str = "yarn";

/// The variables ray-hpc puts in every container's environment (through the service spec).
pub mod vars {
    pub const SERVICE: &str = "RAY_HPC_YARN_SERVICE";
    /// The container's instance name (`ray-worker-cpu-3`), filled in by YARN.
    pub const INSTANCE: &str = "RAY_HPC_YARN_INSTANCE";
    /// The ResourceManager's web address; also read on a login node when `[yarn] rm` is unset.
    pub const RM: &str = "RAY_HPC_YARN_RM";
    pub const USER: &str = "RAY_HPC_YARN_USER";
    /// How to reach YARN (`[yarn] api`), handed on to the containers.
    pub const API: &str = "RAY_HPC_YARN_API";
    pub const CPUS: &str = "RAY_HPC_YARN_CPUS";
    pub const MEMORY_MB: &str = "RAY_HPC_YARN_MEMORY_MB";
    pub const GPUS: &str = "RAY_HPC_YARN_GPUS";
}

/// What the NodeManager tells every container: the host it runs on.
const NM_HOST: &str = "NM_HOST";
const CONTAINER_ID: &str = "CONTAINER_ID";

/// `[yarn]` in the config file.
pub static SETTINGS: SettingsSchema = SettingsSchema {
    section: NAME,
    keys: &[
        // The ResourceManager's web address (`up --rm` overrides it).
        SettingKey {
            name: "rm",
            kind: SettingKind::Text(rm_problem),
        },
        // The user YARN runs the service as (simple auth's `user.name`); default: $USER.
        SettingKey {
            name: "user",
            kind: SettingKind::Text(user_problem),
        },
        // A tarball YARN localizes into every container (hdfs:///..., file:///... on a shared
        // file system), with ray-hpc in it, for hosts without ray-hpc at the submitter's path.
        SettingKey {
            name: "artifact",
            kind: SettingKind::Text(artifact_problem),
        },
        // ray-hpc's path inside that tarball (default "bin/ray-hpc"); its directory goes first
        // on the containers' PATH, so Ray's `ray` may come with it.
        SettingKey {
            name: "artifact_exe",
            kind: SettingKind::Text(artifact_exe_problem),
        },
        // How to reach YARN: "auto" (the REST API; the `yarn` client when the API is off or
        // no address is known), "rest", or "cli".
        SettingKey {
            name: "api",
            kind: SettingKind::Text(api_problem),
        },
    ],
    example: "[yarn]\n\
              rm = \"http://rm.example.org:8088\"\n\
              user = \"alice\"\n\
              api = \"cli\"\n\
              artifact = \"hdfs:///apps/ray-hpc-2.60.tar.gz\"\n\
              artifact_exe = \"bin/ray-hpc\"\n",
};

fn rm_problem(value: &str) -> Option<String> {
    let ok = (value.starts_with("http://") || value.starts_with("https://"))
        && value.len() > "https://".len()
        && !value.contains(char::is_whitespace);
    (!ok).then(|| "must be the ResourceManager's web address, http://HOST:PORT".to_string())
}

fn user_problem(value: &str) -> Option<String> {
    let ok = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    (!ok).then(|| "must be a user name (letters, digits, '.', '_', '-', '@')".to_string())
}

fn artifact_problem(value: &str) -> Option<String> {
    let ok = value.contains("://") && !value.contains(char::is_whitespace);
    (!ok).then(|| "must be the tarball's URL (hdfs:///..., file:///...)".to_string())
}

fn artifact_exe_problem(value: &str) -> Option<String> {
    let ok = !value.is_empty()
        && !value.starts_with('/')
        && !value.split('/').any(|part| part == "..")
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-'));
    (!ok).then(|| "must be a relative path inside the tarball, such as bin/ray-hpc".to_string())
}

fn api_problem(value: &str) -> Option<String> {
    (!["auto", "rest", "cli"].contains(&value))
        .then(|| "must be one of auto, rest, cli".to_string())
}

/// How the adapter reaches YARN.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ApiChoice {
    /// REST, and the client for good once the ResourceManager says it has no services API.
    #[default]
    Auto,
    Rest,
    Cli,
}

impl ApiChoice {
    fn word(self) -> &'static str {
        match self {
            ApiChoice::Auto => "auto",
            ApiChoice::Rest => "rest",
            ApiChoice::Cli => "cli",
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct YarnSettings {
    rm: Option<String>,
    user: Option<String>,
    artifact: Option<String>,
    artifact_exe: Option<String>,
    #[serde(default)]
    api: Option<ApiChoice>,
}

pub static ADAPTER: Adapter = Adapter {
    name: NAME,
    inside_job: |env| env.contains_key(vars::SERVICE) && env.contains_key(CONTAINER_ID),
    submit_tool: Some("yarn"),
    settings: Some(&SETTINGS),
    directive_problem: None,
    open: |setup| Ok(Box::new(Yarn::open(setup)?)),
};

/// What ray-hpc does with a YARN service, whichever way it reaches YARN.
#[async_trait::async_trait]
pub trait Api: Send + Sync {
    /// Creates the service from its spec (JSON, also saved in `spec_file` when given).
    async fn create(
        &self,
        service: &str,
        spec: &str,
        spec_file: Option<&Path>,
    ) -> Result<(), SchedulerError>;
    /// The service's status; None when YARN does not know it.
    async fn status(&self, service: &str) -> Result<Option<Service>, SchedulerError>;
    /// Sets a component's number of containers.
    async fn flex(&self, service: &str, component: &str, count: u64) -> Result<(), SchedulerError>;
    /// Takes exactly these instances away; Ok(false) when this YARN cannot.
    async fn decommission(
        &self,
        service: &str,
        instances: &BTreeMap<&str, Vec<&str>>,
    ) -> Result<bool, SchedulerError>;
    /// Stops the service (stopped or gone already is fine).
    async fn stop(&self, service: &str) -> Result<(), SchedulerError>;
    /// Removes the stopped service from YARN (gone already is fine).
    async fn destroy(&self, service: &str) -> Result<(), SchedulerError>;
}

pub struct Yarn {
    env: Env,
    /// `[yarn] artifact` and `artifact_exe`.
    artifact: Option<(String, String)>,
    choice: ApiChoice,
    rest: Rest,
    cli: Cli,
    /// `auto` turned to the client, once the ResourceManager said it has no services API.
    settled_cli: OnceLock<()>,
}

impl Yarn {
    pub fn open(setup: Setup) -> Result<Self, SchedulerError> {
        let settings: YarnSettings = settings::read(NAME, &setup.settings)?;
        let var = |name: &str| {
            setup
                .env
                .get(name)
                .filter(|v| !v.trim().is_empty())
                .cloned()
        };
        let choice = match (settings.api, var(vars::API)) {
            (Some(choice), _) => choice,
            (None, Some(word)) => match word.as_str() {
                "rest" => ApiChoice::Rest,
                "cli" => ApiChoice::Cli,
                _ => ApiChoice::Auto,
            },
            (None, None) => ApiChoice::Auto,
        };
        let user = settings
            .user
            .clone()
            .or_else(|| var(vars::USER))
            .or_else(|| var("USER"))
            .or_else(|| var("LOGNAME"))
            .unwrap_or_else(|| "ray-hpc".into());
        let rm = resolve_rm(settings.rm.clone().or_else(|| var(vars::RM)));
        let artifact = settings.artifact.clone().map(|url| {
            let exe = settings
                .artifact_exe
                .clone()
                .unwrap_or_else(|| "bin/ray-hpc".into());
            (url, exe)
        });
        Ok(Yarn {
            env: setup.env,
            artifact,
            choice,
            rest: Rest {
                rm,
                user: user.clone(),
                runner: setup.runner.clone(),
            },
            cli: Cli {
                user,
                runner: setup.runner,
            },
            settled_cli: OnceLock::new(),
        })
    }

    fn var(&self, name: &str) -> Option<&str> {
        self.env
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    /// The way to YARN for the next call: None means REST first, the client if the API is off.
    /// `auto` without a ResourceManager address takes the client when it is installed.
    fn api(&self) -> Option<&dyn Api> {
        match self.choice {
            ApiChoice::Rest => Some(&self.rest),
            ApiChoice::Cli => Some(&self.cli),
            ApiChoice::Auto if self.settled_cli.get().is_some() => Some(&self.cli),
            ApiChoice::Auto if self.rest.rm.is_err() && super::on_path("yarn", &self.env) => {
                Some(&self.cli)
            }
            ApiChoice::Auto => None,
        }
    }

    /// Whether `auto` may turn to the client after this REST error.
    fn turn_to_cli(&self, e: &SchedulerError) -> bool {
        if self.choice == ApiChoice::Auto && is_api_off(e) && super::on_path("yarn", &self.env) {
            tracing::info!("the ResourceManager has no services REST API; using `yarn app`");
            let _ = self.settled_cli.set(());
            true
        } else {
            false
        }
    }
}

/// Runs one operation on the way to YARN `api()` chose, or on REST and then (when the
/// ResourceManager has no services API and the client is here) on the client.
macro_rules! on_yarn {
    ($yarn:expr, |$api:ident| $call:expr) => {{
        match $yarn.api() {
            Some($api) => $call.await,
            None => {
                let $api: &dyn Api = &$yarn.rest;
                match $call.await {
                    Err(e) if $yarn.turn_to_cli(&e) => {
                        let $api: &dyn Api = &$yarn.cli;
                        $call.await
                    }
                    other => other,
                }
            }
        }
    }};
}

impl Yarn {
    async fn status(&self, service: &str) -> Result<Option<Service>, SchedulerError> {
        on_yarn!(self, |api| api.status(service))
    }

    /// Creates the cluster's service; its name is the cluster's job id.
    async fn create(&self, spec_json: &str, req: &JobRequest) -> Result<String, SchedulerError> {
        let name = service_name(&req.name)?;
        let spec_file = save_spec(spec_json, req);
        let file = spec_file.as_deref();
        on_yarn!(self, |api| api.create(&name, spec_json, file))?;
        Ok(name)
    }

    /// Adds one node of `node_type` to a running cluster: flexes its component up by one and
    /// returns the instance YARN will create for it.
    async fn grow(&self, req: &JobRequest, node_type: &str) -> Result<String, SchedulerError> {
        let service = service_name(&req.name)?;
        let component = component_of(node_type);
        let refused = |message: String| SchedulerError::Refused {
            command: format!("flex {service}/{component}"),
            message,
        };
        let status = self
            .status(&service)
            .await?
            .ok_or_else(|| refused(format!("YARN has no service {service}")))?;
        let comp = status.component(&component).ok_or_else(|| {
            refused(format!(
                "service {service} has no component {component}: YARN fixes a service's \
                 components when it is created, so node type {node_type:?} must be in the config \
                 when the cluster comes up"
            ))
        })?;
        let instance = comp.next_instance();
        let count = comp.number_of_containers.unwrap_or(0) + 1;
        on_yarn!(self, |api| api.flex(&service, &component, count))?;
        Ok(format!("{service}:{instance}"))
    }

    /// Stops the service, then removes it (and its saved spec) from YARN.
    async fn end(&self, service: &str) -> Result<(), SchedulerError> {
        on_yarn!(self, |api| api.stop(service))?;
        on_yarn!(self, |api| api.destroy(service))
    }

    /// Takes these instances out of the service: exactly these, by decommissioning them
    /// (Hadoop 3.3+); where YARN lacks that, by flexing down when they are the newest.
    async fn remove_instances(
        &self,
        service: &str,
        instances: &[&JobId],
    ) -> Result<(), SchedulerError> {
        let mut by_component: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for id in instances {
            if let JobId::Instance {
                component,
                instance,
                ..
            } = id
            {
                by_component.entry(component).or_default().push(instance);
            }
        }
        if on_yarn!(self, |api| api.decommission(service, &by_component))? {
            Ok(())
        } else {
            self.flex_down(service, &by_component).await
        }
    }

    /// Decommissioning's fallback: a flex down removes the newest instances, so it removes
    /// exactly the ones asked for only when they are the newest.
    async fn flex_down(
        &self,
        service: &str,
        by_component: &BTreeMap<&str, Vec<&str>>,
    ) -> Result<(), SchedulerError> {
        let Some(status) = self.status(service).await? else {
            return Ok(());
        };
        for (name, names) in by_component {
            let Some(comp) = status.component(name) else {
                continue;
            };
            // A flex down takes the newest instances YARN holds, running or still waiting
            // for a container.
            let newest: Vec<String> = (0..comp.instances_created())
                .rev()
                .map(|i| format!("{name}-{i}"))
                .filter(|n| !comp.decommissioned_instances.contains(n))
                .take(names.len())
                .collect();
            if !names.iter().all(|n| newest.iter().any(|x| x == n)) {
                return Err(SchedulerError::Refused {
                    command: format!("flex {service}/{name}"),
                    message: format!(
                        "this YARN cannot decommission chosen instances (Hadoop 3.3+ can), and \
                         {} are not its newest {name} instances, which a flex down would take",
                        names.join(", ")
                    ),
                });
            }
            let count = comp
                .number_of_containers
                .unwrap_or(0)
                .saturating_sub(names.len() as u64);
            on_yarn!(self, |api| api.flex(service, name, count))?;
        }
        Ok(())
    }
}

/// This ray-hpc, as the commands of the jobs it renders begin (`up` puts itself first).
fn submitting_exe() -> String {
    std::env::current_exe()
        .map(|p| super::shell_quote(&p.display().to_string()))
        .unwrap_or_default()
}

/// The ResourceManager's address without a trailing slash, or why there is none.
fn resolve_rm(rm: Option<String>) -> Result<String, String> {
    let rm = rm.ok_or_else(|| {
        format!(
            "no ResourceManager address: set `rm = \"http://HOST:8088\"` in [yarn], pass \
             `ray-hpc up --rm URL`, or export {}",
            vars::RM
        )
    })?;
    match rm_problem(&rm) {
        Some(why) => Err(format!("rm = {rm:?} {why}")),
        None => Ok(rm.trim_end_matches('/').to_string()),
    }
}

/// Saves the spec next to the cluster's record (the `yarn app -launch` client takes a file;
/// it also shows what was asked for). None when there is no such place.
fn save_spec(spec_json: &str, req: &JobRequest) -> Option<PathBuf> {
    let dir = req.output.0.parent().filter(|d| d.is_dir())?;
    let path = dir.join("yarn-service.json");
    match std::fs::write(&path, spec_json) {
        Ok(()) => Some(path),
        Err(e) => {
            tracing::warn!("cannot save the service spec to {}: {e}", path.display());
            None
        }
    }
}

fn bad(variable: &str, value: &str, why: &str) -> SchedulerError {
    SchedulerError::BadVariable {
        variable: variable.into(),
        value: value.into(),
        why: why.into(),
    }
}

#[async_trait::async_trait]
impl Scheduler for Yarn {
    fn name(&self) -> &'static str {
        NAME
    }

    fn allocation(&self) -> Result<Allocation, SchedulerError> {
        let not_in = |why: String| SchedulerError::NotInAllocation {
            scheduler: NAME,
            why,
        };
        let service = self
            .var(vars::SERVICE)
            .ok_or_else(|| not_in(format!("{} is not set", vars::SERVICE)))?;
        let instance = self
            .var(vars::INSTANCE)
            .ok_or_else(|| not_in(format!("{} is not set", vars::INSTANCE)))?;
        let host = self
            .var(NM_HOST)
            .ok_or_else(|| not_in(format!("{NM_HOST} is not set")))?;
        if instance.contains("${") {
            return Err(bad(
                vars::INSTANCE,
                instance,
                "YARN did not fill in the instance name (its services framework does, for \
                 containers of a service)",
            ));
        }
        let job_id = if instance.starts_with(&format!("{HEAD_COMPONENT}-")) {
            service.to_string()
        } else {
            let id = JobId::parse(&format!("{service}:{instance}"))
                .map_err(|e| bad(vars::INSTANCE, instance, &e.to_string()))?;
            id.to_id()
        };
        let cpus = self.number(vars::CPUS)?;
        Ok(Allocation {
            scheduler: NAME,
            job_id,
            hosts: vec![Host {
                name: host.to_string(),
                cpus: cpus.map(|c| c as u32),
            }],
            this_node: host.to_string(),
        })
    }

    fn node_grant(&self, _alloc: &Allocation) -> Result<NodeGrant, SchedulerError> {
        let gpus = match self.number(vars::GPUS)? {
            Some(0) => GpuGrant::None,
            // YARN isolates the GPUs it grants (cgroups devices); NVML and
            // CUDA_VISIBLE_DEVICES say which these are.
            _ => GpuGrant::Unknown,
        };
        Ok(NodeGrant {
            cpus: self.number(vars::CPUS)?.map(|c| c as u32),
            cpu_ids: None,
            memory_bytes: self.number(vars::MEMORY_MB)?.map(|mb| mb * 1024 * 1024),
            gpus,
        })
    }

    async fn host_addresses(
        &self,
        alloc: &Allocation,
    ) -> Result<BTreeMap<String, IpAddr>, SchedulerError> {
        let mut found = BTreeMap::new();
        for host in &alloc.hosts {
            match super::resolve_host(&host.name).await {
                Some(ip) => {
                    found.insert(host.name.clone(), ip);
                }
                None => tracing::warn!("NodeManager host {} does not resolve", host.name),
            }
        }
        Ok(found)
    }

    fn fan_out(
        &self,
        _alloc: &Allocation,
        _argv: &[OsString],
    ) -> Result<Option<Command>, SchedulerError> {
        // Every container is its own one-host allocation: workers join, never fan out.
        Ok(None)
    }

    fn render_job(&self, req: &JobRequest) -> Result<String, SchedulerError> {
        service_name(&req.name)?;
        let text = match &req.node_type {
            // What a flex does: one more container of the type's component.
            Some(t) => serde_json::to_string_pretty(&serde_json::json!({
                "service": req.name,
                "component": component_of(t),
                "add_containers": 1,
            })),
            None => {
                // The client finds the ResourceManager itself; REST needs its address.
                let rm = match (&self.rest.rm, self.choice) {
                    (Ok(rm), _) => Some(rm.as_str()),
                    (Err(_), ApiChoice::Cli) => None,
                    (Err(_), ApiChoice::Auto) if super::on_path("yarn", &self.env) => None,
                    (Err(why), _) => {
                        return Err(SchedulerError::BadSettings {
                            section: NAME.into(),
                            why: why.clone(),
                        });
                    }
                };
                let spec = service_spec(
                    req,
                    &Context {
                        rm,
                        user: &self.rest.user,
                        api: self.choice.word(),
                        path: self.var("PATH"),
                        artifact: self.artifact.as_ref().map(|(url, exe)| Artifact {
                            url,
                            exe,
                            submitting_exe: submitting_exe(),
                        }),
                    },
                )?;
                serde_json::to_string_pretty(&spec)
            }
        };
        let mut text = text.map_err(|e| SchedulerError::BadRequest(e.to_string()))?;
        text.push('\n');
        Ok(text)
    }

    async fn submit(&self, script: &str, req: &JobRequest) -> Result<String, SchedulerError> {
        match &req.node_type {
            Some(t) => self.grow(req, t).await,
            None => self.create(script, req).await,
        }
    }

    async fn query(&self, job_ids: &[String]) -> Result<Vec<JobInfo>, SchedulerError> {
        let ids = parse_ids(job_ids)?;
        let mut jobs = Vec::new();
        for (service, ids) in by_service(&ids) {
            let Some(status) = self.status(service).await? else {
                continue;
            };
            jobs.extend(ids.iter().filter_map(|id| status.instance_job(id)));
        }
        Ok(jobs)
    }

    async fn query_named(&self, name: &str) -> Result<Vec<JobInfo>, SchedulerError> {
        let Ok(service) = service_name(name) else {
            return Ok(vec![]);
        };
        Ok(self
            .status(&service)
            .await?
            .map(|s| s.job(&service))
            .into_iter()
            .collect())
    }

    async fn cancel(&self, job_ids: &[String]) -> Result<(), SchedulerError> {
        let ids = parse_ids(job_ids)?;
        for (service, ids) in by_service(&ids) {
            if ids.iter().any(|id| matches!(id, JobId::Service(_))) {
                self.end(service).await?;
            } else {
                self.remove_instances(service, &ids).await?;
            }
        }
        Ok(())
    }
}

impl Yarn {
    fn number(&self, var: &str) -> Result<Option<u64>, SchedulerError> {
        self.var(var)
            .map(|v| {
                v.trim()
                    .parse()
                    .map_err(|_| bad(var, v, "not a whole number"))
            })
            .transpose()
    }
}

fn parse_ids(job_ids: &[String]) -> Result<Vec<JobId>, SchedulerError> {
    job_ids.iter().map(|id| JobId::parse(id)).collect()
}

/// The ids grouped by their service, in order: one call per service.
fn by_service(ids: &[JobId]) -> BTreeMap<&str, Vec<&JobId>> {
    let mut grouped: BTreeMap<&str, Vec<&JobId>> = BTreeMap::new();
    for id in ids {
        grouped.entry(id.service()).or_default().push(id);
    }
    grouped
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::scheduler::command::{CommandOutput, Recorded};

    /// A Yarn on a machine whose PATH has (or lacks) a `yarn` client, answering from `answers`;
    /// the PATH directory lives as long as the returned guard.
    fn yarn(
        with_client: bool,
        settings: &str,
        answers: Vec<CommandOutput>,
    ) -> (Yarn, Arc<Recorded>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        if with_client {
            std::fs::write(dir.path().join("yarn"), "").unwrap();
        }
        let env: Env = [("PATH".to_string(), dir.path().display().to_string())].into();
        let runner = Arc::new(Recorded::new(answers.into_iter().map(Ok)));
        let y = Yarn::open(Setup {
            env,
            settings: toml::from_str(settings).unwrap(),
            runner: runner.clone(),
            hostname: String::new(),
        })
        .unwrap();
        (y, runner, dir)
    }

    fn http(code: i32, body: &str) -> CommandOutput {
        CommandOutput {
            code: Some(code),
            stdout: body.into(),
            stderr: String::new(),
        }
    }

    const STATUS: &str = include_str!("../../../yarn/fixtures/service-cluster.json");
    const NO_API: &str = "<html><body>Error 404 Not Found</body></html>";

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn auto_turns_to_the_client_for_good_when_the_api_is_off() {
        let (y, runner, _path) = yarn(
            true,
            "rm = \"http://rm:8088\"",
            vec![http(404, NO_API), http(0, STATUS), http(0, STATUS)],
        );
        let jobs = block_on(y.query(&["rh-c1".into()])).unwrap();
        assert_eq!(jobs.len(), 1);
        let jobs = block_on(y.query(&["rh-c1".into()])).unwrap();
        assert_eq!(jobs.len(), 1);
        let calls: Vec<String> = runner.calls().iter().map(|c| c.to_string()).collect();
        assert!(
            calls[0].starts_with("GET")
                && calls[0].contains("http://rm:8088/app/v1/services/rh-c1"),
            "{calls:?}"
        );
        // Once told, the client only: no second try of the API.
        for call in &calls[1..] {
            assert!(call.contains("yarn app -status rh-c1"), "{calls:?}");
        }
    }

    #[test]
    fn without_a_client_the_api_being_off_is_an_error_naming_the_setting() {
        let (y, _, _path) = yarn(false, "rm = \"http://rm:8088\"", vec![http(404, NO_API)]);
        let err = block_on(y.query(&["rh-c1".into()]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("yarn.webapp.api-service.enable=true"), "{err}");
    }

    #[test]
    fn auto_without_an_address_uses_the_client_when_there_is_one() {
        let (y, runner, _path) = yarn(true, "", vec![http(0, STATUS)]);
        block_on(y.query(&["rh-c1".into()])).unwrap();
        assert!(runner.calls()[0].to_string().contains("yarn app -status"));
        let (y, _, _path) = yarn(false, "", vec![]);
        let err = block_on(y.query(&["rh-c1".into()]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no ResourceManager address"), "{err}");
    }
}
