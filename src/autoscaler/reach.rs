//! The autoscaler's error policy towards the scheduler: after a scheduler command fails (an
//! error, or no answer within `scheduler_timeout_s`), no command goes to the scheduler until a
//! backoff is over, doubling from `scheduler_poll_interval_s` up to `backoff_max_s`; the first
//! answer ends the outage. Meanwhile the head keeps serving, and `status` and the metrics say
//! which command failed, how, since when, and when it is tried again. Pure: time comes in.

use crate::registry::SchedulerOutage;

/// How long to wait after failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial_ms: u64,
    pub max_ms: u64,
}

impl Backoff {
    /// The wait after `failures` failures in a row (1 or more).
    pub fn after(&self, failures: u32) -> u64 {
        let doublings = failures.saturating_sub(1).min(32);
        self.initial_ms
            .saturating_mul(1u64 << doublings)
            .min(self.max_ms)
            .max(self.initial_ms.min(self.max_ms))
    }
}

/// A failure run: what failed last and when to try again.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outage {
    command: String,
    error: String,
    since_ms: u64,
    failures: u32,
    retry_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerReach {
    backoff: Backoff,
    outage: Option<Outage>,
}

impl SchedulerReach {
    pub fn new(backoff: Backoff) -> Self {
        SchedulerReach {
            backoff,
            outage: None,
        }
    }

    /// Whether a scheduler command may go out now.
    pub fn may_call(&self, now_ms: u64) -> bool {
        self.outage.as_ref().is_none_or(|o| now_ms >= o.retry_ms)
    }

    /// The scheduler answered (a refusal is an answer too).
    pub fn answered(&mut self) {
        if let Some(o) = self.outage.take() {
            tracing::info!(
                "autoscaler: the scheduler answers again after {} failure(s)",
                o.failures
            );
        }
    }

    /// `command` failed with `error` at `now_ms`.
    pub fn failed(&mut self, now_ms: u64, command: &str, error: &str) {
        let (since_ms, failures) = match &self.outage {
            Some(o) => (o.since_ms, o.failures + 1),
            None => (now_ms, 1),
        };
        let retry_ms = now_ms.saturating_add(self.backoff.after(failures));
        tracing::warn!(
            "autoscaler: `{command}` failed ({failures} in a row): {error}; asking the scheduler again in {:.0}s",
            (retry_ms - now_ms) as f64 / 1000.0
        );
        self.outage = Some(Outage {
            command: command.to_string(),
            error: error.to_string(),
            since_ms,
            failures,
            retry_ms,
        });
    }

    /// The outage, as the cluster record keeps it; None while the scheduler answers.
    pub fn outage(&self) -> Option<SchedulerOutage> {
        self.outage.as_ref().map(|o| SchedulerOutage {
            command: o.command.clone(),
            error: o.error.clone(),
            since_unix: o.since_ms / 1000,
            failures: o.failures,
            retry_unix: o.retry_ms.div_ceil(1000),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKOFF: Backoff = Backoff {
        initial_ms: 5_000,
        max_ms: 60_000,
    };

    #[test]
    fn waits_double_up_to_the_limit() {
        let waits: Vec<u64> = (1..=6).map(|n| BACKOFF.after(n)).collect();
        assert_eq!(waits, [5_000, 10_000, 20_000, 40_000, 60_000, 60_000]);
        assert_eq!(BACKOFF.after(u32::MAX), 60_000);
        let odd = Backoff {
            initial_ms: 10_000,
            max_ms: 1_000,
        };
        assert_eq!(odd.after(1), 1_000);
    }

    #[test]
    fn a_failure_stops_calls_until_the_backoff_is_over_and_an_answer_ends_it() {
        let mut r = SchedulerReach::new(BACKOFF);
        assert!(r.may_call(0));
        assert_eq!(r.outage(), None);
        r.failed(1_000, "jobs-query -j 1", "did not answer within 30s");
        assert!(!r.may_call(5_999));
        assert!(r.may_call(6_000));
        r.failed(6_000, "jobs-query -j 1", "did not answer within 30s");
        assert!(!r.may_call(15_999));
        let o = r.outage().unwrap();
        assert_eq!(
            (o.command.as_str(), o.failures, o.since_unix, o.retry_unix),
            ("jobs-query -j 1", 2, 1, 16)
        );
        r.answered();
        assert_eq!(r.outage(), None);
        assert!(r.may_call(7_000));
        // A new run starts from the first wait again.
        r.failed(20_000, "submit-job", "exit code 1");
        assert!(r.may_call(25_000));
        assert_eq!(r.outage().unwrap().since_unix, 20);
    }
}
