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
//! 6. destination: exists → delete if overwrite else EEXIST; missing → create the parent;
//! 7. copy, raced against cancellation (ECANCELED "Transfer canceled") and a watchdog at
//!    timeout + 60 s (ETIMEDOUT); on failure the destination is removed unless EEXIST;
//! 8. destination size and checksums (not strict), removing the destination on mismatch;
//! 9. release of a staged source (warning only);
//! 10. the [`TransferReport`], or a [`TransferFailure`] with scope, phase, errno, message.
//!
//! Source and destination must be served by the same backend (both `mock://`, both `file://`),
//! like gfal2's plugin-to-plugin copies; they share one session, so the mock stat state
//! machine sees the reference's order of calls.
//!
//! Deliberate differences from the reference: the watchdog covers the copy only (the
//! reference's thread also spans verification); every step, not just the copy, stops on
//! cancellation; the overwrite-on-disk workflow and dst-file-report are not implemented.

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
    backends::{Backend, CopyParams, OpError, Progress, Registry, Session},
    checksum::{ChecksumMode, DEFAULT_ALGORITHM, UserChecksum, matches},
};

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
}

impl TransferFailure {
    pub fn new(scope: Scope, phase: Phase, errno: i32, message: impl Into<String>) -> Self {
        TransferFailure {
            scope,
            phase,
            errno,
            message: message.into(),
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

/// The per-transfer log: timestamped lines in a file, in memory (tests) or nowhere.
pub struct TransferLog {
    sink: LogSink,
}

enum LogSink {
    File(std::fs::File),
    Memory(Vec<String>),
    Null,
}

impl TransferLog {
    /// Create (truncate) the log file at `path`. Lines are written unbuffered so a crash keeps
    /// everything logged so far; they are few and short.
    pub fn create(path: &Path) -> std::io::Result<TransferLog> {
        Ok(TransferLog {
            sink: LogSink::File(std::fs::File::create(path)?),
        })
    }

    /// A log that keeps its lines in memory (see [`TransferLog::lines`]).
    pub fn memory() -> TransferLog {
        TransferLog {
            sink: LogSink::Memory(Vec::new()),
        }
    }

    /// A log that discards everything.
    pub fn null() -> TransferLog {
        TransferLog {
            sink: LogSink::Null,
        }
    }

    /// The lines of a memory log (empty for other kinds).
    pub fn lines(&self) -> &[String] {
        match &self.sink {
            LogSink::Memory(lines) => lines,
            _ => &[],
        }
    }

    /// Append one line. Callers pass URLs through [`redact_queries`]; nothing here may carry
    /// a credential. A failing log file never fails the transfer.
    pub fn line(&mut self, level: &str, message: impl fmt::Display) {
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
        match &mut self.sink {
            LogSink::File(f) => {
                let _ = writeln!(f, "{line}");
            }
            LogSink::Memory(lines) => lines.push(line),
            LogSink::Null => {}
        }
    }

    fn info(&mut self, message: impl fmt::Display) {
        self.line("INFO", message);
    }

    fn warn(&mut self, message: impl fmt::Display) {
        self.line("WARNING", message);
    }

    fn error(&mut self, message: impl fmt::Display) {
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

    let src_backend = backend_for(registry, &spec.source, Scope::Source)?;
    let dst_backend = backend_for(registry, &spec.destination, Scope::Destination)?;
    if !Arc::ptr_eq(src_backend, dst_backend) {
        return Err(TransferFailure::new(
            Scope::Transfer,
            TransferPreparation,
            libc::EPROTONOSUPPORT,
            "Copies between these protocols are not supported",
        ));
    }
    let mut session = src_backend.session();
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

    // Step 5: source checksum.
    let mut source_checksum = None;
    if !spec.strict_copy && mode.includes_source() {
        log.info(format_args!(
            "Obtaining source checksum for checksum verification ({})",
            mode.letter()
        ));
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
        let exists = step(cancel, TransferPreparation, session.exists(dst))
            .await?
            .map_err(|e| TransferFailure::from_op(Scope::Destination, TransferPreparation, e))?;
        if exists {
            log.info("Destination file exists!");
            if !spec.overwrite {
                return Err(TransferFailure::new(
                    Scope::Destination,
                    TransferPreparation,
                    libc::EEXIST,
                    "Destination file exists and overwrite is not enabled",
                ));
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
    let params = CopyParams {
        filesize,
        nostreams: spec.nostreams,
    };
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
            cleanup(session.as_mut(), dst, log).await;
        }
        return Err(failure);
    }
    log.info(format_args!("Transfer done in {duration:.3} s"));

    // Step 8: verification.
    if !spec.strict_copy {
        let fail =
            |e: OpError| TransferFailure::from_op(Scope::Destination, TransferFinalization, e);
        log.info("Getting destination file size");
        let dest_size = step(cancel, TransferFinalization, session.stat(dst))
            .await?
            .map_err(fail)?;
        log.info(format_args!("File size: {dest_size} (destination)"));
        if dest_size != filesize {
            cleanup(session.as_mut(), dst, log).await;
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
                    cleanup(session.as_mut(), dst, log).await;
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
                    cleanup(session.as_mut(), dst, log).await;
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

    // Step 9: release a staged source.
    if let Some(token) = spec.bringonline_token.as_ref().filter(|_| !spec.skip_evict) {
        log.info("Releasing source file");
        match step(cancel, TransferFinalization, session.release(src, token)).await? {
            Ok(()) => {}
            Err(e) => log.warn(format_args!(
                "RELEASE-PIN Failed to release source file: {} ({})",
                redact_queries(src),
                redact_queries(&e.message)
            )),
        }
    }

    // Step 10.
    let throughput = if duration > 0.0 {
        filesize as f64 / f64::from(1u32 << 20) / duration
    } else {
        0.0
    };
    Ok(TransferReport {
        filesize,
        transferred: progress.transferred.load(Ordering::Relaxed),
        duration,
        throughput,
        timeout,
    })
}

/// Remove a failed destination; failures (ENOENT included) are only logged.
async fn cleanup(session: &mut dyn Session, dst: &str, log: &mut TransferLog) {
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

/// Bring `url` online (§5.1): resolves once staged. `timeout` in seconds (0 = none) fails with
/// ETIMEDOUT "bring-online timeout has been exceeded"; storage errors keep their errno. Scope
/// SOURCE, phase TRANSFER_PREPARATION.
pub async fn bring_online(
    url: &str,
    pin_lifetime: i64,
    timeout: u64,
    registry: &Registry,
    cancel: &CancellationToken,
    log: &mut TransferLog,
) -> Result<(), TransferFailure> {
    let backend = backend_for(registry, url, Scope::Source)?;
    let mut session = backend.session();
    log.info(format_args!(
        "Bring-online of {} (pin lifetime {pin_lifetime} s, timeout {timeout} s)",
        redact_queries(url)
    ));
    let outcome = deadline_step(
        cancel,
        timeout,
        "bring-online timeout has been exceeded",
        session.bring_online(url, pin_lifetime),
    )
    .await;
    let result = match outcome {
        Step::Done(r) => {
            r.map_err(|e| TransferFailure::from_op(Scope::Source, Phase::TransferPreparation, e))
        }
        Step::Expired(message) => Err(TransferFailure::new(
            Scope::Source,
            Phase::TransferPreparation,
            libc::ETIMEDOUT,
            message,
        )),
        Step::Canceled => Err(canceled(Phase::TransferPreparation)),
    };
    log_outcome(log, "Bring-online", &result);
    result
}

/// Wait until `url` is archived (§5.2). `archive_timeout` in seconds (0 = none) fails with
/// ETIMEDOUT "archive timeout has been exceeded"; storage errors keep their errno. Scope
/// ARCHIVING, phase TRANSFER_FINALIZATION.
pub async fn archive_monitor(
    url: &str,
    archive_timeout: u64,
    registry: &Registry,
    cancel: &CancellationToken,
    log: &mut TransferLog,
) -> Result<(), TransferFailure> {
    let backend = backend_for(registry, url, Scope::Archiving)?;
    let mut session = backend.session();
    log.info(format_args!(
        "Archive monitoring of {} (timeout {archive_timeout} s)",
        redact_queries(url)
    ));
    let outcome = deadline_step(
        cancel,
        archive_timeout,
        "archive timeout has been exceeded",
        session.archive_poll(url),
    )
    .await;
    let result = match outcome {
        Step::Done(r) => r.map_err(|e| {
            TransferFailure::from_op(Scope::Archiving, Phase::TransferFinalization, e)
        }),
        Step::Expired(message) => Err(TransferFailure::new(
            Scope::Archiving,
            Phase::TransferFinalization,
            libc::ETIMEDOUT,
            message,
        )),
        Step::Canceled => Err(canceled(Phase::TransferFinalization)),
    };
    log_outcome(log, "Archive monitoring", &result);
    result
}

enum Step<T> {
    Done(T),
    Expired(&'static str),
    Canceled,
}

async fn deadline_step<T>(
    cancel: &CancellationToken,
    timeout: u64,
    expired: &'static str,
    fut: impl std::future::Future<Output = T>,
) -> Step<T> {
    let deadline = async {
        if timeout == 0 {
            std::future::pending::<()>().await
        } else {
            tokio::time::sleep(Duration::from_secs(timeout)).await
        }
    };
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Step::Canceled,
        _ = deadline => Step::Expired(expired),
        out = fut => Step::Done(out),
    }
}

fn log_outcome(log: &mut TransferLog, what: &str, result: &Result<(), TransferFailure>) {
    match result {
        Ok(()) => log.info(format_args!("{what} finished successfully")),
        Err(f) => log.error(format_args!("{what} failed: {}", f.reason())),
    }
}

#[cfg(test)]
mod tests {}
