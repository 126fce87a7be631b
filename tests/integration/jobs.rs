//! The jobs API: submission (and its refusals), status single and bulk, listing filters,
//! cancellation, priority, files, authorization between users, durability under kill -9, and
//! interop with the official client and a Rucio-shaped client.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::common::{CliAs, fts_cli, fts3_client_bin, job_id_of};
use crate::common::{
    Client, RC_OTHER_DN, RC_USER_DN, ROOT, TestPki, TestServer, pki, post_json, spawn_ftsd,
};
use crate::delegation::delegate;
use crate::tls_auth::independent_delegation_id;

/// A client for `credential` with a delegated proxy.
fn delegated(server: &TestServer, pki: &TestPki, credential: &str, dn: &str) -> Client {
    let client = server.client(pki, Some(credential));
    let (status, body) = delegate(
        &client,
        pki,
        credential,
        &independent_delegation_id(dn, &[]),
    );
    assert_eq!(status, 201, "{body}");
    client
}

fn one_file(src: &str, dst: &str) -> Value {
    json!({"files": [{"sources": [src], "destinations": [dst]}], "params": {}})
}

fn submit_ok(client: &Client, body: &Value) -> String {
    let reply = post_json(client, "/jobs", body);
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["job_id"].as_str().unwrap().to_string()
}

#[test]
fn submission_needs_a_delegation_and_permissions() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    let body = one_file("mock://a.example.org/f", "mock://b.example.org/f");
    let anonymous = post_json(&server.client(pki, None), "/jobs", &body);
    assert_eq!(anonymous.status, 403);
    assert_eq!(anonymous.json()["message"], "Not enough permissions");
    let user = server.client(pki, Some("rc_user.pem"));
    let reply = post_json(&user, "/jobs", &body);
    assert_eq!(reply.status, 419);
    assert_eq!(
        reply.json()["message"],
        format!("No delegation found for \"{RC_USER_DN}\"")
    );
}

#[test]
fn submit_then_status_single_and_bulk() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    let client = delegated(&server, pki, "rc_user.pem", RC_USER_DN);
    let body = json!({
        "files": [{"sources": ["mock://a.example.org:8443/f1"], "destinations": ["mock://b.example.org/f1"],
                   "checksum": "adler32:12345678", "filesize": 1000, "metadata": {"request_id": "r1"}}],
        "params": {"verify_checksum": true, "priority": 4, "spacetoken": "DATADISK", "job_metadata": {"issuer": "test"}}
    });
    let id = submit_ok(&client, &body);
    let job = client.get(&format!("/jobs/{id}")).unwrap();
    assert_eq!(job.status, 200);
    let job = job.json();
    assert_eq!(job["job_id"], id.as_str());
    assert_eq!(job["http_status"], "200 Ok");
    assert_eq!(job["job_state"], "SUBMITTED");
    assert_eq!(job["job_type"], "N");
    assert_eq!(job["user_dn"], RC_USER_DN);
    assert_eq!(job["priority"], 4);
    assert_eq!(job["verify_checksum"], "b");
    assert_eq!(job["source_se"], "mock://a.example.org");
    assert_eq!(job["dest_se"], "mock://b.example.org");
    assert_eq!(job["destination_spacetoken"], "DATADISK");
    assert_eq!(job["space_token"], "DATADISK");
    assert_eq!(job["job_metadata"]["issuer"], "test");
    assert_eq!(job["job_metadata"]["auth_method"], "certificate");
    assert_eq!(job["cancel_job"], false);
    let submit_time = job["submit_time"].as_str().unwrap();
    assert_eq!(submit_time.len(), 19);

    // Files, and the projection Rucio uses.
    let files = client.get(&format!("/jobs/{id}/files")).unwrap().json();
    let f = &files[0];
    assert_eq!(f["file_state"], "SUBMITTED");
    assert_eq!(f["source_surl"], "mock://a.example.org:8443/f1");
    assert_eq!(f["checksum"], "adler32:12345678");
    assert_eq!(f["file_metadata"]["request_id"], "r1");
    assert_eq!(f["retries"], json!([]));
    let file_id = f["file_id"].as_u64().unwrap();

    let missing = "00000000-0000-0000-0000-000000000000";
    let one_missing = client.get(&format!("/jobs/{missing}")).unwrap();
    assert_eq!(one_missing.status, 404);
    assert_eq!(
        one_missing.json(),
        json!({"job_id": missing, "http_status": "404 Not Found",
               "http_message": format!("No job with the id \"{missing}\" has been found")})
    );
    let id2 = submit_ok(
        &client,
        &one_file("mock://a.example.org/f2", "mock://b.example.org/f2"),
    );
    let bulk = client
        .get(&format!("/jobs/{id},{id2}?files=file_state,dest_surl,finish_time,start_time,staging_start,staging_finished,reason,source_surl,file_metadata"))
        .unwrap();
    assert_eq!(bulk.status, 200);
    let bulk = bulk.json();
    assert_eq!(bulk.as_array().unwrap().len(), 2);
    assert_eq!(bulk[0]["files"][0]["file_state"], "SUBMITTED");
    assert_eq!(bulk[0]["files"][0]["file_metadata"]["request_id"], "r1");
    assert!(
        bulk[0]["files"][0].get("file_id").is_none(),
        "projection keeps only the asked fields"
    );
    let partial = client.get(&format!("/jobs/{id},{missing}")).unwrap();
    assert_eq!(partial.status, 207);
    assert_eq!(partial.json()[1]["http_status"], "404 Not Found");
    let trailing = client.get(&format!("/jobs/{id},")).unwrap();
    assert_eq!(trailing.json().as_array().unwrap().len(), 1);

    // Single fields.
    assert_eq!(
        client.get(&format!("/jobs/{id}/job_state")).unwrap().json(),
        "SUBMITTED"
    );
    let nope = client.get(&format!("/jobs/{id}/no_such_field")).unwrap();
    assert_eq!(nope.status, 404);
    assert_eq!(nope.json()["message"], "No such field");
    assert_eq!(
        client
            .get(&format!("/jobs/{id}/files/{file_id}/retries"))
            .unwrap()
            .json(),
        json!([])
    );
    assert_eq!(
        client.get(&format!("/jobs/{id}/dm")).unwrap().json(),
        json!([])
    );

    // GET /files by destination.
    let files = client
        .get("/files?dest_surl=mock%3A%2F%2Fb.example.org%2Ff1")
        .unwrap()
        .json();
    assert_eq!(files.as_array().unwrap().len(), 1);
    assert_eq!(files[0]["job_id"], id.as_str());
}

#[test]
fn submission_refusals_use_the_reference_messages() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    let client = delegated(&server, pki, "rc_user.pem", RC_USER_DN);
    let put_garbage = client
        .request("PUT", "/jobs", &[], Bytes::from_static(b"thisXisXnotXjson"))
        .unwrap();
    assert_eq!(put_garbage.status, 400);
    assert_eq!(
        put_garbage.json()["message"],
        "Badly formatted JSON request"
    );
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            json!({"params": {}}),
            400,
            "No transfers operations specified",
        ),
        (json!({"files": []}), 400, "No valid pairs available"),
        (
            one_file("/etc/passwd", "mock://b/f"),
            400,
            "Invalid value within the request: Missing scheme (/etc/passwd)",
        ),
        (
            one_file("file:///etc/passwd", "mock://b/f"),
            400,
            "Invalid value within the request: Can not transfer local files (file:///etc/passwd)",
        ),
        (
            one_file("gsiftp:/source.es:8446/file", "mock://b/f"),
            400,
            "Invalid value within the request: Missing host (gsiftp:/source.es:8446/file)",
        ),
        (
            one_file("gsiftp://source.es:8446/", "mock://b/f"),
            400,
            "Invalid value within the request: Missing path (gsiftp://source.es:8446/)",
        ),
        (
            one_file("http://google.com", "mock://b/f"),
            400,
            "Invalid value within the request: Missing path (http://google.com)",
        ),
        (
            json!({"files": [{"sources": ["mock://a/f"], "destinations": ["mock://b/f"]}], "delete": []}),
            405,
            "Deletion jobs are no longer supported by FTS",
        ),
    ];
    for (body, status, message) in cases {
        let reply = post_json(&client, "/jobs", &body);
        assert_eq!(reply.status, status, "{body}: {}", reply.text());
        assert_eq!(reply.json()["message"], message, "{body}");
    }
    let reply = post_json(&client, "/jobs", &json!({"files": 48}));
    assert_eq!(reply.status, 400);
    assert!(
        reply.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("Malformed request"),
        "{}",
        reply.text()
    );
    let reply = post_json(
        &client,
        "/jobs",
        &json!({"files": [{"sources": ["mock://a/f"], "destinations": ["mock://b/f"]}], "params": {"verify_checksum": 1234}}),
    );
    assert_eq!(reply.status, 400);
    assert!(
        reply.json()["message"]
            .as_str()
            .unwrap()
            .contains("verify_checksum"),
        "{}",
        reply.text()
    );

    // Deterministic ids: uuid5(uuid5(base_id, vo), sid), and a duplicate is a conflict.
    let body = json!({"files": [{"sources": ["mock://a/f"], "destinations": ["mock://b/f"]}],
                      "params": {"id_generator": "deterministic", "sid": "abc"}});
    let id = submit_ok(&client, &body);
    let vo = independent_delegation_id(RC_USER_DN, &[]);
    let ns = uuid::Uuid::new_v5(&ftsd::model::identity::BASE_ID, vo.as_bytes());
    assert_eq!(id, uuid::Uuid::new_v5(&ns, b"abc").to_string());
    let again = post_json(&client, "/jobs", &body);
    assert_eq!(again.status, 409);
    assert_eq!(
        again.json()["message"],
        "The sid provided by the user is duplicated"
    );
}

#[test]
fn the_real_clients_bodies_are_accepted() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    let client = delegated(&server, pki, "rc_user.pem", RC_USER_DN);
    // fts-rest-transfer-submit, as captured.
    let cli = json!({
        "params": {"overwrite": false, "overwrite_on_retry": false, "overwrite_when_only_on_disk": false,
          "overwrite_hop": false, "reuse": false, "job_metadata": null, "gridftp": null,
          "spacetoken": null, "source_spacetoken": null, "verify_checksum": "n",
          "copy_pin_lifetime": -1, "bring_online": -1, "dst_file_report": false, "archive_timeout": -1,
          "timeout": null, "fail_nearline": false, "retry": 0, "priority": null, "multihop": false,
          "credential": null, "nostreams": "4", "s3alternate": false, "ipv4": false, "ipv6": false,
          "buffer_size": null, "strict_copy": false, "disable_cleanup": false, "unmanaged_tokens": false},
        "files": [{"sources": ["mock://a.example.org/path?size=1000"],
                   "destinations": ["mock://b.example.org/path2?errno=2&size_post=1000&time=2"],
                   "checksum": "ADLER32", "filesize": null, "activity": null, "scitag": null,
                   "metadata": null, "staging_metadata": null, "archive_metadata": null}]
    });
    let id = submit_ok(&client, &cli);
    let job = client.get(&format!("/jobs/{id}")).unwrap().json();
    assert_eq!(job["verify_checksum"], "n");
    assert_eq!(job["internal_job_params"], "nostreams:4");
    // Rucio: multiple sources, deterministic id, string verify_checksum, metadata objects.
    let rucio = json!({
        "files": [{"sources": ["mock://s1.example.org/r/f", "mock://s2.example.org/r/f"],
                   "destinations": ["mock://d.example.org/r/f"],
                   "metadata": {"request_id": "req-1", "scope": "user", "name": "f", "activity": "User Subscriptions",
                                "src_type": "DISK", "dst_type": "DISK", "src_rse": "S1", "dst_rse": "D",
                                "filesize": 1000, "md5": null, "adler32": "0a0b0c0d"},
                   "filesize": 1000, "checksum": "ADLER32:0a0b0c0d", "selection_strategy": "orderly",
                   "activity": "User Subscriptions"}],
        "params": {"account": "root", "verify_checksum": "target", "copy_pin_lifetime": -1, "bring_online": null,
                   "job_metadata": {"issuer": "rucio", "multi_sources": true, "overwrite_when_only_on_disk": false},
                   "overwrite": true, "priority": 3, "s3alternate": true,
                   "id_generator": "deterministic", "sid": "req-1"}
    });
    let id = submit_ok(&client, &rucio);
    let poll = client
        .get(&format!("/jobs/{id}?files=file_state,dest_surl,finish_time,start_time,staging_start,staging_finished,reason,source_surl,file_metadata"))
        .unwrap();
    assert_eq!(poll.status, 200);
    let job = poll.json();
    assert_eq!(job["http_status"], "200 Ok");
    assert_eq!(job["job_type"], "R");
    assert_eq!(job["verify_checksum"], "t");
    assert_eq!(job["job_metadata"]["multi_sources"], true);
    let states: Vec<&str> = job["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["file_state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        vec!["SUBMITTED", "NOT_USED"],
        "orderly picks the first replica"
    );
    assert_eq!(job["files"][0]["file_metadata"]["request_id"], "req-1");
    assert_eq!(job["files"][0]["finish_time"], Value::Null);
}

#[test]
fn listing_filters_and_level_forced_filters() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    let client = delegated(&server, pki, "rc_user.pem", RC_USER_DN);
    let a = submit_ok(
        &client,
        &one_file("mock://a.example.org/1", "mock://b.example.org/1"),
    );
    // Submit times have a resolution of one second: make the order unambiguous.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let b = submit_ok(
        &client,
        &one_file("mock://c.example.org/2", "mock://d.example.org/2"),
    );
    let ids = |reply: crate::common::Reply| -> Vec<String> {
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["job_id"].as_str().unwrap().to_string())
            .collect()
    };
    let all = ids(client.get("/jobs").unwrap());
    assert_eq!(all, vec![b.clone(), a.clone()], "newest first");
    assert_eq!(ids(client.get("/jobs/").unwrap()).len(), 2);
    assert_eq!(
        ids(client
            .get("/jobs?source_se=mock%3A%2F%2Fa.example.org")
            .unwrap()),
        vec![a.clone()]
    );
    assert_eq!(
        ids(client.get("/jobs?dest_se=mock://d.example.org").unwrap()),
        vec![b.clone()]
    );
    assert_eq!(
        ids(client.get("/jobs?state_in=SUBMITTED%2CACTIVE").unwrap()).len(),
        2
    );
    assert!(ids(client.get("/jobs?state_in=FINISHED").unwrap()).is_empty());
    assert_eq!(
        ids(client.get("/jobs?state_in=SUBMITTED&limit=1").unwrap()),
        vec![b.clone()]
    );
    let dlg = independent_delegation_id(RC_USER_DN, &[]);
    assert_eq!(
        ids(client.get(&format!("/jobs?dlg_id={dlg}")).unwrap()).len(),
        2
    );
    let projected = client
        .get("/jobs?fields=job_id,job_state,nonsense")
        .unwrap()
        .json();
    assert_eq!(projected[0].as_object().unwrap().len(), 2);

    let bad_limit = client.get("/jobs?limit=501").unwrap();
    assert_eq!(bad_limit.status, 400);
    assert_eq!(
        bad_limit.json()["message"],
        "The limit must be positive and less or equal than 500"
    );
    let bad_dlg = client.get("/jobs?dlg_id=0123456789abcdef").unwrap();
    assert_eq!(bad_dlg.status, 403);
    assert_eq!(
        bad_dlg.json()["message"],
        "The provided delegation id does not match your delegation id"
    );
    let bad_dn = client.get("/jobs?user_dn=%2FCN%3Dsomeone").unwrap();
    assert_eq!(bad_dn.status, 400);
    assert_eq!(
        bad_dn.json()["message"],
        "The provided DN and delegation id do not correspond to the same user"
    );

    // vo_name filters for callers whose level is "all" (root); others are forced to their VO.
    let root = server.client(pki, Some(ROOT));
    assert_eq!(
        ids(root.get(&format!("/jobs?vo_name={dlg}")).unwrap()).len(),
        2
    );
    assert!(ids(root.get("/jobs?vo_name=atlas").unwrap()).is_empty());
    assert_eq!(
        ids(client.get("/jobs?vo_name=atlas").unwrap()).len(),
        2,
        "VO level: own VO forced"
    );
    // /files: limit clamped to 1..1000.
    let files = client.get("/files?limit=0").unwrap().json();
    assert_eq!(files.as_array().unwrap().len(), 1);
    let files = client.get("/files?limit=5000").unwrap().json();
    assert_eq!(files.as_array().unwrap().len(), 2);

    // Canceled jobs leave the default listing; with a state filter and a time window they show.
    assert_eq!(client.delete(&format!("/jobs/{a}")).unwrap().status, 200);
    assert_eq!(ids(client.get("/jobs").unwrap()), vec![b.clone()]);
    assert_eq!(
        ids(client.get("/jobs?state_in=CANCELED&time_window=1").unwrap()),
        vec![a.clone()]
    );
    assert_eq!(
        ids(client.get("/jobs?state_in=CANCELED&limit=10").unwrap()),
        vec![a]
    );
}

#[test]
fn another_user_cannot_see_or_touch_my_jobs() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    let mine = delegated(&server, pki, "rc_user.pem", RC_USER_DN);
    let theirs = delegated(&server, pki, "rc_other.pem", RC_OTHER_DN);
    let id = submit_ok(
        &mine,
        &one_file("mock://a.example.org/x", "mock://b.example.org/x"),
    );
    let forbidden = format!("Not enough permissions to check the job \"{id}\"");
    let reply = theirs.get(&format!("/jobs/{id}")).unwrap();
    assert_eq!(reply.status, 403);
    assert_eq!(reply.json()["http_message"], forbidden.as_str());
    assert_eq!(
        theirs.get(&format!("/jobs/{id}/files")).unwrap().status,
        403
    );
    assert_eq!(
        theirs.get(&format!("/jobs/{id}/job_state")).unwrap().status,
        403
    );
    assert!(
        theirs
            .get("/jobs")
            .unwrap()
            .json()
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(
        theirs
            .get("/files?state_in=SUBMITTED")
            .unwrap()
            .json()
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(theirs.delete(&format!("/jobs/{id}")).unwrap().status, 403);
    let reply = post_json(
        &theirs,
        &format!("/jobs/{id}"),
        &json!({"params": {"priority": 5}}),
    );
    assert_eq!(reply.status, 403);
    let reply = theirs.delete(&format!("/jobs/{id}/files/1")).unwrap();
    assert_eq!(reply.status, 403);
    // Untouched.
    let job = mine.get(&format!("/jobs/{id}")).unwrap().json();
    assert_eq!(job["job_state"], "SUBMITTED");
    assert_eq!(job["priority"], 3);
    // Anonymous callers: 403, never a 500.
    let anon = server.client(pki, None);
    assert_eq!(anon.get("/jobs").unwrap().status, 403);
    assert_eq!(anon.get(&format!("/jobs/{id}")).unwrap().status, 403);
    assert_eq!(anon.delete(&format!("/jobs/{id}")).unwrap().status, 403);
    assert_eq!(anon.get("/files").unwrap().status, 403);
}

#[test]
fn cancel_priority_and_file_cancellation() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    let client = delegated(&server, pki, "rc_user.pem", RC_USER_DN);
    let id = submit_ok(
        &client,
        &one_file("mock://a.example.org/c", "mock://b.example.org/c"),
    );

    let reply = post_json(
        &client,
        &format!("/jobs/{id}"),
        &json!({"params": {"priority": 5}}),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["priority"], 5);
    assert_eq!(reply.json()["http_status"], "200 Ok");
    assert_eq!(
        client.get(&format!("/jobs/{id}/files")).unwrap().json()[0]["priority"],
        5
    );
    let reply = post_json(
        &client,
        &format!("/jobs/{id}"),
        &json!({"params": {"priority": "high"}}),
    );
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["message"], "Invalid priority value");

    let reply = client.delete(&format!("/jobs/{id}")).unwrap();
    assert_eq!(reply.status, 200);
    let job = reply.json();
    assert_eq!(job["job_state"], "CANCELED");
    assert_eq!(job["reason"], "Job canceled by the user");
    assert_eq!(job["cancel_job"], true);
    assert_eq!(
        client.get(&format!("/jobs/{id}/files")).unwrap().json()[0]["file_state"],
        "CANCELED"
    );
    let again = client.delete(&format!("/jobs/{id}")).unwrap();
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["http_status"], "304 Not Modified");
    assert_eq!(
        again.json()["http_message"],
        "The job is in a terminal state"
    );
    let missing = "00000000-0000-0000-0000-000000000000";
    let multi = client.delete(&format!("/jobs/{id},{missing}")).unwrap();
    assert_eq!(multi.status, 207);
    assert_eq!(multi.json()[1]["http_status"], "404 Not Found");

    // Per-file cancel on a two-file job: one file, then the other ends the job.
    let body = json!({"files": [
        {"sources": ["mock://a.example.org/p1"], "destinations": ["mock://b.example.org/p1"]},
        {"sources": ["mock://a.example.org/p2"], "destinations": ["mock://b.example.org/p2"]}]});
    let id = submit_ok(&client, &body);
    let files = client.get(&format!("/jobs/{id}/files")).unwrap().json();
    let (f1, f2) = (
        files[0]["file_id"].as_u64().unwrap(),
        files[1]["file_id"].as_u64().unwrap(),
    );
    let reply = client.delete(&format!("/jobs/{id}/files/{f1}")).unwrap();
    assert_eq!(reply.json(), json!("CANCELED"));
    assert_eq!(
        client.get(&format!("/jobs/{id}/job_state")).unwrap().json(),
        "SUBMITTED"
    );
    let reply = client
        .delete(&format!("/jobs/{id}/files/{f1},{f2},999999"))
        .unwrap();
    assert_eq!(
        reply.json(),
        json!(["CANCELED", "CANCELED", "File does not belong to the job"])
    );
    assert_eq!(
        client.get(&format!("/jobs/{id}/job_state")).unwrap().json(),
        "CANCELED"
    );
}

#[test]
fn cancel_all_and_force_start_are_for_root_and_admins() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    let client = delegated(&server, pki, "rc_user.pem", RC_USER_DN);
    let id = submit_ok(
        &client,
        &one_file("mock://a.example.org/z", "mock://b.example.org/z"),
    );
    let file_id = client.get(&format!("/jobs/{id}/files")).unwrap().json()[0]["file_id"]
        .as_u64()
        .unwrap();
    let reply = client.delete("/jobs/all").unwrap();
    assert_eq!(reply.status, 403);
    assert_eq!(
        reply.json()["message"],
        "User does not have root privileges"
    );
    let reply = client
        .request(
            "POST",
            "/admin/force-start",
            &[("content-type", "application/json")],
            Bytes::from(format!("[{file_id}]")),
        )
        .unwrap();
    assert_eq!(reply.status, 403);

    let root = server.client(pki, Some(ROOT));
    let reply = root
        .request(
            "POST",
            "/admin/force-start",
            &[("content-type", "text/plain")],
            Bytes::from("[1]"),
        )
        .unwrap();
    assert_eq!(
        reply.json()["message"],
        "Only accepts 'Content-Type: application/json'"
    );
    let reply = root
        .request(
            "POST",
            "/admin/force-start",
            &[("content-type", "application/json")],
            Bytes::from(format!("[{file_id}, 999999]")),
        )
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json(),
        json!([{"file_id": 999999, "error": "File does not exist"}])
    );
    assert_eq!(
        client.get(&format!("/jobs/{id}/files")).unwrap().json()[0]["file_state"],
        "FORCE_START"
    );

    let reply = root.delete("/jobs/vo/somebody-else").unwrap();
    assert_eq!(
        reply.json(),
        json!({"affected_files": 0, "affected_dm": 0, "affected_jobs": 0})
    );
    let reply = root.delete("/jobs/all").unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json(),
        json!({"affected_files": 1, "affected_dm": 0, "affected_jobs": 1})
    );
    assert_eq!(
        client.get(&format!("/jobs/{id}/job_state")).unwrap().json(),
        "CANCELED"
    );
}

/// `kill -9` in the middle of a burst of concurrent submissions: every job that got a 200 is
/// there after restart, and the indexes are consistent.
#[test]
fn acknowledged_jobs_survive_kill_9() {
    let Some(pki) = pki() else { return };
    let data = tempfile::tempdir().unwrap();
    let spawn = || spawn_ftsd(pki, data.path());
    let (mut child, port) = spawn();
    let client = Client::new(port, &pki.path("ca.pem"), Some(pki.path("rc_user.pem")));
    let (status, body) = delegate(
        &client,
        pki,
        "rc_user.pem",
        &independent_delegation_id(RC_USER_DN, &[]),
    );
    assert_eq!(status, 201, "{body}");
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for t in 0..4 {
        let acknowledged = acknowledged.clone();
        let ca = pki.path("ca.pem");
        let cred = pki.path("rc_user.pem");
        workers.push(std::thread::spawn(move || {
            let client = Client::new(port, &ca, Some(cred));
            for i in 0..500 {
                let body = one_file(
                    &format!("mock://a.example.org/{t}/{i}"),
                    &format!("mock://b.example.org/{t}/{i}"),
                );
                match client.request(
                    "POST",
                    "/jobs",
                    &[("content-type", "application/json")],
                    Bytes::from(body.to_string()),
                ) {
                    Ok(r) if r.status == 200 => {
                        acknowledged
                            .lock()
                            .unwrap()
                            .push(r.json()["job_id"].as_str().unwrap().to_string());
                    }
                    _ => break, // the server died under us
                }
            }
        }));
    }
    // Let the burst run, then kill mid-flight.
    while acknowledged.lock().unwrap().len() < 100 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    for w in workers {
        w.join().unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    let (mut child, port) = spawn();
    let client = Client::new(port, &pki.path("ca.pem"), Some(pki.path("rc_user.pem")));
    for chunk in acknowledged.chunks(50) {
        let reply = client.get(&format!("/jobs/{}", chunk.join(","))).unwrap();
        assert_eq!(
            reply.status,
            200,
            "every acknowledged job is there: {}",
            reply.text()
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let store = ftsd::store::Redb::open(data.path()).unwrap();
    assert_eq!(store.check_indexes().unwrap(), Vec::<String>::new());
    eprintln!("{} acknowledged jobs survived kill -9", acknowledged.len());
}

// ---- interop with the official client ----

fn cli(bin: &std::path::Path, name: &str, port: u16, pki: &TestPki, args: &[&str]) -> String {
    fts_cli(bin, name, port, pki, CliAs::Proxy("proxy_rfc.pem"), args).ok()
}

#[test]
fn fts_cli_submit_status_list_cancel() {
    let Some(pki) = pki() else { return };
    let Some(bin) = fts3_client_bin() else { return };
    let server = TestServer::start(pki);
    // Submit delegates first (no previous delegation), then posts the job.
    let out = cli(
        &bin,
        "fts-rest-transfer-submit",
        server.port,
        pki,
        &[
            "mock://a.example.org/path?size=1000",
            "mock://b.example.org/path2?errno=2&size_post=1000&time=2",
        ],
    );
    let job_id = job_id_of(&out);
    let status = cli(
        &bin,
        "fts-rest-transfer-status",
        server.port,
        pki,
        &[&job_id],
    );
    assert!(status.contains("SUBMITTED"), "{status}");
    assert!(
        status.contains("/DC=org/DC=example/CN=Test User"),
        "{status}"
    );
    let list = cli(&bin, "fts-rest-transfer-list", server.port, pki, &[]);
    assert!(list.contains(&job_id), "{list}");

    // A two-file job: cancel one file, then the whole job.
    let bulk = pki.dir.join("bulk.json");
    std::fs::write(
        &bulk,
        json!({"files": [
        {"sources": ["mock://a.example.org/b1"], "destinations": ["mock://b.example.org/b1"]},
        {"sources": ["mock://a.example.org/b2"], "destinations": ["mock://b.example.org/b2"]}]})
        .to_string(),
    )
    .unwrap();
    let out = cli(
        &bin,
        "fts-rest-transfer-submit",
        server.port,
        pki,
        &["-f", bulk.to_str().unwrap()],
    );
    let job2 = job_id_of(&out);
    let user = server.client(pki, Some("proxy_rfc.pem"));
    let files = user.get(&format!("/jobs/{job2}/files")).unwrap().json();
    let f1 = files[0]["file_id"].as_u64().unwrap();
    let f2 = files[1]["file_id"].as_u64().unwrap();
    let out = cli(
        &bin,
        "fts-rest-transfer-cancel",
        server.port,
        pki,
        &[&format!("{job2}:{f1},{f2}")],
    );
    assert!(out.contains("CANCELED"), "{out}");
    let out = cli(
        &bin,
        "fts-rest-transfer-cancel",
        server.port,
        pki,
        &[&job_id],
    );
    assert!(out.contains("CANCELED"), "{out}");
    assert_eq!(
        user.get(&format!("/jobs/{job_id}/job_state"))
            .unwrap()
            .json(),
        "CANCELED"
    );
}
