//! How to reach a cluster's two services from outside the cluster (the Ray deployment guide's
//! dashboard and Ray Client): one `ssh -L` through the host `up` and `status` run on (the login
//! node) that forwards both, and the `ray.init()` a laptop then uses. `up` and `status` print
//! the same lines.

/// The laptop-side port of the dashboard tunnel: Ray's default, what the docs' URLs use.
pub const LOCAL_DASHBOARD_PORT: u16 = 8265;
/// The laptop-side port of the Ray Client tunnel: Ray's default client server port.
pub const LOCAL_CLIENT_PORT: u16 = 10001;

/// `ray://host:port` for a client server's host:port.
pub fn ray_client_url(client_address: &str) -> String {
    format!("ray://{client_address}")
}

/// Where the tunnel goes through: the user and the host running this command.
pub struct Via {
    pub user: String,
    pub host: String,
}

impl Via {
    pub fn here() -> Self {
        Via {
            user: std::env::var("USER").unwrap_or_else(|_| "<you>".into()),
            host: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "<login node>".into()),
        }
    }
}

/// The lines for a laptop: the `ssh -L` forwarding every service the cluster has, then what to
/// open and call through it. Empty when the cluster has neither service yet.
pub fn laptop_lines(
    dashboard_url: Option<&str>,
    client_address: Option<&str>,
    token_path: Option<&str>,
    via: &Via,
) -> Vec<String> {
    let dashboard = dashboard_url.map(|u| u.strip_prefix("http://").unwrap_or(u));
    let mut forwards = Vec::new();
    let mut then = Vec::new();
    if let Some(hostport) = dashboard {
        forwards.push(format!("-L {LOCAL_DASHBOARD_PORT}:{hostport}"));
        then.push(format!("open http://localhost:{LOCAL_DASHBOARD_PORT}"));
    }
    if let Some(hostport) = client_address {
        forwards.push(format!("-L {LOCAL_CLIENT_PORT}:{hostport}"));
        then.push(format!("ray.init(\"ray://localhost:{LOCAL_CLIENT_PORT}\")"));
    }
    if forwards.is_empty() {
        return vec![];
    }
    let mut lines = vec![
        format!("ssh -N {} {}@{}", forwards.join(" "), via.user, via.host),
        format!("then {}", then.join(", and in Python ")),
    ];
    if let (Some(_), Some(token)) = (client_address, token_path) {
        lines.push(format!(
            "with a copy of the token: RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=<copy of {}@{}:{token}>",
            via.user, via.host
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn via() -> Via {
        Via {
            user: "ann".into(),
            host: "login1".into(),
        }
    }

    #[test]
    fn one_tunnel_forwards_the_dashboard_and_the_client_port() {
        let lines = laptop_lines(
            Some("http://10.0.0.1:8265"),
            Some("10.0.0.1:23456"),
            Some("/h/.ray-hpc/clusters/c/token"),
            &via(),
        );
        assert_eq!(
            lines,
            [
                "ssh -N -L 8265:10.0.0.1:8265 -L 10001:10.0.0.1:23456 ann@login1",
                "then open http://localhost:8265, and in Python ray.init(\"ray://localhost:10001\")",
                "with a copy of the token: RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=<copy of ann@login1:/h/.ray-hpc/clusters/c/token>",
            ]
        );
    }

    #[test]
    fn only_what_the_cluster_has_is_forwarded() {
        let lines = laptop_lines(Some("http://10.0.0.1:8265"), None, Some("/t"), &via());
        assert_eq!(
            lines,
            [
                "ssh -N -L 8265:10.0.0.1:8265 ann@login1",
                "then open http://localhost:8265"
            ]
        );
        let no_auth = laptop_lines(None, Some("10.0.0.1:1"), None, &via());
        assert_eq!(no_auth.len(), 2, "{no_auth:?}");
        assert!(laptop_lines(None, None, None, &via()).is_empty());
        assert_eq!(ray_client_url("10.0.0.1:1"), "ray://10.0.0.1:1");
    }
}
