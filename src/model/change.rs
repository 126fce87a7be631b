//! Changes users and operators make to stored jobs (cancel, priority, force-start), as pure
//! functions of a job and its files. A store backend loads the rows, applies one of these and
//! writes back what changed, all in one transaction: the rules live here once for every backend.

use super::job::{CANCEL_REASON, File, FileState, Job, JobChange};

/// A change to apply to each job of a list (`Store::change_jobs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEdit {
    /// `DELETE /jobs/{ids}`: the job and its unfinished files are canceled.
    Cancel,
    /// `POST /jobs/{ids}` with a priority: the job and its files take it (`None` or 0 leave it).
    Priority(Option<i64>),
    /// `DELETE /jobs/all`: unfinished files canceled with no finish time (the reference's bulk
    /// update), the job canceled.
    CancelAll,
}

/// Apply `edit` to one job; a terminal job is left as it is. For `CancelAll`, also the number
/// of files canceled.
pub fn edit_job(edit: &JobEdit, job: &mut Job, files: &mut [File], now: i64) -> (JobChange, usize) {
    match edit {
        JobEdit::Cancel => {
            if job.job_state.is_terminal() {
                return (JobChange::Terminal(job.clone()), 0);
            }
            job.cancel(now, CANCEL_REASON);
            for f in files.iter_mut() {
                f.cancel(now, CANCEL_REASON);
            }
            (JobChange::Changed(job.clone()), 0)
        }
        JobEdit::Priority(priority) => {
            if job.job_state.is_terminal() {
                return (JobChange::Terminal(job.clone()), 0);
            }
            if let Some(p) = priority.filter(|p| *p != 0) {
                let p = p.clamp(i32::MIN as i64, i32::MAX as i64) as i32;
                job.priority = p;
                for f in files.iter_mut() {
                    f.priority = p;
                }
            }
            (JobChange::Changed(job.clone()), 0)
        }
        JobEdit::CancelAll => {
            let mut n = 0;
            for f in files.iter_mut() {
                if f.file_state.is_active() {
                    f.file_state = FileState::Canceled;
                    f.reason = Some(CANCEL_REASON.to_string());
                    f.dest_surl_uuid = None;
                    f.finish_time = None;
                    n += 1;
                } else if f.file_state == FileState::TokenPrep {
                    // Deviation (see `FileState::is_cancelable`): nothing runs for them yet, so
                    // they end now.
                    f.file_state = FileState::Canceled;
                    f.reason = Some(CANCEL_REASON.to_string());
                    f.dest_surl_uuid = None;
                    f.finish_time = Some(now);
                    n += 1;
                }
            }
            if job.cancel(now, CANCEL_REASON) {
                (JobChange::Changed(job.clone()), n)
            } else {
                (JobChange::Terminal(job.clone()), n)
            }
        }
    }
}

/// `DELETE /jobs/{id}/files/{file_ids}`: one entry per wanted id (`None`: not a number), the
/// file's state after the call or a message; the job is canceled when no file is left active.
pub fn cancel_files(
    job: &mut Job,
    files: &mut [File],
    wanted: &[Option<u64>],
    now: i64,
) -> Vec<String> {
    let mut entries = Vec::with_capacity(wanted.len());
    for want in wanted {
        let file = want.and_then(|id| files.iter_mut().find(|f| f.file_id == id));
        match file {
            None => entries.push("File does not belong to the job".to_string()),
            Some(f) if !f.file_state.is_cancelable() => {
                entries.push(f.file_state.as_str().to_string())
            }
            Some(f) => {
                f.file_state = FileState::Canceled;
                f.finish_time = Some(now);
                f.dest_surl_uuid = None;
                entries.push(FileState::Canceled.as_str().to_string());
            }
        }
    }
    if !files.iter().any(|f| f.file_state.is_cancelable()) && !job.job_state.is_terminal() {
        job.job_state = super::job::JobState::Canceled;
        job.cancel_job = true;
        job.job_finished = Some(now);
    }
    entries
}

/// `POST /admin/force-start`: a SUBMITTED file becomes FORCE_START; false otherwise.
pub fn force_start(files: &mut [File], file_id: u64) -> bool {
    match files.iter_mut().find(|f| f.file_id == file_id) {
        Some(f) if f.file_state == FileState::Submitted => {
            f.file_state = FileState::ForceStart;
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::job::{
        JobState, JobType,
        fixtures::{file, job},
    };

    #[test]
    fn files_waiting_for_their_tokens_end_with_a_canceled_job() {
        let mut j = job(JobType::Normal);
        let mut files = vec![
            file(1, 0, FileState::TokenPrep),
            file(2, 1, FileState::Submitted),
        ];
        let (change, _) = edit_job(&JobEdit::Cancel, &mut j, &mut files, 10);
        assert!(matches!(change, JobChange::Changed(_)));
        assert!(files.iter().all(|f| f.file_state == FileState::Canceled));
        assert_eq!(files[0].finish_time, Some(10));

        // Canceling files one by one: the job stays while a file waits for its tokens.
        let mut j = job(JobType::Normal);
        let mut files = vec![
            file(1, 0, FileState::TokenPrep),
            file(2, 1, FileState::Submitted),
        ];
        assert_eq!(
            cancel_files(&mut j, &mut files, &[Some(2)], 10),
            ["CANCELED"]
        );
        assert_eq!(j.job_state, JobState::Submitted);
        assert_eq!(
            cancel_files(&mut j, &mut files, &[Some(1)], 11),
            ["CANCELED"]
        );
        assert_eq!(j.job_state, JobState::Canceled);
    }
}
