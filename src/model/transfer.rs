//! What the transfer engine and the store say to each other: scheduler queues, events reported
//! by transfers, what applying them did, the retry history, and the load counted against link
//! and storage caps. Every store backend speaks these types.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{
    job::FileState,
    job::JobState,
    lifecycle::{Failure, Success},
};

/// One retried attempt (`t_file_retry_errors`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryRow {
    pub attempt: u32,
    pub datetime: i64,
    pub reason: String,
    pub transfer_host: Option<String>,
    pub log_file: Option<String>,
}

/// A scheduler queue: a link and a VO.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueKey {
    pub source_se: String,
    pub dest_se: String,
    pub vo_name: String,
}

/// Something that happened to a file, reported by the engine.
#[derive(Debug, Clone)]
pub enum Event {
    /// READY → ACTIVE, writing its log to `log_file`.
    Started {
        file_id: u64,
        log_file: Option<String>,
    },
    Finished {
        file_id: u64,
        success: Success,
    },
    /// The attempt failed; the store decides between a retry and FAILED.
    Failed {
        file_id: u64,
        failure: Failure,
    },
    /// The transfer was stopped because the file was canceled meanwhile.
    Aborted {
        file_id: u64,
    },
    /// The service is stopping: the transfer goes back to the queue, no attempt counted.
    Interrupted {
        file_id: u64,
    },
    /// The storage accepted the bring-online request of a STARTED file: its request id (the
    /// Tape REST API's `requestId`, gfal2's token) is kept as `bringonline_token`, so polling
    /// resumes after a restart and the request can be canceled and released.
    StagingStarted {
        file_id: u64,
        token: String,
    },
    /// STARTED → SUBMITTED or FINISHED.
    Staged {
        file_id: u64,
    },
    StagingFailed {
        file_id: u64,
        failure: Failure,
    },
    /// ARCHIVING → FINISHED.
    Archived {
        file_id: u64,
    },
    ArchiveFailed {
        file_id: u64,
        failure: Failure,
    },
    /// TOKEN_PREP → the state it was submitted in: its tokens were exchanged (or are
    /// unmanaged).
    TokensReady {
        file_id: u64,
    },
    /// TOKEN_PREP → FAILED: a token exchange failed.
    TokensFailed {
        file_id: u64,
        failure: Failure,
    },
}

impl Event {
    pub fn file_id(&self) -> u64 {
        match self {
            Event::Started { file_id, .. }
            | Event::Finished { file_id, .. }
            | Event::Failed { file_id, .. }
            | Event::Aborted { file_id }
            | Event::Interrupted { file_id }
            | Event::StagingStarted { file_id, .. }
            | Event::Staged { file_id }
            | Event::StagingFailed { file_id, .. }
            | Event::Archived { file_id }
            | Event::ArchiveFailed { file_id, .. }
            | Event::TokensReady { file_id }
            | Event::TokensFailed { file_id, .. } => *file_id,
        }
    }
}

/// What an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The file is now in this state.
    Moved(FileState),
    /// The attempt failed and the file is queued again (attempt number).
    Retried(u32),
    /// Found running at start after a crash: queued again, no attempt counted (the file's
    /// interruption count).
    Interrupted(u32),
    /// The file was not where the event expected it (late report, lost race): nothing changed.
    Ignored(FileState),
    /// No such file.
    Missing,
}

/// The result of applying one event, with the job it touched.
#[derive(Debug, Clone)]
pub struct Applied {
    pub file_id: u64,
    pub job_id: String,
    pub outcome: Outcome,
    /// The job's state after the batch.
    pub job_state: JobState,
    /// Files the event queued (next replica, next hop).
    pub promoted: Vec<u64>,
}

/// A link: (source storage, destination storage).
pub type Link = (String, String);

/// Transfers running now, counted against the link and storage caps. Staging requests and
/// archive monitoring are not transfers and are not counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Load {
    pub per_link: HashMap<Link, usize>,
    /// By source storage.
    pub outbound: HashMap<String, usize>,
    /// By destination storage.
    pub inbound: HashMap<String, usize>,
}

impl Load {
    /// Count one more transfer on `link`.
    pub fn add(&mut self, link: &Link) {
        *self.per_link.entry(link.clone()).or_default() += 1;
        *self.outbound.entry(link.0.clone()).or_default() += 1;
        *self.inbound.entry(link.1.clone()).or_default() += 1;
    }
}

/// The caps a claim must respect, as the scheduler computed them for the links it picked from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caps {
    pub per_link: HashMap<Link, usize>,
    /// By source storage.
    pub outbound: HashMap<String, usize>,
    /// By destination storage.
    pub inbound: HashMap<String, usize>,
}

impl Caps {
    /// Whether one more transfer on `link` stays within the caps given `load` (a link or storage
    /// without a cap here is not limited).
    pub fn admits(&self, load: &Load, link: &Link) -> bool {
        within(&self.per_link, &load.per_link, link)
            && within(&self.outbound, &load.outbound, &link.0)
            && within(&self.inbound, &load.inbound, &link.1)
    }
}

/// Whether the count of `key` is below its cap (no cap: yes).
fn within<K: std::hash::Hash + Eq>(
    caps: &HashMap<K, usize>,
    counts: &HashMap<K, usize>,
    key: &K,
) -> bool {
    match caps.get(key) {
        Some(cap) => counts.get(key).copied().unwrap_or(0) < *cap,
        None => true,
    }
}

/// A claim: files the scheduler picked (SUBMITTED/FORCE_START → READY, or STAGING → STARTED).
#[derive(Debug, Clone)]
pub struct Claim {
    pub file_ids: Vec<u64>,
    /// The node taking them (`transfer_host` / `staging_host`).
    pub host: String,
    pub now: i64,
    /// The link and storage caps. A store shared by several nodes checks them again inside the
    /// claim's transaction against what runs on every node, and leaves out what would exceed
    /// them; the embedded store has a single scheduler, which already dealt within them.
    pub caps: Caps,
}
