//! The HTTPS front door: our own accept loop (warp 0.4 has no TLS), rustls handshakes with the
//! grid client verifier, the verified identity put into every request's extensions, and
//! hyper-util serving HTTP/1.1 and HTTP/2 on the TLS stream.
//!
//! No client can hold the service: connection slots are shared out by [`connections::Table`]
//! (per address, anonymous share, the longest-idle connection gives way when a group is full),
//! and every phase of a connection has a deadline from `[limits]`: the TLS handshake, the first
//! request head (HTTP/2 preface included), the idle time between requests, HTTP/2 PING
//! answers; request bodies have a minimum rate (enforced where they are read, in `api`).
//! Shutdown stops accepting, lets connections finish their requests, and gives up after a
//! deadline.

pub mod connections;
pub mod metrics_http;
pub mod tls;

use std::{future::Future, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{net::TcpListener, time::Instant};
use tokio_rustls::TlsAcceptor;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower_service::Service as _;
use warp::{filters::BoxedFilter, reply::Response};

use crate::{
    api::{self, Peer},
    auth::Authenticator,
    config::Limits,
};
use connections::{Quotas, Slot, Table};

/// Errors of the server layer.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// `field` is the option naming the file: `host_cert` or `host_key`.
    #[error("{field} {path}: {reason}")]
    HostCredential {
        field: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("TLS configuration: {0}")]
    Tls(rustls::Error),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
}

/// At shutdown, connections get this long to finish what they are doing.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);
/// A connection closed for being idle (or to make room) gets this long to say goodbye (HTTP/2
/// GOAWAY) before its socket is dropped: a peer that does not read cannot hold it longer.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// HTTP/2 streams a connection may have open at once: the reference's Apache serves 100 per
/// connection, and every stream may hold a handler and a body.
const MAX_H2_STREAMS: u32 = 100;
/// HTTP/2 streams a client may reset before we read them (the "rapid reset" attack).
const MAX_H2_PENDING_RESETS: usize = 20;
/// Largest request head (HTTP/1.1 buffer, HTTP/2 header list): FTS3 clients send a few hundred
/// bytes; 64 KiB leaves room for long query strings and cookies of web front ends.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// A connection idle this long may be closed for a client from an address holding no connection
/// when the table offers no fairer room: long enough that a flood cannot churn the slots
/// (each may change hands once a second at most), short next to every deadline.
const DISPLACE_AFTER: Duration = Duration::from_secs(1);
/// After a failed `accept` (EMFILE and friends): back off instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Everything the accept loop needs.
pub struct Server {
    pub tls: Arc<rustls::ServerConfig>,
    pub auth: Arc<Authenticator>,
    pub routes: BoxedFilter<(Response,)>,
    pub limits: Limits,
    /// HTTP requests are counted here (`ftsd_http_requests_total`, ...).
    pub metrics: Arc<crate::service::metrics::Metrics>,
}

/// What every connection task shares.
struct Shared {
    acceptor: TlsAcceptor,
    auth: Arc<Authenticator>,
    routes: BoxedFilter<(Response,)>,
    limits: Limits,
    metrics: Arc<crate::service::metrics::Metrics>,
    /// Cancelled at shutdown: finish the requests in flight, then close.
    draining: CancellationToken,
    /// Cancelled when the shutdown deadline passed: close now.
    abort: CancellationToken,
}

impl Server {
    /// Serve until `shutdown` completes, then drain connections within [`SHUTDOWN_DEADLINE`].
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServerError> {
        let limits = self.limits;
        let table = Table::new(Quotas {
            max_connections: limits.max_connections,
            max_per_address: limits.max_connections_per_address,
            max_anonymous: limits.max_anonymous_connections,
            request_head_timeout: limits.request_head_timeout,
            idle_timeout: limits.idle_timeout,
            displace_after: DISPLACE_AFTER,
        });
        let shared = Arc::new(Shared {
            acceptor: TlsAcceptor::from(self.tls.clone()),
            auth: self.auth,
            routes: self.routes,
            limits,
            metrics: self.metrics,
            draining: CancellationToken::new(),
            abort: CancellationToken::new(),
        });
        let tasks = TaskTracker::new();
        tokio::pin!(shutdown);
        loop {
            let (tcp, remote) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
            };
            // Accepting at once (rather than leaving clients in the kernel's queue) is what
            // lets a new client push out an idle one.
            let slot = match table.admit(remote.ip()) {
                Ok(slot) => slot,
                Err(why) => {
                    tracing::debug!(%remote, reason = why.as_str(), "connection refused");
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            tasks.spawn(serve_connection(shared.clone(), tcp, remote, slot));
        }
        drop(listener);
        tasks.close();
        let (open, _) = table.counts();
        tracing::info!(connections = open, "shutting down: draining connections");
        shared.draining.cancel();
        if tokio::time::timeout(SHUTDOWN_DEADLINE, tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after the shutdown deadline; closing them");
            shared.abort.cancel();
            let _ = tokio::time::timeout(CLOSE_GRACE, tasks.wait()).await;
        }
        Ok(())
    }
}

/// How a connection is being closed.
#[derive(Clone, Copy, PartialEq)]
enum Closing {
    No,
    /// Shutdown: the requests in flight finish (the server's deadline bounds them).
    Draining,
    /// Idle past its deadline or closed to make room: dropped at this instant at the latest.
    By(Instant),
}

/// One connection from handshake to close.
async fn serve_connection(
    shared: Arc<Shared>,
    tcp: tokio::net::TcpStream,
    remote: SocketAddr,
    slot: Slot,
) {
    let state = slot.state().clone();
    let handshake =
        tokio::time::timeout(shared.limits.handshake_timeout, shared.acceptor.accept(tcp));
    let tls = tokio::select! {
        done = handshake => match done {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(%remote, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%remote, "TLS handshake timed out");
                return;
            }
        },
        _ = state.evicted().cancelled() => return,
        _ = shared.draining.cancelled() => return,
    };
    let peer = match identify(&shared.auth, tls.get_ref().1.peer_certificates()) {
        Ok(peer) => peer,
        Err(reason) => {
            let chain: Vec<&[u8]> = tls
                .get_ref()
                .1
                .peer_certificates()
                .unwrap_or_default()
                .iter()
                .map(|c| c.as_ref())
                .collect();
            let (subject, issuer) = crate::auth::chain_names(&chain);
            tracing::info!(
                %remote,
                subject = ?subject.unwrap_or_default(),
                issuer = ?issuer.unwrap_or_default(),
                %reason,
                "client identity refused"
            );
            return;
        }
    };
    slot.handshake_done(peer.0.is_some());
    let slot = Arc::new(slot);
    let service = service_for(
        shared.routes.clone(),
        peer,
        remote,
        slot.clone(),
        shared.metrics.clone(),
    );
    let limits = &shared.limits;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.request_head_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.http2_ping_interval))
        .keep_alive_timeout(limits.http2_ping_timeout)
        .max_concurrent_streams(MAX_H2_STREAMS)
        .max_pending_accept_reset_streams(Some(MAX_H2_PENDING_RESETS))
        .max_header_list_size(MAX_HEAD_BYTES as u32);
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    let mut closing = Closing::No;
    loop {
        let deadline = match closing {
            Closing::No => slot.deadline().map(Instant::from_std),
            Closing::Draining => None,
            Closing::By(at) => Some(at),
        };
        let expired = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(%remote, error = %e, "connection ended with an error");
                }
                break;
            }
            _ = state.changed(), if closing == Closing::No => {}
            _ = expired => match closing {
                Closing::By(_) => {
                    tracing::debug!(%remote, "connection dropped after its close grace");
                    break;
                }
                // The deadline may have moved since it was read: look again.
                _ if slot.deadline().is_some_and(|d| d <= std::time::Instant::now()) => {
                    tracing::debug!(%remote, "connection idle past its deadline: closing");
                    conn.as_mut().graceful_shutdown();
                    closing = Closing::By(Instant::now() + CLOSE_GRACE);
                }
                _ => {}
            },
            _ = state.evicted().cancelled(), if closing == Closing::No => {
                conn.as_mut().graceful_shutdown();
                closing = Closing::By(Instant::now() + CLOSE_GRACE);
            }
            _ = shared.draining.cancelled(), if closing == Closing::No => {
                conn.as_mut().graceful_shutdown();
                closing = Closing::Draining;
            }
            _ = shared.abort.cancelled() => break,
        }
    }
}

/// The identity of a connection, from the chain the handshake accepted.
fn identify(
    auth: &Authenticator,
    certs: Option<&[rustls::pki_types::CertificateDer<'static>]>,
) -> Result<Peer, crate::auth::AuthError> {
    let Some(certs) = certs.filter(|c| !c.is_empty()) else {
        return Ok(Peer(None));
    };
    let chain: Vec<&[u8]> = certs.iter().map(|c| c.as_ref()).collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let identity = auth.identify(&chain, now)?;
    tracing::debug!(user_dn = %identity.user_dn, fqans = ?identity.fqans, "client authenticated");
    Ok(Peer(Some(Arc::new(identity))))
}

/// The per-connection hyper service: identity into the extensions, path normalisation, warp,
/// and the connection's busy mark while a handler runs.
fn service_for(
    routes: BoxedFilter<(Response,)>,
    peer: Peer,
    remote: SocketAddr,
    slot: Arc<Slot>,
    metrics: Arc<crate::service::metrics::Metrics>,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<Response, std::convert::Infallible>> + Send,
> + Clone {
    let svc = warp::service(routes);
    // The access log names the caller: the certificate's user DN, or "anon".
    let user: Arc<str> = peer
        .0
        .as_ref()
        .map_or_else(|| Arc::from("anon"), |id| Arc::from(id.user_dn.as_str()));
    service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(peer.clone());
        api::normalize(&mut req);
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let mut svc = svc.clone();
        // The connection counts as busy (no idle deadline, not closed to make room) until the
        // handler has its answer.
        let busy = slot.request();
        let user = user.clone();
        let metrics = metrics.clone();
        let started = std::time::Instant::now();
        async move {
            let response = svc.call(req).await;
            drop(busy);
            if let Ok(r) = &response {
                use hyper::body::Body as _;
                // Streamed bodies (none today) have no size known in advance: "-".
                let bytes = r
                    .body()
                    .size_hint()
                    .exact()
                    .map_or_else(|| "-".to_string(), |n| n.to_string());
                // DNs hold spaces: quoted (Debug), so the line stays parseable.
                tracing::info!(
                    %remote,
                    user = ?user,
                    %method,
                    %path,
                    status = r.status().as_u16(),
                    bytes = %bytes,
                    ms = started.elapsed().as_millis() as u64,
                    "request"
                );
                metrics.http(
                    api::routes::route_label(&path),
                    method.as_str(),
                    r.status().as_u16(),
                    started.elapsed().as_secs_f64(),
                );
            }
            response
        }
    })
}
