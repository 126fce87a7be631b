//! The transfer engine: scheduler, transfer agent and storage backends, in-process.
//!
//! - [`Engine::run`] owns every task: the scheduler loop (woken by submissions and finished
//!   transfers, plus a periodic tick), one task per running transfer (or per session-reuse job,
//!   or per staging / archive-monitoring request), the event writer that records what happened
//!   in batches (one durable transaction per batch), the watcher that stops canceled or stalled
//!   transfers, and the queue-timeout sweep.
//! - The store is the only source of truth: a file runs only after the store moved it
//!   SUBMITTED → READY (a compare-and-swap), so a crash never runs a file twice unknowingly;
//!   at start, files left READY/ACTIVE are recovered (`recover`).
//! - What runs right now is also kept in memory ([`Running`]), which is exact because only this
//!   process runs transfers; link, SE and global caps are counted there.

pub mod agent;
pub mod backends;
pub mod checksum;
pub mod optimizer;
pub mod scheduler;
pub mod tape;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::service::tokens::Tokens;
use crate::{
    model::transfer::{Event, Outcome},
    model::{
        job::{File, FileState, Job},
        lifecycle::{self, Failure, Success},
        time,
    },
    store::{Store, StoreError},
};
use backends::{
    CopyMode, Credential, Progress, Registry,
    bearer::{FreshToken, Refresher, Slot, TransferTokens},
};

/// Errors of the engine's own work (transfers report their failures as events, not errors).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("engine task failed: {0}")]
    Task(String),
}

/// Engine settings (the `[engine]` section of the configuration, resolved).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Transfers running at once on this host (`MaxUrlCopyProcesses`).
    pub max_active: usize,
    /// Transfers per link when the optimizer has no decision for it yet.
    pub default_link_active: usize,
    /// Transfers per storage element, in and out, when `/config/se` sets nothing.
    pub default_se_active: usize,
    /// Bring-online requests in flight at once.
    pub max_staging: usize,
    /// Scheduler tick (`SchedulingInterval`); submissions and finished transfers also wake it.
    pub scheduling_interval: Duration,
    /// How often queue deadlines are checked (`QueueTimeoutCheckInterval`).
    pub queue_check_interval: Duration,
    /// A transfer whose byte count has not moved for this long is stopped (`CheckStalledTimeout`).
    pub stall_timeout: Duration,
    /// Per-transfer log files go under this directory.
    pub log_dir: PathBuf,
    /// This host's name (`transfer_host`).
    pub host: String,
    /// The optimizer task.
    pub optimizer: optimizer::Settings,
    /// Stored transfer tokens and their refresh (`None`: no token provider is configured).
    pub tokens: Option<Arc<Tokens>>,
    /// Bring-online and archive-monitoring requests: bulk sizes, waits, poll intervals.
    pub tape: tape::Settings,
    /// Where running transfers report their progress (read by the monitoring views).
    pub progress: Arc<crate::service::monitor::ProgressBoard>,
    /// Scheduler cycle and queue-wait metrics.
    pub metrics: Arc<crate::service::metrics::Metrics>,
}

/// The token service as the transfers' source of fresh tokens.
struct TokenRefresher(Arc<Tokens>);

impl Refresher for TokenRefresher {
    fn fresh<'a>(
        &'a self,
        token_id: &'a str,
    ) -> futures_util::future::BoxFuture<'a, Result<FreshToken, String>> {
        Box::pin(async move {
            let fresh = self.0.fresh(token_id).await?;
            Ok(FreshToken {
                access_token: fresh.access_token,
                expiry: fresh.expiry,
                refreshed: fresh.refreshed,
            })
        })
    }
}

/// How often running transfers are checked for cancellation: the issue asks for a canceled
/// transfer to stop within a second.
const CANCEL_CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// Events waiting to be written; senders wait when it is full (transfers finish no faster than
/// the store records them).
const EVENT_QUEUE: usize = 8192;
/// Events written per transaction.
const EVENT_BATCH: usize = 1024;
/// How long shutdown waits for running transfers to hand their files back.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// The reason of a transfer stopped for lack of progress.
pub const STALLED_MESSAGE: &str = "Transfer has been forced-killed because it was stalled";

/// A transfer (or staging/archive request) running now.
pub struct Running {
    pub job_id: String,
    pub source_se: String,
    pub dest_se: String,
    pub vo_name: String,
    pub activity: String,
    /// Counted against link and SE caps (staging and archive monitoring are not).
    pub counts: bool,
    pub cancel: CancellationToken,
    pub progress: Arc<Progress>,
    /// Set by the watcher when it stops the transfer for lack of progress.
    pub stalled: Arc<AtomicBool>,
    /// Unix seconds when the transfer was taken on (the optimizer's in-window bytes).
    pub started: i64,
    last_bytes: u64,
    last_change: Instant,
}

/// Shared state of the engine's tasks.
pub struct Engine {
    store: Arc<dyn Store>,
    registry: Registry,
    settings: Settings,
    wake: Arc<Notify>,
    running: Mutex<HashMap<u64, Running>>,
    events: mpsc::Sender<Event>,
    stopping: watch::Receiver<bool>,
    /// Storages with fewer STAGING files than a bulk: until when they wait for more.
    staging_wait: Mutex<HashMap<tape::GroupKey, Instant>>,
}

impl Engine {
    /// Recover what a previous run left behind, then run until `stop` turns true; then hand the
    /// running transfers back to the queue and return once every event is written.
    pub async fn run(
        store: Arc<dyn Store>,
        registry: Registry,
        settings: Settings,
        wake: Arc<Notify>,
        stop: watch::Receiver<bool>,
    ) -> Result<(), EngineError> {
        recover(&store, &settings).await?;
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let engine = Arc::new(Engine {
            store,
            registry,
            settings,
            wake,
            running: Mutex::new(HashMap::new()),
            events: events_tx,
            stopping: stop.clone(),
            staging_wait: Mutex::new(HashMap::new()),
        });
        engine.resume_tape().await?;
        let writer = tokio::spawn(event_writer(engine.clone(), events_rx));
        let watcher = tokio::spawn(watcher(engine.clone()));
        let timeouts = tokio::spawn(queue_timeouts(engine.clone()));
        let beats = tokio::spawn(heartbeat(engine.clone()));
        let optimizer = tokio::spawn(optimizer::run(engine.clone()));
        scheduler::run(engine.clone()).await;
        // Stopping: the running transfers hand their files back.
        for r in engine.running().values() {
            r.cancel.cancel();
        }
        let deadline = Instant::now() + SHUTDOWN_DEADLINE;
        while !engine.running().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        watcher.abort();
        timeouts.abort();
        beats.abort();
        optimizer.abort();
        drop(engine);
        // The writer ends when every sender (the engine and its tasks) is gone.
        match tokio::time::timeout(SHUTDOWN_DEADLINE, writer).await {
            Ok(Ok(result)) => result,
            _ => {
                tracing::warn!("event writer did not finish before the shutdown deadline");
                Ok(())
            }
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Running>> {
        // A panic while holding this lock would be a bug in a few lines of map code; keep
        // going with the data as it is rather than poisoning the whole engine.
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    async fn send(&self, event: Event) {
        if self.events.send(event).await.is_err() {
            tracing::error!("event writer is gone; an engine event was not recorded");
        }
    }

    fn track(&self, job: &Job, file: &File, counts: bool) -> (CancellationToken, Arc<Progress>) {
        let cancel = CancellationToken::new();
        let progress = Arc::new(Progress::default());
        self.running().insert(
            file.file_id,
            Running {
                job_id: job.job_id.clone(),
                source_se: file.source_se.clone(),
                dest_se: file.dest_se.clone(),
                vo_name: file.vo_name.clone(),
                activity: file.activity.clone(),
                counts,
                cancel: cancel.clone(),
                progress: progress.clone(),
                stalled: Arc::new(AtomicBool::new(false)),
                started: time::now(),
                last_bytes: 0,
                last_change: Instant::now(),
            },
        );
        (cancel, progress)
    }

    fn untrack(&self, file_id: u64) -> Option<Running> {
        let r = self.running().remove(&file_id);
        if let Some(r) = &r {
            let row = crate::model::monitor::RowKey {
                source_se: r.source_se.clone(),
                dest_se: r.dest_se.clone(),
                vo_name: r.vo_name.clone(),
                activity: r.activity.clone(),
            };
            let moved = r.progress.transferred.load(Ordering::Relaxed);
            self.settings.progress.finish(file_id, &row, Some(moved));
        }
        self.wake.notify_one();
        r
    }

    /// Run one claimed transfer (READY) to its end.
    fn spawn_transfer(self: &Arc<Self>, job: Job, file: File) {
        let (cancel, progress) = self.track(&job, &file, true);
        let engine = self.clone();
        tokio::spawn(async move {
            let event = engine.transfer(&job, &file, &cancel, &progress).await;
            let stalled = engine
                .untrack(file.file_id)
                .is_some_and(|r| r.stalled.load(Ordering::Relaxed));
            let event = match event {
                Event::Aborted { file_id } if stalled => Event::Failed {
                    file_id,
                    failure: to_failure(&agent::TransferFailure::new(
                        agent::Scope::Transfer,
                        agent::Phase::Transfer,
                        libc::ETIMEDOUT,
                        STALLED_MESSAGE,
                    )),
                },
                e => e,
            };
            engine.send(event).await;
        });
    }

    /// Run the files of a session-reuse job one after the other in one task.
    fn spawn_reuse(self: &Arc<Self>, job: Job, files: Vec<File>) {
        let tokens: Vec<_> = files
            .iter()
            .map(|f| (f.file_id, self.track(&job, f, false)))
            .collect();
        // The job holds one slot of its link, as the reference's single process per job.
        if let Some((id, _)) = tokens.first() {
            if let Some(r) = self.running().get_mut(id) {
                r.counts = true;
            }
        }
        let engine = self.clone();
        tokio::spawn(async move {
            for (file, (file_id, (cancel, progress))) in files.iter().zip(tokens) {
                let event = if engine.is_stopping() {
                    Event::Interrupted { file_id }
                } else {
                    engine.transfer(&job, file, &cancel, &progress).await
                };
                engine.untrack(file_id);
                engine.send(event).await;
            }
        });
    }

    /// One transfer: log file, ACTIVE, the agent's steps, the event describing the end.
    async fn transfer(
        &self,
        job: &Job,
        file: &File,
        cancel: &CancellationToken,
        progress: &Progress,
    ) -> Event {
        let file_id = file.file_id;
        let link = format!("{}→{}", file.source_se, file.dest_se);
        let (log_path, mut log) = self.open_log(job, file);
        self.send(Event::Started {
            file_id,
            log_file: log_path.map(|p| p.display().to_string()),
        })
        .await;
        tracing::info!(job_id = %job.job_id, file_id, %link, "transfer started");
        let vo_config = self
            .store
            .server_config(&job.vo_name)
            .await
            .unwrap_or_default();
        let mut spec = scheduler::transfer_spec(job, file, &vo_config);
        let (credential, tpc) = self.transfer_context(job, file).await;
        // A file with tokens authenticates with them only (the reference's `--auth-method
        // oauth2`): no proxy goes to its storage.
        spec.tokens = self.transfer_tokens(job, file).await;
        spec.credential = credential.filter(|_| spec.tokens.is_none());
        (spec.copy_mode, spec.disable_fallback) = tpc;
        if file.retry == 0 {
            self.settings
                .metrics
                .queue_wait(&job.vo_name, (time::now() - job.submit_time) as f64);
        }
        let result = agent::run(&spec, &self.registry, progress, cancel, &mut log).await;
        if let Ok(report) = &result {
            // A copy that reported no progress (TPC without performance markers) moved its
            // whole size: counted when the transfer is untracked.
            progress
                .transferred
                .fetch_max(report.filesize, Ordering::Relaxed);
        }
        match result {
            Ok(report) => {
                tracing::info!(job_id = %job.job_id, file_id, %link, bytes = report.filesize, "transfer finished");
                Event::Finished {
                    file_id,
                    success: Success {
                        filesize: report.filesize,
                        duration: report.duration,
                        throughput: report.throughput,
                    },
                }
            }
            Err(_) if cancel.is_cancelled() && self.is_stopping() => {
                tracing::info!(job_id = %job.job_id, file_id, %link, "transfer handed back to the queue (service stopping)");
                Event::Interrupted { file_id }
            }
            Err(_) if cancel.is_cancelled() => {
                tracing::info!(job_id = %job.job_id, file_id, %link, "transfer stopped");
                Event::Aborted { file_id }
            }
            Err(f) => {
                let failure = to_failure(&f);
                tracing::info!(job_id = %job.job_id, file_id, %link, reason = %failure.reason, "transfer failed");
                Event::Failed { file_id, failure }
            }
        }
    }

    /// The user's delegated proxy (if any) and the copy mode from both storages'
    /// `tpc_support`. A store error leaves the transfer without a credential (the storage then
    /// refuses it with a clear error) rather than failing here.
    async fn transfer_context(
        &self,
        job: &Job,
        file: &File,
    ) -> (Option<Arc<Credential>>, (CopyMode, bool)) {
        let store = &self.store;
        let read = async {
            let src = store.se_config(&file.source_se).await?.tpc_support;
            let dst = store.se_config(&file.dest_se).await?.tpc_support;
            Ok::<_, StoreError>(CopyMode::from_tpc_support(src.as_deref(), dst.as_deref()))
        };
        let mode = match read.await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(job_id = %job.job_id, file_id = file.file_id, error = %e, "could not read the storages' settings");
                (CopyMode::Pull, false)
            }
        };
        (self.credential(job).await, mode)
    }

    /// The job's delegated proxy, if any (a store error is logged and gives none: the storage
    /// then refuses with a clear error).
    async fn credential(&self, job: &Job) -> Option<Arc<Credential>> {
        let (dlg_id, dn) = (&job.cred_id, &job.user_dn);
        let material = match self.store.credential_material(dlg_id, dn).await {
            Ok(m) => m?,
            Err(e) => {
                tracing::warn!(job_id = %job.job_id, error = %e, "could not read the job's credential");
                return None;
            }
        };
        let mut pem = zeroize::Zeroizing::new(String::with_capacity(
            material.proxy_pem.len() + material.key_pem.len() + material.chain_pem.len() + 2,
        ));
        pem.push_str(material.proxy_pem.trim_end());
        pem.push('\n');
        pem.push_str(&String::from_utf8_lossy(&material.key_pem));
        if !pem.ends_with('\n') {
            pem.push('\n');
        }
        pem.push_str(&material.chain_pem);
        // A re-delegated proxy gets a new key (and new connections).
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, pem.as_bytes());
        let fingerprint: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let key = format!("{dlg_id}\0{dn}\0{fingerprint}");
        Some(Arc::new(Credential::new(pem, key)))
    }

    /// The file's source and destination tokens, as stored now. A token that cannot be read
    /// leaves its side without one (the storage then refuses the request and says why).
    async fn transfer_tokens(&self, job: &Job, file: &File) -> Option<Arc<TransferTokens>> {
        if file.src_token_id.is_none() && file.dst_token_id.is_none() {
            return None;
        }
        let service = self.settings.tokens.as_ref();
        let slot = async |id: &Option<String>| -> Option<Slot> {
            let id = id.as_deref()?;
            let Some(service) = service else {
                tracing::warn!(job_id = %job.job_id, file_id = file.file_id, token_id = id, "the file has a token but no token provider is configured");
                return None;
            };
            match service.material(id).await {
                Ok(Some(t)) => Some(Slot {
                    token_id: t.token_id,
                    value: t.access_token,
                    expiry: t.expiry,
                    unmanaged: t.unmanaged,
                }),
                Ok(None) => {
                    tracing::warn!(job_id = %job.job_id, file_id = file.file_id, token_id = id, "the file's token is not stored");
                    None
                }
                Err(e) => {
                    tracing::warn!(job_id = %job.job_id, file_id = file.file_id, token_id = id, error = %e, "the file's token could not be read");
                    None
                }
            }
        };
        let source = slot(&file.src_token_id).await;
        let destination = slot(&file.dst_token_id).await;
        let refresher = service.map(|t| Arc::new(TokenRefresher(t.clone())) as Arc<dyn Refresher>);
        let margin = service.map_or(0, |t| t.margin());
        Some(Arc::new(TransferTokens::new(
            &file.source_surl,
            &file.dest_surl,
            source,
            destination,
            refresher,
            margin,
        )))
    }

    /// The per-transfer log: `<log_dir>/<date>/<src host>__<dst host>/<date-time>__<src
    /// host>__<dst host>__<file id>__<job id>` (the reference's name). A log that cannot be
    /// created is reported once and the transfer runs without it.
    fn open_log(&self, job: &Job, file: &File) -> (Option<PathBuf>, agent::TransferLog) {
        let host = |se: &str| {
            se.split_once("://")
                .map_or(se, |(_, h)| h)
                .replace(['/', ':'], "_")
        };
        let (src, dst) = (host(&file.source_se), host(&file.dest_se));
        let now = time::now();
        let (day, minute) = log_stamps(now);
        let dir = self
            .settings
            .log_dir
            .join(&day)
            .join(format!("{src}__{dst}"));
        let path = dir.join(format!(
            "{minute}__{src}__{dst}__{}__{}",
            file.file_id, job.job_id
        ));
        let created = std::fs::create_dir_all(&dir).and_then(|_| agent::TransferLog::create(&path));
        match created {
            Ok(log) => (Some(path), log),
            Err(e) => {
                tracing::warn!(job_id = %job.job_id, file_id = file.file_id, path = %path.display(), error = %e, "cannot create the transfer log");
                (None, agent::TransferLog::null())
            }
        }
    }
}

/// `YYYY-MM-DD` and `YYYY-MM-DD-HHMM` (UTC) of a unix time.
fn log_stamps(unix: i64) -> (String, String) {
    let t = ::time::OffsetDateTime::from_unix_timestamp(unix)
        .unwrap_or(::time::OffsetDateTime::UNIX_EPOCH);
    let day = format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day());
    let minute = format!("{day}-{:02}{:02}", t.hour(), t.minute());
    (day, minute)
}

/// The store's view of an agent failure; the class is the errno's text as the reference
/// writes it (`NO_SUCH_FILE_OR_DIRECTORY`).
fn to_failure(f: &agent::TransferFailure) -> Failure {
    Failure {
        reason: f.reason(),
        scope: f.scope.as_str().to_string(),
        phase: f.phase.as_str().to_string(),
        class: backends::strerror(f.errno)
            .to_uppercase()
            .replace([' ', '-'], "_"),
        recoverable: f.recoverable(),
        dst_file: f.dst_file.clone(),
    }
}

/// Start-up recovery (one log line per file).
async fn recover(store: &Arc<dyn Store>, settings: &Settings) -> Result<(), EngineError> {
    let applied = store
        .recover_interrupted(&settings.host, time::now())
        .await?;
    for a in applied {
        match a.outcome {
            Outcome::Interrupted(n) => tracing::warn!(
                job_id = %a.job_id,
                file_id = a.file_id,
                interruptions = n,
                max = lifecycle::MAX_INTERRUPTIONS,
                "transfer interrupted by the last stop: queued again, no attempt counted"
            ),
            Outcome::Moved(FileState::Staging) => {
                tracing::warn!(job_id = %a.job_id, file_id = a.file_id, "staging interrupted by the last stop: staging again")
            }
            Outcome::Moved(FileState::Failed) => tracing::error!(
                job_id = %a.job_id,
                file_id = a.file_id,
                "{}",
                lifecycle::POISON_REASON
            ),
            _ => {}
        }
    }
    let repaired = store.repair_multihop(time::now()).await?;
    for a in repaired {
        tracing::warn!(job_id = %a.job_id, file_id = a.file_id, "multihop job had no hop queued: next hop queued");
    }
    Ok(())
}

/// Write events in batches; wake the scheduler after each batch.
async fn event_writer(
    engine: Arc<Engine>,
    mut rx: mpsc::Receiver<Event>,
) -> Result<(), EngineError> {
    let store = engine.store.clone();
    let host = engine.settings.host.clone();
    let weak = Arc::downgrade(&engine);
    drop(engine);
    let mut batch = Vec::with_capacity(EVENT_BATCH);
    while rx.recv_many(&mut batch, EVENT_BATCH).await > 0 {
        let events = std::mem::take(&mut batch);
        let written = store.apply_events(&events, &host, time::now()).await;
        let applied = match written {
            Ok(x) => x,
            Err(e) => {
                // The events are lost from memory but the files stay READY/ACTIVE in the
                // store: the next start recovers them. Say so loudly.
                tracing::error!(error = %e, "cannot record transfer events");
                continue;
            }
        };
        let Some(engine) = weak.upgrade() else {
            continue;
        };
        let mut archiving = Vec::new();
        for a in &applied {
            if let Outcome::Moved(FileState::Archiving) = a.outcome {
                archiving.push(a.file_id);
            }
        }
        if !archiving.is_empty() && !engine.is_stopping() {
            let rows = async {
                let mut out = Vec::new();
                for id in archiving {
                    if let Some(f) = store.file(id).await? {
                        if let Some(j) = store.job(&f.job_id).await? {
                            out.push((j, f));
                        }
                    }
                }
                Ok::<_, StoreError>(out)
            };
            if let Ok(rows) = rows.await {
                engine.start_archive(rows);
            }
        }
        engine.wake.notify_one();
    }
    Ok(())
}

/// Stop transfers whose file was canceled (user, ban, queue timeout) or that stalled.
async fn watcher(engine: Arc<Engine>) {
    let mut tick = tokio::time::interval(CANCEL_CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let ids: Vec<u64> = {
            let mut running = engine.running();
            let now = Instant::now();
            for (id, r) in running.iter_mut() {
                let bytes = r.progress.transferred.load(Ordering::Relaxed);
                if r.counts || bytes > 0 {
                    let row = crate::model::monitor::RowKey {
                        source_se: r.source_se.clone(),
                        dest_se: r.dest_se.clone(),
                        vo_name: r.vo_name.clone(),
                        activity: r.activity.clone(),
                    };
                    engine.settings.progress.update(*id, &row, bytes, now);
                }
                if bytes != r.last_bytes {
                    r.last_bytes = bytes;
                    r.last_change = now;
                } else if r.counts
                    && now.duration_since(r.last_change) > engine.settings.stall_timeout
                    && !r.cancel.is_cancelled()
                {
                    tracing::warn!(job_id = %r.job_id, "transfer stalled: stopping it");
                    r.stalled.store(true, Ordering::Relaxed);
                    r.cancel.cancel();
                }
            }
            running.keys().copied().collect()
        };
        if ids.is_empty() {
            continue;
        }
        let Ok(states) = engine.store.file_states(&ids).await else {
            continue;
        };
        let running = engine.running();
        for (id, state) in states {
            let stop = match state {
                None => true,
                Some(s) => s.is_terminal() || s == FileState::OnHold,
            };
            if stop {
                if let Some(r) = running.get(&id) {
                    if !r.cancel.is_cancelled() {
                        tracing::info!(job_id = %r.job_id, file_id = id, "file canceled: stopping its transfer");
                        r.cancel.cancel();
                    }
                }
            }
        }
    }
}

/// `HeartBeatInterval`: how often this host says it is alive in `/config` (`t_hosts.beat`).
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(60);

async fn heartbeat(engine: Arc<Engine>) {
    let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
    loop {
        tick.tick().await;
        let beat = engine
            .store
            .beat_host(&engine.settings.host, "fts_server", time::now())
            .await;
        if let Err(e) = beat {
            tracing::warn!(error = %e, "heartbeat not recorded");
        }
    }
}

/// Queue deadlines: per-job `max_time_in_queue` and the VO's global `max_time_queue`.
async fn queue_timeouts(engine: Arc<Engine>) {
    let mut tick = tokio::time::interval(engine.settings.queue_check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = time::now();
        let result = async {
            let mut canceled = engine.store.expire_queued(now).await?;
            canceled.extend(engine.store.expire_global(now).await?);
            Ok::<_, StoreError>(canceled)
        }
        .await;
        match result {
            Ok(ids) => {
                for id in ids {
                    tracing::info!(job_id = %id, "queue timeout: waiting files canceled");
                }
            }
            Err(e) => tracing::error!(error = %e, "queue timeout check failed"),
        }
    }
}
