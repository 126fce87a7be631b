//! Bans (`../shared/spec/fts-rest-api.md` §3.6): storage elements banned for a VO, and users
//! banned by DN; what a ban does to queued work and to new submissions. Pure: the store finds
//! the jobs a ban touches and applies these functions inside its write transaction.
//!
//! Invariants: a cancel ban leaves no live file of the banned storage (and promotes one
//! alternative replica per file index); a wait ban only moves SUBMITTED/STAGING files to their
//! ON_HOLD twins, and lifting it moves them back.

use serde::{Deserialize, Serialize};

use super::job::{File, FileState, Job, JobState};

/// The reason written on files canceled by a storage ban.
pub const STORAGE_BANNED_REASON: &str = "Storage banned";
/// The reason written on files and jobs canceled by a user ban.
pub const USER_BANNED_REASON: &str = "User banned";
/// The VO that makes a storage ban apply to every VO.
pub const ANY_VO: &str = "*";

/// What a storage ban does (`t_bad_ses.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BanStatus {
    /// Queued work is canceled, new submissions refused.
    Cancel,
    /// Queued work waits (ON_HOLD), new submissions refused.
    Wait,
    /// Queued work waits and new submissions are accepted on hold ("wait, allow submit").
    WaitAllowSubmit,
}

impl BanStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BanStatus::Cancel => "CANCEL",
            BanStatus::Wait => "WAIT",
            BanStatus::WaitAllowSubmit => "WAIT_AS",
        }
    }

    /// The reference's reading of `status` and `allow_submit`, with its messages.
    pub fn from_request(status: &str, allow_submit: bool) -> Result<BanStatus, &'static str> {
        match (status.to_ascii_lowercase().as_str(), allow_submit) {
            ("cancel", false) => Ok(BanStatus::Cancel),
            ("cancel", true) => Err("allow_submit and status = CANCEL can not be combined"),
            ("wait", false) => Ok(BanStatus::Wait),
            ("wait", true) => Ok(BanStatus::WaitAllowSubmit),
            _ => Err("status can only be cancel or wait"),
        }
    }

    pub fn is_wait(self) -> bool {
        !matches!(self, BanStatus::Cancel)
    }
}

/// A banned storage element (`t_bad_ses`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeBan {
    pub se: String,
    pub vo: String,
    pub message: String,
    pub addition_time: i64,
    pub admin_dn: String,
    pub status: BanStatus,
}

/// A banned user (`t_bad_dns`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnBan {
    pub dn: String,
    pub message: String,
    pub addition_time: i64,
    pub admin_dn: String,
}

/// Does a file belong to the work a ban of `se` for `vo` covers?
pub fn covers(file: &File, se: &str, vo: &str) -> bool {
    (file.source_se == se || file.dest_se == se) && (vo == ANY_VO || file.vo_name == vo)
}

/// A cancel ban on one job: covered live or NOT_USED files are canceled, one NOT_USED sibling
/// per canceled file's index is promoted, and the job is canceled when nothing live is left.
/// Returns whether the job changed.
pub fn cancel_storage(job: &mut Job, files: &mut [File], se: &str, vo: &str, now: i64) -> bool {
    let mut changed = false;
    let mut canceled_indexes = Vec::new();
    for f in files.iter_mut() {
        let live = f.file_state.is_active() || f.file_state == FileState::NotUsed;
        if live && covers(f, se, vo) {
            f.file_state = FileState::Canceled;
            f.reason = Some(STORAGE_BANNED_REASON.to_string());
            f.finish_time = Some(now);
            f.dest_surl_uuid = None;
            canceled_indexes.push(f.file_index);
            changed = true;
        }
    }
    for index in canceled_indexes {
        // An index that still has a live replica needs no promotion.
        let live = files
            .iter()
            .any(|f| f.file_index == index && f.file_state.is_active());
        if live {
            continue;
        }
        if let Some(sibling) = files
            .iter_mut()
            .find(|f| f.file_index == index && f.file_state == FileState::NotUsed)
        {
            sibling.file_state = FileState::Submitted;
        }
    }
    let all_done = files.iter().all(|f| f.file_state.is_terminal());
    if changed && all_done && !job.job_state.is_terminal() {
        job.job_state = JobState::Canceled;
        job.job_finished = Some(now);
        job.reason = None;
    }
    changed
}

/// A wait ban on one job: covered SUBMITTED/STAGING files go on hold. Returns whether anything
/// changed.
pub fn hold_storage(files: &mut [File], se: &str, vo: &str) -> bool {
    let mut changed = false;
    for f in files.iter_mut().filter(|f| covers(f, se, vo)) {
        changed |= hold(f);
    }
    changed
}

/// SUBMITTED → ON_HOLD, STAGING → ON_HOLD_STAGING.
pub fn hold(file: &mut File) -> bool {
    let next = match file.file_state {
        FileState::Submitted => FileState::OnHold,
        FileState::Staging => FileState::OnHoldStaging,
        _ => return false,
    };
    file.file_state = next;
    true
}

/// Lifting a ban: covered ON_HOLD/ON_HOLD_STAGING files go back to the queue, unless
/// `still_held` says another wait ban (the file's other storage) keeps them waiting.
pub fn release_storage(
    files: &mut [File],
    se: &str,
    vo: &str,
    still_held: impl Fn(&File) -> bool,
) -> bool {
    let mut changed = false;
    for f in files.iter_mut().filter(|f| covers(f, se, vo)) {
        let next = match f.file_state {
            FileState::OnHold => FileState::Submitted,
            FileState::OnHoldStaging => FileState::Staging,
            _ => continue,
        };
        if still_held(f) {
            continue;
        }
        f.file_state = next;
        changed = true;
    }
    changed
}

/// A user ban on one job: an unfinished active job and its live files are canceled with
/// [`USER_BANNED_REASON`]. Returns whether the job was canceled.
pub fn cancel_user_job(job: &mut Job, files: &mut [File], now: i64) -> bool {
    if job.job_state.is_terminal() || job.job_finished.is_some() {
        return false;
    }
    for f in files.iter_mut().filter(|f| f.file_state.is_active()) {
        f.file_state = FileState::Canceled;
        f.reason = Some(USER_BANNED_REASON.to_string());
        f.finish_time = Some(now);
        f.dest_surl_uuid = None;
    }
    job.job_state = JobState::Canceled;
    job.reason = Some(USER_BANNED_REASON.to_string());
    job.job_finished = Some(now);
    true
}

/// Submission-time check (§4.6, last bullet): `ban_of(se)` gives the ban that applies to the
/// submitter's VO (its own or `*`). Any ban but wait-allow-submit refuses the job with
/// `"<se> is banned"` (source checked first, file by file); under wait-allow-submit the file
/// starts on hold.
pub fn apply_to_submission(
    files: &mut [File],
    ban_of: impl Fn(&str) -> Option<BanStatus>,
) -> Result<(), String> {
    for f in files.iter_mut() {
        let mut held = false;
        for se in [f.source_se.clone(), f.dest_se.clone()] {
            match ban_of(&se) {
                None => {}
                Some(BanStatus::WaitAllowSubmit) => held = true,
                Some(_) => return Err(format!("{se} is banned")),
            }
        }
        if held {
            hold(f);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(index: u32, src: &str, dst: &str, state: FileState) -> File {
        crate::model::job::fixtures::file_on(index, src, dst, state)
    }

    fn job() -> Job {
        crate::model::job::fixtures::job(crate::model::job::JobType::MultipleReplica)
    }

    #[test]
    fn status_follows_the_reference_rules() {
        assert_eq!(
            BanStatus::from_request("CANCEL", false),
            Ok(BanStatus::Cancel)
        );
        assert_eq!(BanStatus::from_request("Wait", false), Ok(BanStatus::Wait));
        assert_eq!(
            BanStatus::from_request("wait", true),
            Ok(BanStatus::WaitAllowSubmit)
        );
        assert_eq!(
            BanStatus::from_request("cancel", true),
            Err("allow_submit and status = CANCEL can not be combined")
        );
        assert_eq!(
            BanStatus::from_request("later", false),
            Err("status can only be cancel or wait")
        );
    }

    #[test]
    fn cancel_promotes_an_alternative_replica() {
        let mut j = job();
        let mut files = vec![
            file(0, "mock://a", "mock://d", FileState::Submitted),
            file(0, "mock://b", "mock://d", FileState::NotUsed),
        ];
        assert!(cancel_storage(&mut j, &mut files, "mock://a", "vo", 7));
        assert_eq!(files[0].file_state, FileState::Canceled);
        assert_eq!(files[0].reason.as_deref(), Some(STORAGE_BANNED_REASON));
        assert_eq!(files[0].finish_time, Some(7));
        assert_eq!(files[1].file_state, FileState::Submitted);
        assert_eq!(j.job_state, JobState::Submitted);
        // Banning the second replica's storage leaves nothing: the job is canceled.
        assert!(cancel_storage(&mut j, &mut files, "mock://b", "vo", 8));
        assert_eq!(j.job_state, JobState::Canceled);
        assert_eq!(j.job_finished, Some(8));
        assert_eq!(j.reason, None);
    }

    #[test]
    fn bans_are_scoped_to_a_vo_or_all() {
        let mut j = job();
        let mut files = vec![file(0, "mock://a", "mock://d", FileState::Submitted)];
        assert!(!cancel_storage(&mut j, &mut files, "mock://a", "other", 1));
        assert!(!hold_storage(&mut files, "mock://x", "vo"));
        assert!(hold_storage(&mut files, "mock://d", ANY_VO));
        assert_eq!(files[0].file_state, FileState::OnHold);
    }

    #[test]
    fn wait_holds_and_release_restores_unless_still_held() {
        let mut files = vec![
            file(0, "mock://a", "mock://d", FileState::Submitted),
            file(1, "mock://a", "mock://d", FileState::Staging),
            file(2, "mock://a", "mock://d", FileState::Active),
        ];
        assert!(hold_storage(&mut files, "mock://a", "vo"));
        let states: Vec<_> = files.iter().map(|f| f.file_state).collect();
        assert_eq!(
            states,
            vec![
                FileState::OnHold,
                FileState::OnHoldStaging,
                FileState::Active
            ]
        );
        assert!(!release_storage(&mut files, "mock://a", "vo", |_| true));
        assert!(release_storage(&mut files, "mock://a", "vo", |_| false));
        let states: Vec<_> = files.iter().map(|f| f.file_state).collect();
        assert_eq!(
            states,
            vec![FileState::Submitted, FileState::Staging, FileState::Active]
        );
    }

    #[test]
    fn user_ban_cancels_unfinished_jobs_only() {
        let mut j = job();
        let mut files = vec![
            file(0, "mock://a", "mock://d", FileState::Submitted),
            file(1, "mock://a", "mock://d", FileState::Finished),
        ];
        assert!(cancel_user_job(&mut j, &mut files, 5));
        assert_eq!(j.reason.as_deref(), Some(USER_BANNED_REASON));
        assert_eq!(files[0].file_state, FileState::Canceled);
        assert_eq!(files[1].file_state, FileState::Finished);
        assert!(!cancel_user_job(&mut j, &mut files, 6));
    }

    #[test]
    fn submission_refuses_or_holds() {
        let mut files = vec![file(0, "mock://a", "mock://d", FileState::Submitted)];
        let refused = apply_to_submission(&mut files, |se| {
            (se == "mock://d" || se == "mock://a").then_some(BanStatus::Wait)
        });
        assert_eq!(refused, Err("mock://a is banned".to_string()));
        apply_to_submission(&mut files, |se| {
            (se == "mock://d").then_some(BanStatus::WaitAllowSubmit)
        })
        .unwrap();
        assert_eq!(files[0].file_state, FileState::OnHold);
    }
}
