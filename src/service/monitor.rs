//! Monitoring use cases: ftsmon's JSON views (`/ftsmon/*`), the live progress of running
//! transfers, and who may see what. The web pages use the same functions and types.
//!
//! # Read API for the pages (design note)
//! Every view answers from the store's live aggregates (`store::aggregates`) or pages through
//! one index (the store's `monitor_*_page` listings); none scans the files table. A page handler takes the
//! caller's [`User`], a [`MonQuery`] parsed from the query string, and calls:
//! - [`Service::mon_overview`] → [`Overview`] (link × VO rows, `activities` adds the activity):
//!   counts now (submitted, active, ready, staging, started, archiving), terminal counts in
//!   the window (finished, failed, canceled), `rate`, `current` (optimizer throughput, MiB/s)
//!   and `throughput` (instantaneous, MiB/s, from the running transfers' progress).
//! - [`Service::mon_link_series`] → per-minute `[[unix_ts…],[finished…],[failed…],[bytes…]]`
//!   columns (uPlot's data layout) for a link's throughput/success plots.
//! - [`Service::mon_jobs`], [`Service::mon_job`], [`Service::mon_job_files`],
//!   [`Service::mon_transfers`]: row views, paged, filtered by the caller's level.
//! - [`Service::mon_errors`], [`Service::mon_error_reasons`], [`Service::mon_error_classes`]:
//!   failures per link, reasons with counts, scope/phase/category counts.
//! - [`Service::mon_stats`], [`Service::mon_servers`], [`Service::mon_stats_vo`],
//!   [`Service::mon_optimizer`], [`Service::mon_optimizer_detail`], [`Service::mon_linkinfo`],
//!   `mon_config_*`, [`Service::mon_unique`].
//! - [`Service::progress`] (the [`ProgressBoard`]): bytes and instantaneous throughput of the
//!   running transfers, keyed by file id.
//!
//! Authorization: the aggregated views (counts per link and VO, statistics, optimizer,
//! configuration) need a caller who may list jobs at all (any `transfer` level; the REST API's
//! `/snapshot` shows the same numbers). Row views (jobs, job detail, files, transfers, error
//! reasons, logs) show what the REST API would show the caller: all jobs, the caller's VO, or
//! the caller's own delegation, as the caller's `transfer` level says.
//!
//! Deviations from ftsmon (bugs not copied): `current` is the link's value, summed once per
//! link in the summary; `stats/vo` filters `dest_se` on the destination; `errors` groups per
//! link (not per finish time); a job list slice never degrades to bare ids; `page=all` is
//! capped at [`MAX_PAGE_ITEMS`] items (the `count` stays exact).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Instant,
};

use serde::Serialize;
use serde_json::{Value, json};

use super::{Service, ServiceError};
use crate::model::{
    identity::{Level, Operation, User},
    job::{File, FileState, Job, JobState},
    monitor::{
        JobListQuery, JobSummary, RING_MINUTES, RowFilter, RowKey, RowStats, StateCounts,
        TransferOrder, TransferQuery, Window,
    },
    optimizer::LinkFilter,
};

/// ftsmon's default page size.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Items in one answer, whatever `page_size` or `page=all` ask: an answer is built in memory.
pub const MAX_PAGE_ITEMS: usize = 10_000;
/// `pageSize` reported for `page=all` (Python's `sys.maxsize`, as ftsmon).
pub const PAGE_ALL_SIZE: i64 = i64::MAX;
/// The optimizer's value is `current` only while it is this fresh (ftsmon: 30 minutes).
pub const CURRENT_MAX_AGE: i64 = 30 * 60;
/// A host whose heartbeat is older than this is `down` (ftsmon: 2 minutes).
pub const HOST_BEAT_GRACE: i64 = 120;
/// Default optimizer window (ftsmon: 30 minutes).
pub const OPTIMIZER_WINDOW: i64 = 30 * 60;
/// Evolution rows read for one optimizer detail answer.
pub const MAX_EVOLUTION_ROWS: usize = 10_000;
/// Seconds over which the instantaneous throughput of a transfer is measured: long enough to
/// smooth perf-marker steps (every 5 s for WebDAV TPC), short enough to follow a slowdown.
pub const THROUGHPUT_SPAN: std::time::Duration = std::time::Duration::from_secs(10);
const MIB: f64 = 1024.0 * 1024.0;

/// ftsmon's query parameters, parsed.
#[derive(Debug, Clone, Default)]
pub struct MonQuery {
    pub vo: Option<String>,
    pub source_se: Option<String>,
    pub dest_se: Option<String>,
    pub source_surl: Option<String>,
    pub dest_surl: Option<String>,
    pub activity: Option<String>,
    pub hostname: Option<String>,
    pub reason: Option<String>,
    /// `state`, comma-separated in the query.
    pub state: Option<Vec<String>>,
    /// `with_file`.
    pub with_file: Option<Vec<String>>,
    /// `time_window` in hours.
    pub time_window: Option<i64>,
    pub page: PageReq,
    pub page_size: Option<usize>,
    /// `orderby`: field, descending.
    pub orderby: Option<(String, bool)>,
    pub only_summary: bool,
    /// `file` (job detail).
    pub file: Option<u64>,
    /// `action`, `contains` (config audit).
    pub action: Option<String>,
    pub contains: Option<String>,
}

/// Which page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PageReq {
    #[default]
    First,
    Number(i64),
    All,
}

/// ftsmon's paged envelope.
#[derive(Debug, Clone, Serialize)]
pub struct Paged<T> {
    pub count: usize,
    #[serde(rename = "startIndex")]
    pub start_index: usize,
    #[serde(rename = "endIndex")]
    pub end_index: usize,
    pub page: usize,
    #[serde(rename = "pageCount")]
    pub page_count: usize,
    #[serde(rename = "pageSize")]
    pub page_size: i64,
    pub items: Vec<T>,
}

/// Where a page starts and how many items it holds (Django's paginator rules: 1-based, an
/// out-of-range page is the last one).
#[derive(Debug, Clone, Copy)]
struct PageSpan {
    page: usize,
    pages: usize,
    size: i64,
    offset: usize,
    limit: usize,
}

impl MonQuery {
    fn span(&self, count: usize) -> PageSpan {
        let size = match self.page {
            PageReq::All => PAGE_ALL_SIZE,
            _ => self.page_size.unwrap_or(DEFAULT_PAGE_SIZE).max(1) as i64,
        };
        let per = usize::try_from(size).unwrap_or(usize::MAX);
        let pages = count.div_ceil(per).max(1);
        let page = match self.page {
            PageReq::Number(n) if n >= 1 => (n as usize).min(pages),
            PageReq::Number(_) => pages,
            _ => 1,
        };
        let offset = (page - 1).saturating_mul(per);
        PageSpan {
            page,
            pages,
            size,
            offset,
            limit: per.min(MAX_PAGE_ITEMS),
        }
    }

    fn since(&self, now: i64, default_hours: i64) -> i64 {
        now - self.window_hours(default_hours) * 3600
    }

    fn window_hours(&self, default_hours: i64) -> i64 {
        self.time_window
            .unwrap_or(default_hours)
            .clamp(1, RING_MINUTES / 60)
    }

    fn row_filter(&self) -> RowFilter {
        RowFilter {
            source_se: self.source_se.clone(),
            dest_se: self.dest_se.clone(),
            vo_name: self.vo.clone(),
            activity: self.activity.clone(),
        }
    }

    fn order(&self) -> (Option<&str>, bool) {
        match &self.orderby {
            Some((f, desc)) => (Some(f.as_str()), *desc),
            None => (None, true),
        }
    }
}

fn paged<T>(items: Vec<T>, q: &MonQuery) -> Paged<T> {
    let count = items.len();
    let span = q.span(count);
    let items: Vec<T> = items
        .into_iter()
        .skip(span.offset)
        .take(span.limit)
        .collect();
    envelope(count, span, items)
}

fn envelope<T>(count: usize, span: PageSpan, items: Vec<T>) -> Paged<T> {
    let start = if count == 0 { 0 } else { span.offset + 1 };
    let end = if count == 0 {
        0
    } else {
        (span.offset + items.len()).max(start)
    };
    Paged {
        count,
        start_index: start,
        end_index: end,
        page: span.page,
        page_count: span.pages,
        page_size: span.size,
        items,
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ`: ftsmon's time format (UTC).
pub fn mon_time(t: i64) -> String {
    format!("{}Z", crate::model::time::fts_datetime(t))
}

fn mon_time_opt(t: Option<i64>) -> Value {
    t.map(|t| Value::String(mon_time(t))).unwrap_or(Value::Null)
}

/// What a caller may see of the rows.
#[derive(Debug, Clone, PartialEq)]
pub enum Visibility {
    All,
    Vo(String),
    Own(String),
}

impl Visibility {
    fn allows(&self, job: &Job) -> bool {
        match self {
            Visibility::All => true,
            Visibility::Vo(vo) => job.vo_name == *vo,
            Visibility::Own(cred) => job.cred_id == *cred,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Live progress of running transfers.

/// Progress of one running transfer.
#[derive(Debug, Clone)]
pub struct FileProgress {
    pub key: RowKey,
    pub transferred: u64,
    /// Bytes per second over the last [`THROUGHPUT_SPAN`] (0 until two samples exist).
    pub throughput: f64,
    samples: std::collections::VecDeque<(Instant, u64)>,
    /// Bytes already added to the transferred-bytes counter.
    counted: u64,
}

/// Bytes that moved, per row, since the process started: `ftsd_transferred_bytes_total`.
pub type ByteCounters = HashMap<RowKey, u64>;

/// The running transfers' progress, written by the engine (on each progress check and at the
/// end of a transfer), read by the views and by `/metrics`.
#[derive(Debug, Default)]
pub struct ProgressBoard {
    inner: Mutex<BoardInner>,
}

#[derive(Debug, Default)]
struct BoardInner {
    files: HashMap<u64, FileProgress>,
    bytes: ByteCounters,
}

impl ProgressBoard {
    fn lock(&self) -> std::sync::MutexGuard<'_, BoardInner> {
        // A panic under this lock would be a bug in the few lines below; keep the data.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A transfer reports `bytes` done at `at`.
    pub fn update(&self, file_id: u64, key: &RowKey, bytes: u64, at: Instant) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let p = inner.files.entry(file_id).or_insert_with(|| FileProgress {
            key: key.clone(),
            transferred: 0,
            throughput: 0.0,
            samples: Default::default(),
            counted: 0,
        });
        if bytes > p.counted {
            *inner.bytes.entry(key.clone()).or_default() += bytes - p.counted;
            p.counted = bytes;
        }
        p.transferred = bytes;
        p.samples.push_back((at, bytes));
        while p
            .samples
            .front()
            .is_some_and(|(t, _)| at.duration_since(*t) > THROUGHPUT_SPAN)
        {
            p.samples.pop_front();
        }
        p.throughput = match (p.samples.front(), p.samples.back()) {
            (Some((t0, b0)), Some((t1, b1))) if t1 > t0 => {
                b1.saturating_sub(*b0) as f64 / t1.duration_since(*t0).as_secs_f64()
            }
            _ => 0.0,
        };
    }

    /// The transfer ended; a successful one moved `final_bytes` in all (the part no progress
    /// report showed is counted now).
    pub fn finish(&self, file_id: u64, key: &RowKey, final_bytes: Option<u64>) {
        let mut inner = self.lock();
        let counted = inner.files.remove(&file_id).map_or(0, |p| p.counted);
        if let Some(total) = final_bytes {
            if total > counted {
                *inner.bytes.entry(key.clone()).or_default() += total - counted;
            }
        }
    }

    /// The progress of one file, if it is running.
    pub fn get(&self, file_id: u64) -> Option<FileProgress> {
        self.lock().files.get(&file_id).cloned()
    }

    /// Instantaneous throughput (bytes/s) and running transfers per row.
    pub fn per_row(&self) -> HashMap<RowKey, (f64, u64)> {
        let inner = self.lock();
        let mut out: HashMap<RowKey, (f64, u64)> = HashMap::new();
        for p in inner.files.values() {
            let e = out.entry(p.key.clone()).or_default();
            e.0 += p.throughput;
            e.1 += 1;
        }
        out
    }

    /// Bytes moved per row since start.
    pub fn bytes(&self) -> ByteCounters {
        self.lock().bytes.clone()
    }
}

// ---------------------------------------------------------------------------------------------
// Views.

/// One overview row.
#[derive(Debug, Clone, Serialize, Default)]
pub struct OverviewRow {
    pub source_se: String,
    pub dest_se: String,
    pub vo_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activity: Option<String>,
    pub submitted: u64,
    pub active: u64,
    pub ready: u64,
    pub staging: u64,
    pub started: u64,
    pub archiving: u64,
    pub finished: u64,
    pub failed: u64,
    pub canceled: u64,
    /// Success rate in percent over the window; null without finished or failed files.
    pub rate: Option<f64>,
    /// The link's last optimizer throughput (≤ 30 min old), MiB/s.
    pub current: f64,
    /// Instantaneous throughput of the row's running transfers, MiB/s.
    pub throughput: f64,
    /// Bytes of the files finished in the window.
    pub bytes: u64,
}

/// The overview's totals.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Summary {
    pub submitted: u64,
    pub active: u64,
    pub ready: u64,
    pub finished: u64,
    pub failed: u64,
    pub canceled: u64,
    pub current: f64,
    pub staging: u64,
    pub started: u64,
    pub archiving: u64,
    pub throughput: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
}

/// ftsmon's cache report: ftsd answers live, so the "cache" is always fresh.
#[derive(Debug, Clone, Serialize)]
pub struct CacheInfo {
    pub using_cache: bool,
    pub cache_stale: bool,
    pub cache_updated_at: String,
    pub cache_update_duration: f64,
}

/// `overview` and `overview/activities`.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overview: Option<Paged<OverviewRow>>,
    pub summary: Summary,
    pub overview_cache: CacheInfo,
}

fn row_from(stats: &RowStats, with_activity: bool) -> OverviewRow {
    let n = |s: FileState| stats.now.get(s);
    OverviewRow {
        source_se: stats.key.source_se.clone(),
        dest_se: stats.key.dest_se.clone(),
        vo_name: stats.key.vo_name.clone(),
        activity: with_activity.then(|| stats.key.activity.clone()),
        submitted: n(FileState::Submitted),
        active: n(FileState::Active),
        ready: n(FileState::Ready),
        staging: n(FileState::Staging),
        started: n(FileState::Started),
        archiving: n(FileState::Archiving),
        finished: stats.window.finished,
        failed: stats.window.failed,
        canceled: stats.window.canceled,
        rate: None,
        current: 0.0,
        throughput: 0.0,
        bytes: stats.window.bytes,
    }
}

fn merge_row(into: &mut OverviewRow, from: &OverviewRow) {
    into.submitted += from.submitted;
    into.active += from.active;
    into.ready += from.ready;
    into.staging += from.staging;
    into.started += from.started;
    into.archiving += from.archiving;
    into.finished += from.finished;
    into.failed += from.failed;
    into.canceled += from.canceled;
    into.bytes += from.bytes;
    into.throughput += from.throughput;
}

fn has_content(r: &OverviewRow) -> bool {
    r.submitted + r.active + r.ready + r.staging + r.started + r.archiving > 0
        || r.finished + r.failed + r.canceled > 0
}

/// ftsmon's sort keys: (primary, secondary).
fn overview_key(r: &OverviewRow, field: Option<&str>) -> (f64, f64) {
    let f = |x: u64| x as f64;
    match field {
        Some("active") => (f(r.active), f(r.submitted)),
        Some("finished") => (f(r.finished), f(r.failed)),
        Some("failed") => (f(r.failed), f(r.finished)),
        Some("canceled") => (f(r.canceled), f(r.finished)),
        Some("staging") => (f(r.staging), f(r.started)),
        Some("started") => (f(r.started), f(r.staging)),
        Some("archiving") => (f(r.archiving), f(r.staging)),
        Some("rate") => (r.rate.unwrap_or(0.0), f(r.finished)),
        Some("throughput") => (r.throughput, r.current),
        _ => (f(r.submitted), f(r.active)),
    }
}

/// A job of the job list.
#[derive(Debug, Clone, Serialize)]
pub struct JobItem {
    pub job_id: String,
    pub submit_time: String,
    pub job_state: String,
    pub vo_name: String,
    pub source_se: Option<String>,
    pub dest_se: Option<String>,
    pub job_type: String,
    pub priority: i32,
    pub space_token: Option<String>,
    pub job_finished: Value,
    pub files: BTreeMap<&'static str, u64>,
    pub count: u64,
    pub with_debug: u64,
    pub n_replicas: u32,
}

impl From<JobSummary> for JobItem {
    fn from(s: JobSummary) -> JobItem {
        JobItem {
            job_id: s.job.job_id,
            submit_time: mon_time(s.job.submit_time),
            job_state: s.job.job_state.as_str().to_string(),
            vo_name: s.job.vo_name,
            source_se: s.job.source_se,
            dest_se: s.job.dest_se,
            job_type: s.job.job_type.as_str().to_string(),
            priority: s.job.priority,
            space_token: s.job.destination_spacetoken,
            job_finished: mon_time_opt(s.job.job_finished),
            files: s.files,
            count: s.count,
            with_debug: s.with_debug,
            n_replicas: s.n_replicas,
        }
    }
}

/// A row of the transfer list.
#[derive(Debug, Clone, Serialize)]
pub struct TransferItem {
    pub file_id: u64,
    pub file_state: String,
    pub job_id: String,
    pub source_se: String,
    pub dest_se: String,
    pub start_time: Value,
    pub finish_time: Value,
    pub activity: String,
    pub user_filesize: f64,
    pub filesize: Option<u64>,
}

/// The log URL of a file's current attempt.
pub fn log_url(job_id: &str, file_id: u64) -> String {
    format!("/ftsmon/jobs/{job_id}/files/{file_id}/log")
}

/// The log URL of a retried attempt.
pub fn retry_log_url(job_id: &str, file_id: u64, attempt: u32) -> String {
    format!("/ftsmon/jobs/{job_id}/files/{file_id}/retries/{attempt}/log")
}

/// `stats`: counts of the window per state, and retried files.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub lasthour: BTreeMap<String, u64>,
    pub retried: BTreeMap<String, u64>,
}

fn parse_states<T>(
    list: &Option<Vec<String>>,
    parse: impl Fn(&str) -> Option<T>,
) -> Option<Vec<T>> {
    list.as_ref()
        .map(|l| l.iter().filter_map(|s| parse(s.trim())).collect())
}

impl Service {
    /// Who may see what (see the module docs).
    pub fn mon_visibility(&self, user: &User) -> Result<Visibility, ServiceError> {
        match user.granted_level_for(Operation::Transfer) {
            Some(Level::All) => Ok(Visibility::All),
            Some(Level::Vo) => Ok(Visibility::Vo(
                user.vos.first().cloned().unwrap_or_default(),
            )),
            Some(Level::Private) => Ok(Visibility::Own(
                user.delegation_id.clone().unwrap_or_default(),
            )),
            None => Err(ServiceError::Forbidden("Not enough permissions".into())),
        }
    }

    /// Where transfer logs are written (only files under it are served).
    pub fn log_dir(&self) -> &std::path::Path {
        &self.monitoring.log_dir
    }

    /// The running transfers' progress (shared with the engine).
    pub fn progress(&self) -> &Arc<ProgressBoard> {
        &self.progress
    }

    /// ACTIVE files get the bytes their transfer has moved so far (`transferred`), as the
    /// backend last reported them (performance markers, streamed bytes).
    pub fn live_progress(&self, files: &mut [File]) {
        for f in files
            .iter_mut()
            .filter(|f| f.file_state == FileState::Active)
        {
            if let Some(p) = self.progress.get(f.file_id) {
                f.transferred = p.transferred;
            }
        }
    }

    /// The optimizer's fresh throughput per link, MiB/s.
    async fn current_throughputs(
        &self,
        now: i64,
    ) -> Result<HashMap<(String, String), f64>, ServiceError> {
        let mut out = HashMap::new();
        for c in self.store.optimizer_values(&LinkFilter::default()).await? {
            if now - c.datetime / 1_000_000 <= CURRENT_MAX_AGE {
                out.insert((c.source_se, c.dest_se), c.throughput / MIB);
            }
        }
        Ok(out)
    }

    /// `overview` (`with_activity` false) and `overview/activities`.
    pub async fn mon_overview(
        &self,
        user: &User,
        q: &MonQuery,
        with_activity: bool,
    ) -> Result<Overview, ServiceError> {
        self.mon_visibility(user)?;
        let now = crate::model::time::now();
        let stats = self
            .store
            .monitor_rows(&q.row_filter(), q.since(now, 1))
            .await?;
        let live = self.progress.per_row();
        let mut rows: HashMap<RowKey, OverviewRow> = HashMap::new();
        for s in &stats {
            let mut r = row_from(s, with_activity);
            if let Some((thr, _)) = live.get(&s.key) {
                r.throughput = thr / MIB;
            }
            if !has_content(&r) && r.throughput == 0.0 {
                continue;
            }
            let mut key = s.key.clone();
            if !with_activity {
                key.activity.clear();
            }
            if q.only_summary {
                key.source_se.clear();
                key.dest_se.clear();
            }
            match rows.get_mut(&key) {
                Some(have) => merge_row(have, &r),
                None => {
                    rows.insert(key, r);
                }
            }
        }
        let current = self.current_throughputs(now).await?;
        let mut summary = Summary::default();
        let mut links_seen = std::collections::HashSet::new();
        let mut items: Vec<OverviewRow> = rows.into_values().collect();
        for r in &mut items {
            let w = Window {
                finished: r.finished,
                failed: r.failed,
                ..Window::default()
            };
            r.rate = w.rate();
            if let Some(c) = current.get(&(r.source_se.clone(), r.dest_se.clone())) {
                r.current = *c;
            }
            summary.submitted += r.submitted;
            summary.active += r.active;
            summary.ready += r.ready;
            summary.finished += r.finished;
            summary.failed += r.failed;
            summary.canceled += r.canceled;
            summary.staging += r.staging;
            summary.started += r.started;
            summary.archiving += r.archiving;
            summary.throughput += r.throughput;
            // One value per link, however many VO rows share it.
            if links_seen.insert((r.source_se.clone(), r.dest_se.clone())) {
                summary.current += r.current;
            }
        }
        summary.rate = Window {
            finished: summary.finished,
            failed: summary.failed,
            ..Window::default()
        }
        .rate();
        let (field, desc) = q.order();
        items.sort_by(|a, b| {
            let (ka, kb) = (overview_key(a, field), overview_key(b, field));
            ka.partial_cmp(&kb)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then_with(|| {
                    (&b.source_se, &b.dest_se, &b.vo_name).cmp(&(
                        &a.source_se,
                        &a.dest_se,
                        &a.vo_name,
                    ))
                })
        });
        if desc {
            items.reverse();
        }
        Ok(Overview {
            overview: (!q.only_summary).then(|| paged(items, q)),
            summary,
            overview_cache: CacheInfo {
                using_cache: false,
                cache_stale: false,
                cache_updated_at: mon_time(now),
                cache_update_duration: 0.0,
            },
        })
    }

    /// A link's (or VO's, or everything's) terminal files per minute over the window, as
    /// uPlot columns: `[[unix_ts…], [finished…], [failed…], [bytes…]]`.
    pub async fn mon_link_series(&self, user: &User, q: &MonQuery) -> Result<Value, ServiceError> {
        self.mon_visibility(user)?;
        let now = crate::model::time::now();
        let minutes = self
            .store
            .monitor_minutes(&q.row_filter(), q.since(now, 1))
            .await?;
        let col = |f: &dyn Fn(&Window) -> u64| -> Vec<u64> {
            minutes.iter().map(|m| f(&m.window)).collect()
        };
        Ok(json!([
            minutes.iter().map(|m| m.minute).collect::<Vec<_>>(),
            col(&|w| w.finished),
            col(&|w| w.failed),
            col(&|w| w.bytes),
        ]))
    }

    /// `jobs`: newest submission first (`orderby=submit_time` for oldest first).
    pub async fn mon_jobs(
        &self,
        user: &User,
        q: &MonQuery,
    ) -> Result<Paged<JobItem>, ServiceError> {
        let vis = self.mon_visibility(user)?;
        let now = crate::model::time::now();
        let mut query = JobListQuery {
            states: parse_states(&q.state, JobState::parse),
            with_file: parse_states(&q.with_file, FileState::parse),
            vo_name: q.vo.clone(),
            source_se: q.source_se.clone(),
            dest_se: q.dest_se.clone(),
            since: Some(now - q.time_window.unwrap_or(1).max(0) * 3600),
            ascending: matches!(&q.orderby, Some((f, false)) if f == "submit_time"),
            ..JobListQuery::default()
        };
        match vis {
            Visibility::All => {}
            Visibility::Vo(vo) => {
                if query.vo_name.as_ref().is_some_and(|v| *v != vo) {
                    return Ok(paged(Vec::new(), q));
                }
                query.vo_name = Some(vo)
            }
            Visibility::Own(cred) => query.cred_id = Some(cred),
        }
        // First pass finds the count (and the page, when it exists).
        let first = q.span(usize::MAX);
        query.offset = first.offset;
        query.limit = first.limit;
        let mut page = self.store.monitor_job_page(&query).await?;
        let span = q.span(page.count);
        if span.offset != first.offset {
            query.offset = span.offset;
            page = self.store.monitor_job_page(&query).await?;
        }
        let items = page.items.into_iter().map(JobItem::from).collect();
        Ok(envelope(page.count, span, items))
    }

    /// The job, if it exists and the caller may see it.
    async fn visible_job(&self, user: &User, id: &str) -> Result<(Job, Vec<File>), ServiceError> {
        let vis = self.mon_visibility(user)?;
        let Some((job, files)) = self.store.job_with_files(id).await? else {
            return Err(ServiceError::NotFound(format!(
                "No job with the id \"{id}\" has been found"
            )));
        };
        if !vis.allows(&job) {
            return Err(ServiceError::Forbidden(format!(
                "Not enough permissions to check the job \"{id}\""
            )));
        }
        Ok((job, files))
    }

    /// `jobs/<id>`: every job column with `expiry_time` and `duration`, and files per state.
    pub async fn mon_job(
        &self,
        user: &User,
        id: &str,
        q: &MonQuery,
    ) -> Result<(Job, Value), ServiceError> {
        let (job, files) = self.visible_job(user, id).await?;
        let now = crate::model::time::now();
        let mut states: BTreeMap<&str, u64> = BTreeMap::new();
        for f in files.iter().filter(|f| {
            q.reason
                .as_ref()
                .is_none_or(|r| f.reason.as_ref() == Some(r))
                && q.file.is_none_or(|id| id == f.file_id)
        }) {
            *states.entry(f.file_state.as_str()).or_default() += 1;
        }
        let extra = json!({
            "expiry_time": job.max_time_in_queue.map(mon_time).unwrap_or_default(),
            "duration": job.job_finished.unwrap_or(now) - job.submit_time,
            "states": states,
        });
        Ok((job, extra))
    }

    /// `jobs/<id>/files`: the files (paged, with their retries and log URLs, ACTIVE ones with
    /// live progress) and the job's transfer statistics.
    pub async fn mon_job_files(
        &self,
        user: &User,
        id: &str,
        q: &MonQuery,
    ) -> Result<(Paged<(File, Value)>, Value), ServiceError> {
        let (job, mut files) = self.visible_job(user, id).await?;
        let now = crate::model::time::now();
        for f in files
            .iter_mut()
            .filter(|f| f.file_state == FileState::Active)
        {
            if let Some(p) = self.progress.get(f.file_id) {
                f.transferred = p.transferred;
            }
        }
        let (field, desc) = q.order();
        let key = |f: &File| -> (Option<f64>, u64) {
            let t = |x: Option<i64>| x.map(|v| v as f64);
            let k = match field {
                Some("size") => f.filesize.map(|s| s as f64),
                Some("throughput") => f.throughput,
                Some("start_time") => t(f.start_time),
                Some("finish_time") => t(f.finish_time),
                Some("staging_start") => t(f.staging_start),
                Some("staging_finished") => t(f.staging_finished),
                _ => Some(f.file_id as f64),
            };
            (k, f.file_id)
        };
        if field.is_some() {
            files.sort_by(|a, b| {
                key(a)
                    .partial_cmp(&key(b))
                    .unwrap_or(std::cmp::Ordering::Equal)
            });
            if desc {
                files.reverse();
            }
        }
        let first_start = files.iter().filter_map(|f| f.start_time).min();
        let stats_start = first_start.unwrap_or(now);
        let running = match files.first().and_then(|f| f.finish_time) {
            Some(t) => t - stats_start,
            None => now - stats_start,
        };
        let with_thr: Vec<&File> = files
            .iter()
            .filter(|f| f.throughput.is_some_and(|t| t > 0.0))
            .collect();
        let live_thr: f64 = files
            .iter()
            .filter(|f| f.file_state == FileState::Active)
            .filter_map(|f| self.progress.get(f.file_id))
            .map(|p| p.throughput / MIB)
            .sum();
        let mut stats = json!({
            "total_size": files.iter().map(|f| f.filesize.unwrap_or(0)).sum::<u64>(),
            "total_done": files.iter().map(|f| f.transferred).sum::<u64>(),
            "files_transferred": files.iter().filter(|f| f.file_state == FileState::Finished).count(),
            "total_files_to_transfer": files.iter().filter(|f| f.file_state != FileState::NotUsed).count(),
            "bytes_transferred": files.iter().map(|f| f.transferred).sum::<u64>(),
            "first_start": mon_time_opt(first_start),
            "queued_first": stats_start - job.submit_time,
        });
        if running > 0 {
            stats["time_transfering"] = json!(running);
        }
        if live_thr > 0.0 {
            stats["current_throughput"] = json!(live_thr);
        }
        if !with_thr.is_empty() {
            stats["avg_throughput"] = json!(
                with_thr.iter().filter_map(|f| f.throughput).sum::<f64>() / with_thr.len() as f64
            );
        }
        let states = q.state.as_ref();
        let files: Vec<File> = files
            .into_iter()
            .filter(|f| states.is_none_or(|s| s.iter().any(|x| x == f.file_state.as_str())))
            .filter(|f| {
                q.reason
                    .as_ref()
                    .is_none_or(|r| f.reason.as_ref() == Some(r))
            })
            .filter(|f| q.file.is_none_or(|id| id == f.file_id))
            .collect();
        let page = paged(files, q);
        let mut items = Vec::with_capacity(page.items.len());
        for f in page.items {
            let retries: Vec<Value> = self
                .store
                .file_retries(f.file_id).await?
                .into_iter()
                .map(|r| {
                    json!({
                        "attempt": r.attempt,
                        "datetime": mon_time(r.datetime),
                        "reason": r.reason,
                        "transfer_host": r.transfer_host,
                        "log_file": r.log_file,
                        "log_url": r.log_file.as_ref().map(|_| retry_log_url(&job.job_id, f.file_id, r.attempt)),
                    })
                })
                .collect();
            let progress = self.progress.get(f.file_id);
            let extra = json!({
                "retries": retries,
                "log_url": f.log_file.as_ref().map(|_| log_url(&job.job_id, f.file_id)),
                "throughput_instant": progress.as_ref().map(|p| p.throughput / MIB),
                "src_token": f.src_token_id.as_ref().map(|t| json!({"token_id": t, "unmanaged": false})),
                "dst_token": f.dst_token_id.as_ref().map(|t| json!({"token_id": t, "unmanaged": false})),
            });
            items.push((f, extra));
        }
        Ok((
            Paged {
                items,
                count: page.count,
                start_index: page.start_index,
                end_index: page.end_index,
                page: page.page,
                page_count: page.page_count,
                page_size: page.page_size,
            },
            stats,
        ))
    }

    /// The path of a transfer log the caller may read: the file's current log
    /// (`attempt` `None`) or a retried attempt's. Only paths inside `log_dir` are served.
    pub async fn mon_log_path(
        &self,
        user: &User,
        job_id: &str,
        file_id: u64,
        attempt: Option<u32>,
        log_dir: &std::path::Path,
    ) -> Result<std::path::PathBuf, ServiceError> {
        let (_, files) = self.visible_job(user, job_id).await?;
        let not_found = || ServiceError::NotFound("No such log".into());
        let file = files
            .iter()
            .find(|f| f.file_id == file_id)
            .ok_or_else(not_found)?;
        let path = match attempt {
            None => file.log_file.clone(),
            Some(a) => self
                .store
                .file_retries(file_id)
                .await?
                .into_iter()
                .find(|r| r.attempt == a)
                .and_then(|r| r.log_file),
        }
        .ok_or_else(not_found)?;
        let root = tokio::fs::canonicalize(log_dir)
            .await
            .map_err(|_| not_found())?;
        let real = tokio::fs::canonicalize(&path)
            .await
            .map_err(|_| not_found())?;
        let is_file = tokio::fs::metadata(&real).await.is_ok_and(|m| m.is_file());
        if !real.starts_with(&root) || !is_file {
            tracing::warn!(
                job_id,
                file_id,
                "a transfer log outside the log directory was not served"
            );
            return Err(not_found());
        }
        Ok(real)
    }

    /// `transfers`.
    pub async fn mon_transfers(
        &self,
        user: &User,
        q: &MonQuery,
    ) -> Result<Paged<TransferItem>, ServiceError> {
        let vis = self.mon_visibility(user)?;
        let now = crate::model::time::now();
        let states: Vec<FileState> =
            parse_states(&q.state, FileState::parse).unwrap_or_else(|| {
                FileState::ALL
                    .into_iter()
                    .filter(|s| *s != FileState::NotUsed)
                    .collect()
            });
        let unfinished_pass = states.iter().any(|s| !s.is_terminal());
        let (field, desc) = q.order();
        let (order, descending) = match field {
            Some("id") => (TransferOrder::Id, desc),
            Some("start_time") => (TransferOrder::StartTime, desc),
            Some("finish_time") => (TransferOrder::FinishTime, desc),
            _ => (TransferOrder::FinishTime, true),
        };
        let mut query = TransferQuery {
            states,
            source_se: q.source_se.clone(),
            dest_se: q.dest_se.clone(),
            vo_name: q.vo.clone(),
            source_surl: q.source_surl.clone(),
            dest_surl: q.dest_surl.clone(),
            activity: q.activity.clone(),
            hostname: q.hostname.clone(),
            reason: q.reason.clone(),
            since: Some(now - q.time_window.unwrap_or(1).max(0) * 3600),
            unfinished_pass,
            order,
            descending,
            ..TransferQuery::default()
        };
        match &vis {
            Visibility::All => {}
            Visibility::Vo(vo) => {
                if query.vo_name.as_ref().is_some_and(|v| v != vo) {
                    return Ok(paged(Vec::new(), q));
                }
                query.vo_name = Some(vo.clone());
            }
            // Files do not carry the delegation: a private-level caller sees none here (the
            // REST API's `/files` shows them only their VO's when it is not `all` either).
            Visibility::Own(_) => return Ok(paged(Vec::new(), q)),
        }
        let first = q.span(usize::MAX);
        query.offset = first.offset;
        query.limit = first.limit;
        let mut page = self.store.monitor_transfer_page(&query).await?;
        let span = q.span(page.count);
        if span.offset != first.offset {
            query.offset = span.offset;
            page = self.store.monitor_transfer_page(&query).await?;
        }
        let items = page
            .items
            .into_iter()
            .map(|f| TransferItem {
                file_id: f.file_id,
                file_state: f.file_state.as_str().to_string(),
                job_id: f.job_id,
                source_se: f.source_se,
                dest_se: f.dest_se,
                start_time: mon_time_opt(f.start_time),
                finish_time: mon_time_opt(f.finish_time),
                activity: f.activity,
                user_filesize: f.user_filesize,
                filesize: f.filesize,
            })
            .collect();
        Ok(envelope(page.count, span, items))
    }

    /// `errors`: FAILED files per link in the window, most first.
    pub async fn mon_errors(
        &self,
        user: &User,
        q: &MonQuery,
    ) -> Result<Paged<Value>, ServiceError> {
        self.mon_visibility(user)?;
        let now = crate::model::time::now();
        let since = q.since(now, 1);
        let mut per_link: BTreeMap<(String, String), u64> = BTreeMap::new();
        if let Some(reason) = q.reason.as_deref().filter(|r| !r.is_empty()) {
            // A reason substring needs the reasons: per link from the reason counters.
            let links: std::collections::BTreeSet<(String, String)> = self
                .store
                .monitor_rows(&q.row_filter(), since)
                .await?
                .into_iter()
                .filter(|r| r.window.failed > 0)
                .map(|r| (r.key.source_se, r.key.dest_se))
                .collect();
            let needle = reason.to_lowercase();
            for (s, d) in links {
                for (_, r, n) in self
                    .store
                    .monitor_error_reasons(&s, &d, q.vo.as_deref(), since)
                    .await?
                {
                    if r.to_lowercase().contains(&needle) {
                        *per_link.entry((s.clone(), d.clone())).or_default() += n;
                    }
                }
            }
        } else {
            for r in self.store.monitor_rows(&q.row_filter(), since).await? {
                if r.window.failed > 0 {
                    *per_link
                        .entry((r.key.source_se, r.key.dest_se))
                        .or_default() += r.window.failed;
                }
            }
        }
        let mut items: Vec<((String, String), u64)> = per_link.into_iter().collect();
        items.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let items = items
            .into_iter()
            .map(|((s, d), n)| json!({"source_se": s, "dest_se": d, "count": n}))
            .collect();
        Ok(paged(items, q))
    }

    /// `errors/list`: a link's reasons with counts (per VO) and their classification by
    /// the reason's first upper-case word (the FTS scope).
    pub async fn mon_error_reasons(
        &self,
        user: &User,
        q: &MonQuery,
    ) -> Result<(Paged<Value>, BTreeMap<String, u64>), ServiceError> {
        let vis = self.mon_visibility(user)?;
        let (Some(s), Some(d)) = (q.source_se.as_deref(), q.dest_se.as_deref()) else {
            return Err(ServiceError::NotFound(
                "source_se and dest_se are required".into(),
            ));
        };
        let now = crate::model::time::now();
        let vo = match (&vis, q.vo.as_deref()) {
            (Visibility::Vo(mine), Some(asked)) if mine != asked => {
                return Ok((paged(Vec::new(), q), BTreeMap::new()));
            }
            (Visibility::Vo(mine), _) => Some(mine.as_str()),
            (Visibility::Own(_), _) => return Ok((paged(Vec::new(), q), BTreeMap::new())),
            (Visibility::All, asked) => asked,
        };
        let needle = q.reason.as_deref().map(str::to_lowercase);
        let rows: Vec<(String, String, u64)> = self
            .store
            .monitor_error_reasons(s, d, vo, q.since(now, 1))
            .await?
            .into_iter()
            .filter(|(_, r, _)| needle.as_ref().is_none_or(|n| r.to_lowercase().contains(n)))
            .collect();
        let mut classification: BTreeMap<String, u64> = BTreeMap::new();
        for (_, reason, n) in &rows {
            if let Some(word) = reason.split_whitespace().next() {
                if word.chars().any(|c| c.is_alphabetic()) && word.to_uppercase() == word {
                    *classification.entry(word.to_string()).or_default() += n;
                }
            }
        }
        let items = rows
            .into_iter()
            .map(|(vo, reason, count)| json!({"vo_name": vo, "reason": reason, "count": count}))
            .collect();
        Ok((paged(items, q), classification))
    }

    /// Failure classes (scope, phase, category) per link in the window, for the errors page.
    pub async fn mon_error_classes(
        &self,
        user: &User,
        q: &MonQuery,
    ) -> Result<Vec<crate::model::monitor::ErrorCount>, ServiceError> {
        self.mon_visibility(user)?;
        let now = crate::model::time::now();
        Ok(self
            .store
            .monitor_errors(&q.row_filter(), q.since(now, 1))
            .await?)
    }

    /// `stats`: every state counted (terminal ones in the window), `queued`, `total`, and the
    /// retried files.
    pub async fn mon_stats(&self, user: &User, q: &MonQuery) -> Result<Stats, ServiceError> {
        self.mon_visibility(user)?;
        let now = crate::model::time::now();
        let since = q.since(now, 1);
        let mut now_counts = StateCounts::default();
        let mut window = Window::default();
        let mut lasthour: BTreeMap<String, u64> = BTreeMap::new();
        match q.hostname.as_deref() {
            Some(host) => {
                // Per host: the host counters (terminal files are not split by state there).
                if let Some(h) = self
                    .store
                    .monitor_hosts(since)
                    .await?
                    .into_iter()
                    .find(|h| h.host == host)
                {
                    now_counts = h.now;
                    lasthour.insert("terminal".into(), h.terminal);
                }
            }
            None => {
                for r in self
                    .store
                    .monitor_rows(&RowFilter::default(), since)
                    .await?
                {
                    now_counts.add(&r.now);
                    window.add(&r.window);
                }
            }
        }
        for st in FileState::ALL {
            let n = match st {
                FileState::Finished => window.finished,
                FileState::Failed => window.failed,
                FileState::Canceled => window.canceled,
                FileState::NotUsed => 0,
                s => now_counts.get(s),
            };
            lasthour.insert(st.as_str().to_lowercase(), n);
        }
        lasthour.insert(
            "queued".into(),
            now_counts.get(FileState::Submitted) + now_counts.get(FileState::Ready),
        );
        lasthour.insert(
            "total".into(),
            window.finished + window.failed + window.canceled,
        );
        let retried = BTreeMap::from([
            ("finished".to_string(), window.retried_finished),
            ("failed".to_string(), window.retried_failed),
        ]);
        Ok(Stats { lasthour, retried })
    }

    /// `stats/servers`: per host, work counts and services with status, beat, drain and the
    /// hash segment each running host would own.
    pub async fn mon_servers(
        &self,
        user: &User,
        q: &MonQuery,
    ) -> Result<BTreeMap<String, Value>, ServiceError> {
        self.mon_visibility(user)?;
        let now = crate::model::time::now();
        let since = q.since(now, 1);
        let hosts = self.store.hosts().await?;
        let work: HashMap<String, crate::model::monitor::HostStats> = self
            .store
            .monitor_hosts(since)
            .await?
            .into_iter()
            .map(|h| (h.host.clone(), h))
            .collect();
        let submissions = self.store.monitor_submissions(since).await?;
        let mut services: BTreeMap<String, Vec<&crate::model::config::Host>> = BTreeMap::new();
        for h in &hosts {
            services.entry(h.service_name.clone()).or_default().push(h);
        }
        let mut out: BTreeMap<String, Value> = BTreeMap::new();
        for (service, mut members) in services {
            members.sort_by(|a, b| a.hostname.cmp(&b.hostname));
            let running: Vec<&str> = members
                .iter()
                .filter(|h| now - h.beat < HOST_BEAT_GRACE)
                .map(|h| h.hostname.as_str())
                .collect();
            let n = running.len() as u32;
            let mut index = 0u32;
            for h in members {
                let entry = out.entry(h.hostname.clone()).or_insert_with(|| {
                    let w = work.get(&h.hostname);
                    let c = |s: FileState| w.map_or(0, |w| w.now.get(s));
                    json!({
                        "submissions": submissions.get(&h.hostname).copied().unwrap_or(0),
                        "transfers": w.map_or(0, |w| w.terminal),
                        "active": c(FileState::Active),
                        "started": c(FileState::Started),
                        "staging": c(FileState::Staging),
                        "archiving": c(FileState::Archiving),
                        "services": {},
                    })
                });
                let mut status = json!({"beat": mon_time(h.beat), "drain": u8::from(h.drain)});
                if running.contains(&h.hostname.as_str()) {
                    let size = 0xFFFF / n;
                    let end = if index + 1 == n {
                        0xFFFF
                    } else {
                        size * (index + 1) - 1
                    };
                    status["status"] = json!("running");
                    status["start"] = json!(format!("{:04X}", size * index));
                    status["end"] = json!(format!("{end:04X}"));
                    index += 1;
                } else {
                    status["status"] = json!("down");
                }
                entry["services"][service.as_str()] = status;
            }
        }
        Ok(out)
    }

    /// `stats/vo`: per VO, terminal states in the window and ACTIVE/SUBMITTED now.
    pub async fn mon_stats_vo(
        &self,
        user: &User,
        q: &MonQuery,
    ) -> Result<BTreeMap<String, BTreeMap<String, u64>>, ServiceError> {
        self.mon_visibility(user)?;
        let now = crate::model::time::now();
        let filter = RowFilter {
            source_se: q.source_se.clone(),
            dest_se: q.dest_se.clone(),
            ..RowFilter::default()
        };
        let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for r in self.store.monitor_rows(&filter, q.since(now, 1)).await? {
            let e = out.entry(r.key.vo_name.clone()).or_default();
            for (name, n) in [
                ("finished", r.window.finished),
                ("failed", r.window.failed),
                ("canceled", r.window.canceled),
                ("active", r.now.get(FileState::Active)),
                ("submitted", r.now.get(FileState::Submitted)),
            ] {
                if n > 0 {
                    *e.entry(name.to_string()).or_default() += n;
                }
            }
        }
        out.retain(|_, v| !v.is_empty());
        Ok(out)
    }

    /// `optimizer`: links with optimizer decisions in the window.
    pub async fn mon_optimizer(
        &self,
        user: &User,
        q: &MonQuery,
    ) -> Result<Paged<Value>, ServiceError> {
        self.mon_visibility(user)?;
        let now = crate::model::time::now();
        let since = now - q.time_window.map_or(OPTIMIZER_WINDOW, |h| h.max(0) * 3600);
        let filter = LinkFilter {
            source_se: q.source_se.clone(),
            dest_se: q.dest_se.clone(),
        };
        let mut links: Vec<_> = self
            .store
            .optimizer_values(&filter)
            .await?
            .into_iter()
            .filter(|c| c.datetime / 1_000_000 >= since)
            .collect();
        links.sort_by(|a, b| (&a.source_se, &a.dest_se).cmp(&(&b.source_se, &b.dest_se)));
        links.dedup_by(|a, b| (&a.source_se, &a.dest_se) == (&b.source_se, &b.dest_se));
        // ftsmon lists the pairs only; ftsd adds the last decision's figures beside them.
        let items = links
            .into_iter()
            .map(|c| {
                json!({
                    "source_se": c.source_se, "dest_se": c.dest_se,
                    "datetime": mon_time(c.datetime / 1_000_000), "active": c.active,
                    "actual_active": c.actual_active, "queue_size": c.queue_size,
                    "success": c.success, "throughput": c.throughput, "ema": c.ema,
                })
            })
            .collect();
        Ok(paged(items, q))
    }

    /// `optimizer/detailed`: a link's decisions (newest first, paged) and its storages'
    /// active transfers against their limits.
    pub async fn mon_optimizer_detail(
        &self,
        user: &User,
        source: &str,
        destination: &str,
        q: &MonQuery,
    ) -> Result<Value, ServiceError> {
        self.mon_visibility(user)?;
        let now = crate::model::time::now();
        let since = now - q.time_window.map_or(OPTIMIZER_WINDOW, |h| h.max(0) * 3600);
        let filter = LinkFilter {
            source_se: Some(source.to_string()),
            dest_se: Some(destination.to_string()),
        };
        let rows: Vec<Value> = self
            .store
            .evolution(
                &filter,
                Some(since.saturating_mul(1_000_000)),
                None,
                MAX_EVOLUTION_ROWS,
            )
            .await?
            .into_iter()
            .map(|e| {
                json!({
                    "datetime": mon_time(e.datetime / 1_000_000),
                    "active": e.active,
                    "actual_active": e.actual_active,
                    "queue_size": e.queue_size,
                    "success": e.success,
                    "throughput": e.throughput,
                    "ema": e.ema,
                    "filesize_avg": e.filesize_avg,
                    "filesize_stddev": e.filesize_stddev,
                    "diff": e.diff,
                    "rationale": e.rationale,
                })
            })
            .collect();
        let mut storage_info = Vec::with_capacity(2);
        for se in [source, destination] {
            let cfg = self.store.se_config(se).await?;
            let active = self.active_at(se).await?;
            let max = if se == source {
                cfg.outbound_max_active
            } else {
                cfg.inbound_max_active
            };
            storage_info.push(json!({"storage": se, "active": active, "max_active": max}));
        }
        Ok(json!({"evolution": paged(rows, q), "storage_info": storage_info}))
    }

    /// A link's decisions over the window (default 30 min), oldest first, as uPlot columns:
    /// `[[unix_ts…], [decision…], [running…], [throughput B/s…], [ema B/s…], [success %…],
    /// [filesize mean…], [filesize stddev…]]` (the three optimizer plots).
    pub async fn mon_optimizer_series(
        &self,
        user: &User,
        source: &str,
        destination: &str,
        q: &MonQuery,
    ) -> Result<Value, ServiceError> {
        self.mon_visibility(user)?;
        let now = crate::model::time::now();
        let since = now - q.time_window.map_or(OPTIMIZER_WINDOW, |h| h.max(0) * 3600);
        let filter = LinkFilter {
            source_se: Some(source.to_string()),
            dest_se: Some(destination.to_string()),
        };
        let mut rows = self
            .store
            .evolution(
                &filter,
                Some(since.saturating_mul(1_000_000)),
                None,
                MAX_EVOLUTION_ROWS,
            )
            .await?;
        rows.sort_by_key(|e| e.datetime);
        let col = |f: &dyn Fn(&crate::model::optimizer::EvolutionEntry) -> Value| -> Vec<Value> {
            rows.iter().map(f).collect()
        };
        Ok(json!([
            col(&|e| json!(e.datetime as f64 / 1e6)),
            col(&|e| json!(e.active)),
            col(&|e| json!(e.actual_active)),
            col(&|e| json!(e.throughput)),
            col(&|e| json!(e.ema)),
            col(&|e| json!(e.success)),
            col(&|e| json!(e.filesize_avg)),
            col(&|e| json!(e.filesize_stddev)),
        ]))
    }

    /// READY + ACTIVE transfers with `se` on either side.
    async fn active_at(&self, se: &str) -> Result<u64, ServiceError> {
        let mut n = 0;
        for r in self
            .store
            .monitor_rows(&RowFilter::default(), crate::model::time::now())
            .await?
        {
            if r.key.source_se == se || r.key.dest_se == se {
                n += r.now.get(FileState::Ready) + r.now.get(FileState::Active);
            }
        }
        Ok(n)
    }

    /// `linkinfo`: the limits that apply to a link and where they come from, its current
    /// load and the optimizer's last word.
    pub async fn mon_linkinfo(
        &self,
        user: &User,
        source: &str,
        dest: &str,
    ) -> Result<Value, ServiceError> {
        self.mon_visibility(user)?;
        let rows = self
            .store
            .monitor_rows(&RowFilter::default(), crate::model::time::now())
            .await?;
        let load = |pick: &dyn Fn(&RowKey) -> bool| -> u64 {
            rows.iter()
                .filter(|r| pick(&r.key))
                .map(|r| r.now.get(FileState::Ready) + r.now.get(FileState::Active))
                .sum()
        };
        let (ses, _) = self.store.se_configs(None).await?;
        let side = |se: &str, outbound: bool| -> Value {
            let pick = |c: &crate::model::config::SeConfig| {
                if outbound {
                    c.outbound_max_active
                } else {
                    c.inbound_max_active
                }
            };
            let specific = ses.iter().find(|c| c.storage == se).and_then(pick);
            let generic = ses.iter().find(|c| c.storage == "*").and_then(pick);
            let (limit, kind) = match (specific, generic) {
                (Some(l), _) => (Some(l), "specific"),
                (None, Some(l)) => (Some(l), "generic"),
                _ => (None, "generic"),
            };
            let active = if outbound {
                load(&|k: &RowKey| k.source_se == se)
            } else {
                load(&|k: &RowKey| k.dest_se == se)
            };
            json!({
                if outbound { "outbound_limit" } else { "inbound_limit" }: limit,
                "config_type": kind,
                "active_transfers": active,
            })
        };
        let link = self.store.link_config(source, dest).await?;
        let link_kind = if link.source == source && link.destination == dest {
            "specific"
        } else {
            "generic"
        };
        let optimizer = self.store.optimizer_current(source, dest).await?;
        let last = self
            .store
            .evolution(
                &LinkFilter {
                    source_se: Some(source.to_string()),
                    dest_se: Some(dest.to_string()),
                },
                None,
                None,
                1,
            )
            .await?
            .into_iter()
            .next();
        let can_configure =
            !user.user_dn.is_empty() && user.granted_level_for(Operation::Config).is_some();
        Ok(json!([{
            "source": side(source, true),
            "destination": side(dest, false),
            "link": {"limits": [link.min_active, link.max_active], "config_type": link_kind},
            "optimizer": {
                "decision": optimizer.as_ref().map(|o| o.active),
                "active_transfers": load(&|k: &RowKey| k.source_se == source && k.dest_se == dest),
                "description": last.and_then(|e| e.rationale),
            },
            "user_dn_result": can_configure,
        }]))
    }

    /// `unique/<what>`: the VOs, sources, destinations, activities (per VO) or live hosts.
    pub async fn mon_unique(&self, user: &User, what: &str) -> Result<Value, ServiceError> {
        self.mon_visibility(user)?;
        let rows = self
            .store
            .monitor_rows(&RowFilter::default(), crate::model::time::now())
            .await?;
        let set = |f: &dyn Fn(&RowKey) -> &str| -> Vec<String> {
            let s: std::collections::BTreeSet<String> = rows
                .iter()
                .map(|r| f(&r.key).to_string())
                .filter(|x| !x.is_empty())
                .collect();
            s.into_iter().collect()
        };
        Ok(match what {
            "vos" => {
                let mut vos = set(&|k| &k.vo_name);
                for (vo, _, _) in self.store.monitor_jobs().await? {
                    if !vos.contains(&vo) {
                        vos.push(vo);
                    }
                }
                vos.sort();
                json!(vos)
            }
            "sources" => json!(set(&|k| &k.source_se)),
            "destinations" => json!(set(&|k| &k.dest_se)),
            "activities" => {
                let mut per_vo: BTreeMap<String, std::collections::BTreeSet<String>> =
                    BTreeMap::new();
                for r in &rows {
                    per_vo
                        .entry(r.key.vo_name.clone())
                        .or_default()
                        .insert(r.key.activity.clone());
                }
                json!(per_vo)
            }
            "hostnames" => {
                let now = crate::model::time::now();
                let mut hosts: Vec<String> = self
                    .store
                    .hosts()
                    .await?
                    .into_iter()
                    .filter(|h| now - h.beat <= 3600)
                    .map(|h| h.hostname)
                    .collect();
                hosts.sort();
                hosts.dedup();
                json!(hosts)
            }
            _ => return Err(ServiceError::NotFound(format!("No such list: {what}"))),
        })
    }

    /// `config/server`.
    pub async fn mon_config_server(&self, user: &User) -> Result<Value, ServiceError> {
        self.mon_visibility(user)?;
        let per_vo: Vec<Value> = self
            .store
            .server_configs()
            .await?
            .into_iter()
            .map(|c| {
                json!({"retry": c.retry, "max_time_queue": c.max_time_queue,
                       "global_timeout": c.global_timeout, "sec_per_mb": c.sec_per_mb,
                       "vo_name": c.vo_name})
            })
            .collect();
        Ok(json!({"per_vo": per_vo}))
    }

    /// `config/storages` (paged).
    pub async fn mon_config_storages(
        &self,
        user: &User,
        q: &MonQuery,
    ) -> Result<Paged<Value>, ServiceError> {
        self.mon_visibility(user)?;
        let (ses, _) = self.store.se_configs(None).await?;
        let items = ses
            .into_iter()
            .map(|c| serde_json::to_value(c).unwrap_or(Value::Null))
            .collect();
        Ok(paged(items, q))
    }

    /// `config/ops`.
    pub async fn mon_config_ops(&self, user: &User) -> Result<Value, ServiceError> {
        self.mon_visibility(user)?;
        let (_, limits) = self.store.se_configs(None).await?;
        Ok(json!(
            limits
                .into_iter()
                .map(
                    |l| json!({"vo_name": l.vo_name, "host": l.host, "operation": l.operation,
                            "concurrent_ops": l.concurrent_ops})
                )
                .collect::<Vec<_>>()
        ))
    }

    /// `config/links` (paged, each with its VO shares).
    pub async fn mon_config_links(
        &self,
        user: &User,
        q: &MonQuery,
    ) -> Result<Paged<Value>, ServiceError> {
        self.mon_visibility(user)?;
        let shares = self.store.shares().await?;
        let items = self
            .store
            .link_configs()
            .await?
            .into_iter()
            .filter(|l| q.source_se.as_ref().is_none_or(|s| *s == l.source))
            .filter(|l| q.dest_se.as_ref().is_none_or(|d| *d == l.destination))
            .map(|l| {
                let s: BTreeMap<&str, i64> = shares
                    .iter()
                    .filter(|s| s.source == l.source && s.destination == l.destination)
                    .map(|s| (s.vo.as_str(), s.share))
                    .collect();
                json!({"source_se": l.source, "dest_se": l.destination,
                       "symbolicname": l.symbolicname, "min_active": l.min_active,
                       "max_active": l.max_active, "optimizer_mode": l.optimizer_mode,
                       "no_delegation": l.no_delegation, "shares": s})
            })
            .collect();
        Ok(paged(items, q))
    }

    /// `config/activities` (`vo` `None`): the weights per VO; `config/activities/<vo>`: the
    /// VO's unfinished files per activity and state with weight and ratio.
    pub async fn mon_config_activities(
        &self,
        user: &User,
        vo: Option<&str>,
        q: &MonQuery,
    ) -> Result<Value, ServiceError> {
        self.mon_visibility(user)?;
        let rows = self.store.activity_share_rows().await?;
        let Some(vo) = vo else {
            let per_vo: BTreeMap<String, Value> = rows
                .iter()
                .map(|r| (r.vo.clone(), Value::Object(r.share_map())))
                .collect();
            return Ok(json!(per_vo));
        };
        let weights: HashMap<String, f64> = rows
            .iter()
            .find(|r| r.vo == vo)
            .map(|r| {
                r.share_map()
                    .into_iter()
                    .filter_map(|(k, v)| v.as_f64().map(|w| (k.to_lowercase(), w)))
                    .collect()
            })
            .unwrap_or_default();
        let filter = RowFilter {
            vo_name: Some(vo.to_string()),
            source_se: q.source_se.clone(),
            dest_se: q.dest_se.clone(),
            activity: None,
        };
        let mut grouped: BTreeMap<String, BTreeMap<&str, u64>> = BTreeMap::new();
        for r in self
            .store
            .monitor_rows(&filter, crate::model::time::now())
            .await?
        {
            for st in FileState::ALL
                .into_iter()
                .filter(|s| !s.is_terminal() && *s != FileState::NotUsed)
            {
                let n = r.now.get(st);
                if n > 0 {
                    *grouped
                        .entry(r.key.activity.clone())
                        .or_default()
                        .entry(st.as_str())
                        .or_default() += n;
                }
            }
        }
        let weight_sum: f64 = grouped
            .iter()
            .filter(|(a, c)| {
                weights.contains_key(&a.to_lowercase())
                    && c.get("SUBMITTED").is_some_and(|n| *n > 0)
            })
            .map(|(a, _)| weights[&a.to_lowercase()])
            .sum();
        let mut out = serde_json::Map::new();
        for (activity, count) in grouped {
            let mut info = json!({"count": count});
            match weights.get(&activity.to_lowercase()) {
                None => info["notes"] = json!("Activity not configured. Fallback to default."),
                Some(w) => {
                    info["weight"] = json!(w);
                    if count.get("SUBMITTED").is_some_and(|n| *n > 0) && weight_sum > 0.0 {
                        info["ratio"] = json!(w / weight_sum);
                    }
                }
            }
            out.insert(activity, info);
        }
        Ok(Value::Object(out))
    }

    /// `config/audit` (paged, newest first); only when the operator turned it on.
    pub async fn mon_config_audit(
        &self,
        user: &User,
        q: &MonQuery,
    ) -> Result<Paged<Value>, ServiceError> {
        self.mon_visibility(user)?;
        if !self.monitoring.show_config_audit {
            return Err(ServiceError::NotFound(
                "The configuration audit is not shown (monitoring.show_config_audit)".into(),
            ));
        }
        let items = self
            .store
            .audit_entries(MAX_PAGE_ITEMS).await?
            .into_iter()
            .filter(|a| q.action.as_ref().is_none_or(|x| *x == a.action))
            .filter(|a| {
                q.contains
                    .as_ref()
                    .is_none_or(|c| a.config.to_lowercase().contains(&c.to_lowercase()))
            })
            .map(|a| json!({"datetime": mon_time(a.datetime), "dn": a.dn, "config": a.config, "action": a.action}))
            .collect();
        Ok(paged(items, q))
    }

    /// `config/gfal2`: the gfal2 configuration files; only when the operator turned it on.
    pub async fn mon_config_gfal2(&self, user: &User) -> Result<Value, ServiceError> {
        self.mon_visibility(user)?;
        if !self.monitoring.show_gfal2_config {
            return Err(ServiceError::NotFound(
                "The gfal2 configuration is not shown (monitoring.show_gfal2_config)".into(),
            ));
        }
        // A directory listing and a few small files, but still disk I/O: the blocking pool.
        let out = super::blocking(|| {
            let mut out = BTreeMap::new();
            if let Ok(dir) = std::fs::read_dir(GFAL2_CONFIG_DIR) {
                for entry in dir.flatten() {
                    let path = entry.path();
                    if path.extension().is_some_and(|e| e == "conf") {
                        if let Ok(text) = std::fs::read_to_string(&path) {
                            out.insert(path.display().to_string(), text);
                        }
                    }
                }
            }
            Ok(out)
        })
        .await?;
        Ok(json!(out))
    }
}

/// Where gfal2 keeps its configuration files.
pub const GFAL2_CONFIG_DIR: &str = "/etc/gfal2.d";

/// Monitoring settings (`[monitoring]` in the configuration).
#[derive(Debug, Clone, Default)]
pub struct MonitoringSettings {
    /// Serve `config/audit` (it shows DNs and configuration values).
    pub show_config_audit: bool,
    /// Serve `config/gfal2` (it may show secrets).
    pub show_gfal2_config: bool,
    /// Where transfer logs are written; only files under it are served.
    pub log_dir: std::path::PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(page: PageReq, size: Option<usize>) -> MonQuery {
        MonQuery {
            page,
            page_size: size,
            ..MonQuery::default()
        }
    }

    #[test]
    fn pages_follow_djangos_paginator() {
        let p = paged((0..120).collect::<Vec<_>>(), &q(PageReq::First, None));
        assert_eq!(
            (
                p.count,
                p.start_index,
                p.end_index,
                p.page,
                p.page_count,
                p.page_size
            ),
            (120, 1, 50, 1, 3, 50)
        );
        let p = paged((0..120).collect::<Vec<_>>(), &q(PageReq::Number(9), None));
        assert_eq!(
            (p.page, p.start_index, p.end_index, p.items.len()),
            (3, 101, 120, 20)
        );
        let p = paged((0..120).collect::<Vec<_>>(), &q(PageReq::All, None));
        assert_eq!(
            (p.page, p.page_count, p.page_size, p.items.len()),
            (1, 1, i64::MAX, 120)
        );
        let p = paged(Vec::<u8>::new(), &q(PageReq::First, Some(10)));
        assert_eq!(
            (p.count, p.start_index, p.end_index, p.page, p.page_count),
            (0, 0, 0, 1, 1)
        );
    }

    #[test]
    fn progress_counts_bytes_once_and_measures_throughput() {
        let board = ProgressBoard::default();
        let key = RowKey::default();
        let t0 = Instant::now();
        board.update(1, &key, 0, t0);
        board.update(1, &key, 10 << 20, t0 + std::time::Duration::from_secs(2));
        let p = board.get(1).unwrap();
        assert!((p.throughput - 5.0 * MIB).abs() < 1.0, "{}", p.throughput);
        board.finish(1, &key, Some(30 << 20));
        assert_eq!(board.bytes()[&key], 30 << 20);
        assert!(board.get(1).is_none());
        // A failed transfer keeps what it moved.
        board.update(2, &key, 1 << 20, t0);
        board.finish(2, &key, None);
        assert_eq!(board.bytes()[&key], 31 << 20);
    }
}
