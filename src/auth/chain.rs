//! Validation of a client certificate chain that may contain grid proxies.
//!
//! The chain is `[leaf, …, user certificate, (CA certificates)]`. Walking from the leaf, every
//! certificate that is a proxy of the next one is a proxy layer; the first one that is not is the
//! end-entity (user) certificate. The user certificate is checked by webpki (path to a trusted CA,
//! dates, clientAuth EKU, CRLs). webpki cannot parse proxies (their critical proxyCertInfo is
//! unknown to it), so each proxy layer is checked here, from the one signed by the user down to
//! the leaf, with RFC 3820 rules and the Globus conventions for older proxies:
//! - dates, issuer name = issuer's subject, subject = issuer subject + exactly one CN,
//! - the issuer is not a CA and may sign (digitalSignature), the proxy is not a CA, carries no
//!   alternative names and no critical extension we do not understand,
//! - proxy kinds are not mixed, path-length constraints hold, the policy language is known
//!   (inheritAll, or limited; independent proxies carry no identity and are refused),
//! - the signature verifies with the issuer's key.
//!
//! A chain that ends in a proxy (its issuer missing) is refused.

use x509_parser::{
    certificate::X509Certificate,
    der_parser::{self, ber::BerObjectContent},
    prelude::FromDer,
    x509::X509Name,
};

use super::{
    AuthError, dn,
    signature::{Algorithms, in_words, split_signed, verify_signed},
    trust::TrustStore,
};

pub const OID_PROXY_CERT_INFO_RFC3820: &str = "1.3.6.1.5.5.7.1.14";
pub const OID_PROXY_CERT_INFO_GT3: &str = "1.3.6.1.4.1.3536.1.222";
const OID_PPL_INHERIT_ALL: &str = "1.3.6.1.5.5.7.21.1";
const OID_PPL_INDEPENDENT: &str = "1.3.6.1.5.5.7.21.2";
const OID_PPL_LIMITED: &str = "1.3.6.1.4.1.3536.1.1.1.9";
const OID_CN: &str = "2.5.4.3";
const OID_SUBJECT_ALT_NAME: &str = "2.5.29.17";
const OID_ISSUER_ALT_NAME: &str = "2.5.29.18";

/// Extensions a proxy may mark critical: basicConstraints, keyUsage, extKeyUsage, proxyCertInfo.
const PROXY_CRITICAL_OK: &[&str] = &[
    "2.5.29.19",
    "2.5.29.15",
    "2.5.29.37",
    OID_PROXY_CERT_INFO_RFC3820,
    OID_PROXY_CERT_INFO_GT3,
];

/// Proxies are often made with notBefore = now by the client (M2Crypto, voms-proxy-init do not
/// backdate), so a client clock a little ahead of ours must not make a fresh proxy "not yet
/// valid". Five minutes, as the grid middleware (VOMS, gridsite) allows.
pub const NOT_BEFORE_SKEW: i64 = 300;

/// Longest chain we look at. Real chains are user + a few proxies + CAs; a bound keeps a hostile
/// client from making us parse and verify hundreds of certificates per handshake.
pub const MAX_CHAIN_LEN: usize = 16;

/// The flavours of proxy certificates in use on the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ProxyKind {
    /// RFC 3820 (proxyCertInfo 1.3.6.1.5.5.7.1.14).
    Rfc3820,
    /// Globus Toolkit 3 draft (proxyCertInfo 1.3.6.1.4.1.3536.1.222).
    Gt3,
    /// Globus Toolkit 2 "legacy": `CN=proxy` or `CN=limited proxy`, no extension.
    Legacy,
}

/// The result of a successful validation.
#[derive(Debug, Clone)]
pub struct VerifiedChain {
    /// Index of the user certificate in the chain (= number of proxy layers).
    pub eec: usize,
    /// Proxy layers, leaf first.
    pub proxies: Vec<ProxyKind>,
    /// A limited proxy appears in the chain (it may not be used to start jobs elsewhere).
    pub limited: bool,
    /// Earliest notAfter of the user certificate and the proxies (unix seconds).
    pub not_after: i64,
}

/// Validates chains against one trust store and one algorithm table.
pub struct ChainVerifier {
    trust: TrustStore,
    algs: Algorithms,
}

impl ChainVerifier {
    pub fn new(trust: TrustStore, algs: Algorithms) -> ChainVerifier {
        ChainVerifier { trust, algs }
    }

    pub fn trust(&self) -> &TrustStore {
        &self.trust
    }

    pub fn algorithms(&self) -> Algorithms {
        self.algs
    }

    /// Validate a DER chain, leaf first, at `now` (unix seconds).
    pub fn verify(&self, chain: &[&[u8]], now: i64) -> Result<VerifiedChain, AuthError> {
        if chain.is_empty() {
            return Err(AuthError::Chain("empty certificate chain".into()));
        }
        if chain.len() > MAX_CHAIN_LEN {
            return Err(AuthError::Chain(format!(
                "certificate chain of {} certificates is longer than {MAX_CHAIN_LEN}",
                chain.len()
            )));
        }
        let parsed = parse_chain(chain)?;
        self.verify_parsed(chain, &parsed, now)
    }

    /// Same as [`verify`](Self::verify) for a chain the caller has already parsed.
    pub fn verify_parsed(
        &self,
        chain: &[&[u8]],
        parsed: &[X509Certificate<'_>],
        now: i64,
    ) -> Result<VerifiedChain, AuthError> {
        let (eec, kinds) = classify_chain(parsed)?;
        self.verify_user_certificate(chain, eec, now)?;

        let mut limited = false;
        let mut not_after = parsed[eec].validity().not_after.timestamp();
        for layer in (0..eec).rev() {
            let (cert, issuer) = (&parsed[layer], &parsed[layer + 1]);
            let kind = kinds[layer];
            let fail = |reason: String| AuthError::Chain(format!("proxy #{layer}: {reason}"));
            let validity = cert.validity();
            if now + NOT_BEFORE_SKEW < validity.not_before.timestamp() {
                return Err(fail("not yet valid".into()));
            }
            if now > validity.not_after.timestamp() {
                return Err(fail("expired".into()));
            }
            not_after = not_after.min(validity.not_after.timestamp());
            if cert.issuer().as_raw() != issuer.subject().as_raw() {
                return Err(fail("issuer name differs from the issuer's subject".into()));
            }
            if !subject_extends_issuer(cert.subject(), issuer.subject()) {
                return Err(fail(format!(
                    "subject {} is not the issuer subject {} plus one CN",
                    dn::oneline(cert.subject()),
                    dn::oneline(issuer.subject())
                )));
            }
            if is_ca(issuer) {
                return Err(fail("signed by a CA certificate".into()));
            }
            if let Ok(Some(ku)) = issuer.key_usage() {
                if !ku.value.digital_signature() {
                    return Err(fail("issuer lacks the digitalSignature key usage".into()));
                }
            }
            if is_ca(cert) {
                return Err(fail("a proxy must not be a CA".into()));
            }
            for ext in cert.extensions() {
                let oid = ext.oid.to_id_string();
                if oid == OID_SUBJECT_ALT_NAME || oid == OID_ISSUER_ALT_NAME {
                    return Err(fail("carries alternative names".into()));
                }
                if ext.critical && !PROXY_CRITICAL_OK.contains(&oid.as_str()) {
                    return Err(fail(format!("unsupported critical extension {oid}")));
                }
            }
            if layer + 1 < eec && kinds[layer + 1] != kind {
                return Err(fail(format!(
                    "{kind:?} proxy signed by a {:?} proxy",
                    kinds[layer + 1]
                )));
            }
            match kind {
                ProxyKind::Legacy => {
                    if last_cn(cert.subject()).as_deref() == Some("limited proxy") {
                        limited = true;
                    }
                }
                ProxyKind::Rfc3820 | ProxyKind::Gt3 => {
                    let info = proxy_cert_info(cert)
                        .ok_or_else(|| fail("proxyCertInfo missing".into()))?
                        .map_err(fail)?;
                    // The constraint counts the proxies that may follow this one.
                    if let Some(max) = info.path_len {
                        if layer as u64 > max {
                            return Err(fail(format!("path length constraint {max} exceeded")));
                        }
                    }
                    match info.policy_language.as_str() {
                        OID_PPL_INHERIT_ALL => {}
                        OID_PPL_LIMITED => limited = true,
                        OID_PPL_INDEPENDENT => {
                            return Err(fail("independent proxies carry no identity".into()));
                        }
                        other => return Err(fail(format!("unsupported policy language {other}"))),
                    }
                }
            }
            let parts = split_signed(chain[layer]).map_err(fail)?;
            verify_signed(self.algs, &parts, issuer.public_key().raw).map_err(fail)?;
        }
        Ok(VerifiedChain {
            eec,
            proxies: kinds,
            limited,
            not_after,
        })
    }

    /// webpki validation of the user certificate: path to an anchor, dates, clientAuth, CRLs.
    fn verify_user_certificate(
        &self,
        chain: &[&[u8]],
        eec: usize,
        now: i64,
    ) -> Result<(), AuthError> {
        let der = rustls_pki_types::CertificateDer::from(chain[eec]);
        let cert = webpki::EndEntityCert::try_from(&der)
            .map_err(|e| AuthError::Chain(format!("user certificate: {}", in_words(&e))))?;
        let intermediates: Vec<rustls_pki_types::CertificateDer<'_>> = chain[eec + 1..]
            .iter()
            .map(|c| rustls_pki_types::CertificateDer::from(*c))
            .collect();
        let crl_refs: Vec<&webpki::CertRevocationList<'_>> = self.trust.crls().iter().collect();
        let revocation = TrustStore::revocation_options(&crl_refs);
        let time = rustls_pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            now.max(0) as u64,
        ));
        cert.verify_for_usage(
            self.algs,
            self.trust.anchors(),
            &intermediates,
            time,
            webpki::KeyUsage::client_auth(),
            revocation,
            None,
        )
        .map_err(|e| AuthError::Chain(format!("user certificate: {}", in_words(&e))))?;
        Ok(())
    }
}

/// Parse every certificate of a DER chain.
pub fn parse_chain<'a>(chain: &[&'a [u8]]) -> Result<Vec<X509Certificate<'a>>, AuthError> {
    chain
        .iter()
        .enumerate()
        .map(|(i, der)| {
            X509Certificate::from_der(der)
                .map(|(_, cert)| cert)
                .map_err(|e| AuthError::Chain(format!("certificate #{i} does not parse: {e}")))
        })
        .collect()
}

/// Find the user certificate: `(index, proxy kinds leaf first)`.
pub(crate) fn classify_chain(
    parsed: &[X509Certificate<'_>],
) -> Result<(usize, Vec<ProxyKind>), AuthError> {
    let mut kinds = Vec::new();
    let mut eec = 0;
    while eec + 1 < parsed.len() {
        match proxy_kind(&parsed[eec], &parsed[eec + 1]) {
            Some(kind) => {
                kinds.push(kind);
                eec += 1;
            }
            None => break,
        }
    }
    if proxy_cert_info(&parsed[eec]).is_some() {
        return Err(AuthError::Chain(
            "chain ends in a proxy certificate: its issuer is missing".into(),
        ));
    }
    Ok((eec, kinds))
}

/// Is `cert` a proxy issued by `issuer`, and of which kind?
fn proxy_kind(cert: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> Option<ProxyKind> {
    for ext in cert.extensions() {
        match ext.oid.to_id_string().as_str() {
            OID_PROXY_CERT_INFO_RFC3820 => return Some(ProxyKind::Rfc3820),
            OID_PROXY_CERT_INFO_GT3 => return Some(ProxyKind::Gt3),
            _ => {}
        }
    }
    let legacy_name = matches!(
        last_cn(cert.subject()).as_deref(),
        Some("proxy") | Some("limited proxy")
    );
    if legacy_name
        && !is_ca(issuer)
        && cert.issuer().as_raw() == issuer.subject().as_raw()
        && subject_extends_issuer(cert.subject(), issuer.subject())
    {
        return Some(ProxyKind::Legacy);
    }
    None
}

fn is_ca(cert: &X509Certificate<'_>) -> bool {
    matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca)
}

struct ProxyCertInfo {
    path_len: Option<u64>,
    policy_language: String,
}

/// The proxyCertInfo extension, if present, parsed.
///
/// RFC 3820: `SEQUENCE { pCPathLenConstraint INTEGER OPTIONAL, proxyPolicy SEQUENCE {
/// policyLanguage OID, policy OCTET STRING OPTIONAL } }`. The GT3 draft puts the policy first
/// and the path length as `[1] EXPLICIT INTEGER`; both are read.
fn proxy_cert_info(cert: &X509Certificate<'_>) -> Option<Result<ProxyCertInfo, String>> {
    let ext = cert.extensions().iter().find(|e| {
        let oid = e.oid.to_id_string();
        oid == OID_PROXY_CERT_INFO_RFC3820 || oid == OID_PROXY_CERT_INFO_GT3
    })?;
    Some(parse_proxy_cert_info(ext.value))
}

fn parse_proxy_cert_info(value: &[u8]) -> Result<ProxyCertInfo, String> {
    let bad = || "malformed proxyCertInfo".to_string();
    let (_, obj) = der_parser::parse_der(value).map_err(|_| bad())?;
    let items = obj.as_sequence().map_err(|_| bad())?;
    let mut path_len = None;
    let mut policy_language = None;
    for item in items {
        match &item.content {
            BerObjectContent::Integer(_) => path_len = Some(item.as_u64().map_err(|_| bad())?),
            BerObjectContent::Sequence(policy) => {
                if let Some(BerObjectContent::OID(oid)) = policy.first().map(|x| &x.content) {
                    policy_language = Some(oid.to_id_string());
                }
            }
            _ => {
                let inner = item.as_slice().map_err(|_| bad())?;
                let (_, n) = der_parser::parse_der(inner).map_err(|_| bad())?;
                path_len = Some(n.as_u64().map_err(|_| bad())?);
            }
        }
    }
    Ok(ProxyCertInfo {
        path_len,
        policy_language: policy_language
            .ok_or_else(|| "proxyCertInfo without policy".to_string())?,
    })
}

/// RFC 3820 §3.4: the subject is the issuer's subject plus one RDN holding a single CN.
pub fn subject_extends_issuer(subject: &X509Name<'_>, issuer: &X509Name<'_>) -> bool {
    name_extends(subject, issuer) && last_rdn_is_cn(subject)
}

/// `subject` is `issuer` plus exactly one more RDN (compared attribute by attribute).
pub fn name_extends(subject: &X509Name<'_>, issuer: &X509Name<'_>) -> bool {
    let subject: Vec<_> = subject.iter().collect();
    let issuer: Vec<_> = issuer.iter().collect();
    subject.len() == issuer.len() + 1
        && subject
            .iter()
            .zip(issuer.iter())
            .all(|(a, b)| a.iter().map(atv_key).eq(b.iter().map(atv_key)))
}

/// The last RDN of `name` holds a single CN.
pub fn last_rdn_is_cn(name: &X509Name<'_>) -> bool {
    let Some(last) = name.iter().last() else {
        return false;
    };
    let last: Vec<_> = last.iter().collect();
    last.len() == 1 && last[0].attr_type().to_id_string() == OID_CN
}

fn atv_key<'a>(atv: &'a x509_parser::x509::AttributeTypeAndValue<'a>) -> (String, &'a [u8]) {
    (atv.attr_type().to_id_string(), atv.attr_value().data)
}

fn last_cn(name: &X509Name<'_>) -> Option<String> {
    let atv = name.iter().last()?.iter().next()?;
    if atv.attr_type().to_id_string() != OID_CN {
        return None;
    }
    atv.as_str().ok().map(str::to_owned)
}
