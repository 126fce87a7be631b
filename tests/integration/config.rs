//! Configuration: `/config` (hosts, drain), `/config/global`, `/config/links`, `/config/shares`,
//! `/config/se`, `/config/activity_shares`, `/config/authorize`: inputs, the reference's
//! messages and statuses, effects, permissions, and audit counts (a refused request writes no
//! audit entry). Cases follow the reference's `test_config_*.py` and `test_drain.py`.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::common::{Client, ROOT, Reply, TestServer, pki, post_json};

fn get(client: &Client, path: &str) -> Value {
    let reply = client.get(path).unwrap();
    assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    reply.json()
}

fn audit_count(client: &Client) -> usize {
    get(client, "/config/audit").as_array().unwrap().len()
}

fn last_action(client: &Client) -> String {
    get(client, "/config/audit")[0]["action"]
        .as_str()
        .unwrap()
        .to_string()
}

fn assert_error(reply: Reply, status: u16, message: &str) {
    assert_eq!(reply.status, status, "{}", reply.text());
    assert_eq!(reply.json()["message"], message, "{}", reply.text());
}

fn assert_status(reply: Reply, status: u16) -> Reply {
    assert_eq!(reply.status, status, "{}", reply.text());
    reply
}

/// Every setter, with a valid input: (method, path, JSON body).
fn setters() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        (
            "POST",
            "/config/drain",
            json!({"hostname": "h", "drain": true}),
        ),
        ("POST", "/config/global", json!({"retry": 1})),
        ("DELETE", "/config/global?vo_name=dteam", Value::Null),
        ("POST", "/config/links", json!({"symbolicname": "l"})),
        ("DELETE", "/config/links/l", Value::Null),
        (
            "POST",
            "/config/shares",
            json!({"source": "gsiftp://s", "destination": "gsiftp://d", "vo": "dteam", "share": 1}),
        ),
        (
            "DELETE",
            "/config/shares?source=gsiftp://s&destination=gsiftp://d&vo=dteam",
            Value::Null,
        ),
        ("POST", "/config/se", json!({"s": {"se_info": {"ipv6": 1}}})),
        ("DELETE", "/config/se?se=s", Value::Null),
        (
            "POST",
            "/config/activity_shares",
            json!({"vo": "dteam", "share": {"A": 1}}),
        ),
        ("DELETE", "/config/activity_shares/dteam", Value::Null),
        (
            "POST",
            "/config/authorize",
            json!({"dn": "/DN=a.test.user", "operation": "config"}),
        ),
        (
            "DELETE",
            "/config/authorize?dn=/DN=a.test.user",
            Value::Null,
        ),
    ]
}

fn send(client: &Client, method: &str, path: &str, body: &Value) -> Reply {
    if body.is_null() {
        client.request(method, path, &[], Bytes::new()).unwrap()
    } else {
        client
            .request(
                method,
                path,
                &[("content-type", "application/json")],
                Bytes::from(body.to_string()),
            )
            .unwrap()
    }
}

#[test]
fn every_config_setter_needs_the_config_level() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    let user = server.client(pki, Some("rc_user.pem"));
    let anonymous = server.client(pki, None);
    for (method, path, body) in setters() {
        assert_error(
            send(&user, method, path, &body),
            403,
            "Not enough permissions",
        );
        assert_status(send(&anonymous, method, path, &body), 403);
    }
    for path in [
        "/config",
        "/config/global",
        "/config/links",
        "/config/shares",
        "/config/se",
        "/config/activity_shares",
        "/config/authorize",
    ] {
        assert_error(user.get(path).unwrap(), 403, "Not enough permissions");
    }
    // Activity shares and grants also need a certificate (checked first, as the reference).
    assert_error(
        anonymous.get("/config/authorize").unwrap(),
        403,
        "Certificate required",
    );
    let root = server.client(pki, Some(ROOT));
    assert_eq!(audit_count(&root), 0, "refusals write no audit entry");
    // Every route is in the table; DELETE /config/activity_shares is not a route.
    let reply = root
        .request("OPTIONS", "/config/links/x", &[], Bytes::new())
        .unwrap();
    assert_eq!(reply.header("allow"), Some("GET, DELETE, HEAD, OPTIONS"));
    assert_status(root.delete("/config/activity_shares").unwrap(), 405);
}

#[test]
fn every_setter_writes_one_audit_entry() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    let root = server.client(pki, Some(ROOT));
    let host = ftsd::service::host_name();
    let drain = json!({"hostname": host, "drain": false});
    // A link for the share, then every setter once.
    assert_status(
        post_json(
            &root,
            "/config/links",
            &json!({"symbolicname": "s-d", "source": "gsiftp://s", "destination": "gsiftp://d"}),
        ),
        201,
    );
    let mut expected = 1;
    for (method, path, body) in setters() {
        let body = if path == "/config/drain" {
            drain.clone()
        } else {
            body
        };
        let reply = send(&root, method, path, &body);
        assert!(reply.status < 300, "{method} {path}: {}", reply.text());
        expected += 1;
        assert_eq!(audit_count(&root), expected, "{method} {path}");
    }
}

#[test]
fn config_answers_are_json_whatever_accept_says() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    let root = server.client(pki, Some(ROOT));
    for path in ["/config", "/config/global", "/config/links", "/config/se"] {
        let reply = root
            .request("GET", path, &[("accept", "text/html")], Bytes::new())
            .unwrap();
        assert_eq!(reply.header("content-type"), Some("application/json"));
        reply.json();
    }
}

#[test]
fn hosts_list_this_server_and_drain_toggles_it() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    let root = server.client(pki, Some(ROOT));
    let host = ftsd::service::host_name();
    let hosts = get(&root, "/config");
    let hosts = hosts.as_array().unwrap();
    assert_eq!(hosts.len(), 1, "{hosts:?}");
    assert_eq!(hosts[0]["hostname"], host.as_str());
    assert_eq!(hosts[0]["service_name"], "fts_server");
    assert_eq!(hosts[0]["drain"], false);
    assert!(hosts[0]["beat"].as_str().unwrap().len() == 19);
    assert_eq!(audit_count(&root), 0);

    for body in [
        json!({"hostname": host, "drain": "xxxx"}),
        json!({"drain": true}),
        json!({"hostname": 5}),
    ] {
        assert_error(
            post_json(&root, "/config/drain", &body),
            400,
            "Invalid drain request",
        );
    }
    assert_error(
        post_json(&root, "/config/drain", &json!({"hostname": "nowhere"})),
        400,
        "Host not found",
    );
    assert_eq!(audit_count(&root), 0);

    let reply = assert_status(
        post_json(&root, "/config/drain", &json!({"hostname": host})),
        200,
    );
    assert_eq!(reply.json(), Value::Null);
    assert_eq!(get(&root, "/config")[0]["drain"], true);
    assert_eq!(audit_count(&root), 1);
    let entry = &get(&root, "/config/audit")[0];
    assert_eq!(entry["action"], "drain");
    assert_eq!(
        entry["config"],
        format!("Turning drain True the drain mode for {host}")
    );
    assert_status(
        post_json(
            &root,
            "/config/drain",
            &json!({"hostname": host, "drain": false}),
        ),
        200,
    );
    assert_eq!(get(&root, "/config")[0]["drain"], false);
    assert_eq!(audit_count(&root), 2);
}

#[test]
fn global_config_per_vo() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    let root = server.client(pki, Some(ROOT));
    assert_eq!(get(&root, "/config/global"), json!({"*": {}}));
    let cfg = json!({"retry": 42, "max_time_queue": 22, "global_timeout": 55, "sec_per_mb": 1,
                     "show_user_dn": true, "vo_name": "dteam"});
    let reply = assert_status(post_json(&root, "/config/global", &cfg), 200);
    assert_eq!(reply.json()["dteam"]["retry"], 42);
    assert_eq!(reply.json()["dteam"]["show_user_dn"], true);
    assert_eq!(reply.json()["*"], json!({}));
    assert_eq!(audit_count(&root), 1);
    assert_eq!(last_action(&root), "set-globals");
    // Strings are cast; flags read true/yes/on.
    let cfg = json!({"retry": "55", "no_streaming": "on", "vo_name": "dteam"});
    let reply = assert_status(post_json(&root, "/config/global", &cfg), 200);
    assert_eq!(reply.json()["dteam"]["retry"], 55);
    assert_eq!(reply.json()["dteam"]["max_time_queue"], 22);
    assert_eq!(reply.json()["dteam"]["no_streaming"], true);
    assert_eq!(audit_count(&root), 2);
    // Without vo_name: the global row.
    let reply = assert_status(
        post_json(&root, "/config/global", &json!({"retry": 3})),
        200,
    );
    assert_eq!(reply.json()["*"]["retry"], 3);
    assert_eq!(reply.json()["*"]["vo_name"], "*");
    assert_eq!(audit_count(&root), 3);

    for (body, message) in [
        (
            json!({"retry": "this should be an integer"}),
            "Field retry is expected to be int",
        ),
        (json!({"retry": 1.5}), "Field retry is expected to be int"),
        (json!({"bogus": 1}), "Field bogus unknown"),
        (json!({"vo_name": 7}), "Field vo_name is expected to be str"),
        (
            json!({"retry": 1, "show_user_dn": 1}),
            "Field show_user_dn is expected to be bool",
        ),
    ] {
        assert_error(post_json(&root, "/config/global", &body), 400, message);
    }
    assert_eq!(audit_count(&root), 3, "refused requests write nothing");
    assert_eq!(get(&root, "/config/global")["*"]["retry"], 3);

    assert_error(
        root.delete("/config/global").unwrap(),
        400,
        "Missing VO name",
    );
    assert_error(
        root.delete("/config/global?vo_name=*").unwrap(),
        400,
        "Missing VO name",
    );
    assert_status(root.delete("/config/global?vo_name=dteam").unwrap(), 204);
    assert!(get(&root, "/config/global").get("dteam").is_none());
    assert_eq!(audit_count(&root), 4);
    assert_eq!(last_action(&root), "delete-globals");
}

#[test]
fn links_create_update_get_and_delete() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    let root = server.client(pki, Some(ROOT));
    let link = json!({"symbolicname": "test-link", "source": "test.cern.ch",
                      "destination": "test2.cern.ch", "nostreams": 16, "tcp_buffer_size": 4096,
                      "min_active": 25, "max_active": 150, "optimizer_mode": 5});
    let reply = assert_status(post_json(&root, "/config/links", &link), 201);
    let body = reply.json();
    assert_eq!(body["symbolicname"], "test-link");
    assert_eq!(body["source"], "test.cern.ch");
    assert_eq!(body["destination"], "test2.cern.ch");
    assert_eq!(body["nostreams"], 16);
    assert_eq!(audit_count(&root), 1);
    assert_eq!(last_action(&root), "link");

    for (body, message) in [
        (json!({"symbolicname": null}), "Missing symbolicname"),
        (json!({"source": "a"}), "Missing symbolicname"),
        (
            json!({"symbolicname": "x", "min_active": 10, "max_active": 5}),
            "max_active is lower than min_active",
        ),
        (
            json!({"symbolicname": "x", "min_active": "lots"}),
            "Active must be an integer (invalid literal for int() with base 10: 'lots')",
        ),
        (
            json!({"symbolicname": "x", "max_active": null}),
            "Active must be an integer (int() argument must be a string, a bytes-like object or a real number, not 'NoneType')",
        ),
        (
            json!({"symbolicname": "x", "source": ""}),
            "Missing source and/or destination",
        ),
        (
            json!({"symbolicname": "x", "colour": 1}),
            "Field colour unknown",
        ),
        (
            json!({"symbolicname": "x", "nostreams": "many"}),
            "Field nostreams is expected to be int",
        ),
    ] {
        assert_error(post_json(&root, "/config/links", &body), 400, message);
    }
    assert_eq!(audit_count(&root), 1, "refused requests write nothing");

    // Re-posting updates the link found by name.
    let mut update = link.clone();
    update["max_active"] = json!(200);
    let reply = assert_status(post_json(&root, "/config/links", &update), 201);
    assert_eq!(reply.json()["max_active"], 200);
    assert_eq!(audit_count(&root), 2);
    let links = get(&root, "/config/links");
    assert_eq!(links.as_array().unwrap().len(), 1);
    let one = get(&root, "/config/links/test-link");
    assert_eq!(one["max_active"], 200);
    assert_eq!(one["tcp_buffer_size"], 4096);

    // URL-decoded names.
    let spaced = json!({"symbolicname": "a link", "source": "x", "destination": "y"});
    assert_status(post_json(&root, "/config/links", &spaced), 201);
    assert_eq!(get(&root, "/config/links/a%20link")["source"], "x");

    assert_status(root.delete("/config/links/test-link").unwrap(), 204);
    assert_error(
        root.get("/config/links/test-link").unwrap(),
        404,
        "Link test-link does not exist",
    );
    assert_eq!(last_action(&root), "link-delete");
    // Deleting an absent link is 204 too.
    assert_status(root.delete("/config/links/test-link").unwrap(), 204);
    assert_eq!(audit_count(&root), 5);
}

#[test]
fn shares_need_a_link_config_and_the_reference_messages() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    let root = server.client(pki, Some(ROOT));
    let share = json!({"source": "gsiftp://source", "destination": "gsiftp://nowhere", "vo": "dteam", "share": 80});
    // Decision: the reference's foreign key to t_link_config is a 500 there; ftsd says why.
    assert_error(
        post_json(&root, "/config/shares", &share),
        400,
        "No link configured from gsiftp://source to gsiftp://nowhere",
    );
    assert_eq!(audit_count(&root), 0);
    let link = json!({"symbolicname": "l", "source": "gsiftp://source", "destination": "gsiftp://nowhere"});
    assert_status(post_json(&root, "/config/links", &link), 201);

    let with = |key: &str, value: Value| {
        let mut s = share.clone();
        s[key] = value;
        s
    };
    for (body, message) in [
        (with("share", json!("dfdf")), "Bad share value"),
        (with("share", json!(-3)), "Bad share value"),
        (with("share", Value::Null), "Bad share value"),
        (
            with("share", json!(0)),
            "Missing source, destination, vo and/or share",
        ),
        (
            with("source", json!("")),
            "Missing source, destination, vo and/or share",
        ),
        (
            with("destination", json!("")),
            "Missing source, destination, vo and/or share",
        ),
        (
            with("vo", json!("")),
            "Missing source, destination, vo and/or share",
        ),
        (with("source", json!("dfgsdfsg")), "Invalid source"),
        (with("destination", json!("klhjkhjk")), "Invalid source"),
    ] {
        assert_error(post_json(&root, "/config/shares", &body), 400, message);
    }
    assert_eq!(audit_count(&root), 1, "refused requests write nothing");

    // Stored as scheme://host (port dropped, host lower-cased).
    let reply = assert_status(
        post_json(
            &root,
            "/config/shares",
            &with("source", json!("gsiftp://SOURCE:2811/path")),
        ),
        200,
    );
    assert_eq!(reply.json(), json!(80));
    assert_eq!(audit_count(&root), 2);
    assert_eq!(last_action(&root), "share-set");
    assert_eq!(
        get(&root, "/config/shares"),
        json!([{"source": "gsiftp://source", "destination": "gsiftp://nowhere", "vo": "dteam", "share": 80}])
    );

    assert_error(
        root.delete("/config/shares?share=80&destination=gsiftp://nowhere&vo=dteam")
            .unwrap(),
        400,
        "Missing source, destination and/or vo",
    );
    assert_status(
        root.delete(
            "/config/shares?share=80&destination=gsiftp://nowhere&vo=dteam&source=gsiftp://source",
        )
        .unwrap(),
        204,
    );
    assert_eq!(get(&root, "/config/shares"), json!([]));
    assert_eq!(audit_count(&root), 3);
    assert_eq!(last_action(&root), "share-delete");
}

fn host_config() -> Value {
    json!({
        "operations": {"atlas": {"delete": 22, "staging": 32}, "dteam": {"delete": 10, "staging": 11}},
        "se_info": {"ipv6": 1, "outbound_max_active": 55, "inbound_max_active": 11,
                    "inbound_max_throughput": 33, "se_metadata": "metadata"}
    })
}

#[test]
fn se_config_set_reset_get_and_delete() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    let root = server.client(pki, Some(ROOT));
    let reply = assert_status(
        post_json(&root, "/config/se", &json!({"test.cern.ch": host_config()})),
        200,
    );
    assert_eq!(reply.json()[0]["ipv6"], 1);
    assert_eq!(reply.json()[1], host_config()["operations"]);
    assert_eq!(audit_count(&root), 2);

    let cfg = get(&root, "/config/se?se=test.cern.ch");
    let se = &cfg["test.cern.ch"];
    assert_eq!(se["operations"], host_config()["operations"]);
    assert_eq!(se["se_info"]["ipv6"], 1);
    assert_eq!(se["se_info"]["outbound_max_active"], 55);
    assert_eq!(se["se_info"]["inbound_max_active"], 11);
    assert_eq!(se["se_info"]["inbound_max_throughput"], 33.0);
    assert_eq!(se["se_info"]["se_metadata"], "metadata");

    // Reset.
    let reset = json!({"test.cern.ch": {
        "operations": {"atlas": {"delete": 1, "staging": 2}, "dteam": {"delete": 3, "staging": 4}},
        "se_info": {"ipv6": 0, "outbound_max_active": 88, "inbound_max_active": 11, "inbound_max_throughput": 10}
    }});
    assert_status(post_json(&root, "/config/se", &reset), 200);
    assert_eq!(audit_count(&root), 4);
    let se = get(&root, "/config/se")["test.cern.ch"].clone();
    assert_eq!(se["operations"], reset["test.cern.ch"]["operations"]);
    assert_eq!(se["se_info"]["ipv6"], 0);
    assert_eq!(se["se_info"]["outbound_max_active"], 88);
    assert_eq!(
        se["se_info"]["se_metadata"], "metadata",
        "unset fields are kept"
    );
    // A limit of 0 removes the limit.
    let zero = json!({"test.cern.ch": {"operations": {"atlas": {"delete": 0}}}});
    assert_status(post_json(&root, "/config/se", &zero), 200);
    let ops = get(&root, "/config/se?se=test.cern.ch")["test.cern.ch"]["operations"].clone();
    assert_eq!(ops["atlas"], json!({"staging": 2}));

    assert_error(
        root.delete("/config/se").unwrap(),
        400,
        "Missing storage (se)",
    );
    assert_status(root.delete("/config/se?se=test.cern.ch").unwrap(), 204);
    assert_eq!(get(&root, "/config/se"), json!({}));
    assert_eq!(last_action(&root), "delete-se-config");
}

#[test]
fn se_config_empty_parts_write_only_the_other_part() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    let root = server.client(pki, Some(ROOT));
    // Empty se_info: only the operations (one audit entry, no storage row).
    let mut cfg = host_config();
    cfg["se_info"] = json!({});
    assert_status(
        post_json(&root, "/config/se", &json!({"a.cern.ch": cfg})),
        200,
    );
    assert_eq!(audit_count(&root), 1);
    assert_eq!(last_action(&root), "set-se-limits");
    let a = get(&root, "/config/se?se=a.cern.ch")["a.cern.ch"].clone();
    assert!(a.get("se_info").is_none(), "{a}");
    assert_eq!(a["operations"], host_config()["operations"]);
    // Empty operations: only se_info.
    let mut cfg = host_config();
    cfg["operations"] = json!({});
    assert_status(
        post_json(&root, "/config/se", &json!({"b.cern.ch": cfg})),
        200,
    );
    assert_eq!(audit_count(&root), 2);
    assert_eq!(last_action(&root), "set-se-config");
    let b = get(&root, "/config/se?se=b.cern.ch")["b.cern.ch"].clone();
    assert!(b.get("operations").is_none(), "{b}");
    assert_eq!(b["se_info"]["outbound_max_active"], 55);
}

#[test]
fn se_config_validation_is_atomic() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    let root = server.client(pki, Some(ROOT));
    let nothing_written = |root: &Client| {
        assert_eq!(audit_count(root), 0);
        assert_eq!(get(root, "/config/se"), json!({}));
    };
    // Blank storage names.
    for name in [" ", "", "\n", "\t"] {
        let mut body = serde_json::Map::new();
        body.insert(name.to_string(), host_config());
        assert_error(
            post_json(&root, "/config/se", &Value::Object(body)),
            400,
            "Malformed configuration",
        );
        nothing_written(&root);
    }
    // A valid storage first, an invalid one after: nothing of either is written.
    let cases = [
        (
            json!({"se_info": {"ipv6": "invalid", "outbound_max_active": 88}}),
            "Field ipv6 is expected to be int",
        ),
        (
            json!({"operations": {"atlas": {"delete": 22, "staging": 32}, "dteam": {"staging": "invalid"}}}),
            "Field concurrent_ops is expected to be int",
        ),
        (
            json!({"se_info": {"ipv6": 1, "tpc_support": "whatever"}}),
            "Field tpc_support is expected to be one of the following: FULL, PULL, PUSH, NONE",
        ),
        (json!("not an object"), "Malformed configuration"),
        (
            json!({"operations": {"atlas": 3}}),
            "Malformed configuration",
        ),
        (json!({"se_info": {"colour": 1}}), "Field colour unknown"),
    ];
    for (bad, message) in cases {
        let body = json!({"a-valid.cern.ch": host_config(), "test.cern.ch": bad});
        assert_error(post_json(&root, "/config/se", &body), 400, message);
        nothing_written(&root);
    }
    // Null values are skipped, tpc_support is stored upper-case.
    let body =
        json!({"test.cern.ch": {"se_info": {"ipv6": null, "tpc_support": "pull", "site": null}}});
    assert_status(post_json(&root, "/config/se", &body), 200);
    let info = get(&root, "/config/se")["test.cern.ch"]["se_info"].clone();
    assert_eq!(info["tpc_support"], "PULL");
    assert_eq!(info["ipv6"], Value::Null);
}

#[test]
fn activity_shares_set_get_and_delete() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    let root = server.client(pki, Some(ROOT));
    for (body, message) in [
        (json!({"share": {"A": 1}}), "Missing VO"),
        (json!({"vo": "", "share": {"A": 1}}), "Missing VO"),
        (json!({"vo": "dteam"}), "Missing share"),
        (json!({"vo": "dteam", "share": {}}), "Missing share"),
        (
            json!({"vo": "dteam", "share": {"A": "x"}}),
            "Share weight must be a number",
        ),
        (
            json!({"vo": "dteam", "share": [{"A": 1}, {"B": "2"}]}),
            "Share weight must be a number",
        ),
    ] {
        assert_error(
            post_json(&root, "/config/activity_shares", &body),
            400,
            message,
        );
    }
    let long: serde_json::Map<String, Value> = (0..100)
        .map(|i| (format!("activity-{i}"), json!(1)))
        .collect();
    let reply = post_json(
        &root,
        "/config/activity_shares",
        &json!({"vo": "dteam", "share": long}),
    );
    assert_eq!(reply.status, 400);
    let message = reply.json()["message"].as_str().unwrap().to_string();
    assert!(
        message.starts_with("Length ") && message.ends_with(" exceeds allowed 1024"),
        "{message}"
    );
    assert_eq!(audit_count(&root), 0);

    let reply = assert_status(
        post_json(
            &root,
            "/config/activity_shares",
            &json!({"vo": "dteam", "share": {"express": 10, "bulk": 0.5}}),
        ),
        200,
    );
    assert_eq!(
        reply.json(),
        json!({"vo": "dteam", "activity_share": [{"bulk": 0.5}, {"express": 10}], "active": true})
    );
    // The legacy list shape, inactive.
    assert_status(
        post_json(
            &root,
            "/config/activity_shares",
            &json!({"vo": "atlas", "share": [{"A": 1}], "active": false}),
        ),
        200,
    );
    assert_eq!(audit_count(&root), 2);
    assert_eq!(last_action(&root), "activity-share");
    assert_eq!(
        get(&root, "/config/activity_shares"),
        json!({"atlas": {"share": {"A": 1}, "active": false},
               "dteam": {"share": {"bulk": 0.5, "express": 10}, "active": true}})
    );
    assert_eq!(
        get(&root, "/config/activity_shares/dteam"),
        json!({"share": {"bulk": 0.5, "express": 10}, "active": true})
    );
    // Unknown VO: 404 JSON (the reference answers 500).
    assert_error(
        root.get("/config/activity_shares/cms").unwrap(),
        404,
        "No activity shares for cms",
    );
    assert_status(root.delete("/config/activity_shares/dteam").unwrap(), 204);
    assert_error(
        root.delete("/config/activity_shares/dteam").unwrap(),
        404,
        "No activity shares for dteam",
    );
    assert_eq!(audit_count(&root), 3);
}

#[test]
fn authorize_grants_and_revokes_but_never_admin() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    let root = server.client(pki, Some(ROOT));
    let grant = json!({"dn": "/DN=a.test.user", "operation": "config"});
    let reply = assert_status(post_json(&root, "/config/authorize", &grant), 200);
    assert_eq!(reply.json(), grant);
    assert_eq!(audit_count(&root), 1);
    assert_eq!(last_action(&root), "authorize");
    // Granting again writes nothing.
    assert_status(post_json(&root, "/config/authorize", &grant), 200);
    assert_eq!(audit_count(&root), 1);
    assert_eq!(get(&root, "/config/authorize"), json!([grant]));
    assert_eq!(
        get(&root, "/config/authorize?operation=config"),
        json!([grant])
    );
    assert_eq!(get(&root, "/config/authorize?dn=/DN=other"), json!([]));

    for body in [json!({"dn": "/DN=x"}), json!({"operation": "config"})] {
        assert_error(
            post_json(&root, "/config/authorize", &body),
            400,
            "Missing dn and/or operation",
        );
    }
    assert_error(
        post_json(
            &root,
            "/config/authorize",
            &json!({"dn": "/DN=x", "operation": "admin"}),
        ),
        400,
        "'admin' level can only be changed via database access",
    );
    assert_error(
        root.delete("/config/authorize").unwrap(),
        400,
        "Missing DN parameter",
    );
    assert_error(
        root.delete("/config/authorize?dn=/DN=a.test.user&operation=admin")
            .unwrap(),
        400,
        "'admin' level can only be changed via database access",
    );
    assert_eq!(audit_count(&root), 1, "refused requests write nothing");

    assert_status(
        root.delete("/config/authorize?dn=/DN=a.test.user&operation=config")
            .unwrap(),
        204,
    );
    assert_eq!(get(&root, "/config/authorize"), json!([]));
    assert_eq!(audit_count(&root), 2);
    assert_eq!(last_action(&root), "revoke");

    // A grant takes effect: the granted user may now read the configuration.
    let user = server.client(pki, Some("rc_user.pem"));
    assert_status(user.get("/config/links").unwrap(), 403);
    let dn = crate::common::RC_USER_DN;
    assert_status(
        post_json(
            &root,
            "/config/authorize",
            &json!({"dn": dn, "operation": "config"}),
        ),
        200,
    );
    assert_status(user.get("/config/links").unwrap(), 200);
    // Revoking everything leaves nothing for a user without admin.
    assert_status(
        root.delete(&format!(
            "/config/authorize?dn={}",
            dn.replace(' ', "%20")
                .replace('=', "%3D")
                .replace('/', "%2F")
        ))
        .unwrap(),
        204,
    );
    assert_status(user.get("/config/links").unwrap(), 403);
}
