//! The only writer of index tables. Every change to an indexed row goes through the `apply_*`
//! function of its table, inside the row's own write transaction, with the old and the new row:
//! entries of the old row are removed, entries of the new row added. [`check`] rebuilds every
//! index from the rows and compares, which tests (and `ftsd` maintenance tooling) use to prove
//! the rule holds.

use std::collections::BTreeSet;

use redb::{ReadTransaction, ReadableMultimapTable, ReadableTable, Table, WriteTransaction};

use super::{StoreError, codec, schema};
use crate::model::job::{File, FileState, Job};

/// Key of an `AUTHZ_DN` row.
pub(crate) struct AuthzKey<'a> {
    pub dn: &'a str,
    pub operation: &'a str,
}

/// Maintain `AUTHZ_DN_BY_OPERATION` for a change of one `AUTHZ_DN` row.
pub(crate) fn apply_authz(
    tx: &WriteTransaction,
    old: Option<&AuthzKey<'_>>,
    new: Option<&AuthzKey<'_>>,
) -> Result<(), StoreError> {
    let mut by_op = tx.open_multimap_table(schema::AUTHZ_DN_BY_OPERATION)?;
    if let Some(old) = old {
        by_op.remove(old.operation, old.dn)?;
    }
    if let Some(new) = new {
        by_op.insert(new.operation, new.dn)?;
    }
    Ok(())
}

/// The job and file index tables of one write transaction, opened once per batch.
pub(crate) struct JobIndexes<'txn> {
    by_state: Table<'txn, (&'static str, i64, &'static str), ()>,
    by_dn: Table<'txn, (&'static str, i64, &'static str), ()>,
    by_vo: Table<'txn, (&'static str, i64, &'static str), ()>,
    by_dlg: Table<'txn, (&'static str, i64, &'static str), ()>,
    by_link: Table<'txn, (&'static str, &'static str, i64, &'static str), ()>,
    by_submit: Table<'txn, (i64, &'static str), ()>,
    by_finished: Table<'txn, (i64, &'static str), ()>,
    files_by_job: Table<'txn, (&'static str, u64), ()>,
    files_by_state: Table<'txn, (&'static str, &'static str, &'static str, &'static str, u64), ()>,
    files_by_dest: Table<'txn, (&'static str, u64), ()>,
    files_by_uuid: Table<'txn, &'static str, u64>,
    files_queued: Table<'txn, (&'static str, &'static str, &'static str, i32, u64), ()>,
    jobs_by_expiry: Table<'txn, (i64, &'static str), ()>,
}

impl<'txn> JobIndexes<'txn> {
    pub(crate) fn open(tx: &'txn WriteTransaction) -> Result<JobIndexes<'txn>, StoreError> {
        Ok(JobIndexes {
            by_state: tx.open_table(schema::JOBS_BY_STATE)?,
            by_dn: tx.open_table(schema::JOBS_BY_DN)?,
            by_vo: tx.open_table(schema::JOBS_BY_VO)?,
            by_dlg: tx.open_table(schema::JOBS_BY_DLG)?,
            by_link: tx.open_table(schema::JOBS_BY_LINK)?,
            by_submit: tx.open_table(schema::JOBS_BY_SUBMIT_TIME)?,
            by_finished: tx.open_table(schema::JOBS_BY_FINISHED)?,
            files_by_job: tx.open_table(schema::FILES_BY_JOB)?,
            files_by_state: tx.open_table(schema::FILES_BY_STATE)?,
            files_by_dest: tx.open_table(schema::FILES_BY_DEST_SURL)?,
            files_by_uuid: tx.open_table(schema::FILES_BY_DEST_UUID)?,
            files_queued: tx.open_table(schema::FILES_QUEUED)?,
            jobs_by_expiry: tx.open_table(schema::JOBS_BY_EXPIRY)?,
        })
    }

    /// Maintain the job indexes for a change of one job row.
    pub(crate) fn apply_job(
        &mut self,
        old: Option<&Job>,
        new: Option<&Job>,
    ) -> Result<(), StoreError> {
        if let Some(j) = old {
            let id = j.job_id.as_str();
            self.by_state
                .remove((j.job_state.as_str(), j.submit_time, id))?;
            self.by_dn.remove((j.user_dn.as_str(), j.submit_time, id))?;
            self.by_vo.remove((j.vo_name.as_str(), j.submit_time, id))?;
            self.by_dlg
                .remove((j.cred_id.as_str(), j.submit_time, id))?;
            self.by_link
                .remove((link(&j.source_se), link(&j.dest_se), j.submit_time, id))?;
            self.by_submit.remove((j.submit_time, id))?;
            if let Some(t) = j.job_finished {
                self.by_finished.remove((t, id))?;
            }
            if let Some(t) = expiry(j) {
                self.jobs_by_expiry.remove((t, id))?;
            }
        }
        if let Some(j) = new {
            let id = j.job_id.as_str();
            self.by_state
                .insert((j.job_state.as_str(), j.submit_time, id), ())?;
            self.by_dn
                .insert((j.user_dn.as_str(), j.submit_time, id), ())?;
            self.by_vo
                .insert((j.vo_name.as_str(), j.submit_time, id), ())?;
            self.by_dlg
                .insert((j.cred_id.as_str(), j.submit_time, id), ())?;
            self.by_link.insert(
                (link(&j.source_se), link(&j.dest_se), j.submit_time, id),
                (),
            )?;
            self.by_submit.insert((j.submit_time, id), ())?;
            if let Some(t) = j.job_finished {
                self.by_finished.insert((t, id), ())?;
            }
            if let Some(t) = expiry(j) {
                self.jobs_by_expiry.insert((t, id), ())?;
            }
        }
        Ok(())
    }

    /// Maintain the file indexes for a change of one file row.
    pub(crate) fn apply_file(
        &mut self,
        old: Option<&File>,
        new: Option<&File>,
    ) -> Result<(), StoreError> {
        if let Some(f) = old {
            self.files_by_job.remove((f.job_id.as_str(), f.file_id))?;
            self.files_by_state.remove(file_state_key(f))?;
            self.files_by_dest
                .remove((f.dest_surl.as_str(), f.file_id))?;
            if let Some(uuid) = &f.dest_surl_uuid {
                self.files_by_uuid.remove(uuid.as_str())?;
            }
            if let Some(key) = queued_key(f) {
                self.files_queued.remove(key)?;
            }
        }
        if let Some(f) = new {
            self.files_by_job
                .insert((f.job_id.as_str(), f.file_id), ())?;
            self.files_by_state.insert(file_state_key(f), ())?;
            self.files_by_dest
                .insert((f.dest_surl.as_str(), f.file_id), ())?;
            if let Some(uuid) = &f.dest_surl_uuid {
                self.files_by_uuid.insert(uuid.as_str(), f.file_id)?;
            }
            if let Some(key) = queued_key(f) {
                self.files_queued.insert(key, ())?;
            }
        }
        Ok(())
    }

    /// The file ids of a job (read through this transaction's handle on the index).
    pub(crate) fn file_ids_of_job(&self, job_id: &str) -> Result<Vec<u64>, StoreError> {
        let mut ids = Vec::new();
        for row in self
            .files_by_job
            .range((job_id, 0u64)..=(job_id, u64::MAX))?
        {
            ids.push(row?.0.value().1);
        }
        Ok(ids)
    }

    /// Is this destination UUID already taken (CheckDuplicates)?
    pub(crate) fn dest_uuid_taken(&self, uuid: &str) -> Result<bool, StoreError> {
        Ok(self.files_by_uuid.get(uuid)?.is_some())
    }
}

fn link(se: &Option<String>) -> &str {
    se.as_deref().unwrap_or("")
}

/// Migration to schema 2: add the engine's index entries of every existing row.
pub(crate) fn fill_engine_indexes(tx: &WriteTransaction) -> Result<(), StoreError> {
    let mut queued = tx.open_table(schema::FILES_QUEUED)?;
    for row in tx.open_table(schema::FILES)?.iter()? {
        let f: File = codec::decode(row?.1.value())?;
        if let Some(key) = queued_key(&f) {
            queued.insert(key, ())?;
        }
    }
    let mut by_expiry = tx.open_table(schema::JOBS_BY_EXPIRY)?;
    for row in tx.open_table(schema::JOBS)?.iter()? {
        let j: Job = codec::decode(row?.1.value())?;
        if let Some(t) = expiry(&j) {
            by_expiry.insert((t, j.job_id.as_str()), ())?;
        }
    }
    Ok(())
}

/// Queue deadline of an unfinished job.
fn expiry(j: &Job) -> Option<i64> {
    j.max_time_in_queue.filter(|_| j.job_finished.is_none())
}

/// The scheduler's queue entry of a SUBMITTED file.
fn queued_key(f: &File) -> Option<(&str, &str, &str, i32, u64)> {
    (f.file_state == FileState::Submitted).then_some((
        f.source_se.as_str(),
        f.dest_se.as_str(),
        f.vo_name.as_str(),
        f.priority.saturating_neg(),
        f.file_id,
    ))
}

fn file_state_key(f: &File) -> (&str, &str, &str, &str, u64) {
    (
        f.file_state.as_str(),
        f.source_se.as_str(),
        f.dest_se.as_str(),
        f.vo_name.as_str(),
        f.file_id,
    )
}

/// Rebuild every index from its rows and compare with what is stored. Returns one line per
/// difference (empty when consistent).
pub fn check(tx: &ReadTransaction) -> Result<Vec<String>, StoreError> {
    let mut problems = Vec::new();

    let rows = tx.open_table(schema::AUTHZ_DN)?;
    let mut expected = BTreeSet::new();
    for row in rows.iter()? {
        let (key, _) = row?;
        let (dn, operation) = key.value();
        expected.insert((operation.to_string(), dn.to_string()));
    }
    let index = tx.open_multimap_table(schema::AUTHZ_DN_BY_OPERATION)?;
    let mut actual = BTreeSet::new();
    for entry in index.iter()? {
        let (operation, dns) = entry?;
        for dn in dns {
            actual.insert((operation.value().to_string(), dn?.value().to_string()));
        }
    }
    compare("authz_dn_by_operation", &expected, &actual, &mut problems);
    check_jobs(tx, &mut problems)?;
    Ok(problems)
}

type Set = BTreeSet<Vec<String>>;

/// Read every key of an index table as a list of strings.
macro_rules! index_keys {
    ($tx:expr, $table:expr, |$k:ident| $to_vec:expr) => {{
        let mut set = Set::new();
        for row in $tx.open_table($table)?.iter()? {
            let (key, _) = row?;
            let $k = key.value();
            set.insert($to_vec);
        }
        set
    }};
}

fn check_jobs(tx: &ReadTransaction, problems: &mut Vec<String>) -> Result<(), StoreError> {
    let s = |x: &str| x.to_string();
    let n = |x: i64| x.to_string();
    let mut want: [Set; 8] = Default::default();
    for row in tx.open_table(schema::JOBS)?.iter()? {
        let (_, value) = row?;
        let j: Job = codec::decode(value.value())?;
        let id = j.job_id.clone();
        let t = n(j.submit_time);
        want[0].insert(vec![s(j.job_state.as_str()), t.clone(), id.clone()]);
        want[1].insert(vec![j.user_dn.clone(), t.clone(), id.clone()]);
        want[2].insert(vec![j.vo_name.clone(), t.clone(), id.clone()]);
        want[3].insert(vec![j.cred_id.clone(), t.clone(), id.clone()]);
        want[4].insert(vec![
            s(link(&j.source_se)),
            s(link(&j.dest_se)),
            t.clone(),
            id.clone(),
        ]);
        want[5].insert(vec![t, id.clone()]);
        if let Some(f) = j.job_finished {
            want[6].insert(vec![n(f), id.clone()]);
        }
        if let Some(t) = expiry(&j) {
            want[7].insert(vec![n(t), id]);
        }
    }
    let have: [Set; 8] = [
        index_keys!(tx, schema::JOBS_BY_STATE, |k| vec![s(k.0), n(k.1), s(k.2)]),
        index_keys!(tx, schema::JOBS_BY_DN, |k| vec![s(k.0), n(k.1), s(k.2)]),
        index_keys!(tx, schema::JOBS_BY_VO, |k| vec![s(k.0), n(k.1), s(k.2)]),
        index_keys!(tx, schema::JOBS_BY_DLG, |k| vec![s(k.0), n(k.1), s(k.2)]),
        index_keys!(tx, schema::JOBS_BY_LINK, |k| vec![
            s(k.0),
            s(k.1),
            n(k.2),
            s(k.3)
        ]),
        index_keys!(tx, schema::JOBS_BY_SUBMIT_TIME, |k| vec![n(k.0), s(k.1)]),
        index_keys!(tx, schema::JOBS_BY_FINISHED, |k| vec![n(k.0), s(k.1)]),
        index_keys!(tx, schema::JOBS_BY_EXPIRY, |k| vec![n(k.0), s(k.1)]),
    ];
    let names = [
        "jobs_by_state",
        "jobs_by_dn",
        "jobs_by_vo",
        "jobs_by_dlg",
        "jobs_by_link",
        "jobs_by_submit_time",
        "jobs_by_finished",
        "jobs_by_expiry",
    ];
    for i in 0..8 {
        compare(names[i], &want[i], &have[i], problems);
    }

    let u = |x: u64| x.to_string();
    let mut want: [Set; 5] = Default::default();
    for row in tx.open_table(schema::FILES)?.iter()? {
        let (_, value) = row?;
        let f: File = codec::decode(value.value())?;
        let id = u(f.file_id);
        want[0].insert(vec![f.job_id.clone(), id.clone()]);
        want[1].insert(vec![
            s(f.file_state.as_str()),
            f.source_se.clone(),
            f.dest_se.clone(),
            f.vo_name.clone(),
            id.clone(),
        ]);
        want[2].insert(vec![f.dest_surl.clone(), id.clone()]);
        if let Some(uuid) = &f.dest_surl_uuid {
            want[3].insert(vec![uuid.clone(), id.clone()]);
        }
        if let Some(k) = queued_key(&f) {
            want[4].insert(vec![s(k.0), s(k.1), s(k.2), k.3.to_string(), id]);
        }
    }
    let mut by_uuid = Set::new();
    for row in tx.open_table(schema::FILES_BY_DEST_UUID)?.iter()? {
        let (k, v) = row?;
        by_uuid.insert(vec![k.value().to_string(), u(v.value())]);
    }
    let have: [Set; 5] = [
        index_keys!(tx, schema::FILES_BY_JOB, |k| vec![s(k.0), u(k.1)]),
        index_keys!(tx, schema::FILES_BY_STATE, |k| vec![
            s(k.0),
            s(k.1),
            s(k.2),
            s(k.3),
            u(k.4)
        ]),
        index_keys!(tx, schema::FILES_BY_DEST_SURL, |k| vec![s(k.0), u(k.1)]),
        by_uuid,
        index_keys!(tx, schema::FILES_QUEUED, |k| vec![
            s(k.0),
            s(k.1),
            s(k.2),
            k.3.to_string(),
            u(k.4)
        ]),
    ];
    let names = [
        "files_by_job",
        "files_by_state",
        "files_by_dest_surl",
        "files_by_dest_uuid",
        "files_queued",
    ];
    for i in 0..5 {
        compare(names[i], &want[i], &have[i], problems);
    }
    Ok(())
}

fn compare<T: std::fmt::Debug + Ord>(
    index: &str,
    expected: &BTreeSet<T>,
    actual: &BTreeSet<T>,
    problems: &mut Vec<String>,
) {
    for missing in expected.difference(actual) {
        problems.push(format!("{index}: missing entry {missing:?}"));
    }
    for stale in actual.difference(expected) {
        problems.push(format!("{index}: stale entry {stale:?}"));
    }
}
