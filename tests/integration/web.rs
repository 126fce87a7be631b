//! The web pages over HTTPS: headers, authorization and the live block on the real server,
//! then the browser tests (`tests/browser/pages.cjs`: Debian `chromium` driven by
//! `playwright-core` from npm, both installed by `.ci/run`) against a mock workload, with one
//! transfer still running when the browser starts. Screenshots go to
//! `target/web-screenshots/`.

use std::{path::PathBuf, process::Command, time::Duration};

use serde_json::json;

use crate::common::{RC_USER_DN, in_ci, pki};
use crate::delegation::delegate;
use crate::engine::{engine_server, submit, transfer, wait_job};
use crate::tls_auth::independent_delegation_id;

const SRC: &str = "mock://src.example";
const DST: &str = "mock://dst.example";

/// playwright-core's directory: `PLAYWRIGHT_CORE`, else where `.ci/run` installs it.
fn playwright_core() -> PathBuf {
    std::env::var_os("PLAYWRIGHT_CORE").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".ci/node/node_modules/playwright-core"),
        PathBuf::from,
    )
}

/// node, chromium and playwright-core, or why not. Missing in CI is a failure.
fn browser_tools() -> bool {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let missing: Vec<String> = [
        (
            Command::new("node").arg("--version").output().is_ok(),
            "node".to_string(),
        ),
        (
            std::path::Path::new(&chromium).exists(),
            format!("chromium ({chromium})"),
        ),
        (
            playwright_core().join("package.json").exists(),
            format!("playwright-core ({})", playwright_core().display()),
        ),
    ]
    .into_iter()
    .filter(|(ok, _)| !ok)
    .map(|(_, what)| what)
    .collect();
    if !missing.is_empty() {
        assert!(!in_ci(), "{missing:?} required in CI (see .ci/run)");
        eprintln!(
            "SKIPPING browser tests: {missing:?} missing (apt-get install chromium; npm install playwright-core in .ci/node)"
        );
    }
    missing.is_empty()
}

#[test]
fn web_pages_in_a_browser() {
    let Some(pki) = pki() else { return };
    let server = engine_server(pki, |c| c.engine.optimizer_interval = 1);
    let client = server.client(pki, Some("rc_user.pem"));
    let (status, body) = delegate(
        &client,
        pki,
        "rc_user.pem",
        &independent_delegation_id(RC_USER_DN, &[]),
    );
    assert_eq!(status, 201, "{body}");
    let other = server.client(pki, Some("rc_other.pem"));

    // 3 successes and a failure on one link.
    let mut done = Vec::new();
    for i in 0..3 {
        done.push(submit(
            &client,
            json!([transfer(
                &format!("{SRC}/f{i}?size=1048576"),
                &format!("{DST}/f{i}?size_post=1048576&time=1")
            )]),
            json!({}),
        ));
    }
    let failed = submit(
        &client,
        json!([transfer(
            &format!("{SRC}/missing?errno=2"),
            &format!("{DST}/m?time=0")
        )]),
        json!({"retry": -1}),
    );
    // Two more links, for a fuller overview (and the README's screenshot).
    let mut others = Vec::new();
    for i in 0..2 {
        others.push(submit(
            &client,
            json!([transfer(
                &format!("{SRC}/a{i}?size=4194304"),
                &format!("mock://archive.example/a{i}?size_post=4194304&time=2")
            )]),
            json!({}),
        ));
    }
    others.push(submit(
        &client,
        json!([
            transfer(
                "mock://cern.example/c0?size=2097152",
                &format!("{DST}/c0?size_post=2097152&time=1")
            ),
            transfer(
                "mock://cern.example/c1?size=2097152",
                &format!("{DST}/c1?time=1&transfer_errno=110")
            )
        ]),
        json!({"retry": -1}),
    ));
    for id in done.iter().chain([&failed]).chain(&others) {
        wait_job(&client, id, Duration::from_secs(60));
    }

    // Over HTTPS: the page, its headers, the live block, another user's refusal.
    let r = client.get("/web/").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("content-security-policy")
            .unwrap()
            .starts_with("default-src 'self'")
    );
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert!(r.text().contains("75.0 %"), "{}", r.text());
    let page = client.get(&format!("/web/jobs/{}", done[0])).unwrap();
    assert_eq!(page.status, 200);
    assert!(page.text().contains("FINISHED"));
    let r = other.get(&format!("/web/jobs/{}", done[0])).unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let start = page.text().find("/ftsmon/jobs/").expect("a log link");
    let log = &page.text()[start..];
    let log = log[..log.find('"').unwrap()].to_string();
    assert_eq!(client.get(&log).unwrap().status, 200);
    assert_eq!(other.get(&log).unwrap().status, 403);
    let anonymous = server.client(pki, None);
    assert_eq!(anonymous.get("/web/").unwrap().status, 403);

    if !browser_tools() {
        return;
    }
    // A transfer that runs while the browser opens its page.
    let slow = submit(
        &client,
        json!([transfer(
            &format!("{SRC}/slow?size=1048576"),
            &format!("{DST}/slow?size_post=1048576&time=12")
        )]),
        json!({}),
    );
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/web-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let output = Command::new("node")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser/pages.cjs"))
        .env("PLAYWRIGHT_CORE", playwright_core())
        .env("FTSD_URL", format!("https://127.0.0.1:{}", server.port))
        .env("FTSD_CERT", pki.path("rc_user.pem"))
        .env("FTSD_KEY", pki.path("rc_user.pem"))
        .env("FTSD_OTHER_CERT", pki.path("rc_other.pem"))
        .env("FTSD_SHOTS", &shots)
        .env("FTSD_JOB", &done[0])
        .env("FTSD_FAILED_JOB", &failed)
        .env("FTSD_SLOW_JOB", &slow)
        .env("FTSD_SOURCE_SE", SRC)
        .env("FTSD_DEST_SE", DST)
        .output()
        .expect("node runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("{text}");
    assert!(output.status.success(), "browser tests failed:\n{text}");
}
