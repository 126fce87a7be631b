//! The `ftsd` binary as a user runs it: `--help`, `--version`, `dev-pki`, and `serve` with no
//! configuration at all, called with the curl command it prints.

use std::{
    io::{BufRead, BufReader},
    os::unix::fs::PermissionsExt,
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

const BIN: &str = env!("CARGO_BIN_EXE_ftsd");

#[test]
fn help_and_version() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ftsd "));
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("serve") && help.contains("dev-pki"), "{help}");
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--listen",
        "--data-dir",
        "--host-cert",
        "--host-key",
        "--ca-dir",
        "--voms-dir",
    ] {
        assert!(help.contains(flag), "{flag} missing from serve --help");
    }
}

#[test]
fn dev_pki_makes_a_usable_pki_with_private_keys() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let out = Command::new(BIN).arg("dev-pki").arg(&pki).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for key in ["ca.key", "hostkey.pem", "userkey.pem", "proxy.pem"] {
        let mode = std::fs::metadata(pki.join(key))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{key}");
    }
    // openssl agrees that the proxy chains to the CA as a proxy.
    let out = Command::new("openssl")
        .args(["verify", "-allow_proxy_certs", "-CAfile"])
        .arg(pki.join("ca.pem"))
        .arg("-untrusted")
        .arg(pki.join("usercert.pem"))
        .arg(pki.join("proxy.pem"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(pki.join("ca.pem"))
        .arg(pki.join("hostcert.pem"))
        .output()
        .unwrap();
    assert!(out.status.success());
}

/// `ftsd serve` with no configuration: it makes its dev PKI under ./ftsd-data, prints a curl
/// command, and that command (run verbatim) returns the dev user's whoami. SIGTERM stops it.
/// (`--listen 127.0.0.1:0` only avoids clashing with another service on 8446.)
#[test]
fn serve_without_configuration_prints_a_working_curl_command() {
    let cwd = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(cwd.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let line = line.trim();
            if line.starts_with("curl ") || line.starts_with("fts-rest-whoami ") {
                let _ = tx.send(line.to_string());
            }
        }
    });
    let curl = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("ftsd serve prints a curl command");
    let fts_whoami = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("ftsd serve prints an fts-rest-whoami command");
    assert!(cwd.path().join("ftsd-data/dev-pki/ca.pem").is_file());
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{curl} --silent --show-error"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{curl}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let who: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(who["user_dn"], ftsd::devpki::DEV_USER_DN);
    assert_eq!(who["method"], "certificate");
    assert!(cwd.path().join("ftsd-data/ftsd.redb").is_file());

    // The printed fts3 CLI command works too (when the client is installed; CI has it).
    match std::env::var_os("FTS3_CLIENT_BIN") {
        Some(bin) => {
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!("{}/{fts_whoami}", bin.to_string_lossy()))
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{fts_whoami}: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                text.contains(&format!("User DN: {}", ftsd::devpki::DEV_USER_DN)),
                "{text}"
            );
        }
        None => assert!(!crate::common::in_ci(), "FTS3_CLIENT_BIN must be set in CI"),
    }

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "ftsd exits 0 on SIGTERM, got {status}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ftsd did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
