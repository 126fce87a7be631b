//! Jobs and files: batch inserts (one transaction for a whole group of submissions), reads by
//! id, listings through the indexes, and transactional updates that keep the indexes right.

use std::collections::BTreeMap;

use redb::{ReadTransaction, ReadableDatabase, ReadableTable, WriteTransaction};

use super::{Redb, StoreError, codec, index::JobIndexes, schema};
use crate::model::{
    change::{self, JobEdit},
    job::{File, FileState, InsertConflict, Job, JobChange, JobState},
    query::{FileFilter, JobFilter},
};

impl codec::Record for Job {
    const NAME: &'static str = "job";
    const VERSION: u8 = 1;
}

impl codec::Record for File {
    const NAME: &'static str = "file";
    const VERSION: u8 = 1;
}

/// Scans give up after this many index entries: a listing is an interactive call and must not
/// walk millions of rows; callers narrow with filters or a limit.
pub const MAX_SCAN: usize = 200_000;

impl Redb {
    /// Insert a batch of new jobs with their files in one durable transaction. File ids are
    /// assigned here. One result per job, in order.
    pub fn insert_jobs(
        &self,
        batch: &mut [(Job, Vec<File>)],
    ) -> Result<Vec<Result<(), InsertConflict>>, StoreError> {
        self.write(|tx| {
            let mut jobs = tx.open_table(schema::JOBS)?;
            let mut files = tx.open_table(schema::FILES)?;
            let mut meta = tx.open_table(schema::META)?;
            let mut indexes = JobIndexes::open(tx)?;
            let mut next_id = meta
                .get(schema::META_NEXT_FILE_ID)?
                .map(|v| v.value())
                .unwrap_or(1);
            let mut results = Vec::with_capacity(batch.len());
            for (job, job_files) in batch.iter_mut() {
                if jobs.get(job.job_id.as_str())?.is_some() {
                    results.push(Err(InsertConflict::DuplicateJob));
                    continue;
                }
                let mut conflict = None;
                for f in job_files.iter() {
                    if let Some(uuid) = &f.dest_surl_uuid {
                        if indexes.dest_uuid_taken(uuid)? {
                            conflict =
                                Some(InsertConflict::DuplicateDestination(f.dest_surl.clone()));
                            break;
                        }
                    }
                }
                if let Some(c) = conflict {
                    results.push(Err(c));
                    continue;
                }
                jobs.insert(job.job_id.as_str(), codec::encode(job).as_slice())?;
                indexes.apply_job(None, Some(job))?;
                for f in job_files.iter_mut() {
                    f.file_id = next_id;
                    next_id += 1;
                    f.job_id = job.job_id.clone();
                    files.insert(f.file_id, codec::encode(f).as_slice())?;
                    indexes.apply_file(None, Some(f))?;
                }
                results.push(Ok(()));
            }
            meta.insert(schema::META_NEXT_FILE_ID, next_id)?;
            Ok(results)
        })
    }

    pub fn job(&self, job_id: &str) -> Result<Option<Job>, StoreError> {
        let tx = self.db.begin_read()?;
        read_job(&tx, job_id)
    }

    /// The files of a job, by file id.
    pub fn job_files(&self, job_id: &str) -> Result<Vec<File>, StoreError> {
        let tx = self.db.begin_read()?;
        read_job_files(&tx, job_id)
    }

    /// A job and its files, read in one snapshot.
    pub fn job_with_files(&self, job_id: &str) -> Result<Option<(Job, Vec<File>)>, StoreError> {
        let tx = self.db.begin_read()?;
        let Some(job) = read_job(&tx, job_id)? else {
            return Ok(None);
        };
        let files = read_job_files(&tx, job_id)?;
        Ok(Some((job, files)))
    }

    pub fn file(&self, file_id: u64) -> Result<Option<File>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(schema::FILES)?;
        match table.get(file_id)? {
            Some(v) => Ok(Some(codec::decode(v.value())?)),
            None => Ok(None),
        }
    }

    /// Jobs matching `filter`, newest first.
    pub fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>, StoreError> {
        let tx = self.db.begin_read()?;
        let ids = candidate_jobs(&tx, filter)?;
        let jobs_table = tx.open_table(schema::JOBS)?;
        let mut out = Vec::new();
        for id in ids {
            let Some(value) = jobs_table.get(id.as_str())? else {
                continue;
            };
            let job: Job = codec::decode(value.value())?;
            if matches(&job, filter) {
                out.push(job);
                if filter.limit.is_some_and(|l| out.len() >= l) {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Number of files in `state` on the link `(source_se, dest_se)` for `vo`.
    pub fn count_files(
        &self,
        state: FileState,
        source_se: &str,
        dest_se: &str,
        vo: &str,
    ) -> Result<u64, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(schema::FILES_BY_STATE)?;
        let start = (state.as_str(), source_se, dest_se, vo, 0u64);
        let end = (state.as_str(), source_se, dest_se, vo, u64::MAX);
        let mut n = 0;
        for row in table.range(start..=end)? {
            row?;
            n += 1;
        }
        Ok(n)
    }

    /// Files matching `filter` (unordered beyond the index used), at most `filter.limit`.
    pub fn list_files(&self, filter: &FileFilter) -> Result<Vec<File>, StoreError> {
        let tx = self.db.begin_read()?;
        let files = tx.open_table(schema::FILES)?;
        let mut ids: Vec<u64> = Vec::new();
        if let Some(dest) = &filter.dest_surl {
            let table = tx.open_table(schema::FILES_BY_DEST_SURL)?;
            for row in table.range((dest.as_str(), 0u64)..=(dest.as_str(), u64::MAX))? {
                ids.push(row?.0.value().1);
            }
        } else {
            let table = tx.open_table(schema::FILES_BY_STATE)?;
            let states: Vec<FileState> = match &filter.states {
                Some(s) => s.clone(),
                None => FileState::ALL.to_vec(),
            };
            'states: for state in states {
                let (lo, hi) = match &filter.source_se {
                    Some(src) => (
                        (state.as_str(), src.as_str()),
                        (state.as_str(), src.as_str()),
                    ),
                    None => ((state.as_str(), ""), (state.as_str(), "\u{10FFFF}")),
                };
                for row in table.range(
                    (lo.0, lo.1, "", "", 0u64)..=(hi.0, hi.1, "\u{10FFFF}", "\u{10FFFF}", u64::MAX),
                )? {
                    ids.push(row?.0.value().4);
                    if ids.len() >= MAX_SCAN {
                        break 'states;
                    }
                }
            }
        }
        let mut out = Vec::new();
        for id in ids {
            let Some(value) = files.get(id)? else {
                continue;
            };
            let f: File = codec::decode(value.value())?;
            if file_matches(&f, filter) {
                out.push(f);
                if out.len() >= filter.limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Change jobs (and their files) in one durable transaction. `change` sees each existing
    /// job with its files and returns a value per job; rows it modified are written back with
    /// their indexes. Missing ids yield `None`.
    pub fn update_jobs<R>(
        &self,
        job_ids: &[String],
        change: impl FnMut(&mut Job, &mut Vec<File>) -> R,
    ) -> Result<Vec<Option<R>>, StoreError> {
        self.write(|tx| update_jobs_in(tx, job_ids, change))
    }

    /// Apply `edit` to each job of `job_ids` in one durable transaction.
    pub fn edit_jobs(
        &self,
        job_ids: &[String],
        edit: &JobEdit,
        now: i64,
    ) -> Result<Vec<Option<(JobChange, usize)>>, StoreError> {
        self.update_jobs(job_ids, |job, files| {
            change::edit_job(edit, job, files, now)
        })
    }

    /// Cancel files of one job; `None` for a missing job.
    pub fn cancel_files(
        &self,
        job_id: &str,
        wanted: &[Option<u64>],
        now: i64,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let mut out = self.update_jobs(&[job_id.to_string()], |job, files| {
            change::cancel_files(job, files, wanted, now)
        })?;
        Ok(out.pop().flatten())
    }

    /// SUBMITTED → FORCE_START: `None` for a missing file, else whether it moved.
    pub fn force_start(&self, file_id: u64) -> Result<Option<bool>, StoreError> {
        let Some(file) = self.file(file_id)? else {
            return Ok(None);
        };
        let mut out = self.update_jobs(std::slice::from_ref(&file.job_id), |_, files| {
            change::force_start(files, file_id)
        })?;
        // The job vanished between the two reads: the file with it.
        Ok(out.pop().flatten())
    }

    /// Queued (SUBMITTED) files of `vo` from each source towards `dest_se`, in order.
    pub fn queued_counts(
        &self,
        sources: &[String],
        dest_se: &str,
        vo: &str,
    ) -> Result<Vec<u64>, StoreError> {
        sources
            .iter()
            .map(|src| self.count_files(FileState::Submitted, src, dest_se, vo))
            .collect()
    }

    /// Ids of jobs in any of `states` (optionally of one VO), oldest first.
    pub fn job_ids_in_states(
        &self,
        states: &[JobState],
        vo: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(schema::JOBS_BY_STATE)?;
        let jobs = tx.open_table(schema::JOBS)?;
        let mut ids = Vec::new();
        for state in states {
            let s = state.as_str();
            for row in table.range((s, i64::MIN, "")..=(s, i64::MAX, "\u{10FFFF}"))? {
                let id = row?.0.value().2.to_string();
                if let Some(vo) = vo {
                    let Some(v) = jobs.get(id.as_str())? else {
                        continue;
                    };
                    let job: Job = codec::decode(v.value())?;
                    if job.vo_name != vo {
                        continue;
                    }
                }
                ids.push(id);
            }
        }
        Ok(ids)
    }
}

/// [`Redb::update_jobs`] inside a caller's write transaction (for operations that change jobs
/// together with other tables, such as bans).
pub(crate) fn update_jobs_in<R>(
    tx: &WriteTransaction,
    job_ids: &[String],
    mut change: impl FnMut(&mut Job, &mut Vec<File>) -> R,
) -> Result<Vec<Option<R>>, StoreError> {
    let mut results = Vec::with_capacity(job_ids.len());
    let mut jobs = tx.open_table(schema::JOBS)?;
    let mut files_table = tx.open_table(schema::FILES)?;
    let mut indexes = JobIndexes::open(tx)?;
    for id in job_ids {
        let old_job: Job = match jobs.get(id.as_str())? {
            Some(v) => codec::decode(v.value())?,
            None => {
                results.push(None);
                continue;
            }
        };
        let file_ids = indexes.file_ids_of_job(id)?;
        let mut old_files = Vec::with_capacity(file_ids.len());
        for fid in file_ids {
            if let Some(v) = files_table.get(fid)? {
                old_files.push(codec::decode::<File>(v.value())?);
            }
        }
        let mut job = old_job.clone();
        let mut files = old_files.clone();
        let result = change(&mut job, &mut files);
        if job != old_job {
            jobs.insert(id.as_str(), codec::encode(&job).as_slice())?;
            indexes.apply_job(Some(&old_job), Some(&job))?;
        }
        let old_by_id: BTreeMap<u64, &File> = old_files.iter().map(|f| (f.file_id, f)).collect();
        for f in &files {
            match old_by_id.get(&f.file_id) {
                Some(old) if *old == f => {}
                old => {
                    files_table.insert(f.file_id, codec::encode(f).as_slice())?;
                    indexes.apply_file(old.copied(), Some(f))?;
                }
            }
        }
        results.push(Some(result));
    }
    Ok(results)
}

fn read_job(tx: &ReadTransaction, job_id: &str) -> Result<Option<Job>, StoreError> {
    let table = tx.open_table(schema::JOBS)?;
    match table.get(job_id)? {
        Some(v) => Ok(Some(codec::decode(v.value())?)),
        None => Ok(None),
    }
}

fn read_job_files(tx: &ReadTransaction, job_id: &str) -> Result<Vec<File>, StoreError> {
    let by_job = tx.open_table(schema::FILES_BY_JOB)?;
    let files = tx.open_table(schema::FILES)?;
    let mut out = Vec::new();
    for row in by_job.range((job_id, 0u64)..=(job_id, u64::MAX))? {
        let fid = row?.0.value().1;
        if let Some(v) = files.get(fid)? {
            out.push(codec::decode(v.value())?);
        }
    }
    Ok(out)
}

/// Candidate job ids for a listing, newest first, from the most selective index available.
fn candidate_jobs(tx: &ReadTransaction, filter: &JobFilter) -> Result<Vec<String>, StoreError> {
    let mut ids = Vec::new();
    macro_rules! by_key {
        ($table:expr, $key:expr) => {{
            let table = tx.open_table($table)?;
            let key: &str = $key;
            for row in table
                .range((key, i64::MIN, "")..=(key, i64::MAX, "\u{10FFFF}"))?
                .rev()
            {
                ids.push(row?.0.value().2.to_string());
                if ids.len() >= MAX_SCAN {
                    break;
                }
            }
        }};
    }
    if let Some(dlg) = &filter.cred_id {
        by_key!(schema::JOBS_BY_DLG, dlg.as_str());
    } else if let Some(dn) = &filter.user_dn {
        by_key!(schema::JOBS_BY_DN, dn.as_str());
    } else if let (Some(src), Some(dst)) = (&filter.source_se, &filter.dest_se) {
        let table = tx.open_table(schema::JOBS_BY_LINK)?;
        let (s, d) = (src.as_str(), dst.as_str());
        for row in table
            .range((s, d, i64::MIN, "")..=(s, d, i64::MAX, "\u{10FFFF}"))?
            .rev()
        {
            ids.push(row?.0.value().3.to_string());
            if ids.len() >= MAX_SCAN {
                break;
            }
        }
    } else if let Some(vo) = &filter.vo_name {
        by_key!(schema::JOBS_BY_VO, vo.as_str());
    } else if filter.unfinished_only || filter.states.is_some() {
        // By state: the states asked for, or every non-terminal one; merged newest first.
        let states: Vec<JobState> = match &filter.states {
            Some(s) => s.clone(),
            None => JobState::ALL
                .into_iter()
                .filter(|s| !s.is_terminal())
                .collect(),
        };
        let table = tx.open_table(schema::JOBS_BY_STATE)?;
        let mut keyed: Vec<(i64, String)> = Vec::new();
        for state in states {
            let s = state.as_str();
            for row in table
                .range((s, i64::MIN, "")..=(s, i64::MAX, "\u{10FFFF}"))?
                .rev()
            {
                let (key, _) = row?;
                let k = key.value();
                keyed.push((k.1, k.2.to_string()));
                if keyed.len() >= MAX_SCAN {
                    break;
                }
            }
        }
        keyed.sort_by(|a, b| b.cmp(a));
        ids = keyed.into_iter().map(|(_, id)| id).collect();
    } else {
        let table = tx.open_table(schema::JOBS_BY_SUBMIT_TIME)?;
        for row in table.iter()?.rev() {
            ids.push(row?.0.value().1.to_string());
            if ids.len() >= MAX_SCAN {
                break;
            }
        }
    }
    Ok(ids)
}

fn matches(job: &Job, f: &JobFilter) -> bool {
    f.user_dn.as_ref().is_none_or(|v| *v == job.user_dn)
        && f.vo_name.as_ref().is_none_or(|v| *v == job.vo_name)
        && f.cred_id.as_ref().is_none_or(|v| *v == job.cred_id)
        && f.states.as_ref().is_none_or(|s| s.contains(&job.job_state))
        && f.source_se
            .as_ref()
            .is_none_or(|v| Some(v) == job.source_se.as_ref())
        && f.dest_se
            .as_ref()
            .is_none_or(|v| Some(v) == job.dest_se.as_ref())
        && (!f.unfinished_only || job.job_finished.is_none())
        && f.finished_since
            .is_none_or(|t| job.job_finished.is_some_and(|fin| fin >= t))
}

fn file_matches(file: &File, f: &FileFilter) -> bool {
    f.vo_name.as_ref().is_none_or(|v| *v == file.vo_name)
        && f.states
            .as_ref()
            .is_none_or(|s| s.contains(&file.file_state))
        && f.source_se.as_ref().is_none_or(|v| *v == file.source_se)
        && f.dest_se.as_ref().is_none_or(|v| *v == file.dest_se)
        && f.dest_surl.as_ref().is_none_or(|v| *v == file.dest_surl)
        && (!f.unfinished_only || file.finish_time.is_none())
        && f.finished_since
            .is_none_or(|t| file.finish_time.is_some_and(|fin| fin >= t))
}
