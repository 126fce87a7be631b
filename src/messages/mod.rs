//! The monitoring-message publisher: FTS3's `fts_activemq` in the service. It reads the store's
//! outbox (written with each state change, see `store::outbox`), sends each message to a broker
//! over STOMP 1.2 with a `receipt`, and removes it from the outbox only when the RECEIPT
//! arrives. A broker outage or a crash delays messages; it never loses them (a message sent but
//! whose receipt was not recorded is sent again: a counted duplicate).
//!
//! - `frame`: the STOMP frame codec (bounded, never panics on a broker's bytes).
//! - `connection`: one TCP/TLS connection, login, heart-beats, the reader of RECEIPTs.
//! - here: brokers (every address a name resolves to, one connection each, round-robin, a
//!   failed one retried with backoff), the in-flight window, acknowledgements, expiry, and the
//!   counters ([`Stats`], logged every minute; the hook for a metrics endpoint).
//!
//! Deviation: the STOMP client is ours (no Rust STOMP crate does TLS with a client certificate;
//! tokens spec B.5), and it is the one place outside `api`/`server` (and the HTTP backend) that
//! uses rustls: as a client, with the configured CA and client certificate.
//! Deviation: with TLS the certificate is checked against the configured broker name (FTS3
//! reverse-resolves each address of an alias first); a DNS alias of several brokers then needs
//! certificates naming the alias.

pub mod connection;
pub mod frame;

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
};
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};

use self::{
    connection::{Connection, Login, Report},
    frame::Frame,
};
use crate::{
    model::message::{Endpoint, Message},
    store::Store,
};

/// Messages read from the outbox at a time (one read transaction).
const BATCH: usize = 512;
/// Messages sent to one connection and not yet acknowledged. Bounds memory and what is sent
/// twice after a broker drops the connection; large enough to keep a loopback broker busy.
const WINDOW: usize = 1024;
/// Receipts recorded per outbox write (one transaction removes them all).
const ACK_BATCH: usize = 512;
/// How often the loop looks at the outbox when idle, flushes receipts and beats hearts.
const TICK: Duration = Duration::from_millis(50);
/// First wait before reconnecting to a failed address; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait before retrying a failed address (FTS3 retries a failed broker only at its
/// next check, 60 min; a minute brings a restarted broker back much sooner).
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How often broker names are resolved again (FTS3's `BROKER_CHECK_INTERVAL`, 60 min).
const RESOLVE_INTERVAL: Duration = Duration::from_secs(3600);
/// How often messages past their TTL are dropped from the outbox, and counters logged.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(60);
/// At shutdown, how long to wait for the receipts of messages already sent.
const DRAIN_DEADLINE: Duration = Duration::from_secs(2);
/// Reports queued from the connections' readers (receipts arrive at most `WINDOW` per
/// connection; the loop drains them every turn).
const REPORTS: usize = 4096;

/// The publisher's settings (`[messages]`, resolved).
#[derive(Debug, Clone)]
pub struct Settings {
    /// `host:port` of each broker; a name resolving to several addresses counts as several.
    pub brokers: Vec<String>,
    pub login: Login,
    /// `/topic/…` (true, FTS3's default) or `/queue/…`.
    pub topic: bool,
    /// The `expires` header: creation + TTL; older messages are dropped from the outbox.
    pub ttl: Duration,
    pub endpoint: Endpoint,
}

/// Counters since start: logged every minute, and the hook for a metrics endpoint.
#[derive(Debug, Default)]
pub struct Stats {
    /// SEND frames written (resends included).
    pub sent: AtomicU64,
    /// RECEIPTs received and recorded: messages delivered.
    pub acked: AtomicU64,
    /// Messages sent again because their connection closed before the receipt.
    pub resent: AtomicU64,
    /// Connections that failed (refused, lost, timed out, broker ERROR).
    pub failures: AtomicU64,
    /// Connections opened (the first ones included).
    pub connects: AtomicU64,
    /// Messages dropped past their TTL by this process.
    pub expired: AtomicU64,
    /// Outbox depth at the last look.
    pub depth: AtomicU64,
}

/// Errors of setting up the publisher (bad TLS files): found at start, before serving.
#[derive(Debug, thiserror::Error)]
pub enum MessagesError {
    #[error("messages.{field}: {path}: {reason}")]
    Tls {
        field: &'static str,
        path: PathBuf,
        reason: String,
    },
}

/// The TLS client configuration: roots from `ca` (a PEM file, or a directory of `*.pem`/`*.0`
/// files such as /etc/grid-security/certificates), and a client certificate when given
/// (`client_key` defaults to the certificate file, FTS3's keystore holding both).
pub fn tls_config(
    ca: &Path,
    client_cert: Option<&Path>,
    client_key: Option<&Path>,
) -> Result<Arc<ClientConfig>, MessagesError> {
    let err = |field, path: &Path, reason: String| MessagesError::Tls {
        field,
        path: path.to_path_buf(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    let files: Vec<PathBuf> = if ca.is_dir() {
        let entries = std::fs::read_dir(ca).map_err(|e| err("ca", ca, e.to_string()))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                name.ends_with(".pem") || name.ends_with(".0")
            })
            .collect();
        files.sort();
        files
    } else {
        vec![ca.to_path_buf()]
    };
    for file in &files {
        let certs =
            CertificateDer::pem_file_iter(file).map_err(|e| err("ca", file, e.to_string()))?;
        for cert in certs {
            let cert = cert.map_err(|e| err("ca", file, e.to_string()))?;
            roots
                .add(cert)
                .map_err(|e| err("ca", file, e.to_string()))?;
        }
    }
    if roots.is_empty() {
        return Err(err("ca", ca, "no CA certificate found".into()));
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| err("ca", ca, e.to_string()))?
    .with_root_certificates(roots);
    let config = match client_cert {
        None => builder.with_no_client_auth(),
        Some(cert) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .map_err(|e| err("client_cert", cert, e.to_string()))?
                .collect::<Result<_, _>>()
                .map_err(|e| err("client_cert", cert, e.to_string()))?;
            if chain.is_empty() {
                return Err(err("client_cert", cert, "no certificate found".into()));
            }
            let key_path = client_key.unwrap_or(cert);
            let key = PrivateKeyDer::from_pem_file(key_path)
                .map_err(|e| err("client_key", key_path, e.to_string()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| err("client_key", key_path, e.to_string()))?
        }
    };
    Ok(Arc::new(config))
}

/// One broker address and its connection.
struct Target {
    hostname: String,
    address: SocketAddr,
    conn: Option<Connection>,
    retry_at: Instant,
    backoff: Duration,
    /// Sent on this connection, receipt awaited: seq → message.
    in_flight: HashMap<u64, Message>,
}

/// The publisher's state between turns of its loop.
struct Publisher {
    store: Arc<dyn Store>,
    settings: Settings,
    stats: Arc<Stats>,
    targets: Vec<Target>,
    resolved_at: Option<Instant>,
    /// Highest outbox seq read so far: the next read starts above it.
    cursor: u64,
    /// Read, not yet sent (resends first).
    pending: VecDeque<(u64, Message)>,
    /// Receipts not yet recorded in the store.
    acked: Vec<u64>,
    next_id: u64,
    next_target: usize,
    reports_tx: mpsc::Sender<Report>,
}

/// Run the publisher until `shutdown` says stop.
pub async fn run(
    store: Arc<dyn Store>,
    settings: Settings,
    stats: Arc<Stats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (reports_tx, mut reports) = mpsc::channel(REPORTS);
    let mut p = Publisher {
        store,
        settings,
        stats,
        targets: Vec::new(),
        resolved_at: None,
        cursor: 0,
        pending: VecDeque::new(),
        acked: Vec::new(),
        next_id: 0,
        next_target: 0,
        reports_tx,
    };
    match p.store.outbox_stats().await {
        Ok(s) => {
            p.stats.depth.store(s.depth, Ordering::Relaxed);
            tracing::info!(
                brokers = %p.settings.brokers.join(","),
                waiting = s.depth,
                dropped_total = s.dropped,
                "monitoring messages on: publishing the outbox (messages sent before a stop \
                 whose receipt was not recorded are sent again)"
            );
        }
        Err(e) => tracing::error!(error = %e, "monitoring outbox unreadable"),
    }
    let mut housekeeping = Instant::now();
    let mut last = Snapshot::default();
    loop {
        if *shutdown.borrow() {
            break;
        }
        p.maintain().await;
        p.refill().await;
        let sent = p.send().await;
        if p.acked.len() >= ACK_BATCH || !sent {
            p.flush_acks().await;
        }
        p.beat().await;
        if housekeeping.elapsed() >= HOUSEKEEPING_INTERVAL {
            housekeeping = Instant::now();
            p.expire().await;
            last = p.log_stats(last).await;
        }
        let wait = if sent { Duration::ZERO } else { TICK };
        tokio::select! {
            report = reports.recv() => {
                if let Some(r) = report { p.on_report(r); }
                while let Ok(r) = reports.try_recv() { p.on_report(r); }
            }
            _ = tokio::time::sleep(wait) => {
                while let Ok(r) = reports.try_recv() { p.on_report(r); }
            }
            _ = shutdown.changed() => {}
        }
    }
    // Wait a little for the receipts of what is in flight, then record them.
    let deadline = Instant::now() + DRAIN_DEADLINE;
    while p.targets.iter().any(|t| !t.in_flight.is_empty()) {
        match tokio::time::timeout_at(deadline, reports.recv()).await {
            Ok(Some(r)) => p.on_report(r),
            _ => break,
        }
    }
    p.flush_acks().await;
    tracing::info!(
        sent = p.stats.sent.load(Ordering::Relaxed),
        delivered = p.stats.acked.load(Ordering::Relaxed),
        "monitoring publisher stopped"
    );
}

#[derive(Default, Clone, Copy)]
struct Snapshot {
    acked: u64,
    at: Option<Instant>,
}

impl Publisher {
    /// Resolve the brokers when due, and connect addresses whose retry time has come.
    async fn maintain(&mut self) {
        let due = self
            .resolved_at
            .is_none_or(|t| t.elapsed() >= RESOLVE_INTERVAL || self.targets.is_empty());
        if due && self.resolved_at.is_none_or(|t| t.elapsed() >= MIN_BACKOFF) {
            self.resolve().await;
        }
        let now = Instant::now();
        for i in 0..self.targets.len() {
            let t = &self.targets[i];
            if t.conn.is_some() || t.retry_at > now {
                continue;
            }
            self.next_id += 1;
            let id = self.next_id;
            let (address, hostname) = (t.address, t.hostname.clone());
            let opened = Connection::open(
                id,
                address,
                &hostname,
                &self.settings.login,
                self.reports_tx.clone(),
            )
            .await;
            let t = &mut self.targets[i];
            match opened {
                Ok(conn) => {
                    self.stats.connects.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(broker = %hostname, %address, "connected to the message broker");
                    t.conn = Some(conn);
                    t.backoff = MIN_BACKOFF;
                }
                Err(e) => {
                    self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        broker = %hostname, %address, error = %e, retry_in = ?t.backoff,
                        "cannot connect to the message broker"
                    );
                    t.retry_at = Instant::now() + t.backoff;
                    t.backoff = (t.backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Every address of every broker name: new ones added, vanished ones dropped once idle.
    async fn resolve(&mut self) {
        self.resolved_at = Some(Instant::now());
        let mut found: Vec<(String, SocketAddr)> = Vec::new();
        for broker in &self.settings.brokers {
            let host = broker
                .rsplit_once(':')
                .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
                .unwrap_or(broker)
                .to_string();
            match tokio::net::lookup_host(broker.as_str()).await {
                Ok(addrs) => {
                    for a in addrs {
                        if !found.iter().any(|(_, f)| *f == a) {
                            found.push((host.clone(), a));
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(broker = %broker, error = %e, "cannot resolve the message broker")
                }
            }
        }
        if found.is_empty() {
            return;
        }
        for (hostname, address) in &found {
            if !self.targets.iter().any(|t| t.address == *address) {
                self.targets.push(Target {
                    hostname: hostname.clone(),
                    address: *address,
                    conn: None,
                    retry_at: Instant::now(),
                    backoff: MIN_BACKOFF,
                    in_flight: HashMap::new(),
                });
            }
        }
        let mut kept = Vec::new();
        for mut t in self.targets.drain(..) {
            if found.iter().any(|(_, a)| *a == t.address) || !t.in_flight.is_empty() {
                kept.push(t);
            } else {
                t.conn = None;
            }
        }
        self.targets = kept;
    }

    /// Read more of the outbox when the pending queue runs low.
    async fn refill(&mut self) {
        if self.pending.len() >= BATCH || !self.targets.iter().any(|t| t.conn.is_some()) {
            return;
        }
        match self.store.outbox_after(self.cursor, BATCH).await {
            Ok(batch) => {
                if let Some((last, _)) = batch.last() {
                    self.cursor = *last;
                }
                self.pending.extend(batch);
            }
            Err(e) => tracing::error!(error = %e, "monitoring outbox unreadable"),
        }
    }

    /// Send pending messages round-robin over the connected addresses, within each one's
    /// window. True if anything was sent.
    async fn send(&mut self) -> bool {
        let n = self.targets.len();
        if n == 0 || self.pending.is_empty() {
            return false;
        }
        let mut per_target: Vec<Vec<(u64, Message)>> = (0..n).map(|_| Vec::new()).collect();
        while !self.pending.is_empty() {
            let mut chosen = None;
            for step in 0..n {
                let i = (self.next_target + step) % n;
                let t = &self.targets[i];
                if t.conn.is_some() && t.in_flight.len() + per_target[i].len() < WINDOW {
                    chosen = Some(i);
                    break;
                }
            }
            let Some(i) = chosen else { break };
            self.next_target = (i + 1) % n;
            if let Some(m) = self.pending.pop_front() {
                per_target[i].push(m);
            }
        }
        let mut any = false;
        for (i, batch) in per_target.into_iter().enumerate() {
            if batch.is_empty() {
                continue;
            }
            let mut bytes = Vec::new();
            for (seq, m) in &batch {
                bytes.extend(self.frame(*seq, m).encode());
            }
            let t = &mut self.targets[i];
            let Some(conn) = t.conn.as_mut() else {
                continue;
            };
            match conn.send_raw(&bytes).await {
                Ok(()) => {
                    any = true;
                    self.stats
                        .sent
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    t.in_flight.extend(batch);
                }
                Err(e) => {
                    // Whatever was written may or may not have arrived: all of it goes again.
                    for m in batch.into_iter().rev() {
                        self.pending.push_front(m);
                    }
                    let id = conn.id;
                    self.close(id, &format!("write failed: {e}"));
                }
            }
        }
        any
    }

    /// The SEND frame of one message.
    fn frame(&self, seq: u64, m: &Message) -> Frame {
        let kind = if self.settings.topic {
            "topic"
        } else {
            "queue"
        };
        let ttl_ms = i64::try_from(self.settings.ttl.as_millis()).unwrap_or(i64::MAX);
        let mut f = Frame::new("SEND")
            .header("destination", format!("/{kind}/{}", m.kind.destination()))
            .header("receipt", format!("m-{seq}"))
            .header("content-type", "text/plain")
            .header(
                "persistent",
                if m.kind.persistent() { "true" } else { "false" },
            )
            .header("expires", m.created_ms.saturating_add(ttl_ms).to_string());
        if let Some(vo) = m.vo_header() {
            f = f.header("vo", vo);
        }
        f.body(m.wire_body(&self.settings.endpoint))
    }

    fn on_report(&mut self, report: Report) {
        match report {
            Report::Receipt(id, receipt) => {
                let Some(seq) = receipt
                    .strip_prefix("m-")
                    .and_then(|s| s.parse::<u64>().ok())
                else {
                    return;
                };
                if let Some(t) = self
                    .targets
                    .iter_mut()
                    .find(|t| t.conn.as_ref().is_some_and(|c| c.id == id))
                {
                    if t.in_flight.remove(&seq).is_some() {
                        self.acked.push(seq);
                        self.stats.acked.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Report::Closed(id, why) => self.close(id, &why),
        }
    }

    /// Drop connection `id`: its unacknowledged messages go back to the front of the queue.
    fn close(&mut self, id: u64, why: &str) {
        let Some(t) = self
            .targets
            .iter_mut()
            .find(|t| t.conn.as_ref().is_some_and(|c| c.id == id))
        else {
            return;
        };
        t.conn = None;
        t.retry_at = Instant::now() + t.backoff;
        t.backoff = (t.backoff * 2).min(MAX_BACKOFF);
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        let mut back: Vec<(u64, Message)> = t.in_flight.drain().collect();
        back.sort_by_key(|(s, _)| *s);
        self.stats
            .resent
            .fetch_add(back.len() as u64, Ordering::Relaxed);
        tracing::warn!(
            broker = %t.hostname, address = %t.address, reason = %why, unacknowledged = back.len(),
            "message broker connection lost; unacknowledged messages will be sent again"
        );
        for m in back.into_iter().rev() {
            self.pending.push_front(m);
        }
    }

    async fn flush_acks(&mut self) {
        if self.acked.is_empty() {
            return;
        }
        let seqs = std::mem::take(&mut self.acked);
        if let Err(e) = self.store.outbox_remove(&seqs).await {
            tracing::error!(error = %e, "cannot record message receipts; will retry");
            self.acked = seqs;
        }
    }

    async fn beat(&mut self) {
        let mut dead = Vec::new();
        for t in &mut self.targets {
            if let Some(conn) = t.conn.as_mut() {
                if let Err(e) = conn.beat_if_due().await {
                    dead.push((conn.id, e.to_string()));
                }
            }
        }
        for (id, why) in dead {
            self.close(id, &format!("heart-beat failed: {why}"));
        }
    }

    async fn expire(&mut self) {
        let now_ms = crate::model::time::now().saturating_mul(1000);
        let ttl_ms = i64::try_from(self.settings.ttl.as_millis()).unwrap_or(i64::MAX);
        match self
            .store
            .outbox_expire(now_ms.saturating_sub(ttl_ms))
            .await
        {
            Ok(0) => {}
            Ok(n) => {
                self.stats.expired.fetch_add(n, Ordering::Relaxed);
                tracing::warn!(
                    dropped = n,
                    "monitoring messages past their TTL dropped from the outbox"
                );
            }
            Err(e) => tracing::error!(error = %e, "monitoring outbox expiry failed"),
        }
    }

    async fn log_stats(&mut self, last: Snapshot) -> Snapshot {
        let acked = self.stats.acked.load(Ordering::Relaxed);
        let rate = last
            .at
            .map(|t| (acked - last.acked) as f64 / t.elapsed().as_secs_f64().max(0.001))
            .unwrap_or(0.0);
        let (depth, dropped) = match self.store.outbox_stats().await {
            Ok(s) => (s.depth, s.dropped),
            Err(_) => (0, 0),
        };
        self.stats.depth.store(depth, Ordering::Relaxed);
        let connected = self.targets.iter().filter(|t| t.conn.is_some()).count();
        tracing::info!(
            outbox_depth = depth,
            dropped_total = dropped,
            delivered = acked,
            per_second = format!("{rate:.1}"),
            sent = self.stats.sent.load(Ordering::Relaxed),
            resent = self.stats.resent.load(Ordering::Relaxed),
            failures = self.stats.failures.load(Ordering::Relaxed),
            connects = self.stats.connects.load(Ordering::Relaxed),
            connected,
            brokers = self.targets.len(),
            "monitoring messages"
        );
        Snapshot {
            acked,
            at: Some(Instant::now()),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
        sync::mpsc::UnboundedSender,
    };

    use super::*;
    use crate::{
        model::{
            job::{FileState, JobType, fixtures},
            message::{Kind, Kinds},
        },
        store::{Redb, RedbStore},
    };

    /// A broker that answers CONNECT, reports every SEND, and answers its receipt unless
    /// `drop_after` frames were received on this connection (then it closes it, unanswered).
    async fn fake_broker(
        listener: TcpListener,
        sends: UnboundedSender<Frame>,
        drop_after: Option<usize>,
    ) {
        let mut first = true;
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let limit = if first { drop_after } else { None };
            first = false;
            let mut buf = BytesMut::new();
            let mut seen = 0;
            'conn: loop {
                while let Ok(Some(inc)) = frame::decode(&mut buf) {
                    let frame::Incoming::Frame(f) = inc else {
                        continue;
                    };
                    match f.command.as_str() {
                        "CONNECT" => {
                            let reply = Frame::new("CONNECTED")
                                .header("version", "1.2")
                                .header("heart-beat", "0,0");
                            sock.write_all(&reply.encode()).await.unwrap();
                        }
                        "SEND" => {
                            seen += 1;
                            if limit.is_some_and(|l| seen > l) {
                                break 'conn;
                            }
                            let receipt = f.get("receipt").unwrap().to_string();
                            let _ = sends.send(f);
                            if limit.is_none() {
                                let reply = Frame::new("RECEIPT").header("receipt-id", receipt);
                                sock.write_all(&reply.encode()).await.unwrap();
                            }
                        }
                        _ => {}
                    }
                }
                if sock.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                    break;
                }
            }
        }
    }

    async fn setup(
        files: usize,
        drop_after: Option<usize>,
    ) -> (
        tempfile::TempDir,
        Arc<dyn Store>,
        Settings,
        mpsc::UnboundedReceiver<Frame>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let db = Redb::open(dir.path()).unwrap();
        db.set_message_policy(Kinds::of(&[Kind::State]), 1000)
            .unwrap();
        let mut j = fixtures::job(JobType::Normal);
        j.vo_name = "atlas".into();
        let fs = (0..files)
            .map(|i| {
                let mut f = fixtures::file(0, i as u32, FileState::Submitted);
                f.dest_surl = format!("mock://b/{i}");
                f
            })
            .collect();
        db.insert_jobs(&mut [(j, fs)]).unwrap()[0].clone().unwrap();
        let store: Arc<dyn Store> = Arc::new(RedbStore::new(db).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(fake_broker(listener, tx, drop_after));
        let settings = Settings {
            brokers: vec![address.to_string()],
            login: Login {
                tls: None,
                username: Some("u".into()),
                password: Some("p".into()),
                vhost: "/".into(),
            },
            topic: true,
            ttl: Duration::from_secs(3600),
            endpoint: Endpoint {
                alias: "fts.example.org".into(),
                fqdn: None,
            },
        };
        (dir, store, settings, rx)
    }

    async fn until_empty(store: &Arc<dyn Store>) {
        for _ in 0..400 {
            if store.outbox_stats().await.unwrap().depth == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the outbox never emptied");
    }

    #[tokio::test]
    async fn messages_leave_the_outbox_once_the_broker_acknowledged_them() {
        let (_dir, store, settings, mut sends) = setup(3, None).await;
        let stats = Arc::new(Stats::default());
        let (stop, stopping) = watch::channel(false);
        let task = tokio::spawn(run(store.clone(), settings, stats.clone(), stopping));
        until_empty(&store).await;
        let _ = stop.send(true);
        task.await.unwrap();
        let mut got = Vec::new();
        while let Ok(f) = sends.try_recv() {
            got.push(f);
        }
        assert_eq!(got.len(), 3);
        for f in &got {
            assert_eq!(
                f.get("destination"),
                Some("/topic/transfer.fts_monitoring_state")
            );
            assert_eq!(f.get("vo"), Some("atlas"));
            assert_eq!(f.get("persistent"), Some("true"));
            let expires: i64 = f.get("expires").unwrap().parse().unwrap();
            let now_ms = crate::model::time::now() * 1000;
            assert!((expires - now_ms - 3_600_000).abs() < 10_000);
            assert!(f.body.ends_with(b"} "));
            let v: serde_json::Value = serde_json::from_slice(&f.body).unwrap();
            assert_eq!(v["endpnt"], "fts.example.org");
        }
        assert_eq!(stats.acked.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn a_connection_lost_before_the_receipts_sends_them_again() {
        let (_dir, store, settings, mut sends) = setup(5, Some(2)).await;
        let stats = Arc::new(Stats::default());
        let (stop, stopping) = watch::channel(false);
        let task = tokio::spawn(run(store.clone(), settings, stats.clone(), stopping));
        until_empty(&store).await;
        let _ = stop.send(true);
        task.await.unwrap();
        let mut receipts = Vec::new();
        while let Ok(f) = sends.try_recv() {
            receipts.push(f.get("receipt").unwrap().to_string());
        }
        let unique: std::collections::BTreeSet<&String> = receipts.iter().collect();
        assert_eq!(unique.len(), 5, "every message delivered");
        assert!(receipts.len() > 5, "the unacknowledged ones went twice");
        assert!(stats.resent.load(Ordering::Relaxed) >= 2);
        assert_eq!(stats.connects.load(Ordering::Relaxed), 2);
    }
}
