//! Jobs and files: the records FTS3 keeps per submission (§5 of the API spec), their states and
//! the transitions between them.
//!
//! Field names follow the reference's Python attribute names (what clients read). Rows are
//! stored through the store's versioned codec; the API layer builds the JSON views. Metadata is
//! kept as JSON text so the binary codec never has to encode a free-form value.

use serde::{Deserialize, Serialize};

/// Job states (`t_job.job_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum JobState {
    Staging,
    Archiving,
    QosTransition,
    QosRequestSubmitted,
    Submitted,
    Ready,
    Active,
    Finished,
    Failed,
    FinishedDirty,
    Canceled,
    Delete,
}

impl JobState {
    pub const ALL: [JobState; 12] = [
        JobState::Staging,
        JobState::Archiving,
        JobState::QosTransition,
        JobState::QosRequestSubmitted,
        JobState::Submitted,
        JobState::Ready,
        JobState::Active,
        JobState::Finished,
        JobState::Failed,
        JobState::FinishedDirty,
        JobState::Canceled,
        JobState::Delete,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Staging => "STAGING",
            JobState::Archiving => "ARCHIVING",
            JobState::QosTransition => "QOS_TRANSITION",
            JobState::QosRequestSubmitted => "QOS_REQUEST_SUBMITTED",
            JobState::Submitted => "SUBMITTED",
            JobState::Ready => "READY",
            JobState::Active => "ACTIVE",
            JobState::Finished => "FINISHED",
            JobState::Failed => "FAILED",
            JobState::FinishedDirty => "FINISHEDDIRTY",
            JobState::Canceled => "CANCELED",
            JobState::Delete => "DELETE",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Terminal states never change again (except by archiving).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Finished | JobState::Failed | JobState::FinishedDirty | JobState::Canceled
        )
    }
}

/// File states (`t_file.file_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FileState {
    Staging,
    Started,
    Submitted,
    Ready,
    Active,
    Archiving,
    QosTransition,
    QosRequestSubmitted,
    ForceStart,
    Finished,
    Failed,
    Canceled,
    NotUsed,
    OnHold,
    OnHoldStaging,
    TokenPrep,
}

impl FileState {
    pub const ALL: [FileState; 16] = [
        FileState::Staging,
        FileState::Started,
        FileState::Submitted,
        FileState::Ready,
        FileState::Active,
        FileState::Archiving,
        FileState::QosTransition,
        FileState::QosRequestSubmitted,
        FileState::ForceStart,
        FileState::Finished,
        FileState::Failed,
        FileState::Canceled,
        FileState::NotUsed,
        FileState::OnHold,
        FileState::OnHoldStaging,
        FileState::TokenPrep,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FileState::Staging => "STAGING",
            FileState::Started => "STARTED",
            FileState::Submitted => "SUBMITTED",
            FileState::Ready => "READY",
            FileState::Active => "ACTIVE",
            FileState::Archiving => "ARCHIVING",
            FileState::QosTransition => "QOS_TRANSITION",
            FileState::QosRequestSubmitted => "QOS_REQUEST_SUBMITTED",
            FileState::ForceStart => "FORCE_START",
            FileState::Finished => "FINISHED",
            FileState::Failed => "FAILED",
            FileState::Canceled => "CANCELED",
            FileState::NotUsed => "NOT_USED",
            FileState::OnHold => "ON_HOLD",
            FileState::OnHoldStaging => "ON_HOLD_STAGING",
            FileState::TokenPrep => "TOKEN_PREP",
        }
    }

    pub fn parse(s: &str) -> Option<FileState> {
        FileState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The reference's FileActiveStates: states a cancel acts on.
    /// What a cancellation ends: the active states and TOKEN_PREP.
    ///
    /// Deviation: the reference leaves TOKEN_PREP files untouched when it cancels, and its
    /// token daemon later queues them (SUBMITTED) in a canceled job; here they end with the
    /// job, so nothing of a canceled job can run.
    pub fn is_cancelable(self) -> bool {
        self.is_active() || self == FileState::TokenPrep
    }

    pub fn is_active(self) -> bool {
        matches!(
            self,
            FileState::Staging
                | FileState::Started
                | FileState::Submitted
                | FileState::Ready
                | FileState::Active
                | FileState::Archiving
                | FileState::QosTransition
                | FileState::QosRequestSubmitted
                | FileState::ForceStart
        )
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            FileState::Finished | FileState::Failed | FileState::Canceled
        )
    }
}

/// Job types: plain, multiple replicas, multihop, session reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JobType {
    /// `N`
    Normal,
    /// `R`
    MultipleReplica,
    /// `H`
    Multihop,
    /// `Y`
    SessionReuse,
}

impl JobType {
    pub fn as_str(self) -> &'static str {
        match self {
            JobType::Normal => "N",
            JobType::MultipleReplica => "R",
            JobType::Multihop => "H",
            JobType::SessionReuse => "Y",
        }
    }
}

/// A JSON value kept as its text (see the module note).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct JsonText(pub Option<String>);

impl JsonText {
    pub fn from_value(value: Option<&serde_json::Value>) -> JsonText {
        JsonText(value.map(|v| v.to_string()))
    }

    pub fn to_value(&self) -> serde_json::Value {
        self.0
            .as_deref()
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or(serde_json::Value::Null)
    }
}

/// A job (`t_job`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub job_id: String,
    pub job_state: JobState,
    pub job_type: JobType,
    pub cancel_job: bool,
    pub source_se: Option<String>,
    pub dest_se: Option<String>,
    pub user_dn: String,
    /// The delegation id of the submitter's credential.
    pub cred_id: String,
    pub vo_name: String,
    /// FQANs of the submitter, space-joined as the reference keeps them.
    pub voms_cred: Option<String>,
    pub reason: Option<String>,
    pub submit_time: i64,
    pub submit_host: String,
    pub priority: i32,
    /// Absolute expiry (unix seconds) of the job in the queue, if any.
    pub max_time_in_queue: Option<i64>,
    pub destination_spacetoken: Option<String>,
    pub source_spacetoken: Option<String>,
    pub internal_job_params: Option<String>,
    pub overwrite_flag: Option<String>,
    pub job_finished: Option<i64>,
    pub copy_pin_lifetime: i64,
    /// `verify_checksum` in JSON (`checksum_method` column): one of n/s/t/b (or what the client sent).
    pub checksum_method: Option<String>,
    pub bring_online: i64,
    pub archive_timeout: i64,
    pub retry: i64,
    pub retry_delay: i64,
    pub target_qos: Option<String>,
    pub job_metadata: JsonText,
    pub dst_file_report: bool,
    pub os_project_id: Option<String>,
}

/// A transfer (`t_file`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct File {
    pub file_id: u64,
    pub file_index: u32,
    pub job_id: String,
    pub file_state: FileState,
    pub transfer_host: Option<String>,
    pub source_surl: String,
    pub dest_surl: String,
    pub source_se: String,
    pub dest_se: String,
    pub staging_host: Option<String>,
    pub reason: Option<String>,
    /// Retryable failures so far (`recoverable` in JSON is `current_failures > 0`).
    pub current_failures: u32,
    pub filesize: Option<u64>,
    pub checksum: Option<String>,
    pub finish_time: Option<i64>,
    pub start_time: Option<i64>,
    pub internal_file_params: Option<String>,
    pub pid: Option<u32>,
    pub tx_duration: Option<f64>,
    pub throughput: Option<f64>,
    /// Attempts made so far.
    pub retry: u32,
    pub user_filesize: f64,
    pub file_metadata: JsonText,
    pub selection_strategy: String,
    pub staging_start: Option<i64>,
    pub staging_finished: Option<i64>,
    pub bringonline_token: Option<String>,
    pub retry_timestamp: Option<i64>,
    pub log_file: Option<String>,
    pub log_debug: bool,
    pub hashed_id: u32,
    pub vo_name: String,
    pub activity: String,
    pub transferred: u64,
    pub priority: i32,
    pub dest_surl_uuid: Option<String>,
    pub archive_start_time: Option<i64>,
    pub archive_finish_time: Option<i64>,
    pub staging_metadata: JsonText,
    pub archive_metadata: JsonText,
    pub scitag: Option<u32>,
    pub src_token_id: Option<String>,
    pub dst_token_id: Option<String>,
    pub file_state_initial: Option<String>,
    pub error_scope: Option<String>,
    pub error_phase: Option<String>,
    pub reason_class: Option<String>,
}

/// The reason written on user cancellation.
pub const CANCEL_REASON: &str = "Job canceled by the user";

impl Job {
    /// Cancel an active job (the reference's `DELETE /jobs/{id}`); false if already terminal.
    pub fn cancel(&mut self, now: i64, reason: &str) -> bool {
        if self.job_state.is_terminal() {
            return false;
        }
        self.job_state = JobState::Canceled;
        self.cancel_job = true;
        self.job_finished = Some(now);
        self.reason = Some(reason.to_string());
        true
    }
}

impl File {
    /// Cancel an active (or TOKEN_PREP) file; false (unchanged) otherwise. A file with a running
    /// process keeps `finish_time` unset: the transfer agent finishes it.
    pub fn cancel(&mut self, now: i64, reason: &str) -> bool {
        if !self.file_state.is_cancelable() {
            return false;
        }
        self.file_state = FileState::Canceled;
        self.reason = Some(reason.to_string());
        self.dest_surl_uuid = None;
        self.finish_time = if self.pid.is_some() { None } else { Some(now) };
        true
    }
}

/// Why one submission of a batch was not stored (the others are unaffected).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertConflict {
    /// A job with this id exists (deterministic ids: the sid was used before).
    DuplicateJob,
    /// A queued file already has this destination (CheckDuplicates).
    DuplicateDestination(String),
}

/// Outcome of a cancel or modify on one job.
#[derive(Debug, Clone)]
pub enum JobChange {
    Changed(Job),
    /// Already terminal: returned unchanged ("304 Not Modified" in the body).
    Terminal(Job),
}

/// Rows for tests: every field set, the ones a test cares about overridden by the caller.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    pub(crate) fn job(job_type: JobType) -> Job {
        Job {
            job_id: "j".into(),
            job_state: JobState::Submitted,
            job_type,
            cancel_job: false,
            source_se: Some("mock://a".into()),
            dest_se: Some("mock://b".into()),
            user_dn: "/CN=u".into(),
            cred_id: "c".into(),
            vo_name: "vo".into(),
            voms_cred: None,
            reason: None,
            submit_time: 0,
            submit_host: "h".into(),
            priority: 3,
            max_time_in_queue: None,
            destination_spacetoken: None,
            source_spacetoken: None,
            internal_job_params: None,
            overwrite_flag: None,
            job_finished: None,
            copy_pin_lifetime: -1,
            checksum_method: None,
            bring_online: -1,
            archive_timeout: -1,
            retry: 0,
            retry_delay: 0,
            target_qos: None,
            job_metadata: JsonText::default(),
            dst_file_report: false,
            os_project_id: None,
        }
    }

    pub(crate) fn file(id: u64, index: u32, state: FileState) -> File {
        File {
            file_id: id,
            file_index: index,
            job_id: "j".into(),
            file_state: state,
            transfer_host: None,
            source_surl: format!("mock://a/{id}"),
            dest_surl: format!("mock://b/{id}"),
            source_se: "mock://a".into(),
            dest_se: "mock://b".into(),
            staging_host: None,
            reason: None,
            current_failures: 0,
            filesize: None,
            checksum: None,
            finish_time: None,
            start_time: None,
            internal_file_params: None,
            pid: None,
            tx_duration: None,
            throughput: None,
            retry: 0,
            user_filesize: 0.0,
            file_metadata: JsonText::default(),
            selection_strategy: "auto".into(),
            staging_start: None,
            staging_finished: None,
            bringonline_token: None,
            retry_timestamp: None,
            log_file: None,
            log_debug: false,
            hashed_id: 0,
            vo_name: "vo".into(),
            activity: "default".into(),
            transferred: 0,
            priority: 3,
            dest_surl_uuid: None,
            archive_start_time: None,
            archive_finish_time: None,
            staging_metadata: JsonText::default(),
            archive_metadata: JsonText::default(),
            scitag: None,
            src_token_id: None,
            dst_token_id: None,
            file_state_initial: None,
            error_scope: None,
            error_phase: None,
            reason_class: None,
        }
    }

    /// A file of job `j` on the link `src` → `dst` (SE names), at `file_index` `index`.
    pub(crate) fn file_on(index: u32, src: &str, dst: &str, state: FileState) -> File {
        File {
            file_index: index,
            source_surl: format!("{src}/f"),
            dest_surl: format!("{dst}/f"),
            source_se: src.into(),
            dest_se: dst.into(),
            ..file(0, index, state)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_round_trip() {
        for s in JobState::ALL {
            assert_eq!(JobState::parse(s.as_str()), Some(s));
        }
        for s in FileState::ALL {
            assert_eq!(FileState::parse(s.as_str()), Some(s));
        }
        assert_eq!(JobState::parse("submitted"), None);
    }

    #[test]
    fn active_and_terminal_sets_follow_the_reference() {
        assert!(FileState::ForceStart.is_active());
        assert!(!FileState::NotUsed.is_active() && !FileState::NotUsed.is_terminal());
        assert!(!FileState::OnHold.is_active());
        assert!(JobState::FinishedDirty.is_terminal());
        assert!(!JobState::Active.is_terminal());
    }
}
