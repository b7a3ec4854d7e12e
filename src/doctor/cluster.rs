//! Checks of clusters in the registry: the head's CPUs, the privacy of the cluster dirs and
//! tokens, and whether the head's ports can be reached from here.

use std::path::PathBuf;

use serde_json::json;

use super::{CheckResult, Status};
use crate::registry::ClusterState;

/// Past this many nodes the head's work (GCS, dashboard, autoscaling state) needs the head
/// node to itself.
pub const HEAD_CPUS_MAX_NODES: u32 = 16;

/// `head-cpus`: a big cluster should not schedule tasks on its head.
///
/// `nodes`: the cluster's node count; `head_cpus`: what rank 0 announced (from the record; None
/// when it has not started); `config_head_num_cpus`: `ray.head_num_cpus` (None: the head's
/// whole grant).
pub fn head_cpus(
    name: &str,
    nodes: u32,
    head_cpus: Option<u32>,
    config_head_num_cpus: Option<u32>,
) -> CheckResult {
    const ID: &str = "head-cpus";
    const TITLE: &str = "CPUs on the head node";
    let values = json!({
        "nodes": nodes,
        "head_cpus": head_cpus,
        "config_head_num_cpus": config_head_num_cpus,
        "max_nodes_with_head_cpus": HEAD_CPUS_MAX_NODES,
    });
    let announced = match (head_cpus, config_head_num_cpus) {
        (Some(n), _) => format!("its head announces {n} CPUs"),
        (None, Some(n)) => format!("its head will announce {n} CPUs (ray.head_num_cpus)"),
        (None, None) => "its head will announce its whole CPU grant".to_string(),
    };
    let busy = head_cpus.or(config_head_num_cpus) != Some(0);
    if nodes > HEAD_CPUS_MAX_NODES && busy {
        let fix = if config_head_num_cpus == Some(0) {
            "the config already sets `ray.head_num_cpus = 0`: it applies to clusters started from \
             now on, so start this one again"
                .to_string()
        } else {
            "set `head_num_cpus = 0` in the config's [ray] section, so the head node runs only \
             Ray's GCS, dashboard and raylet, and start the cluster again"
                .to_string()
        };
        CheckResult::new(
            ID,
            TITLE,
            Status::Warn,
            format!(
                "cluster {name} has {nodes} nodes (more than {HEAD_CPUS_MAX_NODES}) and {announced}: \
                 tasks and actors placed there compete with the GCS the whole cluster depends on"
            ),
        )
        .fix(fix)
        .values(values)
    } else {
        let why = if busy {
            format!("at most {HEAD_CPUS_MAX_NODES} nodes, so work on the head is fine")
        } else {
            "tasks and actors stay off the head".to_string()
        };
        CheckResult::new(
            ID,
            TITLE,
            Status::Ok,
            format!(
                "cluster {name} has {nodes} {} and {announced}: {why}",
                if nodes == 1 { "node" } else { "nodes" }
            ),
        )
        .values(values)
    }
}

/// Why a cluster dir or one of its files is not private.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub path: PathBuf,
    pub why: String,
}

/// The privacy of each cluster dir checked (`ClusterDir::check_private`, plus the record's
/// token file when it lies elsewhere).
#[derive(Debug, Clone, PartialEq)]
pub struct PrivacyInput {
    /// The registry root.
    pub root: String,
    /// Each cluster checked, with the problems found (empty: private).
    pub clusters: Vec<(String, Vec<Problem>)>,
}

/// What to do about one problem: the `chmod` the registry names, or what fits the kind.
fn fix_for(p: &Problem) -> String {
    if let Some(start) = p.why.find("`chmod ") {
        if let Some(len) = p.why[start + 1..].find('`') {
            return p.why[start + 1..start + 1 + len].to_string();
        }
    }
    if p.why.contains("belongs to uid") {
        format!(
            "{} is another user's: use a registry of your own (RAY_HPC_HOME, default ~/.ray-hpc)",
            p.path.display()
        )
    } else if p.why.contains("symbolic link") {
        format!(
            "replace the symbolic link {} with a file of your own, or remove that cluster's dir",
            p.path.display()
        )
    } else {
        format!("{}: {}", p.path.display(), p.why)
    }
}

/// `token-perms`: each cluster dir 0700 and its record and token 0600, all owned by the user.
pub fn token_perms(input: &PrivacyInput) -> CheckResult {
    const ID: &str = "token-perms";
    const TITLE: &str = "cluster dir and token permissions";
    let bad: Vec<_> = input
        .clusters
        .iter()
        .flat_map(|(name, problems)| problems.iter().map(move |p| (name, p)))
        .collect();
    let values = json!({
        "root": input.root,
        "clusters": input.clusters.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        "problems": bad
            .iter()
            .map(|(n, p)| json!({ "cluster": n, "path": p.path, "why": p.why }))
            .collect::<Vec<_>>(),
    });
    if input.clusters.is_empty() {
        return CheckResult::skipped(
            ID,
            TITLE,
            format!("the registry {} holds no clusters", input.root),
        )
        .values(values);
    }
    if bad.is_empty() {
        let n = input.clusters.len();
        return CheckResult::new(
            ID,
            TITLE,
            Status::Ok,
            format!(
                "{n} cluster {} under {}: yours, dirs 0700 and files 0600, so no other user can \
                 read a token",
                if n == 1 { "dir" } else { "dirs" },
                input.root
            ),
        )
        .values(values);
    }
    let finding = bad
        .iter()
        .map(|(n, p)| format!("cluster {n}: {}: {}", p.path.display(), p.why))
        .collect::<Vec<_>>()
        .join("; ");
    let mut fixes: Vec<String> = bad.iter().map(|(_, p)| fix_for(p)).collect();
    fixes.dedup();
    CheckResult::new(
        ID,
        TITLE,
        Status::Fail,
        format!(
            "{finding}; anyone who reads a cluster's token can run code on that cluster as you"
        ),
    )
    .fix(format!(
        "{} (ray-hpc refuses to use a cluster until then)",
        fixes.join("; ")
    ))
    .values(values)
}

/// One of the head's addresses, and what connecting to it gave.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub label: &'static str,
    /// host:port; None when the record has none.
    pub address: Option<String>,
    /// Milliseconds to connect, or why it failed.
    pub outcome: Result<u64, String>,
}

/// What the reachability check saw.
#[derive(Debug, Clone, PartialEq)]
pub struct ReachInput {
    pub name: String,
    pub state: ClusterState,
    /// The record's message (why it ended or failed).
    pub message: Option<String>,
    /// The host the connections were made from.
    pub from_host: String,
    pub targets: Vec<Target>,
    /// `ray.port_range`, for the fix.
    pub port_range: (u16, u16),
}

fn state_name(state: ClusterState) -> &'static str {
    match state {
        ClusterState::Queued => "QUEUED",
        ClusterState::Starting => "STARTING",
        ClusterState::Ready => "READY",
        ClusterState::Ended => "ENDED",
        ClusterState::Failed => "FAILED",
    }
}

/// `head-reachable`: TCP connections from this host to the head's GCS, dashboard and Ray
/// Client server ports.
pub fn head_reachable(input: &ReachInput) -> CheckResult {
    const ID: &str = "head-reachable";
    const TITLE: &str = "head ports reachable";
    let name = &input.name;
    let values = json!({
        "state": state_name(input.state),
        "from_host": input.from_host,
        "targets": input.targets.iter().map(|t| json!({
            "label": t.label,
            "address": t.address,
            "connect_ms": t.outcome.as_ref().ok(),
            "error": t.outcome.as_ref().err(),
        })).collect::<Vec<_>>(),
    });
    if input.state != ClusterState::Ready {
        let why = match input.state {
            ClusterState::Ended | ClusterState::Failed => "so it has no head to reach",
            _ => "so its head is not up yet; run doctor again once it is READY",
        };
        let message = input
            .message
            .as_ref()
            .map(|m| format!(" ({m})"))
            .unwrap_or_default();
        return CheckResult::skipped(
            ID,
            TITLE,
            format!(
                "cluster {name} is {}{message}, {why}",
                state_name(input.state)
            ),
        )
        .values(values);
    }
    let parts: Vec<String> = input
        .targets
        .iter()
        .map(|t| match (&t.address, &t.outcome) {
            (Some(a), Ok(ms)) => format!("{} {a} reachable ({ms} ms)", t.label),
            (Some(a), Err(e)) => format!("{} {a} NOT reachable: {e}", t.label),
            (None, _) => format!("{} not in the record", t.label),
        })
        .collect();
    let finding = format!(
        "from this host ({}) only: {}. Each node needs these too: run `ray-hpc doctor {name}` \
         on a node of the allocation to check from there",
        input.from_host,
        parts.join(", ")
    );
    let failed = input
        .targets
        .iter()
        .any(|t| t.address.is_some() && t.outcome.is_err());
    let missing = input.targets.iter().any(|t| t.address.is_none());
    if failed {
        CheckResult::new(ID, TITLE, Status::Fail, finding)
            .fix(format!(
                "if the cluster's job is gone its record is stale (`ray-hpc status {name}`); \
                 otherwise a firewall or routing blocks these ports from this host: every node \
                 must reach the head on ray.port_range {}-{} (and login nodes too, for `submit` \
                 and the dashboard), so ask the admins to open it, or set `network.interface` \
                 to a network the nodes share",
                input.port_range.0, input.port_range.1
            ))
            .values(values)
    } else if missing {
        CheckResult::new(ID, TITLE, Status::Warn, finding)
            .fix(format!(
                "the record of {name} lacks an address: it was written by an older ray-hpc, or \
                 the head has not finished starting; check `ray-hpc status {name}`"
            ))
            .values(values)
    } else {
        CheckResult::new(ID, TITLE, Status::Ok, finding).values(values)
    }
}

/// host:port of a URL such as `http://10.0.0.1:8265/` (or a bare host:port).
pub fn url_host_port(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let hp = rest.split('/').next()?;
    (!hp.is_empty() && hp.contains(':')).then(|| hp.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_cpus_passes_for_small_clusters_and_an_idle_head() {
        let r = head_cpus("c", 4, Some(32), None);
        assert_eq!(r.status, Status::Ok, "{r:?}");
        let r = head_cpus("c", 64, Some(0), Some(0));
        assert_eq!(r.status, Status::Ok, "{r:?}");
        assert!(r.finding.contains("stay off the head"), "{}", r.finding);
        assert_eq!(head_cpus("c", 64, None, Some(0)).status, Status::Ok);
    }

    #[test]
    fn head_cpus_warns_for_a_big_cluster_whose_head_takes_work() {
        let r = head_cpus("big", 17, Some(32), None);
        assert_eq!(r.status, Status::Warn, "{r:?}");
        assert!(r.finding.contains("17 nodes") && r.finding.contains("32 CPUs"));
        assert!(r.fix.unwrap().contains("head_num_cpus = 0"));
        let r = head_cpus("big", 64, None, None);
        assert_eq!(r.status, Status::Warn);
        // Already fixed in the config, but not in the running cluster.
        let r = head_cpus("big", 64, Some(8), Some(0));
        assert_eq!(r.status, Status::Warn);
        assert!(r.fix.unwrap().contains("already"));
    }

    #[test]
    fn token_perms_passes_for_private_dirs_and_skips_an_empty_registry() {
        let r = token_perms(&PrivacyInput {
            root: "/h/.ray-hpc".into(),
            clusters: vec![("a".into(), vec![]), ("b".into(), vec![])],
        });
        assert_eq!(r.status, Status::Ok, "{r:?}");
        assert!(r.finding.contains("2 cluster dirs"), "{}", r.finding);
        let r = token_perms(&PrivacyInput {
            root: "/h/.ray-hpc".into(),
            clusters: vec![],
        });
        assert_eq!(r.status, Status::Skipped);
    }

    #[test]
    fn token_perms_fails_with_the_chmod_to_run() {
        let r = token_perms(&PrivacyInput {
            root: "/h/.ray-hpc".into(),
            clusters: vec![
                ("a".into(), vec![]),
                (
                    "b".into(),
                    vec![Problem {
                        path: "/h/.ray-hpc/clusters/b".into(),
                        why: "its mode is 0755, so other users can read it; run `chmod 0700 /h/.ray-hpc/clusters/b` if you trust its contents".into(),
                    }],
                ),
                (
                    "c".into(),
                    vec![Problem {
                        path: "/h/.ray-hpc/clusters/c/token".into(),
                        why: "it belongs to uid 7, not to you (uid 0)".into(),
                    }],
                ),
            ],
        });
        assert_eq!(r.status, Status::Fail, "{r:?}");
        assert!(r.finding.contains("cluster b") && r.finding.contains("0755"));
        let fix = r.fix.unwrap();
        assert!(
            fix.starts_with("chmod 0700 /h/.ray-hpc/clusters/b;"),
            "{fix}"
        );
        assert!(fix.contains("another user's"), "{fix}");
        assert_eq!(r.values["problems"].as_array().unwrap().len(), 2);
    }

    fn reach(state: ClusterState, outcomes: [Result<u64, String>; 3]) -> ReachInput {
        let labels = ["gcs", "dashboard", "client server"];
        ReachInput {
            name: "c1".into(),
            state,
            message: Some("stopped by SIGTERM".into()),
            from_host: "login1".into(),
            targets: labels
                .into_iter()
                .zip(outcomes)
                .enumerate()
                .map(|(i, (label, outcome))| Target {
                    label,
                    address: Some(format!("10.0.0.1:{}", 6379 + i)),
                    outcome,
                })
                .collect(),
            port_range: (20000, 30000),
        }
    }

    #[test]
    fn head_reachable_passes_when_every_port_answers() {
        let r = head_reachable(&reach(ClusterState::Ready, [Ok(1), Ok(0), Ok(2)]));
        assert_eq!(r.status, Status::Ok, "{r:?}");
        assert!(
            r.finding.contains("from this host (login1) only"),
            "{}",
            r.finding
        );
        assert!(
            r.finding.contains("gcs 10.0.0.1:6379 reachable (1 ms)"),
            "{}",
            r.finding
        );
    }

    #[test]
    fn head_reachable_fails_for_a_closed_port_and_skips_an_ended_cluster() {
        let r = head_reachable(&reach(
            ClusterState::Ready,
            [Ok(1), Err("connection refused".into()), Ok(2)],
        ));
        assert_eq!(r.status, Status::Fail, "{r:?}");
        assert!(
            r.finding
                .contains("dashboard 10.0.0.1:6380 NOT reachable: connection refused")
        );
        assert!(r.fix.unwrap().contains("20000-30000"));
        let r = head_reachable(&reach(ClusterState::Ended, [Ok(1), Ok(1), Ok(1)]));
        assert_eq!(r.status, Status::Skipped);
        assert!(r.finding.contains("cluster c1 is ENDED"), "{}", r.finding);
        let mut missing = reach(ClusterState::Ready, [Ok(1), Ok(1), Ok(1)]);
        missing.targets[2].address = None;
        assert_eq!(head_reachable(&missing).status, Status::Warn);
    }

    #[test]
    fn urls_to_host_port() {
        assert_eq!(
            url_host_port("http://127.0.0.2:24727").as_deref(),
            Some("127.0.0.2:24727")
        );
        assert_eq!(
            url_host_port("http://[::1]:8265/x").as_deref(),
            Some("[::1]:8265")
        );
        assert_eq!(url_host_port("10.0.0.1:1").as_deref(), Some("10.0.0.1:1"));
        assert_eq!(url_host_port("http://host").as_deref(), None);
        assert_eq!(url_host_port("").as_deref(), None);
    }
}
