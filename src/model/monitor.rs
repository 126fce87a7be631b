//! The monitoring read model: what the live aggregates answer. The store computes these from
//! its in-memory aggregates (`store::aggregates`); the service shapes them into ftsmon's JSON,
//! the web pages and `/metrics`. Pure data, no I/O.
//!
//! Vocabulary: a *row* is one `(source_se, dest_se, vo_name, activity)`; a *link* is one
//! `(source_se, dest_se)`. Counts "now" are files in a state at this moment; *window* counts
//! are terminal files whose `finish_time` falls in the last minutes asked for, read from a
//! per-minute ring of [`RING_MINUTES`] minutes.

use std::collections::BTreeMap;

use super::job::{FileState, Job, JobState};

/// Depth of the per-minute rings: the longest window a view can ask for without a scan. The
/// pages offer 1–24 h (ftsmon's bar offers 1–6 h); one slot per minute with terminal files, so
/// an idle link costs nothing.
pub const RING_MINUTES: i64 = 24 * 60;

/// Upper bounds (seconds) of the transfer and staging duration histograms (monitoring spec
/// §2.3): from a second to half a day.
pub const DURATION_BUCKETS: [f64; 14] = [
    1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0,
];

/// Upper bounds (bytes) of the file size histogram: 1 KiB · 4^k up to 1 TiB.
pub const SIZE_BUCKETS: [f64; 16] = {
    let mut b = [0.0; 16];
    let mut i = 0;
    let mut v = 1024.0;
    while i < 16 {
        b[i] = v;
        v *= 4.0;
        i += 1;
    }
    b
};

/// Upper bounds (seconds) of the store's commit-time histogram: 0.1 ms doubling to ~1.6 s
/// (a durable commit is one or two fsyncs: sub-millisecond on NVMe, tens of ms on disks).
pub const COMMIT_BUCKETS: [f64; 15] = {
    let mut b = [0.0; 15];
    let mut i = 0;
    let mut v = 0.0001;
    while i < 15 {
        b[i] = v;
        v *= 2.0;
        i += 1;
    }
    b
};

/// One row of the aggregates.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct RowKey {
    pub source_se: String,
    pub dest_se: String,
    pub vo_name: String,
    pub activity: String,
}

/// Files per state, indexed like [`FileState::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StateCounts(pub [u64; 16]);

/// Position of a file state in [`FileState::ALL`] (and [`StateCounts`]).
pub fn file_state_index(state: FileState) -> usize {
    FileState::ALL
        .iter()
        .position(|s| *s == state)
        .unwrap_or_default()
}

/// Position of a job state in [`JobState::ALL`].
pub fn job_state_index(state: JobState) -> usize {
    JobState::ALL
        .iter()
        .position(|s| *s == state)
        .unwrap_or_default()
}

impl StateCounts {
    pub fn get(&self, state: FileState) -> u64 {
        self.0[file_state_index(state)]
    }

    pub fn add(&mut self, other: &StateCounts) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }
}

/// Terminal files of a window (or of one minute).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Window {
    pub finished: u64,
    pub failed: u64,
    pub canceled: u64,
    /// Bytes of the FINISHED files.
    pub bytes: u64,
    /// Sum of the FINISHED files' transfer durations, in milliseconds.
    pub duration_ms: u64,
    /// FINISHED files with a duration.
    pub durations: u64,
    /// FINISHED and FAILED files that needed more than one attempt (ftsmon's `retried`).
    pub retried_finished: u64,
    pub retried_failed: u64,
}

impl Window {
    pub fn add(&mut self, o: &Window) {
        self.finished += o.finished;
        self.failed += o.failed;
        self.canceled += o.canceled;
        self.bytes += o.bytes;
        self.duration_ms += o.duration_ms;
        self.durations += o.durations;
        self.retried_finished += o.retried_finished;
        self.retried_failed += o.retried_failed;
    }

    /// Success rate in percent (`finished·100/(finished+failed)`, CANCELED left out), as the
    /// overview's `rate`; `None` without finished or failed files.
    pub fn rate(&self) -> Option<f64> {
        let total = self.finished + self.failed;
        (total > 0).then(|| self.finished as f64 * 100.0 / total as f64)
    }
}

/// A row with its counts now and over a window.
#[derive(Debug, Clone, PartialEq)]
pub struct RowStats {
    pub key: RowKey,
    pub now: StateCounts,
    /// Failed attempts sent back to the queue, over the stored files.
    pub retries: u64,
    pub window: Window,
}

/// One minute of a link's ring (only minutes with terminal files are listed).
#[derive(Debug, Clone, PartialEq)]
pub struct MinuteSlot {
    /// Unix seconds of the minute's start.
    pub minute: i64,
    pub window: Window,
}

/// A failure class: the error's scope, phase, errno category and whether it was retryable.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ErrorClass {
    pub scope: String,
    pub phase: String,
    pub category: String,
    pub recoverable: bool,
}

/// FAILED files of a link and VO in one class.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorCount {
    pub source_se: String,
    pub dest_se: String,
    pub vo_name: String,
    pub class: ErrorClass,
    pub count: u64,
}

/// The work of one host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostStats {
    pub host: String,
    /// Files now per state: transfer states by `transfer_host`, STAGING and STARTED by
    /// `staging_host`.
    pub now: StateCounts,
    /// Terminal files of the window (by `transfer_host`).
    pub terminal: u64,
}

/// Which rows a view wants; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct RowFilter {
    pub source_se: Option<String>,
    pub dest_se: Option<String>,
    pub vo_name: Option<String>,
    pub activity: Option<String>,
}

impl RowFilter {
    pub fn matches(&self, key: &RowKey) -> bool {
        let ok = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        ok(&self.source_se, &key.source_se)
            && ok(&self.dest_se, &key.dest_se)
            && ok(&self.vo_name, &key.vo_name)
            && ok(&self.activity, &key.activity)
    }
}

/// A histogram: counts per bucket (not cumulative; the last bucket is `+Inf`), sum, count.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Histogram {
    pub buckets: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

/// Everything `/metrics` exports from the aggregates: totals over the stored rows.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub rows: Vec<(RowKey, StateCounts, u64)>,
    pub failures: Vec<ErrorCount>,
    /// `(vo, state, jobs)`.
    pub jobs: Vec<(String, JobState, u64)>,
    /// Transfer durations of terminal files per `(vo, state)`.
    pub durations: Vec<(String, FileState, Histogram)>,
    /// Sizes of FINISHED files per VO.
    pub sizes: Vec<(String, Histogram)>,
    /// Bring-online durations per VO (files with both staging timestamps).
    pub staging: Vec<(String, Histogram)>,
    /// Durations of the store's durable commits since start, on [`COMMIT_BUCKETS`] (empty
    /// when the backend does not measure them).
    pub commit_seconds: Histogram,
}

/// A job listing (ftsmon `jobs`).
#[derive(Debug, Clone, Default)]
pub struct JobListQuery {
    /// Job states (`state`); `None` for every state.
    pub states: Option<Vec<JobState>>,
    /// Jobs with a file in one of these states (`with_file`), instead of `states`.
    pub with_file: Option<Vec<FileState>>,
    pub vo_name: Option<String>,
    pub source_se: Option<String>,
    pub dest_se: Option<String>,
    /// Only jobs of this delegation (what a private-level user may see).
    pub cred_id: Option<String>,
    /// Unfinished jobs and those finished since then (for `with_file`: of the files).
    pub since: Option<i64>,
    /// Oldest submission first (`orderby=submit_time`); newest first otherwise.
    pub ascending: bool,
    pub offset: usize,
    pub limit: usize,
}

/// A job of a listing with its files counted per state.
#[derive(Debug, Clone)]
pub struct JobSummary {
    pub job: Job,
    pub files: BTreeMap<&'static str, u64>,
    pub count: u64,
    pub with_debug: u64,
    pub n_replicas: u32,
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// Matching rows (of those scanned, when not `complete`).
    pub count: usize,
    /// False when the store stopped scanning at its bound (the count is then of the rows
    /// seen).
    pub complete: bool,
    pub items: Vec<T>,
}

/// A transfer listing (ftsmon `transfers`).
#[derive(Debug, Clone, Default)]
pub struct TransferQuery {
    pub states: Vec<FileState>,
    pub source_se: Option<String>,
    pub dest_se: Option<String>,
    pub vo_name: Option<String>,
    pub source_surl: Option<String>,
    pub dest_surl: Option<String>,
    pub activity: Option<String>,
    pub hostname: Option<String>,
    pub reason: Option<String>,
    /// Files finished since then; unfinished ones pass too when `unfinished_pass`.
    pub since: Option<i64>,
    pub unfinished_pass: bool,
    pub order: TransferOrder,
    pub descending: bool,
    pub offset: usize,
    pub limit: usize,
}

/// Sort keys of a transfer listing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TransferOrder {
    Id,
    StartTime,
    #[default]
    FinishTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_buckets_end_at_one_tebibyte() {
        assert_eq!(SIZE_BUCKETS[0], 1024.0);
        assert_eq!(SIZE_BUCKETS[15], (1u64 << 40) as f64);
    }

    #[test]
    fn rate_leaves_canceled_out() {
        let w = Window {
            finished: 3,
            failed: 1,
            canceled: 10,
            ..Window::default()
        };
        assert_eq!(w.rate(), Some(75.0));
        assert_eq!(Window::default().rate(), None);
    }
}
