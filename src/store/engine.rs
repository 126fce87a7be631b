//! The transfer engine's operations on jobs and files: queue discovery and selection through
//! `files_queued_v1`, claims (compare-and-swap of the file state, like the reference's guarded
//! updates), batches of transfer events applied in one durable transaction with the job-state
//! derivation, retries with their history, restart recovery and queue timeouts.
//!
//! Every function here goes through the model's transition methods, so a late or duplicate
//! event finds the file elsewhere and changes nothing.

use std::collections::{BTreeMap, HashMap};

use redb::{ReadableDatabase, ReadableTable, WriteTransaction};

use super::{Redb, StoreError, codec, jobs::update_jobs_in, schema};
use crate::model::{
    config::{ANY, EffectiveServerConfig, ServerConfig},
    job::{File, FileState, Job, JobState, JobType},
    lifecycle::{self, Recovered},
    transfer::{Applied, Claim, Event, Outcome, QueueKey, RetryRow},
};

impl codec::Record for RetryRow {
    const NAME: &'static str = "file retry";
    const VERSION: u8 = 1;
}

/// Per-VO settings the engine needs inside a transaction.
pub(crate) trait VoSettings {
    /// Default retry count of the VO (`t_server_config.retry`).
    fn retry(&self, vo: &str) -> i64;
}

impl<F: Fn(&str) -> i64> VoSettings for F {
    fn retry(&self, vo: &str) -> i64 {
        self(vo)
    }
}

/// Every VO's server settings (the table holds one row per configured VO).
fn server_configs_in(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<HashMap<String, ServerConfig>, StoreError> {
    let mut out = HashMap::new();
    for row in table.iter()? {
        let row: ServerConfig = codec::decode(row?.1.value())?;
        out.insert(row.vo_name.clone(), row);
    }
    Ok(out)
}

/// The settings of `vo` as the engine applies them (its row, then `*`, then defaults).
fn effective(configs: &HashMap<String, ServerConfig>, vo: &str) -> EffectiveServerConfig {
    EffectiveServerConfig::resolve(configs.get(vo), configs.get(ANY))
}

impl Redb {
    /// Every (link, VO) with queued (SUBMITTED) files. One index seek per queue, not per file.
    pub fn submitted_queues(&self) -> Result<Vec<QueueKey>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(schema::FILES_QUEUED)?;
        let mut out = Vec::new();
        let mut range = table.range::<(&str, &str, &str, i32, u64)>(..)?;
        while let Some(row) = range.next() {
            let key = row?.0;
            let (s, d, v, _, _) = key.value();
            let q = QueueKey {
                source_se: s.to_string(),
                dest_se: d.to_string(),
                vo_name: v.to_string(),
            };
            // Skip the rest of this queue.
            range = table.range((
                std::ops::Bound::Excluded((
                    q.source_se.as_str(),
                    q.dest_se.as_str(),
                    q.vo_name.as_str(),
                    i32::MAX,
                    u64::MAX,
                )),
                std::ops::Bound::Unbounded,
            ))?;
            out.push(q);
        }
        Ok(out)
    }

    /// Up to `limit` files of a queue that may start now: only its highest priority (strict
    /// priority, as the reference), oldest first, skipping retries whose delay has not passed
    /// and files of session-reuse jobs (`reuse` true selects only those instead). Each file
    /// comes with its job.
    pub fn queue_candidates(
        &self,
        queue: &QueueKey,
        limit: usize,
        now: i64,
        reuse: bool,
    ) -> Result<Vec<(Job, File)>, StoreError> {
        let tx = self.db.begin_read()?;
        let index = tx.open_table(schema::FILES_QUEUED)?;
        let files = tx.open_table(schema::FILES)?;
        let jobs = tx.open_table(schema::JOBS)?;
        let (s, d, v) = (
            queue.source_se.as_str(),
            queue.dest_se.as_str(),
            queue.vo_name.as_str(),
        );
        let mut job_cache: HashMap<String, Job> = HashMap::new();
        let mut out = Vec::new();
        let mut top_priority = None;
        let mut seen = 0usize;
        for row in index.range((s, d, v, i32::MIN, 0u64)..=(s, d, v, i32::MAX, u64::MAX))? {
            let (neg_priority, file_id) = {
                let k = row?.0;
                let k = k.value();
                (k.3, k.4)
            };
            if *top_priority.get_or_insert(neg_priority) != neg_priority || out.len() >= limit {
                break;
            }
            seen += 1;
            if seen > super::jobs::MAX_SCAN {
                break;
            }
            let Some(value) = files.get(file_id)? else {
                continue;
            };
            let file: File = codec::decode(value.value())?;
            if file.retry_timestamp.is_some_and(|t| t > now) {
                continue;
            }
            let job = match job_cache.get(&file.job_id) {
                Some(j) => j.clone(),
                None => {
                    let Some(value) = jobs.get(file.job_id.as_str())? else {
                        continue;
                    };
                    let j: Job = codec::decode(value.value())?;
                    job_cache.insert(j.job_id.clone(), j.clone());
                    j
                }
            };
            if (job.job_type == JobType::SessionReuse) != reuse {
                continue;
            }
            out.push((job, file));
        }
        Ok(out)
    }

    /// Files waiting for bring-online (STAGING), oldest first, at most `limit`.
    pub fn staging_candidates(&self, limit: usize) -> Result<Vec<(Job, File)>, StoreError> {
        self.files_in_state(FileState::Staging, limit)
    }

    /// Files in `state`, oldest first, at most `limit`, with their jobs.
    pub fn files_in_state(
        &self,
        state: FileState,
        limit: usize,
    ) -> Result<Vec<(Job, File)>, StoreError> {
        let tx = self.db.begin_read()?;
        let index = tx.open_table(schema::FILES_BY_STATE)?;
        let files = tx.open_table(schema::FILES)?;
        let jobs = tx.open_table(schema::JOBS)?;
        let st = state.as_str();
        let mut ids = Vec::new();
        for row in index.range((st, "", "", "", 0u64)..)? {
            let k = row?.0;
            let k = k.value();
            if k.0 != st {
                break;
            }
            ids.push(k.4);
        }
        ids.sort_unstable();
        let mut out = Vec::new();
        for id in ids.into_iter().take(limit) {
            let Some(value) = files.get(id)? else {
                continue;
            };
            let file: File = codec::decode(value.value())?;
            let Some(value) = jobs.get(file.job_id.as_str())? else {
                continue;
            };
            out.push((codec::decode(value.value())?, file));
        }
        Ok(out)
    }

    /// Claim files for transfer (SUBMITTED/FORCE_START → READY) or for staging (STAGING →
    /// STARTED) in one transaction. Returns the files won, with their jobs as updated; a file
    /// that moved meanwhile is left out.
    ///
    /// `claim.caps` are not checked again: this store belongs to one process, whose single
    /// scheduler dealt the claim within them.
    pub fn claim(&self, claim: &Claim) -> Result<Vec<(Job, File)>, StoreError> {
        let (file_ids, host, now) = (claim.file_ids.as_slice(), claim.host.as_str(), claim.now);
        self.write(|tx| {
            let by_job = group_by_job(tx, file_ids)?;
            let job_ids: Vec<String> = by_job.keys().cloned().collect();
            let mut won = Vec::new();
            update_jobs_in(tx, &job_ids, |job, files| {
                let wanted = &by_job[&job.job_id];
                let mut claimed = Vec::new();
                let mut staging = false;
                for f in files.iter_mut().filter(|f| wanted.contains(&f.file_id)) {
                    let ok = match f.file_state {
                        FileState::Staging => {
                            staging = true;
                            f.start_staging(now, host)
                        }
                        _ => f.claim(now, host),
                    };
                    if ok {
                        claimed.push(f.file_id);
                    }
                }
                if !claimed.is_empty() {
                    let hint = if staging {
                        FileState::Started
                    } else {
                        FileState::Active
                    };
                    lifecycle::derive_job_state(job, files, hint, now);
                    for f in files.iter().filter(|f| claimed.contains(&f.file_id)) {
                        won.push((job.clone(), f.clone()));
                    }
                }
            })?;
            Ok(won)
        })
    }

    /// Apply a batch of engine events in one durable transaction.
    /// The VO's retry setting is read in the same transaction.
    pub fn apply_events(
        &self,
        events: &[Event],
        host: &str,
        now: i64,
    ) -> Result<Vec<Applied>, StoreError> {
        self.write(|tx| {
            let configs = server_configs_in(&tx.open_table(schema::SERVER_CONFIG)?)?;
            let retry = |vo: &str| effective(&configs, vo).retry;
            apply_events_in(tx, events, host, now, &retry)
        })
    }

    /// Current states of files (None for a missing file).
    pub fn file_states(&self, ids: &[u64]) -> Result<Vec<(u64, Option<FileState>)>, StoreError> {
        let tx = self.db.begin_read()?;
        let files = tx.open_table(schema::FILES)?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let state = match files.get(*id)? {
                Some(v) => Some(codec::decode::<File>(v.value())?.file_state),
                None => None,
            };
            out.push((*id, state));
        }
        Ok(out)
    }

    /// The retried attempts of a file, oldest first.
    pub fn file_retries(&self, file_id: u64) -> Result<Vec<RetryRow>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(schema::FILE_RETRIES)?;
        let mut out = Vec::new();
        for row in table.range((file_id, 0u32)..=(file_id, u32::MAX))? {
            out.push(codec::decode(row?.1.value())?);
        }
        Ok(out)
    }

    /// Jobs whose `max_time_in_queue` passed: their waiting files are canceled (running
    /// transfers are left alone, as the reference). Returns the ids of jobs changed.
    pub fn expire_queued(&self, now: i64) -> Result<Vec<String>, StoreError> {
        let expired: Vec<String> = {
            let tx = self.db.begin_read()?;
            let table = tx.open_table(schema::JOBS_BY_EXPIRY)?;
            let mut ids = Vec::new();
            for row in table.range((i64::MIN, "")..(now, ""))? {
                ids.push(row?.0.value().1.to_string());
                if ids.len() >= MAX_EXPIRE_BATCH {
                    break;
                }
            }
            ids
        };
        if expired.is_empty() {
            return Ok(Vec::new());
        }
        self.cancel_waiting(&expired, lifecycle::QUEUE_TIMEOUT_REASON, now, |job| {
            matches!(
                job.job_state,
                JobState::Submitted | JobState::Active | JobState::Staging
            ) && job.max_time_in_queue.is_some_and(|t| t < now)
        })
    }

    /// The global queue timeout (`/config/global` `max_time_queue`, hours, of the VO's row or
    /// `*`): jobs SUBMITTED or STAGING for longer are canceled. Returns the ids changed.
    pub fn expire_global(&self, now: i64) -> Result<Vec<String>, StoreError> {
        // No VO can time out sooner than an hour after submission.
        let cutoff = now - 3600;
        let (candidates, configs) = {
            let tx = self.db.begin_read()?;
            let configs = server_configs_in(&tx.open_table(schema::SERVER_CONFIG)?)?;
            let table = tx.open_table(schema::JOBS_BY_STATE)?;
            let mut ids = Vec::new();
            for state in [JobState::Submitted, JobState::Staging] {
                let s = state.as_str();
                for row in table.range((s, i64::MIN, "")..(s, cutoff, ""))? {
                    ids.push(row?.0.value().2.to_string());
                    if ids.len() >= MAX_EXPIRE_BATCH {
                        break;
                    }
                }
            }
            (ids, configs)
        };
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let expired = |vo: &str, submit_time: i64| {
            let hours = effective(&configs, vo).max_time_queue;
            hours > 0 && submit_time < now - hours * 3600
        };
        self.cancel_waiting(
            &candidates,
            lifecycle::GLOBAL_QUEUE_TIMEOUT_REASON,
            now,
            |job| {
                matches!(job.job_state, JobState::Submitted | JobState::Staging)
                    && job.submit_time < cutoff
                    && expired(&job.vo_name, job.submit_time)
            },
        )
    }

    fn cancel_waiting(
        &self,
        job_ids: &[String],
        reason: &str,
        now: i64,
        mut eligible: impl FnMut(&Job) -> bool,
    ) -> Result<Vec<String>, StoreError> {
        self.write(|tx| {
            let mut changed = Vec::new();
            update_jobs_in(tx, job_ids, |job, files| {
                if !eligible(job) {
                    return;
                }
                let multihop = job.job_type == JobType::Multihop;
                let mut any = false;
                for f in files.iter_mut() {
                    let waiting = match f.file_state {
                        FileState::Submitted
                        | FileState::Staging
                        | FileState::OnHold
                        | FileState::OnHoldStaging => true,
                        FileState::NotUsed => !multihop,
                        _ => false,
                    };
                    if waiting {
                        f.file_state = FileState::Canceled;
                        f.reason = Some(reason.to_string());
                        f.finish_time = Some(now);
                        f.dest_surl_uuid = None;
                        any = true;
                    }
                }
                if any {
                    job.reason = Some(reason.to_string());
                    lifecycle::derive_job_state(job, files, FileState::Canceled, now);
                    if !job.job_state.is_terminal() {
                        // Running transfers finish later; the reason applies to the job's end.
                        job.reason = None;
                    }
                    changed.push(job.job_id.clone());
                }
            })?;
            Ok(changed)
        })
    }

    /// Restart recovery. Files left READY/ACTIVE (the service died while their transfer ran)
    /// go back to the queue without counting an attempt, as on a graceful stop, unless this is
    /// their [`lifecycle::MAX_INTERRUPTIONS`]-th interruption: then they fail with
    /// [`lifecycle::POISON_REASON`]. STARTED staging whose request the storage never accepted
    /// (no `bringonline_token`) goes back to STAGING (with a token it stays STARTED: the engine
    /// polls it again). Returns one entry per file touched.
    /// This store belongs to one process: every READY/ACTIVE file was its own, whatever host
    /// name it ran under.
    pub fn recover_interrupted(&self, now: i64) -> Result<Vec<Applied>, StoreError> {
        let mut running = Vec::new();
        for state in [FileState::Ready, FileState::Active] {
            running.extend(
                self.files_in_state(state, usize::MAX)?
                    .into_iter()
                    .map(|(_, f)| f.file_id),
            );
        }
        let started: Vec<u64> = self
            .files_in_state(FileState::Started, usize::MAX)?
            .into_iter()
            .map(|(_, f)| f.file_id)
            .collect();
        let mut applied = Vec::new();
        for chunk in running.chunks(RECOVERY_BATCH) {
            applied.extend(self.write(|tx| requeue_interrupted(tx, chunk, now))?);
        }
        for chunk in started.chunks(RECOVERY_BATCH) {
            applied.extend(self.write(|tx| {
                let by_job = group_by_job(tx, chunk)?;
                let job_ids: Vec<String> = by_job.keys().cloned().collect();
                let mut out = Vec::new();
                update_jobs_in(tx, &job_ids, |job, files| {
                    for f in files.iter_mut() {
                        // A file whose request the storage accepted keeps it: the engine
                        // polls it again (engine spec §5.1, restart recovery).
                        if by_job[&job.job_id].contains(&f.file_id)
                            && f.bringonline_token.is_none()
                            && f.restage()
                        {
                            out.push(Applied {
                                file_id: f.file_id,
                                job_id: job.job_id.clone(),
                                outcome: Outcome::Moved(FileState::Staging),
                                job_state: job.job_state,
                                promoted: Vec::new(),
                            });
                        }
                    }
                })?;
                Ok(out)
            })?);
        }
        self.write(forget_finished_interruptions)?;
        Ok(applied)
    }

    /// Crash interruptions counted for a file so far.
    pub fn interruptions(&self, file_id: u64) -> Result<u32, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(schema::FILE_INTERRUPTIONS)?;
        Ok(table.get(file_id)?.map_or(0, |v| v.value()))
    }
}

/// One batch of [`Redb::recover_interrupted`]: count the interruption of each file, requeue or
/// fail it.
fn requeue_interrupted(
    tx: &WriteTransaction,
    file_ids: &[u64],
    now: i64,
) -> Result<Vec<Applied>, StoreError> {
    let by_job = group_by_job(tx, file_ids)?;
    let job_ids: Vec<String> = by_job.keys().cloned().collect();
    let mut counts = tx.open_table(schema::FILE_INTERRUPTIONS)?;
    let mut count = HashMap::with_capacity(file_ids.len());
    for id in file_ids {
        let before = counts.get(*id)?.map_or(0, |v| v.value());
        count.insert(*id, before.saturating_add(1));
    }
    let mut applied = Vec::new();
    update_jobs_in(tx, &job_ids, |job, files| {
        let mut results = Vec::new();
        for pos in 0..files.len() {
            let Some(&n) = count.get(&files[pos].file_id) else {
                continue;
            };
            let file_id = files[pos].file_id;
            match files[pos].recover_interrupted(now, n) {
                Some(Recovered::Requeued(n)) => {
                    results.push((file_id, Outcome::Interrupted(n), Vec::new()))
                }
                Some(Recovered::Poisoned) => {
                    let index = files[pos].file_index;
                    let promoted = lifecycle::fail_over(job, files, index);
                    lifecycle::derive_job_state(job, files, FileState::Failed, now);
                    results.push((file_id, Outcome::Moved(FileState::Failed), promoted));
                }
                None => {}
            }
        }
        for (file_id, outcome, promoted) in results {
            applied.push(Applied {
                file_id,
                job_id: job.job_id.clone(),
                outcome,
                job_state: job.job_state,
                promoted,
            });
        }
    })?;
    for a in &applied {
        match a.outcome {
            Outcome::Interrupted(n) => {
                counts.insert(a.file_id, n)?;
            }
            _ => {
                counts.remove(a.file_id)?;
            }
        }
    }
    Ok(applied)
}

/// Drop the interruption counts of files that ended (or no longer exist).
fn forget_finished_interruptions(tx: &WriteTransaction) -> Result<(), StoreError> {
    let mut counts = tx.open_table(schema::FILE_INTERRUPTIONS)?;
    let files = tx.open_table(schema::FILES)?;
    let mut dead = Vec::new();
    for row in counts.iter()? {
        let (id, _) = row?;
        let id = id.value();
        let live = match files.get(id)? {
            Some(v) => !codec::decode::<File>(v.value())?.file_state.is_terminal(),
            None => false,
        };
        if !live {
            dead.push(id);
        }
    }
    for id in dead {
        counts.remove(id)?;
    }
    Ok(())
}

impl Redb {
    /// Start-up repair of multihop jobs left without a queued hop (see
    /// [`lifecycle::repair_multihop`]). Only ACTIVE jobs can be in that state: the hop that
    /// ended had made its job ACTIVE, and nothing moved it since. Returns one entry per hop
    /// queued.
    pub fn repair_multihop(&self, now: i64) -> Result<Vec<Applied>, StoreError> {
        let candidates: Vec<String> = {
            let tx = self.db.begin_read()?;
            let jobs = tx.open_table(schema::JOBS)?;
            let mut out = Vec::new();
            for id in self.job_ids_in_states(&[JobState::Active], None)? {
                if let Some(v) = jobs.get(id.as_str())? {
                    let job: Job = codec::decode(v.value())?;
                    if job.job_type == JobType::Multihop {
                        out.push(id);
                    }
                }
            }
            out
        };
        let mut applied = Vec::new();
        for chunk in candidates.chunks(RECOVERY_BATCH) {
            applied.extend(self.write(|tx| {
                let mut out = Vec::new();
                update_jobs_in(tx, chunk, |job, files| {
                    let promoted = lifecycle::repair_multihop(job, files);
                    if promoted.is_empty() {
                        return;
                    }
                    lifecycle::derive_job_state(job, files, FileState::Submitted, now);
                    for file_id in promoted {
                        out.push(Applied {
                            file_id,
                            job_id: job.job_id.clone(),
                            outcome: Outcome::Moved(FileState::Submitted),
                            job_state: job.job_state,
                            promoted: vec![file_id],
                        });
                    }
                })?;
                Ok(out)
            })?);
        }
        Ok(applied)
    }
}

/// Expired jobs canceled per pass; the next pass takes the rest.
const MAX_EXPIRE_BATCH: usize = 10_000;
/// Files recovered per transaction at start-up.
const RECOVERY_BATCH: usize = 1_000;

/// The file ids grouped by their job.
fn group_by_job(
    tx: &WriteTransaction,
    file_ids: &[u64],
) -> Result<BTreeMap<String, Vec<u64>>, StoreError> {
    let files = tx.open_table(schema::FILES)?;
    let mut by_job: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for id in file_ids {
        if let Some(v) = files.get(*id)? {
            let f: File = codec::decode(v.value())?;
            by_job.entry(f.job_id).or_default().push(*id);
        }
    }
    Ok(by_job)
}

fn apply_events_in(
    tx: &WriteTransaction,
    events: &[Event],
    host: &str,
    now: i64,
    vo: &dyn VoSettings,
) -> Result<Vec<Applied>, StoreError> {
    let ids: Vec<u64> = events.iter().map(Event::file_id).collect();
    let by_job = group_by_job(tx, &ids)?;
    let mut job_of: HashMap<u64, String> = HashMap::new();
    for (job, ids) in &by_job {
        for id in ids {
            job_of.insert(*id, job.clone());
        }
    }
    let mut events_by_job: BTreeMap<String, Vec<&Event>> = BTreeMap::new();
    let mut missing = Vec::new();
    for e in events {
        match job_of.get(&e.file_id()) {
            Some(job) => events_by_job.entry(job.clone()).or_default().push(e),
            None => missing.push(e.file_id()),
        }
    }
    let job_ids: Vec<String> = events_by_job.keys().cloned().collect();
    let mut retries: Vec<((u64, u32), RetryRow)> = Vec::new();
    let mut applied = Vec::new();
    update_jobs_in(tx, &job_ids, |job, files| {
        let mut results = Vec::new();
        for event in &events_by_job[&job.job_id] {
            let Some(pos) = files.iter().position(|f| f.file_id == event.file_id()) else {
                continue;
            };
            let (outcome, hint, promoted) =
                apply_one(job, files, pos, event, now, vo, &mut retries);
            if let Some(hint) = hint {
                lifecycle::derive_job_state(job, files, hint, now);
            }
            results.push((event.file_id(), outcome, promoted));
        }
        for (file_id, outcome, promoted) in results {
            applied.push(Applied {
                file_id,
                job_id: job.job_id.clone(),
                outcome,
                job_state: job.job_state,
                promoted,
            });
        }
    })?;
    let _ = host;
    if !retries.is_empty() {
        let mut table = tx.open_table(schema::FILE_RETRIES)?;
        for (key, row) in retries {
            table.insert(key, codec::encode(&row).as_slice())?;
        }
    }
    for file_id in missing {
        applied.push(Applied {
            file_id,
            job_id: String::new(),
            outcome: Outcome::Missing,
            job_state: JobState::Failed,
            promoted: Vec::new(),
        });
    }
    Ok(applied)
}

/// One event on `files[pos]`: the outcome, the hint for the job derivation (None when nothing
/// changed) and the files promoted.
fn apply_one(
    job: &mut Job,
    files: &mut [File],
    pos: usize,
    event: &Event,
    now: i64,
    vo: &dyn VoSettings,
    retries: &mut Vec<((u64, u32), RetryRow)>,
) -> (Outcome, Option<FileState>, Vec<u64>) {
    let before = files[pos].file_state;
    let ignored = (Outcome::Ignored(before), None, Vec::new());
    match event {
        Event::Started { log_file, .. } => {
            if !files[pos].activate(now, log_file.clone()) {
                return ignored;
            }
            (
                Outcome::Moved(FileState::Active),
                Some(FileState::Active),
                Vec::new(),
            )
        }
        Event::Finished { success, .. } => {
            let archive = lifecycle::archives(job, files, files[pos].file_id);
            if !files[pos].finish(now, success, archive) {
                return ignored;
            }
            let state = files[pos].file_state;
            let promoted = lifecycle::after_end(job, files, pos);
            (Outcome::Moved(state), Some(state), promoted)
        }
        Event::Failed { failure, .. } => {
            let f = &mut files[pos];
            if !matches!(f.file_state, FileState::Ready | FileState::Active) {
                if f.file_state == FileState::Canceled && f.finish_time.is_none() {
                    f.finish_time = Some(now);
                }
                return ignored;
            }
            let max = lifecycle::max_retries(job, vo.retry(&job.vo_name));
            if failure.recoverable && max > 0 && f.retry < max {
                let row = RetryRow {
                    attempt: f.retry + 1,
                    datetime: now,
                    reason: failure.reason.clone(),
                    transfer_host: f.transfer_host.clone(),
                    log_file: f.log_file.clone(),
                };
                retries.push(((f.file_id, row.attempt), row));
                f.requeue(now, lifecycle::retry_delay(job), failure);
                return (Outcome::Retried(f.retry), None, Vec::new());
            }
            f.fail(now, failure);
            let promoted = lifecycle::after_end(job, files, pos);
            (
                Outcome::Moved(FileState::Failed),
                Some(FileState::Failed),
                promoted,
            )
        }
        Event::Aborted { .. } => {
            let f = &mut files[pos];
            if f.file_state.is_terminal() {
                if f.finish_time.is_none() {
                    f.finish_time = Some(now);
                }
                let promoted = if f.file_state == FileState::Canceled {
                    lifecycle::after_end(job, files, pos)
                } else {
                    Vec::new()
                };
                return (Outcome::Moved(before), Some(FileState::Canceled), promoted);
            }
            ignored
        }
        Event::Interrupted { .. } => {
            if !files[pos].unclaim() {
                return ignored;
            }
            (Outcome::Moved(FileState::Submitted), None, Vec::new())
        }
        Event::StagingStarted { token, .. } => {
            // Claims move STAGING → STARTED; this records the storage's request id.
            if !files[pos].stage_requested(token) {
                return ignored;
            }
            (Outcome::Moved(FileState::Started), None, Vec::new())
        }
        Event::Staged { .. } => {
            if !files[pos].staged(now) {
                return ignored;
            }
            let state = files[pos].file_state;
            // A stage-only hop is FINISHED here: the next hop runs (engine spec §1.1).
            let promoted = lifecycle::after_end(job, files, pos);
            (Outcome::Moved(state), Some(state), promoted)
        }
        Event::StagingFailed { failure, .. } => {
            if !files[pos].staging_failed(now, failure) {
                return ignored;
            }
            let promoted = lifecycle::after_end(job, files, pos);
            (
                Outcome::Moved(FileState::Failed),
                Some(FileState::Failed),
                promoted,
            )
        }
        Event::Archived { .. } => {
            let f = &mut files[pos];
            if f.file_state != FileState::Archiving {
                return ignored;
            }
            f.file_state = FileState::Finished;
            f.finish_time = Some(now);
            f.archive_finish_time = Some(now);
            f.dest_surl_uuid = None;
            let promoted = lifecycle::after_end(job, files, pos);
            (
                Outcome::Moved(FileState::Finished),
                Some(FileState::Finished),
                promoted,
            )
        }
        Event::TokensReady { .. } => {
            if !files[pos].tokens_ready() {
                return ignored;
            }
            let state = files[pos].file_state;
            (Outcome::Moved(state), Some(state), Vec::new())
        }
        Event::TokensFailed { failure, .. } => {
            let f = &mut files[pos];
            if f.file_state != FileState::TokenPrep {
                return ignored;
            }
            f.fail(now, failure);
            let promoted = lifecycle::after_end(job, files, pos);
            (
                Outcome::Moved(FileState::Failed),
                Some(FileState::Failed),
                promoted,
            )
        }
        Event::ArchiveFailed { failure, .. } => {
            let f = &mut files[pos];
            if f.file_state != FileState::Archiving {
                return ignored;
            }
            f.archive_finish_time = Some(now);
            f.fail(now, failure);
            // The copy itself succeeded: a multiple-replica job fails as a whole ("Archive
            // monitoring failed in a multiple replica job"), no other replica is tried.
            let promoted = if job.job_type == JobType::MultipleReplica {
                Vec::new()
            } else {
                lifecycle::after_end(job, files, pos)
            };
            (
                Outcome::Moved(FileState::Failed),
                Some(FileState::Failed),
                promoted,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        job::fixtures::{file, job},
        lifecycle::{Failure, Success},
    };

    fn store_with(jobs: Vec<(Job, Vec<File>)>) -> (tempfile::TempDir, Redb) {
        let dir = tempfile::tempdir().unwrap();
        let store = Redb::open(dir.path()).unwrap();
        let mut batch = jobs;
        for r in store.insert_jobs(&mut batch).unwrap() {
            r.unwrap();
        }
        (dir, store)
    }

    /// A three-hop job (disk → disk → tape as Rucio submits it), hop 0 queued, the others
    /// NOT_USED.
    fn three_hops(archive_timeout: i64) -> (Job, Vec<File>) {
        let mut j = job(JobType::Multihop);
        j.job_id = "mh".into();
        j.archive_timeout = archive_timeout;
        let mut files = vec![
            file(1, 0, FileState::Submitted),
            file(2, 1, FileState::NotUsed),
            file(3, 2, FileState::NotUsed),
        ];
        for f in &mut files {
            f.job_id = "mh".into();
        }
        (j, files)
    }

    fn claim_of(ids: &[u64], now: i64) -> Claim {
        Claim {
            file_ids: ids.to_vec(),
            host: "h".into(),
            now,
            caps: Default::default(),
        }
    }

    fn ok() -> Success {
        Success {
            filesize: 10,
            duration: 1.0,
            throughput: 1.0,
        }
    }

    fn boom() -> Failure {
        Failure {
            reason: "TRANSFER [5] boom".into(),
            scope: "TRANSFER".into(),
            phase: "TRANSFER".into(),
            class: "INPUT/OUTPUT_ERROR".into(),
            recoverable: false,
            dst_file: None,
        }
    }

    /// Claims `id` and reports `event` for it; the applied outcome.
    fn run(store: &Redb, id: u64, event: Event, t: i64) -> Applied {
        if store.file_states(&[id]).unwrap()[0].1 == Some(FileState::Submitted) {
            assert_eq!(
                store
                    .claim(&Claim {
                        file_ids: vec![id],
                        host: "h".into(),
                        now: t,
                        caps: Default::default(),
                    })
                    .unwrap()
                    .len(),
                1,
                "claim of {id}"
            );
        }
        store.apply_events(&[event], "h", t).unwrap().remove(0)
    }

    fn states(store: &Redb, ids: &[u64]) -> Vec<FileState> {
        store
            .file_states(ids)
            .unwrap()
            .into_iter()
            .map(|(_, s)| s.unwrap())
            .collect()
    }

    // Rucio's disk → disk → tape path (issue 23): with archive_timeout, only the last hop is
    // archived; the intermediate hops finish and queue the next one. This hung before: hop 0
    // went to ARCHIVING, then FINISHED without queuing hop 1, and the job stayed ACTIVE forever.
    #[test]
    fn a_multihop_job_to_tape_archives_only_its_last_hop_and_finishes() {
        let (_dir, store) = store_with(vec![three_hops(3600)]);
        let a = run(
            &store,
            1,
            Event::Finished {
                file_id: 1,
                success: ok(),
            },
            10,
        );
        assert_eq!(a.outcome, Outcome::Moved(FileState::Finished));
        assert_eq!(a.promoted, vec![2]);
        let a = run(
            &store,
            2,
            Event::Finished {
                file_id: 2,
                success: ok(),
            },
            11,
        );
        assert_eq!(a.outcome, Outcome::Moved(FileState::Finished));
        assert_eq!(a.promoted, vec![3]);
        let a = run(
            &store,
            3,
            Event::Finished {
                file_id: 3,
                success: ok(),
            },
            12,
        );
        assert_eq!(
            a.outcome,
            Outcome::Moved(FileState::Archiving),
            "the last hop is watched"
        );
        assert_eq!(
            store.job("mh").unwrap().unwrap().job_state,
            JobState::Archiving
        );
        let a = run(&store, 3, Event::Archived { file_id: 3 }, 13);
        assert_eq!(a.outcome, Outcome::Moved(FileState::Finished));
        let (job, files) = store.job_with_files("mh").unwrap().unwrap();
        assert_eq!(job.job_state, JobState::Finished);
        assert_eq!(job.job_finished, Some(13));
        assert!(
            files
                .iter()
                .take(2)
                .all(|f| f.archive_finish_time.is_none())
        );
        assert_eq!(files[2].archive_finish_time, Some(13));
        assert_eq!(store.check_indexes().unwrap(), Vec::<String>::new());
    }

    // A hop that finishes after ARCHIVING (an intermediate hop archived by a store written
    // before the fix) goes through the same next-hop logic as a direct FINISHED.
    #[test]
    fn a_hop_finished_after_archiving_queues_the_next_hop() {
        let (j, mut files) = three_hops(3600);
        files[0].file_state = FileState::Archiving;
        let (_dir, store) = store_with(vec![(j, files)]);
        let a = run(&store, 1, Event::Archived { file_id: 1 }, 10);
        assert_eq!(a.outcome, Outcome::Moved(FileState::Finished));
        assert_eq!(a.promoted, vec![2]);
        assert_eq!(
            states(&store, &[1, 2, 3]),
            [
                FileState::Finished,
                FileState::Submitted,
                FileState::NotUsed
            ]
        );
    }

    #[test]
    fn a_failed_hop_fails_the_multihop_job_and_leaves_the_rest_unused() {
        let (_dir, store) = store_with(vec![three_hops(3600)]);
        run(
            &store,
            1,
            Event::Finished {
                file_id: 1,
                success: ok(),
            },
            10,
        );
        let a = run(
            &store,
            2,
            Event::Failed {
                file_id: 2,
                failure: boom(),
            },
            11,
        );
        assert_eq!(a.outcome, Outcome::Moved(FileState::Failed));
        assert!(a.promoted.is_empty());
        assert_eq!(a.job_state, JobState::Failed);
        assert_eq!(
            states(&store, &[1, 2, 3]),
            [FileState::Finished, FileState::Failed, FileState::NotUsed]
        );
        assert_eq!(store.check_indexes().unwrap(), Vec::<String>::new());
    }

    #[test]
    fn a_failed_first_hop_fails_the_job_without_running_the_others() {
        let (_dir, store) = store_with(vec![three_hops(-1)]);
        let a = run(
            &store,
            1,
            Event::Failed {
                file_id: 1,
                failure: boom(),
            },
            10,
        );
        assert_eq!(a.job_state, JobState::Failed);
        assert_eq!(
            states(&store, &[1, 2, 3]),
            [FileState::Failed, FileState::NotUsed, FileState::NotUsed]
        );
    }

    #[test]
    fn a_canceled_running_hop_ends_the_multihop_job_canceled() {
        let (_dir, store) = store_with(vec![three_hops(3600)]);
        run(
            &store,
            1,
            Event::Finished {
                file_id: 1,
                success: ok(),
            },
            10,
        );
        store.claim(&claim_of(&[2], 11)).unwrap();
        // The user cancels the file while it runs; the agent then reports the abort.
        store
            .update_jobs(&["mh".to_string()], |_, files| {
                files[1].cancel(12, "Transfer canceled by the user");
            })
            .unwrap();
        let a = run(&store, 2, Event::Aborted { file_id: 2 }, 13);
        assert!(a.promoted.is_empty());
        assert_eq!(a.job_state, JobState::Canceled);
        assert_eq!(states(&store, &[3]), [FileState::NotUsed]);
    }

    #[test]
    fn a_failed_archive_of_the_last_hop_fails_the_multihop_job() {
        let (j, mut files) = three_hops(3600);
        files[0].file_state = FileState::Finished;
        files[1].file_state = FileState::Finished;
        files[2].file_state = FileState::Archiving;
        let (_dir, store) = store_with(vec![(j, files)]);
        let a = run(
            &store,
            3,
            Event::ArchiveFailed {
                file_id: 3,
                failure: boom(),
            },
            10,
        );
        assert_eq!(a.outcome, Outcome::Moved(FileState::Failed));
        assert_eq!(a.job_state, JobState::Failed);
    }

    // A stage-only first hop (source = destination, from tape) that finishes staging queues
    // the next hop (engine spec §1.1: "for multihop, next hop is activated").
    #[test]
    fn a_stage_only_hop_queues_the_next_hop_when_staged() {
        let (mut j, mut files) = three_hops(-1);
        j.bring_online = 60;
        files[0].file_state = FileState::Started;
        files[0].dest_surl = files[0].source_surl.clone();
        let (_dir, store) = store_with(vec![(j, files)]);
        let a = run(&store, 1, Event::Staged { file_id: 1 }, 10);
        assert_eq!(a.outcome, Outcome::Moved(FileState::Finished));
        assert_eq!(a.promoted, vec![2]);
    }

    // Stores written before the fix hold jobs stuck with a finished hop and nothing queued; the
    // start-up repair queues their next hop once, and leaves healthy jobs alone.
    #[test]
    fn the_start_up_repair_unsticks_a_multihop_job_left_without_a_queued_hop() {
        let (mut stuck, mut files) = three_hops(3600);
        stuck.job_state = JobState::Active;
        files[0].file_state = FileState::Finished;
        let (mut healthy, mut other) = three_hops(3600);
        healthy.job_id = "ok".into();
        healthy.job_state = JobState::Active;
        for f in other.iter_mut() {
            f.job_id = "ok".into();
        }
        other[0].file_state = FileState::Finished;
        other[1].file_state = FileState::Submitted;
        // The store numbers files in submission order: 1..=3 for "mh", 4..=6 for "ok".
        let (_dir, store) = store_with(vec![(stuck, files), (healthy, other)]);
        let repaired = store.repair_multihop(20).unwrap();
        assert_eq!(repaired.len(), 1);
        assert_eq!(
            (repaired[0].job_id.as_str(), repaired[0].file_id),
            ("mh", 2)
        );
        assert_eq!(
            states(&store, &[2, 5, 6]),
            [
                FileState::Submitted,
                FileState::Submitted,
                FileState::NotUsed
            ]
        );
        assert!(store.repair_multihop(21).unwrap().is_empty(), "once");
        assert_eq!(store.check_indexes().unwrap(), Vec::<String>::new());
    }

    #[test]
    fn crash_interruptions_requeue_without_an_attempt_then_poison() {
        // A job without retries: the interruption must not cost it its only attempt.
        let (_dir, store) = store_with(vec![(
            job(JobType::Normal),
            vec![file(1, 0, FileState::Submitted)],
        )]);
        let id = 1;
        for n in 1..lifecycle::MAX_INTERRUPTIONS {
            assert_eq!(store.claim(&claim_of(&[id], 5)).unwrap().len(), 1);
            let applied = store.recover_interrupted(6).unwrap();
            assert_eq!(applied.len(), 1);
            assert_eq!(applied[0].outcome, Outcome::Interrupted(n));
            assert_eq!(store.interruptions(id).unwrap(), n);
            // Nothing running: a start without a crash changes nothing.
            assert!(store.recover_interrupted(7).unwrap().is_empty());
        }
        store.claim(&claim_of(&[id], 8)).unwrap();
        let applied = store.recover_interrupted(9).unwrap();
        assert_eq!(applied[0].outcome, Outcome::Moved(FileState::Failed));
        assert_eq!(store.interruptions(id).unwrap(), 0, "forgotten once ended");
        assert_eq!(store.check_indexes().unwrap(), Vec::<String>::new());
    }
}
