//! The optimizer endpoints (`/optimizer`, `/optimizer/evolution`, `/optimizer/current`), the
//! pair status (`/snapshot`, `/optimizer/snapshot`) and `/status/hosts`: inputs, messages,
//! permissions, filters, and interop with the official `fts-rest-server-status`.
//!
//! Files reach ACTIVE only through the transfer engine; the host status test therefore stops
//! the server, moves a file to ACTIVE through the store, and starts it again on the same data.

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
const D1: &str = "mock://d1.example.org";
const D2: &str = "mock://d2.example.org";

fn get_json(client: &Client, path: &str) -> Value {
    let reply = client.get(path).unwrap();
    assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    reply.json()
}

fn assert_error(reply: Reply, status: u16, message: &str) {
    assert_eq!(reply.status, status, "{}", reply.text());
    assert_eq!(reply.json()["message"], message);
}

/// The host certificate and key in one file: the root client (every level).
fn root(server: &TestServer, pki: &TestPki, name: &str) -> Client {
    let file = format!("host_and_key_optimizer_{name}.pem");
    std::fs::write(
        pki.path(&file),
        [
            std::fs::read(pki.path("hostcert.pem")).unwrap(),
            std::fs::read(pki.path("hostkey.pem")).unwrap(),
        ]
        .concat(),
    )
    .unwrap();
    server.client(pki, Some(&file))
}

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

fn submit_ok(client: &Client, src: &str, dst: &str, name: &str) -> String {
    let body = json!({"files": [{"sources": [format!("{src}/{name}")],
                                 "destinations": [format!("{dst}/{name}")]}]});
    let reply = post_json(client, "/jobs", &body);
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["job_id"].as_str().unwrap().to_string()
}

fn set(client: &Client, body: Value) -> Reply {
    post_json(client, "/optimizer/current", &body)
}

#[test]
fn readers_are_open_and_setting_needs_the_config_level() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    let anonymous = server.client(pki, None);
    let user = server.client(pki, Some("rc_user.pem"));
    let root = root(&server, pki, "levels");

    assert_eq!(get_json(&anonymous, "/optimizer"), json!(true));
    assert_eq!(get_json(&anonymous, "/optimizer/current"), json!([]));
    assert_eq!(get_json(&anonymous, "/optimizer/evolution"), json!([]));
    assert_eq!(get_json(&anonymous, "/snapshot"), json!([]));
    assert_eq!(get_json(&anonymous, "/optimizer/snapshot"), json!([]));

    // Decision: unlike the reference, writing the optimizer needs `config`.
    let body = json!({"source_se": S1, "dest_se": D1, "active": 0});
    assert_error(set(&anonymous, body.clone()), 403, "Not enough permissions");
    assert_error(set(&user, body.clone()), 403, "Not enough permissions");
    assert_eq!(set(&root, body).status, 200);
    assert_eq!(get_json(&user, "/optimizer/current")[0]["active"], 0);

    let reply = anonymous
        .request("OPTIONS", "/optimizer/current", &[], Bytes::new())
        .unwrap();
    assert_eq!(reply.header("allow"), Some("GET, POST, HEAD, OPTIONS"));

    // A banned DN is refused here too.
    let reply = post_json(&root, "/ban/dn", &json!({"user_dn": RC_USER_DN}));
    assert_eq!(reply.status, 200, "{}", reply.text());
    for path in ["/optimizer", "/optimizer/current", "/snapshot"] {
        assert_error(user.get(path).unwrap(), 403, "The user has been banned");
    }
}

#[test]
fn set_current_validates_like_the_reference() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    let root = root(&server, pki, "messages");
    let link = |extra: Value| {
        let mut body = json!({"source_se": S1, "dest_se": D1});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    for body in [
        json!({"dest_se": D1}),
        json!({"source_se": S1}),
        json!({"source_se": "", "dest_se": D1}),
        json!({"destination": "only-dest", "nostreams": 16}),
    ] {
        assert_error(set(&root, body), 400, "Missing source and/or destination");
    }
    let int_err = |v: &str| format!("invalid literal for int() with base 10: '{v}'");
    let float_err = |v: &str| format!("could not convert string to float: '{v}'");
    let cases: Vec<(Value, String)> = vec![
        (json!({"active": "x"}), format!("Active must be an integer ({})", int_err("x"))),
        (json!({"active": -1}), "Active must be positive (-1)".into()),
        (json!({"nostreams": "1.5"}), format!("Nostreams must be an integer ({})", int_err("1.5"))),
        (json!({"nostreams": -16}), "Nostreams must be positive (-16)".into()),
        (json!({"diff": "d"}), format!("Diff must be an integer ({})", int_err("d"))),
        (json!({"diff": -2}), "Diff must be positive (-2)".into()),
        (json!({"actual_active": [1]}), "Actual_active must be an integer (int() argument must be a string, a bytes-like object or a real number, not 'list')".into()),
        (json!({"actual_active": -3}), "Actual_active must be positive (-3)".into()),
        (json!({"queue_size": "q"}), format!("Queue_size must be an integer ({})", int_err("q"))),
        (json!({"queue_size": -4}), "Queue_size must be positive (-4)".into()),
        (json!({"ema": "e"}), format!("Ema must be a float ({})", float_err("e"))),
        (json!({"ema": -1}), "Ema must be positive (-1.0)".into()),
        (json!({"throughput": null}), "Throughput must be a float (float() argument must be a string or a real number, not 'NoneType')".into()),
        (json!({"throughput": -0.5}), "Throughput must be positive (-0.5)".into()),
        (json!({"success": "s"}), format!("Success must be a float ({})", float_err("s"))),
        (json!({"success": "-2.5"}), "Success must be positive (-2.5)".into()),
        (json!({"filesize_avg": "f"}), format!("Filesize_avg must be a float ({})", float_err("f"))),
        (json!({"filesize_avg": -1e20}), "Filesize_avg must be positive (-1e+20)".into()),
        (json!({"filesize_stddev": "g"}), format!("Filesize_stddev must be a float ({})", float_err("g"))),
        (json!({"filesize_stddev": -7}), "Filesize_stddev must be positive (-7.0)".into()),
        // The first bad field in the reference's order is reported.
        (json!({"ema": "e", "active": -1}), "Active must be positive (-1)".into()),
    ];
    for (extra, message) in cases {
        assert_error(set(&root, link(extra)), 400, &message);
    }
    assert_error(
        post(&root, "/optimizer/current", "text/plain", "{}"),
        400,
        "Expecting application/json or application/x-www-form-urlencoded",
    );
    assert_eq!(
        get_json(&root, "/optimizer/current"),
        json!([]),
        "nothing stored"
    );

    // Defaults, and form input with strings.
    let reply = set(&root, link(json!({})));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let [evolution, current] =
        <[Value; 2]>::try_from(reply.json().as_array().unwrap().clone()).unwrap();
    assert_eq!(current["active"], 2);
    assert_eq!(current["nostreams"], 1);
    assert_eq!(current["ema"], 0.0);
    assert_eq!(evolution["diff"], 1);
    assert_eq!(evolution["actual_active"], 1);
    assert_eq!(evolution["queue_size"], 1);
    assert_eq!(evolution["rationale"], Value::Null);
    assert_eq!(evolution["datetime"], current["datetime"]);
    let reply = post(
        &root,
        "/optimizer/current",
        "application/x-www-form-urlencoded",
        "source_se=mock%3A%2F%2Fs1.example.org&dest_se=mock%3A%2F%2Fd1.example.org&active=4096&nostreams=16&ema=5&rationale=by+hand",
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let current = &get_json(&root, "/optimizer/current")[0];
    assert_eq!(
        (current["active"].clone(), current["nostreams"].clone()),
        (json!(4096), json!(16))
    );
    assert_eq!(current["ema"], 5.0);
    let evolution = get_json(&root, "/optimizer/evolution");
    assert_eq!(evolution.as_array().unwrap().len(), 2);
    assert_eq!(evolution[0]["rationale"], "by hand");
}

#[test]
fn current_and_evolution_filter_by_link_newest_first() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    let root = root(&server, pki, "filters");
    let links = [(S1, D1), (S1, D2), (S2, D1)];
    for round in 0..3 {
        for (i, (s, d)) in links.iter().enumerate() {
            let active = round * 10 + i as i64;
            assert_eq!(
                set(
                    &root,
                    json!({"source_se": s, "dest_se": d, "active": active})
                )
                .status,
                200
            );
        }
    }
    let field = |v: &Value, k: &str| -> Vec<Value> {
        v.as_array().unwrap().iter().map(|e| e[k].clone()).collect()
    };
    let q = |s: &str, d: &str| {
        let enc = |x: &str| form_urlencoded::byte_serialize(x.as_bytes()).collect::<String>();
        format!("source_se={}&dest_se={}", enc(s), enc(d))
    };

    let all = get_json(&root, "/optimizer/evolution");
    assert_eq!(
        field(&all, "active"),
        [22, 21, 20, 12, 11, 10, 2, 1, 0].map(|a| json!(a))
    );
    let one = get_json(&root, &format!("/optimizer/evolution?{}", q(S1, D2)));
    assert_eq!(field(&one, "active"), [21, 11, 1].map(|a| json!(a)));
    let src = get_json(&root, &format!("/optimizer/evolution?{}", q(S1, "")));
    assert_eq!(
        field(&src, "active"),
        [21, 20, 11, 10, 1, 0].map(|a| json!(a))
    );
    let dst = get_json(&root, &format!("/optimizer/evolution?{}", q("", D1)));
    assert_eq!(
        field(&dst, "active"),
        [22, 20, 12, 10, 2, 0].map(|a| json!(a))
    );
    for key in [
        "datetime",
        "source_se",
        "dest_se",
        "active",
        "throughput",
        "success",
        "rationale",
        "diff",
        "actual_active",
        "queue_size",
        "ema",
        "filesize_avg",
        "filesize_stddev",
    ] {
        assert!(
            all[0].get(key).is_some(),
            "evolution lacks {key}: {}",
            all[0]
        );
    }

    let current = get_json(&root, "/optimizer/current");
    assert_eq!(field(&current, "active"), [22, 21, 20].map(|a| json!(a)));
    let mut keys: Vec<&String> = current[0].as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "active",
            "datetime",
            "dest_se",
            "ema",
            "nostreams",
            "source_se"
        ]
    );
    let dst = get_json(&root, &format!("/optimizer/current?{}", q("", D1)));
    assert_eq!(field(&dst, "active"), [22, 20].map(|a| json!(a)));
    let one = get_json(&root, &format!("/optimizer/current?{}", q(S2, D1)));
    assert_eq!(field(&one, "active"), [json!(22)]);

    // More than 50 decisions: the newest 50.
    for i in 0..55 {
        assert_eq!(
            set(
                &root,
                json!({"source_se": S2, "dest_se": D2, "active": 100 + i})
            )
            .status,
            200
        );
    }
    let all = get_json(&root, "/optimizer/evolution");
    assert_eq!(all.as_array().unwrap().len(), 50);
    assert_eq!(all[0]["active"], 154);
    assert_eq!(all[49]["active"], 105);
}

#[test]
fn snapshot_lists_pairs_with_jobs_under_every_filter_combination() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    let user = delegated(&server, pki, "rc_user.pem", RC_USER_DN);
    let other = delegated(&server, pki, "rc_other.pem", RC_OTHER_DN);
    let user_vo = independent_delegation_id(RC_USER_DN, &[]);
    let other_vo = independent_delegation_id(RC_OTHER_DN, &[]);
    submit_ok(&user, S1, D1, "a");
    submit_ok(&user, S1, D1, "b");
    submit_ok(&user, S1, D2, "c");
    submit_ok(&user, S2, D1, "d");
    submit_ok(&other, S1, D1, "e");
    let root = root(&server, pki, "snapshot");
    assert_eq!(
        set(&root, json!({"source_se": S1, "dest_se": D1, "active": 7})).status,
        200
    );

    // (vo, source, destination) → submitted files.
    let pairs = [
        (user_vo.as_str(), S1, D1, 2),
        (user_vo.as_str(), S1, D2, 1),
        (user_vo.as_str(), S2, D1, 1),
        (other_vo.as_str(), S1, D1, 1),
    ];
    let enc = |x: &str| form_urlencoded::byte_serialize(x.as_bytes()).collect::<String>();
    for mask in 0..8u8 {
        let vo = (mask & 1 != 0).then_some(user_vo.as_str());
        let src = (mask & 2 != 0).then_some(S1);
        let dst = (mask & 4 != 0).then_some(D1);
        let mut query = Vec::new();
        if let Some(v) = vo {
            query.push(format!("vo_name={}", enc(v)));
        }
        if let Some(s) = src {
            query.push(format!("source_se={}", enc(s)));
        }
        if let Some(d) = dst {
            query.push(format!("dest_se={}", enc(d)));
        } else {
            query.push("dest_se=".into()); // empty means no filter
        }
        let path = if mask % 2 == 0 {
            "/snapshot"
        } else {
            "/optimizer/snapshot"
        };
        let got = get_json(&user, &format!("{path}?{}", query.join("&")));
        let mut want: Vec<(String, String, String, u64)> = pairs
            .iter()
            .filter(|(v, s, d, _)| {
                vo.is_none_or(|x| x == *v)
                    && src.is_none_or(|x| x == *s)
                    && dst.is_none_or(|x| x == *d)
            })
            .map(|(v, s, d, n)| (v.to_string(), s.to_string(), d.to_string(), *n))
            .collect();
        want.sort();
        let mut have: Vec<(String, String, String, u64)> = got
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["vo_name"].as_str().unwrap().to_string(),
                    p["source_se"].as_str().unwrap().to_string(),
                    p["dest_se"].as_str().unwrap().to_string(),
                    p["submitted"].as_u64().unwrap(),
                )
            })
            .collect();
        have.sort();
        assert_eq!(have, want, "filters vo={vo:?} source={src:?} dest={dst:?}");
        for p in got.as_array().unwrap() {
            assert_eq!(p["active"], 0);
            assert_eq!(p["finished"], 0);
            assert_eq!(p["failed"], 0);
            assert_eq!(p["success_ratio"], Value::Null);
            assert_eq!(
                p["avg_throughput"],
                json!({"60": null, "30": null, "15": null, "5": null})
            );
            assert_eq!(p["avg_duration"], Value::Null);
            assert_eq!(p["avg_queued"], Value::Null);
            assert_eq!(p["frequent_error"], Value::Null);
            assert_eq!(p["limits"], Value::Null);
            let max_active = if p["source_se"] == S1 && p["dest_se"] == D1 {
                json!(7)
            } else {
                Value::Null
            };
            assert_eq!(p["max_active"], max_active, "{p}");
        }
    }
    let none = get_json(&user, &format!("/snapshot?source_se={}", enc(D2)));
    assert_eq!(none, json!([]));
}

/// Stop the server, put the first file of `job` in `state` on `host`, start it again.
fn move_file(
    server: TestServer,
    pki: &TestPki,
    data: &std::path::Path,
    job: &str,
    state: ftsd::model::job::FileState,
    host: &str,
) -> TestServer {
    server.stop().unwrap();
    {
        let store = ftsd::store::Redb::open(data).unwrap();
        store
            .update_jobs(&[job.to_string()], |_, files| {
                files[0].file_state = state;
                files[0].transfer_host = Some(host.to_string());
                files[0].staging_host = Some(host.to_string());
            })
            .unwrap();
        assert_eq!(store.check_indexes().unwrap(), Vec::<String>::new());
    }
    TestServer::start_in(pki, data, |_| {})
}

#[test]
fn status_hosts_needs_a_certificate_and_config_and_counts_running_work() {
    let Some(pki) = pki() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = TestServer::start_in(pki, &data, |_| {});
    let anonymous = server.client(pki, None);
    let user = delegated(&server, pki, "rc_user.pem", RC_USER_DN);
    assert_error(
        anonymous.get("/status/hosts").unwrap(),
        403,
        "Certificate required",
    );
    assert_error(
        user.get("/status/hosts").unwrap(),
        403,
        "Not enough permissions",
    );
    assert_eq!(
        get_json(&root(&server, pki, "hosts"), "/status/hosts"),
        json!({})
    );

    let running = submit_ok(&user, S1, D1, "run");
    let staging = submit_ok(&user, S1, D1, "stage");
    let server = move_file(
        server,
        pki,
        &data,
        &running,
        ftsd::model::job::FileState::Active,
        "fts-a",
    );
    let server = move_file(
        server,
        pki,
        &data,
        &staging,
        ftsd::model::job::FileState::Started,
        "fts-b",
    );
    let root = root(&server, pki, "hosts2");
    assert_eq!(
        get_json(&root, "/status/hosts"),
        json!({"fts-a": {"active": 1}, "fts-b": {"staging": 1}})
    );
    let pair = &get_json(
        &root,
        &format!(
            "/snapshot?dest_se={}",
            form_urlencoded::byte_serialize(D1.as_bytes()).collect::<String>()
        ),
    )[0];
    assert_eq!(
        (pair["active"].clone(), pair["submitted"].clone()),
        (json!(1), json!(0))
    );

    if let Some(bin) = fts3_client_bin() {
        let (code, out) = server_status(&bin, server.port, pki, &["--is-active"]);
        assert_eq!(code, 3, "active and staging: {out}");
        let (code, out) = server_status(&bin, server.port, pki, &["-H", "fts-a", "--is-active"]);
        assert_eq!(code, 1, "{out}");
        let (code, out) = server_status(&bin, server.port, pki, &[]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("fts-a") && out.contains("active: 1"), "{out}");
        assert!(out.contains("fts-b") && out.contains("staging: 1"), "{out}");
    }
}

// ---- interop with the official client ----

/// Run `fts-rest-server-status` as root; its exit code and output.
fn server_status(bin: &std::path::Path, port: u16, pki: &TestPki, args: &[&str]) -> (i32, String) {
    let run = fts_cli(bin, "fts-rest-server-status", port, pki, CliAs::Host, args);
    (run.code, run.text())
}

#[test]
fn fts_rest_server_status_reads_an_idle_server() {
    let Some(pki) = pki() else { return };
    let Some(bin) = fts3_client_bin() else { return };
    let server = TestServer::start(pki);
    let (code, out) = server_status(&bin, server.port, pki, &["--is-active"]);
    assert_eq!(code, 0, "{out}");
}

/// Evolution entries of a link, oldest first.
fn evolution_of(client: &Client, src: &str, dst: &str) -> Vec<Value> {
    let enc = |x: &str| form_urlencoded::byte_serialize(x.as_bytes()).collect::<String>();
    let path = format!(
        "/optimizer/evolution?source_se={}&dest_se={}",
        enc(src),
        enc(dst)
    );
    let mut rows = get_json(client, &path).as_array().unwrap().clone();
    rows.reverse();
    rows
}

fn submit_mock_workload(client: &Client, files: usize, seconds: u32, tag: &str) {
    let files: Vec<Value> = (0..files)
        .map(|i| {
            json!({"sources": [format!("{S1}/{tag}{i}?size=1048576")],
                   "destinations": [format!("{D1}/{tag}{i}?size_post=1048576&time={seconds}")]})
        })
        .collect();
    let reply = post_json(client, "/jobs", &json!({"files": files}));
    assert_eq!(reply.status, 200, "{}", reply.text());
}

/// Wait until the link has at least `n` decisions.
fn wait_evolution(client: &Client, n: usize) -> Vec<Value> {
    let start = std::time::Instant::now();
    loop {
        let rows = evolution_of(client, S1, D1);
        if rows.len() >= n {
            return rows;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "only {} decisions: {rows:#?}",
            rows.len()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn evolution_records_the_decisions_of_a_running_workload_and_a_restart_continues() {
    let Some(pki) = pki() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tweak = |c: &mut ftsd::config::Config| {
        c.engine.enabled = true;
        c.engine.scheduling_interval = 1;
        c.engine.optimizer_interval = 1;
    };
    let server = TestServer::start_in(pki, &data, tweak);
    let user = delegated(&server, pki, "rc_user.pem", RC_USER_DN);
    submit_mock_workload(&user, 20, 6, "a");
    let rows = wait_evolution(&user, 3);
    // The first decision has no history: the shipped * -> * range (2..130) starts halfway.
    assert_eq!(rows[0]["rationale"], "No information. Start halfway.");
    assert_eq!(rows[0]["active"], 66);
    assert_eq!(rows[0]["diff"], 66);
    assert!(
        rows[1..].iter().all(|r| !r["rationale"]
            .as_str()
            .unwrap()
            .starts_with("No information")),
        "{rows:#?}"
    );
    assert!(
        rows.iter().any(|r| r["actual_active"].as_i64() > Some(0)),
        "{rows:#?}"
    );
    server.stop().unwrap();

    // A restart continues from the stored state instead of starting over.
    let server = TestServer::start_in(pki, &data, tweak);
    let user = delegated(&server, pki, "rc_user.pem", RC_USER_DN);
    let before = evolution_of(&user, S1, D1).len();
    submit_mock_workload(&user, 5, 4, "b");
    let rows = wait_evolution(&user, before + 1);
    let after = &rows[before..];
    assert!(
        after.iter().all(|r| !r["rationale"]
            .as_str()
            .unwrap()
            .starts_with("No information")),
        "{after:#?}"
    );
}
