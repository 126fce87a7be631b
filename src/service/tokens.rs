//! The token daemon's use cases (the reference's `fts_token`, `../shared/spec/tokens.md` §A.3):
//! exchanging the access tokens of new submissions for refresh tokens, releasing the files
//! that waited for them (TOKEN_PREP) or failing them with the reference's reason, and
//! refreshing an access token a transfer is about to use when it expires soon.
//!
//! Unmanaged tokens are never exchanged nor refreshed. Tokens never reach a log line: only
//! their ids do.
//!
//! Deviation: the reference also runs a refresh service that renews, in the background, the
//! access tokens of queued files once half their lifetime has passed. Here a token is refreshed
//! only when a transfer is about to use it and it expires within the margin (the reference's
//! url-copy check, done before every step of a transfer): a token that expired while its file
//! queued is refreshed with its refresh token when the transfer starts, with the same outcome
//! and without refreshing the tokens of files that never run.

use std::{
    collections::{BTreeMap, BTreeSet},
    hash::{Hash, Hasher},
    sync::Arc,
};

use futures_util::StreamExt;

use super::{ServiceError, SharedStore};
use crate::{
    auth::oidc::Oidc,
    model::{
        job::FileState,
        lifecycle::Failure,
        time,
        token::{Secret, TokenChange, TokenMaterial, msg},
        transfer::{Applied, Event},
    },
};

/// Files looked at per exchange pass (the reference's `TokenExchangeBulkSize`); a full pass is
/// followed by another at once.
pub const EXCHANGE_BULK: usize = 500;
/// Exchanges run at once in one pass: a burst of new submissions must not open hundreds of
/// connections to the provider, nor wait for them one by one.
pub const EXCHANGE_CONCURRENCY: usize = 8;
/// Refreshes of one token are serialised (the second caller finds the first one's result);
/// locks are striped over token ids so that the table stays bounded.
const REFRESH_LOCK_STRIPES: usize = 64;

/// What one exchange pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    /// Files that waited.
    pub waiting: usize,
    pub exchanged: usize,
    pub exchange_failures: usize,
    /// Files released from TOKEN_PREP.
    pub released: usize,
    /// Files failed for a failed exchange.
    pub failed: usize,
}

/// A token a transfer may use now.
#[derive(Debug, Clone)]
pub struct Fresh {
    pub access_token: Secret,
    pub expiry: i64,
    /// True when this call got it from the provider.
    pub refreshed: bool,
}

/// Exchange and refresh of stored transfer tokens.
pub struct Tokens {
    store: SharedStore,
    oidc: Arc<Oidc>,
    /// A token expiring within this many seconds is refreshed before use.
    margin: i64,
    locks: Vec<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("margin", &self.margin)
            .finish()
    }
}

impl Tokens {
    pub fn new(store: SharedStore, oidc: Arc<Oidc>, margin_seconds: u64) -> Tokens {
        Tokens {
            store,
            oidc,
            margin: i64::try_from(margin_seconds).unwrap_or(i64::MAX),
            locks: (0..REFRESH_LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }

    /// The refresh margin in seconds.
    pub fn margin(&self) -> i64 {
        self.margin
    }

    fn lock(&self, token_id: &str) -> &tokio::sync::Mutex<()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        token_id.hash(&mut h);
        &self.locks[(h.finish() as usize) % self.locks.len()]
    }

    /// A stored token with its secrets.
    pub async fn material(&self, token_id: &str) -> Result<Option<TokenMaterial>, ServiceError> {
        Ok(self.store.token(token_id).await?)
    }

    /// One pass of the exchange service over up to `limit` files in TOKEN_PREP: the managed
    /// tokens without a refresh token are exchanged, then each file whose tokens are all ready
    /// goes back to its submitted state and each file with a token whose exchange failed
    /// fails with `[TokenExchange] Failed to get refresh token for <side> token: <why>`.
    pub async fn exchange_pass(
        &self,
        limit: usize,
        host: &str,
    ) -> Result<(PassReport, Vec<Applied>), ServiceError> {
        let files = self
            .store
            .files_in_state(FileState::TokenPrep, limit)
            .await?;
        let mut report = PassReport {
            waiting: files.len(),
            ..PassReport::default()
        };
        if files.is_empty() {
            return Ok((report, Vec::new()));
        }
        let ids: BTreeSet<String> = files
            .iter()
            .flat_map(|(_, f)| [f.src_token_id.clone(), f.dst_token_id.clone()])
            .flatten()
            .collect();
        let mut ready: BTreeSet<String> = BTreeSet::new();
        let mut failed: BTreeMap<String, String> = BTreeMap::new();
        let mut pending: Vec<TokenMaterial> = Vec::new();
        for id in ids {
            match self.store.token(&id).await? {
                Some(t) if t.ready() => {
                    ready.insert(id);
                }
                Some(t) => pending.push(t),
                None => {
                    failed.insert(id, "The token is not known to this service".into());
                }
            }
        }
        let outcomes: Vec<(String, Result<(), String>)> =
            futures_util::stream::iter(pending.into_iter().map(|t| async move {
                let outcome = self.exchange_one(&t).await;
                (t.token_id.clone(), outcome)
            }))
            .buffer_unordered(EXCHANGE_CONCURRENCY)
            .collect()
            .await;
        for (id, outcome) in outcomes {
            match outcome {
                Ok(()) => {
                    report.exchanged += 1;
                    ready.insert(id);
                }
                Err(why) => {
                    report.exchange_failures += 1;
                    failed.insert(id, why);
                }
            }
        }
        let mut events = Vec::new();
        for (_, file) in &files {
            let src = file.src_token_id.as_deref();
            let dst = file.dst_token_id.as_deref();
            let failure = src
                .and_then(|id| failed.get(id).map(|m| (true, m)))
                .or_else(|| dst.and_then(|id| failed.get(id).map(|m| (false, m))));
            if let Some((source, message)) = failure {
                events.push(Event::TokensFailed {
                    file_id: file.file_id,
                    failure: Failure {
                        reason: msg::exchange_failed(source, message),
                        scope: if source { "SOURCE" } else { "DESTINATION" }.to_string(),
                        phase: "TRANSFER_PREPARATION".to_string(),
                        class: "BAD_ADDRESS".to_string(),
                        recoverable: false,
                        dst_file: None,
                    },
                });
                report.failed += 1;
            } else if [src, dst]
                .into_iter()
                .flatten()
                .all(|id| ready.contains(id))
            {
                events.push(Event::TokensReady {
                    file_id: file.file_id,
                });
                report.released += 1;
            }
        }
        let applied = if events.is_empty() {
            Vec::new()
        } else {
            self.store.apply_events(&events, host, time::now()).await?
        };
        for event in &events {
            if let Event::TokensFailed { file_id, failure } = event {
                tracing::info!(file_id, reason = %failure.reason, "file failed: token exchange");
            }
        }
        Ok((report, applied))
    }

    /// Exchange one token and record the outcome.
    async fn exchange_one(&self, token: &TokenMaterial) -> Result<(), String> {
        tracing::info!(token_id = %token.token_id, issuer = %token.issuer, expiry = token.expiry, "token exchange");
        let outcome = self
            .oidc
            .exchange(
                &token.issuer,
                &token.access_token,
                &token.scope,
                token.audience.as_deref(),
            )
            .await;
        let now = time::now();
        let change = match &outcome {
            Ok(grant) => match &grant.refresh_token {
                Some(refresh_token) => TokenChange::Exchanged {
                    access_token: grant.access_token.clone(),
                    refresh_token: refresh_token.clone(),
                    expiry: grant.expires_in.map_or(token.expiry, |s| now + s),
                },
                None => TokenChange::ExchangeFailed {
                    message: crate::auth::oidc::missing_key("refresh_token"),
                },
            },
            Err(why) => TokenChange::ExchangeFailed {
                message: why.clone(),
            },
        };
        let result = match &change {
            TokenChange::ExchangeFailed { message } => {
                tracing::warn!(token_id = %token.token_id, reason = %message, "token exchange failed");
                Err(message.clone())
            }
            _ => {
                tracing::info!(token_id = %token.token_id, "token exchanged for a refresh token");
                Ok(())
            }
        };
        self.store
            .update_token(&token.token_id, &change, now)
            .await
            .map_err(|e| format!("The exchanged token could not be stored: {e}"))?;
        result
    }

    /// The access token of `token_id` a transfer should use now: refreshed first when it
    /// expires within the margin and the token is managed. The error is why no usable token
    /// could be had (the transfer then fails as the reference's does).
    pub async fn fresh(&self, token_id: &str) -> Result<Fresh, String> {
        let _one = self.lock(token_id).lock().await;
        let token = self
            .store
            .token(token_id)
            .await
            .map_err(|e| format!("The token could not be read: {e}"))?
            .ok_or_else(|| "The token is not known to this service".to_string())?;
        let now = time::now();
        if token.unmanaged || token.expiry - now >= self.margin {
            return Ok(Fresh {
                access_token: token.access_token,
                expiry: token.expiry,
                refreshed: false,
            });
        }
        let Some(refresh_token) = &token.refresh_token else {
            return Err("The token has no refresh token".into());
        };
        tracing::info!(token_id, expiry = token.expiry, "token refresh");
        let outcome = self
            .oidc
            .refresh(
                &token.issuer,
                refresh_token,
                &token.access_token,
                &token.scope,
                token.audience.as_deref(),
            )
            .await;
        let now = time::now();
        match outcome {
            Ok(grant) => {
                let (Some(access_token), Some(expires_in)) = (grant.access_token, grant.expires_in)
                else {
                    return Err(crate::auth::oidc::missing_key("access_token"));
                };
                let expiry = now + expires_in;
                let change = TokenChange::Refreshed {
                    access_token: access_token.clone(),
                    refresh_token: grant.refresh_token,
                    expiry,
                };
                self.store
                    .update_token(token_id, &change, now)
                    .await
                    .map_err(|e| format!("The refreshed token could not be stored: {e}"))?;
                tracing::info!(token_id, expiry, "token refreshed");
                Ok(Fresh {
                    access_token,
                    expiry,
                    refreshed: true,
                })
            }
            Err(why) => {
                tracing::warn!(token_id, reason = %why, "token refresh failed");
                let change = TokenChange::RefreshFailed {
                    message: why.clone(),
                };
                if let Err(e) = self.store.update_token(token_id, &change, now).await {
                    tracing::warn!(token_id, error = %e, "could not record the refresh failure");
                }
                Err(why)
            }
        }
    }
}

/// The token-exchange worker (the reference's `TokenExchangeService`): a pass every
/// `interval`, at once when a submission leaves files in TOKEN_PREP (`wake`), until `stop`
/// turns true. Files it releases wake the scheduler (`released`).
pub async fn run_exchange(
    tokens: Arc<Tokens>,
    interval: std::time::Duration,
    wake: Arc<tokio::sync::Notify>,
    released: Arc<tokio::sync::Notify>,
    host: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        match tokens.exchange_pass(EXCHANGE_BULK, &host).await {
            Ok((report, _)) => {
                if report.released > 0 {
                    released.notify_one();
                }
                if report.waiting > 0 {
                    tracing::debug!(
                        waiting = report.waiting,
                        exchanged = report.exchanged,
                        failures = report.exchange_failures,
                        released = report.released,
                        failed = report.failed,
                        "token exchange pass"
                    );
                }
                // A full batch: more may wait.
                if report.waiting >= EXCHANGE_BULK {
                    continue;
                }
            }
            Err(e) => tracing::warn!(error = %e, "token exchange pass failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = wake.notified() => {}
            _ = stop.changed() => {}
        }
    }
}
