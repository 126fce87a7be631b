//! Real storage peers for the transfer-backend tests (configurations from
//! `protocol-peers.md`). Each fixture runs one real server on free loopback ports, in its own
//! temporary directory; dropping it (a panicking test too) kills the server's whole process group
//! and removes the directory.
//!
//! - [`Xrootd`]: XRootD 5 serving `root://` (GSI) and `https://` / `davs://` (XrdHttp) with
//!   HTTP-TPC `COPY` (pull and push), macaroons and `Want-Digest` (adler32, md5, crc32c).
//!   Test User (`proxy_*.pem` except the legacy ones, `usercert.pem`) may do anything except
//!   write under [`READONLY`]; Other User (`user2cert.pem`) may only read and list; anonymous
//!   clients get 403. [`Options::throttle`] makes a ~20 MB/s source for Perf Marker tests.
//! - [`Apache`]: Apache 2.4 mod_dav + mod_gridsite: plain WebDAV that accepts every proxy type
//!   (legacy Globus proxies too) and logs the client DN; no digests, no TPC.
//! - [`Moto`]: moto_server, S3 over plain http, any credentials (see [`gfal_s3_options`]).
//!
//! A test first asks [`available`] for what it needs (missing: a failure in CI, a loud
//! `SKIPPING:` line locally), then starts peers. Files a test puts into a server's data
//! directory directly must go through `write_file`, which hands them to the server's user
//! (`xrootd`, `www-data`) so the server can overwrite and delete them.
//!
//! Run only these tests: `cargo test --test integration peers -- --nocapture`
//! (`.ci/run` installs the packages and the moto venv, `S3VENV`).

#![allow(dead_code)]

use std::{
    fs,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::common::{Client, TestPki, in_ci, pki};

/// How long a peer may take to answer its first request. They need 0.1-0.7 s; the margin is
/// for a loaded 2-core CI machine.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// How long a killed peer's reparented workers (Apache) may take to disappear.
const STOP_DEADLINE: Duration = Duration::from_secs(2);
/// Interval between readiness probes.
const POLL: Duration = Duration::from_millis(25);

/// The XRootD area where Test User may read and list but not write.
pub const READONLY: &str = "/readonly";
/// S3 credentials for [`Moto`] (it accepts any; these are what the gfal2 options carry).
pub const S3_ACCESS_KEY: &str = "testing";
pub const S3_SECRET_KEY: &str = "testing";
pub const S3_REGION: &str = "us-east-1";

// ---------------------------------------------------------------------------------------------
// What is installed

/// True when everything in `needs` is installed. Names: `"xrootd"` (server, plugins, user),
/// `"scitokens"` (XRootD's SciTokens authorization plugin),
/// `"apache2"` (with mod_dav and mod_gridsite), `"moto"` (the S3 venv), `"gfal2"` (the gfal
/// command-line tools and python3-gfal2), or any command (`"curl"`, `"xrdcp"`, ...).
/// A missing one panics in CI and prints a `SKIPPING:` line otherwise.
pub fn available(needs: &[&str]) -> bool {
    needs.iter().all(|need| match missing(need) {
        None => true,
        Some(what) => {
            assert!(!in_ci(), "{what} is required in CI (see .ci/run)");
            eprintln!("SKIPPING: {what} is not installed (see .ci/run)");
            false
        }
    })
}

/// What is missing for `need`, if anything.
fn missing(need: &str) -> Option<String> {
    let lacking = |what: String, ok: bool| (!ok).then_some(what);
    match need {
        "xrootd" => lacking("xrootd".into(), command_exists("xrootd"))
            .or_else(|| {
                let libs = Command::new("/sbin/ldconfig").arg("-p").output().ok()?;
                let libs = String::from_utf8_lossy(&libs.stdout);
                [
                    "libXrdHttp-5.so",
                    "libXrdHttpTPC-5.so",
                    "libXrdMacaroons-5.so",
                    "libXrdOfsPrepGPI-5.so",
                ]
                .iter()
                .find(|lib| !libs.contains(*lib))
                .map(|lib| format!("{lib} (xrootd-server-plugins)"))
            })
            .or_else(|| {
                let user = running_as_root() && system_user("xrootd").is_none();
                lacking("user xrootd (xrootd-server)".into(), !user)
            }),
        "scitokens" => {
            let libs = Command::new("/sbin/ldconfig").arg("-p").output().ok();
            let libs = libs.map(|l| String::from_utf8_lossy(&l.stdout).into_owned());
            let found = libs.is_some_and(|l| l.contains("libXrdAccSciTokens-5.so"));
            lacking(
                "libXrdAccSciTokens-5.so (xrootd-scitokens-plugins)".into(),
                found,
            )
        }
        "apache2" => [
            "mod_dav.so",
            "mod_dav_fs.so",
            "mod_ssl.so",
            "mod_gridsite.so",
        ]
        .iter()
        .map(|m| Path::new("/usr/lib/apache2/modules").join(m))
        .chain([PathBuf::from(APACHE_BIN)])
        .find(|p| !p.exists())
        .map(|p| format!("{} (apache2, gridsite)", p.display())),
        "moto" => match s3venv() {
            Some(venv) if venv.join("bin/moto_server").exists() => None,
            Some(venv) => Some(format!("{}/bin/moto_server", venv.display())),
            None => Some("moto_server (S3VENV, .ci/venv-s3)".into()),
        },
        "gfal2" => lacking(
            "gfal-copy (gfal2-util-scripts)".into(),
            command_exists("gfal-copy"),
        )
        .or_else(|| {
            let ok = gfal_python().is_some_and(|py| {
                Command::new(py)
                    .args(["-c", "import gfal2, gfal2_util"])
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            });
            lacking("python3-gfal2".into(), ok)
        }),
        command => lacking(command.to_string(), command_exists(command)),
    }
}

fn command_exists(command: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {command}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The moto venv: `$S3VENV`, else the repository's `.ci/venv-s3`, else `/tmp/s3venv` if present.
pub fn s3venv() -> Option<PathBuf> {
    if let Some(venv) = std::env::var_os("S3VENV").filter(|v| !v.is_empty()) {
        return Some(venv.into());
    }
    [
        Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/venv-s3"),
        PathBuf::from("/tmp/s3venv"),
    ]
    .into_iter()
    .find(|venv| venv.exists())
}

/// The Python that has the gfal2 bindings: the gfal tools pick the first `python3` on `PATH`,
/// which (pyenv, venvs) often lacks them.
fn gfal_python() -> Option<PathBuf> {
    std::env::var_os("GFAL_PYTHONBIN")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from("/usr/bin/python3")).filter(|p| p.exists()))
}

/// A gfal command-line tool (`gfal-copy`, `gfal-sum`, ...) set up to find python3-gfal2.
pub fn gfal_command(tool: &str) -> Command {
    let mut command = Command::new(tool);
    if let Some(python) = gfal_python() {
        command.env("GFAL_PYTHONBIN", python);
    }
    command
}

// ---------------------------------------------------------------------------------------------
// Processes, users, files

/// A server process in its own process group. Dropping it kills the whole group (workers and
/// helpers such as XRootD's `xrdcp --server` included) and waits until none is left.
pub(crate) struct Daemon {
    child: Child,
    name: String,
}

impl Daemon {
    pub(crate) fn spawn(mut command: Command, name: &str, output: &Path) -> Daemon {
        use std::os::unix::process::CommandExt;
        let out = fs::File::create(output).unwrap();
        command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Daemon {
            child,
            name: name.to_string(),
        }
    }

    /// Poll `ready` until it says yes; panic with the tails of `logs` when the server exits or
    /// stays silent past [`START_DEADLINE`].
    pub(crate) fn wait_ready(&mut self, logs: &[PathBuf], ready: impl FnMut() -> bool) {
        if let Err(why) = self.try_wait_ready(logs, ready) {
            panic!("{why}");
        }
    }

    /// [`Self::wait_ready`], the failure returned (with the logs' tails) instead of raised.
    pub(crate) fn try_wait_ready(
        &mut self,
        logs: &[PathBuf],
        mut ready: impl FnMut() -> bool,
    ) -> Result<(), String> {
        let start = Instant::now();
        loop {
            if ready() {
                eprintln!("{} answers after {:?}", self.name, start.elapsed());
                return Ok(());
            }
            let why = match self.child.try_wait().unwrap() {
                Some(status) => format!("exited ({status})"),
                None if start.elapsed() > START_DEADLINE => {
                    format!("did not answer within {START_DEADLINE:?}")
                }
                None => {
                    std::thread::sleep(POLL);
                    continue;
                }
            };
            let tails: String = logs.iter().map(|log| tail(log, 40)).collect();
            return Err(format!("{} {why}\n{tails}", self.name));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let group = self.child.id();
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{group}")])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
        // Workers the leader forked (Apache) were reparented when it died; wait until they are
        // gone too, so their sockets are closed when the fixture is.
        let deadline = Instant::now() + STOP_DEADLINE;
        while group_alive(group) && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
    }
}

/// Whether a process of group `pgid` still runs. Zombies do not count: the init of a container
/// may reap orphans only every second or two, long after they stopped.
fn group_alive(pgid: u32) -> bool {
    let Ok(entries) = fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            return false;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields.len() > 2 && fields[2] == pgid.to_string() && !matches!(fields[0], "Z" | "X")
    })
}

/// The last `lines` lines of a log file, headed by its name.
fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| format!("({e})"));
    let all: Vec<&str> = text.lines().collect();
    let last = all[all.len().saturating_sub(lines)..].join("\n");
    format!("--- {} ---\n{last}\n", path.display())
}

/// A free loopback port for each entry (all held at once, so they differ).
pub(crate) fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<_> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}

/// A system user a server runs as.
#[derive(Clone, Copy, Debug)]
struct Owner {
    uid: u32,
    gid: u32,
}

fn running_as_root() -> bool {
    // /proc/self belongs to the effective user.
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn system_user(name: &str) -> Option<Owner> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() > 3 && f[0] == name).then(|| Owner {
            uid: f[2].parse().unwrap(),
            gid: f[3].parse().unwrap(),
        })
    })
}

/// Who owns a server's files: its system user when we are root (the server drops to it),
/// nobody in particular otherwise (the server runs as us).
fn server_owner(user: &str) -> Option<Owner> {
    running_as_root()
        .then(|| system_user(user).unwrap_or_else(|| panic!("no system user {user} (see .ci/run)")))
}

/// Hand `path` and everything below it to `owner`.
fn chown_all(path: &Path, owner: Option<Owner>) {
    let Some(owner) = owner else { return };
    std::os::unix::fs::lchown(path, Some(owner.uid), Some(owner.gid)).unwrap();
    if fs::symlink_metadata(path).unwrap().is_dir() {
        for entry in fs::read_dir(path).unwrap() {
            chown_all(&entry.unwrap().path(), Some(owner));
        }
    }
}

/// Copy a directory tree (following symlinks, e.g. CA hash links).
fn copy_dir(from: &Path, to: &Path) {
    copy_dir_except(from, to, |_| false);
}

fn copy_dir_except(from: &Path, to: &Path, skip: impl Fn(&str) -> bool + Copy) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if skip(&name.to_string_lossy()) {
            continue;
        }
        let target = to.join(&name);
        if entry.path().is_dir() {
            copy_dir_except(&entry.path(), &target, skip);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A copy of the PKI's CA directory without its CRLs (`*.r0`; only the extra ftsd-made CA has
/// one). XrdHttpTPC hands libcurl a CRL file as soon as the directory holds any CRL, and then
/// OpenSSL wants a CRL for every CA of the chain: the Test CA has none, so every TPC pull failed
/// with 500 "Unknown internal transfer failure".
fn copy_ca_dir(pki: &TestPki, to: &Path) {
    copy_dir_except(&pki.ca_dir(), to, |name| {
        name.rsplit_once('.').is_some_and(|(_, ext)| {
            ext.len() == 2 && ext.starts_with('r') && ext.as_bytes()[1].is_ascii_digit()
        })
    });
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// `path` relative to a data root, with or without a leading slash.
fn under(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// Write a file below a server's data root, creating its parents, all owned by the server.
fn write_owned(root: &Path, owner: Option<Owner>, path: &str, contents: &[u8]) -> PathBuf {
    let file = under(root, path);
    let parent = file.parent().unwrap();
    let mut top_new = None;
    let mut dir = parent;
    while !dir.exists() {
        top_new = Some(dir.to_path_buf());
        dir = dir.parent().unwrap();
    }
    fs::create_dir_all(parent).unwrap();
    if let Some(top) = top_new {
        chown_all(&top, owner);
    }
    fs::write(&file, contents).unwrap();
    chown_all(&file, owner);
    file
}

/// A client of the test PKI for readiness probes (any HTTP answer means "up").
pub(crate) fn probe_client(pki: &TestPki, port: u16) -> Client {
    Client::new(port, &pki.path("ca.pem"), Some(pki.path("proxy_rfc.pem")))
}

/// Deterministic pseudo-random test data (xorshift64*), so a mismatch is reproducible.
pub fn sample_data(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut data = Vec::with_capacity(len + 8);
    while data.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        data.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    data.truncate(len);
    data
}

// ---------------------------------------------------------------------------------------------
// XRootD

/// How an [`Xrootd`] differs from the standard one.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Throttle reads and writes to ~20 MB/s (`xrootd.fslib throttle`): a slow source whose
    /// TPC pulls last long enough to see Perf Markers (XrdTpc sends one every 5 s). The limit
    /// is bursty: a 40 MB GET took 0.6-0.9 s, 100 MB 3-5 s, so use >= 150 MB for markers.
    pub throttle: bool,
    /// Accept WLCG bearer tokens of one issuer only (`tokens.md` §A.7), instead of GSI,
    /// macaroons and the grid-mapfile.
    pub scitokens: Option<SciTokens>,
    /// A tape behind the prepare requests (`xrootd_tape_prep.py` through XRootD's
    /// `libXrdOfsPrepGPI`): files under `/tape/` offline until staged, localities in query
    /// prepare answers as EOS+CTA gives them, every request logged (see [`Xrootd::tape_log`]).
    pub tape: bool,
}

/// The token issuer an [`Xrootd`] with [`Options::scitokens`] trusts.
#[derive(Clone, Debug)]
pub struct SciTokens {
    /// The tokens' `iss`, exactly.
    pub issuer: String,
    /// The issuer's keys (`{"keys": [...]}`), pre-seeded in libscitokens' key cache: it would
    /// otherwise fetch them over HTTPS trusting the system CAs only.
    pub jwks: serde_json::Value,
}

/// The path under which token scopes apply (`storage.read:/` = `/tok/...`).
pub const TOKEN_BASE: &str = "/tok";

/// An XRootD server: `root://` with GSI and `https://` with XrdHttp, HTTP-TPC and macaroons.
pub struct Xrootd {
    daemon: Daemon,
    name: String,
    root_port: u16,
    https_port: u16,
    owner: Option<Owner>,
    dir: tempfile::TempDir,
}

impl Xrootd {
    /// Start an instance; `name` (letters and digits) appears in its site name and log.
    pub fn start(pki: &TestPki, name: &str, options: Options) -> Xrootd {
        // Free ports are picked, then bound by xrootd: another test's server may take one in
        // between. That start is retried on new ports; any other failure is the test's.
        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
            match Self::try_start(pki, name, options.clone()) {
                Ok(xrootd) => return xrootd,
                Err(why) if attempt < ATTEMPTS && why.contains("address already in use") => {
                    eprintln!("xrootd {name}: a port was taken meanwhile, starting again");
                }
                Err(why) => panic!("{why}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn try_start(pki: &TestPki, name: &str, options: Options) -> Result<Xrootd, String> {
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()),
            "xrootd instance name {name:?}"
        );
        let owner = server_owner("xrootd");
        let dir = tempfile::Builder::new()
            .prefix(&format!("ftsd-xrootd-{name}-"))
            .tempdir()
            .unwrap();
        let root = dir.path();
        let [root_port, https_port] = free_ports();
        for sub in ["data", "admin", "run", "logs"] {
            fs::create_dir(root.join(sub)).unwrap();
        }
        fs::create_dir_all(under(&root.join("data"), READONLY)).unwrap();
        // xrootd runs as user xrootd and cannot read the PKI's 0700 directory: it gets copies.
        copy_ca_dir(pki, &root.join("certificates"));
        copy_dir(&pki.voms_dir(), &root.join("vomsdir"));
        fs::copy(pki.path("hostcert.pem"), root.join("hostcert.pem")).unwrap();
        fs::copy(pki.path("hostkey.pem"), root.join("hostkey.pem")).unwrap();
        set_mode(&root.join("hostkey.pem"), 0o400);
        fs::write(
            root.join("grid-mapfile"),
            "\"/DC=org/DC=example/CN=Test User\" testuser\n\
             \"/DC=org/DC=example/CN=Other User\" otheruser\n",
        )
        .unwrap();
        // Within one rule the FIRST path prefix that matches decides (not the longest), and
        // prefixes are plain string prefixes: `/readonly/` must come before `/`, and its
        // trailing slash keeps `/readonlyX` writable. Users not listed (anonymous) get nothing.
        fs::write(
            root.join("authdb"),
            format!("u testuser {READONLY}/ rl / a\nu otheruser / rl\n"),
        )
        .unwrap();
        // The secret must decode to at least 32 bytes.
        let secret = root.join("macaroon-secret");
        let out = Command::new("openssl")
            .args(["rand", "-base64", "-out"])
            .arg(&secret)
            .arg("64")
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl rand failed");
        set_mode(&secret, 0o400);
        if let Some(tokens) = &options.scitokens {
            scitokens_files(root, https_port, tokens);
        }
        let config = root.join("xrootd.cfg");
        fs::write(
            &config,
            xrootd_config(root, name, root_port, https_port, &options),
        )
        .unwrap();
        if options.tape {
            let prep = root.join("tape-prep");
            fs::copy(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration/xrootd_tape_prep.py"),
                &prep,
            )
            .unwrap();
            set_mode(&prep, 0o755);
            fs::create_dir(root.join("tape")).unwrap();
        }
        set_mode(root, 0o755);
        chown_all(root, owner);

        let mut command = Command::new("xrootd");
        if owner.is_some() {
            // xrootd refuses to run as root.
            command.args(["-R", "xrootd"]);
        }
        command
            .arg("-c")
            .arg(&config)
            .arg("-l")
            .arg(root.join("logs/xrootd.log"))
            .args(["-n", name])
            .current_dir(root)
            // Its native TPC runs xrdcp, which needs these in the server's environment.
            .env("X509_CERT_DIR", root.join("certificates"))
            .env("X509_VOMS_DIR", root.join("vomsdir"))
            // libscitokens' key cache (pre-seeded).
            .env("XDG_CACHE_HOME", root.join("cache"))
            .env_remove("X509_USER_PROXY")
            .env_remove("X509_USER_CERT")
            .env_remove("X509_USER_KEY");
        let what = format!("xrootd {name}");
        let mut daemon = Daemon::spawn(command, &what, &root.join("stdout.log"));
        let client = probe_client(pki, https_port);
        let logs = [
            root.join("stdout.log"),
            root.join("logs").join(name).join("xrootd.log"),
        ];
        daemon.try_wait_ready(&logs, || client.get("/").is_ok())?;
        Ok(Xrootd {
            daemon,
            name: name.to_string(),
            root_port,
            https_port,
            owner,
            dir,
        })
    }

    pub fn https_port(&self) -> u16 {
        self.https_port
    }

    pub fn root_port(&self) -> u16 {
        self.root_port
    }

    /// `https://localhost:<port>/<path>` (the host certificate is for `localhost`).
    pub fn https_url(&self, path: &str) -> String {
        format!(
            "https://localhost:{}/{}",
            self.https_port,
            path.trim_start_matches('/')
        )
    }

    /// `davs://localhost:<port>/<path>`.
    pub fn davs_url(&self, path: &str) -> String {
        format!(
            "davs://localhost:{}/{}",
            self.https_port,
            path.trim_start_matches('/')
        )
    }

    /// `root://localhost:<port>//<path>`.
    pub fn root_url(&self, path: &str) -> String {
        format!(
            "root://localhost:{}//{}",
            self.root_port,
            path.trim_start_matches('/')
        )
    }

    /// Where `path` (as in the URLs) lives on disk.
    pub fn data_path(&self, path: &str) -> PathBuf {
        under(&self.dir.path().join("data"), path)
    }

    /// Put a file (and its missing parents) into the data directory, owned by the server.
    pub fn write_file(&self, path: &str, contents: &[u8]) -> PathBuf {
        write_owned(&self.dir.path().join("data"), self.owner, path, contents)
    }

    /// The server log (`login as testuser`, `TPC_PullRequest: event=...`).
    pub fn log(&self) -> String {
        let log = self
            .dir
            .path()
            .join("logs")
            .join(&self.name)
            .join("xrootd.log");
        fs::read_to_string(log).unwrap_or_default()
    }

    /// The instance's directory (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The prepare requests the tape back-end received ([`Options::tape`]): per request its
    /// `id`, `request` (`stage`, `query`, `cancel`, `evict`) and `paths`.
    pub fn tape_log(&self) -> Vec<serde_json::Value> {
        fs::read_to_string(self.dir.path().join("tape/log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// The files of a token-only instance: the SciTokens configuration (the instance's own
/// `https://localhost:<port>` and `https://127.0.0.1:<port>` as audiences, `/tok` as base
/// path), an authdb that grants nothing without a token, and libscitokens' key cache with the
/// issuer's keys.
fn scitokens_files(root: &Path, https: u16, tokens: &SciTokens) {
    fs::create_dir_all(under(&root.join("data"), TOKEN_BASE)).unwrap();
    fs::write(
        root.join("scitokens.cfg"),
        format!(
            "[Global]\naudience = https://localhost:{https}, https://127.0.0.1:{https}\n\
             onmissing = passthrough\n\n[Issuer test]\nissuer = {}\nbase_path = {TOKEN_BASE}\n\
             default_user = xrootd\n",
            tokens.issuer
        ),
    )
    .unwrap();
    fs::write(root.join("authdb"), "u nobody /nonexistent r\n").unwrap();
    let cache = root.join("cache/scitokens");
    fs::create_dir_all(&cache).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let keys = serde_json::json!({
        "jwks": tokens.jwks,
        "next_update": now + 30 * 86400,
        "expires": now + 60 * 86400,
    });
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys\n\
             db = sqlite3.connect(sys.argv[1])\n\
             db.execute('CREATE TABLE IF NOT EXISTS keycache (issuer text UNIQUE PRIMARY KEY \
             NOT NULL, keys text NOT NULL)')\n\
             db.execute('INSERT OR REPLACE INTO keycache VALUES (?, ?)', (sys.argv[2], sys.argv[3]))\n\
             db.commit()\n",
        )
        .arg(cache.join("scitokens_cpp.sqllite"))
        .arg(&tokens.issuer)
        .arg(keys.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "seeding the key cache failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    set_mode(&root.join("cache"), 0o700);
    set_mode(&cache, 0o700);
}

/// protocol-peers.md §1, on this instance's directory and ports; with [`Options::scitokens`],
/// tokens.md §A.7 (ztn and SciTokens instead of GSI, macaroons and the grid-mapfile).
fn xrootd_config(root: &Path, name: &str, port: u16, https: u16, options: &Options) -> String {
    let r = root.display();
    if options.scitokens.is_some() {
        return format!(
            "all.role server
all.sitename fts-test-{name}
all.export /
xrd.port {port}
oss.localroot {r}/data
all.adminpath {r}/admin
all.pidpath {r}/run
xrd.network nodnr
xrd.trace off
xrd.tls {r}/hostcert.pem {r}/hostkey.pem
xrd.tlsca certdir {r}/certificates
xrootd.chksum max 4 adler32 md5 crc32c
xrootd.seclib libXrdSec.so
sec.protocol ztn
ofs.authorize 1
acc.authdb {r}/authdb
acc.audit deny
ofs.authlib ++ libXrdAccSciTokens.so config={r}/scitokens.cfg
xrd.protocol XrdHttp:{https} libXrdHttp.so
http.header2cgi Authorization authz
http.listingdeny no
http.exthandler xrdtpc libXrdHttpTPC.so
tpc.trace info
scitokens.trace all
"
        );
    }
    let mut config = format!(
        "all.role server
all.sitename fts-test-{name}
all.export /
xrd.port {port}
oss.localroot {r}/data
all.adminpath {r}/admin
all.pidpath {r}/run
xrd.network nodnr
xrd.trace off
xrd.tls {r}/hostcert.pem {r}/hostkey.pem
xrd.tlsca certdir {r}/certificates
xrootd.chksum max 4 adler32 md5 crc32c
xrootd.seclib libXrdSec.so
sec.protocol gsi -certdir:{r}/certificates -cert:{r}/hostcert.pem -key:{r}/hostkey.pem -gridmap:{r}/grid-mapfile -gmapopt:1 -vomsat:ignore -dlgpxy:1 -exppxy:=creds
sec.protbind * only gsi
ofs.tpc fcreds ?gsi =X509_USER_PROXY autorm pgm /usr/bin/xrdcp --server
ofs.authorize 1
acc.authdb {r}/authdb
acc.audit deny
ofs.authlib ++ libXrdMacaroons.so
macaroons.secretkey {r}/macaroon-secret
xrd.protocol XrdHttp:{https} libXrdHttp.so
http.gridmap {r}/grid-mapfile
http.header2cgi Authorization authz
http.listingdeny no
http.desthttps yes
http.exthandler xrdtpc libXrdHttpTPC.so
http.exthandler xrdmacaroons libXrdMacaroons.so
tpc.trace info
"
    );
    if options.throttle {
        config
            .push_str("xrootd.fslib throttle default\nthrottle.throttle data 20m concurrency 4\n");
    }
    if options.tape {
        config.push_str(&format!(
            "ofs.preplib libXrdOfsPrepGPI.so -admit stage,query,cancel,evict -run {r}/tape-prep\n"
        ));
    }
    config
}

// ---------------------------------------------------------------------------------------------
// Apache

const APACHE_BIN: &str = "/usr/sbin/apache2";

/// Apache httpd 2.4 with mod_dav and mod_gridsite: plain WebDAV over https, every proxy type.
pub struct Apache {
    daemon: Daemon,
    port: u16,
    owner: Option<Owner>,
    dir: tempfile::TempDir,
}

impl Apache {
    pub fn start(pki: &TestPki) -> Apache {
        let owner = server_owner("www-data");
        let dir = tempfile::Builder::new()
            .prefix("ftsd-apache-")
            .tempdir()
            .unwrap();
        let root = dir.path();
        let [port] = free_ports();
        for sub in ["data", "run", "lock"] {
            fs::create_dir(root.join(sub)).unwrap();
        }
        // Apache reads the TLS files as root before it drops to www-data; copies keep the
        // instance self-contained like the XRootD one.
        copy_ca_dir(pki, &root.join("certificates"));
        fs::copy(pki.path("hostcert.pem"), root.join("hostcert.pem")).unwrap();
        fs::copy(pki.path("hostkey.pem"), root.join("hostkey.pem")).unwrap();
        let config = root.join("httpd.conf");
        fs::write(&config, apache_config(root, port)).unwrap();
        // The workers (www-data) write data/ and lock/ and must get through the 0700 temp dir.
        set_mode(root, 0o755);
        chown_all(&root.join("data"), owner);
        chown_all(&root.join("lock"), owner);

        let mut command = Command::new(APACHE_BIN);
        command
            .arg("-f")
            .arg(&config)
            // Stay in the foreground (our child, our process group) instead of daemonizing.
            .args(["-D", "FOREGROUND"])
            .current_dir(root);
        let mut daemon = Daemon::spawn(command, "apache2", &root.join("stdout.log"));
        let client = probe_client(pki, port);
        let logs = [root.join("stdout.log"), root.join("error.log")];
        daemon.wait_ready(&logs, || client.get("/").is_ok());
        Apache {
            daemon,
            port,
            owner,
            dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `https://localhost:<port>/<path>`.
    pub fn https_url(&self, path: &str) -> String {
        format!(
            "https://localhost:{}/{}",
            self.port,
            path.trim_start_matches('/')
        )
    }

    /// `davs://localhost:<port>/<path>`.
    pub fn davs_url(&self, path: &str) -> String {
        format!(
            "davs://localhost:{}/{}",
            self.port,
            path.trim_start_matches('/')
        )
    }

    /// Where `path` (as in the URLs) lives on disk.
    pub fn data_path(&self, path: &str) -> PathBuf {
        under(&self.dir.path().join("data"), path)
    }

    /// Put a file (and its missing parents) into the document root, owned by the server.
    pub fn write_file(&self, path: &str, contents: &[u8]) -> PathBuf {
        write_owned(&self.dir.path().join("data"), self.owner, path, contents)
    }

    /// The access log, one line per request:
    /// `<host> verify=SUCCESS dn="CN=proxy,CN=Test User,DC=example,DC=org" "PUT /f HTTP/1.1" 201 <bytes> <µs>`.
    pub fn access_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// The first access-log line for which `matches` holds, waiting for it: Apache writes the
    /// line after the reply is sent, so a client can see the reply first.
    pub fn access_line(&self, matches: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let log = self.access_log();
            if let Some(line) = log.lines().find(|l| matches(l)) {
                return line.to_string();
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "no such line in the access log:\n{log}"
            );
            std::thread::sleep(POLL);
        }
    }

    /// The error log (TLS handshake details at `ssl:info`).
    pub fn error_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// The instance's directory (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// protocol-peers.md §4, on this instance's directory and port.
fn apache_config(root: &Path, port: u16) -> String {
    let r = root.display();
    let modules = [
        ("mpm_event", "mod_mpm_event"),
        ("authz_core", "mod_authz_core"),
        ("mime", "mod_mime"),
        ("dir", "mod_dir"),
        ("autoindex", "mod_autoindex"),
        ("ssl", "mod_ssl"),
        ("socache_shmcb", "mod_socache_shmcb"),
        ("dav", "mod_dav"),
        ("dav_fs", "mod_dav_fs"),
        ("headers", "mod_headers"),
        ("gridsite", "mod_gridsite"),
    ]
    .map(|(name, file)| format!("LoadModule {name}_module /usr/lib/apache2/modules/{file}.so\n"))
    .concat();
    format!(
        r#"ServerRoot /etc/apache2
ServerName localhost
Listen 127.0.0.1:{port}
PidFile {r}/run/httpd.pid
User www-data
Group www-data
ErrorLog {r}/error.log
LogLevel warn ssl:info
{modules}TypesConfig /etc/mime.types
DAVLockDB {r}/lock/DAVLock
LogFormat "%h verify=%{{SSL_CLIENT_VERIFY}}x dn=\"%{{SSL_CLIENT_S_DN}}x\" \"%r\" %>s %B %D" dn
CustomLog {r}/access.log dn
SSLSessionCache shmcb:{r}/run/ssl_scache(512000)
<VirtualHost 127.0.0.1:{port}>
  SSLEngine on
  SSLCertificateFile {r}/hostcert.pem
  SSLCertificateKeyFile {r}/hostkey.pem
  SSLCACertificatePath {r}/certificates
  SSLVerifyClient require
  SSLVerifyDepth 10
  SSLOptions +StdEnvVars +ExportCertData
  GridSiteGSIProxyLimit 9
  GridSiteEnvs on
  DocumentRoot {r}/data
  <Directory {r}/data>
    Dav On
    Options +Indexes
    Require all granted
    LimitRequestBody 0
  </Directory>
</VirtualHost>
"#
    )
}

// ---------------------------------------------------------------------------------------------
// moto (S3)

/// moto_server: an in-memory S3 on plain http that accepts any credentials.
pub struct Moto {
    daemon: Daemon,
    port: u16,
    dir: tempfile::TempDir,
}

/// A syntactically valid SigV4 `Authorization` header: moto does not check signatures, but
/// treats requests without one as anonymous and refuses them on private objects (403).
const S3_ANY_AUTH: &str = "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00";

impl Moto {
    pub fn start() -> Moto {
        let venv = s3venv().expect("moto venv (check peers::available(&[\"moto\"]) first)");
        let dir = tempfile::Builder::new()
            .prefix("ftsd-moto-")
            .tempdir()
            .unwrap();
        let [port] = free_ports();
        let mut command = Command::new(venv.join("bin/moto_server"));
        command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .current_dir(dir.path());
        let log = dir.path().join("moto.log");
        let mut daemon = Daemon::spawn(command, "moto_server", &log);
        daemon.wait_ready(&[log], || plain_http(port, "GET", "/", &[], &[]).is_ok());
        Moto { daemon, port, dir }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `s3://127.0.0.1:<port>/<bucket>/<key>` (plain http for davix/gfal2; `s3s://` is https).
    pub fn s3_url(&self, bucket: &str, key: &str) -> String {
        format!(
            "s3://127.0.0.1:{}/{bucket}/{}",
            self.port,
            key.trim_start_matches('/')
        )
    }

    /// `http://127.0.0.1:<port>/<bucket>/<key>`: the same object, path-style.
    pub fn http_url(&self, bucket: &str, key: &str) -> String {
        format!(
            "http://127.0.0.1:{}/{bucket}/{}",
            self.port,
            key.trim_start_matches('/')
        )
    }

    /// Create a bucket (idempotent: moto answers 200 again).
    pub fn create_bucket(&self, bucket: &str) {
        let (status, body) = self.request("PUT", &format!("/{bucket}"), &[]);
        assert_eq!(status, 200, "create bucket {bucket}: {}", lossy(&body));
    }

    /// Store an object directly (a transfer source).
    pub fn put_object(&self, bucket: &str, key: &str, contents: &[u8]) {
        let path = format!("/{bucket}/{}", key.trim_start_matches('/'));
        let (status, body) = self.request("PUT", &path, contents);
        assert_eq!(status, 200, "put {path}: {}", lossy(&body));
    }

    /// An object's bytes, or `None` if there is no such key.
    pub fn get_object(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let path = format!("/{bucket}/{}", key.trim_start_matches('/'));
        match self.request("GET", &path, &[]) {
            (200, body) => Some(body),
            (404, _) => None,
            (status, body) => panic!("get {path}: {status} {}", lossy(&body)),
        }
    }

    /// moto's request log (werkzeug: one line per request, presigned query strings included).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("moto.log")).unwrap_or_default()
    }

    fn request(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        plain_http(
            self.port,
            method,
            path,
            &[("authorization", S3_ANY_AUTH)],
            body,
        )
        .unwrap_or_else(|e| panic!("moto {method} {path}: {e}"))
    }
}

/// gfal2 options (`gfal-copy` arguments) that make davix sign S3 requests for [`Moto`].
pub fn gfal_s3_options() -> Vec<String> {
    [
        format!("S3:ACCESS_KEY={S3_ACCESS_KEY}"),
        format!("S3:SECRET_KEY={S3_SECRET_KEY}"),
        format!("S3:REGION={S3_REGION}"),
        // Path-style URLs (host:port/bucket/key), not bucket.host.
        "S3:ALTERNATE=true".to_string(),
    ]
    .into_iter()
    .flat_map(|option| ["-D".to_string(), option])
    .collect()
}

fn lossy(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

/// One plain-http request to 127.0.0.1:`port`.
fn plain_http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, Vec<u8>), String> {
    use http_body_util::{BodyExt, Full};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .map_err(|e| format!("http handshake: {e}"))?;
        tokio::spawn(conn);
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", format!("127.0.0.1:{port}"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(bytes::Bytes::copy_from_slice(body)))
            .unwrap();
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok((status, body.to_vec()))
    })
}

// ---------------------------------------------------------------------------------------------
// Smoke tests: each fixture works the way protocol-peers.md says, seen through independent
// clients (curl with the OpenSSL stack, xrdcp, gfal-copy).

/// What curl got.
struct Curl {
    status: u16,
    headers: String,
    body: Vec<u8>,
    seconds: f64,
}

impl Curl {
    fn text(&self) -> String {
        lossy(&self.body)
    }
    fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// `curl` presenting `credential` (a PKI file holding certificate and key) and trusting
/// the PKI's CA directory. Arguments may carry tokens, so failures print only the reply.
fn curl(pki: &TestPki, credential: &str, args: &[&str]) -> Curl {
    let tmp = tempfile::tempdir().unwrap();
    let (headers, body) = (tmp.path().join("headers"), tmp.path().join("body"));
    let cred = pki.path(credential);
    let out = Command::new("curl")
        .args(["-sS", "--cert"])
        .arg(&cred)
        .arg("--key")
        .arg(&cred)
        .arg("--capath")
        .arg(pki.ca_dir())
        .arg("-D")
        .arg(&headers)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_code} %{time_total}"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = String::from_utf8(out.stdout).unwrap();
    let (status, seconds) = written.split_once(' ').unwrap();
    Curl {
        status: status.parse().unwrap(),
        headers: fs::read_to_string(&headers).unwrap_or_default(),
        body: fs::read(&body).unwrap_or_default(),
        seconds: seconds.parse().unwrap(),
    }
}

const PROXY: &str = "proxy_voms.pem";

/// A macaroon for `url` from its XRootD, as gfal2 requests one for TPC.
fn macaroon(pki: &TestPki, url: &str, activities: &str) -> String {
    let request = format!(r#"{{"caveats": ["activity:{activities}"], "validity": "PT30M"}}"#);
    let reply = curl(
        pki,
        PROXY,
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/macaroon-request",
            "-d",
            &request,
            url,
        ],
    );
    assert_eq!(reply.status, 200, "macaroon request: {}", reply.text());
    let json: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(json["expires_in"], 1800);
    json["macaroon"].as_str().expect("a macaroon").to_string()
}

#[test]
fn xrootd_streaming_digest_tpc_root_and_readonly() {
    let Some(pki) = pki() else { return };
    if !available(&["xrootd", "curl", "xrdcp"]) {
        return;
    }
    // Not "a"/"b": the README's XRootD pair (run by first_hour, as another user) has those
    // names, and xrootd's /tmp/xrootd.<name>.env of one user cannot be rewritten by another.
    let a = Xrootd::start(pki, "pa", Options::default());
    let b = Xrootd::start(pki, "pb", Options::default());
    let data = sample_data(3_000_000, 1);
    let src = tempfile::NamedTempFile::new().unwrap();
    fs::write(src.path(), &data).unwrap();
    let src_arg = src.path().to_str().unwrap();

    // Streaming PUT creates the parents; GET and the file on disk hold the same bytes.
    let put = curl(pki, PROXY, &["-T", src_arg, &a.https_url("dir1/f1.bin")]);
    assert_eq!((put.status, put.text().as_str()), (200, ":-)"));
    assert!(fs::read(a.data_path("/dir1/f1.bin")).unwrap() == data);
    let get = curl(pki, PROXY, &[&a.https_url("dir1/f1.bin")]);
    assert_eq!(get.status, 200);
    assert!(get.body == data, "GET returned other bytes");
    assert!(a.log().contains("login as testuser"), "{}", a.log());

    let head = curl(
        pki,
        PROXY,
        &[
            "-I",
            "-H",
            "Want-Digest: adler32",
            &a.https_url("dir1/f1.bin"),
        ],
    );
    let adler = format!("adler32={:08x}", adler2::adler32_slice(&data));
    assert_eq!(head.header("Digest"), Some(adler), "{}", head.headers);

    // Test User may read but not write under READONLY, and write right next to it.
    a.write_file("/readonly/in.txt", b"seeded");
    let ro = curl(pki, PROXY, &[&a.https_url("readonly/in.txt")]);
    assert_eq!((ro.status, ro.text().as_str()), (200, "seeded"));
    let denied = curl(pki, PROXY, &["-T", src_arg, &a.https_url("readonly/x.bin")]);
    assert_eq!(denied.status, 403, "{}", denied.text());
    assert!(
        denied.text().contains("permission denied"),
        "{}",
        denied.text()
    );
    let beside = curl(
        pki,
        PROXY,
        &["-T", src_arg, &a.https_url("readonlyX/x.bin")],
    );
    assert_eq!(beside.status, 200, "{}", beside.text());
    // A seeded file can be overwritten and deleted by the server.
    a.write_file("/seeded/over.bin", b"old");
    let over = curl(
        pki,
        PROXY,
        &["-T", src_arg, &a.https_url("seeded/over.bin")],
    );
    assert_eq!(over.status, 200, "{}", over.text());
    let delete = curl(
        pki,
        PROXY,
        &["-X", "DELETE", &a.https_url("seeded/over.bin")],
    );
    assert_eq!(delete.status, 200, "{}", delete.text());
    assert!(!a.data_path("seeded/over.bin").exists());

    // HTTP-TPC pull: B fetches from A with A's macaroon; the verdict is the last line.
    let token = macaroon(pki, &a.https_url("dir1/f1.bin"), "DOWNLOAD,LIST");
    let source = format!("Source: {}", a.https_url("dir1/f1.bin"));
    let authz = format!("TransferHeaderAuthorization: Bearer {token}");
    let copy = curl(
        pki,
        PROXY,
        &[
            "-N",
            "-X",
            "COPY",
            "-H",
            &source,
            "-H",
            "Credential: none",
            "-H",
            &authz,
            "-H",
            "X-Number-Of-Streams: 2",
            &b.https_url("pull1.bin"),
        ],
    );
    assert_eq!(copy.status, 201, "{}\n{}", copy.text(), b.log());
    let text = copy.text();
    assert!(text.starts_with("Perf Marker\n"), "{text}");
    assert_eq!(text.lines().last(), Some("success: Created"), "{text}");
    assert!(fs::read(b.data_path("pull1.bin")).unwrap() == data);
    assert!(
        b.log().contains("TPC_PullRequest: event=TRANSFER_SUCCESS"),
        "{}",
        b.log()
    );

    // root:// with GSI: xrdcp reads what https wrote.
    let back = tempfile::tempdir().unwrap();
    let out = Command::new("xrdcp")
        .args(["-s", "-f", &a.root_url("dir1/f1.bin")])
        .arg(back.path().join("r.bin"))
        .env("X509_CERT_DIR", pki.ca_dir())
        .env("X509_VOMS_DIR", pki.voms_dir())
        .env("X509_USER_PROXY", pki.path(PROXY))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "xrdcp: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(fs::read(back.path().join("r.bin")).unwrap() == data);
}

#[test]
fn xrootd_throttled_source_is_slow() {
    let Some(pki) = pki() else { return };
    if !available(&["xrootd", "curl"]) {
        return;
    }
    let slow = Xrootd::start(
        pki,
        "s",
        Options {
            throttle: true,
            ..Default::default()
        },
    );
    let size = 40_000_000;
    slow.write_file("slow.bin", &sample_data(size, 2));
    let get = curl(pki, PROXY, &[&slow.https_url("slow.bin")]);
    assert_eq!((get.status, get.body.len()), (200, size));
    eprintln!(
        "throttled xrootd: {size} bytes in {:.2} s ({:.1} MB/s; configured ~20 MB/s)",
        get.seconds,
        size as f64 / get.seconds / 1e6
    );
}

#[test]
fn apache_accepts_a_legacy_proxy_and_logs_its_dn() {
    let Some(pki) = pki() else { return };
    if !available(&["apache2", "curl"]) {
        return;
    }
    let apache = Apache::start(pki);
    let data = sample_data(100_000, 3);
    let src = tempfile::NamedTempFile::new().unwrap();
    fs::write(src.path(), &data).unwrap();
    let src_arg = src.path().to_str().unwrap();

    let put = curl(
        pki,
        "proxy_legacy.pem",
        &["-T", src_arg, &apache.https_url("legacy.bin")],
    );
    assert_eq!(put.status, 201, "{}", put.text());
    assert!(fs::read(apache.data_path("legacy.bin")).unwrap() == data);
    apache.access_line(|l| {
        l.contains("verify=SUCCESS")
            && l.contains("CN=Test User,DC=example,DC=org\"")
            && l.contains("\"PUT /legacy.bin HTTP/1.1\" 201")
    });
    // No Want-Digest support, and mod_dav does not create parents.
    let head = curl(
        pki,
        PROXY,
        &[
            "-I",
            "-H",
            "Want-Digest: adler32",
            &apache.https_url("legacy.bin"),
        ],
    );
    assert_eq!((head.status, head.header("Digest")), (200, None));
    let orphan = curl(pki, PROXY, &["-T", src_arg, &apache.https_url("no/such/f")]);
    assert_eq!(orphan.status, 409);

    // Dropping the fixture stops the server and removes its directory.
    let (port, dir) = (apache.port(), apache.dir().to_path_buf());
    drop(apache);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    assert!(!dir.exists());
}

#[test]
fn moto_bucket_and_object_roundtrip_with_gfal() {
    if !available(&["moto", "gfal2"]) {
        return;
    }
    let moto = Moto::start();
    moto.create_bucket("bkt");
    let data = sample_data(1_000_000, 4);
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("up.bin"), &data).unwrap();
    let gfal_copy = |from: String, to: String| {
        let out = gfal_command("gfal-copy")
            .arg("-f")
            .args(gfal_s3_options())
            .args([&from, &to])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "gfal-copy {from} {to}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let file_url = |name: &str| format!("file://{}", tmp.path().join(name).display());

    gfal_copy(file_url("up.bin"), moto.s3_url("bkt", "up.bin"));
    assert!(moto.get_object("bkt", "up.bin") == Some(data.clone()));
    assert_eq!(moto.get_object("bkt", "missing"), None);

    moto.put_object("bkt", "dir/src.bin", &data);
    gfal_copy(moto.s3_url("bkt", "dir/src.bin"), file_url("down.bin"));
    assert!(fs::read(tmp.path().join("down.bin")).unwrap() == data);
    assert!(moto.log().contains("X-Amz-Algorithm=AWS4-HMAC-SHA256"));
}
