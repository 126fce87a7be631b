//! Interop with Rucio, FTS3's main client: its real FTS3 transfertool (PyPI `rucio`, pinned in
//! `.ci/run`, installed in `.ci/venv-rucio`) drives ftsd through `tests/rucio/rucio_interop.py`.
//! The script runs Rucio's submitter and poller code on Rucio's own (SQLite) database; this test
//! gives it a server with the engine on, a delegated VOMS proxy (Rucio never delegates) and the
//! `config` grant operators give Rucio's DN for bans and storage limits, then checks that every
//! case passed. The cases are listed in the script; run one with `RUCIO_CASES=<name,...>`.

use std::{path::PathBuf, process::Command};

use serde_json::json;

use crate::common::{ROOT, TestPki, delegate_test_user, in_ci, pki, post_json};
use crate::engine::engine_server;
use crate::tls_auth::independent_delegation_id;

/// Rucio's credential: Test User's VOMS proxy (VO dteam), as Rucio's `[conveyor] usercert`.
const PROXY: &str = "proxy_voms.pem";
const FQAN: &str = "/dteam/Role=NULL/Capability=NULL";

/// The Python of the Rucio venv: `RUCIO_VENV`, else `.ci/venv-rucio`. Missing: a failure in
/// CI, a loud skip otherwise.
fn rucio_python() -> Option<PathBuf> {
    let venv = std::env::var_os("RUCIO_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".ci/venv-rucio"));
    let python = venv.join("bin/python");
    if python.exists() {
        return Some(python);
    }
    assert!(
        !in_ci(),
        "the Rucio venv is required in CI: {} is missing (see .ci/run)",
        python.display()
    );
    eprintln!(
        "SKIPPING: no Rucio venv at {} (python3 -m venv .ci/venv-rucio && \
         .ci/venv-rucio/bin/pip install rucio==41.5.1, or set RUCIO_VENV)",
        venv.display()
    );
    None
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/rucio/rucio_interop.py")
}

#[test]
fn rucio_transfertool_interop() {
    let Some(pki) = pki() else { return };
    let Some(python) = rucio_python() else { return };
    let server = engine_server(pki, |_| {});
    prepare_rucio_identity(&server, pki);

    let work = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(&python);
    cmd.arg(script())
        .args(["--fts", &format!("https://127.0.0.1:{}", server.port)])
        .arg("--cert")
        .arg(pki.path(PROXY))
        .arg("--workdir")
        .arg(work.path())
        .env_remove("RUCIO_CONFIG")
        .env_remove("RUCIO_HOME");
    if let Ok(cases) = std::env::var("RUCIO_CASES") {
        cmd.args(cases.split(',').filter(|c| !c.is_empty()));
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    if !out.status.success() {
        let log = std::fs::read_to_string(work.path().join("rucio.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(200).collect();
        panic!(
            "Rucio's transfertool against ftsd failed:\n{stdout}\n{}\n--- last lines of \
             rucio.log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    assert!(stdout.contains(" cases passed"), "{stdout}");
}

/// What a site does for Rucio once: its DN may change bans and storage limits
/// (`/config/authorize`, by root), and its proxy is delegated (`fts-rest-delegate` by cron).
fn prepare_rucio_identity(server: &crate::common::TestServer, pki: &TestPki) {
    let dn = pki.openssl_subject("usercert.pem");
    let root = server.client(pki, Some(ROOT));
    let grant = post_json(
        &root,
        "/config/authorize",
        &json!({"dn": dn, "operation": "config"}),
    );
    assert_eq!(grant.status, 200, "{}", grant.text());
    let user = server.client(pki, Some(PROXY));
    let dlg_id = independent_delegation_id(&dn, &[FQAN]);
    let (status, body) = delegate_test_user(&user, pki, &dlg_id, false);
    assert_eq!(status, 201, "{body}");
}
