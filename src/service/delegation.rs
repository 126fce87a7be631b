//! GridSite-style credential delegation (§3.2 of the API spec, §3.1 of the clients spec):
//! the client asks for a certificate request, signs a proxy for its key with its own
//! credential and uploads it with its chain; ftsd keeps the proxy and the key (sealed) so
//! transfers can run as the user.
//!
//! Checks on upload, in the reference's order and with its messages, then ftsd's own: the
//! whole chain validates with the TLS layer's rules and belongs to the caller. A delegated proxy
//! lives until the earliest notAfter of its chain; one that has already expired is stored all
//! the same (201), as the reference does, and submissions then answer 419.

use std::{
    fs,
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Arc,
};

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData, RsaKeySize};
use rustls_pki_types::{CertificateDer, pem::PemObject};
use x509_parser::{certificate::X509Certificate, prelude::FromDer};
use zeroize::Zeroizing;

use super::{Service, ServiceError, blocking};
use crate::{
    auth::{chain, dn, signature},
    model::credential::{NewCredential, PendingRequest, StoreOutcome},
    model::{
        identity::{AuthMethod, User},
        time,
    },
};

/// Largest credential upload accepted: a proxy plus a long chain with VOMS ACs is ~10 KiB.
pub const MAX_CREDENTIAL_BODY: usize = 256 * 1024;
/// Delegation key size when the caller's key size is unknown (the reference's default).
pub const DEFAULT_KEY_BITS: u32 = 2048;

const MISMATCH: &str = "The requested ID and the credentials ID do not match";
const PROXY_ERROR: &str = "Could not process the proxy: ";

/// What `GET /delegation/{id}` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegationView {
    pub termination_time: String,
    pub voms_attrs: Vec<String>,
}

/// The caller must hold a certificate and ask about their own delegation id.
fn check_owner(user: &User, dlg_id: &str, certificate_required: bool) -> Result<(), ServiceError> {
    if certificate_required && user.method != AuthMethod::Certificate {
        return Err(ServiceError::Forbidden("Certificate required".into()));
    }
    if user.delegation_id.as_deref() != Some(dlg_id) {
        return Err(ServiceError::Forbidden(MISMATCH.into()));
    }
    Ok(())
}

/// RSA sizes we generate: the caller's size rounded up to one aws-lc-rs supports.
fn key_size(bits: u32) -> (RsaKeySize, u32) {
    match bits {
        0..=2048 => (RsaKeySize::_2048, 2048),
        2049..=3072 => (RsaKeySize::_3072, 3072),
        _ => (RsaKeySize::_4096, 4096),
    }
}

/// A new key and its PKCS#10 request (subject `O=Dummy`, SHA-256, as the reference).
fn new_request(bits: RsaKeySize) -> Result<(PendingRequest, Zeroizing<String>), String> {
    let key = KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, bits)
        .map_err(|e| format!("key generation: {e}"))?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "Dummy");
    params.distinguished_name = name;
    let csr = params
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(|e| format!("certificate request: {e}"))?;
    let key_bits = match bits {
        RsaKeySize::_2048 => 2048,
        RsaKeySize::_3072 => 3072,
        _ => 4096,
    };
    Ok((
        PendingRequest {
            csr_pem: csr,
            key_bits,
            spki_der: key.subject_public_key_info(),
        },
        Zeroizing::new(key.serialize_pem()),
    ))
}

/// M2Crypto's `X509_Name.as_text()` form used in the reference's messages: `DC=org, CN=x`.
fn name_text(name: &x509_parser::x509::X509Name<'_>) -> String {
    dn::oneline(name)
        .split('/')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(", ")
}

fn pem_of(der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new("CERTIFICATE", der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

impl Service {
    /// `GET /delegation/{id}`: the credential's expiry and VOMS attributes, or `None`.
    pub async fn delegation_view(
        &self,
        user: &User,
        dlg_id: &str,
    ) -> Result<Option<DelegationView>, ServiceError> {
        check_owner(user, dlg_id, false)?;
        Ok(self
            .store
            .credential(dlg_id, &user.user_dn)
            .await?
            .map(|c| DelegationView {
                termination_time: time::fts_datetime(c.termination_time),
                voms_attrs: c.voms_attrs,
            }))
    }

    /// `GET /delegation/{id}/request`: the pending request, reused if its key has the size the
    /// caller's key has, otherwise a new one (generated off the async runtime).
    pub async fn delegation_request(
        &self,
        user: &User,
        caller_key_bits: Option<u32>,
        dlg_id: &str,
    ) -> Result<String, ServiceError> {
        check_owner(user, dlg_id, true)?;
        let (size, bits) = key_size(caller_key_bits.unwrap_or(DEFAULT_KEY_BITS));
        let dn = &user.user_dn;
        if let Some(pending) = self.store.pending_request(dlg_id, dn).await? {
            if pending.key_bits == bits {
                return Ok(pending.csr_pem);
            }
        }
        // Key generation takes tens of milliseconds of CPU: off the runtime threads.
        let (request, key_pem) =
            blocking(move || new_request(size).map_err(ServiceError::Task)).await?;
        self.store
            .save_pending_request(dlg_id, dn, &request, key_pem.as_bytes(), time::now())
            .await?;
        tracing::info!(dlg_id = %dlg_id, bits, "new delegation request");
        Ok(request.csr_pem)
    }

    /// `PUT /delegation/{id}/credential`: validate and store the delegated proxy.
    pub async fn delegation_put(
        self: &Arc<Self>,
        user: &User,
        dlg_id: &str,
        body: Vec<u8>,
    ) -> Result<(), ServiceError> {
        check_owner(user, dlg_id, true)?;
        let pending = self
            .store
            .pending_request(dlg_id, &user.user_dn)
            .await?
            .ok_or_else(|| ServiceError::BadRequest("No credential cache found".into()))?;
        // Chain verification (signatures, VOMS) is CPU work: off the runtime threads.
        let service = self.clone();
        let dn = user.user_dn.clone();
        let new = blocking(move || {
            service
                .validate_upload(&body, &pending, &dn)
                .map_err(|reason| ServiceError::BadRequest(format!("{PROXY_ERROR}{reason}")))
        })
        .await?;
        match self
            .store
            .store_credential(dlg_id, &user.user_dn, &new, time::now())
            .await?
        {
            StoreOutcome::Stored => {
                tracing::info!(dlg_id = %dlg_id, termination = %time::fts_datetime(new.termination_time), "credential delegated");
                Ok(())
            }
            StoreOutcome::NoPending => {
                Err(ServiceError::BadRequest("No credential cache found".into()))
            }
            StoreOutcome::KeyChanged => Err(ServiceError::BadRequest(format!(
                "{PROXY_ERROR}The proxy does not match the stored associated private key"
            ))),
        }
    }

    /// The checks of an uploaded chain. Errors are the text after "Could not process the proxy: ".
    fn validate_upload(
        &self,
        body: &[u8],
        pending: &PendingRequest,
        caller_dn: &str,
    ) -> Result<NewCredential, String> {
        const MALFORMED: &str = "Malformed proxy";
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(body)
            .collect::<Result<_, _>>()
            .map_err(|_| MALFORMED.to_string())?;
        if certs.len() < 2 {
            return Err(MALFORMED.into());
        }
        if certs.len() > chain::MAX_CHAIN_LEN {
            return Err(format!(
                "chain longer than {} certificates",
                chain::MAX_CHAIN_LEN
            ));
        }
        let parsed: Vec<X509Certificate<'_>> = certs
            .iter()
            .map(|c| X509Certificate::from_der(c.as_ref()).map(|(_, x)| x))
            .collect::<Result<_, _>>()
            .map_err(|_| MALFORMED.to_string())?;
        let (proxy, issuer) = (&parsed[0], &parsed[1]);
        if proxy.public_key().raw != pending.spki_der.as_slice() {
            return Err("The proxy does not match the stored associated private key".into());
        }
        let parts =
            signature::split_signed(certs[0].as_ref()).map_err(|_| MALFORMED.to_string())?;
        signature::verify_signed(
            self.auth.chains().algorithms(),
            &parts,
            issuer.public_key().raw,
        )
        .map_err(|_| {
            "Failed to verify the proxy, maybe signed with the wrong private key?".to_string()
        })?;
        if !chain::name_extends(proxy.subject(), proxy.issuer()) {
            return Err(format!(
                "The subject and the issuer of the proxy do not match: {} != {}",
                name_text(proxy.subject()),
                name_text(proxy.issuer())
            ));
        }
        if !chain::last_rdn_is_cn(proxy.subject()) {
            return Err("Missing trailing Common Name in the proxy".into());
        }
        // Beyond the reference: the chain must be one the TLS layer would accept, for the caller.
        // An expired chain is checked as of its last valid second and stored, as the reference
        // stores it: the next submission then gets its 419 "The delegated credentials expired
        // ... ago", the answer clients know how to handle (they delegate again).
        let termination_time = parsed
            .iter()
            .map(|c| c.validity().not_after.timestamp())
            .min()
            .unwrap_or(0);
        let at = time::now().min(termination_time);
        let ders: Vec<&[u8]> = certs.iter().map(|c| c.as_ref()).collect();
        let verified = self.auth.verify(&ders, at).map_err(|e| e.to_string())?;
        let owner = dn::oneline(parsed[verified.eec].subject());
        if owner != caller_dn {
            return Err(format!(
                "the delegated chain belongs to {owner}, not to the caller {caller_dn}"
            ));
        }
        let voms_attrs = self
            .auth
            .fqans(&ders, verified.eec, at)
            .map_err(|e| e.to_string())?;
        Ok(NewCredential {
            proxy_pem: pem_of(certs[0].as_ref()),
            chain_pem: certs[1..].iter().map(|c| pem_of(c.as_ref())).collect(),
            voms_attrs,
            termination_time,
            spki_der: pending.spki_der.clone(),
        })
    }

    /// `DELETE /delegation/{id}`.
    pub async fn delegation_delete(&self, user: &User, dlg_id: &str) -> Result<(), ServiceError> {
        check_owner(user, dlg_id, true)?;
        if self.store.delete_credential(dlg_id, &user.user_dn).await? {
            tracing::info!(dlg_id = %dlg_id, "delegated credential deleted");
            Ok(())
        } else {
            Err(ServiceError::NotFound(
                "Delegated credentials not found".into(),
            ))
        }
    }

    /// `POST /delegation/{id}/voms`: needs `voms-proxy-init` and a reachable VOMS server,
    /// which an appliance does not have; say so instead of a bare 404.
    pub fn delegation_voms(&self, user: &User, dlg_id: &str) -> Result<(), ServiceError> {
        check_owner(user, dlg_id, true)?;
        Err(ServiceError::NotImplemented(
            "Adding VOMS extensions to a delegated proxy is not supported by ftsd: \
             delegate from a VOMS proxy instead (voms-proxy-init --voms <vo>, then delegate)"
                .into(),
        ))
    }

    /// A proxy file for `(dlg_id, dn)` in the X509_USER_PROXY layout (proxy, key, chain),
    /// written 0600 in the runtime directory and removed when the returned handle is dropped.
    pub async fn proxy_file(
        &self,
        dlg_id: &str,
        dn: &str,
    ) -> Result<Option<ProxyFile>, ServiceError> {
        let Some(material) = self.store.credential_material(dlg_id, dn).await? else {
            return Ok(None);
        };
        let mut contents = Zeroizing::new(Vec::with_capacity(
            material.proxy_pem.len() + material.key_pem.len() + material.chain_pem.len(),
        ));
        contents.extend_from_slice(material.proxy_pem.as_bytes());
        contents.extend_from_slice(&material.key_pem);
        contents.extend_from_slice(material.chain_pem.as_bytes());
        let mut nonce = [0u8; 8];
        aws_lc_rs::rand::fill(&mut nonce)
            .map_err(|_| ServiceError::Task("no randomness".into()))?;
        let name: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
        let path = self.proxy_dir.join(format!("x509up_{dlg_id}_{name}"));
        let io = |e: std::io::Error| ServiceError::Io(format!("{}: {e}", path.display()));
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        file.write_all(&contents).map_err(io)?;
        Ok(Some(ProxyFile {
            path,
            termination_time: material.termination_time,
        }))
    }
}

/// Prepare the directory for proxy files: 0700, and empty (files left by a crash are removed).
pub fn prepare_proxy_dir(dir: &Path) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() {
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// A proxy file on disk; removed on drop.
#[derive(Debug)]
pub struct ProxyFile {
    path: PathBuf,
    pub termination_time: i64,
}

impl ProxyFile {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ProxyFile {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove a proxy file");
        }
    }
}

/// `[]` instead of `null` for "nothing delegated" for clients from 3.12 on (User-Agent
/// `fts-<something>/<major>.<minor>...`), as the reference does (FTS-1734).
pub fn empty_view_is_list(user_agent: Option<&str>) -> bool {
    let Some(ua) = user_agent else { return false };
    let Some(rest) = ua.strip_prefix("fts-") else {
        return false;
    };
    let Some((name, version)) = rest.split_once('/') else {
        return false;
    };
    if name.is_empty() {
        return false;
    }
    let mut parts = version.split('.');
    let major = parts.next().and_then(|p| p.parse::<u32>().ok());
    let minor = parts
        .next()
        .map(|p| {
            p.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|p| p.parse::<u32>().ok());
    matches!((major, minor), (Some(major), Some(minor)) if (major, minor) >= (3, 12))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agent_decides_null_or_empty_list() {
        assert!(empty_view_is_list(Some("fts-python-bindings/3.13.4")));
        assert!(empty_view_is_list(Some("fts-rest-cli/3.12.0")));
        assert!(empty_view_is_list(Some("fts-rest-cli/4.0")));
        assert!(!empty_view_is_list(Some("fts-rest-cli/3.11.2")));
        assert!(!empty_view_is_list(Some("curl/8.0")));
        assert!(!empty_view_is_list(Some("fts-/3.13")));
        assert!(!empty_view_is_list(None));
    }

    #[test]
    fn key_sizes_round_up() {
        assert_eq!(key_size(1024).1, 2048);
        assert_eq!(key_size(2048).1, 2048);
        assert_eq!(key_size(3072).1, 3072);
        assert_eq!(key_size(8192).1, 4096);
    }
}
