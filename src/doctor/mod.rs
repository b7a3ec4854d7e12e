//! `ray-hpc doctor [NAME]`: checks the practices large Ray deployments depend on and, for each
//! one that fails, says what to do.
//!
//! Every check is a pure function of what was measured (limits, sizes, paths, versions, modes,
//! connect results) that returns a [`CheckResult`]; [`gather`] measures the real inputs on this
//! host and from the registry. The checks, by id:
//!
//! | id               | fails / warns when                                                           |
//! |------------------|------------------------------------------------------------------------------|
//! | `open-files`     | fail: hard RLIMIT_NOFILE < 65535 (agents raise the soft limit themselves)     |
//! | `dev-shm`        | warn: /dev/shm cannot hold the object store ray-hpc wants, so it shrinks it   |
//! | `socket-path`    | fail: a Ray Unix socket path under the temp dir exceeds 107 bytes             |
//! | `head-cpus`      | warn: more than 16 nodes and the head announces CPUs (only with NAME)         |
//! | `ray-version`    | fail: no `ray`; warn: not the tested release                                 |
//! | `token-perms`    | fail: a cluster dir is not 0700, or its files not 0600, or not yours          |
//! | `head-reachable` | fail: this host cannot open a TCP connection to a port of a READY head        |
//!
//! # `--json` output: schema `ray-hpc.doctor/v1`
//!
//! One JSON object:
//!
//! ```json
//! {
//!   "schema": "ray-hpc.doctor/v1",
//!   "host": "login1",              // where the checks ran
//!   "cluster": "doc1",             // the NAME given, or null
//!   "ok": true,                    // false when a check failed (exit code 1)
//!   "counts": { "ok": 5, "warn": 1, "fail": 0, "skipped": 1 },
//!   "checks": [
//!     {
//!       "id": "open-files",        // stable identifier (the table above)
//!       "title": "open files limit",
//!       "status": "ok",            // "ok" | "warn" | "fail" | "skipped"
//!       "finding": "soft 1024, hard 524288 ...",  // one line, with the measured values;
//!                                  // for "skipped", the reason
//!       "fix": null,               // one line of what to do; null when there is nothing to do
//!       "values": { "soft": 1024, "hard": 524288, "wanted": 65535 }  // the measured inputs,
//!                                  // per check (numbers in bytes, counts or milliseconds)
//!     }
//!   ]
//! }
//! ```
//!
//! Fields may be added to `values` (and new checks to `checks`) within v1; a field that changes
//! meaning bumps the schema.

pub mod cluster;
pub mod gather;
pub mod host;
pub mod install;

use serde::Serialize;

/// The `--json` schema name.
pub const SCHEMA: &str = "ray-hpc.doctor/v1";

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
    /// Not run; the finding says why.
    Skipped,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skipped => "skip",
        }
    }
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckResult {
    pub id: &'static str,
    pub title: &'static str,
    pub status: Status,
    /// One line, with the measured values (the reason, when skipped).
    pub finding: String,
    /// What to do about it; None when there is nothing to do.
    pub fix: Option<String>,
    /// The measured inputs, for machines.
    pub values: serde_json::Value,
}

impl CheckResult {
    pub fn new(id: &'static str, title: &'static str, status: Status, finding: String) -> Self {
        CheckResult {
            id,
            title,
            status,
            finding,
            fix: None,
            values: serde_json::Value::Object(Default::default()),
        }
    }

    pub fn skipped(id: &'static str, title: &'static str, reason: impl Into<String>) -> Self {
        Self::new(id, title, Status::Skipped, reason.into())
    }

    pub fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }

    pub fn values(mut self, values: serde_json::Value) -> Self {
        self.values = values;
        self
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub ok: usize,
    pub warn: usize,
    pub fail: usize,
    pub skipped: usize,
}

/// Everything `doctor` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub host: String,
    pub cluster: Option<String>,
    pub ok: bool,
    pub counts: Counts,
    pub checks: Vec<CheckResult>,
}

impl Report {
    pub fn new(host: String, cluster: Option<String>, checks: Vec<CheckResult>) -> Self {
        let mut counts = Counts::default();
        for c in &checks {
            match c.status {
                Status::Ok => counts.ok += 1,
                Status::Warn => counts.warn += 1,
                Status::Fail => counts.fail += 1,
                Status::Skipped => counts.skipped += 1,
            }
        }
        Report {
            schema: SCHEMA,
            host,
            cluster,
            ok: counts.fail == 0,
            counts,
            checks,
        }
    }

    /// 0 when nothing failed (warnings allowed), 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        if self.ok { 0 } else { 1 }
    }

    /// The readable report: one block per check (status, id, finding, and the fix when there
    /// is something to do), then a summary line.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = write!(s, "ray-hpc doctor on {}", self.host);
        if let Some(name) = &self.cluster {
            let _ = write!(s, ", cluster {name}");
        }
        s.push_str("\n\n");
        let width = self.checks.iter().map(|c| c.id.len()).max().unwrap_or(0);
        for c in &self.checks {
            let _ = writeln!(
                s,
                "{:<4}  {:<width$}  {}",
                c.status.label(),
                c.id,
                c.finding
            );
            if let (Some(fix), Status::Warn | Status::Fail) = (&c.fix, c.status) {
                let _ = writeln!(s, "{:<4}  {:<width$}  fix: {fix}", "", "");
            }
        }
        let n = &self.counts;
        let plural =
            |k: usize, one: &str, many: &str| format!("{k} {}", if k == 1 { one } else { many });
        let _ = writeln!(
            s,
            "\n{} ok, {}, {}, {} skipped",
            n.ok,
            plural(n.warn, "warning", "warnings"),
            plural(n.fail, "failure", "failures"),
            n.skipped
        );
        s
    }
}

/// Command-line options of `ray-hpc doctor`.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// A cluster in the registry; its record adds the cluster checks.
    pub name: Option<String>,
    pub json: bool,
}

/// Runs every check and prints the report; returns the exit code (0: nothing failed).
pub fn run(opts: &Options, config: &crate::config::Config) -> anyhow::Result<i32> {
    let report = gather::report(opts.name.as_deref(), config)?;
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(report.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_counts_and_exit_code() {
        let checks = vec![
            CheckResult::new("a", "A", Status::Ok, "fine".into()),
            CheckResult::new("b", "B", Status::Warn, "meh".into()).fix("do b"),
            CheckResult::skipped("c", "C", "no cluster"),
        ];
        let r = Report::new("h".into(), None, checks.clone());
        assert_eq!(r.exit_code(), 0);
        assert_eq!(
            r.counts,
            Counts {
                ok: 1,
                warn: 1,
                fail: 0,
                skipped: 1
            }
        );
        let text = r.to_text();
        assert!(text.contains("WARN  b  meh\n"), "{text}");
        assert!(text.contains("fix: do b"), "{text}");
        assert!(
            text.contains("1 ok, 1 warning, 0 failures, 1 skipped"),
            "{text}"
        );

        let mut failing = checks;
        failing.push(CheckResult::new("d", "D", Status::Fail, "bad".into()).fix("do d"));
        let r = Report::new("h".into(), Some("c1".into()), failing);
        assert_eq!(r.exit_code(), 1);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["schema"], SCHEMA);
        assert_eq!(json["ok"], false);
        assert_eq!(json["cluster"], "c1");
        assert_eq!(json["checks"][3]["status"], "fail");
        assert_eq!(json["checks"][0]["fix"], serde_json::Value::Null);
    }
}
