//! OAuth2 / OIDC token providers (`../shared/spec/tokens.md` §A.2, §A.3): who issues the bearer
//! tokens this service accepts, their signing keys, and the provider endpoints the service
//! calls as a client (token exchange, refresh, introspection).
//!
//! - [`Oidc::start`] builds the HTTPS client (the grid CA directory and the system roots) and
//!   discovers every configured provider (`<issuer>/.well-known/openid-configuration`, then its
//!   JWKS). A provider that cannot be reached at start is not fatal: it is discovered again
//!   when one of its tokens arrives, at most every [`JWKS_MIN_REFETCH`].
//! - [`Oidc::authenticate`] is the reference's API-token check (`FTS3OAuth2ResourceProvider`):
//!   issuer registered, claims (`keys`), signature, then the provider rules (required scope).
//! - [`Oidc::check_transfer_token`] is its `validate_token_offline(audience=None)` for the
//!   tokens of a submission.
//! - [`Oidc::exchange`] / [`Oidc::refresh`] are the token daemon's requests, with the
//!   reference's bodies (spaces in scopes stay raw, as FTS sends them) and error texts.
//!
//! Keys are cached for `jwks_cache_seconds`; a token naming a `kid` the cache lacks makes an
//! earlier fetch, at most one per [`JWKS_MIN_REFETCH`] per provider, so random `kid`s cannot
//! turn into a flood of requests to the provider. Client secrets and tokens never reach a log
//! line or an error text (provider errors are scrubbed of them, as the reference does).

pub mod validate;

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use base64::Engine as _;
use reqwest::{StatusCode, header};
use rustls::{ClientConfig, RootCertStore, pki_types::TrustAnchor};
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::model::token::{self as tok, Secret, decode_unverified, safe_issuer};
pub use validate::{INVALID_CREDENTIALS, Invalid, Keys};

/// One provider as configured.
#[derive(Clone)]
pub struct ProviderSettings {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// A scope every API token must carry (`OauthScopeFts`).
    pub required_scope: Option<String>,
    /// The VO of the provider's users.
    pub vo: Option<String>,
}

/// Everything the providers are configured with.
#[derive(Clone)]
pub struct Settings {
    pub providers: Vec<ProviderSettings>,
    pub authorized_audiences: Vec<String>,
    pub jwks_cache: Duration,
    pub validate_offline: bool,
    /// The least time between two fetches of a provider's keys (or discovery attempts):
    /// [`JWKS_MIN_REFETCH`] in service; tests shorten it.
    pub min_refetch: Duration,
}

/// A provider's keys are fetched again at most this often when tokens name unknown `kid`s
/// or a fetch failed (and an undiscovered provider is tried again at most this often): a
/// provider rotates keys rarely, and an attacker must not be able to make us hammer it.
pub const JWKS_MIN_REFETCH: Duration = Duration::from_secs(60);
/// Discovery documents (and the token endpoint in them) are kept this long, as the reference's
/// token daemon caches the token endpoint for an hour.
pub const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// Bound on every request to a provider; the API request that waits on a key fetch waits no
/// longer.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest discovery document, JWKS or token-endpoint reply read (real ones are a few KiB).
pub const MAX_REPLY_BYTES: usize = 1 << 20;

/// Why an API token is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRefused {
    /// No provider is configured: the reference's 400
    /// `Unsupported authentication method: method=OAuth2`.
    Disabled,
    /// The reason in `Invalid credentials (<reason>)`.
    Invalid(String),
}

/// What a valid API token says about its holder.
#[derive(Debug, Clone)]
pub struct TokenAuth {
    pub issuer: String,
    pub subject: String,
    pub scopes: Option<Vec<String>>,
    pub groups: Option<Vec<String>>,
    pub wlcg_profile: bool,
    pub expiry: i64,
    /// The provider's configured VO.
    pub vo: Option<String>,
}

/// A provider's discovery document, the fields used.
#[derive(Debug, Clone)]
struct Metadata {
    issuer: String,
    jwks_uri: String,
    token_endpoint: Option<String>,
    introspection_endpoint: Option<String>,
}

/// A provider's cached metadata and keys.
#[derive(Default)]
struct State {
    metadata: Option<Metadata>,
    discovered_at: Option<Instant>,
    last_discovery: Option<Instant>,
    keys: KeyCache,
}

/// The signing keys of one provider and when they were fetched.
#[derive(Default, Clone)]
pub struct KeyCache {
    keys: Arc<Keys>,
    fetched: Option<Instant>,
    last_attempt: Option<Instant>,
}

impl KeyCache {
    /// Whether to fetch the keys before checking a token naming `kid`: never fetched, older
    /// than `ttl`, or `kid` unknown; and in every case not more than once per `min_interval`
    /// ([`JWKS_MIN_REFETCH`]) after the first attempt.
    pub fn wants_fetch(
        &self,
        kid: Option<&str>,
        now: Instant,
        ttl: Duration,
        min_interval: Duration,
    ) -> bool {
        let needed = match self.fetched {
            None => true,
            Some(at) => now.duration_since(at) >= ttl || kid.is_some_and(|k| !self.keys.has_kid(k)),
        };
        needed
            && self
                .last_attempt
                .is_none_or(|at| now.duration_since(at) >= min_interval)
    }

    fn attempted(&mut self, now: Instant) {
        self.last_attempt = Some(now);
    }

    fn fetched(&mut self, keys: Keys, now: Instant) {
        self.keys = Arc::new(keys);
        self.fetched = Some(now);
    }
}

struct Provider {
    settings: ProviderSettings,
    /// The configured issuer with a trailing `/` (the reference's `[providers]` keys).
    normalized: String,
    state: RwLock<State>,
    /// One fetch at a time per provider.
    fetching: tokio::sync::Mutex<()>,
}

/// The configured providers and the HTTPS client that talks to them.
pub struct Oidc {
    settings: Settings,
    providers: Vec<Provider>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let issuers: Vec<&str> = self
            .providers
            .iter()
            .map(|p| p.settings.issuer.as_str())
            .collect();
        f.debug_struct("Oidc").field("issuers", &issuers).finish()
    }
}

/// The HTTPS client for providers: verified against `anchors` (the grid CA directory) and the
/// system's roots; no redirects (a token endpoint gets the client secret); bounded time.
fn client(anchors: &[TrustAnchor<'static>]) -> Result<reqwest::Client, String> {
    let mut roots = RootCertStore::empty();
    roots.roots.extend(anchors.iter().cloned());
    let native = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    if added == 0 && anchors.is_empty() {
        return Err("no trusted CA certificates (grid CA directory or system roots)".into());
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(HTTP_TIMEOUT)
        .connect_timeout(HTTP_TIMEOUT)
        .user_agent(concat!("ftsd/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("HTTP client set-up failed: {e}"))
}

/// Characters a form parser would misread in a raw value: percent-encoded; everything else
/// (spaces in scopes and audiences included) goes as the reference sends it.
fn form_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '%' | '&' | '+' | '#' | '=' => out.push_str(&format!("%{:02X}", c as u32)),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// The body of a token exchange, exactly as the reference's `TokenExchangeExecutor` builds it.
pub fn exchange_body(access_token: &str, scope: &str, audience: Option<&str>) -> String {
    let mut body = format!(
        "grant_type=urn:ietf:params:oauth:grant-type:token-exchange\
         &requested_token_type=urn:ietf:params:oauth:token-type:refresh_token\
         &subject_token_type=urn:ietf:params:oauth:token-type:access_token\
         &subject_token={}&scope={}",
        form_value(access_token),
        form_value(scope)
    );
    if !scope.contains("offline_access") {
        body.push_str(" offline_access");
    }
    if let Some(aud) = audience.filter(|a| !a.is_empty()) {
        body.push_str("&audience=");
        body.push_str(&form_value(aud));
    }
    body
}

/// The body of a refresh, as the reference's `TokenRefreshExecutor` builds it.
pub fn refresh_body(refresh_token: &str, scope: &str, audience: Option<&str>) -> String {
    let mut body = format!(
        "grant_type=refresh_token&refresh_token={}&scope={}",
        form_value(refresh_token),
        form_value(scope)
    );
    if let Some(aud) = audience.filter(|a| !a.is_empty()) {
        body.push_str("&audience=");
        body.push_str(&form_value(aud));
    }
    body
}

/// What a token endpoint gave.
#[derive(Debug, Clone)]
pub struct Grant {
    pub access_token: Option<Secret>,
    pub refresh_token: Option<Secret>,
    pub expires_in: Option<i64>,
}

/// A string field of a JSON reply (the reference's `parseJson`: missing or empty is absent).
fn reply_string(reply: &Map<String, Value>, key: &str) -> Option<String> {
    match reply.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The reference's `Response JSON did not contain <key> key`.
pub fn missing_key(key: &str) -> String {
    format!("Response JSON did not contain {key} key")
}

impl Oidc {
    /// The providers of `settings`, discovered now (failures are logged and retried later).
    pub async fn start(
        settings: Settings,
        anchors: &[TrustAnchor<'static>],
    ) -> Result<Oidc, String> {
        let http = client(anchors)?;
        let providers = settings
            .providers
            .iter()
            .map(|p| Provider {
                normalized: safe_issuer(&p.issuer),
                settings: p.clone(),
                state: RwLock::new(State::default()),
                fetching: tokio::sync::Mutex::new(()),
            })
            .collect();
        let oidc = Oidc {
            settings,
            providers,
            http,
        };
        for provider in &oidc.providers {
            match oidc.refresh_provider(provider, None, true).await {
                Ok(()) => {
                    let state = provider.read();
                    tracing::info!(
                        issuer = %provider.settings.issuer,
                        keys = state.keys.keys.len(),
                        "token provider ready"
                    );
                }
                Err(why) => tracing::warn!(
                    issuer = %provider.settings.issuer,
                    reason = %why,
                    "token provider unavailable; tried again when one of its tokens arrives"
                ),
            }
        }
        Ok(oidc)
    }

    /// Whether `issuer` (as in a token, trailing `/` or not) is a configured provider: the
    /// reference's `t_token_provider` lookup.
    pub fn is_configured_issuer(&self, issuer: &str) -> bool {
        let wanted = safe_issuer(issuer);
        self.providers.iter().any(|p| p.normalized == wanted)
    }

    /// The provider registered under `issuer` as its discovery document names it (the
    /// reference's `token_issuer_supported`); a configured provider not discovered yet is
    /// discovered now (rate-limited).
    async fn registered(&self, issuer: &str) -> Option<&Provider> {
        let normalized = safe_issuer(issuer);
        let provider = self.providers.iter().find(|p| p.normalized == normalized)?;
        if provider.read().metadata.is_none() {
            if let Err(why) = self.refresh_provider(provider, None, false).await {
                tracing::debug!(issuer = %provider.settings.issuer, reason = %why, "token provider still unavailable");
            }
        }
        let state = provider.read();
        let meta = state.metadata.as_ref()?;
        (meta.issuer == issuer).then_some(provider)
    }

    /// Discover (if due) and fetch keys (if due for a token naming `kid`). `force`: at start.
    async fn refresh_provider(
        &self,
        provider: &Provider,
        kid: Option<&str>,
        force: bool,
    ) -> Result<(), String> {
        let _one = provider.fetching.lock().await;
        let now = Instant::now();
        let (discover, keys) = {
            let state = provider.read();
            let stale = state
                .discovered_at
                .is_none_or(|at| now.duration_since(at) >= DISCOVERY_TTL);
            let may = force
                || state
                    .last_discovery
                    .is_none_or(|at| now.duration_since(at) >= self.settings.min_refetch);
            let discover = (state.metadata.is_none() || stale) && may;
            let keys = force
                || state.keys.wants_fetch(
                    kid,
                    now,
                    self.settings.jwks_cache,
                    self.settings.min_refetch,
                );
            (discover, keys)
        };
        if discover {
            provider.write().last_discovery = Some(now);
            match self.discover(&provider.settings.issuer).await {
                Ok(meta) => {
                    let mut state = provider.write();
                    state.metadata = Some(meta);
                    state.discovered_at = Some(now);
                }
                // A stale document keeps serving; a missing one means no provider yet.
                Err(why) if provider.read().metadata.is_none() => return Err(why),
                Err(why) => {
                    tracing::warn!(issuer = %provider.settings.issuer, reason = %why, "token provider discovery failed; keeping the previous document");
                }
            }
        }
        if keys || (discover && provider.read().keys.fetched.is_none()) {
            let Some(jwks_uri) = provider
                .read()
                .metadata
                .as_ref()
                .map(|m| m.jwks_uri.clone())
            else {
                return Err("not discovered".into());
            };
            provider.write().keys.attempted(now);
            let body = self.get(&jwks_uri).await?;
            let keys = Keys::parse(&body)?;
            tracing::debug!(issuer = %provider.settings.issuer, keys = keys.len(), "token provider keys fetched");
            provider.write().keys.fetched(keys, now);
        }
        Ok(())
    }

    async fn discover(&self, issuer: &str) -> Result<Metadata, String> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let body = self.get(&url).await?;
        let doc: Map<String, Value> = serde_json::from_slice(&body)
            .map_err(|e| format!("{url}: not a discovery document: {e}"))?;
        let field = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_string);
        let discovered = field("issuer").ok_or_else(|| format!("{url}: no issuer"))?;
        // pyoidc refuses a document for another issuer; a trailing `/` is not a difference.
        if safe_issuer(&discovered) != safe_issuer(issuer) {
            return Err(format!(
                "{url}: the document is for issuer {discovered:?}, not {issuer:?}"
            ));
        }
        Ok(Metadata {
            issuer: discovered,
            jwks_uri: field("jwks_uri").ok_or_else(|| format!("{url}: no jwks_uri"))?,
            token_endpoint: field("token_endpoint"),
            introspection_endpoint: field("introspection_endpoint"),
        })
    }

    /// GET a provider document, bounded.
    async fn get(&self, url: &str) -> Result<Vec<u8>, String> {
        let response = self
            .http
            .get(url)
            .header(header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("GET {url} failed: {}", error_chain(&e)))?;
        let status = response.status();
        let body = read_bounded(response)
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if status != StatusCode::OK {
            return Err(format!("GET {url} returned HTTP {status}"));
        }
        Ok(body)
    }

    /// The keys of `provider` for a token naming `kid`, fetched first if due.
    async fn keys_for(&self, provider: &Provider, kid: Option<&str>) -> Arc<Keys> {
        let due = provider.read().keys.wants_fetch(
            kid,
            Instant::now(),
            self.settings.jwks_cache,
            self.settings.min_refetch,
        );
        if due {
            if let Err(why) = self.refresh_provider(provider, kid, false).await {
                tracing::warn!(issuer = %provider.settings.issuer, reason = %why, "token provider keys could not be fetched");
            }
        }
        provider.read().keys.keys.clone()
    }

    /// The reference's API-token check. `now` is unix seconds.
    pub async fn authenticate(&self, token: &str, now: i64) -> Result<TokenAuth, TokenRefused> {
        let invalid = |s: &str| TokenRefused::Invalid(s.to_string());
        let jwt = decode_unverified(token).map_err(|e| TokenRefused::Invalid(e.0))?;
        let Some(issuer) = jwt.payload.get("iss").and_then(Value::as_str) else {
            return Err(invalid("Token is missing the \"iss\" claim"));
        };
        let Some(provider) = self.registered(issuer).await else {
            return Err(invalid("TokenProvider not supported"));
        };
        let audiences = &self.settings.authorized_audiences;
        let credential = if self.settings.validate_offline {
            validate::check_claims(&jwt.payload, now, Some(audiences))
                .map_err(|e| TokenRefused::Invalid(e.to_string()))?;
            let kid = jwt.header.get("kid").and_then(Value::as_str);
            let keys = self.keys_for(provider, kid).await;
            validate::check_signature(token, &jwt.header, &keys)
                .map_err(|e| TokenRefused::Invalid(e.to_string()))?;
            jwt.payload.clone()
        } else {
            self.validate_online(provider, token, &jwt.payload, audiences)
                .await?
        };
        let mut scopes = tok::scopes(&credential);
        if scopes.is_none() {
            // Best effort, as the reference: a provider without introspection just leaves
            // the token without scopes.
            if let Ok(reply) = self.introspect(provider, token).await {
                scopes = tok::scopes(&reply);
            }
        }
        let subject = credential
            .get("sub")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("Token is missing the \"sub\" claim"))?
            .to_string();
        let expiry = tok::int_claim(&credential, "exp")
            .ok_or_else(|| invalid("Token is missing the \"exp\" claim"))?;
        // The reference's last checks: expired, provider configured under the issuer with
        // a trailing `/`, its required scope present. They fail as `access_denied`.
        if expiry <= now || !self.is_configured_issuer(issuer) {
            return Err(invalid(INVALID_CREDENTIALS));
        }
        if let Some(required) = &provider.settings.required_scope {
            if !scopes.as_ref().is_some_and(|s| s.contains(required)) {
                return Err(invalid(INVALID_CREDENTIALS));
            }
        }
        Ok(TokenAuth {
            issuer: issuer.to_string(),
            subject,
            scopes,
            groups: tok::groups(&credential),
            wlcg_profile: credential.contains_key("wlcg.ver"),
            expiry,
            vo: provider.settings.vo.clone(),
        })
    }

    /// `validate_token_online`: the audience from the token, the rest from introspection,
    /// which must say `active` and grant `offline_access`.
    async fn validate_online(
        &self,
        provider: &Provider,
        token: &str,
        payload: &Map<String, Value>,
        audiences: &[String],
    ) -> Result<Map<String, Value>, TokenRefused> {
        // Only the audience is checked on the token itself (the reference's options).
        let mut aud_only = Map::new();
        for key in ["aud", "exp", "sub"] {
            if let Some(v) = payload.get(key) {
                aud_only.insert(key.to_string(), v.clone());
            }
        }
        aud_only.insert("exp".into(), Value::from(i64::MAX));
        aud_only.insert("sub".into(), Value::from("-"));
        validate::check_claims(&aud_only, 0, Some(audiences))
            .map_err(|e| TokenRefused::Invalid(e.to_string()))?;
        let reply = self
            .introspect(provider, token)
            .await
            .map_err(TokenRefused::Invalid)?;
        if reply.get("active") != Some(&Value::Bool(true)) {
            return Err(TokenRefused::Invalid(INVALID_CREDENTIALS.into()));
        }
        match tok::scopes(&reply) {
            None => Err(TokenRefused::Invalid(
                "Scope claim not found in online validation response".into(),
            )),
            // Sic ("dos"): the reference's text.
            Some(s) if !s.iter().any(|s| s == "offline_access") => Err(TokenRefused::Invalid(
                "Scope claim dos not contain offline_access".into(),
            )),
            Some(_) => Ok(reply),
        }
    }

    /// The reference's `validate_token_offline(token)` for a transfer token: a registered
    /// issuer, time claims, a verifying key; no audience check.
    pub async fn check_transfer_token(&self, token: &str, now: i64) -> Result<(), Invalid> {
        let jwt = decode_unverified(token).map_err(|_| Invalid::Claim("not a JWT".to_string()))?;
        let issuer = jwt
            .payload
            .get("iss")
            .and_then(Value::as_str)
            .ok_or(Invalid::Signature)?;
        let provider = self.registered(issuer).await.ok_or(Invalid::Signature)?;
        validate::check_claims(&jwt.payload, now, None)?;
        let kid = jwt.header.get("kid").and_then(Value::as_str);
        let keys = self.keys_for(provider, kid).await;
        validate::check_signature(token, &jwt.header, &keys)
    }

    /// The provider configured for `issuer` (a `t_token.issuer`, trailing `/`), with its
    /// discovery document.
    async fn provider_for(&self, issuer: &str) -> Result<(&Provider, Metadata), String> {
        let normalized = safe_issuer(issuer);
        let provider = self
            .providers
            .iter()
            .find(|p| p.normalized == normalized)
            .ok_or_else(|| format!("No token provider is configured for issuer {issuer}"))?;
        self.refresh_provider(provider, None, false).await.ok();
        let meta = provider
            .read()
            .metadata
            .clone()
            .ok_or_else(|| format!("Token provider {issuer} could not be discovered"))?;
        Ok((provider, meta))
    }

    /// RFC 7662 introspection with the service's client credentials.
    async fn introspect(
        &self,
        provider: &Provider,
        token: &str,
    ) -> Result<Map<String, Value>, String> {
        let endpoint = provider
            .read()
            .metadata
            .as_ref()
            .and_then(|m| m.introspection_endpoint.clone())
            .ok_or_else(|| "Issuer does not support introspection".to_string())?;
        let body = format!("token={}", form_value(token));
        let (status, reply) = self.post_form(provider, &endpoint, body).await?;
        if status != StatusCode::OK {
            return Err(format!("Introspection returned HTTP {status}"));
        }
        serde_json::from_slice(&reply).map_err(|e| format!("Introspection reply: {e}"))
    }

    async fn post_form(
        &self,
        provider: &Provider,
        url: &str,
        body: String,
    ) -> Result<(StatusCode, Vec<u8>), String> {
        let credentials = format!(
            "{}:{}",
            provider.settings.client_id,
            provider.settings.client_secret.expose()
        );
        let basic = base64::engine::general_purpose::STANDARD.encode(credentials.as_bytes());
        let response = self
            .http
            .post(url)
            .header(header::AUTHORIZATION, format!("Basic {basic}"))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| format!("POST {url} failed: {}", error_chain(&e)))?;
        let status = response.status();
        let reply = read_bounded(response)
            .await
            .map_err(|e| format!("POST {url}: {e}"))?;
        Ok((status, reply))
    }

    /// POST to the token endpoint of `issuer`'s provider; a non-200 reply becomes the
    /// reference's `[error]: description` (or the status), scrubbed of `secrets`.
    async fn token_request(
        &self,
        issuer: &str,
        body: String,
        secrets: &[&str],
    ) -> Result<Map<String, Value>, String> {
        let (provider, meta) = self.provider_for(issuer).await?;
        let endpoint = meta
            .token_endpoint
            .ok_or_else(|| format!("Token provider {issuer} has no token endpoint"))?;
        let mut hidden: Vec<(String, String)> = secrets
            .iter()
            .map(|s| (s.to_string(), tok::redacted(s)))
            .collect();
        hidden.push((
            provider.settings.client_id.clone(),
            "<FTS client ID>".to_string(),
        ));
        let scrub = |text: &str| {
            let pairs: Vec<(&str, &str)> = hidden
                .iter()
                .map(|(a, b)| (a.as_str(), b.as_str()))
                .collect();
            tok::hide(text, &pairs)
        };
        let (status, reply) = self
            .post_form(provider, &endpoint, body)
            .await
            .map_err(|e| scrub(&e))?;
        let parsed: Option<Map<String, Value>> = serde_json::from_slice(&reply).ok();
        if status != StatusCode::OK {
            let described = parsed.as_ref().and_then(|r| {
                Some(format!(
                    "[{}]: {}",
                    reply_string(r, "error")?,
                    reply_string(r, "error_description")?
                ))
            });
            return Err(scrub(&described.unwrap_or_else(|| {
                format!("Token endpoint {endpoint} returned HTTP {status}")
            })));
        }
        parsed.ok_or_else(|| format!("Token endpoint {endpoint} did not answer JSON"))
    }

    /// Exchange an access token for a refresh token (the token daemon's `TokenExchange`).
    /// The reply must carry `refresh_token`; `access_token` and `expires_in` are optional.
    pub async fn exchange(
        &self,
        issuer: &str,
        access_token: &Secret,
        scope: &str,
        audience: Option<&str>,
    ) -> Result<Grant, String> {
        let body = exchange_body(access_token.expose(), scope, audience);
        let reply = self
            .token_request(issuer, body, &[access_token.expose()])
            .await?;
        let refresh =
            reply_string(&reply, "refresh_token").ok_or_else(|| missing_key("refresh_token"))?;
        let access = reply_string(&reply, "access_token").filter(|a| *a != refresh);
        Ok(Grant {
            access_token: access.map(Secret::new),
            refresh_token: Some(Secret::new(refresh)),
            expires_in: reply_string(&reply, "expires_in").and_then(|s| s.parse().ok()),
        })
    }

    /// A new access token for a refresh token. The reply must carry `access_token` and
    /// `expires_in`; a new `refresh_token` (rotation) is optional.
    pub async fn refresh(
        &self,
        issuer: &str,
        refresh_token: &Secret,
        access_token: &Secret,
        scope: &str,
        audience: Option<&str>,
    ) -> Result<Grant, String> {
        let body = refresh_body(refresh_token.expose(), scope, audience);
        let reply = self
            .token_request(
                issuer,
                body,
                &[refresh_token.expose(), access_token.expose()],
            )
            .await?;
        let access =
            reply_string(&reply, "access_token").ok_or_else(|| missing_key("access_token"))?;
        let expires_in = reply_string(&reply, "expires_in")
            .ok_or_else(|| missing_key("expires_in"))?
            .parse::<i64>()
            .map_err(|_| "The expires_in of the reply is not a number".to_string())?;
        Ok(Grant {
            access_token: Some(Secret::new(access)),
            refresh_token: reply_string(&reply, "refresh_token").map(Secret::new),
            expires_in: Some(expires_in),
        })
    }
}

impl Provider {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A panic under this lock would be a bug in a few assignments; keep serving.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// A reqwest error with its causes (TLS and connection details are in the sources).
fn error_chain(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

async fn read_bounded(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("reading the reply: {}", error_chain(&e)))?
    {
        if body.len() + chunk.len() > MAX_REPLY_BYTES {
            return Err(format!("reply larger than {MAX_REPLY_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::trust::TrustStore;
    use serde_json::json;
    use std::sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use validate::tests::TestKey;

    /// A token provider on loopback HTTPS (discovery and JWKS only), its certificate from a
    /// throwaway dev PKI; it counts the JWKS fetches.
    struct FakeProvider {
        issuer: String,
        jwks: Arc<Mutex<Value>>,
        jwks_hits: Arc<AtomicUsize>,
        anchors: Vec<TrustAnchor<'static>>,
        _dir: tempfile::TempDir,
    }

    impl FakeProvider {
        async fn start(keys: &[&TestKey]) -> FakeProvider {
            let dir = tempfile::tempdir().unwrap();
            let pki = crate::devpki::DevPki::create(dir.path()).unwrap();
            let anchors = TrustStore::load(&pki.ca_dir).unwrap().anchors().to_vec();
            let chain: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(&pki.host_cert)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            use rustls::pki_types::pem::PemObject;
            let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&pki.host_key).unwrap();
            let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let issuer = format!("https://localhost:{port}/");
            let jwks = Arc::new(Mutex::new(
                json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}),
            ));
            let jwks_hits = Arc::new(AtomicUsize::new(0));
            let (doc, served, hits) = (
                json!({"issuer": issuer, "jwks_uri": format!("{issuer}jwks"),
                       "token_endpoint": format!("{issuer}token")}),
                jwks.clone(),
                jwks_hits.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        return;
                    };
                    let (acceptor, doc, served, hits) =
                        (acceptor.clone(), doc.clone(), served.clone(), hits.clone());
                    tokio::spawn(async move {
                        let Ok(mut tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let mut request = Vec::new();
                        let mut buf = [0u8; 1024];
                        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                            match tls.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => request.extend_from_slice(&buf[..n]),
                            }
                        }
                        let text = String::from_utf8_lossy(&request);
                        let path = text.split_whitespace().nth(1).unwrap_or("").to_string();
                        let (status, body) = match path.as_str() {
                            "/.well-known/openid-configuration" => ("200 OK", doc.to_string()),
                            "/jwks" => {
                                hits.fetch_add(1, Ordering::SeqCst);
                                ("200 OK", served.lock().unwrap().to_string())
                            }
                            _ => ("404 Not Found", "{}".to_string()),
                        };
                        let reply = format!(
                            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n\
                             content-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = tls.write_all(reply.as_bytes()).await;
                        let _ = tls.shutdown().await;
                    });
                }
            });
            FakeProvider {
                issuer,
                jwks,
                jwks_hits,
                anchors,
                _dir: dir,
            }
        }

        fn publish(&self, keys: &[&TestKey]) {
            *self.jwks.lock().unwrap() =
                json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()});
        }

        fn hits(&self) -> usize {
            self.jwks_hits.load(Ordering::SeqCst)
        }

        fn settings(&self, required_scope: Option<&str>, min_refetch: Duration) -> Settings {
            Settings {
                providers: vec![ProviderSettings {
                    issuer: self.issuer.clone(),
                    client_id: "ftsd".into(),
                    client_secret: Secret::new("s3cret"),
                    required_scope: required_scope.map(str::to_string),
                    vo: None,
                }],
                authorized_audiences: vec!["fts".into()],
                jwks_cache: Duration::from_secs(86400),
                validate_offline: true,
                min_refetch,
            }
        }

        fn claims(&self, now: i64) -> Value {
            json!({"iss": self.issuer, "sub": "user-1", "aud": "fts", "iat": now - 5,
                   "nbf": now - 5, "exp": now + 600, "scope": "fts offline_access",
                   "wlcg.ver": "1.0", "wlcg.groups": ["/testvo"]})
        }
    }

    fn refused(reason: &str) -> Result<TokenAuth, TokenRefused> {
        Err(TokenRefused::Invalid(reason.to_string()))
    }

    fn outcome(r: Result<TokenAuth, TokenRefused>) -> Result<String, TokenRefused> {
        r.map(|a| a.subject)
    }

    #[tokio::test]
    async fn a_provider_is_discovered_and_its_tokens_accepted() {
        let key = TestKey::new("k1");
        let provider = FakeProvider::start(&[&key]).await;
        let oidc = Oidc::start(provider.settings(None, JWKS_MIN_REFETCH), &provider.anchors)
            .await
            .unwrap();
        assert_eq!(provider.hits(), 1, "keys fetched at start");
        let now = time_now();
        let auth = oidc
            .authenticate(&key.sign(&provider.claims(now)), now)
            .await
            .unwrap();
        assert_eq!(auth.issuer, provider.issuer);
        assert_eq!(auth.subject, "user-1");
        assert_eq!(
            auth.scopes,
            Some(vec!["fts".to_string(), "offline_access".to_string()])
        );
        assert_eq!(auth.groups, Some(vec!["/testvo".to_string()]));
        assert!(auth.wlcg_profile);
        // The cached keys serve the next token: no fetch.
        oidc.authenticate(&key.sign(&provider.claims(now)), now)
            .await
            .unwrap();
        assert_eq!(provider.hits(), 1);
        // A transfer token: no audience check, but the signature is.
        let mut claims = provider.claims(now);
        claims["aud"] = json!("https://storage.example");
        assert_eq!(
            oidc.check_transfer_token(&key.sign(&claims), now).await,
            Ok(())
        );
        let stranger = TestKey::new("k1");
        assert_eq!(
            oidc.check_transfer_token(&stranger.sign(&claims), now)
                .await,
            Err(Invalid::Signature)
        );
    }

    #[tokio::test]
    async fn unknown_issuers_and_missing_scopes_are_refused() {
        let key = TestKey::new("k1");
        let provider = FakeProvider::start(&[&key]).await;
        let oidc = Oidc::start(
            provider.settings(Some("fts.submit"), JWKS_MIN_REFETCH),
            &provider.anchors,
        )
        .await
        .unwrap();
        let now = time_now();
        let mut claims = provider.claims(now);
        claims["iss"] = json!("https://elsewhere.example/");
        assert_eq!(
            outcome(oidc.authenticate(&key.sign(&claims), now).await),
            outcome(refused("TokenProvider not supported"))
        );
        // Signed by the provider's key, but without the scope the provider requires.
        assert_eq!(
            outcome(
                oidc.authenticate(&key.sign(&provider.claims(now)), now)
                    .await
            ),
            outcome(refused(INVALID_CREDENTIALS))
        );
        let mut claims = provider.claims(now);
        claims["scope"] = json!("fts.submit offline_access");
        assert!(oidc.authenticate(&key.sign(&claims), now).await.is_ok());
        assert_eq!(
            outcome(oidc.authenticate("not-a-jwt", now).await),
            outcome(refused("Not enough segments"))
        );
    }

    #[tokio::test]
    async fn an_unknown_kid_makes_a_rate_limited_refetch() {
        let (old, new, never) = (TestKey::new("k1"), TestKey::new("k2"), TestKey::new("k3"));
        let provider = FakeProvider::start(&[&old]).await;
        let min_refetch = Duration::from_millis(400);
        let oidc = Oidc::start(provider.settings(None, min_refetch), &provider.anchors)
            .await
            .unwrap();
        assert_eq!(provider.hits(), 1);
        let now = time_now();
        // The provider rotates its key. Right after a fetch, an unknown kid does not make
        // another one (rate limit): refused.
        provider.publish(&[&old, &new]);
        let rotated = new.sign(&provider.claims(now));
        assert_eq!(
            outcome(oidc.authenticate(&rotated, now).await),
            outcome(refused(INVALID_CREDENTIALS))
        );
        assert_eq!(provider.hits(), 1);
        // Later, the unknown kid makes a fetch, which finds the new key.
        tokio::time::sleep(min_refetch + Duration::from_millis(50)).await;
        assert!(oidc.authenticate(&rotated, now).await.is_ok());
        assert_eq!(provider.hits(), 2);
        // Random kids right after cannot make more fetches.
        for _ in 0..5 {
            let forged = never.sign(&provider.claims(now));
            assert!(oidc.authenticate(&forged, now).await.is_err());
        }
        assert_eq!(provider.hits(), 2);
        // Known kids never do.
        tokio::time::sleep(min_refetch + Duration::from_millis(50)).await;
        assert!(oidc.authenticate(&rotated, now).await.is_ok());
        assert!(
            oidc.authenticate(&old.sign(&provider.claims(now)), now)
                .await
                .is_ok()
        );
        assert_eq!(provider.hits(), 2);
    }

    #[tokio::test]
    async fn an_unreachable_provider_is_not_fatal_and_retried() {
        let key = TestKey::new("k1");
        let provider = FakeProvider::start(&[&key]).await;
        // Nobody listens on the port of a dropped listener.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = dead.local_addr().unwrap().port();
        drop(dead);
        let mut settings = provider.settings(None, JWKS_MIN_REFETCH);
        settings.providers[0].issuer = format!("https://localhost:{port}/");
        let oidc = Oidc::start(settings, &provider.anchors).await.unwrap();
        let now = time_now();
        let mut claims = provider.claims(now);
        claims["iss"] = json!(format!("https://localhost:{port}/"));
        assert_eq!(
            outcome(oidc.authenticate(&key.sign(&claims), now).await),
            outcome(refused("TokenProvider not supported"))
        );
        assert!(oidc.is_configured_issuer(&format!("https://localhost:{port}")));
    }

    fn time_now() -> i64 {
        crate::model::time::now()
    }

    #[test]
    fn the_exchange_body_is_the_references() {
        assert_eq!(
            exchange_body("AT", "storage.read:/ fts", Some("https://a https://b")),
            "grant_type=urn:ietf:params:oauth:grant-type:token-exchange\
             &requested_token_type=urn:ietf:params:oauth:token-type:refresh_token\
             &subject_token_type=urn:ietf:params:oauth:token-type:access_token\
             &subject_token=AT&scope=storage.read:/ fts offline_access\
             &audience=https://a https://b"
        );
        assert_eq!(
            exchange_body("AT", "offline_access x", None),
            "grant_type=urn:ietf:params:oauth:grant-type:token-exchange\
             &requested_token_type=urn:ietf:params:oauth:token-type:refresh_token\
             &subject_token_type=urn:ietf:params:oauth:token-type:access_token\
             &subject_token=AT&scope=offline_access x"
        );
        assert_eq!(
            refresh_body("RT", "a b", Some("x")),
            "grant_type=refresh_token&refresh_token=RT&scope=a b&audience=x"
        );
        // What a form parser would misread is escaped; nothing else.
        assert_eq!(form_value("a+b&c=d%"), "a%2Bb%26c%3Dd%25");
    }

    #[test]
    fn keys_are_fetched_when_stale_or_a_kid_is_unknown_but_rate_limited() {
        let ttl = Duration::from_secs(86400);
        let t0 = Instant::now();
        let mut cache = KeyCache::default();
        assert!(
            cache.wants_fetch(None, t0, ttl, JWKS_MIN_REFETCH),
            "never fetched"
        );
        cache.attempted(t0);
        let key = validate::tests::TestKey::new("k1");
        cache.fetched(validate::tests::TestKey::jwks(&[&key]), t0);
        assert!(!cache.wants_fetch(Some("k1"), t0, ttl, JWKS_MIN_REFETCH));
        assert!(!cache.wants_fetch(None, t0 + Duration::from_secs(3600), ttl, JWKS_MIN_REFETCH));
        // An unknown kid right after a fetch: not yet (rate limit), then yes.
        assert!(!cache.wants_fetch(
            Some("k2"),
            t0 + Duration::from_secs(1),
            ttl,
            JWKS_MIN_REFETCH
        ));
        let later = t0 + JWKS_MIN_REFETCH;
        assert!(cache.wants_fetch(Some("k2"), later, ttl, JWKS_MIN_REFETCH));
        cache.attempted(later);
        assert!(!cache.wants_fetch(
            Some("k3"),
            later + Duration::from_secs(5),
            ttl,
            JWKS_MIN_REFETCH
        ));
        // Stale keys are fetched again.
        assert!(cache.wants_fetch(None, t0 + ttl + JWKS_MIN_REFETCH, ttl, JWKS_MIN_REFETCH));
    }
}
