//! The bearer tokens of one transfer: the source's and the destination's, as backends send
//! them to storage (`Authorization: Bearer …`, HTTP-TPC's `TransferHeaderAuthorization`,
//! gfal2's BEARER credentials), and their refresh before they expire (the reference's
//! url-copy `refreshExpiredAccessToken`, here an in-process call to the engine's token
//! service instead of a ZMQ request).
//!
//! Which token a request carries is decided by its URL: the source's URL gets the source
//! token, the destination's (and, for parent directories and clean-up, any other URL of the
//! destination's storage) the destination token, as gfal2 maps FTS's destination token to the
//! destination host.
//!
//! Tokens are [`Secret`]s: `Debug` shows ids only.

use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;

use crate::model::token::{Secret, payload_summary};

/// Which end of a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Destination,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Destination => "destination",
        }
    }
}

/// A current access token and its expiry, as the engine's token service hands it out.
#[derive(Debug, Clone)]
pub struct FreshToken {
    pub access_token: Secret,
    pub expiry: i64,
    /// The service had to ask the provider for it.
    pub refreshed: bool,
}

/// Where fresh tokens come from (the engine's token service).
pub trait Refresher: Send + Sync {
    /// The access token of `token_id` to use now, refreshed when it expires within the
    /// service's margin; the error says why none could be had.
    fn fresh<'a>(&'a self, token_id: &'a str) -> BoxFuture<'a, Result<FreshToken, String>>;
}

/// One side's token.
#[derive(Clone)]
pub struct Slot {
    pub token_id: String,
    pub value: Secret,
    pub expiry: i64,
    /// Used as given: never refreshed.
    pub unmanaged: bool,
}

/// The tokens of one transfer.
pub struct TransferTokens {
    source_url: String,
    destination_url: String,
    source: Mutex<Option<Slot>>,
    destination: Mutex<Option<Slot>>,
    refresher: Option<Arc<dyn Refresher>>,
    /// Seconds before expiry when a token is refreshed (`TokenRefreshMarginPeriod`).
    margin: i64,
}

impl std::fmt::Debug for TransferTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id = |slot: &Mutex<Option<Slot>>| {
            lock(slot)
                .as_ref()
                .map(|s| s.token_id.clone())
                .unwrap_or_default()
        };
        f.debug_struct("TransferTokens")
            .field("source", &id(&self.source))
            .field("destination", &id(&self.destination))
            .finish()
    }
}

fn lock(slot: &Mutex<Option<Slot>>) -> std::sync::MutexGuard<'_, Option<Slot>> {
    // A panic under this lock would be a bug in an assignment; keep the token.
    slot.lock().unwrap_or_else(|e| e.into_inner())
}

/// `scheme://host:port` of a URL, with `dav`/`davs` read as `http`/`https`, lower case.
fn authority(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "davs" => "https".to_string(),
        "dav" => "http".to_string(),
        other => other.to_string(),
    };
    let host = rest.split(['/', '?', '#']).next()?.to_ascii_lowercase();
    Some(format!("{scheme}://{host}"))
}

impl TransferTokens {
    pub fn new(
        source_url: &str,
        destination_url: &str,
        source: Option<Slot>,
        destination: Option<Slot>,
        refresher: Option<Arc<dyn Refresher>>,
        margin: i64,
    ) -> TransferTokens {
        TransferTokens {
            source_url: source_url.to_string(),
            destination_url: destination_url.to_string(),
            source: Mutex::new(source),
            destination: Mutex::new(destination),
            refresher,
            margin,
        }
    }

    fn slot(&self, side: Side) -> &Mutex<Option<Slot>> {
        match side {
            Side::Source => &self.source,
            Side::Destination => &self.destination,
        }
    }

    /// The source URL of the transfer.
    pub fn source_url(&self) -> &str {
        &self.source_url
    }

    /// The destination URL of the transfer.
    pub fn destination_url(&self) -> &str {
        &self.destination_url
    }

    /// The current token of `side`.
    pub fn token(&self, side: Side) -> Option<Secret> {
        lock(self.slot(side)).as_ref().map(|s| s.value.clone())
    }

    /// The token id and whether it is managed, for the transfer log.
    pub fn describe(&self, side: Side) -> Option<(String, String, bool)> {
        lock(self.slot(side)).as_ref().map(|s| {
            (
                s.token_id.clone(),
                payload_summary(s.value.expose()),
                s.unmanaged,
            )
        })
    }

    /// The side a request to `url` speaks for: the source's or destination's URL exactly,
    /// else a URL of the destination's storage, else of the source's.
    pub fn side_of(&self, url: &str) -> Option<Side> {
        if url == self.source_url {
            return Some(Side::Source);
        }
        if url == self.destination_url {
            return Some(Side::Destination);
        }
        let host = authority(url)?;
        if authority(&self.destination_url).as_ref() == Some(&host) {
            Some(Side::Destination)
        } else if authority(&self.source_url).as_ref() == Some(&host) {
            Some(Side::Source)
        } else {
            None
        }
    }

    /// The token a request to `url` carries.
    pub fn for_url(&self, url: &str) -> Option<Secret> {
        self.token(self.side_of(url)?)
    }

    /// Make `side`'s token good for at least the margin: a managed token expiring sooner is
    /// refreshed. `Ok(Some(summary))` when it was refreshed (its claims, for the log),
    /// `Ok(None)` when nothing was needed, `Err(why)` when no fresh token could be had.
    pub async fn ensure_fresh(&self, side: Side, now: i64) -> Result<Option<String>, String> {
        let (token_id, due) = match lock(self.slot(side)).as_ref() {
            None => return Ok(None),
            Some(s) => (
                s.token_id.clone(),
                !s.unmanaged && s.expiry - now < self.margin,
            ),
        };
        if !due {
            return Ok(None);
        }
        let Some(refresher) = &self.refresher else {
            return Err("no token service to refresh tokens".into());
        };
        let fresh = refresher.fresh(&token_id).await?;
        let summary = payload_summary(fresh.access_token.expose());
        if let Some(slot) = lock(self.slot(side)).as_mut() {
            slot.value = fresh.access_token;
            slot.expiry = fresh.expiry;
        }
        Ok(Some(summary))
    }

    /// Whether either side has a token.
    pub fn any(&self) -> bool {
        lock(&self.source).is_some() || lock(&self.destination).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counting(std::sync::atomic::AtomicUsize);

    impl Refresher for Counting {
        fn fresh<'a>(&'a self, token_id: &'a str) -> BoxFuture<'a, Result<FreshToken, String>> {
            Box::pin(async move {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if token_id == "broken" {
                    return Err("[invalid_grant]: refresh token expired".into());
                }
                Ok(FreshToken {
                    access_token: Secret::new("new-token"),
                    expiry: 2_000,
                    refreshed: true,
                })
            })
        }
    }

    fn slot(id: &str, value: &str, expiry: i64, unmanaged: bool) -> Slot {
        Slot {
            token_id: id.into(),
            value: Secret::new(value),
            expiry,
            unmanaged,
        }
    }

    #[test]
    fn urls_pick_their_sides_token() {
        let t = TransferTokens::new(
            "davs://a.example:8443/tok/f",
            "https://b.example/tok/dir/f",
            Some(slot("s", "SRC-SECRET", 100, false)),
            Some(slot("d", "DST-SECRET", 100, false)),
            None,
            300,
        );
        let tok = |u: &str| t.for_url(u).map(|s| s.expose().to_string());
        assert_eq!(
            tok("davs://a.example:8443/tok/f").as_deref(),
            Some("SRC-SECRET")
        );
        assert_eq!(
            tok("https://b.example/tok/dir/f").as_deref(),
            Some("DST-SECRET")
        );
        // MKCOL of a parent, and the wire form of a davs URL.
        assert_eq!(
            tok("https://b.example/tok/dir").as_deref(),
            Some("DST-SECRET")
        );
        assert_eq!(
            tok("https://A.example:8443/tok/f").as_deref(),
            Some("SRC-SECRET")
        );
        assert_eq!(tok("https://c.example/x"), None);
        let debug = format!("{t:?}");
        assert!(!debug.contains("SECRET"), "{debug}");
    }

    #[tokio::test]
    async fn only_managed_tokens_near_expiry_are_refreshed() {
        let counter = Arc::new(Counting(Default::default()));
        let t = TransferTokens::new(
            "https://a/f",
            "https://b/f",
            Some(slot("s", "old", 1_000, false)),
            Some(slot("d", "unmanaged", 1_000, true)),
            Some(counter.clone()),
            300,
        );
        // 400 s left: nothing to do.
        assert_eq!(t.ensure_fresh(Side::Source, 600).await, Ok(None));
        // 200 s left: refreshed.
        let refreshed = t.ensure_fresh(Side::Source, 800).await.unwrap();
        assert!(refreshed.is_some());
        assert_eq!(t.token(Side::Source).unwrap().expose(), "new-token");
        // Unmanaged: never, even expired.
        assert_eq!(t.ensure_fresh(Side::Destination, 5_000).await, Ok(None));
        assert_eq!(t.token(Side::Destination).unwrap().expose(), "unmanaged");
        assert_eq!(counter.0.load(std::sync::atomic::Ordering::SeqCst), 1);

        let broken = TransferTokens::new(
            "https://a/f",
            "https://b/f",
            Some(slot("broken", "old", 1_000, false)),
            None,
            Some(counter),
            300,
        );
        assert!(broken.ensure_fresh(Side::Source, 999).await.is_err());
    }
}
