//! The only writer of index tables. Every change to an indexed row goes through the `apply_*`
//! function of its table, inside the row's own write transaction, with the old and the new row:
//! entries of the old row are removed, entries of the new row added. [`check`] rebuilds every
//! index from the rows and compares, which tests (and `ftsd` maintenance tooling) use to prove
//! the rule holds.

use std::collections::{BTreeMap, BTreeSet};

use redb::{ReadTransaction, ReadableMultimapTable, ReadableTable, Table, WriteTransaction};

use super::{StoreError, codec, schema};
use crate::model::{
    job::{File, FileState, Job},
    optimizer::NO_HOST,
};

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
    pair_counts: Table<'txn, (&'static str, &'static str, &'static str), u64>,
    minute_stats: Table<'txn, (&'static str, &'static str, &'static str, i64), Counters>,
    minute_errors: Table<'txn, (&'static str, &'static str, &'static str, i64, &'static str), u64>,
    minute_optimizer: Table<'txn, (&'static str, &'static str, &'static str, i64), OptCounters>,
    host_activity: Table<'txn, (&'static str, &'static str), u64>,
}

use schema::MinuteCounters as Counters;
use schema::OptimizerCounters as OptCounters;

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
            pair_counts: tx.open_table(schema::FILE_COUNT_BY_PAIR)?,
            minute_stats: tx.open_table(schema::LINK_MINUTE_STATS)?,
            minute_errors: tx.open_table(schema::LINK_MINUTE_ERRORS)?,
            minute_optimizer: tx.open_table(schema::LINK_MINUTE_OPTIMIZER)?,
            host_activity: tx.open_table(schema::HOST_ACTIVITY)?,
        })
    }

    /// Maintain the job indexes for a change of one job row.
    pub(crate) fn apply_job(
        &mut self,
        old: Option<&Job>,
        new: Option<&Job>,
    ) -> Result<(), StoreError> {
        super::aggregates::note_job(old, new);
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
        super::aggregates::note_file(old, new);
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
        self.apply_file_counters(old, new)?;
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

    /// Maintain the counters derived from files (pairs, per-minute terminal statistics and
    /// errors, host activity). A contribution that is the same before and after is left alone,
    /// so most state changes touch only the counters they move.
    fn apply_file_counters(
        &mut self,
        old: Option<&File>,
        new: Option<&File>,
    ) -> Result<(), StoreError> {
        let pair = |f: &File| (f.source_se.clone(), f.dest_se.clone(), f.vo_name.clone());
        let (old_pair, new_pair) = (old.map(pair), new.map(pair));
        if old_pair != new_pair {
            if let Some((s, d, v)) = &old_pair {
                bump(
                    &mut self.pair_counts,
                    (s.as_str(), d.as_str(), v.as_str()),
                    -1,
                )?;
            }
            if let Some((s, d, v)) = &new_pair {
                bump(
                    &mut self.pair_counts,
                    (s.as_str(), d.as_str(), v.as_str()),
                    1,
                )?;
            }
        }

        let (old_t, new_t) = (old.and_then(terminal), new.and_then(terminal));
        if old_t != new_t {
            if let Some(t) = &old_t {
                self.apply_terminal(t, false)?;
            }
            if let Some(t) = &new_t {
                self.apply_terminal(t, true)?;
            }
        }

        let (old_o, new_o) = (
            old.and_then(optimizer_sample),
            new.and_then(optimizer_sample),
        );
        if old_o != new_o {
            if let Some(o) = &old_o {
                self.apply_optimizer_sample(o, false)?;
            }
            if let Some(o) = &new_o {
                self.apply_optimizer_sample(o, true)?;
            }
        }

        let (old_h, new_h) = (old.and_then(host_work), new.and_then(host_work));
        if old_h != new_h {
            if let Some((host, kind)) = old_h {
                bump(&mut self.host_activity, (host, kind), -1)?;
            }
            if let Some((host, kind)) = new_h {
                bump(&mut self.host_activity, (host, kind), 1)?;
            }
        }
        Ok(())
    }

    /// Count an existing file in the file-derived counters (migration of a database written
    /// before the counters existed).
    pub(crate) fn backfill_file_counters(&mut self, file: &File) -> Result<(), StoreError> {
        self.apply_file_counters(None, Some(file))
    }

    /// Count an existing file in the optimizer's counters only (migration from schema 2).
    pub(crate) fn backfill_optimizer_counters(&mut self, file: &File) -> Result<(), StoreError> {
        match optimizer_sample(file) {
            Some(o) => self.apply_optimizer_sample(&o, true),
            None => Ok(()),
        }
    }

    fn apply_optimizer_sample(&mut self, o: &Sample<'_>, add: bool) -> Result<(), StoreError> {
        let key = (o.source_se, o.dest_se, o.vo_name, o.minute);
        let current = self
            .minute_optimizer
            .get(key)?
            .map(|v| v.value())
            .unwrap_or_default();
        let next = combine_opt(current, o.counters, add);
        if next == OptCounters::default() {
            self.minute_optimizer.remove(key)?;
        } else {
            self.minute_optimizer.insert(key, next)?;
        }
        Ok(())
    }

    fn apply_terminal(&mut self, t: &Terminal<'_>, add: bool) -> Result<(), StoreError> {
        let key = (t.source_se, t.dest_se, t.vo_name, t.minute);
        let current = self
            .minute_stats
            .get(key)?
            .map(|v| v.value())
            .unwrap_or_default();
        let next = combine(current, t.counters, add);
        if next == Counters::default() {
            self.minute_stats.remove(key)?;
        } else {
            self.minute_stats.insert(key, next)?;
        }
        if let Some(reason) = t.error {
            let key = (t.source_se, t.dest_se, t.vo_name, t.minute, reason);
            bump(&mut self.minute_errors, key, if add { 1 } else { -1 })?;
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

/// Add `delta` to a counter; a counter that reaches zero is removed, so the tables hold only
/// what exists.
fn bump<K: redb::Key + 'static>(
    table: &mut Table<'_, K, u64>,
    key: K::SelfType<'_>,
    delta: i64,
) -> Result<(), StoreError>
where
    for<'a> K::SelfType<'a>: Clone,
{
    let current = table.get(key.clone())?.map(|v| v.value()).unwrap_or(0);
    let next = current.saturating_add_signed(delta);
    if next == 0 {
        table.remove(key)?;
    } else {
        table.insert(key, next)?;
    }
    Ok(())
}

/// What a terminal file adds to the per-minute counters of its link.
#[derive(Debug, Clone, PartialEq)]
struct Terminal<'a> {
    source_se: &'a str,
    dest_se: &'a str,
    vo_name: &'a str,
    minute: i64,
    counters: Counters,
    /// The reason of a FAILED file (empty when it has none).
    error: Option<&'a str>,
}

/// Fixed-point scale of throughput sums (thousandths).
pub(crate) const THROUGHPUT_SCALE: f64 = 1000.0;
/// Fixed-point scale of duration sums (milliseconds).
pub(crate) const DURATION_SCALE: f64 = 1000.0;

/// A non-negative measurement in fixed point (negative or non-finite values are not data).
fn fixed(value: Option<f64>, scale: f64) -> Option<u64> {
    let v = value?;
    // `as` saturates for huge values; the guard leaves out NaN and negatives.
    (v.is_finite() && v >= 0.0).then(|| (v * scale).round() as u64)
}

/// The start (unix seconds) of the minute `t` falls in.
pub(crate) fn minute_of(t: i64) -> i64 {
    t.div_euclid(60) * 60
}

fn terminal(f: &File) -> Option<Terminal<'_>> {
    let finish = f.finish_time?;
    let (counters, error) = match f.file_state {
        FileState::Finished => {
            let thr = fixed(f.throughput, THROUGHPUT_SCALE);
            let dur = fixed(f.tx_duration, DURATION_SCALE);
            (
                (
                    1,
                    0,
                    thr.unwrap_or(0),
                    u64::from(thr.is_some()),
                    dur.unwrap_or(0),
                    u64::from(dur.is_some()),
                ),
                None,
            )
        }
        FileState::Failed => ((0, 1, 0, 0, 0, 0), Some(f.reason.as_deref().unwrap_or(""))),
        _ => return None,
    };
    Some(Terminal {
        source_se: &f.source_se,
        dest_se: &f.dest_se,
        vo_name: &f.vo_name,
        minute: minute_of(finish),
        counters,
        error,
    })
}

fn combine(a: Counters, b: Counters, add: bool) -> Counters {
    let op = |x: u64, y: u64| {
        if add {
            x.saturating_add(y)
        } else {
            x.saturating_sub(y)
        }
    };
    (
        op(a.0, b.0),
        op(a.1, b.1),
        op(a.2, b.2),
        op(a.3, b.3),
        op(a.4, b.4),
        op(a.5, b.5),
    )
}

/// What a file adds to the optimizer's per-minute counters of its link.
#[derive(Debug, Clone, PartialEq)]
struct Sample<'a> {
    source_se: &'a str,
    dest_se: &'a str,
    vo_name: &'a str,
    minute: i64,
    counters: OptCounters,
}

fn optimizer_sample(f: &File) -> Option<Sample<'_>> {
    let (time, counters) = match f.file_state {
        FileState::Finished | FileState::Archiving => {
            let size = f.filesize.unwrap_or(0);
            let sized = u64::from(size > 0);
            (
                f.finish_time?,
                (1, 0, 0, sized, size, u128::from(size) * u128::from(size)),
            )
        }
        FileState::Failed if f.current_failures > 0 => (f.finish_time?, (0, 1, 0, 0, 0, 0)),
        FileState::Submitted if f.retry > 0 => {
            (f.retry_timestamp?, (0, 1, u64::from(f.retry), 0, 0, 0))
        }
        _ => return None,
    };
    Some(Sample {
        source_se: &f.source_se,
        dest_se: &f.dest_se,
        vo_name: &f.vo_name,
        minute: minute_of(time),
        counters,
    })
}

fn combine_opt(a: OptCounters, b: OptCounters, add: bool) -> OptCounters {
    let op = |x: u64, y: u64| {
        if add {
            x.saturating_add(y)
        } else {
            x.saturating_sub(y)
        }
    };
    let sq = if add {
        a.5.saturating_add(b.5)
    } else {
        a.5.saturating_sub(b.5)
    };
    (
        op(a.0, b.0),
        op(a.1, b.1),
        op(a.2, b.2),
        op(a.3, b.3),
        op(a.4, b.4),
        sq,
    )
}

/// The host activity a file counts in: ACTIVE by transfer host, STARTED by staging host.
fn host_work(f: &File) -> Option<(&str, &'static str)> {
    match f.file_state {
        FileState::Active => Some((f.transfer_host.as_deref().unwrap_or(NO_HOST), "active")),
        FileState::Started => Some((f.staging_host.as_deref().unwrap_or(NO_HOST), "staging")),
        _ => None,
    }
}

/// Maintain `OPTIMIZER_EVOLUTION_BY_TIME` for a change of one `OPTIMIZER_EVOLUTION` row, given
/// by its key `(source_se, dest_se, datetime, seq)`.
pub(crate) fn apply_evolution(
    tx: &WriteTransaction,
    old: Option<(&str, &str, i64, u64)>,
    new: Option<(&str, &str, i64, u64)>,
) -> Result<(), StoreError> {
    let mut by_time = tx.open_table(schema::OPTIMIZER_EVOLUTION_BY_TIME)?;
    if let Some((s, d, t, seq)) = old {
        by_time.remove((t, seq, s, d))?;
    }
    if let Some((s, d, t, seq)) = new {
        by_time.insert((t, seq, s, d), ())?;
    }
    Ok(())
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
    check_file_counters(tx, problems)?;
    check_evolution(tx, problems)
}

/// Rebuild the file-derived counters from the file rows and compare (keys and values).
fn check_file_counters(tx: &ReadTransaction, problems: &mut Vec<String>) -> Result<(), StoreError> {
    let mut pairs: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    let mut stats: BTreeMap<(String, String, String, i64), Counters> = BTreeMap::new();
    let mut errors: BTreeMap<(String, String, String, i64, String), u64> = BTreeMap::new();
    let mut hosts: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut opt: BTreeMap<(String, String, String, i64), OptCounters> = BTreeMap::new();
    for row in tx.open_table(schema::FILES)?.iter()? {
        let (_, value) = row?;
        let f: File = codec::decode(value.value())?;
        *pairs
            .entry((f.source_se.clone(), f.dest_se.clone(), f.vo_name.clone()))
            .or_default() += 1;
        if let Some(t) = terminal(&f) {
            let key = (s(t.source_se), s(t.dest_se), s(t.vo_name), t.minute);
            let entry = stats.entry(key).or_default();
            *entry = combine(*entry, t.counters, true);
            if let Some(reason) = t.error {
                let key = (
                    s(t.source_se),
                    s(t.dest_se),
                    s(t.vo_name),
                    t.minute,
                    s(reason),
                );
                *errors.entry(key).or_default() += 1;
            }
        }
        if let Some((host, kind)) = host_work(&f) {
            *hosts.entry((s(host), s(kind))).or_default() += 1;
        }
        if let Some(o) = optimizer_sample(&f) {
            let key = (s(o.source_se), s(o.dest_se), s(o.vo_name), o.minute);
            let entry = opt.entry(key).or_default();
            *entry = combine_opt(*entry, o.counters, true);
        }
    }
    let mut have_opt = BTreeMap::new();
    for row in tx.open_table(schema::LINK_MINUTE_OPTIMIZER)?.iter()? {
        let (k, v) = row?;
        let (a, b, c, m) = k.value();
        have_opt.insert((s(a), s(b), s(c), m), v.value());
    }
    compare_map("link_minute_optimizer", &opt, &have_opt, problems);
    let mut have_pairs = BTreeMap::new();
    for row in tx.open_table(schema::FILE_COUNT_BY_PAIR)?.iter()? {
        let (k, v) = row?;
        let (a, b, c) = k.value();
        have_pairs.insert((s(a), s(b), s(c)), v.value());
    }
    let mut have_stats = BTreeMap::new();
    for row in tx.open_table(schema::LINK_MINUTE_STATS)?.iter()? {
        let (k, v) = row?;
        let (a, b, c, m) = k.value();
        have_stats.insert((s(a), s(b), s(c), m), v.value());
    }
    let mut have_errors = BTreeMap::new();
    for row in tx.open_table(schema::LINK_MINUTE_ERRORS)?.iter()? {
        let (k, v) = row?;
        let (a, b, c, m, r) = k.value();
        have_errors.insert((s(a), s(b), s(c), m, s(r)), v.value());
    }
    let mut have_hosts = BTreeMap::new();
    for row in tx.open_table(schema::HOST_ACTIVITY)?.iter()? {
        let (k, v) = row?;
        let (h, kind) = k.value();
        have_hosts.insert((s(h), s(kind)), v.value());
    }
    compare_map("file_count_by_pair", &pairs, &have_pairs, problems);
    compare_map("link_minute_stats", &stats, &have_stats, problems);
    compare_map("link_minute_errors", &errors, &have_errors, problems);
    compare_map("host_activity", &hosts, &have_hosts, problems);
    Ok(())
}

fn check_evolution(tx: &ReadTransaction, problems: &mut Vec<String>) -> Result<(), StoreError> {
    let mut want = BTreeSet::new();
    for row in tx.open_table(schema::OPTIMIZER_EVOLUTION)?.iter()? {
        let (k, _) = row?;
        let (src, dst, t, seq) = k.value();
        want.insert((t, seq, s(src), s(dst)));
    }
    let mut have = BTreeSet::new();
    for row in tx.open_table(schema::OPTIMIZER_EVOLUTION_BY_TIME)?.iter()? {
        let (k, _) = row?;
        let (t, seq, src, dst) = k.value();
        have.insert((t, seq, s(src), s(dst)));
    }
    compare("optimizer_evolution_by_time", &want, &have, problems);
    Ok(())
}

fn s(x: &str) -> String {
    x.to_string()
}

fn compare_map<K: std::fmt::Debug + Ord, V: std::fmt::Debug + PartialEq>(
    index: &str,
    expected: &BTreeMap<K, V>,
    actual: &BTreeMap<K, V>,
    problems: &mut Vec<String>,
) {
    for (k, v) in expected {
        match actual.get(k) {
            None => problems.push(format!("{index}: missing entry {k:?}")),
            Some(a) if a != v => problems.push(format!("{index}: {k:?} is {a:?}, expected {v:?}")),
            Some(_) => {}
        }
    }
    for k in actual.keys().filter(|k| !expected.contains_key(k)) {
        problems.push(format!("{index}: stale entry {k:?}"));
    }
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
