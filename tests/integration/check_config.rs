//! `ftsd check-config` as an operator runs it: the binary, a configuration file, its report on
//! stdout and its exit status (0 when the service can start, 1 otherwise).

use std::{path::Path, process::Command};

use ftsd::devpki::DevPki;

const BIN: &str = env!("CARGO_BIN_EXE_ftsd");

/// Run `ftsd check-config` with `args`; returns (exit code, stdout). It listens on a free
/// port (check-config tries the address, and tests run at once) unless `args` say otherwise.
fn check_config(args: &[&str], cwd: &Path) -> (i32, String) {
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let out = Command::new(BIN)
        .arg("check-config")
        .args(["--listen", &listen])
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().unwrap_or(-1), stdout)
}

/// The packaged /etc/ftsd/ftsd.toml with its paths moved under `root`, where a PKI in the
/// /etc/grid-security layout lives.
fn packaged_config_under(root: &Path) -> String {
    let grid = root.join("etc/grid-security");
    DevPki::create(&grid).unwrap();
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/ftsd.toml"))
        .unwrap();
    text.replace("/etc/grid-security", &grid.display().to_string())
        .replace(
            "/var/lib/ftsd",
            &root.join("var/lib/ftsd").display().to_string(),
        )
}

#[test]
fn the_packaged_configuration_passes_on_a_site_with_its_files() {
    let root = tempfile::tempdir().unwrap();
    let config = root.path().join("ftsd.toml");
    std::fs::write(&config, packaged_config_under(root.path())).unwrap();
    let (code, out) = check_config(&["--config", config.to_str().unwrap()], root.path());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok       host_cert: "), "{out}");
    assert!(out.contains("ok       host_key: "), "{out}");
    assert!(out.contains("ok       ca_dir: "), "{out}");
    assert!(out.contains("0 error(s)"), "{out}");
}

#[test]
fn a_missing_host_certificate_is_reported_with_its_path() {
    let root = tempfile::tempdir().unwrap();
    let config = root.path().join("ftsd.toml");
    let text = packaged_config_under(root.path());
    std::fs::remove_file(root.path().join("etc/grid-security/hostcert.pem")).unwrap();
    std::fs::write(&config, text).unwrap();
    let (code, out) = check_config(&["--config", config.to_str().unwrap()], root.path());
    assert_eq!(code, 1, "{out}");
    let expected = format!(
        "error    host_cert: {} does not exist",
        root.path().join("etc/grid-security/hostcert.pem").display()
    );
    assert!(out.contains(&expected), "{out}");
    assert!(out.contains("1 error(s)"), "{out}");
}

#[test]
fn a_bad_port_is_reported_with_the_option_and_the_value() {
    let dir = tempfile::tempdir().unwrap();
    for (listen, why) in [
        ("0.0.0.0:99999", "port 99999 is out of range"),
        ("0.0.0.0:http", "port \"http\" is not a number"),
        ("localhost:8446", "\"localhost\" is not an IP address"),
    ] {
        let config = dir.path().join("ftsd.toml");
        std::fs::write(&config, format!("# a comment\nlisten = \"{listen}\"\n")).unwrap();
        let (code, out) = check_config(&["--config", config.to_str().unwrap()], dir.path());
        assert_eq!(code, 1, "{out}");
        let expected = format!(
            "error    listen: {}: line 2: invalid listen address \"{listen}\": ",
            config.display()
        );
        assert!(out.contains(&expected), "{out}");
        assert!(out.contains(why), "{out}");
    }
    // The same explanation for the command-line override (clap's usage error, status 2).
    let out = Command::new(BIN)
        .args(["serve", "--listen", "0.0.0.0:99999"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--listen") && stderr.contains("port 99999 is out of range"),
        "{stderr}"
    );
}

#[test]
fn without_a_host_certificate_it_says_the_dev_pki_will_be_used() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = check_config(&[], dir.path());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("checking the embedded defaults"), "{out}");
    assert!(
        out.contains("info     host_cert: not set: the service uses the throwaway dev PKI"),
        "{out}"
    );
    // Checking made nothing: the dev PKI is created by `serve`, not by a check.
    assert!(!dir.path().join("ftsd-data").exists());
}

#[test]
fn a_world_readable_file_with_provider_secrets_is_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let config = root.path().join("ftsd.toml");
    let text = format!(
        "{}\n[oidc]\n[[oidc.providers]]\nissuer = \"https://iam.example.org/\"\n\
         client_id = \"ftsd\"\nclient_secret = \"a-provider-secret\"\n",
        packaged_config_under(root.path())
    );
    std::fs::write(&config, text).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out) = check_config(&["--config", config.to_str().unwrap()], root.path());
    // A warning, not an error: the service can start.
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("oidc.providers"), "{out}");
    assert!(out.contains("chmod o-r"), "{out}");
    assert!(!out.contains("a-provider-secret"), "{out}");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, out) = check_config(&["--config", config.to_str().unwrap()], root.path());
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("chmod o-r"), "{out}");
    assert!(
        out.contains("bearer tokens from https://iam.example.org/"),
        "{out}"
    );
}
