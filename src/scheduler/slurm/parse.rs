//! Slurm's words as ours: hostlists, CPU grants, `scontrol` and `squeue` output, job states.
//! Every parser here takes outside input: it is bounded, and garbage is an error naming where
//! it came from, never a panic.

use std::collections::BTreeMap;

use crate::scheduler::{EndReason, JobInfo, JobState, MAX_HOSTS, SchedulerError};

fn bad(variable: &str, value: &str, why: impl Into<String>) -> SchedulerError {
    SchedulerError::BadVariable {
        variable: variable.into(),
        value: shorten(value),
        why: why.into(),
    }
}

/// A value quoted in a message: long ones cut, so an error never repeats megabytes of input.
fn shorten(value: &str) -> String {
    const MAX: usize = 200;
    match value.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}...", &value[..at]),
        None => value.to_string(),
    }
}

/// An upper bound on the hosts a hostlist names (`n[1-3,7],m[01-04]x[1-2]` → 4 + 8), computed
/// without expanding it. Malformed parts count as one: the expansion reports them.
pub fn hostlist_size_bound(value: &str) -> u128 {
    let mut total: u128 = 0;
    let mut expression: u128 = 1;
    let mut group: Option<u128> = None; // Some while inside [...]
    let mut item = String::new();
    let item_size = |item: &str| -> u128 {
        let parse = |s: &str| s.trim().parse::<u128>().ok();
        match item.split_once('-') {
            Some((lo, hi)) => match (parse(lo), parse(hi)) {
                (Some(lo), Some(hi)) => lo.abs_diff(hi).saturating_add(1),
                // Digits too many for u128 are certainly too many hosts.
                _ if item.bytes().filter(u8::is_ascii_digit).count() > 38 => u128::MAX,
                _ => 1,
            },
            None => 1,
        }
    };
    for c in value.chars() {
        match (c, group) {
            ('[', None) => {
                group = Some(0);
                item.clear();
            }
            (']', Some(g)) => {
                let g = g.saturating_add(item_size(&item));
                expression = expression.saturating_mul(g.max(1));
                group = None;
            }
            (',', Some(g)) => {
                group = Some(g.saturating_add(item_size(&item)));
                item.clear();
            }
            (',' | ' ', None) => {
                total = total.saturating_add(expression);
                expression = 1;
            }
            (_, Some(_)) => item.push(c),
            (_, None) => {}
        }
    }
    total.saturating_add(expression)
}

/// Expands a Slurm hostlist (`n[001-004,010],gpu1`), keeping zero padding. A list naming more
/// than [`MAX_HOSTS`] hosts is refused before anything is expanded.
pub fn expand_hostlist(variable: &str, value: &str) -> Result<Vec<String>, SchedulerError> {
    let bound = hostlist_size_bound(value);
    if bound > MAX_HOSTS as u128 {
        return Err(bad(
            variable,
            value,
            format!("it names more than {MAX_HOSTS} hosts, more than any real allocation"),
        ));
    }
    let hosts = hostlist_parser::parse(value).map_err(|e| bad(variable, value, e.to_string()))?;
    if hosts.is_empty() {
        return Err(bad(variable, value, "it names no host"));
    }
    Ok(hosts)
}

/// Expands SLURM_JOB_CPUS_PER_NODE (`4(x2),2` → [4, 4, 2]); refuses more than [`MAX_HOSTS`]
/// entries before building them.
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
                (count, repeat as usize)
            }
            None => (part, 1),
        };
        let count: u32 = count
            .parse()
            .map_err(|_| bad(variable, value, format!("`{count}` is not a CPU count")))?;
        if cpus.len() + repeat > MAX_HOSTS {
            return Err(bad(
                variable,
                value,
                format!("it covers more than {MAX_HOSTS} nodes"),
            ));
        }
        cpus.extend(std::iter::repeat_n(count, repeat));
    }
    Ok(cpus)
}

/// Parses `scontrol -o show node` output into node name → NodeAddr. A line without both is
/// garbage, not a node.
pub fn parse_node_addresses(output: &str) -> Result<BTreeMap<String, String>, SchedulerError> {
    let mut addresses = BTreeMap::new();
    for line in output.lines().filter(|l| !l.trim().is_empty()) {
        let mut name = None;
        let mut addr = None;
        for field in line.split_whitespace() {
            if let Some(v) = field.strip_prefix("NodeName=") {
                name = Some(v);
            } else if let Some(v) = field.strip_prefix("NodeAddr=") {
                addr = Some(v);
            }
        }
        match (name, addr) {
            (Some(name), Some(addr)) if !name.is_empty() && !addr.is_empty() => {
                addresses.insert(name.to_string(), addr.to_string());
            }
            _ => {
                return Err(SchedulerError::BadOutput {
                    command: "scontrol -o show node".into(),
                    why: format!(
                        "expected NodeName=... NodeAddr=... on every line, got {:?}",
                        shorten(line)
                    ),
                });
            }
        }
    }
    Ok(addresses)
}

/// Slurm's job states as ours (squeue's %T, long form).
pub fn job_state(word: &str) -> JobState {
    match word {
        "PENDING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED" | "RESV_DEL_HOLD" => {
            JobState::Pending
        }
        "RUNNING" | "CONFIGURING" | "RESIZING" | "SIGNALING" | "STAGE_OUT" => JobState::Running,
        "SUSPENDED" | "STOPPED" => JobState::Suspended,
        "COMPLETING" => JobState::Completing,
        "COMPLETED" => JobState::Ended(EndReason::Completed),
        "CANCELLED" => JobState::Ended(EndReason::Cancelled),
        "FAILED" => JobState::Ended(EndReason::Failed),
        "TIMEOUT" | "DEADLINE" => JobState::Ended(EndReason::Timeout),
        "NODE_FAIL" | "BOOT_FAIL" => JobState::Ended(EndReason::NodeFailure),
        "PREEMPTED" => JobState::Ended(EndReason::Preempted),
        "OUT_OF_MEMORY" => JobState::Ended(EndReason::OutOfMemory),
        other => JobState::Ended(EndReason::Other(other.to_string())),
    }
}

/// What `query` asks squeue for: id, name, state, reason, start, time left.
pub const SQUEUE_FORMAT: &str = "%i|%j|%T|%r|%S|%L";

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
    days.checked_mul(24)?
        .checked_add(h)?
        .checked_mul(60)?
        .checked_add(m)?
        .checked_mul(60)?
        .checked_add(sec)
}

/// Parses squeue output in [`SQUEUE_FORMAT`].
pub fn parse_squeue(output: &str) -> Result<Vec<JobInfo>, SchedulerError> {
    let mut jobs = Vec::new();
    for line in output.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split('|').collect();
        let id = f.first().map(|s| s.trim()).unwrap_or_default();
        let well_formed = f.len() == 6
            && !id.is_empty()
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || b"_[]-+".contains(&b))
            && !f[2].trim().is_empty();
        if !well_formed {
            return Err(SchedulerError::BadOutput {
                command: "squeue".into(),
                why: format!(
                    "expected `id|name|state|reason|start|time left` lines, got {:?}",
                    shorten(line)
                ),
            });
        }
        let optional = |s: &str| {
            let s = s.trim();
            (!s.is_empty() && s != "N/A" && s != "None" && s != "(null)").then(|| s.to_string())
        };
        jobs.push(JobInfo {
            id: id.to_string(),
            name: f[1].trim().to_string(),
            state: job_state(f[2].trim()),
            reason: optional(f[3]),
            start_time: optional(f[4]),
            time_left_s: parse_time_left(f[5].trim()),
        });
    }
    Ok(jobs)
}

/// The job id `sbatch --parsable` printed (`42`, or `42;cluster`).
pub fn parse_sbatch_id(stdout: &str) -> Result<String, SchedulerError> {
    let id = stdout.trim().split(';').next().unwrap_or("");
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit() || b == b'_') {
        return Err(SchedulerError::BadOutput {
            command: "sbatch --parsable".into(),
            why: format!("expected a job id, got {:?}", shorten(stdout)),
        });
    }
    Ok(id.to_string())
}

/// scancel and squeue lines that say a job is gone already: not a failure of ours.
pub fn says_already_gone(stderr: &str) -> bool {
    stderr.lines().all(|l| {
        l.contains("Invalid job id")
            || l.contains("already completing or completed")
            || l.trim().is_empty()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
            assert!(hostlist_size_bound(list) >= want.len() as u128, "{list}");
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
    fn huge_hostlists_are_refused_before_expansion() {
        let started = std::time::Instant::now();
        for list in [
            "n[1-99999999]",
            "n[1-100001]",
            "r[1-1000]n[1-1000]",
            "n[1-99999999999999999999999999999999999999999999]",
            "a[1-50000],b[1-50001]",
        ] {
            let err = expand_hostlist("SLURM_JOB_NODELIST", list).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains("SLURM_JOB_NODELIST") && msg.contains("more than 100000 hosts"),
                "{list}: {msg}"
            );
        }
        assert_eq!(expand_hostlist("X", "n[1-100000]").unwrap().len(), 100_000);
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
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
        for v in [
            "",
            "4(x)",
            "4(x0)",
            "x",
            "4(x2",
            "-1",
            "4;2",
            "2(x4000000000)",
        ] {
            let err = expand_cpus_per_node("SLURM_JOB_CPUS_PER_NODE", v).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains("SLURM_JOB_CPUS_PER_NODE") && msg.contains(v),
                "{msg}"
            );
        }
        let err = expand_cpus_per_node("SLURM_JOB_CPUS_PER_NODE", "2(x100001)").unwrap_err();
        assert!(err.to_string().contains("more than 100000 nodes"), "{err}");
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
        assert_eq!(jobs[2].state, JobState::Ended(EndReason::Cancelled));
        assert_eq!(jobs[2].start_time, None);
        assert_eq!(jobs[1].time_left_s, Some(((24 + 2) * 60 + 3) * 60 + 4));
        assert_eq!(jobs[2].time_left_s, None);
        for (text, secs) in [
            ("5:00", Some(300)),
            ("UNLIMITED", None),
            ("NOT_SET", None),
            ("1:2:3:4", None),
            ("99999999999999999-00:00:00", None),
        ] {
            assert_eq!(parse_time_left(text), secs, "{text}");
        }
        for garbage in ["garbage", "|||||", "x|a|RUNNING|None|N/A|1:00"] {
            let err = parse_squeue(garbage).unwrap_err();
            assert!(err.to_string().contains("squeue"), "{err}");
        }
    }

    #[test]
    fn every_end_has_a_typed_reason() {
        for (word, reason) in [
            ("COMPLETED", EndReason::Completed),
            ("CANCELLED", EndReason::Cancelled),
            ("FAILED", EndReason::Failed),
            ("TIMEOUT", EndReason::Timeout),
            ("NODE_FAIL", EndReason::NodeFailure),
            ("PREEMPTED", EndReason::Preempted),
            ("OUT_OF_MEMORY", EndReason::OutOfMemory),
            ("SPECIAL_EXIT", EndReason::Other("SPECIAL_EXIT".into())),
        ] {
            assert_eq!(job_state(word), JobState::Ended(reason), "{word}");
        }
        assert_eq!(job_state("SUSPENDED"), JobState::Suspended);
    }

    #[test]
    fn node_addresses_from_scontrol() {
        let out = "NodeName=n1 Arch=x86_64 CoresPerSocket=1 NodeAddr=127.0.0.11 NodeHostName=box State=IDLE\nNodeName=n2 NodeAddr=127.0.0.12 NodeHostName=box\n";
        let m = parse_node_addresses(out).unwrap();
        assert_eq!(m["n1"], "127.0.0.11");
        assert_eq!(m["n2"], "127.0.0.12");
        let err = parse_node_addresses("Node n1 not found\n").unwrap_err();
        assert!(err.to_string().contains("scontrol"), "{err}");
    }

    #[test]
    fn sbatch_ids() {
        assert_eq!(parse_sbatch_id("42\n").unwrap(), "42");
        assert_eq!(parse_sbatch_id("42;cluster\n").unwrap(), "42");
        for garbage in ["", "Submitted batch job 42", "x"] {
            let err = parse_sbatch_id(garbage).unwrap_err();
            assert!(err.to_string().contains("sbatch --parsable"), "{err}");
        }
    }

    /// Every parser here on arbitrary bytes: an answer or an error, never a panic, and quickly.
    #[test]
    fn parsers_survive_garbage() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let alphabet = b"n0123456789[]-,x()| :=\n\tNodeAddrNme.;_ABCDEFGHIJKLMNOPQRSTUVWXYZ";
        for _ in 0..20_000 {
            let len = rng.random_range(0..40);
            let s: String = (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
                .collect();
            let _ = expand_hostlist("X", &s);
            let _ = expand_cpus_per_node("X", &s);
            let _ = parse_node_addresses(&s);
            let _ = parse_squeue(&s);
            let _ = parse_time_left(&s);
            let _ = parse_sbatch_id(&s);
        }
    }
}
