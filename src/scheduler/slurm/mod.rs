//! Slurm: the allocation from SLURM_* variables, node addresses from one `scontrol` call,
//! fan-out as one `srun` step, and jobs through `sbatch`, `squeue` and `scancel`.
//!
//! - [`parse`]: hostlists, CPU grants and the commands' output, bounded.
//! - [`render`]: typed job requests as `#SBATCH` scripts.

pub mod parse;
pub mod render;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::{IpAddr, ToSocketAddrs};
use std::process::Command;
use std::sync::Arc;

use serde::Deserialize;

use self::parse::{
    SQUEUE_FORMAT, expand_cpus_per_node, expand_hostlist, parse_node_addresses, parse_sbatch_id,
    parse_squeue, says_already_gone,
};
use super::command::{CommandSpec, batches};
use super::settings::{self, SettingKey, SettingKind, SettingsSchema, not_empty};
use super::{
    Adapter, Allocation, Env, Host, JobInfo, JobRequest, Runner, Scheduler, SchedulerError, Setup,
};
use crate::discovery::{GpuGrant, NodeGrant};

pub const NAME: &str = "slurm";

/// `[slurm]` in the config file.
pub static SETTINGS: SettingsSchema = SettingsSchema {
    section: NAME,
    keys: &[
        // Extra arguments for the one `srun` step that starts an agent on every node.
        SettingKey {
            name: "srun_args",
            kind: SettingKind::TextList(not_empty),
        },
        // Extra `#SBATCH` lines for every job script `ray-hpc up` and the autoscaler write.
        SettingKey {
            name: "extra_directives",
            kind: SettingKind::TextList(render::directive_problem),
        },
    ],
    example: "[slurm]\n\
              srun_args = [\"--mpi=none\", \"--cpu-bind=none\"]\n\
              extra_directives = [\"#SBATCH --account=proj1\", \"#SBATCH --qos=normal\"]\n",
};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlurmSettings {
    #[serde(default)]
    srun_args: Vec<String>,
    #[serde(default)]
    extra_directives: Vec<String>,
}

pub static ADAPTER: Adapter = Adapter {
    name: NAME,
    inside_job: |env| env.get("SLURM_JOB_ID").is_some_and(|v| !v.is_empty()),
    submit_tool: Some("sbatch"),
    settings: Some(&SETTINGS),
    directive_problem: Some(render::directive_problem),
    open: |setup| Ok(Box::new(Slurm::open(setup)?)),
};

pub struct Slurm {
    env: Env,
    settings: SlurmSettings,
    runner: Arc<dyn Runner>,
    /// This machine's hostname, to tell an allocation's shell on a login node from a node.
    hostname: String,
}

impl Slurm {
    pub fn open(setup: Setup) -> Result<Self, SchedulerError> {
        Ok(Slurm {
            env: setup.env,
            settings: settings::read(NAME, &setup.settings)?,
            runner: setup.runner,
            hostname: setup.hostname,
        })
    }

    /// True when this process runs on one of `alloc`'s nodes: slurmd named the node it runs a
    /// task on, or this machine's hostname (or its first label) is one of the node names.
    /// `salloc`'s shell has neither on a login node.
    fn on_a_node_of(&self, alloc: &Allocation) -> bool {
        if self.var("SLURMD_NODENAME").is_some() {
            return true;
        }
        let short = self.hostname.split('.').next().unwrap_or_default();
        alloc
            .hosts
            .iter()
            .any(|h| !self.hostname.is_empty() && (h.name == self.hostname || h.name == short))
    }

    fn var(&self, name: &str) -> Option<&str> {
        self.env
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn require(&self, name: &str) -> Result<&str, SchedulerError> {
        self.var(name)
            .ok_or_else(|| SchedulerError::NotInAllocation {
                scheduler: NAME,
                why: format!("{name} is not set"),
            })
    }

    fn hosts(&self, list_var: &str) -> Result<Vec<Host>, SchedulerError> {
        let names = expand_hostlist(list_var, self.require(list_var)?)?;
        if let Some(n) = self.var("SLURM_JOB_NUM_NODES") {
            let expected: usize = n
                .parse()
                .map_err(|_| bad("SLURM_JOB_NUM_NODES", n, "not a number"))?;
            if expected != names.len() {
                return Err(bad(
                    "SLURM_JOB_NUM_NODES",
                    n,
                    format!("{list_var} names {} hosts", names.len()),
                ));
            }
        }
        let cpus = match self.var("SLURM_JOB_CPUS_PER_NODE") {
            Some(v) => {
                let cpus = expand_cpus_per_node("SLURM_JOB_CPUS_PER_NODE", v)?;
                if cpus.len() != names.len() {
                    return Err(bad(
                        "SLURM_JOB_CPUS_PER_NODE",
                        v,
                        format!(
                            "it covers {} nodes but {list_var} names {}",
                            cpus.len(),
                            names.len()
                        ),
                    ));
                }
                cpus.into_iter().map(Some).collect()
            }
            None => vec![None; names.len()],
        };
        Ok(names
            .into_iter()
            .zip(cpus)
            .map(|(name, cpus)| Host { name, cpus })
            .collect())
    }

    /// Runs `spec`; its stdout when it succeeded.
    async fn stdout_of(&self, spec: CommandSpec) -> Result<String, SchedulerError> {
        let out = self.runner.run(&spec).await?;
        Ok(out.stdout_if_ok(&spec)?)
    }
}

fn bad(variable: &str, value: &str, why: impl Into<String>) -> SchedulerError {
    SchedulerError::BadVariable {
        variable: variable.into(),
        value: value.into(),
        why: why.into(),
    }
}

fn resolve(addr: &str) -> Option<IpAddr> {
    if let Ok(ip) = addr.parse() {
        return Some(ip);
    }
    (addr, 0)
        .to_socket_addrs()
        .ok()?
        .map(|sa| sa.ip())
        .find(|ip| ip.is_ipv4())
}

#[async_trait::async_trait]
impl Scheduler for Slurm {
    fn name(&self) -> &'static str {
        NAME
    }

    fn allocation(&self) -> Result<Allocation, SchedulerError> {
        let job_id = self.require("SLURM_JOB_ID")?.to_string();
        let list_var = if self.var("SLURM_JOB_NODELIST").is_some() {
            "SLURM_JOB_NODELIST"
        } else {
            "SLURM_NODELIST"
        };
        let hosts = self.hosts(list_var)?;
        // slurmd names the node it runs a task on; the batch script runs on the first node.
        let this_node = match self.var("SLURMD_NODENAME") {
            Some(n) => n.to_string(),
            None => hosts[0].name.clone(),
        };
        if !hosts.iter().any(|h| h.name == this_node) {
            return Err(bad(
                "SLURMD_NODENAME",
                &this_node,
                format!("it is not in {list_var}"),
            ));
        }
        Ok(Allocation {
            scheduler: NAME,
            job_id,
            hosts,
            this_node,
        })
    }

    fn node_grant(&self, alloc: &Allocation) -> Result<NodeGrant, SchedulerError> {
        let host_cpus = alloc.this_host().and_then(|h| h.cpus);
        let cpus = match host_cpus {
            Some(c) => Some(c),
            None => match self.var("SLURM_CPUS_ON_NODE") {
                Some(v) => Some(
                    v.parse()
                        .map_err(|_| bad("SLURM_CPUS_ON_NODE", v, "not a CPU count"))?,
                ),
                None => None,
            },
        };
        let mb = |name: &str| -> Result<Option<u64>, SchedulerError> {
            self.var(name)
                .map(|v| {
                    v.parse::<u64>()
                        .ok()
                        .and_then(|mb| mb.checked_mul(1024 * 1024))
                        .ok_or_else(|| bad(name, v, "not a size in MB"))
                })
                .transpose()
        };
        let memory_bytes = match (mb("SLURM_MEM_PER_NODE")?, mb("SLURM_MEM_PER_CPU")?, cpus) {
            (Some(node), _, _) => Some(node),
            (None, Some(per_cpu), Some(cpus)) => Some(per_cpu.saturating_mul(cpus as u64)),
            _ => None,
        };
        // A job that asked for no GPUs gets none, even on a node that has some.
        let gpus = match self.var("SLURM_JOB_GPUS").or(self.var("SLURM_STEP_GPUS")) {
            Some(ids) => GpuGrant::Ids(ids.split(',').map(|s| s.trim().to_string()).collect()),
            None => GpuGrant::None,
        };
        Ok(NodeGrant {
            cpus,
            // The step's binding shows in the affinity mask, which discovery reads itself.
            cpu_ids: None,
            memory_bytes,
            gpus,
        })
    }

    async fn host_addresses(
        &self,
        alloc: &Allocation,
    ) -> Result<BTreeMap<String, IpAddr>, SchedulerError> {
        let names: Vec<&str> = alloc.hosts.iter().map(|h| h.name.as_str()).collect();
        let out = self
            .stdout_of(CommandSpec::new("scontrol").args(["-o", "show", "node", &names.join(",")]))
            .await?;
        let mut resolved = BTreeMap::new();
        for (name, addr) in parse_node_addresses(&out)? {
            match resolve(&addr) {
                Some(ip) => {
                    resolved.insert(name, ip);
                }
                None => tracing::warn!("NodeAddr {addr} of node {name} does not resolve"),
            }
        }
        Ok(resolved)
    }

    fn fan_out(
        &self,
        alloc: &Allocation,
        argv: &[OsString],
    ) -> Result<Option<Command>, SchedulerError> {
        let others: Vec<&str> = alloc.hosts[1..].iter().map(|h| h.name.as_str()).collect();
        if others.is_empty() {
            return Ok(None);
        }
        let n = others.len().to_string();
        let mut cmd = Command::new("srun");
        cmd.args(["--nodes", &n, "--ntasks", &n, "--ntasks-per-node=1"])
            .arg(format!("--nodelist={}", others.join(",")))
            // The step gets all of the job's CPUs on each node; discovery narrows it to the grant.
            .args(["--whole", "--kill-on-bad-exit=0", "--label", "--unbuffered"])
            .args(&self.settings.srun_args)
            .args(argv);
        // Inherited from `sbatch -c N`; it would conflict with --whole.
        cmd.env_remove("SLURM_CPUS_PER_TASK");
        Ok(Some(cmd))
    }

    fn relaunch_on_first_node(
        &self,
        alloc: &Allocation,
        argv: &[OsString],
    ) -> Result<Option<Command>, SchedulerError> {
        if self.on_a_node_of(alloc) {
            return Ok(None);
        }
        // One task on the first node with the whole node, like the batch script it stands in
        // for; srun passes stdin, stdout and stderr through and exits with the task's status.
        // --disable-status: one Ctrl-C reaches the run (which then tears down) instead of
        // making srun print task states.
        let mut cmd = Command::new("srun");
        cmd.args(["--nodes=1", "--ntasks=1"])
            .arg(format!("--nodelist={}", alloc.head().name))
            .args(["--whole", "--unbuffered", "--disable-status"])
            .args(&self.settings.srun_args)
            .args(argv);
        // salloc -c N sets it; it would conflict with --whole.
        cmd.env_remove("SLURM_CPUS_PER_TASK");
        Ok(Some(cmd))
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
        render::render(&req)
    }

    async fn submit(&self, script: &str, _req: &JobRequest) -> Result<String, SchedulerError> {
        let spec = CommandSpec::new("sbatch").arg("--parsable").stdin(script);
        let out = self.runner.run(&spec).await?;
        if !out.success() {
            // Slurm's own words: QOS limits, bad partitions and the like.
            return Err(SchedulerError::Refused {
                command: "sbatch".into(),
                message: out.stderr.trim().to_string(),
            });
        }
        parse_sbatch_id(&out.stdout)
    }

    async fn query(&self, job_ids: &[String]) -> Result<Vec<JobInfo>, SchedulerError> {
        let mut jobs = Vec::new();
        for batch in batches(job_ids) {
            let spec = CommandSpec::new("squeue")
                .args(["-h", "-t", "all", "-o", SQUEUE_FORMAT, "-j"])
                .arg(batch.join(","));
            let out = self.runner.run(&spec).await?;
            if !out.success() {
                // Every id is gone from the controller's memory: not an error, just none left.
                if says_already_gone(&out.stderr) && !out.stderr.trim().is_empty() {
                    continue;
                }
                return Err(super::CommandError::failed(&spec, &out).into());
            }
            jobs.extend(parse_squeue(&out.stdout)?);
        }
        Ok(jobs)
    }

    async fn query_named(&self, name: &str) -> Result<Vec<JobInfo>, SchedulerError> {
        let out = self
            .stdout_of(CommandSpec::new("squeue").args([
                "-h",
                "--me",
                "-o",
                SQUEUE_FORMAT,
                "-n",
                name,
            ]))
            .await?;
        parse_squeue(&out)
    }

    async fn cancel(&self, job_ids: &[String]) -> Result<(), SchedulerError> {
        for batch in batches(job_ids) {
            let spec = CommandSpec::new("scancel").args(batch.iter().cloned());
            let out = self.runner.run(&spec).await?;
            if !out.success() && !says_already_gone(&out.stderr) {
                return Err(super::CommandError::failed(&spec, &out).into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slurm(pairs: &[(&str, &str)]) -> Slurm {
        let env: Env = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Slurm::open(Setup {
            env,
            settings: Default::default(),
            runner: Arc::new(super::super::command::Recorded::default()),
            hostname: String::new(),
        })
        .unwrap()
    }

    fn on_host(pairs: &[(&str, &str)], hostname: &str) -> Slurm {
        let mut s = slurm(pairs);
        s.hostname = hostname.to_string();
        s
    }

    fn argv(cmd: &Command) -> Vec<String> {
        std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn an_allocation_shell_off_its_nodes_relaunches_on_the_first_node() {
        let salloc = [("SLURM_JOB_ID", "9"), ("SLURM_JOB_NODELIST", "n[1-2]")];
        let run = [OsString::from("/bin/ray-hpc"), OsString::from("run")];
        let login = on_host(&salloc, "login1.example.org");
        let alloc = login.allocation().unwrap();
        let cmd = login.relaunch_on_first_node(&alloc, &run).unwrap().unwrap();
        assert_eq!(
            argv(&cmd),
            [
                "srun",
                "--nodes=1",
                "--ntasks=1",
                "--nodelist=n1",
                "--whole",
                "--unbuffered",
                "--disable-status",
                "/bin/ray-hpc",
                "run"
            ]
        );
        // On a node of the allocation (by hostname, short or long, or as slurmd says): here.
        for host in ["n2", "n1.cluster.local"] {
            let s = on_host(&salloc, host);
            let a = s.allocation().unwrap();
            assert!(
                s.relaunch_on_first_node(&a, &run).unwrap().is_none(),
                "{host}"
            );
        }
        let step = on_host(
            &[
                ("SLURM_JOB_ID", "9"),
                ("SLURM_JOB_NODELIST", "n[1-2]"),
                ("SLURMD_NODENAME", "n1"),
            ],
            "login1",
        );
        let a = step.allocation().unwrap();
        assert!(step.relaunch_on_first_node(&a, &run).unwrap().is_none());
    }

    #[test]
    fn allocation_from_a_three_node_job() {
        let s = slurm(&[
            ("SLURM_JOB_ID", "42"),
            ("SLURM_JOB_NODELIST", "n[1-3]"),
            ("SLURM_JOB_NUM_NODES", "3"),
            ("SLURM_JOB_CPUS_PER_NODE", "1(x3)"),
            ("SLURMD_NODENAME", "n2"),
            ("SLURM_MEM_PER_NODE", "100"),
        ]);
        let a = s.allocation().unwrap();
        assert_eq!(a.job_id, "42");
        assert_eq!(a.hosts.len(), 3);
        assert_eq!(a.head().name, "n1");
        assert_eq!(a.this_node, "n2");
        assert_eq!(a.rank_of("n3"), Some(2));
        let g = s.node_grant(&a).unwrap();
        assert_eq!(g.cpus, Some(1));
        assert_eq!(g.memory_bytes, Some(100 * 1024 * 1024));
        assert!(matches!(g.gpus, GpuGrant::None));
    }

    #[test]
    fn grants_per_cpu_memory_and_gpus() {
        let s = slurm(&[
            ("SLURM_JOB_ID", "7"),
            ("SLURM_JOB_NODELIST", "g[01-02]"),
            ("SLURM_JOB_CPUS_PER_NODE", "4,2"),
            ("SLURMD_NODENAME", "g02"),
            ("SLURM_MEM_PER_CPU", "1000"),
            ("SLURM_JOB_GPUS", "1,3"),
        ]);
        let a = s.allocation().unwrap();
        let g = s.node_grant(&a).unwrap();
        assert_eq!(g.cpus, Some(2));
        assert_eq!(g.memory_bytes, Some(2000 * 1024 * 1024));
        match g.gpus {
            GpuGrant::Ids(ids) => assert_eq!(ids, ["1", "3"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_variables_are_named_with_their_value() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[
                    ("SLURM_JOB_NODELIST", "n[1-3]"),
                    ("SLURM_JOB_CPUS_PER_NODE", "2(x2)"),
                ],
                "SLURM_JOB_CPUS_PER_NODE",
            ),
            (
                &[
                    ("SLURM_JOB_NODELIST", "n[1-3]"),
                    ("SLURM_JOB_NUM_NODES", "two"),
                ],
                "SLURM_JOB_NUM_NODES",
            ),
            (
                &[("SLURM_JOB_NODELIST", "n[1-3]"), ("SLURMD_NODENAME", "x9")],
                "SLURMD_NODENAME",
            ),
            (&[("SLURM_JOB_NODELIST", "n[1-")], "SLURM_JOB_NODELIST"),
        ];
        for (vars, name) in cases {
            let mut vars = vars.to_vec();
            vars.push(("SLURM_JOB_ID", "1"));
            let err = slurm(&vars).allocation().unwrap_err();
            assert!(err.to_string().contains(name), "{name}: {err}");
        }
        for (var, value) in [
            ("SLURM_MEM_PER_NODE", "lots"),
            ("SLURM_MEM_PER_NODE", "99999999999999999999"),
            ("SLURM_CPUS_ON_NODE", "many"),
        ] {
            let s = slurm(&[
                ("SLURM_JOB_ID", "1"),
                ("SLURM_JOB_NODELIST", "n1"),
                (var, value),
            ]);
            let err = s.node_grant(&s.allocation().unwrap()).unwrap_err();
            assert!(
                err.to_string().contains(&format!("{var}=\"{value}\"")),
                "{err}"
            );
        }
    }

    /// `[slurm]` through the config parser: every problem at its line and column.
    #[test]
    fn the_config_section_is_checked_where_it_is_written() {
        use crate::config::{Config, ProblemKind};
        let cases: &[(&str, &str, ProblemKind, &str)] = &[
            (
                "[slurm]\nsrun_args = \"--mpi=none\"",
                "2:13",
                ProblemKind::WrongType,
                "must be an array of strings, not a string",
            ),
            (
                "[slurm]\nsrun_args = [\"-N\", 2]",
                "2:20",
                ProblemKind::WrongType,
                "slurm.srun_args[1] = 2 must be a string, not an integer",
            ),
            (
                "[slurm]\nextra_directives = [\"--account=x\"]",
                "2:21",
                ProblemKind::BadValue,
                "must be one line starting with `#SBATCH `",
            ),
            (
                "[slurm]\nsrun_args = [\"\"]",
                "2:14",
                ProblemKind::BadValue,
                "slurm.srun_args[0] = \"\" must not be empty",
            ),
            (
                "[[slurm]]",
                "1:1",
                ProblemKind::WrongType,
                "must be a table ([slurm]), not an array",
            ),
            (
                "[slurm]\nsrun_arg = []",
                "2:1",
                ProblemKind::UnknownKey,
                "unknown key `slurm.srun_arg`, did you mean `slurm.srun_args`? (known keys in [slurm]: srun_args, extra_directives)",
            ),
            (
                "[[node_types]]\nname = \"a\"\ncpus = 1\nsrun_args = []",
                "4:1",
                ProblemKind::UnknownKey,
                "unknown key `node_types[0].srun_args`, did you mean `slurm.srun_args`?",
            ),
            (
                "[[node_types]]\nname = \"a\"\ncpus = 1\nextra_directives = [\"--exclusive\"]",
                "4:21",
                ProblemKind::BadValue,
                "node_types[0].extra_directives[0] = \"--exclusive\" is not a header line of any scheduler (slurm: must be one line starting with `#SBATCH `",
            ),
            (
                "scheduler = \"slurm\"\n[[node_types]]\nname = \"a\"\ncpus = 1\nextra_directives = [\"#BSUB -x\"]",
                "5:21",
                ProblemKind::BadValue,
                "must be one line starting with `#SBATCH `",
            ),
        ];
        for (text, at, kind, piece) in cases {
            let err = Config::parse(text, "t.toml").unwrap_err();
            assert_eq!(err.problems.len(), 1, "{text:?}: {err}");
            let p = &err.problems[0];
            let loc = p.location.unwrap().to_string();
            assert_eq!(
                (loc.as_str(), p.kind),
                (*at, *kind),
                "{text:?}: {}",
                p.message
            );
            assert!(
                p.message.contains(piece),
                "{text:?}: {:?} lacks {piece:?}",
                p.message
            );
        }
        let c = Config::parse(
            "[slurm]\nsrun_args = [\"--mpi=none\"]\nextra_directives = [\"#SBATCH --qos=x\"]\n",
            "t.toml",
        )
        .unwrap();
        let s = Slurm::open(Setup {
            env: Env::new(),
            settings: c.scheduler_settings[NAME].clone(),
            runner: Arc::new(super::super::command::Recorded::default()),
            hostname: String::new(),
        })
        .unwrap();
        assert_eq!(s.settings.srun_args, ["--mpi=none"]);
        let script = s.render_job(&JobRequest::default()).unwrap();
        assert!(script.lines().any(|l| l == "#SBATCH --qos=x"), "{script}");
    }

    #[test]
    fn srun_args_from_the_config_go_into_the_step() {
        let mut settings = super::super::Settings::new();
        settings.insert(
            "srun_args".into(),
            toml::Value::Array(vec!["--mpi=none".into()]),
        );
        let s = Slurm::open(Setup {
            env: [("SLURM_JOB_ID", "1"), ("SLURM_JOB_NODELIST", "n[1-2]")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            settings,
            runner: Arc::new(super::super::command::Recorded::default()),
            hostname: String::new(),
        })
        .unwrap();
        let cmd = s
            .fan_out(&s.allocation().unwrap(), &["agent".into()])
            .unwrap()
            .unwrap();
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy()).collect();
        assert!(args.contains(&"--mpi=none".into()), "{args:?}");
        assert_eq!(args.last().unwrap(), "agent");
    }
}
