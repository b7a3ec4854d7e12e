//! The `ray start` command line for one node. Every port is explicit (clusters share nodes),
//! the temp dir is short (Unix socket paths fail past 107 bytes), resources come from discovery,
//! and auth is always set explicitly (a token in a shared ~/.ray must not switch it on or off).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;

use super::ports::NodePorts;

#[derive(Debug, Clone)]
pub enum Role {
    Head,
    /// Joins the GCS at host:port.
    Worker {
        gcs_address: String,
    },
}

#[derive(Debug, Clone)]
pub struct RayNodeSpec {
    pub ray_bin: PathBuf,
    pub role: Role,
    pub node_ip: IpAddr,
    pub ports: NodePorts,
    pub temp_dir: PathBuf,
    pub num_cpus: u32,
    pub num_gpus: u32,
    pub memory_bytes: u64,
    pub object_store_bytes: u64,
    /// RAY_CLOUD_INSTANCE_ID and RAY_NODE_TYPE_NAME: map a Ray node back to its scheduler job.
    pub instance_id: String,
    pub node_type: String,
    /// Token file for RAY_AUTH_TOKEN_PATH; None means auth disabled.
    pub auth_token_path: Option<PathBuf>,
    /// CUDA_VISIBLE_DEVICES for the raylet and its workers, when GPUs were matched.
    pub cuda_visible_devices: Option<String>,
    pub extra_env: BTreeMap<String, String>,
    /// Head only: ray-hpc is the autoscaler, so Ray's own monitor must not report too.
    pub no_monitor: bool,
}

/// Environment that makes a Ray process or client use this cluster's auth and nothing else.
pub fn auth_env(token_path: Option<&std::path::Path>) -> Vec<(String, String)> {
    match token_path {
        Some(p) => vec![
            ("RAY_AUTH_MODE".into(), "token".into()),
            ("RAY_AUTH_TOKEN_PATH".into(), p.display().to_string()),
        ],
        None => vec![("RAY_AUTH_MODE".into(), "disabled".into())],
    }
}

impl RayNodeSpec {
    pub fn args(&self) -> Vec<String> {
        let p = &self.ports;
        let mut args: Vec<String> = vec!["start".into(), "--block".into()];
        match &self.role {
            Role::Head => {
                args.push("--head".into());
                args.push(format!("--port={}", p.gcs));
                args.push(format!("--dashboard-port={}", p.dashboard));
                args.push(format!("--dashboard-host={}", self.node_ip));
                args.push(format!("--ray-client-server-port={}", p.client_server));
                if self.no_monitor {
                    args.push("--no-monitor".into());
                }
            }
            Role::Worker { gcs_address } => args.push(format!("--address={gcs_address}")),
        }
        args.extend([
            format!("--node-ip-address={}", self.node_ip),
            format!("--node-manager-port={}", p.node_manager),
            format!("--object-manager-port={}", p.object_manager),
            format!("--runtime-env-agent-port={}", p.runtime_env_agent),
            format!("--dashboard-agent-grpc-port={}", p.dashboard_agent_grpc),
            format!("--dashboard-agent-listen-port={}", p.dashboard_agent_listen),
            format!("--metrics-export-port={}", p.metrics_export),
            format!("--min-worker-port={}", p.min_worker),
            format!("--max-worker-port={}", p.max_worker),
            format!("--temp-dir={}", self.temp_dir.display()),
            format!("--num-cpus={}", self.num_cpus),
            format!("--num-gpus={}", self.num_gpus),
            format!("--memory={}", self.memory_bytes),
            format!("--object-store-memory={}", self.object_store_bytes),
            "--disable-usage-stats".into(),
        ]);
        args
    }

    pub fn env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = vec![
            ("RAY_CLOUD_INSTANCE_ID".into(), self.instance_id.clone()),
            ("RAY_NODE_TYPE_NAME".into(), self.node_type.clone()),
            // The v2 path is what `ray status` and request_resources use with our reports.
            ("RAY_enable_autoscaler_v2".into(), "1".into()),
            ("RAY_USAGE_STATS_ENABLED".into(), "0".into()),
            // On SIGTERM `ray start` would first drain its node for up to 30 s; we drain nodes
            // ourselves before stopping them, and a cancelled job has no 30 s to spare.
            ("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S".into(), "0".into()),
        ];
        env.extend(auth_env(self.auth_token_path.as_deref()));
        if let Some(cvd) = &self.cuda_visible_devices {
            env.push(("CUDA_VISIBLE_DEVICES".into(), cvd.clone()));
        }
        env.extend(self.extra_env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.ray_bin);
        cmd.args(self.args());
        // Never inherit another cluster's token or address from the caller's environment.
        for var in ["RAY_AUTH_TOKEN", "RAY_ADDRESS", "RAY_HPC_CLUSTER_SECRET"] {
            cmd.env_remove(var);
        }
        cmd.envs(self.env());
        cmd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(role: Role) -> RayNodeSpec {
        RayNodeSpec {
            ray_bin: "/venv/bin/ray".into(),
            role,
            node_ip: "127.0.0.12".parse().unwrap(),
            ports: NodePorts {
                gcs: 1,
                dashboard: 2,
                client_server: 3,
                node_manager: 4,
                object_manager: 5,
                runtime_env_agent: 6,
                dashboard_agent_grpc: 7,
                dashboard_agent_listen: 8,
                metrics_export: 9,
                min_worker: 100,
                max_worker: 199,
            },
            temp_dir: "/tmp/rh-abc-1".into(),
            num_cpus: 1,
            num_gpus: 0,
            memory_bytes: 1 << 30,
            object_store_bytes: 1 << 28,
            instance_id: "42.1".into(),
            node_type: "worker".into(),
            auth_token_path: Some("/tmp/rh-abc-1/token".into()),
            cuda_visible_devices: None,
            extra_env: BTreeMap::new(),
            no_monitor: false,
        }
    }

    #[test]
    fn head_gets_every_port_explicitly() {
        let args = spec(Role::Head).args();
        for flag in [
            "--head",
            "--port=1",
            "--dashboard-port=2",
            "--ray-client-server-port=3",
            "--node-manager-port=4",
            "--object-manager-port=5",
            "--runtime-env-agent-port=6",
            "--dashboard-agent-grpc-port=7",
            "--dashboard-agent-listen-port=8",
            "--metrics-export-port=9",
            "--min-worker-port=100",
            "--max-worker-port=199",
            "--dashboard-host=127.0.0.12",
            "--num-cpus=1",
            "--block",
        ] {
            assert!(
                args.iter().any(|a| a == flag),
                "{flag} missing from {args:?}"
            );
        }
    }

    #[test]
    fn worker_joins_and_carries_its_instance_and_token_path_not_the_token() {
        let s = spec(Role::Worker {
            gcs_address: "127.0.0.11:6379".into(),
        });
        let args = s.args();
        assert!(args.contains(&"--address=127.0.0.11:6379".to_string()));
        assert!(!args.iter().any(|a| a.starts_with("--port=")));
        let env = s.env();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("RAY_CLOUD_INSTANCE_ID"), Some("42.1"));
        assert_eq!(get("RAY_NODE_TYPE_NAME"), Some("worker"));
        assert_eq!(get("RAY_AUTH_MODE"), Some("token"));
        assert_eq!(get("RAY_AUTH_TOKEN_PATH"), Some("/tmp/rh-abc-1/token"));
        assert_eq!(get("RAY_AUTH_TOKEN"), None);
    }

    #[test]
    fn auth_none_disables_explicitly() {
        let mut s = spec(Role::Head);
        s.auth_token_path = None;
        assert!(
            s.env()
                .contains(&("RAY_AUTH_MODE".into(), "disabled".into()))
        );
    }
}
