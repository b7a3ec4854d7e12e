//! Text and JSON renderings of the status model. Both render the same [`ClusterView`]s.

use std::collections::BTreeMap;

use serde::Serialize;

use super::view::{
    ClusterView, DemandKind, DemandView, ListView, NodeView, NodesSource, RefusedKind, RefusedView,
    SCHEMA, format_unix, state_name,
};

/// The list document, `{"schema", "clusters", "refused"}` in that order.
#[derive(Serialize)]
struct ListDocument<'a> {
    schema: &'static str,
    clusters: &'a [ClusterView],
    refused: &'a [RefusedView],
}

/// The one-cluster document, `{"schema", "cluster"}`.
#[derive(Serialize)]
struct ClusterDocument<'a> {
    schema: &'static str,
    cluster: &'a ClusterView,
}

fn to_json(value: &impl Serialize, compact: bool) -> String {
    let text = if compact {
        serde_json::to_string(value)
    } else {
        serde_json::to_string_pretty(value)
    };
    // Our own types always serialize; say so rather than panic if that ever changes.
    text.unwrap_or_else(|e| {
        serde_json::json!({"schema": SCHEMA, "error": format!("cannot serialize: {e}")}).to_string()
    })
}

/// `{"schema": ..., "clusters": [...], "refused": [...]}`, pretty or on one line.
pub fn list_json(list: &ListView, compact: bool) -> String {
    to_json(
        &ListDocument {
            schema: SCHEMA,
            clusters: &list.clusters,
            refused: &list.refused,
        },
        compact,
    )
}

/// `{"schema": ..., "cluster": {...}}`, pretty or on one line.
pub fn cluster_json(view: &ClusterView, compact: bool) -> String {
    to_json(
        &ClusterDocument {
            schema: SCHEMA,
            cluster: view,
        },
        compact,
    )
}

/// Columns padded to their widest cell; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let cols = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(cols) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                l.push_str(cell);
                l.push_str(&" ".repeat(widths[i] - cell.chars().count() + 2));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).take(cols).collect());
    }
    out
}

/// 8, 0.5, 1.25 (no trailing zeros).
pub fn num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        let s = format!("{x:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

pub fn bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut x = b as f64 / 1024.0;
    let mut unit = 0;
    while x >= 1024.0 && unit + 1 < UNITS.len() {
        x /= 1024.0;
        unit += 1;
    }
    format!("{x:.1} {}", UNITS[unit])
}

/// 45s, 3m12s, 2h05m, 3d04h.
pub fn duration(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn used_of(used: Option<f64>, total: f64) -> String {
    format!(
        "{}/{}",
        used.map(num).unwrap_or_else(|| "-".into()),
        num(total)
    )
}

fn avail_of(avail: Option<f64>, total: f64) -> String {
    format!(
        "{}/{}",
        avail.map(num).unwrap_or_else(|| "-".into()),
        num(total)
    )
}

fn dash(s: Option<&str>) -> String {
    s.filter(|s| !s.is_empty()).unwrap_or("-").to_string()
}

/// READY, `READY (last known)`, `ENDED (job gone; last known state READY)`.
pub fn state_text(v: &ClusterView) -> String {
    let name = state_name(v.state);
    match (&v.state_reason, v.last_known) {
        (Some(r), true) if r.contains("last known") => format!("{name} ({r})"),
        (Some(r), true) => format!("{name} ({r}; last known)"),
        (None, true) => format!("{name} (last known)"),
        (Some(r), false) => format!("{name} ({r})"),
        (None, false) => name.to_string(),
    }
}

fn nodes_text(v: &ClusterView) -> String {
    format!("{}/{}", v.nodes_joined, v.nodes_expected)
}

fn walltime_text(v: &ClusterView) -> String {
    v.walltime_left_s
        .map(duration)
        .unwrap_or_else(|| "-".into())
}

/// The list view: one line per cluster, then the entries we refused to read.
pub fn list_text(list: &ListView) -> String {
    if list.clusters.is_empty() && list.refused.is_empty() {
        return "no clusters\n".to_string();
    }
    let rows: Vec<Vec<String>> = list
        .clusters
        .iter()
        .map(|v| {
            vec![
                v.name.clone(),
                v.scheduler.clone(),
                v.job_id.clone(),
                state_text(v),
                nodes_text(v),
                used_of(v.totals.cpus_used, v.totals.cpus_total),
                used_of(v.totals.gpus_used, v.totals.gpus_total),
                duration(v.age_s),
                walltime_text(v),
            ]
        })
        .collect();
    let mut out = if rows.is_empty() {
        String::new()
    } else {
        table(
            &[
                "NAME",
                "SCHEDULER",
                "JOB",
                "STATE",
                "NODES",
                "CPUS",
                "GPUS",
                "AGE",
                "WALLTIME LEFT",
            ],
            &rows,
        )
    };
    // Below the table, so a long reason does not widen its columns.
    for r in &list.refused {
        let what = match r.kind {
            RefusedKind::Unsafe => "refused",
            RefusedKind::Unreadable => "unreadable",
        };
        out.push_str(&format!("{}  {what}: {}\n", r.name, r.why));
    }
    out
}

/// `{CPU: 1, memory: 1.0 GiB}`.
pub fn shape(bundle: &BTreeMap<String, f64>) -> String {
    let parts: Vec<String> = bundle
        .iter()
        .map(|(k, v)| {
            let value = if k == "memory" || k == "object_store_memory" {
                bytes(v.max(0.0) as u64)
            } else {
                num(*v)
            };
            format!("{k}: {value}")
        })
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// `{CPU: 1} x 12`, or for a placement group `[{CPU: 2} x 2, {GPU: 1}]` (identical bundles
/// grouped).
pub fn demand_text(d: &DemandView) -> String {
    match d.kind {
        DemandKind::Tasks | DemandKind::Constraint => {
            let s = d.bundles.first().map(shape).unwrap_or_else(|| "{}".into());
            format!("{s} x {}", d.count)
        }
        DemandKind::PlacementGroup => {
            let mut groups: Vec<(String, u64)> = vec![];
            for b in &d.bundles {
                let s = shape(b);
                match groups.last_mut() {
                    Some((last, n)) if *last == s => *n += 1,
                    _ => groups.push((s, 1)),
                }
            }
            let inner: Vec<String> = groups
                .into_iter()
                .map(|(s, n)| if n == 1 { s } else { format!("{s} x {n}") })
                .collect();
            let pg = format!("[{}]", inner.join(", "));
            if d.count == 1 {
                pg
            } else {
                format!("{pg} x {}", d.count)
            }
        }
    }
}

fn demand_kind_text(d: &DemandView) -> String {
    match d.kind {
        DemandKind::Tasks => "tasks/actors".to_string(),
        DemandKind::PlacementGroup => match &d.details {
            Some(det) => format!("placement group ({det})"),
            None => "placement group".to_string(),
        },
        DemandKind::Constraint => "request_resources".to_string(),
    }
}

fn node_row(n: &NodeView) -> Vec<String> {
    let mut name = n.name.clone().unwrap_or_else(|| "-".into());
    if n.is_head {
        name.push_str(" (head)");
    }
    let mut status = n.status.as_str().to_string();
    if let Some(idle) = n.idle_s {
        status.push_str(&format!(" {}", duration(idle)));
    }
    vec![
        name,
        dash(Some(&n.address)),
        dash(Some(&n.instance_id)),
        n.node_id
            .as_deref()
            .map(|id| id.chars().take(12).collect())
            .unwrap_or_else(|| "-".into()),
        status,
        avail_of(n.cpus_available, n.cpus_total),
        avail_of(n.gpus_available, n.gpus_total),
        format!(
            "{}/{}",
            n.memory_available_bytes
                .map(bytes)
                .unwrap_or_else(|| "-".into()),
            bytes(n.memory_total_bytes)
        ),
    ]
}

/// One cluster in detail.
pub fn cluster_text(v: &ClusterView) -> String {
    let mut out = String::new();
    let push = |out: &mut String, s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    push(&mut out, format!("Cluster {}: {}", v.name, state_text(v)));
    if let Some(m) = &v.message {
        push(&mut out, format!("  message:       {m}"));
    }
    push(
        &mut out,
        format!("  scheduler:     {} job {}", v.scheduler, v.job_id),
    );
    push(
        &mut out,
        format!(
            "  created:       {} ({} ago), walltime left {}",
            format_unix(v.created_unix),
            duration(v.age_s),
            walltime_text(v)
        ),
    );
    if let Some(s) = &v.expected_start {
        push(&mut out, format!("  expected start: {s}"));
    }
    let source = match v.nodes_source {
        NodesSource::Gcs => "live from the GCS",
        NodesSource::Record => "last known, from the record",
        NodesSource::None => "none yet",
    };
    push(
        &mut out,
        format!("  nodes:         {} joined ({source})", nodes_text(v)),
    );
    push(
        &mut out,
        format!(
            "  resources:     CPUs {} used, GPUs {} used, memory {}/{} used",
            used_of(v.totals.cpus_used, v.totals.cpus_total),
            used_of(v.totals.gpus_used, v.totals.gpus_total),
            v.totals
                .memory_used_bytes
                .map(bytes)
                .unwrap_or_else(|| "-".into()),
            bytes(v.totals.memory_total_bytes)
        ),
    );
    push(
        &mut out,
        format!("  dashboard:     {}", dash(v.dashboard_url.as_deref())),
    );
    let gcs_status = match (&v.gcs.status, &v.gcs.address) {
        (super::view::GcsStatus::Live, _) => " (answering)",
        (super::view::GcsStatus::Unreachable, _) => " (NOT answering)",
        (super::view::GcsStatus::NotAsked, Some(_)) => " (not asked)",
        (super::view::GcsStatus::NotAsked, None) => "",
    };
    push(
        &mut out,
        format!(
            "  GCS:           {}{gcs_status}",
            dash(v.gcs.address.as_deref())
        ),
    );
    if let Some(client) = &v.ray_client_address {
        push(&mut out, format!("  Ray Client:    {client}"));
    }
    if !v.state.is_over() {
        let laptop = super::reach::laptop_lines(
            v.dashboard_url.as_deref(),
            v.ray_client_address
                .as_deref()
                .map(|u| u.trim_start_matches("ray://")),
            v.token_path.as_deref(),
            &super::reach::Via::here(),
        );
        for (i, line) in laptop.iter().enumerate() {
            let lead = if i == 0 { "from a laptop:" } else { "" };
            push(&mut out, format!("  {lead:<14} {line}"));
        }
    }
    if let Some(m) = &v.metrics_address {
        push(&mut out, format!("  metrics:       http://{m}/metrics"));
    }
    if let Some(o) = &v.job_output {
        push(&mut out, format!("  job output:    {o}"));
    }

    if !v.nodes.is_empty() {
        out.push('\n');
        let rows: Vec<Vec<String>> = v.nodes.iter().map(node_row).collect();
        out.push_str(&table(
            &[
                "NODE",
                "ADDRESS",
                "INSTANCE",
                "RAY NODE ID",
                "STATUS",
                "CPUS avail/total",
                "GPUS avail/total",
                "MEMORY avail/total",
            ],
            &rows,
        ));
    }

    out.push('\n');
    match &v.pending_demand {
        None => push(&mut out, "Pending demand: unknown (GCS not heard)".into()),
        Some(d) if d.is_empty() => push(&mut out, "Pending demand: none".into()),
        Some(d) => {
            push(&mut out, "Pending demand:".into());
            let rows: Vec<Vec<String>> = d
                .iter()
                .map(|d| vec![format!("  {}", demand_text(d)), demand_kind_text(d)])
                .collect();
            for line in table(&["", ""], &rows).lines().skip(1) {
                push(&mut out, line.to_string());
            }
        }
    }

    if !v.jobs.is_empty() {
        out.push('\n');
        let rows: Vec<Vec<String>> = v
            .jobs
            .iter()
            .map(|j| {
                let mut state = j.state.as_str().to_string();
                if let Some(s) = &j.end_reason {
                    state.push_str(&format!(" ({s})"));
                }
                vec![
                    j.id.clone(),
                    match j.role {
                        super::view::JobRole::Head => "head".into(),
                        super::view::JobRole::Worker => "worker".into(),
                    },
                    state,
                    dash(j.reason.as_deref()),
                    dash(j.start_time.as_deref()),
                ]
            })
            .collect();
        out.push_str(&table(&["JOB", "ROLE", "STATE", "REASON", "START"], &rows));
    }

    if !v.notes.is_empty() {
        out.push('\n');
        for n in &v.notes {
            push(&mut out, format!("note: {n}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;
    use crate::registry::ClusterState;
    use crate::scheduler::{JobInfo, JobState};
    use crate::status::view::tests::{live_state, record};
    use crate::status::view::{GcsObservation, JobsObservation, Observation, build};

    fn live_view() -> ClusterView {
        let rec = record(ClusterState::Ready);
        build(&Observation {
            record: &rec,
            gcs: GcsObservation::Live(live_state()),
            jobs: JobsObservation::Answered(vec![JobInfo {
                id: "42".into(),
                name: "ray-hpc-c1".into(),
                state: JobState::Running,
                reason: None,
                start_time: Some("2023-11-14T22:13:20".into()),
                time_left_s: None,
            }]),
            now_unix: 1_700_000_600,
        })
    }

    #[test]
    fn tables_pad_columns_and_trim_line_ends() {
        let t = table(
            &["A", "BB", "C"],
            &[
                vec!["xxx".into(), "y".into(), "".into()],
                vec!["é".into(), "yyyy".into(), "z".into()],
            ],
        );
        assert_eq!(t, "A    BB    C\nxxx  y\né    yyyy  z\n");
    }

    #[test]
    fn numbers_bytes_and_durations() {
        assert_eq!(num(8.0), "8");
        assert_eq!(num(0.5), "0.5");
        assert_eq!(num(1.25), "1.25");
        assert_eq!(num(1.0 / 3.0), "0.33");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(8 << 30), "8.0 GiB");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(duration(45), "45s");
        assert_eq!(duration(192), "3m12s");
        assert_eq!(duration(7500), "2h05m");
        assert_eq!(duration(3 * 86_400 + 4 * 3600), "3d04h");
    }

    #[test]
    fn demand_reads_like_ray_status() {
        let d = crate::status::view::demand(&live_state());
        let texts: Vec<String> = d.iter().map(demand_text).collect();
        assert_eq!(texts, ["{CPU: 1} x 12", "[{CPU: 2} x 2]", "{CPU: 8} x 2"]);
        let b = BTreeMap::from([
            ("CPU".to_string(), 1.0),
            ("memory".to_string(), 1073741824.0),
        ]);
        assert_eq!(shape(&b), "{CPU: 1, memory: 1.0 GiB}");
    }

    #[test]
    fn state_texts_say_last_known() {
        let mut v = live_view();
        assert_eq!(state_text(&v), "READY");
        v.last_known = true;
        assert_eq!(state_text(&v), "READY (last known)");
        v.state = ClusterState::Ended;
        v.state_reason = Some("job gone; last known state READY".into());
        assert_eq!(state_text(&v), "ENDED (job gone; last known state READY)");
        v.last_known = false;
        v.state = ClusterState::Queued;
        v.state_reason = Some("waiting in the queue: Priority".into());
        assert_eq!(state_text(&v), "QUEUED (waiting in the queue: Priority)");
    }

    #[test]
    fn list_text_has_one_line_per_cluster_and_refusals() {
        let list = ListView {
            clusters: vec![live_view()],
            refused: vec![RefusedView {
                name: "other".into(),
                kind: RefusedKind::Unsafe,
                why: "its mode is 0755".into(),
            }],
        };
        let text = list_text(&list);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("NAME") && lines[0].contains("WALLTIME LEFT"));
        for want in [
            "c1", "local", "42", "READY", "2/2", "3/8", "0/2", "10m00s", "-",
        ] {
            assert!(lines[1].contains(want), "{want} in {}", lines[1]);
        }
        assert_eq!(lines[2], "other  refused: its mode is 0755");
        assert!(
            lines[0].len() < 100,
            "refusals do not widen columns: {}",
            lines[0]
        );
        assert_eq!(
            list_text(&ListView {
                clusters: vec![],
                refused: vec![]
            }),
            "no clusters\n"
        );
    }

    #[test]
    fn cluster_text_shows_nodes_demand_jobs_and_addresses() {
        let text = cluster_text(&live_view());
        for want in [
            "Cluster c1: READY",
            "local job 42",
            "2/2 joined (live from the GCS)",
            "CPUs 3/8 used",
            "http://10.0.0.1:8265",
            "10.0.0.1:6379 (answering)",
            "Ray Client:    ray://10.0.0.1:10001",
            "-L 8265:10.0.0.1:8265 -L 10001:10.0.0.1:10001",
            "ray.init(\"ray://localhost:10001\")",
            "http://10.0.0.1:9090/metrics",
            "n1 (head)",
            &"01".repeat(6),
            "RUNNING",
            "IDLE 5s",
            "1/4",
            "2.8 GiB/3.7 GiB",
            "{CPU: 1} x 12",
            "tasks/actors",
            "placement group (PACK|pg1)",
            "request_resources",
            "RUNNING",
            "2023-11-14T22:13:20",
        ] {
            assert!(text.contains(want), "{want:?} missing in:\n{text}");
        }
        assert!(
            !text.contains(&"01".repeat(7)),
            "node ids are cut to 12 hex"
        );
        assert!(!text.contains("note:"), "{text}");
    }

    #[test]
    fn unreachable_gcs_is_said_in_text() {
        let rec = record(ClusterState::Ready);
        let v = build(&Observation {
            record: &rec,
            gcs: GcsObservation::Failed("timed out".into()),
            jobs: JobsObservation::Failed("unsupported".into()),
            now_unix: 1_700_000_600,
        });
        let text = cluster_text(&v);
        for want in [
            "READY (last known)",
            "NOT answering",
            "last known, from the record",
            "UNKNOWN",
            "-/4",
            "Pending demand: unknown",
            "note: the GCS did not answer (timed out)",
            "note: could not ask the local scheduler",
        ] {
            assert!(text.contains(want), "{want:?} missing in:\n{text}");
        }
    }

    /// The keys docs/status-json.md documents, per object: the `| \`key\` |` rows under each
    /// `### \`object\`` heading.
    fn documented_keys() -> BTreeMap<String, BTreeSet<String>> {
        let doc = include_str!("../../docs/status-json.md");
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut current: Option<String> = None;
        for line in doc.lines() {
            if let Some(h) = line.strip_prefix("### ") {
                current = h.split('`').nth(1).map(str::to_string);
            } else if let (Some(obj), Some(rest)) = (&current, line.strip_prefix("| `")) {
                let key = rest.split('`').next().unwrap_or_default().to_string();
                out.entry(obj.clone()).or_default().insert(key);
            }
        }
        out
    }

    fn keys(v: &Value) -> BTreeSet<String> {
        v.as_object()
            .unwrap_or_else(|| panic!("not an object: {v}"))
            .keys()
            .cloned()
            .collect()
    }

    fn check(doc: &BTreeMap<String, BTreeSet<String>>, object: &str, v: &Value) {
        let want = doc
            .get(object)
            .unwrap_or_else(|| panic!("docs/status-json.md does not document `{object}`"));
        assert_eq!(
            &keys(v),
            want,
            "the JSON keys of `{object}` differ from docs/status-json.md"
        );
    }

    #[test]
    fn json_has_exactly_the_documented_keys() {
        let doc = documented_keys();
        let mut with_everything = live_view();
        with_everything.job_output = Some("/tmp/out".into());
        with_everything.jobs.push(crate::status::view::JobView {
            id: "43".into(),
            role: crate::status::view::JobRole::Worker,
            name: None,
            state: crate::status::view::JobStateView::Ended,
            end_reason: Some(crate::scheduler::EndReason::Timeout),
            reason: None,
            start_time: None,
        });
        let list = ListView {
            clusters: vec![with_everything.clone()],
            refused: vec![RefusedView {
                name: "x".into(),
                kind: RefusedKind::Unreadable,
                why: "bad".into(),
            }],
        };
        let text = list_json(&list, false);
        assert!(
            text.starts_with("{\n  \"schema\": \"ray-hpc.status/v1\""),
            "{text}"
        );
        let l: Value = serde_json::from_str(&text).unwrap();
        let compact = list_json(&list, true);
        assert!(!compact.contains('\n'));
        assert_eq!(serde_json::from_str::<Value>(&compact).unwrap(), l);
        check(&doc, "list document", &l);
        assert_eq!(l["schema"], "ray-hpc.status/v1");
        check(&doc, "refused", &l["refused"][0]);
        let one: Value = serde_json::from_str(&cluster_json(&with_everything, false)).unwrap();
        check(&doc, "cluster document", &one);
        assert_eq!(one["schema"], "ray-hpc.status/v1");
        let c = &one["cluster"];
        check(&doc, "cluster", c);
        check(&doc, "totals", &c["totals"]);
        check(&doc, "gcs", &c["gcs"]);
        for n in c["nodes"].as_array().unwrap() {
            check(&doc, "node", n);
        }
        for d in c["pending_demand"].as_array().unwrap() {
            check(&doc, "demand", d);
        }
        for j in c["jobs"].as_array().unwrap() {
            check(&doc, "job", j);
        }
        let expected: BTreeSet<String> = [
            "list document",
            "cluster document",
            "cluster",
            "totals",
            "gcs",
            "node",
            "demand",
            "job",
            "refused",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(
            doc.keys().cloned().collect::<BTreeSet<_>>(),
            expected,
            "objects documented"
        );
        // Values the docs promise.
        assert_eq!(c["state"], "READY");
        assert_eq!(c["nodes_source"], "gcs");
        assert_eq!(c["gcs"]["status"], "live");
        assert_eq!(c["nodes"][0]["status"], "RUNNING");
        assert_eq!(c["pending_demand"][0]["kind"], "tasks");
        assert_eq!(c["pending_demand"][1]["kind"], "placement_group");
        assert_eq!(c["pending_demand"][2]["kind"], "constraint");
        assert_eq!(c["pending_demand"][0]["bundles"][0]["CPU"], 1.0);
        assert_eq!(c["jobs"][0]["state"], "RUNNING");
        assert_eq!(c["jobs"][1]["role"], "worker");
        assert_eq!(l["refused"][0]["kind"], "unreadable");
    }
}
