//! The optional plain-HTTP listener for a local Prometheus (`[metrics] listen`): it serves
//! `GET /metrics` and nothing else, without TLS or authentication, which is why the
//! configuration only accepts a loopback address.
//!
//! Bounded: at most [`MAX_CONNECTIONS`] connections, each closed after [`CONNECTION_DEADLINE`].

use std::{convert::Infallible, sync::Arc, time::Duration};

use hyper::{Method, StatusCode, body::Incoming, header, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{
    net::TcpListener,
    sync::{Semaphore, watch},
};
use warp::reply::Response;

use crate::service::{Service, metrics::CONTENT_TYPE};

/// A scraper needs one connection; a few more leave room for a curl while it scrapes.
pub const MAX_CONNECTIONS: usize = 16;
/// A scrape takes milliseconds; an idle connection must not stay forever.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(60);

/// Serve until `stop` turns true.
pub async fn run(listener: TcpListener, service: Arc<Service>, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = stop.changed() => break,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let tcp = tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let service = service.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let svc = service_fn(move |req: hyper::Request<Incoming>| {
                let service = service.clone();
                async move { Ok::<_, Infallible>(answer(&service, &req).await) }
            });
            let conn =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc);
            let _ = tokio::time::timeout(CONNECTION_DEADLINE, conn).await;
        });
    }
}

async fn answer(service: &Service, req: &hyper::Request<Incoming>) -> Response {
    let status = |code: StatusCode, text: &'static str| {
        let mut r = Response::new(text.into());
        *r.status_mut() = code;
        r
    };
    if req.uri().path() != "/metrics" {
        return status(StatusCode::NOT_FOUND, "only /metrics is served here\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return status(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match service.metrics_text_unchecked().await {
        Ok(text) => {
            let mut r = Response::new(text.into());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(CONTENT_TYPE),
            );
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "metrics not available");
            status(StatusCode::INTERNAL_SERVER_ERROR, "metrics not available\n")
        }
    }
}
