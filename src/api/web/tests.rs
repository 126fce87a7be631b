//! Render tests: every page against a store seeded with hostile strings (markup and quotes
//! in storage names, SURLs, reasons, VOs, DNs), checked for escaping and for the values a
//! user reads; authorization of the job page; the live block alone for htmx.

use std::sync::Arc;

use http_body_util::BodyExt;
use warp::http::StatusCode;

use super::*;
use crate::{
    api::{Ctx, Peer},
    auth::CertIdentity,
    model::{
        job::{
            FileState, JobType,
            fixtures::{file, job},
        },
        lifecycle::{Failure, Success},
        monitor::RowKey,
        optimizer::Decision,
        transfer::{Caps, Claim, Event},
    },
    service::{Service, Settings},
    store::{RedbStore, Store},
};

/// Markup that must never reach a page unescaped.
const SCRIPT: &str = "<script>alert(1)</script>";
const ADMIN_DN: &str = "/O=ftsd/CN=admin";
const OWNER_DN: &str = "/O=ftsd/CN=<script>alert('dn')</script>";
const SRC: &str = "mock://src.example";
const DST: &str = "mock://\"dst\"><b>x</b>";
const VO: &str = "vo\"><i>";
const REASON: &str = "DESTINATION [17] <img src=x onerror=alert(2)> \"exists\" & more";
const JOB: &str = "job-0001";
/// A user without any grant: sees only their own jobs.
const RC_OTHER: &str = "/O=Example/CN=Rc Other";

pub struct Seeded {
    _dir: tempfile::TempDir,
    pub service: Arc<Service>,
    pub finished_id: u64,
    pub active_id: u64,
}

fn peer(dn: &str) -> Peer {
    Peer(Some(Arc::new(CertIdentity {
        user_dn: dn.to_string(),
        client_dn: dn.to_string(),
        user_issuer_dn: "/O=ftsd/CN=CA".into(),
        proxies: Vec::new(),
        limited: false,
        not_after: i64::MAX,
        key_bits: None,
        fqans: Vec::new(),
        chain: Arc::new(Vec::new()),
    })))
}

impl Seeded {
    pub fn ctx(&self, dn: &str) -> Ctx {
        Ctx {
            service: self.service.clone(),
            peer: peer(dn),
            authorization: None,
            body: crate::api::BodyLimits::new(
                &crate::config::LimitsConfig::default()
                    .resolve(1024)
                    .unwrap(),
            ),
        }
    }
}

/// A store with one job of four files (FINISHED with a log, FAILED after a retry, ACTIVE
/// with progress, SUBMITTED), optimizer decisions on the link, and a host's heartbeat.
pub async fn seeded() -> Seeded {
    let dir = tempfile::tempdir().unwrap();
    let pki = crate::devpki::DevPki::create(&dir.path().join("pki")).unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.path().join("data")).unwrap());
    let auth = Arc::new(
        crate::auth::Authenticator::load(
            &pki.ca_dir,
            &pki.voms_dir,
            rustls::crypto::aws_lc_rs::default_provider()
                .signature_verification_algorithms
                .all,
        )
        .unwrap(),
    );
    let log_dir = dir.path().join("logs");
    std::fs::create_dir_all(&log_dir).unwrap();
    let mut settings = Settings::new(ADMIN_DN.into(), dir.path().join("proxies"));
    settings.monitoring.log_dir = log_dir.clone();
    // The audit opted in (it shows DNs), the gfal2 files not.
    settings.monitoring.show_config_audit = true;
    let service = Arc::new(Service::new(store.clone(), auth, settings));

    let now = crate::model::time::now();
    let mut j = job(JobType::Normal);
    j.job_id = JOB.into();
    j.user_dn = OWNER_DN.into();
    j.cred_id = "owner-cred".into();
    j.vo_name = VO.into();
    j.source_se = Some(SRC.into());
    j.dest_se = Some(DST.into());
    j.submit_time = now - 600;
    j.retry = 1;
    let files: Vec<_> = (0..4)
        .map(|i| {
            let mut f = file(0, i, FileState::Submitted);
            f.job_id = JOB.into();
            f.vo_name = VO.into();
            f.source_se = SRC.into();
            f.dest_se = DST.into();
            f.source_surl = format!("{SRC}/in/{i}{SCRIPT}?a=1&b=2");
            f.dest_surl = format!("mock://dst/out/{i}\"><script>");
            f.user_filesize = 1048576.0;
            f
        })
        .collect();
    store.submit((j, files)).await.unwrap().unwrap();
    let (_, files) = store.job_with_files(JOB).await.unwrap().unwrap();
    let ids: Vec<u64> = files.iter().map(|f| f.file_id).collect();
    let claim = Claim {
        file_ids: ids[..3].to_vec(),
        host: "node<1>".into(),
        now: now - 300,
        caps: Caps::default(),
    };
    assert_eq!(store.claim(&claim).await.unwrap().len(), 3);
    let log = log_dir.join("transfer-0.log");
    std::fs::write(&log, "log of <file> 0\n").unwrap();
    let failure = Failure {
        reason: REASON.into(),
        scope: "DESTINATION".into(),
        phase: "TRANSFER_PREPARATION".into(),
        class: "FILE_EXISTS".into(),
        recoverable: true,
        dst_file: None,
    };
    let started = |id: u64, log: Option<String>| Event::Started {
        file_id: id,
        log_file: log,
    };
    store
        .apply_events(
            &[
                started(ids[0], Some(log.display().to_string())),
                started(ids[1], None),
                started(ids[2], None),
            ],
            "node<1>",
            now - 200,
        )
        .await
        .unwrap();
    store
        .apply_events(
            &[
                Event::Finished {
                    file_id: ids[0],
                    success: Success {
                        filesize: 1048576,
                        duration: 2.0,
                        throughput: 0.5,
                    },
                },
                Event::Failed {
                    file_id: ids[1],
                    failure: failure.clone(),
                },
            ],
            "node<1>",
            now - 100,
        )
        .await
        .unwrap();
    // The retry of file 1 runs and fails for good.
    let claim = Claim {
        file_ids: vec![ids[1]],
        host: "node<1>".into(),
        now: now - 60,
        caps: Caps::default(),
    };
    assert_eq!(store.claim(&claim).await.unwrap().len(), 1);
    store
        .apply_events(
            &[
                started(ids[1], None),
                Event::Failed {
                    file_id: ids[1],
                    failure: Failure {
                        recoverable: false,
                        ..failure
                    },
                },
            ],
            "node<1>",
            now - 30,
        )
        .await
        .unwrap();
    let key = RowKey {
        source_se: SRC.into(),
        dest_se: DST.into(),
        vo_name: VO.into(),
        activity: "default".into(),
    };
    let at = std::time::Instant::now();
    service.progress().update(
        ids[2],
        &key,
        256 * 1024,
        at - std::time::Duration::from_secs(2),
    );
    service.progress().update(ids[2], &key, 512 * 1024, at);
    for (i, t) in [(1, now - 240), (2, now - 120), (3, now - 10)] {
        store
            .set_optimizer(&Decision {
                source_se: SRC.into(),
                dest_se: DST.into(),
                datetime: t * 1_000_000,
                active: i,
                nostreams: 1,
                ema: 1.5 * 1048576.0,
                throughput: 2.0 * 1048576.0,
                success: 50.0,
                rationale: Some(format!("step {i} {SCRIPT}")),
                diff: 1,
                actual_active: 1,
                queue_size: 1,
                filesize_avg: 1048576.0,
                filesize_stddev: 1000.0,
                retry_count: 0,
            })
            .await
            .unwrap();
    }
    store.beat_host("node<1>", "fts_server", now).await.unwrap();
    let link = crate::model::config::LinkConfig {
        source: SRC.into(),
        destination: DST.into(),
        symbolicname: format!("link{SCRIPT}"),
        min_active: 2,
        max_active: 42,
        optimizer_mode: None,
        tcp_buffer_size: None,
        nostreams: None,
        no_delegation: None,
    };
    let audit = crate::model::audit::AuditEntry {
        datetime: now,
        dn: OWNER_DN.into(),
        config: format!("{{\"symbolicname\": \"link{SCRIPT}\"}}"),
        action: "insert".into(),
    };
    store
        .set_link(&link.symbolicname, &link, &vec![], &audit)
        .await
        .unwrap();
    Seeded {
        _dir: dir,
        service,
        finished_id: ids[0],
        active_id: ids[2],
    }
}

/// GET `path?query` as `dn`: status and body.
pub async fn page(s: &Seeded, dn: &str, path: &str, query: &[(&str, &str)]) -> (u16, String) {
    page_as(s, dn, path, query, false).await
}

async fn page_as(
    s: &Seeded,
    dn: &str,
    path: &str,
    query: &[(&str, &str)],
    partial: bool,
) -> (u16, String) {
    let q: Query = query
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let response = get(&s.ctx(dn), path, q, partial).await;
    let status = response.status().as_u16();
    if status == 200 {
        let csp = response
            .headers()
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(csp.starts_with("default-src 'self'"), "{path}: CSP {csp}");
    }
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// No hostile markup survives; the escaped forms are what the page shows.
fn assert_escaped(path: &str, body: &str) {
    for raw in [
        "<script>alert",
        "<img src=x",
        "<b>x</b>",
        "\"><i>",
        "\"><script>",
    ] {
        assert!(!body.contains(raw), "{path}: unescaped {raw:?} in\n{body}");
    }
}

#[tokio::test]
async fn the_overview_shows_the_links_counts_and_escapes_their_names() {
    let s = seeded().await;
    let (status, body) = page(&s, ADMIN_DN, "", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_escaped("/web/", &body);
    // The row: names escaped as text, and as query values in the links.
    assert!(
        body.contains("mock://&#34;dst&#34;&#62;&#60;b&#62;x&#60;/b&#62;"),
        "{body}"
    );
    assert!(body.contains("vo&#34;&#62;&#60;i&#62;"), "{body}");
    assert!(
        body.contains("dest_se=mock%3A%2F%2F%22dst%22%3E%3Cb%3Ex%3C%2Fb%3E"),
        "{body}"
    );
    // One finished, one failed (the retry counts once): 50 %; one active, one queued.
    assert!(body.contains("50.0 %"), "{body}");
    assert!(body.contains(">1</a></td>"), "{body}");
    assert!(
        body.contains("class=\"bad\""),
        "50 % is below the bad rate: {body}"
    );
    // The plot's data, the live block's refresh and the static files.
    assert!(body.contains("data-series=\"/ftsmon/series?"), "{body}");
    assert!(body.contains("hx-trigger=\"every 5s\""), "{body}");
    assert!(body.contains("/web/static/htmx.min."), "{body}");
    // The caller's DN in the footer.
    assert!(body.contains(ADMIN_DN), "{body}");

    // htmx asks for the live block only.
    let (status, live) = page_as(&s, ADMIN_DN, "", &[], true).await;
    assert_eq!(status, 200);
    assert!(live.trim_start().starts_with("<div id=\"live\""), "{live}");
    assert!(!live.contains("<html"), "{live}");
    assert!(live.contains("50.0 %"), "{live}");
}

#[tokio::test]
async fn static_files_are_served_under_hashed_names_only() {
    let s = seeded().await;
    let (_, body) = page(&s, ADMIN_DN, "", &[]).await;
    let start = body.find("/web/static/htmx.min.").unwrap();
    let name = &body[start + "/web/static/".len()..];
    let name = &name[..name.find('"').unwrap()];
    let response = get(
        &s.ctx(ADMIN_DN),
        &format!("static/{name}"),
        Query::new(),
        false,
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let response = get(&s.ctx(ADMIN_DN), "static/htmx.min.js", Query::new(), false).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_unknown_page_is_an_html_404() {
    let s = seeded().await;
    let (status, body) = page(&s, ADMIN_DN, "nowhere", &[]).await;
    assert_eq!(status, 404);
    assert!(body.contains("<title>404 Not Found"), "{body}");
}

#[test]
fn links_encode_their_values_and_drop_empty_ones() {
    assert_eq!(
        link(
            "/web/jobs",
            &[("vo", "a&b=<c>"), ("dest_se", ""), ("x", "é")]
        ),
        "/web/jobs?vo=a%26b%3D%3Cc%3E&x=%C3%A9"
    );
    assert_eq!(link::<&str, &str>("/web/", &[]), "/web/");
    assert_eq!(job_link("a/b?c"), "/web/jobs/a%2Fb%3Fc");
}

#[test]
fn numbers_read_like_ftsmon() {
    assert_eq!(bytes(512), "512 B");
    assert_eq!(bytes(1536), "1.5 KiB");
    assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    assert_eq!(mib_s(0.0), "");
    assert_eq!(mib_s(1.234), "1.23");
    assert_eq!(percent(None), "–");
    assert_eq!(percent(Some(97.25)), "97.2 %");
    assert_eq!(when(0), "1970-01-01 00:00:00");
}

#[tokio::test]
async fn the_job_pages_show_files_retries_progress_and_logs() {
    let s = seeded().await;
    // The list, filtered on a file state through a link of the overview.
    let (status, body) = page(&s, ADMIN_DN, "jobs", &[("with_file", "FAILED")]).await;
    assert_eq!(status, 200, "{body}");
    assert_escaped("/web/jobs", &body);
    assert!(body.contains("href=\"/web/jobs/job-0001\""), "{body}");
    assert!(body.contains("FAILED 1 · FINISHED 1"), "{body}");
    // The job-id box.
    let response = get(
        &s.ctx(ADMIN_DN),
        "jobs",
        [("job_id".to_string(), " a b".to_string())].into(),
        false,
    )
    .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()["location"], "/web/jobs/a+b");

    // The job: facts with the owner's DN escaped, every file, the retry and its reason,
    // the running file's progress, the finished file's log link.
    let (status, body) = page(&s, ADMIN_DN, "jobs/job-0001", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_escaped("/web/jobs/job-0001", &body);
    assert!(
        body.contains("/O=ftsd/CN=&#60;script&#62;alert(&#39;dn&#39;)&#60;/script&#62;"),
        "{body}"
    );
    for state in ["FINISHED", "FAILED", "ACTIVE", "SUBMITTED"] {
        assert!(
            body.contains(&format!("class=\"state state-{state}\"")),
            "{state}: {body}"
        );
    }
    assert!(
        body.contains(
            "DESTINATION [17] &#60;img src=x onerror=alert(2)&#62; &#34;exists&#34; &#38; more"
        ),
        "{body}"
    );
    assert!(body.contains("retry 1"), "{body}");
    assert!(
        body.contains("<progress value=\"524288\" max=\"1048576\">50 %</progress>"),
        "{body}"
    );
    assert!(
        body.contains(&format!(
            "href=\"/ftsmon/jobs/job-0001/files/{}/log\"",
            s.finished_id
        )),
        "{body}"
    );
    assert!(body.contains(&format!("id=\"file-{}\"", s.active_id)));
    // Still running: the live block polls.
    assert!(body.contains("hx-trigger=\"every 5s\""), "{body}");

    // Another user gets a 403 page, and no detail of the job.
    let (status, body) = page(&s, RC_OTHER, "jobs/job-0001", &[]).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("Not enough permissions"), "{body}");
    assert!(!body.contains("src.example"), "{body}");
    let (status, _) = page(&s, RC_OTHER, "jobs/nope", &[]).await;
    assert_eq!(status, 404);
    // And their job list does not show it.
    let (status, body) = page(&s, RC_OTHER, "jobs", &[]).await;
    assert_eq!(status, 200);
    assert!(!body.contains("job-0001"), "{body}");
    assert!(body.contains("No job matches."), "{body}");

    // Transfers, filtered on the failure's exact reason (the errors page links so).
    let (status, body) = page(
        &s,
        ADMIN_DN,
        "transfers",
        &[("state", "FAILED"), ("reason", REASON)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_escaped("/web/transfers", &body);
    assert!(body.contains("class=\"state-FAILED\""), "{body}");
    assert!(body.contains("1–1 of 1"), "{body}");
    assert!(body.contains("value=\"DESTINATION [17] &#60;img"), "{body}");
}

#[tokio::test]
async fn the_optimizer_pages_list_links_and_plot_a_links_decisions() {
    let s = seeded().await;
    let (status, body) = page(&s, ADMIN_DN, "optimizer", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_escaped("/web/optimizer", &body);
    assert!(
        body.contains("href=\"/web/optimizer/detail?source=mock%3A%2F%2Fsrc.example&#38;destination=mock%3A%2F%2F%22dst%22%3E%3Cb%3Ex%3C%2Fb%3E\""),
        "{body}"
    );
    // The last decision: 3, 50 % success, 2 MiB/s, EMA 1.5 MiB/s.
    assert!(body.contains("<td class=\"num\">3</td>"), "{body}");
    assert!(body.contains("2.00") && body.contains("1.50"), "{body}");

    let q = [("source", SRC), ("destination", DST)];
    let (status, body) = page(&s, ADMIN_DN, "optimizer/detail", &q).await;
    assert_eq!(status, 200, "{body}");
    assert_escaped("/web/optimizer/detail", &body);
    for kind in ["opt-throughput", "opt-success", "opt-filesize"] {
        assert!(
            body.contains(&format!("data-kind=\"{kind}\"")),
            "{kind}: {body}"
        );
    }
    assert!(
        body.contains("data-series=\"/ftsmon/optimizer/series?source=mock%3A%2F%2Fsrc.example&#38;destination=mock%3A%2F%2F%22dst%22%3E%3Cb%3Ex%3C%2Fb%3E\""),
        "{body}"
    );
    assert!(
        body.contains("step 3 &#60;script&#62;alert(1)&#60;/script&#62;"),
        "{body}"
    );
    assert!(body.contains("/web/static/uPlot.iife.min."), "{body}");
    // Both storages with their active transfers (the READY and ACTIVE file count: 1).
    assert!(
        body.contains("<td>mock://src.example</td><td class=\"num\">1</td>"),
        "{body}"
    );
    let (status, _) = page(&s, ADMIN_DN, "optimizer/detail", &[("source", SRC)]).await;
    assert_eq!(status, 400);

    // The plots' data: uPlot columns, oldest first.
    let series = s
        .service
        .mon_optimizer_series(
            &s.ctx(ADMIN_DN).user().await.unwrap(),
            SRC,
            DST,
            &MonQuery::default(),
        )
        .await
        .unwrap();
    let cols = series.as_array().unwrap();
    assert_eq!(cols.len(), 8, "{series}");
    assert_eq!(cols[1], serde_json::json!([1, 2, 3]), "{series}");
    assert!(cols[0][0].as_f64().unwrap() < cols[0][2].as_f64().unwrap());
    assert_eq!(cols[5][0], 50.0);
}

#[tokio::test]
async fn the_error_pages_count_per_link_class_and_reason() {
    let s = seeded().await;
    let (status, body) = page(&s, ADMIN_DN, "errors", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_escaped("/web/errors", &body);
    assert!(
        body.contains("<td>DESTINATION</td><td>TRANSFER_PREPARATION</td><td>FILE_EXISTS</td><td>no</td><td class=\"num\">1</td>"),
        "{body}"
    );
    assert!(
        body.contains("href=\"/web/errors/list?source_se=mock%3A%2F%2Fsrc.example"),
        "{body}"
    );

    let q = [("source_se", SRC), ("dest_se", DST)];
    let (status, body) = page(&s, ADMIN_DN, "errors/list", &q).await;
    assert_eq!(status, 200, "{body}");
    assert_escaped("/web/errors/list", &body);
    assert!(
        body.contains(
            "DESTINATION [17] &#60;img src=x onerror=alert(2)&#62; &#34;exists&#34; &#38; more</a>"
        ),
        "{body}"
    );
    // The reason links to its failed transfers, the reason query-encoded.
    assert!(
        body.contains("/web/transfers?state=FAILED&#38;source_se=mock%3A%2F%2Fsrc.example"),
        "{body}"
    );
    assert!(
        body.contains("reason=DESTINATION+%5B17%5D+%3Cimg+src%3Dx+onerror%3Dalert%282%29%3E+%22exists%22+%26+more"),
        "{body}"
    );
    assert!(
        body.contains("<tr><td>DESTINATION</td><td class=\"num\">1</td></tr>"),
        "{body}"
    );
    // A user who sees only their own jobs sees no reasons.
    let (status, body) = page(&s, RC_OTHER, "errors/list", &q).await;
    assert_eq!(status, 200);
    assert!(!body.contains("onerror"), "{body}");
}

#[tokio::test]
async fn the_statistics_page_shows_states_vos_and_hosts() {
    let s = seeded().await;
    let (status, body) = page(&s, ADMIN_DN, "stats", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_escaped("/web/stats", &body);
    assert!(
        body.contains("<th>finished</th><td class=\"num\">1</td>"),
        "{body}"
    );
    assert!(body.contains("<td>vo&#34;&#62;&#60;i&#62;</td>"), "{body}");
    assert!(body.contains("<td>node&#60;1&#62;</td>"), "{body}");
    assert!(
        body.contains("<td>fts_server</td><td>running</td>"),
        "{body}"
    );
    assert!(body.contains("0000–FFFF"), "{body}");
}

#[tokio::test]
async fn the_configuration_page_shows_links_and_only_the_opted_in_audit() {
    let s = seeded().await;
    let (status, body) = page(&s, ADMIN_DN, "config", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_escaped("/web/config", &body);
    assert!(
        body.contains("<td>link&#60;script&#62;alert(1)&#60;/script&#62;</td>"),
        "{body}"
    );
    assert!(body.contains("<td>42</td>"), "{body}");
    // The audit is on in this store: the entry with its (escaped) DN.
    assert!(body.contains("id=\"audit\""), "{body}");
    assert!(
        body.contains("CN=&#60;script&#62;alert(&#39;dn&#39;)"),
        "{body}"
    );
    // gfal2 is off: said so, nothing read.
    assert!(body.contains("id=\"gfal2-note\""), "{body}");
    assert!(body.contains("show_gfal2_config"), "{body}");
}
