//! Row views for monitoring (ftsmon's jobs, transfers and error reasons): each walks one index
//! in key order and pages, never the whole files table. Filters that the index key does not
//! cover are applied on the decoded rows, at most [`MAX_SCAN`] of them per request (the count
//! then says how many were seen and `complete` is false).

use std::collections::{BTreeMap, HashSet};

use redb::ReadableDatabase;

use super::{Redb, StoreError, codec, jobs::MAX_SCAN, schema};
use crate::model::{
    job::{File, Job, JobState},
    monitor::{JobListQuery, JobSummary, Page, TransferOrder, TransferQuery},
};

const MAX_STR: &str = "\u{10FFFF}";

impl Redb {
    /// A page of jobs, newest (or oldest) submission first.
    pub fn monitor_job_page(&self, q: &JobListQuery) -> Result<Page<JobSummary>, StoreError> {
        let tx = self.db.begin_read()?;
        let jobs = tx.open_table(schema::JOBS)?;
        let files = tx.open_table(schema::FILES)?;
        let mut keys: Vec<(i64, String)> = Vec::new();
        let mut complete = true;
        if let Some(states) = &q.with_file {
            // Jobs with a file in these states (decode the files: the state index has no job).
            let index = tx.open_table(schema::FILES_BY_STATE)?;
            let mut seen = HashSet::new();
            let mut scanned = 0;
            'states: for st in states {
                let s = st.as_str();
                for row in
                    index.range((s, "", "", "", 0u64)..=(s, MAX_STR, MAX_STR, MAX_STR, u64::MAX))?
                {
                    scanned += 1;
                    if scanned > MAX_SCAN {
                        complete = false;
                        break 'states;
                    }
                    let id = row?.0.value().4;
                    let Some(v) = files.get(id)? else { continue };
                    let f: File = codec::decode(v.value())?;
                    if q.since
                        .is_some_and(|t| f.finish_time.is_some_and(|ft| ft < t))
                    {
                        continue;
                    }
                    if seen.insert(f.job_id.clone()) {
                        keys.push((0, f.job_id));
                    }
                }
            }
        } else {
            let index = tx.open_table(schema::JOBS_BY_STATE)?;
            let states: Vec<JobState> = q.states.clone().unwrap_or_else(|| JobState::ALL.to_vec());
            for st in states {
                let s = st.as_str();
                for row in index.range((s, i64::MIN, "")..=(s, i64::MAX, MAX_STR))? {
                    let k = row?.0;
                    let (_, t, id) = k.value();
                    keys.push((t, id.to_string()));
                    if keys.len() >= MAX_SCAN {
                        complete = false;
                        break;
                    }
                }
            }
        }
        let needs_rows = q.with_file.is_some()
            || q.vo_name.is_some()
            || q.source_se.is_some()
            || q.dest_se.is_some()
            || q.cred_id.is_some()
            // Unfinished jobs pass the window: only terminal states need their rows read.
            || (q.since.is_some()
                && q
                    .states
                    .as_ref()
                    .is_none_or(|s| s.iter().any(|st| st.is_terminal())));
        let read = |id: &str| -> Result<Option<Job>, StoreError> {
            match jobs.get(id)? {
                Some(v) => Ok(Some(codec::decode(v.value())?)),
                None => Ok(None),
            }
        };
        let matches = |j: &Job| {
            let eq = |want: &Option<String>, have: Option<&str>| {
                want.as_deref().is_none_or(|w| Some(w) == have)
            };
            eq(&q.vo_name, Some(&j.vo_name))
                && eq(&q.source_se, j.source_se.as_deref())
                && eq(&q.dest_se, j.dest_se.as_deref())
                && eq(&q.cred_id, Some(&j.cred_id))
                && (q.with_file.is_some()
                    || q.since
                        .is_none_or(|t| j.job_finished.is_none_or(|f| f >= t)))
        };
        // Jobs found through their files get their submit time from the row.
        let mut selected: Vec<(i64, String, Option<Job>)> = Vec::with_capacity(keys.len());
        for (t, id) in keys {
            if needs_rows {
                let Some(job) = read(&id)? else { continue };
                if matches(&job) {
                    selected.push((job.submit_time, id, Some(job)));
                }
            } else {
                selected.push((t, id, None));
            }
        }
        selected.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        if !q.ascending {
            selected.reverse();
        }
        let count = selected.len();
        let mut items = Vec::new();
        for (_, id, job) in selected.into_iter().skip(q.offset).take(q.limit) {
            let job = match job {
                Some(j) => j,
                None => match read(&id)? {
                    Some(j) => j,
                    None => continue,
                },
            };
            items.push(summarise(&tx, job)?);
        }
        Ok(Page {
            count,
            complete,
            items,
        })
    }

    /// A page of transfers in `q.states`, sorted as asked.
    pub fn monitor_transfer_page(&self, q: &TransferQuery) -> Result<Page<File>, StoreError> {
        let tx = self.db.begin_read()?;
        let index = tx.open_table(schema::FILES_BY_STATE)?;
        let files = tx.open_table(schema::FILES)?;
        let (src_lo, src_hi) = match &q.source_se {
            Some(s) => (s.as_str(), s.as_str()),
            None => ("", MAX_STR),
        };
        let mut matched: Vec<(Option<i64>, u64)> = Vec::new();
        let mut scanned = 0usize;
        let mut complete = true;
        'states: for st in &q.states {
            let s = st.as_str();
            for row in
                index.range((s, src_lo, "", "", 0u64)..=(s, src_hi, MAX_STR, MAX_STR, u64::MAX))?
            {
                let k = row?.0;
                let (_, _, dst, vo, id) = k.value();
                if q.dest_se.as_deref().is_some_and(|d| d != dst)
                    || q.vo_name.as_deref().is_some_and(|v| v != vo)
                {
                    continue;
                }
                scanned += 1;
                if scanned > MAX_SCAN {
                    complete = false;
                    break 'states;
                }
                let Some(v) = files.get(id)? else { continue };
                let f: File = codec::decode(v.value())?;
                if !transfer_matches(&f, q) {
                    continue;
                }
                let key = match q.order {
                    TransferOrder::Id => Some(f.file_id as i64),
                    TransferOrder::StartTime => f.start_time,
                    TransferOrder::FinishTime => f.finish_time,
                };
                matched.push((key, f.file_id));
            }
        }
        // SQL order: NULLs first ascending, last descending (MySQL).
        matched.sort();
        if q.descending {
            matched.reverse();
        }
        let count = matched.len();
        let mut items = Vec::new();
        for (_, id) in matched.into_iter().skip(q.offset).take(q.limit) {
            if let Some(v) = files.get(id)? {
                items.push(codec::decode(v.value())?);
            }
        }
        Ok(Page {
            count,
            complete,
            items,
        })
    }

    /// FAILED files of a link since `since` (unix seconds, minute resolution) per VO and
    /// reason, for the VOs `vo` allows (`None`: every VO); most frequent first.
    pub fn monitor_error_reasons(
        &self,
        source_se: &str,
        dest_se: &str,
        vo: Option<&str>,
        since: i64,
    ) -> Result<Vec<(String, String, u64)>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(schema::LINK_MINUTE_ERRORS)?;
        let first = super::index::minute_of(since);
        let (s, d) = (source_se, dest_se);
        let mut sum: BTreeMap<(String, String), u64> = BTreeMap::new();
        for row in table.range((s, d, "", i64::MIN, "")..=(s, d, MAX_STR, i64::MAX, MAX_STR))? {
            let (k, v) = row?;
            let (_, _, row_vo, minute, reason) = k.value();
            if minute < first || vo.is_some_and(|want| want != row_vo) {
                continue;
            }
            *sum.entry((row_vo.to_string(), reason.to_string()))
                .or_default() += v.value();
        }
        let mut out: Vec<(String, String, u64)> =
            sum.into_iter().map(|((v, r), n)| (v, r, n)).collect();
        out.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| (&a.0, &a.1).cmp(&(&b.0, &b.1))));
        Ok(out)
    }

    /// The submission time of the oldest job in `state` of each VO of `vos` (oldest first
    /// through the state index; stops once every VO is found or after [`MAX_SCAN`] jobs).
    pub fn monitor_oldest_jobs(
        &self,
        state: JobState,
        vos: &[String],
    ) -> Result<BTreeMap<String, i64>, StoreError> {
        let mut out = BTreeMap::new();
        if vos.is_empty() {
            return Ok(out);
        }
        let tx = self.db.begin_read()?;
        let index = tx.open_table(schema::JOBS_BY_STATE)?;
        let jobs = tx.open_table(schema::JOBS)?;
        let s = state.as_str();
        for row in index
            .range((s, i64::MIN, "")..=(s, i64::MAX, MAX_STR))?
            .take(MAX_SCAN)
        {
            let k = row?.0;
            let (_, t, id) = k.value();
            let Some(v) = jobs.get(id)? else { continue };
            let j: Job = codec::decode(v.value())?;
            if vos.contains(&j.vo_name) && !out.contains_key(&j.vo_name) {
                out.insert(j.vo_name, t);
                if out.len() == vos.len() {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Jobs submitted since `since`, per `submit_host` (at most [`MAX_SCAN`] jobs read).
    pub fn monitor_submissions(&self, since: i64) -> Result<BTreeMap<String, u64>, StoreError> {
        let tx = self.db.begin_read()?;
        let index = tx.open_table(schema::JOBS_BY_SUBMIT_TIME)?;
        let jobs = tx.open_table(schema::JOBS)?;
        let mut out: BTreeMap<String, u64> = BTreeMap::new();
        for row in index.range((since, "")..)?.take(MAX_SCAN) {
            let k = row?.0;
            let id = k.value().1;
            if let Some(v) = jobs.get(id)? {
                let j: Job = codec::decode(v.value())?;
                *out.entry(j.submit_host).or_default() += 1;
            }
        }
        Ok(out)
    }
}

fn transfer_matches(f: &File, q: &TransferQuery) -> bool {
    let eq =
        |want: &Option<String>, have: Option<&str>| want.as_deref().is_none_or(|w| Some(w) == have);
    eq(&q.source_surl, Some(&f.source_surl))
        && eq(&q.dest_surl, Some(&f.dest_surl))
        && eq(&q.activity, Some(&f.activity))
        && eq(&q.hostname, f.transfer_host.as_deref())
        && eq(&q.reason, f.reason.as_deref())
        && match (q.since, f.finish_time) {
            (None, _) => true,
            (Some(t), Some(ft)) => ft >= t,
            (Some(_), None) => q.unfinished_pass,
        }
}

/// A job with its files counted per state (ftsmon's job list decoration).
fn summarise(tx: &redb::ReadTransaction, job: Job) -> Result<JobSummary, StoreError> {
    let by_job = tx.open_table(schema::FILES_BY_JOB)?;
    let files = tx.open_table(schema::FILES)?;
    let mut s = JobSummary {
        job,
        files: BTreeMap::new(),
        count: 0,
        with_debug: 0,
        n_replicas: 0,
    };
    let id = s.job.job_id.clone();
    let mut max_index = 0;
    for row in by_job.range((id.as_str(), 0u64)..=(id.as_str(), u64::MAX))? {
        let fid = row?.0.value().1;
        let Some(v) = files.get(fid)? else { continue };
        let f: File = codec::decode(v.value())?;
        *s.files.entry(f.file_state.as_str()).or_default() += 1;
        s.count += 1;
        s.with_debug += u64::from(f.log_debug);
        max_index = max_index.max(f.file_index);
    }
    s.n_replicas = max_index + 1;
    Ok(s)
}
