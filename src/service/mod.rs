//! Use cases and authorization, one file per resource. Handlers in `api` call these with the
//! caller's [`User`]; this layer decides what the caller may do and talks to the store.

pub mod bans;
pub mod config;
pub mod delegation;
pub mod jobs;
pub mod metrics;
pub mod monitor;
pub mod optimizer;
pub mod whoami;

use std::{path::PathBuf, sync::Arc};

use crate::{
    auth::{Authenticator, CertIdentity},
    model::{
        identity::{CertificateFacts, RoleGrants, User},
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
            progress: settings.progress,
            monitoring: settings.monitoring,
            metrics: settings.metrics,
        }
    }

    /// This node's name, as the pages' footers show it.
    pub fn node_name(&self) -> &str {
        &self.host_name
    }

    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    /// The FTS3 user behind a connection: anonymous without a certificate, otherwise derived
    /// from the verified chain, the role configuration and the stored DN grants.
    pub async fn user(&self, peer: Option<&CertIdentity>) -> Result<User, ServiceError> {
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

/// Run blocking store work off the async runtime.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ServiceError> + Send + 'static,
) -> Result<T, ServiceError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ServiceError::Task(e.to_string()))?
}
