//! HTTP conventions of the reference (§1 of the API spec): `GET /`, `//` paths, OPTIONS, 404/405,
//! anonymous callers.

use crate::common::{TestServer, pki};

#[test]
fn anonymous_callers_get_the_anonymous_whoami() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    let reply = server.client(pki, None).get("/whoami").unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let who = reply.json();
    assert_eq!(who["user_dn"], "anon");
    assert_eq!(who["dn"], serde_json::json!(["anon"]));
    assert_eq!(who["method"], "unauthenticated");
    assert_eq!(who["level"], serde_json::json!([]));
    assert_eq!(who["delegation_id"], serde_json::Value::Null);
    assert_eq!(who["vos"], serde_json::json!([]));
    assert_eq!(who["base_id"], "01874efb-4735-4595-bc9c-591aef8240c9");
}

#[test]
fn double_slash_paths_are_the_same_resource() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    let client = server.client(pki, Some("proxy_rfc.pem"));
    let single = client.get("/whoami").unwrap().json();
    let double = client.get("//whoami").unwrap();
    assert_eq!(double.status, 200);
    assert_eq!(double.json(), single);
    assert_eq!(client.get("//").unwrap().json()["api"]["major"], 3);
}

#[test]
fn root_reports_integer_versions_and_links() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    let root = server.client(pki, None).get("/").unwrap().json();
    for key in ["api", "delegation", "schema"] {
        for part in ["major", "minor", "patch"] {
            assert!(
                root[key][part].is_u64(),
                "{key}.{part} is an integer: {root}"
            );
        }
    }
    assert_eq!(
        root["api"],
        serde_json::json!({"major": 3, "minor": 13, "patch": 4})
    );
    assert_eq!(
        root["delegation"],
        serde_json::json!({"major": 1, "minor": 0, "patch": 0})
    );
    assert_eq!(root["_links"]["fts:whoami"]["href"], "/whoami");
}

/// Every link `GET /` advertises answers (no `/archive/` before there is an archive), and
/// `/api-docs/` lists the endpoints and the schema.
#[test]
fn every_advertised_link_answers_and_api_docs_lists_the_endpoints() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    let client = server.client(pki, Some(crate::common::ROOT));
    let root = client.get("/").unwrap().json();
    let links = root["_links"].as_object().unwrap();
    assert!(!links.contains_key("fts:archive"), "{root:#}");
    for (name, link) in links {
        if name == "curies" || link["templated"] == true {
            continue;
        }
        let href = link["href"].as_str().unwrap();
        let reply = client.get(href).unwrap();
        assert_eq!(reply.status, 200, "{name} {href}: {}", reply.text());
    }
    let docs = client.get("/api-docs/").unwrap().json();
    assert_eq!(docs["swaggerVersion"], "1.2");
    assert_eq!(docs["schemas"]["submit"], "/api-docs/schema/submit");
    let jobs = docs["apis"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["path"] == "/jobs/{job_ids}")
        .expect("/jobs/{job_ids} listed");
    let methods: Vec<&str> = jobs["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["GET", "DELETE", "POST", "HEAD"]);
    assert_eq!(client.get("/archive/").unwrap().status, 404);
}

#[test]
fn options_lists_the_allowed_methods() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    let client = server.client(pki, None);
    let reply = client
        .request("OPTIONS", "/whoami", &[], Default::default())
        .unwrap();
    assert_eq!(reply.status, 200);
    let allow: Vec<&str> = reply
        .header("allow")
        .unwrap()
        .split(',')
        .map(str::trim)
        .collect();
    assert!(allow.contains(&"GET"), "{allow:?}");
    assert!(allow.contains(&"OPTIONS"), "{allow:?}");
    assert!(!allow.contains(&"POST"), "{allow:?}");
    let head = client
        .request("HEAD", "/whoami", &[], Default::default())
        .unwrap();
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
}

#[test]
fn unknown_paths_and_methods_get_json_errors() {
    let Some(pki) = pki() else { return };
    let server = TestServer::start(pki);
    let client = server.client(pki, None);
    let reply = client.get("/no/such/thing").unwrap();
    assert_eq!(reply.status, 404);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let body = reply.json();
    assert_eq!(body["status"], "404 Not Found");
    assert!(body["message"].as_str().unwrap().contains("not found"));

    let reply = client
        .request("DELETE", "/whoami", &[], Default::default())
        .unwrap();
    assert_eq!(reply.status, 405);
    assert_eq!(reply.json()["status"], "405 Method Not Allowed");
    assert!(reply.header("allow").unwrap().contains("GET"));
}

#[test]
fn stored_dn_grants_apply_and_survive_a_restart() {
    let Some(pki) = pki() else { return };
    let dir = tempfile::tempdir().unwrap();
    let user_dn = pki.openssl_subject("usercert.pem");
    {
        let store = ftsd::store::Redb::open(dir.path()).unwrap();
        store.grant_dn(&user_dn, "config", 0).unwrap();
    }
    let server = TestServer::start_in(pki, dir.path(), |_| {});
    let who = server
        .client(pki, Some("proxy_rfc.pem"))
        .get("/whoami")
        .unwrap()
        .json();
    assert_eq!(who["level"]["config"], "all");
    assert_eq!(who["level"]["transfer"], "vo");
    server.stop().expect("run returns Ok after shutdown");

    let server = TestServer::start_in(pki, dir.path(), |_| {});
    let who = server
        .client(pki, Some("proxy_rfc.pem"))
        .get("/whoami")
        .unwrap()
        .json();
    assert_eq!(who["level"]["config"], "all");
    server.stop().unwrap();
    let store = ftsd::store::Redb::open(dir.path()).unwrap();
    assert_eq!(
        store.schema_version().unwrap(),
        ftsd::store::schema::SCHEMA_VERSION
    );
    assert!(store.check_indexes().unwrap().is_empty());
}
