//! The optimizer's records (`t_optimizer`, `t_optimizer_evolution`; API spec §3.7, engine spec
//! §3.4) and the per-link statistics the optimizer and the pair status (`/snapshot`) read.
//!
//! A [`Decision`] is what the optimizer (or an operator through `POST /optimizer/current`)
//! decides for a link; storing it upserts the link's [`OptimizerCurrent`] and appends one
//! [`EvolutionEntry`]. The current row also keeps the optimizer's previous state (success,
//! throughput, queue size, ...) so that a restarted optimizer continues where it stopped instead
//! of starting from "no information" as the reference does.
//!
//! Times here are unix **microseconds**: the evolution is ordered by them, and two decisions in
//! the same second must keep their order.

use serde::{Deserialize, Serialize};

/// One decision for a link: what `set_optimizer` stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub source_se: String,
    pub dest_se: String,
    /// Unix microseconds.
    pub datetime: i64,
    /// Decided number of concurrent transfers.
    pub active: i64,
    pub nostreams: i64,
    pub ema: f64,
    /// Throughput of the window the decision was made on.
    pub throughput: f64,
    /// Success rate (percent) of that window.
    pub success: f64,
    pub rationale: Option<String>,
    /// Decision minus the previous value.
    pub diff: i64,
    /// ACTIVE transfers when deciding.
    pub actual_active: i64,
    /// SUBMITTED transfers when deciding.
    pub queue_size: i64,
    pub filesize_avg: f64,
    pub filesize_stddev: f64,
    /// Retries seen in the window (the optimizer compares it with the previous run).
    pub retry_count: i64,
}

/// The current value of a link (`t_optimizer`) plus the previous state of the optimizer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizerCurrent {
    pub source_se: String,
    pub dest_se: String,
    /// Unix microseconds of the last decision.
    pub datetime: i64,
    pub ema: f64,
    pub active: i64,
    pub nostreams: i64,
    // The optimizer's previous state (not in the reference's table, not shown by the API).
    pub throughput: f64,
    pub success: f64,
    pub actual_active: i64,
    pub queue_size: i64,
    pub filesize_avg: f64,
    pub filesize_stddev: f64,
    pub retry_count: i64,
}

/// One row of the evolution (`t_optimizer_evolution`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvolutionEntry {
    pub source_se: String,
    pub dest_se: String,
    /// Unix microseconds.
    pub datetime: i64,
    pub active: i64,
    pub throughput: f64,
    pub success: f64,
    pub rationale: Option<String>,
    pub diff: i64,
    pub actual_active: i64,
    pub queue_size: i64,
    pub ema: f64,
    pub filesize_avg: f64,
    pub filesize_stddev: f64,
}

impl Decision {
    pub fn current(&self) -> OptimizerCurrent {
        OptimizerCurrent {
            source_se: self.source_se.clone(),
            dest_se: self.dest_se.clone(),
            datetime: self.datetime,
            ema: self.ema,
            active: self.active,
            nostreams: self.nostreams,
            throughput: self.throughput,
            success: self.success,
            actual_active: self.actual_active,
            queue_size: self.queue_size,
            filesize_avg: self.filesize_avg,
            filesize_stddev: self.filesize_stddev,
            retry_count: self.retry_count,
        }
    }

    pub fn evolution(&self) -> EvolutionEntry {
        EvolutionEntry {
            source_se: self.source_se.clone(),
            dest_se: self.dest_se.clone(),
            datetime: self.datetime,
            active: self.active,
            throughput: self.throughput,
            success: self.success,
            rationale: self.rationale.clone(),
            diff: self.diff,
            actual_active: self.actual_active,
            queue_size: self.queue_size,
            ema: self.ema,
            filesize_avg: self.filesize_avg,
            filesize_stddev: self.filesize_stddev,
        }
    }
}

/// Which links to read: every set field must match.
#[derive(Debug, Clone, Default)]
pub struct LinkFilter {
    pub source_se: Option<String>,
    pub dest_se: Option<String>,
}

impl LinkFilter {
    pub fn matches(&self, source_se: &str, dest_se: &str) -> bool {
        self.source_se.as_deref().is_none_or(|s| s == source_se)
            && self.dest_se.as_deref().is_none_or(|d| d == dest_se)
    }
}

/// Terminal-transfer statistics of a link (one VO or all) since a point in time, from the
/// per-minute counters kept beside the files.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkStats {
    pub finished: u64,
    pub failed: u64,
    /// Sum of the finished transfers' throughput, and how many had one.
    pub throughput_sum: f64,
    pub throughput_count: u64,
    /// Sum of the finished transfers' durations (seconds), and how many had one.
    pub duration_sum: f64,
    pub duration_count: u64,
    /// Failure reasons with their counts, most frequent first (ties by reason).
    pub errors: Vec<(String, u64)>,
}

impl LinkStats {
    /// Finished over finished + failed (0..1), `None` without terminal transfers.
    pub fn success_ratio(&self) -> Option<f64> {
        let total = self.finished + self.failed;
        (total > 0).then(|| self.finished as f64 / total as f64)
    }

    pub fn avg_throughput(&self) -> Option<f64> {
        (self.throughput_count > 0).then(|| self.throughput_sum / self.throughput_count as f64)
    }

    pub fn avg_duration(&self) -> Option<f64> {
        (self.duration_count > 0).then(|| self.duration_sum / self.duration_count as f64)
    }

    /// The most frequent failure reason and its count.
    pub fn frequent_error(&self) -> Option<(&str, u64)> {
        self.errors.first().map(|(r, n)| (r.as_str(), *n))
    }
}

/// What the optimizer counts of a link over a window (all VOs), from the per-minute counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OptimizerSamples {
    /// FINISHED and ARCHIVING files.
    pub ok: u64,
    /// Recoverable failures and requeued attempts.
    pub failed: u64,
    /// Retries of the requeued attempts.
    pub retries: u64,
    /// Successes with a known size, their bytes and squared bytes.
    pub sized: u64,
    pub bytes: u64,
    pub bytes_sq: u128,
}

impl OptimizerSamples {
    /// Mean and population standard deviation of the sizes of the successes.
    pub fn filesize_stats(&self) -> (f64, f64) {
        if self.sized == 0 {
            return (0.0, 0.0);
        }
        let n = self.sized as f64;
        let mean = self.bytes as f64 / n;
        let var = (self.bytes_sq as f64 / n - mean * mean).max(0.0);
        (mean, var.sqrt())
    }
}

/// A link with files in the queue or running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkLoad {
    pub source_se: String,
    pub dest_se: String,
    /// ACTIVE files.
    pub active: u64,
    /// SUBMITTED files.
    pub queued: u64,
}

/// The status of one (VO, source, destination) with files: the historic `/snapshot` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct PairStatus {
    pub vo_name: String,
    pub source_se: String,
    pub dest_se: String,
    /// Files ACTIVE now.
    pub active: u64,
    /// Files SUBMITTED now.
    pub submitted: u64,
    /// The optimizer's current cap for the link.
    pub max_active: Option<i64>,
    /// The last hour.
    pub last_hour: LinkStats,
    /// Average throughput over the last 60, 30, 15 and 5 minutes.
    pub avg_throughput: [(u32, Option<f64>); 4],
    /// Average wait (seconds) between submission and start of the running transfers.
    pub avg_queued: Option<f64>,
}

/// Per-host counts of running work (`/status/hosts`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostActivity {
    /// ACTIVE transfers whose `transfer_host` is this host.
    pub active: u64,
    /// STARTED bring-online requests whose `staging_host` is this host.
    pub staging: u64,
}

/// The key under which work without a host is counted (the reference's JSON shows a NULL host
/// as `"null"`).
pub const NO_HOST: &str = "null";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_and_averages_are_none_without_data() {
        let mut s = LinkStats::default();
        assert_eq!(s.success_ratio(), None);
        assert_eq!(s.avg_throughput(), None);
        assert_eq!(s.frequent_error(), None);
        s.finished = 3;
        s.failed = 1;
        s.throughput_sum = 6.0;
        s.throughput_count = 3;
        s.errors = vec![("x".into(), 1)];
        assert_eq!(s.success_ratio(), Some(0.75));
        assert_eq!(s.avg_throughput(), Some(2.0));
        assert_eq!(s.frequent_error(), Some(("x", 1)));
    }
}
