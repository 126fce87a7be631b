//! Entry points of the fuzz targets (`fuzz/fuzz_targets/*.rs`, run with `cargo +nightly fuzz`
//! or `make fuzz`): one function per parser that faces the network, each taking the raw bytes
//! libFuzzer made up. Compiled only for fuzzing (`--cfg fuzzing`, set by cargo-fuzz) and for
//! the tests, which replay the committed seed corpora and crash reproducers through the same
//! functions (`replay_committed_inputs`).
//!
//! Invariant: an entry point never panics on any input; a panic is a bug in the parser it
//! drives (what libFuzzer reports as a crash). Results are thrown away: the fuzzer looks for
//! panics, overflows, hangs and runaway allocations, not for particular answers.

use std::{
    path::PathBuf,
    sync::{Arc, OnceLock},
    time::Duration,
};

use serde_json::{Map, Value};

use crate::{
    auth::{Authenticator, voms::AcVerifier},
    config::Config,
    devpki::DevPki,
    engine::backends::{
        Backend, CopyParams, Progress, SessionContext,
        gfal2::{self, CopyWatch},
        http::MarkerParser,
        mock::MockBackend,
    },
    model::{
        credential::PendingRequest,
        submit::{self, SubmitConfig, SubmitContext},
        submit_schema,
    },
    service::delegation::{new_request, validate_upload},
};

/// The real clock: the dev PKI made at start is valid now.
fn now() -> i64 {
    crate::model::time::now()
}

/// The PKI every certificate target trusts: the one `FTSD_FUZZ_PKI` names (a directory made by
/// `make-test-pki.sh`, with a VOMS server, so that AC checks get past the trust lookup), else a
/// throwaway dev PKI made once per process under the system's temporary directory.
struct Fixture {
    auth: Authenticator,
    /// The user's certificate and key (PEM): the holder of VOMS ACs, the signer of proxies.
    user_cert_pem: String,
    user_key_pem: String,
    user_dn: String,
    /// A pending delegation request (the CSR handed out by `GET /delegation/{id}/request`).
    pending: PendingRequest,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| Fixture::load(std::env::var_os("FTSD_FUZZ_PKI").map(PathBuf::from)))
}

/// The fixture of `delegation_csr`, which signs proxies with rcgen: always a dev PKI, whose
/// user DN rcgen can write. rcgen keeps one value per attribute type, and the test PKI's user
/// (`/DC=org/DC=example/CN=Test User`) repeats DC: signed by that user, no proxy could be made
/// and the target would fuzz nothing (as it did in a first campaign). Without `FTSD_FUZZ_PKI`
/// this is [`fixture`]'s dev PKI.
fn signing_fixture() -> &'static Fixture {
    if std::env::var_os("FTSD_FUZZ_PKI").is_none() {
        return fixture();
    }
    static SIGNING: OnceLock<Fixture> = OnceLock::new();
    SIGNING.get_or_init(|| Fixture::load(None))
}

impl Fixture {
    /// The fixture over the PKI made by `make-test-pki.sh` in `pki`, or over a throwaway dev
    /// PKI made under the system's temporary directory.
    fn load(pki: Option<PathBuf>) -> Fixture {
        // The fixture is the fuzzer's ground: if it cannot be made there is nothing to fuzz,
        // and saying so at once is the only useful outcome (hence the panics).
        let (ca_dir, voms_dir, user_cert, user_key) = match pki {
            Some(dir) => (
                dir.join("certificates"),
                dir.join("vomsdir"),
                dir.join("usercert.pem"),
                dir.join("userkey.pem"),
            ),
            None => {
                let dir =
                    std::env::temp_dir().join(format!("ftsd-fuzz-pki-{}", std::process::id()));
                let _ = std::fs::remove_dir_all(&dir);
                let pki =
                    DevPki::create(&dir).unwrap_or_else(|e| panic!("dev PKI in {dir:?}: {e}"));
                (pki.ca_dir, pki.voms_dir, pki.user_cert, pki.user_key)
            }
        };
        let provider = crate::server::tls::provider();
        let auth = Authenticator::load(
            &ca_dir,
            &voms_dir,
            provider.signature_verification_algorithms.all,
        )
        .unwrap_or_else(|e| panic!("trust in {ca_dir:?}: {e}"));
        let read = |p: &std::path::Path| {
            std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{p:?}: {e}"))
        };
        let user_cert_pem = read(&user_cert);
        let user_dn = {
            use x509_parser::prelude::FromDer;
            let der = first_der(&user_cert_pem);
            let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&der)
                .unwrap_or_else(|e| panic!("{user_cert:?}: {e}"));
            crate::auth::dn::oneline(cert.subject())
        };
        let (pending, _key) = new_request(rcgen::RsaKeySize::_2048)
            .unwrap_or_else(|e| panic!("delegation request: {e}"));
        Fixture {
            auth,
            user_cert_pem,
            user_key_pem: read(&user_key),
            user_dn,
            pending,
        }
    }

    /// What signing a proxy for the pending request takes, none of it from the fuzz bytes: the
    /// request, the proxy's name (the user's DN, to which a CN is added) and the user as issuer.
    fn proxy_signer(
        &self,
    ) -> Result<
        (
            rcgen::CertificateSigningRequestParams,
            rcgen::DistinguishedName,
            rcgen::Issuer<'static, rcgen::KeyPair>,
        ),
        String,
    > {
        use rcgen::{CertificateSigningRequestParams, Issuer, KeyPair};
        let csr = CertificateSigningRequestParams::from_pem(&self.pending.csr_pem)
            .map_err(|e| format!("the pending request: {e}"))?;
        let name = crate::devpki::parse_dn(&self.user_dn).map_err(|e| e.to_string())?;
        let key = KeyPair::from_pem(&self.user_key_pem).map_err(|e| format!("user key: {e}"))?;
        let issuer = Issuer::from_ca_cert_pem(&self.user_cert_pem, key)
            .map_err(|e| format!("user certificate as issuer: {e}"))?;
        Ok((csr, name, issuer))
    }
}

fn first_der(pem_text: &str) -> Vec<u8> {
    pem::parse(pem_text)
        .map(|p| p.contents().to_vec())
        .unwrap_or_default()
}

/// A current-thread runtime whose timers work (the mock backend sleeps).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"))
    })
}

/// Split fuzz bytes into certificates: each is a 2-byte big-endian length and that many bytes
/// (a structure libFuzzer learns quickly, and that keeps every certificate independently
/// mutable), at most `max` of them.
fn split_ders(data: &[u8], max: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while rest.len() >= 2 && out.len() < max {
        let n = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let body = &rest[2..];
        let n = n.min(body.len());
        out.push(&body[..n]);
        rest = &body[n..];
    }
    out
}

/// The inverse of [`split_ders`], for writing seeds.
pub fn join_ders(ders: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for der in ders {
        let n = u16::try_from(der.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(&der[..usize::from(n)]);
    }
    out
}

/// `POST /jobs`: the body as the API reads it (JSON), through the schema check and, when it
/// passes, the builder.
pub fn submission(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    if submit_schema::validate(&value).is_err() {
        return;
    }
    if let Value::Object(body) = value {
        build_submission(&body);
    }
}

fn build_submission(body: &Map<String, Value>) {
    let config = SubmitConfig {
        check_duplicates: true,
        auto_session_reuse: true,
        bring_online_expiration_delta: Some(3600),
        local_roots: vec!["/data".into()],
        ..SubmitConfig::default()
    };
    let queued = |_: &str, _: &str, _: &str| 3;
    let mut counter = 0u64;
    let mut random = || {
        counter = counter.wrapping_add(0x9e37_79b9_7f4a_7c15);
        counter
    };
    let fqans = vec!["/dteam/Role=NULL/Capability=NULL".to_string()];
    let mut ctx = SubmitContext {
        user_dn: "/DC=org/DC=example/CN=Fuzz",
        delegation_id: "0123456789abcdef",
        vo: "dteam",
        voms_cred: &fqans,
        auth_method: "certificate",
        submit_host: "fuzz.example.org",
        now: 1_750_000_000,
        config: &config,
        queued: &queued,
        random: &mut random,
        bearer: None,
    };
    let _ = submit::build(body, &mut ctx);
}

/// A client certificate chain as the TLS layer hands it over, through the verifier and the
/// identity (VOMS included).
pub fn certificate_chain(data: &[u8]) {
    let f = fixture();
    let chain = split_ders(data, 12);
    let _ = f.auth.verify(&chain, now());
    let _ = f.auth.identify(&chain, now());
}

/// Certificates as PEM text (host credential files, uploaded proxies, CA directories).
pub fn certificate_pem(data: &[u8]) {
    use rustls_pki_types::{CertificateDer, pem::PemObject};
    let ders: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(data)
        .filter_map(Result::ok)
        .take(12)
        .collect();
    let chain: Vec<&[u8]> = ders.iter().map(|c| c.as_ref()).collect();
    let _ = fixture().auth.identify(&chain, now());
}

/// A VOMS AC sequence (the proxy extension's contents), checked against the fixture's user as
/// holder (the test PKI's, whose VOMS server the trust knows, under `make fuzz`).
pub fn voms_extension(data: &[u8]) {
    use x509_parser::prelude::FromDer;
    let f = fixture();
    let user_der = first_der(&f.user_cert_pem);
    let Ok((_, holder)) = x509_parser::certificate::X509Certificate::from_der(&user_der) else {
        return;
    };
    let verifier = AcVerifier {
        vomsdir: f.auth.vomsdir(),
        trust: f.auth.trust(),
        algs: f.auth.chains().algorithms(),
    };
    let _ = verifier.verify_extension(data, &holder, now());
}

/// `PUT /delegation/{id}/credential`: the uploaded PEM against a pending request.
pub fn delegation_put(data: &[u8]) {
    let f = fixture();
    let _ = validate_upload(&f.auth, data, &f.pending, &f.user_dn);
}

/// The delegation round trip with a well-formed shape: a proxy for the pending request's key
/// (the key of the CSR `GET /delegation/{id}/request` handed out), signed by the user, whose
/// subject, validity, extensions and extra chain come from the fuzz bytes; then the upload
/// checks. Reaches the checks behind the signature, which random PEM never does.
pub fn delegation_csr(data: &[u8]) {
    static SOUND: OnceLock<()> = OnceLock::new();
    let f = signing_fixture();
    // A fixture that cannot sign would leave every input unused: stop at once instead.
    SOUND.get_or_init(|| {
        if let Err(e) = f.proxy_signer() {
            panic!("delegation_csr cannot sign proxies for {}: {e}", f.user_dn)
        }
    });
    let Some(body) = signed_proxy(f, data) else {
        return;
    };
    let _ = validate_upload(&f.auth, body.as_bytes(), &f.pending, &f.user_dn);
}

/// A proxy for the pending request's key signed by the user, shaped by `data`: the parts (see
/// [`split_ders`]) are the subject's last CN, the validity (two big-endian i32 offsets from
/// now, in seconds), the proxyCertInfo value, one more extension's value, and extra PEM
/// appended to the chain.
fn signed_proxy(f: &Fixture, data: &[u8]) -> Option<String> {
    use rcgen::{CustomExtension, DnType, SerialNumber};
    let parts = split_ders(data, 5);
    let part = |i: usize| parts.get(i).copied().unwrap_or_default();
    let (mut csr, mut name, issuer) = f.proxy_signer().ok()?;
    // The proxy's own CN, after the user's: rcgen keeps one value per attribute type, so it
    // goes in as CN's OID (written the same), not as the named type the user's CN holds.
    name.push(
        DnType::CustomDnType(vec![2, 5, 4, 3]),
        String::from_utf8_lossy(part(0)).into_owned(),
    );
    csr.params.distinguished_name = name;
    let offset = |bytes: &[u8]| -> i64 {
        let mut b = [0u8; 4];
        for (d, s) in b.iter_mut().zip(bytes) {
            *d = *s;
        }
        i64::from(i32::from_be_bytes(b))
    };
    let validity = part(1);
    let from = now() + offset(validity.get(..4).unwrap_or_default());
    let to = now() + offset(validity.get(4..8).unwrap_or_default());
    csr.params.not_before = time::OffsetDateTime::from_unix_timestamp(from).ok()?;
    csr.params.not_after = time::OffsetDateTime::from_unix_timestamp(to).ok()?;
    csr.params.serial_number = Some(SerialNumber::from(from.unsigned_abs()));
    // proxyCertInfo (RFC 3820) and a VOMS AC sequence: the extensions the checks read.
    csr.params.custom_extensions = vec![
        CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 1, 14], part(2).to_vec()),
        CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 8005, 100, 100, 5], part(3).to_vec()),
    ];
    let proxy = csr.signed_by(&issuer).ok()?;
    Some(format!(
        "{}{}{}",
        proxy.pem(),
        f.user_cert_pem,
        String::from_utf8_lossy(part(4))
    ))
}

/// mock:// URLs: every query lookup the mock plugin makes, through a session, with sleeps cut
/// short (each future is polled once).
pub fn mock_url(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (source, destination) = text.split_once('\n').unwrap_or((text, text));
    runtime().block_on(async {
        let backend = MockBackend::new(0);
        let mut session = backend.session(&SessionContext::anonymous());
        let once = Duration::ZERO;
        let _ = tokio::time::timeout(once, session.stat(source)).await;
        let _ = tokio::time::timeout(once, session.stat(destination)).await;
        let _ = tokio::time::timeout(once, session.checksum(source, "ADLER32")).await;
        let _ = tokio::time::timeout(once, session.exists(destination)).await;
        let _ = tokio::time::timeout(once, session.make_parent(destination)).await;
        let params = CopyParams {
            filesize: 1 << 20,
            nostreams: 1,
            timeout: 60,
            copy_mode: Default::default(),
            disable_fallback: false,
            no_streaming: false,
        };
        let progress = Arc::new(Progress::default());
        let _ =
            tokio::time::timeout(once, session.copy(source, destination, &params, &progress)).await;
        let sources = [source.to_string()];
        let destinations = [destination.to_string()];
        let _ = tokio::time::timeout(once, session.stage(&sources, 60, 60)).await;
        let _ = tokio::time::timeout(once, session.stage_poll("token", &sources)).await;
        let _ = tokio::time::timeout(once, session.release(source, "token")).await;
        let _ = tokio::time::timeout(once, session.archive_poll(&destinations)).await;
        let _ = tokio::time::timeout(once, session.delete(destination)).await;
    });
}

/// An HTTP-TPC `COPY` reply body (Perf Markers, then the verdict), fed in the chunks the
/// network may cut it into: the first byte of the input sets the chunk size.
pub fn perf_markers(data: &[u8]) {
    let Some((&size, body)) = data.split_first() else {
        return;
    };
    let mut parser = MarkerParser::default();
    for chunk in body.chunks(usize::from(size).max(1)) {
        parser.feed(chunk);
        let _ = parser.take_markers();
        let _ = parser.bytes();
    }
    parser.finish();
    let _ = parser.bytes();
}

/// What gfal2's tools print: `gfal-copy -v` stdout line by line, the error line of stderr,
/// `gfal-stat` and `gfal-copy --version` output.
pub fn gfal2_output(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut watch = CopyWatch::default();
    for line in text.lines() {
        let _ = watch.line(line);
    }
    let _ = gfal2::error_line("gfal-copy", &text);
    let _ = gfal2::parse_stat(&text);
    let _ = gfal2::parse_version(&text);
}

/// The configuration file: parse, resolve (roles, options); `check` is left out, it reads the
/// file system.
pub fn config_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = Config::parse(text, std::path::Path::new("fuzz.toml")) {
        let _ = config.resolve();
    }
}

/// A fuzz target's entry point.
pub type Target = fn(&[u8]);

/// Every target by name, as the fuzz crate and the replay test know them.
pub const TARGETS: &[(&str, Target)] = &[
    ("submission", submission),
    ("certificate_chain", certificate_chain),
    ("certificate_pem", certificate_pem),
    ("voms_extension", voms_extension),
    ("delegation_put", delegation_put),
    ("delegation_csr", delegation_csr),
    ("mock_url", mock_url),
    ("perf_markers", perf_markers),
    ("gfal2_output", gfal2_output),
    ("config_file", config_file),
];

/// Where the committed inputs of a target live: `fuzz/seeds/<target>` (seed corpus) and
/// `fuzz/regressions/<target>` (inputs that once crashed).
pub fn committed_input_dirs(target: &str) -> [PathBuf; 2] {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    [
        root.join("seeds").join(target),
        root.join("regressions").join(target),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every committed seed and crash reproducer goes through its target without a panic: the
    /// fuzz campaign's findings stay fixed in the ordinary test run.
    #[test]
    fn replay_committed_inputs() {
        let mut replayed = 0;
        for (name, target) in TARGETS {
            for dir in committed_input_dirs(name) {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let data = std::fs::read(entry.path()).unwrap();
                    target(&data);
                    replayed += 1;
                }
            }
        }
        assert!(replayed > 0, "no committed fuzz inputs found");
    }

    /// `delegation_csr` signs a proxy from each seed, and the well-formed one passes every
    /// upload check: the target reaches the checks behind the signature. (A first campaign ran
    /// it with a signer rcgen cannot write, and its proxies lost the user's CN: every input
    /// stopped at the first check.)
    #[test]
    fn delegation_csr_seeds_make_proxies_the_upload_accepts() {
        let f = signing_fixture();
        f.proxy_signer().unwrap();
        let mut seeds = 0;
        for dir in committed_input_dirs("delegation_csr") {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let data = std::fs::read(entry.path()).unwrap();
                let body = signed_proxy(f, &data)
                    .unwrap_or_else(|| panic!("{:?}: no proxy signed", entry.path()));
                if entry.file_name() == "inherit-all" {
                    let checked = validate_upload(&f.auth, body.as_bytes(), &f.pending, &f.user_dn);
                    assert!(checked.is_ok(), "{:?}", checked.err());
                }
                seeds += 1;
            }
        }
        assert!(seeds > 0, "no delegation_csr seeds");
    }

    /// Fuzzing finding (certificate_chain, first input): an empty chain made the identity
    /// check index an empty list. The server never passes one (no certificate: anonymous),
    /// but the verifier must refuse it, not panic.
    #[test]
    fn an_empty_chain_is_refused() {
        let auth = &fixture().auth;
        assert!(auth.identify(&[], now()).is_err());
        assert!(auth.verify(&[], now()).is_err());
    }

    /// Write the seed corpora (`make fuzz-seeds`): inputs taken from the unit and integration
    /// tests, certificates from the dev PKI and, when `FTSD_FUZZ_PKI` names a directory made
    /// by `make-test-pki.sh`, its proxies (VOMS ones included).
    #[test]
    #[ignore = "writes fuzz/seeds; run by `make fuzz-seeds`"]
    fn write_seed_corpora() {
        use x509_parser::prelude::FromDer;
        let write = |target: &str, name: &str, data: &[u8]| {
            let dir = committed_input_dirs(target)[0].clone();
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(name), data).unwrap();
        };
        let submissions = [
            r#"{"files": [{"sources": ["mock://a.example.org/src"], "destinations": ["mock://b.example.org/dst"]}]}"#,
            r#"{"files": [{"sources": ["gsiftp://source.es/file"], "destinations": ["gsiftp://dest.ch/file"],
                "selection_strategy": "orderly", "checksum": "adler32:1234", "filesize": 1024,
                "metadata": {"mykey": "myvalue"}, "activity": "default"}],
                "params": {"overwrite": true, "verify_checksum": "both", "retry": 3, "retry_delay": 60,
                "priority": 4, "max_time_in_queue": "30m", "job_metadata": {"a": 1}, "bring_online": 60,
                "copy_pin_lifetime": -1, "id_generator": "deterministic", "sid": "x"}}"#,
            r#"{"files": [{"sources": ["root://a/x", "root://b/x"], "destinations": ["root://c/x"], "filesize": "1e3", "scitag": 70},
                {"sources": ["https://a/y"], "destinations": ["davs://c/y"], "filesize": null}],
                "params": {"multihop": false, "reuse": "Y", "max_time_in_queue": 8, "strict_copy": false,
                "staging_metadata": {"x": 1}, "archive_timeout": 3600, "target_qos": "tape", "nostreams": 4}}"#,
            r#"{"files": [{"sources": ["mock://a/1"], "destinations": ["mock://b/1"]}, {"sources": ["mock://b/1"], "destinations": ["mock://c/1"]}],
                "params": {"multihop": true, "overwrite_hop": true, "timeout": 100, "s3alternate": true}}"#,
            r#"{"delete": ["mock://a/x"], "params": {}}"#,
            r#"{"files": [{"sources": ["file:///data/a"], "destinations": ["file:///data/b"], "filesize": 1e308}], "params": {"max_time_in_queue": -5, "priority": "7"}}"#,
        ];
        for (i, body) in submissions.iter().enumerate() {
            write("submission", &format!("test-{i}.json"), body.as_bytes());
        }
        let dir = tempfile::tempdir().unwrap();
        let pki = DevPki::create(dir.path()).unwrap();
        let ders = |path: &std::path::Path| -> Vec<Vec<u8>> {
            pem::parse_many(std::fs::read(path).unwrap())
                .unwrap()
                .into_iter()
                .filter(|p| p.tag() == "CERTIFICATE")
                .map(|p| p.contents().to_vec())
                .collect()
        };
        let mut pems = vec![
            ("dev-proxy", pki.proxy.clone()),
            ("dev-user", pki.user_cert.clone()),
            ("dev-host", pki.host_cert.clone()),
        ];
        if let Ok(test_pki) = std::env::var("FTSD_FUZZ_PKI") {
            let test_pki = PathBuf::from(test_pki);
            for name in [
                "proxy_rfc.pem",
                "proxy_legacy.pem",
                "proxy_voms.pem",
                "proxy_voms_legacy.pem",
                "proxy_limited.pem",
                "user_and_key.pem",
            ] {
                if test_pki.join(name).exists() {
                    pems.push((name.trim_end_matches(".pem"), test_pki.join(name)));
                }
            }
        }
        for (name, path) in &pems {
            let chain = ders(path);
            let refs: Vec<&[u8]> = chain.iter().map(Vec::as_slice).collect();
            write("certificate_chain", name, &join_ders(&refs));
            let text = std::fs::read_to_string(path).unwrap();
            let certs: String = pem::parse_many(&text)
                .unwrap()
                .into_iter()
                .filter(|p| p.tag() == "CERTIFICATE")
                .map(|p| pem::encode(&p))
                .collect();
            write("certificate_pem", name, certs.as_bytes());
            write("delegation_put", name, certs.as_bytes());
            for der in &chain {
                let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).unwrap();
                for ext in cert.extensions() {
                    if ext.oid.to_id_string() == "1.3.6.1.4.1.8005.100.100.5" {
                        write("voms_extension", name, ext.value);
                    }
                }
            }
        }
        // A well-formed proxy shape: CN, validity (-300 s, +12 h), inheritAll proxyCertInfo.
        let pci: &[u8] = &[
            0x30, 0x0c, 0x30, 0x0a, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x15, 0x01,
        ];
        let validity = [(-300i32).to_be_bytes(), 43_200i32.to_be_bytes()].concat();
        write(
            "delegation_csr",
            "inherit-all",
            &join_ders(&[b"12345", &validity, pci, b"", b""]),
        );
        let urls = [
            "mock://h/p?size=10&size_pre=3&size_post=7\nmock://h/q?time=2&transfer_errno=5",
            "mock://h/p?access_errno=13&errno=2\nmock://h/p?size&size=3&rd_path=/p",
            "mock://a/x?staging_time=1&staging_errno=5&release_errno=1\nmock://b/y?archiving_time=2&archiving_errno=4&exists=1",
        ];
        for (i, url) in urls.iter().enumerate() {
            write("mock_url", &format!("test-{i}"), url.as_bytes());
        }
        let markers: [&[u8]; 2] = [
            b"\x07Perf Marker\nTimestamp: 1795928569\nStripe Index: 0\nStripe Bytes Transferred: 5000000\nTotal Stripe Count: 1\nRemoteConnections: tcp:127.0.0.1:8443\nEnd\nsuccess: Created",
            b"\x40Perf Marker\n\tStripe Index: 0\n\tStripe Bytes Transferred: 10\nEnd\nPerf Marker\n\tStripe Index: 1\n\tStripe Bytes Transferred: 5\nEnd\nfailure: Remote side failed with status code 403\n",
        ];
        for (i, m) in markers.iter().enumerate() {
            write("perf_markers", &format!("test-{i}"), m);
        }
        let gfal2: [&str; 3] = [
            "Copying 5000000 bytes root://localhost:21094//d1/src.bin => root://localhost:21095//d2/x.bin\nevent: [1795954049249] BOTH   xroot\tTRANSFER:ENTER\troot://a//x => root://b//y\nmonitor: root://a//x root://b//y 1000 1000 5000000 5\nevent: [1795954053402] BOTH   xroot\tTRANSFER:EXIT\tJob finished, [SUCCESS] \n",
            "gfal-copy error: 2 (No such file or directory) - Failed to stat file (No such file or directory)\n",
            "gfal2-util version 1.8.0 (gfal2 2.21.3)\n\tdcap-2.21.3\n\tfile-2.21.3\n\thttp-2.21.3\n  Size: 5000000\tregular file\n",
        ];
        for (i, g) in gfal2.iter().enumerate() {
            write("gfal2_output", &format!("test-{i}"), g.as_bytes());
        }
        let packaged =
            std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("packaging/ftsd.toml"))
                .unwrap();
        write("config_file", "packaging-ftsd.toml", &packaged);
        write(
            "config_file",
            "test-engine",
            b"listen = \"127.0.0.1:1\"\nmax_connections = 8\n[engine]\nenabled = true\nmax_active = 4\ngfal2_options = [\"X509:CERT=/a\"]\n[[engine.mock_links]]\nsource = \"a\"\ndestination = \"b\"\nbandwidth = 1e6\n[roles]\npublic = \"vo:transfer;all:datamanagement\"\nlab = \"all:config\"\n",
        );
    }

    #[test]
    fn der_framing_round_trips() {
        let a: &[u8] = b"first";
        let b: &[u8] = b"";
        let c: &[u8] = b"third one";
        let joined = join_ders(&[a, b, c]);
        assert_eq!(split_ders(&joined, 12), vec![a, b, c]);
        assert_eq!(split_ders(&joined, 2), vec![a, b]);
        // A length past the end takes what is there.
        assert_eq!(split_ders(&[0, 9, 1, 2], 12), vec![&[1u8, 2][..]]);
    }
}
