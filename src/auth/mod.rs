//! Grid X.509 authentication: who is at the other end of a TLS connection.
//!
//! - `trust`: the CA directory (anchors and CRLs).
//! - `chain`: validation of user certificates and proxy chains (RFC 3820, GT3, legacy Globus).
//! - `voms`: VOMS attribute certificates inside proxies → FQANs.
//! - `signature`: signature checks shared by `chain` and `voms`.
//! - `dn`: OpenSSL slash-form distinguished names.
//! - `oidc`: OAuth2 / WLCG bearer tokens: trusted issuers, their keys, token validation, and
//!   the provider requests of the token daemon (exchange, refresh, introspection).
//!
//! The TLS layer calls [`Authenticator::verify`] during the handshake (refusing bad chains) and
//! [`Authenticator::identify`] once the connection is up, to get the [`CertIdentity`] the API
//! layer turns into an FTS3 user. Nothing here serves HTTP or touches the store; `oidc` is an
//! HTTPS client of the token providers.

pub mod chain;
pub mod dn;
pub mod oidc;
pub mod signature;
pub mod trust;
pub mod voms;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

pub use chain::{ChainVerifier, ProxyKind, VerifiedChain};
use signature::Algorithms;
use trust::TrustStore;
use voms::{AcVerifier, VomsDir};
use x509_parser::prelude::FromDer;

/// Errors of the authentication layer.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("trust store {path}: {reason}")]
    TrustStore { path: PathBuf, reason: String },
    #[error("vomsdir {path}: {reason}")]
    VomsDir { path: PathBuf, reason: String },
    #[error("{0}")]
    Chain(String),
}

/// What a verified client certificate chain says about the caller.
#[derive(Debug, Clone)]
pub struct CertIdentity {
    /// Subject of the end-entity (user) certificate, slash form.
    pub user_dn: String,
    /// Subject of the leaf certificate (a proxy, or the user certificate itself).
    pub client_dn: String,
    /// Issuer of the user certificate, slash form.
    pub user_issuer_dn: String,
    /// Proxy layers, leaf first.
    pub proxies: Vec<ProxyKind>,
    pub limited: bool,
    /// Earliest notAfter of the user certificate and proxies (unix seconds).
    pub not_after: i64,
    /// Size in bits of the leaf's RSA key (delegation requests use the same size).
    pub key_bits: Option<u32>,
    /// FQANs from verified VOMS attribute certificates, in order.
    pub fqans: Vec<String>,
    /// The chain as presented (DER, leaf first): `/whoami/certificate` returns it.
    pub chain: Arc<Vec<Vec<u8>>>,
}

/// Chain validation plus VOMS, configured once at start.
pub struct Authenticator {
    chains: ChainVerifier,
    vomsdir: VomsDir,
}

impl Authenticator {
    /// Load the CA directory and the vomsdir. A missing vomsdir is not fatal (no VO then
    /// verifies, and that is logged); a missing or empty CA directory is.
    pub fn load(
        ca_dir: &Path,
        voms_dir: &Path,
        algs: Algorithms,
    ) -> Result<Authenticator, AuthError> {
        let trust = TrustStore::load(ca_dir)?;
        let vomsdir = match VomsDir::load(voms_dir) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(dir = %voms_dir.display(), error = %e, "no usable vomsdir: VOMS attributes will be ignored");
                VomsDir::empty()
            }
        };
        Ok(Authenticator {
            chains: ChainVerifier::new(trust, algs),
            vomsdir,
        })
    }

    pub fn trust(&self) -> &TrustStore {
        self.chains.trust()
    }

    pub fn chains(&self) -> &ChainVerifier {
        &self.chains
    }

    /// The VOMS trust (for the fuzz targets, which drive the AC verifier directly).
    #[cfg(any(fuzzing, test))]
    pub(crate) fn vomsdir(&self) -> &VomsDir {
        &self.vomsdir
    }

    /// Handshake-time check: is this chain acceptable at all?
    pub fn verify(&self, chain: &[&[u8]], now: i64) -> Result<VerifiedChain, AuthError> {
        self.chains.verify(chain, now)
    }

    /// FQANs carried by a chain already validated by [`verify`](Self::verify).
    pub fn fqans(&self, chain: &[&[u8]], eec: usize, now: i64) -> Result<Vec<String>, AuthError> {
        let parsed = chain::parse_chain(chain)?;
        Ok(AcVerifier {
            vomsdir: &self.vomsdir,
            trust: self.chains.trust(),
            algs: self.chains.algorithms(),
        }
        .fqans_of_chain(&parsed, eec, now))
    }

    /// Full identity of a chain: validation again (a resumed TLS session skips the handshake
    /// check, and time may have passed), then names and VOMS attributes.
    pub fn identify(&self, chain: &[&[u8]], now: i64) -> Result<CertIdentity, AuthError> {
        if chain.len() > chain::MAX_CHAIN_LEN {
            return Err(AuthError::Chain("certificate chain too long".into()));
        }
        let parsed = chain::parse_chain(chain)?;
        let verified = self.chains.verify_parsed(chain, &parsed, now)?;
        let eec = &parsed[verified.eec];
        let fqans = AcVerifier {
            vomsdir: &self.vomsdir,
            trust: self.chains.trust(),
            algs: self.chains.algorithms(),
        }
        .fqans_of_chain(&parsed, verified.eec, now);
        Ok(CertIdentity {
            user_dn: dn::oneline(eec.subject()),
            client_dn: dn::oneline(parsed[0].subject()),
            user_issuer_dn: dn::oneline(eec.issuer()),
            proxies: verified.proxies,
            limited: verified.limited,
            not_after: verified.not_after,
            key_bits: rsa_key_bits(&parsed[0]),
            fqans,
            chain: Arc::new(chain.iter().map(|c| c.to_vec()).collect()),
        })
    }
}

/// Who a presented chain claims to be, for the log line of a refusal: the leaf's subject and
/// the issuer of the user certificate (the CA an operator would look for in `ca_dir`). `None`
/// for what does not parse.
pub fn chain_names(chain: &[&[u8]]) -> (Option<String>, Option<String>) {
    let parsed: Vec<_> = chain
        .iter()
        .map_while(|der| {
            x509_parser::certificate::X509Certificate::from_der(der)
                .ok()
                .map(|(_, c)| c)
        })
        .collect();
    let Some(leaf) = parsed.first() else {
        return (None, None);
    };
    let eec = chain::classify_chain(&parsed).map_or(0, |(eec, _)| eec);
    (
        Some(dn::oneline(leaf.subject())),
        parsed.get(eec).map(|c| dn::oneline(c.issuer())),
    )
}

/// RSA modulus size of a certificate's key, if it is RSA.
fn rsa_key_bits(cert: &x509_parser::certificate::X509Certificate<'_>) -> Option<u32> {
    match cert.public_key().parsed() {
        Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => u32::try_from(rsa.key_size()).ok(),
        _ => None,
    }
}
