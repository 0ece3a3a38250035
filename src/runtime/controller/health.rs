//! The figures of the controller status's health section.

use super::*;

/// Figures for the controller status's health section.
#[derive(Debug, Default)]
pub(super) struct Health {
    /// Start times of restarts (the last hour's are counted).
    pub(super) restarts: std::collections::VecDeque<DateTime<Utc>>,
    /// Sessions whose last attempt failed.
    pub(super) failed_last: BTreeSet<String>,
    /// Failed attempts that were retried.
    pub(super) retried: u64,
    /// Of those, the ones whose next attempt succeeded.
    pub(super) recovered: u64,
    /// Sum and count of run times, seconds.
    pub(super) run_seconds: f64,
    pub(super) runs: u64,
    /// Reconcile pass durations: sum, max, count.
    pub(super) pass_sum: f64,
    pub(super) pass_max: f64,
    pub(super) passes: u64,
}

impl Health {
    pub(super) fn ended(&mut self, name: &str, exit: &core::LastExit) {
        let failed = exit.failed();
        if self.failed_last.contains(name) {
            self.retried += 1;
            if !failed {
                self.recovered += 1;
            }
        }
        if failed {
            self.failed_last.insert(name.to_string());
        } else {
            self.failed_last.remove(name);
        }
        self.run_seconds += exit.duration().num_milliseconds() as f64 / 1000.0;
        self.runs += 1;
    }

    pub(super) fn pass(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        self.pass_sum += s;
        self.pass_max = self.pass_max.max(s);
        self.passes += 1;
        let hour_ago = Utc::now() - chrono::Duration::hours(1);
        while self.restarts.front().is_some_and(|t| *t < hour_ago) {
            self.restarts.pop_front();
        }
    }
}
