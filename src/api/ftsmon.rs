//! ftsmon's JSON API under `/ftsmon/` (also under `/fts3/ftsmon/`, the path nagios probes
//! and site scripts call on a legacy ftsmon), transfer logs over HTTPS, and `/metrics`.
//! Handlers parse the query string into a [`MonQuery`] and shape the service's views into
//! ftsmon's field names; trailing slashes are optional, as ftsmon's routes mix both.

use serde_json::{Map, Value, json};
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;

use super::{
    Ctx, Query,
    error::{ApiError, json_response},
    jobs::{file_json, job_json},
};
use crate::service::{
    ServiceError,
    metrics::CONTENT_TYPE,
    monitor::{MonQuery, PageReq, mon_time},
};

/// Largest transfer log served at once: logs of multi-hour transfers with debug output stay
/// far below; a bigger file is cut (its start is what explains a failure).
pub const MAX_LOG_BYTES: u64 = 16 * 1024 * 1024;

fn bad(m: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, m)
}

/// ftsmon's parameters. Like ftsmon, an unreadable `page` means the first page; unlike it,
/// a `time_window` or `page_size` that is not a number is refused (ftsmon silently used the
/// default, which hid typos).
pub fn parse_query(q: &Query) -> Result<MonQuery, ApiError> {
    let text = |k: &str| {
        q.get(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let list = |k: &str| {
        text(k).map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        })
    };
    let number = |k: &str| -> Result<Option<i64>, ApiError> {
        match text(k) {
            None => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .map(Some)
                .map_err(|_| bad(format!("{k} must be an integer, not \"{v}\""))),
        }
    };
    let flag = |k: &str| text(k).is_some_and(|v| v != "0" && v != "false");
    let page = match text("page").as_deref() {
        Some("all") => PageReq::All,
        Some(v) => v.parse::<i64>().map_or(PageReq::First, PageReq::Number),
        None => PageReq::First,
    };
    let page_size = match number("page_size")? {
        Some(n) if n >= 1 => Some(n as usize),
        Some(_) => return Err(bad("page_size must be positive")),
        None => None,
    };
    let orderby = text("orderby").map(|o| match o.strip_prefix('-') {
        Some(f) => (f.to_string(), true),
        None => (o, false),
    });
    Ok(MonQuery {
        vo: text("vo"),
        source_se: text("source_se"),
        dest_se: text("dest_se"),
        source_surl: text("source_surl"),
        dest_surl: text("dest_surl"),
        activity: text("activity"),
        hostname: text("hostname"),
        reason: text("reason"),
        state: list("state"),
        with_file: list("with_file"),
        time_window: number("time_window")?,
        page,
        page_size,
        orderby,
        only_summary: flag("only_summary"),
        file: number("file")?.and_then(|f| u64::try_from(f).ok()),
        action: text("action"),
        contains: text("contains"),
    })
}

fn ok<T: serde::Serialize + ?Sized>(value: &T) -> Result<Response, ApiError> {
    Ok(json_response(StatusCode::OK, value))
}

/// Dispatch `GET /ftsmon/<path>` (path without the prefix, no leading or trailing slash).
pub async fn get(ctx: &Ctx, path: &str, q: Query) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    let s = &ctx.service;
    let mq = parse_query(&q)?;
    let segments: Vec<&str> = path.split('/').filter(|x| !x.is_empty()).collect();
    match segments.as_slice() {
        ["overview"] => ok(&s.mon_overview(&user, &mq, false).await?),
        ["overview", "activities"] => ok(&s.mon_overview(&user, &mq, true).await?),
        ["series"] => ok(&s.mon_link_series(&user, &mq).await?),
        ["linkinfo"] => {
            let (Some(src), Some(dst)) = (&mq.source_se, &mq.dest_se) else {
                return Err(ApiError::not_found());
            };
            ok(&s.mon_linkinfo(&user, src, dst).await?)
        }
        ["jobs"] => ok(&s.mon_jobs(&user, &mq).await?),
        ["jobs", id] => {
            let (job, extra) = s.mon_job(&user, id, &mq).await?;
            let mut j = job_json(&job);
            for key in ["submit_time", "job_finished"] {
                retime(&mut j, key);
            }
            j.insert("expiry_time".into(), extra["expiry_time"].clone());
            j.insert("duration".into(), extra["duration"].clone());
            ok(&json!({"job": j, "states": extra["states"]}))
        }
        ["jobs", id, "files"] => {
            let (page, stats) = s.mon_job_files(&user, id, &mq).await?;
            let items: Vec<Value> = page
                .items
                .iter()
                .map(|(f, extra)| {
                    let mut m = file_json(f);
                    for key in [
                        "start_time",
                        "finish_time",
                        "staging_start",
                        "staging_finished",
                        "archive_start_time",
                        "archive_finish_time",
                    ] {
                        retime(&mut m, key);
                    }
                    if let Value::Object(extra) = extra {
                        m.extend(extra.clone());
                    }
                    Value::Object(m)
                })
                .collect();
            ok(&json!({
                "files": {
                    "count": page.count, "startIndex": page.start_index, "endIndex": page.end_index,
                    "page": page.page, "pageCount": page.page_count, "pageSize": page.page_size,
                    "items": items,
                },
                "stats": stats,
            }))
        }
        ["jobs", id, "files", file, "log"] => log(ctx, &user, id, file, None).await,
        ["jobs", id, "files", file, "retries", attempt, "log"] => {
            let attempt = attempt.parse::<u32>().map_err(|_| ApiError::not_found())?;
            log(ctx, &user, id, file, Some(attempt)).await
        }
        ["transfers"] => ok(&s.mon_transfers(&user, &mq).await?),
        ["optimizer"] => ok(&s.mon_optimizer(&user, &mq).await?),
        ["optimizer", "detailed"] => {
            let (Some(src), Some(dst)) = (q.get("source"), q.get("destination")) else {
                return Err(ApiError::not_found());
            };
            ok(&s.mon_optimizer_detail(&user, src, dst, &mq).await?)
        }
        ["optimizer", "series"] => {
            let (Some(src), Some(dst)) = (q.get("source"), q.get("destination")) else {
                return Err(ApiError::not_found());
            };
            ok(&s.mon_optimizer_series(&user, src, dst, &mq).await?)
        }
        ["errors"] => ok(&s.mon_errors(&user, &mq).await?),
        ["errors", "list"] => {
            let (errors, classification) = s.mon_error_reasons(&user, &mq).await?;
            ok(&json!({"errors": errors, "classification": classification}))
        }
        ["errors", "classes"] => {
            let rows: Vec<Value> = s
                .mon_error_classes(&user, &mq)
                .await?
                .into_iter()
                .map(|e| {
                    json!({"source_se": e.source_se, "dest_se": e.dest_se, "vo_name": e.vo_name,
                           "scope": e.class.scope, "phase": e.class.phase,
                           "category": e.class.category, "recoverable": e.class.recoverable,
                           "count": e.count})
                })
                .collect();
            ok(&rows)
        }
        ["stats"] => ok(&s.mon_stats(&user, &mq).await?),
        ["stats", "servers"] => {
            let servers = s.mon_servers(&user, &mq).await?;
            if q.get("format").map(String::as_str) == Some("sls") {
                Ok(sls(&servers))
            } else {
                ok(&servers)
            }
        }
        ["stats", "vo"] => ok(&s.mon_stats_vo(&user, &mq).await?),
        ["config", "server"] => ok(&s.mon_config_server(&user).await?),
        ["config", "storages"] => ok(&s.mon_config_storages(&user, &mq).await?),
        ["config", "ops"] => ok(&s.mon_config_ops(&user).await?),
        ["config", "links"] => ok(&s.mon_config_links(&user, &mq).await?),
        ["config", "activities"] => ok(&s.mon_config_activities(&user, None, &mq).await?),
        ["config", "activities", vo] => ok(&s.mon_config_activities(&user, Some(vo), &mq).await?),
        ["config", "audit"] => ok(&s.mon_config_audit(&user, &mq).await?),
        ["config", "gfal2"] => ok(&s.mon_config_gfal2(&user).await?),
        ["unique", what] => ok(&s.mon_unique(&user, what).await?),
        ["version"] => {
            let mut parts = env!("CARGO_PKG_VERSION").split('.');
            let mut next = || {
                parts
                    .next()
                    .and_then(|p| p.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            ok(&json!({"major": next(), "minor": next(), "patch": next()}))
        }
        _ => Err(ApiError::not_found()),
    }
}

/// Times in ftsmon's `...Z` form.
fn retime(m: &mut Map<String, Value>, key: &str) {
    if let Some(Value::String(t)) = m.get_mut(key) {
        if !t.ends_with('Z') {
            t.push('Z');
        }
    }
}

/// A transfer log, as text, to a caller allowed to see the job.
async fn log(
    ctx: &Ctx,
    user: &crate::model::identity::User,
    job_id: &str,
    file: &str,
    attempt: Option<u32>,
) -> Result<Response, ApiError> {
    use tokio::io::AsyncReadExt;
    let file_id = file.parse::<u64>().map_err(|_| ApiError::not_found())?;
    let path = ctx
        .service
        .mon_log_path(user, job_id, file_id, attempt, ctx.service.log_dir())
        .await?;
    let gone = |_| ApiError::from(ServiceError::NotFound("No such log".into()));
    let mut body = Vec::new();
    tokio::fs::File::open(&path)
        .await
        .map_err(gone)?
        .take(MAX_LOG_BYTES)
        .read_to_end(&mut body)
        .await
        .map_err(gone)?;
    let mut response = Response::new(body.into());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(response)
}

/// `stats/servers?format=sls`: the SLS XML of ftsmon's `slsfy`.
fn sls(servers: &std::collections::BTreeMap<String, Value>) -> Response {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let (mut total, mut down) = (0u64, 0u64);
    let mut info = String::new();
    let mut running = std::collections::BTreeMap::<&str, u64>::new();
    let (mut active, mut staging, mut staging_queued) = (0, 0, 0);
    for (host, s) in servers {
        active += s["active"].as_u64().unwrap_or(0);
        staging += s["started"].as_u64().unwrap_or(0);
        staging_queued += s["staging"].as_u64().unwrap_or(0);
        if let Some(services) = s["services"].as_object() {
            for (name, st) in services {
                let is_running = st["status"] == "running";
                if is_running {
                    *running.entry(name.as_str()).or_default() += 1;
                }
                if name == "fts_backup" {
                    continue;
                }
                let drain = st["drain"].as_u64().unwrap_or(0) != 0;
                let (colour, status) = if drain {
                    ("orange", "draining")
                } else if !is_running {
                    down += 1;
                    ("red", "offline")
                } else {
                    ("green", "running")
                };
                total += 1;
                info.push_str(&format!(
                    "<font style=\"color:{colour}\">{} {}</font>Status: {status}<br />",
                    esc(host),
                    esc(name)
                ));
            }
        }
    }
    let availability = if total > 0 {
        (total - down) as f64 * 100.0 / total as f64
    } else {
        0.0
    };
    let status = if availability == 0.0 {
        "unavailable"
    } else if availability >= 75.0 {
        "available"
    } else {
        "degraded"
    };
    let numeric = |name: &str, v: u64| format!("<numericvalue name=\"{name}\">{v}</numericvalue>");
    let body = format!(
        "<serviceupdate xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
         xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" xmlns=\"http://sls.cern.ch/SLS/XML/update\">\
         <id>FTS3_Server_Info</id><availabilityinfo>{info}</availabilityinfo><status>{status}</status>\
         <data>{}{}{}{}{}{}</data><timestamp>{}</timestamp></serviceupdate>",
        numeric("host_count", servers.len() as u64),
        numeric(
            "fts_server_running",
            running.get("fts_server").copied().unwrap_or(0)
        ),
        numeric(
            "fts_bringonline_running",
            running.get("fts_bringonline").copied().unwrap_or(0)
        ),
        numeric("active", active),
        numeric("staging", staging),
        numeric("staging_queued", staging_queued),
        mon_time(crate::model::time::now()).trim_end_matches('Z'),
    );
    let mut response = Response::new(body.into());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    response
}

/// `GET /metrics`.
pub async fn metrics(ctx: &Ctx) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    let text = ctx.service.metrics_text(&user).await?;
    let mut response = Response::new(text.into());
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    Ok(response)
}
