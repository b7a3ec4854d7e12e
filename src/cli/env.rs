//! `ray-hpc env NAME [--json]`: the environment that points the real `ray` CLI, `ray.init()` and
//! `ray job submit` at a READY cluster of the registry, as `export` lines (for `eval`) or as JSON
//! (schema `ray-hpc.env/v1`, docs/cli-json.md). `up` prints the same when the cluster is ready.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::registry::{self, ClusterDir, ClusterRecord, ClusterState};
use crate::scheduler::shell_quote;

pub const SCHEMA: &str = "ray-hpc.env/v1";

/// A variable that a stale value in the user's environment would override: Ray reads
/// `RAY_AUTH_TOKEN` before `RAY_AUTH_TOKEN_PATH`, so another cluster's token there wins.
const OVERRIDING: &str = "RAY_AUTH_TOKEN";

#[derive(clap::Args)]
pub struct Args {
    /// The cluster's name in the registry (`ray-hpc status` lists them). It must be READY.
    #[arg(value_name = "NAME")]
    name: String,
    /// Print JSON (schema `ray-hpc.env/v1`, documented in docs/cli-json.md).
    #[arg(long)]
    json: bool,
}

pub fn run(args: &Args) -> anyhow::Result<i32> {
    let root = registry::root()?;
    let record = match ClusterDir::open_existing(&root, &args.name).and_then(|d| d.load()) {
        Ok(record) => record,
        Err(e) => {
            eprintln!("ray-hpc: error: {e}");
            return Ok(1);
        }
    };
    if record.state != ClusterState::Ready {
        let why = record
            .message
            .as_deref()
            .map(|m| format!(" ({m})"))
            .unwrap_or_default();
        eprintln!(
            "ray-hpc: error: cluster `{}` is {}{why}, not READY, so there is nothing to point Ray at; see `ray-hpc status {}`",
            record.name,
            state_word(record.state),
            record.name
        );
        return Ok(1);
    }
    if args.json {
        let mut doc = serde_json::to_value(Connection::of(&record))?;
        doc["schema"] = SCHEMA.into();
        println!("{doc}");
    } else {
        for line in export_lines(&record) {
            println!("{line}");
        }
    }
    Ok(0)
}

/// A state as the JSON documents write it (`READY`).
pub fn state_word(state: ClusterState) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{state:?}"))
}

/// One environment variable to set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVar {
    pub key: &'static str,
    pub value: String,
}

/// The environment that points Ray at this cluster, in the order the export lines give it.
pub fn cluster_env(record: &ClusterRecord) -> Vec<EnvVar> {
    let mut vars = Vec::new();
    let mut set = |key, value: &str| {
        vars.push(EnvVar {
            key,
            value: value.to_string(),
        })
    };
    if let Some(gcs) = &record.gcs_address {
        set("RAY_ADDRESS", gcs);
    }
    if let Some(url) = &record.dashboard_url {
        set("RAY_API_SERVER_ADDRESS", url);
    }
    match &record.token_path {
        Some(p) => {
            set("RAY_AUTH_MODE", "token");
            set("RAY_AUTH_TOKEN_PATH", &p.display().to_string());
        }
        None => set("RAY_AUTH_MODE", "disabled"),
    }
    vars
}

/// Variables to remove from the environment along with setting [`cluster_env`].
pub fn cluster_unset(record: &ClusterRecord) -> Vec<&'static str> {
    if record.token_path.is_some() {
        vec![OVERRIDING]
    } else {
        vec![]
    }
}

/// `export` (and `unset`) lines for `eval`.
pub fn export_lines(record: &ClusterRecord) -> Vec<String> {
    cluster_env(record)
        .into_iter()
        .map(|v| format!("export {}={}", v.key, shell_quote(&v.value)))
        .chain(
            cluster_unset(record)
                .into_iter()
                .map(|k| format!("unset {k}")),
        )
        .collect()
}

/// What a program needs to use a cluster: `env --json`, and the `cluster` of `up --json`'s
/// `ready` event.
#[derive(Debug, Serialize)]
pub struct Connection {
    pub name: String,
    pub state: ClusterState,
    pub scheduler: String,
    pub job_id: String,
    pub gcs_address: Option<String>,
    pub dashboard_url: Option<String>,
    pub auth: String,
    pub token_path: Option<PathBuf>,
    pub nodes_joined: u32,
    pub nodes_expected: u32,
    pub cpus: u32,
    pub gpus: u32,
    pub env: BTreeMap<&'static str, String>,
    pub unset: Vec<&'static str>,
}

impl Connection {
    pub fn of(record: &ClusterRecord) -> Self {
        Connection {
            name: record.name.clone(),
            state: record.state,
            scheduler: record.scheduler.clone(),
            job_id: record.job_id.clone(),
            gcs_address: record.gcs_address.clone(),
            dashboard_url: record.dashboard_url.clone(),
            auth: record.auth.clone(),
            token_path: record.token_path.clone(),
            nodes_joined: record.nodes_joined,
            nodes_expected: record.expected_nodes,
            cpus: record.nodes.iter().map(|n| n.cpus).sum(),
            gpus: record.nodes.iter().map(|n| n.gpus).sum(),
            env: cluster_env(record)
                .into_iter()
                .map(|v| (v.key, v.value))
                .collect(),
            unset: cluster_unset(record),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready() -> ClusterRecord {
        let mut r = ClusterRecord::new("c", "local", "5", ClusterState::Ready, 1, "token");
        r.gcs_address = Some("127.0.0.11:24720".into());
        r.dashboard_url = Some("http://127.0.0.11:22716".into());
        r.token_path = Some("/h/.ray-hpc/clusters/c/token".into());
        r.nodes_joined = 1;
        r
    }

    #[test]
    fn export_lines_point_ray_at_the_cluster() {
        let mut r = ready();
        assert_eq!(
            export_lines(&r),
            [
                "export RAY_ADDRESS=127.0.0.11:24720",
                "export RAY_API_SERVER_ADDRESS=http://127.0.0.11:22716",
                "export RAY_AUTH_MODE=token",
                "export RAY_AUTH_TOKEN_PATH=/h/.ray-hpc/clusters/c/token",
                "unset RAY_AUTH_TOKEN",
            ]
        );
        r.token_path = None;
        assert!(export_lines(&r).contains(&"export RAY_AUTH_MODE=disabled".to_string()));
        assert!(!export_lines(&r).iter().any(|l| l.starts_with("unset")));
    }

    #[test]
    fn the_json_connection_has_the_same_environment_and_the_documented_keys() {
        let doc = serde_json::to_value(Connection::of(&ready())).unwrap();
        assert_eq!(doc["state"], "READY");
        assert_eq!(doc["gcs_address"], "127.0.0.11:24720");
        assert_eq!(doc["env"]["RAY_ADDRESS"], "127.0.0.11:24720");
        assert_eq!(doc["env"]["RAY_AUTH_MODE"], "token");
        assert_eq!(
            doc["env"]["RAY_AUTH_TOKEN_PATH"],
            "/h/.ray-hpc/clusters/c/token"
        );
        assert_eq!(doc["unset"], serde_json::json!(["RAY_AUTH_TOKEN"]));
        let documented = crate::cli::doc_keys::documented(include_str!("../../docs/cli-json.md"));
        crate::cli::doc_keys::check(&documented, "docs/cli-json.md", "connection", &doc);
    }
}
