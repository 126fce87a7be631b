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
//! Cancellation and timeouts drop the future returned by [`Session::copy`]; backends must leave
//! nothing running when that happens (the agent then cleans up a partial destination).

pub mod file;
pub mod http;
pub mod link_model;
pub mod mock;

use std::{fmt, sync::Arc};

use zeroize::Zeroizing;

use super::agent::TransferLog;

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

/// What a session is opened with: the user's credential and the transfer's log.
#[derive(Clone)]
pub struct SessionContext {
    pub credential: Option<Arc<Credential>>,
    pub log: TransferLog,
}

impl SessionContext {
    /// No credential, no log (tests and anonymous storage).
    pub fn anonymous() -> SessionContext {
        SessionContext {
            credential: None,
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
    /// Bring `url` online (staging); resolves when staged.
    fn bring_online(&mut self, url: &str, pin_lifetime: i64) -> BoxFuture<'_, OpResult<()>> {
        let _ = (url, pin_lifetime);
        Box::pin(async { Ok(()) })
    }
    /// Release (unpin) `url` after a transfer from a staged source.
    fn release(&mut self, url: &str, token: &str) -> BoxFuture<'_, OpResult<()>> {
        let _ = (url, token);
        Box::pin(async { Ok(()) })
    }
    /// Poll the archive state of `url` until it is on tape (archive monitoring).
    fn archive_poll(&mut self, url: &str) -> BoxFuture<'_, OpResult<()>> {
        let _ = url;
        Box::pin(async { Ok(()) })
    }
}

/// A protocol implementation.
pub trait Backend: Send + Sync {
    /// URL schemes served (lower case, without `://`).
    fn schemes(&self) -> &'static [&'static str];
    /// Open a session for one transfer.
    fn session(&self, context: &SessionContext) -> Box<dyn Session>;
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
        let scheme = url.split_once(':')?.0.to_ascii_lowercase();
        self.backends
            .iter()
            .find(|b| b.schemes().iter().any(|s| *s == scheme))
    }

    /// Every scheme some backend serves.
    pub fn schemes(&self) -> Vec<&'static str> {
        self.backends
            .iter()
            .flat_map(|b| b.schemes().iter().copied())
            .collect()
    }
}
