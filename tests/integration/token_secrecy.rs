//! No token anywhere it could leak (issue 19, acceptance 4): the `ftsd` binary runs a token
//! workload at debug log level — bearer logins (good and refused), token submissions (good and
//! refused), exchanges, refreshes, a failed exchange, transfers to token-only XRootD — while
//! a sampler reads every process's command line and environment; then the service log, every
//! API answer, every transfer log, the data directory and the sampled process listing are
//! searched for every token the issuer ever signed or handed out (and the client secret).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use serde_json::json;

use crate::{
    common::{Client, ROOT, Reply, TestPki, pki},
    engine::{files, wait_job},
    oidc_issuer::{FTS_CLIENT, Issuer},
    peers::{self, sample_data},
    token_storage::token_xrootd,
    tokens::{bearer, rucio_job, storage_token},
};

/// The running binary; killed on drop.
struct Ftsd {
    child: std::process::Child,
    port: u16,
}

impl Drop for Ftsd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run `ftsd serve` at debug level with `config_toml`, its output going to `log`.
fn spawn_logged(pki: &TestPki, data_dir: &Path, config_toml: &str, log: &Path) -> Ftsd {
    let config = data_dir.with_extension("toml");
    std::fs::write(&config, config_toml).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = std::fs::File::create(log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_ftsd"))
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
        .env("FTSD_LOG", "debug")
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let ftsd = Ftsd { child, port };
    let client = Client::new(port, &pki.path("ca.pem"), None);
    for _ in 0..200 {
        if client.get("/").is_ok() {
            return ftsd;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "ftsd did not start:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// Reads `/proc/*/cmdline` and `/proc/*/environ` of every process, every 20 ms, until stopped.
struct Sampler {
    seen: Arc<Mutex<BTreeMap<String, String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start() -> Sampler {
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if !name.bytes().all(|b| b.is_ascii_digit()) {
                        continue;
                    }
                    for what in ["cmdline", "environ"] {
                        if let Ok(bytes) = std::fs::read(entry.path().join(what)) {
                            let text = String::from_utf8_lossy(&bytes).replace('\0', " ");
                            s.lock()
                                .unwrap()
                                .insert(format!("{name}/{what}/{}", text.len()), text);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Sampler {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> BTreeMap<String, String> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.seen.lock().unwrap().clone()
    }
}

/// Every regular file below `dir`, with its bytes.
fn files_below(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_below(&path, out);
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path, bytes));
        }
    }
}

/// What must never show: a JWT's signature (without it the token is useless, while its
/// claims may be logged, as the reference does), an opaque token whole, the client secret.
fn secrets(issuer: &Issuer) -> Vec<String> {
    let mut all: Vec<String> = issuer
        .issued()
        .into_iter()
        .map(|t| match t.rsplit_once('.') {
            Some((_, signature)) => signature.to_string(),
            None => t,
        })
        .collect();
    all.push(FTS_CLIENT.1.to_string());
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The token workload against one ftsd, the http backend chosen by `http_backend`.
fn workload(pki: &TestPki, http_backend: &str) {
    let issuer = Issuer::start(pki, 8);
    let a = token_xrootd(pki, "sa", &issuer);
    let b = token_xrootd(pki, "sb", &issuer);
    let work = tempfile::tempdir().unwrap();
    let data_dir = work.path().join("data");
    let service_log = work.path().join("ftsd.log");
    let sampler = Sampler::start();
    let config = format!(
        "[engine]\nscheduling_interval = 1\nhttp_backend = \"{http_backend}\"\n\
         [oidc]\nauthorized_audiences = [\"localhost\"]\ntoken_refresh_margin = 10\n\
         exchange_interval = 1\n[[oidc.providers]]\nissuer = \"{}\"\nclient_id = \"{}\"\n\
         client_secret = \"{}\"\n",
        issuer.url, FTS_CLIENT.0, FTS_CLIENT.1
    );
    let ftsd = spawn_logged(pki, &data_dir, &config, &service_log);
    let client = Client::new(ftsd.port, &pki.path("ca.pem"), None);
    let root = Client::new(ftsd.port, &pki.path("ca.pem"), Some(pki.path(ROOT)));
    let mut answers: Vec<Reply> = Vec::new();

    // Logins: good, expired, forged, another issuer's.
    let fts = issuer.token("rucio", "fts", json!("localhost"), 1200);
    answers.push(bearer(&client, "GET", "/whoami", &fts, None));
    assert_eq!(answers.last().unwrap().status, 200);
    let expired = issuer.token("rucio", "fts", json!("localhost"), -5);
    answers.push(bearer(&client, "GET", "/whoami", &expired, None));
    let other = Issuer::start(pki, 600);
    let stranger = other.token("rucio", "fts", json!("localhost"), 600);
    answers.push(bearer(&client, "GET", "/whoami", &stranger, None));
    let forged = format!("{}x", &fts[..fts.len() - 1]);
    answers.push(bearer(&client, "GET", "/whoami", &forged, None));
    assert!(answers[1..].iter().all(|r| r.status == 403));

    // Transfers: a managed pair of tokens (exchanged, then refreshed before every use: the
    // issuer's tokens live 8 s, the margin is 10 s), one with a bad token (refused), and one
    // whose exchange fails.
    let path = format!("{}/s.bin", peers::TOKEN_BASE);
    a.write_file(&path, &sample_data(1 << 20, 17));
    let src = a.davs_url(&path);
    let dst = |n: &str| {
        b.davs_url(&format!("{}/out/{n}", peers::TOKEN_BASE))
            .replacen("localhost", "127.0.0.1", 1)
    };
    let read_a = storage_token(
        &issuer,
        "storage.read:/ offline_access",
        &format!("https://localhost:{}", a.https_port()),
        1200,
    );
    let modify_b = storage_token(
        &issuer,
        "storage.modify:/ storage.read:/ offline_access",
        &format!("https://127.0.0.1:{}", b.https_port()),
        1200,
    );
    let job = |d: &str, s_tok: &str, d_tok: &str| {
        let mut job = rucio_job(vec![(vec![src.as_str()], d, vec![s_tok], d_tok)]);
        for key in ["checksum", "filesize"] {
            job["files"][0].as_object_mut().unwrap().remove(key);
        }
        job
    };
    let reply = bearer(
        &client,
        "POST",
        "/jobs",
        &fts,
        Some(&job(&dst("ok.bin"), &read_a, &modify_b)),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let ok = reply.json()["job_id"].as_str().unwrap().to_string();
    answers.push(reply);
    let bad = bearer(
        &client,
        "POST",
        "/jobs",
        &fts,
        Some(&job(&dst("bad.bin"), &stranger, &modify_b)),
    );
    assert_eq!(bad.status, 400, "{}", bad.text());
    answers.push(bad);
    let done = wait_job(&root, &ok, Duration::from_secs(60));
    assert_eq!(done["job_state"], "FINISHED", "{done:#}");

    issuer.fail_exchange("invalid_grant", "bad token");
    let read_again = storage_token(&issuer, "storage.read:/ offline_access", "https://x", 1200);
    let reply = bearer(
        &client,
        "POST",
        "/jobs",
        &fts,
        Some(&job(&dst("never.bin"), &read_again, &modify_b)),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let failing = reply.json()["job_id"].as_str().unwrap().to_string();
    answers.push(reply);
    let failed = wait_job(&root, &failing, Duration::from_secs(60));
    assert_eq!(failed["job_state"], "FAILED", "{failed:#}");

    // Everything the API says about the jobs.
    for id in [&ok, &failing] {
        for path in [
            format!("/jobs/{id}"),
            format!("/jobs/{id}/files"),
            format!("/jobs/{id}?files=file_state,reason,log_file"),
        ] {
            answers.push(bearer(&client, "GET", &path, &fts, None));
        }
    }
    answers.push(bearer(&client, "GET", "/jobs", &fts, None));
    let mut transfer_logs = Vec::new();
    for id in [&ok, &failing] {
        for f in files(&root, id) {
            if let Some(p) = f["log_file"].as_str() {
                transfer_logs.push(PathBuf::from(p));
            }
        }
    }
    drop(ftsd);
    let listing = sampler.finish();

    if http_backend == "gfal2" {
        assert!(
            listing.values().any(|l| l.contains("gfal2-bearer.py")),
            "the sampler never saw a gfal tool run"
        );
    }
    let log = std::fs::read(&service_log).unwrap();
    let log_text = String::from_utf8_lossy(&log);
    // The workload really ran: exchanges, refreshes, refusals, token ids.
    for expected in [
        "token exchanged for a refresh token",
        "token refreshed",
        "token exchange failed",
        "bearer token refused",
        "transfer token refused",
        "token_id=",
    ] {
        assert!(
            log_text.contains(expected),
            "no `{expected}` in the service log:\n{log_text}"
        );
    }
    assert!(!issuer.grants("refresh_token").is_empty());
    assert!(!transfer_logs.is_empty());

    let mut places: Vec<(String, Vec<u8>)> = vec![("the service log".into(), log)];
    for (i, reply) in answers.iter().enumerate() {
        places.push((format!("API answer #{i}"), reply.body.to_vec()));
        let headers = format!("{:?}", reply.headers);
        places.push((format!("API answer #{i} headers"), headers.into_bytes()));
    }
    let mut below = Vec::new();
    files_below(&data_dir, &mut below);
    for p in &transfer_logs {
        if !p.starts_with(&data_dir) {
            below.push((p.clone(), std::fs::read(p).unwrap_or_default()));
        }
    }
    assert!(
        below.iter().any(|(p, _)| transfer_logs.contains(p)),
        "the transfer logs are read"
    );
    for (path, bytes) in below {
        places.push((path.display().to_string(), bytes));
    }
    for (key, text) in listing {
        places.push((format!("/proc/{key}"), text.into_bytes()));
    }
    let secrets = secrets(&issuer);
    assert!(secrets.len() > 6, "{} secrets", secrets.len());
    for (place, bytes) in &places {
        for secret in &secrets {
            assert!(
                !contains(bytes, secret),
                "a token (or the client secret) in {place}:\n{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
    // Sanity: the search would find them (the issuer's own log holds the tokens it got).
    let exchange = &issuer.grants("urn:ietf:params:oauth:grant-type:token-exchange")[0];
    assert!(secrets.iter().any(|s| exchange.body.contains(s.as_str())));
}

#[test]
fn no_token_leaks_with_the_native_http_backend() {
    let Some(pki) = pki() else { return };
    if !peers::available(&["xrootd", "scitokens"]) {
        return;
    }
    workload(pki, "native");
}

#[test]
fn no_token_leaks_with_the_gfal2_backend() {
    let Some(pki) = pki() else { return };
    if !peers::available(&["xrootd", "scitokens", "gfal2"]) {
        return;
    }
    workload(pki, "gfal2");
}
