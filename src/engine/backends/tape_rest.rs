//! The WLCG Tape REST API, version `v1` (the specification of May 2022, "WLCG Tape REST API
//! (v1) reference document", served by dCache, EOS+CTA and StoRM): the tape calls of the
//! http backend for `http(s)://` and `dav(s)://` storage.
//!
//! - Discovery: `GET <scheme://host:port>/.well-known/wlcg-tape-rest-api` lists endpoints by
//!   version; the `v1` one's `uri` is used, cached per storage for [`DISCOVERY_TTL`].
//! - `POST <uri>/stage` `{"files": [{"path", "diskLifetime"}]}` → 201 `{"requestId"}`; the
//!   pin lifetime goes as `diskLifetime`, an ISO 8601 duration (`PT3600S`).
//! - `GET <uri>/stage/<id>` → per file `onDisk` or `state`, or `error`;
//!   `POST <uri>/stage/<id>/cancel` and `POST <uri>/release/<id>` `{"paths": [...]}`;
//!   `POST <uri>/archiveinfo` `{"paths": [...]}` → per file `locality` or `error`.
//! - Answers map to [`TapeStatus`] and errno as gfal2's http plugin maps them, so reasons read
//!   as the reference's (`STAGING [42] [Tape REST API] <the storage's error>`): a file `error`
//!   is `ENOMSG`; stage `FAILED` is `ENOENT`, `CANCELLED` `ECANCELED`; locality `TAPE` or
//!   `DISK_AND_TAPE` is archived, `DISK` and `UNAVAILABLE` not yet, `LOST` is `ENOENT`,
//!   `NONE` `EPERM`. Paths are compared with duplicate slashes collapsed.
//! - Credentials: the user's delegated proxy as TLS client certificate (the client the http
//!   backend made for it) and, when set, `Authorization: Bearer` ([`TapeRest::authorization`],
//!   the seam for tokens).
//!
//! Deviations: gfal2 (2.21–2.23) never sends `diskLifetime` although FTS passes it the pin
//! lifetime; here it is sent. gfal2 calls any unexpected HTTP status `EINVAL`; here 401/403 are
//! `EACCES`, 404 `ENOENT` and 5xx or no answer `ECOMM` (a communication error, retried by the
//! poller a few times), so the reason says what happened.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{OpError, OpResult, StageReply, TapeStatus};

/// The API version this client speaks.
pub const API_VERSION: &str = "v1";
/// The discovery document's path (RFC 8615), on every WebDAV endpoint of a tape storage.
pub const WELL_KNOWN: &str = "/.well-known/wlcg-tape-rest-api";
/// How long a discovered endpoint is trusted: storages rarely move it, and a poll every few
/// minutes should not cost a discovery each time.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// Storages whose endpoint is remembered; past this the cache starts over (bounded memory).
const DISCOVERY_CACHE: usize = 1024;
/// Bound on one Tape REST call.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// What is kept of an error body in a reason.
const ERROR_BODY: usize = 512;

/// Discovered endpoints by storage (`scheme://host:port`), shared by the http backend's
/// sessions.
#[derive(Default)]
pub struct Endpoints {
    cache: Mutex<HashMap<String, (Instant, String)>>,
}

/// One storage's Tape REST API, as one user.
pub struct TapeRest {
    pub client: reqwest::Client,
    pub endpoints: Arc<Endpoints>,
    /// `Authorization` header value for every call (`Bearer <token>`), when the user has a
    /// token for the storage; `None`: the client certificate alone.
    pub authorization: Option<String>,
}

/// `scheme://host:port` of `url` on the wire (`davs` is `https`).
fn storage(url: &str) -> OpResult<String> {
    let wire = super::http::wire_url(url);
    let (scheme, rest) = wire
        .split_once("://")
        .ok_or_else(|| OpError::new(libc::EINVAL, format!("Invalid URL: {url}")))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    Ok(format!("{scheme}://{authority}"))
}

/// The path of `url` (no query), duplicate slashes collapsed, as the API names files.
pub fn path_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest
        .find('/')
        .map_or("/", |i| &rest[i..])
        .split(['?', '#'])
        .next()
        .unwrap_or("/");
    collapse(path)
}

fn collapse(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
    }
    out
}

/// ISO 8601 duration of `seconds` (`PT3600S`).
pub fn iso_duration(seconds: i64) -> String {
    format!("PT{}S", seconds.max(0))
}

/// The errno of an unexpected HTTP status.
fn status_errno(status: StatusCode) -> i32 {
    match status.as_u16() {
        401 | 403 => libc::EACCES,
        404 => libc::ENOENT,
        s if s >= 500 => libc::ECOMM,
        _ => libc::EINVAL,
    }
}

/// `"[Tape REST API] <call> call failed: HTTP <status>: <title: detail>"` (RFC 7807 bodies) or
/// the body's first line.
fn status_error(call: &str, status: StatusCode, body: &str) -> OpError {
    let detail = match serde_json::from_str::<Value>(body) {
        Ok(v) if v.is_object() => {
            let title = v["title"].as_str().unwrap_or("");
            let detail = v["detail"].as_str().unwrap_or("");
            match (title.is_empty(), detail.is_empty()) {
                (false, false) => format!("{title}: {detail}"),
                (false, true) => title.to_string(),
                (true, false) => detail.to_string(),
                (true, true) => String::new(),
            }
        }
        _ => body.lines().next().unwrap_or("").to_string(),
    };
    let detail: String = detail.chars().take(ERROR_BODY).collect();
    let mut message = format!(
        "[Tape REST API] {call} call failed: HTTP {}",
        status.as_u16()
    );
    if !detail.is_empty() {
        message.push_str(": ");
        message.push_str(&detail);
    }
    OpError::new(status_errno(status), message)
}

fn malformed(call: &str) -> OpError {
    OpError::new(
        libc::ENOMSG,
        format!("[Tape REST API] {call}: malformed response"),
    )
}

/// The item for `path` in a list of `{"path": ...}` objects.
fn item_for<'v>(items: &'v [Value], path: &str) -> Option<&'v Value> {
    items
        .iter()
        .find(|i| i["path"].as_str().is_some_and(|p| collapse(p) == path))
}

/// A file of a stage request, as gfal2's `bring_online_poll_list` reads it.
pub fn stage_status(item: Option<&Value>, path: &str) -> TapeStatus {
    let failed = |errno, message: String| TapeStatus::Failed(OpError::new(errno, message));
    let Some(item) = item else {
        return failed(
            libc::ENOMSG,
            format!("[Tape REST API] Missing response item for path={path}"),
        );
    };
    if let Some(error) = item.get("error") {
        let text = error
            .as_str()
            .map_or_else(|| error.to_string(), str::to_string);
        return failed(libc::ENOMSG, format!("[Tape REST API] {text}"));
    }
    if let Some(on_disk) = item.get("onDisk") {
        return if on_disk.as_bool() == Some(true) {
            TapeStatus::Done
        } else {
            TapeStatus::Pending
        };
    }
    match item["state"].as_str() {
        None => failed(
            libc::ENOMSG,
            "[Tape REST API] State and onDisk attributes missing".into(),
        ),
        Some("COMPLETED") => TapeStatus::Done,
        Some("STARTED" | "SUBMITTED") => TapeStatus::Pending,
        Some("CANCELLED" | "CANCELED") => failed(
            libc::ECANCELED,
            format!("[Tape REST API] Staging operation cancelled. File={path}"),
        ),
        Some("FAILED") => failed(
            libc::ENOENT,
            format!("[Tape REST API] Staging operation failed for file={path}"),
        ),
        Some(other) => failed(
            libc::ENOENT,
            format!("[Tape REST API] Unrecognized staging status. File={path} status={other}"),
        ),
    }
}

/// A file of an `archiveinfo` answer, as gfal2's `archive_poll_list` reads it.
pub fn archive_status(item: Option<&Value>, path: &str) -> TapeStatus {
    let failed = |errno, message: String| TapeStatus::Failed(OpError::new(errno, message));
    let Some(item) = item else {
        return failed(
            libc::ENOMSG,
            format!("[Tape REST API] Missing response item for path={path}"),
        );
    };
    if let Some(error) = item.get("error") {
        let text = error
            .as_str()
            .map_or_else(|| error.to_string(), str::to_string);
        return failed(libc::ENOMSG, format!("[Tape REST API] {text}"));
    }
    match item["locality"].as_str() {
        None => failed(
            libc::ENOMSG,
            "[Tape REST API] Locality attribute missing".into(),
        ),
        Some("TAPE" | "DISK_AND_TAPE") => TapeStatus::Done,
        Some("DISK" | "UNAVAILABLE") => TapeStatus::Pending,
        Some("LOST") => failed(
            libc::ENOENT,
            format!("[Tape REST API] File locality reported as LOST (path={path})"),
        ),
        Some("NONE") => failed(
            libc::EPERM,
            format!("[Tape REST API] File locality reported as NONE (path={path})"),
        ),
        Some(other) => failed(
            libc::ENOMSG,
            format!("[Tape REST API] File locality reported as \"{other}\" (path={path})"),
        ),
    }
}

/// The `v1` endpoint's `uri` in a discovery document.
pub fn v1_endpoint(document: &Value) -> Option<String> {
    document["endpoints"]
        .as_array()?
        .iter()
        .find(|e| e["version"].as_str() == Some(API_VERSION))?["uri"]
        .as_str()
        .map(|u| u.trim_end_matches('/').to_string())
}

impl TapeRest {
    async fn call(
        &self,
        call: &str,
        method: Method,
        url: &str,
        body: Option<Value>,
    ) -> OpResult<(StatusCode, String)> {
        let mut request = self
            .client
            .request(method, url)
            .timeout(CALL_TIMEOUT)
            .header("Accept", "application/json");
        if let Some(auth) = &self.authorization {
            request = request.header("Authorization", auth);
        }
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.map_err(|e| {
            // Never the URL's query: it may hold a token.
            let e = e.without_url();
            OpError::new(
                libc::ECOMM,
                format!("[Tape REST API] {call} call failed: {e}"),
            )
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|e| {
            OpError::new(
                libc::ECOMM,
                format!("[Tape REST API] {call} call failed: {}", e.without_url()),
            )
        })?;
        Ok((status, text))
    }

    /// The storage's `v1` endpoint (discovered, cached).
    pub async fn endpoint(&self, url: &str) -> OpResult<String> {
        let storage = storage(url)?;
        {
            let cache = self
                .endpoints
                .cache
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some((at, uri)) = cache.get(&storage) {
                if at.elapsed() < DISCOVERY_TTL {
                    return Ok(uri.clone());
                }
            }
        }
        let (status, body) = self
            .call(
                "Discovery",
                Method::GET,
                &format!("{storage}{WELL_KNOWN}"),
                None,
            )
            .await?;
        if status != StatusCode::OK {
            let mut e = status_error("Discovery", status, &body);
            if status == StatusCode::NOT_FOUND {
                e = OpError::new(
                    libc::EOPNOTSUPP,
                    format!(
                        "[Tape REST API] {storage} has no Tape REST API ({WELL_KNOWN}: HTTP 404)"
                    ),
                );
            }
            return Err(e);
        }
        let document: Value = serde_json::from_str(&body).map_err(|_| malformed("Discovery"))?;
        let uri = v1_endpoint(&document).ok_or_else(|| {
            OpError::new(
                libc::EOPNOTSUPP,
                format!("[Tape REST API] {storage} offers no {API_VERSION} endpoint"),
            )
        })?;
        let mut cache = self
            .endpoints
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if cache.len() >= DISCOVERY_CACHE {
            cache.clear();
        }
        cache.insert(storage, (Instant::now(), uri.clone()));
        Ok(uri)
    }

    /// `POST /stage`.
    pub async fn stage(&self, urls: &[String], pin_lifetime: i64) -> OpResult<StageReply> {
        let first = urls
            .first()
            .ok_or_else(|| OpError::new(libc::EINVAL, "no file to stage"))?;
        let endpoint = self.endpoint(first).await?;
        let files: Vec<Value> = urls
            .iter()
            .map(|u| json!({"path": path_of(u), "diskLifetime": iso_duration(pin_lifetime)}))
            .collect();
        let (status, body) = self
            .call(
                "Stage",
                Method::POST,
                &format!("{endpoint}/stage"),
                Some(json!({ "files": files })),
            )
            .await?;
        if status != StatusCode::CREATED {
            return Err(status_error("Stage", status, &body));
        }
        let reply: Value = serde_json::from_str(&body).map_err(|_| malformed("Stage"))?;
        let token = reply["requestId"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                OpError::new(libc::ENOMSG, "[Tape REST API] requestId attribute missing")
            })?;
        Ok(StageReply {
            token: token.to_string(),
            files: vec![TapeStatus::Pending; urls.len()],
        })
    }

    /// `GET /stage/<id>`.
    pub async fn stage_poll(&self, token: &str, urls: &[String]) -> OpResult<Vec<TapeStatus>> {
        let first = urls
            .first()
            .ok_or_else(|| OpError::new(libc::EINVAL, "no file to poll"))?;
        let endpoint = self.endpoint(first).await?;
        let (status, body) = self
            .call(
                "Stage polling",
                Method::GET,
                &format!("{endpoint}/stage/{}", encode(token)),
                None,
            )
            .await?;
        if status != StatusCode::OK {
            return Err(status_error("Stage polling", status, &body));
        }
        let reply: Value = serde_json::from_str(&body).map_err(|_| malformed("Stage polling"))?;
        match reply["id"].as_str() {
            Some(id) if id == token => {}
            Some(id) => {
                return Err(OpError::new(
                    libc::ENOMSG,
                    format!(
                        "[Tape REST API] Request ID mismatch. Expected id={token} but received id={id}"
                    ),
                ));
            }
            None => {
                return Err(OpError::new(
                    libc::ENOMSG,
                    format!(
                        "[Tape REST API] Request ID missing from polling response (expected id={token})"
                    ),
                ));
            }
        }
        let items = reply["files"].as_array().ok_or_else(|| {
            OpError::new(
                libc::ENOMSG,
                "[Tape REST API] Files attribute missing from server poll response",
            )
        })?;
        Ok(urls
            .iter()
            .map(|u| {
                let path = path_of(u);
                stage_status(item_for(items, &path), &path)
            })
            .collect())
    }

    /// `POST /stage/<id>/cancel`.
    pub async fn stage_cancel(&self, token: &str, urls: &[String]) -> OpResult<()> {
        self.paths_call("Cancel", &format!("/stage/{}/cancel", encode(token)), urls)
            .await
    }

    /// `POST /release/<id>`.
    pub async fn release(&self, token: &str, urls: &[String]) -> OpResult<()> {
        self.paths_call("Release", &format!("/release/{}", encode(token)), urls)
            .await
    }

    async fn paths_call(&self, call: &str, tail: &str, urls: &[String]) -> OpResult<()> {
        let Some(first) = urls.first() else {
            return Ok(());
        };
        let endpoint = self.endpoint(first).await?;
        let paths: Vec<String> = urls.iter().map(|u| path_of(u)).collect();
        let (status, body) = self
            .call(
                call,
                Method::POST,
                &format!("{endpoint}{tail}"),
                Some(json!({ "paths": paths })),
            )
            .await?;
        if status != StatusCode::OK {
            return Err(status_error(call, status, &body));
        }
        Ok(())
    }

    /// `POST /archiveinfo`.
    pub async fn archive_poll(&self, urls: &[String]) -> OpResult<Vec<TapeStatus>> {
        let first = urls
            .first()
            .ok_or_else(|| OpError::new(libc::EINVAL, "no file to poll"))?;
        let endpoint = self.endpoint(first).await?;
        let paths: Vec<String> = urls.iter().map(|u| path_of(u)).collect();
        let (status, body) = self
            .call(
                "Archive polling",
                Method::POST,
                &format!("{endpoint}/archiveinfo"),
                Some(json!({ "paths": paths })),
            )
            .await?;
        if status != StatusCode::OK {
            return Err(status_error("Archive polling", status, &body));
        }
        let reply: Value = serde_json::from_str(&body).map_err(|_| malformed("Archive polling"))?;
        let items = reply
            .as_array()
            .ok_or_else(|| malformed("Archive polling"))?;
        Ok(paths
            .iter()
            .map(|p| archive_status(item_for(items, p), p))
            .collect())
    }
}

/// A request id as one path segment.
fn encode(token: &str) -> String {
    form_urlencoded::byte_serialize(token.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_durations_as_the_api_takes_them() {
        assert_eq!(path_of("davs://h:8443//a//b/c.root?x=1"), "/a/b/c.root");
        assert_eq!(path_of("https://h"), "/");
        assert_eq!(iso_duration(3600), "PT3600S");
        assert_eq!(
            storage("davs://Tape.Example:8443/x").unwrap(),
            "https://Tape.Example:8443"
        );
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn discovery_picks_the_v1_endpoint() {
        let doc = json!({"sitename": "s", "endpoints": [
            {"uri": "https://t:1/api/v0", "version": "v0"},
            {"uri": "https://t:1/api/v1/", "version": "v1", "metadata": {}}]});
        assert_eq!(v1_endpoint(&doc).as_deref(), Some("https://t:1/api/v1"));
        assert_eq!(v1_endpoint(&json!({"endpoints": []})), None);
    }

    #[test]
    fn stage_answers_map_as_gfal2_maps_them() {
        let s = |v: Value| stage_status(Some(&v), "/f");
        assert_eq!(s(json!({"path": "/f", "onDisk": true})), TapeStatus::Done);
        assert_eq!(
            s(json!({"path": "/f", "onDisk": false})),
            TapeStatus::Pending
        );
        assert_eq!(
            s(json!({"path": "/f", "state": "STARTED"})),
            TapeStatus::Pending
        );
        assert_eq!(
            s(json!({"path": "/f", "state": "COMPLETED"})),
            TapeStatus::Done
        );
        let failed = |v: Value| match s(v) {
            TapeStatus::Failed(e) => (e.errno, e.message),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            failed(json!({"path": "/f", "error": "file is lost", "onDisk": false})),
            (libc::ENOMSG, "[Tape REST API] file is lost".into())
        );
        assert_eq!(
            failed(json!({"path": "/f", "state": "FAILED"})),
            (
                libc::ENOENT,
                "[Tape REST API] Staging operation failed for file=/f".into()
            )
        );
        assert_eq!(
            failed(json!({"path": "/f", "state": "CANCELLED"})).0,
            libc::ECANCELED
        );
        assert_eq!(
            stage_status(None, "/f"),
            TapeStatus::Failed(OpError::new(
                libc::ENOMSG,
                "[Tape REST API] Missing response item for path=/f"
            ))
        );
    }

    #[test]
    fn localities_map_as_gfal2_maps_them() {
        let a = |l: &str| archive_status(Some(&json!({"path": "/f", "locality": l})), "/f");
        assert_eq!(a("TAPE"), TapeStatus::Done);
        assert_eq!(a("DISK_AND_TAPE"), TapeStatus::Done);
        assert_eq!(a("DISK"), TapeStatus::Pending);
        assert_eq!(a("UNAVAILABLE"), TapeStatus::Pending);
        assert!(matches!(a("LOST"), TapeStatus::Failed(e) if e.errno == libc::ENOENT));
        assert!(matches!(a("NONE"), TapeStatus::Failed(e) if e.errno == libc::EPERM));
        let e = archive_status(Some(&json!({"path": "/f", "error": "no such file"})), "/f");
        assert_eq!(
            e,
            TapeStatus::Failed(OpError::new(libc::ENOMSG, "[Tape REST API] no such file"))
        );
        // Items are found by path whatever their order and slashes.
        let items = vec![
            json!({"path": "//g"}),
            json!({"path": "/x//f", "locality": "TAPE"}),
        ];
        assert_eq!(
            archive_status(item_for(&items, "/x/f"), "/x/f"),
            TapeStatus::Done
        );
    }

    #[test]
    fn refusals_say_what_the_storage_said() {
        let e = status_error(
            "Stage",
            StatusCode::FORBIDDEN,
            r#"{"status": 403, "title": "Forbidden", "detail": "no read access to /t/f"}"#,
        );
        assert_eq!(e.errno, libc::EACCES);
        assert_eq!(
            e.message,
            "[Tape REST API] Stage call failed: HTTP 403: Forbidden: no read access to /t/f"
        );
        assert_eq!(
            status_error("Stage", StatusCode::SERVICE_UNAVAILABLE, "").errno,
            libc::ECOMM
        );
    }
}
