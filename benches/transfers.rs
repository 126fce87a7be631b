//! Transfer benchmarks: the `ftsd` release binary, as its own process, moving data between two
//! local XRootD 5 instances over https (the fixtures of the integration tests, see
//! `tests/integration/peers.rs`) with Test User's delegated proxy, and `curl` doing the same.
//!
//! Phases (`--phases`, both by default):
//! - `stream`: one `--size-mib` file (1 GiB) copied through ftsd, streamed (GET from A, PUT to
//!   B; `/config/se` sets `tpc_support` PULL on A and PUSH on B), checksum mode none; against
//!   `curl` GET piped into `curl` PUT and `curl` GET to a file then PUT, with Test User's proxy.
//!   Each of `--runs` rounds runs the three one after the other. Per copy: the agent's
//!   "Transfer done in X s", the job's wall time (submission to FINISHED, polled every 100 ms),
//!   CPU time of ftsd, both XRootDs and curl, and ftsd's peak memory (VmHWM, reset before
//!   each copy).
//! - `tpc`: `--files` small files (`--file-size`, 1 KiB) copied by HTTP-TPC pull (A's macaroon,
//!   COPY at B), submitted in jobs of `--files-per-job` files, for each link concurrency of
//!   `--concurrency` (`[engine] default_link_active`, optimizer off; a fresh ftsd each):
//!   files/s from the first submission to the last job seen terminal, CPU per transfer, and
//!   where a transfer's time goes (the per-transfer logs' timestamps, step by step).
//!
//! The XRootD instances, the test PKI and the 1 GiB files live under `--peer-dir`
//! (`/dev/shm` by default: the copies measure the network path, not the disk); ftsd's database
//! and transfer logs under `--ftsd-dir` (the system temp dir: a real disk). Everything is
//! removed at the end. Needs xrootd (server and plugins), curl, openssl and the grid tools of
//! the test PKI (`voms-clients`, `globus-proxy-utils`); without them it prints `SKIPPING:` and
//! exits.
//!
//! Run: `cargo bench --bench transfers -- --help`.

// The test fixtures, shared with the integration tests; this binary uses part of them (their
// tests are not compiled here, so some imports go unused).
#[path = "../tests/integration/common.rs"]
mod common;
#[path = "../tests/integration/peers.rs"]
#[allow(unused_imports)]
mod peers;
mod support;

use std::{
    collections::BTreeMap,
    io::Read,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use clap::Parser;
use serde_json::{Value, json};

use common::{Client, ROOT, TEST_USER, TestPki, delegate_test_user, post_json, spawn_ftsd_with};
use peers::{Options, Xrootd, sample_data};
use support::machine;

#[derive(Parser, Debug, Clone)]
#[command(about = "ftsd transfer benchmarks against two local XRootD https instances")]
struct Args {
    /// Phases to run, in this order: stream, tpc.
    #[arg(long, value_delimiter = ',', default_values_t = ["stream".to_string(), "tpc".into()])]
    phases: Vec<String>,
    /// Repetitions of every measurement (the summary gives the median).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Size of the streamed file, in MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Small files per `tpc` run.
    #[arg(long, default_value_t = 300)]
    files: usize,
    /// Size of each small file, in bytes.
    #[arg(long, default_value_t = 1024)]
    file_size: usize,
    /// Files per submitted job in the `tpc` phase.
    #[arg(long, default_value_t = 100)]
    files_per_job: usize,
    /// Link concurrencies (`[engine] default_link_active`) of the `tpc` phase. Above 200 the
    /// per-storage default (`default_se_active`) caps it.
    #[arg(long, value_delimiter = ',', default_values_t = vec![2, 10, 50])]
    concurrency: Vec<usize>,
    /// Directory for the XRootD instances, their data and the test PKI (default `/dev/shm`
    /// when it exists, else the system temp dir).
    #[arg(long)]
    peer_dir: Option<PathBuf>,
    /// Directory for ftsd's data directory (database, transfer logs); default the system
    /// temp dir.
    #[arg(long)]
    ftsd_dir: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How often the benchmark asks ftsd whether its jobs are done. Each poll is one request on a
/// new TLS connection (as the Python client does), so it costs ftsd a little CPU.
const POLL: Duration = Duration::from_millis(100);
/// A run that takes longer than this has gone wrong.
const RUN_LIMIT: Duration = Duration::from_secs(600);
/// How long ftsd may take to stop after SIGTERM before it is killed.
const STOP_LIMIT: Duration = Duration::from_secs(10);
/// XRootD instance names (their pid files are `<dir>/run/<name>/xrootd.pid`).
const SOURCE: &str = "a";
const DESTINATION: &str = "b";

fn main() {
    let args = Args::parse();
    for p in &args.phases {
        if !["stream", "tpc"].contains(&p.as_str()) {
            eprintln!("unknown phase {p:?}");
            std::process::exit(2);
        }
    }
    let ftsd_dir = args.ftsd_dir.clone().unwrap_or_else(std::env::temp_dir);
    let peer_dir = args.peer_dir.clone().unwrap_or_else(|| {
        let shm = PathBuf::from("/dev/shm");
        if shm.is_dir() {
            shm
        } else {
            std::env::temp_dir()
        }
    });
    // The fixtures make their directories with `tempfile`, which reads TMPDIR.
    // SAFETY: no other thread runs yet, so nothing reads the environment concurrently.
    unsafe { std::env::set_var("TMPDIR", &peer_dir) };
    if let Err(e) = run(&args, &peer_dir, &ftsd_dir) {
        eprintln!("benchmark failed: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args, peer_dir: &Path, ftsd_dir: &Path) -> Result<(), BoxError> {
    if !peers::available(&["xrootd", "curl", "openssl"]) {
        return Ok(());
    }
    let Some(pki) = common::pki() else {
        return Ok(());
    };
    let _pki_dir = RemoveOnDrop(pki.dir.clone());
    println!("{}", machine());
    println!(
        "peers and PKI under {}, ftsd data under {}; ftsd: {}",
        peer_dir.display(),
        ftsd_dir.display(),
        env!("CARGO_BIN_EXE_ftsd")
    );
    let a = Xrootd::start(pki, SOURCE, Options::default());
    let b = Xrootd::start(pki, DESTINATION, Options::default());
    let peers = Peers {
        a_pid: xrootd_pid(&a, SOURCE)?,
        b_pid: xrootd_pid(&b, DESTINATION)?,
        a,
        b,
    };
    let wants = |p: &str| args.phases.iter().any(|x| x == p);
    if wants("stream") {
        let runs = stream_phase(args, pki, &peers, ftsd_dir)?;
        print_stream(args, &runs);
    }
    if wants("tpc") {
        let levels = tpc_phase(args, pki, &peers, ftsd_dir)?;
        print_tpc(args, &levels);
    }
    Ok(())
}

/// The fixtures keep the PKI for the whole test binary; here it goes with the benchmark.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Peers {
    a: Xrootd,
    b: Xrootd,
    a_pid: u32,
    b_pid: u32,
}

impl Peers {
    /// `davs://127.0.0.1:<b>/<path>`: B under the name `127.0.0.1`, so that the two instances
    /// are two storage elements (`davs://localhost`, `davs://127.0.0.1`) for `/config/se`.
    fn b_url(&self, scheme: &str, path: &str) -> String {
        format!(
            "{scheme}://127.0.0.1:{}/{}",
            self.b.https_port(),
            path.trim_start_matches('/')
        )
    }
}

fn xrootd_pid(x: &Xrootd, name: &str) -> Result<u32, BoxError> {
    let file = x.dir().join("run").join(name).join("xrootd.pid");
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(text.trim().parse()?)
}

// ---------------------------------------------------------------------------------------------
// ftsd, as a separate process (its CPU and memory are then its own).

struct Ftsd {
    child: Child,
    user: Client,
    root: Client,
    _dir: tempfile::TempDir,
}

impl Ftsd {
    /// Start `ftsd serve` with `[engine]` settings `engine`, and delegate Test User's proxy.
    fn start(pki: &TestPki, parent: &Path, engine: &str) -> Result<Ftsd, BoxError> {
        let dir = tempfile::Builder::new()
            .prefix("ftsd-bench-")
            .tempdir_in(parent)?;
        let config = format!("[engine]\nenabled = true\nscheduling_interval = 1\n{engine}");
        let (child, port) = spawn_ftsd_with(pki, &dir.path().join("data"), &config);
        let ca = pki.path("ca.pem");
        let user = Client::new(port, &ca, Some(pki.path(TEST_USER)));
        let root = Client::new(port, &ca, Some(pki.path(ROOT)));
        let ftsd = Ftsd {
            child,
            user,
            root,
            _dir: dir,
        };
        let whoami = ftsd.user.get("/whoami")?.json();
        let dlg_id = whoami["delegation_id"]
            .as_str()
            .ok_or("no delegation_id in /whoami")?;
        let (status, body) = delegate_test_user(&ftsd.user, pki, dlg_id, false);
        if status != 201 {
            return Err(format!("delegation failed: HTTP {status}: {body}").into());
        }
        Ok(ftsd)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `tpc_support` of a storage element.
    fn tpc_support(&self, se: &str, value: &str) -> Result<(), BoxError> {
        let body = json!({ se: {"se_info": {"tpc_support": value}}});
        let reply = post_json(&self.root, "/config/se", &body);
        if reply.status != 200 {
            return Err(format!("/config/se: HTTP {}: {}", reply.status, reply.text()).into());
        }
        Ok(())
    }

    /// Submit one job of `(source, destination)` pairs; returns its id.
    fn submit(&self, pairs: &[(String, String)]) -> Result<String, BoxError> {
        let files: Vec<Value> = pairs
            .iter()
            .map(|(s, d)| json!({"sources": [s], "destinations": [d]}))
            .collect();
        let body = json!({"files": files, "params": {"verify_checksum": "none"}});
        let reply = post_json(&self.user, "/jobs", &body);
        if reply.status != 200 {
            return Err(format!("POST /jobs: HTTP {}: {}", reply.status, reply.text()).into());
        }
        Ok(reply.json()["job_id"]
            .as_str()
            .ok_or("no job_id")?
            .to_string())
    }

    /// Poll `GET /jobs/<id>,<id>...` until every job is terminal; returns when that was seen.
    fn wait(&self, ids: &[String]) -> Result<Instant, BoxError> {
        let started = Instant::now();
        let path = format!("/jobs/{}", ids.join(","));
        loop {
            let reply = self.user.get(&path)?;
            if !matches!(reply.status, 200 | 207) {
                return Err(format!("GET {path}: HTTP {}: {}", reply.status, reply.text()).into());
            }
            let seen = Instant::now();
            let jobs = match reply.json() {
                Value::Array(jobs) => jobs,
                job => vec![job],
            };
            let terminal = |j: &Value| {
                matches!(
                    j["job_state"].as_str(),
                    Some("FINISHED" | "FAILED" | "FINISHEDDIRTY" | "CANCELED")
                )
            };
            if jobs.len() == ids.len() && jobs.iter().all(terminal) {
                return Ok(seen);
            }
            if started.elapsed() > RUN_LIMIT {
                return Err(format!("jobs not done after {RUN_LIMIT:?}").into());
            }
            std::thread::sleep(POLL);
        }
    }

    fn files(&self, id: &str) -> Result<Vec<Value>, BoxError> {
        let reply = self.user.get(&format!("/jobs/{id}/files"))?;
        match reply.json() {
            Value::Array(files) => Ok(files),
            other => Err(format!("GET /jobs/{id}/files: {other}").into()),
        }
    }
}

impl Drop for Ftsd {
    fn drop(&mut self) {
        // SIGTERM: a graceful stop, as systemd does it.
        // SAFETY: plain syscall on the pid of our own child, which we have not waited for yet.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_LIMIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// What the processes used, from /proc.

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// User + system CPU seconds of a process (all its threads).
fn process_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // "pid (comm) state ppid ...": utime and stime are the 14th and 15th fields.
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    (field(11).unwrap_or(0.0) + field(12).unwrap_or(0.0)) / clock_ticks()
}

/// CPU seconds of this process's waited-for children (the curl runs).
fn children_cpu() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Busy CPU seconds of the whole machine (all cores), from /proc/stat.
fn machine_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().next() else {
        return 0.0;
    };
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let total: f64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).unwrap_or(&0.0) + ticks.get(4).unwrap_or(&0.0);
    (total - idle) / clock_ticks()
}

/// Read and write system calls of a process so far (`/proc/<pid>/io` `syscr`, `syscw`): how
/// finely a stream is cut (a TLS record or more per read).
fn process_syscalls(pid: u32) -> (u64, u64) {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let field = |name: &str| {
        io.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("syscr"), field("syscw"))
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Reset a process's peak resident set (VmHWM) to its current size (Linux ≥ 4.0, as root or
/// the owner).
fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// CPU seconds used between two [`Usage::now`] calls.
#[derive(Clone, Copy, Default, Debug)]
struct Usage {
    ftsd: f64,
    source: f64,
    destination: f64,
    children: f64,
    /// This benchmark's own process (its HTTPS client).
    bench: f64,
    machine_busy: f64,
    /// Read system calls of the source XRootD and write system calls of the destination's,
    /// and ftsd's reads and writes.
    source_writes: u64,
    destination_reads: u64,
    ftsd_reads: u64,
    ftsd_writes: u64,
}

impl Usage {
    fn now(ftsd: Option<u32>, peers: &Peers) -> Usage {
        let busy = machine_cpu();
        let (ftsd_reads, ftsd_writes) = ftsd.map_or((0, 0), process_syscalls);
        Usage {
            source_writes: process_syscalls(peers.a_pid).1,
            destination_reads: process_syscalls(peers.b_pid).0,
            ftsd_reads,
            ftsd_writes,
            ftsd: ftsd.map_or(0.0, process_cpu),
            source: process_cpu(peers.a_pid),
            destination: process_cpu(peers.b_pid),
            children: children_cpu(),
            bench: process_cpu(std::process::id()),
            machine_busy: busy,
        }
    }

    fn since(self, before: Usage) -> Usage {
        Usage {
            ftsd: self.ftsd - before.ftsd,
            source: self.source - before.source,
            destination: self.destination - before.destination,
            children: self.children - before.children,
            bench: self.bench - before.bench,
            machine_busy: self.machine_busy - before.machine_busy,
            source_writes: self.source_writes - before.source_writes,
            destination_reads: self.destination_reads - before.destination_reads,
            ftsd_reads: self.ftsd_reads - before.ftsd_reads,
            ftsd_writes: self.ftsd_writes - before.ftsd_writes,
        }
    }

    /// Cores in use on the whole machine over `secs` of wall time.
    fn machine_cores(&self, secs: f64) -> f64 {
        self.machine_busy / secs
    }

    /// Cores used by everything but ftsd, the XRootDs, curl and this benchmark: other users of
    /// the machine, and kernel work charged to no process.
    fn other_cores(&self, secs: f64) -> f64 {
        let ours = self.ftsd + self.source + self.destination + self.children + self.bench;
        (self.machine_busy - ours).max(0.0) / secs
    }
}

// ---------------------------------------------------------------------------------------------
// Transfer logs.

/// One line of a transfer log: milliseconds since midnight and the message.
fn log_lines(path: &str) -> Vec<(i64, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out: Vec<(i64, String)> = Vec::new();
    for line in text.lines() {
        // "2026-11-29 12:00:00,123 INFO    message"
        let (Some(clock), Some(rest)) = (line.get(11..23), line.get(24..)) else {
            continue;
        };
        let number = |r: std::ops::Range<usize>| clock.get(r).and_then(|v| v.parse::<i64>().ok());
        let (Some(h), Some(m), Some(s), Some(ms)) =
            (number(0..2), number(3..5), number(6..8), number(9..12))
        else {
            continue;
        };
        let mut t = ((h * 60 + m) * 60 + s) * 1000 + ms;
        if let Some((last, _)) = out.last() {
            if t < *last {
                t += 86_400_000; // past midnight
            }
        }
        let message = rest.split_once(' ').map_or(rest, |(_, m)| m).trim_start();
        out.push((t, message.to_string()));
    }
    out
}

/// A log message with its URLs and numbers replaced, so that the same step of different
/// transfers has the same label (HTTP status codes are kept).
fn step_label(message: &str) -> String {
    let mut words = Vec::new();
    let mut after_http = false;
    for word in message.split_whitespace() {
        let core = word
            .trim_start_matches('(')
            .trim_end_matches([')', ',', ':']);
        let (open, close) = (
            &word[..word.len() - word.trim_start_matches('(').len()],
            &word[word.trim_end_matches([')', ',', ':']).len()..],
        );
        let label = if core.contains("://") {
            "<url>"
        } else if !after_http && core.chars().any(|c| c.is_ascii_digit()) {
            "#"
        } else {
            core
        };
        after_http = word == "HTTP";
        words.push(format!("{open}{label}{close}"));
    }
    words.join(" ")
}

/// The `Transfer done in X s` of a log, in seconds.
fn copy_seconds(lines: &[(i64, String)]) -> Option<f64> {
    lines.iter().find_map(|(_, m)| {
        m.strip_prefix("Transfer done in ")?
            .trim_end_matches(" s")
            .parse()
            .ok()
    })
}

/// Per step: how many transfers logged it and the total milliseconds since the line before.
#[derive(Default)]
struct Steps {
    order: Vec<String>,
    totals: BTreeMap<String, (u64, i64)>,
    /// Total milliseconds from the first to the last line of each log.
    span_ms: i64,
    logs: u64,
}

impl Steps {
    fn add(&mut self, lines: &[(i64, String)]) {
        if let (Some(first), Some(last)) = (lines.first(), lines.last()) {
            self.span_ms += last.0 - first.0;
            self.logs += 1;
        }
        // The same request twice in one log (HEAD of the destination before and after the
        // copy) are two steps.
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for pair in lines.windows(2) {
            let mut label = step_label(&pair[1].1);
            let n = seen.entry(label.clone()).or_default();
            *n += 1;
            if *n > 1 {
                label = format!("{label} (again, {n})");
            }
            let entry = self.totals.entry(label.clone()).or_insert_with(|| {
                self.order.push(label);
                (0, 0)
            });
            entry.0 += 1;
            entry.1 += pair[1].0 - pair[0].0;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Streaming: 1 GiB through ftsd against curl.

#[derive(Debug, Default)]
struct StreamRun {
    /// What was measured: "ftsd", "curl GET | curl PUT", "curl GET to file, then PUT".
    method: &'static str,
    /// Seconds of the copy itself (ftsd: the agent's "Transfer done in"; curl: the commands).
    copy: f64,
    /// ftsd: submission to FINISHED seen; curl: the same as `copy`.
    wall: f64,
    /// Seconds of the two curl steps (to file, from file).
    steps: Option<(f64, f64)>,
    usage: Usage,
    /// ftsd resident set before the copy and its peak during the copy, KiB.
    rss_before: u64,
    rss_peak: Option<u64>,
}

fn stream_phase(
    args: &Args,
    pki: &TestPki,
    peers: &Peers,
    ftsd_dir: &Path,
) -> Result<Vec<StreamRun>, BoxError> {
    let size = args.size_mib << 20;
    eprintln!("stream: writing a {} MiB source file", args.size_mib);
    let src_file = peers
        .a
        .write_file("/stream/src.bin", &sample_data(size as usize, 42));
    let ftsd = Ftsd::start(pki, ftsd_dir, "optimizer = false\n")?;
    // Neither side does third-party copies: the bytes go through ftsd (fallback disabled).
    ftsd.tpc_support("davs://localhost", "PULL")?;
    ftsd.tpc_support("davs://127.0.0.1", "PUSH")?;
    let src = peers.a.davs_url("/stream/src.bin");
    let mut runs = Vec::new();
    for run in 1..=args.runs {
        let r = stream_ftsd(&ftsd, peers, &src, run)?;
        check_copy(
            &src_file,
            &peers.b.data_path(&format!("/stream/ftsd-{run}.bin")),
        )?;
        report_stream(run, size, &r);
        runs.push(r);

        let r = stream_curl_pipe(pki, peers, size, run)?;
        check_copy(
            &src_file,
            &peers.b.data_path(&format!("/stream/pipe-{run}.bin")),
        )?;
        report_stream(run, size, &r);
        runs.push(r);

        let r = stream_curl_file(pki, peers, run)?;
        check_copy(
            &src_file,
            &peers.b.data_path(&format!("/stream/file-{run}.bin")),
        )?;
        report_stream(run, size, &r);
        runs.push(r);
    }
    std::fs::remove_file(&src_file)?;
    Ok(runs)
}

fn report_stream(run: usize, size: u64, r: &StreamRun) {
    eprintln!(
        "  run {run}: {:<30} {:>7.3} s ({:>6.1} MiB/s), wall {:>7.3} s, CPU ftsd {:.2} s, curl {:.2} s, xrootd A {:.2} s, B {:.2} s, other processes {:.2} cores; syscalls: A writes {}, B reads {}, ftsd reads {} writes {}{}",
        r.method,
        r.copy,
        mib_per_s(size, r.copy),
        r.wall,
        r.usage.ftsd,
        r.usage.children,
        r.usage.source,
        r.usage.destination,
        r.usage.other_cores(r.wall),
        r.usage.source_writes,
        r.usage.destination_reads,
        r.usage.ftsd_reads,
        r.usage.ftsd_writes,
        r.rss_peak
            .map(|p| format!(", ftsd RSS {} → peak {} MiB", r.rss_before / 1024, p / 1024))
            .unwrap_or_default()
    );
}

fn mib_per_s(size: u64, secs: f64) -> f64 {
    size as f64 / f64::from(1u32 << 20) / secs
}

fn stream_ftsd(ftsd: &Ftsd, peers: &Peers, src: &str, run: usize) -> Result<StreamRun, BoxError> {
    let dst = peers.b_url("davs", &format!("/stream/ftsd-{run}.bin"));
    let pid = ftsd.pid();
    let rss_before = status_kib(pid, "VmRSS");
    let peak_reset = reset_peak(pid);
    let before = Usage::now(Some(pid), peers);
    let start = Instant::now();
    let id = ftsd.submit(&[(src.to_string(), dst)])?;
    let done = ftsd.wait(std::slice::from_ref(&id))?;
    let usage = Usage::now(Some(pid), peers).since(before);
    let rss_peak = peak_reset.then(|| status_kib(pid, "VmHWM"));
    let files = ftsd.files(&id)?;
    let f = files.first().ok_or("a job without files")?;
    if f["file_state"] != "FINISHED" {
        return Err(format!("streamed copy {}: {}", f["file_state"], f["reason"]).into());
    }
    let log = log_lines(f["log_file"].as_str().unwrap_or_default());
    if !log
        .iter()
        .any(|(_, m)| m.starts_with("Copy mode: streamed"))
    {
        return Err("the copy was not streamed (see its log)".into());
    }
    Ok(StreamRun {
        method: "ftsd (streamed)",
        copy: copy_seconds(&log).ok_or("no `Transfer done in` in the log")?,
        wall: done.duration_since(start).as_secs_f64(),
        steps: None,
        usage,
        rss_before,
        rss_peak,
    })
}

/// `curl` with Test User's RFC proxy (the credential ftsd was delegated from), trusting the
/// test CAs; fails on HTTP errors.
fn curl(pki: &TestPki) -> Command {
    let proxy = pki.path("proxy_rfc.pem");
    let mut c = Command::new("curl");
    c.args(["-sS", "--fail-with-body", "--cert"])
        .arg(&proxy)
        .arg("--key")
        .arg(&proxy)
        .arg("--capath")
        .arg(pki.ca_dir());
    c
}

fn finish(child: &mut Child, what: &str) -> Result<(), BoxError> {
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut err)?;
    }
    let status = child.wait()?;
    if !status.success() {
        return Err(format!("{what}: {status}: {err}").into());
    }
    Ok(())
}

/// `curl GET | curl PUT -T -`, with the size in Content-Length as ftsd sends it (curl would
/// otherwise send the body chunked; with a Content-Length header it sends both unless told
/// not to, which XRootD answers by closing the connection).
fn stream_curl_pipe(
    pki: &TestPki,
    peers: &Peers,
    size: u64,
    run: usize,
) -> Result<StreamRun, BoxError> {
    let src = peers.a.https_url("/stream/src.bin");
    let dst = peers.b_url("https", &format!("/stream/pipe-{run}.bin"));
    let before = Usage::now(None, peers);
    let start = Instant::now();
    let mut get = curl(pki)
        .arg(&src)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pipe = get.stdout.take().ok_or("no curl stdout")?;
    let mut put = curl(pki)
        .args(["-o", "/dev/null", "-H"])
        .arg(format!("Content-Length: {size}"))
        .args(["-H", "Transfer-Encoding:", "-T", "-"])
        .arg(&dst)
        .stdin(pipe)
        .stderr(Stdio::piped())
        .spawn()?;
    let put_result = finish(&mut put, "curl PUT");
    finish(&mut get, "curl GET").and(put_result)?;
    let secs = start.elapsed().as_secs_f64();
    Ok(StreamRun {
        method: "curl GET | curl PUT",
        copy: secs,
        wall: secs,
        usage: Usage::now(None, peers).since(before),
        ..StreamRun::default()
    })
}

/// `curl GET -o file`, then `curl PUT -T file` (the file on the peers' file system).
fn stream_curl_file(pki: &TestPki, peers: &Peers, run: usize) -> Result<StreamRun, BoxError> {
    let src = peers.a.https_url("/stream/src.bin");
    let dst = peers.b_url("https", &format!("/stream/file-{run}.bin"));
    let tmp = tempfile::Builder::new()
        .prefix("ftsd-bench-curl-")
        .tempdir()?;
    let file = tmp.path().join("copy.bin");
    let before = Usage::now(None, peers);
    let start = Instant::now();
    let mut get = curl(pki)
        .arg("-o")
        .arg(&file)
        .arg(&src)
        .stderr(Stdio::piped())
        .spawn()?;
    finish(&mut get, "curl GET")?;
    let got = start.elapsed().as_secs_f64();
    let mut put = curl(pki)
        .args(["-o", "/dev/null", "-T"])
        .arg(&file)
        .arg(&dst)
        .stderr(Stdio::piped())
        .spawn()?;
    finish(&mut put, "curl PUT")?;
    let secs = start.elapsed().as_secs_f64();
    Ok(StreamRun {
        method: "curl GET to file, then PUT",
        copy: secs,
        wall: secs,
        steps: Some((got, secs - got)),
        usage: Usage::now(None, peers).since(before),
        ..StreamRun::default()
    })
}

/// The destination holds the source's bytes; then it is removed (the memory is needed back).
fn check_copy(source: &Path, destination: &Path) -> Result<(), BoxError> {
    let mut a = std::fs::File::open(source)?;
    let mut b =
        std::fs::File::open(destination).map_err(|e| format!("{}: {e}", destination.display()))?;
    let (mut x, mut y) = (vec![0u8; 8 << 20], vec![0u8; 8 << 20]);
    loop {
        let n = read_full(&mut a, &mut x)?;
        let m = read_full(&mut b, &mut y)?;
        if n != m || x[..n] != y[..m] {
            return Err(format!("{} differs from the source", destination.display()).into());
        }
        if n == 0 {
            break;
        }
    }
    std::fs::remove_file(destination)?;
    Ok(())
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn print_stream(args: &Args, runs: &[StreamRun]) {
    let size = args.size_mib << 20;
    println!();
    println!(
        "Streamed copy of {} MiB, A → B over https, median of {} runs (min–max):",
        args.size_mib, args.runs
    );
    println!(
        "{:<30} {:>22} {:>10} {:>11} {:>9} {:>9} {:>10} {:>10} {:>15} {:>7}",
        "method",
        "copy s",
        "MiB/s",
        "wall s",
        "CPU ftsd",
        "CPU curl",
        "CPU xrd A",
        "CPU xrd B",
        "ftsd RSS MiB",
        "other"
    );
    let methods: Vec<&str> = runs.iter().map(|r| r.method).fold(Vec::new(), |mut v, m| {
        if !v.contains(&m) {
            v.push(m);
        }
        v
    });
    let mut copies = BTreeMap::new();
    for method in methods {
        let of: Vec<&StreamRun> = runs.iter().filter(|r| r.method == method).collect();
        let pick = |f: &dyn Fn(&StreamRun) -> f64| median(of.iter().map(|r| f(r)).collect());
        let copy = pick(&|r| r.copy);
        let (lo, hi) = of.iter().fold((f64::MAX, 0.0f64), |(lo, hi), r| {
            (lo.min(r.copy), hi.max(r.copy))
        });
        copies.insert(method, copy);
        let rss = match of.iter().filter_map(|r| r.rss_peak).max() {
            Some(peak) => format!(
                "{:.0} → {:.0}",
                pick(&|r| r.rss_before as f64) / 1024.0,
                peak as f64 / 1024.0
            ),
            None => "-".into(),
        };
        println!(
            "{:<30} {:>7.3} ({:.3}–{:.3}) {:>10.1} {:>11.3} {:>9.2} {:>9.2} {:>10.2} {:>10.2} {:>15} {:>7.2}",
            method,
            copy,
            lo,
            hi,
            mib_per_s(size, copy),
            pick(&|r| r.wall),
            pick(&|r| r.usage.ftsd),
            pick(&|r| r.usage.children),
            pick(&|r| r.usage.source),
            pick(&|r| r.usage.destination),
            rss,
            pick(&|r| r.usage.other_cores(r.wall))
        );
        if of.iter().any(|r| r.steps.is_some()) {
            println!(
                "{:<30} GET {:.3} s + PUT {:.3} s (medians)",
                "",
                median(of.iter().filter_map(|r| r.steps).map(|s| s.0).collect()),
                median(of.iter().filter_map(|r| r.steps).map(|s| s.1).collect())
            );
        }
    }
    if let Some(ftsd) = copies.get("ftsd (streamed)") {
        for (method, secs) in &copies {
            if *method != "ftsd (streamed)" {
                println!(
                    "ftsd copy time / {method}: {:.2} (ftsd throughput {:.0} % of it)",
                    ftsd / secs,
                    100.0 * secs / ftsd
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Third-party copies of small files.

struct TpcRun {
    elapsed: f64,
    submit: f64,
    finished: usize,
    failed: usize,
    first_failure: Option<String>,
    usage: Usage,
}

struct TpcLevel {
    concurrency: usize,
    runs: Vec<TpcRun>,
    steps: Steps,
}

fn tpc_phase(
    args: &Args,
    pki: &TestPki,
    peers: &Peers,
    ftsd_dir: &Path,
) -> Result<Vec<TpcLevel>, BoxError> {
    eprintln!(
        "tpc: writing {} source files of {} bytes",
        args.files, args.file_size
    );
    for i in 0..args.files {
        peers.a.write_file(
            &format!("/tpc/src/{i:05}.bin"),
            &sample_data(args.file_size, i as u64),
        );
    }
    let mut levels = Vec::new();
    for &c in &args.concurrency {
        let ftsd = Ftsd::start(
            pki,
            ftsd_dir,
            &format!("optimizer = false\ndefault_link_active = {c}\n"),
        )?;
        let mut level = TpcLevel {
            concurrency: c,
            runs: Vec::new(),
            steps: Steps::default(),
        };
        for run in 1..=args.runs {
            let r = tpc_run(args, &ftsd, peers, c, run, &mut level.steps)?;
            eprintln!(
                "  concurrency {c:>3}, run {run}: {} finished, {} failed in {:.2} s: {:.1} files/s; CPU ftsd {:.2} s, xrootd A {:.2} s, B {:.2} s; machine {:.2} cores, of which other processes {:.2}{}",
                r.finished,
                r.failed,
                r.elapsed,
                r.finished as f64 / r.elapsed,
                r.usage.ftsd,
                r.usage.source,
                r.usage.destination,
                r.usage.machine_cores(r.elapsed),
                r.usage.other_cores(r.elapsed),
                r.first_failure
                    .as_ref()
                    .map(|f| format!("; first failure: {f}"))
                    .unwrap_or_default()
            );
            level.runs.push(r);
        }
        levels.push(level);
    }
    Ok(levels)
}

fn tpc_run(
    args: &Args,
    ftsd: &Ftsd,
    peers: &Peers,
    c: usize,
    run: usize,
    steps: &mut Steps,
) -> Result<TpcRun, BoxError> {
    let pairs: Vec<(String, String)> = (0..args.files)
        .map(|i| {
            (
                peers.a.davs_url(&format!("/tpc/src/{i:05}.bin")),
                peers.b_url("davs", &format!("/tpc/c{c}-r{run}/{i:05}.bin")),
            )
        })
        .collect();
    let pid = ftsd.pid();
    let before = Usage::now(Some(pid), peers);
    let start = Instant::now();
    let mut ids = Vec::new();
    for chunk in pairs.chunks(args.files_per_job.max(1)) {
        ids.push(ftsd.submit(chunk)?);
    }
    let submit = start.elapsed().as_secs_f64();
    let done = ftsd.wait(&ids)?;
    let usage = Usage::now(Some(pid), peers).since(before);
    let elapsed = done.duration_since(start).as_secs_f64();
    let (mut finished, mut failed, mut first_failure) = (0, 0, None);
    for id in &ids {
        for f in ftsd.files(id)? {
            if f["file_state"] == "FINISHED" {
                finished += 1;
            } else {
                failed += 1;
                first_failure
                    .get_or_insert_with(|| format!("{}: {}", f["file_state"], f["reason"]));
            }
            if let Some(path) = f["log_file"].as_str() {
                steps.add(&log_lines(path));
            }
        }
    }
    let written = std::fs::read_dir(peers.b.data_path(&format!("/tpc/c{c}-r{run}")))
        .map(|d| d.count())
        .unwrap_or(0);
    if written != finished {
        return Err(format!("{finished} transfers finished but B holds {written} files").into());
    }
    Ok(TpcRun {
        elapsed,
        submit,
        finished,
        failed,
        first_failure,
        usage,
    })
}

fn print_tpc(args: &Args, levels: &[TpcLevel]) {
    println!();
    println!(
        "HTTP-TPC pull of {} files of {} bytes, A → B, jobs of {} files; median of {} runs (min–max):",
        args.files, args.file_size, args.files_per_job, args.runs
    );
    println!(
        "{:>11} {:>24} {:>9} {:>9} {:>13} {:>10} {:>11} {:>11} {:>11} {:>8} {:>7}",
        "concurrency",
        "files/s",
        "secs",
        "submit s",
        "transfer ms",
        "in flight",
        "ftsd ms/f",
        "xrd A ms/f",
        "xrd B ms/f",
        "machine",
        "other"
    );
    for level in levels {
        let rates: Vec<f64> = level
            .runs
            .iter()
            .map(|r| r.finished as f64 / r.elapsed)
            .collect();
        let lo = rates.iter().copied().fold(f64::MAX, f64::min);
        let hi = rates.iter().copied().fold(0.0, f64::max);
        let pick = |f: &dyn Fn(&TpcRun) -> f64| median(level.runs.iter().map(f).collect());
        let per_file = |cpu: &dyn Fn(&Usage) -> f64| {
            pick(&|r| 1000.0 * cpu(&r.usage) / r.finished.max(1) as f64)
        };
        let transfer_ms = level.steps.span_ms as f64 / level.steps.logs.max(1) as f64;
        let elapsed = pick(&|r| r.elapsed);
        // Little's law: transfers in flight on average = rate × time per transfer.
        let in_flight = median(rates.clone()) * transfer_ms / 1000.0;
        println!(
            "{:>11} {:>8.1} ({:>5.1}–{:>5.1}) {:>9.2} {:>9.2} {:>13.1} {:>10.1} {:>11.2} {:>11.2} {:>11.2} {:>8.2} {:>7.2}",
            level.concurrency,
            median(rates),
            lo,
            hi,
            elapsed,
            pick(&|r| r.submit),
            transfer_ms,
            in_flight,
            per_file(&|u| u.ftsd),
            per_file(&|u| u.source),
            per_file(&|u| u.destination),
            pick(&|r| r.usage.machine_cores(r.elapsed)),
            pick(&|r| r.usage.other_cores(r.elapsed))
        );
        let failed: usize = level.runs.iter().map(|r| r.failed).sum();
        if failed > 0 {
            println!("{:>11} {failed} transfers failed", "");
        }
    }
    println!(
        "(transfer ms: a transfer's log, first line to last; in flight: files/s × transfer ms; \
         ms/f: CPU milliseconds per finished transfer; machine: cores busy, of {}; other: \
         cores used by other processes)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for level in levels {
        println!();
        println!(
            "Where a transfer's time goes at concurrency {} (mean ms since the previous log line, {} transfers):",
            level.concurrency, level.steps.logs
        );
        for label in &level.steps.order {
            let (count, total) = level.steps.totals[label];
            let mean = total as f64 / level.steps.logs.max(1) as f64;
            if mean >= 0.05 {
                println!(
                    "  {mean:>8.2}  {label}{}",
                    if count < level.steps.logs {
                        format!(" ({count} transfers)")
                    } else {
                        String::new()
                    }
                );
            }
        }
    }
}
