//! A cluster as a YARN service: the spec `POST /app/v1/services` takes (component `ray-head`,
//! one `ray-worker[-<type>]` component per kind of node), and the names ray-hpc gives them.
//! yarn/fixtures/README.md says which YARN behaviour each choice rests on.

use std::collections::BTreeMap;

use serde::Serialize;

use super::super::{JobRequest, NodeKind, SchedulerError};
use super::vars;

/// The component that runs the head agent (`ray-hpc run`).
pub const HEAD_COMPONENT: &str = "ray-head";
/// The component of the nodes `up --nodes` asks for (Ray node type `worker`).
pub const NODE_COMPONENT: &str = "ray-worker";
/// The Ray node type of [`NODE_COMPONENT`]'s nodes.
pub const NODE_TYPE: &str = "worker";

/// YARN wants a size for every container; when neither the request nor its node type gives
/// one, a container gets this much memory.
pub const DEFAULT_MEMORY_MB: u64 = 2048;

/// A service name is a DNS label (YARN registers each container under it).
const MAX_NAME: usize = 63;

/// What the spec's environment tells the containers (beyond the job's own environment).
pub struct Context<'a> {
    /// The ResourceManager's web address, when known (the `yarn` client does without).
    pub rm: Option<&'a str>,
    pub user: &'a str,
    /// How the containers reach YARN (`[yarn] api`).
    pub api: &'a str,
    /// The submitter's PATH: YARN starts containers with a bare environment, and ray-hpc and
    /// Ray are at the same paths on every host (a shared software stack).
    pub path: Option<&'a str>,
    /// A tarball YARN localizes into every container instead (`[yarn] artifact`).
    pub artifact: Option<Artifact<'a>>,
}

/// ray-hpc (and what else the site packs with it) as a TARBALL artifact: YARN unpacks it as
/// `lib/` in each container's working directory.
pub struct Artifact<'a> {
    /// Where YARN fetches it from (`hdfs:///...`, `file:///...` on a shared file system).
    pub url: &'a str,
    /// ray-hpc's path inside the tarball (`bin/ray-hpc`).
    pub exe: &'a str,
    /// The submitting ray-hpc as it leads a job's command (quoted for the shell): replaced by
    /// the localized one.
    pub submitting_exe: String,
}

/// The working directory's name for a TARBALL artifact's contents.
const ARTIFACT_DIR: &str = "lib";

impl Artifact<'_> {
    /// `command` with the localized ray-hpc in front.
    fn localize(&self, command: &str) -> String {
        match command.strip_prefix(&self.submitting_exe) {
            Some(rest) => format!("{ARTIFACT_DIR}/{}{rest}", self.exe),
            None => command.to_string(),
        }
    }

    /// The directory of the localized ray-hpc, for PATH (Ray's `ray` may come with it).
    fn bin_dir(&self) -> String {
        let dir = std::path::Path::new(self.exe)
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        // The NodeManager's launch script expands $PWD: the container's working directory.
        format!("$PWD/{ARTIFACT_DIR}/{dir}")
    }

    fn spec(&self) -> ArtifactSpec {
        ArtifactSpec {
            id: self.url.to_string(),
            kind: "TARBALL",
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ArtifactSpec {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

#[derive(Debug, Serialize)]
pub struct ServiceSpec {
    pub name: String,
    pub version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Seconds; YARN ends the application after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<u64>,
    pub components: Vec<ComponentSpec>,
}

#[derive(Debug, Serialize)]
pub struct ComponentSpec {
    pub name: String,
    pub number_of_containers: u32,
    /// NEVER everywhere: a container is one node's life, like a batch job. The autoscaler
    /// replaces what is lost, and a service whose containers have all ended is over.
    pub restart_policy: &'static str,
    pub launch_command: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact: Option<ArtifactSpec>,
    pub resource: Resource,
    pub configuration: Configuration,
}

#[derive(Debug, Serialize)]
pub struct Resource {
    pub cpus: u32,
    /// Megabytes, as a string (YARN's API takes it so).
    pub memory: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub additional: BTreeMap<String, ResourceValue>,
}

#[derive(Debug, Serialize)]
pub struct ResourceValue {
    pub value: u64,
    pub unit: String,
}

#[derive(Debug, Serialize)]
pub struct Configuration {
    pub env: BTreeMap<String, String>,
}

/// The service a cluster named `rh-<cluster>` runs as: the name itself, when YARN takes it.
pub fn service_name(job_name: &str) -> Result<String, SchedulerError> {
    let ok = job_name.len() <= MAX_NAME
        && job_name.starts_with(|c: char| c.is_ascii_lowercase())
        && job_name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(job_name.to_string())
    } else {
        Err(SchedulerError::BadRequest(format!(
            "{job_name:?} cannot name a YARN service: YARN takes lowercase letters, digits and \
             '-', starting with a letter, at most {MAX_NAME} characters (a DNS label); give the \
             cluster such a name (`ray-hpc up --name ...`)"
        )))
    }
}

/// The worker component of a Ray node type.
pub fn component_of(node_type: &str) -> String {
    if node_type == NODE_TYPE {
        NODE_COMPONENT.to_string()
    } else {
        format!(
            "{NODE_COMPONENT}-{}",
            node_type.to_ascii_lowercase().replace('_', "-")
        )
    }
}

/// The service spec for a request that starts a cluster.
pub fn service_spec(req: &JobRequest, ctx: &Context) -> Result<ServiceSpec, SchedulerError> {
    let name = service_name(&req.name)?;
    refuse_what_yarn_lacks(req)?;
    let head = ComponentSpec::new(
        HEAD_COMPONENT,
        1,
        &req.command,
        Shape {
            cpus: req.cpus_per_node,
            gpus: req.gpus_per_node,
            memory: req.memory_per_node,
        },
        env(req, ctx, &name),
    );
    let mut components = vec![head];
    let mut taken: BTreeMap<String, &str> = BTreeMap::new();
    for kind in &req.node_kinds {
        let component = component_of(&kind.node_type);
        if let Some(other) = taken.insert(component.clone(), &kind.node_type) {
            return Err(SchedulerError::BadRequest(format!(
                "node types {other:?} and {:?} would both be YARN component {component:?} \
                 (components are lowercase, with '-' for '_'); rename one",
                kind.node_type
            )));
        }
        components.push(ComponentSpec::new(
            &component,
            kind.count,
            &kind.command,
            Shape::of(kind),
            env(req, ctx, &name),
        ));
    }
    if let Some(a) = &ctx.artifact {
        for c in &mut components {
            c.launch_command = a.localize(&c.launch_command);
            c.artifact = Some(a.spec());
        }
    }
    Ok(ServiceSpec {
        name,
        version: "1".into(),
        queue: req.queue.clone(),
        lifetime: req.walltime.map(|w| w.as_secs().max(1)),
        components,
    })
}

/// A request field YARN has no place for is an error, not something silently dropped.
fn refuse_what_yarn_lacks(req: &JobRequest) -> Result<(), SchedulerError> {
    let lacks = [
        ("an account (--account)", req.account.is_some()),
        ("a QOS (qos)", req.qos.is_some()),
        ("a node constraint (constraint)", req.constraint.is_some()),
        (
            "header lines (extra_directives)",
            !req.directives.is_empty(),
        ),
    ];
    match lacks.iter().find(|(_, asked)| *asked) {
        Some((what, _)) => Err(SchedulerError::BadRequest(format!(
            "a YARN service has no place for {what}: leave it out for YARN clusters (queues \
             and their limits are YARN's way)"
        ))),
        None => Ok(()),
    }
}

/// The environment every container of the service gets: the job's own, and what the adapter
/// needs inside (where YARN is, which service and instance this is). Never the cluster's
/// secret: anyone who may read the service may read its spec.
fn env(req: &JobRequest, ctx: &Context, service: &str) -> BTreeMap<String, String> {
    let mut env = req.env.clone();
    env.insert(vars::SERVICE.into(), service.into());
    if let Some(rm) = ctx.rm {
        env.insert(vars::RM.into(), rm.into());
    }
    env.insert(vars::USER.into(), ctx.user.into());
    env.insert(vars::API.into(), ctx.api.into());
    let path = match (&ctx.artifact, ctx.path) {
        (Some(a), Some(path)) => Some(format!("{}:{path}", a.bin_dir())),
        (Some(a), None) => Some(format!("{}:/usr/local/bin:/usr/bin:/bin", a.bin_dir())),
        (None, path) => path.map(String::from),
    };
    if let Some(path) = path {
        env.insert("PATH".into(), path);
    }
    // The services framework fills in this token for each container.
    env.insert(vars::INSTANCE.into(), "${COMPONENT_INSTANCE_NAME}".into());
    env
}

/// A container's size.
struct Shape {
    cpus: Option<u32>,
    gpus: Option<u32>,
    memory: Option<u64>,
}

impl Shape {
    fn of(kind: &NodeKind) -> Self {
        Shape {
            cpus: kind.cpus,
            gpus: kind.gpus,
            memory: kind.memory,
        }
    }

    fn memory_mb(&self) -> u64 {
        self.memory
            .map(|b| b.div_ceil(1024 * 1024).max(1))
            .unwrap_or(DEFAULT_MEMORY_MB)
    }
}

impl ComponentSpec {
    fn new(
        name: &str,
        count: u32,
        command: &str,
        shape: Shape,
        mut env: BTreeMap<String, String>,
    ) -> Self {
        let cpus = shape.cpus.unwrap_or(1).max(1);
        let memory_mb = shape.memory_mb();
        let gpus = shape.gpus.unwrap_or(0);
        // What YARN granted, for discovery inside the container (YARN itself does not say).
        env.insert(vars::CPUS.into(), cpus.to_string());
        env.insert(vars::MEMORY_MB.into(), memory_mb.to_string());
        env.insert(vars::GPUS.into(), gpus.to_string());
        let additional = if gpus > 0 {
            [(
                "yarn.io/gpu".to_string(),
                ResourceValue {
                    value: u64::from(gpus),
                    unit: String::new(),
                },
            )]
            .into()
        } else {
            BTreeMap::new()
        };
        ComponentSpec {
            name: name.into(),
            number_of_containers: count,
            restart_policy: "NEVER",
            launch_command: command.into(),
            artifact: None,
            resource: Resource {
                cpus,
                memory: memory_mb.to_string(),
                additional,
            },
            configuration: Configuration { env },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_are_dns_labels() {
        assert_eq!(service_name("rh-c1").unwrap(), "rh-c1");
        for bad in [
            "rh-C1",
            "rh-c_1",
            "rh-c.1",
            "1rh",
            &format!("rh-{}", "x".repeat(61)),
        ] {
            let err = service_name(bad).unwrap_err().to_string();
            assert!(err.contains("DNS label"), "{bad}: {err}");
        }
    }

    #[test]
    fn node_types_become_lowercase_components() {
        assert_eq!(component_of("worker"), "ray-worker");
        assert_eq!(component_of("gpu"), "ray-worker-gpu");
        assert_eq!(component_of("Big_Mem"), "ray-worker-big-mem");
    }

    #[test]
    fn two_node_types_on_one_component_are_refused() {
        let kind = |t: &str| NodeKind {
            node_type: t.into(),
            command: "x".into(),
            ..Default::default()
        };
        let req = JobRequest {
            name: "rh-c1".into(),
            node_kinds: vec![kind("big_mem"), kind("big-mem")],
            ..Default::default()
        };
        let ctx = Context {
            rm: Some("http://rm:8088"),
            user: "u",
            api: "auto",
            path: None,
            artifact: None,
        };
        let err = service_spec(&req, &ctx).unwrap_err().to_string();
        assert!(err.contains("ray-worker-big-mem"), "{err}");
    }
}

#[cfg(test)]
mod artifact_tests {
    use super::*;

    #[test]
    fn a_tarball_puts_the_localized_ray_hpc_first_and_on_path() {
        let req = JobRequest {
            name: "rh-c1".into(),
            command: "'/opt/my tools/ray-hpc' run --name c1".into(),
            node_kinds: vec![NodeKind {
                node_type: "cpu".into(),
                command: "'/opt/my tools/ray-hpc' agent --join c1 --node-type cpu".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let ctx = Context {
            rm: None,
            user: "u",
            api: "cli",
            path: Some("/usr/bin:/bin"),
            artifact: Some(Artifact {
                url: "hdfs:///apps/ray-hpc.tgz",
                exe: "bin/ray-hpc",
                submitting_exe: "'/opt/my tools/ray-hpc'".into(),
            }),
        };
        let spec = service_spec(&req, &ctx).unwrap();
        for c in &spec.components {
            assert!(
                c.launch_command.starts_with("lib/bin/ray-hpc "),
                "{}",
                c.launch_command
            );
            let a = c.artifact.as_ref().unwrap();
            assert_eq!(
                (a.id.as_str(), a.kind),
                ("hdfs:///apps/ray-hpc.tgz", "TARBALL")
            );
            assert_eq!(c.configuration.env["PATH"], "$PWD/lib/bin:/usr/bin:/bin");
        }
    }
}
