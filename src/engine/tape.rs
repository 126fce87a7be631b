//! Tape: bring-online requests before copies and archive monitoring after them, as the
//! reference's QoS daemon runs them (engine spec §5.1, §5.2), over the backends' bulk tape
//! calls ([`Session::stage`], [`Session::stage_poll`], [`Session::archive_poll`], ...).
//!
//! - Grouping: files are asked for in bulk requests per storage (`scheme://host:port` of the
//!   URL: one Tape REST endpoint) and credential (delegation id and DN), at most
//!   `staging_bulk_size` / `archive_bulk_size` files per request, each URL once. A storage
//!   with fewer STAGING files than a bulk waits `staging_wait` for more first
//!   (`StagingWaitingFactor`). The pin lifetime and timeout of a request are the largest of
//!   its jobs' (`copy_pin_lifetime`, `bring_online`; the missing one defaults as the
//!   reference's `DefaultCopyPinLifetime` / `DefaultBringOnlineTimeout`).
//! - States: a claimed file is STARTED (`staging_start`); the storage's request id becomes its
//!   `bringonline_token` (event `StagingStarted`); then polls, first after
//!   `staging_first_poll`, then every `staging_poll_interval` (the reference's 300 s then
//!   `StagingPollInterval`): staged → SUBMITTED (or FINISHED for stage-only), failed → FAILED
//!   with `STAGING [errno] <storage's words>` and a preventive cancel of that file on the
//!   storage; a communication error (`ECOMM`) is soft up to `staging_poll_retries` per file.
//!   Past its job's `bring_online` seconds from `staging_start` a file fails with
//!   `STAGING [110] bring-online timeout has been exceeded` and is canceled on the storage.
//!   A file or job canceled by the user is canceled on the storage within a second.
//! - Archive monitoring: files entering ARCHIVING (`archive_start_time`) are polled at once,
//!   then after `archive_first_poll`, then every `archive_poll_interval`; archived (locality
//!   with `TAPE`) → FINISHED, an error → FAILED `ARCHIVING [errno] ...`, past
//!   `archive_timeout` → `ARCHIVING [110] archive timeout has been exceeded`.
//! - Restart: STARTED files with a token are polled again, ARCHIVING files watched again
//!   (`Engine::resume_tape`); STARTED files without one went back to STAGING (store recovery).
//!   A stopping service leaves its requests as they are on the storage.
//!
//! Deviation: the reference treats `EOPNOTSUPP` from a storage as "staged, keep going"; here
//! a storage that cannot stage fails the file with its reason (issue 15: never report a file
//! staged that was not). Failed staging is not retried (the reference retries it when the job
//! has retries and the error is recoverable).

use std::{collections::HashMap, sync::Arc, time::Duration};

// The tokio clock: tests drive deadlines and polls with a paused clock.
use tokio::time::Instant;

use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    Engine,
    agent::{Phase, Scope, TransferFailure, TransferLog},
    backends::{OpError, Session, SessionContext, TapeStatus},
    scheduler, to_failure,
};
use crate::model::{
    job::{File, Job},
    lifecycle::Failure,
    time,
    transfer::Event,
};

/// `DefaultCopyPinLifetime`: seconds a staged file stays pinned when the job gives a
/// bring-online timeout but no pin lifetime.
pub const DEFAULT_COPY_PIN_LIFETIME: i64 = 604_800;
/// The reason of a file whose bring-online took longer than its job's `bring_online`.
pub const STAGING_TIMEOUT_MESSAGE: &str = "bring-online timeout has been exceeded";
/// The reason of a file not archived within its job's `archive_timeout`.
pub const ARCHIVE_TIMEOUT_MESSAGE: &str = "archive timeout has been exceeded";
/// How long one tape call (stage, poll, cancel) may take before it counts as a communication
/// error: a storage that hangs must not stall the request's timeouts and cancellations.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// The tape settings (`[engine]` `staging_*` and `archive_*`), the reference's defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Files per bring-online request (`StagingBulkSize`, 200).
    pub staging_bulk_size: usize,
    /// How long a storage with fewer STAGING files than a bulk waits for more
    /// (`StagingWaitingFactor`, 300 s).
    pub staging_wait: Duration,
    /// First poll of a bring-online request (the reference's 300 s).
    pub staging_first_poll: Duration,
    /// Later polls (`StagingPollInterval`, 600 s).
    pub staging_poll_interval: Duration,
    /// Communication errors tolerated per file while polling (`StagingPollRetries`, 3).
    pub staging_poll_retries: u32,
    /// Files per archive poll (`ArchivePollBulkSize`, 200).
    pub archive_bulk_size: usize,
    /// Second poll of an archive request (the reference's 300 s; the first is at once).
    pub archive_first_poll: Duration,
    /// Later polls (`ArchivePollInterval`, 600 s).
    pub archive_poll_interval: Duration,
    /// Communication errors tolerated per file (`ArchivePollRetries`, 3).
    pub archive_poll_retries: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            staging_bulk_size: 200,
            staging_wait: Duration::from_secs(300),
            staging_first_poll: Duration::from_secs(300),
            staging_poll_interval: Duration::from_secs(600),
            staging_poll_retries: 3,
            archive_bulk_size: 200,
            archive_first_poll: Duration::from_secs(300),
            archive_poll_interval: Duration::from_secs(600),
            archive_poll_retries: 3,
        }
    }
}

/// What files of one request share: the storage endpoint and the credential.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupKey {
    pub storage: String,
    pub cred_id: String,
    pub user_dn: String,
}

/// `scheme://host:port` of a URL, lower case (`dav(s)` as `http(s)`: same endpoint).
pub fn storage_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "davs" => "https".to_string(),
        "dav" => "http".to_string(),
        other => other.to_string(),
    };
    format!("{scheme}://{}", authority.to_ascii_lowercase())
}

/// Rows grouped by storage (of `url`) and credential, in first-seen order, each group cut in
/// requests of at most `bulk` files.
pub fn group(
    rows: Vec<(Job, File)>,
    url: impl Fn(&File) -> &str,
    bulk: usize,
) -> Vec<(GroupKey, Vec<(Job, File)>)> {
    let mut order: Vec<GroupKey> = Vec::new();
    let mut groups: HashMap<GroupKey, Vec<(Job, File)>> = HashMap::new();
    for (job, file) in rows {
        let key = GroupKey {
            storage: storage_of(url(&file)),
            cred_id: job.cred_id.clone(),
            user_dn: job.user_dn.clone(),
        };
        if !groups.contains_key(&key) {
            order.push(key.clone());
        }
        groups.entry(key).or_default().push((job, file));
    }
    let mut out = Vec::new();
    for key in order {
        let mut rows = groups.remove(&key).unwrap_or_default();
        while !rows.is_empty() {
            let rest = rows.split_off(rows.len().min(bulk.max(1)));
            out.push((key.clone(), rows));
            rows = rest;
        }
    }
    out
}

/// The pin lifetime and timeout (seconds) of one bring-online request: the largest its jobs
/// ask for; when none asks for one of them, the reference's default.
pub fn request_lifetimes(jobs: &[&Job]) -> (i64, u64) {
    let pin = jobs.iter().map(|j| j.copy_pin_lifetime).max().unwrap_or(0);
    let timeout = jobs.iter().map(|j| j.bring_online).max().unwrap_or(0);
    let pin = if pin > 0 {
        pin
    } else {
        DEFAULT_COPY_PIN_LIFETIME
    };
    let timeout = if timeout > 0 {
        timeout as u64
    } else {
        scheduler::DEFAULT_BRING_ONLINE_TIMEOUT
    };
    (pin, timeout)
}

/// One file of a tape request.
pub struct Member {
    pub file_id: u64,
    pub job_id: String,
    pub url: String,
    /// When the file fails for taking too long (`None`: never).
    pub deadline: Option<Instant>,
    /// Canceled by the engine's watcher when the file is canceled, or at shutdown.
    pub cancel: CancellationToken,
    /// Communication errors so far.
    soft_errors: u32,
}

impl Member {
    pub fn new(
        file_id: u64,
        job_id: String,
        url: String,
        deadline: Option<Instant>,
        cancel: CancellationToken,
    ) -> Member {
        Member {
            file_id,
            job_id,
            url,
            deadline,
            cancel,
            soft_errors: 0,
        }
    }
}

/// The deadline of something that started at unix time `start` and may last `seconds`.
fn deadline(start: Option<i64>, seconds: u64) -> Instant {
    let elapsed = (time::now() - start.unwrap_or_else(time::now)).max(0) as u64;
    Instant::now() + Duration::from_secs(seconds.saturating_sub(elapsed))
}

/// Where a request's events go and whether the service is stopping.
pub struct Reporter<'a> {
    pub events: &'a mpsc::Sender<Event>,
    pub stopping: &'a (dyn Fn() -> bool + Send + Sync),
    /// Called once per member when the request is done with it.
    pub done: &'a (dyn Fn(u64) + Send + Sync),
}

impl Reporter<'_> {
    async fn send(&self, member: &Member, event: Event) {
        (self.done)(member.file_id);
        if self.events.send(event).await.is_err() {
            tracing::error!(job_id = %member.job_id, file_id = member.file_id, "event writer is gone; a tape event was not recorded");
        }
    }
}

fn staging_failure(errno: i32, message: impl Into<String>) -> Failure {
    to_failure(&TransferFailure::new(
        Scope::Staging,
        Phase::TransferPreparation,
        errno,
        message,
    ))
}

fn archive_failure(errno: i32, message: impl Into<String>) -> Failure {
    Failure {
        // The copy itself succeeded: nothing to retry.
        recoverable: false,
        ..to_failure(&TransferFailure::new(
            Scope::Archiving,
            Phase::TransferFinalization,
            errno,
            message,
        ))
    }
}

/// The distinct URLs of `members`, in order.
fn urls_of(members: &[Member]) -> Vec<String> {
    let mut urls: Vec<String> = Vec::new();
    for m in members {
        if !urls.contains(&m.url) {
            urls.push(m.url.clone());
        }
    }
    urls
}

/// A tape call bounded by [`CALL_TIMEOUT`]: past it, a communication error.
async fn bounded<T>(
    call: impl std::future::Future<Output = Result<T, OpError>>,
) -> Result<T, OpError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(r) => r,
        Err(_) => Err(OpError::new(
            libc::ECOMM,
            format!(
                "[Tape REST API] the storage did not answer within {} s",
                CALL_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// Wait `pause` or until a member is canceled or reaches its deadline, whichever is first.
async fn wait(members: &[Member], pause: Duration) {
    let now = Instant::now();
    let until = members
        .iter()
        .filter_map(|m| m.deadline)
        .map(|d| d.saturating_duration_since(now))
        .fold(pause, Duration::min);
    let canceled = futures_util::future::select_all(
        members
            .iter()
            .map(|m| m.cancel.cancelled().boxed())
            .collect::<Vec<_>>(),
    );
    tokio::select! {
        _ = tokio::time::sleep(until) => {}
        _ = canceled => {}
    }
}

/// Members canceled (the user's cancel, or shutdown) or past their deadline leave the
/// request. Returns them with the URLs no remaining member needs (to cancel on the storage), or
/// `None` when the service is stopping (every member is then let go without an event: the
/// request stays on the storage and the next start polls it again).
fn sweep(members: &mut Vec<Member>, out: &Reporter<'_>) -> Option<(Vec<Member>, Vec<String>)> {
    let now = Instant::now();
    let (gone, kept): (Vec<Member>, Vec<Member>) = std::mem::take(members)
        .into_iter()
        .partition(|m| m.cancel.is_cancelled() || m.deadline.is_some_and(|d| d <= now));
    *members = kept;
    if !gone.is_empty() && (out.stopping)() {
        for m in gone.iter().chain(members.iter()) {
            (out.done)(m.file_id);
        }
        members.clear();
        return None;
    }
    let mut to_abort: Vec<String> = Vec::new();
    for m in &gone {
        if !members.iter().any(|k| k.url == m.url) && !to_abort.contains(&m.url) {
            to_abort.push(m.url.clone());
        }
    }
    Some((gone, to_abort))
}

/// Report members that left the request: canceled ones `Aborted`, the others failed with
/// `expired`.
async fn report_gone(gone: Vec<Member>, staging: bool, out: &Reporter<'_>) {
    for m in gone {
        let event = if m.cancel.is_cancelled() {
            tracing::info!(job_id = %m.job_id, file_id = m.file_id, "file canceled: its tape request is canceled on the storage");
            Event::Aborted { file_id: m.file_id }
        } else if staging {
            tracing::info!(job_id = %m.job_id, file_id = m.file_id, "bring-online timeout");
            Event::StagingFailed {
                file_id: m.file_id,
                failure: staging_failure(libc::ETIMEDOUT, STAGING_TIMEOUT_MESSAGE),
            }
        } else {
            tracing::info!(job_id = %m.job_id, file_id = m.file_id, "archive timeout");
            Event::ArchiveFailed {
                file_id: m.file_id,
                failure: archive_failure(libc::ETIMEDOUT, ARCHIVE_TIMEOUT_MESSAGE),
            }
        };
        out.send(&m, event).await;
    }
}

/// Apply one answer per URL to the members: done and failed ones leave (with their event),
/// pending ones and soft errors (`ECOMM`, up to `retries`) stay. Returns the URLs that failed.
async fn settle(
    members: &mut Vec<Member>,
    urls: &[String],
    statuses: &[TapeStatus],
    retries: u32,
    staging: bool,
    out: &Reporter<'_>,
) -> Vec<String> {
    let by_url: HashMap<&str, &TapeStatus> = urls
        .iter()
        .map(String::as_str)
        .zip(statuses.iter())
        .collect();
    let missing = TapeStatus::Failed(OpError::new(
        libc::ENOMSG,
        "[Tape REST API] Missing response item",
    ));
    let mut failed_urls = Vec::new();
    let mut kept = Vec::new();
    for mut m in std::mem::take(members) {
        let status = by_url.get(m.url.as_str()).copied().unwrap_or(&missing);
        let event = match status {
            TapeStatus::Pending => None,
            TapeStatus::Failed(e) if e.errno == libc::ECOMM && m.soft_errors < retries => {
                m.soft_errors += 1;
                tracing::info!(job_id = %m.job_id, file_id = m.file_id, error = %e.message, "tape poll: communication error, soft failure");
                None
            }
            TapeStatus::Done if staging => Some(Event::Staged { file_id: m.file_id }),
            TapeStatus::Done => Some(Event::Archived { file_id: m.file_id }),
            TapeStatus::Failed(e) if staging => {
                if !failed_urls.contains(&m.url) {
                    failed_urls.push(m.url.clone());
                }
                Some(Event::StagingFailed {
                    file_id: m.file_id,
                    failure: staging_failure(e.errno, &e.message),
                })
            }
            TapeStatus::Failed(e) => Some(Event::ArchiveFailed {
                file_id: m.file_id,
                failure: archive_failure(e.errno, &e.message),
            }),
        };
        match event {
            Some(event) => {
                tracing::info!(job_id = %m.job_id, file_id = m.file_id, staging, outcome = ?event_name(&event), "tape request: file done");
                out.send(&m, event).await
            }
            None => kept.push(m),
        }
    }
    *members = kept;
    failed_urls
}

fn event_name(event: &Event) -> &'static str {
    match event {
        Event::Staged { .. } => "staged",
        Event::Archived { .. } => "archived",
        Event::StagingFailed { .. } | Event::ArchiveFailed { .. } => "failed",
        _ => "other",
    }
}

/// One bring-online request from submission (no `token`) or from a token found at start to
/// the end of its last file.
pub async fn stage_request(
    session: &mut dyn Session,
    mut members: Vec<Member>,
    token: Option<String>,
    (pin_lifetime, timeout): (i64, u64),
    settings: &Settings,
    out: &Reporter<'_>,
) {
    // Not empty from here on: `members[0]` below cannot panic.
    if members.is_empty() {
        return;
    }
    let token = match token {
        Some(token) => token,
        None => {
            let urls = urls_of(&members);
            tracing::info!(files = urls.len(), pin_lifetime, timeout, storage = %storage_of(&members[0].url), "bring-online request");
            match bounded(session.stage(&urls, pin_lifetime, timeout)).await {
                Err(e) => {
                    tracing::info!(error = %e.message, "bring-online request refused");
                    for m in members {
                        let failure = staging_failure(e.errno, &e.message);
                        out.send(
                            &m,
                            Event::StagingFailed {
                                file_id: m.file_id,
                                failure,
                            },
                        )
                        .await;
                    }
                    return;
                }
                Ok(reply) => {
                    for m in &members {
                        let event = Event::StagingStarted {
                            file_id: m.file_id,
                            token: reply.token.clone(),
                        };
                        if out.events.send(event).await.is_err() {
                            tracing::error!("event writer is gone; a tape event was not recorded");
                        }
                    }
                    let failed = settle(
                        &mut members,
                        &urls,
                        &reply.files,
                        settings.staging_poll_retries,
                        true,
                        out,
                    )
                    .await;
                    if !failed.is_empty() {
                        let _ = bounded(session.stage_abort(&reply.token, &failed)).await;
                    }
                    reply.token
                }
            }
        }
    };
    let mut polls = 0u32;
    while !members.is_empty() {
        let pause = if polls == 0 {
            settings.staging_first_poll
        } else {
            settings.staging_poll_interval
        };
        wait(&members, pause).await;
        let Some((gone, to_abort)) = sweep(&mut members, out) else {
            return;
        };
        if !to_abort.is_empty() {
            if let Err(e) = bounded(session.stage_abort(&token, &to_abort)).await {
                tracing::info!(error = %e.message, "the storage refused to cancel a bring-online");
            }
        }
        report_gone(gone, true, out).await;
        if members.is_empty() {
            return;
        }
        polls += 1;
        let urls = urls_of(&members);
        let statuses = match bounded(session.stage_poll(&token, &urls)).await {
            Ok(s) => s,
            Err(e) => vec![TapeStatus::Failed(e); urls.len()],
        };
        let failed = settle(
            &mut members,
            &urls,
            &statuses,
            settings.staging_poll_retries,
            true,
            out,
        )
        .await;
        if !failed.is_empty() {
            // Preventive cancel: some storages keep failed requests queued otherwise.
            let _ = bounded(session.stage_abort(&token, &failed)).await;
        }
    }
}

/// Watch `members` (ARCHIVING) until each is on tape, failed or past its deadline.
pub async fn archive_request(
    session: &mut dyn Session,
    mut members: Vec<Member>,
    settings: &Settings,
    out: &Reporter<'_>,
) {
    let mut polls = 0u32;
    while !members.is_empty() {
        if polls > 0 {
            let pause = if polls == 1 {
                settings.archive_first_poll
            } else {
                settings.archive_poll_interval
            };
            wait(&members, pause).await;
        }
        let Some((gone, _)) = sweep(&mut members, out) else {
            return;
        };
        report_gone(gone, false, out).await;
        if members.is_empty() {
            return;
        }
        polls += 1;
        let urls = urls_of(&members);
        let statuses = match bounded(session.archive_poll(&urls)).await {
            Ok(s) => s,
            Err(e) => vec![TapeStatus::Failed(e); urls.len()],
        };
        settle(
            &mut members,
            &urls,
            &statuses,
            settings.archive_poll_retries,
            false,
            out,
        )
        .await;
    }
}

impl Engine {
    /// Start one bring-online request for claimed (STARTED) files of one group, or resume the
    /// polling of request `token`.
    pub(super) fn spawn_stage_request(
        self: &Arc<Self>,
        rows: Vec<(Job, File)>,
        token: Option<String>,
    ) {
        let Some((job0, _)) = rows.first() else {
            return;
        };
        let job0 = job0.clone();
        let lifetimes = request_lifetimes(&rows.iter().map(|(j, _)| j).collect::<Vec<_>>());
        let members: Vec<Member> = rows
            .iter()
            .map(|(job, file)| {
                let (cancel, _) = self.track(job, file, false);
                let seconds = if job.bring_online > 0 {
                    job.bring_online as u64
                } else {
                    scheduler::DEFAULT_BRING_ONLINE_TIMEOUT
                };
                Member::new(
                    file.file_id,
                    job.job_id.clone(),
                    file.source_surl.clone(),
                    Some(deadline(file.staging_start, seconds)),
                    cancel,
                )
            })
            .collect();
        let engine = self.clone();
        tokio::spawn(async move {
            let Some(mut session) = engine.tape_session(&job0, &members[0].url, true).await else {
                engine.refuse(members, true).await;
                return;
            };
            let stopping = || engine.is_stopping();
            let done = |id: u64| {
                engine.untrack(id);
            };
            let out = Reporter {
                events: &engine.events,
                stopping: &stopping,
                done: &done,
            };
            stage_request(
                session.as_mut(),
                members,
                token,
                lifetimes,
                &engine.settings.tape,
                &out,
            )
            .await;
        });
    }

    /// Watch ARCHIVING files of one group until they are on tape.
    pub(super) fn spawn_archive_request(self: &Arc<Self>, rows: Vec<(Job, File)>) {
        let Some((job0, _)) = rows.first() else {
            return;
        };
        let job0 = job0.clone();
        let members: Vec<Member> = rows
            .iter()
            .map(|(job, file)| {
                let (cancel, _) = self.track(job, file, false);
                let limit = (job.archive_timeout > 0)
                    .then(|| deadline(file.archive_start_time, job.archive_timeout as u64));
                Member::new(
                    file.file_id,
                    job.job_id.clone(),
                    file.dest_surl.clone(),
                    limit,
                    cancel,
                )
            })
            .collect();
        let engine = self.clone();
        tokio::spawn(async move {
            let Some(mut session) = engine.tape_session(&job0, &members[0].url, false).await else {
                engine.refuse(members, false).await;
                return;
            };
            let stopping = || engine.is_stopping();
            let done = |id: u64| {
                engine.untrack(id);
            };
            let out = Reporter {
                events: &engine.events,
                stopping: &stopping,
                done: &done,
            };
            archive_request(session.as_mut(), members, &engine.settings.tape, &out).await;
        });
    }

    /// Group rows into requests and start them.
    pub(super) fn start_archive(self: &Arc<Self>, rows: Vec<(Job, File)>) {
        for (_, group) in group(rows, |f| &f.dest_surl, self.settings.tape.archive_bulk_size) {
            self.spawn_archive_request(group);
        }
    }

    /// At start: poll again the bring-online requests the storage accepted before the stop,
    /// and watch again the files being archived.
    pub(super) async fn resume_tape(self: &Arc<Self>) -> Result<(), super::EngineError> {
        use crate::model::job::FileState;
        let started = self
            .store
            .files_in_state(FileState::Started, usize::MAX)
            .await?;
        let mut by_token: Vec<(String, Vec<(Job, File)>)> = Vec::new();
        for (job, file) in started {
            let Some(token) = file.bringonline_token.clone() else {
                continue;
            };
            match by_token.iter_mut().find(|(t, _)| *t == token) {
                Some((_, rows)) => rows.push((job, file)),
                None => by_token.push((token, vec![(job, file)])),
            }
        }
        for (token, rows) in by_token {
            tracing::info!(
                files = rows.len(),
                "bring-online request found at start: polling it again"
            );
            for (_, group) in group(rows, |f| &f.source_surl, usize::MAX) {
                self.spawn_stage_request(group, Some(token.clone()));
            }
        }
        let archiving = self
            .store
            .files_in_state(FileState::Archiving, usize::MAX)
            .await?;
        self.start_archive(archiving);
        Ok(())
    }

    /// A session for the tape calls of `job` on `url`'s storage with the job's credential, or
    /// `None` when no backend there does that tape step.
    async fn tape_session(&self, job: &Job, url: &str, staging: bool) -> Option<Box<dyn Session>> {
        let backend = self.registry.for_url(url)?;
        let tape = backend.tape_for(&super::backends::scheme_of(url)?);
        if !(if staging {
            tape.staging
        } else {
            tape.archive_monitoring
        }) {
            return None;
        }
        let credential = self.credential(job).await;
        Some(backend.session(&SessionContext {
            credential,
            // Tape requests authenticate with the delegated proxy; storage tokens are used
            // by the copies only.
            tokens: None,
            log: TransferLog::null(),
        }))
    }

    /// Fail `members` whose storage cannot do the tape step (no such backend any more, or one
    /// without tape support): never reported staged or archived.
    async fn refuse(&self, members: Vec<Member>, staging: bool) {
        for m in members {
            self.untrack(m.file_id);
            let event = if staging {
                let e = super::backends::not_supported("Staging", &m.url);
                Event::StagingFailed {
                    file_id: m.file_id,
                    failure: staging_failure(e.errno, e.message),
                }
            } else {
                let e = super::backends::not_supported("Archive monitoring", &m.url);
                Event::ArchiveFailed {
                    file_id: m.file_id,
                    failure: archive_failure(e.errno, e.message),
                }
            };
            self.send(event).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::engine::backends::{Backend, StageReply, mock::MockBackend};

    struct Run {
        events: Vec<Event>,
        done: Vec<u64>,
    }

    fn member(id: u64, url: &str, deadline_s: Option<u64>) -> Member {
        Member::new(
            id,
            "job".into(),
            url.into(),
            deadline_s.map(|s| Instant::now() + Duration::from_secs(s)),
            CancellationToken::new(),
        )
    }

    fn settings() -> Settings {
        Settings {
            staging_first_poll: Duration::from_secs(300),
            staging_poll_interval: Duration::from_secs(600),
            ..Settings::default()
        }
    }

    async fn collect(rx: &mut mpsc::Receiver<Event>, done: &Mutex<Vec<u64>>) -> Run {
        let mut events = Vec::new();
        while let Ok(e) = rx.try_recv() {
            events.push(e);
        }
        Run {
            events,
            done: done.lock().unwrap().clone(),
        }
    }

    fn kinds(events: &[Event]) -> Vec<(u64, String)> {
        events
            .iter()
            .map(|e| {
                let what = match e {
                    Event::StagingStarted { token, .. } => format!("token {token}"),
                    Event::Staged { .. } => "staged".into(),
                    Event::Archived { .. } => "archived".into(),
                    Event::Aborted { .. } => "aborted".into(),
                    Event::StagingFailed { failure, .. } | Event::ArchiveFailed { failure, .. } => {
                        failure.reason.clone()
                    }
                    other => format!("{other:?}"),
                };
                (e.file_id(), what)
            })
            .collect()
    }

    /// A bulk request: one stage call for the distinct URLs, polls at 300 s then every 600 s,
    /// files leaving as they are staged or fail, and a file past its deadline timed out.
    #[tokio::test(start_paused = true)]
    async fn a_bring_online_request_polls_with_back_off_and_ends_each_file() {
        let mock = MockBackend::new(0);
        let mut session = mock.session(&SessionContext::anonymous());
        let members = vec![
            member(1, "mock://t/a?staging_time=100", Some(3600)),
            member(2, "mock://t/a?staging_time=100", Some(3600)),
            member(3, "mock://t/b?staging_time=700&staging_errno=2", Some(3600)),
            member(4, "mock://t/c?staging_time=5000", Some(1000)),
        ];
        let (tx, mut rx) = mpsc::channel(64);
        let done = Mutex::new(Vec::new());
        let stopping = || false;
        let on_done = |id| done.lock().unwrap().push(id);
        let out = Reporter {
            events: &tx,
            stopping: &stopping,
            done: &on_done,
        };
        let start = Instant::now();
        stage_request(
            session.as_mut(),
            members,
            None,
            (3600, 1000),
            &settings(),
            &out,
        )
        .await;
        let run = collect(&mut rx, &done).await;
        assert_eq!(
            kinds(&run.events),
            [
                (1, "token mock-token-1".to_string()),
                (2, "token mock-token-1".into()),
                (3, "token mock-token-1".into()),
                (4, "token mock-token-1".into()),
                // First poll at 300 s: a is on disk.
                (1, "staged".into()),
                (2, "staged".into()),
                // Second poll at 900 s: b failed.
                (3, "STAGING [2] No such file or directory".into()),
                // c's deadline (1000 s) passes before the third poll (1500 s).
                (
                    4,
                    "STAGING [110] bring-online timeout has been exceeded".into()
                ),
            ]
        );
        assert_eq!(start.elapsed(), Duration::from_secs(1000));
        assert_eq!(run.done, [1, 2, 3, 4]);
    }

    /// Canceling a file cancels its request on the storage at once, not at the next poll; at
    /// shutdown the request is left alone (no event: the next start resumes it).
    #[tokio::test(start_paused = true)]
    async fn cancel_reaches_the_storage_and_shutdown_leaves_the_request() {
        #[derive(Default)]
        struct Aborts(Mutex<Vec<(String, Vec<String>)>>);
        struct Recording<'a>(Box<dyn Session>, &'a Aborts);
        impl Session for Recording<'_> {
            fn stat(
                &mut self,
                url: &str,
            ) -> futures_util::future::BoxFuture<'_, super::super::backends::OpResult<u64>>
            {
                self.0.stat(url)
            }
            fn checksum(
                &mut self,
                url: &str,
                a: &str,
            ) -> futures_util::future::BoxFuture<'_, super::super::backends::OpResult<String>>
            {
                self.0.checksum(url, a)
            }
            fn exists(
                &mut self,
                url: &str,
            ) -> futures_util::future::BoxFuture<'_, super::super::backends::OpResult<bool>>
            {
                self.0.exists(url)
            }
            fn delete(
                &mut self,
                url: &str,
            ) -> futures_util::future::BoxFuture<'_, super::super::backends::OpResult<()>>
            {
                self.0.delete(url)
            }
            fn make_parent(
                &mut self,
                url: &str,
            ) -> futures_util::future::BoxFuture<'_, super::super::backends::OpResult<()>>
            {
                self.0.make_parent(url)
            }
            fn copy<'a>(
                &'a mut self,
                s: &'a str,
                d: &'a str,
                p: &'a super::super::backends::CopyParams,
                g: &'a super::super::backends::Progress,
            ) -> futures_util::future::BoxFuture<'a, super::super::backends::OpResult<()>>
            {
                self.0.copy(s, d, p, g)
            }
            fn stage<'a>(
                &'a mut self,
                urls: &'a [String],
                pin: i64,
                timeout: u64,
            ) -> futures_util::future::BoxFuture<'a, super::super::backends::OpResult<StageReply>>
            {
                self.0.stage(urls, pin, timeout)
            }
            fn stage_poll<'a>(
                &'a mut self,
                token: &'a str,
                urls: &'a [String],
            ) -> futures_util::future::BoxFuture<
                'a,
                super::super::backends::OpResult<Vec<TapeStatus>>,
            > {
                self.0.stage_poll(token, urls)
            }
            fn stage_abort<'a>(
                &'a mut self,
                token: &'a str,
                urls: &'a [String],
            ) -> futures_util::future::BoxFuture<'a, super::super::backends::OpResult<()>>
            {
                self.1
                    .0
                    .lock()
                    .unwrap()
                    .push((token.to_string(), urls.to_vec()));
                self.0.stage_abort(token, urls)
            }
        }
        let aborts = Aborts::default();
        let mock = MockBackend::new(0);
        let mut session = Recording(mock.session(&SessionContext::anonymous()), &aborts);
        let members = vec![
            member(1, "mock://t/a?staging_time=5000", None),
            member(2, "mock://t/b?staging_time=5000", None),
        ];
        let (cancel_1, cancel_2) = (members[0].cancel.clone(), members[1].cancel.clone());
        let (tx, mut rx) = mpsc::channel(64);
        let done = Mutex::new(Vec::new());
        let stopping = std::sync::atomic::AtomicBool::new(false);
        let is_stopping = || stopping.load(std::sync::atomic::Ordering::Relaxed);
        let on_done = |id| done.lock().unwrap().push(id);
        let out = Reporter {
            events: &tx,
            stopping: &is_stopping,
            done: &on_done,
        };
        let start = Instant::now();
        let settings = settings();
        let request = stage_request(&mut session, members, None, (60, 6000), &settings, &out);
        let driver = async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            cancel_1.cancel();
            tokio::time::sleep(Duration::from_secs(10)).await;
            stopping.store(true, std::sync::atomic::Ordering::Relaxed);
            cancel_2.cancel();
        };
        tokio::join!(request, driver);
        let run = collect(&mut rx, &done).await;
        assert_eq!(kinds(&run.events)[2..], [(1, "aborted".to_string())]);
        assert_eq!(
            *aborts.0.lock().unwrap(),
            [(
                "mock-token-1".to_string(),
                vec!["mock://t/a?staging_time=5000".to_string()]
            )]
        );
        assert_eq!(start.elapsed(), Duration::from_secs(20));
        assert_eq!(run.done, [1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn archive_monitoring_polls_at_once_then_backs_off() {
        let mock = MockBackend::new(0);
        let mut session = mock.session(&SessionContext::anonymous());
        let members = vec![
            member(1, "mock://t/a?archiving_time=200", Some(3600)),
            member(2, "mock://t/b?archiving_time=5000", Some(1000)),
            member(3, "mock://t/c?archiving_errno=5", None),
        ];
        let (tx, mut rx) = mpsc::channel(64);
        let done = Mutex::new(Vec::new());
        let stopping = || false;
        let on_done = |id| done.lock().unwrap().push(id);
        let out = Reporter {
            events: &tx,
            stopping: &stopping,
            done: &on_done,
        };
        let start = Instant::now();
        let settings = Settings {
            archive_first_poll: Duration::from_secs(300),
            archive_poll_interval: Duration::from_secs(600),
            ..Settings::default()
        };
        archive_request(session.as_mut(), members, &settings, &out).await;
        let run = collect(&mut rx, &done).await;
        assert_eq!(
            kinds(&run.events),
            [
                (3, "ARCHIVING [5] Input/output error".to_string()),
                (1, "archived".into()),
                (
                    2,
                    "ARCHIVING [110] archive timeout has been exceeded".into()
                ),
            ]
        );
        assert_eq!(start.elapsed(), Duration::from_secs(1000));
    }

    #[test]
    fn requests_group_per_storage_and_credential_in_bulks() {
        use crate::model::job::{
            FileState, JobType,
            fixtures::{file, job},
        };
        let mut rows = Vec::new();
        for i in 0..5u64 {
            let mut j = job(JobType::Normal);
            j.cred_id = if i == 4 { "other".into() } else { "c".into() };
            let mut f = file(i, 0, FileState::Staging);
            f.source_surl = if i == 3 {
                "davs://t.example:8443/x".into()
            } else {
                format!("https://T.example:8443//f{i}")
            };
            rows.push((j, f));
        }
        let groups = group(rows, |f| &f.source_surl, 2);
        let sizes: Vec<(String, String, usize)> = groups
            .iter()
            .map(|(k, r)| (k.storage.clone(), k.cred_id.clone(), r.len()))
            .collect();
        assert_eq!(
            sizes,
            [
                ("https://t.example:8443".to_string(), "c".to_string(), 2),
                ("https://t.example:8443".into(), "c".into(), 2),
                ("https://t.example:8443".into(), "other".into(), 1),
            ]
        );
        let (mut a, mut b) = (job(JobType::Normal), job(JobType::Normal));
        a.bring_online = 60;
        b.copy_pin_lifetime = 30;
        assert_eq!(request_lifetimes(&[&a, &b]), (30, 60));
        assert_eq!(request_lifetimes(&[&a]), (DEFAULT_COPY_PIN_LIFETIME, 60));
    }
}
