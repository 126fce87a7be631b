//! Hardening (issue 14): floods of idle anonymous connections do not keep certificate holders
//! out, stalled bodies are cut at their deadline, anonymous uploads are refused before they
//! are read (and cost no memory), numbers in queries and bodies are strict.
//!
//! The servers here run with short deadlines (about a second) so the tests stay fast; the
//! flooders and the legitimate client use different loopback addresses (127.0.0.1 and
//! 127.0.0.2), as attackers and users do.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls::pki_types::ServerName;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    common::{
        Client, TEST_USER, TEST_USER_DN, TestPki, TestServer, delegate_test_user, pki, post,
        post_json, spawn_ftsd_with,
    },
    tls_auth::independent_delegation_id,
};

/// The legitimate client's address; flooders use 127.0.0.1 and 127.0.0.3 onwards.
const USER_ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// A server with one-second deadlines and a small connection table.
fn short_deadline_server(pki: &TestPki) -> TestServer {
    TestServer::start_with(pki, |c| {
        c.max_connections = 64;
        c.limits.max_connections_per_address = 16;
        c.limits.anonymous_share = 50;
        c.limits.handshake_timeout = 1.0;
        c.limits.request_head_timeout = 1.0;
        c.limits.idle_timeout = 1.0;
        c.limits.body_grace = 1.0;
        c.limits.body_min_rate = 10_240;
        c.limits.http2_ping_interval = 1.0;
        c.limits.http2_ping_timeout = 1.0;
    })
}

/// A TCP connection from `source` to the server.
async fn connect_from(source: Ipv4Addr, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    socket
        .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .await
}

/// `GET path` on a new TLS connection from `source`: status and how long it took.
async fn timed_get(
    config: Arc<rustls::ClientConfig>,
    source: Ipv4Addr,
    port: u16,
    path: &str,
) -> Result<(u16, Duration), String> {
    let started = Instant::now();
    let tcp = connect_from(source, port)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| format!("http: {e}"))?;
    tokio::spawn(conn);
    let request = http::Request::get(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status().as_u16();
    response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?;
    Ok((status, started.elapsed()))
}

/// What a flooding connection does once connected.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Attack {
    /// TCP only: no TLS ClientHello.
    Tcp,
    /// The TLS handshake, then nothing.
    Tls,
    /// TLS (ALPN h2), the HTTP/2 preface and SETTINGS, then nothing.
    H2Preface,
    /// TLS, the head of a 1 MB `POST /jobs`, a little of the body, then nothing.
    StalledBody,
}

/// Keep one flooding connection of `attack` open from `source` until `stop`, opening a new one
/// whenever the server closes it. Counts the connections the server closed.
async fn flood_connection(
    attack: Attack,
    source: Ipv4Addr,
    port: u16,
    config: Arc<rustls::ClientConfig>,
    stop: Arc<AtomicBool>,
    closed: Arc<AtomicUsize>,
) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut tcp) = connect_from(source, port).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let mut buf = [0u8; 4096];
        if attack == Attack::Tcp {
            let _ = wait_closed(&mut tcp, &mut buf, &stop).await;
        } else {
            let connector = tokio_rustls::TlsConnector::from(config.clone());
            let Ok(mut tls) = connector
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
            else {
                closed.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let sent = match attack {
                Attack::H2Preface => {
                    // The preface, then an empty SETTINGS frame.
                    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
                    bytes.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
                    tls.write_all(&bytes).await
                }
                Attack::StalledBody => {
                    let head = "POST /jobs HTTP/1.1\r\nhost: localhost\r\ncontent-type: \
                                application/json\r\ncontent-length: 1000000\r\n\r\n{\"files\": [";
                    tls.write_all(head.as_bytes()).await
                }
                _ => Ok(()),
            };
            if sent.is_ok() {
                let _ = wait_closed(&mut tls, &mut buf, &stop).await;
            }
        }
        closed.fetch_add(1, Ordering::Relaxed);
        // Reconnect soon, as an attacker would (the pause keeps the churn, and the local ports
        // it leaves in TIME_WAIT, small enough for the tests that run beside this one).
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Read (and throw away) until the peer closes, or `stop`.
async fn wait_closed(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    buf: &mut [u8],
    stop: &AtomicBool,
) -> std::io::Result<()> {
    while !stop.load(Ordering::Relaxed) {
        match tokio::time::timeout(Duration::from_millis(100), stream.read(buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(()),
            Ok(Ok(_)) | Err(_) => {}
        }
    }
    Ok(())
}

#[test]
fn idle_anonymous_floods_do_not_keep_certificate_holders_out() {
    let Some(pki) = pki() else { return };
    let server = short_deadline_server(pki);
    let port = server.port;
    let anonymous = server.client(pki, None).tls_config();
    let mut h2 = (*anonymous).clone();
    h2.alpn_protocols = vec![b"h2".to_vec()];
    let h2 = Arc::new(h2);
    let user = server.client(pki, Some(TEST_USER)).tls_config();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for attack in [
        Attack::Tcp,
        Attack::Tls,
        Attack::H2Preface,
        Attack::StalledBody,
    ] {
        let stop = Arc::new(AtomicBool::new(false));
        let closed = Arc::new(AtomicUsize::new(0));
        // 4 addresses × 20 connections: each address over its cap (16), all of them over the
        // anonymous share (32) and the whole table (64).
        for a in 0..4u8 {
            let source = if a == 0 {
                Ipv4Addr::LOCALHOST
            } else {
                Ipv4Addr::new(127, 0, 0, 2 + a)
            };
            for _ in 0..20 {
                let config = if attack == Attack::H2Preface {
                    h2.clone()
                } else {
                    anonymous.clone()
                };
                runtime.spawn(flood_connection(
                    attack,
                    source,
                    port,
                    config,
                    stop.clone(),
                    closed.clone(),
                ));
            }
        }
        // Let the flood fill the table, then probe as a certificate holder for 3 s.
        std::thread::sleep(Duration::from_millis(500));
        let mut worst = Duration::ZERO;
        let probes_started = Instant::now();
        let mut probes = 0;
        while probes_started.elapsed() < Duration::from_secs(3) {
            let answer = runtime.block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(1),
                    timed_get(user.clone(), USER_ADDRESS, port, "/whoami"),
                )
                .await
            });
            let (status, took) = match answer {
                Ok(Ok(a)) => a,
                Ok(Err(e)) => panic!("{attack:?}: probe {probes} failed: {e}"),
                Err(_) => panic!("{attack:?}: probe {probes} got no answer within a second"),
            };
            assert_eq!(status, 200, "{attack:?}");
            worst = worst.max(took);
            probes += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, Ordering::Relaxed);
        // The flood's connections were closed (deadlines, or room made for others): they
        // did not hold their slots for the whole attack.
        let closed = closed.load(Ordering::Relaxed);
        eprintln!(
            "{attack:?}: {probes} probes, slowest {:.0} ms, {closed} flooding connections closed",
            worst.as_secs_f64() * 1000.0
        );
        assert!(
            closed >= 160,
            "{attack:?}: only {closed} flooding connections closed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    runtime.shutdown_timeout(Duration::from_secs(1));
}

#[test]
fn idle_connections_are_closed_at_their_deadlines() {
    let Some(pki) = pki() else { return };
    let server = short_deadline_server(pki);
    let port = server.port;
    let user = server.client(pki, Some(TEST_USER)).tls_config();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let never = AtomicBool::new(false);
        let mut buf = [0u8; 1024];
        // TCP without a handshake: the handshake deadline (1 s).
        let started = Instant::now();
        let mut tcp = connect_from(USER_ADDRESS, port).await.unwrap();
        wait_closed(&mut tcp, &mut buf, &never).await.unwrap();
        let took = started.elapsed();
        assert!(
            (Duration::from_millis(900)..Duration::from_millis(2500)).contains(&took),
            "TCP closed after {took:?}"
        );
        // A handshake and no request, even with a certificate: the request head deadline.
        let started = Instant::now();
        let tcp = connect_from(USER_ADDRESS, port).await.unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(user.clone())
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        wait_closed(&mut tls, &mut buf, &never).await.unwrap();
        let took = started.elapsed();
        assert!(
            (Duration::from_millis(900)..Duration::from_millis(2500)).contains(&took),
            "TLS closed after {took:?}"
        );
        // A kept-alive connection after its answer: the idle deadline.
        let tcp = connect_from(USER_ADDRESS, port).await.unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(user.clone())
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        tls.write_all(b"GET /whoami HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .await
            .unwrap();
        let n = tls.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        let started = Instant::now();
        wait_closed(&mut tls, &mut buf, &never).await.unwrap();
        let took = started.elapsed();
        assert!(
            (Duration::from_millis(900)..Duration::from_millis(2500)).contains(&took),
            "kept-alive connection closed after {took:?}"
        );
    });
}

#[test]
fn a_stalled_body_is_cut_at_its_deadline() {
    let Some(pki) = pki() else { return };
    let server = short_deadline_server(pki);
    let user = server.client(pki, Some(TEST_USER)).tls_config();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let tcp = connect_from(USER_ADDRESS, server.port).await.unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(user)
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        // 1024 bytes of a 100 000 byte body, then nothing: at 10 240 bytes/s after a 1 s grace
        // the body is due to have progressed by 1.1 s.
        let head = "POST /jobs HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
                    content-length: 100000\r\n\r\n";
        let started = Instant::now();
        tls.write_all(head.as_bytes()).await.unwrap();
        tls.write_all(&[b' '; 1024]).await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer)).await;
        let took = started.elapsed();
        assert!(read.is_ok(), "the connection was not closed");
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(text.contains("did not arrive in time"), "{text}");
        assert!(
            (Duration::from_millis(1000)..Duration::from_millis(2500)).contains(&took),
            "cut after {took:?}"
        );
    });
}

/// Every endpoint that takes a body refuses a caller who may not use it before reading: an
/// anonymous request announcing 100 MB (beyond every endpoint's limit) gets the use case's 403,
/// not a 413 and not a wait for the body.
#[test]
fn write_endpoints_refuse_before_reading_the_body() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    let anonymous = server.client(pki, None).tls_config();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (method, path, message) in [
        ("POST", "/jobs", "Not enough permissions"),
        ("PUT", "/jobs", "Not enough permissions"),
        ("POST", "/jobs/abc", "Not enough permissions"),
        ("POST", "/ban/se", "Not enough permissions"),
        ("POST", "/ban/dn", "Not enough permissions"),
        ("POST", "/config/global", "Not enough permissions"),
        ("POST", "/config/authorize", "Certificate required"),
        ("POST", "/optimizer/current", "Not enough permissions"),
        ("POST", "/admin/force-start", "Certificate required"),
        (
            "PUT",
            "/delegation/0123456789abcdef/credential",
            "Certificate required",
        ),
    ] {
        let answer = runtime.block_on(async {
            let tcp = connect_from(USER_ADDRESS, server.port).await.unwrap();
            let mut tls = tokio_rustls::TlsConnector::from(anonymous.clone())
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .unwrap();
            let head = format!(
                "{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
                 content-length: 100000000\r\n\r\n"
            );
            tls.write_all(head.as_bytes()).await.unwrap();
            let mut answer = vec![0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut answer))
                .await
                .expect("an answer without the body")
                .unwrap();
            String::from_utf8_lossy(&answer[..n]).into_owned()
        });
        assert!(
            answer.starts_with("HTTP/1.1 403"),
            "{method} {path}: {answer}"
        );
        assert!(answer.contains(message), "{method} {path}: {answer}");
    }
}

/// Peak resident memory of a process, in bytes (`VmHWM`).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/<pid>/status");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib * 1024
}

/// The bound on the service's peak memory while 128 anonymous clients each announce a 12.7 MB
/// body: the bodies are refused unread, so the peak is the idle service plus 128 connections'
/// buffers. (Before the change, the same load took it to 1.57 GB.)
const ANONYMOUS_UPLOAD_RSS_BOUND: u64 = 64 * 1024 * 1024;

#[test]
fn anonymous_uploads_are_refused_unread_and_cost_no_memory() {
    let Some(pki) = pki() else { return };
    let data = tempfile::tempdir().unwrap();
    let config = "max_connections = 1024\n[limits]\nmax_connections_per_address = 256\n\
                  [engine]\nenabled = false\n";
    let (mut child, port) = spawn_ftsd_with(pki, &data.path().join("data"), config);
    let anonymous = Client::new(port, &pki.path("ca.pem"), None).tls_config();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let size: usize = 12_700_000;
    let results = runtime.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..128 {
            let config = anonymous.clone();
            tasks.push(tokio::spawn(async move {
                let tcp = connect_from(Ipv4Addr::LOCALHOST, port).await?;
                let mut tls = tokio_rustls::TlsConnector::from(config)
                    .connect(ServerName::try_from("localhost").unwrap(), tcp)
                    .await?;
                let head = format!(
                    "POST /jobs HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
                     content-length: {size}\r\n\r\n"
                );
                tls.write_all(head.as_bytes()).await?;
                // 64 KiB of the 12.7 MB, then wait for the verdict.
                let chunk = vec![b' '; 64 * 1024];
                tls.write_all(&chunk).await?;
                let mut answer = vec![0u8; 4096];
                let n = tokio::time::timeout(Duration::from_secs(20), tls.read(&mut answer))
                    .await
                    .map_err(|_| std::io::Error::other("no answer"))??;
                Ok::<String, std::io::Error>(String::from_utf8_lossy(&answer[..n]).into_owned())
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    let peak = peak_rss(child.id());
    let _ = child.kill();
    let _ = child.wait();
    for r in &results {
        let answer = r.as_ref().expect("an answer to every upload");
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
        assert!(answer.contains("Not enough permissions"), "{answer}");
    }
    eprintln!(
        "peak RSS with 128 anonymous 12.7 MB uploads: {:.1} MiB",
        peak as f64 / 1048576.0
    );
    assert!(
        peak < ANONYMOUS_UPLOAD_RSS_BOUND,
        "peak RSS {peak} bytes, bound {ANONYMOUS_UPLOAD_RSS_BOUND}"
    );
}

#[test]
fn numbers_in_queries_and_bodies_are_strict() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    let client = server.client(pki, Some(TEST_USER));
    let (status, body) = delegate_test_user(
        &client,
        pki,
        &independent_delegation_id(TEST_USER_DN, &[]),
        false,
    );
    assert_eq!(status, 201, "{body}");
    for (query, message) in [
        (
            "/jobs?limit=1e3",
            "Invalid limit: invalid literal for int() with base 10: '1e3'",
        ),
        (
            "/jobs?limit=0x10",
            "Invalid limit: invalid literal for int() with base 10: '0x10'",
        ),
        (
            "/jobs?limit=NaN",
            "Invalid limit: invalid literal for int() with base 10: 'NaN'",
        ),
        (
            "/jobs?limit=501",
            "The limit must be positive and less or equal than 500",
        ),
        (
            "/jobs?state_in=FINISHED&time_window=1.5",
            "Invalid time_window: invalid literal for int() with base 10: '1.5'",
        ),
        (
            "/files?limit=ten",
            "Invalid limit: invalid literal for int() with base 10: 'ten'",
        ),
    ] {
        let reply = client.get(query).unwrap();
        assert_eq!(reply.status, 400, "{query}: {}", reply.text());
        assert_eq!(reply.json()["message"], message, "{query}");
    }
    assert_eq!(client.get("/jobs?limit=%2010%20").unwrap().status, 200);
    let file = |size: serde_json::Value| {
        json!({"files": [{"sources": ["mock://a.example/x"], "destinations": ["mock://b.example/x"],
                          "filesize": size}], "params": {}})
    };
    let reply = post_json(&client, "/jobs", &file(json!(1e308)));
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert_eq!(
        reply.json()["message"],
        "Invalid value within the request: 'filesize' is out of range"
    );
    let reply = post(
        &client,
        "/jobs",
        "application/json",
        r#"{"files": [{"sources": ["mock://a.example/x"], "destinations": ["mock://b.example/x"]}],
            "params": {"max_time_in_queue": -5}}"#,
    );
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert_eq!(
        reply.json()["message"],
        "Invalid value within the request: 'max_time_in_queue' is out of range"
    );
}
