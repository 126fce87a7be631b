//! rustls configuration: the host credential and a client-certificate verifier that accepts
//! grid proxies by delegating chain validation to `auth`.
//!
//! Client certificates are optional at the TLS level (endpoints decide, e.g. whoami answers
//! anonymous callers); a chain that *is* presented and fails validation aborts the handshake.
//! The handshake signature is checked against the leaf's raw public key because webpki cannot
//! parse proxy certificates.

use std::{path::Path, sync::Arc};

use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error as TlsError, OtherError,
    ServerConfig, SignatureScheme,
    client::danger::HandshakeSignatureValid,
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
    pki_types::{CertificateDer, PrivateKeyDer, SubjectPublicKeyInfoDer, UnixTime, pem::PemObject},
    server::danger::{ClientCertVerified, ClientCertVerifier},
};
use x509_parser::prelude::FromDer;

use super::ServerError;
use crate::auth::{Authenticator, dn};

/// The process-wide crypto provider (aws-lc-rs).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Verifies client chains with the grid rules of `auth`.
pub struct GridClientVerifier {
    auth: Arc<Authenticator>,
    algs: WebPkiSupportedAlgorithms,
    hints: Vec<DistinguishedName>,
}

impl std::fmt::Debug for GridClientVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GridClientVerifier")
            .field("trust", self.auth.trust())
            .finish()
    }
}

impl GridClientVerifier {
    pub fn new(auth: Arc<Authenticator>, provider: &CryptoProvider) -> GridClientVerifier {
        let hints = auth
            .trust()
            .anchors()
            .iter()
            .map(|a| DistinguishedName::in_sequence(a.subject.as_ref()))
            .collect();
        GridClientVerifier {
            auth,
            algs: provider.signature_verification_algorithms,
            hints,
        }
    }

    fn leaf_spki<'a>(
        cert: &'a CertificateDer<'_>,
    ) -> Result<SubjectPublicKeyInfoDer<'a>, TlsError> {
        let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(cert.as_ref())
            .map_err(|_| TlsError::InvalidCertificate(CertificateError::BadEncoding))?;
        Ok(SubjectPublicKeyInfoDer::from(
            parsed.tbs_certificate.subject_pki.raw,
        ))
    }
}

impl ClientCertVerifier for GridClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, TlsError> {
        let mut chain: Vec<&[u8]> = Vec::with_capacity(1 + intermediates.len());
        chain.push(end_entity.as_ref());
        chain.extend(intermediates.iter().map(|c| c.as_ref()));
        match self.auth.verify(&chain, now.as_secs() as i64) {
            Ok(_) => Ok(ClientCertVerified::assertion()),
            Err(e) => {
                let (subject, issuer) = crate::auth::chain_names(&chain);
                let unknown = || "(unreadable)".to_string();
                tracing::info!(
                    subject = ?subject.unwrap_or_else(unknown),
                    issuer = ?issuer.unwrap_or_else(unknown),
                    reason = %e,
                    "client certificate refused"
                );
                Err(TlsError::InvalidCertificate(CertificateError::Other(
                    OtherError(Arc::new(e)),
                )))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        let spki = Self::leaf_spki(cert)?;
        let key = webpki::RawPublicKeyEntity::try_from(&spki)
            .map_err(|_| TlsError::InvalidCertificate(CertificateError::BadEncoding))?;
        for (scheme, algs) in self.algs.mapping {
            if *scheme != dss.scheme {
                continue;
            }
            for alg in *algs {
                if key.verify_signature(*alg, message, dss.signature()).is_ok() {
                    return Ok(HandshakeSignatureValid::assertion());
                }
            }
        }
        Err(TlsError::InvalidCertificate(CertificateError::BadSignature))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        let spki = Self::leaf_spki(cert)?;
        rustls::crypto::verify_tls13_signature_with_raw_key(message, &spki, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// The host credential: certificate chain, key, and the DN of the certificate (root's DN).
pub struct HostCredential {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub dn: String,
}

impl HostCredential {
    pub fn load(cert: &Path, key: &Path) -> Result<HostCredential, ServerError> {
        let err = |field, path: &Path, e: &dyn std::fmt::Display| ServerError::HostCredential {
            field,
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let cert_err = |e: &dyn std::fmt::Display| err("host_cert", cert, e);
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(|e| cert_err(&e))?
            .collect::<Result<_, _>>()
            .map_err(|e| cert_err(&e))?;
        let first = chain
            .first()
            .ok_or_else(|| cert_err(&"no certificate in the file"))?;
        let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(first.as_ref())
            .map_err(|e| cert_err(&e))?;
        let dn = dn::oneline(parsed.subject());
        let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| err("host_key", key, &e))?;
        // The same words as `ftsd check-config`, rather than rustls' "keys may not be
        // consistent: KeyMismatch" later.
        match key_matches_certificate(first.as_ref(), key_der.clone_key()) {
            Ok(Some(false)) => {
                return Err(err(
                    "host_key",
                    key,
                    &format!("not the key of host_cert {}", cert.display()),
                ));
            }
            Err(reason) => {
                return Err(err(
                    "host_key",
                    key,
                    &format!("unusable private key: {reason}"),
                ));
            }
            Ok(_) => {}
        }
        let key = key_der;
        Ok(HostCredential { chain, key, dn })
    }
}

/// Whether `key` is the private key of the certificate `cert` (DER): `Ok(Some(true))` if it
/// is, `Ok(Some(false))` if not, `Ok(None)` when the provider cannot tell (no public key derived
/// from that kind of key), `Err` with the reason when the key is unusable. For
/// `ftsd check-config`: a mismatch otherwise only shows as a TLS configuration error at start.
pub fn key_matches_certificate(
    cert: &[u8],
    key: PrivateKeyDer<'static>,
) -> Result<Option<bool>, String> {
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| e.to_string())?;
    let certified =
        rustls::sign::CertifiedKey::new(vec![CertificateDer::from(cert.to_vec())], signing);
    match certified.keys_match() {
        Ok(()) => Ok(Some(true)),
        Err(TlsError::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => Ok(Some(false)),
        Err(TlsError::InconsistentKeys(_)) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// The server TLS configuration: TLS 1.2 and 1.3, h2 and http/1.1, grid client verifier.
pub fn server_config(
    host: HostCredential,
    auth: Arc<Authenticator>,
) -> Result<Arc<ServerConfig>, ServerError> {
    let provider = provider();
    let verifier = Arc::new(GridClientVerifier::new(auth, &provider));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ServerError::Tls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(host.chain, host.key)
        .map_err(ServerError::Tls)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
