//! Monitoring end to end: a mock workload through the engine, then every ftsmon endpoint's
//! JSON shape, the authorization of job details and transfer logs, the two nagios probes'
//! checks, `/metrics` parsed back by an OpenMetrics parser (Python's prometheus_client), and a
//! real Prometheus scraping over HTTPS with a client certificate (Debian `prometheus`).

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::common::{Client, RC_USER_DN, TestPki, TestServer, in_ci, pki, require_tool};
use crate::delegation::delegate;
use crate::engine::{engine_server, submit, transfer, wait_job};
use crate::tls_auth::independent_delegation_id;

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

fn get(client: &Client, path: &str) -> Value {
    let r = client.get(path).unwrap();
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r.json()
}

fn assert_paged(v: &Value, what: &str) {
    for k in [
        "count",
        "startIndex",
        "endIndex",
        "page",
        "pageCount",
        "pageSize",
        "items",
    ] {
        assert!(v.get(k).is_some(), "{what}: no {k} in {v}");
    }
    assert!(v["items"].is_array(), "{what}");
}

/// The nagios `check_fts_stalled_transfers` check on the JSON: (status, message).
fn stalled_transfers(response: &Value, warning_days: i64, critical_days: i64) -> (i32, String) {
    let count = response["count"].as_u64().unwrap();
    if count == 0 {
        return (0, "No transfers in submitted state".into());
    }
    let now = ftsd::model::time::now();
    let mut oldest = (now, String::new());
    for t in response["items"].as_array().unwrap() {
        let s = t["submit_time"].as_str().unwrap();
        let n: Vec<i64> = s
            .split(|c: char| !c.is_ascii_digit())
            .filter(|x| !x.is_empty())
            .map(|x| x.parse().unwrap())
            .collect();
        let date = time::Date::from_calendar_date(
            n[0] as i32,
            time::Month::try_from(n[1] as u8).unwrap(),
            n[2] as u8,
        )
        .unwrap();
        let parsed = time::PrimitiveDateTime::new(
            date,
            time::Time::from_hms(n[3] as u8, n[4] as u8, n[5] as u8).unwrap(),
        )
        .assume_utc()
        .unix_timestamp();
        if parsed < oldest.0 {
            oldest = (parsed, t["job_id"].as_str().unwrap().to_string());
        }
    }
    let elapsed = now - oldest.0;
    if elapsed > critical_days * 86400 {
        (2, format!("Transfer stalled (Job {})", oldest.1))
    } else if elapsed > warning_days * 86400 {
        (1, format!("Transfer stalled (Job {})", oldest.1))
    } else {
        (0, format!("{count} in submitted state"))
    }
}

/// The nagios `check_fts_stalled_server` check on the JSON.
fn stalled_server(response: &Value, host: &str) -> (i32, String) {
    let servers = response.as_object().unwrap();
    if !servers.contains_key(host) {
        return (
            2,
            "The host is not visible in the monitoring. Maybe it is down?".into(),
        );
    }
    let n = servers.len() as f64;
    let total: f64 = servers
        .values()
        .map(|h| h["active"].as_f64().unwrap_or(0.0))
        .sum();
    let mine = servers[host]["active"].as_f64().unwrap_or(0.0);
    let msg = format!("Running {mine} out of {total}");
    if mine == 0.0 && total / n > n.max(10.0) {
        (2, msg)
    } else if mine < total / n * 0.8 {
        (1, msg)
    } else {
        (0, msg)
    }
}

#[test]
fn monitoring_after_a_mock_workload() {
    let Some(pki) = pki() else { return };
    let server = engine_server(pki, |_| {});
    let client = user(&server, pki);
    let other = server.client(pki, Some("rc_other.pem"));
    let root = server.client(pki, Some(crate::common::ROOT));

    // 3 successes and 1 failure on one link, then one job left queued on a link nobody serves
    // (a scheme no backend knows would be refused, so a far-future retry keeps it queued).
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(submit(
            &client,
            json!([transfer(
                &format!("mock://src.example/f{i}?size=1048576"),
                &format!("mock://dst.example/f{i}?size_post=1048576&time=1")
            )]),
            json!({}),
        ));
    }
    let failing = submit(
        &client,
        json!([transfer(
            "mock://src.example/missing?errno=2",
            "mock://dst.example/m?time=0"
        )]),
        json!({"retry": -1}),
    );
    ids.push(failing.clone());
    for id in &ids {
        wait_job(&client, id, Duration::from_secs(60));
    }

    // Overview: one row per link and VO with the window's counts and the success rate.
    let overview = get(&client, "/ftsmon/overview");
    assert_paged(&overview["overview"], "overview");
    let rows = overview["overview"]["items"].as_array().unwrap();
    let row = rows
        .iter()
        .find(|r| r["source_se"] == "mock://src.example" && r["dest_se"] == "mock://dst.example")
        .unwrap_or_else(|| panic!("{overview}"));
    assert_eq!(row["finished"], 3, "{row}");
    assert_eq!(row["failed"], 1, "{row}");
    assert_eq!(row["rate"], 75.0, "{row}");
    for k in [
        "submitted",
        "active",
        "ready",
        "staging",
        "started",
        "archiving",
        "canceled",
        "current",
        "vo_name",
    ] {
        assert!(row.get(k).is_some(), "{k} in {row}");
    }
    assert_eq!(overview["summary"]["finished"], 3);
    assert!(overview["overview_cache"]["using_cache"].is_boolean());
    let only = get(&client, "/fts3/ftsmon/overview/?only_summary=1");
    assert!(
        only.get("overview").is_none() && only["summary"]["failed"] == 1,
        "{only}"
    );
    let acts = get(&client, "/ftsmon/overview/activities");
    assert_eq!(
        acts["overview"]["items"][0]["activity"], "default",
        "{acts}"
    );
    let series = get(&client, "/ftsmon/series?source_se=mock://src.example");
    assert_eq!(series.as_array().unwrap().len(), 4);

    // Jobs, job detail, files with log URLs, transfers.
    let jobs = get(&client, "/ftsmon/jobs?state=FINISHED,FAILED&page_size=2");
    assert_paged(&jobs, "jobs");
    assert_eq!(jobs["count"], 4, "{jobs}");
    assert_eq!(jobs["pageCount"], 2);
    let item = &jobs["items"][0];
    for k in [
        "job_id",
        "submit_time",
        "job_state",
        "vo_name",
        "source_se",
        "dest_se",
        "files",
        "count",
        "n_replicas",
        "priority",
    ] {
        assert!(item.get(k).is_some(), "{k} in {item}");
    }
    assert!(item["submit_time"].as_str().unwrap().ends_with('Z'));
    let detail = get(&client, &format!("/ftsmon/jobs/{}", ids[0]));
    assert_eq!(detail["job"]["job_id"], ids[0].as_str());
    assert!(detail["job"].get("duration").is_some() && detail["job"].get("expiry_time").is_some());
    assert_eq!(detail["states"]["FINISHED"], 1, "{detail}");
    let files = get(&client, &format!("/ftsmon/jobs/{}/files", ids[0]));
    assert_paged(&files["files"], "files");
    let f = &files["files"]["items"][0];
    assert!(
        f["retries"].is_array() && f.get("log_file").is_some(),
        "{f}"
    );
    assert!(files["stats"].get("total_size").is_some(), "{files}");
    let log_url = f["log_url"]
        .as_str()
        .unwrap_or_else(|| panic!("no log url: {f}"))
        .to_string();
    let log = client.get(&log_url).unwrap();
    assert_eq!(log.status, 200, "{}", log.text());
    assert!(!log.text().is_empty());
    let transfers = get(&client, "/ftsmon/transfers?state=FINISHED");
    assert_paged(&transfers, "transfers");
    assert_eq!(transfers["count"], 3, "{transfers}");
    assert!(transfers["items"][0].get("file_state").is_some());

    // Another user: neither the job nor its log; their listings do not show it.
    let r = other.get(&format!("/ftsmon/jobs/{}", ids[0])).unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    let r = other.get(&log_url).unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    let theirs = get(&other, "/ftsmon/jobs?state=FINISHED");
    assert_eq!(theirs["count"], 0, "{theirs}");
    // A path that is not a log of the job.
    let r = client
        .get(&format!("/ftsmon/jobs/{}/files/999999/log", ids[0]))
        .unwrap();
    assert_eq!(r.status, 404);

    // Errors.
    let errors = get(&client, "/ftsmon/errors");
    assert_paged(&errors, "errors");
    assert_eq!(errors["items"][0]["count"], 1, "{errors}");
    let list = get(
        &root,
        "/ftsmon/errors/list?source_se=mock://src.example&dest_se=mock://dst.example",
    );
    assert_paged(&list["errors"], "errors/list");
    assert_eq!(list["errors"]["items"][0]["count"], 1, "{list}");
    assert_eq!(list["classification"]["SOURCE"], 1, "{list}");
    let classes = get(&client, "/ftsmon/errors/classes");
    assert_eq!(classes[0]["scope"], "SOURCE", "{classes}");

    // Statistics, servers (JSON and SLS), per VO.
    let stats = get(&client, "/ftsmon/stats");
    assert_eq!(stats["lasthour"]["finished"], 3, "{stats}");
    assert!(stats["lasthour"].get("queued").is_some() && stats["retried"].get("failed").is_some());
    let servers = get(&client, "/ftsmon/stats/servers");
    let host = servers.as_object().unwrap().keys().next().unwrap().clone();
    assert_eq!(
        servers[&host]["services"]["fts_server"]["status"], "running",
        "{servers}"
    );
    assert_eq!(stalled_server(&servers, &host).0, 0);
    assert_eq!(stalled_server(&servers, "nowhere.example").0, 2);
    let sls = client.get("/ftsmon/stats/servers?format=sls").unwrap();
    assert!(
        sls.text().contains("<status>available</status>"),
        "{}",
        sls.text()
    );
    let per_vo = get(&client, "/ftsmon/stats/vo");
    assert_eq!(
        per_vo.as_object().unwrap().values().next().unwrap()["finished"],
        3
    );

    // Optimizer, link info, configuration, lists, version.
    assert_paged(&get(&client, "/ftsmon/optimizer"), "optimizer");
    let detailed = get(
        &client,
        "/ftsmon/optimizer/detailed?source=mock://src.example&destination=mock://dst.example",
    );
    assert_paged(&detailed["evolution"], "evolution");
    assert_eq!(detailed["storage_info"].as_array().unwrap().len(), 2);
    let info = get(
        &client,
        "/ftsmon/linkinfo?source_se=mock://src.example&dest_se=mock://dst.example",
    );
    assert!(
        info[0]["link"]["limits"].is_array() && info[0]["source"].get("config_type").is_some(),
        "{info}"
    );
    assert!(get(&client, "/ftsmon/config/server")["per_vo"].is_array());
    assert_paged(&get(&client, "/ftsmon/config/storages"), "storages");
    assert_paged(&get(&client, "/ftsmon/config/links"), "links");
    assert!(get(&client, "/ftsmon/config/ops").is_array());
    assert!(get(&client, "/ftsmon/config/activities").is_object());
    assert_eq!(
        client.get("/ftsmon/config/audit").unwrap().status,
        404,
        "opt-in only"
    );
    assert_eq!(
        get(&client, "/ftsmon/unique/sources"),
        json!(["mock://src.example"])
    );
    assert_eq!(
        get(&client, "/ftsmon/unique/destinations"),
        json!(["mock://dst.example"])
    );
    assert_eq!(
        get(&client, "/ftsmon/unique/vos").as_array().unwrap().len(),
        1
    );
    assert!(get(&client, "/ftsmon/unique/activities").is_object());
    assert!(get(&client, "/ftsmon/unique/hostnames").is_array());
    assert!(get(&client, "/ftsmon/version")["major"].is_u64());
    let r = client.get("/ftsmon/overview?time_window=abc").unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(client.get("/ftsmon/nothing").unwrap().status, 404);

    // The stalled-transfers probe: nothing queued, then a queued job (retry far away).
    let queued = get(
        &root,
        "/ftsmon/jobs?state=SUBMITTED&orderby=submit_time&page=all",
    );
    assert_eq!(stalled_transfers(&queued, 2, 7).0, 0, "{queued}");

    // /metrics, parsed back by an OpenMetrics parser.
    let m = client.get("/metrics").unwrap();
    assert_eq!(m.status, 200, "{}", m.text());
    assert!(
        m.header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = m.text();
    assert!(text.ends_with("# EOF\n"));
    assert!(
        !text.contains(&ids[0]) && !text.contains("CN="),
        "no ids or DNs as labels"
    );
    if let Some(samples) = parse_openmetrics(&text) {
        let value = |name: &str, labels: &[(&str, &str)]| -> Option<f64> {
            samples
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][k] == *v))
                .and_then(|s| s["value"].as_f64())
        };
        let link = [
            ("source_se", "mock://src.example"),
            ("dest_se", "mock://dst.example"),
        ];
        assert_eq!(
            value(
                "ftsd_transfers_completed_total",
                &[link[0], link[1], ("state", "FINISHED")]
            ),
            Some(3.0)
        );
        assert_eq!(
            value(
                "ftsd_transfers_completed_total",
                &[link[0], link[1], ("state", "FAILED")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value("ftsd_transfer_failures_total", &[("scope", "SOURCE")]),
            Some(1.0)
        );
        assert_eq!(
            value("ftsd_transferred_bytes_total", &link),
            Some(3.0 * 1048576.0)
        );
        assert!(
            value(
                "ftsd_http_requests_total",
                &[("route", "/ftsmon/overview"), ("code", "200")]
            )
            .is_some()
        );
        assert!(value("ftsd_store_commit_duration_seconds_count", &[]).is_some_and(|n| n > 0.0));
        assert!(value("ftsd_scheduler_cycle_duration_seconds_count", &[]).is_some_and(|n| n > 0.0));
        assert_eq!(value("ftsd_metrics_links_dropped", &[]), Some(0.0));
        assert_eq!(
            value(
                "ftsd_transfer_duration_seconds_count",
                &[("state", "FINISHED")]
            ),
            Some(3.0)
        );
    }
    assert_eq!(
        server.client(pki, None).get("/metrics").unwrap().status,
        403
    );

    // A real Prometheus scrapes over HTTPS with a client certificate.
    prometheus_success_ratio(&server, pki);
}

/// `{"name", "labels", "value"}` per sample, or None where the parser is not installed
/// (CI installs it).
fn parse_openmetrics(text: &str) -> Option<Value> {
    // Python's indentation matters: no `\` line continuations here (they eat it).
    const PARSE: &str = "\
import sys, json
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        out.append({'name': s.name, 'labels': s.labels, 'value': s.value})
print(json.dumps(out))
";
    // Debian's python3-prometheus-client is in the system Python, which a python3 earlier on
    // the PATH (pyenv, a venv) may not see.
    let python = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let ok = Command::new(python)
        .args(["-c", "import prometheus_client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            !in_ci(),
            "python3-prometheus-client is missing (CI installs it)"
        );
        return None;
    }
    let mut child = Command::new(python)
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    // A parser that stops early closes its stdin: its status and stderr below say why.
    let _ = child.stdin.take().unwrap().write_all(text.as_bytes());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "OpenMetrics parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

/// Start Prometheus scraping the server every second, then ask it for the success ratio
/// per link: 3 finished of 4 → 0.75.
fn prometheus_success_ratio(server: &TestServer, pki: &TestPki) {
    if !require_tool("prometheus") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cred = pki.path("rc_user.pem");
    let config = [
        "global:".to_string(),
        "  scrape_interval: 1s".into(),
        "  evaluation_interval: 1s".into(),
        "scrape_configs:".into(),
        "  - job_name: ftsd".into(),
        "    scheme: https".into(),
        "    tls_config:".into(),
        format!("      ca_file: {}", pki.path("ca.pem").display()),
        format!("      cert_file: {}", cred.display()),
        format!("      key_file: {}", cred.display()),
        "    static_configs:".into(),
        format!("      - targets: ['localhost:{}']", server.port),
    ]
    .join("\n");
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let mut child = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let query = "sum by (source_se, dest_se) (ftsd_transfers_completed_total{state=\"FINISHED\"}) / \
                 sum by (source_se, dest_se) (ftsd_transfers_completed_total{state=~\"FINISHED|FAILED\"})";
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    let found = loop {
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(500));
        let out = Command::new("curl")
            .args(["-s", "--get", "--data-urlencode"])
            .arg(format!("query={query}"))
            .arg(format!("http://127.0.0.1:{port}/api/v1/query"))
            .output()
            .unwrap();
        last = String::from_utf8_lossy(&out.stdout).to_string();
        let Ok(v) = serde_json::from_str::<Value>(&last) else {
            continue;
        };
        let Some(result) = v["data"]["result"].as_array().filter(|r| !r.is_empty()) else {
            continue;
        };
        break Some(result.clone());
    };
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let result = found.unwrap_or_else(|| {
        panic!(
            "Prometheus found no success ratio: {last}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let row = result
        .iter()
        .find(|r| r["metric"]["source_se"] == "mock://src.example")
        .unwrap_or_else(|| panic!("{result:?}"));
    assert_eq!(row["metric"]["dest_se"], "mock://dst.example");
    assert_eq!(row["value"][1], "0.75", "{row}");
}

/// An ACTIVE file shows the bytes its transfer moved so far (REST `transferred`) and an
/// instantaneous throughput (ftsmon's file rows), before it finishes.
#[test]
fn active_files_report_progress() {
    let Some(pki) = pki() else { return };
    let server = engine_server(pki, |_| {});
    let client = user(&server, pki);
    let size = 8 << 20;
    let id = submit(
        &client,
        json!([transfer(
            &format!("mock://src.example/p?size={size}"),
            &format!("mock://dst.example/p?size_post={size}&time=4")
        )]),
        json!({}),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = None;
    while Instant::now() < deadline && seen.is_none() {
        std::thread::sleep(Duration::from_millis(200));
        let files = get(&client, &format!("/jobs/{id}/files"));
        let f = &files[0];
        let done = f["transferred"].as_u64().unwrap();
        if f["file_state"] == "ACTIVE" && done > 0 && done < size {
            let mon = get(&client, &format!("/ftsmon/jobs/{id}/files"));
            seen = Some((done, mon["files"]["items"][0].clone()));
        }
    }
    let (done, row) = seen.expect("the running transfer never showed partial progress");
    assert!(done < size);
    assert!(row["transferred"].as_u64().unwrap() > 0, "{row}");
    assert!(row.get("throughput_instant").is_some(), "{row}");
    let j = wait_job(&client, &id, Duration::from_secs(30));
    assert_eq!(j["job_state"], "FINISHED");
    assert_eq!(
        get(&client, &format!("/jobs/{id}/files"))[0]["transferred"],
        size
    );
}
