//! Use cases and authorization, one file per resource. Handlers in `api` call these with the
//! caller's [`User`]; this layer decides what the caller may do and talks to the store.

pub mod delegation;
pub mod whoami;

use std::{path::PathBuf, sync::Arc};

use crate::{
    auth::{Authenticator, CertIdentity},
    model::identity::{CertificateFacts, RoleGrants, User},
    store::{Store, StoreError},
};

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
    Io(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("background task failed: {0}")]
    Task(String),
}

/// Shared state of the use cases.
pub struct Service {
    store: Arc<Store>,
    auth: Arc<Authenticator>,
    roles: RoleGrants,
    /// DN of the server's own certificate: a client presenting it is root.
    server_dn: String,
    /// Where proxy files for transfers are written (0700, emptied at start).
    proxy_dir: PathBuf,
}

impl Service {
    pub fn new(
        store: Arc<Store>,
        auth: Arc<Authenticator>,
        roles: RoleGrants,
        server_dn: String,
        proxy_dir: PathBuf,
    ) -> Service {
        Service {
            store,
            auth,
            roles,
            server_dn,
            proxy_dir,
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The FTS3 user behind a connection: anonymous without a certificate, otherwise derived
    /// from the verified chain, the role configuration and the stored DN grants.
    pub fn user(&self, peer: Option<&CertIdentity>) -> Result<User, ServiceError> {
        let Some(peer) = peer else {
            return Ok(User::anonymous());
        };
        let dn_grants = self.store.dn_grants(&peer.user_dn)?;
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
