//! What the transfer engine does to jobs and files: claiming, starting, finishing, failing,
//! retrying, failover to another replica or the next hop, and the job-state derivation of the
//! reference (engine spec §1.3), all as pure functions over rows so they are tested without a
//! store.
//!
//! Invariant: terminal file states are sticky; every transition checks the state it starts
//! from and returns false (changing nothing) when the file is elsewhere, like the reference's
//! compare-and-swap updates.

use super::job::{File, FileState, Job, JobState, JobType, JsonText};

/// `DEFAULT_RETRY_DELAY`: seconds before a failed transfer is tried again when the job gives
/// no `retry_delay`.
pub const DEFAULT_RETRY_DELAY: i64 = 120;

/// The reason of a job that finished with failures.
pub const JOB_FAILED_REASON: &str =
    "One or more files failed. Please have a look at the details for more information";

/// Queue timeout messages (engine spec §1.5).
pub const QUEUE_TIMEOUT_REASON: &str =
    "Job has been canceled because it stayed in the queue for too long (max-time-in-queue timeout)";
pub const GLOBAL_QUEUE_TIMEOUT_REASON: &str =
    "Job has been canceled because it stayed in the queue for too long (global timeout)";

/// How often a transfer may be found running at start (the service died under it: crash,
/// `kill -9`, power loss) before it is failed instead of queued again. Interruptions do not cost
/// the user an attempt, but a transfer that makes the service crash each time it runs (a
/// "poison" transfer) must not crash it for ever: the third interruption fails it, with
/// [`POISON_REASON`].
pub const MAX_INTERRUPTIONS: u32 = 3;

/// The reason of a transfer failed after [`MAX_INTERRUPTIONS`] interruptions.
pub const POISON_REASON: &str = "Transfer interrupted 3 times by the service stopping while it ran: \
     not run again, in case it is what stops the service";

/// What start-up recovery did to a transfer found running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovered {
    /// Back in the queue, no attempt counted: the `n`-th interruption.
    Requeued(u32),
    /// Failed: interrupted too often.
    Poisoned,
}

/// The outcome of a successful copy.
#[derive(Debug, Clone, PartialEq)]
pub struct Success {
    pub filesize: u64,
    /// Seconds.
    pub duration: f64,
    /// MiB/s.
    pub throughput: f64,
}

/// The outcome of a failed copy, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// `"<SCOPE> [<errno>] <message>"`.
    pub reason: String,
    pub scope: String,
    pub phase: String,
    /// The errno category (`NO_SUCH_FILE_OR_DIRECTORY`, ...).
    pub class: String,
    pub recoverable: bool,
    /// What the transfer found at a destination it could not overwrite, when the job asked for
    /// a report (`dst_file_report`); kept in the file's metadata.
    pub dst_file: Option<DestFile>,
}

/// The reference's destination file report (`dst_file` in `file_metadata`): the existing
/// destination's size, checksum and locality. Rucio compares it with its own record to accept
/// a copy that already sits on tape instead of failing the request forever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestFile {
    pub file_size: u64,
    /// Upper-case algorithm (`ADLER32`, `MD5`).
    pub checksum_type: String,
    pub checksum_value: String,
    pub file_on_tape: bool,
    pub file_on_disk: bool,
}

impl DestFile {
    /// `metadata` with this report under `dst_file`: an object keeps its keys, anything else
    /// that is not null moves under `file_metadata` (the reference's
    /// `appendDestFileToFileMetadata`).
    pub fn add_to(&self, metadata: &JsonText) -> JsonText {
        let mut object = match metadata.0.as_deref() {
            None => serde_json::Map::new(),
            Some(text) => match serde_json::from_str::<serde_json::Value>(text) {
                Ok(serde_json::Value::Object(map)) => map,
                Ok(serde_json::Value::Null) => serde_json::Map::new(),
                _ => {
                    let mut map = serde_json::Map::new();
                    map.insert("file_metadata".into(), text.into());
                    map
                }
            },
        };
        object.insert(
            "dst_file".into(),
            serde_json::json!({
                "file_size": self.file_size,
                "checksum_type": self.checksum_type,
                "checksum_value": self.checksum_value,
                "file_on_tape": self.file_on_tape,
                "file_on_disk": self.file_on_disk,
            }),
        );
        JsonText(Some(serde_json::Value::Object(object).to_string()))
    }
}

/// How many attempts after the first a job's files get (engine spec §1.4): the job's `retry`
/// when set, else the VO's configured default; negative disables; multiple-replica and multihop
/// jobs never retry (they fail over instead).
pub fn max_retries(job: &Job, vo_default: i64) -> u32 {
    if matches!(job.job_type, JobType::MultipleReplica | JobType::Multihop) {
        return 0;
    }
    let n = if job.retry != 0 {
        job.retry
    } else {
        vo_default
    };
    n.clamp(0, u32::MAX as i64) as u32
}

/// Seconds to wait before a retry.
pub fn retry_delay(job: &Job) -> i64 {
    if job.retry_delay > 0 {
        job.retry_delay
    } else {
        DEFAULT_RETRY_DELAY
    }
}

impl File {
    /// SUBMITTED / FORCE_START → READY: the scheduler picked it.
    pub fn claim(&mut self, now: i64, host: &str) -> bool {
        if !matches!(
            self.file_state,
            FileState::Submitted | FileState::ForceStart
        ) {
            return false;
        }
        self.file_state = FileState::Ready;
        self.start_time = Some(now);
        self.transfer_host = Some(host.to_string());
        true
    }

    /// READY → ACTIVE: the transfer starts, writing its log to `log_file`.
    pub fn activate(&mut self, now: i64, log_file: Option<String>) -> bool {
        if self.file_state != FileState::Ready {
            return false;
        }
        self.file_state = FileState::Active;
        self.start_time = Some(now);
        self.log_file = log_file;
        true
    }

    /// READY / ACTIVE → FINISHED (or ARCHIVING when the destination is to be watched until it
    /// is on tape).
    pub fn finish(&mut self, now: i64, success: &Success, archive: bool) -> bool {
        if !matches!(self.file_state, FileState::Ready | FileState::Active) {
            return false;
        }
        self.file_state = if archive {
            FileState::Archiving
        } else {
            FileState::Finished
        };
        if archive {
            // Archive monitoring starts with the state (the poller picks the file up at once).
            self.archive_start_time = Some(now);
        } else {
            self.finish_time = Some(now);
            self.dest_surl_uuid = None;
        }
        self.filesize = Some(success.filesize);
        self.transferred = success.filesize;
        self.tx_duration = Some(success.duration);
        self.throughput = Some(success.throughput);
        self.reason = None;
        self.error_scope = None;
        self.error_phase = None;
        self.reason_class = None;
        self.current_failures = 0;
        true
    }

    /// A live file → FAILED with the classified reason.
    pub fn fail(&mut self, now: i64, failure: &Failure) -> bool {
        if self.file_state.is_terminal() {
            return false;
        }
        self.file_state = FileState::Failed;
        self.finish_time = Some(now);
        self.dest_surl_uuid = None;
        self.transferred = 0;
        self.reason = Some(failure.reason.clone());
        self.error_scope = Some(failure.scope.clone());
        self.error_phase = Some(failure.phase.clone());
        self.reason_class = Some(failure.class.clone());
        self.current_failures = u32::from(failure.recoverable);
        if let Some(report) = &failure.dst_file {
            self.file_metadata = report.add_to(&self.file_metadata);
        }
        true
    }

    /// A failed attempt goes back to the queue, to be picked again after `delay` seconds.
    pub fn requeue(&mut self, now: i64, delay: i64, failure: &Failure) -> bool {
        if !matches!(self.file_state, FileState::Ready | FileState::Active) {
            return false;
        }
        self.file_state = FileState::Submitted;
        self.retry += 1;
        self.retry_timestamp = Some(now + delay);
        self.throughput = Some(0.0);
        self.transferred = 0;
        self.current_failures = 1;
        self.start_time = None;
        self.finish_time = None;
        self.transfer_host = None;
        self.log_file = None;
        self.reason = Some(failure.reason.clone());
        self.error_scope = Some(failure.scope.clone());
        self.error_phase = Some(failure.phase.clone());
        self.reason_class = Some(failure.class.clone());
        true
    }

    /// READY / ACTIVE → SUBMITTED without counting an attempt: the service stops and hands the
    /// transfer back to the queue.
    pub fn unclaim(&mut self) -> bool {
        if !matches!(self.file_state, FileState::Ready | FileState::Active) {
            return false;
        }
        self.file_state = FileState::Submitted;
        self.start_time = None;
        self.transfer_host = None;
        self.log_file = None;
        self.transferred = 0;
        true
    }

    /// READY / ACTIVE found at start after a crash, for the `interruptions`-th time (this one
    /// included): back to the queue without counting an attempt, or FAILED with
    /// [`POISON_REASON`] at the [`MAX_INTERRUPTIONS`]-th. None when the file is elsewhere.
    pub fn recover_interrupted(&mut self, now: i64, interruptions: u32) -> Option<Recovered> {
        if !matches!(self.file_state, FileState::Ready | FileState::Active) {
            return None;
        }
        if interruptions >= MAX_INTERRUPTIONS {
            self.fail(
                now,
                &Failure {
                    reason: format!("GENERAL_FAILURE [4] {POISON_REASON}"),
                    scope: "GENERAL_FAILURE".to_string(),
                    phase: "TRANSFER_SERVICE".to_string(),
                    class: "INTERRUPTED_SYSTEM_CALL".to_string(),
                    recoverable: false,
                    dst_file: None,
                },
            );
            return Some(Recovered::Poisoned);
        }
        self.unclaim();
        Some(Recovered::Requeued(interruptions))
    }

    /// NOT_USED → SUBMITTED: the next replica or hop takes over.
    pub fn promote(&mut self) -> bool {
        if self.file_state != FileState::NotUsed {
            return false;
        }
        self.file_state = FileState::Submitted;
        self.finish_time = None;
        true
    }

    /// STAGING → STARTED: the bring-online request is issued.
    pub fn start_staging(&mut self, now: i64, host: &str) -> bool {
        if self.file_state != FileState::Staging {
            return false;
        }
        self.file_state = FileState::Started;
        self.staging_start = Some(now);
        self.start_time = Some(now);
        self.staging_host = Some(host.to_string());
        self.transfer_host = Some(host.to_string());
        true
    }

    /// STARTED → SUBMITTED (staged, now to be copied) or FINISHED (stage-only job).
    pub fn staged(&mut self, now: i64) -> bool {
        if self.file_state != FileState::Started {
            return false;
        }
        self.staging_finished = Some(now);
        if self.source_surl == self.dest_surl {
            self.file_state = FileState::Finished;
            self.finish_time = Some(now);
            self.dest_surl_uuid = None;
        } else {
            self.file_state = FileState::Submitted;
            self.start_time = None;
            self.transfer_host = None;
            self.finish_time = None;
            self.reason = None;
        }
        true
    }

    /// TOKEN_PREP → the state the file was submitted in (`file_state_initial`, SUBMITTED when
    /// that is empty, as the reference's token daemon does).
    pub fn tokens_ready(&mut self) -> bool {
        if self.file_state != FileState::TokenPrep {
            return false;
        }
        self.file_state = self
            .file_state_initial
            .as_deref()
            .and_then(FileState::parse)
            .filter(|s| *s != FileState::TokenPrep)
            .unwrap_or(FileState::Submitted);
        true
    }

    /// The storage accepted the bring-online request of a STARTED file under `token`.
    pub fn stage_requested(&mut self, token: &str) -> bool {
        if self.file_state != FileState::Started {
            return false;
        }
        self.bringonline_token = Some(token.to_string());
        true
    }

    /// STARTED → FAILED: the storage could not bring the file online (or the bring-online
    /// timeout passed). `staging_finished` is set, as the reference does.
    pub fn staging_failed(&mut self, now: i64, failure: &Failure) -> bool {
        if self.file_state != FileState::Started {
            return false;
        }
        self.staging_finished = Some(now);
        self.fail(now, failure)
    }

    /// STARTED → STAGING: an interrupted or retryable staging goes back to the staging queue.
    pub fn restage(&mut self) -> bool {
        if self.file_state != FileState::Started {
            return false;
        }
        self.file_state = FileState::Staging;
        self.staging_start = None;
        self.bringonline_token = None;
        self.staging_host = None;
        self.transfer_host = None;
        self.start_time = None;
        true
    }
}

/// Whether a file whose copy succeeded goes to ARCHIVING (watched until it is on tape) rather
/// than FINISHED: the job asked for archive monitoring and, in a multihop job, the file is the
/// last hop. Intermediate hops land on disk buffers that are never archived; only the final
/// destination is watched (engine spec §1.1: "if archive_timeout > -1 AND (not multihop or no
/// further NOT_USED hop)", §2.6: "ARCHIVING only applies to the last hop").
pub fn archives(job: &Job, files: &[File], file_id: u64) -> bool {
    job.archive_timeout > -1
        && (job.job_type != JobType::Multihop
            || !files
                .iter()
                .any(|f| f.file_id != file_id && f.file_state == FileState::NotUsed))
}

/// What follows once `files[pos]` has ended, whichever way it ended: FINISHED (directly, after
/// staging a stage-only hop, or after archiving) queues the next hop; FAILED or CANCELED hands
/// over to the next replica or closes the remaining hops. Every end of a file goes through
/// here, so no path can leave a multihop job waiting for a hop that nobody queues.
/// Returns the ids of files promoted to SUBMITTED.
pub fn after_end(job: &Job, files: &mut [File], pos: usize) -> Vec<u64> {
    match files[pos].file_state {
        FileState::Finished => next_hop(job, files),
        FileState::Failed | FileState::Canceled => {
            let index = files[pos].file_index;
            fail_over(job, files, index)
        }
        _ => Vec::new(),
    }
}

/// The reference's multihop sanity check (engine spec §1.3, `MultihopSanityStateInterval`): an
/// unfinished multihop job in which no hop is queued, running or failed, but a hop is still
/// NOT_USED, gets that hop queued. Stores written before [`archives`] limited archiving to the
/// last hop hold such jobs (an intermediate hop finished after ARCHIVING without queuing the
/// next). Returns the promoted file ids.
pub fn repair_multihop(job: &Job, files: &mut [File]) -> Vec<u64> {
    if job.job_type != JobType::Multihop || job.job_state.is_terminal() {
        return Vec::new();
    }
    let stuck = files
        .iter()
        .all(|f| matches!(f.file_state, FileState::Finished | FileState::NotUsed))
        && files.iter().any(|f| f.file_state == FileState::Finished);
    if stuck {
        next_hop(job, files)
    } else {
        Vec::new()
    }
}

/// After `changed` (a file of `files`) failed or was canceled: the next replica of its logical
/// file (multiple-replica job) or nothing more of the job (multihop) runs.
/// Returns the ids of files promoted to SUBMITTED.
pub fn fail_over(job: &Job, files: &mut [File], failed_index: u32) -> Vec<u64> {
    if job.job_state.is_terminal() {
        return Vec::new();
    }
    match job.job_type {
        JobType::MultipleReplica => {
            let busy = files.iter().any(|f| {
                f.file_index == failed_index
                    && matches!(
                        f.file_state,
                        FileState::Submitted | FileState::Ready | FileState::Active
                    )
            });
            if busy {
                return Vec::new();
            }
            // The lowest file id first: the order the user listed the sources in.
            let next = files
                .iter_mut()
                .filter(|f| f.file_index == failed_index && f.file_state == FileState::NotUsed)
                .min_by_key(|f| f.file_id);
            match next {
                Some(f) => promoted(f),
                None => Vec::new(),
            }
        }
        JobType::Multihop => {
            // The remaining hops will never run; they free their destination.
            for f in files
                .iter_mut()
                .filter(|f| f.file_state == FileState::NotUsed)
            {
                f.dest_surl_uuid = None;
            }
            Vec::new()
        }
        _ => Vec::new(),
    }
}

/// After a hop finished: the next hop (lowest file id still NOT_USED) is queued.
pub fn next_hop(job: &Job, files: &mut [File]) -> Vec<u64> {
    if job.job_type != JobType::Multihop || job.job_state.is_terminal() {
        return Vec::new();
    }
    let next = files
        .iter_mut()
        .filter(|f| f.file_state == FileState::NotUsed)
        .min_by_key(|f| f.file_id);
    match next {
        Some(f) => promoted(f),
        None => Vec::new(),
    }
}

fn promoted(f: &mut File) -> Vec<u64> {
    if f.promote() {
        vec![f.file_id]
    } else {
        Vec::new()
    }
}

fn state_name_eq(job: JobState, file: FileState) -> bool {
    job.as_str() == file.as_str()
}

/// Recompute a job's state after one of its files moved to `hint` (engine spec §1.3).
/// Returns whether the job changed.
pub fn derive_job_state(job: &mut Job, files: &[File], hint: FileState, now: i64) -> bool {
    let current = job.job_state;
    if current.is_terminal() {
        return false;
    }
    if state_name_eq(current, hint) || (current == JobState::Staging && hint == FileState::Started)
    {
        return false;
    }
    if job.job_type == JobType::MultipleReplica
        && current == JobState::Archiving
        && hint == FileState::Failed
    {
        return set_final(
            job,
            JobState::Failed,
            Some("Archive monitoring failed in a multiple replica job".into()),
            now,
        );
    }
    if hint == FileState::Active && job.job_type == JobType::Normal {
        job.job_state = JobState::Active;
        return true;
    }
    if matches!(hint, FileState::Finished | FileState::Failed)
        && job.job_type == JobType::Normal
        && files.iter().any(|f| f.file_state == FileState::Submitted)
    {
        return false;
    }

    // Count logical files (distinct file_index): replicas collapse into one.
    let mut indexes: Vec<u32> = files.iter().map(|f| f.file_index).collect();
    indexes.sort_unstable();
    indexes.dedup();
    let (mut canceled, mut finished, mut not_failed, mut staging, mut archiving) = (0, 0, 0, 0, 0);
    for index in &indexes {
        let rows = || files.iter().filter(|f| f.file_index == *index);
        if rows().all(|f| f.file_state == FileState::Canceled) {
            canceled += 1;
        }
        if rows().any(|f| f.file_state == FileState::Finished) {
            finished += 1;
        }
        if rows().any(|f| !matches!(f.file_state, FileState::Canceled | FileState::Failed)) {
            not_failed += 1;
        }
        if rows().any(|f| matches!(f.file_state, FileState::Staging | FileState::Started)) {
            staging += 1;
        }
        if rows().any(|f| f.file_state == FileState::Archiving) {
            archiving += 1;
        }
    }
    let total = indexes.len();
    let failed = total.saturating_sub(not_failed).saturating_sub(canceled);
    let terminal = canceled + failed + finished;
    let done = terminal == total
        || (job.job_type == JobType::Multihop && failed + canceled > 0 && !has_live(files));

    if done {
        let (state, reason) = if finished > 0 && failed > 0 {
            if job.job_type == JobType::Multihop {
                (JobState::Failed, Some(JOB_FAILED_REASON.to_string()))
            } else {
                (JobState::FinishedDirty, Some(JOB_FAILED_REASON.to_string()))
            }
        } else if finished == total {
            (JobState::Finished, None)
        } else if failed > 0 {
            (JobState::Failed, Some(JOB_FAILED_REASON.to_string()))
        } else if canceled > 0 {
            // Keep the reason a cancel already wrote (user, ban, queue timeout).
            (JobState::Canceled, job.reason.clone())
        } else {
            (
                JobState::Failed,
                Some("Inconsistent internal state!".to_string()),
            )
        };
        if state == JobState::Finished && job.job_type == JobType::MultipleReplica {
            if let Some(f) = files.iter().find(|f| f.file_state == FileState::Finished) {
                job.source_se = Some(f.source_se.clone());
            }
        }
        return set_final(job, state, reason, now);
    }

    let next = if matches!(
        hint,
        FileState::Active | FileState::Staging | FileState::Submitted
    ) {
        let s = match hint {
            FileState::Active => JobState::Active,
            FileState::Staging => JobState::Staging,
            _ => JobState::Submitted,
        };
        if s == JobState::Staging && staging == 0 {
            Some(JobState::Submitted)
        } else {
            Some(s)
        }
    } else if current == JobState::Staging && staging == 0 {
        Some(JobState::Submitted)
    } else if archiving > 0 && total == terminal + archiving {
        Some(JobState::Archiving)
    } else {
        None
    };
    match next {
        Some(s) if s != current => {
            job.job_state = s;
            true
        }
        _ => false,
    }
}

/// A multihop job is over once a hop failed and nothing is running any more.
fn has_live(files: &[File]) -> bool {
    files.iter().any(|f| {
        matches!(
            f.file_state,
            FileState::Ready | FileState::Active | FileState::Started
        )
    })
}

fn set_final(job: &mut Job, state: JobState, reason: Option<String>, now: i64) -> bool {
    job.job_state = state;
    job.reason = reason;
    job.job_finished = Some(now);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::job::fixtures::{file, job};

    fn failure(recoverable: bool) -> Failure {
        Failure {
            reason: "TRANSFER [110] boom".into(),
            scope: "TRANSFER".into(),
            phase: "TRANSFER".into(),
            class: "CONNECTION_TIMED_OUT".into(),
            recoverable,
            dst_file: None,
        }
    }

    fn ok() -> Success {
        Success {
            filesize: 10,
            duration: 1.0,
            throughput: 0.5,
        }
    }

    #[test]
    fn interruptions_requeue_without_an_attempt_until_the_poison_limit() {
        let mut f = file(1, 0, FileState::Submitted);
        f.retry = 1;
        for n in 1..MAX_INTERRUPTIONS {
            assert!(f.claim(5, "host") && f.activate(6, None));
            assert_eq!(f.recover_interrupted(7, n), Some(Recovered::Requeued(n)));
            assert_eq!(f.file_state, FileState::Submitted);
            assert_eq!(f.retry, 1, "no attempt counted");
        }
        assert!(f.claim(8, "host"));
        assert_eq!(
            f.recover_interrupted(9, MAX_INTERRUPTIONS),
            Some(Recovered::Poisoned)
        );
        assert_eq!(f.file_state, FileState::Failed);
        assert!(f.reason.as_deref().unwrap().ends_with(POISON_REASON));
        assert!(POISON_REASON.contains(&format!("{MAX_INTERRUPTIONS} times")));
        assert_eq!(f.current_failures, 0, "not recoverable");
        assert_eq!(f.recover_interrupted(10, 1), None, "terminal files stay");
    }

    #[test]
    fn a_claimed_file_goes_ready_then_active_and_the_job_active() {
        let mut j = job(JobType::Normal);
        let mut f = file(1, 0, FileState::Submitted);
        assert!(f.claim(5, "host"));
        assert!(!f.claim(6, "host"), "a second claim loses the race");
        assert!(derive_job_state(&mut j, &[f.clone()], FileState::Active, 5));
        assert_eq!(j.job_state, JobState::Active);
        assert!(f.activate(6, Some("/log".into())));
        assert_eq!(f.file_state, FileState::Active);
    }

    #[test]
    fn all_finished_is_finished_and_a_mix_is_finisheddirty() {
        let mut j = job(JobType::Normal);
        j.job_state = JobState::Active;
        let mut a = file(1, 0, FileState::Active);
        let mut b = file(2, 1, FileState::Active);
        a.finish(9, &ok(), false);
        assert!(!derive_job_state(
            &mut j,
            &[a.clone(), b.clone()],
            FileState::Finished,
            9
        ));
        assert_eq!(j.job_state, JobState::Active);
        b.fail(10, &failure(false));
        assert!(derive_job_state(
            &mut j,
            &[a.clone(), b.clone()],
            FileState::Failed,
            10
        ));
        assert_eq!(j.job_state, JobState::FinishedDirty);
        assert_eq!(j.reason.as_deref(), Some(JOB_FAILED_REASON));
        assert_eq!(j.job_finished, Some(10));

        let mut j = job(JobType::Normal);
        assert!(derive_job_state(
            &mut j,
            &[a.clone()],
            FileState::Finished,
            9
        ));
        assert_eq!((j.job_state, j.reason.clone()), (JobState::Finished, None));
        assert_eq!(a.transferred, 10);
        assert_eq!(a.finish_time, Some(9));
    }

    #[test]
    fn a_destination_report_lands_in_the_file_metadata() {
        let report = DestFile {
            file_size: 10,
            checksum_type: "ADLER32".into(),
            checksum_value: "abc123ab".into(),
            file_on_tape: true,
            file_on_disk: false,
        };
        let dst_file = serde_json::json!({"file_size": 10, "checksum_type": "ADLER32",
            "checksum_value": "abc123ab", "file_on_tape": true, "file_on_disk": false});
        let failed = |metadata: Option<&str>| {
            let mut f = file(1, 0, FileState::Active);
            f.file_metadata = JsonText(metadata.map(String::from));
            let failure = Failure {
                dst_file: Some(report.clone()),
                ..failure(false)
            };
            assert!(f.fail(3, &failure));
            f.file_metadata.to_value()
        };
        // Rucio's metadata keeps its keys.
        assert_eq!(
            failed(Some(r#"{"request_id": "r1", "dst_type": "TAPE"}"#)),
            serde_json::json!({"request_id": "r1", "dst_type": "TAPE", "dst_file": dst_file})
        );
        assert_eq!(failed(None), serde_json::json!({"dst_file": dst_file}));
        assert_eq!(
            failed(Some("42")),
            serde_json::json!({"file_metadata": "42", "dst_file": dst_file})
        );
        // Without a report the metadata is untouched.
        let mut f = file(1, 0, FileState::Active);
        f.file_metadata = JsonText(Some(r#"{"a":1}"#.into()));
        f.fail(3, &failure(false));
        assert_eq!(f.file_metadata.0.as_deref(), Some(r#"{"a":1}"#));
    }

    #[test]
    fn a_pending_retry_keeps_the_job_running() {
        let mut j = job(JobType::Normal);
        j.job_state = JobState::Active;
        let mut a = file(1, 0, FileState::Active);
        assert!(a.requeue(3, retry_delay(&j), &failure(true)));
        assert_eq!(a.retry, 1);
        assert_eq!(a.retry_timestamp, Some(3 + DEFAULT_RETRY_DELAY));
        assert_eq!(a.file_state, FileState::Submitted);
        let b = {
            let mut b = file(2, 1, FileState::Active);
            b.finish(4, &ok(), false);
            b
        };
        assert!(!derive_job_state(&mut j, &[a, b], FileState::Finished, 4));
        assert_eq!(j.job_state, JobState::Active);
    }

    #[test]
    fn retries_come_from_the_job_or_the_vo_and_never_for_replicas_or_hops() {
        let mut j = job(JobType::Normal);
        assert_eq!(max_retries(&j, 2), 2);
        j.retry = 3;
        assert_eq!(max_retries(&j, 2), 3);
        j.retry = -1;
        assert_eq!(max_retries(&j, 2), 0);
        j.retry = 3;
        j.job_type = JobType::MultipleReplica;
        assert_eq!(max_retries(&j, 2), 0);
        j.job_type = JobType::Multihop;
        assert_eq!(max_retries(&j, 2), 0);
    }

    #[test]
    fn a_failed_replica_hands_over_to_the_next_and_the_job_fails_when_none_is_left() {
        let mut j = job(JobType::MultipleReplica);
        j.job_state = JobState::Active;
        let mut files = vec![
            file(1, 0, FileState::Active),
            file(2, 0, FileState::NotUsed),
            file(3, 0, FileState::NotUsed),
        ];
        files[0].fail(5, &failure(false));
        assert_eq!(fail_over(&j, &mut files, 0), vec![2]);
        derive_job_state(&mut j, &files, FileState::Failed, 5);
        assert_eq!(j.job_state, JobState::Active, "a replica is still queued");
        files[1].file_state = FileState::Active;
        files[1].fail(6, &failure(false));
        assert_eq!(fail_over(&j, &mut files, 0), vec![3]);
        files[2].file_state = FileState::Active;
        files[2].finish(7, &ok(), false);
        files[2].source_se = "mock://c".into();
        assert!(derive_job_state(&mut j, &files, FileState::Finished, 7));
        assert_eq!(j.job_state, JobState::Finished);
        assert_eq!(j.source_se.as_deref(), Some("mock://c"));

        let mut j = job(JobType::MultipleReplica);
        let mut files = vec![file(1, 0, FileState::Active)];
        files[0].fail(5, &failure(false));
        assert!(fail_over(&j, &mut files, 0).is_empty());
        assert!(derive_job_state(&mut j, &files, FileState::Failed, 5));
        assert_eq!(j.job_state, JobState::Failed);
    }

    #[test]
    fn hops_run_in_order_and_a_failed_hop_fails_the_job() {
        let mut j = job(JobType::Multihop);
        j.job_state = JobState::Active;
        let mut files = vec![
            file(1, 0, FileState::Active),
            file(2, 1, FileState::NotUsed),
            file(3, 2, FileState::NotUsed),
        ];
        files[0].finish(5, &ok(), false);
        assert_eq!(next_hop(&j, &mut files), vec![2]);
        derive_job_state(&mut j, &files, FileState::Finished, 5);
        assert_eq!(j.job_state, JobState::Active);
        files[1].file_state = FileState::Active;
        files[1].dest_surl_uuid = Some("u".into());
        files[2].dest_surl_uuid = Some("v".into());
        files[1].fail(6, &failure(true));
        fail_over(&j, &mut files, 1);
        assert_eq!(files[2].dest_surl_uuid, None);
        assert!(derive_job_state(&mut j, &files, FileState::Failed, 6));
        assert_eq!(j.job_state, JobState::Failed);
        assert_eq!(files[2].file_state, FileState::NotUsed);
    }

    #[test]
    fn staging_finishes_stage_only_files_and_queues_the_others() {
        let mut j = job(JobType::Normal);
        j.job_state = JobState::Staging;
        let mut copy = file(1, 0, FileState::Staging);
        let mut only = file(2, 1, FileState::Staging);
        only.dest_surl = only.source_surl.clone();
        assert!(copy.start_staging(1, "h") && only.start_staging(1, "h"));
        assert!(!derive_job_state(
            &mut j,
            &[copy.clone(), only.clone()],
            FileState::Started,
            1
        ));
        assert!(copy.staged(2) && only.staged(2));
        assert_eq!(copy.file_state, FileState::Submitted);
        assert_eq!(only.file_state, FileState::Finished);
        assert!(derive_job_state(
            &mut j,
            &[copy, only],
            FileState::Submitted,
            2
        ));
        assert_eq!(j.job_state, JobState::Submitted);
    }

    #[test]
    fn canceled_files_cancel_the_job_keeping_the_cancel_reason() {
        let mut j = job(JobType::Normal);
        j.reason = Some(QUEUE_TIMEOUT_REASON.into());
        let mut f = file(1, 0, FileState::Submitted);
        f.cancel(3, QUEUE_TIMEOUT_REASON);
        assert!(derive_job_state(&mut j, &[f], FileState::Canceled, 3));
        assert_eq!(j.job_state, JobState::Canceled);
        assert_eq!(j.reason.as_deref(), Some(QUEUE_TIMEOUT_REASON));
    }

    #[test]
    fn terminal_files_never_change() {
        let mut f = file(1, 0, FileState::Active);
        f.finish(1, &ok(), false);
        assert!(!f.fail(2, &failure(false)));
        assert!(!f.requeue(2, 1, &failure(true)));
        assert!(!f.activate(2, None));
        assert_eq!(f.file_state, FileState::Finished);
    }
}
