//! OAuth2 / WLCG bearer tokens end to end (`../shared/spec/tokens.md` Part A): a real issuer
//! on loopback HTTPS (`oidc_issuer.rs`), ftsd configured to trust it, and clients sending
//! `Authorization: Bearer` — our HTTPS client, the official `fts3` CLI with
//! `--fts-access-token`, and a Rucio-shaped submission with per-file storage tokens.

use std::{path::Path, process::Command, time::Duration};

use bytes::Bytes;
use serde_json::{Value, json};

use crate::common::{Client, ROOT, Reply, TestPki, TestServer, fts3_client_bin, job_id_of, pki};
use crate::oidc_issuer::{FTS_CLIENT, Issuer};

pub(crate) const WLCG_ANY: &str = "https://wlcg.cern.ch/jwt/v1/any";

/// ftsd trusting `issuer` (client `fts`), API tokens for the audience `localhost` (what Rucio
/// asks for: the FTS host name) or the WLCG "any" audience; the engine off unless `tweak`
/// turns it on; a token exchange pass every second.
pub(crate) fn token_server(
    pki: &TestPki,
    issuer: &Issuer,
    tweak: impl FnOnce(&mut ftsd::config::Config),
) -> TestServer {
    TestServer::start_with(pki, |c| {
        c.oidc.authorized_audiences = vec!["localhost".into(), WLCG_ANY.into()];
        c.oidc.providers = vec![ftsd::config::OidcProvider {
            issuer: issuer.url.clone(),
            client_id: FTS_CLIENT.0.into(),
            client_secret: FTS_CLIENT.1.into(),
            required_scope: None,
            vo: None,
        }];
        c.oidc.exchange_interval = 1;
        tweak(c)
    })
}

/// A request with `Authorization: Bearer <token>` (and `body` as JSON when given).
pub(crate) fn bearer(
    client: &Client,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> Reply {
    let auth = format!("Bearer {token}");
    let mut headers = vec![("authorization", auth.as_str())];
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    client.request(method, path, &headers, body).unwrap()
}

/// `sha1(iss ‖ sub)[:16]`, computed here independently of ftsd.
fn token_delegation_id(iss: &str, sub: &str) -> String {
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{iss}{sub}").as_bytes(),
    );
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The message of a JSON error reply with `status`.
fn refused(reply: &Reply, status: u16) -> String {
    assert_eq!(reply.status, status, "{}", reply.text());
    reply.json()["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// An API token for `sub`: scope `fts`, audience `localhost`.
fn api_token(issuer: &Issuer, sub: &str) -> String {
    issuer.token(sub, "fts offline_access", json!("localhost"), 600)
}

#[test]
fn whoami_with_a_bearer_token_is_the_tokens_holder() {
    let Some(pki) = pki() else { return };
    let issuer = Issuer::start(pki, 600);
    let server = token_server(pki, &issuer, |_| {});
    let anonymous = server.client(pki, None);
    let token = issuer.token(
        "user-1",
        "offline_access fts storage.read:/",
        json!(["other", "localhost"]),
        600,
    );
    let reply = bearer(&anonymous, "GET", "/whoami", &token, None);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let who = reply.json();
    assert_eq!(who["method"], "oauth2", "{who}");
    assert_eq!(who["user_dn"], "user-1");
    assert_eq!(who["dn"], json!(["user-1"]));
    assert_eq!(who["vos"], json!(["testvo"]));
    assert_eq!(
        who["delegation_id"],
        json!(token_delegation_id(&issuer.url, "user-1"))
    );
    assert_eq!(
        who["voms_cred"],
        json!(["fts", "offline_access", "storage.read:/"])
    );
    assert_eq!(who["oauth2_scope"], "fts offline_access storage.read:/");
    assert_eq!(who["wlcg_profile"], true);
    assert_eq!(who["is_root"], false);

    // The WLCG "any" audience is authorized too; a token without wlcg.groups gets the
    // issuer's host name as VO.
    let mut claims = issuer.claims("user-2", "fts", json!(WLCG_ANY), 600);
    claims.as_object_mut().unwrap().remove("wlcg.groups");
    claims.as_object_mut().unwrap().remove("wlcg.ver");
    let reply = bearer(&anonymous, "GET", "/whoami", &issuer.mint(&claims), None);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["vos"], json!(["localhost"]));
    assert_eq!(reply.json()["wlcg_profile"], false);

    // The provider was discovered at start and its keys fetched once.
    let log = issuer.log();
    let count = |p: &str| log.iter().filter(|l| l.path == p).count();
    assert_eq!(count("/.well-known/openid-configuration"), 1);
    assert_eq!(count("/jwks"), 1);
}

#[test]
fn invalid_tokens_are_refused_with_the_references_messages() {
    let Some(pki) = pki() else { return };
    let issuer = Issuer::start(pki, 600);
    let server = token_server(pki, &issuer, |c| {
        c.oidc.providers[0].required_scope = Some("fts".into());
    });
    let client = server.client(pki, None);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let good = || issuer.claims("user-1", "fts", json!("localhost"), 600);
    let with = |key: &str, value: Value| {
        let mut c = good();
        if value.is_null() {
            c.as_object_mut().unwrap().remove(key);
        } else {
            c[key] = value;
        }
        issuer.mint(&c)
    };
    let forged = {
        let token = issuer.mint(&good());
        let other = issuer.mint(&issuer.claims("root", "fts", json!("localhost"), 600));
        let (_, signature) = token.rsplit_once('.').unwrap();
        let (input, _) = other.rsplit_once('.').unwrap();
        format!("{input}.{signature}")
    };
    let cases: Vec<(String, &str)> = vec![
        (with("exp", json!(now - 1)), "Signature has expired"),
        (with("aud", json!("fts.elsewhere")), "Invalid audience"),
        (
            with("aud", Value::Null),
            "Token is missing the \"aud\" claim",
        ),
        (
            with("nbf", json!(now + 120)),
            "The token is not yet valid (nbf)",
        ),
        (
            with("iat", json!(now + 120)),
            "The token is not yet valid (iat)",
        ),
        (
            with("iss", json!("https://elsewhere.example/")),
            "TokenProvider not supported",
        ),
        (forged, "Invalid OAuth2 credentials"),
        // Valid, but without the scope the provider requires (`OauthScopeFts`).
        (
            issuer.token("user-1", "offline_access", json!("localhost"), 600),
            "Invalid OAuth2 credentials",
        ),
        ("!!.x.y".into(), "Invalid header padding"),
        ("garbage".into(), "Not enough segments"),
    ];
    for (token, reason) in cases {
        let reply = bearer(&client, "GET", "/whoami", &token, None);
        assert_eq!(
            refused(&reply, 403),
            format!("Invalid credentials ({reason})"),
            "{reason}"
        );
    }
    // Another scheme, or `bearer` in lower case, is not a bearer token: anonymous.
    for header in ["Basic dXNlcjpwYXNz", "bearer x.y.z", "Bearer"] {
        let reply = client
            .request("GET", "/whoami", &[("authorization", header)], Bytes::new())
            .unwrap();
        assert_eq!(reply.status, 200, "{header}: {}", reply.text());
        assert_eq!(reply.json()["method"], "unauthenticated", "{header}");
    }
    // The good token passes.
    let reply = bearer(&client, "GET", "/whoami", &issuer.mint(&good()), None);
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[test]
fn without_a_provider_bearer_tokens_are_an_unsupported_method() {
    let Some(pki) = pki() else { return };
    let issuer = Issuer::start(pki, 600);
    let server = TestServer::start(pki);
    let client = server.client(pki, None);
    let reply = bearer(&client, "GET", "/whoami", &api_token(&issuer, "u"), None);
    assert_eq!(
        refused(&reply, 400),
        "Unsupported authentication method: method=OAuth2"
    );
}

#[test]
fn a_bearer_token_wins_over_the_certificate_of_the_same_request() {
    let Some(pki) = pki() else { return };
    let issuer = Issuer::start(pki, 600);
    let server = token_server(pki, &issuer, |_| {});
    let root = server.client(pki, Some(ROOT));
    // The certificate alone: root.
    let who = root.get("/whoami").unwrap().json();
    assert_eq!(who["method"], "certificate");
    assert_eq!(who["is_root"], true);
    // With a token too: the token's holder, as in the reference (oauth2 is tried first).
    let token = api_token(&issuer, "user-1");
    let reply = bearer(&root, "GET", "/whoami", &token, None);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["method"], "oauth2");
    assert_eq!(reply.json()["user_dn"], "user-1");
    assert_eq!(reply.json()["is_root"], false);
    // An invalid token is refused, even beside a valid certificate: it never falls back to
    // the certificate's identity.
    let expired = issuer.token("user-1", "fts", json!("localhost"), -10);
    let reply = bearer(&root, "GET", "/whoami", &expired, None);
    assert_eq!(
        refused(&reply, 403),
        "Invalid credentials (Signature has expired)"
    );
}

#[test]
fn token_users_have_every_level_but_no_certificate_endpoints() {
    let Some(pki) = pki() else { return };
    let issuer = Issuer::start(pki, 600);
    let server = token_server(pki, &issuer, |_| {});
    let client = server.client(pki, None);
    let token = api_token(&issuer, "user-1");
    // Configuration needs the `config` level, which token users have (the reference gives
    // them `all` for everything); anonymous callers do not.
    let reply = bearer(&client, "GET", "/config/audit", &token, None);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(client.get("/config/audit").unwrap().status, 403);
    // Delegation is for certificates.
    let dlg = token_delegation_id(&issuer.url, "user-1");
    let reply = bearer(
        &client,
        "GET",
        &format!("/delegation/{dlg}/request"),
        &token,
        None,
    );
    assert_eq!(refused(&reply, 403), "Certificate required");
    // Listing jobs works.
    let reply = bearer(&client, "GET", "/jobs", &token, None);
    assert_eq!(reply.status, 200, "{}", reply.text());
}

/// A Rucio-shaped submission (`transfertool/fts3.py`): per-file tokens for each source and
/// destination, Rucio's job metadata and parameters.
pub(crate) fn rucio_job(files: Vec<(Vec<&str>, &str, Vec<&str>, &str)>) -> Value {
    let files: Vec<Value> = files
        .into_iter()
        .enumerate()
        .map(
            |(i, (sources, destination, source_tokens, destination_token))| {
                json!({
                    "sources": sources,
                    "destinations": [destination],
                    "source_tokens": source_tokens,
                    "destination_tokens": [destination_token],
                    "metadata": {"request_id": format!("req-{i}"), "scope": "test",
                                 "name": format!("file{i}"), "src_rse": "SRC", "dst_rse": "DST"},
                    "filesize": 1024,
                    "checksum": "adler32:00000001",
                    "activity": "User Subscriptions",
                    "selection_strategy": "auto",
                })
            },
        )
        .collect();
    json!({
        "files": files,
        "params": {
            "verify_checksum": "none", "job_metadata": {"issuer": "rucio", "multi_sources": false},
            "overwrite": true, "priority": 3, "max_time_in_queue": 168, "copy_pin_lifetime": -1,
        }
    })
}

/// A storage token of `issuer`, as Rucio asks for one (§A.1).
pub(crate) fn storage_token(issuer: &Issuer, scope: &str, aud: &str, lifetime: i64) -> String {
    issuer.token("rucio", scope, json!(aud), lifetime)
}

/// The files of a job as the API shows them.
fn files_of(client: &Client, token: &str, job_id: &str) -> Vec<Value> {
    let reply = bearer(client, "GET", &format!("/jobs/{job_id}/files"), token, None);
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json().as_array().unwrap().clone()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn a_rucio_shaped_submission_waits_for_the_exchange_of_its_tokens() {
    let Some(pki) = pki() else { return };
    let issuer = Issuer::start(pki, 600);
    issuer.delay_exchange(Duration::from_millis(1500));
    let server = token_server(pki, &issuer, |_| {});
    let client = server.client(pki, None);
    let fts = api_token(&issuer, "rucio");
    let read = storage_token(
        &issuer,
        "storage.read:/ offline_access",
        "https://src.example",
        600,
    );
    let read2 = storage_token(&issuer, "storage.read:/data", "https://src2.example", 600);
    let modify = storage_token(
        &issuer,
        "storage.modify:/ storage.read:/ offline_access",
        "https://dst.example https://dst2.example",
        600,
    );
    let job = rucio_job(vec![
        (
            vec!["davs://src.example/data/f0"],
            "davs://dst.example/data/f0",
            vec![&read],
            &modify,
        ),
        (
            vec!["davs://src2.example/data/f1"],
            "davs://dst.example/data/f1",
            vec![&read2],
            &modify,
        ),
    ]);
    let reply = bearer(&client, "POST", "/jobs", &fts, Some(&job));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let job_id = reply.json()["job_id"].as_str().unwrap().to_string();
    // The job is the token user's, submitted with tokens.
    let status = bearer(&client, "GET", &format!("/jobs/{job_id}"), &fts, None).json();
    assert_eq!(status["user_dn"], "rucio");
    assert_eq!(status["job_metadata"]["auth_method"], "oauth2", "{status}");
    // Its files wait for the exchange (TOKEN_PREP, shown by the API)...
    let files = files_of(&client, &fts, &job_id);
    assert!(
        files.iter().all(|f| f["file_state"] == "TOKEN_PREP"),
        "{files:?}"
    );
    // ...then are released.
    wait_for("the token exchange", || {
        files_of(&client, &fts, &job_id)
            .iter()
            .all(|f| f["file_state"] == "SUBMITTED")
    });
    // The managed tokens were exchanged once each, with the reference's body (raw spaces,
    // offline_access added when missing), authenticated as ftsd's client.
    let exchanges = issuer.grants("urn:ietf:params:oauth:grant-type:token-exchange");
    assert_eq!(exchanges.len(), 3, "{exchanges:?}");
    let body_of = |token: &str| {
        exchanges
            .iter()
            .find(|l| l.form.get("subject_token").map(String::as_str) == Some(token))
            .unwrap_or_else(|| panic!("no exchange of a token"))
    };
    let read_exchange = body_of(&read);
    assert_eq!(read_exchange.client.as_deref(), Some(FTS_CLIENT.0));
    assert_eq!(
        read_exchange.body,
        format!(
            "grant_type=urn:ietf:params:oauth:grant-type:token-exchange\
             &requested_token_type=urn:ietf:params:oauth:token-type:refresh_token\
             &subject_token_type=urn:ietf:params:oauth:token-type:access_token\
             &subject_token={read}&scope=storage.read:/ offline_access\
             &audience=https://src.example"
        )
    );
    assert_eq!(
        body_of(&read2).body,
        format!(
            "grant_type=urn:ietf:params:oauth:grant-type:token-exchange\
             &requested_token_type=urn:ietf:params:oauth:token-type:refresh_token\
             &subject_token_type=urn:ietf:params:oauth:token-type:access_token\
             &subject_token={read2}&scope=storage.read:/data offline_access\
             &audience=https://src2.example"
        )
    );
    assert_eq!(
        body_of(&modify).form["audience"],
        "https://dst.example https://dst2.example"
    );
    // No answer of the API ever holds a token.
    for path in [
        format!("/jobs/{job_id}"),
        format!("/jobs/{job_id}/files"),
        "/jobs".to_string(),
        format!("/jobs/{job_id}/files/1"),
    ] {
        let text = bearer(&client, "GET", &path, &fts, None).text();
        for secret in [&fts, &read, &read2, &modify] {
            let signature = secret.rsplit('.').next().unwrap();
            assert!(!text.contains(signature), "{path} shows a token: {text}");
        }
    }
}

#[test]
fn a_failed_exchange_fails_the_files_with_the_references_reason() {
    let Some(pki) = pki() else { return };
    let issuer = Issuer::start(pki, 600);
    issuer.fail_exchange("invalid_grant", "The subject token has been revoked");
    let server = token_server(pki, &issuer, |_| {});
    let client = server.client(pki, None);
    let fts = api_token(&issuer, "rucio");
    let read = storage_token(&issuer, "storage.read:/ offline_access", "https://s", 600);
    let modify = storage_token(&issuer, "storage.modify:/ offline_access", "https://d", 600);
    let job = rucio_job(vec![(
        vec!["davs://src.example/f"],
        "davs://dst.example/f",
        vec![&read],
        &modify,
    )]);
    let reply = bearer(&client, "POST", "/jobs", &fts, Some(&job));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let job_id = reply.json()["job_id"].as_str().unwrap().to_string();
    wait_for("the file to fail", || {
        files_of(&client, &fts, &job_id)[0]["file_state"] == "FAILED"
    });
    let file = &files_of(&client, &fts, &job_id)[0];
    assert_eq!(
        file["reason"],
        "[TokenExchange] Failed to get refresh token for source token: \
         [invalid_grant]: The subject token has been revoked",
        "{file}"
    );
    let status = bearer(&client, "GET", &format!("/jobs/{job_id}"), &fts, None).json();
    assert_eq!(status["job_state"], "FAILED", "{status}");
}

#[test]
fn unmanaged_tokens_are_used_as_given() {
    let Some(pki) = pki() else { return };
    let issuer = Issuer::start(pki, 600);
    let server = token_server(pki, &issuer, |_| {});
    let client = server.client(pki, None);
    let fts = api_token(&issuer, "rucio");
    let read = storage_token(&issuer, "storage.read:/ offline_access", "https://s", 600);
    let modify = storage_token(&issuer, "storage.modify:/ offline_access", "https://d", 600);
    let mut job = rucio_job(vec![(
        vec!["davs://src.example/f"],
        "davs://dst.example/f",
        vec![&read],
        &modify,
    )]);
    job["params"]["unmanaged_tokens"] = json!(true);
    let reply = bearer(&client, "POST", "/jobs", &fts, Some(&job));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let job_id = reply.json()["job_id"].as_str().unwrap().to_string();
    assert_eq!(
        files_of(&client, &fts, &job_id)[0]["file_state"],
        "SUBMITTED"
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        issuer
            .grants("urn:ietf:params:oauth:grant-type:token-exchange")
            .is_empty()
    );
}

#[test]
fn token_submissions_are_validated_with_the_references_messages() {
    let Some(pki) = pki() else { return };
    let issuer = Issuer::start(pki, 600);
    let stranger = Issuer::start(pki, 600);
    let server = token_server(pki, &issuer, |_| {});
    let client = server.client(pki, None);
    let fts = api_token(&issuer, "rucio");
    let read = storage_token(&issuer, "storage.read:/ offline_access", "https://s", 600);
    let modify = storage_token(&issuer, "storage.modify:/ offline_access", "https://d", 600);
    let submit = |job: &Value| bearer(&client, "POST", "/jobs", &fts, Some(job));
    let one = |sources: Value, src_tokens: Value, dst_tokens: Value| {
        json!({"files": [{"sources": sources, "destinations": ["davs://dst.example/f"],
                           "source_tokens": src_tokens, "destination_tokens": dst_tokens}]})
    };
    let src = json!(["davs://src.example/f"]);
    let mut no_nbf = issuer.claims("rucio", "storage.read:/", json!("https://s"), 600);
    no_nbf.as_object_mut().unwrap().remove("nbf");
    let cases = [
        (
            json!({"files": [{"sources": src, "destinations": ["davs://dst.example/f"],
                               "source_tokens": [read]}]}),
            "Both source_tokens and destination_tokens are required if one of them is present.",
        ),
        (
            one(src.clone(), json!([read, read]), json!([modify])),
            "Length of source_tokens should be equal to the length of sources.",
        ),
        (
            one(src.clone(), json!([read]), json!([modify, modify])),
            "Length of destination_tokens should be equal to the length of destinations.",
        ),
        (
            one(src.clone(), json!([""]), json!([modify])),
            "Token for source 'davs://src.example/f' is missing.",
        ),
        (
            one(src.clone(), json!([read]), json!([null])),
            "Token for destination 'davs://dst.example/f' is missing.",
        ),
        (
            one(src.clone(), json!([issuer.mint(&no_nbf)]), json!([modify])),
            "Token does not contain a nbf claim",
        ),
        // Signed by another issuer, expired, or forged: not valid.
        (
            one(
                src.clone(),
                json!([stranger.token("rucio", "storage.read:/", json!("https://s"), 600)]),
                json!([modify]),
            ),
            "Failed to validate access-token",
        ),
        (
            one(
                src.clone(),
                json!([storage_token(&issuer, "storage.read:/", "https://s", -5)]),
                json!([modify]),
            ),
            "Failed to validate access-token",
        ),
    ];
    for (job, message) in cases {
        let reply = submit(&job);
        assert_eq!(refused(&reply, 400), message, "{job}");
    }
    // Token users cannot use tape.
    let mut staging = one(src.clone(), json!([read]), json!([modify]));
    staging["params"] = json!({"bring_online": 60});
    assert_eq!(
        refused(&submit(&staging), 400),
        "Requests to retrieve from tape using token authentication are not supported"
    );
    // A token user's submission without storage tokens uses its bearer token everywhere
    // ("single token" clients): accepted, no delegation needed.
    let plain = json!({"files": [{"sources": ["davs://src.example/f"],
                                   "destinations": ["davs://dst.example/f"]}]});
    let reply = submit(&plain);
    assert_eq!(reply.status, 200, "{}", reply.text());
}

/// Run an fts3 client command with `--fts-access-token`.
fn fts_token_cli(bin: &Path, name: &str, port: u16, pki: &TestPki, args: &[&str]) -> String {
    let out = Command::new(bin.join(name))
        .args(["-s", &format!("https://localhost:{port}")])
        .arg("--capath")
        .arg(pki.ca_dir())
        .env_remove("X509_USER_PROXY")
        .env_remove("X509_USER_CERT")
        .env_remove("X509_USER_KEY")
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{name} failed:\n{text}");
    text
}

#[test]
fn the_fts3_cli_works_with_an_access_token() {
    let Some(pki) = pki() else { return };
    let Some(bin) = fts3_client_bin() else { return };
    let issuer = Issuer::start(pki, 600);
    let server = token_server(pki, &issuer, |c| {
        c.engine.enabled = true;
        c.engine.scheduling_interval = 1;
        c.engine.mock_transfer_time = 1;
    });
    let fts = api_token(&issuer, "cli-user");
    let src = storage_token(&issuer, "storage.read:/ offline_access", "mock", 600);
    let dst = storage_token(&issuer, "storage.modify:/ offline_access", "mock", 600);

    let who = fts_token_cli(
        &bin,
        "fts-rest-whoami",
        server.port,
        pki,
        &["--fts-access-token", &fts, "-j"],
    );
    let who: Value = serde_json::from_str(&who).unwrap_or_else(|e| panic!("{e}: {who}"));
    assert_eq!(who["method"], "oauth2");
    assert_eq!(who["user_dn"], "cli-user");
    assert_eq!(
        who["delegation_id"],
        json!(token_delegation_id(&issuer.url, "cli-user"))
    );

    let out = fts_token_cli(
        &bin,
        "fts-rest-transfer-submit",
        server.port,
        pki,
        &[
            "--fts-access-token",
            &fts,
            "--src-access-token",
            &src,
            "--dst-access-token",
            &dst,
            "mock://src.example/file?size=1000",
            "mock://dst.example/file?size_post=1000",
        ],
    );
    let job_id = job_id_of(&out);
    wait_for("the job to finish", || {
        let status = fts_token_cli(
            &bin,
            "fts-rest-transfer-status",
            server.port,
            pki,
            &["--fts-access-token", &fts, "-j", &job_id],
        );
        let status: Value = serde_json::from_str(&status).unwrap();
        assert_ne!(status["job_state"], "FAILED", "{status}");
        status["job_state"] == "FINISHED"
    });
    // The storage tokens were exchanged before the transfer.
    assert_eq!(
        issuer
            .grants("urn:ietf:params:oauth:grant-type:token-exchange")
            .len(),
        2
    );
}

#[test]
fn a_failed_refresh_fails_the_transfer_with_the_references_reason() {
    let Some(pki) = pki() else { return };
    // Exchanged tokens live 5 s; a token with less than 60 s left is refreshed before use.
    let issuer = Issuer::start(pki, 5);
    issuer.fail_refresh("invalid_grant", "The refresh token has expired");
    let server = token_server(pki, &issuer, |c| {
        c.engine.enabled = true;
        c.engine.scheduling_interval = 1;
        c.oidc.token_refresh_margin = 60;
    });
    let client = server.client(pki, None);
    let fts = api_token(&issuer, "rucio");
    let read = storage_token(&issuer, "storage.read:/ offline_access", "mock", 600);
    let modify = storage_token(&issuer, "storage.modify:/ offline_access", "mock", 600);
    let mock_job = |dst: &str, read: &str, modify: &str| {
        let mut job = rucio_job(vec![(
            vec!["mock://src.example/f?size=10"],
            dst,
            vec![read],
            modify,
        )]);
        job["files"][0].as_object_mut().unwrap().remove("filesize");
        job
    };
    let job = mock_job("mock://dst.example/f", &read, &modify);
    let reply = bearer(&client, "POST", "/jobs", &fts, Some(&job));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let job_id = reply.json()["job_id"].as_str().unwrap().to_string();
    wait_for("the file to fail", || {
        files_of(&client, &fts, &job_id)[0]["file_state"] == "FAILED"
    });
    let file = &files_of(&client, &fts, &job_id)[0];
    assert_eq!(
        file["reason"], "SOURCE [14] Failed to obtain refresh token for source",
        "{file}"
    );
    // The exchange worked; the refresh was asked with the refresh token it gave.
    assert_eq!(
        issuer
            .grants("urn:ietf:params:oauth:grant-type:token-exchange")
            .len(),
        2
    );
    let refresh = &issuer.grants("refresh_token")[0];
    assert!(issuer.issued_refresh_token(&refresh.form["refresh_token"]));
    // Unmanaged tokens are never refreshed: the same job with new ones transfers (the mock
    // destination says its size after the copy).
    let read = storage_token(&issuer, "storage.read:/ offline_access", "mock", 600);
    let modify = storage_token(&issuer, "storage.modify:/ offline_access", "mock", 600);
    let mut unmanaged = mock_job("mock://dst.example/f2?size_post=10", &read, &modify);
    unmanaged["params"]["unmanaged_tokens"] = json!(true);
    let reply = bearer(&client, "POST", "/jobs", &fts, Some(&unmanaged));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let job_id = reply.json()["job_id"].as_str().unwrap().to_string();
    wait_for("the unmanaged job to finish", || {
        let file = files_of(&client, &fts, &job_id)[0].clone();
        assert_ne!(file["file_state"], "FAILED", "{file}");
        file["file_state"] == "FINISHED"
    });
}

#[test]
fn canceling_a_job_waiting_for_its_token_exchange_ends_its_files() {
    let Some(pki) = pki() else { return };
    let issuer = Issuer::start(pki, 600);
    issuer.delay_exchange(Duration::from_secs(2));
    let server = token_server(pki, &issuer, |_| {});
    let client = server.client(pki, None);
    let fts = api_token(&issuer, "rucio");
    let read = storage_token(&issuer, "storage.read:/ offline_access", "https://s", 600);
    let modify = storage_token(&issuer, "storage.modify:/ offline_access", "https://d", 600);
    let job = rucio_job(vec![(
        vec!["davs://src.example/f"],
        "davs://dst.example/f",
        vec![&read],
        &modify,
    )]);
    let reply = bearer(&client, "POST", "/jobs", &fts, Some(&job));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let job_id = reply.json()["job_id"].as_str().unwrap().to_string();
    assert_eq!(
        files_of(&client, &fts, &job_id)[0]["file_state"],
        "TOKEN_PREP"
    );
    let reply = bearer(&client, "DELETE", &format!("/jobs/{job_id}"), &fts, None);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        files_of(&client, &fts, &job_id)[0]["file_state"],
        "CANCELED"
    );
    // The exchange ends later: the file stays canceled, the job too.
    wait_for("the exchange", || {
        !issuer
            .grants("urn:ietf:params:oauth:grant-type:token-exchange")
            .is_empty()
    });
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        files_of(&client, &fts, &job_id)[0]["file_state"],
        "CANCELED"
    );
    let status = bearer(&client, "GET", &format!("/jobs/{job_id}"), &fts, None).json();
    assert_eq!(status["job_state"], "CANCELED", "{status}");
}
