//! Jobs API benchmark (issue 4, acceptance 5): the real server in-process on 127.0.0.1, driven
//! over keep-alive HTTPS (HTTP/1.1, one connection per client, the dev proxy as client
//! certificate) by concurrent clients.
//!
//! Phases, in order (each can be skipped with `--phases`):
//! - `single`: `POST /jobs` single-file jobs for `--duration` seconds (or `--jobs` jobs);
//! - `multi`: the same with `--files-per-job`-file jobs (100 by default): jobs/s and files/s;
//! - `fill`: more `--fill-job-files`-file jobs until `--fill-files` files are stored (1M);
//! - `get`: `GET /jobs/{id}` of random stored jobs, closed loop with each client count of
//!   `--get-clients`, then paced (`--get-rate`; by default half the rate of the last run);
//! - `ab`: the cost of the monitoring aggregates, side by side in one server: `--ab-rounds`
//!   rounds of `single` and `multi` runs of `--duration` seconds, each run once with the
//!   aggregates on and once off (ABBA order), then the paired ratios of jobs/s and CPU;
//! - `monitor`: `GET /ftsmon/overview`, then `GET /metrics` (one client, `--get-duration` each);
//! - `reopen`: after the server stopped, open the database again `REOPENS` times and time it,
//!   with the part spent rebuilding the monitoring aggregates from the rows (from the store's
//!   `monitoring aggregates built` event).
//!
//! Besides rates and latencies it reports where the CPU went (server runtime, job writer,
//! benchmark clients; from /proc/self/task) and the group-commit batches the job writer made
//! (from its `submission batch stored` debug event).
//!
//! Run: `cargo bench --bench jobs_api -- --help`. It stops by itself, binds only 127.0.0.1 and
//! removes its temporary directory (PKI and database) at the end.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use bytes::Bytes;
use clap::Parser;
use ftsd::{
    config::Config,
    devpki::{DEV_USER_DN, DevPki},
};
use http_body_util::{BodyExt, Full};
use rcgen::{
    CertificateSigningRequestParams, CustomExtension, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use tracing_subscriber::{
    Layer, filter::DynFilterFn, layer::SubscriberExt, util::SubscriberInitExt,
};

mod support;
use support::machine;

/// proxyCertInfo with the inheritAll policy, as the fts3 client writes it.
const PCI_INHERIT_ALL: &[u8] = &[
    0x30, 0x0c, 0x30, 0x0a, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x15, 0x01,
];

#[derive(Parser, Debug, Clone)]
#[command(about = "ftsd jobs API benchmark over keep-alive HTTPS")]
struct Args {
    /// Concurrent clients (one keep-alive connection each) for the submission phases.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Seconds of each submission phase (`single`, `multi`).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop each submission phase after this many jobs (whichever comes first with --duration).
    #[arg(long)]
    jobs: Option<u64>,
    /// Files per job in the `multi` phase.
    #[arg(long, default_value_t = 100)]
    files_per_job: usize,
    /// The `fill` phase submits until this many files are stored (counting earlier phases).
    #[arg(long, default_value_t = 1_000_000)]
    fill_files: u64,
    /// Files per job in the `fill` phase.
    #[arg(long, default_value_t = 100)]
    fill_job_files: usize,
    /// Client counts of the closed-loop `GET /jobs/{id}` runs.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 8, 16, 32])]
    get_clients: Vec<usize>,
    /// Seconds of each `GET /jobs/{id}` run.
    #[arg(long, default_value_t = 5.0)]
    get_duration: f64,
    /// Requests/s of the paced GET runs, with the last `--get-clients` count of clients
    /// (default: one run at half the last closed-loop run's rate; 0 skips them). The clients'
    /// timer ticks every millisecond, so requests leave in bursts of rate/1000.
    #[arg(long, value_delimiter = ',')]
    get_rate: Vec<f64>,
    /// Phases to run, in this order: single, multi, fill, get, monitor (`GET /ftsmon/overview`
    /// and `GET /metrics`, closed loop with one client, for `--get-duration` each), reopen
    /// (time `Redb::open` of the stored database, aggregates rebuild included).
    #[arg(long, value_delimiter = ',', default_values_t = ["single".to_string(), "multi".into(), "fill".into(), "get".into()])]
    phases: Vec<String>,
    /// Links (source SE, destination SE pairs) the jobs are spread over, one link per job.
    #[arg(long, default_value_t = 8)]
    links: u64,
    /// Turn the monitoring aggregates off, to measure what they cost the submissions.
    #[arg(long)]
    no_aggregates: bool,
    /// Rounds of the `ab` phase (each: single and multi, aggregates on and off).
    #[arg(long, default_value_t = 10)]
    ab_rounds: usize,
    /// Worker threads of the server's runtime (the job writer thread comes on top).
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Worker threads of the benchmark clients' runtime.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// Directory for the temporary PKI and database (default: the system temp dir).
    #[arg(long)]
    tmp_dir: Option<PathBuf>,
    /// Also log like `ftsd serve` does (e.g. `info`: one line per request) into a file in the
    /// temporary directory, to measure what logging costs. Off by default.
    #[arg(long)]
    log: Option<String>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("benchmark failed: {e}");
        std::process::exit(1);
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn run(args: Args) -> Result<(), BoxError> {
    for p in &args.phases {
        if !["single", "multi", "ab", "fill", "get", "monitor", "reopen"].contains(&p.as_str()) {
            return Err(format!("unknown phase {p:?}").into());
        }
    }
    let mut builder = tempfile::Builder::new();
    builder.prefix("ftsd-bench-");
    let tmp = match &args.tmp_dir {
        Some(dir) => builder.tempdir_in(dir)?,
        None => builder.tempdir()?,
    };
    install_tracing(args.log.as_deref(), &tmp.path().join("ftsd.log"))?;
    let pki = DevPki::create(&tmp.path().join("pki"))?;
    LINKS.store(args.links.max(1), Ordering::Relaxed);
    if args.no_aggregates {
        ftsd::store::aggregates::set_enabled(false);
        println!("monitoring aggregates OFF");
    }
    let data_dir = tmp.path().join("data");
    println!("{}", machine());
    let server = BenchServer::start(&pki, &data_dir, args.server_threads)?;
    println!(
        "ftsd on 127.0.0.1:{} (data {}), {} server threads, {} client threads",
        server.port,
        data_dir.display(),
        args.server_threads,
        args.client_threads
    );
    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads)
        .thread_name("bench-client")
        .enable_all()
        .build()?;
    let result = clients.block_on(phases(&args, &pki, server.port));
    // Connections are closed by now (they live inside `phases`), so the server drains at once.
    drop(clients);
    let db_size = std::fs::metadata(data_dir.join(ftsd::store::DB_FILE)).map(|m| m.len());
    let log_size = std::fs::metadata(tmp.path().join("ftsd.log")).map(|m| m.len());
    server.stop()?;
    let report = result?;
    report.print(&args);
    if args.phases.iter().any(|p| p == "reopen") {
        reopen(&data_dir)?;
    }
    if let Ok(size) = db_size {
        println!("database file: {:.1} MiB", size as f64 / (1024.0 * 1024.0));
    }
    if let (Some(filter), Ok(size)) = (&args.log, log_size) {
        println!(
            "log ({filter}): {:.1} MiB written",
            size as f64 / (1024.0 * 1024.0)
        );
    }
    drop(tmp);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The server, in-process on its own runtime thread.

struct BenchServer {
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), ftsd::Error>>>,
}

impl BenchServer {
    fn start(pki: &DevPki, data_dir: &std::path::Path, threads: usize) -> Result<Self, BoxError> {
        let config = Config {
            data_dir: data_dir.to_path_buf(),
            host_cert: Some(pki.host_cert.clone()),
            host_key: Some(pki.host_key.clone()),
            ca_dir: Some(pki.ca_dir.clone()),
            voms_dir: Some(pki.voms_dir.clone()),
            // The API alone is measured: queued jobs stay queued.
            engine: ftsd::config::EngineConfig {
                enabled: false,
                ..Default::default()
            },
            ..Config::default()
        };
        let resolved = config.resolve()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("ftsd-server-main".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads)
                    .thread_name("ftsd-server")
                    .enable_all()
                    .build()
                    .map_err(|e| ftsd::Error::Task(e.to_string()))?;
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                        .await
                        .map_err(|e| ftsd::Error::Task(e.to_string()))?;
                    let port = listener
                        .local_addr()
                        .map_err(|e| ftsd::Error::Task(e.to_string()))?
                        .port();
                    let _ = port_tx.send(port);
                    ftsd::run(resolved, listener, async {
                        let _ = stopped.await;
                    })
                    .await
                })
            })?;
        let port = match port_rx.recv() {
            Ok(port) => port,
            Err(_) => {
                let why = match thread.join() {
                    Ok(Err(e)) => e.to_string(),
                    _ => "the server thread died".to_string(),
                };
                return Err(format!("server did not start: {why}").into());
            }
        };
        Ok(BenchServer {
            port,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    fn stop(mut self) -> Result<(), BoxError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), BoxError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(t) => match t.join() {
                Ok(r) => Ok(r?),
                Err(_) => Err("server thread panicked".into()),
            },
            None => Ok(()),
        }
    }
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

// ---------------------------------------------------------------------------------------------
// Observing the server: job writer batches (tracing) and CPU per thread group (/proc).

#[derive(Default, Clone)]
struct Batches {
    count: u64,
    jobs: u64,
    files: u64,
    commit_us: Vec<u32>,
}

static BATCHES: Mutex<Batches> = Mutex::new(Batches {
    count: 0,
    jobs: 0,
    files: 0,
    commit_us: Vec::new(),
});

fn is_batch_event(m: &tracing::Metadata<'_>) -> bool {
    m.is_event()
        && ((m.target() == "ftsd::store::writer" && m.fields().field("commit_us").is_some())
            || is_rebuild_event(m))
}

/// The store's `monitoring aggregates built` event (at each open).
fn is_rebuild_event(m: &tracing::Metadata<'_>) -> bool {
    m.fields().field("rebuild_ms").is_some()
}

/// `rebuild_ms` of the last `monitoring aggregates built` event.
static REBUILD_MS: AtomicU64 = AtomicU64::new(u64::MAX);

struct BatchLayer;

impl<S: tracing::Subscriber> Layer<S> for BatchLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        #[derive(Default)]
        struct Fields {
            jobs: u64,
            files: u64,
            commit_us: u64,
            rebuild_ms: u64,
        }
        impl tracing::field::Visit for Fields {
            fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
                match field.name() {
                    "jobs" => self.jobs = value,
                    "files" => self.files = value,
                    "commit_us" => self.commit_us = value,
                    "rebuild_ms" => self.rebuild_ms = value,
                    _ => {}
                }
            }
            fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
        }
        let mut f = Fields::default();
        event.record(&mut f);
        if is_rebuild_event(event.metadata()) {
            REBUILD_MS.store(f.rebuild_ms, Ordering::Relaxed);
            return;
        }
        if let Ok(mut b) = BATCHES.lock() {
            b.count += 1;
            b.jobs += f.jobs;
            b.files += f.files;
            b.commit_us.push(f.commit_us.min(u32::MAX as u64) as u32);
        }
    }
}

fn install_tracing(log: Option<&str>, log_file: &std::path::Path) -> Result<(), BoxError> {
    let batches = BatchLayer.with_filter(
        DynFilterFn::new(|m, _| is_batch_event(m)).with_callsite_filter(|m| {
            if is_batch_event(m) {
                tracing::subscriber::Interest::always()
            } else {
                tracing::subscriber::Interest::never()
            }
        }),
    );
    let registry = tracing_subscriber::registry().with(batches);
    match log {
        None => registry.try_init()?,
        Some(filter) => {
            let file = std::fs::File::create(log_file)?;
            registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(Mutex::new(file))
                        .with_ansi(false)
                        .with_filter(tracing_subscriber::EnvFilter::new(filter)),
                )
                .try_init()?
        }
    }
    Ok(())
}

fn take_batches() -> Batches {
    BATCHES
        .lock()
        .map(|mut b| std::mem::take(&mut *b))
        .unwrap_or_default()
}

/// CPU seconds used so far by each thread group of this process.
fn cpu_by_group() -> BTreeMap<&'static str, f64> {
    let mut out = BTreeMap::new();
    // USER_HZ: Linux reports /proc times in 1/100 s on every architecture we run on.
    let ticks = 100.0;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ...: comm may hold spaces, so split after the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let rest: Vec<&str> = stat[close + 2..].split(' ').collect();
        // Fields 14 and 15 (utime, stime) are at 11 and 12 after "state".
        let (Some(u), Some(s)) = (rest.get(11), rest.get(12)) else {
            continue;
        };
        let secs = (u.parse::<f64>().unwrap_or(0.0) + s.parse::<f64>().unwrap_or(0.0)) / ticks;
        let group = if comm.starts_with("ftsd-job-writer") {
            "writer"
        } else if comm.starts_with("ftsd-server") {
            "server"
        } else if comm.starts_with("bench-client") {
            "clients"
        } else {
            "other"
        };
        *out.entry(group).or_insert(0.0) += secs;
    }
    out
}

/// Bytes written so far: (by the job writer thread into the database file, as `pwrite`s;
/// by the whole process to the block device, writeback included).
fn bytes_written() -> (u64, u64) {
    let field = |io: &str, name: &str| {
        io.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let mut writer = 0;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.starts_with("ftsd-job-writer") {
                let io = std::fs::read_to_string(task.path().join("io")).unwrap_or_default();
                writer += field(&io, "wchar:");
            }
        }
    }
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    (writer, field(&io, "write_bytes:"))
}

// ---------------------------------------------------------------------------------------------
// The HTTPS client: one keep-alive HTTP/1.1 connection per benchmark client.

struct Tls {
    port: u16,
    config: Arc<rustls::ClientConfig>,
}

impl Tls {
    fn new(port: u16, pki: &DevPki) -> Result<Tls, BoxError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&pki.ca_cert)? {
            roots.add(cert?)?;
        }
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(&pki.proxy)?.collect::<Result<_, _>>()?;
        let key = PrivateKeyDer::from_pem_file(&pki.proxy)?;
        let key = provider.key_provider.load_private_key(key)?;
        // CertifiedKey::new skips rustls's key/leaf check, which cannot parse proxies.
        let certified = rustls::sign::CertifiedKey::new(chain, key);
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
        Ok(Tls {
            port,
            config: Arc::new(config),
        })
    }

    async fn connect(&self) -> Result<Conn, BoxError> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
        tcp.set_nodelay(true)?;
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        let tls = connector
            .connect(ServerName::try_from("localhost")?, tcp)
            .await?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            sender,
            host: format!("localhost:{}", self.port),
        })
    }
}

struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
}

impl Conn {
    async fn call(
        &mut self,
        method: &str,
        path: &str,
        json: Option<Bytes>,
    ) -> Result<(u16, Bytes), BoxError> {
        self.sender.ready().await?;
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host);
        if json.is_some() {
            request = request.header("content-type", "application/json");
        }
        let request = request.body(Full::new(json.unwrap_or_default()))?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

// ---------------------------------------------------------------------------------------------
// Delegation: request, sign the CSR as a proxy of the dev user, put.

async fn delegate(conn: &mut Conn, pki: &DevPki) -> Result<(), BoxError> {
    let id = ftsd::model::identity::delegation_id(DEV_USER_DN, &[]);
    let (status, csr) = conn
        .call("GET", &format!("/delegation/{id}/request"), None)
        .await?;
    if status != 200 {
        return Err(format!(
            "delegation request: {status} {}",
            String::from_utf8_lossy(&csr)
        )
        .into());
    }
    let user_cert = std::fs::read_to_string(&pki.user_cert)?;
    let key = KeyPair::from_pem(&std::fs::read_to_string(&pki.user_key)?)?;
    let issuer = Issuer::from_ca_cert_pem(&user_cert, key)?;
    let mut request = CertificateSigningRequestParams::from_pem(std::str::from_utf8(&csr)?)?;
    let now = time::OffsetDateTime::now_utc();
    let params = &mut request.params;
    params.distinguished_name = ftsd::devpki::parse_dn(&format!("{DEV_USER_DN}/CN=4242"))?;
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + time::Duration::hours(12);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let mut pci =
        CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 1, 14], PCI_INHERIT_ALL.to_vec());
    pci.set_criticality(true);
    params.custom_extensions = vec![pci];
    let proxy = request.signed_by(&issuer)?;
    let body = format!("{}{}", proxy.pem(), user_cert);
    let (status, reply) = conn
        .call(
            "PUT",
            &format!("/delegation/{id}/credential"),
            Some(Bytes::from(body)),
        )
        .await?;
    if status != 201 {
        return Err(format!("delegation: {status} {}", String::from_utf8_lossy(&reply)).into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Load generation.

/// What each request of a phase does.
#[derive(Clone)]
enum Work {
    /// `POST /jobs` with this many files per job.
    Submit { files: usize },
    /// `GET /jobs/{id}` of a random id.
    Get { ids: Arc<Vec<String>> },
    /// `GET` of a fixed path.
    Path(&'static str),
}

/// When a phase ends.
#[derive(Clone, Copy)]
struct Stop {
    duration: Duration,
    max_requests: Option<u64>,
    /// Paced runs: requests per second over all clients.
    rate: Option<f64>,
}

/// Distinct file names across the whole run (and across runs: the nonce).
static NEXT_FILE: AtomicU64 = AtomicU64::new(0);
/// Jobs are spread over a few links (source SE, destination SE), one link per job, so the
/// per-link indexes look like a real queue.
static NEXT_JOB: AtomicU64 = AtomicU64::new(0);
static LINKS: AtomicU64 = AtomicU64::new(8);

fn submission(files: usize, nonce: u64) -> Bytes {
    let first = NEXT_FILE.fetch_add(files as u64, Ordering::Relaxed);
    let link = NEXT_JOB.fetch_add(1, Ordering::Relaxed) % LINKS.load(Ordering::Relaxed);
    let mut body = String::with_capacity(64 + files * 140);
    body.push_str("{\"files\":[");
    for n in first..first + files as u64 {
        if n != first {
            body.push(',');
        }
        body.push_str(&format!(
            "{{\"sources\":[\"mock://src{link}.example.org/bench/{nonce}/file{n}\"],\
             \"destinations\":[\"mock://dst{link}.example.org/bench/{nonce}/file{n}\"]}}"
        ));
    }
    body.push_str("],\"params\":{}}");
    Bytes::from(body)
}

/// xorshift64*: enough to pick ids uniformly, and no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[derive(Default)]
struct ClientResult {
    latencies_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
    job_ids: Vec<String>,
}

/// What the clients of one phase share.
struct PhaseShared {
    clients: usize,
    work: Work,
    stop: Stop,
    start: Instant,
    /// Requests started so far (for `Stop::max_requests`).
    issued: AtomicU64,
    nonce: u64,
}

async fn client_loop(
    mut conn: Conn,
    index: usize,
    shared: Arc<PhaseShared>,
) -> (Conn, ClientResult) {
    let PhaseShared {
        clients,
        ref work,
        stop,
        start,
        ref issued,
        nonce,
    } = *shared;
    let mut out = ClientResult::default();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((index as u64 + 1) * 0x1000_0001));
    let deadline = start + stop.duration;
    // Paced: client i sends at start + (i + k * clients) / rate.
    let mut k: u64 = 0;
    loop {
        if let Some(rate) = stop.rate {
            let at = start
                + Duration::from_secs_f64((index as f64 + (k * clients as u64) as f64) / rate);
            k += 1;
            if at >= deadline {
                break;
            }
            tokio::time::sleep_until(at.into()).await;
        }
        if Instant::now() >= deadline {
            break;
        }
        if let Some(max) = stop.max_requests {
            if issued.fetch_add(1, Ordering::Relaxed) >= max {
                break;
            }
        }
        let (method, path, body) = match &work {
            Work::Submit { files } => {
                ("POST", "/jobs".to_string(), Some(submission(*files, nonce)))
            }
            Work::Get { ids } => {
                let id = &ids[(rng.next() % ids.len() as u64) as usize];
                ("GET", format!("/jobs/{id}"), None)
            }
            Work::Path(p) => ("GET", p.to_string(), None),
        };
        let sent = Instant::now();
        let reply = conn.call(method, &path, body).await;
        let took = sent.elapsed();
        match reply {
            Ok((200, body)) => {
                out.latencies_us
                    .push(took.as_micros().min(u32::MAX as u128) as u32);
                if let Work::Submit { .. } = work {
                    match serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v["job_id"].as_str().map(str::to_string))
                    {
                        Some(id) => out.job_ids.push(id),
                        None => {
                            out.errors += 1;
                            out.first_error.get_or_insert_with(|| {
                                format!("no job_id in {}", String::from_utf8_lossy(&body))
                            });
                        }
                    }
                }
            }
            Ok((status, body)) => {
                out.errors += 1;
                out.first_error.get_or_insert_with(|| {
                    format!(
                        "{method} {path}: {status} {}",
                        String::from_utf8_lossy(&body)
                    )
                });
            }
            Err(e) => {
                // The connection is unusable: stop this client (the phase reports it).
                out.errors += 1;
                out.first_error
                    .get_or_insert_with(|| format!("{method} {path}: {e}"));
                break;
            }
        }
    }
    (conn, out)
}

/// Figures of one phase.
struct PhaseReport {
    name: String,
    clients: usize,
    files_per_job: usize,
    requests: u64,
    errors: u64,
    first_error: Option<String>,
    secs: f64,
    latencies_us: Vec<u32>,
    cpu: BTreeMap<&'static str, f64>,
    batches: Option<Batches>,
    /// Bytes the job writer wrote into the database file.
    db_written: u64,
    /// Bytes the process sent to the block device.
    disk_written: u64,
}

impl PhaseReport {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.secs
    }
    fn percentile(&self, p: f64) -> f64 {
        percentile(&self.latencies_us, p)
    }
}

/// `latencies` sorted ascending; the p-quantile in milliseconds.
fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1000.0
}

/// Run one phase on `conns`, which come back for the next phase.
async fn phase(
    name: String,
    conns: &mut Vec<Conn>,
    work: Work,
    stop: Stop,
    nonce: u64,
    job_ids: &mut Vec<String>,
) -> Result<PhaseReport, BoxError> {
    let clients = conns.len();
    let files_per_job = match &work {
        Work::Submit { files } => *files,
        Work::Get { .. } | Work::Path(_) => 0,
    };
    take_batches();
    let cpu_before = cpu_by_group();
    let written_before = bytes_written();
    let shared = Arc::new(PhaseShared {
        clients,
        work,
        stop,
        start: Instant::now(),
        issued: AtomicU64::new(0),
        nonce,
    });
    let mut tasks = Vec::with_capacity(clients);
    for (index, conn) in conns.drain(..).enumerate() {
        tasks.push(tokio::spawn(client_loop(conn, index, shared.clone())));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for task in tasks {
        let (conn, result) = task.await?;
        conns.push(conn);
        latencies.extend(result.latencies_us);
        errors += result.errors;
        if first_error.is_none() {
            first_error = result.first_error;
        }
        job_ids.extend(result.job_ids);
    }
    let secs = shared.start.elapsed().as_secs_f64();
    let cpu_after = cpu_by_group();
    let written_after = bytes_written();
    let cpu = cpu_after
        .iter()
        .map(|(k, v)| (*k, v - cpu_before.get(k).copied().unwrap_or(0.0)))
        .collect();
    latencies.sort_unstable();
    let mut batches = take_batches();
    batches.commit_us.sort_unstable();
    let report = PhaseReport {
        name,
        clients,
        files_per_job,
        requests: latencies.len() as u64,
        errors,
        first_error,
        secs,
        latencies_us: latencies,
        cpu,
        batches: (batches.count > 0).then_some(batches),
        db_written: written_after.0.saturating_sub(written_before.0),
        disk_written: written_after.1.saturating_sub(written_before.1),
    };
    eprintln!(
        "  {:<28} {:>8} ok {:>4} errors in {:>5.1} s: {:>8.0}/s, p50 {:.2} ms, p99 {:.2} ms",
        report.name,
        report.requests,
        report.errors,
        report.secs,
        report.rate(),
        report.percentile(0.50),
        report.percentile(0.99)
    );
    if let Some(e) = &report.first_error {
        eprintln!("    first error: {e}");
    }
    Ok(report)
}

struct Report {
    phases: Vec<PhaseReport>,
    stored_jobs: usize,
    stored_files: u64,
    fill: Option<(u64, f64)>,
    /// The `ab` phase: (files per job, aggregates on, jobs/s, ftsd CPU µs per job) per run.
    ab: Vec<(usize, bool, f64, f64)>,
}

async fn phases(args: &Args, pki: &DevPki, port: u16) -> Result<Report, BoxError> {
    let tls = Tls::new(port, pki)?;
    let mut first = tls.connect().await?;
    delegate(&mut first, pki).await?;
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let max_clients = args
        .get_clients
        .iter()
        .copied()
        .chain([args.clients])
        .max()
        .unwrap_or(1)
        .max(1);
    let mut pool = vec![first];
    while pool.len() < max_clients {
        pool.push(tls.connect().await?);
    }
    let take = |pool: &mut Vec<Conn>, n: usize| -> Vec<Conn> { pool.drain(..n.max(1)).collect() };
    let give = |pool: &mut Vec<Conn>, conns: Vec<Conn>| pool.extend(conns);

    let mut report = Report {
        phases: Vec::new(),
        stored_jobs: 0,
        stored_files: 0,
        fill: None,
        ab: Vec::new(),
    };
    let mut job_ids: Vec<String> = Vec::new();
    let submit_stop = Stop {
        duration: Duration::from_secs_f64(args.duration),
        max_requests: args.jobs,
        rate: None,
    };
    let wants = |p: &str| args.phases.iter().any(|x| x == p);
    eprintln!("running ({} clients for submissions):", args.clients);
    if wants("single") {
        let mut conns = take(&mut pool, args.clients);
        let r = phase(
            "POST /jobs, 1 file".into(),
            &mut conns,
            Work::Submit { files: 1 },
            submit_stop,
            nonce,
            &mut job_ids,
        )
        .await?;
        give(&mut pool, conns);
        report.stored_files += r.requests;
        report.phases.push(r);
    }
    if wants("multi") {
        let mut conns = take(&mut pool, args.clients);
        let r = phase(
            format!("POST /jobs, {} files", args.files_per_job),
            &mut conns,
            Work::Submit {
                files: args.files_per_job,
            },
            submit_stop,
            nonce,
            &mut job_ids,
        )
        .await?;
        give(&mut pool, conns);
        report.stored_files += r.requests * args.files_per_job as u64;
        report.phases.push(r);
    }
    if wants("ab") {
        for round in 0..args.ab_rounds {
            // ABBA: which setting runs first alternates, so a drift of the machine's load
            // weighs on both alike.
            let order = if round % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for files in [1, args.files_per_job] {
                for on in order {
                    ftsd::store::aggregates::set_enabled(on);
                    let mut conns = take(&mut pool, args.clients);
                    let r = phase(
                        format!(
                            "ab {}: {files}-file jobs, aggregates {}",
                            round + 1,
                            if on { "on" } else { "off" }
                        ),
                        &mut conns,
                        Work::Submit { files },
                        submit_stop,
                        nonce,
                        &mut job_ids,
                    )
                    .await?;
                    give(&mut pool, conns);
                    report.stored_files += r.requests * files as u64;
                    let cpu = r.cpu.get("server").copied().unwrap_or(0.0)
                        + r.cpu.get("writer").copied().unwrap_or(0.0);
                    let us = cpu / r.requests.max(1) as f64 * 1e6;
                    report.ab.push((files, on, r.rate(), us));
                }
            }
        }
        ftsd::store::aggregates::set_enabled(!args.no_aggregates);
        eprintln!("  (the aggregates are inconsistent from here on: they missed the `off` runs)");
    }
    if wants("fill") && report.stored_files < args.fill_files {
        let per_job = args.fill_job_files.max(1) as u64;
        let jobs = (args.fill_files - report.stored_files).div_ceil(per_job);
        let mut conns = take(&mut pool, args.clients);
        let r = phase(
            format!("fill: POST /jobs, {per_job} files"),
            &mut conns,
            Work::Submit {
                files: per_job as usize,
            },
            Stop {
                // Bounded all the same: a slow machine stops and says how far it got.
                duration: Duration::from_secs(600),
                max_requests: Some(jobs),
                rate: None,
            },
            nonce,
            &mut job_ids,
        )
        .await?;
        give(&mut pool, conns);
        report.stored_files += r.requests * per_job;
        report.fill = Some((r.requests * per_job, r.secs));
        report.phases.push(r);
    }
    report.stored_jobs = job_ids.len();
    if wants("get") {
        if job_ids.is_empty() {
            return Err("the get phase needs stored jobs: run a submission phase first".into());
        }
        eprintln!(
            "GET /jobs/{{id}} over {} stored jobs, {} files",
            job_ids.len(),
            report.stored_files
        );
        let ids = Arc::new(std::mem::take(&mut job_ids));
        let get_stop = Stop {
            duration: Duration::from_secs_f64(args.get_duration),
            max_requests: None,
            rate: None,
        };
        let mut last_rate = 0.0;
        let mut last_clients = 1;
        for &n in &args.get_clients {
            let mut conns = take(&mut pool, n);
            let r = phase(
                "GET /jobs/{id}, closed loop".to_string(),
                &mut conns,
                Work::Get { ids: ids.clone() },
                get_stop,
                nonce,
                &mut Vec::new(),
            )
            .await?;
            give(&mut pool, conns);
            last_rate = r.rate();
            last_clients = n;
            report.phases.push(r);
        }
        let rates = match args.get_rate.as_slice() {
            [] => vec![last_rate / 2.0],
            r => r.to_vec(),
        };
        for paced in rates.into_iter().filter(|r| *r > 0.0) {
            let mut conns = take(&mut pool, last_clients);
            let r = phase(
                format!("GET /jobs/{{id}}, paced {paced:.0}/s"),
                &mut conns,
                Work::Get { ids: ids.clone() },
                Stop {
                    rate: Some(paced),
                    ..get_stop
                },
                nonce,
                &mut Vec::new(),
            )
            .await?;
            give(&mut pool, conns);
            report.phases.push(r);
        }
    }
    if wants("monitor") {
        for path in ["/ftsmon/overview", "/metrics"] {
            let mut conns = take(&mut pool, 1);
            if let Some(conn) = conns.first_mut() {
                if let Ok((200, body)) = conn.call("GET", path, None).await {
                    eprintln!("GET {path}: {} bytes", body.len());
                }
            }
            let r = phase(
                format!("GET {path}"),
                &mut conns,
                Work::Path(path),
                Stop {
                    duration: Duration::from_secs_f64(args.get_duration),
                    max_requests: None,
                    rate: None,
                },
                nonce,
                &mut Vec::new(),
            )
            .await?;
            give(&mut pool, conns);
            report.phases.push(r);
        }
    }
    drop(pool);
    Ok(report)
}

impl Report {
    fn print(&self, args: &Args) {
        println!();
        println!(
            "{:<32} {:>7} {:>9} {:>6} {:>6} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8}",
            "phase",
            "clients",
            "requests",
            "errors",
            "secs",
            "req/s",
            "files/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms"
        );
        for p in &self.phases {
            let files = if p.files_per_job > 0 {
                format!("{:.0}", p.rate() * p.files_per_job as f64)
            } else {
                "-".into()
            };
            println!(
                "{:<32} {:>7} {:>9} {:>6} {:>6.1} {:>10.0} {:>10} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
                p.name,
                p.clients,
                p.requests,
                p.errors,
                p.secs,
                p.rate(),
                files,
                p.percentile(0.50),
                p.percentile(0.99),
                p.percentile(0.999),
                p.percentile(1.0)
            );
        }
        println!();
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        println!(
            "CPU use, in cores (of {cores}), per phase (ftsd µs/req: server and writer CPU per request):"
        );
        println!(
            "{:<32} {:>8} {:>8} {:>8} {:>8} {:>8}   {:>10}",
            "phase", "server", "writer", "clients", "other", "total", "ftsd µs/req"
        );
        for p in &self.phases {
            let c = |k: &str| p.cpu.get(k).copied().unwrap_or(0.0) / p.secs;
            let total: f64 = p.cpu.values().sum::<f64>() / p.secs;
            let per_req = (p.cpu.get("server").copied().unwrap_or(0.0)
                + p.cpu.get("writer").copied().unwrap_or(0.0))
                / p.requests.max(1) as f64
                * 1e6;
            println!(
                "{:<32} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}   {:>10.0}",
                p.name,
                c("server"),
                c("writer"),
                c("clients"),
                c("other"),
                total,
                per_req
            );
        }
        let with_batches: Vec<&PhaseReport> =
            self.phases.iter().filter(|p| p.batches.is_some()).collect();
        if !with_batches.is_empty() {
            println!();
            println!("Group commit (job writer), per phase:");
            println!(
                "{:<32} {:>8} {:>10} {:>11} {:>12} {:>10} {:>10} {:>10} {:>10}",
                "phase",
                "commits",
                "commits/s",
                "jobs/commit",
                "files/commit",
                "commit p50",
                "commit p99",
                "KiB/commit",
                "disk MiB/s"
            );
            for p in with_batches {
                let Some(b) = &p.batches else { continue };
                println!(
                    "{:<32} {:>8} {:>10.0} {:>11.1} {:>12.1} {:>8.2}ms {:>8.2}ms {:>10.0} {:>10.1}",
                    p.name,
                    b.count,
                    b.count as f64 / p.secs,
                    b.jobs as f64 / b.count as f64,
                    b.files as f64 / b.count as f64,
                    percentile(&b.commit_us, 0.50),
                    percentile(&b.commit_us, 0.99),
                    p.db_written as f64 / 1024.0 / b.count as f64,
                    p.disk_written as f64 / (1024.0 * 1024.0) / p.secs
                );
            }
        }
        println!();
        println!(
            "stored: {} jobs, {} files{}",
            self.stored_jobs,
            self.stored_files,
            match self.fill {
                Some((files, secs)) => format!(
                    " (fill: {files} files in {secs:.1} s, {:.0} files/s)",
                    files as f64 / secs
                ),
                None => String::new(),
            }
        );
        self.print_ab(args);
        println!();
        println!("targets (issue 4, on 2 cores):");
        let find = |prefix: &str| self.phases.iter().find(|p| p.name.starts_with(prefix));
        if let Some(p) = find("POST /jobs, 1 file") {
            verdict("single-file jobs/s", p.rate(), ">=", 5000.0);
        }
        if let Some(p) = find(&format!("POST /jobs, {} files", args.files_per_job)) {
            verdict(
                "files/s (multi-file jobs)",
                p.rate() * p.files_per_job as f64,
                ">=",
                50_000.0,
            );
        }
        for p in self
            .phases
            .iter()
            .filter(|p| p.name.starts_with("GET /jobs"))
        {
            verdict(
                &format!(
                    "GET p99 ms, {} clients, {}",
                    p.clients,
                    p.name.trim_start_matches("GET /jobs/{id}, ")
                ),
                p.percentile(0.99),
                "<=",
                1.0,
            );
        }
        if self.stored_files < 1_000_000
            && self.phases.iter().any(|p| p.name.starts_with("GET /jobs"))
        {
            println!("  (GET measured with fewer than 1,000,000 files stored)");
        }
    }
}

impl Report {
    /// The `ab` phase: per job size, the mean of each setting and the median of the per-round
    /// ratios on/off (pairs run back to back, so they share the machine's load).
    fn print_ab(&self, args: &Args) {
        if self.ab.is_empty() {
            return;
        }
        println!();
        println!(
            "Aggregates on vs off, same server, ABBA rounds of {:.0} s:",
            args.duration
        );
        println!(
            "{:<16} {:>12} {:>12} {:>14} {:>12} {:>12} {:>14}",
            "jobs",
            "jobs/s on",
            "jobs/s off",
            "median on/off",
            "µs/job on",
            "µs/job off",
            "median on/off"
        );
        for files in [1, args.files_per_job] {
            let runs = |on: bool| -> Vec<(f64, f64)> {
                self.ab
                    .iter()
                    .filter(|r| r.0 == files && r.1 == on)
                    .map(|r| (r.2, r.3))
                    .collect()
            };
            let (on, off) = (runs(true), runs(false));
            let mean = |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| {
                v.iter().map(f).sum::<f64>() / v.len().max(1) as f64
            };
            let median_ratio = |f: fn(&(f64, f64)) -> f64| {
                let mut r: Vec<f64> = on.iter().zip(&off).map(|(a, b)| f(a) / f(b)).collect();
                r.sort_by(f64::total_cmp);
                r.get(r.len() / 2).copied().unwrap_or(f64::NAN)
            };
            println!(
                "{:<16} {:>12.0} {:>12.0} {:>14.3} {:>12.1} {:>12.1} {:>14.3}",
                format!("{files}-file"),
                mean(&on, |r| r.0),
                mean(&off, |r| r.0),
                median_ratio(|r| r.0),
                mean(&on, |r| r.1),
                mean(&off, |r| r.1),
                median_ratio(|r| r.1),
            );
        }
        println!("per round (jobs/s on, off):");
        for files in [1, args.files_per_job] {
            let line: Vec<String> = self
                .ab
                .chunks(2)
                .filter(|c| c[0].0 == files)
                .map(|c| {
                    let (on, off) = if c[0].1 { (c[0], c[1]) } else { (c[1], c[0]) };
                    format!("{:.0}/{:.0}", on.2, off.2)
                })
                .collect();
            println!("  {files}-file: {}", line.join(" "));
        }
    }
}

fn verdict(what: &str, value: f64, op: &str, target: f64) {
    let ok = match op {
        ">=" => value >= target,
        _ => value <= target,
    };
    println!(
        "  {what:<44} {value:>10.3}  target {op} {target:<8} {}",
        if ok { "MET" } else { "MISSED" }
    );
}

// ---------------------------------------------------------------------------------------------
// Reopening the stored database.

/// Opens timed by the `reopen` phase (the first one may read from disk, the others from the
/// page cache).
const REOPENS: usize = 3;

/// Open the database the server left `REOPENS` times: the whole `Redb::open` and its part
/// rebuilding the monitoring aggregates.
fn reopen(data_dir: &std::path::Path) -> Result<(), BoxError> {
    println!();
    println!("reopen (Redb::open of the stored database; the server is stopped):");
    for i in 1..=REOPENS {
        REBUILD_MS.store(u64::MAX, Ordering::Relaxed);
        let started = Instant::now();
        let store = ftsd::store::Redb::open(data_dir)?;
        let open_ms = started.elapsed().as_secs_f64() * 1000.0;
        drop(store);
        let rebuild = match REBUILD_MS.load(Ordering::Relaxed) {
            u64::MAX => "(no event)".to_string(),
            ms => format!("{ms} ms"),
        };
        println!("  open {i}: {open_ms:>9.1} ms, of which aggregates rebuild {rebuild}");
    }
    Ok(())
}
