//! What a watchdog was told to end, as the orders come in.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::protocol::Order;

/// What the watchdog was told to end, as it stands.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Watch {
    pub(super) sessions: BTreeMap<i32, WatchedSession>,
    /// Start time by pid.
    pub(super) pids: BTreeMap<i32, u64>,
    pub(super) paths: Vec<PathBuf>,
    pub(super) record: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct WatchedSession {
    pub(super) start_time: u64,
    pub(super) what: String,
}

impl Watch {
    /// Takes in one order; false for `done`.
    pub fn apply(&mut self, order: Order) -> bool {
        match order {
            Order::Session {
                sid,
                start_time,
                what,
            } => {
                self.sessions
                    .insert(sid, WatchedSession { start_time, what });
            }
            Order::ForgetSession { sid } => {
                self.sessions.remove(&sid);
            }
            Order::Path(p) => {
                if !self.paths.contains(&p) {
                    self.paths.push(p);
                }
            }
            Order::ForgetPath(p) => self.paths.retain(|q| *q != p),
            Order::Pid { pid, start_time } => {
                self.pids.insert(pid, start_time);
            }
            Order::Record(p) => self.record = Some(p),
            Order::Done => return false,
        }
        true
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
            && self.pids.is_empty()
            && self.paths.is_empty()
            && self.record.is_none()
    }

    pub(super) fn summary(&self) -> String {
        let mut parts: Vec<String> = self
            .sessions
            .iter()
            .map(|(sid, s)| format!("session {sid} ({})", s.what))
            .collect();
        parts.extend(self.pids.keys().map(|pid| format!("process {pid}")));
        parts.extend(self.paths.iter().map(|p| p.display().to_string()));
        if let Some(r) = &self.record {
            parts.push(format!("the record in {}", r.display()));
        }
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forget_undoes_watch() {
        let mut w = Watch::default();
        assert!(w.apply(Order::Session {
            sid: 10,
            start_time: 1,
            what: "x".into()
        }));
        assert!(w.apply(Order::Path("/a".into())));
        assert!(w.apply(Order::Path("/a".into())));
        assert!(w.apply(Order::Path("/b".into())));
        assert_eq!(w.paths.len(), 2);
        assert!(w.apply(Order::ForgetSession { sid: 10 }));
        assert!(w.apply(Order::ForgetPath("/a".into())));
        assert!(w.apply(Order::ForgetPath("/b".into())));
        assert!(w.is_empty());
        assert!(!w.apply(Order::Done));
    }
}
