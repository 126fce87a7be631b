//! The transfer agent: one transfer's execution steps (spec §4.2), bring-online and archive
//! monitoring (§5.1, §5.2), and the error report (§4.4).
//!
//! The agent composes a backend [`Session`]'s primitive operations into the reference's steps
//! and writes every message itself, so all protocols fail with the same words:
//!
//! 0. log the transfer (URLs with their query strings redacted, never credentials);
//! 3. source size: `stat` (SOURCE / TRANSFER_PREPARATION), or the user's size when strict;
//! 4. timeout: the spec's if > 0, else `600 + ceil(sec_per_mb × size / 2^20)` (sec_per_mb 0 → 2);
//! 5. source checksum when the mode includes the source (not strict);
//! 6. destination: exists → delete if overwrite else EEXIST (with the destination file report
//!    when the job asked for it: size, checksum and locality of what is there, §4.2 step 6);
//!    missing → create the parent;
//! 7. copy, raced against cancellation (ECANCELED "Transfer canceled") and a watchdog at
//!    timeout + 60 s (ETIMEDOUT); on failure the destination is removed unless EEXIST;
//! 8. destination size and checksums (not strict), removing the destination on mismatch;
//! 9. release of a staged source (warning only);
//! 10. the [`TransferReport`], or a [`TransferFailure`] with scope, phase, errno, message.
//!
//! Source and destination must be served by one backend (both `mock://`, both `file://`; gfal2
//! for `davs://` → `root://`), like gfal2's plugin-to-plugin copies; they share one session, so
//! the mock stat state machine sees the reference's order of calls.
//!
//! A backend whose copy tool does steps 5–8 itself (gfal2: `gfal-copy` checks checksums, the
//! destination and the result in one process) offers [`Session::copy_checked`]; the agent then
//! runs steps 0–4, that one call under the same cancellation and watchdog as step 7 (which
//! then spans the verification too, as the reference's does), and 9–10. After a failure or a
//! stop it removes the destination only if the backend said the copy had begun.
//!
//! Deliberate differences from the reference: the watchdog covers the copy only (the
//! reference's thread also spans verification); every step, not just the copy, stops on
//! cancellation; the overwrite-on-disk workflow is not implemented. The destination file
//! report reads the locality with [`Session::locality`], which only the mock, file and gfal2
//! backends answer: elsewhere the report is skipped with an error line, as the reference skips
//! it when gfal2 cannot read `user.status`.

use std::{
    fmt,
    io::Write,
    path::Path,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    backends::{
        Backend, CheckedCopy, CheckedReport, CopyMode, CopyParams, Credential, OpError, Progress,
        Registry, Session, SessionContext,
        bearer::{Side, TransferTokens},
    },
    checksum::{ChecksumMode, DEFAULT_ALGORITHM, UserChecksum, matches},
};
use crate::model::lifecycle::DestFile;

/// Base of the size-derived timeout (seconds), as fts_url_copy.
pub const BASE_TIMEOUT: u64 = 600;
/// Seconds per MiB when the configured value is 0.
pub const DEFAULT_SEC_PER_MB: u64 = 2;
/// The watchdog fires this long after the transfer timeout (the protocol's own timeout, set
/// to the transfer timeout, should fire first).
pub const WATCHDOG_GRACE: Duration = Duration::from_secs(60);
/// Bound on the clean-up of a failed destination, so a hung storage cannot hold the worker.
pub const CLEANUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Where an error happened (`t_file.error_scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Source,
    Destination,
    Transfer,
    GeneralFailure,
    /// Bring-online (§5.1).
    Staging,
    /// Archive monitoring (§5.2).
    Archiving,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Source => "SOURCE",
            Scope::Destination => "DESTINATION",
            Scope::Transfer => "TRANSFER",
            Scope::GeneralFailure => "GENERAL_FAILURE",
            Scope::Staging => "STAGING",
            Scope::Archiving => "ARCHIVING",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When an error happened (`t_file.failure_phase`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    TransferPreparation,
    Transfer,
    TransferFinalization,
    TransferService,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::TransferPreparation => "TRANSFER_PREPARATION",
            Phase::Transfer => "TRANSFER",
            Phase::TransferFinalization => "TRANSFER_FINALIZATION",
            Phase::TransferService => "TRANSFER_SERVICE",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One transfer to run.
#[derive(Debug, Clone)]
pub struct TransferSpec {
    pub job_id: String,
    pub file_id: u64,
    pub source: String,
    pub destination: String,
    /// The size the user declared (used as the size in strict mode).
    pub user_filesize: u64,
    /// `ALG:value` or `ALG`; `None` with a checksum mode means ADLER32 without a user value.
    pub checksum: Option<String>,
    pub checksum_mode: ChecksumMode,
    pub overwrite: bool,
    /// Copy only: no stat, checksum, existence or verification steps.
    pub strict_copy: bool,
    /// Seconds; 0 = derived from the size.
    pub timeout: u64,
    /// Seconds per MiB for the derived timeout; 0 = [`DEFAULT_SEC_PER_MB`].
    pub sec_per_mb: u64,
    pub nostreams: u32,
    /// The staging token, if the source was brought online: released after success.
    pub bringonline_token: Option<String>,
    /// Do not release the staged source.
    pub skip_evict: bool,
    /// The user's delegated proxy, for storages that authenticate it.
    pub credential: Option<Arc<Credential>>,
    /// The transfer's bearer tokens (token transfers need no proxy).
    pub tokens: Option<Arc<TransferTokens>>,
    /// Third-party copy mode (from the storages' `tpc_support`) and whether other modes may
    /// be tried when it fails.
    pub copy_mode: CopyMode,
    pub disable_fallback: bool,
    /// The VO's `no_streaming`: never copy through this service.
    pub no_streaming: bool,
    /// The job's `dst_file_report`: describe an existing destination that may not be
    /// overwritten (Rucio's tape destinations).
    pub dst_file_report: bool,
}

/// A successful transfer.
#[derive(Debug, Clone, PartialEq)]
pub struct TransferReport {
    /// Source size (stat, or the user's in strict mode).
    pub filesize: u64,
    /// Bytes the backend reported written.
    pub transferred: u64,
    /// Copy duration in seconds.
    pub duration: f64,
    /// MiB/s over the copy (0 when the duration is 0).
    pub throughput: f64,
    /// The timeout that applied (seconds), for `internal_file_params`.
    pub timeout: u64,
}

/// A failed transfer, as reported to the scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferFailure {
    pub scope: Scope,
    pub phase: Phase,
    /// Positive errno (Linux numbering).
    pub errno: i32,
    pub message: String,
    /// The destination file report of an EEXIST failure, when the job asked for one.
    pub dst_file: Option<DestFile>,
}

impl TransferFailure {
    pub fn new(scope: Scope, phase: Phase, errno: i32, message: impl Into<String>) -> Self {
        TransferFailure {
            scope,
            phase,
            errno,
            message: message.into(),
            dst_file: None,
        }
    }

    fn from_op(scope: Scope, phase: Phase, err: OpError) -> Self {
        TransferFailure::new(scope, phase, err.errno, err.message)
    }

    /// `t_file.reason`: `"<SCOPE> [<errno>] <message>"`, URL query strings redacted.
    pub fn reason(&self) -> String {
        format!(
            "{} [{}] {}",
            self.scope,
            self.errno,
            redact_queries(&self.message)
        )
    }

    /// Whether a retry may succeed (§4.4).
    pub fn recoverable(&self) -> bool {
        recoverable(self.scope, self.errno, &self.message)
    }

    /// `ECANCELED` failures are reported as CANCELED, not FAILED.
    pub fn is_cancel(&self) -> bool {
        self.errno == libc::ECANCELED
    }
}

impl fmt::Display for TransferFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason())
    }
}

impl std::error::Error for TransferFailure {}

/// Messages that make an error retryable, checked first.
const RETRY_MESSAGES: &[&str] = &[
    "performance marker",
    "Name or service not known",
    "Connection timed out",
    "end-of-file was reached",
    "end of file occurred",
    "SRM_INTERNAL_ERROR",
    "was forcefully killed",
    "operation timeout",
];

/// Messages that make an error final, checked after the errno shortcuts.
const NO_RETRY_MESSAGES: &[&str] = &[
    "proxy expired",
    "with an error 550 File not found",
    "File exists and overwrite",
    "No such file or directory",
    "SRM_INVALID_PATH",
    "The certificate has expired",
    "The available CRL has expired",
    "SRM Authentication failed",
    "SRM_DUPLICATION_ERROR",
    "SRM_AUTHENTICATION_FAILURE",
    "SRM_NO_FREE_SPACE",
    "digest too big for rsa key",
    "Can not determine address of local host",
    "Permission denied",
    "System error in write into HDFS",
    "File exists",
    "checksum do not match",
    "CHECKSUM MISMATCH",
    "The source file is not ONLINE",
];

/// The reference classifier (§4.4), in its order: retry messages, ETIMEDOUT (yes), ECANCELED
/// (no), final messages, then the per-scope lists of final errnos; anything else is retryable.
pub fn recoverable(scope: Scope, errno: i32, message: &str) -> bool {
    use libc::*;
    if scope == Scope::Staging {
        // The QoS daemon's own rule (`JobError::IsRecoverable`): errno only.
        return matches!(
            errno,
            ETIMEDOUT | ECONNABORTED | ECONNREFUSED | ECONNRESET | EAGAIN | EBUSY
        );
    }
    if RETRY_MESSAGES.iter().any(|m| message.contains(m)) {
        return true;
    }
    if errno == ETIMEDOUT {
        return true;
    }
    if errno == ECANCELED {
        return false;
    }
    if NO_RETRY_MESSAGES.iter().any(|m| message.contains(m)) {
        return false;
    }
    let final_errnos: &[i32] = match scope {
        Scope::Source => &[
            ENOENT,
            EPERM,
            EACCES,
            EISDIR,
            ENAMETOOLONG,
            E2BIG,
            ENOTDIR,
            EPROTONOSUPPORT,
        ],
        Scope::Staging => &[],
        Scope::Destination => &[
            EPERM,
            EACCES,
            EISDIR,
            E2BIG,
            EROFS,
            EFAULT,
            ENAMETOOLONG,
            EPROTONOSUPPORT,
            EEXIST,
        ],
        Scope::Transfer | Scope::GeneralFailure | Scope::Archiving => &[
            ENOSPC,
            EPERM,
            EACCES,
            EEXIST,
            EFBIG,
            EROFS,
            ENAMETOOLONG,
            EPROTONOSUPPORT,
        ],
    };
    !final_errnos.contains(&errno)
}

/// Replace the query string of every URL (`scheme://…?query`) in `text` by `<redacted>`: query
/// strings carry signatures and tokens (S3 pre-signed URLs, macaroons).
pub fn redact_queries(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        // The URL runs to the next whitespace or closing delimiter.
        let end = rest[at..]
            .find(|c: char| c.is_whitespace() || "\"'<>()[]".contains(c))
            .map_or(rest.len(), |e| at + e);
        let url = &rest[..end];
        match url[at..].find('?') {
            Some(q) => {
                out.push_str(&url[..at + q + 1]);
                out.push_str("<redacted>");
            }
            None => out.push_str(url),
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The symbolic name of an errno (`ENOENT`) for log lines; `E<n>` when unknown.
pub fn errno_name(errno: i32) -> String {
    use libc::*;
    let name = match errno {
        EPERM => "EPERM",
        ENOENT => "ENOENT",
        EINTR => "EINTR",
        EIO => "EIO",
        E2BIG => "E2BIG",
        EAGAIN => "EAGAIN",
        EACCES => "EACCES",
        EFAULT => "EFAULT",
        EEXIST => "EEXIST",
        ENOTDIR => "ENOTDIR",
        EISDIR => "EISDIR",
        EINVAL => "EINVAL",
        EFBIG => "EFBIG",
        ENOSPC => "ENOSPC",
        EROFS => "EROFS",
        ENAMETOOLONG => "ENAMETOOLONG",
        ECOMM => "ECOMM",
        EPROTONOSUPPORT => "EPROTONOSUPPORT",
        ENOTSUP => "ENOTSUP",
        ECONNREFUSED => "ECONNREFUSED",
        ETIMEDOUT => "ETIMEDOUT",
        ECANCELED => "ECANCELED",
        _ => return format!("E{errno}"),
    };
    name.to_string()
}

/// The transfer timeout in seconds (§1.5).
pub fn transfer_timeout(timeout: u64, sec_per_mb: u64, filesize: u64) -> u64 {
    if timeout > 0 {
        return timeout;
    }
    let per_mb = if sec_per_mb > 0 {
        sec_per_mb
    } else {
        DEFAULT_SEC_PER_MB
    };
    // ceil(per_mb × size / 2^20) in integers, without overflow for any u64 size.
    let scaled = u128::from(per_mb) * u128::from(filesize);
    let extra = scaled.div_ceil(1 << 20);
    BASE_TIMEOUT.saturating_add(u64::try_from(extra).unwrap_or(u64::MAX))
}

/// The per-transfer log: timestamped lines in a file, in memory (tests) or nowhere. Clones
/// write to the same log, so a backend session can add its protocol steps.
#[derive(Clone)]
pub struct TransferLog {
    sink: Arc<std::sync::Mutex<LogSink>>,
}

enum LogSink {
    File(std::fs::File),
    Memory(Vec<String>),
    Null,
}

impl TransferLog {
    fn with(sink: LogSink) -> TransferLog {
        TransferLog {
            sink: Arc::new(std::sync::Mutex::new(sink)),
        }
    }

    /// Create (truncate) the log file at `path`. Lines are written unbuffered so a crash keeps
    /// everything logged so far; they are few and short.
    pub fn create(path: &Path) -> std::io::Result<TransferLog> {
        Ok(TransferLog::with(LogSink::File(std::fs::File::create(
            path,
        )?)))
    }

    /// A log that keeps its lines in memory (see [`TransferLog::lines`]).
    pub fn memory() -> TransferLog {
        TransferLog::with(LogSink::Memory(Vec::new()))
    }

    /// A log that discards everything.
    pub fn null() -> TransferLog {
        TransferLog::with(LogSink::Null)
    }

    /// The lines of a memory log (empty for other kinds).
    pub fn lines(&self) -> Vec<String> {
        match &*self.lock() {
            LogSink::Memory(lines) => lines.clone(),
            _ => Vec::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogSink> {
        // A panic while holding the lock cannot leave a half-written line worth refusing.
        self.sink.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Append one line. Callers pass URLs through [`redact_queries`]; nothing here may carry
    /// a credential. A failing log file never fails the transfer.
    pub fn line(&self, level: &str, message: impl fmt::Display) {
        let now = time::OffsetDateTime::now_utc();
        let line = format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02},{:03} {:<7} {}",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second(),
            now.millisecond(),
            level,
            message
        );
        match &mut *self.lock() {
            LogSink::File(f) => {
                let _ = writeln!(f, "{line}");
            }
            LogSink::Memory(lines) => lines.push(line),
            LogSink::Null => {}
        }
    }

    pub fn info(&self, message: impl fmt::Display) {
        self.line("INFO", message);
    }

    pub fn warn(&self, message: impl fmt::Display) {
        self.line("WARNING", message);
    }

    pub fn error(&self, message: impl fmt::Display) {
        self.line("ERR", message);
    }
}

/// Run `fut` unless `cancel` fires first (→ ECANCELED "Transfer canceled" in `phase`).
async fn step<T>(
    cancel: &CancellationToken,
    phase: Phase,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, TransferFailure> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(canceled(phase)),
        out = fut => Ok(out),
    }
}

/// The destination file report (the reference's `createDestFileReport`): the checksum with
/// the transfer's algorithm, the size, and the locality from gfal2's `user.status`. Any
/// operation failing skips the report (an error line, no `dst_file`), as in the reference; an
/// unknown locality reports neither disk nor tape, with a warning.
async fn dest_file_report(
    session: &mut dyn Session,
    dst: &str,
    user: &UserChecksum,
    cancel: &CancellationToken,
    log: &mut TransferLog,
) -> Result<Option<DestFile>, TransferFailure> {
    log.info(format_args!(
        "Checking integrity of destination tape file: {}",
        redact_queries(dst)
    ));
    let checksum = step(
        cancel,
        Phase::TransferPreparation,
        session.checksum(dst, &user.algorithm),
    )
    .await?;
    let size = step(cancel, Phase::TransferPreparation, session.stat(dst)).await?;
    let locality = step(cancel, Phase::TransferPreparation, session.locality(dst)).await?;
    let (checksum_value, file_size, locality) = match (checksum, size, locality) {
        (Ok(c), Ok(s), Ok(l)) => (c, s, l),
        (Err(e), ..) | (_, Err(e), _) | (.., Err(e)) => {
            log.error(format_args!(
                "Failed to check integrity of destination tape file: {} (error={})",
                redact_queries(dst),
                redact_queries(&e.message)
            ));
            return Ok(None);
        }
    };
    // gfal2's SRM plugin ends NEARLINE with a space; other plugins do not.
    let (file_on_disk, file_on_tape) = match locality.trim() {
        "ONLINE" => (true, false),
        "NEARLINE" => (false, true),
        "ONLINE_AND_NEARLINE" => (true, true),
        other => {
            log.warn(format_args!(
                "Could not determine file locality from the Gfal2 user.status extended \
                 attribute : {other}"
            ));
            (false, false)
        }
    };
    let report = DestFile {
        file_size,
        checksum_type: user.algorithm.clone(),
        checksum_value,
        file_on_tape,
        file_on_disk,
    };
    log.info(format_args!(
        "Destination file report: file_size={} checksum={}:{} file_on_disk={} file_on_tape={}",
        report.file_size,
        report.checksum_type,
        report.checksum_value,
        u8::from(report.file_on_disk),
        u8::from(report.file_on_tape)
    ));
    Ok(Some(report))
}

/// Before a step that uses `side`'s storage: a managed token about to expire is refreshed
/// (the reference's `refreshExpiredAccessToken`); when none can be had the transfer fails with
/// EFAULT `Failed to obtain refresh token for <side>` (scope of the side, preparation).
async fn fresh_token(
    spec: &TransferSpec,
    side: Side,
    log: &TransferLog,
) -> Result<(), TransferFailure> {
    let Some(tokens) = &spec.tokens else {
        return Ok(());
    };
    match tokens.ensure_fresh(side, crate::model::time::now()).await {
        Ok(None) => Ok(()),
        Ok(Some(claims)) => {
            log.info(format_args!(
                "Successfully refreshed access token for {}: {claims}",
                side.as_str()
            ));
            Ok(())
        }
        Err(why) => {
            log.error(format_args!(
                "Failed to obtain refreshed token for {}! ({})",
                side.as_str(),
                redact_queries(&why)
            ));
            let scope = match side {
                Side::Source => Scope::Source,
                Side::Destination => Scope::Destination,
            };
            Err(TransferFailure::new(
                scope,
                Phase::TransferPreparation,
                libc::EFAULT,
                crate::model::token::msg::refresh_failed(side == Side::Source),
            ))
        }
    }
}

fn canceled(phase: Phase) -> TransferFailure {
    TransferFailure::new(Scope::Transfer, phase, libc::ECANCELED, "Transfer canceled")
}

/// The backend serving `url`, or EPROTONOSUPPORT in `scope`.
fn backend_for<'r>(
    registry: &'r Registry,
    url: &str,
    scope: Scope,
) -> Result<&'r Arc<dyn Backend>, TransferFailure> {
    registry.for_url(url).ok_or_else(|| {
        let scheme = url.split_once(':').map_or(url, |(s, _)| s);
        TransferFailure::new(
            scope,
            Phase::TransferPreparation,
            libc::EPROTONOSUPPORT,
            format!("Protocol not supported: {scheme}"),
        )
    })
}

/// Run one transfer (§4.2). `progress.transferred` advances during the copy; `cancel` stops
/// any step with ECANCELED; `log` receives the transfer's log lines.
pub async fn run(
    spec: &TransferSpec,
    registry: &Registry,
    progress: &Progress,
    cancel: &CancellationToken,
    log: &mut TransferLog,
) -> Result<TransferReport, TransferFailure> {
    let result = run_steps(spec, registry, progress, cancel, log).await;
    match &result {
        Ok(report) => log.info(format_args!(
            "Transfer finished successfully: {} bytes in {:.3} s ({:.3} MiB/s)",
            report.filesize, report.duration, report.throughput
        )),
        Err(f) if f.recoverable() => log.error(format_args!(
            "Recoverable error: [{} {}] {}",
            f.errno,
            errno_name(f.errno),
            redact_queries(&f.message)
        )),
        Err(f) => log.error(format_args!(
            "Non recoverable error: [{} {}] {}",
            f.errno,
            errno_name(f.errno),
            redact_queries(&f.message)
        )),
    }
    result
}

async fn run_steps(
    spec: &TransferSpec,
    registry: &Registry,
    progress: &Progress,
    cancel: &CancellationToken,
    log: &mut TransferLog,
) -> Result<TransferReport, TransferFailure> {
    use Phase::*;

    // Step 0: what we were asked to do.
    log.info("Transfer accepted");
    log.info(format_args!("Job id: {}", spec.job_id));
    log.info(format_args!("File id: {}", spec.file_id));
    log.info(format_args!("Source url: {}", redact_queries(&spec.source)));
    log.info(format_args!(
        "Dest url: {}",
        redact_queries(&spec.destination)
    ));
    log.info(format_args!("Overwrite enabled: {}", spec.overwrite));
    log.info(format_args!(
        "Checksum: {}",
        spec.checksum.as_deref().unwrap_or("")
    ));
    log.info(format_args!(
        "Checksum mode: {}",
        spec.checksum_mode.letter()
    ));
    log.info(format_args!("User filesize: {}", spec.user_filesize));
    log.info(format_args!("Strict copy: {}", spec.strict_copy));
    // The reference's lines: the tokens' claims (never the tokens) and ids.
    if let Some(tokens) = &spec.tokens {
        for side in [Side::Source, Side::Destination] {
            if let Some((id, claims, unmanaged)) = tokens.describe(side) {
                let name = if side == Side::Source {
                    "Source"
                } else {
                    "Destination"
                };
                log.info(format_args!("{name} token: {claims}"));
                log.info(format_args!(
                    "{name} token id: {id} ({})",
                    if unmanaged { "unmanaged" } else { "managed" }
                ));
            }
        }
    }

    backend_for(registry, &spec.source, Scope::Source)?;
    backend_for(registry, &spec.destination, Scope::Destination)?;
    let Some(backend) = registry.for_pair(&spec.source, &spec.destination) else {
        return Err(TransferFailure::new(
            Scope::Transfer,
            TransferPreparation,
            libc::EPROTONOSUPPORT,
            "Copies between these protocols are not supported",
        ));
    };
    let mut session = backend.session(&SessionContext {
        credential: spec.credential.clone(),
        tokens: spec.tokens.clone(),
        log: log.clone(),
    });
    let user = spec
        .checksum
        .as_deref()
        .map(UserChecksum::parse)
        .unwrap_or_else(|| UserChecksum::parse(DEFAULT_ALGORITHM));
    let mode = spec.checksum_mode;
    let (src, dst) = (spec.source.as_str(), spec.destination.as_str());

    // Step 3: source size.
    let filesize = if spec.strict_copy {
        log.info("Copy only transfer!");
        spec.user_filesize
    } else {
        log.info("Getting source file size");
        fresh_token(spec, Side::Source, log).await?;
        let size = step(cancel, TransferPreparation, session.stat(src))
            .await?
            .map_err(|e| TransferFailure::from_op(Scope::Source, TransferPreparation, e))?;
        log.info(format_args!("File size: {size} (source)"));
        size
    };

    // Step 4: timeout.
    let timeout = transfer_timeout(spec.timeout, spec.sec_per_mb, filesize);
    log.info(format_args!("TCP streams: {}", spec.nostreams));
    log.info(format_args!("Timeout set to: {timeout}"));
    let params = CopyParams {
        filesize,
        nostreams: spec.nostreams,
        timeout,
        copy_mode: spec.copy_mode,
        disable_fallback: spec.disable_fallback,
        no_streaming: spec.no_streaming,
    };

    // Steps 5–8 in one call, when the backend's tool does them itself.
    let request = CheckedCopy {
        job_id: spec.job_id.clone(),
        file_id: spec.file_id,
        source: spec.source.clone(),
        destination: spec.destination.clone(),
        params: params.clone(),
        checksum_mode: mode,
        checksum: user.clone(),
        overwrite: spec.overwrite,
        strict: spec.strict_copy,
    };
    if spec.tokens.is_some() && !spec.strict_copy {
        fresh_token(spec, Side::Source, log).await?;
        fresh_token(spec, Side::Destination, log).await?;
    }
    let checked = match session.copy_checked(&request, progress) {
        Some(copy) => {
            log.info(format_args!(
                "Starting transfer (checksums, destination checks and verification by the {} \
                 backend)",
                backend.name()
            ));
            Some(checked_copy(copy, timeout, cancel).await)
        }
        None => None,
    };
    if let Some(outcome) = checked {
        return match outcome {
            Ok(duration) => {
                log.info(format_args!("Transfer done in {duration:.3} s"));
                release_source(spec, session.as_mut(), cancel, log).await?;
                Ok(report(filesize, duration, timeout, progress))
            }
            Err(mut failure) => {
                if failure.errno == libc::EEXIST {
                    log.info("The transfer failed because the file exists. Do not clean!");
                    if spec.dst_file_report && !spec.overwrite {
                        failure.dst_file =
                            dest_file_report(session.as_mut(), dst, &user, cancel, log).await?;
                    }
                } else if progress.copying.load(Ordering::Relaxed) {
                    cleanup(spec, session.as_mut(), dst, log).await;
                }
                Err(failure)
            }
        };
    }

    // Step 5: source checksum.
    let mut source_checksum = None;
    if !spec.strict_copy && mode.includes_source() {
        log.info(format_args!(
            "Obtaining source checksum for checksum verification ({})",
            mode.letter()
        ));
        fresh_token(spec, Side::Source, log).await?;
        let value = step(
            cancel,
            TransferPreparation,
            session.checksum(src, &user.algorithm),
        )
        .await?
        .map_err(|e| TransferFailure::from_op(Scope::Source, TransferPreparation, e))?;
        log.info(format_args!("Checksum: {value} (source)"));
        match &user.value {
            Some(expected) if !matches(&value, expected) => {
                return Err(TransferFailure::new(
                    Scope::Source,
                    TransferPreparation,
                    libc::EIO,
                    format!(
                        "Source and user-defined {} checksum do not match ({} != {})",
                        user.algorithm, value, expected
                    ),
                ));
            }
            Some(_) => log.info("Source and user-defined checksum match!"),
            None if mode == ChecksumMode::Source => {
                log.warn("Checksum-mode \"s\" requested, but no user-defined checksum provided!")
            }
            None => {}
        }
        source_checksum = Some(value);
    }

    // Step 6: destination preparation.
    if !spec.strict_copy {
        log.info("Checking existence of destination file");
        fresh_token(spec, Side::Destination, log).await?;
        let exists = step(cancel, TransferPreparation, session.exists(dst))
            .await?
            .map_err(|e| TransferFailure::from_op(Scope::Destination, TransferPreparation, e))?;
        if exists {
            log.info("Destination file exists!");
            if !spec.overwrite {
                let mut failure = TransferFailure::new(
                    Scope::Destination,
                    TransferPreparation,
                    libc::EEXIST,
                    "Destination file exists and overwrite is not enabled",
                );
                if spec.dst_file_report {
                    failure.dst_file =
                        dest_file_report(session.as_mut(), dst, &user, cancel, log).await?;
                }
                return Err(failure);
            }
            step(cancel, TransferPreparation, session.delete(dst))
                .await?
                .map_err(|e| {
                    TransferFailure::from_op(Scope::Destination, TransferPreparation, e)
                })?;
            log.info(format_args!(
                "OVERWRITE Deleted file: {}",
                redact_queries(dst)
            ));
        } else {
            log.info("Destination file does not exist!");
            match step(cancel, TransferPreparation, session.make_parent(dst)).await? {
                Ok(()) => {}
                Err(e) if e.errno == libc::EEXIST => {}
                Err(e) => {
                    return Err(TransferFailure::from_op(
                        Scope::Destination,
                        TransferPreparation,
                        e,
                    ));
                }
            }
        }
    }

    // Step 7: the copy, under cancellation and the watchdog.
    fresh_token(spec, Side::Source, log).await?;
    fresh_token(spec, Side::Destination, log).await?;
    log.info("Starting transfer");
    let started = Instant::now();
    let watchdog = tokio::time::sleep(Duration::from_secs(timeout).saturating_add(WATCHDOG_GRACE));
    let outcome = tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(canceled(Transfer)),
        _ = watchdog => Err(TransferFailure::new(
            Scope::Transfer,
            Transfer,
            libc::ETIMEDOUT,
            format!("Transfer canceled because the timeout of {timeout} seconds expired"),
        )),
        r = session.copy(src, dst, &params, progress) => {
            r.map_err(|e| TransferFailure::from_op(Scope::Transfer, Transfer, e))
        }
    };
    let duration = started.elapsed().as_secs_f64();
    if let Err(failure) = outcome {
        if failure.errno == libc::EEXIST {
            log.info("The transfer failed because the file exists. Do not clean!");
        } else {
            cleanup(spec, session.as_mut(), dst, log).await;
        }
        return Err(failure);
    }
    log.info(format_args!("Transfer done in {duration:.3} s"));

    // Step 8: verification.
    if !spec.strict_copy {
        let fail =
            |e: OpError| TransferFailure::from_op(Scope::Destination, TransferFinalization, e);
        log.info("Getting destination file size");
        fresh_token(spec, Side::Destination, log).await?;
        let dest_size = step(cancel, TransferFinalization, session.stat(dst))
            .await?
            .map_err(fail)?;
        log.info(format_args!("File size: {dest_size} (destination)"));
        if dest_size != filesize {
            cleanup(spec, session.as_mut(), dst, log).await;
            return Err(TransferFailure::new(
                Scope::Destination,
                TransferFinalization,
                libc::EINVAL,
                "Source and destination file size mismatch",
            ));
        }
        log.info("Source and destination file size matching");

        if mode.includes_target() {
            log.info(format_args!(
                "Obtaining destination checksum for checksum verification ({})",
                mode.letter()
            ));
            fresh_token(spec, Side::Destination, log).await?;
            let dest_checksum = step(
                cancel,
                TransferFinalization,
                session.checksum(dst, &user.algorithm),
            )
            .await?
            .map_err(fail)?;
            log.info(format_args!("Checksum: {dest_checksum} (destination)"));
            match &user.value {
                Some(expected) if !matches(expected, &dest_checksum) => {
                    cleanup(spec, session.as_mut(), dst, log).await;
                    return Err(TransferFailure::new(
                        Scope::Destination,
                        TransferFinalization,
                        libc::EIO,
                        format!(
                            "User-defined and destination {} checksum do not match ({} != {})",
                            user.algorithm, expected, dest_checksum
                        ),
                    ));
                }
                Some(_) => log.info("User-defined and destination checksum match!"),
                None if mode == ChecksumMode::Target => log
                    .warn("Checksum-mode \"t\" requested, but no user-defined checksum provided!"),
                None => {}
            }
            if mode == ChecksumMode::Both {
                let source_checksum = source_checksum.unwrap_or_default();
                if !matches(&source_checksum, &dest_checksum) {
                    cleanup(spec, session.as_mut(), dst, log).await;
                    return Err(TransferFailure::new(
                        Scope::Destination,
                        TransferFinalization,
                        libc::EIO,
                        format!(
                            "Source and destination {} checksum do not match ({} != {})",
                            user.algorithm, source_checksum, dest_checksum
                        ),
                    ));
                }
                log.info("End-to-end checksum match!");
            }
        }
    }

    release_source(spec, session.as_mut(), cancel, log).await?;
    Ok(report(filesize, duration, timeout, progress))
}

/// Run a backend's checked copy (steps 5–8) raced against cancellation and the watchdog, as
/// step 7; returns the copy's duration.
async fn checked_copy(
    copy: futures_util::future::BoxFuture<'_, Result<CheckedReport, TransferFailure>>,
    timeout: u64,
    cancel: &CancellationToken,
) -> Result<f64, TransferFailure> {
    let started = Instant::now();
    let watchdog = tokio::time::sleep(Duration::from_secs(timeout).saturating_add(WATCHDOG_GRACE));
    let report = tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(canceled(Phase::Transfer)),
        _ = watchdog => Err(TransferFailure::new(
            Scope::Transfer,
            Phase::Transfer,
            libc::ETIMEDOUT,
            format!("Transfer canceled because the timeout of {timeout} seconds expired"),
        )),
        r = copy => r,
    }?;
    Ok(report
        .copy_duration
        .unwrap_or_else(|| started.elapsed().as_secs_f64()))
}

/// Step 9: release a staged source (a failure is only a warning).
async fn release_source(
    spec: &TransferSpec,
    session: &mut dyn Session,
    cancel: &CancellationToken,
    log: &mut TransferLog,
) -> Result<(), TransferFailure> {
    let src = spec.source.as_str();
    if let Some(token) = spec.bringonline_token.as_ref().filter(|_| !spec.skip_evict) {
        log.info("Releasing source file");
        match step(
            cancel,
            Phase::TransferFinalization,
            session.release(src, token),
        )
        .await?
        {
            Ok(()) => {}
            Err(e) => log.warn(format_args!(
                "RELEASE-PIN Failed to release source file: {} ({})",
                redact_queries(src),
                redact_queries(&e.message)
            )),
        }
    }
    Ok(())
}

/// Step 10: the report; throughput in MiB/s over the copy.
fn report(filesize: u64, duration: f64, timeout: u64, progress: &Progress) -> TransferReport {
    let throughput = if duration > 0.0 {
        filesize as f64 / f64::from(1u32 << 20) / duration
    } else {
        0.0
    };
    TransferReport {
        filesize,
        transferred: progress.transferred.load(Ordering::Relaxed),
        duration,
        throughput,
        timeout,
    }
}

/// Remove a failed destination; failures (ENOENT included) are only logged.
async fn cleanup(spec: &TransferSpec, session: &mut dyn Session, dst: &str, log: &mut TransferLog) {
    // An expired destination token would make the clean-up fail; a refresh that fails is
    // logged by `fresh_token` and the clean-up tried anyway.
    let _ = fresh_token(spec, Side::Destination, log).await;
    match tokio::time::timeout(CLEANUP_TIMEOUT, session.delete(dst)).await {
        Ok(Ok(())) => log.info("Destination file removed (cleanup-on-failure)"),
        Ok(Err(e)) if e.errno == libc::ENOENT => {}
        Ok(Err(e)) => log.warn(format_args!(
            "Error when trying to clean the destination: {}",
            redact_queries(&e.message)
        )),
        Err(_) => log.warn("Timed out when trying to clean the destination"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures_util::future::BoxFuture;

    use super::*;
    use crate::engine::backends::{OpResult, file::FileBackend, mock::MockBackend};

    /// The mock backend, recording deletes so tests can see clean-ups.
    struct Recording {
        inner: MockBackend,
        deletes: Arc<Mutex<Vec<String>>>,
    }

    struct RecordingSession {
        inner: Box<dyn Session>,
        deletes: Arc<Mutex<Vec<String>>>,
    }

    impl Backend for Recording {
        fn name(&self) -> &'static str {
            "recording"
        }
        fn schemes(&self) -> &[&'static str] {
            &["mock"]
        }
        fn session(&self, context: &SessionContext) -> Box<dyn Session> {
            Box::new(RecordingSession {
                inner: self.inner.session(context),
                deletes: self.deletes.clone(),
            })
        }
        fn tape(&self) -> crate::engine::backends::TapeSupport {
            self.inner.tape()
        }
    }

    impl Session for RecordingSession {
        fn stat(&mut self, url: &str) -> BoxFuture<'_, OpResult<u64>> {
            self.inner.stat(url)
        }
        fn checksum(&mut self, url: &str, algorithm: &str) -> BoxFuture<'_, OpResult<String>> {
            self.inner.checksum(url, algorithm)
        }
        fn exists(&mut self, url: &str) -> BoxFuture<'_, OpResult<bool>> {
            self.inner.exists(url)
        }
        fn delete(&mut self, url: &str) -> BoxFuture<'_, OpResult<()>> {
            self.deletes.lock().unwrap().push(url.to_string());
            self.inner.delete(url)
        }
        fn make_parent(&mut self, url: &str) -> BoxFuture<'_, OpResult<()>> {
            self.inner.make_parent(url)
        }
        fn copy<'a>(
            &'a mut self,
            source: &'a str,
            destination: &'a str,
            params: &'a CopyParams,
            progress: &'a Progress,
        ) -> BoxFuture<'a, OpResult<()>> {
            self.inner.copy(source, destination, params, progress)
        }
        fn release(&mut self, url: &str, token: &str) -> BoxFuture<'_, OpResult<()>> {
            self.inner.release(url, token)
        }
        fn locality(&mut self, url: &str) -> BoxFuture<'_, OpResult<String>> {
            self.inner.locality(url)
        }
    }

    struct Env {
        registry: Registry,
        deletes: Arc<Mutex<Vec<String>>>,
    }

    fn env() -> Env {
        let deletes = Arc::new(Mutex::new(Vec::new()));
        let registry = Registry::new(vec![Arc::new(Recording {
            inner: MockBackend::new(2),
            deletes: deletes.clone(),
        })]);
        Env { registry, deletes }
    }

    impl Env {
        fn deletes(&self) -> Vec<String> {
            self.deletes.lock().unwrap().clone()
        }
    }

    fn spec(source: &str, destination: &str) -> TransferSpec {
        TransferSpec {
            job_id: "job".into(),
            file_id: 1,
            source: source.into(),
            destination: destination.into(),
            user_filesize: 0,
            checksum: None,
            checksum_mode: ChecksumMode::None,
            overwrite: false,
            strict_copy: false,
            timeout: 0,
            sec_per_mb: 0,
            nostreams: 1,
            bringonline_token: None,
            skip_evict: false,
            credential: None,
            tokens: None,
            copy_mode: CopyMode::Pull,
            disable_fallback: false,
            no_streaming: false,
            dst_file_report: false,
        }
    }

    async fn go(
        spec: &TransferSpec,
        registry: &Registry,
    ) -> (Result<TransferReport, TransferFailure>, TransferLog) {
        let mut log = TransferLog::memory();
        let progress = Progress::default();
        let result = run(
            spec,
            registry,
            &progress,
            &CancellationToken::new(),
            &mut log,
        )
        .await;
        (result, log)
    }

    fn failure(result: Result<TransferReport, TransferFailure>) -> TransferFailure {
        result.expect_err("the transfer should fail")
    }

    #[tokio::test(start_paused = true)]
    async fn success_with_size_and_checksum() {
        let env = env();
        let mut s = spec(
            "mock://a.example/f?size=1048576&checksum=1a2b3c4d",
            "mock://b.example/f?size_post=1048576&time=2&checksum=1A2B3C4D",
        );
        s.checksum = Some("adler32:1a2b3c4d".into());
        s.checksum_mode = ChecksumMode::Both;
        let (result, log) = go(&s, &env.registry).await;
        let report = result.unwrap();
        assert_eq!(report.filesize, 1 << 20);
        assert_eq!(report.transferred, 1 << 20);
        assert_eq!(report.duration, 2.0);
        assert_eq!(report.throughput, 0.5);
        assert_eq!(report.timeout, 602);
        assert!(env.deletes().is_empty());
        assert!(
            log.lines()
                .iter()
                .any(|l| l.contains("End-to-end checksum match!"))
        );
        // URLs are logged without their query strings.
        assert!(log.lines().iter().all(|l| !l.contains("size_post")));
        assert!(
            log.lines()
                .iter()
                .any(|l| l.contains("mock://b.example/f?<redacted>"))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn size_mismatch_cleans_up() {
        let env = env();
        let s = spec("mock://a/f?size=10", "mock://b/f?size_post=9&time=1");
        let f = failure(go(&s, &env.registry).await.0);
        assert_eq!(
            (f.scope, f.phase, f.errno),
            (
                Scope::Destination,
                Phase::TransferFinalization,
                libc::EINVAL
            )
        );
        assert_eq!(f.message, "Source and destination file size mismatch");
        assert_eq!(env.deletes(), vec!["mock://b/f?size_post=9&time=1"]);
    }

    #[tokio::test(start_paused = true)]
    async fn source_checksum_mismatch() {
        let env = env();
        let mut s = spec(
            "mock://a/f?size=1&checksum=42",
            "mock://b/f?size_post=1&time=1",
        );
        s.checksum = Some("ADLER32:24".into());
        s.checksum_mode = ChecksumMode::from_method("source");
        let f = failure(go(&s, &env.registry).await.0);
        assert_eq!(
            (f.scope, f.phase, f.errno),
            (Scope::Source, Phase::TransferPreparation, libc::EIO)
        );
        assert_eq!(
            f.message,
            "Source and user-defined ADLER32 checksum do not match (42 != 00000024)"
        );
        assert!(!f.recoverable());
        // Nothing was written, so nothing is cleaned.
        assert!(env.deletes().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn target_checksum_mismatch() {
        let env = env();
        let dst = "mock://b/f?size_post=1&time=1&checksum=42";
        let mut s = spec("mock://a/f?size=1&checksum=24", dst);
        s.checksum = Some("adler32:24".into());
        s.checksum_mode = ChecksumMode::from_method("target");
        let f = failure(go(&s, &env.registry).await.0);
        assert_eq!(
            (f.scope, f.phase, f.errno),
            (Scope::Destination, Phase::TransferFinalization, libc::EIO)
        );
        assert_eq!(
            f.message,
            "User-defined and destination ADLER32 checksum do not match (00000024 != 42)"
        );
        assert!(!f.recoverable());
        assert_eq!(env.deletes(), vec![dst]);
    }

    #[tokio::test(start_paused = true)]
    async fn both_checksum_mismatch() {
        let env = env();
        let dst = "mock://b/f?size_post=1&time=1&checksum=42";
        let mut s = spec("mock://a/f?size=1&checksum=24", dst);
        s.checksum_mode = ChecksumMode::from_method("both");
        let f = failure(go(&s, &env.registry).await.0);
        assert_eq!(
            (f.scope, f.phase, f.errno),
            (Scope::Destination, Phase::TransferFinalization, libc::EIO)
        );
        assert_eq!(
            f.message,
            "Source and destination ADLER32 checksum do not match (24 != 42)"
        );
        assert_eq!(env.deletes(), vec![dst]);

        // With a user value, "both" checks it against the source first.
        let mut s = spec("mock://a/f?size=1&checksum=24", dst);
        s.checksum_mode = ChecksumMode::Both;
        s.checksum = Some("md5:25".into());
        let f = failure(go(&s, &env.registry).await.0);
        assert_eq!(
            f.message,
            "Source and user-defined MD5 checksum do not match (24 != 25)"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn destination_exists() {
        let env = env();
        let s = spec(
            "mock://a/f?size=1",
            "mock://b/f?exists=1&size_post=1&time=1",
        );
        let f = failure(go(&s, &env.registry).await.0);
        assert_eq!(
            (f.scope, f.phase, f.errno),
            (Scope::Destination, Phase::TransferPreparation, libc::EEXIST)
        );
        assert_eq!(
            f.message,
            "Destination file exists and overwrite is not enabled"
        );
        assert!(!f.recoverable());

        // Overwrite: the delete is a stat at DESTINATION_BEFORE, so it needs size_pre > 0.
        let mut s = spec(
            "mock://a/f?size=1",
            "mock://b/f?exists=1&size_pre=1&size_post=1&time=1",
        );
        s.overwrite = true;
        go(&s, &env.registry).await.0.unwrap();

        let mut s = spec(
            "mock://a/f?size=1",
            "mock://b/f?exists=1&size_post=1&time=1",
        );
        s.overwrite = true;
        let f = failure(go(&s, &env.registry).await.0);
        assert_eq!(
            (f.scope, f.phase, f.errno),
            (Scope::Destination, Phase::TransferPreparation, libc::ENOENT)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_existing_destination_is_reported_when_the_job_asks() {
        let env = env();
        let dst = "mock://b/f?exists=1&size_pre=10&size_post=10&checksum=abc123ab\
                   &user.status=NEARLINE";
        let mut s = spec("mock://a/f?size=10", dst);
        s.dst_file_report = true;
        let (result, log) = go(&s, &env.registry).await;
        let f = failure(result);
        assert_eq!(
            (f.errno, f.message.as_str()),
            (
                libc::EEXIST,
                "Destination file exists and overwrite is not enabled"
            )
        );
        assert_eq!(
            f.dst_file,
            Some(DestFile {
                file_size: 10,
                checksum_type: "ADLER32".into(),
                checksum_value: "abc123ab".into(),
                file_on_tape: true,
                file_on_disk: false,
            })
        );
        assert!(
            log.lines().iter().any(|l| l.contains(
                "Destination file report: file_size=10 checksum=ADLER32:abc123ab \
                 file_on_disk=0 file_on_tape=1"
            )),
            "{:?}",
            log.lines()
        );
        // The transfer's algorithm names the checksum; both localities at once.
        s.checksum = Some("MD5:0123".into());
        s.destination = dst.replace("NEARLINE", "ONLINE_AND_NEARLINE");
        let f = failure(go(&s, &env.registry).await.0);
        let report = f.dst_file.unwrap();
        assert_eq!(report.checksum_type, "MD5");
        assert!(report.file_on_disk && report.file_on_tape);
        // An unknown locality: neither, with a warning; a storage error: no report at all.
        s.destination = dst.replace("NEARLINE", "LOST");
        let (result, log) = go(&s, &env.registry).await;
        let report = failure(result).dst_file.unwrap();
        assert!(!report.file_on_disk && !report.file_on_tape);
        assert!(
            log.lines()
                .iter()
                .any(|l| l.contains("Could not determine file locality"))
        );
        s.destination = dst.replace("size_pre=10", "size_pre=0");
        let (result, log) = go(&s, &env.registry).await;
        let f = failure(result);
        assert_eq!(f.errno, libc::EEXIST);
        assert_eq!(f.dst_file, None);
        assert!(
            log.lines()
                .iter()
                .any(|l| l.contains("Failed to check integrity of destination tape file"))
        );
        // Not asked for: no report.
        s.dst_file_report = false;
        s.destination = dst.into();
        assert_eq!(failure(go(&s, &env.registry).await.0).dst_file, None);
    }

    #[tokio::test(start_paused = true)]
    async fn transfer_errno_fails_the_copy() {
        let env = env();
        let dst = "mock://b/f?size_post=1&time=3&transfer_errno=5";
        let s = spec("mock://a/f?size=1", dst);
        let start = Instant::now();
        let f = failure(go(&s, &env.registry).await.0);
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert_eq!(
            (f.scope, f.phase, f.errno),
            (Scope::Transfer, Phase::Transfer, libc::EIO)
        );
        assert_eq!(f.message, "Input/output error");
        assert!(f.recoverable());
        assert_eq!(f.reason(), "TRANSFER [5] Input/output error");
        assert_eq!(env.deletes(), vec![dst]);

        // EPERM during the copy is final.
        let s = spec("mock://a/f?size=1", "mock://b/f?time=1&transfer_errno=1");
        let f = failure(go(&s, &env.registry).await.0);
        assert_eq!(f.errno, libc::EPERM);
        assert!(!f.recoverable());
    }

    #[tokio::test(start_paused = true)]
    async fn source_missing_is_final() {
        let env = env();
        let s = spec("mock://a/f?errno=2", "mock://b/f?size_post=1");
        let f = failure(go(&s, &env.registry).await.0);
        assert_eq!(
            (f.scope, f.phase, f.errno),
            (Scope::Source, Phase::TransferPreparation, libc::ENOENT)
        );
        assert_eq!(f.reason(), "SOURCE [2] No such file or directory");
        assert!(!f.recoverable());
    }

    #[tokio::test(start_paused = true)]
    async fn watchdog_times_out() {
        let env = env();
        let dst = "mock://b/f?size_post=10&time=1000";
        let mut s = spec("mock://a/f?size=10", dst);
        s.timeout = 1;
        let start = Instant::now();
        let f = failure(go(&s, &env.registry).await.0);
        assert_eq!(start.elapsed(), Duration::from_secs(61));
        assert_eq!(
            (f.scope, f.phase, f.errno),
            (Scope::Transfer, Phase::Transfer, libc::ETIMEDOUT)
        );
        assert!(f.recoverable());
        assert_eq!(env.deletes(), vec![dst]);
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_during_copy() {
        let env = env();
        let dst = "mock://b/f?size_post=10&time=5";
        let s = spec("mock://a/f?size=10", dst);
        let cancel = CancellationToken::new();
        let progress = Progress::default();
        let mut log = TransferLog::memory();
        let start = Instant::now();
        let (result, ()) = tokio::join!(
            run(&s, &env.registry, &progress, &cancel, &mut log),
            async {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                cancel.cancel();
            }
        );
        let f = failure(result);
        assert_eq!(start.elapsed(), Duration::from_millis(1500));
        assert_eq!(
            (f.scope, f.phase, f.errno, f.message.as_str()),
            (
                Scope::Transfer,
                Phase::Transfer,
                libc::ECANCELED,
                "Transfer canceled"
            )
        );
        assert!(f.is_cancel() && !f.recoverable());
        assert_eq!(env.deletes(), vec![dst]);
        // The copy had progressed by one 1 s step of five.
        assert_eq!(progress.transferred.load(Ordering::Relaxed), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_before_start() {
        let env = env();
        let s = spec("mock://a/f?size=10", "mock://b/f?size_post=10&time=5");
        let cancel = CancellationToken::new();
        cancel.cancel();
        let f = run(
            &s,
            &env.registry,
            &Progress::default(),
            &cancel,
            &mut TransferLog::null(),
        )
        .await
        .unwrap_err();
        assert_eq!(
            (f.phase, f.errno),
            (Phase::TransferPreparation, libc::ECANCELED)
        );
        assert!(env.deletes().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn mock_prefix_quirk_reaches_the_agent() {
        let env = env();
        // `size` on the source matches the earlier `size_pre=5`.
        let s = spec(
            "mock://a/f?size_pre=5&size=10",
            "mock://b/f?size_post=5&time=0",
        );
        let (result, _) = go(&s, &env.registry).await;
        assert_eq!(result.unwrap().filesize, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn strict_copy_skips_checks() {
        let env = env();
        let mut s = spec("mock://a/f?errno=2", "mock://b/f?exists=1&time=1");
        s.strict_copy = true;
        s.user_filesize = 77;
        s.checksum_mode = ChecksumMode::Both;
        let report = go(&s, &env.registry).await.0.unwrap();
        assert_eq!(report.filesize, 77);
    }

    #[tokio::test(start_paused = true)]
    async fn release_failure_is_only_a_warning() {
        let env = env();
        let mut s = spec(
            "mock://a/f?size=1&release_errno=5",
            "mock://b/f?size_post=1&time=0",
        );
        s.bringonline_token = Some("mock-token".into());
        let (result, log) = go(&s, &env.registry).await;
        result.unwrap();
        assert!(log.lines().iter().any(|l| l.contains("RELEASE-PIN")));
    }

    #[tokio::test]
    async fn unsupported_protocols() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new(vec![
            Arc::new(MockBackend::new(0)),
            Arc::new(FileBackend::new(vec![dir.path().to_path_buf()])),
        ]);
        let f = failure(go(&spec("gsiftp://a/f", "mock://b/f"), &registry).await.0);
        assert_eq!((f.scope, f.errno), (Scope::Source, libc::EPROTONOSUPPORT));
        assert!(!f.recoverable());
        let f = failure(go(&spec("mock://a/f", "gsiftp://b/f"), &registry).await.0);
        assert_eq!(f.scope, Scope::Destination);
        let f = failure(go(&spec("mock://a/f", "file:///tmp/x"), &registry).await.0);
        assert_eq!((f.scope, f.errno), (Scope::Transfer, libc::EPROTONOSUPPORT));
    }

    // ---- a backend doing steps 5–8 itself (Session::copy_checked), as gfal2 does ----

    /// What the checked backend's calls were, and how its checked copy ends.
    #[derive(Default)]
    struct CheckedLog {
        calls: Vec<String>,
    }

    struct CheckedBackend {
        schemes: Vec<&'static str>,
        /// The copy's outcome; `None`: it never ends (cancel and watchdog tests).
        outcome: Option<Result<CheckedReport, TransferFailure>>,
        /// Whether the copy had begun (`Progress::copying`) when it ended.
        began: bool,
        log: Arc<Mutex<CheckedLog>>,
    }

    struct CheckedSession {
        outcome: Option<Result<CheckedReport, TransferFailure>>,
        began: bool,
        log: Arc<Mutex<CheckedLog>>,
    }

    impl CheckedSession {
        fn call(&self, what: String) {
            self.log.lock().unwrap().calls.push(what);
        }
    }

    impl Backend for CheckedBackend {
        fn name(&self) -> &'static str {
            "checked"
        }
        fn schemes(&self) -> &[&'static str] {
            &self.schemes
        }
        fn session(&self, _: &SessionContext) -> Box<dyn Session> {
            Box::new(CheckedSession {
                outcome: self.outcome.clone(),
                began: self.began,
                log: self.log.clone(),
            })
        }
    }

    impl Session for CheckedSession {
        fn stat(&mut self, url: &str) -> BoxFuture<'_, OpResult<u64>> {
            self.call(format!("stat {url}"));
            Box::pin(async { Ok(4 << 20) })
        }
        fn checksum(&mut self, url: &str, _: &str) -> BoxFuture<'_, OpResult<String>> {
            self.call(format!("checksum {url}"));
            Box::pin(async { Ok("1".into()) })
        }
        fn exists(&mut self, url: &str) -> BoxFuture<'_, OpResult<bool>> {
            self.call(format!("exists {url}"));
            Box::pin(async { Ok(false) })
        }
        fn delete(&mut self, url: &str) -> BoxFuture<'_, OpResult<()>> {
            self.call(format!("delete {url}"));
            Box::pin(async { Ok(()) })
        }
        fn make_parent(&mut self, url: &str) -> BoxFuture<'_, OpResult<()>> {
            self.call(format!("make_parent {url}"));
            Box::pin(async { Ok(()) })
        }
        fn locality(&mut self, url: &str) -> BoxFuture<'_, OpResult<String>> {
            self.call(format!("locality {url}"));
            Box::pin(async { Ok("ONLINE_AND_NEARLINE".into()) })
        }
        fn copy<'a>(
            &'a mut self,
            _: &'a str,
            _: &'a str,
            _: &'a CopyParams,
            _: &'a Progress,
        ) -> BoxFuture<'a, OpResult<()>> {
            self.call("copy".into());
            Box::pin(async { Ok(()) })
        }
        fn copy_checked<'a>(
            &'a mut self,
            request: &'a CheckedCopy,
            progress: &'a Progress,
        ) -> Option<BoxFuture<'a, Result<CheckedReport, TransferFailure>>> {
            self.call(format!(
                "copy_checked {} {} size={} timeout={} mode={} overwrite={}",
                request.source,
                request.destination,
                request.params.filesize,
                request.params.timeout,
                request.checksum_mode.letter(),
                request.overwrite
            ));
            let (outcome, began) = (self.outcome.clone(), self.began);
            Some(Box::pin(async move {
                progress.copying.store(began, Ordering::Relaxed);
                match outcome {
                    Some(outcome) => {
                        progress.transferred.store(4 << 20, Ordering::Relaxed);
                        outcome
                    }
                    None => std::future::pending().await,
                }
            }))
        }
    }

    fn checked_env(
        outcome: Option<Result<CheckedReport, TransferFailure>>,
        began: bool,
    ) -> (Registry, Arc<Mutex<CheckedLog>>) {
        let log = Arc::new(Mutex::new(CheckedLog::default()));
        let registry = Registry::new(vec![Arc::new(CheckedBackend {
            schemes: vec!["chk"],
            outcome,
            began,
            log: log.clone(),
        })]);
        (registry, log)
    }

    fn calls(log: &Arc<Mutex<CheckedLog>>) -> Vec<String> {
        log.lock().unwrap().calls.clone()
    }

    #[tokio::test]
    async fn checked_copy_replaces_steps_5_to_8() {
        let report = CheckedReport {
            copy_duration: Some(2.0),
        };
        let (registry, log) = checked_env(Some(Ok(report)), true);
        let mut s = spec("chk://a/f", "chk://b/f");
        s.checksum_mode = ChecksumMode::Both;
        s.overwrite = true;
        let (result, transfer_log) = go(&s, &registry).await;
        let report = result.unwrap();
        assert_eq!(report.filesize, 4 << 20);
        assert_eq!(report.duration, 2.0, "the tool's copy time, not the call's");
        assert_eq!(report.throughput, 2.0);
        assert_eq!(report.transferred, 4 << 20);
        assert_eq!(
            calls(&log),
            [
                "stat chk://a/f",
                "copy_checked chk://a/f chk://b/f size=4194304 timeout=608 mode=b overwrite=true",
            ]
        );
        assert!(
            transfer_log
                .lines()
                .iter()
                .any(|l| l.contains("verification by the checked backend"))
        );
    }

    #[tokio::test]
    async fn checked_copy_failures_clean_up_only_what_was_written() {
        let fail = |errno| {
            Some(Err(TransferFailure::new(
                Scope::Transfer,
                Phase::Transfer,
                errno,
                "copy failed",
            )))
        };
        // Failed after the copy began: the destination is removed, as after a plain copy.
        let (registry, log) = checked_env(fail(libc::EIO), true);
        let f = failure(go(&spec("chk://a/f", "chk://b/f"), &registry).await.0);
        assert_eq!(f.reason(), "TRANSFER [5] copy failed");
        assert_eq!(calls(&log).last().unwrap(), "delete chk://b/f");
        // Failed in the tool's own checks: nothing to remove.
        let (registry, log) = checked_env(fail(libc::EIO), false);
        failure(go(&spec("chk://a/f", "chk://b/f"), &registry).await.0);
        assert!(!calls(&log).iter().any(|c| c.starts_with("delete")));
        // EEXIST: the file is someone else's.
        let (registry, log) = checked_env(fail(libc::EEXIST), true);
        let f = failure(go(&spec("chk://a/f", "chk://b/f"), &registry).await.0);
        assert!(!calls(&log).iter().any(|c| c.starts_with("delete")));
        assert_eq!(f.dst_file, None);
        // Asked for, the destination report follows the tool's EEXIST, on the primitives.
        let (registry, log) = checked_env(fail(libc::EEXIST), true);
        let mut s = spec("chk://a/f", "chk://b/f");
        s.dst_file_report = true;
        let f = failure(go(&s, &registry).await.0);
        assert_eq!(
            f.dst_file,
            Some(DestFile {
                file_size: 4 << 20,
                checksum_type: "ADLER32".into(),
                checksum_value: "1".into(),
                file_on_tape: true,
                file_on_disk: true,
            })
        );
        let c = calls(&log);
        assert_eq!(
            c[c.len() - 3..],
            ["checksum chk://b/f", "stat chk://b/f", "locality chk://b/f"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn checked_copy_under_cancel_and_watchdog() {
        let (registry, log) = checked_env(None, true);
        let mut s = spec("chk://a/f", "chk://b/f");
        s.timeout = 30;
        let (result, _) = go(&s, &registry).await;
        let f = failure(result);
        assert_eq!((f.scope, f.errno), (Scope::Transfer, libc::ETIMEDOUT));
        assert_eq!(calls(&log).last().unwrap(), "delete chk://b/f");

        let (registry, _log) = checked_env(None, true);
        let cancel = CancellationToken::new();
        let progress = Progress::default();
        let mut transfer_log = TransferLog::null();
        let (result, ()) = tokio::join!(
            run(&s, &registry, &progress, &cancel, &mut transfer_log),
            async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                cancel.cancel();
            }
        );
        assert_eq!(failure(result).errno, libc::ECANCELED);
    }

    #[tokio::test]
    async fn a_copy_between_backends_goes_to_one_serving_both() {
        let dir = tempfile::tempdir().unwrap();
        let (checked, log) = {
            let log = Arc::new(Mutex::new(CheckedLog::default()));
            let backend = Arc::new(CheckedBackend {
                schemes: vec!["chk", "mock"],
                outcome: Some(Ok(CheckedReport::default())),
                began: true,
                log: log.clone(),
            });
            (backend, log)
        };
        let registry = Registry::new(vec![
            Arc::new(MockBackend::new(0)),
            Arc::new(FileBackend::new(vec![dir.path().to_path_buf()])),
            checked,
        ]);
        // mock:// alone stays with the mock backend; mock:// to chk:// goes to the backend
        // serving both.
        assert_eq!(registry.for_url("mock://a/f").unwrap().name(), "mock");
        assert_eq!(
            registry
                .for_pair("mock://a/f", "mock://b/f")
                .unwrap()
                .name(),
            "mock"
        );
        assert_eq!(
            registry.for_pair("mock://a/f", "chk://b/f").unwrap().name(),
            "checked"
        );
        assert!(registry.for_pair("file:///x", "chk://b/f").is_none());
        assert_eq!(registry.schemes(), ["chk", "file", "mock"]);
        assert_eq!(
            registry.describe(),
            "mock: mock; file: file; checked: chk (in copies with the above: mock)"
        );
        go(&spec("mock://a/f?size=10", "chk://b/f"), &registry)
            .await
            .0
            .unwrap();
        assert!(calls(&log)[1].starts_with("copy_checked mock://a/f?size=10 chk://b/f"));
    }

    fn file_env() -> (tempfile::TempDir, std::path::PathBuf, Registry) {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap().join("root");
        std::fs::create_dir_all(&root).unwrap();
        let registry = Registry::new(vec![Arc::new(FileBackend::new(vec![root.clone()]))]);
        (dir, root, registry)
    }

    fn file_url(p: &Path) -> String {
        format!("file://{}", p.display())
    }

    #[tokio::test]
    async fn file_copy_verify_and_overwrite() {
        let (_dir, root, registry) = file_env();
        let data = b"hello, transfer".repeat(1000);
        let src = root.join("in/src");
        std::fs::create_dir_all(src.parent().unwrap()).unwrap();
        std::fs::write(&src, &data).unwrap();
        let dst = root.join("out/deep/dst");
        let adler =
            crate::engine::checksum::of_bytes(crate::engine::checksum::Algorithm::Adler32, &data);
        let mut s = spec(&file_url(&src), &file_url(&dst));
        s.checksum = Some(format!("adler32:{adler}"));
        s.checksum_mode = ChecksumMode::Both;
        let report = go(&s, &registry).await.0.unwrap();
        assert_eq!(report.filesize, data.len() as u64);
        assert_eq!(std::fs::read(&dst).unwrap(), data);

        // Again: exists, no overwrite.
        let f = failure(go(&s, &registry).await.0);
        assert_eq!(f.errno, libc::EEXIST);
        // With overwrite, the old file is replaced.
        std::fs::write(&dst, b"old").unwrap();
        s.overwrite = true;
        go(&s, &registry).await.0.unwrap();
        assert_eq!(std::fs::read(&dst).unwrap(), data);
    }

    #[tokio::test]
    async fn file_checksum_mismatch_removes_destination() {
        let (_dir, root, registry) = file_env();
        let src = root.join("src");
        std::fs::write(&src, b"data").unwrap();
        let dst = root.join("dst");
        let mut s = spec(&file_url(&src), &file_url(&dst));
        s.checksum = Some("crc32c:deadbeef".into());
        s.checksum_mode = ChecksumMode::Target;
        let f = failure(go(&s, &registry).await.0);
        assert!(
            f.message.starts_with(
                "User-defined and destination CRC32C checksum do not match (deadbeef != "
            ),
            "{}",
            f.message
        );
        assert!(!dst.exists());
    }

    #[tokio::test]
    async fn file_cancel_removes_partial_destination() {
        let (_dir, root, registry) = file_env();
        let src = root.join("big");
        std::fs::write(&src, vec![7u8; 32 << 20]).unwrap();
        let dst = root.join("partial");
        let s = spec(&file_url(&src), &file_url(&dst));
        let cancel = CancellationToken::new();
        let progress = Progress::default();
        let mut log = TransferLog::null();
        let (result, ()) = tokio::join!(run(&s, &registry, &progress, &cancel, &mut log), async {
            while progress.transferred.load(Ordering::Relaxed) == 0 {
                tokio::task::yield_now().await;
            }
            cancel.cancel();
        });
        let f = failure(result);
        assert_eq!((f.phase, f.errno), (Phase::Transfer, libc::ECANCELED));
        assert!(!dst.exists(), "the partial destination is cleaned up");
    }

    #[tokio::test]
    async fn file_outside_roots_is_denied() {
        let (dir, root, registry) = file_env();
        let src = root.join("src");
        std::fs::write(&src, b"data").unwrap();
        let outside = dir.path().join("elsewhere");
        let f = failure(
            go(&spec(&file_url(&src), &file_url(&outside)), &registry)
                .await
                .0,
        );
        assert_eq!(
            (f.scope, f.phase, f.errno),
            (Scope::Destination, Phase::TransferPreparation, libc::EACCES)
        );
        assert!(f.message.contains("Permission denied"));
        assert!(!f.recoverable());
        let escape = format!("file://{}/../elsewhere", root.display());
        let f = failure(go(&spec(&file_url(&src), &escape), &registry).await.0);
        assert_eq!(f.errno, libc::EACCES);
        assert!(!outside.exists());
    }

    #[test]
    fn classification_table() {
        use libc::*;
        let cases: &[(Scope, i32, &str, bool)] = &[
            // Retry messages win over everything, ETIMEDOUT and ECANCELED next.
            (Scope::Source, ENOENT, "performance marker timeout", true),
            (Scope::Transfer, ECANCELED, "Connection timed out", true),
            (Scope::Transfer, ETIMEDOUT, "Permission denied", true),
            (Scope::Transfer, ECANCELED, "Transfer canceled", false),
            // Final messages, whatever the errno.
            (Scope::Transfer, EIO, "proxy expired", false),
            (
                Scope::Transfer,
                EIO,
                "... checksum do not match (1 != 2)",
                false,
            ),
            (
                Scope::Destination,
                EIO,
                "The source file is not ONLINE",
                false,
            ),
            (Scope::Transfer, EAGAIN, "File exists", false),
            // Per-scope errnos.
            (Scope::Source, ENOENT, "gone", false),
            (Scope::Source, ENOTDIR, "x", false),
            (Scope::Source, EEXIST, "x", true),
            (Scope::Destination, ENOENT, "x", true),
            (Scope::Destination, EEXIST, "x", false),
            (Scope::Destination, EROFS, "x", false),
            (Scope::Destination, EFAULT, "x", false),
            (Scope::Destination, ENOTDIR, "x", true),
            (Scope::Transfer, ENOSPC, "x", false),
            (Scope::Transfer, EFBIG, "x", false),
            (Scope::Transfer, ENOENT, "x", true),
            (Scope::GeneralFailure, EPERM, "x", false),
            (Scope::Transfer, EIO, "x", true),
            (Scope::Source, ECONNREFUSED, "x", true),
        ];
        for &(scope, errno, message, expected) in cases {
            assert_eq!(
                recoverable(scope, errno, message),
                expected,
                "{scope} {errno} {message}"
            );
        }
    }

    #[test]
    fn reason_redacts_queries() {
        let f = TransferFailure::new(
            Scope::Transfer,
            Phase::Transfer,
            libc::EACCES,
            "Failed on https://s3.example/b/k?X-Amz-Signature=abc&X-Amz-Credential=x: denied (see 'davs://h/p?tok=1')",
        );
        assert_eq!(
            f.reason(),
            "TRANSFER [13] Failed on https://s3.example/b/k?<redacted> denied (see 'davs://h/p?<redacted>')"
        );
        assert_eq!(redact_queries("no url here?a=b"), "no url here?a=b");
        assert_eq!(redact_queries("mock://h/p"), "mock://h/p");
    }

    #[test]
    fn timeouts() {
        assert_eq!(transfer_timeout(100, 5, 1 << 30), 100);
        assert_eq!(transfer_timeout(0, 0, 0), 600);
        assert_eq!(transfer_timeout(0, 0, 1), 601);
        assert_eq!(transfer_timeout(0, 0, 1 << 20), 602);
        assert_eq!(transfer_timeout(0, 3, 10 << 20), 630);
        assert_eq!(transfer_timeout(0, 2, u64::MAX), 600 + (1u64 << 45));
        assert_eq!(errno_name(libc::ENOENT), "ENOENT");
        assert_eq!(errno_name(9999), "E9999");
    }

    #[test]
    fn log_file_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.log");
        let log = TransferLog::create(&path).unwrap();
        log.line("INFO", "hello");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with(" INFO    hello\n"), "{text}");
    }
}
