//! Credential delegation: the GridSite protocol as the fts3 client drives it, the refusal
//! cases, sealing at rest, crash durability and the proxy files transfers will use.

use std::{path::Path, process::Command};

use rcgen::{
    CertificateSigningRequestParams, CustomExtension, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

use crate::common::{CliAs, fts_cli, fts3_client_bin};
use crate::common::{Client, RC_OTHER_DN, RC_USER_DN, TestPki, TestServer, pki, spawn_ftsd};
use crate::tls_auth::independent_delegation_id;

/// proxyCertInfo with the inheritAll policy, as the fts3 client writes it.
const PCI_INHERIT_ALL: &[u8] = &[
    0x30, 0x0c, 0x30, 0x0a, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x15, 0x01,
];

fn blocks(path: &Path) -> Vec<pem::Pem> {
    pem::parse_many(std::fs::read(path).unwrap()).unwrap()
}

fn cert_pems(path: &Path) -> Vec<String> {
    blocks(path)
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| pem::encode(&b))
        .collect()
}

fn key_pem(path: &Path) -> String {
    let block = blocks(path)
        .into_iter()
        .find(|b| b.tag().ends_with("PRIVATE KEY"))
        .expect("a key in the credential file");
    pem::encode(&block)
}

/// Sign `csr` as a proxy. `issuer_cert` names the issuer, `signing_key` signs (normally the
/// issuer's own key), `subject` is the proxy subject, `chain` follows the proxy in the body.
fn sign_proxy(
    csr: &str,
    issuer_cert: &str,
    signing_key: &str,
    subject: &str,
    chain: &[String],
) -> String {
    let key = KeyPair::from_pem(signing_key).unwrap();
    let issuer = Issuer::from_ca_cert_pem(issuer_cert, key).unwrap();
    sign_proxy_with(csr, &issuer, subject, chain)
}

/// Same, with an rcgen issuer (for issuers whose names rcgen cannot re-read from a certificate,
/// such as proxies with two CNs).
fn sign_proxy_with(
    csr: &str,
    issuer: &Issuer<'_, KeyPair>,
    subject: &str,
    chain: &[String],
) -> String {
    let now = OffsetDateTime::now_utc();
    let validity = (now - Duration::minutes(1), now + Duration::hours(12));
    sign_proxy_valid(csr, issuer, subject, chain, validity)
}

/// Same, valid from `validity.0` to `validity.1`.
fn sign_proxy_valid(
    csr: &str,
    issuer: &Issuer<'_, KeyPair>,
    subject: &str,
    chain: &[String],
    validity: (OffsetDateTime, OffsetDateTime),
) -> String {
    let mut request = CertificateSigningRequestParams::from_pem(csr).expect("server CSR parses");
    let params = &mut request.params;
    params.distinguished_name = ftsd::devpki::parse_dn(subject).unwrap();
    (params.not_before, params.not_after) = validity;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let mut pci =
        CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 1, 14], PCI_INHERIT_ALL.to_vec());
    pci.set_criticality(true);
    params.custom_extensions = vec![pci];
    let proxy = request.signed_by(issuer).unwrap();
    let mut body = proxy.pem();
    for c in chain {
        body.push_str(c);
    }
    body
}

/// Delegate as the owner of `credential` (a user certificate + key file): request, sign, put.
pub fn delegate(client: &Client, pki: &TestPki, credential: &str, dlg_id: &str) -> (u16, String) {
    let path = pki.path(credential);
    let csr = client
        .get(&format!("/delegation/{dlg_id}/request"))
        .unwrap();
    assert_eq!(csr.status, 200, "{}", csr.text());
    let certs = cert_pems(&path);
    let subject = format!("{}/CN=4242", pki.openssl_subject(credential));
    let body = sign_proxy(&csr.text(), &certs[0], &key_pem(&path), &subject, &certs);
    let reply = client
        .put(&format!("/delegation/{dlg_id}/credential"), body)
        .unwrap();
    (reply.status, reply.text())
}

fn rc_dlg_id() -> String {
    independent_delegation_id(RC_USER_DN, &[])
}

#[test]
fn request_view_put_delete_round_trip() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    let client = server.client(pki, Some("rc_user.pem"));
    let id = rc_dlg_id();

    // Nothing delegated: null, or [] for 3.12+ clients.
    let none = client.get(&format!("/delegation/{id}")).unwrap();
    assert_eq!(none.status, 200);
    assert_eq!(none.json(), serde_json::Value::Null);
    let none = client
        .request(
            "GET",
            &format!("/delegation/{id}"),
            &[("user-agent", "fts-python-bindings/3.13.4")],
            Default::default(),
        )
        .unwrap();
    assert_eq!(none.json(), serde_json::json!([]));

    // The request is a PEM CSR for a 2048-bit RSA key, reused until used.
    let first = client.get(&format!("/delegation/{id}/request")).unwrap();
    assert_eq!(first.status, 200);
    assert!(
        first
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(first.header("x-delegation-id"), Some(id.as_str()));
    assert!(
        first
            .text()
            .starts_with("-----BEGIN CERTIFICATE REQUEST-----")
    );
    let csr_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(csr_file.path(), first.text()).unwrap();
    let out = Command::new("openssl")
        .args(["req", "-noout", "-verify", "-text", "-in"])
        .arg(csr_file.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "openssl verifies the CSR self-signature"
    );
    assert!(text.contains("2048 bit"), "{text}");
    assert!(text.contains("sha256WithRSAEncryption"), "{text}");
    let again = client.get(&format!("/delegation/{id}/request")).unwrap();
    assert_eq!(again.text(), first.text());

    let (status, body) = delegate(&client, pki, "rc_user.pem", &id);
    assert_eq!(status, 201, "{body}");
    let view = client.get(&format!("/delegation/{id}")).unwrap().json();
    let termination = view["termination_time"].as_str().unwrap();
    assert_eq!(termination.len(), 19, "YYYY-MM-DDTHH:MM:SS: {termination}");
    assert!(!termination.ends_with('Z') && !termination.contains('.'));
    assert_eq!(view["voms_attrs"], serde_json::json!([]));

    // The request was consumed: a replay finds no cache.
    let csr = first.text();
    let certs = cert_pems(&pki.path("rc_user.pem"));
    let replay = sign_proxy(
        &csr,
        &certs[0],
        &key_pem(&pki.path("rc_user.pem")),
        &format!("{RC_USER_DN}/CN=1"),
        &certs,
    );
    let reply = client
        .put(&format!("/delegation/{id}/credential"), replay)
        .unwrap();
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["message"], "No credential cache found");

    assert_eq!(
        client.delete(&format!("/delegation/{id}")).unwrap().status,
        204
    );
    let gone = client.delete(&format!("/delegation/{id}")).unwrap();
    assert_eq!(gone.status, 404);
    assert_eq!(gone.json()["message"], "Delegated credentials not found");
    assert_eq!(
        client.get(&format!("/delegation/{id}")).unwrap().json(),
        serde_json::Value::Null
    );
}

#[test]
fn termination_is_the_earliest_not_after_of_the_chain() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    // A user whose certificate ends in 2 hours delegates a 12-hour proxy: the delegation must
    // not outlive the certificate that signed it.
    let now = OffsetDateTime::now_utc();
    let ca_path = pki.path("rc_ca.pem");
    let ca = Issuer::from_ca_cert_pem(
        &cert_pems(&ca_path)[0],
        KeyPair::from_pem(&key_pem(&ca_path)).unwrap(),
    )
    .unwrap();
    let user_key =
        KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).unwrap();
    let mut user = rcgen::CertificateParams::default();
    user.distinguished_name = ftsd::devpki::parse_dn("/O=Example/CN=Rc Short").unwrap();
    user.not_before = now - Duration::minutes(1);
    user.not_after = now + Duration::hours(2);
    user.is_ca = IsCa::ExplicitNoCa;
    user.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    user.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let user_cert = user.signed_by(&user_key, &ca).unwrap();
    let credential = pki.dir.join("rc_short.pem");
    std::fs::write(
        &credential,
        format!("{}{}", user_cert.pem(), user_key.serialize_pem()),
    )
    .unwrap();
    let client = server.client(pki, Some("rc_short.pem"));
    let id = independent_delegation_id("/O=Example/CN=Rc Short", &[]);
    let csr = client
        .get(&format!("/delegation/{id}/request"))
        .unwrap()
        .text();
    let expected = ftsd::model::time::fts_datetime(user.not_after.unix_timestamp());
    let issuer = Issuer::from_params(&user, user_key);
    let body = sign_proxy_with(
        &csr,
        &issuer,
        "/O=Example/CN=Rc Short/CN=1",
        &[user_cert.pem()],
    );
    let reply = client
        .put(&format!("/delegation/{id}/credential"), body)
        .unwrap();
    assert_eq!(reply.status, 201, "{}", reply.text());
    let view = client.get(&format!("/delegation/{id}")).unwrap().json();
    assert_eq!(view["termination_time"], expected.as_str());
}

/// The reference's sequence for a proxy that has already expired: it is stored (201), and the
/// next submission answers 419 with the reference's message, which clients handle by
/// delegating again.
#[test]
fn an_expired_proxy_is_stored_and_the_next_submission_gets_419() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    let client = server.client(pki, Some("rc_user.pem"));
    let id = rc_dlg_id();
    let user = pki.path("rc_user.pem");
    let certs = cert_pems(&user);
    let csr = client
        .get(&format!("/delegation/{id}/request"))
        .unwrap()
        .text();
    let issuer =
        Issuer::from_ca_cert_pem(&certs[0], KeyPair::from_pem(&key_pem(&user)).unwrap()).unwrap();
    let now = OffsetDateTime::now_utc();
    let ended = now - Duration::minutes(10);
    let body = sign_proxy_valid(
        &csr,
        &issuer,
        &format!("{RC_USER_DN}/CN=77"),
        &certs,
        (now - Duration::hours(2), ended),
    );
    let reply = client
        .put(&format!("/delegation/{id}/credential"), body)
        .unwrap();
    assert_eq!(reply.status, 201, "{}", reply.text());
    let view = client.get(&format!("/delegation/{id}")).unwrap().json();
    assert_eq!(
        view["termination_time"],
        ftsd::model::time::fts_datetime(ended.unix_timestamp()).as_str()
    );
    let submission = serde_json::json!({"files": [{
        "sources": ["mock://a.example/f"], "destinations": ["mock://b.example/f"]
    }]});
    let reply = crate::common::post_json(&client, "/jobs", &submission);
    assert_eq!(reply.status, 419, "{}", reply.text());
    let message = reply.json()["message"].as_str().unwrap().to_string();
    let seconds: i64 = message
        .strip_prefix("The delegated credentials expired ")
        .and_then(|rest| rest.strip_suffix(&format!(" seconds ago ({id})")))
        .unwrap_or_else(|| panic!("{message}"))
        .parse()
        .unwrap();
    assert!((600..700).contains(&seconds), "{message}");
}

#[test]
fn bad_uploads_are_refused_with_the_reference_messages() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    let client = server.client(pki, Some("rc_user.pem"));
    let id = rc_dlg_id();
    let user = pki.path("rc_user.pem");
    let certs = cert_pems(&user);
    let user_key = key_pem(&user);
    let put = |body: String| {
        let reply = client
            .put(&format!("/delegation/{id}/credential"), body)
            .unwrap();
        (
            reply.status,
            reply.json()["message"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
    };

    // No request yet.
    let (status, message) = put("x".into());
    assert_eq!(
        (status, message.as_str()),
        (400, "No credential cache found")
    );

    let csr = client
        .get(&format!("/delegation/{id}/request"))
        .unwrap()
        .text();
    let subject = format!("{RC_USER_DN}/CN=99");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "garbage",
            "this is not PEM at all".to_string(),
            "Could not process the proxy: Malformed proxy",
        ),
        (
            "one certificate",
            sign_proxy(&csr, &certs[0], &user_key, &subject, &[]),
            "Could not process the proxy: Malformed proxy",
        ),
        (
            "proxy for another key",
            {
                let other =
                    KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
                        .unwrap();
                let other_csr = rcgen::CertificateParams::default()
                    .serialize_request(&other)
                    .unwrap()
                    .pem()
                    .unwrap();
                sign_proxy(&other_csr, &certs[0], &user_key, &subject, &certs)
            },
            "Could not process the proxy: The proxy does not match the stored associated private key",
        ),
        (
            "wrong signer",
            sign_proxy(
                &csr,
                &certs[0],
                &key_pem(&pki.path("rc_other.pem")),
                &subject,
                &certs,
            ),
            "Could not process the proxy: Failed to verify the proxy, maybe signed with the wrong private key?",
        ),
        (
            "subject mismatch",
            sign_proxy(
                &csr,
                &certs[0],
                &user_key,
                "/O=Elsewhere/CN=Rc User/CN=99",
                &certs,
            ),
            "Could not process the proxy: The subject and the issuer of the proxy do not match: O=Elsewhere, CN=Rc User, CN=99 != O=Example, CN=Rc User",
        ),
        (
            "no trailing CN",
            sign_proxy(
                &csr,
                &certs[0],
                &user_key,
                &format!("{RC_USER_DN}/O=x"),
                &certs,
            ),
            "Could not process the proxy: Missing trailing Common Name in the proxy",
        ),
        (
            "chain to an untrusted CA",
            {
                let rogue = pki.path("rogue_user.pem");
                sign_proxy(
                    &csr,
                    &cert_pems(&rogue)[0],
                    &key_pem(&rogue),
                    &subject,
                    &cert_pems(&rogue),
                )
            },
            "Could not process the proxy: user certificate: unknown CA: its issuer is not one of \
             the trusted CAs (ca_dir)",
        ),
        (
            "chain of another user",
            {
                let other = pki.path("rc_other.pem");
                sign_proxy(
                    &csr,
                    &cert_pems(&other)[0],
                    &key_pem(&other),
                    &format!("{RC_OTHER_DN}/CN=99"),
                    &cert_pems(&other),
                )
            },
            "Could not process the proxy: the delegated chain belongs to /O=Example/CN=Rc Other, not to the caller /O=Example/CN=Rc User",
        ),
    ];
    for (name, body, expected) in cases {
        let (status, message) = put(body);
        assert_eq!(status, 400, "{name}: {message}");
        assert_eq!(message, expected, "{name}");
    }
    // Nothing was stored, and the pending request is still usable.
    assert_eq!(
        client.get(&format!("/delegation/{id}")).unwrap().json(),
        serde_json::Value::Null
    );
    let (status, body) = delegate(&client, pki, "rc_user.pem", &id);
    assert_eq!(status, 201, "{body}");

    // Oversized bodies are refused before they are buffered.
    let huge = "A".repeat(ftsd::service::delegation::MAX_CREDENTIAL_BODY + 1);
    let reply = client
        .put(&format!("/delegation/{id}/credential"), huge)
        .unwrap();
    assert_eq!(reply.status, 413);
}

#[test]
fn only_the_owner_may_touch_a_delegation() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    let other = server.client(pki, Some("rc_other.pem"));
    let id = rc_dlg_id();
    let mismatch = "The requested ID and the credentials ID do not match";
    for (method, path) in [
        ("GET", format!("/delegation/{id}")),
        ("GET", format!("/delegation/{id}/request")),
        ("PUT", format!("/delegation/{id}/credential")),
        ("POST", format!("/delegation/{id}/credential")),
        ("DELETE", format!("/delegation/{id}")),
        ("POST", format!("/delegation/{id}/voms")),
    ] {
        let reply = other
            .request(method, &path, &[], Default::default())
            .unwrap();
        assert_eq!(reply.status, 403, "{method} {path}");
        assert_eq!(reply.json()["message"], mismatch, "{method} {path}");
    }
    let anonymous = server.client(pki, None);
    let reply = anonymous.get(&format!("/delegation/{id}/request")).unwrap();
    assert_eq!(reply.status, 403);
    assert_eq!(reply.json()["message"], "Certificate required");

    // VOMS extension of a delegated proxy: a clear "not supported" for the owner.
    let owner = server.client(pki, Some("rc_user.pem"));
    let reply = owner
        .request(
            "POST",
            &format!("/delegation/{id}/voms"),
            &[],
            "[\"dteam\"]".into(),
        )
        .unwrap();
    assert_eq!(reply.status, 501);
    assert!(
        reply.json()["message"]
            .as_str()
            .unwrap()
            .contains("not supported")
    );
}

/// Every byte of every file in `dir` except the sealing key.
fn data_files(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in walk(dir) {
        if entry
            .file_name()
            .is_some_and(|n| n == ftsd::store::seal::KEY_FILE)
        {
            continue;
        }
        out.push((entry.clone(), std::fs::read(&entry).unwrap()));
    }
    out
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn private_keys_are_sealed_at_rest() {
    let Some(pki) = pki() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(pki, dir.path(), |_| {});
    let client = server.client(pki, Some("rc_user.pem"));
    let id = rc_dlg_id();
    let (status, body) = delegate(&client, pki, "rc_user.pem", &id);
    assert_eq!(status, 201, "{body}");
    // A second, pending request too: its key must be sealed as well.
    let other = server.client(pki, Some("rc_other.pem"));
    let other_id = independent_delegation_id(RC_OTHER_DN, &[]);
    assert_eq!(
        other
            .get(&format!("/delegation/{other_id}/request"))
            .unwrap()
            .status,
        200
    );
    server.stop().unwrap();

    use std::os::unix::fs::PermissionsExt;
    let key_file = dir.path().join(ftsd::store::seal::KEY_FILE);
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(dir.path().join(ftsd::store::DB_FILE))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    // The delegated key, unsealed through the store (which needs seal.key).
    let store = ftsd::store::Redb::open(dir.path()).unwrap();
    let material = store.credential_material(&id, RC_USER_DN).unwrap().unwrap();
    let key_text = String::from_utf8(material.key_pem.to_vec()).unwrap();
    assert!(key_text.contains("PRIVATE KEY"));
    let key_der = pem::parse(&key_text).unwrap().into_contents();
    drop(store);
    let key_line = key_text.lines().nth(1).unwrap().to_string();
    for (path, bytes) in data_files(dir.path()) {
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("PRIVATE KEY"),
            "{} holds a PEM private key",
            path.display()
        );
        assert!(
            !text.contains(&key_line),
            "{} holds the key's base64",
            path.display()
        );
        assert!(
            !bytes
                .windows(64)
                .any(|w| key_der.windows(64).step_by(64).any(|k| k == w)),
            "{} holds DER key bytes",
            path.display()
        );
    }

    // Without seal.key the database alone cannot give the key back.
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(
        dir.path().join(ftsd::store::DB_FILE),
        copy.path().join(ftsd::store::DB_FILE),
    )
    .unwrap();
    let store = ftsd::store::Redb::open(copy.path()).unwrap();
    assert!(store.credential(&id, RC_USER_DN).unwrap().is_some());
    assert!(store.credential_material(&id, RC_USER_DN).is_err());
}

#[test]
fn proxy_files_for_transfers_are_private_usable_and_removed() {
    let Some(pki) = pki() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(pki, dir.path(), |_| {});
    let id = rc_dlg_id();
    let (status, body) = delegate(
        &server.client(pki, Some("rc_user.pem")),
        pki,
        "rc_user.pem",
        &id,
    );
    assert_eq!(status, 201, "{body}");
    server.stop().unwrap();

    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let auth = std::sync::Arc::new(
        ftsd::auth::Authenticator::load(
            &pki.ca_dir(),
            &pki.voms_dir(),
            provider.signature_verification_algorithms.all,
        )
        .unwrap(),
    );
    let proxies = tempfile::tempdir().unwrap();
    let service = ftsd::service::Service::new(
        std::sync::Arc::new(ftsd::store::RedbStore::open(dir.path()).unwrap()),
        auth,
        ftsd::service::Settings::new(String::new(), proxies.path().to_path_buf()),
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let file = runtime
        .block_on(service.proxy_file(&id, RC_USER_DN))
        .unwrap()
        .expect("a credential");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(file.path()).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Layout: proxy certificate, key, chain; and it works as a client credential.
    let tags: Vec<String> = blocks(file.path())
        .iter()
        .map(|b| b.tag().to_string())
        .collect();
    assert_eq!(tags[0], "CERTIFICATE");
    assert!(tags[1].ends_with("PRIVATE KEY"), "{tags:?}");
    assert_eq!(tags[2..], ["CERTIFICATE"]);
    let server = TestServer::start(pki);
    let client = Client::new(
        server.port,
        &pki.path("ca.pem"),
        Some(file.path().to_path_buf()),
    );
    assert_eq!(client.get("/whoami").unwrap().json()["user_dn"], RC_USER_DN);
    let path = file.path().to_path_buf();
    drop(file);
    assert!(
        !path.exists(),
        "the proxy file is removed when no longer needed"
    );
    assert!(
        runtime
            .block_on(service.proxy_file("0000000000000000", RC_USER_DN))
            .unwrap()
            .is_none()
    );
}

/// `kill -9` after a delegation: the restarted service still has it, and it still works.
#[test]
fn delegation_survives_kill_9() {
    let Some(pki) = pki() else { return };
    let data = tempfile::tempdir().unwrap();
    let start = || {
        let (child, port) = spawn_ftsd(pki, data.path());
        let client = Client::new(port, &pki.path("ca.pem"), Some(pki.path("rc_user.pem")));
        (child, client)
    };
    let id = rc_dlg_id();
    let (mut child, client) = start();
    let (status, body) = delegate(&client, pki, "rc_user.pem", &id);
    assert_eq!(status, 201, "{body}");
    let before = client.get(&format!("/delegation/{id}")).unwrap().json();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let (mut child, client) = start();
    let after = client.get(&format!("/delegation/{id}")).unwrap().json();
    assert_eq!(after, before);
    child.kill().unwrap();
    child.wait().unwrap();
    let store = ftsd::store::Redb::open(data.path()).unwrap();
    assert!(
        store
            .credential_material(&id, RC_USER_DN)
            .unwrap()
            .is_some()
    );
}

// ---- interop with the official client ----

fn fts_delegate(bin: &Path, port: u16, pki: &TestPki, proxy: &str, force: bool) -> String {
    let args: &[&str] = if force { &["-v", "-f"] } else { &["-v"] };
    fts_cli(
        bin,
        "fts-rest-delegate",
        port,
        pki,
        CliAs::Proxy(proxy),
        args,
    )
    .ok()
}

#[test]
fn fts_rest_delegate_delegates_skips_and_forces() {
    let Some(pki) = pki() else { return };
    let Some(bin) = fts3_client_bin() else { return };
    let server = TestServer::start(pki);
    let dn = pki.openssl_subject("usercert.pem");
    for (proxy, fqans) in [
        ("proxy_rfc.pem", vec![]),
        ("proxy_voms.pem", vec!["/dteam/Role=NULL/Capability=NULL"]),
    ] {
        let id = independent_delegation_id(&dn, &fqans);
        let first = fts_delegate(&bin, server.port, pki, proxy, false);
        assert!(first.contains("Delegating"), "{first}");
        assert!(first.contains(&format!("Delegation id: {id}")), "{first}");
        let view = server
            .client(pki, Some(proxy))
            .get(&format!("/delegation/{id}"))
            .unwrap()
            .json();
        assert_eq!(view["voms_attrs"], serde_json::json!(fqans), "{proxy}");
        let second = fts_delegate(&bin, server.port, pki, proxy, false);
        assert!(
            second.contains("Not bothering doing the delegation"),
            "{second}"
        );
        let forced = fts_delegate(&bin, server.port, pki, proxy, true);
        assert!(forced.contains("Delegating"), "{forced}");
    }
}
