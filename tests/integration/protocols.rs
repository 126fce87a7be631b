//! The http/WebDAV backend against real storage: two XRootD instances (HTTP-TPC pull and push,
//! macaroons, Perf Markers, digests), Apache with mod_gridsite (plain WebDAV, legacy proxies),
//! driven through the REST API and the official client, with the user's delegated proxy.
//!
//! Storage elements are `scheme://host`, so the two XRootD instances are addressed as
//! `localhost` and `127.0.0.1` (both in the host certificate) to give each its own
//! `/config/se` settings.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{CliAs, fts_cli, fts3_client_bin, job_id_of};
use crate::{
    common::{
        Client, ROOT, TEST_USER, TEST_USER_DN, TestPki, TestServer, delegate_test_user, pki,
        post_json,
    },
    engine::{engine_server, files, reason, state, submit, transfer, wait_files, wait_job},
    peers::{self, Apache, Options, Xrootd, sample_data},
    tls_auth::independent_delegation_id,
};

const MIN: Duration = Duration::from_secs(60);

/// A server with the engine on, Test User's delegated proxy (RFC 3820, or legacy), and a root
/// client for `/config`.
fn setup(pki: &TestPki, legacy: bool) -> (TestServer, Client, Client) {
    let server = engine_server(pki, |_| {});
    let user = server.client(pki, Some(TEST_USER));
    let (status, body) = delegate_test_user(
        &user,
        pki,
        &independent_delegation_id(TEST_USER_DN, &[]),
        legacy,
    );
    assert_eq!(status, 201, "{body}");
    let root = server.client(pki, Some(ROOT));
    (server, user, root)
}

/// `tpc_support` of a storage element (`FULL`, `PULL`, `PUSH`, `NONE`).
fn tpc_support(root: &Client, se: &str, value: &str) {
    let reply = post_json(
        root,
        "/config/se",
        &json!({ se: {"se_info": {"tpc_support": value}}}),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
}

/// `url` with its host `localhost` replaced by `127.0.0.1` (another storage element).
fn other_host(url: &str) -> String {
    url.replacen("localhost", "127.0.0.1", 1)
}

fn log_of(f: &Value) -> String {
    let path = f["log_file"].as_str().expect("a log file");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `fts-rest-transfer-submit -b` (blocking) with Test User's RFC proxy; returns the job id.
fn cli_submit(bin: &std::path::Path, pki: &TestPki, port: u16, args: &[&str]) -> String {
    let args = [&["-b", "-i", "1"], args].concat();
    let out = fts_cli(
        bin,
        "fts-rest-transfer-submit",
        port,
        pki,
        CliAs::Proxy("proxy_rfc.pem"),
        &args,
    )
    .ok();
    job_id_of(&out)
}

#[test]
fn davs_to_davs_by_tpc_pull_tpc_push_and_streaming_with_the_official_client() {
    let Some(pki) = pki() else { return };
    let Some(bin) = fts3_client_bin() else { return };
    if !peers::available(&["xrootd"]) {
        return;
    }
    let a = Xrootd::start(pki, "a", Options::default());
    let b = Xrootd::start(pki, "b", Options::default());
    let (server, _user, root) = setup(pki, false);
    let data = sample_data(5 << 20, 7);
    a.write_file("/data/source.bin", &data);
    let src = a.davs_url("/data/source.bin");
    let src_se = "davs://localhost";
    let dst_se = "davs://127.0.0.1";

    // (source tpc_support, destination tpc_support, expected mode, what the log shows)
    let cases = [
        ("FULL", "FULL", "pull", "COPY davs://127.0.0.1"),
        ("FULL", "PUSH", "push", "COPY davs://localhost"),
        ("PULL", "PUSH", "streamed", "PUT davs://127.0.0.1"),
    ];
    for (src_tpc, dst_tpc, mode, step) in cases {
        tpc_support(&root, src_se, src_tpc);
        tpc_support(&root, dst_se, dst_tpc);
        let name = format!("/out/{mode}.bin");
        let dst = other_host(&b.davs_url(&name));
        // -K: checksum verification "both" (source against destination, ADLER32 digests).
        let job_id = cli_submit(&bin, pki, server.port, &["-K", &src, &dst]);
        let f = &files(&root, &job_id)[0];
        assert_eq!(state(f), "FINISHED", "{mode}: {f:#}\n{}", log_of(f));
        assert_eq!(
            std::fs::read(b.data_path(&name)).unwrap(),
            data,
            "{mode}: the destination holds other bytes"
        );
        assert_eq!(f["filesize"].as_f64(), Some(data.len() as f64), "{f:#}");
        assert!(f["throughput"].as_f64().unwrap() > 0.0, "{mode}: {f:#}");
        let log = log_of(f);
        assert!(
            log.contains(&format!("Copy mode: {mode}")),
            "{mode}: the log does not show the mode:\n{log}"
        );
        assert!(log.contains(step), "{mode}: no `{step}` in the log:\n{log}");
        assert!(log.contains("End-to-end checksum match!"), "{log}");
        assert!(
            log.contains("Want-Digest: adler32"),
            "checksums come from the storage's digests:\n{log}"
        );
        assert!(!log.contains("Falling back"), "{mode}: {log}");
        if mode == "pull" {
            assert!(
                log.contains("Obtained a macaroon from davs://localhost"),
                "{log}"
            );
            assert!(log.contains("COPY verdict: success"), "{log}");
        }
    }
}

#[test]
fn apache_gridsite_takes_a_streamed_copy_made_with_a_legacy_proxy() {
    let Some(pki) = pki() else { return };
    if !peers::available(&["apache2"]) {
        return;
    }
    let apache = Apache::start(pki);
    // The delegated credential is a legacy Globus proxy (CN=proxy): Apache with mod_gridsite
    // accepts it (XRootD would not).
    let (_server, user, root) = setup(pki, true);
    // Apache is plain WebDAV: no third-party copy, so streaming is the only mode.
    tpc_support(&root, "davs://localhost", "NONE");
    let data = sample_data(3 << 20, 11);
    apache.write_file("/in/source.bin", &data);
    let job_id = submit(
        &user,
        json!([transfer(
            &apache.davs_url("/in/source.bin"),
            &apache.davs_url("/new/dir/copy.bin")
        )]),
        json!({"verify_checksum": "both"}),
    );
    let j = wait_job(&user, &job_id, MIN);
    let f = &files(&user, &job_id)[0];
    assert_eq!(j["job_state"], "FINISHED", "{f:#}");
    assert_eq!(
        std::fs::read(apache.data_path("/new/dir/copy.bin")).unwrap(),
        data
    );
    let log = log_of(f);
    assert!(
        log.contains("Copy mode: streamed (fallback disabled"),
        "{log}"
    );
    // Missing parents made with MKCOL (Apache's PUT does not make them).
    assert!(log.contains("MKCOL davs://localhost"), "{log}");
    // No Want-Digest at Apache: the checksums were computed from the data.
    assert!(log.contains("reading the file to compute it"), "{log}");
    assert!(log.contains("End-to-end checksum match!"), "{log}");
    // Apache saw the legacy proxy's DN on the PUT.
    let put = apache.access_line(|l| l.contains("\"PUT /new/dir/copy.bin"));
    assert!(put.contains("CN=proxy,CN=Test User"), "{put}");
}

#[test]
fn failures_end_failed_with_the_reference_classification_and_leave_no_partial_file() {
    let Some(pki) = pki() else { return };
    if !peers::available(&["xrootd"]) {
        return;
    }
    let a = Xrootd::start(pki, "a", Options::default());
    let b = Xrootd::start(pki, "b", Options::default());
    let (_server, user, root) = setup(pki, false);
    let data = sample_data(1 << 20, 3);
    a.write_file("/f/source.bin", &data);
    let existing = b"already here".to_vec();
    b.write_file("/f/exists.bin", &existing);
    let src = a.davs_url("/f/source.bin");
    let dst = |p: &str| other_host(&b.davs_url(p));
    let params = json!({"retry": 2, "retry_delay": 1});

    // Each case: (files, params, expected reason prefix, reason must contain, destination path)
    let run = |files_json: Value, params: Value| -> Value {
        let id = submit(&user, files_json, params);
        let j = wait_job(&user, &id, MIN);
        let f = files(&user, &id)[0].clone();
        assert_eq!(j["job_state"], "FAILED", "{f:#}");
        eprintln!("reason: {}", reason(&f));
        f
    };

    // 1. Missing source: SOURCE ENOENT, not retried.
    let f = run(
        json!([transfer(&a.davs_url("/f/missing.bin"), &dst("/f/m.bin"))]),
        params.clone(),
    );
    assert!(
        reason(&f).starts_with("SOURCE [2] No such file or directory: HEAD davs://localhost"),
        "{f:#}"
    );
    assert_eq!(f["retry"], 0, "a missing source is not retried: {f:#}");
    assert!(!b.data_path("/f/m.bin").exists());

    // 2. Destination exists, no overwrite: DESTINATION EEXIST; the existing file is untouched.
    let f = run(
        json!([transfer(&src, &dst("/f/exists.bin"))]),
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

    // 3. Permission denied on the destination: not retried, nothing written.
    let denied = format!("{}/x.bin", peers::READONLY);
    let f = run(json!([transfer(&src, &dst(&denied))]), params.clone());
    assert!(reason(&f).contains("[13] Permission denied"), "{f:#}");
    assert_eq!(f["retry"], 0, "{f:#}");
    assert!(!b.data_path(&denied).exists());

    // 4. The user's checksum is wrong: the copy happens, the destination check fails, the
    //    destination is removed.
    let f = run(
        json!([{"sources": [src], "destinations": [dst("/f/badsum.bin")], "checksum": "ADLER32:0badc0de"}]),
        json!({"retry": 2, "retry_delay": 1, "verify_checksum": "target"}),
    );
    assert!(
        reason(&f).starts_with(
            "DESTINATION [5] User-defined and destination ADLER32 checksum do not match (0badc0de != "
        ),
        "{f:#}"
    );
    assert_eq!(f["retry"], 0, "{f:#}");
    assert!(
        !b.data_path("/f/badsum.bin").exists(),
        "destination left behind"
    );

    // 5. A third-party copy that fails after HTTP 201: the verdict line decides. Strict copy
    //    skips the checks, so the destination is asked to pull a missing source; the source
    //    cannot push (NONE), so there is no fallback.
    tpc_support(&root, "davs://localhost", "NONE");
    let f = run(
        json!([transfer(&a.davs_url("/f/gone.bin"), &dst("/f/tpc.bin"))]),
        json!({"strict_copy": true}),
    );
    assert!(
        reason(&f).starts_with(
            "TRANSFER [5] HTTP third-party copy (pull) failed: failure: Remote side failed with status code 404"
        ),
        "{f:#}"
    );
    let log = log_of(&f);
    assert!(log.contains("COPY reply: HTTP 201"), "{log}");
    // XRootD leaves a 0-byte file behind a failed pull; the clean-up removed it.
    assert!(
        log.contains("Destination file removed (cleanup-on-failure)"),
        "{log}"
    );
    assert!(
        !b.data_path("/f/tpc.bin").exists(),
        "partial destination left behind"
    );
}

#[test]
fn canceling_a_running_third_party_copy_stops_it_within_two_seconds() {
    let Some(pki) = pki() else { return };
    if !peers::available(&["xrootd"]) {
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
    let (_server, user, _root) = setup(pki, false);
    slow.write_file("/big.bin", &vec![7u8; 400 << 20]);
    let id = submit(
        &user,
        json!([transfer(
            &slow.davs_url("/big.bin"),
            &other_host(&b.davs_url("/big-copy.bin"))
        )]),
        json!({}),
    );
    // Running, and the destination has received data (the pull is under way).
    wait_files(&user, &id, MIN, |f| state(&f[0]) == "ACTIVE");
    let started = Instant::now();
    while !b.data_path("/big-copy.bin").exists() {
        assert!(started.elapsed() < MIN, "the pull never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let asked = Instant::now();
    let reply = user.delete(&format!("/jobs/{id}")).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    wait_files(&user, &id, Duration::from_secs(2), |f| {
        state(&f[0]) == "CANCELED"
    });
    let took = asked.elapsed();
    eprintln!("canceled in {took:?}");
    // The storage stopped too: the partial destination is gone and stays gone.
    let gone = Instant::now();
    while b.data_path("/big-copy.bin").exists() {
        assert!(
            gone.elapsed() < Duration::from_secs(10),
            "the partial destination was not removed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let f = &files(&user, &id)[0];
    assert!(log_of(f).contains("COPY davs://127.0.0.1"), "{f:#}");
    // XrdTpc notices the closed connection when it writes its next Perf Marker (every 5 s),
    // then stops pulling and closes the (already deleted) destination.
    // (A deleted file's link reads "<path> (deleted)".)
    let data_file = b.data_path("/big-copy.bin").display().to_string();
    let still_open = || {
        std::fs::read_dir("/proc").unwrap().flatten().any(|p| {
            std::fs::read_dir(p.path().join("fd")).is_ok_and(|fds| {
                fds.flatten().any(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|t| t.to_string_lossy().starts_with(&data_file))
                })
            })
        })
    };
    while still_open() {
        assert!(
            asked.elapsed() < Duration::from_secs(8),
            "the destination storage still writes the copy"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("the storage stopped {:?} after the cancel", asked.elapsed());
}
