//! Request bodies, read only once the caller may send one, and bounded three ways:
//! - per endpoint: at most the endpoint's limit (413), whether the client announces the
//!   length or streams chunks;
//! - all requests together: the bytes held are taken from one budget
//!   (`[limits] body_bytes_in_flight`); a body that does not fit waits up to
//!   [`BUDGET_WAIT`], then gets 503 with `Retry-After`, so concurrent uploads cannot exhaust
//!   memory;
//! - in time: after a grace period the body must keep arriving at the minimum rate
//!   (`body_min_rate`); a stalled body is cut with 408 and its connection closed.

use std::{sync::Arc, time::Duration};

use bytes::{Buf, BufMut};
use futures_util::{Stream, StreamExt};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Instant,
};
use warp::{Filter, http::StatusCode};

use super::{Ctx, error::ApiError};
use crate::{config::Limits, service::admission::BodyAccess};

/// How long a body waits for room in the budget before the request gets 503: long enough to
/// ride out a burst, short enough that clients retry rather than pile up.
pub const BUDGET_WAIT: Duration = Duration::from_secs(2);

/// How much of a refused (too large) body is still read and thrown away before the 413 goes
/// out: a client that is still sending gets the answer rather than a reset connection (a socket
/// closed with unread data makes the kernel send RST, which destroys the answer in flight, and
/// clients then report "connection reset" instead of the reason). Larger bodies just get the
/// 413 and the connection closed.
pub const DRAIN_MAX: u64 = 1024 * 1024;
/// How long that reading may take at most.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// The shared rules of body reading.
#[derive(Clone, Debug)]
pub struct BodyLimits {
    budget: Arc<Semaphore>,
    budget_bytes: usize,
    min_rate: u64,
    grace: Duration,
}

impl BodyLimits {
    pub fn new(limits: &Limits) -> BodyLimits {
        // The semaphore counts bytes; its maximum is far above any configured budget.
        let budget_bytes = limits.body_bytes_in_flight.min(Semaphore::MAX_PERMITS);
        BodyLimits {
            budget: Arc::new(Semaphore::new(budget_bytes)),
            budget_bytes,
            min_rate: limits.body_min_rate.max(1),
            grace: limits.body_grace,
        }
    }

    /// Bytes of the budget not held by a body now.
    pub fn available(&self) -> usize {
        self.budget.available_permits()
    }
}

/// A body, read; holds its share of the budget until dropped.
pub struct Body {
    pub bytes: Vec<u8>,
    _budget: Option<OwnedSemaphorePermit>,
}

impl std::ops::Deref for Body {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

/// A filter yielding the body's announced length and its raw stream (nothing read yet; see
/// [`read`]).
pub fn stream() -> impl Filter<
    Extract = (
        Option<u64>,
        impl Stream<Item = Result<impl Buf + Send + 'static, warp::Error>> + Send + 'static,
    ),
    Error = warp::Rejection,
> + Clone {
    warp::header::optional::<u64>("content-length").and(warp::body::stream())
}

/// Admit the caller (`access`, before anything is read), then read at most `limit` bytes.
pub async fn read<S, B>(
    ctx: &Ctx,
    access: BodyAccess<'_>,
    announced: Option<u64>,
    body: S,
    limit: usize,
) -> Result<Body, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let user = ctx.user().await?;
    ctx.service.admit_body(&user, access)?;
    read_admitted(&ctx.body, announced, body, limit).await
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("The request body is larger than {limit} bytes"),
    )
}

fn busy() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "The service is receiving too many request bodies at once; retry later",
    )
}

fn stalled(rate: u64) -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        format!("The request body did not arrive in time (less than {rate} bytes per second)"),
    )
}

/// Take `n` bytes from the budget, waiting up to `wait`.
async fn reserve(
    limits: &BodyLimits,
    n: usize,
    wait: Duration,
) -> Result<Option<OwnedSemaphorePermit>, ApiError> {
    if n == 0 {
        return Ok(None);
    }
    // `n` is at most an endpoint's limit, which `[limits]` keeps within the budget.
    let n = u32::try_from(n.min(limits.budget_bytes)).map_err(|_| busy())?;
    match tokio::time::timeout(wait, limits.budget.clone().acquire_many_owned(n)).await {
        Ok(Ok(permit)) => Ok(Some(permit)),
        // Timed out, or the semaphore was closed (it never is).
        _ => Err(busy()),
    }
}

/// Read a body whose caller is admitted.
pub async fn read_admitted<S, B>(
    limits: &BodyLimits,
    announced: Option<u64>,
    body: S,
    limit: usize,
) -> Result<Body, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    futures_util::pin_mut!(body);
    if let Some(n) = announced.filter(|n| *n > limit as u64) {
        if n <= DRAIN_MAX {
            drain(&mut body).await;
        }
        return Err(too_large(limit));
    }
    let started = Instant::now();
    // A body that announces its length reserves it all before the first byte is read; a
    // chunked one reserves chunk by chunk.
    let mut held = match announced {
        Some(n) => reserve(limits, n as usize, BUDGET_WAIT).await?,
        None => None,
    };
    let mut out = Vec::with_capacity(held_bytes(&held));
    loop {
        // The latest instant at which the bytes received so far still meet the minimum rate.
        let allowed =
            limits.grace + Duration::from_secs_f64(out.len() as f64 / limits.min_rate as f64);
        let deadline = started + allowed;
        let next = match tokio::time::timeout_at(deadline, body.next()).await {
            Ok(next) => next,
            Err(_) => return Err(stalled(limits.min_rate)),
        };
        let Some(chunk) = next else {
            break;
        };
        let mut chunk = chunk.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("Could not read the request body: {e}"),
            )
        })?;
        let len = out.len() + chunk.remaining();
        if len > limit {
            drain(&mut body).await;
            return Err(too_large(limit));
        }
        let have = held_bytes(&held);
        if len > have {
            // Chunked (or longer than announced, which hyper refuses anyway): grow the hold.
            let more = reserve(limits, len - have, BUDGET_WAIT).await?;
            held = merge(held, more);
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            let n = part.len();
            out.put_slice(part);
            chunk.advance(n);
        }
    }
    Ok(Body {
        bytes: out,
        _budget: held,
    })
}

/// Read and drop the rest of a refused body: at most [`DRAIN_MAX`] bytes within
/// [`DRAIN_TIMEOUT`].
async fn drain<S, B>(body: &mut std::pin::Pin<&mut S>)
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let read = async {
        let mut seen = 0u64;
        while let Some(Ok(chunk)) = body.next().await {
            seen += chunk.remaining() as u64;
            if seen > DRAIN_MAX {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, read).await;
}

fn held_bytes(held: &Option<OwnedSemaphorePermit>) -> usize {
    held.as_ref().map_or(0, |p| p.num_permits())
}

fn merge(
    held: Option<OwnedSemaphorePermit>,
    more: Option<OwnedSemaphorePermit>,
) -> Option<OwnedSemaphorePermit> {
    match (held, more) {
        (Some(mut a), Some(b)) => {
            a.merge(b);
            Some(a)
        }
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn limits(budget: usize, rate: u64, grace_ms: u64) -> BodyLimits {
        BodyLimits {
            budget: Arc::new(Semaphore::new(budget)),
            budget_bytes: budget,
            min_rate: rate,
            grace: Duration::from_millis(grace_ms),
        }
    }

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, warp::Error>> {
        futures_util::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn bodies_hold_their_bytes_of_the_budget_until_dropped() {
        let l = limits(100, 1000, 1000);
        let body = read_admitted(&l, Some(10), chunks(&[b"01234", b"56789"]), 50)
            .await
            .unwrap();
        assert_eq!(&body.bytes, b"0123456789");
        assert_eq!(l.available(), 90);
        let chunked = read_admitted(&l, None, chunks(&[b"abc", b"def"]), 50)
            .await
            .unwrap();
        assert_eq!(l.available(), 84);
        drop((body, chunked));
        assert_eq!(l.available(), 100);
    }

    #[tokio::test]
    async fn limits_are_enforced_before_reading() {
        let l = limits(100, 1000, 1000);
        let e = read_admitted(&l, Some(51), chunks(&[]), 50)
            .await
            .err()
            .unwrap();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        let e = read_admitted(&l, None, chunks(&[&[0; 30], &[0; 30]]), 50)
            .await
            .err()
            .unwrap();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(l.available(), 100, "refused bodies hold nothing");
    }

    #[tokio::test]
    async fn a_refused_body_is_read_to_its_end_when_small_so_the_client_gets_the_413() {
        let l = limits(100, 1000, 1000);
        let taken = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counting = |parts: usize| {
            let taken = taken.clone();
            futures_util::stream::iter((0..parts).map(move |_| {
                taken.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok::<_, warp::Error>(Bytes::from_static(&[0; 30]))
            }))
        };
        let e = read_admitted(&l, Some(90), counting(3), 50)
            .await
            .err()
            .unwrap();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(taken.swap(0, std::sync::atomic::Ordering::Relaxed), 3);
        let e = read_admitted(&l, None, counting(3), 50)
            .await
            .err()
            .unwrap();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(taken.swap(0, std::sync::atomic::Ordering::Relaxed), 3);
        // A body far beyond the drain allowance is not read at all.
        let e = read_admitted(&l, Some(DRAIN_MAX + 1), counting(3), 50)
            .await
            .err()
            .unwrap();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(taken.load(std::sync::atomic::Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_exhausted_budget_answers_503_after_a_short_wait() {
        let l = limits(20, 1000, 1000);
        let held = read_admitted(&l, Some(15), chunks(&[&[1; 15]]), 50)
            .await
            .unwrap();
        let started = Instant::now();
        let e = read_admitted(&l, Some(10), chunks(&[&[1; 10]]), 50)
            .await
            .err()
            .unwrap();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(started.elapsed(), BUDGET_WAIT);
        drop(held);
        assert!(
            read_admitted(&l, Some(10), chunks(&[&[1; 10]]), 50)
                .await
                .is_ok()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_is_cut_at_its_deadline() {
        // 100 bytes/s after a 1 s grace: with 50 bytes in, the next chunk is due by 1.5 s.
        let l = limits(1000, 100, 1000);
        let stalled =
            futures_util::stream::iter(vec![Ok::<_, warp::Error>(Bytes::from_static(&[0; 50]))])
                .chain(futures_util::stream::pending());
        let started = Instant::now();
        let e = read_admitted(&l, None, stalled, 500).await.err().unwrap();
        assert_eq!(e.status, StatusCode::REQUEST_TIMEOUT);
        assert_eq!(started.elapsed(), Duration::from_millis(1500));
        assert_eq!(l.available(), 1000);
    }
}
