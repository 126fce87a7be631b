//! The gfal2 backend against real storage: `root://` between two XRootD instances, `davs://`
//! to `root://` (a copy no native backend can make), `root://` and `s3://` to moto, through
//! the REST API with Test User's delegated proxy; failures, cancellation, and the schemes an
//! instance accepts.
//!
//! Run only these: `cargo test --test integration gfal2 -- --nocapture`.

use std::time::{Duration, Instant};

use ftsd::engine::checksum::{Algorithm, of_bytes};
use serde_json::{Value, json};

use crate::{
    common::{
        Client, TEST_USER, TEST_USER_DN, TestPki, TestServer, delegate_test_user, pki, post_json,
    },
    engine::{engine_server, files, reason, state, submit, transfer, wait_files, wait_job},
    peers::{self, Moto, Options, S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY, Xrootd, sample_data},
    tls_auth::independent_delegation_id,
};

const MIN: Duration = Duration::from_secs(60);

/// An engine server (tweaked) with Test User's delegated proxy; returns the user's client.
fn setup(pki: &TestPki, tweak: impl FnOnce(&mut ftsd::config::Config)) -> (TestServer, Client) {
    let server = engine_server(pki, tweak);
    let user = server.client(pki, Some(TEST_USER));
    let (status, body) = delegate_test_user(
        &user,
        pki,
        &independent_delegation_id(TEST_USER_DN, &[]),
        false,
    );
    assert_eq!(status, 201, "{body}");
    (server, user)
}

fn log_of(f: &Value) -> String {
    let path = f["log_file"].as_str().expect("a log file");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn finished(user: &Client, id: &str) -> Vec<Value> {
    let j = wait_job(user, id, MIN);
    let f = files(user, id);
    for file in &f {
        assert_eq!(state(file), "FINISHED", "{file:#}\n{}", log_of(file));
    }
    assert_eq!(j["job_state"], "FINISHED", "{j:#}");
    f
}

/// Every transfer's proxy file is gone once its transfer ended.
fn no_proxy_left(server: &TestServer) {
    let dir = server.data_dir.join("run/transfer-proxies");
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
    assert!(left.is_empty(), "{left:?} in {}", dir.display());
}

#[test]
fn root_to_root_and_davs_to_root_with_checksums() {
    let Some(pki) = pki() else { return };
    if !peers::available(&["xrootd", "gfal2"]) {
        return;
    }
    let a = Xrootd::start(pki, "a", Options::default());
    let b = Xrootd::start(pki, "b", Options::default());
    let (server, user) = setup(pki, |_| {});
    let data = sample_data(5 << 20, 11);
    a.write_file("/data/source.bin", &data);
    let adler = of_bytes(Algorithm::Adler32, &data);

    let id = submit(
        &user,
        json!([
            {"sources": [a.root_url("/data/source.bin")],
             "destinations": [b.root_url("/out/sub/root.bin")],
             "checksum": format!("ADLER32:{adler}")},
            // davs:// alone is the native backend's; davs:// to root:// only gfal2 copies.
            {"sources": [a.davs_url("/data/source.bin")],
             "destinations": [b.root_url("/out/mixed.bin")],
             "checksum": format!("ADLER32:{adler}")},
        ]),
        json!({"verify_checksum": "both"}),
    );
    let f = finished(&user, &id);
    for (file, path) in f.iter().zip(["/out/sub/root.bin", "/out/mixed.bin"]) {
        assert_eq!(
            std::fs::read(b.data_path(path)).unwrap(),
            data,
            "{path}: other bytes"
        );
        assert_eq!(
            file["filesize"].as_f64(),
            Some(data.len() as f64),
            "{file:#}"
        );
        assert!(file["throughput"].as_f64().unwrap() > 0.0, "{file:#}");
        let log = log_of(file);
        assert!(log.contains("by the gfal2 backend"), "{log}");
        assert!(
            log.contains(&format!("-K ADLER32:{adler} --checksum-mode both")),
            "{log}"
        );
        assert!(log.contains("TRANSFER:EXIT"), "{log}");
        // Query strings (XRootD's proxy path) and credentials stay out of the log.
        assert!(!log.contains("xrd.gsiusrpxy="), "{log}");
        assert!(!log.contains("BEGIN"), "{log}");
    }
    // The copy was made as Test User (GSI with the delegated proxy, mapped by the grid-mapfile).
    assert!(b.log().contains("login as testuser"), "{}", b.log());
    no_proxy_left(&server);
}

#[test]
fn http_backend_gfal2_copies_davs_with_gfal_copy() {
    let Some(pki) = pki() else { return };
    if !peers::available(&["xrootd", "gfal2"]) {
        return;
    }
    let a = Xrootd::start(pki, "a", Options::default());
    let b = Xrootd::start(pki, "b", Options::default());
    let (server, user) = setup(pki, |c| {
        c.engine.http_backend = ftsd::config::HttpBackendChoice::Gfal2
    });
    let data = sample_data(2 << 20, 23);
    a.write_file("/h/source.bin", &data);
    let id = submit(
        &user,
        json!([transfer(
            &a.davs_url("/h/source.bin"),
            &b.davs_url("/h/copy.bin")
        )]),
        json!({"verify_checksum": "both"}),
    );
    let f = finished(&user, &id);
    assert_eq!(std::fs::read(b.data_path("/h/copy.bin")).unwrap(), data);
    let log = log_of(&f[0]);
    assert!(log.contains("by the gfal2 backend"), "{log}");
    // gfal2 asked both storages for macaroons and had the destination pull (or fell back).
    assert!(log.contains("TRANSFER:TYPE"), "{log}");
    no_proxy_left(&server);
}

#[test]
fn failures_keep_the_reference_classification() {
    let Some(pki) = pki() else { return };
    if !peers::available(&["xrootd", "gfal2"]) {
        return;
    }
    let a = Xrootd::start(pki, "a", Options::default());
    let b = Xrootd::start(pki, "b", Options::default());
    let (server, user) = setup(pki, |_| {});
    let data = sample_data(1 << 20, 5);
    a.write_file("/f/source.bin", &data);
    let existing = b"already here".to_vec();
    b.write_file("/f/exists.bin", &existing);
    let params = json!({"retry": 2, "retry_delay": 1});
    let run = |files_json: Value, params: Value| -> Value {
        let id = submit(&user, files_json, params);
        let j = wait_job(&user, &id, MIN);
        let f = files(&user, &id)[0].clone();
        assert_eq!(j["job_state"], "FAILED", "{f:#}");
        eprintln!("reason: {}", reason(&f));
        f
    };

    // Missing source: SOURCE ENOENT from the agent's stat, not retried, nothing written.
    let f = run(
        json!([transfer(
            &a.root_url("/f/missing.bin"),
            &b.root_url("/f/m.bin")
        )]),
        params.clone(),
    );
    assert_eq!(
        reason(&f),
        "SOURCE [2] Failed to stat file (No such file or directory)",
        "{f:#}"
    );
    assert_eq!(f["retry"], 0, "a missing source is not retried: {f:#}");
    assert!(!b.data_path("/f/m.bin").exists());

    // The destination exists, no overwrite: gfal-copy refuses; the file is untouched.
    let f = run(
        json!([transfer(
            &a.root_url("/f/source.bin"),
            &b.root_url("/f/exists.bin")
        )]),
        params.clone(),
    );
    assert_eq!(
        reason(&f),
        "DESTINATION [17] Destination file exists and overwrite is not enabled",
        "{f:#}"
    );
    assert_eq!(f["retry"], 0, "{f:#}");
    assert_eq!(
        std::fs::read(b.data_path("/f/exists.bin")).unwrap(),
        existing
    );

    // Permission denied on the destination: final.
    let denied = format!("{}/x.bin", peers::READONLY);
    let f = run(
        json!([transfer(&a.root_url("/f/source.bin"), &b.root_url(&denied))]),
        params.clone(),
    );
    assert!(reason(&f).starts_with("TRANSFER [13] "), "{f:#}");
    assert!(reason(&f).contains("permission denied"), "{f:#}");
    assert_eq!(f["retry"], 0, "{f:#}");
    assert!(!b.data_path(&denied).exists());

    // A wrong user checksum: XRootD's copy finds the mismatch, the destination is removed.
    let f = run(
        json!([{"sources": [a.root_url("/f/source.bin")],
                "destinations": [b.root_url("/f/badsum.bin")],
                "checksum": "ADLER32:0badc0de"}]),
        json!({"retry": 2, "retry_delay": 1, "verify_checksum": "target"}),
    );
    assert!(
        reason(&f).starts_with("DESTINATION [5] DESTINATION CHECKSUM MISMATCH (ADLER32)"),
        "{f:#}"
    );
    assert_eq!(f["retry"], 0, "{f:#}");
    assert!(
        !b.data_path("/f/badsum.bin").exists(),
        "destination left behind"
    );

    // With overwrite, the existing file is replaced.
    let id = submit(
        &user,
        json!([transfer(
            &a.root_url("/f/source.bin"),
            &b.root_url("/f/exists.bin")
        )]),
        json!({"overwrite": true}),
    );
    finished(&user, &id);
    assert_eq!(std::fs::read(b.data_path("/f/exists.bin")).unwrap(), data);
    no_proxy_left(&server);
}

#[test]
fn root_and_s3_with_moto_and_per_host_s3_keys() {
    let Some(pki) = pki() else { return };
    if !peers::available(&["xrootd", "gfal2", "moto"]) {
        return;
    }
    let a = Xrootd::start(pki, "a", Options::default());
    let moto = Moto::start();
    moto.create_bucket("bucket");
    // gfal2 looks the keys up in the group S3:<HOST> (then S3).
    let options: Vec<String> = [
        format!("ACCESS_KEY={S3_ACCESS_KEY}"),
        format!("SECRET_KEY={S3_SECRET_KEY}"),
        format!("REGION={S3_REGION}"),
        "ALTERNATE=true".to_string(),
    ]
    .iter()
    .map(|o| format!("S3:127.0.0.1:{o}"))
    .collect();
    let (server, user) = setup(pki, |c| c.engine.gfal2_options = options);
    let data = sample_data(3 << 20, 17);
    a.write_file("/s3/source.bin", &data);
    let md5 = of_bytes(Algorithm::Md5, &data);

    // root:// → s3:// (streamed through gfal-copy), MD5 both ways (S3's ETag of a single-part
    // upload).
    let id = submit(
        &user,
        json!([{"sources": [a.root_url("/s3/source.bin")],
                "destinations": [moto.s3_url("bucket", "from-root.bin")],
                "checksum": format!("MD5:{md5}")}]),
        json!({"verify_checksum": "both"}),
    );
    let f = finished(&user, &id);
    assert_eq!(moto.get_object("bucket", "from-root.bin").unwrap(), data);
    assert!(f[0]["throughput"].as_f64().unwrap() > 0.0, "{:#}", f[0]);
    // s3:// → s3://, without checksums: gfal2's http plugin sends its MD5 as Content-MD5 in hex,
    // moto echoes that header, and davix then decodes it as base64 into bytes that crash
    // gfal2's Python binding (seen with gfal2 2.21.3 and moto 5).
    let id = submit(
        &user,
        json!([transfer(
            &moto.s3_url("bucket", "from-root.bin"),
            &moto.s3_url("bucket", "copy/of.bin")
        )]),
        json!({}),
    );
    let f = finished(&user, &id);
    assert_eq!(moto.get_object("bucket", "copy/of.bin").unwrap(), data);
    let log = log_of(&f[0]);
    assert!(log.contains("ENABLE_REMOTE_COPY=false"), "{log}");
    // The S3 secret went through the private configuration only.
    assert!(
        !log.contains(&format!("SECRET_KEY={S3_SECRET_KEY}")),
        "{log}"
    );
    assert!(!log.contains("X-Amz-Signature"), "{log}");
    let config = server.data_dir.join("run/gfal2-config/gfal2.conf");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains(&format!("[S3:127.0.0.1]\nSECRET_KEY={S3_SECRET_KEY}\n")),
        "{text}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&config).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // A missing S3 source: gfal-stat says so, SOURCE ENOENT, final.
    let id = submit(
        &user,
        json!([transfer(
            &moto.s3_url("bucket", "nothing.bin"),
            &moto.s3_url("bucket", "never.bin")
        )]),
        json!({"retry": 2}),
    );
    wait_job(&user, &id, MIN);
    let f = &files(&user, &id)[0];
    assert_eq!(state(f), "FAILED", "{f:#}");
    assert!(reason(f).starts_with("SOURCE [2] "), "{f:#}");
    assert_eq!(f["retry"], 0, "{f:#}");
}

/// The gfal-copy processes whose command line names `needle`.
fn gfal_copies(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|p| {
            let cmdline = std::fs::read(p.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (cmdline.contains("gfal-copy") && cmdline.contains(needle)).then_some(cmdline)
        })
        .collect()
}

#[test]
fn canceling_a_running_gfal_copy_kills_it_and_removes_the_partial_file() {
    let Some(pki) = pki() else { return };
    if !peers::available(&["xrootd", "gfal2"]) {
        return;
    }
    let slow = Xrootd::start(
        pki,
        "s",
        Options {
            throttle: true,
            ..Default::default()
        },
    );
    let b = Xrootd::start(pki, "b", Options::default());
    let (server, user) = setup(pki, |_| {});
    slow.write_file("/big.bin", &vec![7u8; 200 << 20]);
    let dst = b.root_url("/cancel/big-copy.bin");
    let id = submit(
        &user,
        json!([transfer(&slow.root_url("/big.bin"), &dst)]),
        json!({}),
    );
    wait_files(&user, &id, MIN, |f| state(&f[0]) == "ACTIVE");
    let started = Instant::now();
    while gfal_copies("/cancel/big-copy.bin").is_empty()
        || !b.data_path("/cancel/big-copy.bin").exists()
    {
        assert!(started.elapsed() < MIN, "the copy never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let asked = Instant::now();
    let reply = user.delete(&format!("/jobs/{id}")).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    wait_files(&user, &id, Duration::from_secs(5), |f| {
        state(&f[0]) == "CANCELED"
    });
    eprintln!("canceled in {:?}", asked.elapsed());
    // The engine notices within its cancel check (250 ms) and kills gfal-copy.
    loop {
        let left = gfal_copies("/cancel/big-copy.bin");
        if left.is_empty() {
            break;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(3),
            "gfal-copy still runs: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("gfal-copy gone {:?} after the cancel", asked.elapsed());
    let gone = Instant::now();
    while b.data_path("/cancel/big-copy.bin").exists() {
        assert!(
            gone.elapsed() < Duration::from_secs(20),
            "the partial destination was not removed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The agent ends its log after the clean-up (XRootD may have removed the file first).
    let f = &files(&user, &id)[0];
    while !log_of(f).contains("[125 ECANCELED] Transfer canceled") {
        assert!(gone.elapsed() < Duration::from_secs(20), "{}", log_of(f));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!b.data_path("/cancel/big-copy.bin").exists());
    no_proxy_left(&server);
}

#[test]
fn schemes_no_backend_serves_are_refused_and_get_root_lists_the_served_ones() {
    let Some(pki) = pki() else { return };
    let gfal2 = peers::available(&["gfal2"]);
    let (server, user) = setup(pki, |_| {});
    let root = user.get("/").unwrap().json();
    let schemes: Vec<&str> = root["schemes"]
        .as_array()
        .unwrap_or_else(|| panic!("{root:#}"))
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for native in ["davs", "file", "https", "mock"] {
        assert!(schemes.contains(&native), "{schemes:?}");
    }
    if gfal2 {
        for via_gfal2 in ["root", "s3", "xroot"] {
            assert!(schemes.contains(&via_gfal2), "{schemes:?}");
        }
    }
    assert!(!schemes.contains(&"irods"));
    // Everything the Python client reads is still there.
    assert_eq!(root["api"]["major"], 3, "{root:#}");

    let refused = |client: &Client, src: &str, dst: &str| {
        let reply = post_json(
            client,
            "/jobs",
            &json!({"files": [transfer(src, dst)], "params": {}}),
        );
        assert_eq!(reply.status, 400, "{}", reply.text());
        reply.json()["message"].as_str().unwrap().to_string()
    };
    let message = refused(&user, "davs://a.example/f", "irods://b.example/zone/f");
    assert!(
        message.starts_with(
            "Invalid value within the request: Unsupported scheme irods (irods://b.example/zone/f): \
             this service transfers "
        ),
        "{message}"
    );
    drop(server);

    // Without gfal2, root:// is refused too.
    let (off, user) = setup(pki, |c| c.engine.gfal2 = ftsd::config::Gfal2Mode::Off);
    let root = user.get("/").unwrap().json();
    assert!(
        !root["schemes"].as_array().unwrap().contains(&json!("root")),
        "{root:#}"
    );
    let message = refused(&user, "root://a.example//f", "davs://b.example/f");
    assert!(message.contains("Unsupported scheme root"), "{message}");
    drop(off);

    // An API-only instance accepts any scheme and says it does not know.
    let api_only = TestServer::start(pki);
    let client = api_only.client(pki, Some(TEST_USER));
    let (status, body) = delegate_test_user(
        &client,
        pki,
        &independent_delegation_id(TEST_USER_DN, &[]),
        false,
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(client.get("/").unwrap().json()["schemes"], Value::Null);
    submit(
        &client,
        json!([transfer("irods://a.example/zone/f", "gsiftp://b.example/f")]),
        json!({}),
    );
}
