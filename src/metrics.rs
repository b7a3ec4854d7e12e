//! The head agent's Prometheus metrics (OpenMetrics text, served by axum at `GET /metrics`) and
//! the Prometheus `file_sd` target list for a cluster. Every metric carries `cluster="<name>"`.
//! The metric names and meanings are documented in `docs/metrics.md`.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::render`]'s output (what prometheus-client's text encoder writes).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The node states `rayhpc_nodes` always reports.
pub const NODE_STATES: [&str; 4] = ["running", "idle", "draining", "dead"];
/// The scheduler job states `rayhpc_scheduler_jobs` always reports.
pub const JOB_STATES: [&str; 5] = ["pending", "running", "suspended", "completing", "ended"];

/// The scheduler commands `rayhpc_scheduler_command_failures` reports (at 0) from the start.
pub const SCHEDULER_COMMANDS: [&str; 3] = ["submit", "query", "cancel"];

/// Resources `rayhpc_pending_demand` reports (at 0) from the start.
pub const BASE_RESOURCES: [&str; 3] = ["CPU", "GPU", "memory"];

/// One label, e.g. `state="running"`.
type Label = [(&'static str, String); 1];
type GaugeF = Gauge<f64, AtomicU64>;

fn label(key: &'static str, value: &str) -> Label {
    [(key, value.to_string())]
}

fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The head agent's metrics. Cheap to clone; every setter is thread-safe.
#[derive(Clone, Debug)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    nodes: Family<Label, Gauge>,
    expected_nodes: Gauge,
    bringup_seconds: GaugeF,
    pending_demand: Family<Label, GaugeF>,
    /// Resources ever reported in `pending_demand`, so that vanished ones are set to 0.
    pending_seen: Mutex<Vec<String>>,
    scheduler_jobs: Family<Label, Gauge>,
    submissions: Family<Label, Counter>,
    submission_failures: Family<Label, Counter>,
    scheduler_up: Gauge,
    scheduler_command_failures: Family<Label, Counter>,
}

impl Metrics {
    /// Metrics for cluster `cluster`, all at zero, with `rayhpc_info{version}` = 1.
    pub fn new(cluster: &str) -> Self {
        let mut registry = Registry::with_prefix_and_labels(
            "rayhpc",
            [("cluster".into(), cluster.to_string().into())].into_iter(),
        );
        let nodes = Family::<Label, Gauge>::default();
        let expected_nodes = Gauge::default();
        let bringup_seconds = GaugeF::default();
        let pending_demand = Family::<Label, GaugeF>::default();
        let scheduler_jobs = Family::<Label, Gauge>::default();
        let submissions = Family::<Label, Counter>::default();
        let submission_failures = Family::<Label, Counter>::default();
        let scheduler_up = Gauge::default();
        scheduler_up.set(1);
        let scheduler_command_failures = Family::<Label, Counter>::default();
        for command in SCHEDULER_COMMANDS {
            scheduler_command_failures
                .get_or_create(&label("command", command))
                .inc_by(0);
        }
        let info = Family::<Label, Gauge>::default();
        info.get_or_create(&label("version", env!("CARGO_PKG_VERSION")))
            .set(1);
        for s in NODE_STATES {
            nodes.get_or_create(&label("state", s)).set(0);
        }
        for s in JOB_STATES {
            scheduler_jobs.get_or_create(&label("state", s)).set(0);
        }
        for r in BASE_RESOURCES {
            pending_demand.get_or_create(&label("resource", r)).set(0.0);
        }

        registry.register("info", "ray-hpc build information (always 1)", info);
        registry.register("nodes", "Ray nodes of this cluster by state", nodes.clone());
        registry.register(
            "expected_nodes",
            "Nodes this cluster expects (allocation plus autoscaled)",
            expected_nodes.clone(),
        );
        registry.register(
            "bringup_seconds",
            "Seconds from agent start until every initial node was alive",
            bringup_seconds.clone(),
        );
        registry.register(
            "pending_demand",
            "Resources requested by pending Ray tasks and actors, by resource",
            pending_demand.clone(),
        );
        registry.register(
            "scheduler_jobs",
            "Autoscaler batch jobs of this cluster by scheduler state",
            scheduler_jobs.clone(),
        );
        registry.register(
            "submissions",
            "Batch jobs submitted by the autoscaler, by node type",
            submissions.clone(),
        );
        registry.register(
            "submission_failures",
            "Batch job submissions the scheduler refused, by node type",
            submission_failures.clone(),
        );

        registry.register(
            "scheduler_up",
            "1 while the scheduler's commands answer, 0 while the autoscaler backs off from it",
            scheduler_up.clone(),
        );
        registry.register(
            "scheduler_command_failures",
            "Scheduler commands that failed or did not answer in time, by command",
            scheduler_command_failures.clone(),
        );

        Self {
            inner: Arc::new(Inner {
                registry,
                nodes,
                expected_nodes,
                bringup_seconds,
                pending_demand,
                pending_seen: Mutex::new(BASE_RESOURCES.map(String::from).to_vec()),
                scheduler_jobs,
                submissions,
                submission_failures,
                scheduler_up,
                scheduler_command_failures,
            }),
        }
    }

    pub fn set_expected_nodes(&self, n: u64) {
        self.inner.expected_nodes.set(as_i64(n));
    }

    /// Sets every state in [`NODE_STATES`]: the sum of its entries in `counts`, else 0.
    /// Unknown states are ignored.
    pub fn set_nodes_by_state(&self, counts: &[(&str, u64)]) {
        set_states(&self.inner.nodes, &NODE_STATES, counts);
    }

    pub fn set_bringup_seconds(&self, secs: f64) {
        self.inner.bringup_seconds.set(secs);
    }

    /// Replaces the pending demand: each listed resource gets its amount (repeats are summed),
    /// and every resource reported before but not listed now goes to 0.
    pub fn set_pending_demand(&self, shapes: &[(String, f64)]) {
        let mut seen = self
            .inner
            .pending_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (resource, _) in shapes {
            if !seen.contains(resource) {
                seen.push(resource.clone());
            }
        }
        for resource in seen.iter() {
            let total: f64 = shapes
                .iter()
                .filter(|(r, _)| r == resource)
                // Not `.sum()`: an empty f64 sum is -0.0, which would render as "-0.0".
                .fold(0.0, |acc, (_, v)| acc + v);
            self.inner
                .pending_demand
                .get_or_create(&label("resource", resource))
                .set(total);
        }
    }

    /// Sets every state in [`JOB_STATES`]: the sum of its entries in `counts`, else 0.
    /// Unknown states are ignored.
    pub fn set_scheduler_jobs(&self, counts: &[(&str, u64)]) {
        set_states(&self.inner.scheduler_jobs, &JOB_STATES, counts);
    }

    /// Creates the submission counters of these node types at 0, so that they are exported
    /// (and `rate()` works) before the first submission. Optional.
    pub fn declare_node_types(&self, node_types: &[&str]) {
        for t in node_types {
            self.inner
                .submissions
                .get_or_create(&label("node_type", t))
                .inc_by(0);
            self.inner
                .submission_failures
                .get_or_create(&label("node_type", t))
                .inc_by(0);
        }
    }

    /// Whether the scheduler answers (1) or the autoscaler is backing off from it (0).
    pub fn set_scheduler_up(&self, up: bool) {
        self.inner.scheduler_up.set(i64::from(up));
    }

    /// One scheduler command (`submit`, `query`, `cancel`, ...) that failed or timed out.
    pub fn inc_scheduler_command_failures(&self, command: &str) {
        self.inner
            .scheduler_command_failures
            .get_or_create(&label("command", command))
            .inc();
    }

    pub fn inc_submissions(&self, node_type: &str) {
        self.inner
            .submissions
            .get_or_create(&label("node_type", node_type))
            .inc();
    }

    pub fn inc_submission_failures(&self, node_type: &str) {
        self.inner
            .submission_failures
            .get_or_create(&label("node_type", node_type))
            .inc();
    }

    /// The OpenMetrics text exposition (ends with `# EOF`), see [`CONTENT_TYPE`].
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; an encoder error would leave a partial text.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry) {
            tracing::warn!("encoding metrics failed: {e}");
        }
        out
    }
}

fn set_states(family: &Family<Label, Gauge>, states: &[&str], counts: &[(&str, u64)]) {
    for state in states {
        let total = counts
            .iter()
            .filter(|(s, _)| s == state)
            .fold(0u64, |acc, (_, n)| acc.saturating_add(*n));
        family
            .get_or_create(&label("state", state))
            .set(as_i64(total));
    }
}

/// Serves `GET /metrics` on `listener` until the future is dropped or aborted. Any other path
/// answers 404.
pub async fn serve(metrics: Metrics, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(|| async move {
                ([(header::CONTENT_TYPE, CONTENT_TYPE)], metrics.render())
            }),
        )
        .fallback(|| async { StatusCode::NOT_FOUND.into_response() });
    axum::serve(listener, app).await
}

/// Writes a Prometheus `file_sd` JSON file listing this cluster's metrics endpoints: our own
/// (`ours`, job `ray-hpc`) and every Ray node's metrics export port (job `ray`). Atomic (temp
/// file in the same directory, then rename), mode 0600; creates the parent directory.
pub fn write_file_sd(
    path: &Path,
    cluster: &str,
    ours: &str,
    ray_nodes: &[String],
) -> std::io::Result<()> {
    let doc = serde_json::json!([
        {"targets": [ours], "labels": {"cluster": cluster, "job": "ray-hpc"}},
        {"targets": ray_nodes, "labels": {"cluster": cluster, "job": "ray"}},
    ]);
    let mut text = serde_json::to_vec_pretty(&doc).map_err(std::io::Error::other)?;
    text.push(b'\n');

    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{}: not a file path", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);

    let result = (|| {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample line starting with `prefix` (name and labels), if any.
    fn sample(text: &str, prefix: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.trim().parse().ok())
    }

    #[test]
    fn render_has_every_documented_metric() {
        let m = Metrics::new("c1");
        // Counter families with no node type yet are not exported at all.
        assert!(!m.render().contains("rayhpc_submissions"));
        m.declare_node_types(&["cpu"]);
        let text = m.render();
        for (name, ty) in [
            ("rayhpc_info", "gauge"),
            ("rayhpc_nodes", "gauge"),
            ("rayhpc_expected_nodes", "gauge"),
            ("rayhpc_bringup_seconds", "gauge"),
            ("rayhpc_pending_demand", "gauge"),
            ("rayhpc_scheduler_jobs", "gauge"),
            ("rayhpc_submissions", "counter"),
            ("rayhpc_submission_failures", "counter"),
            ("rayhpc_scheduler_up", "gauge"),
            ("rayhpc_scheduler_command_failures", "counter"),
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} {ty}\n")),
                "{name} {ty} missing in:\n{text}"
            );
            assert!(text.contains(&format!("# HELP {name} ")), "{name} help");
        }
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(
            sample(
                &text,
                "rayhpc_submissions_total{cluster=\"c1\",node_type=\"cpu\"}"
            ),
            Some(0.0)
        );
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            sample(
                &text,
                &format!("rayhpc_info{{cluster=\"c1\",version=\"{version}\"}}")
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "rayhpc_expected_nodes{cluster=\"c1\"}"),
            Some(0.0)
        );

        m.inc_submissions("gpu");
        m.inc_submissions("gpu");
        m.inc_submission_failures("cpu");
        m.set_expected_nodes(5);
        m.set_bringup_seconds(12.5);
        m.set_scheduler_jobs(&[("pending", 2), ("running", 1)]);
        assert_eq!(
            sample(&text, "rayhpc_scheduler_up{cluster=\"c1\"}"),
            Some(1.0)
        );
        m.set_scheduler_up(false);
        m.inc_scheduler_command_failures("query");
        let text = m.render();
        assert_eq!(
            sample(&text, "rayhpc_scheduler_up{cluster=\"c1\"}"),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &text,
                "rayhpc_scheduler_command_failures_total{cluster=\"c1\",command=\"query\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "rayhpc_scheduler_command_failures_total{cluster=\"c1\",command=\"cancel\"}"
            ),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &text,
                "rayhpc_submissions_total{cluster=\"c1\",node_type=\"gpu\"}"
            ),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &text,
                "rayhpc_submission_failures_total{cluster=\"c1\",node_type=\"cpu\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "rayhpc_expected_nodes{cluster=\"c1\"}"),
            Some(5.0)
        );
        assert_eq!(
            sample(&text, "rayhpc_bringup_seconds{cluster=\"c1\"}"),
            Some(12.5)
        );
        for (state, n) in [("pending", 2.0), ("running", 1.0), ("completing", 0.0)] {
            assert_eq!(
                sample(
                    &text,
                    &format!("rayhpc_scheduler_jobs{{cluster=\"c1\",state=\"{state}\"}}")
                ),
                Some(n)
            );
        }
    }

    #[test]
    fn nodes_by_state_resets_missing_states() {
        let m = Metrics::new("c");
        let v = |text: &str, s: &str| {
            sample(
                text,
                &format!("rayhpc_nodes{{cluster=\"c\",state=\"{s}\"}}"),
            )
        };
        let text = m.render();
        for s in NODE_STATES {
            assert_eq!(v(&text, s), Some(0.0), "{s}");
        }
        m.set_nodes_by_state(&[("running", 3), ("idle", 1), ("bogus", 9)]);
        let text = m.render();
        assert_eq!(v(&text, "running"), Some(3.0));
        assert_eq!(v(&text, "idle"), Some(1.0));
        assert_eq!(v(&text, "bogus"), None);
        m.set_nodes_by_state(&[("draining", 1), ("dead", 2)]);
        let text = m.render();
        assert_eq!(v(&text, "running"), Some(0.0));
        assert_eq!(v(&text, "idle"), Some(0.0));
        assert_eq!(v(&text, "draining"), Some(1.0));
        assert_eq!(v(&text, "dead"), Some(2.0));
    }

    #[test]
    fn pending_demand_that_disappears_goes_to_zero() {
        let m = Metrics::new("c");
        let v = |text: &str, r: &str| {
            sample(
                text,
                &format!("rayhpc_pending_demand{{cluster=\"c\",resource=\"{r}\"}}"),
            )
        };
        m.set_pending_demand(&[
            ("CPU".into(), 8.0),
            ("GPU".into(), 2.0),
            ("CPU".into(), 0.5),
        ]);
        let text = m.render();
        assert_eq!(v(&text, "CPU"), Some(8.5));
        assert_eq!(v(&text, "GPU"), Some(2.0));
        m.set_pending_demand(&[("memory".into(), 1e9)]);
        let text = m.render();
        assert_eq!(v(&text, "CPU"), Some(0.0));
        assert_eq!(v(&text, "GPU"), Some(0.0));
        assert_eq!(v(&text, "memory"), Some(1e9));
        m.set_pending_demand(&[]);
        let text = m.render();
        assert_eq!(v(&text, "memory"), Some(0.0));
        assert!(!text.contains("-0"), "{text}");
    }

    #[test]
    fn file_sd_has_the_documented_shape() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sd").join("c.json");
        let nodes = vec!["10.0.0.1:8080".to_string(), "10.0.0.2:8080".to_string()];
        write_file_sd(&path, "c", "10.0.0.1:9400", &nodes).unwrap();
        // Rewriting replaces the file.
        write_file_sd(&path, "c", "10.0.0.1:9400", &nodes).unwrap();
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(
            doc,
            serde_json::json!([
                {"targets": ["10.0.0.1:9400"], "labels": {"cluster": "c", "job": "ray-hpc"}},
                {"targets": ["10.0.0.1:8080", "10.0.0.2:8080"],
                 "labels": {"cluster": "c", "job": "ray"}},
            ])
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("c.json")]);
    }

    #[tokio::test]
    async fn serves_metrics_over_http() {
        let m = Metrics::new("e2e");
        m.set_expected_nodes(3);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(m.clone(), listener));

        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let resp = client
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some(CONTENT_TYPE)
        );
        let body = resp.text().await.unwrap();
        assert!(body.contains("# TYPE rayhpc_nodes gauge"));
        assert!(body.contains("rayhpc_expected_nodes{cluster=\"e2e\"} 3\n"));
        assert!(body.ends_with("# EOF\n"));

        let resp = client
            .get(format!("http://{addr}/other"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404);

        server.abort();
        assert!(server.await.unwrap_err().is_cancelled());
    }
}
