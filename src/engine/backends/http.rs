//! `http://`, `https://`, `dav://`, `davs://`: WebDAV storage as WLCG runs it (XRootD's
//! XrdHttp, dCache, StoRM, EOS, Apache with mod_gridsite), authenticated with the user's
//! delegated proxy as TLS client certificate, or with the transfer's bearer tokens
//! (`Authorization: Bearer …` on every request: HEAD, GET, PUT, MKCOL, DELETE, digests).
//!
//! - metadata: `HEAD` (existence, size); checksums with `Want-Digest` → `Digest` (RFC 3230:
//!   adler32 in hex, md5 and crc32c in base64, names case-insensitive); a storage that sends
//!   no digest gets the file read and hashed here (bounded memory);
//! - `DELETE` (overwrite, clean-up), `MKCOL` for missing parents (nearest first, then down);
//! - copies: WebDAV third-party copy (`COPY` to the destination with `Source:` = pull, or to
//!   the source with `Destination:` = push), the other side authorised by a macaroon this
//!   service asks that side for (`POST application/macaroon-request` with the user's proxy)
//!   and passes as `TransferHeaderAuthorization: Bearer …` with `Credential: none`. With
//!   tokens, no macaroon is asked for: the active side gets its own token as `Authorization`
//!   and the other side's token goes in `TransferHeaderAuthorization` (gfal2 with FTS's
//!   `RETRIEVE_BEARER_TOKEN=false`). The reply
//!   is a stream of Perf Markers (progress) ending in `success: …` or `failure: …`: the
//!   verdict, since storages answer 201 either way. Or streamed through this process: the
//!   source's GET body is the destination's PUT body, chunk by chunk, no temporary file.
//!   The mode comes from the storages' `tpc_support` ([`CopyMode::from_tpc_support`]), with
//!   fallback pull → push → streamed where allowed (not after a refusal: 401/403, or an
//!   existing destination); every attempt and fallback is logged.
//!
//! rustls refuses to load a proxy chain as client certificate the usual way (it parses the
//! leaf with webpki, which rejects the critical proxyCertInfo extension), so the chain and key
//! are handed over through a resolver, which skips that check; storage servers are verified
//! against the grid CA directory the service trusts. One pair of HTTP clients per credential
//! is cached (connection reuse across transfers of the same user); the cache is bounded.
//!
//! Tokens and proxies never reach a log line: URLs are logged with their query strings
//! redacted, tokens not at all.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use base64::Engine as _;
use bytes::Bytes;
use futures_util::{StreamExt, future::BoxFuture};
use reqwest::{Method, StatusCode, header};
use rustls::{
    ClientConfig, RootCertStore,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, TrustAnchor, pem::PemObject},
    sign::{CertifiedKey, SingleCertAndKey},
};

use super::{
    Backend, CopyMode, CopyParams, Credential, OpError, OpResult, Progress, Session,
    SessionContext,
    bearer::{Side, TransferTokens},
    strerror,
};
use crate::engine::{
    agent::{TransferLog, redact_queries},
    checksum::{Algorithm, Hasher},
};

/// Schemes served.
pub const SCHEMES: &[&str] = &["http", "https", "dav", "davs"];
/// Connection set-up (TCP + TLS) bound.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one metadata request (HEAD, DELETE, MKCOL, macaroon).
const METADATA_TIMEOUT: Duration = Duration::from_secs(120);
/// A third-party copy that sends nothing (no marker, no verdict) for this long has stalled.
const PERF_MARKER_TIMEOUT: Duration = Duration::from_secs(300);
/// Clients kept for reuse (one per credential).
const CLIENT_CACHE: usize = 256;
/// How often a streamed copy publishes its byte count.
const PROGRESS_TICK: Duration = Duration::from_millis(250);

/// The http/WebDAV backend.
pub struct HttpBackend {
    inner: Arc<Inner>,
}

struct Inner {
    provider: Arc<CryptoProvider>,
    roots: Arc<RootCertStore>,
    clients: Mutex<HashMap<String, Clients>>,
    /// Tape REST API endpoints discovered (see `tape_rest`).
    tape: Arc<super::tape_rest::Endpoints>,
}

/// The clients of one credential: data operations follow redirects (dCache sends GET and PUT
/// to its pools); `DELETE` and `MKCOL` see the storage's own answer (a redirect to `dir/`
/// means the directory exists); `COPY` is never redirected, because its
/// `TransferHeaderAuthorization` token must not reach a host we did not choose.
#[derive(Clone)]
struct Clients {
    data: reqwest::Client,
    plain: reqwest::Client,
    /// For `COPY`, written by [`raw`]: XRootD matches `TransferHeaderAuthorization` with its
    /// exact case, which hyper cannot send (it writes names lower-case or Title-case).
    tls: Arc<ClientConfig>,
}

impl HttpBackend {
    /// A backend trusting `anchors` (the grid CA directory) for storage servers.
    pub fn new(anchors: Vec<TrustAnchor<'static>>) -> HttpBackend {
        let mut roots = RootCertStore::empty();
        roots.roots = anchors;
        HttpBackend {
            inner: Arc::new(Inner {
                provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
                roots: Arc::new(roots),
                clients: Mutex::new(HashMap::new()),
                tape: Arc::default(),
            }),
        }
    }
}

impl Backend for HttpBackend {
    fn name(&self) -> &'static str {
        "http"
    }

    fn schemes(&self) -> &[&'static str] {
        SCHEMES
    }

    fn session(&self, context: &SessionContext) -> Box<dyn Session> {
        Box::new(HttpSession {
            inner: self.inner.clone(),
            credential: context.credential.clone(),
            tokens: context.tokens.clone(),
            clients: None,
            log: context.log.clone(),
        })
    }

    /// Staging and archive monitoring through the WLCG Tape REST API (`tape_rest`).
    fn tape(&self) -> super::TapeSupport {
        super::TapeSupport {
            staging: true,
            archive_monitoring: true,
        }
    }
}

impl Inner {
    fn clients(&self, credential: Option<&Credential>) -> OpResult<Clients> {
        let key = credential.map_or("", |c| c.key()).to_string();
        let mut cache = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = cache.get(&key) {
            return Ok(found.clone());
        }
        let clients = self.build(credential)?;
        if cache.len() >= CLIENT_CACHE {
            cache.clear();
        }
        cache.insert(key, clients.clone());
        Ok(clients)
    }

    fn build(&self, credential: Option<&Credential>) -> OpResult<Clients> {
        let builder = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| OpError::new(libc::EINVAL, format!("TLS set-up failed: {e}")))?
            .with_root_certificates(self.roots.clone());
        let mut tls = match credential {
            None => builder.with_no_client_auth(),
            Some(credential) => {
                let unusable = |what: &str| {
                    OpError::new(
                        libc::EACCES,
                        format!("The delegated proxy is unusable: {what}"),
                    )
                };
                let pem = credential.pem().as_bytes();
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
                    .collect::<Result<_, _>>()
                    .map_err(|_| unusable("bad certificate PEM"))?;
                if chain.is_empty() {
                    return Err(unusable("no certificate"));
                }
                let key = PrivateKeyDer::from_pem_slice(pem).map_err(|_| unusable("no key"))?;
                let key = self
                    .provider
                    .key_provider
                    .load_private_key(key)
                    .map_err(|_| unusable("unsupported key"))?;
                // CertifiedKey::new, unlike with_client_auth_cert, does not parse the leaf
                // with webpki, which rejects proxy certificates.
                let certified = CertifiedKey::new(chain, key);
                builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified)))
            }
        };
        // HTTP/1.1 only: storages speak it everywhere, and h2 uploads need window tuning.
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let client = |redirects: reqwest::redirect::Policy| {
            reqwest::Client::builder()
                .tls_backend_preconfigured(tls.clone())
                // XrdHttp matches header names case-sensitively (`Want-Digest`, `Content-Type`).
                .http1_title_case_headers()
                .connect_timeout(CONNECT_TIMEOUT)
                .redirect(redirects)
                .user_agent(concat!("ftsd/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| OpError::new(libc::EINVAL, format!("HTTP client set-up failed: {e}")))
        };
        Ok(Clients {
            data: client(reqwest::redirect::Policy::limited(10))?,
            plain: client(reqwest::redirect::Policy::none())?,
            tls: Arc::new(tls),
        })
    }
}

/// A transfer's session: the user's clients (made on first use) and the transfer log.
pub struct HttpSession {
    inner: Arc<Inner>,
    credential: Option<Arc<Credential>>,
    tokens: Option<Arc<TransferTokens>>,
    clients: Option<Clients>,
    log: TransferLog,
}

/// `dav(s)://` is `http(s)://` on the wire.
pub fn wire_url(url: &str) -> String {
    let lower = url
        .get(..7)
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    if lower.starts_with("davs://") {
        format!("https://{}", &url[7..])
    } else if lower.starts_with("dav://") {
        format!("http://{}", &url[6..])
    } else {
        url.to_string()
    }
}

/// The URL of the directory holding `url` (`None` at the root).
fn parent_url(url: &str) -> Option<String> {
    let scheme_end = url.find("://")? + 3;
    let path_start = scheme_end + url[scheme_end..].find('/')?;
    let path = url[path_start..].split(['?', '#']).next().unwrap_or("");
    let trimmed = path.trim_end_matches('/');
    let cut = trimmed.rfind('/')?;
    if cut == 0 && trimmed.len() <= 1 {
        return None;
    }
    let parent = &trimmed[..cut];
    if parent.is_empty() {
        return None;
    }
    Some(format!("{}{}", &url[..path_start], parent))
}

/// The errno a storage's HTTP status means.
fn status_errno(status: StatusCode) -> i32 {
    match status.as_u16() {
        400 => libc::EINVAL,
        401 | 403 => libc::EACCES,
        404 | 410 => libc::ENOENT,
        405 => libc::EPERM,
        // A missing parent (Apache's PUT, MKCOL): the closest errno.
        409 => libc::ENOENT,
        412 => libc::EEXIST,
        408 | 504 => libc::ETIMEDOUT,
        413 | 507 => libc::ENOSPC,
        501 => libc::ENOSYS,
        _ => libc::EIO,
    }
}

/// An error for an HTTP status: the system text of its errno (so the retry classifier sees
/// "Permission denied", "No such file or directory"), the status, the request and the first
/// line of what the storage said.
fn status_error(method: &str, url: &str, status: StatusCode, body: &str) -> OpError {
    let errno = status_errno(status);
    let detail = body
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| {
            let mut l = l.to_string();
            if l.len() > 300 {
                let mut end = 300;
                while !l.is_char_boundary(end) {
                    end -= 1;
                }
                l.truncate(end);
            }
            format!(": {l}")
        })
        .unwrap_or_default();
    OpError::new(
        errno,
        format!(
            "{}: {method} {} returned HTTP {}{detail}",
            strerror(errno),
            redact_queries(url),
            status
        ),
    )
}

/// An error for a request that got no HTTP answer (connection, TLS, timeout).
fn transport_error(method: &str, url: &str, err: &reqwest::Error) -> OpError {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    let errno = if err.is_timeout() {
        libc::ETIMEDOUT
    } else if err.is_connect() {
        libc::ECONNREFUSED
    } else {
        libc::EIO
    };
    OpError::new(
        errno,
        format!("{method} {} failed: {}", redact_queries(url), text),
    )
}

/// A digest value as lower-case hex: adler32 comes as hex, md5 and crc32c as base64 (RFC 3230);
/// some storages send hex for all, which is recognised by its shape.
pub fn digest_hex(algorithm: Algorithm, value: &str) -> Option<String> {
    let value = value.trim();
    let hex_len = match algorithm {
        Algorithm::Adler32 | Algorithm::Crc32c => 8,
        Algorithm::Md5 => 32,
    };
    let is_hex = value.chars().all(|c| c.is_ascii_hexdigit());
    if is_hex && (value.len() == hex_len || algorithm == Algorithm::Adler32) {
        return Some(value.to_ascii_lowercase());
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value)
        .ok()?;
    if bytes.len() * 2 != hex_len {
        return None;
    }
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The value for `algorithm` in `Digest` headers (`adler32=…, md5=…`), names case-insensitive.
fn find_digest(headers: &header::HeaderMap, algorithm: Algorithm) -> Option<String> {
    headers
        .get_all("digest")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|item| item.trim().split_once('='))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case(algorithm.name()))
        .and_then(|(_, value)| digest_hex(algorithm, value))
}

/// The outcome of reading a third-party copy's reply.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Success,
    Failure(String),
}

/// Incremental parser of the Perf Marker stream (lines may be indented with tabs by dCache and
/// StoRM; one marker per stripe; the last line is the verdict).
#[derive(Default)]
pub(crate) struct MarkerParser {
    partial: String,
    stripes: HashMap<u64, u64>,
    stripe: u64,
    verdict: Option<Verdict>,
    /// Markers completed since the last call to [`MarkerParser::take_markers`].
    markers: usize,
}

impl MarkerParser {
    pub(crate) fn feed(&mut self, chunk: &[u8]) {
        self.partial.push_str(&String::from_utf8_lossy(chunk));
        while let Some(end) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=end).collect();
            self.line(line.trim());
        }
    }

    /// The reply ended: a last line without a newline is still a line.
    pub(crate) fn finish(&mut self) {
        let rest = std::mem::take(&mut self.partial);
        self.line(rest.trim());
    }

    fn line(&mut self, line: &str) {
        if line.is_empty() || self.verdict.is_some() {
            return;
        }
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("success") {
            self.verdict = Some(Verdict::Success);
        } else if lower.starts_with("failure")
            || lower.starts_with("failed")
            || lower.starts_with("aborted")
        {
            self.verdict = Some(Verdict::Failure(line.to_string()));
        } else if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "stripe index" => self.stripe = value.parse().unwrap_or(0),
                "stripe bytes transferred" => {
                    if let Ok(bytes) = value.parse() {
                        self.stripes.insert(self.stripe, bytes);
                    }
                }
                _ => {}
            }
        } else if lower == "end" {
            self.markers += 1;
        }
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.stripes.values().sum()
    }

    pub(crate) fn take_markers(&mut self) -> usize {
        std::mem::take(&mut self.markers)
    }
}

impl HttpSession {
    /// `Bearer <token>` for a request to `url`, when the transfer has a token for it.
    fn bearer(&self, url: &str) -> Option<String> {
        let tokens = self.tokens.as_ref()?;
        Some(format!("Bearer {}", tokens.for_url(url)?.expose()))
    }

    /// `request` with the token for `url`, if any.
    fn authorized(&self, request: reqwest::RequestBuilder, url: &str) -> reqwest::RequestBuilder {
        match self.bearer(url) {
            Some(value) => request.header(header::AUTHORIZATION, value),
            None => request,
        }
    }

    /// The Tape REST API as this session's user (client certificate: the delegated proxy).
    fn tape_rest(&mut self) -> OpResult<super::tape_rest::TapeRest> {
        Ok(super::tape_rest::TapeRest {
            client: self.clients()?.plain,
            endpoints: self.inner.tape.clone(),
            authorization: None,
        })
    }

    fn clients(&mut self) -> OpResult<Clients> {
        if let Some(c) = &self.clients {
            return Ok(c.clone());
        }
        let made = self.inner.clients(self.credential.as_deref())?;
        self.clients = Some(made.clone());
        Ok(made)
    }

    /// `HEAD url`, optionally asking for a digest.
    async fn head(&mut self, url: &str, want_digest: Option<&str>) -> OpResult<reqwest::Response> {
        let client = self.clients()?.data;
        let mut request = self
            .authorized(client.head(wire_url(url)), url)
            .timeout(METADATA_TIMEOUT);
        if let Some(alg) = want_digest {
            request = request.header("Want-Digest", alg);
        }
        request
            .send()
            .await
            .map_err(|e| transport_error("HEAD", url, &e))
    }

    /// A request with no body to read but its status (DELETE, MKCOL).
    async fn simple(&mut self, method: &str, url: &str) -> OpResult<(StatusCode, String)> {
        let client = self.clients()?.plain;
        let m = Method::from_bytes(method.as_bytes()).expect("a valid method name");
        let response = self
            .authorized(client.request(m, wire_url(url)), url)
            .timeout(METADATA_TIMEOUT)
            .send()
            .await
            .map_err(|e| transport_error(method, url, &e))?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        Ok((status, body))
    }

    async fn mkcol(&mut self, url: &str) -> OpResult<StatusCode> {
        let (status, body) = self.simple("MKCOL", url).await?;
        self.log.info(format_args!(
            "MKCOL {}: HTTP {}",
            redact_queries(url),
            status.as_u16()
        ));
        // 201 made; 405 (RFC 4918) and redirects to `dir/`: it exists; 409: its parent is missing.
        if status.is_success()
            || status.is_redirection()
            || status == StatusCode::METHOD_NOT_ALLOWED
            || status == StatusCode::CONFLICT
        {
            Ok(status)
        } else {
            Err(status_error("MKCOL", url, status, &body))
        }
    }

    /// A macaroon from the storage holding `url`, good for `activities` for `minutes`.
    async fn macaroon(&mut self, url: &str, activities: &str, minutes: u64) -> OpResult<String> {
        let client = self.clients()?.data;
        let body = serde_json::json!({
            "caveats": [format!("activity:{activities}")],
            "validity": format!("PT{minutes}M"),
        });
        let response = client
            .post(wire_url(url))
            .timeout(METADATA_TIMEOUT)
            .header(header::CONTENT_TYPE, "application/macaroon-request")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| transport_error("POST", url, &e))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(status_error("POST (macaroon request)", url, status, &text));
        }
        serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| {
                v.get("macaroon")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .ok_or_else(|| {
                OpError::new(
                    libc::EPROTO,
                    format!("No macaroon in the reply of {}", redact_queries(url)),
                )
            })
    }

    /// Hash the file at `url` by reading it (storages without `Want-Digest`).
    async fn hash_by_reading(&mut self, url: &str, algorithm: Algorithm) -> OpResult<String> {
        let client = self.clients()?.data;
        let response = self
            .authorized(client.get(wire_url(url)), url)
            .send()
            .await
            .map_err(|e| transport_error("GET", url, &e))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(status_error("GET", url, status, &body));
        }
        let mut hasher = Hasher::new(algorithm);
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| transport_error("GET", url, &e))?;
            hasher.update(&chunk);
        }
        Ok(hasher.finish())
    }

    /// One third-party copy attempt.
    async fn third_party(
        &mut self,
        mode: CopyMode,
        source: &str,
        destination: &str,
        params: &CopyParams,
        progress: &Progress,
    ) -> OpResult<()> {
        // Pull: COPY to the destination, which reads the source with the source's token.
        // Push: COPY to the source, which writes the destination with the destination's token.
        let (target, other, header_name, activities) = match mode {
            CopyMode::Pull => (destination, source, "Source", "DOWNLOAD,LIST"),
            _ => (
                source,
                destination,
                "Destination",
                "UPLOAD,DELETE,LIST,MANAGE",
            ),
        };
        let minutes = params.timeout / 60 + 10;
        let bearer = self.tokens.clone();
        let token = match &bearer {
            // Bearer tokens: the other side's own token, no macaroon request.
            Some(tokens) => {
                let side = match mode {
                    CopyMode::Pull => Side::Source,
                    _ => Side::Destination,
                };
                tokens.token(side).map(|t| t.expose().to_string())
            }
            None => None,
        };
        let token = match token {
            Some(token) => Some(token),
            None if bearer.is_some() => None,
            None => match self.macaroon(other, activities, minutes).await {
                Ok(token) => {
                    self.log.info(format_args!(
                        "Obtained a macaroon from {} ({activities}, {minutes} min)",
                        redact_queries(other)
                    ));
                    Some(token)
                }
                Err(e) => {
                    self.log.warn(format_args!(
                        "Could not obtain a macaroon from {}: {}; trying the copy without one",
                        redact_queries(other),
                        e.message
                    ));
                    None
                }
            },
        };
        let tls = self.clients()?.tls;
        let mut headers = vec![
            (header_name, wire_url(other)),
            ("Credential", "none".to_string()),
            ("X-Number-Of-Streams", params.nostreams.to_string()),
            ("RequireChecksumVerification", "false".to_string()),
        ];
        if let Some(token) = token {
            headers.push(("TransferHeaderAuthorization", format!("Bearer {token}")));
        }
        if let Some(own) = self.bearer(target) {
            headers.push(("Authorization", own));
        }
        self.log.info(format_args!(
            "COPY {} ({}), {header_name}: {}",
            redact_queries(target),
            mode.as_str(),
            redact_queries(other)
        ));
        let mut response = raw::request(tls, "COPY", &wire_url(target), &headers)
            .await
            .map_err(|e| {
                OpError::new(
                    e.errno,
                    format!("COPY {}: {}", redact_queries(target), e.message),
                )
            })?;
        let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::BAD_GATEWAY);
        self.log
            .info(format_args!("COPY reply: HTTP {}", status.as_u16()));
        if status.is_redirection() {
            return Err(OpError::new(
                libc::EIO,
                format!(
                    "COPY {} was redirected (HTTP {status}); third-party copies are not redirected",
                    redact_queries(target)
                ),
            ));
        }
        if !status.is_success() {
            let body = response.text(4096).await;
            return Err(status_error("COPY", target, status, &body));
        }
        let mut parser = MarkerParser::default();
        let started = tokio::time::Instant::now();
        loop {
            let next = tokio::time::timeout(PERF_MARKER_TIMEOUT, response.chunk()).await;
            match next {
                Err(_) => {
                    return Err(OpError::new(
                        libc::ETIMEDOUT,
                        format!(
                            "Transfer timed out: no performance marker received for {} seconds",
                            PERF_MARKER_TIMEOUT.as_secs()
                        ),
                    ));
                }
                Ok(None) => {
                    parser.finish();
                    break;
                }
                Ok(Some(Err(e))) => {
                    return Err(OpError::new(
                        libc::EIO,
                        format!("COPY {}: the reply broke off: {e}", redact_queries(target)),
                    ));
                }
                Ok(Some(Ok(chunk))) => parser.feed(&chunk),
            }
            if parser.take_markers() > 0 {
                let bytes = parser.bytes();
                progress.transferred.store(bytes, Ordering::Relaxed);
                let secs = started.elapsed().as_secs_f64();
                let rate = if secs > 0.0 {
                    bytes as f64 / f64::from(1u32 << 20) / secs
                } else {
                    0.0
                };
                self.log.info(format_args!(
                    "Perf marker: {bytes} bytes transferred ({rate:.3} MiB/s)"
                ));
            }
            if parser.verdict.is_some() {
                break;
            }
        }
        match parser.verdict {
            Some(Verdict::Success) => {
                progress
                    .transferred
                    .store(params.filesize.max(parser.bytes()), Ordering::Relaxed);
                self.log.info("COPY verdict: success");
                Ok(())
            }
            Some(Verdict::Failure(line)) => {
                self.log.error(format_args!("COPY verdict: {line}"));
                Err(OpError::new(
                    libc::EIO,
                    format!("HTTP third-party copy ({}) failed: {line}", mode.as_str()),
                ))
            }
            None => Err(OpError::new(
                libc::EIO,
                format!(
                    "HTTP third-party copy ({}) ended without a success or failure line",
                    mode.as_str()
                ),
            )),
        }
    }

    /// A copy through this process: the source's GET body streams into the destination's PUT.
    async fn streamed(
        &mut self,
        source: &str,
        destination: &str,
        params: &CopyParams,
        progress: &Progress,
    ) -> OpResult<()> {
        let client = self.clients()?.data;
        self.log.info(format_args!(
            "GET {} (streamed copy)",
            redact_queries(source)
        ));
        let get = self
            .authorized(client.get(wire_url(source)), source)
            .send()
            .await
            .map_err(|e| transport_error("GET", source, &e))?;
        let status = get.status();
        if !status.is_success() {
            let body = get.text().await.unwrap_or_default();
            return Err(status_error("GET", source, status, &body));
        }
        let length = get
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(params.filesize);
        let counter = Arc::new(AtomicU64::new(0));
        let source_error: Arc<Mutex<Option<String>>> = Arc::default();
        let body = {
            let (counter, source_error) = (counter.clone(), source_error.clone());
            let source = source.to_string();
            get.bytes_stream()
                .map(move |chunk: reqwest::Result<Bytes>| match chunk {
                    Ok(bytes) => {
                        counter.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                        Ok(bytes)
                    }
                    Err(e) => {
                        let err = transport_error("GET", &source, &e);
                        *source_error.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some(err.message.clone());
                        Err(std::io::Error::other(err.message))
                    }
                })
        };
        self.log.info(format_args!(
            "PUT {} ({length} bytes, streamed from the source)",
            redact_queries(destination)
        ));
        let put = self
            .authorized(client.put(wire_url(destination)), destination)
            .header(header::CONTENT_LENGTH, length)
            .body(reqwest::Body::wrap_stream(body))
            .send();
        tokio::pin!(put);
        let mut tick = tokio::time::interval(PROGRESS_TICK);
        let reply = loop {
            tokio::select! {
                reply = &mut put => break reply,
                _ = tick.tick() => progress.transferred.store(counter.load(Ordering::Relaxed), Ordering::Relaxed),
            }
        };
        progress
            .transferred
            .store(counter.load(Ordering::Relaxed), Ordering::Relaxed);
        let source_failed = source_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let response = match (reply, source_failed) {
            (_, Some(message)) => {
                return Err(OpError::new(
                    libc::EIO,
                    format!("Reading the source failed during the copy: {message}"),
                ));
            }
            (Err(e), None) => return Err(transport_error("PUT", destination, &e)),
            (Ok(r), None) => r,
        };
        let status = response.status();
        self.log
            .info(format_args!("PUT reply: HTTP {}", status.as_u16()));
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(status_error("PUT", destination, status, &body));
        }
        Ok(())
    }
}

impl Session for HttpSession {
    fn stage<'a>(
        &'a mut self,
        urls: &'a [String],
        pin_lifetime: i64,
        _timeout: u64,
    ) -> BoxFuture<'a, OpResult<super::StageReply>> {
        Box::pin(async move { self.tape_rest()?.stage(urls, pin_lifetime).await })
    }

    fn stage_poll<'a>(
        &'a mut self,
        token: &'a str,
        urls: &'a [String],
    ) -> BoxFuture<'a, OpResult<Vec<super::TapeStatus>>> {
        Box::pin(async move { self.tape_rest()?.stage_poll(token, urls).await })
    }

    fn stage_abort<'a>(
        &'a mut self,
        token: &'a str,
        urls: &'a [String],
    ) -> BoxFuture<'a, OpResult<()>> {
        Box::pin(async move { self.tape_rest()?.stage_cancel(token, urls).await })
    }

    fn release(&mut self, url: &str, token: &str) -> BoxFuture<'_, OpResult<()>> {
        let (urls, token) = (vec![url.to_string()], token.to_string());
        Box::pin(async move { self.tape_rest()?.release(&token, &urls).await })
    }

    fn archive_poll<'a>(
        &'a mut self,
        urls: &'a [String],
    ) -> BoxFuture<'a, OpResult<Vec<super::TapeStatus>>> {
        Box::pin(async move { self.tape_rest()?.archive_poll(urls).await })
    }

    fn stat(&mut self, url: &str) -> BoxFuture<'_, OpResult<u64>> {
        let url = url.to_string();
        Box::pin(async move {
            let response = self.head(&url, None).await?;
            let status = response.status();
            self.log.info(format_args!(
                "HEAD {}: HTTP {}",
                redact_queries(&url),
                status.as_u16()
            ));
            if !status.is_success() {
                return Err(status_error("HEAD", &url, status, ""));
            }
            response
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| {
                    OpError::new(
                        libc::EIO,
                        format!("HEAD {}: no Content-Length", redact_queries(&url)),
                    )
                })
        })
    }

    fn checksum(&mut self, url: &str, algorithm: &str) -> BoxFuture<'_, OpResult<String>> {
        let url = url.to_string();
        let algorithm = algorithm.to_string();
        Box::pin(async move {
            let alg = Algorithm::parse(&algorithm).ok_or_else(|| {
                OpError::new(
                    libc::ENOTSUP,
                    format!("Checksum algorithm {algorithm} not supported"),
                )
            })?;
            let want = alg.name().to_ascii_lowercase();
            let response = self.head(&url, Some(&want)).await?;
            let status = response.status();
            if status.is_success() {
                if let Some(value) = find_digest(response.headers(), alg) {
                    self.log.info(format_args!(
                        "HEAD {} Want-Digest: {want} → {value}",
                        redact_queries(&url)
                    ));
                    return Ok(value);
                }
            } else if !matches!(status.as_u16(), 405 | 501) {
                return Err(status_error("HEAD", &url, status, ""));
            }
            // No digest (the storage does not implement RFC 3230 or this algorithm).
            self.log.info(format_args!(
                "{} sent no {want} digest (HTTP {}): reading the file to compute it",
                redact_queries(&url),
                status.as_u16()
            ));
            let value = self.hash_by_reading(&url, alg).await?;
            self.log.info(format_args!("Computed {want}: {value}"));
            Ok(value)
        })
    }

    fn exists(&mut self, url: &str) -> BoxFuture<'_, OpResult<bool>> {
        let url = url.to_string();
        Box::pin(async move {
            let response = self.head(&url, None).await?;
            let status = response.status();
            self.log.info(format_args!(
                "HEAD {}: HTTP {}",
                redact_queries(&url),
                status.as_u16()
            ));
            match status {
                s if s.is_success() => Ok(true),
                StatusCode::NOT_FOUND | StatusCode::GONE => Ok(false),
                s => Err(status_error("HEAD", &url, s, "")),
            }
        })
    }

    fn delete(&mut self, url: &str) -> BoxFuture<'_, OpResult<()>> {
        let url = url.to_string();
        Box::pin(async move {
            let (status, body) = self.simple("DELETE", &url).await?;
            self.log.info(format_args!(
                "DELETE {}: HTTP {}",
                redact_queries(&url),
                status.as_u16()
            ));
            if status.is_success() {
                Ok(())
            } else {
                Err(status_error("DELETE", &url, status, &body))
            }
        })
    }

    fn make_parent(&mut self, url: &str) -> BoxFuture<'_, OpResult<()>> {
        let url = url.to_string();
        Box::pin(async move {
            // Nearest first (usually it exists or is the only one missing), then upwards while
            // the storage says the parent is missing (409), then back down.
            let mut missing = Vec::new();
            let mut dir = parent_url(&url);
            while let Some(d) = dir {
                if self.mkcol(&d).await? != StatusCode::CONFLICT {
                    break;
                }
                if missing.len() >= 64 {
                    return Err(OpError::new(
                        libc::ENAMETOOLONG,
                        format!("Cannot create the parents of {}", redact_queries(&url)),
                    ));
                }
                dir = parent_url(&d);
                missing.push(d);
            }
            for d in missing.iter().rev() {
                if self.mkcol(d).await? == StatusCode::CONFLICT {
                    return Err(OpError::new(
                        libc::ENOENT,
                        format!(
                            "{}: cannot create the directory {}",
                            strerror(libc::ENOENT),
                            redact_queries(d)
                        ),
                    ));
                }
            }
            Ok(())
        })
    }

    fn copy<'a>(
        &'a mut self,
        source: &'a str,
        destination: &'a str,
        params: &'a CopyParams,
        progress: &'a Progress,
    ) -> BoxFuture<'a, OpResult<()>> {
        Box::pin(async move {
            let modes = params
                .copy_mode
                .attempts(params.disable_fallback, params.no_streaming);
            let names: Vec<&str> = modes.iter().map(|m| m.as_str()).collect();
            self.log.info(format_args!(
                "Copy mode: {} (fallback {}; will try: {})",
                params.copy_mode.as_str(),
                if params.disable_fallback {
                    "disabled"
                } else {
                    "enabled"
                },
                names.join(", ")
            ));
            let mut last = None;
            for (i, mode) in modes.iter().enumerate() {
                if i > 0 {
                    self.log
                        .warn(format_args!("Falling back to {} copy", mode.as_str()));
                    // A failed attempt may have left a partial destination.
                    if let Err(e) = self.delete(destination).await {
                        if e.errno != libc::ENOENT {
                            self.log.warn(format_args!(
                                "Could not remove the destination before the fallback: {}",
                                e.message
                            ));
                        }
                    }
                    progress.transferred.store(0, Ordering::Relaxed);
                }
                let attempt = match mode {
                    CopyMode::Streamed => {
                        self.streamed(source, destination, params, progress).await
                    }
                    tpc => {
                        self.third_party(*tpc, source, destination, params, progress)
                            .await
                    }
                };
                match attempt {
                    Ok(()) => return Ok(()),
                    Err(e) => {
                        self.log
                            .warn(format_args!("{} copy failed: {}", mode.as_str(), e.message));
                        // The storage understood and refused (401/403: not allowed to write or
                        // read there; 412: exists): another mode would be refused the same
                        // way, and a streamed retry could even lose the refusal to a reset
                        // connection. Anything else (405/501: no TPC, a `failure:` verdict,
                        // a network error) may work in the next mode.
                        let final_error = matches!(e.errno, libc::EEXIST | libc::EACCES);
                        last = Some(e);
                        if final_error {
                            break;
                        }
                    }
                }
            }
            Err(last.unwrap_or_else(|| {
                OpError::new(
                    libc::EPERM,
                    "No copy mode allowed: the storages support no third-party copy and the VO \
                     forbids streaming (no_streaming)",
                )
            }))
        })
    }
}

/// A minimal HTTP/1.1 client for one request with exact header names (one connection,
/// `Connection: close`), reading a chunked or sized reply incrementally.
mod raw {
    use std::sync::Arc;

    use rustls::{ClientConfig, pki_types::ServerName};
    use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};

    use super::{CONNECT_TIMEOUT, OpError, OpResult};

    /// Bound on the status line and headers of a reply.
    const MAX_HEAD: usize = 64 * 1024;

    pub struct Response {
        pub status: u16,
        reader: BufReader<Box<dyn AsyncRead + Send + Unpin>>,
        body: Body,
    }

    enum Body {
        Chunked { left: u64, done: bool },
        Length(u64),
        UntilClose,
    }

    /// Send `method url` with `headers` (no body) and read the reply's head.
    pub async fn request(
        tls: Arc<ClientConfig>,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
    ) -> OpResult<Response> {
        // A value with a line break would smuggle headers (URLs come from users).
        if let Some((name, _)) = headers.iter().find(|(_, v)| v.contains(['\r', '\n'])) {
            return Err(OpError::new(libc::EINVAL, format!("bad value for {name}")));
        }
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| OpError::new(libc::EINVAL, format!("bad URL: {e}")))?;
        let host = parsed
            .host_str()
            .ok_or_else(|| OpError::new(libc::EINVAL, "URL without a host"))?
            .to_string();
        let port = parsed.port_or_known_default().unwrap_or(443);
        let mut target = parsed.path().to_string();
        if let Some(q) = parsed.query() {
            target.push('?');
            target.push_str(q);
        }
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let connect = tokio::net::TcpStream::connect((bare.as_str(), port));
        let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => {
                let errno = e.raw_os_error().unwrap_or(libc::ECONNREFUSED);
                return Err(OpError::new(
                    errno,
                    format!("connect to {host}:{port}: {e}"),
                ));
            }
            Err(_) => {
                return Err(OpError::new(
                    libc::ETIMEDOUT,
                    format!("connect to {host}:{port}: Connection timed out"),
                ));
            }
        };
        let _ = tcp.set_nodelay(true);
        let mut stream: Box<dyn Stream> = if parsed.scheme() == "https" {
            let name = ServerName::try_from(bare.clone())
                .map_err(|e| OpError::new(libc::EINVAL, format!("bad host name {host}: {e}")))?;
            let connector = tokio_rustls::TlsConnector::from(tls);
            let handshake = connector.connect(name, tcp);
            match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
                Ok(Ok(s)) => Box::new(s),
                Ok(Err(e)) => {
                    return Err(OpError::new(
                        libc::ECONNREFUSED,
                        format!("TLS handshake with {host}:{port} failed: {e}"),
                    ));
                }
                Err(_) => {
                    return Err(OpError::new(
                        libc::ETIMEDOUT,
                        format!("TLS handshake with {host}:{port}: Connection timed out"),
                    ));
                }
            }
        } else {
            Box::new(tcp)
        };
        let host_header = match parsed.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let mut head = format!(
            "{method} {target} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: ftsd/{}\r\n",
            env!("CARGO_PKG_VERSION")
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("Content-Length: 0\r\nConnection: close\r\n\r\n");
        let io = |e: std::io::Error| OpError::new(libc::EIO, format!("{host}:{port}: {e}"));
        stream.write_all(head.as_bytes()).await.map_err(io)?;
        stream.flush().await.map_err(io)?;
        let reader: Box<dyn AsyncRead + Send + Unpin> = Box::new(stream);
        let mut reader = BufReader::new(reader);
        let mut line = String::new();
        let mut read_head = 0usize;
        let mut next_line = async |reader: &mut BufReader<Box<dyn AsyncRead + Send + Unpin>>,
                                   line: &mut String|
               -> OpResult<()> {
            line.clear();
            let n = reader.read_line(line).await.map_err(io)?;
            read_head += n;
            if n == 0 || read_head > MAX_HEAD {
                return Err(OpError::new(
                    libc::EIO,
                    format!("{host}:{port} closed the connection or sent a bad reply"),
                ));
            }
            Ok(())
        };
        next_line(&mut reader, &mut line).await?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| OpError::new(libc::EIO, format!("bad status line {:?}", line.trim())))?;
        let mut body = Body::UntilClose;
        loop {
            next_line(&mut reader, &mut line).await?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((name, value)) = l.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("transfer-encoding")
                    && value.to_ascii_lowercase().contains("chunked")
                {
                    body = Body::Chunked {
                        left: 0,
                        done: false,
                    };
                } else if name.eq_ignore_ascii_case("content-length")
                    && !matches!(body, Body::Chunked { .. })
                {
                    body = Body::Length(value.parse().unwrap_or(0));
                }
            }
        }
        Ok(Response {
            status,
            reader,
            body,
        })
    }

    trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
    impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Stream for T {}

    impl Response {
        /// The next piece of the body; `None` at its end.
        pub async fn chunk(&mut self) -> Option<std::io::Result<Vec<u8>>> {
            match self.next().await {
                Ok(Some(bytes)) => Some(Ok(bytes)),
                Ok(None) => None,
                Err(e) => Some(Err(e)),
            }
        }

        async fn next(&mut self) -> std::io::Result<Option<Vec<u8>>> {
            let mut buf = vec![0u8; 16 * 1024];
            match &mut self.body {
                Body::UntilClose => {
                    let n = self.reader.read(&mut buf).await?;
                    buf.truncate(n);
                    Ok((n > 0).then_some(buf))
                }
                Body::Length(left) => {
                    if *left == 0 {
                        return Ok(None);
                    }
                    let want = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    let n = self.reader.read(&mut buf[..want]).await?;
                    if n == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    *left -= n as u64;
                    buf.truncate(n);
                    Ok(Some(buf))
                }
                Body::Chunked { left, done } => {
                    if *done {
                        return Ok(None);
                    }
                    if *left == 0 {
                        let mut size = String::new();
                        if self.reader.read_line(&mut size).await? == 0 {
                            return Err(std::io::ErrorKind::UnexpectedEof.into());
                        }
                        let hex = size.trim().split(';').next().unwrap_or("");
                        let n = u64::from_str_radix(hex, 16).map_err(|_| {
                            std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunk size")
                        })?;
                        if n == 0 {
                            *done = true;
                            return Ok(None);
                        }
                        *left = n;
                    }
                    let want = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    let n = self.reader.read(&mut buf[..want]).await?;
                    if n == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    *left -= n as u64;
                    if *left == 0 {
                        // The CRLF after the chunk's data.
                        let mut crlf = String::new();
                        self.reader.read_line(&mut crlf).await?;
                    }
                    buf.truncate(n);
                    Ok(Some(buf))
                }
            }
        }

        /// Up to `limit` bytes of the body as text (error replies).
        pub async fn text(&mut self, limit: usize) -> String {
            let mut out = Vec::new();
            while out.len() < limit {
                match self.next().await {
                    Ok(Some(b)) => out.extend_from_slice(&b),
                    _ => break,
                }
            }
            String::from_utf8_lossy(&out).into_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dav_schemes_are_http_on_the_wire() {
        assert_eq!(wire_url("davs://h:1/a"), "https://h:1/a");
        assert_eq!(wire_url("DAV://h/a"), "http://h/a");
        assert_eq!(wire_url("https://h/a"), "https://h/a");
    }

    #[test]
    fn parents_walk_up_to_the_root() {
        assert_eq!(
            parent_url("https://h:1/a/b/c").as_deref(),
            Some("https://h:1/a/b")
        );
        assert_eq!(parent_url("https://h/a/b/").as_deref(), Some("https://h/a"));
        assert_eq!(
            parent_url("https://h//a/b").as_deref(),
            Some("https://h//a")
        );
        assert_eq!(parent_url("https://h/a"), None);
        assert_eq!(parent_url("https://h/"), None);
        assert_eq!(parent_url("https://h"), None);
    }

    #[test]
    fn digests_decode_from_hex_and_base64() {
        // Values from XRootD for one file (protocol-peers.md).
        assert_eq!(
            digest_hex(Algorithm::Adler32, "3d1dd311").as_deref(),
            Some("3d1dd311")
        );
        assert_eq!(
            digest_hex(Algorithm::Md5, "313lagm14zQl8kyUMcvTNA==").as_deref(),
            Some("df5de56a09b5e33425f24c9431cbd334")
        );
        assert_eq!(
            digest_hex(Algorithm::Crc32c, "AFO97A==").as_deref(),
            Some("0053bdec")
        );
        assert_eq!(
            digest_hex(Algorithm::Crc32c, "0053BDEC").as_deref(),
            Some("0053bdec")
        );
        assert_eq!(digest_hex(Algorithm::Md5, "not base64!"), None);
        let mut headers = header::HeaderMap::new();
        headers.append(
            "Digest",
            "MD5=313lagm14zQl8kyUMcvTNA==, ADLER32=3d1dd311"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            find_digest(&headers, Algorithm::Adler32).as_deref(),
            Some("3d1dd311")
        );
        assert_eq!(find_digest(&headers, Algorithm::Crc32c), None);
    }

    #[test]
    fn perf_markers_give_progress_and_the_last_line_the_verdict() {
        // XRootD's exact bytes (no tabs, no final newline), split at awkward places.
        let body = "Perf Marker\nTimestamp: 1795928569\nStripe Index: 0\nStripe Bytes Transferred: 5000000\nTotal Stripe Count: 1\nRemoteConnections: tcp:127.0.0.1:8443\nEnd\nsuccess: Created";
        let mut p = MarkerParser::default();
        for piece in body.as_bytes().chunks(7) {
            p.feed(piece);
        }
        assert_eq!(p.take_markers(), 1);
        assert_eq!(p.bytes(), 5_000_000);
        assert_eq!(p.verdict, None, "the verdict line has no newline yet");
        p.finish();
        assert_eq!(p.verdict, Some(Verdict::Success));

        // dCache style: tab-indented, two stripes, failure verdict.
        let mut p = MarkerParser::default();
        p.feed(b"Perf Marker\n\tStripe Index: 0\n\tStripe Bytes Transferred: 10\nEnd\nPerf Marker\n\tStripe Index: 1\n\tStripe Bytes Transferred: 5\nEnd\n");
        p.feed(b"failure: Remote side failed with status code 403\n");
        assert_eq!(p.bytes(), 15);
        assert_eq!(p.take_markers(), 2);
        assert_eq!(
            p.verdict,
            Some(Verdict::Failure(
                "failure: Remote side failed with status code 403".into()
            ))
        );
    }

    #[test]
    fn statuses_map_to_errnos_the_retry_classifier_knows() {
        let e = status_error(
            "PUT",
            "https://h/x?authz=secret",
            StatusCode::FORBIDDEN,
            "Unable to create /x; permission denied\n",
        );
        assert_eq!(e.errno, libc::EACCES);
        assert!(e.message.starts_with("Permission denied: PUT https://h/x?<redacted> returned HTTP 403 Forbidden: Unable to create"), "{}", e.message);
        assert_eq!(
            status_error("HEAD", "https://h/x", StatusCode::NOT_FOUND, "").errno,
            libc::ENOENT
        );
        assert_eq!(
            status_error("GET", "https://h/x", StatusCode::BAD_GATEWAY, "").errno,
            libc::EIO
        );
    }

    /// Serve one canned reply on a local port; returns its URL and the request it received.
    async fn one_reply(reply: &'static [u8]) -> (String, tokio::task::JoinHandle<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://127.0.0.1:{}/dst/f",
            listener.local_addr().unwrap().port()
        );
        let served = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = sock.read(&mut buf).await.unwrap();
                request.extend_from_slice(&buf[..n]);
            }
            // Dribble the reply out in small writes so chunks straddle reads.
            for piece in reply.chunks(5) {
                sock.write_all(piece).await.unwrap();
                sock.flush().await.unwrap();
            }
            String::from_utf8(request).unwrap()
        });
        (url, served)
    }

    fn tls() -> Arc<ClientConfig> {
        let backend = HttpBackend::new(Vec::new());
        backend.inner.build(None).unwrap().tls
    }

    #[tokio::test]
    async fn raw_copy_sends_exact_header_names_and_reads_a_chunked_reply() {
        let (url, served) = one_reply(
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n\
              c\r\nPerf Marker\n\r\n1a;ext=1\r\nStripe Bytes Transferred: \r\n\
              5\r\n7\nEnd\r\n10\r\n\nsuccess: Created\r\n0\r\n\r\n",
        )
        .await;
        let headers = [
            ("Source", "https://src/f".to_string()),
            ("TransferHeaderAuthorization", "Bearer t0k".to_string()),
        ];
        let mut reply = raw::request(tls(), "COPY", &url, &headers).await.unwrap();
        assert_eq!(reply.status, 201);
        let mut parser = MarkerParser::default();
        while let Some(chunk) = reply.chunk().await {
            parser.feed(&chunk.unwrap());
        }
        parser.finish();
        assert_eq!(parser.bytes(), 7);
        assert_eq!(parser.verdict, Some(Verdict::Success));
        let request = served.await.unwrap();
        assert!(request.starts_with("COPY /dst/f HTTP/1.1\r\n"), "{request}");
        assert!(
            request.contains("\r\nTransferHeaderAuthorization: Bearer t0k\r\n"),
            "{request}"
        );
        assert!(
            request.contains("\r\nSource: https://src/f\r\n"),
            "{request}"
        );
    }

    #[tokio::test]
    async fn raw_copy_reads_sized_error_replies_and_refuses_header_injection() {
        let (url, _served) =
            one_reply(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 12\r\n\r\nbad request!").await;
        let mut reply = raw::request(tls(), "COPY", &url, &[]).await.unwrap();
        assert_eq!(reply.status, 400);
        assert_eq!(reply.text(4096).await, "bad request!");
        let err = raw::request(tls(), "COPY", &url, &[("Source", "a\r\nX: y".into())])
            .await
            .err()
            .unwrap();
        assert_eq!(err.errno, libc::EINVAL);
    }

    #[test]
    fn tpc_support_picks_the_reference_modes() {
        use CopyMode::*;
        assert_eq!(CopyMode::from_tpc_support(None, None), (Pull, false));
        assert_eq!(
            CopyMode::from_tpc_support(Some("push"), Some("FULL")),
            (Pull, false)
        );
        assert_eq!(
            CopyMode::from_tpc_support(Some("NONE"), Some("PULL")),
            (Pull, true)
        );
        assert_eq!(
            CopyMode::from_tpc_support(Some("FULL"), Some("PUSH")),
            (Push, true)
        );
        assert_eq!(
            CopyMode::from_tpc_support(Some("PULL"), Some("NONE")),
            (Streamed, true)
        );
        assert_eq!(Pull.attempts(false, false), vec![Pull, Push, Streamed]);
        assert_eq!(Pull.attempts(false, true), vec![Pull, Push]);
        assert_eq!(Push.attempts(true, false), vec![Push]);
        assert_eq!(Streamed.attempts(true, true), vec![]);
    }
}
