//! Filters of the listings the store serves (jobs, files, link pairs). Every set field must
//! match.

use super::job::{FileState, JobState};

/// Filters of a job listing.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub user_dn: Option<String>,
    pub vo_name: Option<String>,
    pub cred_id: Option<String>,
    pub states: Option<Vec<JobState>>,
    pub source_se: Option<String>,
    pub dest_se: Option<String>,
    /// Only jobs that are not finished (`job_finished IS NULL`).
    pub unfinished_only: bool,
    /// Only jobs finished at or after this time.
    pub finished_since: Option<i64>,
    /// Newest first, at most this many.
    pub limit: Option<usize>,
}

/// Filters of a file listing.
#[derive(Debug, Clone, Default)]
pub struct FileFilter {
    pub vo_name: Option<String>,
    pub states: Option<Vec<FileState>>,
    pub source_se: Option<String>,
    pub dest_se: Option<String>,
    pub dest_surl: Option<String>,
    pub unfinished_only: bool,
    pub finished_since: Option<i64>,
    pub limit: usize,
}

/// Filters of the pair status.
#[derive(Debug, Clone, Default)]
pub struct PairFilter {
    pub vo_name: Option<String>,
    pub source_se: Option<String>,
    pub dest_se: Option<String>,
}
