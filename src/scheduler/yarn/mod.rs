//! Apache Hadoop YARN: a cluster is one YARN service, created, read, grown and ended through
//! the ResourceManager's services REST API (`/app/v1`, simple auth with `user.name`). The
//! head runs in component `ray-head`, workers in `ray-worker[-<type>]` components; the
//! autoscaler flexes a worker component up by one, and takes away exactly the instance it
//! drained (`decommissioned_instances`). yarn/fixtures/README.md gives every YARN behaviour
//! relied on here, with its source.
//!
//! - [`spec`]: the service spec of a cluster, and the names of its parts.
//! - [`status`]: a service's status as ray-hpc's jobs.

pub mod spec;
pub mod status;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::IpAddr;
use std::process::Command;
use std::sync::Arc;

use serde::Deserialize;

use self::spec::{Context, HEAD_COMPONENT, component_of, service_name, service_spec};
use self::status::{JobId, Service};
use super::command::{CommandOutput, HttpRequest};
use super::settings::{self, SettingKey, SettingKind, SettingsSchema};
use super::{
    Adapter, Allocation, Env, Host, JobInfo, JobRequest, Runner, Scheduler, SchedulerError, Setup,
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
    ],
    example: "[yarn]\n\
              rm = \"http://rm.example.org:8088\"\n\
              user = \"alice\"\n",
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct YarnSettings {
    rm: Option<String>,
    user: Option<String>,
}

pub static ADAPTER: Adapter = Adapter {
    name: NAME,
    inside_job: |env| env.contains_key(vars::SERVICE) && env.contains_key(CONTAINER_ID),
    submit_tool: Some("yarn"),
    settings: Some(&SETTINGS),
    directive_problem: None,
    open: |setup| Ok(Box::new(Yarn::open(setup)?)),
};

pub struct Yarn {
    env: Env,
    settings: YarnSettings,
    runner: Arc<dyn Runner>,
}

/// A REST call's answer, sorted.
enum Answer {
    Ok(String),
    /// The API answered that there is no such service.
    NotFound,
    /// HTTP 204: the API took the request and did nothing (an older YARN that lacks it).
    NoContent,
}

impl Yarn {
    pub fn open(setup: Setup) -> Result<Self, SchedulerError> {
        Ok(Yarn {
            env: setup.env,
            settings: settings::read(NAME, &setup.settings)?,
            runner: setup.runner,
        })
    }

    fn var(&self, name: &str) -> Option<&str> {
        self.env
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    /// The ResourceManager's web address, without a trailing slash.
    fn rm(&self) -> Result<String, SchedulerError> {
        let rm = self
            .settings
            .rm
            .as_deref()
            .or_else(|| self.var(vars::RM))
            .ok_or_else(|| SchedulerError::BadSettings {
                section: NAME.into(),
                why: format!(
                    "no ResourceManager address: set `rm = \"http://HOST:8088\"` in [yarn], \
                     pass `ray-hpc up --rm URL`, or export {}",
                    vars::RM
                ),
            })?;
        if let Some(why) = rm_problem(rm) {
            return Err(SchedulerError::BadSettings {
                section: NAME.into(),
                why: format!("rm = {rm:?} {why}"),
            });
        }
        Ok(rm.trim_end_matches('/').to_string())
    }

    /// The user the services run as.
    fn user(&self) -> String {
        self.settings
            .user
            .as_deref()
            .or_else(|| self.var(vars::USER))
            .or_else(|| self.var("USER"))
            .or_else(|| self.var("LOGNAME"))
            .unwrap_or("ray-hpc")
            .to_string()
    }

    fn url(&self, path: &str) -> Result<String, SchedulerError> {
        Ok(format!(
            "{}/app/v1/{path}?user.name={}",
            self.rm()?,
            self.user()
        ))
    }

    async fn call(
        &self,
        method: &'static str,
        path: &str,
        body: Option<String>,
    ) -> Result<Answer, SchedulerError> {
        let req = HttpRequest {
            method,
            url: self.url(path)?,
            body,
        };
        let out = self.runner.http(&req).await?;
        sort_answer(&req, &out)
    }

    /// The service's status; None when YARN does not know it.
    async fn service(&self, name: &str) -> Result<Option<Service>, SchedulerError> {
        let path = format!("services/{name}");
        match self.call("GET", &path, None).await? {
            Answer::Ok(body) => {
                serde_json::from_str(&body)
                    .map(Some)
                    .map_err(|e| SchedulerError::BadOutput {
                        command: format!("GET {}", self.url(&path).unwrap_or(path.clone())),
                        why: format!("not a YARN service's status: {e}"),
                    })
            }
            Answer::NotFound => Ok(None),
            Answer::NoContent => Ok(None),
        }
    }

    /// Creates the cluster's service; its name is the cluster's job id.
    async fn create(&self, spec_json: &str, req: &JobRequest) -> Result<String, SchedulerError> {
        let name = service_name(&req.name)?;
        match self
            .call("POST", "services", Some(spec_json.to_string()))
            .await?
        {
            Answer::Ok(_) | Answer::NoContent => Ok(name),
            Answer::NotFound => Err(api_off(&self.url("services")?)),
        }
    }

    /// Adds one node of `node_type` to a running cluster: flexes its component up by one and
    /// returns the instance YARN will create for it.
    async fn grow(&self, req: &JobRequest, node_type: &str) -> Result<String, SchedulerError> {
        let service = service_name(&req.name)?;
        let component = component_of(node_type);
        let refused = |message: String| SchedulerError::Refused {
            command: format!("PUT services/{service}/components/{component}"),
            message,
        };
        let status = self
            .service(&service)
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
        let body = serde_json::json!({
            "number_of_containers": comp.number_of_containers.unwrap_or(0) + 1
        });
        let path = format!("services/{service}/components/{component}");
        match self.call("PUT", &path, Some(body.to_string())).await? {
            Answer::Ok(_) | Answer::NoContent => Ok(format!("{service}:{instance}")),
            Answer::NotFound => Err(refused(format!("YARN has no service {service}"))),
        }
    }

    /// Stops the service, then removes it (and its saved spec) from YARN.
    async fn destroy(&self, service: &str) -> Result<(), SchedulerError> {
        let path = format!("services/{service}");
        let stop = serde_json::json!({ "state": "STOPPED" }).to_string();
        match self.call("PUT", &path, Some(stop)).await {
            // Already stopped, or gone: the destroy below settles it.
            Ok(_) | Err(SchedulerError::Refused { .. }) => {}
            Err(e) => return Err(e),
        }
        match self.call("DELETE", &path, None).await {
            Ok(_) => Ok(()),
            Err(SchedulerError::Refused { message, .. }) if says_gone(&message) => Ok(()),
            Err(e) => Err(e),
        }
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
        let components: Vec<serde_json::Value> = by_component
            .iter()
            .map(|(name, names)| {
                serde_json::json!({ "name": name, "decommissioned_instances": names })
            })
            .collect();
        let body = serde_json::json!({ "components": components }).to_string();
        match self
            .call("PUT", &format!("services/{service}"), Some(body))
            .await
        {
            Ok(Answer::Ok(_)) | Ok(Answer::NotFound) => Ok(()),
            Ok(Answer::NoContent) => self.flex_down(service, &by_component).await,
            Err(SchedulerError::Refused { message, .. }) if says_gone(&message) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Decommissioning's fallback: a flex down removes the newest instances, so it removes
    /// exactly the ones asked for only when they are the newest.
    async fn flex_down(
        &self,
        service: &str,
        by_component: &BTreeMap<&str, Vec<&str>>,
    ) -> Result<(), SchedulerError> {
        let Some(status) = self.service(service).await? else {
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
                    command: format!("PUT services/{service}"),
                    message: format!(
                        "this YARN cannot decommission chosen instances (Hadoop 3.3+ can), and \
                         {} are not its newest {name} instances, which a flex down would take",
                        names.join(", ")
                    ),
                });
            }
            let n = comp.number_of_containers.unwrap_or(0);
            let body = serde_json::json!({
                "number_of_containers": n.saturating_sub(names.len() as u64)
            });
            self.call(
                "PUT",
                &format!("services/{service}/components/{name}"),
                Some(body.to_string()),
            )
            .await?;
        }
        Ok(())
    }
}

/// Sorts an HTTP answer: success, "no such service", or an error carrying YARN's words.
fn sort_answer(req: &HttpRequest, out: &CommandOutput) -> Result<Answer, SchedulerError> {
    let command = format!("{} {}", req.method, req.url);
    let code = out.code.unwrap_or(0);
    let diagnostics = diagnostics_of(&out.stdout);
    match code {
        204 => Ok(Answer::NoContent),
        200..=299 => Ok(Answer::Ok(out.stdout.clone())),
        404 if diagnostics.is_some() => Ok(Answer::NotFound),
        404 => Err(api_off(&req.url)),
        401 | 403 => Err(SchedulerError::Refused {
            command,
            message: format!(
                "HTTP {code}: the ResourceManager wants an authenticated user{}; ray-hpc speaks \
                 simple auth (user.name); Kerberos (SPNEGO) clusters are not supported yet",
                diagnostics.map(|d| format!(" ({d})")).unwrap_or_default()
            ),
        }),
        400..=599 => Err(SchedulerError::Refused {
            command,
            message: diagnostics.unwrap_or_else(|| format!("HTTP {code}: {}", short(&out.stdout))),
        }),
        _ => Err(SchedulerError::BadOutput {
            command,
            why: format!("HTTP {code}: {}", short(&out.stdout)),
        }),
    }
}

/// YARN's own words in an error answer (`{"diagnostics": "..."}`).
fn diagnostics_of(body: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Status {
        diagnostics: Option<String>,
    }
    serde_json::from_str::<Status>(body)
        .ok()
        .and_then(|s| s.diagnostics)
        .filter(|d| !d.trim().is_empty())
}

fn short(text: &str) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 300 {
        format!("{}...", one_line.chars().take(300).collect::<String>())
    } else {
        one_line
    }
}

fn says_gone(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("doesn't exist") || m.contains("not found") || m.contains("already stopped")
}

/// The error for a ResourceManager that does not serve the services API.
fn api_off(url: &str) -> SchedulerError {
    SchedulerError::Command(super::CommandError::Spawn {
        command: url.split('?').next().unwrap_or(url).to_string(),
        why: "the ResourceManager does not serve the YARN services REST API (/app/v1): its \
              administrator enables it with yarn.webapp.api-service.enable=true in yarn-site.xml"
            .into(),
    })
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
            let resolved = tokio::net::lookup_host((host.name.as_str(), 0))
                .await
                .ok()
                .and_then(|mut addrs| addrs.find(|a| a.is_ipv4()).map(|a| a.ip()));
            match resolved {
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
                let rm = self.rm()?;
                let user = self.user();
                let spec = service_spec(
                    req,
                    &Context {
                        rm: &rm,
                        user: &user,
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
            let Some(status) = self.service(service).await? else {
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
            .service(&service)
            .await?
            .map(|s| s.job(&service))
            .into_iter()
            .collect())
    }

    async fn cancel(&self, job_ids: &[String]) -> Result<(), SchedulerError> {
        let ids = parse_ids(job_ids)?;
        for (service, ids) in by_service(&ids) {
            if ids.iter().any(|id| matches!(id, JobId::Service(_))) {
                self.destroy(service).await?;
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
