//! VOMS attribute certificates (RFC 5755 ACs issued by a VOMS server) carried in grid proxies,
//! turned into the FQANs FTS3 authorises with.
//!
//! - The proxy extension `1.3.6.1.4.1.8005.100.100.5` holds `SEQUENCE OF SEQUENCE OF
//!   AttributeCertificate`; the ASN.1 structures below are decoded with the `der` crate's derives
//!   (no hand parser), in DER mode.
//! - [`VomsDir`] is the `X509_VOMS_DIR` layout: per VO, `.lsc` files naming the VOMS servers
//!   (server DN, then its issuer chain) and, in the older layout, `.pem` copies of the server
//!   certificates.
//! - [`AcVerifier`] checks one AC at a time. An AC yields [`VomsAttributes`] only if all of these
//!   hold: it is a v2 AC whose holder is the user certificate (its serial, and its issuer name as
//!   RFC 5755 says or its subject name as the C VOMS library writes); it is inside its validity
//!   period (notBefore may be [`CLOCK_SKEW_SECS`] ahead); it carries exactly one VOMS attribute
//!   whose FQANs all belong to its VO; it has no critical extension we do not understand; its
//!   signer is a certificate the vomsdir names for that VO (an LSC entry matching a certificate
//!   the AC carries, or a `.pem` file) whose subject is the AC issuer; that certificate chains to
//!   a trusted CA (webpki, with the trust store's CRLs); and the AC signature verifies with it.
//!   Anything else is an error for that AC only; the other ACs of a chain are still used.
//! - Not done: AC targeting is parsed but not enforced, the authorityKeyIdentifier is not
//!   compared (the signature check with the signer's key is the stronger test), and VOMS server
//!   certificates lying loose at the top of the vomsdir (VOMS 1.x) are not read.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    time::Duration,
};

use der::{
    Choice, Decode, Encode, Enumerated, Sequence,
    asn1::{
        AnyRef, BitStringRef, GeneralizedTime, Ia5StringRef, IntRef, OctetStringRef, SetOfVec,
        Utf8StringRef,
    },
    oid::ObjectIdentifier,
};
use rustls_pki_types::{CertificateDer, UnixTime, pem::PemObject};
use x509_parser::{certificate::X509Certificate, prelude::FromDer, x509::X509Name};

use super::{
    dn,
    signature::{Algorithms, SignedParts, split_signed, verify_signed},
    trust::TrustStore,
};

/// X.509 extension holding the ACs in a proxy: 1.3.6.1.4.1.8005.100.100.5
/// (SEQUENCE OF SEQUENCE OF AttributeCertificate).
pub const OID_VOMS_ACSEQ: &str = "1.3.6.1.4.1.8005.100.100.5";

/// AC attribute holding the VO and its FQANs (IetfAttrSyntax).
const OID_VOMS_ATTRIBUTES: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.8005.100.100.4");
/// AC extension carrying the VOMS server certificate (and possibly its issuers).
const OID_VOMS_CERTSEQ: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.8005.100.100.10");
/// AC extension carrying VOMS generic attributes ("tags"); not used for authorisation.
const OID_VOMS_TAGS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.8005.100.100.11");
/// RFC 5755 AC targeting.
const OID_AC_TARGETING: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.55");
/// RFC 5755 noRevAvail.
const OID_NO_REV_AVAIL: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.56");
/// RFC 5280 authorityKeyIdentifier.
const OID_AUTHORITY_KEY_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.35");

/// AC extensions we understand, and so accept even when marked critical. Targeting is parsed but
/// not enforced.
const UNDERSTOOD_EXTENSIONS: &[ObjectIdentifier] = &[
    OID_VOMS_CERTSEQ,
    OID_AC_TARGETING,
    OID_NO_REV_AVAIL,
    OID_AUTHORITY_KEY_ID,
    OID_VOMS_TAGS,
];

/// How far the AC's notBefore may lie in our future: the VOMS server's clock may run a little
/// ahead of ours, and a freshly made proxy is used at once. Same 5 minutes VOMS itself allows.
/// notAfter gets no allowance: an expired AC is expired.
pub const CLOCK_SKEW_SECS: i64 = 300;

/// Most ACs looked at in one proxy extension. A user holds ACs of a handful of VOs; the bound
/// keeps a client from making us verify hundreds of signatures per connection.
pub const MAX_ACS_PER_EXTENSION: usize = 16;

/// Largest vomsdir file read. LSC files are a few lines and certificates a few kB; anything
/// bigger is not a vomsdir file and is skipped rather than read into memory.
pub const MAX_VOMSDIR_FILE_BYTES: u64 = 1 << 20;

/// RFC 5280 §4.1.2.2 / RFC 5755 §4.2.5: serial numbers are at most 20 octets.
const MAX_SERIAL_OCTETS: usize = 20;

/// Separator between chains in one `.lsc` file.
const LSC_NEXT_CHAIN: &str = "------ NEXT CHAIN ------";

/// Errors of VOMS processing. Messages name the AC issuer where it is known; they never carry
/// key material.
#[derive(Debug, thiserror::Error)]
pub enum VomsError {
    #[error("vomsdir {path}: {source}")]
    VomsDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed VOMS attribute certificate: {0}")]
    Malformed(String),
    #[error(
        "too many attribute certificates in one proxy: {count} (limit {MAX_ACS_PER_EXTENSION})"
    )]
    TooManyAcs { count: usize },
    #[error("attribute certificate from {issuer} is not for this user certificate: {reason}")]
    HolderMismatch { issuer: String, reason: String },
    #[error("attribute certificate from {issuer} is not valid before {not_before} (unix time)")]
    NotYetValid { issuer: String, not_before: i64 },
    #[error("attribute certificate from {issuer} expired at {not_after} (unix time)")]
    Expired { issuer: String, not_after: i64 },
    #[error("attribute certificate from {issuer} has no usable VOMS attributes: {reason}")]
    Attributes { issuer: String, reason: String },
    #[error("attribute certificate from {issuer} has an unknown critical extension {oid}")]
    UnknownCriticalExtension { issuer: String, oid: String },
    #[error("no LSC/certificate for VOMS server {issuer} in VO {vo}")]
    NoLsc { issuer: String, vo: String },
    #[error("certificate of VOMS server {issuer} is not trusted: {reason}")]
    UntrustedServer { issuer: String, reason: String },
    #[error("attribute certificate from {issuer} has a bad signature: {reason}")]
    BadSignature { issuer: String, reason: String },
}

impl VomsError {
    /// The AC issuer (VOMS server DN) the error is about, when the AC got that far.
    pub fn issuer(&self) -> Option<&str> {
        match self {
            VomsError::VomsDir { .. } | VomsError::Malformed(_) | VomsError::TooManyAcs { .. } => {
                None
            }
            VomsError::HolderMismatch { issuer, .. }
            | VomsError::NotYetValid { issuer, .. }
            | VomsError::Expired { issuer, .. }
            | VomsError::Attributes { issuer, .. }
            | VomsError::UnknownCriticalExtension { issuer, .. }
            | VomsError::NoLsc { issuer, .. }
            | VomsError::UntrustedServer { issuer, .. }
            | VomsError::BadSignature { issuer, .. } => Some(issuer),
        }
    }
}

fn malformed(what: &str, e: impl std::fmt::Display) -> VomsError {
    VomsError::Malformed(format!("{what}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// ASN.1 (RFC 5755, RFC 5280, VOMS). Only what VOMS ACs use; other GeneralName forms are errors.

/// OCTET STRING contents (an alias so that the `Choice` derive sees a type path).
type OctetRef<'a> = &'a OctetStringRef;

/// RFC 5280 GeneralName (the forms seen in ACs).
#[derive(Clone, Debug, Eq, PartialEq, Choice)]
enum GeneralName<'a> {
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT")]
    Rfc822Name(Ia5StringRef<'a>),
    #[asn1(context_specific = "2", tag_mode = "IMPLICIT")]
    DnsName(Ia5StringRef<'a>),
    /// A `Name` (RDNSequence), kept as its DER and read with x509-parser for the slash form.
    #[asn1(context_specific = "4", tag_mode = "EXPLICIT", constructed = "true")]
    DirectoryName(AnyRef<'a>),
    #[asn1(context_specific = "6", tag_mode = "IMPLICIT")]
    Uri(Ia5StringRef<'a>),
    #[asn1(context_specific = "7", tag_mode = "IMPLICIT")]
    IpAddress(OctetRef<'a>),
    #[asn1(context_specific = "8", tag_mode = "IMPLICIT")]
    RegisteredId(ObjectIdentifier),
}

/// RFC 5755 IssuerSerial.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct IssuerSerial<'a> {
    issuer: Vec<GeneralName<'a>>,
    serial: IntRef<'a>,
    #[asn1(optional = "true")]
    issuer_uid: Option<BitStringRef<'a>>,
}

/// RFC 5755 ObjectDigestInfo.digestedObjectType.
#[derive(Clone, Copy, Debug, Eq, PartialEq, Enumerated)]
#[repr(u32)]
enum DigestedObjectType {
    PublicKey = 0,
    PublicKeyCert = 1,
    OtherObjectTypes = 2,
}

/// RFC 5755 ObjectDigestInfo (parsed so that an AC using it is reported, not misread).
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct ObjectDigestInfo<'a> {
    digested_object_type: DigestedObjectType,
    #[asn1(optional = "true")]
    other_object_type_id: Option<ObjectIdentifier>,
    digest_algorithm: AnyRef<'a>,
    object_digest: BitStringRef<'a>,
}

/// RFC 5755 Holder.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
#[asn1(tag_mode = "IMPLICIT")]
struct Holder<'a> {
    #[asn1(context_specific = "0", optional = "true")]
    base_certificate_id: Option<IssuerSerial<'a>>,
    #[asn1(context_specific = "1", optional = "true")]
    entity_name: Option<Vec<GeneralName<'a>>>,
    #[asn1(context_specific = "2", optional = "true")]
    object_digest_info: Option<ObjectDigestInfo<'a>>,
}

/// RFC 5755 V2Form (the AttCertIssuer form RFC 5755 requires; VOMS encodes exactly this, with
/// only `issuerName`).
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
#[asn1(tag_mode = "IMPLICIT")]
struct V2Form<'a> {
    #[asn1(optional = "true")]
    issuer_name: Option<Vec<GeneralName<'a>>>,
    #[asn1(context_specific = "0", optional = "true")]
    base_certificate_id: Option<IssuerSerial<'a>>,
    #[asn1(context_specific = "1", optional = "true")]
    object_digest_info: Option<ObjectDigestInfo<'a>>,
}

/// RFC 5755 AttCertValidityPeriod (GeneralizedTime only, as RFC 5755 and VOMS require).
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct AttCertValidityPeriod {
    not_before: GeneralizedTime,
    not_after: GeneralizedTime,
}

/// RFC 5755 Attribute.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct Attribute<'a> {
    attr_type: ObjectIdentifier,
    values: SetOfVec<AnyRef<'a>>,
}

/// RFC 5280 Extension.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct Extension<'a> {
    extn_id: ObjectIdentifier,
    #[asn1(default = "not_critical")]
    critical: bool,
    #[asn1(type = "OCTET STRING")]
    extn_value: &'a [u8],
}

fn not_critical() -> bool {
    false
}

/// RFC 5755 AttributeCertificateInfo.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct AttributeCertificateInfo<'a> {
    /// v2(1) is the only version.
    version: u8,
    holder: Holder<'a>,
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT")]
    issuer: V2Form<'a>,
    /// AlgorithmIdentifier; must equal the one outside the signed part.
    signature: AnyRef<'a>,
    serial_number: IntRef<'a>,
    validity: AttCertValidityPeriod,
    attributes: Vec<Attribute<'a>>,
    #[asn1(optional = "true")]
    issuer_unique_id: Option<BitStringRef<'a>>,
    #[asn1(optional = "true")]
    extensions: Option<Vec<Extension<'a>>>,
}

/// RFC 5755 IetfAttrSyntax, the value of the VOMS attribute.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct IetfAttrSyntax<'a> {
    /// `vo://host:port`.
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", optional = "true")]
    policy_authority: Option<Vec<GeneralName<'a>>>,
    values: Vec<IetfAttrValue<'a>>,
}

/// One IetfAttrSyntax value; VOMS FQANs are OCTET STRINGs.
#[derive(Clone, Debug, Eq, PartialEq, Choice)]
enum IetfAttrValue<'a> {
    Octets(OctetRef<'a>),
    Oid(ObjectIdentifier),
    String(Utf8StringRef<'a>),
}

/// VOMS `certseq` extension value: `SEQUENCE { SEQUENCE OF Certificate }`: the signer and maybe
/// its issuers (Java VOMS puts the signer first, the C library last).
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct AcCerts<'a> {
    certs: Vec<AnyRef<'a>>,
}

/// RFC 5755 Target (a CHOICE).
#[derive(Clone, Debug, Eq, PartialEq, Choice)]
enum Target<'a> {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", constructed = "true")]
    Name(GeneralName<'a>),
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", constructed = "true")]
    Group(GeneralName<'a>),
    #[asn1(context_specific = "2", tag_mode = "IMPLICIT", constructed = "true")]
    Cert(TargetCert<'a>),
}

/// RFC 5755 TargetCert.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct TargetCert<'a> {
    target_certificate: IssuerSerial<'a>,
    #[asn1(optional = "true")]
    target_name: Option<GeneralName<'a>>,
    #[asn1(optional = "true")]
    cert_digest_info: Option<ObjectDigestInfo<'a>>,
}

/// The C VOMS library's encoding of one target: a SEQUENCE of optional explicitly tagged fields
/// instead of RFC 5755's CHOICE. Its extension value is `SEQUENCE { SEQUENCE OF VomsTarget }`.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct VomsTarget<'a> {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    name: Option<GeneralName<'a>>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    group: Option<GeneralName<'a>>,
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", optional = "true")]
    cert: Option<IssuerSerial<'a>>,
}

/// The C VOMS library's targeting extension value.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct VomsTargets<'a> {
    targets: Vec<VomsTarget<'a>>,
}

/// Check that an AC targeting extension is well formed, in either the RFC 5755 encoding
/// (`SEQUENCE OF Targets`, Java VOMS) or the C VOMS one. Targets are not enforced.
fn parse_targeting(value: &[u8]) -> Result<(), VomsError> {
    if Vec::<Vec<Target<'_>>>::from_der(value).is_ok() || VomsTargets::from_der(value).is_ok() {
        Ok(())
    } else {
        Err(VomsError::Malformed(
            "unreadable AC targeting extension".to_string(),
        ))
    }
}

/// The DER of every AC in a proxy's ACSEQ extension value, in order.
fn split_acseq(ext_value: &[u8]) -> Result<Vec<Vec<u8>>, VomsError> {
    let groups = Vec::<Vec<AnyRef<'_>>>::from_der(ext_value)
        .map_err(|e| malformed("VOMS AC extension", e))?;
    let mut acs = Vec::new();
    for ac in groups.iter().flatten() {
        // Re-encoding an AnyRef writes back the bytes it was decoded from (DER headers are
        // canonical); a difference could only make the signature check fail, never pass.
        acs.push(ac.to_der().map_err(|e| malformed("VOMS AC extension", e))?);
    }
    Ok(acs)
}

// ---------------------------------------------------------------------------------------------
// Names

/// Slash-form DN of a DER `Name`.
fn name_oneline(name: &AnyRef<'_>) -> Result<String, String> {
    let der = name.to_der().map_err(|e| e.to_string())?;
    match X509Name::from_der(&der) {
        Ok(([], parsed)) => Ok(dn::oneline(&parsed)),
        Ok(_) => Err("trailing data after name".to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// The one directoryName in `names` (VOMS puts exactly one name where a DN is meant).
fn single_directory_name(names: &[GeneralName<'_>]) -> Result<String, String> {
    match names {
        [GeneralName::DirectoryName(name)] => name_oneline(name),
        [_] => Err("name is not a directoryName".to_string()),
        _ => Err(format!("{} names where one DN is expected", names.len())),
    }
}

/// DN spelling used for comparisons: LSC files written with older OpenSSL versions spell some
/// attributes differently from what [`dn::oneline`] prints.
fn normalize_dn(dn: &str) -> String {
    dn.replace("/USERID=", "/UID=")
        .replace("/Email=", "/emailAddress=")
        .replace("/E=", "/emailAddress=")
}

/// INTEGER contents without redundant leading zero octets, so that a leniently encoded
/// certificate serial compares equal to the DER one in the AC.
fn canonical_int(bytes: &[u8]) -> &[u8] {
    let mut b = bytes;
    while b.len() > 1 && b[0] == 0 && b[1] & 0x80 == 0 {
        b = &b[1..];
    }
    b
}

// ---------------------------------------------------------------------------------------------
// vomsdir

/// One chain description from an `.lsc` file: VOMS server DN, then its issuers (normalised).
#[derive(Debug, Clone)]
struct LscChain {
    file: PathBuf,
    dns: Vec<String>,
}

/// A VOMS server certificate from a `.pem` file in a VO directory.
#[derive(Debug, Clone)]
struct LocalCert {
    file: PathBuf,
    subject: String,
    der: CertificateDer<'static>,
}

/// What the vomsdir says about one VO.
#[derive(Debug, Clone, Default)]
struct VoTrust {
    lsc: Vec<LscChain>,
    certs: Vec<LocalCert>,
}

/// The vomsdir (X509_VOMS_DIR layout): `<vo>/<host>.lsc` files (line 1 = VOMS server DN,
/// following lines = its issuer chain DNs, slash form, `#` comments and blank lines ignored; a
/// file may hold several such blocks separated by a line "------ NEXT CHAIN ------"), and
/// optionally `<vo>/*.pem` holding the VOMS server certificate itself (old layout; the AC
/// signature is then checked against that cert, which must itself chain to a trusted CA).
#[derive(Debug, Clone, Default)]
pub struct VomsDir {
    vos: HashMap<String, VoTrust>,
}

impl VomsDir {
    /// Read a vomsdir. A missing or unreadable directory is an error (the caller decides whether
    /// that is fatal); an unreadable or garbled file inside is skipped with a warning naming it.
    pub fn load(dir: &Path) -> Result<VomsDir, VomsError> {
        let io_err = |source| VomsError::VomsDir {
            path: dir.to_path_buf(),
            source,
        };
        let mut vomsdir = VomsDir::empty();
        for vo_path in sorted_entries(dir).map_err(io_err)? {
            let Some(vo) = visible_name(&vo_path) else {
                continue;
            };
            // Follows symlinks: sites link VO directories to shared ones.
            if !std::fs::metadata(&vo_path).is_ok_and(|m| m.is_dir()) {
                tracing::debug!(
                    file = %vo_path.display(),
                    "ignoring vomsdir entry that is not a VO directory"
                );
                continue;
            }
            let files = match sorted_entries(&vo_path) {
                Ok(files) => files,
                Err(e) => {
                    tracing::warn!(
                        dir = %vo_path.display(),
                        error = %e,
                        "skipping unreadable VO directory"
                    );
                    continue;
                }
            };
            let mut trust = VoTrust::default();
            for file in files {
                let Some(name) = visible_name(&file) else {
                    continue;
                };
                let result = if name.ends_with(".lsc") {
                    read_limited(&file).and_then(|text| {
                        let text =
                            String::from_utf8(text).map_err(|_| "not UTF-8 text".to_string())?;
                        let chains = parse_lsc(&text)?;
                        trust.lsc.extend(chains.into_iter().map(|dns| LscChain {
                            file: file.clone(),
                            dns,
                        }));
                        Ok(())
                    })
                } else if name.ends_with(".pem") {
                    read_limited(&file).and_then(|bytes| {
                        trust.certs.extend(parse_pem_certs(&bytes)?.into_iter().map(
                            |(subject, der)| LocalCert {
                                file: file.clone(),
                                subject,
                                der,
                            },
                        ));
                        Ok(())
                    })
                } else {
                    Ok(())
                };
                if let Err(reason) = result {
                    tracing::warn!(
                        file = %file.display(),
                        %reason,
                        "skipping unusable vomsdir file"
                    );
                }
            }
            if trust.lsc.is_empty() && trust.certs.is_empty() {
                tracing::warn!(
                    dir = %vo_path.display(),
                    "VO directory without usable .lsc or .pem file"
                );
                continue;
            }
            vomsdir.vos.insert(vo.to_string(), trust);
        }
        tracing::info!(dir = %dir.display(), vos = vomsdir.vos.len(), "vomsdir loaded");
        Ok(vomsdir)
    }

    /// A vomsdir that trusts no VOMS server: every AC fails with "no LSC/certificate".
    pub fn empty() -> VomsDir {
        VomsDir::default()
    }

    /// The VOs with at least one usable entry, sorted.
    pub fn vos(&self) -> Vec<&str> {
        let mut vos: Vec<&str> = self.vos.keys().map(String::as_str).collect();
        vos.sort_unstable();
        vos
    }
}

/// Entries of a directory, sorted so that loading is deterministic.
fn sorted_entries(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut paths = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()?;
    paths.sort();
    Ok(paths)
}

/// File name of a path unless it is hidden or not UTF-8 (VO names are ASCII).
fn visible_name(path: &Path) -> Option<&str> {
    let name = path.file_name()?.to_str()?;
    (!name.starts_with('.')).then_some(name)
}

fn read_limited(path: &Path) -> Result<Vec<u8>, String> {
    let len = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if len > MAX_VOMSDIR_FILE_BYTES {
        return Err(format!(
            "{len} bytes, more than the {MAX_VOMSDIR_FILE_BYTES} a vomsdir file may have"
        ));
    }
    std::fs::read(path).map_err(|e| e.to_string())
}

/// Chains of an `.lsc` file, each at least the server DN and its issuer DN (normalised).
fn parse_lsc(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut chains = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let mut finish = |current: &mut Vec<String>| -> Result<(), String> {
        match current.len() {
            0 => Ok(()),
            1 => Err(format!(
                "chain with only {}: the VOMS server DN must be followed by its CA DN",
                current[0]
            )),
            _ => {
                chains.push(std::mem::take(current));
                Ok(())
            }
        }
    };
    for line in text.lines() {
        let line = line.trim();
        if line == LSC_NEXT_CHAIN {
            finish(&mut current)?;
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // Some LSC files quote DNs that contain spaces.
        let dn = line
            .strip_prefix('"')
            .and_then(|l| l.strip_suffix('"'))
            .unwrap_or(line);
        if !dn.starts_with('/') {
            return Err(format!("line {line:?} is not a slash-form DN"));
        }
        current.push(normalize_dn(dn));
    }
    finish(&mut current)?;
    if chains.is_empty() {
        return Err("no DN in file".to_string());
    }
    Ok(chains)
}

/// Certificates of a PEM file with their normalised subjects.
fn parse_pem_certs(bytes: &[u8]) -> Result<Vec<(String, CertificateDer<'static>)>, String> {
    let mut certs = Vec::new();
    for cert in CertificateDer::pem_slice_iter(bytes) {
        let cert = cert.map_err(|e| e.to_string())?;
        let subject = match X509Certificate::from_der(&cert) {
            Ok((_, parsed)) => normalize_dn(&dn::oneline(parsed.subject())),
            Err(e) => return Err(format!("unreadable certificate: {e}")),
        };
        certs.push((subject, cert));
    }
    if certs.is_empty() {
        return Err("no certificate in file".to_string());
    }
    Ok(certs)
}

// ---------------------------------------------------------------------------------------------
// Verification

/// One verified AC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VomsAttributes {
    pub vo: String,
    pub fqans: Vec<String>,
    pub issuer_dn: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
}

/// Everything a verifier needs.
pub struct AcVerifier<'a> {
    pub vomsdir: &'a VomsDir,
    pub trust: &'a TrustStore,
    pub algs: Algorithms,
}

/// A certificate that may have signed an AC, and how the vomsdir vouches for it.
struct SignerCandidate<'c> {
    /// Where the certificate comes from, for error messages.
    source: String,
    cert: CertificateDer<'c>,
    /// The other certificates the AC carries, as possible intermediates (LSC route only).
    intermediates: Vec<CertificateDer<'c>>,
    /// The LSC chains whose first two lines matched (empty for the `.pem` route).
    lsc: Vec<&'c LscChain>,
}

impl AcVerifier<'_> {
    /// Verify every AC found in the extension value (`ext_value` = the extension's OCTET STRING
    /// contents) of a proxy whose end-entity (user) certificate is `holder`. One result per AC,
    /// in order.
    pub fn verify_extension(
        &self,
        ext_value: &[u8],
        holder: &X509Certificate<'_>,
        now: i64,
    ) -> Vec<Result<VomsAttributes, VomsError>> {
        let acs = match split_acseq(ext_value) {
            Ok(acs) => acs,
            Err(e) => return vec![Err(e)],
        };
        if acs.len() > MAX_ACS_PER_EXTENSION {
            return vec![Err(VomsError::TooManyAcs { count: acs.len() })];
        }
        acs.iter()
            .map(|ac| self.verify_ac(ac, holder, now))
            .collect()
    }

    /// FQANs of a (TLS-verified) chain: `chain[0]` is the leaf, `chain[eec]` the user
    /// certificate, `chain[..eec]` proxies. Looks at every proxy (nearest the user certificate
    /// first), verifies each AC, logs and skips ACs that fail, and returns the FQANs of the valid
    /// ones in AC order, de-duplicated keeping first occurrence.
    pub fn fqans_of_chain(
        &self,
        chain: &[X509Certificate<'_>],
        eec: usize,
        now: i64,
    ) -> Vec<String> {
        let Some(holder) = chain.get(eec) else {
            tracing::warn!(
                eec,
                chain_len = chain.len(),
                "no user certificate at the given chain position: VOMS attributes ignored"
            );
            return Vec::new();
        };
        let mut fqans = Vec::new();
        let mut seen = HashSet::new();
        for layer in (0..eec).rev() {
            let acseqs = chain[layer]
                .extensions()
                .iter()
                .filter(|ext| ext.oid.to_id_string() == OID_VOMS_ACSEQ);
            for ext in acseqs {
                for result in self.verify_extension(ext.value, holder, now) {
                    match result {
                        Ok(attrs) => {
                            for fqan in attrs.fqans {
                                if seen.insert(fqan.clone()) {
                                    fqans.push(fqan);
                                }
                            }
                        }
                        Err(e) => tracing::warn!(
                            proxy = layer,
                            ac_issuer = e.issuer().unwrap_or("unknown"),
                            error = %e,
                            "ignoring VOMS attribute certificate"
                        ),
                    }
                }
            }
        }
        fqans
    }

    /// All checks on one AC (DER).
    fn verify_ac(
        &self,
        ac: &[u8],
        holder: &X509Certificate<'_>,
        now: i64,
    ) -> Result<VomsAttributes, VomsError> {
        let parts = split_signed(ac).map_err(VomsError::Malformed)?;
        let info = AttributeCertificateInfo::from_der(parts.tbs)
            .map_err(|e| malformed("attribute certificate", e))?;
        if info.version != 1 {
            return Err(VomsError::Malformed(format!(
                "AC version {} (only v2 exists)",
                u16::from(info.version) + 1
            )));
        }
        let issuer = ac_issuer(&info.issuer)?;
        if info.signature.value() != parts.algorithm {
            return Err(VomsError::Malformed(format!(
                "AC from {issuer}: signature algorithm differs inside and outside the signed part"
            )));
        }
        if info.serial_number.as_bytes().len() > MAX_SERIAL_OCTETS {
            return Err(VomsError::Malformed(format!(
                "AC from {issuer}: serial number longer than {MAX_SERIAL_OCTETS} octets"
            )));
        }

        check_holder(&info.holder, holder).map_err(|reason| VomsError::HolderMismatch {
            issuer: issuer.clone(),
            reason,
        })?;

        let not_before = unix_seconds(&info.validity.not_before);
        let not_after = unix_seconds(&info.validity.not_after);
        if not_before > not_after {
            return Err(VomsError::Malformed(format!(
                "AC from {issuer}: notBefore is after notAfter"
            )));
        }
        if now.saturating_add(CLOCK_SKEW_SECS) < not_before {
            return Err(VomsError::NotYetValid { issuer, not_before });
        }
        if now > not_after {
            return Err(VomsError::Expired { issuer, not_after });
        }

        let certseq = check_extensions(info.extensions.as_deref().unwrap_or_default(), &issuer)?;

        let (vo, fqans) =
            voms_attributes(&info.attributes).map_err(|reason| VomsError::Attributes {
                issuer: issuer.clone(),
                reason,
            })?;

        self.verify_signer(&parts, &issuer, &vo, &certseq, now)?;

        Ok(VomsAttributes {
            vo,
            fqans,
            issuer_dn: issuer,
            not_before,
            not_after,
        })
    }

    /// Find the certificate the vomsdir trusts to sign for `vo` under the name `issuer`, check
    /// it chains to a trusted CA and that the AC signature verifies with it.
    fn verify_signer(
        &self,
        parts: &SignedParts<'_>,
        issuer: &str,
        vo: &str,
        certseq: &[Vec<u8>],
        now: i64,
    ) -> Result<(), VomsError> {
        let issuer_norm = normalize_dn(issuer);
        let no_lsc = || VomsError::NoLsc {
            issuer: issuer.to_string(),
            vo: vo.to_string(),
        };
        let vo_trust = self.vomsdir.vos.get(vo).ok_or_else(no_lsc)?;

        let mut candidates: Vec<SignerCandidate<'_>> = Vec::new();
        // The AC carries its signer's certificate (Java VOMS puts it first, the C library after
        // its issuers): the one named like the AC issuer, which an LSC entry must describe. The
        // other carried certificates may serve as intermediates.
        for (index, der) in certseq.iter().enumerate() {
            let Ok((_, cert)) = X509Certificate::from_der(der) else {
                continue;
            };
            let subject = normalize_dn(&dn::oneline(cert.subject()));
            if subject != issuer_norm {
                continue;
            }
            let cert_issuer = normalize_dn(&dn::oneline(cert.issuer()));
            let lsc: Vec<&LscChain> = vo_trust
                .lsc
                .iter()
                .filter(|c| c.dns[0] == subject && c.dns[1] == cert_issuer)
                .collect();
            let Some(first) = lsc.first() else {
                continue;
            };
            candidates.push(SignerCandidate {
                source: format!(
                    "certificate carried in the AC, listed in {}",
                    first.file.display()
                ),
                cert: CertificateDer::from(der.as_slice()),
                intermediates: certseq
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != index)
                    .map(|(_, c)| CertificateDer::from(c.as_slice()))
                    .collect(),
                lsc,
            });
        }
        candidates.extend(
            vo_trust
                .certs
                .iter()
                .filter(|c| c.subject == issuer_norm)
                .map(|c| SignerCandidate {
                    source: format!("certificate in {}", c.file.display()),
                    cert: c.der.clone(),
                    intermediates: Vec::new(),
                    lsc: Vec::new(),
                }),
        );

        let mut first_error = None;
        for candidate in &candidates {
            match self.check_candidate(parts, issuer, candidate, now) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or_else(no_lsc))
    }

    fn check_candidate(
        &self,
        parts: &SignedParts<'_>,
        issuer: &str,
        candidate: &SignerCandidate<'_>,
        now: i64,
    ) -> Result<(), VomsError> {
        let untrusted = |reason: String| VomsError::UntrustedServer {
            issuer: issuer.to_string(),
            reason: format!("{}: {reason}", candidate.source),
        };
        let (_, cert) = X509Certificate::from_der(&candidate.cert)
            .map_err(|e| untrusted(format!("unreadable certificate: {e}")))?;
        verify_signed(self.algs, parts, cert.public_key().raw).map_err(|reason| {
            VomsError::BadSignature {
                issuer: issuer.to_string(),
                reason,
            }
        })?;

        let ee = webpki::EndEntityCert::try_from(&candidate.cert)
            .map_err(|e| untrusted(format!("unusable certificate: {e:?}")))?;
        let crl_refs: Vec<&webpki::CertRevocationList<'_>> = self.trust.crls().iter().collect();
        let time =
            UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(now).unwrap_or_default()));
        // VOMS server certificates are host certificates: if they list extended key usages,
        // serverAuth is among them. Nothing requires clientAuth.
        let path = ee
            .verify_for_usage(
                self.algs,
                self.trust.anchors(),
                &candidate.intermediates,
                time,
                webpki::KeyUsage::server_auth(),
                TrustStore::revocation_options(&crl_refs),
                None,
            )
            .map_err(|e| untrusted(format!("{e:?}")))?;

        if candidate.lsc.is_empty() {
            return Ok(());
        }
        // LSC lines after the first two name the issuers further up: check them against the
        // path webpki built, as far as it goes (an anchor's own issuer is not known).
        let mut path_dns = vec![
            normalize_dn(&dn::oneline(cert.subject())),
            normalize_dn(&dn::oneline(cert.issuer())),
        ];
        for intermediate in path.intermediate_certificates() {
            let der = intermediate.der();
            let (_, parsed) = X509Certificate::from_der(&der)
                .map_err(|e| untrusted(format!("unreadable intermediate certificate: {e}")))?;
            path_dns.push(normalize_dn(&dn::oneline(parsed.issuer())));
        }
        let fits = |lsc: &&LscChain| lsc.dns.iter().zip(&path_dns).all(|(a, b)| a == b);
        if candidate.lsc.iter().any(fits) {
            Ok(())
        } else {
            let files: Vec<String> = candidate
                .lsc
                .iter()
                .map(|c| c.file.display().to_string())
                .collect();
            Err(untrusted(format!(
                "issuer chain {} differs from {}",
                path_dns.join(" <- "),
                files.join(", ")
            )))
        }
    }
}

fn unix_seconds(t: &GeneralizedTime) -> i64 {
    // GeneralizedTime in DER ends in year 9999: the seconds fit an i64 comfortably.
    i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
}

/// The AC issuer DN: v2Form with exactly one directoryName (RFC 5755 §4.2.3, and what VOMS
/// checks).
fn ac_issuer(form: &V2Form<'_>) -> Result<String, VomsError> {
    if form.base_certificate_id.is_some() || form.object_digest_info.is_some() {
        return Err(VomsError::Malformed(
            "AC issuer uses baseCertificateID/objectDigestInfo".to_string(),
        ));
    }
    let names = form
        .issuer_name
        .as_deref()
        .ok_or_else(|| VomsError::Malformed("AC without issuer name".to_string()))?;
    single_directory_name(names).map_err(|e| VomsError::Malformed(format!("AC issuer: {e}")))
}

/// The holder must designate the user certificate by its serial number and its issuer name
/// (RFC 5755, Java VOMS servers) or its subject name (the C VOMS library's default "old" format,
/// which `voms-proxy-fake` writes; VOMS and GridSite accept both).
fn check_holder(holder: &Holder<'_>, cert: &X509Certificate<'_>) -> Result<(), String> {
    if holder.object_digest_info.is_some() {
        return Err("holder given as an object digest".to_string());
    }
    let base = holder
        .base_certificate_id
        .as_ref()
        .ok_or("holder without baseCertificateID")?;
    let holder_name = normalize_dn(&single_directory_name(&base.issuer)?);
    let cert_issuer = normalize_dn(&dn::oneline(cert.issuer()));
    let cert_subject = normalize_dn(&dn::oneline(cert.subject()));
    if holder_name != cert_issuer && holder_name != cert_subject {
        return Err(format!(
            "holder {holder_name} is neither the issuer {cert_issuer} nor the subject \
             {cert_subject} of the user certificate"
        ));
    }
    if canonical_int(base.serial.as_bytes()) != canonical_int(cert.raw_serial()) {
        return Err(format!(
            "holder serial {} is not the user certificate serial {}",
            hex(base.serial.as_bytes()),
            hex(cert.raw_serial())
        ));
    }
    let cert_uid = cert.tbs_certificate.issuer_uid.as_ref().map(|u| &u.0.data);
    let ac_uid = base.issuer_uid.as_ref().map(|u| u.raw_bytes());
    if ac_uid != cert_uid.map(|d| d.as_ref()) {
        return Err("holder issuerUID differs from the user certificate's".to_string());
    }
    if let Some(names) = &holder.entity_name {
        let subject = normalize_dn(&dn::oneline(cert.subject()));
        for name in names {
            match name {
                GeneralName::DirectoryName(n)
                    if name_oneline(n).map(|d| normalize_dn(&d)).as_ref() == Ok(&subject) => {}
                _ => {
                    return Err("holder entityName is not the user certificate subject".to_string());
                }
            }
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// Checks the AC extensions; returns the certificates of the `certseq` extension (DER).
fn check_extensions(exts: &[Extension<'_>], issuer: &str) -> Result<Vec<Vec<u8>>, VomsError> {
    let mut seen = HashSet::new();
    let mut certseq = Vec::new();
    for ext in exts {
        if !seen.insert(ext.extn_id) {
            return Err(VomsError::Malformed(format!(
                "AC from {issuer}: extension {} appears twice",
                ext.extn_id
            )));
        }
        if ext.extn_id == OID_VOMS_CERTSEQ {
            let certs = AcCerts::from_der(ext.extn_value)
                .map_err(|e| malformed(&format!("AC from {issuer}: certseq extension"), e))?;
            for cert in &certs.certs {
                certseq.push(
                    cert.to_der()
                        .map_err(|e| malformed(&format!("AC from {issuer}: certseq"), e))?,
                );
            }
        } else if ext.extn_id == OID_AC_TARGETING {
            // Only a critical targeting extension must be understood (RFC 5755 makes it
            // critical; the C VOMS library looks at it only then).
            if ext.critical {
                parse_targeting(ext.extn_value)?;
            }
        } else if ext.critical && !UNDERSTOOD_EXTENSIONS.contains(&ext.extn_id) {
            return Err(VomsError::UnknownCriticalExtension {
                issuer: issuer.to_string(),
                oid: ext.extn_id.to_string(),
            });
        }
    }
    Ok(certseq)
}

/// VO and FQANs of the one VOMS attribute: policyAuthority `vo://host:port`, values = FQANs
/// (OCTET STRINGs) that all lie under `/vo`.
fn voms_attributes(attributes: &[Attribute<'_>]) -> Result<(String, Vec<String>), String> {
    let mut voms = attributes
        .iter()
        .filter(|a| a.attr_type == OID_VOMS_ATTRIBUTES);
    let attribute = voms.next().ok_or("no VOMS attribute")?;
    if voms.next().is_some() {
        return Err("more than one VOMS attribute".to_string());
    }
    let [value] = attribute.values.as_slice() else {
        return Err(format!(
            "VOMS attribute with {} values, expected one",
            attribute.values.len()
        ));
    };
    let syntax: IetfAttrSyntax<'_> = value
        .decode_as()
        .map_err(|e| format!("unreadable VOMS attribute: {e}"))?;
    let authority = match syntax.policy_authority.as_deref() {
        Some([GeneralName::Uri(uri)]) => uri.as_str(),
        _ => return Err("policyAuthority is not one vo://host:port URI".to_string()),
    };
    let vo = match authority.split_once("://") {
        Some((vo, _)) if !vo.is_empty() && !vo.contains('/') => vo,
        _ => {
            return Err(format!(
                "policyAuthority {authority:?} is not vo://host:port"
            ));
        }
    };
    let top_group = format!("/{vo}");
    let mut fqans = Vec::with_capacity(syntax.values.len());
    for value in &syntax.values {
        let IetfAttrValue::Octets(bytes) = value else {
            return Err("FQAN not encoded as an OCTET STRING".to_string());
        };
        let fqan =
            std::str::from_utf8(bytes.as_bytes()).map_err(|_| "FQAN is not UTF-8".to_string())?;
        // The FQAN's top group is the VO: `/vo` alone or followed by `/`.
        let under_vo = fqan
            .strip_prefix(&top_group)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        if !under_vo {
            return Err(format!("FQAN {fqan:?} is not in VO {vo}"));
        }
        fqans.push(fqan.to_string());
    }
    if fqans.is_empty() {
        return Err("no FQAN".to_string());
    }
    Ok((vo.to_string(), fqans))
}

#[cfg(test)]
mod tests {
    //! Fixtures come from `tests/pki/make-test-pki.sh` (run once per test process) and from
    //! `voms-proxy-fake` / `openssl` runs made here, so nothing expires in the repository.

    use std::{
        process::Command,
        sync::OnceLock,
        time::{SystemTime, UNIX_EPOCH},
    };

    use rustls_pki_types::SignatureVerificationAlgorithm;

    use super::*;

    const VOMS_DN: &str = "/DC=org/DC=example/CN=voms.example.org";
    const CA_DN: &str = "/DC=org/DC=example/CN=Test CA";
    const FQAN: &str = "/dteam/Role=NULL/Capability=NULL";

    static ALGS: &[&dyn SignatureVerificationAlgorithm] = &[
        webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256,
        webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA384,
        webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA512,
        webpki::aws_lc_rs::ECDSA_P256_SHA256,
        webpki::aws_lc_rs::ECDSA_P384_SHA384,
    ];

    fn in_ci() -> bool {
        std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
    }

    /// The test PKI, or `None` (with a message) when voms-proxy-fake is missing outside CI.
    fn pki() -> Option<&'static Path> {
        static PKI: OnceLock<Option<PathBuf>> = OnceLock::new();
        PKI.get_or_init(|| {
            let found = Command::new("sh")
                .args(["-c", "command -v voms-proxy-fake"])
                .output()
                .is_ok_and(|o| o.status.success());
            if !found {
                assert!(
                    !in_ci(),
                    "voms-proxy-fake is required in CI (apt-get install voms-clients)"
                );
                eprintln!(
                    "SKIPPING VOMS tests: voms-proxy-fake not installed \
                     (apt-get install voms-clients)"
                );
                return None;
            }
            // Kept: a static is never dropped, and later tests of this process use the files.
            let dir = tempfile::Builder::new()
                .prefix("ftsd-voms-pki-")
                .tempdir()
                .unwrap()
                .keep();
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pki/make-test-pki.sh");
            let out = Command::new("bash")
                .arg(&script)
                .arg(&dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "make-test-pki.sh failed:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            Some(dir)
        })
        .as_deref()
    }

    fn now() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    /// The certificates of a PEM file (proxy files: proxy, user certificate), as DER.
    fn certs(path: &Path) -> Vec<Vec<u8>> {
        CertificateDer::pem_file_iter(path)
            .unwrap()
            .map(|c| c.unwrap().to_vec())
            .collect()
    }

    fn parse(ders: &[Vec<u8>]) -> Vec<X509Certificate<'_>> {
        ders.iter()
            .map(|d| X509Certificate::from_der(d).unwrap().1)
            .collect()
    }

    fn acseq<'a>(cert: &'a X509Certificate<'_>) -> &'a [u8] {
        cert.extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == OID_VOMS_ACSEQ)
            .expect("proxy has a VOMS extension")
            .value
    }

    fn trust(pki: &Path) -> TrustStore {
        TrustStore::load(&pki.join("certificates")).unwrap()
    }

    /// A vomsdir made of `(relative path, contents)` files.
    fn vomsdir_of(files: &[(&str, &[u8])]) -> (tempfile::TempDir, VomsDir) {
        let dir = tempfile::tempdir().unwrap();
        for (name, contents) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, contents).unwrap();
        }
        let vomsdir = VomsDir::load(dir.path()).unwrap();
        (dir, vomsdir)
    }

    /// Verify the ACs of the proxy file `proxy` (proxy first, user certificate last).
    fn verify_file(
        pki: &Path,
        vomsdir: &VomsDir,
        proxy: &Path,
        at: i64,
    ) -> Vec<Result<VomsAttributes, VomsError>> {
        let ders = certs(proxy);
        let chain = parse(&ders);
        let trust = trust(pki);
        let verifier = AcVerifier {
            vomsdir,
            trust: &trust,
            algs: ALGS,
        };
        verifier.verify_extension(acseq(&chain[0]), chain.last().unwrap(), at)
    }

    fn fqans_of_file(pki: &Path, vomsdir: &VomsDir, proxy: &Path) -> Vec<String> {
        let ders = certs(proxy);
        let chain = parse(&ders);
        let trust = trust(pki);
        AcVerifier {
            vomsdir,
            trust: &trust,
            algs: ALGS,
        }
        .fqans_of_chain(&chain, chain.len() - 1, now())
    }

    fn one(
        mut results: Vec<Result<VomsAttributes, VomsError>>,
    ) -> Result<VomsAttributes, VomsError> {
        assert_eq!(results.len(), 1, "{results:?}");
        results.remove(0)
    }

    /// `voms-proxy-fake` for Test User with VO dteam, signed by `host` (`<host>cert.pem`,
    /// `<host>key.pem` in `dir`, default the PKI's VOMS server), written to `dir/out`.
    fn fake_proxy(pki: &Path, dir: &Path, out: &str, host: Option<&str>, args: &[&str]) -> PathBuf {
        let (hostcert, hostkey) = match host {
            Some(h) => (
                dir.join(format!("{h}cert.pem")),
                dir.join(format!("{h}key.pem")),
            ),
            None => (pki.join("vomscert.pem"), pki.join("vomskey.pem")),
        };
        let path = dir.join(out);
        let result = Command::new("voms-proxy-fake")
            .current_dir(dir)
            .env("X509_CERT_DIR", pki.join("certificates"))
            .env("X509_VOMS_DIR", pki.join("vomsdir"))
            .args(["-rfc", "-cert"])
            .arg(pki.join("usercert.pem"))
            .arg("-key")
            .arg(pki.join("userkey.pem"))
            .arg("-hostcert")
            .arg(hostcert)
            .arg("-hostkey")
            .arg(hostkey)
            .args([
                "-voms",
                "dteam",
                "-uri",
                "voms.example.org:15000",
                "-hours",
                "12",
            ])
            .args(args)
            .arg("-out")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            result.status.success() && path.exists(),
            "voms-proxy-fake failed:\n{}\n{}",
            String::from_utf8_lossy(&result.stdout),
            String::from_utf8_lossy(&result.stderr)
        );
        path
    }

    fn openssl(dir: &Path, args: &[&str]) {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `<name>cert.pem` / `<name>key.pem` in `dir`: a certificate for `subject` issued by the
    /// CA `ca` (`<ca>cert.pem`/`<ca>key.pem` in `dir`, or the PKI's Test CA) with `extensions`
    /// from `cnf`.
    fn issue(
        pki: &Path,
        dir: &Path,
        name: &str,
        subject: &str,
        ca: Option<&str>,
        cnf: &Path,
        extensions: &str,
    ) {
        let (ca_cert, ca_key) = match ca {
            Some(ca) => (
                dir.join(format!("{ca}cert.pem")),
                dir.join(format!("{ca}key.pem")),
            ),
            None => (pki.join("ca.pem"), pki.join("ca.key")),
        };
        let key = format!("{name}key.pem");
        let csr = format!("{name}.csr");
        let cert = format!("{name}cert.pem");
        openssl(
            dir,
            &[
                "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr,
                "-subj", subject,
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                ca_cert.to_str().unwrap(),
                "-CAkey",
                ca_key.to_str().unwrap(),
                "-set_serial",
                "0x3003",
                "-days",
                "30",
                "-sha256",
                "-extfile",
                cnf.to_str().unwrap(),
                "-extensions",
                extensions,
                "-out",
                &cert,
            ],
        );
    }

    /// The single AC of a proxy's VOMS extension, re-signed with `key` after `edit`; returns
    /// the new extension value.
    fn resign<'a>(
        dir: &Path,
        ext: &'a [u8],
        key: &Path,
        edit: impl FnOnce(&mut AttributeCertificateInfo<'a>),
    ) -> Vec<u8> {
        #[derive(Sequence)]
        struct SignedAc<'b> {
            info: AnyRef<'b>,
            algorithm: AnyRef<'b>,
            signature: BitStringRef<'b>,
        }
        let acs = Vec::<Vec<AnyRef<'a>>>::from_der(ext).unwrap();
        let ac: SignedAc<'a> = acs[0][0].decode_as().unwrap();
        let mut info: AttributeCertificateInfo<'a> = ac.info.decode_as().unwrap();
        edit(&mut info);
        let tbs = info.to_der().unwrap();
        std::fs::write(dir.join("tbs.der"), &tbs).unwrap();
        openssl(
            dir,
            &[
                "dgst",
                "-sha256",
                "-sign",
                key.to_str().unwrap(),
                "-out",
                "tbs.sig",
                "tbs.der",
            ],
        );
        let sig = std::fs::read(dir.join("tbs.sig")).unwrap();
        let signed = SignedAc {
            info: AnyRef::try_from(tbs.as_slice()).unwrap(),
            algorithm: ac.algorithm,
            signature: BitStringRef::from_bytes(&sig).unwrap(),
        }
        .to_der()
        .unwrap();
        vec![vec![AnyRef::try_from(signed.as_slice()).unwrap()]]
            .to_der()
            .unwrap()
    }

    fn standard_vomsdir(pki: &Path) -> VomsDir {
        VomsDir::load(&pki.join("vomsdir")).unwrap()
    }

    #[test]
    fn the_voms_proxy_ac_verifies_with_its_vo_fqan_and_issuer() {
        let Some(pki) = pki() else { return };
        let vomsdir = standard_vomsdir(pki);
        for file in ["proxy_voms.pem", "proxy_voms_legacy.pem"] {
            let attrs = one(verify_file(pki, &vomsdir, &pki.join(file), now()))
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(attrs.vo, "dteam", "{file}");
            assert_eq!(attrs.fqans, [FQAN], "{file}");
            assert_eq!(attrs.issuer_dn, VOMS_DN, "{file}");
            assert!(
                attrs.not_before <= now() && now() <= attrs.not_after,
                "{file}"
            );
            assert_eq!(
                fqans_of_file(pki, &vomsdir, &pki.join(file)),
                [FQAN],
                "{file}"
            );
        }
    }

    #[test]
    fn several_fqans_are_kept_in_order() {
        let Some(pki) = pki() else { return };
        let dir = tempfile::tempdir().unwrap();
        let fqans = ["/dteam/Role=NULL", "/dteam/test/Role=NULL/Capability=NULL"];
        let proxy = fake_proxy(
            pki,
            dir.path(),
            "two.pem",
            None,
            &["-fqan", fqans[0], "-fqan", fqans[1]],
        );
        let vomsdir = standard_vomsdir(pki);
        let attrs = one(verify_file(pki, &vomsdir, &proxy, now())).unwrap();
        assert_eq!(attrs.fqans, fqans);
        assert_eq!(fqans_of_file(pki, &vomsdir, &proxy), fqans);
    }

    #[test]
    fn without_a_matching_lsc_the_ac_is_refused() {
        let Some(pki) = pki() else { return };
        let proxy = pki.join("proxy_voms.pem");
        let expected = format!("no LSC/certificate for VOMS server {VOMS_DN} in VO dteam");

        let empty = VomsDir::empty();
        let err = one(verify_file(pki, &empty, &proxy, now())).unwrap_err();
        assert_eq!(err.to_string(), expected);
        assert!(fqans_of_file(pki, &empty, &proxy).is_empty());

        let other_server = format!("/DC=org/DC=example/CN=other.example.org\n{CA_DN}\n");
        let other_ca = format!("{VOMS_DN}\n/DC=org/DC=example/CN=Other CA\n");
        let cases: [(&str, &str); 3] = [
            ("dteam/voms.example.org.lsc", &other_server),
            ("dteam/voms.example.org.lsc", &other_ca),
            (
                "atlas/voms.example.org.lsc",
                "/DC=org/DC=example/CN=voms.example.org\n/DC=org/DC=example/CN=Test CA\n",
            ),
        ];
        for (name, lsc) in cases {
            let (_dir, vomsdir) = vomsdir_of(&[(name, lsc.as_bytes())]);
            let err = one(verify_file(pki, &vomsdir, &proxy, now())).unwrap_err();
            assert!(
                matches!(err, VomsError::NoLsc { .. }),
                "{name}: {lsc}: {err}"
            );
            assert_eq!(err.to_string(), expected);
            assert!(fqans_of_file(pki, &vomsdir, &proxy).is_empty());
        }
    }

    #[test]
    fn an_lsc_with_comments_quotes_and_several_chains_is_understood() {
        let Some(pki) = pki() else { return };
        let lsc = format!(
            "# VOMS server of dteam\n\n/DC=org/DC=example/CN=old.example.org\n{CA_DN}\n\
             {LSC_NEXT_CHAIN}\n\"{VOMS_DN}\"\n  {CA_DN}  \n"
        );
        let (_dir, vomsdir) = vomsdir_of(&[("dteam/voms.example.org.lsc", lsc.as_bytes())]);
        let attrs = one(verify_file(
            pki,
            &vomsdir,
            &pki.join("proxy_voms.pem"),
            now(),
        ))
        .unwrap();
        assert_eq!(attrs.fqans, [FQAN]);
    }

    #[test]
    fn an_ac_is_only_valid_inside_its_validity_period() {
        let Some(pki) = pki() else { return };
        let vomsdir = standard_vomsdir(pki);
        let proxy = pki.join("proxy_voms.pem");
        let attrs = one(verify_file(pki, &vomsdir, &proxy, now())).unwrap();

        let err = one(verify_file(pki, &vomsdir, &proxy, attrs.not_after + 1)).unwrap_err();
        assert!(matches!(err, VomsError::Expired { .. }), "{err}");
        assert!(err.to_string().contains(VOMS_DN), "{err}");

        let early = attrs.not_before - CLOCK_SKEW_SECS - 1;
        let err = one(verify_file(pki, &vomsdir, &proxy, early)).unwrap_err();
        assert!(matches!(err, VomsError::NotYetValid { .. }), "{err}");
    }

    #[test]
    fn a_flipped_signature_byte_is_refused() {
        let Some(pki) = pki() else { return };
        let ders = certs(&pki.join("proxy_voms.pem"));
        let chain = parse(&ders);
        let mut ext = acseq(&chain[0]).to_vec();
        // The proxy holds one AC, which ends with its signature BIT STRING: the last byte of the
        // extension is a signature byte.
        *ext.last_mut().unwrap() ^= 0x01;
        let trust = trust(pki);
        let vomsdir = standard_vomsdir(pki);
        let verifier = AcVerifier {
            vomsdir: &vomsdir,
            trust: &trust,
            algs: ALGS,
        };
        let err = one(verifier.verify_extension(&ext, &chain[1], now())).unwrap_err();
        assert!(matches!(err, VomsError::BadSignature { .. }), "{err}");
        assert_eq!(err.issuer(), Some(VOMS_DN));
    }

    #[test]
    fn an_ac_for_another_user_certificate_is_refused() {
        let Some(pki) = pki() else { return };
        let ders = certs(&pki.join("proxy_voms.pem"));
        let chain = parse(&ders);
        let other_user = certs(&pki.join("user2cert.pem"));
        let other_user = parse(&other_user);
        let trust = trust(pki);
        let vomsdir = standard_vomsdir(pki);
        let verifier = AcVerifier {
            vomsdir: &vomsdir,
            trust: &trust,
            algs: ALGS,
        };
        let err =
            one(verifier.verify_extension(acseq(&chain[0]), &other_user[0], now())).unwrap_err();
        assert!(matches!(err, VomsError::HolderMismatch { .. }), "{err}");

        // Same name, same CA, another certificate: the serial tells them apart.
        let dir = tempfile::tempdir().unwrap();
        let cnf = pki.join("openssl.cnf");
        openssl(
            dir.path(),
            &[
                "req",
                "-new",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "twinkey.pem",
                "-out",
                "twin.csr",
                "-subj",
                "/DC=org/DC=example/CN=Test User",
            ],
        );
        openssl(
            dir.path(),
            &[
                "x509",
                "-req",
                "-in",
                "twin.csr",
                "-CA",
                pki.join("ca.pem").to_str().unwrap(),
                "-CAkey",
                pki.join("ca.key").to_str().unwrap(),
                "-set_serial",
                "0x1005",
                "-days",
                "1",
                "-sha256",
                "-extfile",
                cnf.to_str().unwrap(),
                "-extensions",
                "v3_user",
                "-out",
                "twincert.pem",
            ],
        );
        let twin = certs(&dir.path().join("twincert.pem"));
        let twin = parse(&twin);
        let err = one(verifier.verify_extension(acseq(&chain[0]), &twin[0], now())).unwrap_err();
        assert!(matches!(err, VomsError::HolderMismatch { .. }), "{err}");
        assert!(err.to_string().contains("serial"), "{err}");
    }

    #[test]
    fn a_holder_named_by_the_user_certificate_issuer_verifies_too() {
        let Some(pki) = pki() else { return };
        let dir = tempfile::tempdir().unwrap();
        // -newformat: holder = issuer name + serial (RFC 5755, as Java VOMS servers write it).
        let proxy = fake_proxy(
            pki,
            dir.path(),
            "new.pem",
            None,
            &["-newformat", "-fqan", FQAN],
        );
        let attrs = one(verify_file(pki, &standard_vomsdir(pki), &proxy, now())).unwrap();
        assert_eq!(attrs.fqans, [FQAN]);
    }

    #[test]
    fn an_fqan_outside_the_acs_vo_is_refused() {
        let Some(pki) = pki() else { return };
        let dir = tempfile::tempdir().unwrap();
        // voms-proxy-fake puts both FQANs in one AC whose VO is dteam.
        let proxy = fake_proxy(
            pki,
            dir.path(),
            "mixed.pem",
            None,
            &["-fqan", "/dteam/Role=NULL", "-fqan", "/dteamx/Role=NULL"],
        );
        let err = one(verify_file(pki, &standard_vomsdir(pki), &proxy, now())).unwrap_err();
        assert!(matches!(err, VomsError::Attributes { .. }), "{err}");
        assert!(err.to_string().contains("/dteamx/Role=NULL"), "{err}");
    }

    #[test]
    fn unknown_critical_ac_extensions_are_refused_and_non_critical_ones_ignored() {
        let Some(pki) = pki() else { return };
        let dir = tempfile::tempdir().unwrap();
        let vomsdir = standard_vomsdir(pki);
        let critical = fake_proxy(
            pki,
            dir.path(),
            "crit.pem",
            None,
            &["-fqan", FQAN, "-acextension", "1.2.3.4/true:hello"],
        );
        let err = one(verify_file(pki, &vomsdir, &critical, now())).unwrap_err();
        assert!(
            matches!(&err, VomsError::UnknownCriticalExtension { oid, .. } if oid == "1.2.3.4"),
            "{err}"
        );
        let plain = fake_proxy(
            pki,
            dir.path(),
            "noncrit.pem",
            None,
            &["-fqan", FQAN, "-acextension", "1.2.3.4/false:hello"],
        );
        assert_eq!(
            one(verify_file(pki, &vomsdir, &plain, now()))
                .unwrap()
                .fqans,
            [FQAN]
        );
    }

    #[test]
    fn generic_attributes_do_not_get_in_the_way() {
        let Some(pki) = pki() else { return };
        let dir = tempfile::tempdir().unwrap();
        let proxy = fake_proxy(
            pki,
            dir.path(),
            "ga.pem",
            None,
            &["-fqan", FQAN, "-ga", "nickname=tester"],
        );
        let attrs = one(verify_file(pki, &standard_vomsdir(pki), &proxy, now())).unwrap();
        assert_eq!(attrs.fqans, [FQAN]);
    }

    #[test]
    fn the_pem_in_vomsdir_layout_works() {
        let Some(pki) = pki() else { return };
        let cert = std::fs::read(pki.join("vomscert.pem")).unwrap();
        let (_dir, vomsdir) = vomsdir_of(&[("dteam/voms.example.org.pem", &cert)]);
        let attrs = one(verify_file(
            pki,
            &vomsdir,
            &pki.join("proxy_voms.pem"),
            now(),
        ))
        .unwrap();
        assert_eq!(attrs.fqans, [FQAN]);
        // The certificate of another server with another name does not vouch for this one.
        let other = std::fs::read(pki.join("hostcert.pem")).unwrap();
        let (_dir, vomsdir) = vomsdir_of(&[("dteam/localhost.pem", &other)]);
        let err = one(verify_file(
            pki,
            &vomsdir,
            &pki.join("proxy_voms.pem"),
            now(),
        ))
        .unwrap_err();
        assert!(matches!(err, VomsError::NoLsc { .. }), "{err}");
    }

    #[test]
    fn a_voms_server_certificate_from_an_untrusted_ca_is_refused() {
        let Some(pki) = pki() else { return };
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let cnf = pki.join("openssl.cnf");
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-new",
                "-config",
                cnf.to_str().unwrap(),
                "-extensions",
                "v3_ca",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "evilcakey.pem",
                "-out",
                "evilcacert.pem",
                "-days",
                "30",
                "-sha256",
                "-subj",
                "/DC=org/DC=example/CN=Evil CA",
            ],
        );
        issue(pki, d, "evil", VOMS_DN, Some("evilca"), &cnf, "v3_voms");
        let proxy = fake_proxy(pki, d, "evil.pem", Some("evil"), &["-fqan", FQAN]);

        // The real vomsdir names the real CA: no match at all.
        let err = one(verify_file(pki, &standard_vomsdir(pki), &proxy, now())).unwrap_err();
        assert!(matches!(err, VomsError::NoLsc { .. }), "{err}");
        // A vomsdir that names the rogue CA still needs that CA to be trusted.
        let lsc = format!("{VOMS_DN}\n/DC=org/DC=example/CN=Evil CA\n");
        let (_dir, vomsdir) = vomsdir_of(&[("dteam/voms.example.org.lsc", lsc.as_bytes())]);
        let err = one(verify_file(pki, &vomsdir, &proxy, now())).unwrap_err();
        assert!(matches!(err, VomsError::UntrustedServer { .. }), "{err}");
        let cert = std::fs::read(d.join("evilcert.pem")).unwrap();
        let (_dir, vomsdir) = vomsdir_of(&[("dteam/voms.example.org.pem", &cert)]);
        let err = one(verify_file(pki, &vomsdir, &proxy, now())).unwrap_err();
        assert!(matches!(err, VomsError::UntrustedServer { .. }), "{err}");
        assert!(fqans_of_file(pki, &vomsdir, &proxy).is_empty());
        // And the real server's certificate does not verify the rogue signature.
        let real = std::fs::read(pki.join("vomscert.pem")).unwrap();
        let (_dir, vomsdir) = vomsdir_of(&[("dteam/voms.example.org.pem", &real)]);
        let err = one(verify_file(pki, &vomsdir, &proxy, now())).unwrap_err();
        assert!(matches!(err, VomsError::BadSignature { .. }), "{err}");
    }

    #[test]
    fn a_voms_server_under_a_sub_ca_is_checked_against_every_lsc_line() {
        let Some(pki) = pki() else { return };
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        const SUB_CA_DN: &str = "/DC=org/DC=example/CN=Test Sub CA";
        const VOMS2_DN: &str = "/DC=org/DC=example/CN=voms2.example.org";
        let cnf = d.join("sub.cnf");
        std::fs::write(
            &cnf,
            std::fs::read_to_string(pki.join("openssl.cnf")).unwrap()
                + "[v3_sub]\nbasicConstraints = critical, CA:TRUE\n\
                   keyUsage = critical, keyCertSign, cRLSign\n\
                   subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n",
        )
        .unwrap();
        issue(pki, d, "sub", SUB_CA_DN, None, &cnf, "v3_sub");
        issue(pki, d, "voms2", VOMS2_DN, Some("sub"), &cnf, "v3_voms");
        let proxy = fake_proxy(pki, d, "voms2.pem", Some("voms2"), &["-fqan", FQAN]);
        let ders = certs(&proxy);
        let chain = parse(&ders);
        let trust = trust(pki);
        let lsc3 = format!("{VOMS2_DN}\n{SUB_CA_DN}\n{CA_DN}\n");
        let (_dir, vomsdir) = vomsdir_of(&[("dteam/voms2.example.org.lsc", lsc3.as_bytes())]);
        let verifier = AcVerifier {
            vomsdir: &vomsdir,
            trust: &trust,
            algs: ALGS,
        };

        // voms-proxy-fake carries only the server certificate, and the sub-CA is not trusted.
        let err = one(verifier.verify_extension(acseq(&chain[0]), &chain[1], now())).unwrap_err();
        assert!(matches!(err, VomsError::UntrustedServer { .. }), "{err}");

        // With the sub-CA carried too (either order), the LSC lines are checked to the root.
        let server = std::fs::read(d.join("voms2cert.pem")).unwrap();
        let sub = std::fs::read(d.join("subcert.pem")).unwrap();
        let server = CertificateDer::from_pem_slice(&server).unwrap();
        let sub = CertificateDer::from_pem_slice(&sub).unwrap();
        for order in [[&server, &sub], [&sub, &server]] {
            let certseq = AcCerts {
                certs: order
                    .iter()
                    .map(|c| AnyRef::try_from(c.as_ref()).unwrap())
                    .collect(),
            }
            .to_der()
            .unwrap();
            let ext = resign(d, acseq(&chain[0]), &d.join("voms2key.pem"), |info| {
                for ext in info.extensions.as_mut().unwrap() {
                    if ext.extn_id == OID_VOMS_CERTSEQ {
                        ext.extn_value = &certseq;
                    }
                }
            });
            let attrs = one(verifier.verify_extension(&ext, &chain[1], now())).unwrap();
            assert_eq!(attrs.issuer_dn, VOMS2_DN);

            for (lsc, ok) in [
                (format!("{VOMS2_DN}\n{SUB_CA_DN}\n"), true),
                (
                    format!("{VOMS2_DN}\n{SUB_CA_DN}\n{CA_DN}\n/DC=org/CN=beyond the anchor\n"),
                    true,
                ),
                (
                    format!("{VOMS2_DN}\n{SUB_CA_DN}\n/DC=org/DC=example/CN=Other Root\n"),
                    false,
                ),
            ] {
                let (_dir, vomsdir) =
                    vomsdir_of(&[("dteam/voms2.example.org.lsc", lsc.as_bytes())]);
                let verifier = AcVerifier {
                    vomsdir: &vomsdir,
                    trust: &trust,
                    algs: ALGS,
                };
                let result = one(verifier.verify_extension(&ext, &chain[1], now()));
                match result {
                    Ok(_) => assert!(ok, "{lsc} accepted"),
                    Err(VomsError::UntrustedServer { reason, .. }) if !ok => {
                        assert!(reason.contains("differs"), "{reason}")
                    }
                    Err(e) => panic!("{lsc}: {e}"),
                }
            }
        }
    }

    #[test]
    fn a_revoked_voms_server_certificate_is_refused() {
        let Some(pki) = pki() else { return };
        let dir = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(pki.join("certificates")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
        // `openssl ca` (rcgen cannot spell the CA name: it merges the two DC attributes).
        let ca_dir = tempfile::tempdir().unwrap();
        let c = ca_dir.path();
        std::fs::write(c.join("index.txt"), "").unwrap();
        std::fs::write(c.join("crlnumber"), "01\n").unwrap();
        std::fs::write(
            c.join("ca.cnf"),
            "[ca]\ndefault_ca = test\n[test]\ndatabase = index.txt\ncrlnumber = crlnumber\n\
             default_md = sha256\ndefault_crl_days = 1\n",
        )
        .unwrap();
        let (ca_cert, ca_key, voms_cert) = (
            pki.join("ca.pem"),
            pki.join("ca.key"),
            pki.join("vomscert.pem"),
        );
        let ca = [
            "-config",
            "ca.cnf",
            "-cert",
            ca_cert.to_str().unwrap(),
            "-keyfile",
            ca_key.to_str().unwrap(),
        ];
        openssl(
            c,
            &[
                &["ca"][..],
                &ca,
                &[
                    "-revoke",
                    voms_cert.to_str().unwrap(),
                    "-crl_reason",
                    "keyCompromise",
                ],
            ]
            .concat(),
        );
        openssl(
            c,
            &[&["ca"][..], &ca, &["-gencrl", "-out", "crl.pem"]].concat(),
        );
        std::fs::copy(c.join("crl.pem"), dir.path().join("testca.r0")).unwrap();
        let trust = TrustStore::load(dir.path()).unwrap();
        let ders = certs(&pki.join("proxy_voms.pem"));
        let chain = parse(&ders);
        let vomsdir = standard_vomsdir(pki);
        let verifier = AcVerifier {
            vomsdir: &vomsdir,
            trust: &trust,
            algs: ALGS,
        };
        let err = one(verifier.verify_extension(acseq(&chain[0]), &chain[1], now())).unwrap_err();
        assert!(
            matches!(&err, VomsError::UntrustedServer { reason, .. } if reason.contains("Revoked")),
            "{err}"
        );
    }

    #[test]
    fn every_ac_of_an_extension_gets_its_own_result_in_order() {
        let Some(pki) = pki() else { return };
        let dir = tempfile::tempdir().unwrap();
        let bad = fake_proxy(
            pki,
            dir.path(),
            "bad.pem",
            None,
            &["-fqan", "/atlas/Role=NULL"],
        );
        let good_ders = certs(&pki.join("proxy_voms.pem"));
        let bad_ders = certs(&bad);
        let good = parse(&good_ders);
        let bad = parse(&bad_ders);
        let mut acs = Vec::new();
        for proxy in [&good[0], &bad[0], &good[0]] {
            acs.extend(
                Vec::<Vec<AnyRef<'_>>>::from_der(acseq(proxy))
                    .unwrap()
                    .into_iter()
                    .flatten(),
            );
        }
        let ext = vec![acs].to_der().unwrap();
        let trust = trust(pki);
        let vomsdir = standard_vomsdir(pki);
        let verifier = AcVerifier {
            vomsdir: &vomsdir,
            trust: &trust,
            algs: ALGS,
        };
        let results = verifier.verify_extension(&ext, &good[1], now());
        assert_eq!(results.len(), 3);
        assert!(
            results[0].is_ok() && results[1].is_err() && results[2].is_ok(),
            "{results:?}"
        );

        // A chain whose proxies carry these ACs: the valid FQAN once.
        let mut leaf_ders = good_ders.clone();
        leaf_ders.insert(0, good_ders[0].clone());
        let chain = parse(&leaf_ders);
        assert_eq!(verifier.fqans_of_chain(&chain, 2, now()), [FQAN]);
        assert!(verifier.fqans_of_chain(&chain, 3, now()).is_empty());
        assert!(verifier.fqans_of_chain(&chain, 0, now()).is_empty());
    }

    #[test]
    fn garbage_in_the_extension_is_one_error() {
        let Some(pki) = pki() else { return };
        let ders = certs(&pki.join("usercert.pem"));
        let user = parse(&ders);
        let trust = trust(pki);
        let vomsdir = VomsDir::empty();
        let verifier = AcVerifier {
            vomsdir: &vomsdir,
            trust: &trust,
            algs: ALGS,
        };
        for garbage in [&b""[..], b"\x30\x03\x02\x01\x01", b"hello"] {
            let err = one(verifier.verify_extension(garbage, &user[0], now())).unwrap_err();
            assert!(matches!(err, VomsError::Malformed(_)), "{err}");
        }
        let too_many = vec![vec![
            AnyRef::from(der::asn1::Null);
            MAX_ACS_PER_EXTENSION + 1
        ]];
        let err = one(verifier.verify_extension(&too_many.to_der().unwrap(), &user[0], now()))
            .unwrap_err();
        assert!(matches!(err, VomsError::TooManyAcs { .. }), "{err}");
    }

    #[test]
    fn lsc_files_are_parsed_and_garbled_ones_rejected() {
        let text = "# comment\n\n/DC=org/CN=voms\n/DC=org/CN=CA\n/DC=org/CN=Root\n\
                    ------ NEXT CHAIN ------\n\"/DC=org/USERID=x\"\n/DC=org/CN=CA\n";
        assert_eq!(
            parse_lsc(text).unwrap(),
            [
                vec!["/DC=org/CN=voms", "/DC=org/CN=CA", "/DC=org/CN=Root"],
                vec!["/DC=org/UID=x", "/DC=org/CN=CA"],
            ]
        );
        assert!(
            parse_lsc("/DC=org/CN=voms\n").is_err(),
            "a chain needs the CA line"
        );
        assert!(parse_lsc("DC=org, CN=voms\n/DC=org/CN=CA\n").is_err());
        assert!(parse_lsc("# nothing\n").is_err());
    }

    #[test]
    fn loading_a_vomsdir_skips_unusable_files_and_fails_without_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, contents: &[u8]| {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, contents).unwrap();
        };
        write("dteam/good.lsc", b"/DC=org/CN=voms\n/DC=org/CN=CA\n");
        write("dteam/garbled.lsc", b"/DC=org/CN=voms\n");
        write(
            "dteam/broken.pem",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        write("dteam/README", b"ignored");
        write("atlas/only-garbage.lsc", b"\xff\xfe");
        write("toplevel.lsc", b"/DC=org/CN=voms\n/DC=org/CN=CA\n");
        write(".hidden/x.lsc", b"/DC=org/CN=voms\n/DC=org/CN=CA\n");
        let vomsdir = VomsDir::load(dir.path()).unwrap();
        assert_eq!(vomsdir.vos(), ["dteam"]);
        assert_eq!(vomsdir.vos["dteam"].lsc.len(), 1);
        assert!(vomsdir.vos["dteam"].certs.is_empty());

        let err = VomsDir::load(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(err, VomsError::VomsDir { .. }), "{err}");
    }

    #[test]
    fn targeting_is_understood_in_the_rfc_and_the_voms_encodings() {
        let host = GeneralName::Uri(Ia5StringRef::new("host.example.org").unwrap());
        let rfc = vec![vec![Target::Name(host.clone())]].to_der().unwrap();
        assert!(parse_targeting(&rfc).is_ok());
        let voms = VomsTargets {
            targets: vec![VomsTarget {
                name: Some(host),
                group: None,
                cert: None,
            }],
        }
        .to_der()
        .unwrap();
        assert!(parse_targeting(&voms).is_ok());
        assert!(parse_targeting(b"\x04\x01x").is_err());
    }

    #[test]
    fn dn_spellings_of_older_openssl_compare_equal() {
        assert_eq!(
            normalize_dn("/DC=org/USERID=jdoe/Email=a@b"),
            "/DC=org/UID=jdoe/emailAddress=a@b"
        );
        assert_eq!(canonical_int(&[0, 0, 0x10]), [0x10]);
        assert_eq!(canonical_int(&[0, 0x80]), [0, 0x80]);
        assert_eq!(canonical_int(&[0]), [0]);
    }
}
