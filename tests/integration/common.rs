//! Test fixtures: a throwaway grid PKI made with the real grid tools (plus chains the tools
//! cannot make, built with `ftsd::devpki`), an in-process server on an ephemeral port, and an
//! HTTPS client that can present proxy chains.

#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, OnceLock},
    thread::JoinHandle,
};

use bytes::Bytes;
use ftsd::{config::Config, devpki::Credential, devpki::Kind};
use http_body_util::{BodyExt, Full};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use time::{Duration, OffsetDateTime};

/// True when running in CI, where every external tool must be present.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
}

/// Tools the grid-tool fixtures need. Missing in CI is a failure, locally a loud skip.
pub fn require_tool(tool: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(!in_ci(), "{tool} is required in CI (see .ci/run)");
        eprintln!(
            "SKIPPING: {tool} not installed (apt-get install voms-clients globus-proxy-utils)"
        );
    }
    found
}

/// The official fts3 client's `bin` directory (`FTS3_CLIENT_BIN`; CI installs the client in a
/// venv). Unset: a failure in CI, a loud skip otherwise.
pub fn fts3_client_bin() -> Option<PathBuf> {
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

/// Who an fts3 client command authenticates as.
#[derive(Clone, Copy)]
pub enum CliAs<'a> {
    /// `X509_USER_PROXY` = this file of the test PKI.
    Proxy(&'a str),
    /// `--cert`/`--key` = the host certificate (root).
    Host,
}

/// What an fts3 client command did.
pub struct CliRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliRun {
    /// stdout then stderr.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// [`CliRun::text`], asserting the command succeeded.
    pub fn ok(self) -> String {
        assert_eq!(self.code, 0, "the fts3 command failed:\n{}", self.text());
        self.text()
    }
}

/// Run the fts3 client command `name` against the server on `port` as `who`.
pub fn fts_cli(
    bin: &Path,
    name: &str,
    port: u16,
    pki: &TestPki,
    who: CliAs<'_>,
    args: &[&str],
) -> CliRun {
    let mut cmd = Command::new(bin.join(name));
    cmd.args(["-s", &format!("https://localhost:{port}")])
        .arg("--capath")
        .arg(pki.ca_dir())
        .env_remove("X509_USER_PROXY")
        .env_remove("X509_USER_CERT")
        .env_remove("X509_USER_KEY");
    match who {
        CliAs::Proxy(proxy) => {
            cmd.env("X509_USER_PROXY", pki.path(proxy));
        }
        CliAs::Host => {
            cmd.arg("--cert")
                .arg(pki.path("hostcert.pem"))
                .arg("--key")
                .arg(pki.path("hostkey.pem"));
        }
    }
    let out = cmd.args(args).output().unwrap();
    CliRun {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The job id the fts3 client prints ("Job id: <uuid>").
pub fn job_id_of(out: &str) -> String {
    out.lines()
        .find_map(|l| l.trim().strip_prefix("Job id: "))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no job id in:\n{out}"))
}

/// The test PKI directory (make-test-pki.sh output plus ftsd-made chains), built once.
pub struct TestPki {
    pub dir: PathBuf,
}

impl TestPki {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    pub fn ca_dir(&self) -> PathBuf {
        self.dir.join("certificates")
    }
    pub fn voms_dir(&self) -> PathBuf {
        self.dir.join("vomsdir")
    }
    /// `openssl x509 -noout -subject -nameopt compat` of a PEM file: an independent DN.
    pub fn openssl_subject(&self, name: &str) -> String {
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-subject", "-nameopt", "compat", "-in"])
            .arg(self.path(name))
            .output()
            .expect("openssl runs");
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .trim_start_matches("subject=")
            .to_string()
    }
}

/// The host certificate and key in one file: a client presenting it is root.
pub const ROOT: &str = "host_and_key.pem";
/// Test User's certificate and key in one file: the identity the storage peers know.
pub const TEST_USER: &str = "user_and_key.pem";
pub const TEST_USER_DN: &str = "/DC=org/DC=example/CN=Test User";

/// Names of the chains built by `build_extra_chains`.
pub const RC_USER_DN: &str = "/O=Example/CN=Rc User";
pub const RC_OTHER_DN: &str = "/O=Example/CN=Rc Other";
pub const RC_REVOKED_SERIAL: u64 = 0x2bad;

static PKI: OnceLock<Option<TestPki>> = OnceLock::new();

/// The shared PKI, or `None` when the grid tools are missing outside CI.
pub fn pki() -> Option<&'static TestPki> {
    PKI.get_or_init(|| {
        if !(require_tool("grid-proxy-init") && require_tool("voms-proxy-fake")) {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("ftsd-pki-")
            .tempdir()
            .unwrap()
            .keep();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pki/make-test-pki.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "make-test-pki.sh failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        build_extra_chains(&dir);
        Some(TestPki { dir })
    })
    .as_ref()
}

fn write_chain(dir: &Path, name: &str, certs: &[&[u8]], key_pem: &str) {
    let mut pem = String::new();
    for der in certs {
        pem.push_str(&pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec())));
    }
    pem.push_str(key_pem);
    std::fs::write(dir.join(name), pem).unwrap();
}

/// Chains the grid tools cannot make: a second trusted CA (with a CRL), and the refusal cases.
fn build_extra_chains(dir: &Path) {
    let host = [
        std::fs::read(dir.join("hostcert.pem")).unwrap(),
        std::fs::read(dir.join("hostkey.pem")).unwrap(),
    ]
    .concat();
    std::fs::write(dir.join(ROOT), host).unwrap();
    let user = [
        std::fs::read(dir.join("usercert.pem")).unwrap(),
        std::fs::read(dir.join("userkey.pem")).unwrap(),
    ]
    .concat();
    std::fs::write(dir.join(TEST_USER), user).unwrap();
    let now = OffsetDateTime::now_utc();
    let (from, to) = (now - Duration::hours(1), now + Duration::days(30));
    let ca = Credential::issue("/O=Example/CN=Rc CA", Kind::Ca, None, from, to, 1).unwrap();
    std::fs::write(dir.join("certificates/rcgen-ca.pem"), &ca.cert_pem).unwrap();
    std::fs::write(
        dir.join("rc_ca.pem"),
        format!("{}{}", ca.cert_pem, ca.key_pem),
    )
    .unwrap();
    std::fs::write(
        dir.join("certificates/rcgen-ca.r0"),
        ca.crl_pem(&[RC_REVOKED_SERIAL]).unwrap(),
    )
    .unwrap();
    let user = Credential::issue(RC_USER_DN, Kind::User, Some(&ca), from, to, 0x100).unwrap();
    let proxy = |subject: &str, kind: Kind, issuer: &Credential, a, b| {
        Credential::issue(subject, kind, Some(issuer), a, b, 0x200).unwrap()
    };
    let rfc = Kind::Rfc3820Proxy { limited: false };
    let good = proxy(&format!("{RC_USER_DN}/CN=1"), rfc.clone(), &user, from, to);
    write_chain(dir, "rc_user.pem", &[&user.cert_der], &user.key_pem);
    let other = Credential::issue(RC_OTHER_DN, Kind::User, Some(&ca), from, to, 0x101).unwrap();
    write_chain(dir, "rc_other.pem", &[&other.cert_der], &other.key_pem);
    write_chain(
        dir,
        "rc_proxy.pem",
        &[&good.cert_der, &user.cert_der],
        &good.key_pem,
    );
    let limited = proxy(
        &format!("{RC_USER_DN}/CN=2"),
        Kind::Rfc3820Proxy { limited: true },
        &user,
        from,
        to,
    );
    write_chain(
        dir,
        "rc_limited.pem",
        &[&limited.cert_der, &user.cert_der],
        &limited.key_pem,
    );

    // Refusals.
    let expired = proxy(
        &format!("{RC_USER_DN}/CN=3"),
        rfc.clone(),
        &user,
        now - Duration::days(2),
        now - Duration::days(1),
    );
    write_chain(
        dir,
        "bad_expired_proxy.pem",
        &[&expired.cert_der, &user.cert_der],
        &expired.key_pem,
    );
    let future = proxy(
        &format!("{RC_USER_DN}/CN=4"),
        rfc.clone(),
        &user,
        now + Duration::days(1),
        now + Duration::days(2),
    );
    write_chain(
        dir,
        "bad_future_proxy.pem",
        &[&future.cert_der, &user.cert_der],
        &future.key_pem,
    );
    let mut forged = good.cert_der.clone();
    let last = forged.len() - 1;
    forged[last] ^= 0x01;
    write_chain(
        dir,
        "bad_signature.pem",
        &[&forged, &user.cert_der],
        &good.key_pem,
    );
    let wrong_subject = proxy("/O=Other/CN=Rc User/CN=5", rfc.clone(), &user, from, to);
    write_chain(
        dir,
        "bad_subject.pem",
        &[&wrong_subject.cert_der, &user.cert_der],
        &wrong_subject.key_pem,
    );
    let ca_proxy = proxy(
        &format!("{RC_USER_DN}/CN=6"),
        Kind::Rfc3820ProxyCa,
        &user,
        from,
        to,
    );
    write_chain(
        dir,
        "bad_proxy_is_ca.pem",
        &[&ca_proxy.cert_der, &user.cert_der],
        &ca_proxy.key_pem,
    );
    write_chain(
        dir,
        "bad_ends_in_proxy.pem",
        &[&good.cert_der],
        &good.key_pem,
    );
    let revoked = Credential::issue(
        "/O=Example/CN=Revoked User",
        Kind::User,
        Some(&ca),
        from,
        to,
        RC_REVOKED_SERIAL,
    )
    .unwrap();
    let revoked_proxy = proxy(
        "/O=Example/CN=Revoked User/CN=7",
        rfc.clone(),
        &revoked,
        from,
        to,
    );
    write_chain(
        dir,
        "bad_revoked_user.pem",
        &[&revoked_proxy.cert_der, &revoked.cert_der],
        &revoked_proxy.key_pem,
    );
    let expired_user = Credential::issue(
        "/O=Example/CN=Old User",
        Kind::User,
        Some(&ca),
        now - Duration::days(30),
        now - Duration::days(1),
        0x300,
    )
    .unwrap();
    write_chain(
        dir,
        "bad_expired_user.pem",
        &[&expired_user.cert_der],
        &expired_user.key_pem,
    );
    let rogue_ca = Credential::issue("/O=Rogue/CN=Rogue CA", Kind::Ca, None, from, to, 9).unwrap();
    let rogue_user = Credential::issue(
        "/O=Example/CN=Rc User",
        Kind::User,
        Some(&rogue_ca),
        from,
        to,
        0x100,
    )
    .unwrap();
    write_chain(
        dir,
        "rogue_user.pem",
        &[&rogue_user.cert_der],
        &rogue_user.key_pem,
    );
    let rogue_proxy = proxy(&format!("{RC_USER_DN}/CN=8"), rfc, &rogue_user, from, to);
    write_chain(
        dir,
        "bad_untrusted_ca.pem",
        &[&rogue_proxy.cert_der, &rogue_user.cert_der],
        &rogue_proxy.key_pem,
    );
}

/// Run the `ftsd` binary (a real process, for kill -9 tests) on `data_dir` with the test PKI;
/// returns once it answers `GET /`.
/// The transfer engine is off (jobs stay where the test put them) unless `engine_toml` is given.
pub fn spawn_ftsd(pki: &TestPki, data_dir: &Path) -> (std::process::Child, u16) {
    spawn_ftsd_with(pki, data_dir, "[engine]\nenabled = false\n")
}

/// [`spawn_ftsd`] with a configuration file of this text.
pub fn spawn_ftsd_with(
    pki: &TestPki,
    data_dir: &Path,
    config_toml: &str,
) -> (std::process::Child, u16) {
    let config = data_dir.with_extension("toml");
    std::fs::write(&config, config_toml).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ftsd"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--host-cert")
        .arg(pki.path("hostcert.pem"))
        .arg("--host-key")
        .arg(pki.path("hostkey.pem"))
        .arg("--ca-dir")
        .arg(pki.ca_dir())
        .arg("--voms-dir")
        .arg(pki.voms_dir())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let client = Client::new(port, &pki.path("ca.pem"), None);
    for _ in 0..200 {
        if client.get("/").is_ok() {
            return (child, port);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("ftsd did not start");
}

/// An ftsd running in-process on an ephemeral port, on its own runtime thread.
pub struct TestServer {
    pub port: u16,
    pub data_dir: PathBuf,
    _data: Option<tempfile::TempDir>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), ftsd::Error>>>,
}

impl TestServer {
    pub fn start(pki: &TestPki) -> TestServer {
        Self::start_with(pki, |_| {})
    }

    pub fn start_with(pki: &TestPki, tweak: impl FnOnce(&mut Config)) -> TestServer {
        let data = tempfile::tempdir().unwrap();
        let data_dir = data.path().join("data");
        let mut server = Self::start_in(pki, &data_dir, tweak);
        server._data = Some(data);
        server
    }

    /// Start on a data directory the caller owns (for restart tests).
    pub fn start_in(pki: &TestPki, data_dir: &Path, tweak: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = Config {
            data_dir: data_dir.to_path_buf(),
            host_cert: Some(pki.path("hostcert.pem")),
            host_key: Some(pki.path("hostkey.pem")),
            ca_dir: Some(pki.ca_dir()),
            voms_dir: Some(pki.voms_dir()),
            // API tests keep the engine off so jobs stay where the test put them; engine tests
            // turn it on in `tweak`.
            engine: ftsd::config::EngineConfig {
                enabled: false,
                ..Default::default()
            },
            ..Config::default()
        };
        tweak(&mut config);
        let resolved = config.resolve().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                port_tx.send(listener.local_addr().unwrap().port()).unwrap();
                ftsd::run(resolved, listener, async {
                    let _ = stopped.await;
                })
                .await
            })
        });
        let port = port_rx.recv().expect("server thread reports its port");
        TestServer {
            port,
            data_dir: data_dir.to_path_buf(),
            _data: None,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Stop and return what `ftsd::run` returned.
    pub fn stop(mut self) -> Result<(), ftsd::Error> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), ftsd::Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(t) => t.join().expect("server thread does not panic"),
            None => Ok(()),
        }
    }

    pub fn client(&self, pki: &TestPki, credential: Option<&str>) -> Client {
        Client::new(
            self.port,
            &pki.path("ca.pem"),
            credential.map(|c| pki.path(c)),
        )
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// HTTPS client over rustls that presents a PEM credential file (certificate chain + key, the
/// X509_USER_PROXY layout) as its client certificate, proxies included.
pub struct Client {
    port: u16,
    config: Arc<rustls::ClientConfig>,
}

impl Client {
    pub fn new(port: u16, ca: &Path, credential: Option<PathBuf>) -> Client {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match credential {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&path)
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
                let key = PrivateKeyDer::from_pem_file(&path).unwrap();
                let key = provider.key_provider.load_private_key(key).unwrap();
                // CertifiedKey::new skips rustls's key/leaf consistency check, which would
                // parse the leaf with webpki and fail on proxies.
                let certified = rustls::sign::CertifiedKey::new(chain, key);
                builder.with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(
                    certified,
                )))
            }
        };
        Client {
            port,
            config: Arc::new(config),
        }
    }

    pub fn get(&self, path: &str) -> Result<Reply, String> {
        self.request("GET", path, &[], Bytes::new())
    }

    /// The TLS settings (trust and client certificate), for tests that speak raw bytes.
    pub fn tls_config(&self) -> Arc<rustls::ClientConfig> {
        self.config.clone()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn put(&self, path: &str, body: impl Into<Bytes>) -> Result<Reply, String> {
        self.request("PUT", path, &[], body.into())
    }

    pub fn delete(&self, path: &str) -> Result<Reply, String> {
        self.request("DELETE", path, &[], Bytes::new())
    }

    /// One request on a new connection (as the Python client does).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Reply, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(self.request_async(method, path, headers, body))
    }

    async fn request_async(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Reply, String> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        let tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| format!("http handshake: {e}"))?;
        tokio::spawn(conn);
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", format!("localhost:{}", self.port));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let request = request.body(Full::new(body)).unwrap();
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok(Reply {
            status,
            headers,
            body,
        })
    }
}

/// `POST` a body with a content type.
pub fn post(client: &Client, path: &str, content_type: &str, body: &str) -> Reply {
    client
        .request(
            "POST",
            path,
            &[("content-type", content_type)],
            bytes::Bytes::from(body.to_string()),
        )
        .unwrap()
}

/// `POST` a JSON body.
pub fn post_json(client: &Client, path: &str, body: &serde_json::Value) -> Reply {
    post(client, path, "application/json", &body.to_string())
}

/// Delegate Test User's credential (`usercert.pem` + `userkey.pem`), the proxy signed with
/// `openssl x509 -req` (rcgen cannot write a DN with two DC attributes): an RFC 3820 proxy
/// (`…/CN=4242`) or, with `legacy`, a legacy Globus proxy (`…/CN=proxy`, no proxyCertInfo).
pub fn delegate_test_user(
    client: &Client,
    pki: &TestPki,
    dlg_id: &str,
    legacy: bool,
) -> (u16, String) {
    let csr = client
        .get(&format!("/delegation/{dlg_id}/request"))
        .unwrap();
    assert_eq!(csr.status, 200, "{}", csr.text());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("csr.pem"), csr.text()).unwrap();
    let (leaf, pci) = if legacy {
        ("proxy", "")
    } else {
        (
            "4242",
            "proxyCertInfo=critical,language:id-ppl-inheritAll\n",
        )
    };
    std::fs::write(
        dir.path().join("ext.cnf"),
        format!("[p]\nkeyUsage=critical,digitalSignature,keyEncipherment\n{pci}"),
    )
    .unwrap();
    let subject = format!("{}/CN={leaf}", pki.openssl_subject("usercert.pem"));
    let out = Command::new("openssl")
        .args(["x509", "-req", "-in", "csr.pem", "-CA"])
        .arg(pki.path("usercert.pem"))
        .arg("-CAkey")
        .arg(pki.path("userkey.pem"))
        .args(["-set_serial", "4242", "-days", "1", "-subj", &subject])
        .args([
            "-extfile",
            "ext.cnf",
            "-extensions",
            "p",
            "-out",
            "proxy.pem",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut body = std::fs::read_to_string(dir.path().join("proxy.pem")).unwrap();
    body.push_str(&std::fs::read_to_string(pki.path("usercert.pem")).unwrap());
    let reply = client
        .put(&format!("/delegation/{dlg_id}/credential"), body)
        .unwrap();
    (reply.status, reply.text())
}
