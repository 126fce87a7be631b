//! Storage backends: one file per protocol behind one trait, [`Backend`].
//!
//! A backend offers the primitive operations the transfer agent (`engine::agent`) composes into
//! the reference's execution steps (stat, checksum, existence, delete, parent creation, copy,
//! bring-online). The agent, not the backend, decides what to check and which message to write,
//! so every protocol fails with the same words.
//!
//! A [`Session`] is opened per transfer (or per session-reuse job): the `mock://` backend keeps
//! the gfal2 mock plugin's per-process stat state machine in it.
//!
//! A backend that drives an external copy tool which does the checks itself (gfal2's
//! `gfal-copy`) offers [`Session::copy_checked`]: the agent then hands it steps 5–8 at once, and
//! the backend reports failures with scope, phase and errno, in the reference's words where the
//! tool's differ (see `gfal2`).
//!
//! Cancellation and timeouts drop the future returned by [`Session::copy`] (or
//! [`Session::copy_checked`]); backends must leave nothing running when that happens (the agent
//! then cleans up a partial destination).
//!
//! Tape steps (bring-online before the copy, archive monitoring after it) are done only by a
//! backend that says so in [`Backend::tape`]; the others refuse them (the engine fails the file
//! with a clear reason, and submission refuses them up front through
//! [`Registry::staging_schemes`] / [`Registry::archive_schemes`]) instead of pretending the
//! file was staged or archived. The tape calls are bulk and poll-based, as gfal2's list calls
//! and the WLCG Tape REST API: [`Session::stage`] submits one request for many files and
//! returns its id, [`Session::stage_poll`] / [`Session::archive_poll`] say where each file
//! stands ([`TapeStatus`]), [`Session::stage_abort`] cancels, [`Session::release`] unpins; the
//! engine (`engine::tape`) groups files, paces the polls and maps the answers to file states.
//! `mock://` simulates them, `http(s)`/`dav(s)` speak the Tape REST API (`tape_rest`), gfal2
//! passes them to its plugins (`root://`, `srm://`, ...).
//!
//! The [`Registry`] picks a backend by scheme, in registration order; a copy between schemes
//! whose first backends differ goes to the first backend serving both (gfal2 copies `davs://` to
//! `root://` while `davs://` alone stays with the native http backend).

pub mod bearer;
pub mod file;
pub mod gfal2;
pub mod gfal2_tape;
pub mod http;
pub mod link_model;
pub mod mock;
pub mod tape_rest;

use std::{fmt, sync::Arc};

use zeroize::Zeroizing;

use super::{
    agent::{TransferFailure, TransferLog},
    checksum::{ChecksumMode, UserChecksum},
};

use futures_util::future::BoxFuture;

/// An error of one storage operation: an errno (positive, Linux numbering) and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpError {
    pub errno: i32,
    pub message: String,
}

impl OpError {
    pub fn new(errno: i32, message: impl Into<String>) -> OpError {
        OpError {
            errno,
            message: message.into(),
        }
    }

    /// An error carrying the system's text for `errno` (`strerror`), as gfal2 plugins report.
    pub fn from_errno(errno: i32) -> OpError {
        OpError::new(errno, strerror(errno))
    }

    /// From an I/O error: its errno (EIO if it has none) and the system text, prefixed by
    /// `context` (e.g. the path).
    pub fn from_io(err: &std::io::Error, context: &str) -> OpError {
        let errno = err.raw_os_error().unwrap_or(libc::EIO);
        let text = match err.raw_os_error() {
            Some(e) => strerror(e),
            None => err.to_string(),
        };
        OpError::new(errno, format!("{context}: {text}"))
    }
}

/// The system's text for `errno` ("No such file or directory"), without Rust's "(os error N)".
pub fn strerror(errno: i32) -> String {
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    match text.rfind(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

pub type OpResult<T> = Result<T, OpError>;

/// Progress of a running copy, updated by the backend, read by the engine.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes written to the destination so far.
    pub transferred: std::sync::atomic::AtomicU64,
    /// Set by [`Session::copy_checked`] once the backend's own checks let the copy begin: from
    /// then on the destination may hold partial data the agent must remove if the copy is
    /// stopped. (For plain copies the agent knows this itself.)
    pub copying: std::sync::atomic::AtomicBool,
}

/// How a copy between two remote endpoints moves the bytes (spec §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CopyMode {
    /// Third-party copy: the destination fetches from the source.
    #[default]
    Pull,
    /// Third-party copy: the source sends to the destination.
    Push,
    /// The bytes flow through this service (GET from the source, PUT to the destination).
    Streamed,
}

impl CopyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CopyMode::Pull => "pull",
            CopyMode::Push => "push",
            CopyMode::Streamed => "streamed",
        }
    }

    /// The copy mode and whether falling back to another mode is forbidden, from the two
    /// storages' `tpc_support` (`FULL`, `PULL`, `PUSH`, `NONE`; unset = `FULL`), as the
    /// reference's server builds the agent's command line (§4.1): a destination that can pull
    /// pulls (with fallback only when the source could also push); a source that can push
    /// pushes; otherwise the bytes are streamed.
    pub fn from_tpc_support(source: Option<&str>, destination: Option<&str>) -> (CopyMode, bool) {
        let level = |v: Option<&str>| {
            v.map(str::to_ascii_uppercase)
                .unwrap_or_else(|| "FULL".into())
        };
        let (src, dst) = (level(source), level(destination));
        let dst_pulls = dst == "FULL" || dst == "PULL";
        let src_pushes = src == "FULL" || src == "PUSH";
        match (dst_pulls, src_pushes) {
            (true, true) => (CopyMode::Pull, false),
            (true, false) => (CopyMode::Pull, true),
            (false, true) => (CopyMode::Push, true),
            (false, false) => (CopyMode::Streamed, true),
        }
    }

    /// The modes to try in order: the chosen one, then (unless `disable_fallback`) the
    /// following ones of pull → push → streamed; `no_streaming` removes streaming (possibly
    /// leaving nothing to try).
    pub fn attempts(self, disable_fallback: bool, no_streaming: bool) -> Vec<CopyMode> {
        let all = [CopyMode::Pull, CopyMode::Push, CopyMode::Streamed];
        let start = all.iter().position(|m| *m == self).unwrap_or(0);
        let mut modes: Vec<CopyMode> = if disable_fallback {
            vec![self]
        } else {
            all[start..].to_vec()
        };
        if no_streaming {
            modes.retain(|m| *m != CopyMode::Streamed);
        }
        modes
    }
}

/// What a copy needs besides the two URLs.
#[derive(Debug, Clone, Default)]
pub struct CopyParams {
    /// Source size as the agent determined it (stat, or the user's size in strict mode).
    pub filesize: u64,
    pub nostreams: u32,
    /// The transfer timeout in seconds (bounds tokens issued for third-party copies).
    pub timeout: u64,
    pub copy_mode: CopyMode,
    pub disable_fallback: bool,
    /// The VO forbids copies through this service (`no_streaming`).
    pub no_streaming: bool,
}

/// Steps 5–8 of a transfer (source checksum, destination preparation, copy, verification) for
/// a backend that does them itself ([`Session::copy_checked`]).
#[derive(Debug, Clone)]
pub struct CheckedCopy {
    pub job_id: String,
    pub file_id: u64,
    pub source: String,
    pub destination: String,
    /// Size (stat or the user's), timeout, streams and copy mode, as for a plain copy.
    pub params: CopyParams,
    pub checksum_mode: ChecksumMode,
    /// The algorithm (and the user's value, if any) to verify with.
    pub checksum: UserChecksum,
    pub overwrite: bool,
    /// Copy only: no checksum, existence, parent or verification steps.
    pub strict: bool,
}

/// What a checked copy measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckedReport {
    /// Seconds the copy proper took (the tool's transfer start to end), when it said so; the
    /// agent otherwise uses the time of the whole call, checks included.
    pub copy_duration: Option<f64>,
}

/// A user's delegated proxy (certificate, key, chain as one PEM, the `X509_USER_PROXY`
/// layout). Never printed: `Debug` shows only the cache key.
pub struct Credential {
    pem: Zeroizing<String>,
    /// Identifies this credential for client caches: delegation id, DN, delegation time.
    key: String,
}

impl Credential {
    pub fn new(pem: Zeroizing<String>, key: impl Into<String>) -> Credential {
        Credential {
            pem,
            key: key.into(),
        }
    }

    pub fn pem(&self) -> &str {
        &self.pem
    }

    pub fn key(&self) -> &str {
        &self.key
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credential({}, <redacted>)", self.key)
    }
}

/// What a session is opened with: the user's credential (or the transfer's bearer tokens)
/// and the transfer's log.
#[derive(Clone)]
pub struct SessionContext {
    pub credential: Option<Arc<Credential>>,
    /// The source's and destination's tokens, when the transfer authenticates with tokens.
    pub tokens: Option<Arc<bearer::TransferTokens>>,
    pub log: TransferLog,
}

impl SessionContext {
    /// No credential, no log (tests and anonymous storage).
    pub fn anonymous() -> SessionContext {
        SessionContext {
            credential: None,
            tokens: None,
            log: TransferLog::null(),
        }
    }
}

/// A per-transfer session with a storage backend.
pub trait Session: Send {
    /// Size of the file at `url`.
    fn stat(&mut self, url: &str) -> BoxFuture<'_, OpResult<u64>>;
    /// Checksum of `url` with `algorithm` (upper-case `ADLER32`, `MD5`, `CRC32C`), as the
    /// storage reports it (hex, no prefix).
    fn checksum(&mut self, url: &str, algorithm: &str) -> BoxFuture<'_, OpResult<String>>;
    /// Whether `url` exists (`access(F_OK)`): `Ok(false)` for ENOENT, errors otherwise.
    fn exists(&mut self, url: &str) -> BoxFuture<'_, OpResult<bool>>;
    /// Remove the file at `url`.
    fn delete(&mut self, url: &str) -> BoxFuture<'_, OpResult<()>>;
    /// Create the parent directories of `url` (`mkdir -p`; existing ones are fine).
    fn make_parent(&mut self, url: &str) -> BoxFuture<'_, OpResult<()>>;
    /// Copy `source` to `destination` (which does not exist), reporting bytes to `progress`.
    fn copy<'a>(
        &'a mut self,
        source: &'a str,
        destination: &'a str,
        params: &'a CopyParams,
        progress: &'a Progress,
    ) -> BoxFuture<'a, OpResult<()>>;
    /// Steps 5–8 done by the backend itself, or `None` (the default): the agent runs them over
    /// the primitive operations. Failures carry their scope and phase. The backend sets
    /// `progress.copying` once its checks passed and the destination may be written: after a
    /// failure or a stop from then on, the agent removes the destination (unless EEXIST), as
    /// after a plain copy.
    fn copy_checked<'a>(
        &'a mut self,
        request: &'a CheckedCopy,
        progress: &'a Progress,
    ) -> Option<BoxFuture<'a, Result<CheckedReport, TransferFailure>>> {
        let _ = (request, progress);
        None
    }
    /// Ask the storage to bring `urls` online (one bulk request: gfal2's
    /// `bring_online_list`, the Tape REST API's `POST /stage`), to be kept on disk for
    /// `pin_lifetime` seconds (`copy_pin_lifetime`, the Tape REST API's `diskLifetime`) and
    /// given up after `timeout` seconds. An error fails every file of the request. Only
    /// backends whose [`Backend::tape`] says `staging` are asked; the default refuses.
    fn stage<'a>(
        &'a mut self,
        urls: &'a [String],
        pin_lifetime: i64,
        timeout: u64,
    ) -> BoxFuture<'a, OpResult<StageReply>> {
        let _ = (pin_lifetime, timeout);
        let refusal = not_supported("Staging", urls.first().map_or("", String::as_str));
        Box::pin(async move { Err(refusal) })
    }
    /// Where the bring-online request `token` stands for each of `urls` (same order). An error
    /// is about the request as a whole (the storage did not answer).
    fn stage_poll<'a>(
        &'a mut self,
        token: &'a str,
        urls: &'a [String],
    ) -> BoxFuture<'a, OpResult<Vec<TapeStatus>>> {
        let _ = token;
        let refusal = not_supported("Staging", urls.first().map_or("", String::as_str));
        Box::pin(async move { Err(refusal) })
    }
    /// Cancel the bring-online of `urls` in request `token` (the file or job was canceled, timed
    /// out or failed: the storage stops working for nobody).
    fn stage_abort<'a>(
        &'a mut self,
        token: &'a str,
        urls: &'a [String],
    ) -> BoxFuture<'a, OpResult<()>> {
        let _ = (token, urls);
        Box::pin(async { Ok(()) })
    }
    /// Release (unpin) `url` after a transfer from a staged source.
    fn release(&mut self, url: &str, token: &str) -> BoxFuture<'_, OpResult<()>> {
        let _ = (url, token);
        Box::pin(async { Ok(()) })
    }
    /// Whether each of `urls` is on tape yet (archive monitoring: gfal2's `archive_poll_list`,
    /// the Tape REST API's `POST /archiveinfo`), same order. Only backends whose
    /// [`Backend::tape`] says `archive_monitoring` are asked; the default refuses.
    fn archive_poll<'a>(
        &'a mut self,
        urls: &'a [String],
    ) -> BoxFuture<'a, OpResult<Vec<TapeStatus>>> {
        let refusal = not_supported(
            "Archive monitoring",
            urls.first().map_or("", String::as_str),
        );
        Box::pin(async move { Err(refusal) })
    }
    /// Where the file at `url` lives, as gfal2's `user.status` extended attribute says it:
    /// `ONLINE`, `NEARLINE`, `ONLINE_AND_NEARLINE` (the destination file report). The default:
    /// ENOTSUP, the backend cannot tell.
    fn locality(&mut self, url: &str) -> BoxFuture<'_, OpResult<String>> {
        let _ = url;
        Box::pin(async {
            Err(OpError::new(
                libc::ENOTSUP,
                "The file locality (user.status) is not supported by this protocol",
            ))
        })
    }
}

/// EPROTONOSUPPORT "<what> is not supported for <scheme>:// by this service": final, so the
/// file fails at once with a reason the user can act on.
pub fn not_supported(what: &str, url: &str) -> OpError {
    let scheme = url.split_once(':').map_or(url, |(s, _)| s);
    OpError::new(
        libc::EPROTONOSUPPORT,
        format!("{what} is not supported for {scheme}:// by this service"),
    )
}

/// One file of a bulk tape request (bring-online or archive poll), as gfal2's list calls say
/// it: done, not yet (their `EAGAIN`), or failed with an errno and the storage's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TapeStatus {
    /// Staged (on disk), or archived (on tape).
    Done,
    /// Still going.
    Pending,
    Failed(OpError),
}

/// What the storage said to a bring-online request: its id (kept as the file's
/// `bringonline_token`, used to poll, cancel and release) and each file's first status, in
/// the order of the request (a storage may answer some at once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageReply {
    pub token: String,
    pub files: Vec<TapeStatus>,
}

/// The tape operations a backend can do besides copying.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TapeSupport {
    /// Bring files online before the copy (`bring_online`, `copy_pin_lifetime`) and release
    /// them after it.
    pub staging: bool,
    /// Watch a destination until it is on tape (`archive_timeout`).
    pub archive_monitoring: bool,
}

/// A protocol implementation.
pub trait Backend: Send + Sync {
    /// Short name for logs (`http`, `gfal2`).
    fn name(&self) -> &'static str;
    /// URL schemes served (lower case, without `://`).
    fn schemes(&self) -> &[&'static str];
    /// Open a session for one transfer.
    fn session(&self, context: &SessionContext) -> Box<dyn Session>;
    /// The tape steps this backend really does (none by default).
    fn tape(&self) -> TapeSupport {
        TapeSupport::default()
    }
    /// The tape steps it does for `scheme` (a backend serving many protocols, gfal2, can do
    /// them for some only); by default [`Backend::tape`].
    fn tape_for(&self, scheme: &str) -> TapeSupport {
        let _ = scheme;
        self.tape()
    }
}

/// The backends of this instance, by scheme.
#[derive(Clone, Default)]
pub struct Registry {
    backends: Vec<Arc<dyn Backend>>,
}

impl Registry {
    pub fn new(backends: Vec<Arc<dyn Backend>>) -> Registry {
        Registry { backends }
    }

    /// The backend serving `url`'s scheme.
    pub fn for_url(&self, url: &str) -> Option<&Arc<dyn Backend>> {
        let scheme = scheme_of(url)?;
        self.backends.iter().find(|b| serves(b.as_ref(), &scheme))
    }

    /// The backend copying `source` to `destination`: the one serving the source's scheme if
    /// it serves the destination's too, else the first serving both. `None` if there is none.
    pub fn for_pair(&self, source: &str, destination: &str) -> Option<&Arc<dyn Backend>> {
        let (src, dst) = (scheme_of(source)?, scheme_of(destination)?);
        let first = self.for_url(source)?;
        if serves(first.as_ref(), &dst) {
            return Some(first);
        }
        self.backends
            .iter()
            .find(|b| serves(b.as_ref(), &src) && serves(b.as_ref(), &dst))
    }

    /// Every scheme some backend serves, each once, sorted.
    pub fn schemes(&self) -> Vec<&'static str> {
        let mut all: Vec<&'static str> = self
            .backends
            .iter()
            .flat_map(|b| b.schemes().iter().copied())
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// Schemes whose files can be brought online: those whose backend ([`Self::for_url`])
    /// stages. Sorted.
    pub fn staging_schemes(&self) -> Vec<&'static str> {
        self.schemes_where(|t| t.staging)
    }

    /// Schemes whose destinations can be watched until archived. Sorted.
    pub fn archive_schemes(&self) -> Vec<&'static str> {
        self.schemes_where(|t| t.archive_monitoring)
    }

    fn schemes_where(&self, can: impl Fn(TapeSupport) -> bool) -> Vec<&'static str> {
        self.schemes()
            .into_iter()
            .filter(|s| {
                self.backends
                    .iter()
                    .find(|b| serves(b.as_ref(), s))
                    .is_some_and(|b| can(b.tape_for(s)))
            })
            .collect()
    }

    /// The schemes of each backend: a copy between two schemes runs only if one backend
    /// serves both ([`Self::for_pair`]).
    pub fn scheme_groups(&self) -> Vec<Vec<&'static str>> {
        self.backends.iter().map(|b| b.schemes().to_vec()).collect()
    }

    /// One line for the start-up log: each backend with the schemes it serves first, and those
    /// it serves only in copies with another scheme (`gfal2: root xroot (copies: davs)`).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (i, backend) in self.backends.iter().enumerate() {
            let earlier = |s: &&str| self.backends[..i].iter().any(|b| serves(b.as_ref(), s));
            let (mixed, own): (Vec<&str>, Vec<&str>) =
                backend.schemes().iter().copied().partition(earlier);
            let mut part = format!("{}: {}", backend.name(), own.join(" "));
            if !mixed.is_empty() {
                part.push_str(&format!(" (in copies with the above: {})", mixed.join(" ")));
            }
            parts.push(part);
        }
        parts.join("; ")
    }
}

/// The lower-case scheme of `url`.
pub fn scheme_of(url: &str) -> Option<String> {
    Some(url.split_once(':')?.0.to_ascii_lowercase())
}

fn serves(backend: &dyn Backend, scheme: &str) -> bool {
    backend.schemes().contains(&scheme)
}
