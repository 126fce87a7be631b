//! A throwaway grid PKI for laptops and test labs: a CA, a `localhost` host certificate, a user
//! certificate and an RFC 3820 proxy of it, so that `ftsd serve` with no configuration at all
//! can be called with curl and the `fts3` CLI straight away.
//!
//! Its `certificates/` directory is laid out like `/etc/grid-security/certificates`: the CA as
//! `<hash>.0` (OpenSSL's subject hash, which `--capath`, `X509_CERT_DIR`, Python and gfal2 look
//! up), with `<hash>.signing_policy` and `<hash>.namespaces` for the Globus and XRootD GSI
//! tools. Every dev PKI has its own CA name (`…/CN=ftsd dev CA <random>`), so a proxy from
//! another dev PKI is refused as "unknown CA" rather than with a signature error.
//!
//! Also the certificate factory the integration tests use to build chains the grid tools cannot
//! (expired, not-yet-valid, CA proxies, revoked users...).
//!
//! rcgen keys a distinguished name's attributes by type, so a name can hold each attribute type
//! once by its usual name and once more by its plain OID (the bytes on the wire are the same).
//! That is enough for proxies (`…/CN=user/CN=1234`); dev names avoid repeated `DC`s.

use std::{
    fs,
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CustomExtension,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair,
    KeyUsagePurpose, PKCS_RSA_SHA256, RevokedCertParams, RsaKeySize, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::FromDer;

/// Errors while making or reading a PKI.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("distinguished name {0:?}: {1}")]
    Name(String, String),
}

/// What a certificate is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Ca,
    /// TLS server (and client) certificate with these DNS names / IP addresses.
    Host(Vec<String>),
    User,
    /// RFC 3820 impersonation proxy (`limited` selects the limited policy language).
    Rfc3820Proxy {
        limited: bool,
    },
    /// A certificate with RFC 3820 proxyCertInfo that also claims to be a CA (must be refused).
    Rfc3820ProxyCa,
    /// Legacy Globus proxy: the subject must end in `CN=proxy` or `CN=limited proxy`.
    LegacyProxy,
}

/// A certificate with its key, able to issue further certificates.
pub struct Credential {
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    pub key_pem: String,
    pub serial: u64,
    params: CertificateParams,
    key: KeyPair,
}

/// DER of proxyCertInfo { proxyPolicy { policyLanguage id-ppl-inheritAll } }.
const PCI_INHERIT_ALL: &[u8] = &[
    0x30, 0x0c, 0x30, 0x0a, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x15, 0x01,
];
/// DER of proxyCertInfo { proxyPolicy { policyLanguage id-ppl-limited (1.3.6.1.4.1.3536.1.1.1.9) } }.
const PCI_LIMITED: &[u8] = &[
    0x30, 0x0f, 0x30, 0x0d, 0x06, 0x0b, 0x2b, 0x06, 0x01, 0x04, 0x01, 0x9b, 0x50, 0x01, 0x01, 0x01,
    0x09,
];
const OID_PROXY_CERT_INFO: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 1, 14];

/// Parse `/K=V/K=V` into an rcgen name (see the module note on repeated attributes).
pub fn parse_dn(dn: &str) -> Result<DistinguishedName, PkiError> {
    let bad = |why: &str| PkiError::Name(dn.to_string(), why.to_string());
    let mut name = DistinguishedName::new();
    let mut seen: Vec<DnType> = Vec::new();
    for part in dn.split('/').skip(1) {
        let (key, value) = part.split_once('=').ok_or_else(|| bad("missing '='"))?;
        let (named, oid): (Option<DnType>, Vec<u64>) = match key {
            "CN" => (Some(DnType::CommonName), vec![2, 5, 4, 3]),
            "O" => (Some(DnType::OrganizationName), vec![2, 5, 4, 10]),
            "OU" => (Some(DnType::OrganizationalUnitName), vec![2, 5, 4, 11]),
            "C" => (Some(DnType::CountryName), vec![2, 5, 4, 6]),
            "L" => (Some(DnType::LocalityName), vec![2, 5, 4, 7]),
            "ST" => (Some(DnType::StateOrProvinceName), vec![2, 5, 4, 8]),
            "DC" => (None, vec![0, 9, 2342, 19200300, 100, 1, 25]),
            _ => return Err(bad("unsupported attribute")),
        };
        let custom = DnType::CustomDnType(oid);
        let ty = match named {
            Some(n) if !seen.contains(&n) => n,
            _ if !seen.contains(&custom) => custom,
            _ => return Err(bad("attribute repeated more than twice")),
        };
        seen.push(ty.clone());
        name.push(ty, value);
    }
    Ok(name)
}

impl Credential {
    /// Issue a certificate of `kind` for `subject`, signed by `issuer` (self-signed if `None`).
    pub fn issue(
        subject: &str,
        kind: Kind,
        issuer: Option<&Credential>,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        serial: u64,
    ) -> Result<Credential, PkiError> {
        let key = KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = parse_dn(subject)?;
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(SerialNumber::from(serial));
        params.key_identifier_method = KeyIdMethod::Sha256;
        match &kind {
            Kind::Ca => {
                params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
                params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            }
            Kind::Host(names) => {
                params.is_ca = IsCa::ExplicitNoCa;
                params.key_usages = vec![
                    KeyUsagePurpose::DigitalSignature,
                    KeyUsagePurpose::KeyEncipherment,
                ];
                params.extended_key_usages = vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ];
                params.subject_alt_names = names
                    .iter()
                    .map(|n| match n.parse() {
                        Ok(ip) => Ok(SanType::IpAddress(ip)),
                        Err(_) => n.clone().try_into().map(SanType::DnsName),
                    })
                    .collect::<Result<_, _>>()?;
                params.use_authority_key_identifier_extension = true;
            }
            Kind::User => {
                params.is_ca = IsCa::ExplicitNoCa;
                params.key_usages = vec![
                    KeyUsagePurpose::DigitalSignature,
                    KeyUsagePurpose::KeyEncipherment,
                ];
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
                params.use_authority_key_identifier_extension = true;
            }
            Kind::Rfc3820Proxy { .. } | Kind::Rfc3820ProxyCa | Kind::LegacyProxy => {
                params.is_ca = if kind == Kind::Rfc3820ProxyCa {
                    IsCa::Ca(BasicConstraints::Unconstrained)
                } else {
                    IsCa::ExplicitNoCa
                };
                params.key_usages = vec![
                    KeyUsagePurpose::DigitalSignature,
                    KeyUsagePurpose::KeyEncipherment,
                ];
                if kind != Kind::LegacyProxy {
                    let content = if kind == (Kind::Rfc3820Proxy { limited: true }) {
                        PCI_LIMITED
                    } else {
                        PCI_INHERIT_ALL
                    };
                    let mut ext =
                        CustomExtension::from_oid_content(OID_PROXY_CERT_INFO, content.to_vec());
                    ext.set_criticality(true);
                    params.custom_extensions.push(ext);
                }
            }
        }
        let cert = match issuer {
            Some(issuer) => {
                params.signed_by(&key, &Issuer::from_params(&issuer.params, &issuer.key))?
            }
            None => params.self_signed(&key)?,
        };
        Ok(Credential {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
            serial,
            params,
            key,
        })
    }

    /// A CRL signed by this (CA) credential revoking `serials`.
    pub fn crl_pem(&self, serials: &[u64]) -> Result<String, PkiError> {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - Duration::hours(1),
            next_update: now + Duration::days(30),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: now - Duration::hours(1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params
            .signed_by(&Issuer::from_params(&self.params, &self.key))?
            .pem()?)
    }
}

/// Files of a dev PKI directory.
#[derive(Debug, Clone)]
pub struct DevPki {
    pub dir: PathBuf,
    pub ca_cert: PathBuf,
    pub ca_dir: PathBuf,
    pub voms_dir: PathBuf,
    pub host_cert: PathBuf,
    pub host_key: PathBuf,
    pub user_cert: PathBuf,
    pub user_key: PathBuf,
    /// Proxy, its key and the user certificate in one file (the X509_USER_PROXY layout).
    pub proxy: PathBuf,
}

/// DN of the dev user (also the DN to grant rights to in a test lab).
pub const DEV_USER_DN: &str = "/O=ftsd/OU=dev/CN=ftsd dev user";
/// DN of the dev host certificate: the service's own identity, root for the API.
pub const DEV_HOST_DN: &str = "/O=ftsd/OU=dev/CN=localhost";
/// The dev CA's DN without its per-PKI suffix (see [`DevPki::create`]).
const DEV_CA_DN_PREFIX: &str = "/O=ftsd/OU=dev/CN=ftsd dev CA ";
/// The names the dev CA signs: what its `.signing_policy` and `.namespaces` allow.
const DEV_NAMESPACE: &str = "/O=ftsd/OU=dev/";
/// The dev proxy lives a week; `ensure` renews it when less than a day is left.
const PROXY_LIFETIME: Duration = Duration::days(7);
const PROXY_RENEW_BEFORE: Duration = Duration::days(1);
/// Certificates are backdated a little so a client with a slightly slow clock accepts them.
const BACKDATE: Duration = Duration::minutes(5);

impl DevPki {
    pub fn layout(dir: &Path) -> DevPki {
        DevPki {
            dir: dir.to_path_buf(),
            ca_cert: dir.join("ca.pem"),
            ca_dir: dir.join("certificates"),
            voms_dir: dir.join("vomsdir"),
            host_cert: dir.join("hostcert.pem"),
            host_key: dir.join("hostkey.pem"),
            user_cert: dir.join("usercert.pem"),
            user_key: dir.join("userkey.pem"),
            proxy: dir.join("proxy.pem"),
        }
    }

    /// The CA certificate in the CA directory (`certificates/<hash>.0`), from `ca.pem`'s
    /// subject; `None` when `ca.pem` cannot be read.
    pub fn hashed_ca(&self) -> Option<PathBuf> {
        let pem = fs::read(&self.ca_cert).ok()?;
        let (_, block) = x509_parser::pem::parse_x509_pem(&pem).ok()?;
        let cert = block.parse_x509().ok()?;
        let hash = subject_hash(cert.subject().as_raw()).ok()?;
        Some(self.ca_dir.join(format!("{hash:08x}.0")))
    }

    /// Create the PKI in `dir` (replacing whatever is there). The CA gets a name of its own:
    /// `/O=ftsd/OU=dev/CN=ftsd dev CA <8 random hex digits>`.
    pub fn create(dir: &Path) -> Result<DevPki, PkiError> {
        let pki = DevPki::layout(dir);
        let now = OffsetDateTime::now_utc();
        let from = now - BACKDATE;
        let mut tag = [0u8; 4];
        aws_lc_rs::rand::fill(&mut tag)
            .map_err(|_| PkiError::Name(DEV_CA_DN_PREFIX.into(), "no randomness".into()))?;
        let ca_dn = format!(
            "{DEV_CA_DN_PREFIX}{}",
            tag.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let ca = Credential::issue(&ca_dn, Kind::Ca, None, from, now + Duration::days(3650), 1)?;
        let names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        let host = Credential::issue(
            DEV_HOST_DN,
            Kind::Host(names),
            Some(&ca),
            from,
            now + Duration::days(825),
            2,
        )?;
        let user = Credential::issue(
            DEV_USER_DN,
            Kind::User,
            Some(&ca),
            from,
            now + Duration::days(825),
            3,
        )?;
        let serial = now.unix_timestamp() as u64;
        let proxy = Credential::issue(
            &format!("{DEV_USER_DN}/CN={serial}"),
            Kind::Rfc3820Proxy { limited: false },
            Some(&user),
            from,
            now + PROXY_LIFETIME,
            serial,
        )?;
        mkdir(&pki.dir, 0o700)?;
        // A directory left by an older version may hold other CA files: start afresh.
        let _ = fs::remove_dir_all(&pki.ca_dir);
        mkdir(&pki.ca_dir, 0o755)?;
        mkdir(&pki.voms_dir, 0o755)?;
        write(&pki.ca_cert, &ca.cert_pem, 0o644)?;
        write(&pki.dir.join("ca.key"), &ca.key_pem, 0o600)?;
        write_ca_dir(&pki.ca_dir, &ca, &ca_dn)?;
        write(&pki.host_cert, &host.cert_pem, 0o644)?;
        write(&pki.host_key, &host.key_pem, 0o600)?;
        write(&pki.user_cert, &user.cert_pem, 0o644)?;
        write(&pki.user_key, &user.key_pem, 0o600)?;
        write(
            &pki.proxy,
            &format!("{}{}{}", proxy.cert_pem, proxy.key_pem, user.cert_pem),
            0o600,
        )?;
        Ok(pki)
    }

    /// Use the PKI in `dir` if it is complete and its proxy still has a day to live, otherwise
    /// make a new one. Returns the PKI and whether it was (re)created.
    pub fn ensure(dir: &Path) -> Result<(DevPki, bool), PkiError> {
        let pki = DevPki::layout(dir);
        let complete = [
            &pki.ca_cert,
            &pki.host_cert,
            &pki.host_key,
            &pki.user_cert,
            &pki.user_key,
            &pki.proxy,
        ]
        .iter()
        .all(|p| p.is_file())
            && pki.hashed_ca().is_some_and(|p| p.is_file());
        if complete && proxy_time_left(&pki.proxy).is_some_and(|left| left > PROXY_RENEW_BEFORE) {
            return Ok((pki, false));
        }
        Ok((DevPki::create(dir)?, true))
    }
}

/// The CA directory files: `<hash>.0`, `<hash>.signing_policy`, `<hash>.namespaces`.
fn write_ca_dir(dir: &Path, ca: &Credential, ca_dn: &str) -> Result<(), PkiError> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&ca.cert_der)
        .map_err(|e| PkiError::Name(ca_dn.to_string(), e.to_string()))?;
    let hash =
        subject_hash(cert.subject().as_raw()).map_err(|e| PkiError::Name(ca_dn.to_string(), e))?;
    let base = format!("{hash:08x}");
    write(&dir.join(format!("{base}.0")), &ca.cert_pem, 0o644)?;
    write(
        &dir.join(format!("{base}.signing_policy")),
        &format!(
            "# The ftsd dev CA signs the names under {DEV_NAMESPACE} only.\n\
             access_id_CA      X509         '{ca_dn}'\n\
             pos_rights        globus       CA:sign\n\
             cond_subjects     globus       '\"{DEV_NAMESPACE}*\"'\n"
        ),
        0o644,
    )?;
    write(
        &dir.join(format!("{base}.namespaces")),
        &format!(
            "# The ftsd dev CA signs the names under {DEV_NAMESPACE} only.\n\
             TO Issuer \"{ca_dn}\" \\\n  PERMIT Subject \"{DEV_NAMESPACE}.*\"\n"
        ),
        0o644,
    )
}

/// OpenSSL's subject hash (`X509_NAME_hash`, `openssl x509 -hash`) of a DER `Name`: SHA-1 over
/// the name's canonical encoding, first four bytes read little-endian. This is the `<hash>` of
/// `<hash>.0` in a CA directory, by which OpenSSL (curl, Python, gfal2, XRootD) finds a CA.
pub fn subject_hash(name_der: &[u8]) -> Result<u32, String> {
    let (_, name) = x509_parser::x509::X509Name::from_der(name_der).map_err(|e| e.to_string())?;
    let mut canonical = Vec::new();
    for rdn in name.iter_rdn() {
        let mut entries: Vec<Vec<u8>> = Vec::new();
        for attribute in rdn.iter() {
            let value = attribute.attr_value();
            let value_tlv = match canonical_text(value.tag().0, value.data) {
                Some(text) => der_tlv(0x0c, text.as_bytes()),
                // Not a string type: kept as it is.
                None => der_tlv(value.tag().0 as u8, value.data),
            };
            let oid = der_tlv(0x06, attribute.attr_type().as_bytes());
            entries.push(der_tlv(0x30, &[oid, value_tlv].concat()));
        }
        // DER orders the members of a SET OF by their encodings.
        entries.sort();
        canonical.extend(der_tlv(0x31, &entries.concat()));
    }
    let digest =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &canonical);
    let d = digest.as_ref();
    Ok(u32::from_le_bytes([d[0], d[1], d[2], d[3]]))
}

/// The canonical form OpenSSL hashes a string attribute in: UTF-8, no leading or trailing
/// white space, inner runs of white space as one space, ASCII lower-cased. `None` for a value
/// that is not a string type.
fn canonical_text(tag: u32, data: &[u8]) -> Option<String> {
    let text: String = match tag {
        // UTF8String, PrintableString, IA5String, VisibleString.
        12 | 19 | 22 | 26 => String::from_utf8_lossy(data).into_owned(),
        // T61String: OpenSSL reads it as Latin-1.
        20 => data.iter().map(|&b| char::from(b)).collect(),
        // BMPString: UTF-16BE.
        30 => char::decode_utf16(
            data.chunks(2)
                .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])),
        )
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect(),
        // UniversalString: UTF-32BE.
        28 => data
            .chunks(4)
            .map(|c| {
                let mut b = [0u8; 4];
                b[..c.len()].copy_from_slice(c);
                char::from_u32(u32::from_be_bytes(b)).unwrap_or(char::REPLACEMENT_CHARACTER)
            })
            .collect(),
        _ => return None,
    };
    let is_space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r');
    let mut out = String::with_capacity(text.len());
    let mut in_space = false;
    for c in text.trim_matches(is_space).chars() {
        if is_space(c) {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
        } else {
            out.push(c.to_ascii_lowercase());
            in_space = false;
        }
    }
    Some(out)
}

/// One DER TLV with a definite length.
fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8); // < 0x80: fits
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8); // at most 8 length bytes: fits
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// Time until the first certificate of a PEM file expires.
fn proxy_time_left(path: &Path) -> Option<Duration> {
    let pem = fs::read(path).ok()?;
    let (_, block) = x509_parser::pem::parse_x509_pem(&pem).ok()?;
    let cert = block.parse_x509().ok()?;
    let not_after = cert.validity().not_after.timestamp();
    Some(Duration::seconds(
        not_after - OffsetDateTime::now_utc().unix_timestamp(),
    ))
}

fn mkdir(path: &Path, mode: u32) -> Result<(), PkiError> {
    let io = |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    };
    fs::create_dir_all(path).map_err(io)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io)
}

/// Write a file created with `mode` from the start, so a key is never readable by others,
/// not even for a moment.
fn write(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    let io = |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    };
    let _ = fs::remove_file(path);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name_der(dn: &str) -> Vec<u8> {
        let now = OffsetDateTime::now_utc();
        let ca = Credential::issue(dn, Kind::Ca, None, now, now + Duration::days(1), 1).unwrap();
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&ca.cert_der).unwrap();
        cert.subject().as_raw().to_vec()
    }

    /// The values `openssl x509 -noout -hash` prints for certificates with these subjects
    /// (made with `openssl req -subj`, which encodes other string types than rcgen: the hash is
    /// over the canonical form, so they agree). Case and runs of spaces do not count.
    #[test]
    fn subject_hash_is_openssls() {
        for (dn, hash) in [
            ("/O=ftsd/OU=dev/CN=ftsd dev CA 0a1b2c3d", 0xeffb1a41),
            ("/DC=org/O=Example/CN=Test  CA", 0x8e739873),
            ("/DC=org/O=example/CN= test ca ", 0x8e739873),
            (
                "/C=CH/O=CERN/CN=CERN Grid Certification Authority",
                0xc0fc088e,
            ),
        ] {
            assert_eq!(subject_hash(&name_der(dn)).unwrap(), hash, "{dn}");
        }
    }

    #[test]
    fn the_ca_directory_is_a_grid_ca_directory_and_each_dev_ca_has_its_own_name() {
        let dir = tempfile::tempdir().unwrap();
        let a = DevPki::create(&dir.path().join("a")).unwrap();
        let b = DevPki::create(&dir.path().join("b")).unwrap();
        let hashed = a.hashed_ca().unwrap();
        let base = hashed.file_stem().unwrap().to_str().unwrap().to_string();
        let mut names: Vec<String> = fs::read_dir(&a.ca_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                format!("{base}.0"),
                format!("{base}.namespaces"),
                format!("{base}.signing_policy")
            ]
        );
        assert_eq!(
            fs::read_to_string(&hashed).unwrap(),
            fs::read_to_string(&a.ca_cert).unwrap()
        );
        let policy = fs::read_to_string(a.ca_dir.join(format!("{base}.signing_policy"))).unwrap();
        assert!(policy.contains("access_id_CA      X509         '/O=ftsd/OU=dev/CN=ftsd dev CA "));
        assert!(policy.contains("cond_subjects     globus       '\"/O=ftsd/OU=dev/*\"'"));
        let namespaces = fs::read_to_string(a.ca_dir.join(format!("{base}.namespaces"))).unwrap();
        assert!(
            namespaces.contains("PERMIT Subject \"/O=ftsd/OU=dev/.*\""),
            "{namespaces}"
        );
        assert_ne!(
            hashed.file_name(),
            b.hashed_ca().unwrap().file_name(),
            "two dev PKIs, two CA names"
        );
        // A dev PKI in the old layout (no <hash>.0) is replaced at the next start.
        fs::remove_file(&hashed).unwrap();
        let (again, created) = DevPki::ensure(&a.dir).unwrap();
        assert!(created);
        assert!(again.hashed_ca().unwrap().is_file());
    }
}
