//! Reliability benchmark (issue 14): what an attacker without a certificate can do to an
//! `ftsd` binary, and how long a restart after `kill -9` takes. It runs any `ftsd` binary
//! (`--ftsd`, by default the one this build made), so the figures of RELIABILITY.md compare a
//! build of the code before the hardening with this one, under the same load.
//!
//! Phases (`--phases`, all by default):
//! - `flood`: for each attack (TCP without TLS, TLS then silence, HTTP/2 preface then silence,
//!   a stalled 1 MB body), `--flood` connections from 9 loopback addresses, each reopened
//!   `--reconnect-ms` after the server closes it, for `--seconds`; meanwhile a certificate
//!   holder (from 127.0.0.2) calls `GET /whoami` every 200 ms with a 5 s timeout: answers,
//!   failures, latencies.
//! - `memory`: 128 anonymous clients each `POST /jobs` a 12.7 MB body at once: the statuses, the
//!   server's peak resident memory (VmHWM) and its resident memory after.
//! - `restart`: a store of `--files` files (1,000-file jobs through the API), transfers running
//!   (mock, one hour each), then `--restarts` times: `kill -9`, start again, time until
//!   `GET /` answers; and one clean stop and start for comparison. With `--commit` it also
//!   measures the latency of 1-file submissions (one durable commit each) on that store;
//!   `--quick-repair true|false` runs the server with redb's quick repair on or off.
//!
//! The server runs with its default `[limits]` (only `--listen`, `--data-dir` and the PKI are
//! given, so older binaries accept the same command line). Needs the grid tools of the test
//! PKI (`tests/pki/make-test-pki.sh`). Run: `cargo bench --bench reliability -- --help`.

// The test fixtures, shared with the integration tests; this binary uses part of them.
#[path = "../tests/integration/common.rs"]
mod common;
mod support;

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::{Client, TEST_USER, TEST_USER_DN, TestPki, delegate_test_user, pki};
use support::machine;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser, Debug)]
#[command(about = "ftsd reliability: floods, anonymous uploads, restarts after kill -9")]
struct Args {
    /// The ftsd binary to run (default: this build's).
    #[arg(long)]
    ftsd: Option<PathBuf>,
    /// Phases to run, comma separated: flood, memory, restart.
    #[arg(long, default_value = "flood,memory,restart")]
    phases: String,
    /// Flooding connections per attack.
    #[arg(long, default_value_t = 2000)]
    flood: usize,
    /// Seconds each attack lasts.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Milliseconds a flooding connection waits, once closed, before it connects again.
    #[arg(long, default_value_t = 1000)]
    reconnect_ms: u64,
    /// Files in the store of the restart phase.
    #[arg(long, default_value_t = 1_000_000)]
    files: usize,
    /// kill -9 / restart cycles.
    #[arg(long, default_value_t = 5)]
    restarts: usize,
    /// Measure 1-file submission latency (durable commits) on the restart phase's store.
    #[arg(long)]
    commit: bool,
    /// Restart phase: run the server with `quick_repair = true` or `false` (unset: the binary's
    /// default; builds before issue 14 know no such setting).
    #[arg(long)]
    quick_repair: Option<bool>,
    /// Keep the store of the restart phase here (and reuse it if it exists).
    #[arg(long)]
    store: Option<PathBuf>,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("reliability: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), BoxError> {
    let Some(pki) = pki() else {
        return Err("the test PKI needs grid-proxy-init and voms-proxy-fake".into());
    };
    let binary = args
        .ftsd
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ftsd")));
    println!("{}", machine());
    println!("binary: {}", binary.display());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let phases: Vec<&str> = args.phases.split(',').map(str::trim).collect();
    if phases.contains(&"flood") {
        flood_phase(&args, &binary, pki, &runtime)?;
    }
    if phases.contains(&"memory") {
        memory_phase(&binary, pki, &runtime)?;
    }
    if phases.contains(&"restart") {
        restart_phase(&args, &binary, pki, &runtime)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The server process.

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `binary` on `data_dir` and wait until `GET /` answers; returns the server and how
/// long that took.
fn start(
    binary: &Path,
    pki: &TestPki,
    data_dir: &Path,
    config: &str,
) -> Result<(Server, Duration), BoxError> {
    let config_path = data_dir.with_extension("toml");
    if let Some(parent) = data_dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&config_path, config)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let started = Instant::now();
    let child = Command::new(binary)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--config")
        .arg(&config_path)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--host-cert")
        .arg(pki.path("hostcert.pem"))
        .arg("--host-key")
        .arg(pki.path("hostkey.pem"))
        .arg("--ca-dir")
        .arg(pki.ca_dir())
        .arg("--voms-dir")
        .arg(pki.voms_dir())
        .env("FTSD_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let server = Server { child, port };
    let client = Client::new(port, &pki.path("ca.pem"), None);
    while started.elapsed() < Duration::from_secs(600) {
        if client.get("/").is_ok_and(|r| r.status == 200) {
            return Ok((server, started.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err("the server did not answer within 10 minutes".into())
}

/// Peak and current resident memory of a process, in MiB.
fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

// ---------------------------------------------------------------------------------------------
// Connections from chosen loopback addresses.

async fn connect_from(source: Ipv4Addr, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    socket
        .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .await
}

/// `GET /whoami` on a new connection from 127.0.0.2 with the user's certificate.
async fn probe(config: Arc<rustls::ClientConfig>, port: u16) -> Result<u16, BoxError> {
    let tcp = connect_from(Ipv4Addr::new(127, 0, 0, 2), port).await?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let request = http::Request::get("/whoami")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    response.into_body().collect().await?;
    Ok(status)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Attack {
    Tcp,
    Tls,
    H2Preface,
    StalledBody,
}

/// One flooding connection of `attack` from `source`, reopened whenever the server closes it.
async fn flooder(
    attack: Attack,
    source: Ipv4Addr,
    port: u16,
    config: Arc<rustls::ClientConfig>,
    stop: Arc<AtomicBool>,
    closed: Arc<AtomicUsize>,
    reconnect: Duration,
) {
    let mut buf = vec![0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let Ok(tcp) = connect_from(source, port).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if attack == Attack::Tcp {
            let mut tcp = tcp;
            hold(&mut tcp, &mut buf, &stop).await;
        } else if let Ok(mut tls) = tokio_rustls::TlsConnector::from(config.clone())
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
        {
            let sent = match attack {
                Attack::H2Preface => {
                    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
                    bytes.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
                    tls.write_all(&bytes).await
                }
                Attack::StalledBody => {
                    tls.write_all(
                        b"POST /jobs HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
                          content-length: 1000000\r\n\r\n{\"files\": [",
                    )
                    .await
                }
                _ => Ok(()),
            };
            if sent.is_ok() {
                hold(&mut tls, &mut buf, &stop).await;
            }
        }
        closed.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(reconnect).await;
    }
}

/// Read and throw away until the peer closes or `stop`.
async fn hold(stream: &mut (impl tokio::io::AsyncRead + Unpin), buf: &mut [u8], stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match tokio::time::timeout(Duration::from_millis(200), stream.read(buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            _ => {}
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn flood_phase(
    args: &Args,
    binary: &Path,
    pki: &TestPki,
    runtime: &tokio::runtime::Runtime,
) -> Result<(), BoxError> {
    let data = tempfile::tempdir()?;
    let (server, _) = start(
        binary,
        pki,
        &data.path().join("data"),
        "[engine]\nenabled = false\n",
    )?;
    let port = server.port;
    let anonymous = Client::new(port, &pki.path("ca.pem"), None).tls_config();
    let mut h2 = (*anonymous).clone();
    h2.alpn_protocols = vec![b"h2".to_vec()];
    let h2 = Arc::new(h2);
    let user = Client::new(port, &pki.path("ca.pem"), Some(pki.path(TEST_USER))).tls_config();
    println!(
        "\nflood: {} connections per attack from 9 addresses, reopened {} ms after closing, {} s \
         each; probes: GET /whoami with a certificate every 200 ms, 5 s timeout",
        args.flood, args.reconnect_ms, args.seconds
    );
    println!(
        "{:<13} {:>7} {:>7} {:>9} {:>9} {:>9} {:>12} {:>10}",
        "attack", "probes", "failed", "p50 ms", "p99 ms", "max ms", "closed conns", "server RSS"
    );
    for attack in [
        Attack::Tcp,
        Attack::Tls,
        Attack::H2Preface,
        Attack::StalledBody,
    ] {
        let stop = Arc::new(AtomicBool::new(false));
        let closed = Arc::new(AtomicUsize::new(0));
        for i in 0..args.flood {
            let source = Ipv4Addr::new(127, 0, 1, 1 + (i % 9) as u8);
            let config = if attack == Attack::H2Preface {
                h2.clone()
            } else {
                anonymous.clone()
            };
            runtime.spawn(flooder(
                attack,
                source,
                port,
                config,
                stop.clone(),
                closed.clone(),
                Duration::from_millis(args.reconnect_ms),
            ));
        }
        std::thread::sleep(Duration::from_secs(2));
        let mut latencies = Vec::new();
        let mut failed = 0;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(args.seconds) {
            let t = Instant::now();
            let answer = runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), probe(user.clone(), port)).await
            });
            match answer {
                Ok(Ok(200)) => latencies.push(t.elapsed().as_secs_f64() * 1000.0),
                _ => failed += 1,
            }
            std::thread::sleep(Duration::from_millis(200).saturating_sub(t.elapsed()));
        }
        stop.store(true, Ordering::Relaxed);
        let (_, rss) = memory(server.child.id());
        latencies.sort_by(f64::total_cmp);
        println!(
            "{:<13} {:>7} {:>7} {:>9.1} {:>9.1} {:>9.1} {:>12} {:>7.0} MiB",
            format!("{attack:?}"),
            latencies.len() + failed,
            failed,
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            latencies.last().copied().unwrap_or(f64::NAN),
            closed.load(Ordering::Relaxed),
            rss
        );
        // Let the flooders notice the stop and the server drop their connections.
        std::thread::sleep(Duration::from_secs(3));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------

fn memory_phase(
    binary: &Path,
    pki: &TestPki,
    runtime: &tokio::runtime::Runtime,
) -> Result<(), BoxError> {
    let data = tempfile::tempdir()?;
    let (server, _) = start(
        binary,
        pki,
        &data.path().join("data"),
        "[engine]\nenabled = false\n",
    )?;
    let port = server.port;
    let anonymous = Client::new(port, &pki.path("ca.pem"), None).tls_config();
    let (before, _) = memory(server.child.id());
    let size: usize = 12_700_000;
    let body = Arc::new(vec![b' '; size]);
    let started = Instant::now();
    let statuses = runtime.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..128u32 {
            let (config, body) = (anonymous.clone(), body.clone());
            tasks.push(tokio::spawn(async move {
                let source = Ipv4Addr::new(127, 0, 2, 1 + (i % 200) as u8);
                let tcp = connect_from(source, port).await.ok()?;
                let mut tls = tokio_rustls::TlsConnector::from(config)
                    .connect(ServerName::try_from("localhost").ok()?, tcp)
                    .await
                    .ok()?;
                let head = format!(
                    "POST /jobs HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
                     content-length: {size}\r\nconnection: close\r\n\r\n"
                );
                tls.write_all(head.as_bytes()).await.ok()?;
                // The whole body, as a client does; a server that answers first stops it.
                let _ = tls.write_all(&body).await;
                let mut answer = Vec::new();
                let _ =
                    tokio::time::timeout(Duration::from_secs(120), tls.read_to_end(&mut answer))
                        .await;
                let text = String::from_utf8_lossy(&answer).into_owned();
                text.split(' ').nth(1).map(str::to_string)
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.ok().flatten().unwrap_or_else(|| "none".into()));
        }
        out
    });
    let took = started.elapsed();
    let (peak, _) = memory(server.child.id());
    std::thread::sleep(Duration::from_secs(5));
    let (_, after) = memory(server.child.id());
    let mut counts = std::collections::BTreeMap::new();
    for s in statuses {
        *counts.entry(s).or_insert(0) += 1;
    }
    println!(
        "\nmemory: 128 anonymous POST /jobs of 12.7 MB at once: statuses {counts:?} in {:.1} s; \
         server RSS {before:.0} MiB before, peak {peak:.0} MiB, {after:.0} MiB 5 s after",
        took.as_secs_f64()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------

fn restart_phase(
    args: &Args,
    binary: &Path,
    pki: &TestPki,
    runtime: &tokio::runtime::Runtime,
) -> Result<(), BoxError> {
    let tmp = tempfile::tempdir()?;
    let dir = args
        .store
        .clone()
        .unwrap_or_else(|| tmp.path().join("data"));
    // Transfers that run for an hour on 40 links, 10 at a time each: 400 running at every kill.
    let config = format!(
        "{}[engine]\nmax_active = 400\ndefault_link_active = 10\nscheduling_interval = 1\n\
         optimizer = false\ngfal2 = \"off\"\n",
        args.quick_repair
            .map(|on| format!("quick_repair = {on}\n"))
            .unwrap_or_default()
    );
    let config = config.as_str();
    let (mut server, first) = start(binary, pki, &dir, config)?;
    let client = Client::new(server.port, &pki.path("ca.pem"), Some(pki.path(TEST_USER)));
    let id = ftsd::model::identity::delegation_id(TEST_USER_DN, &[]);
    let (status, body) = delegate_test_user(&client, pki, &id, false);
    if status != 201 {
        return Err(format!("delegation: {status} {body}").into());
    }
    let count_file = dir.with_extension("files");
    let stored: usize = std::fs::read_to_string(&count_file)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    println!(
        "\nrestart: store in {} ({stored} files already), first start {:.2} s",
        dir.display(),
        first.as_secs_f64()
    );
    if stored < args.files {
        let started = Instant::now();
        let jobs = (args.files - stored).div_ceil(1000);
        runtime.block_on(fill(server.port, pki, jobs))?;
        let secs = started.elapsed().as_secs_f64();
        std::fs::write(&count_file, (stored + jobs * 1000).to_string())?;
        println!(
            "filled {} files in {secs:.1} s ({:.0} files/s)",
            jobs * 1000,
            (jobs * 1000) as f64 / secs
        );
    }
    if args.commit {
        let latencies = runtime.block_on(commit_latency(server.port, pki))?;
        println!(
            "1-file submissions, one client, 10 s: {} commits, p50 {:.2} ms, p99 {:.2} ms",
            latencies.len(),
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99)
        );
    }
    let db = dir.join("ftsd.redb");
    println!(
        "database {:.0} MiB; kill -9 with transfers running, then start until GET / answers:",
        std::fs::metadata(&db)?.len() as f64 / 1048576.0
    );
    let mut times = Vec::new();
    for round in 0..args.restarts {
        // Transfers are running (claimed and started) before the plug is pulled.
        std::thread::sleep(Duration::from_secs(3));
        server.child.kill()?;
        server.child.wait()?;
        let (next, took) = start(binary, pki, &dir, config)?;
        server = next;
        println!("  restart {}: {:.3} s", round + 1, took.as_secs_f64());
        times.push(took.as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    println!(
        "after kill -9: median {:.3} s, max {:.3} s",
        percentile(&times, 0.5),
        times.last().copied().unwrap_or(f64::NAN)
    );
    // A clean stop (SIGTERM) and start, for comparison.
    Command::new("kill")
        .arg(server.child.id().to_string())
        .status()?;
    server.child.wait()?;
    let (server, clean) = start(binary, pki, &dir, config)?;
    println!("after a clean stop: {:.3} s", clean.as_secs_f64());
    drop(server);
    Ok(())
}

/// 1,000-file jobs, 4 clients.
async fn fill(port: u16, pki: &TestPki, jobs: usize) -> Result<(), BoxError> {
    let config = Client::new(port, &pki.path("ca.pem"), Some(pki.path(TEST_USER))).tls_config();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (config, next) = (config.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(config, port).await?;
            loop {
                let j = next.fetch_add(1, Ordering::Relaxed);
                if j >= jobs {
                    return Ok::<(), BoxError>(());
                }
                let link = j % 40;
                let files: Vec<serde_json::Value> = (0..1000)
                    .map(|i| {
                        serde_json::json!({
                            "sources": [format!("mock://s{link}.example/j{j}/f{i}?size=1")],
                            "destinations": [format!("mock://d{link}.example/j{j}/f{i}?size_post=1&time=3600")],
                        })
                    })
                    .collect();
                let body = serde_json::json!({"files": files, "params": {"retry": -1}});
                let (status, reply) = conn.post("/jobs", body.to_string()).await?;
                if status != 200 {
                    return Err(format!("submission: {status} {reply}").into());
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// 1-file submissions one after the other for 10 s: each is one durable commit.
async fn commit_latency(port: u16, pki: &TestPki) -> Result<Vec<f64>, BoxError> {
    let config = Client::new(port, &pki.path("ca.pem"), Some(pki.path(TEST_USER))).tls_config();
    let mut conn = Conn::open(config, port).await?;
    let mut out = Vec::new();
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(10) {
        n += 1;
        let body = serde_json::json!({"files": [{"sources": [format!("mock://c.example/c{n}")],
            "destinations": [format!("mock://e.example/c{n}?time=3600")]}]});
        let t = Instant::now();
        let (status, reply) = conn.post("/jobs", body.to_string()).await?;
        if status != 200 {
            return Err(format!("submission: {status} {reply}").into());
        }
        out.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    out.sort_by(f64::total_cmp);
    Ok(out)
}

/// One keep-alive HTTP/1.1 connection with the user's certificate.
struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    async fn open(config: Arc<rustls::ClientConfig>, port: u16) -> Result<Conn, BoxError> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(ServerName::try_from("localhost")?, tcp)
            .await?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        Ok(Conn { sender })
    }

    async fn post(&mut self, path: &str, json: String) -> Result<(u16, String), BoxError> {
        self.sender.ready().await?;
        let request = http::Request::post(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(json)))?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}
