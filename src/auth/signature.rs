//! Signature checks on signed X.509 structures (certificates, attribute certificates) with the
//! same algorithm table the TLS layer uses.
//!
//! webpki refuses to parse proxy certificates (their critical proxyCertInfo extension is unknown
//! to it), so proxy layers and VOMS attribute certificates are checked here: split the structure
//! into to-be-signed bytes, algorithm and signature with the `der` crate, then verify through
//! webpki's raw-public-key entry point, which applies webpki's algorithm policy (no SHA-1, RSA of
//! at least 2048 bits).

use der::{Decode, Reader, SliceReader, asn1::AnyRef, asn1::BitStringRef};
use rustls_pki_types::{SignatureVerificationAlgorithm, SubjectPublicKeyInfoDer};

/// The algorithm table, e.g. a rustls `CryptoProvider`'s `signature_verification_algorithms.all`.
pub type Algorithms = &'static [&'static dyn SignatureVerificationAlgorithm];

/// The three parts of `SIGNED{ToBeSigned}` (RFC 5280 certificate, RFC 5755 attribute certificate).
#[derive(Debug, Clone, Copy)]
pub struct SignedParts<'a> {
    /// The whole DER TLV of the signed body: these are the bytes the signature covers.
    pub tbs: &'a [u8],
    /// The contents of the AlgorithmIdentifier SEQUENCE, as webpki's `signature_alg_id()` holds them.
    pub algorithm: &'a [u8],
    /// The signature bits.
    pub signature: &'a [u8],
}

/// Split a DER `SEQUENCE { tbs, AlgorithmIdentifier, BIT STRING }`.
pub fn split_signed(der: &[u8]) -> Result<SignedParts<'_>, String> {
    let mut reader =
        SliceReader::new(der).map_err(|e| format!("malformed signed structure: {e}"))?;
    let parts = reader
        .sequence(|r| {
            let tbs = r.tlv_bytes()?;
            let algorithm = AnyRef::decode(r)?;
            let signature = BitStringRef::decode(r)?;
            Ok((tbs, algorithm.value(), signature))
        })
        .map_err(|e: der::Error| format!("malformed signed structure: {e}"))?;
    reader
        .finish()
        .map_err(|e| format!("trailing data after signed structure: {e}"))?;
    let (tbs, algorithm, signature) = parts;
    let signature = signature
        .as_bytes()
        .ok_or_else(|| "signature is not a whole number of bytes".to_string())?;
    Ok(SignedParts {
        tbs,
        algorithm,
        signature,
    })
}

/// Verify `parts` with the issuer's SubjectPublicKeyInfo (DER).
pub fn verify_signed(
    algs: Algorithms,
    parts: &SignedParts<'_>,
    issuer_spki: &[u8],
) -> Result<(), String> {
    let spki = SubjectPublicKeyInfoDer::from(issuer_spki);
    let key = webpki::RawPublicKeyEntity::try_from(&spki)
        .map_err(|e| format!("unusable issuer public key: {e:?}"))?;
    let mut candidates = algs
        .iter()
        .filter(|alg| alg.signature_alg_id().as_ref() == parts.algorithm)
        .peekable();
    if candidates.peek().is_none() {
        return Err("unsupported signature algorithm".to_string());
    }
    let mut last = String::new();
    for alg in candidates {
        match key.verify_signature(*alg, parts.tbs, parts.signature) {
            Ok(()) => return Ok(()),
            // Same algorithm id, other key type (e.g. ECDSA P-256 vs P-384): try the next one.
            Err(webpki::Error::UnsupportedSignatureAlgorithmForPublicKeyContext(_)) => {
                last = "signature algorithm does not fit the issuer key".to_string()
            }
            Err(e) => return Err(in_words(&e)),
        }
    }
    Err(last)
}

/// A webpki verdict in words a user can act on (refusals are logged and returned with these):
/// "unknown CA" rather than `UnknownIssuer`, "bad signature" rather than
/// `InvalidSignatureForPublicKey`.
pub fn in_words(error: &webpki::Error) -> String {
    use webpki::Error as E;
    match error {
        E::UnknownIssuer => {
            "unknown CA: its issuer is not one of the trusted CAs (ca_dir)".to_string()
        }
        E::CertExpired { .. } => "expired".to_string(),
        E::CertNotValidYet { .. } => "not yet valid".to_string(),
        E::CertRevoked => "revoked (listed in its CA's CRL)".to_string(),
        E::InvalidSignatureForPublicKey => {
            "bad signature: not made with the key of the issuer it names".to_string()
        }
        E::UnsupportedSignatureAlgorithmContext(_)
        | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
            "signature algorithm not accepted (SHA-1, or an RSA key under 2048 bits?)".to_string()
        }
        E::RequiredEkuNotFoundContext(_) => {
            "not a client certificate (its extended key usage lacks clientAuth)".to_string()
        }
        E::CaUsedAsEndEntity => "a CA certificate, not a user certificate".to_string(),
        E::BadDer | E::BadDerTime | E::TrailingData(_) => "malformed certificate".to_string(),
        other => format!("{other:?}"),
    }
}
