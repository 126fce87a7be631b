//! Jobs: submission (delegation checks, schema and semantic validation, transfer tokens,
//! group-committed insert), status, listing, cancellation and priority changes, with the
//! reference's authorization rules applied to every job touched (owner, VO, level).
//!
//! Token submissions (spec fts-rest-api.md §4.9): token users need no delegated proxy; every
//! transfer token must validate (signature, time claims, a configured issuer); tape is refused
//! to token users; the tokens are stored sealed and the files whose managed tokens have no
//! refresh token yet wait in TOKEN_PREP for the exchange.

use std::sync::Arc;

use super::{Service, ServiceError, query};
use crate::model::{
    ban,
    change::JobEdit,
    identity::{AuthMethod, Operation, User},
    job::{File, FileState, InsertConflict, Job, JobChange, JobState, JobType},
    query::{FileFilter, JobFilter},
    submit::{self, Submission, SubmitContext, SubmitError},
    submit_schema, time,
    token::{self as tok, msg as token_msg},
    transfer::RetryRow,
};

/// Delegated credentials must outlive a submission by this much (the reference's one hour).
pub const MIN_CREDENTIAL_LIFETIME: i64 = 3600;
/// `GET /jobs?limit=` upper bound (the reference's).
pub const MAX_LIST_LIMIT: usize = 500;
/// Jobs canceled per transaction by `DELETE /jobs/all`: one commit stays short however many
/// jobs are active.
const CANCEL_ALL_BATCH: usize = 1000;
/// `GET /files` returns at most this many files.
pub const MAX_FILES_LIMIT: usize = 1000;

/// Why one job of a multi-job request was not served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobError {
    NotFound(String),
    Forbidden(String),
}

impl JobError {
    pub fn job_id(&self) -> &str {
        match self {
            JobError::NotFound(id) | JobError::Forbidden(id) => id,
        }
    }
}

/// A job with its files (empty unless asked for), or why the caller cannot have it.
pub type JobLookup = Result<(Job, Vec<File>), JobError>;

/// `GET /jobs` query parameters, as received.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub user_dn: Option<String>,
    pub vo_name: Option<String>,
    pub dlg_id: Option<String>,
    pub state_in: Option<String>,
    pub source_se: Option<String>,
    pub dest_se: Option<String>,
    pub limit: Option<String>,
    pub time_window: Option<String>,
}

/// `GET /files` query parameters.
#[derive(Debug, Clone, Default)]
pub struct FilesQuery {
    pub vo_name: Option<String>,
    pub state_in: Option<String>,
    pub source_se: Option<String>,
    pub dest_se: Option<String>,
    pub dest_surl: Option<String>,
    pub time_window: Option<String>,
    pub limit: Option<String>,
}

/// A `POST /jobs` body, parsed at the edge: a JSON object that passed the submission schema,
/// or why it is not one. The reason is given only after the caller's rights and delegation are
/// checked, in the reference's order. The object itself is read by `model::submit`, which keeps
/// the reference's dictionary semantics and messages.
#[derive(Debug)]
pub struct SubmitRequest(Result<serde_json::Map<String, serde_json::Value>, ServiceError>);

impl SubmitRequest {
    pub fn parse(body: serde_json::Value) -> SubmitRequest {
        SubmitRequest(match submit_schema::validate(&body) {
            Err(m) => Err(ServiceError::BadRequest(m)),
            Ok(()) => match body {
                serde_json::Value::Object(map) => Ok(map),
                _ => Err(ServiceError::BadRequest("Expecting a dictionary".into())),
            },
        })
    }
}

/// `POST /jobs/{ids}` body: the new priority (`None`: unchanged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PriorityRequest(pub Option<i64>);

impl PriorityRequest {
    /// `{"params": {"priority": n}}`, with Python's int conversion.
    pub fn parse(body: &serde_json::Value) -> Result<PriorityRequest, ServiceError> {
        match body.get("params").and_then(|p| p.get("priority")) {
            None | Some(serde_json::Value::Null) => Ok(PriorityRequest(None)),
            Some(v) => submit::python_int(v)
                .map(|p| PriorityRequest(Some(p)))
                .ok_or_else(|| ServiceError::BadRequest("Invalid priority value".into())),
        }
    }
}

/// Counts of `DELETE /jobs/all`.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct CancelAllCounts {
    pub affected_files: usize,
    pub affected_dm: usize,
    pub affected_jobs: usize,
}

fn forbidden(m: &str) -> ServiceError {
    ServiceError::Forbidden(m.to_string())
}

fn split_list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|x| !x.is_empty())
}

impl Service {
    fn require_transfer(&self, user: &User) -> Result<(), ServiceError> {
        if user.granted_level_for(Operation::Transfer).is_none() {
            return Err(forbidden("Not enough permissions"));
        }
        Ok(())
    }

    /// The reference's `_get_job`: the job, if it exists and the caller may see it.
    fn check_job(&self, user: &User, job: Option<Job>, id: &str) -> Result<Job, JobError> {
        let job = job.ok_or_else(|| JobError::NotFound(id.to_string()))?;
        if !user.authorized(Operation::Transfer, Some(&job.user_dn), Some(&job.vo_name)) {
            return Err(JobError::Forbidden(id.to_string()));
        }
        Ok(job)
    }

    /// `POST /jobs`: returns the new job id.
    /// `bearer`: the token of the request's `Authorization: Bearer` header (token users).
    pub async fn submit(
        self: &Arc<Self>,
        user: &User,
        request: SubmitRequest,
        bearer: Option<&str>,
    ) -> Result<String, ServiceError> {
        self.require_transfer(user)?;
        let delegation_id = user.delegation_id.clone().unwrap_or_default();
        if user.method == AuthMethod::Certificate {
            let credential = self.store.credential(&delegation_id, &user.user_dn).await?;
            let Some(credential) = credential else {
                return Err(ServiceError::NeedDelegation(format!(
                    "No delegation found for \"{}\"",
                    user.user_dn
                )));
            };
            let left = credential.termination_time - time::now();
            if left < 0 {
                return Err(ServiceError::NeedDelegation(format!(
                    "The delegated credentials expired {} seconds ago ({delegation_id})",
                    -left
                )));
            }
            if left < MIN_CREDENTIAL_LIFETIME {
                return Err(ServiceError::NeedDelegation(format!(
                    "The delegated credentials has less than one hour left ({delegation_id})"
                )));
            }
        }
        let map = request.0?;
        let vo = user.vos.first().cloned().unwrap_or_default();
        // The builder is pure: it asks queue lengths through a function. A first build records
        // which (source, destination) queues the replica selection wants; only then are they
        // read from the store (asynchronously), and the job is built again with the answers.
        // Plain jobs need no counts and are built once.
        let wanted = std::sync::Mutex::new(Vec::<(String, String)>::new());
        let record = |src: &str, dst: &str, _vo: &str| {
            if let Ok(mut w) = wanted.lock() {
                w.push((src.to_string(), dst.to_string()));
            }
            0
        };
        let bearer = bearer.filter(|_| user.method == AuthMethod::Oauth2);
        let mut submission = self.build(user, &map, &delegation_id, &vo, &record, bearer)?;
        let wanted = wanted.into_inner().unwrap_or_default();
        if !wanted.is_empty() {
            let mut counts = std::collections::HashMap::new();
            for (src, dst) in wanted {
                let n = self
                    .store
                    .queued_counts(std::slice::from_ref(&src), &dst, &vo)
                    .await?;
                counts.insert((src, dst), n.first().copied().unwrap_or(0));
            }
            let lookup = |src: &str, dst: &str, _vo: &str| {
                counts
                    .get(&(src.to_string(), dst.to_string()))
                    .copied()
                    .unwrap_or(0)
            };
            submission = self.build(user, &map, &delegation_id, &vo, &lookup, bearer)?;
        }
        if !submission.tokens.is_empty() || user.method == AuthMethod::Oauth2 {
            self.check_tokens(user, &submission, bearer).await?;
        }
        // Bans apply last, as in the reference, on the built files: the builder stays pure and
        // the bans of the submitter's VO are read once per submission.
        let bans = self.store.se_bans_for_vo(&vo).await?;
        if !bans.is_empty() {
            ban::apply_to_submission(&mut submission.files, |se| bans.get(se).copied())
                .map_err(ServiceError::Forbidden)?;
        }
        let job_id = submission.job.job_id.clone();
        let mut held = 0;
        if !submission.tokens.is_empty() {
            let ready = self
                .store
                .put_tokens(&submission.tokens, time::now())
                .await?;
            let ready: std::collections::HashSet<&str> = submission
                .tokens
                .iter()
                .zip(ready)
                .filter(|(_, ready)| *ready)
                .map(|(t, _)| t.token_id.as_str())
                .collect();
            held = submit::hold_for_tokens(&mut submission.files, |id| ready.contains(id));
        }
        match self
            .store
            .submit((submission.job, submission.files))
            .await?
        {
            Ok(()) => {
                self.wake.notify_one();
                if held > 0 {
                    tracing::info!(job_id = %job_id, files = held, "files wait for a token exchange");
                    self.token_wake.notify_one();
                }
                tracing::debug!(job_id = %job_id, "job submitted");
                Ok(job_id)
            }
            Err(InsertConflict::DuplicateJob) => Err(ServiceError::Conflict(
                "The sid provided by the user is duplicated".into(),
            )),
            Err(InsertConflict::DuplicateDestination(dest)) => Err(ServiceError::Conflict(
                format!("The submission is duplicated (destination {dest} is already queued)"),
            )),
        }
    }

    /// The token checks of a submission, in the reference's order: every transfer token
    /// validates offline (400 `Failed to validate access-token`); for token users, no tape,
    /// and the submitting token names a known issuer and an audience; every transfer token's
    /// issuer is a configured provider.
    async fn check_tokens(
        &self,
        user: &User,
        submission: &Submission,
        bearer: Option<&str>,
    ) -> Result<(), ServiceError> {
        let bad = |m: &str| ServiceError::BadRequest(m.to_string());
        let Some(oidc) = &self.oidc else {
            // Transfer tokens without providers cannot be checked (nor used).
            return Err(bad(token_msg::FAILED_TO_VALIDATE));
        };
        let now = time::now();
        for token in &submission.tokens {
            if let Err(why) = oidc
                .check_transfer_token(token.access_token.expose(), now)
                .await
            {
                tracing::info!(token_id = %token.token_id, reason = %why, "transfer token refused");
                return Err(bad(token_msg::FAILED_TO_VALIDATE));
            }
        }
        if user.method == AuthMethod::Oauth2 {
            if submission.job.archive_timeout > 0 {
                return Err(bad(token_msg::ARCHIVE_WITH_TOKENS));
            }
            if submission.job.bring_online > 0 {
                return Err(bad(token_msg::STAGING_WITH_TOKENS));
            }
            let payload = bearer
                .and_then(|b| tok::decode_unverified(b).ok())
                .map(|j| j.payload)
                .unwrap_or_default();
            let Some(issuer) = payload.get("iss").and_then(|v| v.as_str()) else {
                return Err(bad(token_msg::NO_ISS));
            };
            if !payload.contains_key("aud") {
                return Err(bad(token_msg::NO_AUD));
            }
            let issuer = tok::safe_issuer(issuer);
            if !oidc.is_configured_issuer(&issuer) {
                return Err(ServiceError::BadRequest(
                    token_msg::fts_token_unknown_issuer(&issuer),
                ));
            }
        }
        for token in &submission.tokens {
            if !oidc.is_configured_issuer(&token.issuer) {
                return Err(ServiceError::BadRequest(
                    token_msg::transfer_token_unknown_issuer(&token.issuer),
                ));
            }
        }
        Ok(())
    }

    /// Build the job rows of a submission (pure; `queued` answers queue lengths).
    fn build(
        &self,
        user: &User,
        map: &serde_json::Map<String, serde_json::Value>,
        delegation_id: &str,
        vo: &str,
        queued: &(dyn Fn(&str, &str, &str) -> u64 + Sync),
        bearer: Option<&str>,
    ) -> Result<Submission, ServiceError> {
        let mut random = || {
            let mut b = [0u8; 8];
            // If the system RNG fails we still need distinct ids: fall back to the clock.
            if aws_lc_rs::rand::fill(&mut b).is_err() {
                return time::now_nanos();
            }
            u64::from_le_bytes(b)
        };
        let mut ctx = SubmitContext {
            user_dn: &user.user_dn,
            delegation_id,
            vo,
            voms_cred: &user.voms_cred,
            auth_method: match user.method {
                AuthMethod::Oauth2 => "oauth2",
                _ => "certificate",
            },
            bearer,
            submit_host: &self.host_name,
            now: time::now(),
            config: &self.submit_config,
            queued,
            random: &mut random,
        };
        submit::build(map, &mut ctx).map_err(|e| match e {
            SubmitError::BadRequest(m) => ServiceError::BadRequest(m),
            SubmitError::MethodNotAllowed(m) => ServiceError::MethodNotAllowed(m),
            SubmitError::Forbidden(m) => ServiceError::Forbidden(m),
        })
    }

    /// `GET /jobs/{ids}`: each job (with its files if asked) or why not.
    pub async fn get_jobs(
        &self,
        user: &User,
        ids: &[String],
        with_files: bool,
    ) -> Result<Vec<JobLookup>, ServiceError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let found = if with_files {
                self.store.job_with_files(id).await?
            } else {
                self.store.job(id).await?.map(|j| (j, Vec::new()))
            };
            let (job, files) = match found {
                Some((j, f)) => (Some(j), f),
                None => (None, Vec::new()),
            };
            out.push(self.check_job(user, job, id).map(|j| (j, files)));
        }
        Ok(out)
    }

    /// One job with its files, for the `/jobs/{id}/...` sub-resources.
    pub async fn job_detail(
        &self,
        user: &User,
        id: &str,
    ) -> Result<Result<(Job, Vec<File>), JobError>, ServiceError> {
        let found = self.store.job_with_files(id).await?;
        let (job, files) = match found {
            Some((j, f)) => (Some(j), f),
            None => (None, Vec::new()),
        };
        Ok(self.check_job(user, job, id).map(|j| (j, files)))
    }

    /// The retried attempts of a file (the caller checked the job).
    pub async fn file_retries(&self, file_id: u64) -> Result<Vec<RetryRow>, ServiceError> {
        Ok(self.store.file_retries(file_id).await?)
    }

    /// `GET /jobs`.
    pub async fn list_jobs(&self, user: &User, q: &ListQuery) -> Result<Vec<Job>, ServiceError> {
        self.require_transfer(user)?;
        if let Some(dn) = &q.user_dn {
            if *dn != user.user_dn {
                return Err(ServiceError::BadRequest(
                    "The provided DN and delegation id do not correspond to the same user".into(),
                ));
            }
        }
        if let Some(dlg) = &q.dlg_id {
            if Some(dlg) != user.delegation_id.as_ref() {
                return Err(forbidden(
                    "The provided delegation id does not match your delegation id",
                ));
            }
        }
        let limit = match query::limit(q.limit.as_deref())? {
            Some(l) if !(0..=MAX_LIST_LIMIT as i64).contains(&l) => {
                return Err(ServiceError::BadRequest(
                    "The limit must be positive and less or equal than 500".into(),
                ));
            }
            Some(l) if l > 0 => Some(l as usize),
            _ => None,
        };
        let states = q.state_in.as_deref().map(|s| {
            split_list(s)
                .filter_map(JobState::parse)
                .collect::<Vec<_>>()
        });
        let window = query::time_window(q.time_window.as_deref())?;
        let mut filter = JobFilter {
            user_dn: q.user_dn.clone(),
            vo_name: q.vo_name.clone(),
            cred_id: q.dlg_id.clone(),
            states: states.clone(),
            source_se: q.source_se.clone(),
            dest_se: q.dest_se.clone(),
            limit,
            ..JobFilter::default()
        };
        match user.granted_level_for(Operation::Transfer) {
            Some(crate::model::identity::Level::Private) => {
                filter.cred_id = user.delegation_id.clone()
            }
            Some(crate::model::identity::Level::Vo) => filter.vo_name = user.vos.first().cloned(),
            Some(crate::model::identity::Level::All) => {}
            None => return Err(forbidden("User not allowed to list jobs")),
        }
        // Terminal jobs only with a limit or a time window, as the reference.
        match (states.is_some(), limit, window) {
            (false, _, _) => filter.unfinished_only = true,
            (true, None, Some(w)) => filter.finished_since = Some(time::now() - w),
            (true, None, None) => filter.unfinished_only = true,
            (true, Some(_), _) => {}
        }
        if filter.finished_since.is_some() {
            // Unfinished jobs pass the window too (NULL job_finished is not >= anything in SQL,
            // but the reference's query ORs "job_finished IS NULL" for active states).
            filter.finished_since = None;
            filter.unfinished_only = false;
            let since = time::now() - window.unwrap_or(0);
            let jobs = self.store.list_jobs(&filter).await?;
            return Ok(jobs
                .into_iter()
                .filter(|j| j.job_finished.is_none_or(|f| f >= since))
                .collect());
        }
        Ok(self.store.list_jobs(&filter).await?)
    }

    /// `GET /files`.
    pub async fn list_files(&self, user: &User, q: &FilesQuery) -> Result<Vec<File>, ServiceError> {
        self.require_transfer(user)?;
        let mut filter = FileFilter {
            vo_name: q.vo_name.clone(),
            states: q
                .state_in
                .as_deref()
                .map(|s| split_list(s).filter_map(FileState::parse).collect()),
            source_se: q.source_se.clone(),
            dest_se: q.dest_se.clone(),
            dest_surl: q.dest_surl.clone(),
            limit: query::limit(q.limit.as_deref())?
                .map(|l| l.clamp(1, MAX_FILES_LIMIT as i64) as usize)
                .unwrap_or(MAX_FILES_LIMIT),
            ..FileFilter::default()
        };
        if filter.dest_se.is_none() {
            if let Some(surl) = &filter.dest_surl {
                filter.dest_se = submit::storage_element(surl);
            }
        }
        match user.granted_level_for(Operation::Transfer) {
            Some(crate::model::identity::Level::All) => {}
            _ => filter.vo_name = user.vos.first().cloned(),
        }
        match query::time_window(q.time_window.as_deref())? {
            Some(w) => filter.finished_since = Some(time::now() - w),
            None => filter.unfinished_only = true,
        }
        Ok(self.store.list_files(&filter).await?)
    }

    /// `DELETE /jobs/{ids}`.
    pub async fn cancel_jobs(
        &self,
        user: &User,
        ids: &[String],
    ) -> Result<Vec<Result<JobChange, JobError>>, ServiceError> {
        self.change_jobs(user, ids, JobEdit::Cancel).await
    }

    /// `POST /jobs/{ids}` with `{"params": {"priority": n}}`.
    pub async fn set_priority(
        &self,
        user: &User,
        ids: &[String],
        request: PriorityRequest,
    ) -> Result<Vec<Result<JobChange, JobError>>, ServiceError> {
        self.change_jobs(user, ids, JobEdit::Priority(request.0))
            .await
    }

    /// Authorize each id, then apply `edit` (which leaves a terminal job alone) in one
    /// transaction.
    async fn change_jobs(
        &self,
        user: &User,
        ids: &[String],
        edit: JobEdit,
    ) -> Result<Vec<Result<JobChange, JobError>>, ServiceError> {
        let mut allowed = Vec::new();
        let mut out: Vec<Option<Result<JobChange, JobError>>> = Vec::with_capacity(ids.len());
        for id in ids {
            match self.check_job(user, self.store.job(id).await?, id) {
                Ok(_) => {
                    allowed.push(id.clone());
                    out.push(None);
                }
                Err(e) => out.push(Some(Err(e))),
            }
        }
        let results = self.store.edit_jobs(&allowed, &edit, time::now()).await?;
        let mut results = results.into_iter();
        Ok(out
            .into_iter()
            .zip(ids)
            .map(|(slot, id)| match slot {
                Some(r) => r,
                // A job deleted between the check and the update reads as not found.
                None => results
                    .next()
                    .flatten()
                    .map(|(change, _)| change)
                    .ok_or_else(|| JobError::NotFound(id.clone())),
            })
            .collect())
    }

    /// `DELETE /jobs/{id}/files/{file_ids}`: one entry per file id (a state or a message).
    pub async fn cancel_files(
        &self,
        user: &User,
        job_id: &str,
        file_ids: &[String],
    ) -> Result<Result<Vec<String>, JobError>, ServiceError> {
        let job = match self.check_job(user, self.store.job(job_id).await?, job_id) {
            Ok(j) => j,
            Err(e) => return Ok(Err(e)),
        };
        if job.job_type != JobType::Normal {
            return Err(ServiceError::BadRequest(format!(
                "Multihop or reuse jobs must be cancelled at once ({})",
                job.job_type.as_str()
            )));
        }
        let wanted: Vec<Option<u64>> = file_ids.iter().map(|f| f.trim().parse().ok()).collect();
        let result = self
            .store
            .cancel_files(job_id, &wanted, time::now())
            .await?;
        Ok(result.ok_or_else(|| JobError::NotFound(job_id.to_string())))
    }

    /// `DELETE /jobs/all`, `DELETE /jobs/vo/{vo}`: root only.
    pub async fn cancel_all(
        &self,
        user: &User,
        vo: Option<&str>,
    ) -> Result<CancelAllCounts, ServiceError> {
        if !user.is_root {
            return Err(forbidden("User does not have root privileges"));
        }
        let active: Vec<JobState> = JobState::ALL
            .into_iter()
            .filter(|s| !s.is_terminal())
            .collect();
        let ids = self.store.job_ids_in_states(&active, vo).await?;
        let now = time::now();
        let mut counts = CancelAllCounts::default();
        for chunk in ids.chunks(CANCEL_ALL_BATCH) {
            let results = self
                .store
                .edit_jobs(chunk, &JobEdit::CancelAll, now)
                .await?;
            for (change, files) in results.into_iter().flatten() {
                counts.affected_files += files;
                counts.affected_jobs += usize::from(matches!(change, JobChange::Changed(_)));
            }
        }
        tracing::warn!(
            vo = vo.unwrap_or("*"),
            jobs = counts.affected_jobs,
            "all jobs canceled by root"
        );
        Ok(counts)
    }

    /// `POST /admin/force-start`: SUBMITTED files → FORCE_START. Returns the problems.
    pub async fn force_start(
        &self,
        user: &User,
        file_ids: &[u64],
    ) -> Result<Vec<(u64, &'static str)>, ServiceError> {
        if user.method != AuthMethod::Certificate {
            return Err(forbidden("Certificate required"));
        }
        if user.granted_level_for(Operation::Admin).is_none() {
            return Err(forbidden("Not enough permissions"));
        }
        let mut problems = Vec::new();
        for &id in file_ids {
            match self.store.force_start(id).await? {
                None => problems.push((id, "File does not exist")),
                Some(false) => problems.push((id, "File is not in SUBMITTED state")),
                Some(true) => {}
            }
        }
        Ok(problems)
    }
}
