//! Interop with the official FTS3 client (PyPI `fts3`): `fts-rest-whoami` against ftsd.
//! CI installs the client in a venv and points `FTS3_CLIENT_BIN` at its `bin` directory.

use std::process::Command;

use crate::common::{TestServer, in_ci, pki};
use crate::tls_auth::independent_delegation_id;

fn client_bin() -> Option<std::path::PathBuf> {
    match std::env::var_os("FTS3_CLIENT_BIN") {
        Some(dir) => Some(dir.into()),
        None => {
            assert!(
                !in_ci(),
                "FTS3_CLIENT_BIN must point at the fts3 client venv in CI"
            );
            eprintln!("SKIPPING: FTS3_CLIENT_BIN not set (pip install fts3 into a venv)");
            None
        }
    }
}

fn whoami(bin: &std::path::Path, port: u16, pki: &crate::common::TestPki, proxy: &str) -> String {
    let out = Command::new(bin.join("fts-rest-whoami"))
        .args(["-s", &format!("https://localhost:{port}")])
        .arg("--capath")
        .arg(pki.ca_dir())
        .env("X509_USER_PROXY", pki.path(proxy))
        .env_remove("X509_USER_CERT")
        .env_remove("X509_USER_KEY")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "fts-rest-whoami with {proxy} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn fts_rest_whoami_with_rfc_and_voms_proxies() {
    let Some(pki) = pki() else { return };
    let Some(bin) = client_bin() else { return };
    let server = TestServer::start(pki);
    let dn = pki.openssl_subject("usercert.pem");

    let out = whoami(&bin, server.port, pki, "proxy_rfc.pem");
    let id = independent_delegation_id(&dn, &[]);
    assert!(out.contains(&format!("User DN: {dn}")), "{out}");
    assert!(out.contains(&format!("VO: {id}")), "{out}");
    assert!(out.contains(&format!("Delegation id: {id}")), "{out}");

    let out = whoami(&bin, server.port, pki, "proxy_voms.pem");
    let id = independent_delegation_id(&dn, &["/dteam/Role=NULL/Capability=NULL"]);
    assert!(out.contains(&format!("User DN: {dn}")), "{out}");
    assert!(out.contains("VO: dteam"), "{out}");
    assert!(out.contains(&format!("Delegation id: {id}")), "{out}");
}
