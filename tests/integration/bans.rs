//! Bans and the configuration audit: `/ban/se`, `/ban/dn`, `/config/audit` (inputs, messages,
//! permissions), their effects on queued jobs (cancel with replica promotion, wait and unban,
//! user bans), the submission-time check, and interop with the official `fts-rest-ban`.
//!
//! Bans apply to the banning administrator's first VO (the reference's rule). The host
//! certificate is root (every level) and, without VOMS, its VO is its delegation id; the jobs a
//! root ban must touch are therefore submitted by root too, and jobs of other users (other VOs)
//! show that a ban stays within its VO.

use std::process::Command;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::common::{CliAs, fts_cli, fts3_client_bin};
use crate::common::{
    Client, RC_OTHER_DN, RC_USER_DN, Reply, TestPki, TestServer, pki, post, post_json,
};
use crate::delegation::delegate;
use crate::tls_auth::independent_delegation_id;

const S1: &str = "mock://s1.example.org";
const S2: &str = "mock://s2.example.org";
const D: &str = "mock://d.example.org";

/// The host certificate and key in one file: the root client.
fn root_credential(pki: &TestPki, name: &str) -> String {
    let file = format!("host_and_key_{name}.pem");
    std::fs::write(
        pki.path(&file),
        [
            std::fs::read(pki.path("hostcert.pem")).unwrap(),
            std::fs::read(pki.path("hostkey.pem")).unwrap(),
        ]
        .concat(),
    )
    .unwrap();
    file
}

/// A client for `credential` (with DN `dn`) with a delegated proxy, so it can submit.
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

/// The root client with a delegated proxy. The host DN repeats `DC`, which the rcgen-based
/// helper cannot write, so the server's request is signed with `openssl x509 -req`.
fn delegated_root(server: &TestServer, pki: &TestPki, name: &str) -> Client {
    let client = server.client(pki, Some(&root_credential(pki, name)));
    let dn = root_dn(pki);
    let dlg_id = independent_delegation_id(&dn, &[]);
    let csr = client
        .get(&format!("/delegation/{dlg_id}/request"))
        .unwrap();
    assert_eq!(csr.status, 200, "{}", csr.text());
    let csr_path = pki.path(&format!("root_{name}.csr"));
    let crt_path = pki.path(&format!("root_{name}_proxy.pem"));
    std::fs::write(&csr_path, csr.body.as_ref()).unwrap();
    let out = Command::new("openssl")
        .args(["x509", "-req", "-in"])
        .arg(&csr_path)
        .arg("-CA")
        .arg(pki.path("hostcert.pem"))
        .arg("-CAkey")
        .arg(pki.path("hostkey.pem"))
        .args(["-set_serial", "4242", "-days", "1", "-sha256", "-extfile"])
        .arg(pki.path("openssl.cnf"))
        .args([
            "-extensions",
            "v3_proxy",
            "-subj",
            &format!("{dn}/CN=4242"),
            "-out",
        ])
        .arg(&crt_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body = [
        std::fs::read(&crt_path).unwrap(),
        std::fs::read(pki.path("hostcert.pem")).unwrap(),
    ]
    .concat();
    let reply = client
        .put(&format!("/delegation/{dlg_id}/credential"), body)
        .unwrap();
    assert_eq!(reply.status, 201, "{}", reply.text());
    client
}

fn root_dn(pki: &TestPki) -> String {
    pki.openssl_subject("hostcert.pem")
}

/// Root's VO: its delegation id (no VOMS on the host certificate).
fn root_vo(pki: &TestPki) -> String {
    independent_delegation_id(&root_dn(pki), &[])
}

fn submit(client: &Client, body: &Value) -> Reply {
    post_json(client, "/jobs", body)
}

fn submit_ok(client: &Client, body: &Value) -> String {
    let reply = submit(client, body);
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["job_id"].as_str().unwrap().to_string()
}

fn one_file(src: &str, dst: &str, name: &str) -> Value {
    json!({"files": [{"sources": [format!("{src}/{name}")], "destinations": [format!("{dst}/{name}")]}]})
}

fn job_state(client: &Client, id: &str) -> String {
    client
        .get(&format!("/jobs/{id}/job_state"))
        .unwrap()
        .json()
        .as_str()
        .unwrap()
        .to_string()
}

fn file_states(client: &Client, id: &str) -> Vec<String> {
    client
        .get(&format!("/jobs/{id}/files"))
        .unwrap()
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["file_state"].as_str().unwrap().to_string())
        .collect()
}

fn sorted(value: Value) -> Vec<String> {
    let mut ids: Vec<String> = value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn audit(client: &Client) -> Vec<Value> {
    let reply = client.get("/config/audit").unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json().as_array().unwrap().clone()
}

fn assert_error(reply: Reply, status: u16, message: &str) {
    assert_eq!(reply.status, status, "{}", reply.text());
    assert_eq!(reply.json()["message"], message);
}

#[test]
fn every_setter_and_listing_needs_the_config_level() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    for client in [
        server.client(pki, Some("rc_user.pem")),
        server.client(pki, None),
    ] {
        let s = json!({"storage": S1});
        assert_error(
            post_json(&client, "/ban/se", &s),
            403,
            "Not enough permissions",
        );
        let d = json!({"user_dn": RC_OTHER_DN});
        assert_error(
            post_json(&client, "/ban/dn", &d),
            403,
            "Not enough permissions",
        );
        for (method, path) in [
            ("DELETE", "/ban/se?storage=mock://s1.example.org"),
            ("DELETE", "/ban/dn?user_dn=%2FO%3DExample%2FCN%3DRc%20Other"),
            ("GET", "/ban/se"),
            ("GET", "/ban/dn"),
            ("GET", "/config/audit"),
        ] {
            let reply = client.request(method, path, &[], Bytes::new()).unwrap();
            assert_error(reply, 403, "Not enough permissions");
        }
    }
    let root = server.client(pki, Some(&root_credential(pki, "perm")));
    assert!(audit(&root).is_empty(), "refusals write no audit entry");
    // The routes are in the table: OPTIONS lists their methods.
    let options = root
        .request("OPTIONS", "/ban/se", &[], Bytes::new())
        .unwrap();
    assert_eq!(
        options.header("allow"),
        Some("GET, POST, DELETE, HEAD, OPTIONS")
    );
}

#[test]
fn inputs_messages_listings_and_audit() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    let root = server.client(pki, Some(&root_credential(pki, "inputs")));
    let (dn, vo) = (root_dn(pki), root_vo(pki));

    let self_ban = json!({"user_dn": dn}).to_string();
    let cases: Vec<(&str, &str, &str, u16, &str)> = vec![
        (
            "/ban/se",
            "application/json",
            "{}",
            400,
            "Missing storage parameter",
        ),
        (
            "/ban/se",
            "application/json",
            "{\"storage\": ",
            400,
            "Malformed input",
        ),
        ("/ban/se", "application/json", "[1]", 400, "Malformed input"),
        (
            "/ban/se",
            "application/json",
            "{\"storage\": \"mock://x\", \"status\": \"later\"}",
            400,
            "status can only be cancel or wait",
        ),
        (
            "/ban/se",
            "application/json",
            "{\"storage\": \"mock://x\", \"allow_submit\": true}",
            400,
            "allow_submit and status = CANCEL can not be combined",
        ),
        (
            "/ban/se",
            "application/x-www-form-urlencoded",
            "status=cancel",
            400,
            "Missing storage parameter",
        ),
        // Not exactly application/json: the body is not read as JSON.
        (
            "/ban/se",
            "application/json; charset=utf-8",
            "{\"storage\": \"mock://x\"}",
            400,
            "Missing storage parameter",
        ),
        (
            "/ban/dn",
            "application/json",
            "{}",
            400,
            "Missing dn parameter",
        ),
        (
            "/ban/dn",
            "application/json",
            "{\"user_dn\": ",
            400,
            "Malformed input",
        ),
        (
            "/ban/dn",
            "application/json",
            &self_ban,
            409,
            "The user tried to ban (her|his)self",
        ),
    ];
    for (path, ct, body, status, message) in &cases {
        assert_error(post(&root, path, ct, body), *status, message);
    }
    assert_error(
        root.delete("/ban/se").unwrap(),
        400,
        "Missing storage parameter",
    );
    assert_error(
        root.delete("/ban/dn").unwrap(),
        400,
        "Missing user_dn parameter",
    );
    assert!(audit(&root).is_empty(), "refused requests write nothing");

    // Form values: "false" is a non-empty string, hence true (Python truthiness); timeout and
    // vo_name are accepted and ignored.
    let reply = post(
        &root,
        "/ban/se",
        "application/x-www-form-urlencoded",
        "storage=mock%3A%2F%2Fx.example.org&status=Wait&allow_submit=false&timeout=60&vo_name=atlas&message=maintenance",
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json(), json!([]));
    // Rucio's shape: upper-case status, numeric timeout.
    let reply = post_json(
        &root,
        "/ban/se",
        &json!({"storage": "mock://y.example.org", "message": "m", "status": "CANCEL", "timeout": 0}),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    // Query values work for POST too (werkzeug's request.values).
    let reply = post(
        &root,
        "/ban/se?storage=mock://z.example.org&status=WAIT",
        "text/plain",
        "",
    );
    assert_eq!(reply.status, 200, "{}", reply.text());

    let bans = root.get("/ban/se").unwrap().json();
    let bans = bans.as_array().unwrap();
    assert_eq!(bans.len(), 3);
    let x = bans
        .iter()
        .find(|b| b["se"] == "mock://x.example.org")
        .unwrap();
    assert_eq!(x["status"], "WAIT_AS");
    assert_eq!(x["vo"], vo.as_str());
    assert_eq!(x["admin_dn"], dn.as_str());
    assert_eq!(x["message"], "maintenance");
    assert_eq!(x["addition_time"].as_str().unwrap().len(), 19);
    let y = bans
        .iter()
        .find(|b| b["se"] == "mock://y.example.org")
        .unwrap();
    assert_eq!(y["status"], "CANCEL");
    let z = bans
        .iter()
        .find(|b| b["se"] == "mock://z.example.org")
        .unwrap();
    assert_eq!(z["status"], "WAIT");

    // Rucio unbans with an unencoded URL in the query and expects 204.
    let reply = root.delete("/ban/se?storage=mock://x.example.org").unwrap();
    assert_eq!(reply.status, 204);
    assert_eq!(
        root.get("/ban/se")
            .unwrap()
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let reply = post_json(
        &root,
        "/ban/dn",
        &json!({"user_dn": RC_OTHER_DN, "message": "go away"}),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json(), json!([]));
    let dns = root.get("/ban/dn").unwrap().json();
    assert_eq!(dns.as_array().unwrap().len(), 1);
    assert_eq!(dns[0]["dn"], RC_OTHER_DN);
    assert_eq!(dns[0]["message"], "go away");
    assert_eq!(dns[0]["admin_dn"], dn.as_str());
    assert_eq!(dns[0]["status"], Value::Null);
    let encoded: String = form_urlencoded::byte_serialize(RC_OTHER_DN.as_bytes()).collect();
    assert_eq!(
        root.delete(&format!("/ban/dn?user_dn={encoded}"))
            .unwrap()
            .status,
        204
    );
    assert_eq!(
        root.delete("/ban/dn?user_dn=%2FCN%3Dnobody")
            .unwrap()
            .status,
        204
    );
    assert_eq!(root.get("/ban/dn").unwrap().json(), json!([]));

    let entries = audit(&root);
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        vec![
            "unban-dn", "unban-dn", "ban-dn", "unban-se", "ban-se", "ban-se", "ban-se"
        ],
        "newest first"
    );
    assert_eq!(
        entries[6]["config"],
        format!("Storage mock://x.example.org for {vo} banned (WAIT_AS)")
    );
    assert_eq!(
        entries[5]["config"],
        format!("Storage mock://y.example.org for {vo} banned (CANCEL)")
    );
    assert_eq!(entries[0]["dn"], dn.as_str());
    assert_eq!(entries[0]["datetime"].as_str().unwrap().len(), 19);
    assert!(entries.iter().all(|e| e.as_object().unwrap().len() == 4));
}

#[test]
fn cancel_ban_promotes_a_replica_cancels_jobs_and_refuses_submissions() {
    let Some(pki) = pki() else { return };
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(pki, data.path(), |_| {});
    let root = delegated_root(&server, pki, "cancel");
    let user = delegated(&server, pki, "rc_user.pem", RC_USER_DN);

    let replicas = submit_ok(
        &root,
        &json!({"files": [{"sources": [format!("{S1}/r"), format!("{S2}/r")],
                           "destinations": [format!("{D}/r")], "selection_strategy": "orderly"}]}),
    );
    assert_eq!(file_states(&root, &replicas), vec!["SUBMITTED", "NOT_USED"]);
    let plain = submit_ok(&root, &one_file(S1, D, "p"));
    let other_vo = submit_ok(&user, &one_file(S1, D, "u"));

    let reply = post_json(&root, "/ban/se", &json!({"storage": S1}));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let mut expected = vec![replicas.clone(), plain.clone()];
    expected.sort();
    assert_eq!(sorted(reply.json()), expected);

    let files = root.get(&format!("/jobs/{replicas}/files")).unwrap().json();
    assert_eq!(files[0]["file_state"], "CANCELED");
    assert_eq!(files[0]["reason"], "Storage banned");
    assert!(files[0]["finish_time"].is_string());
    assert_eq!(
        files[1]["file_state"], "SUBMITTED",
        "the sibling replica is promoted"
    );
    assert_eq!(job_state(&root, &replicas), "SUBMITTED");
    assert_eq!(job_state(&root, &plain), "CANCELED");
    let job = root.get(&format!("/jobs/{plain}")).unwrap().json();
    assert_eq!(job["reason"], Value::Null);
    assert!(job["job_finished"].is_string());
    assert_eq!(
        job_state(&user, &other_vo),
        "SUBMITTED",
        "other VOs are untouched"
    );

    // Banning the other replica's storage leaves the job without live files.
    let reply = post_json(
        &root,
        "/ban/se",
        &json!({"storage": S2, "status": "cancel"}),
    );
    assert_eq!(sorted(reply.json()), vec![replicas.clone()]);
    assert_eq!(file_states(&root, &replicas), vec!["CANCELED", "CANCELED"]);
    assert_eq!(job_state(&root, &replicas), "CANCELED");

    // Submissions: refused on the source first; other VOs may still use the storage.
    assert_error(
        submit(&root, &one_file(S2, S1, "n")),
        403,
        &format!("{S2} is banned"),
    );
    assert_error(
        submit(&root, &one_file("mock://free.example.org", S1, "n")),
        403,
        &format!("{S1} is banned"),
    );
    submit_ok(&user, &one_file(S1, D, "n"));
    submit_ok(&root, &one_file("mock://free.example.org", D, "n"));

    server.stop().unwrap();
    let store = ftsd::store::Redb::open(data.path()).unwrap();
    assert_eq!(store.check_indexes().unwrap(), Vec::<String>::new());
    assert_eq!(store.audit_entries(10).unwrap().len(), 2);
    assert_eq!(
        store.se_ban_status(S1, &root_vo(pki)).unwrap(),
        Some(ftsd::model::ban::BanStatus::Cancel),
        "the ban survives a restart where the engine will read it"
    );
}

#[test]
fn wait_ban_holds_queued_work_and_unban_restores_it() {
    let Some(pki) = pki() else { return };
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(pki, data.path(), |_| {});
    let root = delegated_root(&server, pki, "wait");

    let queued = submit_ok(&root, &one_file(S1, D, "q"));
    let mut staging_body = one_file(S1, D, "s");
    staging_body["params"] = json!({"bring_online": 60});
    let staging = submit_ok(&root, &staging_body);
    assert_eq!(file_states(&root, &staging), vec!["STAGING"]);
    let elsewhere = submit_ok(&root, &one_file(S2, D, "e"));

    let reply = post_json(&root, "/ban/se", &json!({"storage": S1, "status": "WAIT"}));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let mut expected = vec![queued.clone(), staging.clone()];
    expected.sort();
    assert_eq!(sorted(reply.json()), expected);
    assert_eq!(file_states(&root, &queued), vec!["ON_HOLD"]);
    assert_eq!(file_states(&root, &staging), vec!["ON_HOLD_STAGING"]);
    assert_eq!(job_state(&root, &queued), "SUBMITTED");
    assert_eq!(file_states(&root, &elsewhere), vec!["SUBMITTED"]);
    assert_error(
        submit(&root, &one_file(D, S1, "w")),
        403,
        &format!("{S1} is banned"),
    );

    // Wait with allow_submit: new work is accepted, on hold.
    let reply = post_json(
        &root,
        "/ban/se",
        &json!({"storage": S1, "status": "wait", "allow_submit": true}),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let held = submit_ok(&root, &one_file(D, S1, "h"));
    assert_eq!(file_states(&root, &held), vec!["ON_HOLD"]);

    let reply = root.delete(&format!("/ban/se?storage={S1}")).unwrap();
    assert_eq!(reply.status, 204);
    assert_eq!(file_states(&root, &queued), vec!["SUBMITTED"]);
    assert_eq!(file_states(&root, &staging), vec!["STAGING"]);
    assert_eq!(file_states(&root, &held), vec!["SUBMITTED"]);
    assert!(
        root.get("/ban/se")
            .unwrap()
            .json()
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(audit(&root).len(), 3);

    server.stop().unwrap();
    let store = ftsd::store::Redb::open(data.path()).unwrap();
    assert_eq!(store.check_indexes().unwrap(), Vec::<String>::new());
    assert!(store.se_bans().unwrap().is_empty());
}

#[test]
fn dn_ban_cancels_the_users_jobs_and_locks_them_out() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    let root = server.client(pki, Some(&root_credential(pki, "dn")));
    let user = delegated(&server, pki, "rc_user.pem", RC_USER_DN);
    let active = submit_ok(&user, &one_file(S1, D, "a"));
    let done = submit_ok(&user, &one_file(S1, D, "b"));
    assert_eq!(user.delete(&format!("/jobs/{done}")).unwrap().status, 200);

    let reply = post_json(&root, "/ban/dn", &json!({"user_dn": RC_USER_DN}));
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json(), json!([active.clone()]));
    let job = root
        .get(&format!("/jobs/{active}?files=file_state,reason"))
        .unwrap()
        .json();
    assert_eq!(job["job_state"], "CANCELED");
    assert_eq!(job["reason"], "User banned");
    assert_eq!(job["files"][0]["file_state"], "CANCELED");
    assert_eq!(job["files"][0]["reason"], "User banned");
    let job = root.get(&format!("/jobs/{done}")).unwrap().json();
    assert_eq!(
        job["reason"], "Job canceled by the user",
        "finished jobs keep their reason"
    );

    for (method, path) in [
        ("GET", "/whoami"),
        ("GET", "/jobs"),
        ("POST", "/jobs"),
        ("GET", "/ban/se"),
    ] {
        let reply = user
            .request(
                method,
                path,
                &[("content-type", "application/json")],
                Bytes::from(one_file(S1, D, "c").to_string()),
            )
            .unwrap();
        assert_error(reply, 403, "The user has been banned");
    }
    assert_eq!(
        server
            .client(pki, Some("rc_other.pem"))
            .get("/whoami")
            .unwrap()
            .status,
        200
    );

    let encoded: String = form_urlencoded::byte_serialize(RC_USER_DN.as_bytes()).collect();
    assert_eq!(
        root.delete(&format!("/ban/dn?user_dn={encoded}"))
            .unwrap()
            .status,
        204
    );
    assert_eq!(user.get("/whoami").unwrap().status, 200);
}

// ---- interop with the official client ----

fn ban_cli(bin: &std::path::Path, port: u16, pki: &TestPki, args: &[&str]) -> String {
    fts_cli(bin, "fts-rest-ban", port, pki, CliAs::Host, args).ok()
}

#[test]
fn fts_rest_ban_storage_and_user() {
    let Some(pki) = pki() else { return };
    let Some(bin) = fts3_client_bin() else { return };
    let server = TestServer::start(pki);
    let root = delegated_root(&server, pki, "cli");
    let user = delegated(&server, pki, "rc_user.pem", RC_USER_DN);
    let canceled = submit_ok(&root, &one_file(S1, D, "c"));
    let waiting = submit_ok(&root, &one_file(S2, D, "w"));
    let users = submit_ok(&user, &one_file(D, S2, "u"));

    let out = ban_cli(&bin, server.port, pki, &["--storage", S1]);
    assert!(out.contains(&canceled), "{out}");
    assert_eq!(job_state(&root, &canceled), "CANCELED");
    assert_eq!(file_states(&root, &waiting), vec!["SUBMITTED"]);

    let out = ban_cli(
        &bin,
        server.port,
        pki,
        &[
            "--storage",
            S2,
            "--status",
            "wait",
            "--timeout",
            "60",
            "--allow-submit",
        ],
    );
    assert!(out.contains(&waiting), "{out}");
    assert_eq!(file_states(&root, &waiting), vec!["ON_HOLD"]);
    let bans = root.get("/ban/se").unwrap().json();
    let s2 = bans
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["se"] == S2)
        .unwrap();
    assert_eq!(s2["status"], "WAIT_AS");
    assert_eq!(
        file_states(&user, &users),
        vec!["SUBMITTED"],
        "other VO untouched"
    );

    ban_cli(&bin, server.port, pki, &["--storage", S2, "--unban"]);
    assert_eq!(file_states(&root, &waiting), vec!["SUBMITTED"]);

    let out = ban_cli(&bin, server.port, pki, &["--user", RC_USER_DN]);
    assert!(out.contains(&users), "{out}");
    assert_eq!(job_state(&root, &users), "CANCELED");
    assert_error(
        user.get("/whoami").unwrap(),
        403,
        "The user has been banned",
    );
    ban_cli(&bin, server.port, pki, &["--user", RC_USER_DN, "--unban"]);
    assert_eq!(user.get("/whoami").unwrap().status, 200);

    let actions: Vec<String> = audit(&root)
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        actions,
        vec!["unban-dn", "ban-dn", "unban-se", "ban-se", "ban-se"]
    );
}
