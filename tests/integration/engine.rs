//! The transfer engine end to end: jobs submitted over HTTPS run through the scheduler, the
//! agent and the mock/file backends, and end in the states, reasons and measurements the
//! reference gives; retries, failover, multihop, reuse, staging, queue timeouts, cancellation
//! of running transfers, caps under load, kill -9 recovery, and the official CLI's blocking
//! submit.

use std::{
    collections::HashMap,
    process::Command,
    time::{Duration, Instant},
};

use bytes::Bytes;
use serde_json::{Value, json};

use crate::common::{CliAs, fts_cli, fts3_client_bin, job_id_of};
use crate::common::{Client, RC_USER_DN, TestPki, TestServer, pki, post_json, spawn_ftsd_with};
use crate::delegation::delegate;
use crate::tls_auth::independent_delegation_id;

/// A server with the engine on, fast ticks, and `tweak` applied.
pub(crate) fn engine_server(
    pki: &TestPki,
    tweak: impl FnOnce(&mut ftsd::config::Config),
) -> TestServer {
    TestServer::start_with(pki, |c| {
        c.engine.enabled = true;
        c.engine.scheduling_interval = 1;
        c.engine.queue_check_interval = 1;
        c.engine.mock_transfer_time = 1;
        // Tape requests go at once and are polled every second.
        c.engine.staging_wait = 0;
        c.engine.staging_first_poll = 1;
        c.engine.staging_poll_interval = 1;
        c.engine.archive_first_poll = 1;
        c.engine.archive_poll_interval = 1;
        tweak(c);
    })
}

fn user(server: &TestServer, pki: &TestPki) -> Client {
    let client = server.client(pki, Some("rc_user.pem"));
    let (status, body) = delegate(
        &client,
        pki,
        "rc_user.pem",
        &independent_delegation_id(RC_USER_DN, &[]),
    );
    assert_eq!(status, 201, "{body}");
    client
}

pub(crate) fn submit(client: &Client, files: Value, params: Value) -> String {
    let reply = post_json(client, "/jobs", &json!({"files": files, "params": params}));
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["job_id"].as_str().unwrap().to_string()
}

pub(crate) fn transfer(src: &str, dst: &str) -> Value {
    json!({"sources": [src], "destinations": [dst]})
}

const TERMINAL: [&str; 4] = ["FINISHED", "FAILED", "FINISHEDDIRTY", "CANCELED"];

pub(crate) fn job(client: &Client, id: &str) -> Value {
    let reply = client.get(&format!("/jobs/{id}")).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

pub(crate) fn files(client: &Client, id: &str) -> Vec<Value> {
    let reply = client.get(&format!("/jobs/{id}/files")).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    let mut files = reply.json().as_array().unwrap().clone();
    files.sort_by_key(|f| f["file_id"].as_u64());
    files
}

/// Poll until the job is terminal; returns its final JSON.
pub(crate) fn wait_job(client: &Client, id: &str, limit: Duration) -> Value {
    let start = Instant::now();
    loop {
        let j = job(client, id);
        if TERMINAL.contains(&j["job_state"].as_str().unwrap()) {
            return j;
        }
        assert!(
            start.elapsed() < limit,
            "job {id} still {} after {limit:?}: {:#}",
            j["job_state"],
            Value::Array(files(client, id))
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Poll until `check` holds for the job's files.
pub(crate) fn wait_files(
    client: &Client,
    id: &str,
    limit: Duration,
    check: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let f = files(client, id);
        if check(&f) {
            return f;
        }
        assert!(
            start.elapsed() < limit,
            "job {id} files never reached the expected states: {:#}",
            Value::Array(f)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn state(f: &Value) -> &str {
    f["file_state"].as_str().unwrap()
}

pub(crate) fn reason(f: &Value) -> &str {
    f["reason"].as_str().unwrap_or("")
}

fn check_indexes(server: TestServer) {
    let dir = server.data_dir.clone();
    server.stop().unwrap();
    let store = ftsd::store::Redb::open(&dir).unwrap();
    assert_eq!(store.check_indexes().unwrap(), Vec::<String>::new());
}

const MIN: Duration = Duration::from_secs(60);

#[test]
fn mock_transfers_finish_with_their_measurements_and_a_log() {
    let Some(pki) = pki() else { return };
    let server = engine_server(pki, |_| {});
    let client = user(&server, pki);
    let id = submit(
        &client,
        json!([
            {"sources": ["mock://src.example/a?size=1048576&checksum=1a2b3c4d"],
             "destinations": ["mock://dst.example/a?size_post=1048576&checksum=1a2b3c4d&time=1"],
             "checksum": "ADLER32:1a2b3c4d"},
            transfer("mock://src.example/b?size=2048", "mock://dst.example/b?size_post=2048&time=1"),
        ]),
        json!({"verify_checksum": "both"}),
    );
    let j = wait_job(&client, &id, MIN);
    assert_eq!(j["job_state"], "FINISHED", "{j:#}");
    assert!(j["job_finished"].is_string());
    assert_eq!(j["reason"], Value::Null);
    let f = files(&client, &id);
    assert_eq!(f.len(), 2);
    for (file, size) in f.iter().zip([1_048_576u64, 2048]) {
        assert_eq!(state(file), "FINISHED", "{file:#}");
        assert_eq!(file["filesize"].as_u64(), Some(size));
        assert_eq!(file["transferred"].as_u64(), Some(size));
        assert!(file["tx_duration"].as_f64().unwrap() >= 0.9, "{file:#}");
        assert!(file["throughput"].as_f64().unwrap() > 0.0, "{file:#}");
        assert!(file["start_time"].is_string() && file["finish_time"].is_string());
        assert_eq!(
            file["transfer_host"].as_str().map(str::is_empty),
            Some(false)
        );
        let log = file["log_file"].as_str().expect("a log file path");
        let text = std::fs::read_to_string(log).unwrap();
        assert!(!text.is_empty(), "empty transfer log");
        assert!(
            log.contains(&id) && log.contains("src.example__dst.example"),
            "{log}"
        );
    }
    check_indexes(server);
}

/// Rucio's tape destinations ask for `dst_file_report`: when the destination already exists
/// and may not be overwritten, the failure says so and the file's metadata gets what is there
/// (`dst_file`), which Rucio compares with its own record to accept a copy already on tape.
#[test]
fn an_existing_destination_is_reported_in_the_file_metadata() {
    let Some(pki) = pki() else { return };
    let server = engine_server(pki, |_| {});
    let client = user(&server, pki);
    let id = submit(
        &client,
        json!([{
            "sources": ["mock://src.example/t?size=1048576&checksum=1a2b3c4d"],
            "destinations": ["mock://tape.example/t?exists=1&size_pre=1048576&checksum=1a2b3c4d\
                              &user.status=ONLINE_AND_NEARLINE"],
            "checksum": "ADLER32:1a2b3c4d",
            "metadata": {"request_id": "r1", "dst_type": "TAPE"},
        }]),
        json!({"verify_checksum": "both", "overwrite": false, "archive_timeout": 3600,
               "dst_file_report": true}),
    );
    let j = wait_job(&client, &id, MIN);
    assert_eq!(j["job_state"], "FAILED", "{j:#}");
    let f = &files(&client, &id)[0];
    assert_eq!(
        reason(f),
        "DESTINATION [17] Destination file exists and overwrite is not enabled"
    );
    assert_eq!(
        f["file_metadata"],
        json!({"request_id": "r1", "dst_type": "TAPE", "dst_file": {
            "file_size": 1048576, "checksum_type": "ADLER32", "checksum_value": "1a2b3c4d",
            "file_on_tape": true, "file_on_disk": true}}),
        "{f:#}"
    );
    // The bulk poll Rucio uses shows it too.
    let polled = client
        .get(&format!("/jobs/{id}?files=file_state,file_metadata"))
        .unwrap()
        .json();
    assert_eq!(polled["files"][0]["file_metadata"], f["file_metadata"]);
    check_indexes(server);
}

#[test]
fn failed_transfers_carry_the_reference_reasons() {
    let Some(pki) = pki() else { return };
    let server = engine_server(pki, |c| c.engine.default_link_active = 10);
    let client = user(&server, pki);
    let cases: Vec<(Value, Value, &str)> = vec![
        (
            transfer(
                "mock://s.example/size?size=100",
                "mock://d.example/size?size_post=50&time=0",
            ),
            json!({}),
            "Source and destination file size mismatch",
        ),
        (
            json!({"sources": ["mock://s.example/cs?size=10&checksum=00000002"],
                   "destinations": ["mock://d.example/cs?size_post=10&time=0"],
                   "checksum": "adler32:00000001"}),
            json!({"verify_checksum": "source"}),
            "Source and user-defined ADLER32 checksum do not match",
        ),
        (
            json!({"sources": ["mock://s.example/ct?size=10"],
                   "destinations": ["mock://d.example/ct?size_post=10&checksum=00000002&time=0"],
                   "checksum": "adler32:00000001"}),
            json!({"verify_checksum": "target"}),
            "User-defined and destination ADLER32 checksum do not match",
        ),
        (
            transfer(
                "mock://s.example/cb?size=10&checksum=00000001",
                "mock://d.example/cb?size_post=10&checksum=00000002&time=0",
            ),
            json!({"verify_checksum": "both"}),
            "Source and destination ADLER32 checksum do not match",
        ),
        (
            transfer(
                "mock://s.example/ex?size=10",
                "mock://d.example/ex?exists=1&size_post=10&time=0",
            ),
            json!({}),
            "Destination file exists and overwrite is not enabled",
        ),
    ];
    let ids: Vec<String> = cases
        .iter()
        .map(|(file, params, _)| submit(&client, json!([file]), params.clone()))
        .collect();
    for ((_, _, expected), id) in cases.iter().zip(&ids) {
        let j = wait_job(&client, id, MIN);
        assert_eq!(j["job_state"], "FAILED", "{j:#}");
        let f = &files(&client, id)[0];
        assert_eq!(state(f), "FAILED");
        assert!(reason(f).contains(expected), "{expected:?} not in {f:#}");
        // "<SCOPE> [<errno>] <message>"
        let scope = reason(f).split(' ').next().unwrap();
        assert!(
            ["SOURCE", "DESTINATION", "TRANSFER"].contains(&scope),
            "{}",
            reason(f)
        );
        assert!(reason(f).contains(" ["), "{}", reason(f));
        assert_eq!(f["transferred"].as_u64(), Some(0));
    }
    // With overwrite, the existing destination is replaced.
    let id = submit(
        &client,
        json!([transfer(
            "mock://s.example/ow?size=10",
            "mock://d.example/ow?exists=1&size_pre=10&size_post=10&time=0"
        )]),
        json!({"overwrite": true}),
    );
    assert_eq!(wait_job(&client, &id, MIN)["job_state"], "FINISHED");
}

#[test]
fn recoverable_failures_are_retried_with_their_history_and_others_are_not() {
    let Some(pki) = pki() else { return };
    let server = engine_server(pki, |c| c.engine.default_link_active = 10);
    let client = user(&server, pki);
    let retried = submit(
        &client,
        json!([transfer(
            "mock://s.example/r?size=10",
            "mock://d.example/r?transfer_errno=110&time=1"
        )]),
        json!({"retry": 2, "retry_delay": 1}),
    );
    let final_ = submit(
        &client,
        json!([transfer(
            "mock://s.example/missing?errno=2",
            "mock://d.example/m?time=0"
        )]),
        json!({"retry": 2, "retry_delay": 1}),
    );
    let j = wait_job(&client, &retried, MIN);
    assert_eq!(j["job_state"], "FAILED");
    let f = &files(&client, &retried)[0];
    assert!(reason(f).starts_with("TRANSFER [110]"), "{f:#}");
    assert_eq!(f["retry"].as_u64(), Some(2), "{f:#}");
    let file_id = f["file_id"].as_u64().unwrap();
    let history = client
        .get(&format!("/jobs/{retried}/files/{file_id}/retries"))
        .unwrap()
        .json();
    let history = history.as_array().unwrap();
    assert_eq!(history.len(), 2, "{history:?}");
    for (i, h) in history.iter().enumerate() {
        assert_eq!(h["attempt"].as_u64(), Some(i as u64 + 1));
        assert!(h["reason"].as_str().unwrap().starts_with("TRANSFER [110]"));
        assert!(h["datetime"].is_string());
    }
    // Another job's id cannot be used to read this file's history.
    let missing = client
        .get(&format!("/jobs/{final_}/files/{file_id}/retries"))
        .unwrap();
    assert_eq!(missing.status, 404);

    let j = wait_job(&client, &final_, MIN);
    assert_eq!(j["job_state"], "FAILED");
    let f = &files(&client, &final_)[0];
    assert!(reason(f).starts_with("SOURCE [2]"), "{f:#}");
    assert_eq!(
        f["retry"].as_u64(),
        Some(0),
        "a missing source is not retried"
    );
    let file_id = f["file_id"].as_u64().unwrap();
    let history = client
        .get(&format!("/jobs/{final_}/files/{file_id}/retries"))
        .unwrap()
        .json();
    assert_eq!(history, json!([]));
}

#[test]
fn replicas_fail_over_and_hops_run_in_order() {
    let Some(pki) = pki() else { return };
    let server = engine_server(pki, |_| {});
    let client = user(&server, pki);
    let replicas = submit(
        &client,
        json!([{"sources": ["mock://bad.example/f?errno=2", "mock://good.example/f?size=10"],
                "destinations": ["mock://dst.example/f?size_post=10&time=1"]}]),
        json!({}),
    );
    let hops = submit(
        &client,
        json!([
            transfer(
                "mock://a.example/h?size=10",
                "mock://b.example/h?size_post=10&time=1"
            ),
            transfer(
                "mock://b.example/h?size=10",
                "mock://c.example/h?size_post=10&time=1"
            ),
        ]),
        json!({"multihop": true}),
    );
    let j = wait_job(&client, &replicas, MIN);
    assert_eq!(j["job_state"], "FINISHED", "{j:#}");
    assert_eq!(j["source_se"], "mock://good.example");
    let f = files(&client, &replicas);
    assert_eq!(
        f.iter().map(state).collect::<Vec<_>>(),
        ["FAILED", "FINISHED"]
    );

    let j = wait_job(&client, &hops, MIN);
    assert_eq!(j["job_state"], "FINISHED", "{j:#}");
    let f = files(&client, &hops);
    assert!(f.iter().all(|f| state(f) == "FINISHED"));
    assert!(
        f[1]["start_time"].as_str().unwrap() >= f[0]["finish_time"].as_str().unwrap(),
        "the second hop started before the first ended: {f:#?}"
    );

    // Rucio's disk → disk → tape path (issue 23): only the last hop is archived; this job
    // stayed ACTIVE forever when every hop went to ARCHIVING.
    let to_tape = submit(
        &client,
        json!([
            transfer(
                "mock://a.example/t?size=10",
                "mock://b.example/t?size_post=10&time=0"
            ),
            transfer(
                "mock://b.example/t?size=10",
                "mock://tape.example/t?size_post=10&time=0&archiving_time=1"
            ),
        ]),
        json!({"multihop": true, "archive_timeout": 3600, "dst_file_report": true}),
    );
    let j = wait_job(&client, &to_tape, MIN);
    assert_eq!(j["job_state"], "FINISHED", "{j:#}");
    let f = files(&client, &to_tape);
    assert!(f.iter().all(|f| state(f) == "FINISHED"), "{f:#?}");
    assert!(
        f[0]["archive_finish_time"].is_null(),
        "an intermediate hop was archived"
    );
    assert!(f[1]["archive_finish_time"].is_string(), "{f:#?}");

    // A failed hop fails the job; the next hop never runs.
    let broken = submit(
        &client,
        json!([
            transfer("mock://a.example/x?errno=2", "mock://b.example/x?time=0"),
            transfer("mock://b.example/x?size=1", "mock://c.example/x?time=0"),
        ]),
        json!({"multihop": true}),
    );
    let j = wait_job(&client, &broken, MIN);
    assert_eq!(j["job_state"], "FAILED");
    let f = files(&client, &broken);
    assert_eq!(state(&f[0]), "FAILED");
    assert_eq!(state(&f[1]), "NOT_USED");
}

#[test]
fn reuse_jobs_run_their_files_one_after_another() {
    let Some(pki) = pki() else { return };
    let server = engine_server(pki, |c| c.engine.default_link_active = 10);
    let client = user(&server, pki);
    let list: Vec<Value> = (0..3)
        .map(|i| {
            transfer(
                &format!("mock://s.example/u{i}?size=10"),
                &format!("mock://d.example/u{i}?size_post=10&time=1"),
            )
        })
        .collect();
    let id = submit(&client, Value::Array(list), json!({"reuse": true}));
    let j = wait_job(&client, &id, MIN);
    assert_eq!(j["job_state"], "FINISHED", "{j:#}");
    let f = files(&client, &id);
    for pair in f.windows(2) {
        assert!(
            pair[1]["start_time"].as_str().unwrap() >= pair[0]["finish_time"].as_str().unwrap(),
            "reuse files overlapped: {f:#?}"
        );
    }
}

#[test]
fn staging_comes_before_the_copy_and_stage_only_jobs_finish_without_one() {
    let Some(pki) = pki() else { return };
    let server = engine_server(pki, |_| {});
    let client = user(&server, pki);
    let id = submit(
        &client,
        json!([transfer(
            "mock://tape.example/f?size=10&staging_time=1",
            "mock://disk.example/f?size_post=10&time=0"
        )]),
        json!({"bring_online": 60}),
    );
    assert_eq!(job(&client, &id)["job_state"], "STAGING");
    let j = wait_job(&client, &id, MIN);
    assert_eq!(j["job_state"], "FINISHED", "{j:#}");
    let f = &files(&client, &id)[0];
    assert!(f["staging_start"].is_string(), "{f:#}");
    assert!(f["staging_finished"].is_string(), "{f:#}");

    let url = "mock://tape.example/only?size=10&staging_time=1";
    let only = submit(
        &client,
        json!([transfer(url, url)]),
        json!({"bring_online": 60}),
    );
    assert_eq!(wait_job(&client, &only, MIN)["job_state"], "FINISHED");

    let failing = submit(
        &client,
        json!([transfer(
            "mock://tape.example/bad?staging_time=1&staging_errno=5",
            "mock://disk.example/bad"
        )]),
        json!({"bring_online": 60}),
    );
    assert_eq!(wait_job(&client, &failing, MIN)["job_state"], "FAILED");
}

#[test]
fn a_job_waiting_too_long_in_the_queue_is_canceled() {
    let Some(pki) = pki() else { return };
    let server = engine_server(pki, |c| c.engine.default_link_active = 1);
    let client = user(&server, pki);
    let busy = submit(
        &client,
        json!([transfer(
            "mock://s.example/busy?size=1",
            "mock://d.example/busy?time=30"
        )]),
        json!({}),
    );
    wait_files(&client, &busy, MIN, |f| state(&f[0]) == "ACTIVE");
    let waiting = submit(
        &client,
        json!([transfer(
            "mock://s.example/w?size=1",
            "mock://d.example/w?time=1"
        )]),
        json!({"max_time_in_queue": "2s"}),
    );
    let j = wait_job(&client, &waiting, MIN);
    assert_eq!(j["job_state"], "CANCELED", "{j:#}");
    let f = &files(&client, &waiting)[0];
    assert_eq!(
        reason(f),
        "Job has been canceled because it stayed in the queue for too long (max-time-in-queue timeout)"
    );
    // The running transfer was not touched by the other job's timeout.
    assert_eq!(state(&files(&client, &busy)[0]), "ACTIVE");
}

#[test]
fn canceling_a_running_transfer_stops_it_within_a_second() {
    let Some(pki) = pki() else { return };
    let server = engine_server(pki, |c| {
        c.engine.default_link_active = 1;
        // The user may ban storages: a ban applies to the banning admin's VO.
        c.roles.insert(
            "public".into(),
            "vo:transfer;all:datamanagement;all:config".into(),
        );
    });
    let client = user(&server, pki);
    let running = submit(
        &client,
        json!([transfer(
            "mock://s.example/long?size=1",
            "mock://d.example/long?time=60"
        )]),
        json!({}),
    );
    wait_files(&client, &running, MIN, |f| state(&f[0]) == "ACTIVE");
    // The link's only slot is taken: this one waits behind it.
    let next = submit(
        &client,
        json!([transfer(
            "mock://s.example/next?size=1",
            "mock://d.example/next?time=30"
        )]),
        json!({}),
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(state(&files(&client, &next)[0]), "SUBMITTED");
    let canceled_at = Instant::now();
    let reply = client.delete(&format!("/jobs/{running}")).unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    // The slot frees only when the transfer really stopped.
    wait_files(&client, &next, Duration::from_secs(5), |f| {
        state(&f[0]) == "ACTIVE"
    });
    let took = canceled_at.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "the next transfer started {took:?} after the cancel"
    );
    let f = &files(&client, &running)[0];
    assert_eq!(state(f), "CANCELED");
    assert!(f["finish_time"].is_string(), "{f:#}");

    // A cancel ban on the storage stops the running transfer too.
    let reply = client
        .request(
            "POST",
            "/ban/se",
            &[("content-type", "application/json")],
            Bytes::from(json!({"storage": "mock://s.example", "status": "cancel"}).to_string()),
        )
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    let j = wait_job(&client, &next, Duration::from_secs(3));
    assert_eq!(j["job_state"], "CANCELED");
    assert_eq!(reason(&files(&client, &next)[0]), "Storage banned");
}

#[test]
fn link_caps_hold_under_load_and_every_file_finishes() {
    let Some(pki) = pki() else { return };
    let server = engine_server(pki, |c| c.engine.default_link_active = 3);
    let client = user(&server, pki);
    let mut ids = Vec::new();
    for link in ["a", "b"] {
        let list: Vec<Value> = (0..12)
            .map(|i| {
                transfer(
                    &format!("mock://{link}.example/f{i}?size=1"),
                    &format!("mock://dst.example/{link}{i}?size_post=1&time=1"),
                )
            })
            .collect();
        ids.push(submit(&client, Value::Array(list), json!({})));
    }
    let mut peak: HashMap<&str, usize> = HashMap::new();
    let start = Instant::now();
    loop {
        let mut done = true;
        for (id, link) in ids.iter().zip(["a", "b"]) {
            let f = files(&client, id);
            let active = f
                .iter()
                .filter(|f| state(f) == "ACTIVE" || state(f) == "READY")
                .count();
            assert!(active <= 3, "link {link} runs {active} transfers: cap is 3");
            let p = peak.entry(link).or_default();
            *p = (*p).max(active);
            assert!(
                f.iter().all(|f| state(f) != "FAILED"),
                "{:#}",
                Value::Array(f.clone())
            );
            done &= f.iter().all(|f| state(f) == "FINISHED");
        }
        if done {
            break;
        }
        assert!(start.elapsed() < MIN, "transfers did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Both links ran at their cap at some point: the scheduler does use the slots it has.
    assert_eq!(peak["a"], 3, "{peak:?}");
    assert_eq!(peak["b"], 3, "{peak:?}");
    check_indexes(server);
}

#[test]
fn file_transfers_stay_inside_the_allowed_directories() {
    let Some(pki) = pki() else { return };
    let root = tempfile::tempdir().unwrap();
    let allowed = root.path().join("allowed");
    std::fs::create_dir_all(&allowed).unwrap();
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(allowed.join("src.bin"), &payload).unwrap();
    let server = engine_server(pki, |c| c.engine.file_roots = vec![allowed.clone()]);
    let client = user(&server, pki);
    let src = format!("file://{}", allowed.join("src.bin").display());
    let dst = format!("file://{}", allowed.join("out/dir/dst.bin").display());
    let id = submit(
        &client,
        json!([transfer(&src, &dst)]),
        json!({"verify_checksum": "both"}),
    );
    assert_eq!(wait_job(&client, &id, MIN)["job_state"], "FINISHED");
    assert_eq!(
        std::fs::read(allowed.join("out/dir/dst.bin")).unwrap(),
        payload
    );

    // Outside the allowed directory: refused at submission, as the reference refuses all.
    let outside = format!("file://{}", root.path().join("elsewhere.bin").display());
    let reply = post_json(
        &client,
        "/jobs",
        &json!({"files": [transfer(&src, &outside)], "params": {}}),
    );
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(
        reply.text().contains("Can not transfer local files"),
        "{}",
        reply.text()
    );
}

/// `kill -9` while transfers of jobs without retries run: after the restart they run again,
/// without an attempt counted, and finish; `ftsd check` finds the database sound.
#[test]
fn kill_9_while_hundreds_of_transfers_run_loses_nothing() {
    let Some(pki) = pki() else { return };
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("data");
    let config = "[engine]\ndefault_link_active = 40\nscheduling_interval = 1\n";
    let (mut child, port) = spawn_ftsd_with(pki, &dir, config);
    let client = Client::new(port, &pki.path("ca.pem"), Some(pki.path("rc_user.pem")));
    let (status, body) = delegate(
        &client,
        pki,
        "rc_user.pem",
        &independent_delegation_id(RC_USER_DN, &[]),
    );
    assert_eq!(status, 201, "{body}");
    let mut ids = Vec::new();
    for j in 0..6 {
        let list: Vec<Value> = (0..50)
            .map(|i| {
                transfer(
                    &format!("mock://s{j}.example/f{i}?size=1"),
                    &format!("mock://d{j}.example/f{i}?size_post=1&time=3"),
                )
            })
            .collect();
        ids.push(submit(&client, Value::Array(list), json!({"retry": -1})));
    }
    // Wait until transfers are running, then pull the plug.
    let start = Instant::now();
    loop {
        let active: usize = ids
            .iter()
            .map(|id| {
                files(&client, id)
                    .iter()
                    .filter(|f| state(f) == "ACTIVE")
                    .count()
            })
            .sum();
        if active >= 100 {
            break;
        }
        assert!(
            start.elapsed() < MIN,
            "transfers never started ({active} active)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let (mut child, port) = spawn_ftsd_with(pki, &dir, config);
    let client = Client::new(port, &pki.path("ca.pem"), Some(pki.path("rc_user.pem")));
    for id in &ids {
        let j = wait_job(&client, id, Duration::from_secs(120));
        let f = files(&client, id);
        let failed: Vec<String> = f
            .iter()
            .filter(|f| state(f) != "FINISHED")
            .map(|f| format!("{} {} retry={}", state(f), reason(f), f["retry"]))
            .collect();
        assert_eq!(j["job_state"], "FINISHED", "{failed:#?}");
        assert_eq!(f.len(), 50);
        assert!(f.iter().all(|f| state(f) == "FINISHED"));
    }
    // The interruption cost no attempt.
    let all: Vec<Value> = ids.iter().flat_map(|id| files(&client, id)).collect();
    assert!(all.iter().all(|f| f["retry"].as_u64() == Some(0)));
    unsafe_sigterm(&child);
    child.wait().unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_ftsd"))
        .args(["check", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{report}");
    assert!(report.contains("300 files"), "{report}");
    let store = ftsd::store::Redb::open(&dir).unwrap();
    let interrupted = all
        .iter()
        .filter(|f| store.interruptions(f["file_id"].as_u64().unwrap()).unwrap() == 1)
        .count();
    assert!(
        interrupted >= 100,
        "only {interrupted} files were recovered"
    );
}

/// Stop a child gracefully (SIGTERM) through the `kill` command.
fn unsafe_sigterm(child: &std::process::Child) {
    Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
}

#[test]
fn fts_cli_blocking_submit_waits_for_the_end() {
    let Some(pki) = pki() else { return };
    let Some(bin) = fts3_client_bin() else { return };
    let server = engine_server(pki, |_| {});
    let run = |src: &str, dst: &str| {
        fts_cli(
            &bin,
            "fts-rest-transfer-submit",
            server.port,
            pki,
            CliAs::Proxy("proxy_rfc.pem"),
            &["-b", "-i", "1", src, dst],
        )
        .ok()
    };
    let ok = run(
        "mock://a.example/cli?size=100",
        "mock://b.example/cli?size_post=100&time=1",
    );
    assert!(ok.contains("Job finished with state FINISHED"), "{ok}");
    let bad = run(
        "mock://a.example/cli2?size=100",
        "mock://b.example/cli2?transfer_errno=13&time=1",
    );
    assert!(bad.contains("Job finished with state FAILED"), "{bad}");
    let job_id = job_id_of(&bad);
    let root = server.client(pki, Some(crate::common::ROOT));
    let f = &files(&root, &job_id)[0];
    assert!(reason(f).starts_with("TRANSFER [13]"), "{f:#}");
}

#[test]
fn vo_shares_divide_a_busy_link() {
    let Some(pki) = pki() else { return };
    let server = engine_server(pki, |c| {
        c.engine.default_link_active = 4;
        c.roles.insert(
            "public".into(),
            "vo:transfer;all:datamanagement;all:config".into(),
        );
    });
    // Two users in two VOs: without VOMS attributes, each user's VO is their own (the
    // reference names it after the delegation id). "dteam" below is Rc Other's VO.
    let rc = user(&server, pki);
    let dteam = server.client(pki, Some("rc_other.pem"));
    let (status, body) = delegate(
        &dteam,
        pki,
        "rc_other.pem",
        &independent_delegation_id(crate::common::RC_OTHER_DN, &[]),
    );
    assert_eq!(status, 201, "{body}");
    let many = |tag: &str| -> Value {
        Value::Array(
            (0..24)
                .map(|i| {
                    transfer(
                        &format!("mock://share-src.example/{tag}{i}?size=1"),
                        &format!("mock://share-dst.example/{tag}{i}?size_post=1&time=1"),
                    )
                })
                .collect(),
        )
    };
    // Drain the host while both queues fill, so both VOs are queued when scheduling starts.
    let hosts = rc.get("/config").unwrap().json();
    let hostname = hosts[0]["hostname"].as_str().unwrap().to_string();
    let drain = |on: bool| {
        let reply = post_json(
            &rc,
            "/config/drain",
            &json!({"hostname": hostname, "drain": on}),
        );
        assert_eq!(reply.status, 200, "{}", reply.text());
    };
    drain(true);
    let rc_job = submit(&rc, many("rc"), json!({}));
    let dteam_job = submit(&dteam, many("dt"), json!({}));
    let rc_vo = job(&rc, &rc_job)["vo_name"].as_str().unwrap().to_string();
    let dteam_vo = job(&dteam, &dteam_job)["vo_name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(rc_vo, dteam_vo);
    let link = json!({"symbolicname": "shares", "source": "mock://share-src.example",
                      "destination": "mock://share-dst.example", "min_active": 1, "max_active": 4});
    assert_eq!(post_json(&rc, "/config/links", &link).status, 201);
    for (vo, share) in [(dteam_vo.as_str(), 3), (rc_vo.as_str(), 1)] {
        let body = json!({"source": "mock://share-src.example", "destination": "mock://share-dst.example",
                          "vo": vo, "share": share});
        let reply = post_json(&rc, "/config/shares", &body);
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    drain(false);
    wait_job(&rc, &rc_job, MIN);
    wait_job(&dteam, &dteam_job, MIN);
    // While both queues had files, 3 of every 4 slots went to dteam. Start times have a
    // one-second resolution: count whole seconds, from the first, until 16 transfers started.
    let mut by_second: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    for (who, j, c) in [("rc", &rc_job, &rc), ("dteam", &dteam_job, &dteam)] {
        for f in files(c, j) {
            let e = by_second
                .entry(f["start_time"].as_str().unwrap().to_string())
                .or_default();
            if who == "dteam" {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
        }
    }
    let (mut dt, mut total) = (0, 0);
    for (d, r) in by_second.values() {
        if total >= 16 {
            break;
        }
        dt += d;
        total += d + r;
    }
    let ratio = dt as f64 / total as f64;
    assert!(
        (0.6..=0.9).contains(&ratio),
        "dteam got {dt} of the first {total} slots, expected about 3/4: {by_second:?}"
    );
}

#[test]
fn a_transfer_without_progress_is_stopped_as_stalled() {
    let Some(pki) = pki() else { return };
    let server = engine_server(pki, |c| c.engine.stall_timeout = 2);
    let client = user(&server, pki);
    // Size 0: the copy never moves a byte.
    let id = submit(
        &client,
        json!([transfer(
            "mock://s.example/st?size=0",
            "mock://d.example/st?time=60"
        )]),
        json!({}),
    );
    let j = wait_job(&client, &id, Duration::from_secs(20));
    assert_eq!(j["job_state"], "FAILED");
    let f = &files(&client, &id)[0];
    assert!(
        reason(f).contains("Transfer has been forced-killed because it was stalled"),
        "{f:#}"
    );
}

/// What the engine could not run is refused at submission with a 400 that names it, instead of
/// failing later (a `file://` ↔ remote pair) or "succeeding" without doing it (staging or
/// archive monitoring on storage whose backend cannot, as `file://`).
#[test]
fn what_the_engine_cannot_run_is_refused_at_submission() {
    let Some(pki) = pki() else { return };
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().to_path_buf();
    let server = engine_server(pki, |c| {
        c.engine.file_roots = vec![dir.clone()];
        // The schemes that stage are then exactly the native backends'.
        c.engine.gfal2 = ftsd::config::Gfal2Mode::Off;
    });
    let client = user(&server, pki);
    let refused = |files: Value, params: Value| {
        let reply = post_json(&client, "/jobs", &json!({"files": files, "params": params}));
        assert_eq!(reply.status, 400, "{}", reply.text());
        reply.json()["message"].as_str().unwrap().to_string()
    };
    let local = format!("file://{}/a", dir.display());
    assert_eq!(
        refused(
            json!([transfer(&local, "https://storage.example/b")]),
            json!({})
        ),
        format!(
            "Invalid value within the request: Copies from file:// to https:// are not supported \
             by this service ({local} => https://storage.example/b)"
        )
    );
    let other = format!("file://{}/b", dir.display());
    assert_eq!(
        refused(
            json!([transfer(&local, &other)]),
            json!({"bring_online": 60})
        ),
        format!(
            "Invalid value within the request: Staging (bring_online, copy_pin_lifetime) is not \
             supported for file:// by this service ({local}); schemes that support it: dav, \
             davs, http, https, mock"
        )
    );
    assert_eq!(
        refused(
            json!([transfer(&local, &other)]),
            json!({"archive_timeout": 3600})
        ),
        format!(
            "Invalid value within the request: Archive monitoring (archive_timeout) is not \
             supported for file:// by this service ({other}); schemes that support it: dav, \
             davs, http, https, mock"
        )
    );
    // mock:// keeps its semantics: staged, copied, watched until archived.
    let id = submit(
        &client,
        json!([transfer(
            "mock://tape.example/f?size=10&staging_time=1",
            "mock://archive.example/f?size_post=10&time=0&archiving_time=1"
        )]),
        json!({"bring_online": 60, "archive_timeout": 60}),
    );
    let j = wait_job(&client, &id, MIN);
    assert_eq!(j["job_state"], "FINISHED", "{j:#}");
    let f = &files(&client, &id)[0];
    assert!(f["staging_finished"].is_string(), "{f:#}");
    assert!(f["archive_finish_time"].is_string(), "{f:#}");
}

/// `node_name` names the node wherever the machine's host name was used: its row in the host
/// list, the `submit_host` of the jobs it takes and the `transfer_host` of its transfers.
#[test]
fn node_name_names_the_node_in_hosts_jobs_and_transfers() {
    let Some(pki) = pki() else { return };
    let server = engine_server(pki, |c| c.node_name = Some("node-a.test".into()));
    let client = user(&server, pki);
    let root = server.client(pki, Some(crate::common::ROOT));
    let hosts = root.get("/config").unwrap().json();
    let names: Vec<&str> = hosts
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["hostname"].as_str().unwrap())
        .collect();
    assert!(
        !names.is_empty() && names.iter().all(|n| *n == "node-a.test"),
        "{names:?}"
    );
    let id = submit(
        &client,
        json!([transfer(
            "mock://src.example/n?size=10",
            "mock://dst.example/n?size_post=10&time=0"
        )]),
        json!({}),
    );
    let j = wait_job(&client, &id, MIN);
    assert_eq!(j["job_state"], "FINISHED", "{j:#}");
    assert_eq!(j["submit_host"], "node-a.test");
    assert_eq!(files(&client, &id)[0]["transfer_host"], "node-a.test");
}
