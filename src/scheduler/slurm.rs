//! Slurm: the allocation from SLURM_* variables, node addresses from one `scontrol` call, and
//! fan-out as one `srun` step.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::{IpAddr, ToSocketAddrs};
use std::process::Command;

use super::{
    Allocation, Env, Host, JobInfo, JobRequest, JobState, Scheduler, SchedulerError, run_command,
    shell_quote,
};
use crate::discovery::{GpuGrant, NodeGrant};

pub struct Slurm {
    env: Env,
}

impl Slurm {
    pub fn new(env: Env) -> Self {
        Slurm { env }
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
                scheduler: "slurm",
                why: format!("{name} is not set"),
            })
    }
}

fn bad(variable: &str, value: &str, why: impl Into<String>) -> SchedulerError {
    SchedulerError::BadVariable {
        variable: variable.into(),
        value: value.into(),
        why: why.into(),
    }
}

/// Expands a Slurm hostlist (`n[001-004,010],gpu1`), keeping zero padding.
pub fn expand_hostlist(variable: &str, value: &str) -> Result<Vec<String>, SchedulerError> {
    let hosts = hostlist_parser::parse(value).map_err(|e| bad(variable, value, e.to_string()))?;
    if hosts.is_empty() {
        return Err(bad(variable, value, "it names no host"));
    }
    Ok(hosts)
}

/// Expands SLURM_JOB_CPUS_PER_NODE (`4(x2),2` → [4, 4, 2]).
pub fn expand_cpus_per_node(variable: &str, value: &str) -> Result<Vec<u32>, SchedulerError> {
    let mut cpus = Vec::new();
    for part in value.split(',') {
        let part = part.trim();
        let (count, repeat) = match part.split_once("(x") {
            Some((count, rest)) => {
                let repeat = rest
                    .strip_suffix(')')
                    .and_then(|r| r.parse::<u32>().ok())
                    .filter(|r| *r > 0)
                    .ok_or_else(|| bad(variable, value, format!("`{part}` is not N(xM)")))?;
                (count, repeat)
            }
            None => (part, 1),
        };
        let count: u32 = count
            .parse()
            .map_err(|_| bad(variable, value, format!("`{count}` is not a CPU count")))?;
        cpus.extend(std::iter::repeat_n(count, repeat as usize));
    }
    Ok(cpus)
}

/// Parses `scontrol -o show node` output into node name → NodeAddr.
pub fn parse_node_addresses(output: &str) -> BTreeMap<String, String> {
    let mut addresses = BTreeMap::new();
    for line in output.lines() {
        let mut name = None;
        let mut addr = None;
        for field in line.split_whitespace() {
            if let Some(v) = field.strip_prefix("NodeName=") {
                name = Some(v);
            } else if let Some(v) = field.strip_prefix("NodeAddr=") {
                addr = Some(v);
            }
        }
        if let (Some(name), Some(addr)) = (name, addr) {
            addresses.insert(name.to_string(), addr.to_string());
        }
    }
    addresses
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

/// The job script template (slurm/ray-cluster.sbatch.in).
const TEMPLATE: &str = include_str!("../../slurm/ray-cluster.sbatch.in");

/// Renders `req` into the template: the header is declarative, one directive per request field.
pub fn render(req: &JobRequest) -> String {
    let mut directives: Vec<String> = Vec::new();
    let mut directive = |flag: &str, value: Option<String>| {
        if let Some(v) = value {
            directives.push(format!("#SBATCH --{flag}={v}"));
        }
    };
    directive("cpus-per-task", req.cpus_per_node.map(|c| c.to_string()));
    directive("gpus-per-node", req.gpus_per_node.map(|g| g.to_string()));
    directive("partition", req.partition.clone());
    directive("time", req.time.clone());
    directives.extend(req.extra_directives.iter().cloned());
    let env: Vec<String> = req
        .env
        .iter()
        .map(|(k, v)| format!("export {k}={}", shell_quote(v)))
        .collect();
    TEMPLATE
        .replace("@NAME@", &req.name)
        .replace("@NODES@", &req.nodes.to_string())
        .replace("@OUTPUT@", &req.output.display().to_string())
        .replace("@DIRECTIVES@\n", &lines(&directives))
        .replace("@ENV@\n", &lines(&env))
        .replace("@COMMAND@", &req.command)
}

fn lines(v: &[String]) -> String {
    v.iter().map(|l| format!("{l}\n")).collect()
}

/// Slurm's job states as ours (squeue's %T).
pub fn job_state(slurm: &str) -> JobState {
    match slurm {
        "PENDING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED" | "RESV_DEL_HOLD" => {
            JobState::Pending
        }
        "RUNNING" | "CONFIGURING" | "RESIZING" | "SIGNALING" | "STAGE_OUT" | "SUSPENDED" => {
            JobState::Running
        }
        "COMPLETING" => JobState::Completing,
        other => JobState::Ended(other.to_string()),
    }
}

/// What `query` asks squeue for: id, name, state, reason, start, time left.
const SQUEUE_FORMAT: &str = "%i|%j|%T|%r|%S|%L";

/// Slurm's time left (`%L`: `[days-]hours:minutes:seconds`, `minutes:seconds`, or words such
/// as UNLIMITED and INVALID) in seconds.
pub fn parse_time_left(s: &str) -> Option<u64> {
    let (days, clock) = match s.split_once('-') {
        Some((d, rest)) => (d.parse::<u64>().ok()?, rest),
        None => (0, s),
    };
    let parts: Vec<u64> = clock
        .split(':')
        .map(|p| p.parse::<u64>().ok())
        .collect::<Option<_>>()?;
    let (h, m, sec) = match parts[..] {
        [h, m, s] => (h, m, s),
        [m, s] => (0, m, s),
        _ => return None,
    };
    Some(((days * 24 + h) * 60 + m) * 60 + sec)
}

/// Parses squeue output in `SQUEUE_FORMAT`.
pub fn parse_squeue(output: &str) -> Result<Vec<JobInfo>, SchedulerError> {
    let mut jobs = Vec::new();
    for line in output.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split('|').collect();
        if f.len() != 6 {
            return Err(SchedulerError::BadOutput {
                command: "squeue".into(),
                why: format!("expected 6 fields separated by |, got {line:?}"),
            });
        }
        let optional = |s: &str| {
            let s = s.trim();
            (!s.is_empty() && s != "N/A" && s != "None" && s != "(null)").then(|| s.to_string())
        };
        jobs.push(JobInfo {
            id: f[0].trim().to_string(),
            name: f[1].trim().to_string(),
            state: job_state(f[2].trim()),
            reason: optional(f[3]),
            start_time: optional(f[4]),
            time_left_s: parse_time_left(f[5].trim()),
        });
    }
    Ok(jobs)
}

impl Scheduler for Slurm {
    fn name(&self) -> &'static str {
        "slurm"
    }

    fn allocation(&self) -> Result<Allocation, SchedulerError> {
        let job_id = self.require("SLURM_JOB_ID")?.to_string();
        let list_var = if self.var("SLURM_JOB_NODELIST").is_some() {
            "SLURM_JOB_NODELIST"
        } else {
            "SLURM_NODELIST"
        };
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
        let hosts = names
            .into_iter()
            .zip(cpus)
            .map(|(name, cpus)| Host { name, cpus })
            .collect::<Vec<_>>();
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
            scheduler: "slurm",
            job_id,
            hosts,
            this_node,
        })
    }

    fn node_grant(&self, alloc: &Allocation) -> Result<NodeGrant, SchedulerError> {
        let host = alloc
            .hosts
            .iter()
            .find(|h| h.name == alloc.this_node)
            .expect("allocation() checked this_node is a host");
        let cpus = match host.cpus {
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
                        .map_err(|_| bad(name, v, "not a size in MB"))
                })
                .transpose()
        };
        let memory_bytes = match (mb("SLURM_MEM_PER_NODE")?, mb("SLURM_MEM_PER_CPU")?, cpus) {
            (Some(node), _, _) => Some(node * 1024 * 1024),
            (None, Some(per_cpu), Some(cpus)) => Some(per_cpu * cpus as u64 * 1024 * 1024),
            _ => None,
        };
        // A job that asked for no GPUs gets none, even on a node that has some.
        let gpus = match self.var("SLURM_JOB_GPUS").or(self.var("SLURM_STEP_GPUS")) {
            Some(ids) => GpuGrant::Ids(ids.split(',').map(|s| s.trim().to_string()).collect()),
            None => GpuGrant::None,
        };
        Ok(NodeGrant {
            cpus,
            memory_bytes,
            gpus,
        })
    }

    fn host_addresses(
        &self,
        alloc: &Allocation,
    ) -> Result<BTreeMap<String, IpAddr>, SchedulerError> {
        let names: Vec<&str> = alloc.hosts.iter().map(|h| h.name.as_str()).collect();
        let out = run_command(
            Command::new("scontrol")
                .args(["-o", "show", "node"])
                .arg(names.join(",")),
        )?;
        let mut resolved = BTreeMap::new();
        for (name, addr) in parse_node_addresses(&out) {
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
        extra_args: &[String],
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
            .args(extra_args)
            .args(argv);
        // Inherited from `sbatch -c N`; it would conflict with --whole.
        cmd.env_remove("SLURM_CPUS_PER_TASK");
        Ok(Some(cmd))
    }

    fn render_job(&self, req: &JobRequest) -> Result<String, SchedulerError> {
        Ok(render(req))
    }

    fn submit(&self, script: &str, _req: &JobRequest) -> Result<String, SchedulerError> {
        use std::io::Write;
        let mut child = Command::new("sbatch")
            .arg("--parsable")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| SchedulerError::Command {
                command: "sbatch".into(),
                why: format!("could not run it: {e}"),
            })?;
        let mut stdin = child.stdin.take().expect("piped");
        let written = stdin.write_all(script.as_bytes());
        drop(stdin);
        let out = child
            .wait_with_output()
            .map_err(|e| SchedulerError::Command {
                command: "sbatch".into(),
                why: e.to_string(),
            })?;
        if !out.status.success() || written.is_err() {
            // Slurm's own words: QOS limits, bad partitions and the like.
            return Err(SchedulerError::Refused {
                command: "sbatch".into(),
                message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let id = stdout.trim().split(';').next().unwrap_or("").to_string();
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit() || c == '_') {
            return Err(SchedulerError::BadOutput {
                command: "sbatch --parsable".into(),
                why: format!("expected a job id, got {stdout:?}"),
            });
        }
        Ok(id)
    }

    fn query(&self, job_ids: &[String]) -> Result<Vec<JobInfo>, SchedulerError> {
        if job_ids.is_empty() {
            return Ok(vec![]);
        }
        let out = Command::new("squeue")
            .args(["-h", "-t", "all", "-o", SQUEUE_FORMAT, "-j"])
            .arg(job_ids.join(","))
            .output()
            .map_err(|e| SchedulerError::Command {
                command: "squeue".into(),
                why: format!("could not run it: {e}"),
            })?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            // Every id is gone from the controller's memory: not an error, just none left.
            if stderr.contains("Invalid job id") {
                return Ok(vec![]);
            }
            return Err(SchedulerError::Command {
                command: "squeue".into(),
                why: stderr.trim().to_string(),
            });
        }
        parse_squeue(&String::from_utf8_lossy(&out.stdout))
    }

    fn query_named(&self, name: &str) -> Result<Vec<JobInfo>, SchedulerError> {
        let out = run_command(
            Command::new("squeue")
                .args(["-h", "--me", "-o", SQUEUE_FORMAT, "-n"])
                .arg(name),
        )?;
        parse_squeue(&out)
    }

    fn cancel(&self, job_ids: &[String]) -> Result<(), SchedulerError> {
        if job_ids.is_empty() {
            return Ok(());
        }
        let out = Command::new("scancel")
            .args(job_ids)
            .output()
            .map_err(|e| SchedulerError::Command {
                command: "scancel".into(),
                why: format!("could not run it: {e}"),
            })?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let already_gone = stderr.lines().all(|l| {
            l.contains("Invalid job id")
                || l.contains("already completing or completed")
                || l.trim().is_empty()
        });
        if out.status.success() || already_gone {
            Ok(())
        } else {
            Err(SchedulerError::Command {
                command: format!("scancel {}", job_ids.join(" ")),
                why: stderr.trim().to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn hostlists_expand_with_padding() {
        let cases: &[(&str, &[&str])] = &[
            ("n1", &["n1"]),
            ("n[1-3]", &["n1", "n2", "n3"]),
            (
                "node[001-003,010]",
                &["node001", "node002", "node003", "node010"],
            ),
            ("a[1-2],b7", &["a1", "a2", "b7"]),
            ("gpu[09-11]", &["gpu09", "gpu10", "gpu11"]),
        ];
        for (list, want) in cases {
            assert_eq!(expand_hostlist("X", list).unwrap(), *want, "{list}");
        }
    }

    #[test]
    fn bad_hostlists_name_the_variable() {
        for list in ["n[1-", "n[3-1]x]", ""] {
            let err = expand_hostlist("SLURM_JOB_NODELIST", list).unwrap_err();
            assert!(err.to_string().contains("SLURM_JOB_NODELIST"), "{err}");
        }
    }

    #[test]
    fn cpu_grants_expand() {
        let cases: &[(&str, &[u32])] = &[
            ("2", &[2]),
            ("4(x2),2", &[4, 4, 2]),
            ("1(x3)", &[1, 1, 1]),
            ("8,4(x2),16", &[8, 4, 4, 16]),
        ];
        for (v, want) in cases {
            assert_eq!(expand_cpus_per_node("X", v).unwrap(), *want, "{v}");
        }
        for v in ["", "4(x)", "4(x0)", "x", "4(x2", "-1", "4;2"] {
            let err = expand_cpus_per_node("SLURM_JOB_CPUS_PER_NODE", v).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains("SLURM_JOB_CPUS_PER_NODE") && msg.contains(v),
                "{msg}"
            );
        }
    }

    #[test]
    fn allocation_from_a_three_node_job() {
        let s = Slurm::new(env(&[
            ("SLURM_JOB_ID", "42"),
            ("SLURM_JOB_NODELIST", "n[1-3]"),
            ("SLURM_JOB_NUM_NODES", "3"),
            ("SLURM_JOB_CPUS_PER_NODE", "1(x3)"),
            ("SLURMD_NODENAME", "n2"),
            ("SLURM_MEM_PER_NODE", "100"),
        ]));
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
        let s = Slurm::new(env(&[
            ("SLURM_JOB_ID", "7"),
            ("SLURM_JOB_NODELIST", "g[01-02]"),
            ("SLURM_JOB_CPUS_PER_NODE", "4,2"),
            ("SLURMD_NODENAME", "g02"),
            ("SLURM_MEM_PER_CPU", "1000"),
            ("SLURM_JOB_GPUS", "1,3"),
        ]));
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
    fn outside_an_allocation_is_a_clear_error() {
        let err = Slurm::new(env(&[])).allocation().unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("SLURM_JOB_ID") && msg.contains("--scheduler local"),
            "{msg}"
        );
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
            let mut e = env(vars);
            e.insert("SLURM_JOB_ID".into(), "1".into());
            let err = Slurm::new(e).allocation().unwrap_err();
            assert!(err.to_string().contains(name), "{name}: {err}");
        }
        let s = Slurm::new(env(&[
            ("SLURM_JOB_ID", "1"),
            ("SLURM_JOB_NODELIST", "n1"),
            ("SLURM_MEM_PER_NODE", "lots"),
        ]));
        let err = s.node_grant(&s.allocation().unwrap()).unwrap_err();
        assert!(
            err.to_string().contains("SLURM_MEM_PER_NODE=\"lots\""),
            "{err}"
        );
    }

    #[test]
    fn job_scripts_render_every_requested_field() {
        let req = JobRequest {
            name: "rh-c1".into(),
            nodes: 2,
            cpus_per_node: Some(4),
            gpus_per_node: None,
            partition: Some("debug".into()),
            time: Some("30".into()),
            extra_directives: vec!["#SBATCH --account=proj1".into()],
            output: "/home/u/.ray-hpc/clusters/c1/job.out".into(),
            command: "/usr/bin/ray-hpc run --name c1".into(),
            env: vec![("RAY_HPC_HOME".into(), "/home/u/my dir".into())],
        };
        let script = render(&req);
        for line in [
            "#SBATCH --job-name=rh-c1",
            "#SBATCH --nodes=2",
            "#SBATCH --cpus-per-task=4",
            "#SBATCH --partition=debug",
            "#SBATCH --time=30",
            "#SBATCH --account=proj1",
            "#SBATCH --output=/home/u/.ray-hpc/clusters/c1/job.out",
            "export RAY_HPC_HOME='/home/u/my dir'",
            "exec /usr/bin/ray-hpc run --name c1",
        ] {
            assert!(
                script.lines().any(|l| l == line),
                "{line} missing from\n{script}"
            );
        }
        assert!(!script.contains("gpus-per-node"), "{script}");
        for placeholder in [
            "@NAME@",
            "@NODES@",
            "@OUTPUT@",
            "@DIRECTIVES@",
            "@ENV@",
            "@COMMAND@",
        ] {
            assert!(
                !script.contains(placeholder),
                "{placeholder} left in\n{script}"
            );
        }
        // Every #SBATCH line comes before the first command, or Slurm ignores it.
        let first_cmd = script.lines().position(|l| l.starts_with("set ")).unwrap();
        assert!(
            script
                .lines()
                .skip(first_cmd)
                .all(|l| !l.starts_with("#SBATCH"))
        );
    }

    #[test]
    fn squeue_output_parses_into_job_states() {
        let out = "12|rh-a|PENDING|Resources|2026-11-22T08:00:00|1:00:00\n13|rh-a|RUNNING|None|2026-11-22T07:00:00|1-02:03:04\n14|rh-b|CANCELLED|None|N/A|INVALID\n";
        let jobs = parse_squeue(out).unwrap();
        assert_eq!(jobs[0].state, JobState::Pending);
        assert_eq!(jobs[0].reason.as_deref(), Some("Resources"));
        assert_eq!(jobs[0].start_time.as_deref(), Some("2026-11-22T08:00:00"));
        assert_eq!(jobs[1].state, JobState::Running);
        assert_eq!(jobs[1].reason, None);
        assert_eq!(jobs[2].state, JobState::Ended("CANCELLED".into()));
        assert_eq!(jobs[2].start_time, None);
        assert_eq!(jobs[1].time_left_s, Some(((24 + 2) * 60 + 3) * 60 + 4));
        assert_eq!(jobs[2].time_left_s, None);
        for (text, secs) in [
            ("5:00", Some(300)),
            ("UNLIMITED", None),
            ("NOT_SET", None),
            ("1:2:3:4", None),
        ] {
            assert_eq!(parse_time_left(text), secs, "{text}");
        }
        assert!(parse_squeue("garbage").is_err());
    }

    #[test]
    fn node_addresses_from_scontrol() {
        let out = "NodeName=n1 Arch=x86_64 CoresPerSocket=1 NodeAddr=127.0.0.11 NodeHostName=box State=IDLE\nNodeName=n2 NodeAddr=127.0.0.12 NodeHostName=box\n";
        let m = parse_node_addresses(out);
        assert_eq!(m["n1"], "127.0.0.11");
        assert_eq!(m["n2"], "127.0.0.12");
    }

    /// Environments recorded on the test bed (slurm/fixtures/): `# --- rank N ---` lines
    /// separate the tasks of one file.
    fn fixture_envs(name: &str) -> Vec<Env> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/slurm/fixtures/");
        let text = std::fs::read_to_string(format!("{path}{name}")).unwrap();
        let mut envs = vec![Env::new()];
        for line in text.lines() {
            if line.starts_with("# --- rank") {
                if !envs.last().unwrap().is_empty() {
                    envs.push(Env::new());
                }
            } else if let Some((k, v)) = line.split_once('=') {
                envs.last_mut().unwrap().insert(k.into(), v.into());
            }
        }
        envs
    }

    #[test]
    fn recorded_batch_environment() {
        let s = Slurm::new(fixture_envs("sbatch-N3-c1.env").remove(0));
        let a = s.allocation().unwrap();
        let names: Vec<_> = a.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["n1", "n2", "n3"]);
        assert_eq!(a.this_node, "n1");
        assert!(a.hosts.iter().all(|h| h.cpus == Some(1)));
        let g = s.node_grant(&a).unwrap();
        assert_eq!(g.cpus, Some(1));
        assert_eq!(
            g.memory_bytes,
            Some(2000 * 1024 * 1024),
            "DefMemPerCPU x 1 CPU"
        );

        let s = Slurm::new(fixture_envs("sbatch-N2-c2.env").remove(0));
        let a = s.allocation().unwrap();
        assert_eq!(a.hosts.len(), 2);
        assert_eq!(s.node_grant(&a).unwrap().cpus, Some(2));
    }

    #[test]
    fn recorded_step_environment_knows_its_node_from_slurmd() {
        // Inside the fan-out step SLURM_NODEID counts within the step; the node name is what
        // places the agent in the job's allocation.
        let envs = fixture_envs("srun-step-exclude.env");
        assert_eq!(envs.len(), 2);
        for (env, (node, rank)) in envs.into_iter().zip([("n2", 1), ("n3", 2)]) {
            let s = Slurm::new(env);
            let a = s.allocation().unwrap();
            assert_eq!(a.this_node, node);
            assert_eq!(a.rank_of(&a.this_node), Some(rank));
            assert_eq!(a.hosts.len(), 3, "the job's hosts, not the step's");
            assert_eq!(s.node_grant(&a).unwrap().cpus, Some(1));
        }
    }

    #[test]
    fn recorded_scontrol_output_with_spaces_in_values() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/slurm/fixtures/scontrol-show-node.txt"
        );
        let m = parse_node_addresses(&std::fs::read_to_string(path).unwrap());
        assert_eq!(m.len(), 3);
        assert_eq!(m["n1"], "127.0.0.11");
        assert_eq!(m["n3"], "127.0.0.13");
    }

    #[test]
    fn fan_out_skips_the_head_and_is_one_step() {
        let s = Slurm::new(env(&[
            ("SLURM_JOB_ID", "1"),
            ("SLURM_JOB_NODELIST", "n[1-3]"),
        ]));
        let a = s.allocation().unwrap();
        let cmd = s
            .fan_out(&a, &["ray-hpc".into(), "agent".into()], &[])
            .unwrap()
            .unwrap();
        let args: Vec<_> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(cmd.get_program(), "srun");
        assert!(args.contains(&"--nodelist=n2,n3".to_string()), "{args:?}");
        assert_eq!(&args[args.len() - 2..], ["ray-hpc", "agent"]);
        let single = Slurm::new(env(&[("SLURM_JOB_ID", "1"), ("SLURM_JOB_NODELIST", "n1")]));
        assert!(
            single
                .fan_out(&single.allocation().unwrap(), &[], &[])
                .unwrap()
                .is_none()
        );
    }
}
