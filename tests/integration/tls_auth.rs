//! Client authentication: which chains the TLS layer accepts, what whoami then says, and which
//! chains fail the handshake (and why).

use rustls::pki_types::pem::PemObject;

use crate::common::{RC_USER_DN, ROOT, TestServer, pki};

/// Delegation id computed without ftsd's code: sha1 of DN ‖ FQANs with `sha1sum`, 16 hex digits.
pub fn independent_delegation_id(dn: &str, fqans: &[&str]) -> String {
    let input: String = std::iter::once(dn).chain(fqans.iter().copied()).collect();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("printf '%s' \"$1\" | sha1sum")
        .arg("sh")
        .arg(&input)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()[..16].to_string()
}

#[test]
fn accepted_chains_report_the_user_certificate_identity() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    let user_dn = pki.openssl_subject("usercert.pem");
    assert_eq!(user_dn, "/DC=org/DC=example/CN=Test User");
    let plain_id = independent_delegation_id(&user_dn, &[]);
    for credential in [
        "proxy_rfc.pem",
        "proxy_rfc2.pem",
        "proxy_limited.pem",
        "proxy_legacy.pem",
        "proxy_legacy_limited.pem",
        "proxy_gt3.pem",
        "proxy_openssl.pem",
    ] {
        let reply = server
            .client(pki, Some(credential))
            .get("/whoami")
            .unwrap_or_else(|e| panic!("{credential} refused: {e}"));
        assert_eq!(reply.status, 200, "{credential}");
        let who = reply.json();
        assert_eq!(who["user_dn"], user_dn.as_str(), "{credential}");
        assert_eq!(who["dn"][0], user_dn.as_str(), "{credential}");
        assert_eq!(who["method"], "certificate", "{credential}");
        assert_eq!(who["voms_cred"], serde_json::json!([]), "{credential}");
        assert_eq!(who["delegation_id"], plain_id.as_str(), "{credential}");
        // No VO: the reference uses the delegation id as the VO.
        assert_eq!(who["vos"], serde_json::json!([plain_id]), "{credential}");
        assert_eq!(who["is_root"], false);
    }

    // A plain user certificate (with its key in a separate file, joined here).
    let joined = pki.dir.join("user_and_key.pem");
    std::fs::write(
        &joined,
        [
            std::fs::read(pki.path("usercert.pem")).unwrap(),
            std::fs::read(pki.path("userkey.pem")).unwrap(),
        ]
        .concat(),
    )
    .unwrap();
    let who = server
        .client(pki, Some("user_and_key.pem"))
        .get("/whoami")
        .unwrap()
        .json();
    assert_eq!(who["user_dn"], user_dn.as_str());

    // Chains from the second CA (with a CRL that does not list them).
    for credential in ["rc_user.pem", "rc_proxy.pem", "rc_limited.pem"] {
        let who = server
            .client(pki, Some(credential))
            .get("/whoami")
            .unwrap_or_else(|e| panic!("{credential} refused: {e}"))
            .json();
        assert_eq!(who["user_dn"], RC_USER_DN, "{credential}");
    }
}

#[test]
fn voms_proxies_carry_their_fqans() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    let user_dn = pki.openssl_subject("usercert.pem");
    let fqan = "/dteam/Role=NULL/Capability=NULL";
    let expected_id = independent_delegation_id(&user_dn, &[fqan]);
    for credential in ["proxy_voms.pem", "proxy_voms_legacy.pem"] {
        let who = server
            .client(pki, Some(credential))
            .get("/whoami")
            .unwrap()
            .json();
        assert_eq!(who["user_dn"], user_dn.as_str(), "{credential}");
        assert_eq!(who["voms_cred"], serde_json::json!([fqan]), "{credential}");
        assert_eq!(who["vos"], serde_json::json!(["dteam"]), "{credential}");
        assert_eq!(
            who["vos_id"],
            serde_json::json!(["6b10f4e4-8fdc-5555-baa2-7d4850d4f406"]),
            "{credential}"
        );
        assert_eq!(who["delegation_id"], expected_id.as_str(), "{credential}");
        assert_eq!(who["roles"], serde_json::json!([]), "{credential}");
    }
}

#[test]
fn a_voms_proxy_without_trust_for_its_server_gets_no_fqans() {
    let Some(pki) = pki() else { return };
    let empty_vomsdir = tempfile::tempdir().unwrap();
    let path = empty_vomsdir.path().to_path_buf();
    let server = TestServer::start_with(pki, move |c| c.voms_dir = Some(path));
    let who = server
        .client(pki, Some("proxy_voms.pem"))
        .get("/whoami")
        .unwrap()
        .json();
    assert_eq!(who["voms_cred"], serde_json::json!([]));
    assert_eq!(who["user_dn"], "/DC=org/DC=example/CN=Test User");
}

/// Each refusal case: the credential file and a fragment of the reason `auth` gives.
const REFUSALS: &[(&str, &str)] = &[
    ("bad_untrusted_ca.pem", "unknown CA"),
    ("bad_expired_proxy.pem", "expired"),
    ("bad_future_proxy.pem", "not yet valid"),
    ("bad_signature.pem", "signature"),
    ("bad_subject.pem", "plus one CN"),
    ("bad_proxy_is_ca.pem", "CA"),
    ("bad_revoked_user.pem", "revoked"),
    ("bad_ends_in_proxy.pem", "chain ends in a proxy"),
    ("bad_expired_user.pem", "user certificate: expired"),
];

#[test]
fn bad_chains_fail_the_handshake_for_the_right_reason() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let auth = ftsd::auth::Authenticator::load(
        &pki.ca_dir(),
        &pki.voms_dir(),
        provider.signature_verification_algorithms.all,
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for (credential, reason) in REFUSALS {
        let ders: Vec<Vec<u8>> =
            rustls::pki_types::CertificateDer::pem_file_iter(pki.path(credential))
                .unwrap()
                .map(|c| c.unwrap().to_vec())
                .collect();
        let chain: Vec<&[u8]> = ders.iter().map(|d| d.as_slice()).collect();
        let err = auth
            .verify(&chain, now)
            .expect_err(&format!("{credential} must be refused"))
            .to_string();
        assert!(
            err.contains(reason),
            "{credential}: expected a reason containing {reason:?}, got {err:?}"
        );
        let result = server.client(pki, Some(credential)).get("/whoami");
        assert!(
            result.is_err(),
            "{credential}: the handshake must fail, got {result:?}"
        );
    }
    // The server is still healthy afterwards.
    assert_eq!(server.client(pki, None).get("/whoami").unwrap().status, 200);
}

#[test]
fn the_host_certificate_is_root() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    let who = server
        .client(pki, Some(ROOT))
        .get("/whoami")
        .unwrap()
        .json();
    assert_eq!(who["is_root"], true);
    for op in ["transfer", "deleg", "config", "admin", "datamanagement"] {
        assert_eq!(who["level"][op], "all", "{op}");
    }
}

#[test]
fn whoami_certificate_returns_the_presented_chain() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    let reply = server
        .client(pki, Some("proxy_rfc.pem"))
        .get("/whoami/certificate")
        .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/x-pem-file"));
    let sent: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(pki.path("proxy_rfc.pem"))
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let got: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(&reply.body)
        .map(|c| c.unwrap())
        .collect();
    assert_eq!(got, sent);

    let anonymous = server.client(pki, None).get("/whoami/certificate").unwrap();
    assert_eq!(anonymous.status, 403);
    assert_eq!(anonymous.json()["message"], "Certificate required");
}
