//! A real OAuth2 / OIDC token issuer for the token tests (`../shared/spec/tokens.md` §A.6), on
//! loopback HTTPS with the test PKI's host certificate: discovery, JWKS, the token endpoint
//! (`client_credentials`, FTS-style `token-exchange`, `refresh_token`), introspection, and a
//! test-only `GET /mint` that signs any claims. It is an independent implementation of the
//! provider side: tokens are RS256 JWTs made here with aws-lc-rs, never with ftsd's code.
//!
//! Every request is logged (method, path, client, raw body, parsed form) so that tests can
//! assert the exact bodies ftsd sends. Refresh tokens are opaque and kept in memory.

#![allow(dead_code)]

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{Arc, Mutex},
    thread::JoinHandle,
};

use aws_lc_rs::{
    rsa::{KeyPair, KeySize},
    signature::{self as sig, KeyPair as _},
};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming, service::service_fn};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde_json::{Map, Value, json};

use crate::common::TestPki;

/// The clients the issuer knows: ftsd's and Rucio's (spec §A.6).
pub const FTS_CLIENT: (&str, &str) = ("fts", "ftssecret");
pub const RUCIO_CLIENT: (&str, &str) = ("rucio", "ruciosecret");

/// One logged request.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    pub path: String,
    /// The authenticated client id, if any.
    pub client: Option<String>,
    pub body: String,
    pub form: HashMap<String, String>,
}

struct State {
    /// Lifetime in seconds of tokens the token endpoint issues.
    lifetime: i64,
    /// refresh token → (sub, scope, aud)
    refresh: HashMap<String, (String, String, Value)>,
    log: Vec<Logged>,
    /// When set, token-exchange answers this error (error, description).
    exchange_error: Option<(String, String)>,
    /// When set, refresh answers this error.
    refresh_error: Option<(String, String)>,
    /// How long token-exchange answers wait (to watch files in TOKEN_PREP).
    exchange_delay: std::time::Duration,
    /// Every token this issuer signed or handed out (access and refresh tokens).
    issued: Vec<String>,
    counter: u64,
}

struct Keys {
    pair: KeyPair,
    kid: String,
}

/// The running issuer; stops when dropped.
pub struct Issuer {
    /// `https://localhost:<port>/` (with the trailing `/`, like IAM): the tokens' `iss`.
    pub url: String,
    pub port: u16,
    keys: Arc<Keys>,
    state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

impl Keys {
    fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": self.kid});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let mut signature = vec![0; self.pair.public_modulus_len()];
        self.pair
            .sign(
                &sig::RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                input.as_bytes(),
                &mut signature,
            )
            .unwrap();
        format!("{input}.{}", b64(&signature))
    }

    fn jwks(&self) -> Value {
        let public = self.pair.public_key();
        json!({"keys": [{
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid,
            "n": b64(public.modulus().big_endian_without_leading_zero()),
            "e": b64(public.exponent().big_endian_without_leading_zero()),
        }]})
    }

    /// The claims of one of our own tokens, when its signature verifies.
    fn verify(&self, token: &str) -> Option<Map<String, Value>> {
        let (input, signature) = token.rsplit_once('.')?;
        let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(signature)
            .ok()?;
        let public = sig::UnparsedPublicKey::new(
            &sig::RSA_PKCS1_2048_8192_SHA256,
            self.pair.public_key().as_ref(),
        );
        public.verify(input.as_bytes(), &signature).ok()?;
        let payload = input.split('.').nth(1)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

impl Issuer {
    /// Start on an ephemeral loopback port, tokens living `lifetime` seconds.
    pub fn start(pki: &TestPki, lifetime: i64) -> Issuer {
        let keys = Arc::new(Keys {
            pair: KeyPair::generate(KeySize::Rsa2048).unwrap(),
            kid: "test-key-1".into(),
        });
        let state = Arc::new(Mutex::new(State {
            lifetime,
            refresh: HashMap::new(),
            log: Vec::new(),
            exchange_error: None,
            refresh_error: None,
            exchange_delay: std::time::Duration::ZERO,
            issued: Vec::new(),
            counter: 0,
        }));
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(pki.path("hostcert.pem"))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_file(pki.path("hostkey.pem")).unwrap();
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = format!("https://localhost:{port}/");
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let shared = Shared {
            url: url.clone(),
            keys: keys.clone(),
            state: state.clone(),
        };
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let tcp = tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok((tcp, _)) => tcp,
                            Err(_) => continue,
                        },
                        _ = &mut stopped => return,
                    };
                    let (acceptor, shared) = (acceptor.clone(), shared.clone());
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let service = service_fn(move |req| {
                            let shared = shared.clone();
                            async move { Ok::<_, Infallible>(shared.handle(req).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                            .await;
                    });
                }
            });
        });
        Issuer {
            url,
            port,
            keys,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Sign `claims` as they are (anything: expired, wrong audience, no `sub`...).
    pub fn mint(&self, claims: &Value) -> String {
        let token = self.keys.sign(claims);
        self.state.lock().unwrap().issued.push(token.clone());
        token
    }

    /// Every token this issuer signed or handed out so far (access and refresh tokens).
    pub fn issued(&self) -> Vec<String> {
        self.state.lock().unwrap().issued.clone()
    }

    /// A WLCG-profile token of this issuer for `sub` with `scope` and `aud`, valid `lifetime`
    /// seconds from now.
    pub fn token(&self, sub: &str, scope: &str, aud: Value, lifetime: i64) -> String {
        self.mint(&self.claims(sub, scope, aud, lifetime))
    }

    /// The claims [`Issuer::token`] signs (to alter before [`Issuer::mint`]).
    pub fn claims(&self, sub: &str, scope: &str, aud: Value, lifetime: i64) -> Value {
        let now = now();
        json!({
            "iss": self.url, "sub": sub, "aud": aud, "scope": scope,
            "iat": now, "nbf": now, "exp": now + lifetime,
            "jti": format!("{sub}-{now}-{}", self.next()),
            "wlcg.ver": "1.0", "wlcg.groups": ["/testvo"], "client_id": RUCIO_CLIENT.0,
        })
    }

    fn next(&self) -> u64 {
        let mut state = self.state.lock().unwrap();
        state.counter += 1;
        state.counter
    }

    pub fn jwks(&self) -> Value {
        self.keys.jwks()
    }

    /// The lifetime of tokens the token endpoint issues from now on.
    pub fn set_lifetime(&self, seconds: i64) {
        self.state.lock().unwrap().lifetime = seconds;
    }

    /// Make token-exchange requests fail with `{"error", "error_description"}`.
    pub fn fail_exchange(&self, error: &str, description: &str) {
        self.state.lock().unwrap().exchange_error = Some((error.into(), description.into()));
    }

    /// Make token-exchange answers wait this long.
    pub fn delay_exchange(&self, delay: std::time::Duration) {
        self.state.lock().unwrap().exchange_delay = delay;
    }

    /// Make refresh requests fail with `{"error", "error_description"}`.
    pub fn fail_refresh(&self, error: &str, description: &str) {
        self.state.lock().unwrap().refresh_error = Some((error.into(), description.into()));
    }

    /// Whether this issuer gave out `refresh_token` (and still honours it).
    pub fn issued_refresh_token(&self, refresh_token: &str) -> bool {
        self.state
            .lock()
            .unwrap()
            .refresh
            .contains_key(refresh_token)
    }

    /// The requests received so far.
    pub fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    /// The token-endpoint requests with this `grant_type`.
    pub fn grants(&self, grant_type: &str) -> Vec<Logged> {
        self.log()
            .into_iter()
            .filter(|l| {
                l.path == "/token"
                    && l.form.get("grant_type").map(String::as_str) == Some(grant_type)
            })
            .collect()
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the connection tasks share.
#[derive(Clone)]
struct Shared {
    url: String,
    keys: Arc<Keys>,
    state: Arc<Mutex<State>>,
}

fn reply(status: u16, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn oauth_error(status: u16, error: &str, description: &str) -> Response<Full<Bytes>> {
    reply(
        status,
        json!({"error": error, "error_description": description}),
    )
}

impl Shared {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let method = req.method().to_string();
        // scitokens-cpp asks for `<iss>/.well-known/...`, with two slashes.
        let path = format!("/{}", req.uri().path().trim_start_matches('/'));
        let query = req.uri().query().unwrap_or("").to_string();
        let basic = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
            })
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| {
                s.split_once(':')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
            });
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let body = String::from_utf8_lossy(&body).into_owned();
        // Like Python's parse_qsl: raw spaces (as FTS sends them) stay spaces.
        let form: HashMap<String, String> = form_urlencoded::parse(body.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let client = match (&basic, form.get("client_id"), form.get("client_secret")) {
            (Some((id, secret)), _, _) => Some((id.clone(), secret.clone())),
            (None, Some(id), Some(secret)) => Some((id.clone(), secret.clone())),
            _ => None,
        };
        let known = client.as_ref().is_some_and(|(id, secret)| {
            [FTS_CLIENT, RUCIO_CLIENT]
                .iter()
                .any(|(i, s)| i == id && s == secret)
        });
        self.state.lock().unwrap().log.push(Logged {
            method: method.clone(),
            path: path.clone(),
            client: client.as_ref().filter(|_| known).map(|(id, _)| id.clone()),
            body: body.clone(),
            form: form.clone(),
        });
        match (method.as_str(), path.as_str()) {
            ("GET", "/.well-known/openid-configuration")
            | ("GET", "/.well-known/oauth-authorization-server") => reply(
                200,
                json!({
                    "issuer": self.url,
                    "jwks_uri": format!("{}jwks", self.url),
                    "token_endpoint": format!("{}token", self.url),
                    "introspection_endpoint": format!("{}introspect", self.url),
                    "grant_types_supported": ["client_credentials", "refresh_token",
                        "urn:ietf:params:oauth:grant-type:token-exchange"],
                    "token_endpoint_auth_methods_supported":
                        ["client_secret_basic", "client_secret_post"],
                }),
            ),
            ("GET", "/jwks") => reply(200, self.keys.jwks()),
            ("GET", "/mint") => self.mint(&query),
            ("POST", "/token") if !known => {
                oauth_error(401, "invalid_client", "Bad client credentials")
            }
            ("POST", "/token") => {
                let delay = self.state.lock().unwrap().exchange_delay;
                if form
                    .get("grant_type")
                    .is_some_and(|g| g.ends_with("token-exchange"))
                {
                    tokio::time::sleep(delay).await;
                }
                self.token(&form)
            }
            ("POST", "/introspect") if !known => {
                oauth_error(401, "invalid_client", "Bad client credentials")
            }
            ("POST", "/introspect") => {
                let token = form.get("token").map(String::as_str).unwrap_or("");
                match self.keys.verify(token) {
                    Some(mut claims) => {
                        let active = claims
                            .get("exp")
                            .and_then(Value::as_i64)
                            .is_some_and(|exp| exp > now());
                        claims.insert("active".into(), Value::Bool(active));
                        reply(200, Value::Object(claims))
                    }
                    None => reply(200, json!({"active": false})),
                }
            }
            _ => reply(404, json!({"error": "not_found"})),
        }
    }

    /// `GET /mint?sub=&scope=&aud=&lifetime=&extra=<json>`: anything, signed.
    fn mint(&self, query: &str) -> Response<Full<Bytes>> {
        let q: HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let now = now();
        let lifetime: i64 = q
            .get("lifetime")
            .and_then(|l| l.parse().ok())
            .unwrap_or(1200);
        let mut claims = json!({
            "iss": self.url, "sub": q.get("sub").cloned().unwrap_or("test-user".into()),
            "scope": q.get("scope").cloned().unwrap_or_default(),
            "iat": now, "nbf": now, "exp": now + lifetime, "wlcg.ver": "1.0",
        });
        if let Some(aud) = q.get("aud") {
            claims["aud"] = json!(aud);
        }
        if let Some(Ok(Value::Object(extra))) =
            q.get("extra").map(|e| serde_json::from_str::<Value>(e))
        {
            for (k, v) in extra {
                if v.is_null() {
                    claims.as_object_mut().unwrap().remove(&k);
                } else {
                    claims[k] = v;
                }
            }
        }
        let token = self.keys.sign(&claims);
        self.state.lock().unwrap().issued.push(token.clone());
        reply(200, json!({"access_token": token}))
    }

    fn issue(&self, sub: &str, scope: &str, aud: &Value) -> (String, i64) {
        let (lifetime, n) = {
            let mut state = self.state.lock().unwrap();
            state.counter += 1;
            (state.lifetime, state.counter)
        };
        let now = now();
        let claims = json!({
            "iss": self.url, "sub": sub, "aud": aud, "scope": scope,
            "iat": now, "nbf": now, "exp": now + lifetime, "jti": format!("at-{n}"),
            "wlcg.ver": "1.0", "wlcg.groups": ["/testvo"], "client_id": FTS_CLIENT.0,
        });
        let token = self.keys.sign(&claims);
        self.state.lock().unwrap().issued.push(token.clone());
        (token, lifetime)
    }

    fn new_refresh_token(&self, sub: &str, scope: &str, aud: &Value) -> String {
        let mut bytes = [0u8; 24];
        aws_lc_rs::rand::fill(&mut bytes).unwrap();
        let rt = format!("rt-{}", b64(&bytes));
        let mut state = self.state.lock().unwrap();
        state
            .refresh
            .insert(rt.clone(), (sub.into(), scope.into(), aud.clone()));
        state.issued.push(rt.clone());
        rt
    }

    fn token(&self, form: &HashMap<String, String>) -> Response<Full<Bytes>> {
        let field = |k: &str| form.get(k).cloned().unwrap_or_default();
        let aud_of = |form_aud: Option<&String>, fallback: Value| match form_aud {
            Some(a) if a.contains(' ') => json!(a.split(' ').collect::<Vec<_>>()),
            Some(a) => json!(a),
            None => fallback,
        };
        match field("grant_type").as_str() {
            "client_credentials" => {
                let client = form
                    .get("client_id")
                    .cloned()
                    .unwrap_or_else(|| "rucio".into());
                let scope = field("scope");
                let aud = aud_of(form.get("audience"), Value::Null);
                let (at, lifetime) = self.issue(&client, &scope, &aud);
                reply(
                    200,
                    json!({"access_token": at, "token_type": "Bearer", "expires_in": lifetime}),
                )
            }
            "urn:ietf:params:oauth:grant-type:token-exchange" => {
                if let Some((e, d)) = self.state.lock().unwrap().exchange_error.clone() {
                    return oauth_error(400, &e, &d);
                }
                let Some(subject) = self.keys.verify(&field("subject_token")) else {
                    return oauth_error(400, "invalid_request", "The subject token is not valid");
                };
                let sub = subject
                    .get("sub")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let scope = form
                    .get("scope")
                    .cloned()
                    .or_else(|| {
                        subject
                            .get("scope")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    })
                    .unwrap_or_default();
                let aud = aud_of(
                    form.get("audience"),
                    subject.get("aud").cloned().unwrap_or(Value::Null),
                );
                let (at, lifetime) = self.issue(&sub, &scope, &aud);
                let mut answer = json!({
                    "access_token": at, "token_type": "Bearer", "expires_in": lifetime,
                    "issued_token_type": "urn:ietf:params:oauth:token-type:refresh_token",
                });
                if scope.split(' ').any(|s| s == "offline_access") {
                    answer["refresh_token"] = json!(self.new_refresh_token(&sub, &scope, &aud));
                }
                reply(200, answer)
            }
            "refresh_token" => {
                if let Some((e, d)) = self.state.lock().unwrap().refresh_error.clone() {
                    return oauth_error(400, &e, &d);
                }
                let rt = field("refresh_token");
                let known = self.state.lock().unwrap().refresh.get(&rt).cloned();
                let Some((sub, scope, aud)) = known else {
                    return oauth_error(400, "invalid_grant", "Invalid refresh token");
                };
                let (at, lifetime) = self.issue(&sub, &scope, &aud);
                reply(
                    200,
                    json!({"access_token": at, "token_type": "Bearer", "expires_in": lifetime,
                           "refresh_token": rt}),
                )
            }
            other => oauth_error(
                400,
                "unsupported_grant_type",
                &format!("{other} is not supported"),
            ),
        }
    }
}
