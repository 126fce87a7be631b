//! The `ftsd` binary as a user runs it: `--help`, `--version`, `dev-pki`, and `serve` with no
//! configuration at all, called with the curl command it prints.

use ftsd::devpki::DevPki;
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
    // Its CA directory works as a CA directory (`-CApath`, `--capath`, `X509_CERT_DIR`: OpenSSL
    // finds a CA by its subject hash), for the proxy and the host certificate.
    for (cert, untrusted) in [("proxy.pem", Some("usercert.pem")), ("hostcert.pem", None)] {
        let mut verify = Command::new("openssl");
        verify
            .args(["verify", "-allow_proxy_certs", "-CApath"])
            .arg(pki.join("certificates"));
        if let Some(untrusted) = untrusted {
            verify.arg("-untrusted").arg(pki.join(untrusted));
        }
        let out = verify.arg(pki.join(cert)).output().unwrap();
        assert!(
            out.status.success(),
            "{cert}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `ftsd serve` with no configuration: it makes its dev PKI under ./ftsd-data, prints a curl
/// command, and that command (run verbatim) returns the dev user's whoami. SIGTERM stops it.
/// Its log (stderr, not a terminal here) has no colour codes and one line per request with the
/// caller, the bytes and the duration. (`--listen 127.0.0.1:0` only avoids clashing with
/// another service on 8446; `first_hour` runs every command of the banner on the real port.)
#[test]
fn serve_without_configuration_prints_a_working_curl_command() {
    let cwd = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(cwd.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let line = line.trim();
            if line.starts_with("curl ") {
                let _ = tx.send(line.to_string());
            }
        }
    });
    let stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut text);
        text
    });
    let curl = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("ftsd serve prints a curl command");
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
    let log = log.join().unwrap();
    assert!(
        !log.contains('\x1b'),
        "colour codes in a log that is not a terminal:\n{log}"
    );
    let request = log
        .lines()
        .find(|l| l.contains("request") && l.contains("path=/whoami"))
        .unwrap_or_else(|| panic!("no access log line for /whoami:\n{log}"));
    assert!(
        request.contains(&format!("user=\"{}\"", ftsd::devpki::DEV_USER_DN))
            && request.contains("status=200")
            && request.contains(&format!("bytes={}", out.stdout.len()))
            && request.contains(" ms="),
        "{request}"
    );
}

/// `ftsd serve` with `args` in `cwd`, run to its end (it fails at start): exit code, stdout,
/// stderr.
fn serve_fails(args: &[&str], cwd: &std::path::Path) -> (Option<i32>, String, String) {
    let mut child = Command::new(BIN)
        .arg("serve")
        .args(args)
        .current_dir(cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("ftsd serve {args:?} did not stop");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Start errors name the option and the file, in check-config's words, and come before
/// anything is created: a missing host certificate is not reported as a missing trust store,
/// a key that is not the certificate's says so, a taken port names the address.
#[test]
fn serve_start_errors_name_what_is_wrong_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let a = DevPki::create(&dir.path().join("a")).unwrap();
    let b = DevPki::create(&dir.path().join("b")).unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let missing = dir.path().join("missing/hostcert.pem");
    let (code, _, err) = serve_fails(
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data_arg,
            "--host-cert",
            missing.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("ftsd: host_cert {}: ", missing.display())),
        "{err}"
    );
    assert!(!err.contains("trust store"), "{err}");
    assert!(
        !data.exists(),
        "nothing is created before the certificates are checked"
    );

    let (code, _, err) = serve_fails(
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data_arg,
            "--host-cert",
            a.host_cert.to_str().unwrap(),
            "--host-key",
            b.host_key.to_str().unwrap(),
            "--ca-dir",
            a.ca_dir.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "ftsd: host_key {}: not the key of host_cert {}",
            b.host_key.display(),
            a.host_cert.display()
        )),
        "{err}"
    );
    assert!(!data.exists());

    if !std::path::Path::new(ftsd::config::GRID_CA_DIR).exists() {
        let (code, _, err) = serve_fails(
            &[
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                data_arg,
                "--host-cert",
                a.host_cert.to_str().unwrap(),
            ],
            dir.path(),
        );
        assert_eq!(code, Some(1), "{err}");
        assert!(
            err.contains("ca_dir is not set, and with host_cert set it defaults to"),
            "{err}"
        );
        assert!(!data.exists());
    }

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let (code, out, err) = serve_fails(&["--listen", &address, "--data-dir", data_arg], dir.path());
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "ftsd: cannot listen on {address}: the address is already in use"
        )),
        "{err}"
    );
    assert!(!out.contains("ftsd is running"), "{out}");
}

/// A second `ftsd serve` on a data directory in use says so with the database's path, and
/// never claims to run; a client certificate from another dev PKI is refused as an unknown CA,
/// and the log names its subject and issuer.
#[test]
fn a_second_instance_and_a_foreign_certificate_are_explained() {
    let cwd = tempfile::tempdir().unwrap();
    let mut first = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(cwd.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = first.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.trim().strip_prefix("curl ") {
                let _ = tx.send(rest.to_string());
            }
        }
    });
    let stderr = first.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut text);
        text
    });
    let curl = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("ftsd serve prints a curl command");
    let url = curl.split_whitespace().last().unwrap().to_string();

    let (code, out, err) = serve_fails(&["--listen", "127.0.0.1:0"], cwd.path());
    assert_eq!(code, Some(1), "{err}");
    let db = std::fs::canonicalize(cwd.path().join("ftsd-data"))
        .unwrap()
        .join("ftsd.redb");
    assert!(
        err.contains(
            "is in use by another process: is another ftsd running on this data directory?"
        ) && err.contains("ftsd-data/ftsd.redb"),
        "{err} ({})",
        db.display()
    );
    assert!(!out.contains("ftsd is running"), "{out}");

    let other = DevPki::create(&cwd.path().join("other")).unwrap();
    let ca = cwd.path().join("ftsd-data/dev-pki/ca.pem");
    let refused = Command::new("curl")
        .args(["--silent", "--show-error", "--cacert"])
        .arg(&ca)
        .arg("--cert")
        .arg(&other.proxy)
        .arg(&url)
        .output()
        .unwrap();
    assert!(!refused.status.success());

    let _ = Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status();
    assert!(first.wait().unwrap().success());
    let log = log.join().unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("client certificate refused"))
        .unwrap_or_else(|| panic!("no refusal logged:\n{log}"));
    assert!(
        line.contains(&format!("subject=\"{}/CN=", ftsd::devpki::DEV_USER_DN))
            && line.contains("issuer=\"/O=ftsd/OU=dev/CN=ftsd dev CA ")
            && line.contains("reason=user certificate: unknown CA"),
        "{line}"
    );
}
