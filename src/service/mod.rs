//! Use cases and authorization, one file per resource. Handlers in `api` call these with the
//! caller's [`User`]; this layer decides what the caller may do and talks to the store.

pub mod admission;
pub mod bans;
pub mod config;
pub mod delegation;
pub mod jobs;
pub mod metrics;
pub mod monitor;
pub mod optimizer;
pub mod query;
pub mod tokens;
pub mod whoami;

use std::{path::PathBuf, sync::Arc};

use crate::{
    auth::{
        Authenticator, CertIdentity,
        oidc::{Oidc, TokenRefused},
    },
    model::{
        identity::{CertificateFacts, RoleGrants, TokenFacts, User},
        submit::SubmitConfig,
    },
    store::{Store, StoreError},
};

/// The store as the service holds it.
pub type SharedStore = Arc<dyn Store>;

/// Errors of the service layer; `api::error` alone turns them into HTTP statuses.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotImplemented(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    /// The caller must (re-)delegate a credential first (HTTP 419 for the FTS3 clients).
    #[error("{0}")]
    NeedDelegation(String),
    #[error("{0}")]
    Io(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("background task failed: {0}")]
    Task(String),
}

/// A request body parsed at the edge (`api`) into a typed request, or the 400 the reference
/// gives for it. Use cases report the refusal after checking the caller's rights, in the
/// reference's order.
pub type Parsed<T> = Result<T, ServiceError>;

/// Shared state of the use cases.
pub struct Service {
    store: SharedStore,
    auth: Arc<Authenticator>,
    roles: RoleGrants,
    /// DN of the server's own certificate: a client presenting it is root.
    server_dn: String,
    /// Where proxy files for transfers are written (0700, emptied at start).
    proxy_dir: PathBuf,
    /// This node's name (`node_name`), recorded as `submit_host`.
    host_name: String,
    submit_config: SubmitConfig,
    /// Woken after every stored submission.
    wake: Arc<tokio::sync::Notify>,
    /// The token providers (`None`: bearer tokens are refused).
    oidc: Option<Arc<Oidc>>,
    /// Woken after a submission whose files wait for a token exchange.
    token_wake: Arc<tokio::sync::Notify>,
    /// Running transfers' progress (written by the engine).
    progress: Arc<monitor::ProgressBoard>,
    monitoring: monitor::MonitoringSettings,
    metrics: Arc<metrics::Metrics>,
}

/// What the service is configured with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub roles: RoleGrants,
    pub server_dn: String,
    pub proxy_dir: PathBuf,
    pub host_name: String,
    pub submit: SubmitConfig,
    /// Woken after every stored submission: the transfer engine's scheduler waits on it.
    pub wake: Arc<tokio::sync::Notify>,
    /// The token providers; `None` when none is configured.
    pub oidc: Option<Arc<Oidc>>,
    /// Woken after a submission whose files wait in TOKEN_PREP: the token exchange waits on it.
    pub token_wake: Arc<tokio::sync::Notify>,
    /// Running transfers' progress, shared with the engine.
    pub progress: Arc<monitor::ProgressBoard>,
    pub monitoring: monitor::MonitoringSettings,
    /// Process metrics (HTTP, scheduler), shared with the server and the engine.
    pub metrics: Arc<metrics::Metrics>,
}

impl Settings {
    /// Defaults for tools and tests: reference roles and submission rules.
    pub fn new(server_dn: String, proxy_dir: PathBuf) -> Settings {
        Settings {
            roles: RoleGrants::reference_default(),
            server_dn,
            proxy_dir,
            host_name: host_name(),
            submit: SubmitConfig::default(),
            wake: Arc::new(tokio::sync::Notify::new()),
            oidc: None,
            token_wake: Arc::new(tokio::sync::Notify::new()),
            progress: Arc::default(),
            monitoring: monitor::MonitoringSettings::default(),
            metrics: Arc::default(),
        }
    }
}

/// This machine's name as the kernel knows it: the default `node_name`.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

impl Service {
    /// The URL schemes this instance transfers (sorted), `None` when it runs no transfers.
    pub fn schemes(&self) -> Option<&[String]> {
        self.submit_config.schemes.as_deref()
    }

    /// The service over `store`.
    pub fn new(store: SharedStore, auth: Arc<Authenticator>, settings: Settings) -> Service {
        Service {
            store,
            auth,
            roles: settings.roles,
            server_dn: settings.server_dn,
            proxy_dir: settings.proxy_dir,
            host_name: settings.host_name,
            submit_config: settings.submit,
            wake: settings.wake,
            oidc: settings.oidc,
            token_wake: settings.token_wake,
            progress: settings.progress,
            monitoring: settings.monitoring,
            metrics: settings.metrics,
        }
    }

    /// The token providers, when configured.
    pub fn oidc(&self) -> Option<&Arc<Oidc>> {
        self.oidc.as_ref()
    }

    /// This node's name, as the pages' footers show it.
    pub fn node_name(&self) -> &str {
        &self.host_name
    }

    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    /// The FTS3 user behind a request: the bearer token's holder when the request has an
    /// `Authorization: Bearer` header, else the certificate's, else anonymous; derived with the
    /// role configuration and the stored DN grants.
    ///
    /// A token wins over a certificate on the same request, as in the reference (its oauth2
    /// method is tried before the certificate methods). A token that fails after it was read
    /// (expired by now, issuer not configured, required scope missing) is the reference's 403
    /// `Invalid credentials (Invalid OAuth2 credentials)`.
    ///
    /// Deviation: a token that fails earlier (not a JWT, unknown issuer, a claim, the
    /// signature) is refused with 403 `Invalid credentials (<reason>)`, as the spec reads the
    /// reference (tokens.md §A.2). fts-rest-flask 3.13.4's `do_authentication` instead returns
    /// "not this method" for those (its issuer is still unset), so the request silently goes
    /// on as the certificate's holder or as anonymous. A client that sent a token learns why
    /// it was not accepted instead of acting as someone else.
    pub async fn user(
        &self,
        peer: Option<&CertIdentity>,
        authorization: Option<&str>,
    ) -> Result<User, ServiceError> {
        if let Some(token) = bearer_token(authorization) {
            return self.token_user(token).await;
        }
        let dn = peer.map_or(crate::model::identity::ANONYMOUS_DN, |p| p.user_dn.as_str());
        // One store read per request: the ban and the grants.
        let access = self.store.access(dn).await?;
        // The reference refuses banned DNs in its authentication middleware, with an HTML page;
        // the Python client reads either shape, so the usual JSON error is given here, where
        // every handler that identifies its caller passes.
        if access.banned {
            return Err(ServiceError::Forbidden("The user has been banned".into()));
        }
        let Some(peer) = peer else {
            return Ok(User::anonymous());
        };
        let dn_grants = access.grants;
        Ok(User::from_certificate(
            &CertificateFacts {
                user_dn: &peer.user_dn,
                fqans: &peer.fqans,
                is_root: peer.user_dn == self.server_dn,
                dn_grants: &dn_grants,
            },
            &self.roles,
        ))
    }
}

impl Service {
    async fn token_user(&self, token: &str) -> Result<User, ServiceError> {
        let Some(oidc) = &self.oidc else {
            return Err(ServiceError::BadRequest(
                "Unsupported authentication method: method=OAuth2".into(),
            ));
        };
        let auth = oidc
            .authenticate(token, crate::model::time::now())
            .await
            .map_err(|refused| match refused {
                TokenRefused::Disabled => ServiceError::BadRequest(
                    "Unsupported authentication method: method=OAuth2".into(),
                ),
                TokenRefused::Invalid(reason) => {
                    tracing::info!(reason = %reason, token_id = %crate::model::token::token_id(token), "bearer token refused");
                    ServiceError::Forbidden(format!("Invalid credentials ({reason})"))
                }
            })?;
        let access = self.store.access(&auth.subject).await?;
        if access.banned {
            return Err(ServiceError::Forbidden("The user has been banned".into()));
        }
        Ok(User::from_token(
            &TokenFacts {
                issuer: &auth.issuer,
                subject: &auth.subject,
                scopes: auth.scopes.as_deref(),
                groups: auth.groups.as_deref(),
                wlcg_profile: auth.wlcg_profile,
                provider_vo: auth.vo.as_deref(),
                dn_grants: &access.grants,
            },
            &self.roles,
        ))
    }
}

/// The token of an `Authorization` header, as the reference reads it: white-space separated,
/// the first word exactly `Bearer`, the token the second. Other schemes are ignored.
pub fn bearer_token(authorization: Option<&str>) -> Option<&str> {
    let mut words = authorization?.split_whitespace();
    match (words.next(), words.next()) {
        (Some("Bearer"), Some(token)) => Some(token),
        _ => None,
    }
}

/// Run blocking store work off the async runtime.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ServiceError> + Send + 'static,
) -> Result<T, ServiceError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ServiceError::Task(e.to_string()))?
}
