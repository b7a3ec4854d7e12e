//! `ray-hpc env [NAME] [--shell sh|fish|csh] [--json]`: the environment that points the real
//! `ray` CLI, `ray.init()` and `ray job submit` at a READY cluster of the registry, as lines for
//! the shell to evaluate or as JSON (schema `ray-hpc.env/v1`, docs/cli-json.md). `up` prints the
//! same when the cluster is ready. Without NAME, the one READY cluster of the registry.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::registry::{self, ClusterDir, ClusterRecord, ClusterState};
use crate::scheduler::shell_quote;

pub const SCHEMA: &str = "ray-hpc.env/v1";

/// A variable that a stale value in the user's environment would override: Ray reads
/// `RAY_AUTH_TOKEN` before `RAY_AUTH_TOKEN_PATH`, so another cluster's token there wins.
const OVERRIDING: &str = "RAY_AUTH_TOKEN";

/// The shell whose syntax the lines are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Shell {
    /// sh, bash, zsh, ksh: `eval "$(ray-hpc env)"`.
    #[default]
    Sh,
    /// fish: `ray-hpc env --shell fish | source`.
    Fish,
    /// csh, tcsh: eval `ray-hpc env --shell csh` (backquotes, as for `ssh-agent -c`).
    Csh,
}

#[derive(clap::Args)]
pub struct Args {
    /// The cluster's name in the registry (`ray-hpc status` lists them). It must be READY.
    /// Default: the only READY cluster of the registry.
    #[arg(value_name = "NAME")]
    name: Option<String>,
    /// The syntax of the lines: sh (also bash, zsh), fish or csh (also tcsh).
    #[arg(long, value_enum, default_value_t = Shell::Sh, conflicts_with = "json")]
    shell: Shell,
    /// Print JSON (schema `ray-hpc.env/v1`, documented in docs/cli-json.md).
    #[arg(long)]
    json: bool,
}

pub fn run(args: &Args) -> anyhow::Result<i32> {
    let root = registry::root()?;
    let found = match &args.name {
        Some(name) => ClusterDir::open_existing(&root, name)
            .and_then(|d| d.load())
            .map_err(|e| e.to_string()),
        None => the_ready_one(&root),
    };
    let record = match found {
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
        for line in shell_lines(&record, args.shell) {
            println!("{line}");
        }
    }
    Ok(0)
}

/// The registry's only READY cluster; otherwise why there is no single one, listing them.
fn the_ready_one(root: &Path) -> Result<ClusterRecord, String> {
    let mut ready = Vec::new();
    let mut others = Vec::new();
    for name in registry::list_names(root) {
        // A cluster of someone else's, or an unreadable record, is not one to point Ray at.
        let Ok(record) = ClusterDir::open_existing(root, &name).and_then(|d| d.load()) else {
            continue;
        };
        if record.state == ClusterState::Ready {
            ready.push(record);
        } else {
            others.push(format!("{} ({})", record.name, state_word(record.state)));
        }
    }
    pick_one(ready, &others)
}

/// The one READY record, or an error naming what there is instead.
fn pick_one(mut ready: Vec<ClusterRecord>, others: &[String]) -> Result<ClusterRecord, String> {
    match ready.len() {
        1 => Ok(ready.remove(0)),
        0 if others.is_empty() => Err(
            "no cluster in the registry; start one with `ray-hpc up`, then run `ray-hpc env`"
                .to_string(),
        ),
        0 => Err(format!(
            "no READY cluster in the registry (there are: {}); see `ray-hpc status`",
            others.join(", ")
        )),
        _ => Err(format!(
            "{} clusters are READY: {}; say which one, e.g. `ray-hpc env {}`",
            ready.len(),
            ready
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            ready[0].name
        )),
    }
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

/// `export` (and `unset`) lines for `eval` in sh.
pub fn export_lines(record: &ClusterRecord) -> Vec<String> {
    shell_lines(record, Shell::Sh)
}

/// The lines that set [`cluster_env`] and remove [`cluster_unset`] in `shell`'s syntax. The
/// fish and csh forms end each line in `;`, as `ssh-agent -c` does, since their command
/// substitutions join lines into one.
pub fn shell_lines(record: &ClusterRecord, shell: Shell) -> Vec<String> {
    let set = cluster_env(record).into_iter().map(|v| match shell {
        Shell::Sh => format!("export {}={}", v.key, shell_quote(&v.value)),
        Shell::Fish => format!("set -gx {} {};", v.key, fish_quote(&v.value)),
        Shell::Csh => format!("setenv {} {};", v.key, csh_quote(&v.value)),
    });
    let unset = cluster_unset(record).into_iter().map(|k| match shell {
        Shell::Sh => format!("unset {k}"),
        Shell::Fish => format!("set -e {k};"),
        Shell::Csh => format!("unsetenv {k};"),
    });
    set.chain(unset).collect()
}

fn is_plain(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_@%+=:,./-".contains(&b))
}

/// One fish word: inside single quotes fish reads only `\'` and `\\` as escapes.
fn fish_quote(value: &str) -> String {
    if is_plain(value) {
        return value.to_string();
    }
    format!("'{}'", value.replace('\\', r"\\").replace('\'', r"\'"))
}

/// One csh word: single quotes, with `'` and `!` (history, even inside quotes) outside them.
fn csh_quote(value: &str) -> String {
    if is_plain(value) {
        return value.to_string();
    }
    format!(
        "'{}'",
        value.replace('\'', r#"'\''"#).replace('!', r#"'\!'"#)
    )
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
    pub ray_client_address: Option<String>,
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
            ray_client_address: record
                .client_server_address
                .as_deref()
                .map(crate::status::reach::ray_client_url),
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
    fn fish_and_csh_lines_set_and_unset_in_their_syntax() {
        let r = ready();
        assert_eq!(
            shell_lines(&r, Shell::Fish),
            [
                "set -gx RAY_ADDRESS 127.0.0.11:24720;",
                "set -gx RAY_API_SERVER_ADDRESS http://127.0.0.11:22716;",
                "set -gx RAY_AUTH_MODE token;",
                "set -gx RAY_AUTH_TOKEN_PATH /h/.ray-hpc/clusters/c/token;",
                "set -e RAY_AUTH_TOKEN;",
            ]
        );
        assert_eq!(
            shell_lines(&r, Shell::Csh),
            [
                "setenv RAY_ADDRESS 127.0.0.11:24720;",
                "setenv RAY_API_SERVER_ADDRESS http://127.0.0.11:22716;",
                "setenv RAY_AUTH_MODE token;",
                "setenv RAY_AUTH_TOKEN_PATH /h/.ray-hpc/clusters/c/token;",
                "unsetenv RAY_AUTH_TOKEN;",
            ]
        );
    }

    #[test]
    fn odd_characters_stay_one_word_in_each_shell() {
        assert_eq!(fish_quote("/a b/it's\\x"), r"'/a b/it\'s\\x'");
        assert_eq!(csh_quote("/a b/it's!"), r#"'/a b/it'\''s'\!''"#);
        assert_eq!(fish_quote(""), "''");
        assert_eq!(csh_quote(""), "''");
    }

    #[test]
    fn without_a_name_only_a_single_ready_cluster_is_taken() {
        let mut a = ready();
        a.name = "a".into();
        let mut b = ready();
        b.name = "b".into();
        assert_eq!(
            pick_one(vec![a.clone()], &["old (ENDED)".into()])
                .unwrap()
                .name,
            "a"
        );
        let many = pick_one(vec![a, b], &[]).unwrap_err();
        assert!(many.contains("2 clusters are READY: a, b"), "{many}");
        assert!(many.contains("ray-hpc env a"), "{many}");
        let none = pick_one(vec![], &["old (ENDED)".into(), "q (QUEUED)".into()]).unwrap_err();
        assert!(none.contains("no READY cluster"), "{none}");
        assert!(none.contains("old (ENDED), q (QUEUED)"), "{none}");
        let empty = pick_one(vec![], &[]).unwrap_err();
        assert!(empty.contains("no cluster in the registry"), "{empty}");
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
