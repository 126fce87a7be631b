//! Request bodies, read with a bound: a client cannot make us buffer more than the endpoint's
//! limit, whether it announces the length or streams chunks.

use bytes::{Buf, BufMut};
use futures_util::{Stream, StreamExt};
use warp::{Filter, http::StatusCode};

use super::error::ApiError;

/// A filter yielding the raw body stream (no limit applied yet; see [`read`]).
pub fn stream() -> impl Filter<
    Extract = (impl Stream<Item = Result<impl Buf + Send + 'static, warp::Error>> + Send + 'static,),
    Error = warp::Rejection,
> + Clone {
    warp::body::stream()
}

/// Read at most `limit` bytes; more is refused with 413.
pub async fn read<S, B>(body: S, limit: usize) -> Result<Vec<u8>, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let mut out = Vec::new();
    futures_util::pin_mut!(body);
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("Could not read the request body: {e}"),
            )
        })?;
        if out.len() + chunk.remaining() > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("The request body is larger than {limit} bytes"),
            ));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            let n = part.len();
            out.put_slice(part);
            chunk.advance(n);
        }
    }
    Ok(out)
}
