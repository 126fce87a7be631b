//! Tape for real: bring-online and archive monitoring through the WLCG Tape REST API (v1),
//! against `tape_rest_server.py` (a faithful Tape REST storage serving a directory, files
//! offline until staged, localities changing over time, errors injectable per path) and XRootD
//! as the disk endpoint after staging. One tape storage is shared by every test of this file
//! (each uses its own paths); ftsd runs in-process with tape polls every second. gfal2's side:
//! the same storage as `davs://`, and `root://` on an XRootD whose prepare requests go to a tape
//! emulation (`xrootd_tape_prep.py`, see [`peers::Options::tape`]).
//!
//! Run only these: `cargo test --test integration tape -- --nocapture`.

use std::{
    path::PathBuf,
    process::Command,
    sync::OnceLock,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::{
    common::{
        CliAs, Client, ROOT, TEST_USER, TEST_USER_DN, TestPki, TestServer, delegate_test_user,
        fts_cli, fts3_client_bin, job_id_of, pki, post_json,
    },
    engine::{engine_server, files, job, reason, state, submit, transfer, wait_files, wait_job},
    peers::{self, Daemon, Options, Xrootd, free_ports, probe_client, sample_data},
    tls_auth::independent_delegation_id,
};

const MIN: Duration = Duration::from_secs(60);
/// Seconds a tape-only file takes to come online after a stage request (by default).
const STAGE_DELAY: &str = "2";
/// Seconds a written file takes to reach tape (by default).
const ARCHIVE_DELAY: &str = "2";

/// The shared Tape REST storage.
pub struct TapeStorage {
    _daemon: Daemon,
    port: u16,
    data: PathBuf,
    control: Client,
}

// The daemon is only ever touched by the thread that starts it; the rest is plain data and a
// client used behind `&`.
unsafe impl Sync for TapeStorage {}

static TAPE: OnceLock<Option<TapeStorage>> = OnceLock::new();

/// The shared Tape REST storage (python3 needed: a failure in CI, skipped locally).
fn tape(pki: &'static TestPki) -> Option<&'static TapeStorage> {
    TAPE.get_or_init(|| {
        if !peers::available(&["python3"]) {
            return None;
        }
        // Kept for the whole run: the server exits with this process (`--parent`).
        let dir = tempfile::Builder::new()
            .prefix("ftsd-tape-")
            .tempdir()
            .unwrap()
            .keep();
        let data = dir.join("data");
        std::fs::create_dir_all(&data).unwrap();
        let [port] = free_ports();
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/integration/tape_rest_server.py");
        // The system Python (3.10+ for ssl.VERIFY_ALLOW_PROXY_CERTS) rather than whatever
        // python3 comes first on PATH.
        let python = ["/usr/bin/python3"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("python3");
        let mut command = Command::new(python);
        command
            .arg(script)
            .args(["--port", &port.to_string()])
            .arg("--data")
            .arg(&data)
            .arg("--cert")
            .arg(pki.path("hostcert.pem"))
            .arg("--key")
            .arg(pki.path("hostkey.pem"))
            .arg("--capath")
            .arg(pki.ca_dir())
            .args([
                "--stage-delay",
                STAGE_DELAY,
                "--archive-delay",
                ARCHIVE_DELAY,
            ])
            .args(["--parent", &std::process::id().to_string()]);
        let log = dir.join("server.log");
        let mut daemon = Daemon::spawn(command, "tape-rest", &log);
        let probe = probe_client(pki, port);
        daemon.wait_ready(&[log], || {
            probe
                .get("/.well-known/wlcg-tape-rest-api")
                .is_ok_and(|r| r.status == 200)
        });
        Some(TapeStorage {
            _daemon: daemon,
            port,
            data,
            control: probe_client(pki, port),
        })
    })
    .as_ref()
}

impl TapeStorage {
    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    /// A file on tape only (offline until staged).
    fn put_on_tape(&self, path: &str, contents: &[u8]) {
        let file = self.data.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, contents).unwrap();
    }

    fn contents(&self, path: &str) -> Option<Vec<u8>> {
        std::fs::read(self.data.join(path.trim_start_matches('/'))).ok()
    }

    /// Per-path behaviour (see the server's doc).
    fn inject(&self, path: &str, what: Value) {
        let mut body = what;
        body["path"] = json!(path);
        let reply = post_json(&self.control, "/_control", &body);
        assert_eq!(reply.status, 200, "{}", reply.text());
    }

    /// Every Tape REST / WebDAV request the storage received that mentions `path`.
    fn requests_about(&self, path: &str) -> Vec<Value> {
        let log = self.control.get("/_control/log").unwrap().json();
        log.as_array()
            .unwrap()
            .iter()
            .filter(|r| r.to_string().contains(path))
            .cloned()
            .collect()
    }
}

/// An engine server with Test User's delegated proxy, and a root client for `/config`.
fn setup(pki: &TestPki) -> (TestServer, Client, Client) {
    let server = engine_server(pki, |_| {});
    let user = server.client(pki, Some(TEST_USER));
    let (status, body) = delegate_test_user(
        &user,
        pki,
        &independent_delegation_id(TEST_USER_DN, &[]),
        false,
    );
    assert_eq!(status, 201, "{body}");
    let root = server.client(pki, Some(ROOT));
    (server, user, root)
}

fn stage_requests(requests: &[Value]) -> Vec<&Value> {
    requests
        .iter()
        .filter(|r| r["method"] == "POST" && r["path"] == "/api/v1/stage")
        .collect()
}

/// A stage-only job (source = destination): STAGING, then STARTED with the storage's request
/// id as token, then FINISHED with both staging timestamps; the pin lifetime reaches the
/// storage as `diskLifetime`, and the storage really has the file online afterwards.
#[test]
fn a_stage_only_job_brings_the_file_online_through_the_tape_rest_api() {
    let Some(pki) = pki() else { return };
    let Some(tape) = tape(pki) else { return };
    let (_server, user, _) = setup(pki);
    tape.put_on_tape("/t/only.dat", b"on tape");
    tape.inject("/t/only.dat", json!({"stage_delay": 3}));
    let url = tape.url("/t/only.dat");
    let id = submit(
        &user,
        json!([transfer(&url, &url)]),
        json!({"bring_online": 120, "copy_pin_lifetime": 7200}),
    );
    assert_eq!(job(&user, &id)["job_state"], "STAGING");
    // STARTED once the storage took the request, with its id as token.
    let started = wait_files(&user, &id, MIN, |f| {
        state(&f[0]) == "STARTED" && f[0]["bringonline_token"].is_string()
    });
    let token = started[0]["bringonline_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(started[0]["staging_start"].is_string());
    let j = wait_job(&user, &id, MIN);
    assert_eq!(j["job_state"], "FINISHED", "{j:#}");
    let f = &files(&user, &id)[0];
    assert!(f["staging_finished"].is_string(), "{f:#}");
    assert_eq!(f["bringonline_token"], token.as_str());

    let requests = tape.requests_about("/t/only.dat");
    let stages = stage_requests(&requests);
    assert_eq!(stages.len(), 1, "{requests:#?}");
    assert_eq!(
        stages[0]["body"],
        json!({"files": [{"path": "/t/only.dat", "diskLifetime": "PT7200S"}]})
    );
    assert!(
        stages[0]["subject"]
            .as_str()
            .unwrap()
            .starts_with("/DC=org/DC=example/CN=Test User"),
        "the delegated proxy authenticates: {:?}",
        stages[0]["subject"]
    );
    let polls = tape.control.get("/_control/log").unwrap().json();
    assert!(
        polls
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["method"] == "GET" && r["path"] == format!("/api/v1/stage/{token}")),
        "polled as /stage/{token}"
    );
    let info = post_json(
        &tape.control,
        "/api/v1/archiveinfo",
        &json!({"paths": ["/t/only.dat"]}),
    );
    assert_eq!(
        info.json(),
        json!([{"path": "/t/only.dat", "locality": "DISK_AND_TAPE"}])
    );
}

/// Stage on the tape storage, then copy to XRootD: the copy starts only once the file is on
/// disk (SUBMITTED after staging), the bytes arrive intact, and the staged source is released
/// afterwards with the request id.
#[test]
fn staged_files_are_copied_to_xrootd_then_released() {
    let Some(pki) = pki() else { return };
    let Some(tape) = tape(pki) else { return };
    if !peers::available(&["xrootd"]) {
        return;
    }
    let disk = Xrootd::start(pki, "tapedisk", Options::default());
    let (_server, user, _) = setup(pki);
    let data = sample_data(300_000, 21);
    tape.put_on_tape("/t/copy.dat", &data);
    let id = submit(
        &user,
        json!([transfer(
            &tape.url("/t/copy.dat"),
            &disk.https_url("/from-tape/copy.dat")
        )]),
        json!({"bring_online": 120, "verify_checksum": "both"}),
    );
    let j = wait_job(&user, &id, MIN);
    let f = &files(&user, &id)[0];
    assert_eq!(j["job_state"], "FINISHED", "{f:#}");
    assert!(f["staging_finished"].is_string());
    assert_eq!(
        std::fs::read(disk.data_path("/from-tape/copy.dat")).unwrap(),
        data
    );
    let token = f["bringonline_token"]
        .as_str()
        .expect("token kept")
        .to_string();
    let requests = tape.requests_about("/t/copy.dat");
    let release = requests
        .iter()
        .find(|r| r["path"] == format!("/api/v1/release/{token}"))
        .unwrap_or_else(|| panic!("no release: {requests:#?}"));
    assert_eq!(release["body"], json!({"paths": ["/t/copy.dat"]}));
    // Nothing was read before the file was on disk: the data GET came after the stage poll
    // that saw it COMPLETED.
    let get_before_stage = requests
        .iter()
        .position(|r| r["method"] == "GET" && r["path"] == "/t/copy.dat");
    let stage = requests
        .iter()
        .position(|r| r["path"] == "/api/v1/stage")
        .unwrap();
    assert!(get_before_stage.is_none_or(|g| g > stage));
}

/// Staging failures carry the storage's words in the reference's form: a lost file (the
/// storage's per-file error), a refused request (403), a file that is not there.
#[test]
fn staging_failures_carry_the_storage_reason() {
    let Some(pki) = pki() else { return };
    let Some(tape) = tape(pki) else { return };
    let (_server, user, _) = setup(pki);
    tape.put_on_tape("/t/lost.dat", b"gone");
    tape.inject("/t/lost.dat", json!({"lost": true}));
    tape.put_on_tape("/t/denied.dat", b"secret");
    tape.inject("/t/denied.dat", json!({"deny": true}));
    let cases = [
        (
            "/t/lost.dat",
            "STAGING [42] [Tape REST API] File is lost: no readable tape copy",
        ),
        (
            "/t/denied.dat",
            "STAGING [13] [Tape REST API] Stage call failed: HTTP 403: Forbidden: Permission \
             denied: /t/denied.dat",
        ),
        (
            "/t/missing.dat",
            "STAGING [42] [Tape REST API] USER ERROR: file does not exist or is not accessible \
             to you",
        ),
    ];
    // One at a time: files of one storage and user staged together share one request, and a
    // refused request (403) fails every file in it.
    let ids: Vec<String> = cases
        .iter()
        .map(|(path, _)| {
            let url = tape.url(path);
            let id = submit(
                &user,
                json!([transfer(&url, &url)]),
                json!({"bring_online": 120}),
            );
            wait_job(&user, &id, MIN);
            id
        })
        .collect();
    for ((path, expected), id) in cases.iter().zip(&ids) {
        let j = wait_job(&user, id, MIN);
        assert_eq!(j["job_state"], "FAILED", "{path}: {j:#}");
        let f = &files(&user, id)[0];
        assert_eq!(reason(f), *expected, "{f:#}");
        assert!(f["staging_finished"].is_string(), "{f:#}");
    }
}

/// A file past its job's bring-online timeout fails with the reference's reason and its stage
/// request is canceled on the storage; a job canceled while staging has its request canceled on
/// the storage too.
#[test]
fn staging_timeouts_and_cancels_reach_the_storage() {
    let Some(pki) = pki() else { return };
    let Some(tape) = tape(pki) else { return };
    let (_server, user, _) = setup(pki);
    for path in ["/t/slow.dat", "/t/cancel.dat"] {
        tape.put_on_tape(path, b"slow");
        tape.inject(path, json!({"stage_delay": 3600}));
    }
    let slow = tape.url("/t/slow.dat");
    let timed_out = submit(
        &user,
        json!([transfer(&slow, &slow)]),
        json!({"bring_online": 3}),
    );
    let canceled_url = tape.url("/t/cancel.dat");
    let canceled = submit(
        &user,
        json!([transfer(&canceled_url, &canceled_url)]),
        json!({"bring_online": 3600}),
    );

    let j = wait_job(&user, &timed_out, MIN);
    assert_eq!(j["job_state"], "FAILED", "{j:#}");
    let f = &files(&user, &timed_out)[0];
    assert_eq!(
        reason(f),
        "STAGING [110] bring-online timeout has been exceeded"
    );
    let token = f["bringonline_token"].as_str().unwrap();
    let requests = tape.requests_about("/t/slow.dat");
    assert!(
        requests
            .iter()
            .any(|r| r["path"] == format!("/api/v1/stage/{token}/cancel")
                && r["body"] == json!({"paths": ["/t/slow.dat"]})),
        "{requests:#?}"
    );

    let f = wait_files(&user, &canceled, MIN, |f| {
        f[0]["bringonline_token"].is_string()
    });
    let token = f[0]["bringonline_token"].as_str().unwrap().to_string();
    let reply = user.delete(&format!("/jobs/{canceled}")).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    let asked = Instant::now();
    let cancel_path = format!("/api/v1/stage/{token}/cancel");
    loop {
        let requests = tape.requests_about("/t/cancel.dat");
        if requests.iter().any(|r| r["path"] == cancel_path) {
            break;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "the cancel did not reach the storage: {requests:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(wait_job(&user, &canceled, MIN)["job_state"], "CANCELED");
}

/// Archive monitoring: a copy to the tape storage is ARCHIVING until archiveinfo says the file
/// is on tape (then FINISHED with both archive timestamps), or fails with the reference's
/// reason when it is not on tape within `archive_timeout`; a storage error fails it at once.
#[test]
fn archive_monitoring_ends_on_tape_or_in_a_timeout() {
    let Some(pki) = pki() else { return };
    let Some(tape) = tape(pki) else { return };
    let (_server, user, _) = setup(pki);
    // The source: a file already on disk at the storage.
    tape.put_on_tape("/t/arch-src.dat", b"to be archived");
    tape.inject("/t/arch-src.dat", json!({"online_until": 4.0e9}));
    tape.inject("/t/archived.dat", json!({"archive_delay": 3}));
    tape.inject("/t/never.dat", json!({"never_archive": true}));
    tape.inject(
        "/t/unreadable.dat",
        json!({"archive_error": "tape drive refused the file"}),
    );
    let src = tape.url("/t/arch-src.dat");
    let submit_to = |dst: &str, timeout: i64| {
        submit(
            &user,
            json!([transfer(&src, &tape.url(dst))]),
            json!({"archive_timeout": timeout}),
        )
    };
    let archived = submit_to("/t/archived.dat", 60);
    let never = submit_to("/t/never.dat", 4);
    let error = submit_to("/t/unreadable.dat", 60);

    let f = wait_files(&user, &archived, MIN, |f| state(&f[0]) == "ARCHIVING");
    assert!(f[0]["archive_start_time"].is_string(), "{:#}", f[0]);
    let j = wait_job(&user, &archived, MIN);
    assert_eq!(j["job_state"], "FINISHED", "{j:#}");
    let f = &files(&user, &archived)[0];
    assert!(f["archive_finish_time"].is_string(), "{f:#}");
    assert_eq!(tape.contents("/t/archived.dat").unwrap(), b"to be archived");
    assert!(
        tape.requests_about("/t/archived.dat")
            .iter()
            .any(|r| r["path"] == "/api/v1/archiveinfo"),
        "polled through archiveinfo"
    );

    assert_eq!(wait_job(&user, &never, MIN)["job_state"], "FAILED");
    let f = &files(&user, &never)[0];
    assert_eq!(
        reason(f),
        "ARCHIVING [110] archive timeout has been exceeded"
    );
    assert!(f["archive_finish_time"].is_string(), "{f:#}");

    assert_eq!(wait_job(&user, &error, MIN)["job_state"], "FAILED");
    let f = &files(&user, &error)[0];
    assert_eq!(
        reason(f),
        "ARCHIVING [42] [Tape REST API] tape drive refused the file"
    );
}

/// The official client end to end: `--bring-online` and `--archive-timeout` stage the source,
/// copy it and watch the destination reach tape.
#[test]
fn the_fts3_cli_stages_copies_and_watches_archiving() {
    let Some(pki) = pki() else { return };
    let Some(bin) = fts3_client_bin() else { return };
    let Some(tape) = tape(pki) else { return };
    let (server, _user, root) = setup(pki);
    tape.put_on_tape("/t/cli-src.dat", b"through the client");
    let out = fts_cli(
        &bin,
        "fts-rest-transfer-submit",
        server.port,
        pki,
        CliAs::Proxy("proxy_rfc.pem"),
        &[
            "-b",
            "-i",
            "1",
            "--bring-online",
            "120",
            "--copy-pin-lifetime",
            "600",
            "--archive-timeout",
            "120",
            &tape.url("/t/cli-src.dat"),
            &tape.url("/t/cli-dst.dat"),
        ],
    )
    .ok();
    assert!(out.contains("Job finished with state FINISHED"), "{out}");
    let id = job_id_of(&out);
    let f = &files(&root, &id)[0];
    for stamp in [
        "staging_start",
        "staging_finished",
        "archive_start_time",
        "archive_finish_time",
    ] {
        assert!(f[stamp].is_string(), "{stamp}: {f:#}");
    }
    assert_eq!(
        tape.contents("/t/cli-dst.dat").unwrap(),
        b"through the client"
    );
    let stages = tape.requests_about("/t/cli-src.dat");
    let stage = stage_requests(&stages);
    assert_eq!(
        stage[0]["body"]["files"][0]["diskLifetime"], "PT600S",
        "{stage:#?}"
    );
}

/// gfal2 for tape: with `http_backend = "gfal2"`, staging of `davs://` goes through gfal2's
/// own Tape REST client (the same list calls as for `root://` and `srm://`).
#[test]
fn gfal2_stages_through_its_plugins() {
    let Some(pki) = pki() else { return };
    let Some(tape) = tape(pki) else { return };
    if !peers::available(&["gfal2"]) {
        return;
    }
    let server = engine_server(pki, |c| {
        c.engine.http_backend = ftsd::config::HttpBackendChoice::Gfal2;
    });
    let user = server.client(pki, Some(TEST_USER));
    let (status, body) = delegate_test_user(
        &user,
        pki,
        &independent_delegation_id(TEST_USER_DN, &[]),
        false,
    );
    assert_eq!(status, 201, "{body}");
    tape.put_on_tape("/t/gfal-src.dat", b"staged by gfal2");
    let url = |p: &str| tape.url(p).replacen("https://", "davs://", 1);
    let id = submit(
        &user,
        json!([transfer(&url("/t/gfal-src.dat"), &url("/t/gfal-src.dat"))]),
        json!({"bring_online": 120}),
    );
    let j = wait_job(&user, &id, MIN);
    let f = &files(&user, &id)[0];
    assert_eq!(j["job_state"], "FINISHED", "{f:#}");
    assert!(f["bringonline_token"].is_string(), "{f:#}");
    let requests = tape.requests_about("/t/gfal-src.dat");
    assert!(
        requests
            .iter()
            .any(|r| r["method"] == "POST" && r["path"] == "/api/v1/stage/"),
        "gfal2 asked the storage: {requests:#?}"
    );
}

/// gfal2 for `root://`: XRootD with a tape behind its prepare requests (XRootD's own
/// `libXrdOfsPrepGPI` running `xrootd_tape_prep.py`, answering query prepare as EOS+CTA does).
/// The source is staged (prepare-stage, then query-prepare polls with XRootD's request id as
/// token until online), copied, released (prepare-evict) and the destination watched until on
/// tape; a file the storage does not have fails with gfal2's reason.
#[test]
fn gfal2_stages_copies_and_watches_archiving_over_root() {
    let Some(pki) = pki() else { return };
    if !peers::available(&["xrootd", "gfal2"]) {
        return;
    }
    let storage = Xrootd::start(
        pki,
        "taperoot",
        Options {
            tape: true,
            ..Options::default()
        },
    );
    let (_server, user, _) = setup(pki);
    storage.write_file("/tape/raw.dat", b"on tape behind xrootd");
    let src = storage.root_url("/tape/raw.dat");
    let dst = storage.root_url("/disk/raw.dat");
    let id = submit(
        &user,
        json!([transfer(&src, &dst)]),
        json!({"bring_online": 120, "archive_timeout": 120}),
    );
    let missing = storage.root_url("/tape/missing.dat");
    let failed = submit(
        &user,
        json!([transfer(&missing, &missing)]),
        json!({"bring_online": 120}),
    );

    let j = wait_job(&user, &id, MIN);
    let f = &files(&user, &id)[0];
    assert_eq!(j["job_state"], "FINISHED", "{f:#}");
    for stamp in [
        "staging_start",
        "staging_finished",
        "archive_start_time",
        "archive_finish_time",
    ] {
        assert!(f[stamp].is_string(), "{stamp}: {f:#}");
    }
    assert_eq!(
        std::fs::read(storage.data_path("/disk/raw.dat")).unwrap(),
        b"on tape behind xrootd"
    );
    let token = f["bringonline_token"]
        .as_str()
        .expect("XRootD's request id");
    let log = storage.tape_log();
    let about = |request: &str, path: &str| -> Vec<&Value> {
        log.iter()
            .filter(|r| r["request"] == request && r["paths"].to_string().contains(path))
            .collect()
    };
    let stages = about("stage", "/tape/raw.dat");
    assert_eq!(stages.len(), 1, "{log:#?}");
    assert_eq!(stages[0]["id"], token);
    // Polled with the request id until the tape said online (it takes a few seconds).
    let polls = about("query", "/tape/raw.dat");
    assert!(polls.len() >= 2, "{log:#?}");
    assert!(polls.iter().all(|q| q["id"] == token), "{log:#?}");
    assert_eq!(
        about("evict", "/tape/raw.dat").len(),
        1,
        "released: {log:#?}"
    );
    // Archive polls are queries with gfal2's own request ids, until on tape.
    assert!(about("query", "/disk/raw.dat").len() >= 2, "{log:#?}");

    assert_eq!(wait_job(&user, &failed, MIN)["job_state"], "FAILED");
    let f = &files(&user, &failed)[0];
    let reason = reason(f);
    assert!(
        reason.starts_with("STAGING [2] ") && reason.contains("/tape/missing.dat"),
        "{reason}"
    );
}
