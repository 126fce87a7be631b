//! The HTTPS front door: our own accept loop (warp 0.4 has no TLS), rustls handshakes with the
//! grid client verifier, the verified identity put into every request's extensions, and
//! hyper-util serving HTTP/1.1 and HTTP/2 on the TLS stream.
//!
//! Bounded: at most `max_connections` connections at once (the rest wait in the kernel's
//! backlog), handshakes and request headers must arrive within a deadline. Shutdown stops
//! accepting, lets connections finish their requests, and gives up after a deadline.

pub mod metrics_http;
pub mod tls;

use std::{future::Future, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_rustls::TlsAcceptor;
use tower_service::Service as _;
use warp::{filters::BoxedFilter, reply::Response};

use crate::{
    api::{self, Peer},
    auth::Authenticator,
};

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

/// A client gets this long to complete the TLS handshake; a stalled one holds a connection slot.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// And this long to send a request's headers (HTTP/1.1), so idle sockets cannot pile up.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// At shutdown, connections get this long to finish what they are doing.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// Everything the accept loop needs.
pub struct Server {
    pub tls: Arc<rustls::ServerConfig>,
    pub auth: Arc<Authenticator>,
    pub routes: BoxedFilter<(Response,)>,
    pub max_connections: usize,
    /// HTTP requests are counted here (`ftsd_http_requests_total`, ...).
    pub metrics: Arc<crate::service::metrics::Metrics>,
}

impl Server {
    /// Serve until `shutdown` completes, then drain connections within [`SHUTDOWN_DEADLINE`].
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServerError> {
        let acceptor = TlsAcceptor::from(self.tls.clone());
        let slots = Arc::new(Semaphore::new(self.max_connections));
        let graceful = GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                _ = &mut shutdown => break,
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let (tcp, remote) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let acceptor = acceptor.clone();
            let auth = self.auth.clone();
            let routes = self.routes.clone();
            let metrics = self.metrics.clone();
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let _permit = permit;
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%remote, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%remote, "TLS handshake timed out");
                        return;
                    }
                };
                let peer = match identify(&auth, tls.get_ref().1.peer_certificates()) {
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
                let service = service_for(routes, peer, remote, metrics);
                let mut builder = auto::Builder::new(TokioExecutor::new());
                builder
                    .http1()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT);
                let conn = builder.serve_connection(TokioIo::new(tls), service);
                if let Err(e) = watcher.watch(conn.into_owned()).await {
                    tracing::debug!(%remote, error = %e, "connection ended with an error");
                }
            });
        }
        drop(listener);
        tracing::info!("shutting down: draining connections");
        if tokio::time::timeout(SHUTDOWN_DEADLINE, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after the shutdown deadline; closing them");
        }
        Ok(())
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

/// The per-connection hyper service: identity into the extensions, path normalisation, warp.
fn service_for(
    routes: BoxedFilter<(Response,)>,
    peer: Peer,
    remote: SocketAddr,
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
        let metrics = metrics.clone();
        let user = user.clone();
        let started = std::time::Instant::now();
        async move {
            let response = svc.call(req).await;
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
