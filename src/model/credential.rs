//! Delegated credentials as the service and the engine see them: a pending request, a proxy to
//! store, its public facts, and the material to write a proxy file (private key included, kept
//! in zeroized memory).

use zeroize::Zeroizing;

/// A pending request as the service sees it (no key material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRequest {
    pub csr_pem: String,
    pub key_bits: u32,
    pub spki_der: Vec<u8>,
}

/// A validated proxy to store.
#[derive(Debug, Clone)]
pub struct NewCredential {
    pub proxy_pem: String,
    pub chain_pem: String,
    pub voms_attrs: Vec<String>,
    pub termination_time: i64,
    /// The pending key the proxy was validated against.
    pub spki_der: Vec<u8>,
}

/// What happened to a `store_credential`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOutcome {
    Stored,
    /// No pending request (never asked, or already used).
    NoPending,
    /// A new request replaced the one the proxy was made for.
    KeyChanged,
}

/// A delegated credential's public facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialInfo {
    pub termination_time: i64,
    pub voms_attrs: Vec<String>,
    pub delegated_at: i64,
}

/// Everything needed to write an X509_USER_PROXY file.
pub struct ProxyMaterial {
    pub proxy_pem: String,
    pub key_pem: Zeroizing<Vec<u8>>,
    pub chain_pem: String,
    pub termination_time: i64,
}
