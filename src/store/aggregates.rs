//! Live monitoring aggregates: files per `(source_se, dest_se, vo, activity, state)`, jobs per
//! `(vo, state)`, a per-minute ring per row of terminal files (finished, failed, canceled,
//! bytes, durations, error classes), failure classes, and duration / size / staging
//! histograms. Every page, ftsmon JSON answer and `/metrics` scrape reads these maps, never a
//! scan of the files.
//!
//! How they stay right (STYLE rule 3):
//! - `index::JobIndexes::apply_file` / `apply_job` (the index hook, inside the row's write
//!   transaction) call [`note_file`] / [`note_job`] with the old and the new row. What the old
//!   row contributed is taken away and what the new row contributes is added, into a delta
//!   pending on this thread (redb runs one writer at a time, and `Store::write` runs the
//!   transaction's closure on its own thread).
//! - `Store::write` applies the delta to [`Live`] once the transaction committed, and drops it
//!   if the transaction failed, so readers only ever see committed state.
//! - `Store::open` builds the aggregates from the rows (one pass over jobs and files), and
//!   [`check`] rebuilds them from the rows and compares, as `check_indexes` does for the index
//!   tables.
//!
//! Deviation from a persisted counter table: the aggregates live in memory only. Writing them
//! to redb would add a read-modify-write per row key to every submission batch, and the
//! in-memory copy would still be needed for sub-millisecond reads; the price is one pass over
//! the rows at start (see BENCHMARKS.md).
//!
//! Read API: the `monitor_*` methods of [`super::Store`] that count (`monitor_rows`,
//! `monitor_minutes`, `monitor_errors`, `monitor_hosts`, `monitor_jobs`, `monitor_totals`);
//! [`super::RedbStore`] answers them from here, on the caller's thread (memory only).

use std::{
    cell::RefCell,
    collections::{BTreeMap, HashMap},
    sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard},
};

use redb::{ReadTransaction, ReadableTable};

use super::{StoreError, codec, index::minute_of, schema};
use crate::model::{
    job::{File, FileState, Job, JobState},
    monitor::{
        COMMIT_BUCKETS, DURATION_BUCKETS, ErrorClass, ErrorCount, Histogram, HostStats, MinuteSlot,
        RING_MINUTES, RowFilter, RowKey, RowStats, SIZE_BUCKETS, StateCounts, Totals, Window,
        file_state_index, job_state_index,
    },
};

/// What one file row adds to the aggregates. `S` is `&str` when read from a row, `String`
/// when kept in a pending delta.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Contribution<S> {
    source_se: S,
    dest_se: S,
    vo_name: S,
    activity: S,
    state: FileState,
    retries: u32,
    /// The minute of `finish_time`, for FINISHED, FAILED and CANCELED files that have one.
    minute: Option<i64>,
    /// Bytes of a FINISHED file.
    bytes: u64,
    /// Transfer duration of a terminal file, in milliseconds.
    duration_ms: Option<u64>,
    /// The class of a FAILED file's error.
    failure: Option<(S, S, S, bool)>,
    /// Bring-online duration, in milliseconds.
    staging_ms: Option<u64>,
    transfer_host: Option<S>,
    staging_host: Option<S>,
}

fn contribution(f: &File) -> Contribution<&str> {
    let terminal = matches!(
        f.file_state,
        FileState::Finished | FileState::Failed | FileState::Canceled
    );
    let duration_ms = if terminal {
        match (f.tx_duration, f.start_time, f.finish_time) {
            (Some(d), _, _) if d.is_finite() && d >= 0.0 => Some((d * 1000.0).round() as u64),
            (None, Some(s), Some(e)) if e >= s => Some(((e - s) as u64).saturating_mul(1000)),
            _ => None,
        }
    } else {
        None
    };
    let failure = (f.file_state == FileState::Failed).then(|| {
        (
            f.error_scope.as_deref().unwrap_or(""),
            f.error_phase.as_deref().unwrap_or(""),
            f.reason_class.as_deref().unwrap_or(""),
            f.current_failures > 0,
        )
    });
    let staging_ms = match (f.staging_start, f.staging_finished) {
        (Some(s), Some(e)) if e >= s => Some(((e - s) as u64).saturating_mul(1000)),
        _ => None,
    };
    Contribution {
        source_se: &f.source_se,
        dest_se: &f.dest_se,
        vo_name: &f.vo_name,
        activity: &f.activity,
        state: f.file_state,
        retries: f.retry,
        minute: f.finish_time.filter(|_| terminal).map(minute_of),
        bytes: if f.file_state == FileState::Finished {
            f.filesize.unwrap_or(f.transferred)
        } else {
            0
        },
        duration_ms,
        failure,
        staging_ms,
        transfer_host: f.transfer_host.as_deref(),
        staging_host: f.staging_host.as_deref(),
    }
}

impl Contribution<String> {
    fn as_ref(&self) -> Contribution<&str> {
        Contribution {
            source_se: &self.source_se,
            dest_se: &self.dest_se,
            vo_name: &self.vo_name,
            activity: &self.activity,
            state: self.state,
            retries: self.retries,
            minute: self.minute,
            bytes: self.bytes,
            duration_ms: self.duration_ms,
            failure: self
                .failure
                .as_ref()
                .map(|(a, b, c, r)| (a.as_str(), b.as_str(), c.as_str(), *r)),
            staging_ms: self.staging_ms,
            transfer_host: self.transfer_host.as_deref(),
            staging_host: self.staging_host.as_deref(),
        }
    }
}

impl Contribution<&str> {
    fn to_owned(&self) -> Contribution<String> {
        Contribution {
            source_se: self.source_se.to_string(),
            dest_se: self.dest_se.to_string(),
            vo_name: self.vo_name.to_string(),
            activity: self.activity.to_string(),
            state: self.state,
            retries: self.retries,
            minute: self.minute,
            bytes: self.bytes,
            duration_ms: self.duration_ms,
            failure: self
                .failure
                .map(|(a, b, c, r)| (a.to_string(), b.to_string(), c.to_string(), r)),
            staging_ms: self.staging_ms,
            transfer_host: self.transfer_host.map(str::to_string),
            staging_host: self.staging_host.map(str::to_string),
        }
    }
}

/// Changes noted in the current write transaction, not yet visible.
#[derive(Debug, Default)]
struct Pending {
    files: Vec<(Contribution<String>, i64)>,
    jobs: Vec<((String, JobState), i64)>,
}

/// A batch touches few distinct contributions (a 100-file submission is usually one); looking
/// back this far merges them without hashing.
const MERGE_LOOKBACK: usize = 4;

impl Pending {
    fn add_file(&mut self, c: Contribution<&str>, n: i64) {
        for (have, count) in self.files.iter_mut().rev().take(MERGE_LOOKBACK) {
            if have.as_ref() == c {
                *count += n;
                return;
            }
        }
        self.files.push((c.to_owned(), n));
    }

    fn add_job(&mut self, vo: &str, state: JobState, n: i64) {
        for ((v, s), count) in self.jobs.iter_mut().rev().take(MERGE_LOOKBACK) {
            if v == vo && *s == state {
                *count += n;
                return;
            }
        }
        self.jobs.push(((vo.to_string(), state), n));
    }
}

thread_local! {
    static PENDING: RefCell<Pending> = RefCell::new(Pending::default());
}

static ENABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Stop (or resume) feeding the aggregates, process-wide: only for the submission benchmark,
/// which measures what they cost (`benches/jobs_api.rs --no-aggregates`). With them off the
/// monitoring views and `/metrics` miss what changes, and the consistency check says so.
pub fn set_enabled(enabled: bool) {
    ENABLED.store(enabled, std::sync::atomic::Ordering::Relaxed);
}

fn enabled() -> bool {
    ENABLED.load(std::sync::atomic::Ordering::Relaxed)
}

/// The index hook for a file row: `old` is what the transaction found, `new` what it writes.
pub(crate) fn note_file(old: Option<&File>, new: Option<&File>) {
    if !enabled() {
        return;
    }
    let (old, new) = (old.map(contribution), new.map(contribution));
    if old == new {
        return;
    }
    PENDING.with_borrow_mut(|p| {
        if let Some(c) = old {
            p.add_file(c, -1);
        }
        if let Some(c) = new {
            p.add_file(c, 1);
        }
    });
}

/// The index hook for a job row.
pub(crate) fn note_job(old: Option<&Job>, new: Option<&Job>) {
    if !enabled() {
        return;
    }
    let key = |j: &Job| (j.vo_name.clone(), j.job_state);
    if old.map(key) == new.map(key) {
        return;
    }
    PENDING.with_borrow_mut(|p| {
        if let Some(j) = old {
            p.add_job(&j.vo_name, j.job_state, -1);
        }
        if let Some(j) = new {
            p.add_job(&j.vo_name, j.job_state, 1);
        }
    });
}

/// Forget what this thread noted (a transaction starts, or failed).
pub(crate) fn discard() {
    PENDING.with_borrow_mut(|p| *p = Pending::default());
}

fn take() -> Pending {
    PENDING.with_borrow_mut(std::mem::take)
}

/// A histogram kept exact under additions and removals (integer sums).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Hist {
    buckets: Vec<i64>,
    /// Sum of the observed values in their stored unit (ms, bytes, µs); `export` scales it.
    sum: i64,
    count: i64,
}

impl Hist {
    fn observe(&mut self, bounds: &[f64], value: u64, scale: f64, n: i64) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; bounds.len() + 1];
        }
        let v = value as f64 / scale;
        let i = bounds.iter().position(|b| v <= *b).unwrap_or(bounds.len());
        self.buckets[i] += n;
        self.sum += (value as i64).saturating_mul(n);
        self.count += n;
    }

    fn is_empty(&self) -> bool {
        self.count == 0 && self.sum == 0 && self.buckets.iter().all(|b| *b == 0)
    }

    fn export(&self, scale: f64) -> Histogram {
        Histogram {
            buckets: self.buckets.iter().map(|b| (*b).max(0) as u64).collect(),
            sum: self.sum as f64 / scale,
            count: self.count.max(0) as u64,
        }
    }
}

/// One minute of a row's ring.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Slot {
    finished: i64,
    failed: i64,
    canceled: i64,
    bytes: i64,
    duration_ms: i64,
    durations: i64,
    /// FINISHED and FAILED files that needed more than one attempt.
    retried_finished: i64,
    retried_failed: i64,
    errors: Vec<(ErrorClass, i64)>,
}

impl Slot {
    fn is_empty(&self) -> bool {
        self.finished == 0
            && self.failed == 0
            && self.canceled == 0
            && self.bytes == 0
            && self.duration_ms == 0
            && self.durations == 0
            && self.retried_finished == 0
            && self.retried_failed == 0
            && self.errors.is_empty()
    }

    fn window(&self) -> Window {
        let u = |x: i64| x.max(0) as u64;
        Window {
            finished: u(self.finished),
            failed: u(self.failed),
            canceled: u(self.canceled),
            bytes: u(self.bytes),
            duration_ms: u(self.duration_ms),
            durations: u(self.durations),
            retried_finished: u(self.retried_finished),
            retried_failed: u(self.retried_failed),
        }
    }
}

/// One row: files per state now, retries, and the per-minute ring.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Row {
    states: [i64; 16],
    retries: i64,
    ring: BTreeMap<i64, Slot>,
}

impl Row {
    fn is_empty(&self) -> bool {
        self.states.iter().all(|s| *s == 0) && self.retries == 0 && self.ring.is_empty()
    }

    fn now(&self) -> StateCounts {
        let mut c = StateCounts::default();
        for (o, s) in c.0.iter_mut().zip(self.states) {
            *o = s.max(0) as u64;
        }
        c
    }
}

type LinkVo = (String, String, String);

/// Work of one host: files per state (transfer states by `transfer_host`, STAGING and STARTED
/// by `staging_host`) and terminal files per minute.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct HostRow {
    states: [i64; 16],
    ring: BTreeMap<i64, i64>,
}

/// The aggregates themselves.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Aggregates {
    rows: HashMap<RowKey, Row>,
    jobs: HashMap<String, [i64; 12]>,
    failures: HashMap<LinkVo, Vec<(ErrorClass, i64)>>,
    durations: HashMap<(String, FileState), Hist>,
    sizes: HashMap<String, Hist>,
    staging: HashMap<String, Hist>,
    hosts: HashMap<String, HostRow>,
    /// The oldest minute the rings keep; terminal files of older minutes are not in them.
    horizon: i64,
}

/// The first minute the rings keep at `now`.
fn horizon_at(now: i64) -> i64 {
    minute_of(now) - (RING_MINUTES - 1) * 60
}

fn bump_class(list: &mut Vec<(ErrorClass, i64)>, class: ErrorClass, n: i64) {
    match list.iter_mut().find(|(c, _)| *c == class) {
        Some((_, count)) => *count += n,
        None => list.push((class, n)),
    }
    list.retain(|(_, c)| *c != 0);
}

impl Aggregates {
    fn apply_file(&mut self, c: Contribution<&str>, n: i64) {
        let key = RowKey {
            source_se: c.source_se.to_string(),
            dest_se: c.dest_se.to_string(),
            vo_name: c.vo_name.to_string(),
            activity: c.activity.to_string(),
        };
        let class = c
            .failure
            .map(|(scope, phase, category, recoverable)| ErrorClass {
                scope: scope.to_string(),
                phase: phase.to_string(),
                category: category.to_string(),
                recoverable,
            });
        let row = self.rows.entry(key).or_default();
        row.states[file_state_index(c.state)] += n;
        row.retries += i64::from(c.retries) * n;
        if let Some(minute) = c.minute.filter(|m| *m >= self.horizon) {
            let slot = row.ring.entry(minute).or_default();
            match c.state {
                FileState::Finished => {
                    slot.finished += n;
                    if c.retries > 0 {
                        slot.retried_finished += n;
                    }
                    slot.bytes += (c.bytes as i64).saturating_mul(n);
                    if let Some(d) = c.duration_ms {
                        slot.duration_ms += (d as i64).saturating_mul(n);
                        slot.durations += n;
                    }
                }
                FileState::Failed => {
                    slot.failed += n;
                    if c.retries > 0 {
                        slot.retried_failed += n;
                    }
                    if let Some(class) = &class {
                        bump_class(&mut slot.errors, class.clone(), n);
                    }
                }
                _ => slot.canceled += n,
            }
            if slot.is_empty() {
                row.ring.remove(&minute);
            }
        }
        let empty = row.is_empty();
        if empty {
            self.rows.remove(&RowKey {
                source_se: c.source_se.to_string(),
                dest_se: c.dest_se.to_string(),
                vo_name: c.vo_name.to_string(),
                activity: c.activity.to_string(),
            });
        }
        let vo = c.vo_name.to_string();
        if let Some(class) = class {
            let key = (c.source_se.to_string(), c.dest_se.to_string(), vo.clone());
            let list = self.failures.entry(key.clone()).or_default();
            bump_class(list, class, n);
            if list.is_empty() {
                self.failures.remove(&key);
            }
        }
        if let Some(d) = c.duration_ms {
            observe(
                &mut self.durations,
                (vo.clone(), c.state),
                &DURATION_BUCKETS,
                d,
                1000.0,
                n,
            );
        }
        if c.state == FileState::Finished {
            observe(&mut self.sizes, vo.clone(), &SIZE_BUCKETS, c.bytes, 1.0, n);
        }
        if let Some(ms) = c.staging_ms {
            observe(
                &mut self.staging,
                vo.clone(),
                &DURATION_BUCKETS,
                ms,
                1000.0,
                n,
            );
        }
        self.apply_host(&c, n);
    }

    /// Per-host counts: transfers by `transfer_host`, bring-online by `staging_host`.
    fn apply_host(&mut self, c: &Contribution<&str>, n: i64) {
        let host = match c.state {
            FileState::Staging | FileState::Started => c.staging_host,
            _ => c.transfer_host,
        };
        let Some(host) = host else {
            return;
        };
        let entry = self.hosts.entry(host.to_string()).or_default();
        entry.states[file_state_index(c.state)] += n;
        if let Some(minute) = c.minute.filter(|m| *m >= self.horizon) {
            let slot = entry.ring.entry(minute).or_default();
            *slot += n;
            if *slot == 0 {
                entry.ring.remove(&minute);
            }
        }
        if entry.states.iter().all(|s| *s == 0) && entry.ring.is_empty() {
            self.hosts.remove(host);
        }
    }

    fn apply_job(&mut self, vo: &str, state: JobState, n: i64) {
        let counts = self.jobs.entry(vo.to_string()).or_default();
        counts[job_state_index(state)] += n;
        if counts.iter().all(|c| *c == 0) {
            self.jobs.remove(vo);
        }
    }

    /// Drop ring minutes older than the horizon at `now`.
    fn prune(&mut self, now: i64) {
        let horizon = horizon_at(now);
        if horizon <= self.horizon {
            return;
        }
        self.horizon = horizon;
        self.rows.retain(|_, row| {
            row.ring = row.ring.split_off(&horizon);
            !row.is_empty()
        });
        self.hosts.retain(|_, h| {
            h.ring = h.ring.split_off(&horizon);
            !(h.states.iter().all(|s| *s == 0) && h.ring.is_empty())
        });
    }

    /// Build from every row of the database, keeping ring minutes from `horizon` on; also
    /// says how many files and jobs were read.
    fn from_rows(tx: &ReadTransaction, horizon: i64) -> Result<(Aggregates, u64, u64), StoreError> {
        let mut agg = Aggregates {
            horizon,
            ..Aggregates::default()
        };
        let (mut files, mut jobs) = (0u64, 0u64);
        for row in tx.open_table(schema::FILES)?.iter()? {
            let f: File = codec::decode(row?.1.value())?;
            agg.apply_file(contribution(&f), 1);
            files += 1;
        }
        for row in tx.open_table(schema::JOBS)?.iter()? {
            let j: Job = codec::decode(row?.1.value())?;
            agg.apply_job(&j.vo_name, j.job_state, 1);
            jobs += 1;
        }
        Ok((agg, files, jobs))
    }
}

/// Add `n` observations of `value` to the histogram under `key`, removing it once empty.
fn observe<K: Eq + std::hash::Hash>(
    map: &mut HashMap<K, Hist>,
    key: K,
    bounds: &[f64],
    value: u64,
    scale: f64,
    n: i64,
) {
    let h = map.entry(key).or_default();
    h.observe(bounds, value, scale, n);
    if h.is_empty() {
        map.retain(|_, h| !h.is_empty());
    }
}

/// The aggregates a [`super::Redb`] keeps, behind a lock: writers hold it for the few map
/// updates of one commit, readers for one view.
#[derive(Debug, Default)]
pub(crate) struct Live {
    agg: RwLock<Aggregates>,
    /// Commit durations in microseconds, on [`COMMIT_BUCKETS`].
    commits: Mutex<Hist>,
}

impl Live {
    /// Nothing counted yet (while the schema is created or migrated).
    pub(crate) fn empty() -> Live {
        Live::default()
    }

    /// Build from the rows of the database. This is one pass over every file and job, so it
    /// is logged with its duration: it is most of the start-up time of a big store.
    pub(crate) fn load(tx: &ReadTransaction, now: i64) -> Result<Live, StoreError> {
        let started = std::time::Instant::now();
        let live = Live::empty();
        let (agg, files, jobs) = Aggregates::from_rows(tx, horizon_at(now))?;
        *live.write() = agg;
        let rebuild_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        tracing::info!(
            files,
            jobs,
            rebuild_ms,
            "monitoring aggregates built from the rows"
        );
        Ok(live)
    }

    fn read(&self) -> RwLockReadGuard<'_, Aggregates> {
        // A panic while holding the lock would be a bug in the map code above; the maps stay
        // usable (each update is a few additions), so go on rather than poison every reader.
        self.agg.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Aggregates> {
        self.agg.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Make what this thread's transaction noted visible (called after its commit), and record
    /// the commit's duration.
    pub(crate) fn committed(&self, commit: std::time::Duration, now: i64) {
        {
            // Poisoned only by a panic in `observe`, which holds no invariant across calls.
            let mut commits = self.commits.lock().unwrap_or_else(|e| e.into_inner());
            let micros = u64::try_from(commit.as_micros()).unwrap_or(u64::MAX);
            commits.observe(&COMMIT_BUCKETS, micros, 1e6, 1);
        }
        let pending = take();
        if pending.files.is_empty() && pending.jobs.is_empty() {
            return;
        }
        let mut agg = self.write();
        agg.prune(now);
        for (c, n) in &pending.files {
            agg.apply_file(c.as_ref(), *n);
        }
        for ((vo, state), n) in &pending.jobs {
            agg.apply_job(vo, *state, *n);
        }
    }
}

/// Rebuild the aggregates from the rows and compare with `live`; one line per difference.
pub(crate) fn check(
    tx: &ReadTransaction,
    live: &Live,
    now: i64,
    problems: &mut Vec<String>,
) -> Result<(), StoreError> {
    let have = {
        let mut agg = live.write();
        agg.prune(now);
        agg.clone()
    };
    let (want, _, _) = Aggregates::from_rows(tx, have.horizon)?;
    diff_map("aggregates rows", &want.rows, &have.rows, problems);
    diff_map("aggregates jobs", &want.jobs, &have.jobs, problems);
    diff_map(
        "aggregates failures",
        &want.failures,
        &have.failures,
        problems,
    );
    diff_map(
        "aggregates durations",
        &want.durations,
        &have.durations,
        problems,
    );
    diff_map("aggregates sizes", &want.sizes, &have.sizes, problems);
    diff_map("aggregates staging", &want.staging, &have.staging, problems);
    diff_map("aggregates hosts", &want.hosts, &have.hosts, problems);
    Ok(())
}

fn diff_map<K: std::fmt::Debug + Eq + std::hash::Hash, V: std::fmt::Debug + PartialEq>(
    what: &str,
    want: &HashMap<K, V>,
    have: &HashMap<K, V>,
    problems: &mut Vec<String>,
) {
    for (k, v) in want {
        match have.get(k) {
            None => problems.push(format!("{what}: missing {k:?}")),
            Some(h) if h != v => problems.push(format!("{what}: {k:?} is {h:?}, expected {v:?}")),
            Some(_) => {}
        }
    }
    for k in have.keys().filter(|k| !want.contains_key(k)) {
        problems.push(format!("{what}: stale {k:?}"));
    }
}

impl super::Redb {
    /// Every row matching `filter`, with its counts now and its terminal files since `since`
    /// (unix seconds; rounded down to the minute and cut at the ring's depth). Unordered.
    pub fn monitor_rows(&self, filter: &RowFilter, since: i64) -> Vec<RowStats> {
        let first = minute_of(since);
        let agg = self.live.read();
        agg.rows
            .iter()
            .filter(|(k, _)| filter.matches(k))
            .map(|(key, row)| {
                let mut window = Window::default();
                for slot in row.ring.range(first..).map(|(_, s)| s) {
                    window.add(&slot.window());
                }
                RowStats {
                    key: key.clone(),
                    now: row.now(),
                    retries: row.retries.max(0) as u64,
                    window,
                }
            })
            .collect()
    }

    /// The terminal files of the rows matching `filter`, summed per minute from `since` on,
    /// oldest first (only minutes with terminal files).
    pub fn monitor_minutes(&self, filter: &RowFilter, since: i64) -> Vec<MinuteSlot> {
        let first = minute_of(since);
        let agg = self.live.read();
        let mut out: BTreeMap<i64, Window> = BTreeMap::new();
        for (_, row) in agg.rows.iter().filter(|(k, _)| filter.matches(k)) {
            for (minute, slot) in row.ring.range(first..) {
                out.entry(*minute).or_default().add(&slot.window());
            }
        }
        out.into_iter()
            .map(|(minute, window)| MinuteSlot { minute, window })
            .collect()
    }

    /// FAILED files since `since` per link, VO and error class, for the rows matching
    /// `filter` (activity summed), most frequent first.
    pub fn monitor_errors(&self, filter: &RowFilter, since: i64) -> Vec<ErrorCount> {
        let first = minute_of(since);
        let agg = self.live.read();
        let mut sum: HashMap<(&str, &str, &str, &ErrorClass), i64> = HashMap::new();
        for (key, row) in agg.rows.iter().filter(|(k, _)| filter.matches(k)) {
            for slot in row.ring.range(first..).map(|(_, s)| s) {
                for (class, n) in &slot.errors {
                    *sum.entry((&key.source_se, &key.dest_se, &key.vo_name, class))
                        .or_default() += n;
                }
            }
        }
        let mut out: Vec<ErrorCount> = sum
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|((s, d, v, class), n)| ErrorCount {
                source_se: s.to_string(),
                dest_se: d.to_string(),
                vo_name: v.to_string(),
                class: class.clone(),
                count: n as u64,
            })
            .collect();
        out.sort_by(|a, b| {
            b.count.cmp(&a.count).then_with(|| {
                (&a.source_se, &a.dest_se, &a.vo_name, &a.class).cmp(&(
                    &b.source_se,
                    &b.dest_se,
                    &b.vo_name,
                    &b.class,
                ))
            })
        });
        out
    }

    /// Per host: files now per state (transfers by `transfer_host`, STAGING/STARTED by
    /// `staging_host`) and terminal files since `since`.
    pub fn monitor_hosts(&self, since: i64) -> Vec<HostStats> {
        let first = minute_of(since);
        let agg = self.live.read();
        let mut out: Vec<HostStats> = agg
            .hosts
            .iter()
            .map(|(host, h)| {
                let mut now = StateCounts::default();
                for (o, s) in now.0.iter_mut().zip(h.states) {
                    *o = s.max(0) as u64;
                }
                HostStats {
                    host: host.clone(),
                    now,
                    terminal: h.ring.range(first..).map(|(_, n)| (*n).max(0) as u64).sum(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.host.cmp(&b.host));
        out
    }

    /// Jobs per `(vo, state)` now.
    pub fn monitor_jobs(&self) -> Vec<(String, JobState, u64)> {
        let agg = self.live.read();
        let mut out = Vec::new();
        for (vo, counts) in &agg.jobs {
            for (state, n) in JobState::ALL.iter().zip(counts) {
                if *n > 0 {
                    out.push((vo.clone(), *state, *n as u64));
                }
            }
        }
        out.sort();
        out
    }

    /// Everything `/metrics` exports: totals over the stored rows, sorted.
    pub fn monitor_totals(&self) -> Totals {
        let agg = self.live.read();
        let mut t = Totals {
            rows: agg
                .rows
                .iter()
                .map(|(k, r)| (k.clone(), r.now(), r.retries.max(0) as u64))
                .collect(),
            ..Totals::default()
        };
        for ((s, d, v), list) in &agg.failures {
            for (class, n) in list {
                t.failures.push(ErrorCount {
                    source_se: s.clone(),
                    dest_se: d.clone(),
                    vo_name: v.clone(),
                    class: class.clone(),
                    count: (*n).max(0) as u64,
                });
            }
        }
        for (vo, counts) in &agg.jobs {
            for (state, n) in JobState::ALL.iter().zip(counts) {
                if *n > 0 {
                    t.jobs.push((vo.clone(), *state, *n as u64));
                }
            }
        }
        t.durations = agg
            .durations
            .iter()
            .map(|((vo, st), h)| (vo.clone(), *st, h.export(1000.0)))
            .collect();
        t.sizes = agg
            .sizes
            .iter()
            .map(|(vo, h)| (vo.clone(), h.export(1.0)))
            .collect();
        t.staging = agg
            .staging
            .iter()
            .map(|(vo, h)| (vo.clone(), h.export(1000.0)))
            .collect();
        drop(agg);
        t.rows.sort_by(|a, b| a.0.cmp(&b.0));
        t.failures.sort_by(|a, b| {
            (&a.source_se, &a.dest_se, &a.vo_name, &a.class).cmp(&(
                &b.source_se,
                &b.dest_se,
                &b.vo_name,
                &b.class,
            ))
        });
        t.jobs.sort();
        t.durations.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        t.sizes.sort_by(|a, b| a.0.cmp(&b.0));
        t.staging.sort_by(|a, b| a.0.cmp(&b.0));
        t.commit_seconds = {
            let commits = self.live.commits.lock().unwrap_or_else(|e| e.into_inner());
            commits.export(1e6)
        };
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::job::fixtures;

    fn finished(id: u64, at: i64, size: u64) -> File {
        let mut f = fixtures::file(id, 0, FileState::Finished);
        f.finish_time = Some(at);
        f.filesize = Some(size);
        f.tx_duration = Some(2.5);
        f
    }

    #[test]
    fn a_contribution_moves_between_states_and_leaves_nothing_behind() {
        let mut agg = Aggregates::default();
        let submitted = fixtures::file(1, 0, FileState::Submitted);
        agg.apply_file(contribution(&submitted), 1);
        let key = RowKey {
            source_se: "mock://a".into(),
            dest_se: "mock://b".into(),
            vo_name: "vo".into(),
            activity: "default".into(),
        };
        assert_eq!(
            agg.rows[&key].states[file_state_index(FileState::Submitted)],
            1
        );
        let done = finished(1, 600, 4096);
        agg.apply_file(contribution(&submitted), -1);
        agg.apply_file(contribution(&done), 1);
        let row = &agg.rows[&key];
        assert_eq!(row.states[file_state_index(FileState::Submitted)], 0);
        assert_eq!(row.ring[&600].finished, 1);
        assert_eq!(row.ring[&600].bytes, 4096);
        assert_eq!(row.ring[&600].duration_ms, 2500);
        assert_eq!(
            agg.durations[&("vo".to_string(), FileState::Finished)].count,
            1
        );
        agg.apply_file(contribution(&done), -1);
        assert_eq!(agg, Aggregates::default());
    }

    #[test]
    fn pruning_drops_minutes_past_the_ring_depth() {
        let mut agg = Aggregates::default();
        agg.apply_file(contribution(&finished(1, 0, 1)), 1);
        agg.apply_file(contribution(&finished(2, RING_MINUTES * 60, 1)), 1);
        agg.prune(RING_MINUTES * 60);
        let row = agg.rows.values().next().unwrap();
        assert_eq!(
            row.ring.keys().copied().collect::<Vec<_>>(),
            vec![RING_MINUTES * 60]
        );
        // The files stay counted by state.
        assert_eq!(row.states[file_state_index(FileState::Finished)], 2);
    }

    #[test]
    fn the_check_compares_the_live_maps_with_the_rows() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Redb::open(dir.path()).unwrap();
        let job = fixtures::job(crate::model::job::JobType::Normal);
        let mut f = finished(0, crate::model::time::now(), 10);
        f.dest_surl_uuid = None;
        store.insert_jobs(&mut [(job, vec![f])]).unwrap();
        assert!(store.check_indexes().unwrap().is_empty());
        let rows = store.monitor_rows(&RowFilter::default(), 0);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].window.finished, 1);
        assert_eq!(store.monitor_jobs().len(), 1);
        // Reopening rebuilds the same maps from the rows.
        drop(store);
        let store = crate::store::Redb::open(dir.path()).unwrap();
        assert_eq!(
            store.monitor_rows(&RowFilter::default(), 0)[0].window.bytes,
            10
        );
        store.live.write().rows.clear();
        let problems = store.check_indexes().unwrap();
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("aggregates rows: missing")),
            "{problems:?}"
        );
    }

    #[test]
    fn a_failed_transaction_leaves_the_aggregates_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Redb::open(dir.path()).unwrap();
        let result: Result<(), StoreError> = store.write(|_| {
            note_file(None, Some(&fixtures::file(1, 0, FileState::Submitted)));
            Err(StoreError::Io {
                path: "x".into(),
                source: std::io::Error::other("test"),
            })
        });
        assert!(result.is_err());
        assert!(store.monitor_rows(&RowFilter::default(), 0).is_empty());
    }

    #[test]
    fn pending_merges_equal_contributions() {
        discard();
        for id in 0..100 {
            note_file(None, Some(&fixtures::file(id, 0, FileState::Submitted)));
        }
        let p = take();
        assert_eq!(p.files.len(), 1);
        assert_eq!(p.files[0].1, 100);
    }
}
