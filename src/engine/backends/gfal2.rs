//! gfal2: every scheme the installed gfal2 plugins serve and no native backend takes
//! (`root://`, `gsiftp://`, `srm://`, `s3://`, ...), by running the gfal2 command-line tools
//! (`gfal-copy` once per transfer), as the reference's agent does its work with gfal2.
//!
//! ## One `gfal-copy` does steps 5–8
//! Every gfal tool is a Python process that loads gfal2 and its plugins and then connects and
//! authenticates anew. Measured here (2 shared cores, XRootD with GSI on loopback): starting
//! Python with gfal2 costs 0.05–0.07 s warm (0.2 s cold, ~0.2 s of CPU each); one `gfal-stat`
//! or `gfal-sum` of a `root://` file takes 0.26–0.38 s end to end, against 0.16 s for `xrdfs
//! stat`. Running the agent's steps over one tool per primitive (stat, checksum, existence,
//! mkdir, copy, stat, checksum) would cost seven such processes per transfer (≈2 s and ≈1.5 s
//! of CPU, most of what a small `root://` copy takes). So the session offers
//! [`Session::copy_checked`]: the agent still stats the source itself (step 3, one `gfal-stat`:
//! the size sets the timeout, and a missing or directory source fails as SOURCE before
//! anything is written), then one `gfal-copy` does steps 5–8 with gfal2's own checks —
//! `-K ALG[:value] --checksum-mode source|target|both`, `-f` (overwrite), `-p` (parent
//! directories), `-n` (streams), `-t`/`-T` (timeout), `--copy-mode` for HTTP, `--just-copy`
//! for strict copies. A checked `root://` TPC of 5 MB took 4.2–4.8 s against 3.5–3.9 s
//! unchecked. The primitive operations exist too (`gfal-stat`, `gfal-sum`, `gfal-rm`,
//! `gfal-mkdir`, `gfal-copy --just-copy`): the agent uses `gfal-rm` to clean up after a stopped
//! copy, and `gfal-sum`, `gfal-stat` and `gfal-xattr <url> user.status` for the destination
//! file report (`gfal-xattr` is optional: without it there is no report).
//!
//! ## What gfal-copy says
//! `gfal-copy -v` prints `Copying <size> bytes <src> => <dst>` once its own existence checks
//! passed (the session then sets [`Progress::copying`]), `event: [<ms>] <side> <domain>\t<stage>`
//! lines (`TRANSFER:ENTER`/`TRANSFER:EXIT` give the phase of a failure and the copy's duration
//! for the throughput) and `monitor: <src> <dst> <avg> <inst> <bytes> <secs>` (progress). It
//! fails with `gfal-copy error: <errno> (<strerror>) - <message>` on stderr, exit status =
//! errno, where the message is gfal2's: the http plugin prefixes a side
//! (`SOURCE CHECKSUM MISMATCH ...`, `DESTINATION CHECKSUM MISMATCH ...`, `TRANSFER ERROR: Copy
//! failed ...`), the xrootd plugin does not (`Error on XrdCl::CopyProcess::Run(): ...
//! (destination)`; a checksum mismatch is `84 ... [ERROR] CheckSum error`), and gfal-copy's own
//! checks say `Could not stat the source: ...` and `Destination <url> exists and overwrite is
//! not set`. [`copy_failure`] turns that into scope, phase, errno and message; a timeout of the
//! tool itself is `Command timed out after <n> seconds!` (exit 110). Other gfal tools use the
//! same error line; `gfal-rm` of a missing file prints `<url>\tMISSING` and exits 2.
//!
//! ## Processes and credentials
//! The tools run with a clean environment: `PATH`, a UTF-8 locale, `GFAL_PYTHONBIN` (the
//! Python found at start that imports gfal2: the one first on the service's `PATH` often does
//! not), `X509_CERT_DIR`/`X509_VOMS_DIR` (the service's trust), `X509_USER_PROXY` (the user's
//! delegated proxy, written per session to a 0600 file of a 0700 directory under the data
//! directory and removed when the session ends) and, when `[engine] gfal2_options` are set,
//! `GFAL_CONFIG_DIR` (a private copy of `/etc/gfal2.d` with those options appended: S3 keys
//! never appear on a command line or in a log). Each tool runs in its own process group;
//! dropping its future (cancellation, the watchdog) kills the group.
//!
//! ## Bearer tokens
//! A transfer with tokens runs each tool through a small Python wrapper
//! ([`BEARER_WRAPPER`], written beside the private configuration at start) instead of the
//! tool's own launcher: the wrapper reads the tokens from a 0600 file named by
//! `FTSD_BEARER_FILE` (deleted as soon as it is read, and by the session after the run
//! anyway), sets them as gfal2 BEARER credentials the way the reference's url-copy does (the
//! source token for the source URL, the destination token for the destination's host), turns
//! off macaroon requests (`RETRIEVE_BEARER_TOKEN=false`) and then runs the tool's own code
//! (gfal2-util's `Gfal2Shell`). So no token is ever on a command line or in an environment
//! (gfal-copy has no token option; gfal2's `BEARER_TOKEN` variable would be one token for
//! both sides, visible in `/proc/<pid>/environ`). gfal2's http plugin sends them
//! (`Authorization`, and `TransferHeaderAuthorization` for the other side of a TPC); its xrootd
//! plugin ignores BEARER credentials (gfal2 2.23), as in the reference.
//!
//! ## Detection
//! At start, [`Gfal2Backend::start`] looks for `gfal-copy` and its sibling tools, finds a
//! Python that runs `gfal-copy --version` (which imports gfal2 and lists the plugins that
//! really loaded, `http-2.21.3`, ...), and maps plugins to schemes ([`plugin_schemes`]).
//! `file://` and `mock://` never go to gfal2: native backends own them (`file://` is confined
//! to `file_roots`).
//!
//! Known gap: the xrootd plugin hands checksums to XRootD's copy, which ignores a user value
//! in `source` mode (a wrong value passes); `target` and `both` are checked.

use std::{
    ffi::OsString,
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use futures_util::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{
    Backend, CheckedCopy, CheckedReport, CopyMode, CopyParams, Credential, OpError, OpResult,
    Progress, Session, SessionContext,
    bearer::{Side, TransferTokens},
    strerror,
};
use crate::engine::{
    agent::{Phase, Scope, TransferFailure, TransferLog, redact_queries},
    checksum::{ChecksumMode, UserChecksum},
};

/// The schemes each gfal2 plugin serves (gfal2 2.21–2.23 `check_url` functions).
const PLUGINS: &[(&str, &[&str])] = &[
    (
        "http",
        &[
            "http", "https", "dav", "davs", "s3", "s3s", "gcloud", "gclouds", "swift", "swifts",
            "cs3", "cs3s",
        ],
    ),
    ("xrootd", &["root", "roots", "xroot", "xroots"]),
    ("gridftp", &["gsiftp", "ftp"]),
    ("srm", &["srm"]),
    ("sftp", &["sftp"]),
    ("dcap", &["dcap", "gsidcap"]),
];
/// Plugins whose schemes stay with native backends: `file://` is confined to `file_roots` by
/// the file backend, `mock://` is ftsd's own simulation.
const NATIVE_ONLY: &[&str] = &["file", "mock"];
/// The tools used besides `gfal-copy`, looked for in its directory.
const SIBLINGS: &[&str] = &["gfal-stat", "gfal-sum", "gfal-rm", "gfal-mkdir"];
/// Pythons tried, after the one beside `gfal-copy` (a venv or conda install).
const PYTHONS: &[&str] = &[
    "/usr/bin/python3",
    "/usr/libexec/platform-python",
    "/usr/bin/python",
];
/// `PATH` of the tools: system directories only.
const CHILD_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// gfal2's configuration as the distribution installs it (read once at start when
/// `gfal2_options` are set).
const SYSTEM_CONFIG_DIR: &str = "/etc/gfal2.d";
/// Bound on `gfal-copy --version` at start.
const DETECT_TIMEOUT: Duration = Duration::from_secs(30);
/// `-t` of metadata operations: gfal2's own `NAMESPACE_TIMEOUT` default.
const METADATA_TIMEOUT: u64 = 300;
/// `-t` of `gfal-sum`: gfal2's own `CHECKSUM_TIMEOUT` default (storages read the whole file).
const CHECKSUM_TIMEOUT: u64 = 1800;
/// The gfal tools give up `-t` + 30 s after they start; they are killed if still there later.
const KILL_GRACE: Duration = Duration::from_secs(60);
/// What is kept of a tool's stderr (its tail): error lines are short, tracebacks a few KiB.
const STDERR_LIMIT: usize = 64 * 1024;
/// Longer stdout lines are cut (gfal-copy's are URLs and numbers).
const LINE_LIMIT: usize = 4096;
/// Lines of one tool's output copied to the transfer log (progress lines are not copied).
const LOGGED_LINES: usize = 200;

/// The schemes of a gfal2 plugin (`http`, `xrootd`, ...), without the native-only ones.
pub fn plugin_schemes(plugin: &str) -> Option<&'static [&'static str]> {
    PLUGINS.iter().find(|(p, _)| *p == plugin).map(|(_, s)| *s)
}

/// The schemes of `plugins`, in plugin order, and the plugins whose schemes are unknown
/// (native-only ones are neither).
pub fn schemes_of(plugins: &[String]) -> (Vec<&'static str>, Vec<String>) {
    let mut schemes = Vec::new();
    let mut unknown = Vec::new();
    for plugin in plugins {
        match plugin_schemes(plugin) {
            Some(found) => {
                for scheme in found {
                    if !schemes.contains(scheme) {
                        schemes.push(*scheme);
                    }
                }
            }
            None if NATIVE_ONLY.contains(&plugin.as_str()) => {}
            None => unknown.push(plugin.clone()),
        }
    }
    (schemes, unknown)
}

/// What was found at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installation {
    /// `gfal-copy`, absolute; the other tools are in its directory.
    pub copy: PathBuf,
    /// The Python that imports gfal2 (`GFAL_PYTHONBIN`).
    pub python: PathBuf,
    /// `gfal2-util version 1.8.0 (gfal2 2.21.3)`.
    pub version: String,
    /// The plugins that loaded (`http`, `xrootd`, ...).
    pub plugins: Vec<String>,
}

impl Installation {
    pub(super) fn tool(&self, name: &str) -> PathBuf {
        match self.copy.parent() {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        }
    }
}

/// `gfal-copy --version`: the version line, then one `\t<plugin>-<version>` line per loaded
/// plugin.
pub fn parse_version(stdout: &str) -> Option<(String, Vec<String>)> {
    let mut lines = stdout.lines();
    let version = lines.next()?.trim();
    if !version.starts_with("gfal2-util version") {
        return None;
    }
    let plugins = lines
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| l.rsplit_once('-').map_or(l, |(name, _)| name).to_string())
        .collect();
    Some((version.to_string(), plugins))
}

/// `program` as a path: itself if it names a directory, else the first match in `PATH`.
fn find_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/bin".into()])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Where and how the backend runs the tools.
#[derive(Debug, Clone)]
pub struct Gfal2Settings {
    /// `[engine] gfal2_copy`.
    pub program: PathBuf,
    /// `<data_dir>/run`: proxies and the private gfal2 configuration go below it.
    pub run_dir: PathBuf,
    pub ca_dir: PathBuf,
    pub voms_dir: PathBuf,
    /// `[engine] gfal2_options` as (group, key, value).
    pub options: Vec<(String, String, String)>,
}

/// The gfal2 backend.
pub struct Gfal2Backend {
    inner: Arc<Inner>,
}

struct Inner {
    installation: Installation,
    schemes: Vec<&'static str>,
    proxy_dir: PathBuf,
    env: Vec<(&'static str, OsString)>,
    /// The bearer-token wrapper ([`BEARER_WRAPPER`]), written at start.
    wrapper: PathBuf,
}

/// The Python wrapper that hands a transfer's tokens to gfal2 as per-URL BEARER credentials
/// (see the module documentation), then runs the gfal tool named by its first argument.
pub const BEARER_WRAPPER: &str = r#"# Written by ftsd: runs a gfal tool with bearer tokens as gfal2 credentials.
import os
import sys

import gfal2

path = os.environ.pop("FTSD_BEARER_FILE", "")
creds = []
if path:
    with open(path) as f:
        lines = f.read().split("\n")
    os.unlink(path)
    creds = [(lines[i], lines[i + 1]) for i in range(0, len(lines) - 1, 2) if lines[i]]
_creat_context = gfal2.creat_context


def creat_context(*args, **kwargs):
    context = _creat_context(*args, **kwargs)
    for prefix, token in creds:
        context.cred_set(prefix, gfal2.cred_new("BEARER", token))
    context.set_opt_boolean("HTTP PLUGIN", "RETRIEVE_BEARER_TOKEN", False)
    return context


gfal2.creat_context = creat_context
os.environ["XrdSecGSIDELEGPROXY"] = "1"
sys.argv = sys.argv[1:]
from gfal2_util.shell import Gfal2Shell

sys.exit(Gfal2Shell().main(sys.argv))
"#;

impl Gfal2Backend {
    /// Prepare the private directories, find the tools and a Python with gfal2, and learn the
    /// loaded plugins. `Err` says why gfal2 cannot be used.
    pub async fn start(settings: Gfal2Settings) -> Result<Gfal2Backend, String> {
        let copy = find_program(&settings.program)
            .ok_or_else(|| format!("{} not found", settings.program.display()))?;
        let dir = copy.parent().unwrap_or(Path::new("/"));
        if let Some(missing) = SIBLINGS.iter().find(|t| !dir.join(t).is_file()) {
            return Err(format!("{} not found", dir.join(missing).display()));
        }
        let proxy_dir = settings.run_dir.join("transfer-proxies");
        private_dir(&proxy_dir)
            .map_err(|e| format!("cannot prepare {}: {e}", proxy_dir.display()))?;
        let wrapper = settings.run_dir.join("gfal2-bearer.py");
        write_wrapper(&wrapper).map_err(|e| format!("cannot write {}: {e}", wrapper.display()))?;
        let mut env: Vec<(&'static str, OsString)> = vec![
            ("PATH", CHILD_PATH.into()),
            ("LANG", "C.UTF-8".into()),
            ("LC_ALL", "C.UTF-8".into()),
            ("X509_CERT_DIR", settings.ca_dir.clone().into()),
            ("X509_VOMS_DIR", settings.voms_dir.clone().into()),
        ];
        if !settings.options.is_empty() {
            let config_dir = settings.run_dir.join("gfal2-config");
            write_config(&config_dir, Path::new(SYSTEM_CONFIG_DIR), &settings.options)
                .map_err(|e| format!("cannot write {}: {e}", config_dir.display()))?;
            env.push(("GFAL_CONFIG_DIR", config_dir.into()));
        }
        let mut pythons: Vec<PathBuf> = vec![dir.join("python3")];
        pythons.extend(PYTHONS.iter().map(PathBuf::from));
        pythons.dedup();
        let mut tried = Vec::new();
        for python in pythons.into_iter().filter(|p| p.is_file()) {
            match version(&copy, &python, &env).await {
                Ok((version, plugins)) => {
                    let (schemes, _) = schemes_of(&plugins);
                    env.push(("GFAL_PYTHONBIN", python.clone().into()));
                    return Ok(Gfal2Backend {
                        inner: Arc::new(Inner {
                            installation: Installation {
                                copy,
                                python,
                                version,
                                plugins,
                            },
                            schemes,
                            proxy_dir,
                            env,
                            wrapper,
                        }),
                    });
                }
                Err(e) => tried.push(format!("{}: {e}", python.display())),
            }
        }
        Err(format!(
            "no Python runs {} with the gfal2 module ({})",
            copy.display(),
            if tried.is_empty() {
                "no python3 found".to_string()
            } else {
                tried.join("; ")
            }
        ))
    }

    pub fn installation(&self) -> &Installation {
        &self.inner.installation
    }

    /// Plugins loaded whose schemes are unknown to ftsd (not served).
    pub fn unknown_plugins(&self) -> Vec<String> {
        schemes_of(&self.inner.installation.plugins).1
    }
}

/// `gfal-copy --version` with `python`.
async fn version(
    copy: &Path,
    python: &Path,
    env: &[(&'static str, OsString)],
) -> Result<(String, Vec<String>), String> {
    let mut command = tokio::process::Command::new(copy);
    command
        .arg("--version")
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("GFAL_PYTHONBIN", python)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(DETECT_TIMEOUT, command.output())
        .await
        .map_err(|_| format!("no answer within {DETECT_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match parse_version(&stdout) {
        Some(found) if out.status.success() => Ok(found),
        _ => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
            Err(format!(
                "{} ({})",
                out.status,
                last.unwrap_or("no output").trim()
            ))
        }
    }
}

/// Create `dir` 0700 (and fix an existing one) and empty it: what is left there is from a
/// previous run of this service.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// The private gfal2 configuration: `gfal2.conf` (0600) holding every `*.conf` of `system`
/// (name order), then `options`. gfal2 merges groups that appear twice and the last value of a
/// key wins, so the options override the system's settings. The system files are needed:
/// without their groups some plugins refuse to load.
fn write_config(
    dir: &Path,
    system: &Path,
    options: &[(String, String, String)],
) -> std::io::Result<()> {
    private_dir(dir)?;
    let mut text = String::new();
    if let Ok(entries) = std::fs::read_dir(system) {
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "conf"))
            .collect();
        files.sort();
        for file in files {
            text.push_str(&std::fs::read_to_string(&file)?);
            text.push('\n');
        }
    }
    text.push_str("# [engine] gfal2_options\n");
    for (group, key, value) in options {
        text.push_str(&format!("[{group}]\n{key}={value}\n"));
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.join("gfal2.conf"))?;
    file.write_all(text.as_bytes())
}

impl Backend for Gfal2Backend {
    fn name(&self) -> &'static str {
        "gfal2"
    }

    fn schemes(&self) -> &[&'static str] {
        &self.inner.schemes
    }

    fn session(&self, context: &SessionContext) -> Box<dyn Session> {
        Box::new(Gfal2Session {
            inner: self.inner.clone(),
            credential: context.credential.clone(),
            proxy: None,
            tokens: context.tokens.clone(),
            log: context.log.clone(),
        })
    }

    /// Bring-online and archive polling where gfal2's plugins do them (`gfal2_tape`).
    fn tape_for(&self, scheme: &str) -> super::TapeSupport {
        super::gfal2_tape::support(scheme)
    }
}

/// Write [`BEARER_WRAPPER`] to `path` (0600: only the service runs it).
fn write_wrapper(path: &Path) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(BEARER_WRAPPER.as_bytes())
}

/// The tokens of one tool run as the wrapper reads them: `prefix\ntoken\n` pairs, the source
/// token for the source URL and the destination token for the destination's host (the
/// reference's url-copy). `None` when there is no token at all.
pub fn bearer_lines(tokens: &TransferTokens) -> Option<zeroize::Zeroizing<String>> {
    let mut lines = zeroize::Zeroizing::new(String::new());
    if let Some(token) = tokens.token(Side::Source) {
        lines.push_str(tokens.source_url());
        lines.push('\n');
        lines.push_str(token.expose());
        lines.push('\n');
    }
    if let Some(token) = tokens.token(Side::Destination) {
        lines.push_str(&url_host(tokens.destination_url()));
        lines.push('\n');
        lines.push_str(token.expose());
        lines.push('\n');
    }
    (!lines.is_empty()).then_some(lines)
}

/// The host of a URL (no port), as gfal2's `Uri::parse(url).host`.
fn url_host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or("").to_string(),
        None => host_port.split(':').next().unwrap_or("").to_string(),
    }
}

/// A transfer's tokens as a private file for the wrapper (`FTSD_BEARER_FILE`), removed on
/// drop if the wrapper did not remove it.
struct BearerFile {
    path: PathBuf,
}

impl BearerFile {
    fn write(dir: &Path, lines: &str) -> std::io::Result<BearerFile> {
        let path = dir.join(format!(
            "bearer_{}_{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let guard = BearerFile { path };
        file.write_all(lines.as_bytes())?;
        Ok(guard)
    }
}

impl Drop for BearerFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The user's proxy as a file for `X509_USER_PROXY`, removed on drop.
#[derive(Debug)]
pub struct ProxyFile {
    path: PathBuf,
}

impl ProxyFile {
    /// Write `pem` to a new file (0600, a name of its own) in `dir`.
    pub fn write(dir: &Path, pem: &str) -> std::io::Result<ProxyFile> {
        let path = dir.join(format!(
            "x509up_{}_{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let proxy = ProxyFile { path };
        file.write_all(pem.as_bytes())?;
        Ok(proxy)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ProxyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A transfer's session: the user's proxy file (written on first use) or its bearer tokens,
/// and the transfer log.
pub struct Gfal2Session {
    inner: Arc<Inner>,
    credential: Option<Arc<Credential>>,
    proxy: Option<ProxyFile>,
    tokens: Option<Arc<TransferTokens>>,
    log: TransferLog,
}

/// How a tool ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// Exit status; `None` when killed by a signal.
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// The tail of stderr.
    pub stderr: String,
}

impl Ended {
    fn from_status(status: ExitStatus, stderr: String) -> Ended {
        use std::os::unix::process::ExitStatusExt;
        Ended {
            code: status.code(),
            signal: status.signal(),
            stderr,
        }
    }

    pub(super) fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// `<tool> error: <errno> (<text>) - <message>`, the last one on stderr.
pub fn error_line(tool: &str, stderr: &str) -> Option<(i32, String)> {
    let prefix = format!("{tool} error: ");
    stderr.lines().rev().find_map(|line| {
        let rest = line.trim().strip_prefix(&prefix)?;
        let (errno, rest) = rest.split_once(' ')?;
        let errno: i32 = errno.parse().ok()?;
        let message = match rest.find(") - ") {
            Some(i) if rest.starts_with('(') => &rest[i + 4..],
            _ => rest,
        };
        Some((errno, clean(message)))
    })
}

/// A gfal message without XRootD's literal `\x00` and surrounding space.
fn clean(message: &str) -> String {
    message.replace("\\x00", "").trim().to_string()
}

/// The error of a tool that did not succeed: its error line, else its own timeout, else its
/// exit status or signal with the last line it printed.
pub fn tool_error(tool: &str, ended: &Ended) -> OpError {
    if let Some((errno, message)) = error_line(tool, &ended.stderr) {
        let errno = if errno > 0 { errno } else { libc::EIO };
        return OpError::new(errno, message);
    }
    let last = ended
        .stderr
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty());
    if let Some(line) = last.filter(|l| l.starts_with("Command timed out after")) {
        return OpError::new(libc::ETIMEDOUT, format!("{tool}: {line}"));
    }
    let how = match (ended.code, ended.signal) {
        (_, Some(signal)) => {
            return OpError::new(libc::EINTR, format!("{tool} was killed by signal {signal}"));
        }
        (Some(code), _) => format!("exit status {code}"),
        (None, None) => "an unknown status".to_string(),
    };
    // Python's own exit statuses (1 for an exception) are no errnos.
    let message = match last {
        Some(line) => format!("{tool} failed with {how}: {}", sanitize(line)),
        None => format!("{tool} failed with {how}"),
    };
    OpError::new(libc::EIO, message)
}

/// A line of tool output fit for the transfer log: URL query strings (XRootD's proxy path,
/// S3 signatures) and bearer tokens removed.
fn sanitize(line: &str) -> String {
    let mut text = redact_queries(line);
    if let Some(i) = text.find("Bearer ") {
        text.truncate(i + "Bearer ".len());
        text.push_str("<redacted>");
    }
    if text.len() > LINE_LIMIT {
        let mut end = LINE_LIMIT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// The failure of a `gfal-copy` run (see the module documentation for the formats).
pub fn copy_failure(ended: &Ended, watch: &CopyWatch, checksum: &UserChecksum) -> TransferFailure {
    let err = tool_error("gfal-copy", ended);
    let (mut errno, mut message) = (err.errno, err.message);
    let mut scope = if SOURCE_MESSAGES.iter().any(|p| message.starts_with(p)) {
        Scope::Source
    } else if DESTINATION_MESSAGES.iter().any(|p| message.starts_with(p)) {
        Scope::Destination
    } else {
        Scope::Transfer
    };
    let mut phase = None;
    if message.starts_with("Could not stat the source") {
        phase = Some(Phase::TransferPreparation);
    } else if message.starts_with("Destination ") && message.ends_with("overwrite is not set") {
        // gfal-copy's own check: the agent's words for it.
        (scope, phase, errno) = (
            Scope::Destination,
            Some(Phase::TransferPreparation),
            libc::EEXIST,
        );
        message = "Destination file exists and overwrite is not enabled".to_string();
    } else if message.contains("CheckSum error") {
        // XRootD's copy compares checksums after the copy and says only this (errno EILSEQ);
        // the reference's class for a mismatch: EIO, final.
        (scope, phase, errno) = (
            Scope::Destination,
            Some(Phase::TransferFinalization),
            libc::EIO,
        );
        message = format!(
            "DESTINATION CHECKSUM MISMATCH ({}) {message}",
            checksum.algorithm
        );
    }
    let phase = phase.unwrap_or(if watch.transfer_exit.is_some() {
        Phase::TransferFinalization
    } else if watch.transfer_enter.is_some() || scope == Scope::Transfer {
        Phase::Transfer
    } else {
        Phase::TransferPreparation
    });
    TransferFailure::new(scope, phase, errno, message)
}

/// How gfal2 and gfal-copy begin messages about the source: a side prefix (`gfalt_set_error`)
/// or the core's and gfal-copy's own words.
const SOURCE_MESSAGES: &[&str] = &[
    "SOURCE ",
    "Could not stat the source",
    "Could not get the source checksum",
    "Could not open source",
];
/// The same for the destination.
const DESTINATION_MESSAGES: &[&str] = &[
    "DESTINATION ",
    "Could not get the destination checksum",
    "Could not open destination",
    "Can not copy a directory",
];

/// What `gfal-copy -v` said on stdout while it ran.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CopyWatch {
    /// `Copying <n> bytes ...`: its checks passed, the destination may be written.
    pub copying: Option<u64>,
    /// Timestamps (ms) of the `TRANSFER:ENTER` and `TRANSFER:EXIT` events.
    pub transfer_enter: Option<u64>,
    pub transfer_exit: Option<u64>,
    /// Bytes of the last `monitor:` line.
    pub transferred: Option<u64>,
}

/// What one stdout line of `gfal-copy -v` is.
#[derive(Debug, PartialEq)]
pub enum CopyLine {
    /// Progress (not logged).
    Monitor,
    /// Anything else: logged.
    Other,
}

impl CopyWatch {
    /// Take in one stdout line.
    pub fn line(&mut self, line: &str) -> CopyLine {
        let line = line.trim_end();
        if let Some(rest) = line.strip_prefix("monitor: ") {
            // `<src> <dst> <avg> <inst> <bytes> <secs>`: the numbers are the last fields.
            let fields: Vec<&str> = rest.split_whitespace().collect();
            if fields.len() >= 4 {
                if let Ok(bytes) = fields[fields.len() - 2].parse() {
                    self.transferred = Some(bytes);
                }
            }
            return CopyLine::Monitor;
        }
        if let Some(rest) = line.strip_prefix("Copying ") {
            if let Some((n, _)) = rest.split_once(" bytes ") {
                self.copying = Some(n.trim().parse().unwrap_or(0));
            }
        } else if let Some(rest) = line.strip_prefix("event: [") {
            if let Some((ms, rest)) = rest.split_once(']') {
                let ms = ms.trim().parse().ok();
                let stage = rest.split('\t').nth(1).map(str::trim);
                match stage {
                    Some("TRANSFER:ENTER") => self.transfer_enter = self.transfer_enter.or(ms),
                    Some("TRANSFER:EXIT") => self.transfer_exit = ms,
                    _ => {}
                }
            }
        }
        CopyLine::Other
    }

    /// Seconds between `TRANSFER:ENTER` and `TRANSFER:EXIT`.
    pub fn duration(&self) -> Option<f64> {
        let (enter, exit) = (self.transfer_enter?, self.transfer_exit?);
        (exit >= enter).then(|| (exit - enter) as f64 / 1000.0)
    }
}

fn is_s3(url: &str) -> bool {
    let scheme = url.split_once("://").map_or("", |(s, _)| s);
    scheme.eq_ignore_ascii_case("s3") || scheme.eq_ignore_ascii_case("s3s")
}

/// The `gfal-copy` arguments for `request` (without the program).
pub fn copy_args(request: &CheckedCopy) -> Vec<String> {
    let params = &request.params;
    let timeout = params.timeout.max(1).to_string();
    let mut args: Vec<String> = vec!["-v".into(), "-t".into(), timeout.clone()];
    args.extend(["-T".into(), timeout]);
    if params.nostreams > 0 {
        args.extend(["-n".into(), params.nostreams.to_string()]);
    }
    if request.overwrite {
        args.push("-f".into());
    }
    if request.strict {
        args.push("--just-copy".into());
    } else {
        args.push("-p".into());
        if request.checksum_mode != ChecksumMode::None {
            let mut checksum = request.checksum.algorithm.clone();
            if let Some(value) = &request.checksum.value {
                checksum.push(':');
                checksum.push_str(value);
            }
            let mode = match request.checksum_mode {
                ChecksumMode::Source => "source",
                ChecksumMode::Target => "target",
                _ => "both",
            };
            args.extend(["-K".into(), checksum, "--checksum-mode".into(), mode.into()]);
        }
    }
    args.extend(copy_mode_args(params));
    if is_s3(&request.source) && is_s3(&request.destination) {
        // As the reference: no S3 server-side copy.
        args.extend(["-D".into(), "HTTP PLUGIN:ENABLE_REMOTE_COPY=false".into()]);
    }
    if !request.job_id.is_empty() {
        // Client information for the storages' logs, as the reference sets it.
        args.extend([
            "-C".into(),
            format!("job-id={}", request.job_id),
            "-C".into(),
            format!("file-id={}", request.file_id),
        ]);
    }
    args.extend([
        "--".into(),
        request.source.clone(),
        request.destination.clone(),
    ]);
    args
}

/// The HTTP copy mode (§4.1): gfal2 tries pull, push, streamed in that order by default;
/// `--copy-mode` pins one mode without fallback.
fn copy_mode_args(params: &CopyParams) -> Vec<String> {
    let option = |o: &str| vec!["-D".to_string(), format!("HTTP PLUGIN:{o}")];
    let mut args = match (params.copy_mode, params.disable_fallback) {
        (CopyMode::Pull, false) => Vec::new(),
        (CopyMode::Push, false) => option("DEFAULT_COPY_MODE=3rd push"),
        (mode, _) => vec!["--copy-mode".to_string(), mode.as_str().to_string()],
    };
    if params.no_streaming && !(params.disable_fallback && params.copy_mode != CopyMode::Streamed) {
        args.extend(option("ENABLE_STREAM_COPY=false"));
    }
    args
}

/// The directory holding `url` (`None` at the root): `root://h//a/b` → `root://h//a`.
pub fn parent_url(url: &str) -> Option<String> {
    let authority = url.find("://")? + 3;
    let path_start = authority + url[authority..].find('/')?;
    let path = url[path_start..].split(['?', '#']).next().unwrap_or("");
    let trimmed = path.trim_end_matches('/');
    let cut = trimmed.rfind('/')?;
    let parent = &trimmed[..cut];
    if parent.trim_matches('/').is_empty() {
        return None;
    }
    Some(format!("{}{parent}", &url[..path_start]))
}

/// Size and kind from `gfal-stat` output (`  Size: 5000000\tregular file`).
pub fn parse_stat(stdout: &str) -> Option<(u64, bool)> {
    stdout.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("Size:")?;
        let mut fields = rest.split_whitespace();
        let size = fields.next()?.parse().ok()?;
        let kind: Vec<&str> = fields.collect();
        Some((size, kind.join(" ") == "directory"))
    })
}

/// A tool in its own process group. Dropped before it was reaped, it kills the group.
struct Child {
    child: tokio::process::Child,
    group: Option<i32>,
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Some(group) = self.group.take() {
            // SAFETY: killpg has no memory-safety preconditions. The group is our child's own
            // (process_group(0)); its leader has not been reaped, so the id is still its.
            unsafe {
                libc::killpg(group, libc::SIGKILL);
            }
        }
    }
}

/// Read `reader` to its end, keeping the last `limit` bytes.
async fn read_tail(mut reader: impl AsyncRead + Unpin, limit: usize) -> String {
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = reader.read(&mut buf).await {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > limit {
            kept.drain(..kept.len() - limit);
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// Feed `reader`'s lines to `on_line` (cut at [`LINE_LIMIT`]).
async fn read_lines(mut reader: impl AsyncRead + Unpin, on_line: &mut (dyn FnMut(&str) + Send)) {
    let mut line: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = reader.read(&mut buf).await {
        if n == 0 {
            break;
        }
        for &b in &buf[..n] {
            if b == b'\n' {
                on_line(&String::from_utf8_lossy(&line));
                line.clear();
            } else if line.len() < LINE_LIMIT {
                line.push(b);
            }
        }
    }
    if !line.is_empty() {
        on_line(&String::from_utf8_lossy(&line));
    }
}

impl Gfal2Session {
    /// The environment of a tool: the backend's, plus the user's proxy (written now if not
    /// yet).
    fn env(&mut self) -> OpResult<Vec<(&'static str, OsString)>> {
        let mut env = self.inner.env.clone();
        if self.proxy.is_none() {
            if let Some(credential) = &self.credential {
                // As for a tool that cannot start: this service's problem, retryable.
                let proxy =
                    ProxyFile::write(&self.inner.proxy_dir, credential.pem()).map_err(|e| {
                        OpError::new(
                            libc::EAGAIN,
                            format!(
                                "Cannot write the delegated proxy for gfal2: {}",
                                crate::engine::agent::errno_name(
                                    e.raw_os_error().unwrap_or(libc::EIO)
                                )
                            ),
                        )
                    })?;
                self.proxy = Some(proxy);
            }
        }
        if let Some(proxy) = &self.proxy {
            env.push(("X509_USER_PROXY", proxy.path().into()));
        }
        Ok(env)
    }

    /// Run `tool` with `args`; stdout lines go to `on_line`. `limit` bounds the whole run.
    async fn run(
        &mut self,
        tool: &str,
        args: &[String],
        limit: Option<Duration>,
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> OpResult<Ended> {
        let program = self.inner.installation.tool(tool);
        self.run_with_stdin(program, tool, args, String::new(), limit, on_line)
            .await
    }

    /// The Python that imports gfal2.
    pub(super) fn python(&self) -> PathBuf {
        self.inner.installation.python.clone()
    }

    /// Run `program` (named `tool` in messages) as [`Self::run`] does, with `input` on its
    /// stdin (nothing when empty).
    pub(super) async fn run_with_stdin(
        &mut self,
        program: PathBuf,
        tool: &str,
        args: &[String],
        input: String,
        limit: Option<Duration>,
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> OpResult<Ended> {
        let mut env = self.env()?;
        // With tokens: the wrapper runs the tool, the tokens in a file (read at every run,
        // so a refreshed token is the one used).
        let bearer = match self.tokens.as_deref().and_then(bearer_lines) {
            Some(lines) => Some(
                BearerFile::write(&self.inner.proxy_dir, &lines).map_err(|e| {
                    OpError::new(
                        libc::EAGAIN,
                        format!(
                            "Cannot write the bearer tokens for gfal2: {}",
                            crate::engine::agent::errno_name(e.raw_os_error().unwrap_or(libc::EIO))
                        ),
                    )
                })?,
            ),
            None => None,
        };
        let mut command = match &bearer {
            Some(file) => {
                env.push(("FTSD_BEARER_FILE", file.path.clone().into()));
                let mut command = tokio::process::Command::new(&self.inner.installation.python);
                command
                    .args(["-u", "-Wignore"])
                    .arg(&self.inner.wrapper)
                    .arg(&program);
                command
            }
            None => tokio::process::Command::new(&program),
        };
        command
            .args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(if input.is_empty() {
                Stdio::null()
            } else {
                Stdio::piped()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        // A tool that cannot start is this service's problem, not the storage's: EAGAIN (and
        // no "No such file or directory" in the text) keeps the transfer retryable.
        let spawned = command.spawn().map_err(|e| {
            OpError::new(
                libc::EAGAIN,
                format!(
                    "Cannot run {}: {}",
                    program.display(),
                    crate::engine::agent::errno_name(e.raw_os_error().unwrap_or(libc::EIO))
                ),
            )
        })?;
        let mut child = Child {
            child: spawned,
            group: None,
        };
        child.group = child.child.id().and_then(|id| i32::try_from(id).ok());
        if let Some(mut stdin) = child.child.stdin.take() {
            use tokio::io::AsyncWriteExt;
            // A helper that exits without reading fails on its own; its status tells.
            let _ = stdin.write_all(input.as_bytes()).await;
        }
        let stdout = child.child.stdout.take();
        let stderr = child.child.stderr.take();
        let run = async {
            let out = async {
                if let Some(stdout) = stdout {
                    read_lines(stdout, on_line).await;
                }
            };
            let err = async {
                match stderr {
                    Some(stderr) => read_tail(stderr, STDERR_LIMIT).await,
                    None => String::new(),
                }
            };
            let (_, err, status) = tokio::join!(out, err, child.child.wait());
            (err, status)
        };
        let (stderr, status) = match limit {
            Some(limit) => tokio::time::timeout(limit, run).await.map_err(|_| {
                OpError::new(
                    libc::ETIMEDOUT,
                    format!("{tool} did not finish within {} s", limit.as_secs()),
                )
            })?,
            None => run.await,
        };
        let status =
            status.map_err(|e| OpError::from_io(&e, &format!("Cannot wait for {tool}")))?;
        // Reaped: the group id may be reused from now on.
        child.group = None;
        drop(bearer);
        Ok(Ended::from_status(status, stderr))
    }

    /// Run a metadata tool; its stdout is returned.
    async fn metadata(&mut self, tool: &str, args: &[String], timeout: u64) -> OpResult<String> {
        let mut full = vec!["-t".to_string(), timeout.to_string()];
        full.extend_from_slice(args);
        let mut stdout = String::new();
        let ended = self
            .run(
                tool,
                &full,
                Some(Duration::from_secs(timeout).saturating_add(KILL_GRACE)),
                &mut |line| {
                    if stdout.len() < STDERR_LIMIT {
                        stdout.push_str(line);
                        stdout.push('\n');
                    }
                },
            )
            .await?;
        // `gfal-rm` of a missing file says so on stdout, with no error line.
        let missing = tool == "gfal-rm" && stdout.contains("\tMISSING");
        if ended.success() || missing {
            Ok(stdout)
        } else {
            Err(tool_error(tool, &ended))
        }
    }

    /// `gfal-copy` for `request`, reporting progress; the failure already classified.
    async fn gfal_copy(
        &mut self,
        request: &CheckedCopy,
        progress: &Progress,
    ) -> Result<CheckedReport, TransferFailure> {
        let args = copy_args(request);
        self.log.info(format_args!(
            "gfal2: gfal-copy {}",
            sanitize(&args.join(" "))
        ));
        let log = self.log.clone();
        let mut watch = CopyWatch::default();
        let mut logged = 0;
        let ended = self
            .run("gfal-copy", &args, None, &mut |line| {
                if watch.line(line) == CopyLine::Monitor {
                    if let Some(bytes) = watch.transferred {
                        progress.transferred.store(bytes, Ordering::Relaxed);
                    }
                    return;
                }
                if watch.copying.is_some() {
                    progress.copying.store(true, Ordering::Relaxed);
                }
                if logged < LOGGED_LINES && !line.trim().is_empty() {
                    logged += 1;
                    log.info(format_args!("gfal2: {}", sanitize(line.trim_end())));
                }
            })
            .await
            .map_err(|e| {
                TransferFailure::new(Scope::Transfer, Phase::Transfer, e.errno, e.message)
            })?;
        for line in ended
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .take(20)
        {
            self.log
                .warn(format_args!("gfal2: {}", sanitize(line.trim_end())));
        }
        if !ended.success() {
            return Err(copy_failure(&ended, &watch, &request.checksum));
        }
        // The tool says the whole file is there.
        let bytes = watch.transferred.unwrap_or(0).max(request.params.filesize);
        progress.transferred.store(bytes, Ordering::Relaxed);
        Ok(CheckedReport {
            copy_duration: watch.duration(),
        })
    }
}

impl Session for Gfal2Session {
    fn stage<'a>(
        &'a mut self,
        urls: &'a [String],
        pin_lifetime: i64,
        timeout: u64,
    ) -> BoxFuture<'a, OpResult<super::StageReply>> {
        Box::pin(super::gfal2_tape::stage(self, urls, pin_lifetime, timeout))
    }

    fn stage_poll<'a>(
        &'a mut self,
        token: &'a str,
        urls: &'a [String],
    ) -> BoxFuture<'a, OpResult<Vec<super::TapeStatus>>> {
        Box::pin(super::gfal2_tape::poll(self, token, urls))
    }

    fn stage_abort<'a>(
        &'a mut self,
        token: &'a str,
        urls: &'a [String],
    ) -> BoxFuture<'a, OpResult<()>> {
        Box::pin(super::gfal2_tape::abort(self, token, urls))
    }

    fn release(&mut self, url: &str, token: &str) -> BoxFuture<'_, OpResult<()>> {
        let (url, token) = (url.to_string(), token.to_string());
        Box::pin(async move { super::gfal2_tape::release(self, &token, &url).await })
    }

    fn archive_poll<'a>(
        &'a mut self,
        urls: &'a [String],
    ) -> BoxFuture<'a, OpResult<Vec<super::TapeStatus>>> {
        Box::pin(super::gfal2_tape::archive_poll(self, urls))
    }

    fn stat(&mut self, url: &str) -> BoxFuture<'_, OpResult<u64>> {
        let url = url.to_string();
        Box::pin(async move {
            let out = self
                .metadata("gfal-stat", &["--".into(), url.clone()], METADATA_TIMEOUT)
                .await?;
            match parse_stat(&out) {
                Some((_, true)) => Err(OpError::new(
                    libc::EISDIR,
                    format!("{}: {}", redact_queries(&url), strerror(libc::EISDIR)),
                )),
                Some((size, false)) => Ok(size),
                None => Err(OpError::new(
                    libc::EIO,
                    format!("gfal-stat printed no size for {}", redact_queries(&url)),
                )),
            }
        })
    }

    fn checksum(&mut self, url: &str, algorithm: &str) -> BoxFuture<'_, OpResult<String>> {
        let args = vec!["--".into(), url.to_string(), algorithm.to_ascii_uppercase()];
        Box::pin(async move {
            let out = self.metadata("gfal-sum", &args, CHECKSUM_TIMEOUT).await?;
            // `<url> <value>`
            out.lines()
                .rev()
                .find_map(|l| l.split_whitespace().last())
                .map(str::to_ascii_lowercase)
                .ok_or_else(|| OpError::new(libc::EIO, "gfal-sum printed no checksum"))
        })
    }

    fn locality(&mut self, url: &str) -> BoxFuture<'_, OpResult<String>> {
        // Not among the tools required at start: without it there is no destination report.
        let args = vec!["--".into(), url.to_string(), "user.status".into()];
        Box::pin(async move {
            let out = self.metadata("gfal-xattr", &args, METADATA_TIMEOUT).await?;
            Ok(out
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or_default()
                .to_string())
        })
    }

    fn exists(&mut self, url: &str) -> BoxFuture<'_, OpResult<bool>> {
        let args = vec!["--".into(), url.to_string()];
        Box::pin(async move {
            match self.metadata("gfal-stat", &args, METADATA_TIMEOUT).await {
                Ok(_) => Ok(true),
                Err(e) if e.errno == libc::ENOENT => Ok(false),
                Err(e) => Err(e),
            }
        })
    }

    fn delete(&mut self, url: &str) -> BoxFuture<'_, OpResult<()>> {
        let args = vec!["--".into(), url.to_string()];
        Box::pin(async move {
            let out = self.metadata("gfal-rm", &args, METADATA_TIMEOUT).await?;
            if out.contains("\tMISSING") {
                return Err(OpError::from_errno(libc::ENOENT));
            }
            Ok(())
        })
    }

    fn make_parent(&mut self, url: &str) -> BoxFuture<'_, OpResult<()>> {
        let parent = parent_url(url);
        Box::pin(async move {
            let Some(parent) = parent else { return Ok(()) };
            self.metadata(
                "gfal-mkdir",
                &["-p".into(), "--".into(), parent],
                METADATA_TIMEOUT,
            )
            .await
            .map(|_| ())
        })
    }

    fn copy<'a>(
        &'a mut self,
        source: &'a str,
        destination: &'a str,
        params: &'a CopyParams,
        progress: &'a Progress,
    ) -> BoxFuture<'a, OpResult<()>> {
        // A plain copy: the agent did the checks.
        let request = CheckedCopy {
            job_id: String::new(),
            file_id: 0,
            source: source.to_string(),
            destination: destination.to_string(),
            params: params.clone(),
            checksum_mode: ChecksumMode::None,
            checksum: UserChecksum::parse(""),
            overwrite: false,
            strict: true,
        };
        Box::pin(async move {
            self.gfal_copy(&request, progress)
                .await
                .map(|_| ())
                .map_err(|f| OpError::new(f.errno, f.message))
        })
    }

    fn copy_checked<'a>(
        &'a mut self,
        request: &'a CheckedCopy,
        progress: &'a Progress,
    ) -> Option<BoxFuture<'a, Result<CheckedReport, TransferFailure>>> {
        Some(Box::pin(self.gfal_copy(request, progress)))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    // ---- what gfal-copy printed against XRootD 5, Apache-less XrdHttp and moto (gfal2 2.21.3,
    // gfal2-util 1.8.0), captured while writing this backend ----

    const VERSION: &str = "gfal2-util version 1.8.0 (gfal2 2.21.3)\n\tdcap-2.21.3\n\tfile-2.21.3\n\
                           \tgridftp-2.21.3\n\thttp-2.21.3\n\tsftp-2.21.3\n\tsrm-2.21.3\n\
                           \txrootd-2.21.3\n";

    fn failed(code: i32, stderr: &str) -> Ended {
        Ended {
            code: Some(code),
            signal: None,
            stderr: stderr.to_string(),
        }
    }

    fn adler() -> UserChecksum {
        UserChecksum::parse("ADLER32")
    }

    /// The watch after a run whose stdout was `lines`.
    fn watched(lines: &[&str]) -> CopyWatch {
        let mut watch = CopyWatch::default();
        for line in lines {
            watch.line(line);
        }
        watch
    }

    const COPYING: &str = "Copying 5000000 bytes root://localhost:21094//d1/src.bin => root://localhost:21095//d2/x.bin";
    const ENTER: &str = "event: [1795954049249] BOTH   xroot\tTRANSFER:ENTER\troot://localhost:21094///d1/src.bin?xrd.gsiusrpxy=/tmp/p&xrdcl.intent=tpc => root://localhost:21095///d2/x.bin?xrd.gsiusrpxy=/tmp/p&xrdcl.intent=tpc";
    const EXIT: &str =
        "event: [1795954053402] BOTH   xroot\tTRANSFER:EXIT\tJob finished, [SUCCESS] ";

    #[test]
    fn version_and_plugins() {
        let (version, plugins) = parse_version(VERSION).unwrap();
        assert_eq!(version, "gfal2-util version 1.8.0 (gfal2 2.21.3)");
        assert_eq!(
            plugins,
            ["dcap", "file", "gridftp", "http", "sftp", "srm", "xrootd"]
        );
        assert_eq!(parse_version("Traceback (most recent call last):\n"), None);
        let (schemes, unknown) = schemes_of(&plugins);
        for s in [
            "root", "xroot", "gsiftp", "srm", "s3", "s3s", "davs", "dcap", "sftp",
        ] {
            assert!(schemes.contains(&s), "{s}: {schemes:?}");
        }
        assert!(!schemes.contains(&"file"), "file:// stays native");
        assert!(unknown.is_empty());
        let (schemes, unknown) = schemes_of(&[
            "xrootd".into(),
            "mock".into(),
            "lfc".into(),
            "xrootd".into(),
        ]);
        assert_eq!(schemes, ["root", "roots", "xroot", "xroots"]);
        assert_eq!(unknown, ["lfc"]);
    }

    #[test]
    fn error_lines_of_the_tools() {
        assert_eq!(
            error_line(
                "gfal-stat",
                "gfal-stat error: 2 (No such file or directory) - Failed to stat file (No such file or directory)\n"
            ),
            Some((
                2,
                "Failed to stat file (No such file or directory)".to_string()
            ))
        );
        let sum = "gfal-sum error: 2 (No such file or directory) - Could not get the checksum (No such file or directory)";
        assert_eq!(tool_error("gfal-sum", &failed(2, sum)).errno, libc::ENOENT);
        // Not this tool's line.
        assert_eq!(error_line("gfal-copy", sum), None);
        // gfal-copy's own timeout (-t): no error line, exit status 110.
        let timeout = tool_error(
            "gfal-copy",
            &failed(110, "Command timed out after 20 seconds!\n"),
        );
        assert_eq!(timeout.errno, libc::ETIMEDOUT);
        assert_eq!(
            timeout.message,
            "gfal-copy: Command timed out after 20 seconds!"
        );
        // A Python exception: exit status 1 is no errno.
        let crash = tool_error(
            "gfal-copy",
            &failed(
                1,
                "Traceback (most recent call last):\n  ...\nImportError: No module named gfal2\n",
            ),
        );
        assert_eq!(crash.errno, libc::EIO);
        assert_eq!(
            crash.message,
            "gfal-copy failed with exit status 1: ImportError: No module named gfal2"
        );
        let killed = Ended {
            code: None,
            signal: Some(9),
            stderr: String::new(),
        };
        assert_eq!(tool_error("gfal-copy", &killed).errno, libc::EINTR);
    }

    #[test]
    fn copy_failures_get_scope_phase_errno() {
        struct Case {
            stderr: &'static str,
            stdout: &'static [&'static str],
            scope: Scope,
            phase: Phase,
            errno: i32,
            message: &'static str,
            recoverable: bool,
        }
        let cases = [
            // gfal-copy's own checks (Python), before anything is written.
            Case {
                stderr: "gfal-copy error: 2 (No such file or directory) - Could not stat the source: Failed to stat file (No such file or directory)\n",
                stdout: &[],
                scope: Scope::Source,
                phase: Phase::TransferPreparation,
                errno: libc::ENOENT,
                message: "Could not stat the source: Failed to stat file (No such file or directory)",
                recoverable: false,
            },
            Case {
                stderr: "gfal-copy error: 2 (No such file or directory) - Could not stat the source: Result HTTP 404 : File not found  after 1 attempts\n",
                stdout: &[],
                scope: Scope::Source,
                phase: Phase::TransferPreparation,
                errno: libc::ENOENT,
                message: "Could not stat the source: Result HTTP 404 : File not found  after 1 attempts",
                recoverable: false,
            },
            Case {
                stderr: "gfal-copy error: 17 (File exists) - Destination root://localhost:21095//d2/sub/dst.bin exists and overwrite is not set\n",
                stdout: &[],
                scope: Scope::Destination,
                phase: Phase::TransferPreparation,
                errno: libc::EEXIST,
                message: "Destination file exists and overwrite is not enabled",
                recoverable: false,
            },
            // gfal2's http plugin names the side.
            Case {
                stderr: "gfal-copy error: 5 (Input/output error) - SOURCE CHECKSUM MISMATCH Source and user-defined ADLER32 do not match (01e3f159 != deadbeef)\n",
                stdout: &[
                    COPYING,
                    "event: [1795954058266] SOURCE http_plugin\tCHECKSUM:ENTER\t",
                ],
                scope: Scope::Source,
                phase: Phase::TransferPreparation,
                errno: libc::EIO,
                message: "SOURCE CHECKSUM MISMATCH Source and user-defined ADLER32 do not match (01e3f159 != deadbeef)",
                recoverable: false,
            },
            Case {
                stderr: "gfal-copy error: 5 (Input/output error) - DESTINATION CHECKSUM MISMATCH User-defined and destination ADLER32 do not match (deadbeef != 01e3f159)\n",
                stdout: &[COPYING, ENTER, EXIT],
                scope: Scope::Destination,
                phase: Phase::TransferFinalization,
                errno: libc::EIO,
                message: "DESTINATION CHECKSUM MISMATCH User-defined and destination ADLER32 do not match (deadbeef != 01e3f159)",
                recoverable: false,
            },
            Case {
                stderr: "gfal-copy error: 13 (Permission denied) - TRANSFER ERROR: Copy failed (3rd pull). Last attempt: copy HTTP 401 : Authentication Error \n",
                stdout: &[COPYING, ENTER],
                scope: Scope::Transfer,
                phase: Phase::Transfer,
                errno: libc::EACCES,
                message: "TRANSFER ERROR: Copy failed (3rd pull). Last attempt: copy HTTP 401 : Authentication Error",
                recoverable: false,
            },
            // gfal2's core (streamed copies, S3): its own words for the side.
            Case {
                stderr: "gfal-copy error: 38 (Function not implemented) - Could not get the destination checksum: checksum calculation for ADLER32 not supported for s3://127.0.0.1:29000/bkt/a.bin\n",
                stdout: &[COPYING, ENTER, EXIT],
                scope: Scope::Destination,
                phase: Phase::TransferFinalization,
                errno: libc::ENOSYS,
                message: "Could not get the destination checksum: checksum calculation for ADLER32 not supported for s3://127.0.0.1:29000/bkt/a.bin",
                recoverable: true,
            },
            // The xrootd plugin names no side; XRootD says `(destination)`.
            Case {
                stderr: "gfal-copy error: 13 (Permission denied) - Error on XrdCl::CopyProcess::Run(): [ERROR] Server responded with an error: [3010] Unable to create /readonly/x.bin; permission denied\\x00 (destination)\n\n",
                stdout: &[COPYING, ENTER],
                scope: Scope::Transfer,
                phase: Phase::Transfer,
                errno: libc::EACCES,
                message: "Error on XrdCl::CopyProcess::Run(): [ERROR] Server responded with an error: [3010] Unable to create /readonly/x.bin; permission denied (destination)",
                recoverable: false,
            },
            Case {
                stderr: "gfal-copy error: 84 (Invalid or incomplete multibyte or wide character) - Error on XrdCl::CopyProcess::Run(): [ERROR] CheckSum error\n",
                stdout: &[COPYING, ENTER],
                scope: Scope::Destination,
                phase: Phase::TransferFinalization,
                errno: libc::EIO,
                message: "DESTINATION CHECKSUM MISMATCH (ADLER32) Error on XrdCl::CopyProcess::Run(): [ERROR] CheckSum error",
                recoverable: false,
            },
            // --just-copy (strict): the storage's own refusal.
            Case {
                stderr: "gfal-copy error: 17 (File exists) - Error on XrdCl::CopyProcess::Run(): [ERROR] Server responded with an error: [3018] Unable to create /d2/c1.bin; file exists\\x00 (destination)\n",
                stdout: &[
                    "Copying 0 bytes root://localhost:21094//d1/src.bin => root://localhost:21095//d2/c1.bin",
                ],
                scope: Scope::Transfer,
                phase: Phase::Transfer,
                errno: libc::EEXIST,
                message: "Error on XrdCl::CopyProcess::Run(): [ERROR] Server responded with an error: [3018] Unable to create /d2/c1.bin; file exists (destination)",
                recoverable: false,
            },
            Case {
                stderr: "Command timed out after 20 seconds!\n",
                stdout: &[COPYING],
                scope: Scope::Transfer,
                phase: Phase::Transfer,
                errno: libc::ETIMEDOUT,
                message: "gfal-copy: Command timed out after 20 seconds!",
                recoverable: true,
            },
            Case {
                stderr: "gfal-copy error: 5 (Input/output error) - Result Invalid server response, not a S3 listing after 1 attempts\n",
                stdout: &[COPYING],
                scope: Scope::Transfer,
                phase: Phase::Transfer,
                errno: libc::EIO,
                message: "Result Invalid server response, not a S3 listing after 1 attempts",
                recoverable: true,
            },
        ];
        for case in cases {
            let code = error_line("gfal-copy", case.stderr).map_or(110, |(e, _)| e);
            let f = copy_failure(&failed(code, case.stderr), &watched(case.stdout), &adler());
            assert_eq!(
                (f.scope, f.phase, f.errno, f.message.as_str()),
                (case.scope, case.phase, case.errno, case.message),
                "{}",
                case.stderr
            );
            assert_eq!(f.recoverable(), case.recoverable, "{}", f.reason());
        }
    }

    #[test]
    fn the_watch_reads_progress_and_phases() {
        let mut watch = CopyWatch::default();
        assert_eq!(watch.line(COPYING), CopyLine::Other);
        assert_eq!(watch.copying, Some(5_000_000));
        watch.line("event: [1795954049249] BOTH   GFAL2:CORE:COPY\tLIST:ENTER\t");
        watch.line(ENTER);
        watch.line("event: [1795954049249] BOTH   xroot\tTRANSFER:TYPE\t3rd pull");
        assert_eq!(
            watch.line("monitor: root://localhost:21094///d1/big.bin?xrd.gsiusrpxy=/tmp/p&xrdcl.intent=tpc root://localhost:21095///d2/big-v.bin?xrd.gsiusrpxy=/tmp/p&xrdcl.intent=tpc 66666666 66666666 200000000 3"),
            CopyLine::Monitor
        );
        assert_eq!(watch.transferred, Some(200_000_000));
        assert_eq!(watch.duration(), None);
        watch.line(EXIT);
        assert_eq!(watch.duration(), Some(4.153));
        assert_eq!(
            watch.line("WARNING Copy failed with mode 3rd pull: copy HTTP 400 : Server Error "),
            CopyLine::Other
        );
    }

    fn request(source: &str, destination: &str) -> CheckedCopy {
        CheckedCopy {
            job_id: "j1".into(),
            file_id: 7,
            source: source.into(),
            destination: destination.into(),
            params: CopyParams {
                filesize: 10,
                nostreams: 0,
                timeout: 600,
                ..CopyParams::default()
            },
            checksum_mode: ChecksumMode::None,
            checksum: UserChecksum::parse("ADLER32"),
            overwrite: false,
            strict: false,
        }
    }

    #[test]
    fn gfal_copy_arguments() {
        let (a, b) = ("root://a:1//f", "root://b:2//d/f");
        let plain = copy_args(&request(a, b));
        assert_eq!(
            plain.join(" "),
            "-v -t 600 -T 600 -p -C job-id=j1 -C file-id=7 -- root://a:1//f root://b:2//d/f"
        );

        let mut r = request(a, b);
        r.overwrite = true;
        r.params.nostreams = 4;
        r.checksum_mode = ChecksumMode::Both;
        r.checksum = UserChecksum::parse("adler32:1a2b");
        assert_eq!(
            copy_args(&r).join(" "),
            "-v -t 600 -T 600 -n 4 -f -p -K ADLER32:00001a2b --checksum-mode both \
             -C job-id=j1 -C file-id=7 -- root://a:1//f root://b:2//d/f"
        );
        r.checksum_mode = ChecksumMode::Target;
        r.checksum = UserChecksum::parse("MD5");
        assert!(
            copy_args(&r)
                .join(" ")
                .contains("-K MD5 --checksum-mode target")
        );
        r.checksum_mode = ChecksumMode::Source;
        assert!(copy_args(&r).join(" ").contains("--checksum-mode source"));

        // Strict: copy only, nothing else checked or created.
        let mut r = request(a, b);
        r.strict = true;
        r.checksum_mode = ChecksumMode::Both;
        let strict = copy_args(&r).join(" ");
        assert!(strict.contains("--just-copy"), "{strict}");
        assert!(
            !strict.contains("-K") && !strict.contains(" -p"),
            "{strict}"
        );

        // S3 to S3: no server-side copy (the reference's setting).
        let s3 = copy_args(&request("s3://h/b/k", "s3s://h/b/k2")).join(" ");
        assert!(
            s3.contains("-D HTTP PLUGIN:ENABLE_REMOTE_COPY=false"),
            "{s3}"
        );
        let mixed = copy_args(&request("root://h//k", "s3://h/b/k2")).join(" ");
        assert!(!mixed.contains("ENABLE_REMOTE_COPY"), "{mixed}");

        // The timeout is at least one second (gfal-copy takes 0 as "none").
        let mut r = request(a, b);
        r.params.timeout = 0;
        assert!(copy_args(&r).join(" ").starts_with("-v -t 1 -T 1 "));
    }

    #[test]
    fn copy_modes_as_gfal_copy_takes_them() {
        let params = |copy_mode, disable_fallback, no_streaming| CopyParams {
            copy_mode,
            disable_fallback,
            no_streaming,
            ..CopyParams::default()
        };
        let args = |p| copy_mode_args(&p).join(" ");
        use CopyMode::*;
        assert_eq!(args(params(Pull, false, false)), "");
        assert_eq!(args(params(Pull, true, false)), "--copy-mode pull");
        assert_eq!(args(params(Push, true, false)), "--copy-mode push");
        assert_eq!(
            args(params(Push, false, false)),
            "-D HTTP PLUGIN:DEFAULT_COPY_MODE=3rd push"
        );
        assert_eq!(args(params(Streamed, true, false)), "--copy-mode streamed");
        assert_eq!(
            args(params(Pull, false, true)),
            "-D HTTP PLUGIN:ENABLE_STREAM_COPY=false"
        );
        // Pinned to a third-party mode: streaming is off anyway.
        assert_eq!(args(params(Pull, true, true)), "--copy-mode pull");
        assert_eq!(
            args(params(Streamed, true, true)),
            "--copy-mode streamed -D HTTP PLUGIN:ENABLE_STREAM_COPY=false"
        );
    }

    #[test]
    fn parents_and_stat_output() {
        assert_eq!(
            parent_url("root://h:1//a/b/c.bin").as_deref(),
            Some("root://h:1//a/b")
        );
        assert_eq!(
            parent_url("davs://h/a/b?x=1/2").as_deref(),
            Some("davs://h/a")
        );
        assert_eq!(parent_url("root://h:1//c.bin"), None);
        assert_eq!(parent_url("s3://h/bucket"), None);
        let file = "  File: 'root://localhost:21094//d1/src.bin'\n  Size: 5000000\tregular file\n\
                    Access: (0600/-rw-------)\tUid: 0\tGid: 0\t\n";
        assert_eq!(parse_stat(file), Some((5_000_000, false)));
        let dir = "  File: 'root://localhost:21094//d1/'\n  Size: 4096\tdirectory\n";
        assert_eq!(parse_stat(dir), Some((4096, true)));
        assert_eq!(parse_stat("nothing\n"), None);
    }

    #[test]
    fn log_lines_carry_no_tokens() {
        assert_eq!(
            sanitize(
                "event: [1] BOTH   xroot\tTRANSFER:ENTER\troot://h//f?xrd.gsiusrpxy=/run/p => root://g//f"
            ),
            "event: [1] BOTH   xroot\tTRANSFER:ENTER\troot://h//f?<redacted> => root://g//f"
        );
        assert_eq!(
            sanitize("> Authorization: Bearer MDAxY2xvY2F0aW9u"),
            "> Authorization: Bearer <redacted>"
        );
        assert!(sanitize(&"x".repeat(10_000)).chars().count() <= LINE_LIMIT + 1);
    }

    #[test]
    fn proxy_files_are_private_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let proxies = dir.path().join("run/transfer-proxies");
        private_dir(&proxies).unwrap();
        std::fs::write(proxies.join("left-over"), "old").unwrap();
        private_dir(&proxies).unwrap();
        assert_eq!(std::fs::read_dir(&proxies).unwrap().count(), 0);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&proxies), 0o700);
        let a = ProxyFile::write(&proxies, "PEM A").unwrap();
        let b = ProxyFile::write(&proxies, "PEM B").unwrap();
        assert_ne!(a.path(), b.path());
        assert_eq!(mode(a.path()), 0o600);
        assert_eq!(std::fs::read_to_string(a.path()).unwrap(), "PEM A");
        let path = a.path().to_path_buf();
        drop(a);
        assert!(!path.exists());
        assert!(b.path().exists());
    }

    #[test]
    fn options_override_the_system_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let system = dir.path().join("gfal2.d");
        std::fs::create_dir(&system).unwrap();
        std::fs::write(system.join("b.conf"), "[HTTP PLUGIN]\nKEEP_ALIVE=true\n").unwrap();
        std::fs::write(system.join("a.conf"), "[CORE]\nNAMESPACE_TIMEOUT=300\n").unwrap();
        std::fs::write(system.join("README"), "not a conf").unwrap();
        let config = dir.path().join("run/gfal2-config");
        let options = vec![(
            "S3:127.0.0.1".to_string(),
            "SECRET_KEY".to_string(),
            "s3cr3t".to_string(),
        )];
        write_config(&config, &system, &options).unwrap();
        let file = config.join("gfal2.conf");
        let text = std::fs::read_to_string(&file).unwrap();
        let at = |s: &str| text.find(s).unwrap_or_else(|| panic!("{s} in {text}"));
        assert!(at("[CORE]") < at("[HTTP PLUGIN]"));
        assert!(at("[HTTP PLUGIN]") < at("[S3:127.0.0.1]\nSECRET_KEY=s3cr3t\n"));
        assert!(!text.contains("not a conf"));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&config), 0o700);
        // Rewritten at the next start.
        write_config(&config, &system, &[]).unwrap();
        assert!(!std::fs::read_to_string(&file).unwrap().contains("s3cr3t"));
    }

    // ---- the processes, with fake gfal tools (shell scripts) ----

    /// A directory of fake gfal tools: `gfal-copy` runs `copy_body` (or prints `version` for
    /// `--version`), the siblings exit 0, `python3` is a stand-in the fake never runs.
    fn fake_tools(version: &str, copy_body: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let script = |name: &str, body: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        let version = version.replace('\t', "\\t").replace('\n', "\\n");
        script(
            "gfal-copy",
            &format!("if [ \"$1\" = --version ]; then printf '{version}'; exit 0; fi\n{copy_body}"),
        );
        for tool in SIBLINGS {
            script(tool, "exit 0");
        }
        script("python3", "exit 0");
        dir
    }

    fn settings(tools: &Path, run: &Path) -> Gfal2Settings {
        Gfal2Settings {
            program: tools.join("gfal-copy"),
            run_dir: run.to_path_buf(),
            ca_dir: PathBuf::from("/ca"),
            voms_dir: PathBuf::from("/vomsdir"),
            options: Vec::new(),
        }
    }

    #[tokio::test]
    async fn detection_finds_python_plugins_and_schemes() {
        let tools = fake_tools(
            "gfal2-util version 1.8.0 (gfal2 2.21.3)\n\tfile-2.21.3\n\txrootd-2.21.3\n\tlfc-2.21.3\n",
            "exit 0",
        );
        let run = tempfile::tempdir().unwrap();
        let backend = Gfal2Backend::start(settings(tools.path(), run.path()))
            .await
            .unwrap();
        let found = backend.installation();
        assert_eq!(found.python, tools.path().join("python3"));
        assert_eq!(found.plugins, ["file", "xrootd", "lfc"]);
        assert_eq!(backend.schemes(), ["root", "roots", "xroot", "xroots"]);
        assert_eq!(backend.unknown_plugins(), ["lfc"]);
        let mode = std::fs::metadata(run.path().join("transfer-proxies"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[tokio::test]
    async fn detection_says_why_gfal2_is_unusable() {
        let run = tempfile::tempdir().unwrap();
        let broken = fake_tools("", "exit 0");
        std::fs::write(
            broken.path().join("gfal-copy"),
            "#!/bin/sh\necho 'ModuleNotFoundError: No module named gfal2' >&2\nexit 1\n",
        )
        .unwrap();
        let why = Gfal2Backend::start(settings(broken.path(), run.path()))
            .await
            .err()
            .unwrap();
        assert!(why.contains("with the gfal2 module"), "{why}");
        assert!(why.contains("No module named gfal2"), "{why}");

        let no_stat = fake_tools(VERSION, "exit 0");
        std::fs::remove_file(no_stat.path().join("gfal-stat")).unwrap();
        let why = Gfal2Backend::start(settings(no_stat.path(), run.path()))
            .await
            .err()
            .unwrap();
        assert!(why.ends_with("gfal-stat not found"), "{why}");

        let mut missing = settings(no_stat.path(), run.path());
        missing.program = PathBuf::from("no-such-gfal-copy-here");
        let why = Gfal2Backend::start(missing).await.err().unwrap();
        assert_eq!(why, "no-such-gfal-copy-here not found");
    }

    fn credential(pem: &str) -> Arc<Credential> {
        Arc::new(Credential::new(
            zeroize::Zeroizing::new(pem.to_string()),
            "test-credential",
        ))
    }

    fn session(backend: &Gfal2Backend, log: &TransferLog) -> Box<dyn Session> {
        backend.session(&SessionContext {
            credential: Some(credential("-----BEGIN CERTIFICATE-----\nproxy\n")),
            tokens: None,
            log: log.clone(),
        })
    }

    #[tokio::test]
    async fn a_copy_runs_with_the_proxy_a_clean_environment_and_reports_progress() {
        let out = tempfile::tempdir().unwrap();
        let o = out.path().display();
        let tools = fake_tools(
            VERSION,
            &format!(
                "env > {o}/env\nprintf '%s\\n' \"$@\" > {o}/args\n\
                 stat -c %a \"$X509_USER_PROXY\" > {o}/mode\ncat \"$X509_USER_PROXY\" > {o}/proxy\n\
                 echo 'Copying 10 bytes root://a//f => root://b//g'\n\
                 printf 'event: [1000] BOTH   xroot\\tTRANSFER:ENTER\\tx\\n'\n\
                 echo 'monitor: root://a//f root://b//g 5 5 10 1'\n\
                 printf 'event: [3500] BOTH   xroot\\tTRANSFER:EXIT\\tJob finished\\n'\n\
                 echo 'gfal2 note on stderr' >&2\nexit 0"
            ),
        );
        let run = tempfile::tempdir().unwrap();
        let backend = Gfal2Backend::start(settings(tools.path(), run.path()))
            .await
            .unwrap();
        let log = TransferLog::memory();
        let mut session = session(&backend, &log);
        let progress = Progress::default();
        let r = request("root://a//f", "root://b//g");
        let report = session.copy_checked(&r, &progress).unwrap().await.unwrap();
        assert_eq!(report.copy_duration, Some(2.5));
        assert_eq!(progress.transferred.load(Ordering::Relaxed), 10);
        assert!(progress.copying.load(Ordering::Relaxed));

        let read = |name: &str| std::fs::read_to_string(out.path().join(name)).unwrap();
        assert_eq!(read("mode").trim(), "600");
        assert_eq!(read("proxy"), "-----BEGIN CERTIFICATE-----\nproxy\n");
        let env = read("env");
        for expected in [
            format!("GFAL_PYTHONBIN={}", tools.path().join("python3").display()),
            "X509_CERT_DIR=/ca".into(),
            "X509_VOMS_DIR=/vomsdir".into(),
            format!("PATH={CHILD_PATH}"),
        ] {
            assert!(env.lines().any(|l| l == expected), "{expected} in {env}");
        }
        // Nothing of the service's own environment (cargo sets CARGO_* for tests).
        assert!(!env.contains("CARGO"), "{env}");
        assert!(
            !env.contains("GFAL_CONFIG_DIR"),
            "no options, no private config: {env}"
        );
        let args: Vec<String> = read("args").lines().map(str::to_string).collect();
        assert_eq!(args, copy_args(&r));

        // The log has the command and gfal2's lines, not the progress lines.
        let lines = log.lines().join("\n");
        assert!(lines.contains("gfal2: gfal-copy -v -t 600"), "{lines}");
        assert!(lines.contains("TRANSFER:EXIT"), "{lines}");
        assert!(lines.contains("gfal2 note on stderr"), "{lines}");
        assert!(!lines.contains("monitor:"), "{lines}");
        assert!(!lines.contains("BEGIN CERTIFICATE"), "{lines}");

        // The proxy file lives as long as the session.
        let proxy = env
            .lines()
            .find_map(|l| l.strip_prefix("X509_USER_PROXY="))
            .unwrap()
            .to_string();
        assert!(Path::new(&proxy).starts_with(run.path().join("transfer-proxies")));
        assert!(Path::new(&proxy).exists());
        drop(session);
        assert!(!Path::new(&proxy).exists());
    }

    #[tokio::test]
    async fn tokens_reach_gfal2_through_a_private_file_never_argv_or_env() {
        use crate::engine::backends::bearer::Slot;
        let out = tempfile::tempdir().unwrap();
        let o = out.path().display();
        let tools = fake_tools(VERSION, "exit 0");
        let run = tempfile::tempdir().unwrap();
        let backend = Gfal2Backend::start(settings(tools.path(), run.path()))
            .await
            .unwrap();
        // The Python found at start runs the wrapper: this one records what it was given.
        std::fs::write(
            tools.path().join("python3"),
            format!(
                "#!/bin/sh\nenv > {o}/env\nprintf '%s\\n' \"$@\" > {o}/args\n\
                 stat -c %a \"$FTSD_BEARER_FILE\" > {o}/mode\n\
                 cat \"$FTSD_BEARER_FILE\" > {o}/tokens\necho \"$FTSD_BEARER_FILE\" > {o}/path\n\
                 echo 'Copying 10 bytes davs://a:8443/d/f => davs://b.example/g'\nexit 0\n"
            ),
        )
        .unwrap();
        let slot = |id: &str, value: &str| Slot {
            token_id: id.into(),
            value: crate::model::token::Secret::new(value),
            expiry: i64::MAX,
            unmanaged: true,
        };
        let tokens = Arc::new(TransferTokens::new(
            "davs://a:8443/d/f",
            "davs://b.example/g",
            Some(slot("s", "SOURCE.TOKEN.VALUE")),
            Some(slot("d", "DESTINATION.TOKEN.VALUE")),
            None,
            300,
        ));
        let log = TransferLog::memory();
        let mut session = backend.session(&SessionContext {
            credential: None,
            tokens: Some(tokens),
            log: log.clone(),
        });
        let r = request("davs://a:8443/d/f", "davs://b.example/g");
        session
            .copy_checked(&r, &Progress::default())
            .unwrap()
            .await
            .unwrap();
        let read = |name: &str| std::fs::read_to_string(out.path().join(name)).unwrap();
        // The source token for the source URL, the destination token for its host.
        assert_eq!(
            read("tokens"),
            "davs://a:8443/d/f\nSOURCE.TOKEN.VALUE\nb.example\nDESTINATION.TOKEN.VALUE\n"
        );
        assert_eq!(read("mode").trim(), "600");
        let args: Vec<String> = read("args").lines().map(str::to_string).collect();
        assert_eq!(args[..2], ["-u", "-Wignore"]);
        assert_eq!(
            args[2],
            run.path().join("gfal2-bearer.py").display().to_string()
        );
        assert_eq!(
            args[3],
            tools.path().join("gfal-copy").display().to_string()
        );
        assert_eq!(args[4..], copy_args(&r)[..]);
        for text in [read("args"), read("env"), log.lines().join("\n")] {
            assert!(!text.contains("TOKEN.VALUE"), "{text}");
        }
        // No proxy for a token transfer; the token file is gone after the run.
        assert!(!read("env").contains("X509_USER_PROXY"));
        assert!(!Path::new(read("path").trim()).exists());
        let wrapper = std::fs::read_to_string(run.path().join("gfal2-bearer.py")).unwrap();
        assert_eq!(wrapper, BEARER_WRAPPER);
    }

    #[tokio::test]
    async fn failures_of_the_tools_reach_the_agent_classified() {
        let tools = fake_tools(
            VERSION,
            "echo 'gfal-copy error: 17 (File exists) - Destination root://b//g exists and overwrite is not set' >&2\nexit 17",
        );
        // Metadata tools: gfal-stat, gfal-rm of a missing file, gfal-sum.
        let stat = "if [ \"$4\" = root://b//missing ]; then\n\
                    echo 'gfal-stat error: 2 (No such file or directory) - Failed to stat file (No such file or directory)' >&2; exit 2; fi\n\
                    if [ \"$4\" = root://b//dir ]; then printf \"  File: '$4'\\n  Size: 4096\\tdirectory\\n\"; exit 0; fi\n\
                    printf \"  File: '$4'\\n  Size: 5000000\\tregular file\\n\"";
        std::fs::write(
            tools.path().join("gfal-stat"),
            format!("#!/bin/sh\n{stat}\n"),
        )
        .unwrap();
        std::fs::write(
            tools.path().join("gfal-rm"),
            "#!/bin/sh\nprintf '%s\\tMISSING\\n' \"$4\"\nexit 2\n",
        )
        .unwrap();
        std::fs::write(
            tools.path().join("gfal-sum"),
            "#!/bin/sh\necho \"$4 01E3F159\"\n",
        )
        .unwrap();
        let run = tempfile::tempdir().unwrap();
        let backend = Gfal2Backend::start(settings(tools.path(), run.path()))
            .await
            .unwrap();
        let log = TransferLog::memory();
        let mut session = session(&backend, &log);
        let progress = Progress::default();
        let f = session
            .copy_checked(&request("root://a//f", "root://b//g"), &progress)
            .unwrap()
            .await
            .unwrap_err();
        assert_eq!(
            f.reason(),
            "DESTINATION [17] Destination file exists and overwrite is not enabled"
        );
        assert_eq!(f.phase, Phase::TransferPreparation);
        assert!(!progress.copying.load(Ordering::Relaxed));

        assert_eq!(session.stat("root://b//f").await.unwrap(), 5_000_000);
        let missing = session.stat("root://b//missing").await.unwrap_err();
        assert_eq!(missing.errno, libc::ENOENT);
        assert_eq!(
            missing.message,
            "Failed to stat file (No such file or directory)"
        );
        assert_eq!(
            session.stat("root://b//dir").await.unwrap_err().errno,
            libc::EISDIR
        );
        assert!(!session.exists("root://b//missing").await.unwrap());
        assert!(session.exists("root://b//f").await.unwrap());
        assert_eq!(
            session.delete("root://b//g").await.unwrap_err().errno,
            libc::ENOENT
        );
        assert_eq!(
            session.checksum("root://b//f", "adler32").await.unwrap(),
            "01e3f159"
        );
        // The locality of the destination report (`gfal-xattr <url> user.status`); without
        // the tool, an error (no report).
        assert!(session.locality("root://b//g").await.is_err());
        std::fs::write(
            tools.path().join("gfal-xattr"),
            "#!/bin/sh\n[ \"$5\" = user.status ] && printf 'NEARLINE \\n'\n",
        )
        .unwrap();
        std::fs::set_permissions(
            tools.path().join("gfal-xattr"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        assert_eq!(session.locality("root://b//g").await.unwrap(), "NEARLINE ");
        // A tool that cannot start: retryable, whatever the system says.
        std::fs::remove_file(tools.path().join("gfal-mkdir")).unwrap();
        let broken = session.make_parent("root://b//d/f").await.unwrap_err();
        assert_eq!(broken.errno, libc::EAGAIN);
        assert!(
            broken.message.ends_with("gfal-mkdir: ENOENT"),
            "{}",
            broken.message
        );
        assert!(crate::engine::agent::recoverable(
            Scope::Source,
            broken.errno,
            &broken.message
        ));
    }

    /// Whether process `pid` still runs (zombies do not count).
    fn alive(pid: &str) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
        })
    }

    #[tokio::test]
    async fn dropping_a_copy_kills_gfal_copy_and_its_children() {
        let out = tempfile::tempdir().unwrap();
        let o = out.path().display();
        let tools = fake_tools(
            VERSION,
            &format!(
                "sleep 300 &\necho $! > {o}/child.tmp\necho $$ > {o}/pid\nmv {o}/child.tmp {o}/child\n\
                 echo 'Copying 10 bytes root://a//f => root://b//g'\nwait"
            ),
        );
        let run = tempfile::tempdir().unwrap();
        let backend = Gfal2Backend::start(settings(tools.path(), run.path()))
            .await
            .unwrap();
        let log = TransferLog::memory();
        let mut session = session(&backend, &log);
        let progress = Progress::default();
        let r = request("root://a//f", "root://b//g");
        {
            let copy = session.copy_checked(&r, &progress).unwrap();
            let child = out.path().join("child");
            let waited = tokio::time::timeout(Duration::from_secs(10), async {
                while !child.exists() || !progress.copying.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
            tokio::select! {
                _ = copy => panic!("the fake copy ended"),
                _ = waited => {}
            }
        }
        let read = |name: &str| {
            std::fs::read_to_string(out.path().join(name))
                .unwrap()
                .trim()
                .to_string()
        };
        let (pid, child) = (read("pid"), read("child"));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while (alive(&pid) || alive(&child)) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!alive(&pid), "gfal-copy {pid} still runs");
        assert!(!alive(&child), "its child {child} still runs");
    }
}
