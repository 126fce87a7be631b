//! Tokens reaching real storage (`../shared/spec/tokens.md` §A.4, §A.7): two XRootD instances
//! that accept only WLCG tokens of the test issuer (SciTokens), and transfers submitted with
//! per-file tokens: a streamed copy, HTTP-TPC pull and push, a token with the wrong scope, and
//! a transfer that starts after its access token expired (ftsd refreshes it first).

use std::time::Duration;

use serde_json::{Value, json};

use crate::{
    common::{Client, ROOT, TestPki, pki, post_json},
    engine::{files, reason, state, wait_job},
    oidc_issuer::Issuer,
    peers::{self, Options, SciTokens, Xrootd, sample_data},
    tokens::{bearer, rucio_job, storage_token, token_server},
};

const MIN: Duration = Duration::from_secs(60);

/// A token-only XRootD trusting `issuer`.
pub(crate) fn token_xrootd(pki: &TestPki, name: &str, issuer: &Issuer) -> Xrootd {
    Xrootd::start(
        pki,
        name,
        Options {
            scitokens: Some(SciTokens {
                issuer: issuer.url.clone(),
                jwks: issuer.jwks(),
            }),
            ..Default::default()
        },
    )
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

fn log_of(f: &Value) -> String {
    let path = f["log_file"].as_str().expect("a log file");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Submit one transfer with its tokens as a token user; the job id.
fn submit(
    client: &Client,
    fts: &str,
    src: &str,
    dst: &str,
    src_token: &str,
    dst_token: &str,
) -> String {
    let mut job = rucio_job(vec![(vec![src], dst, vec![src_token], dst_token)]);
    // The sample file's real checksum is not what rucio_job claims.
    job["files"][0].as_object_mut().unwrap().remove("checksum");
    job["files"][0].as_object_mut().unwrap().remove("filesize");
    job["params"]["verify_checksum"] = json!("both");
    let reply = bearer(client, "POST", "/jobs", fts, Some(&job));
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["job_id"].as_str().unwrap().to_string()
}

#[test]
fn xrootd_with_scitokens_takes_streamed_and_third_party_copies_with_the_submitted_tokens() {
    let Some(pki) = pki() else { return };
    if !peers::available(&["xrootd", "scitokens"]) {
        return;
    }
    let issuer = Issuer::start(pki, 1200);
    let a = token_xrootd(pki, "ta", &issuer);
    let b = token_xrootd(pki, "tb", &issuer);
    let server = token_server(pki, &issuer, |c| {
        c.engine.enabled = true;
        c.engine.scheduling_interval = 1;
    });
    let root = server.client(pki, Some(ROOT));
    let client = server.client(pki, None);
    let fts = issuer.token("rucio", "fts", json!("localhost"), 1200);
    let data = sample_data(3 << 20, 11);
    a.write_file(&format!("{}/source.bin", peers::TOKEN_BASE), &data);
    let src = a.davs_url(&format!("{}/source.bin", peers::TOKEN_BASE));
    // B is addressed as 127.0.0.1: another storage element (its own tpc_support).
    let dst_of = |name: &str| {
        b.davs_url(&format!("{}/out/{name}", peers::TOKEN_BASE))
            .replacen("localhost", "127.0.0.1", 1)
    };
    let a_aud = format!("https://localhost:{}", a.https_port());
    let b_aud = format!("https://127.0.0.1:{}", b.https_port());
    let read_a = storage_token(&issuer, "storage.read:/ offline_access", &a_aud, 1200);
    let modify_b = storage_token(
        &issuer,
        "storage.modify:/ storage.read:/ offline_access",
        &b_aud,
        1200,
    );

    // (source tpc_support, destination tpc_support, mode, what the log shows)
    let cases = [
        ("FULL", "FULL", "pull", "COPY davs://127.0.0.1"),
        ("FULL", "PUSH", "push", "COPY davs://localhost"),
        ("PULL", "PUSH", "streamed", "PUT davs://127.0.0.1"),
    ];
    for (src_tpc, dst_tpc, mode, step) in cases {
        tpc_support(&root, "davs://localhost", src_tpc);
        tpc_support(&root, "davs://127.0.0.1", dst_tpc);
        let name = format!("{mode}.bin");
        let id = submit(&client, &fts, &src, &dst_of(&name), &read_a, &modify_b);
        let job = wait_job(&root, &id, MIN);
        let f = files(&root, &id)[0].clone();
        assert_eq!(
            job["job_state"],
            "FINISHED",
            "{mode}: {f:#}\n{}",
            log_of(&f)
        );
        let written = b.data_path(&format!("{}/out/{name}", peers::TOKEN_BASE));
        assert_eq!(std::fs::read(&written).unwrap(), data, "{mode}");
        let log = log_of(&f);
        assert!(log.contains(&format!("Copy mode: {mode}")), "{mode}: {log}");
        assert!(log.contains(step), "{mode}: no `{step}` in:\n{log}");
        assert!(log.contains("End-to-end checksum match!"), "{log}");
        // Tokens, not macaroons; the log names them by id and claims only.
        assert!(!log.contains("macaroon"), "{mode}: {log}");
        assert!(log.contains("Source token id: "), "{log}");
        for secret in [&read_a, &modify_b, &fts] {
            let signature = secret.rsplit('.').next().unwrap();
            assert!(
                !log.contains(signature),
                "{mode}: a token in the log:\n{log}"
            );
        }
    }
    // The storage saw the tokens (SciTokens logs what each one allowed).
    let log = b.log();
    assert!(
        log.contains("subject=rucio") && log.contains("authorizations=/tok:create"),
        "{log}"
    );

    // A destination token that may only read: refused by the storage, not retried.
    tpc_support(&root, "davs://localhost", "FULL");
    tpc_support(&root, "davs://127.0.0.1", "FULL");
    let read_b = storage_token(&issuer, "storage.read:/ offline_access", &b_aud, 1200);
    let id = submit(&client, &fts, &src, &dst_of("denied.bin"), &read_a, &read_b);
    let job = wait_job(&root, &id, MIN);
    let f = files(&root, &id)[0].clone();
    assert_eq!(job["job_state"], "FAILED", "{f:#}");
    assert!(
        reason(&f).contains("[13] Permission denied"),
        "{}\n{}",
        reason(&f),
        log_of(&f)
    );
    assert_eq!(f["retry"], 0, "{f:#}");
    assert!(
        !b.data_path(&format!("{}/out/denied.bin", peers::TOKEN_BASE))
            .exists()
    );
}

#[test]
fn a_transfer_after_its_access_token_expired_completes_with_a_refreshed_one() {
    let Some(pki) = pki() else { return };
    if !peers::available(&["xrootd", "scitokens"]) {
        return;
    }
    // Tokens from the token endpoint (the exchange and refreshes) live 6 s; ftsd refreshes a
    // token with less than 4 s left before using it.
    let issuer = Issuer::start(pki, 6);
    let a = token_xrootd(pki, "ra", &issuer);
    let b = token_xrootd(pki, "rb", &issuer);
    let server = token_server(pki, &issuer, |c| {
        c.engine.enabled = true;
        c.engine.scheduling_interval = 1;
        c.engine.max_active = 1;
        c.oidc.token_refresh_margin = 4;
    });
    let root = server.client(pki, Some(ROOT));
    let client = server.client(pki, None);
    let fts = issuer.token("rucio", "fts", json!("localhost"), 1200);
    let data = sample_data(1 << 20, 5);
    let path = format!("{}/long.bin", peers::TOKEN_BASE);
    a.write_file(&path, &data);
    let src = a.davs_url(&path);
    let dst = b
        .davs_url(&format!("{}/out/long.bin", peers::TOKEN_BASE))
        .replacen("localhost", "127.0.0.1", 1);
    let read_a = storage_token(
        &issuer,
        "storage.read:/ offline_access",
        &format!("https://localhost:{}", a.https_port()),
        1200,
    );
    let modify_b = storage_token(
        &issuer,
        "storage.modify:/ storage.read:/ offline_access",
        &format!("https://127.0.0.1:{}", b.https_port()),
        1200,
    );
    // The only transfer slot is taken for 10 s: the token transfer queues past the expiry of
    // the access tokens the exchange gave.
    // (Its "tokens" are the submitter's, unmanaged: never exchanged.)
    let blocker = bearer(
        &client,
        "POST",
        "/jobs",
        &fts,
        Some(&json!({"files": [{"sources": ["mock://x.example/f"],
                                "destinations": ["mock://y.example/f?time=10"]}],
                     "params": {"unmanaged_tokens": true}})),
    );
    assert_eq!(blocker.status, 200, "{}", blocker.text());
    std::thread::sleep(Duration::from_millis(1500));
    let id = submit(&client, &fts, &src, &dst, &read_a, &modify_b);
    let job = wait_job(&root, &id, MIN);
    let f = files(&root, &id)[0].clone();
    assert_eq!(job["job_state"], "FINISHED", "{f:#}\n{}", log_of(&f));
    assert_eq!(
        std::fs::read(b.data_path(&format!("{}/out/long.bin", peers::TOKEN_BASE))).unwrap(),
        data
    );
    let log = log_of(&f);
    assert!(
        log.contains("Successfully refreshed access token for source")
            && log.contains("Successfully refreshed access token for destination"),
        "{log}"
    );
    // The issuer saw the exchange of each token, then refreshes, with the reference's bodies.
    let exchanges = issuer.grants("urn:ietf:params:oauth:grant-type:token-exchange");
    assert_eq!(exchanges.len(), 2, "{exchanges:?}");
    let refreshes = issuer.grants("refresh_token");
    assert!(refreshes.len() >= 2, "{refreshes:?}");
    for r in &refreshes {
        let rt = &r.form["refresh_token"];
        assert!(issuer.issued_refresh_token(rt), "an unknown refresh token");
        let (scope, aud) = if r.form["scope"].starts_with("storage.read:/ ") {
            (
                "storage.read:/ offline_access".to_string(),
                format!("https://localhost:{}", a.https_port()),
            )
        } else {
            (
                "storage.modify:/ storage.read:/ offline_access".to_string(),
                format!("https://127.0.0.1:{}", b.https_port()),
            )
        };
        assert_eq!(
            r.body,
            format!("grant_type=refresh_token&refresh_token={rt}&scope={scope}&audience={aud}")
        );
        assert_eq!(r.client.as_deref(), Some("fts"));
    }
    assert_eq!(state(&f), "FINISHED");
}

#[test]
fn gfal2_hands_the_submitted_tokens_to_token_only_xrootd() {
    let Some(pki) = pki() else { return };
    if !peers::available(&["xrootd", "scitokens", "gfal2"]) {
        return;
    }
    let issuer = Issuer::start(pki, 1200);
    let a = token_xrootd(pki, "ga", &issuer);
    let b = token_xrootd(pki, "gb", &issuer);
    let server = token_server(pki, &issuer, |c| {
        c.engine.enabled = true;
        c.engine.scheduling_interval = 1;
        c.engine.http_backend = ftsd::config::HttpBackendChoice::Gfal2;
    });
    let root = server.client(pki, Some(ROOT));
    let client = server.client(pki, None);
    let fts = issuer.token("rucio", "fts", json!("localhost"), 1200);
    let data = sample_data(1 << 20, 13);
    let path = format!("{}/g.bin", peers::TOKEN_BASE);
    a.write_file(&path, &data);
    let src = a.davs_url(&path);
    let read_a = storage_token(
        &issuer,
        "storage.read:/ offline_access",
        &format!("https://localhost:{}", a.https_port()),
        1200,
    );
    let modify_b = storage_token(
        &issuer,
        "storage.modify:/ storage.read:/ offline_access",
        &format!("https://127.0.0.1:{}", b.https_port()),
        1200,
    );
    for (src_tpc, dst_tpc, mode) in [("FULL", "FULL", "pull"), ("PULL", "PUSH", "streamed")] {
        tpc_support(&root, "davs://localhost", src_tpc);
        tpc_support(&root, "davs://127.0.0.1", dst_tpc);
        let out = format!("{}/out/g-{mode}.bin", peers::TOKEN_BASE);
        let dst = b.davs_url(&out).replacen("localhost", "127.0.0.1", 1);
        let id = submit(&client, &fts, &src, &dst, &read_a, &modify_b);
        let job = wait_job(&root, &id, MIN);
        let f = files(&root, &id)[0].clone();
        let log = log_of(&f);
        assert_eq!(job["job_state"], "FINISHED", "{mode}: {f:#}\n{log}");
        assert_eq!(std::fs::read(b.data_path(&out)).unwrap(), data, "{mode}");
        assert!(log.contains("gfal2: gfal-copy"), "{log}");
        for secret in [&read_a, &modify_b] {
            let signature = secret.rsplit('.').next().unwrap();
            assert!(
                !log.contains(signature),
                "{mode}: a token in the log:\n{log}"
            );
        }
    }
    // No token file is left behind.
    let dir = server.data_dir.join("run/transfer-proxies");
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
    assert!(left.is_empty(), "{left:?}");
}
