//! Interop with the official FTS3 client (PyPI `fts3`): `fts-rest-whoami` against ftsd.
//! CI installs the client in a venv and points `FTS3_CLIENT_BIN` at its `bin` directory.

use crate::common::{CliAs, fts_cli, fts3_client_bin};
use crate::common::{TestServer, pki};
use crate::tls_auth::independent_delegation_id;

fn whoami(bin: &std::path::Path, port: u16, pki: &crate::common::TestPki, proxy: &str) -> String {
    fts_cli(bin, "fts-rest-whoami", port, pki, CliAs::Proxy(proxy), &[]).ok()
}

#[test]
fn fts_rest_whoami_with_rfc_and_voms_proxies() {
    let Some(pki) = pki() else { return };
    let Some(bin) = fts3_client_bin() else { return };
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
