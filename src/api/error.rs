//! The one place where HTTP status codes and error bodies are chosen.
//!
//! Errors use the reference's JSON shape `{"status": "<code> <Reason>", "message": "..."}` with
//! werkzeug's reason phrases and default messages, which the Python client shows to users.

use serde::Serialize;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;

use crate::service::ServiceError;

/// werkzeug's default description for 404.
pub const NOT_FOUND_MESSAGE: &str = "The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again.";
/// werkzeug's default description for 405.
pub const METHOD_NOT_ALLOWED_MESSAGE: &str = "The method is not allowed for the requested URL.";

/// 419, which FTS3 clients read as "delegate first" (not a registered HTTP status).
pub const AUTHENTICATION_TIMEOUT: StatusCode = match StatusCode::from_u16(419) {
    Ok(s) => s,
    Err(_) => StatusCode::BAD_REQUEST,
};

/// `Retry-After` of a 503 (the body budget is exhausted): a few seconds lets the bodies being
/// read finish.
pub const RETRY_AFTER_SECONDS: u64 = 5;

/// An error answer: status and message.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

#[derive(Serialize)]
struct Body<'a> {
    status: String,
    message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, NOT_FOUND_MESSAGE)
    }

    pub fn method_not_allowed() -> ApiError {
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, METHOD_NOT_ALLOWED_MESSAGE)
    }

    pub fn into_response(self) -> Response {
        let body = Body {
            status: status_line(self.status),
            message: &self.message,
        };
        let mut response = json_response(self.status, &body);
        let headers = response.headers_mut();
        match self.status {
            // Back-pressure (the body budget is exhausted): tell clients when to come back.
            StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
            }
            // A body that stalled: the rest of it may still come, the connection cannot be
            // reused (HTTP/2 drops this header, its stream is simply answered).
            StatusCode::REQUEST_TIMEOUT => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

/// `"404 Not Found"`: the reference's `status` field.
pub fn status_line(status: StatusCode) -> String {
    let reason = match status.as_u16() {
        // Codes whose werkzeug phrase differs from (or is missing in) the http crate.
        419 => "Authentication Timeout",
        _ => status.canonical_reason().unwrap_or(""),
    };
    format!("{} {}", status.as_u16(), reason)
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> ApiError {
        match e {
            ServiceError::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, m),
            ServiceError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, m),
            ServiceError::BadRequest(m) => ApiError::new(StatusCode::BAD_REQUEST, m),
            ServiceError::NotImplemented(m) => ApiError::new(StatusCode::NOT_IMPLEMENTED, m),
            ServiceError::MethodNotAllowed(m) => ApiError::new(StatusCode::METHOD_NOT_ALLOWED, m),
            ServiceError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
            ServiceError::NeedDelegation(m) => ApiError::new(AUTHENTICATION_TIMEOUT, m),
            ServiceError::Store(_) | ServiceError::Task(_) | ServiceError::Io(_) => {
                // The detail goes to the log, not to the client: it may name files and paths.
                tracing::error!(error = %e, "internal error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal error, see the server log",
                )
            }
        }
    }
}

/// A JSON response with `status`.
pub fn json_response<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => {
            let mut response = Response::new(bytes.into());
            *response.status_mut() = status;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(e) => {
            tracing::error!(error = %e, "response does not serialise");
            let mut response = Response::new("Internal error".into());
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            response
        }
    }
}

/// Handler result: a response either way.
pub fn respond(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(ApiError::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_use_the_reference_phrases() {
        assert_eq!(status_line(StatusCode::NOT_FOUND), "404 Not Found");
        assert_eq!(status_line(StatusCode::BAD_REQUEST), "400 Bad Request");
        assert_eq!(
            status_line(StatusCode::from_u16(419).unwrap()),
            "419 Authentication Timeout"
        );
        assert_eq!(
            status_line(StatusCode::FAILED_DEPENDENCY),
            "424 Failed Dependency"
        );
    }
}
