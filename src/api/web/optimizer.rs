//! The optimizer: the links it decided on in the window (`/web/optimizer`, with the last
//! decision's figures) and one link (`/web/optimizer/detail?source=&destination=`): three
//! plots (decision against throughput and EMA, against success rate, and the mean file size
//! with its spread), the storages' active transfers against their limits, and the decisions
//! with their rationale.

use askama::Template;
use serde_json::Value;

use super::{Layout, Pager, Rendered, Req, link, mib_s, render};
use crate::api::error::ApiError;

const MIB: f64 = 1024.0 * 1024.0;

fn time(v: &Value) -> String {
    v.as_str()
        .map(|t| t.trim_end_matches('Z').replace('T', " "))
        .unwrap_or_default()
}

fn f64_of(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// The window select of the optimizer pages: "" is the default half hour.
fn windows(current: Option<i64>) -> Vec<(String, String, bool)> {
    let mut out = vec![("".to_string(), "30 min".to_string(), current.is_none())];
    for h in super::WINDOWS {
        out.push((h.to_string(), format!("{h} h"), current == Some(h)));
    }
    out
}

pub struct LinkRow {
    pub source_se: String,
    pub dest_se: String,
    pub href: String,
    pub datetime: String,
    pub decision: i64,
    pub running: i64,
    pub queue: i64,
    pub success: String,
    pub throughput: String,
    pub ema: String,
}

#[derive(Template)]
#[template(path = "web/optimizer.html", blocks = ["live"])]
pub struct ListPage {
    pub layout: Layout,
    pub source_se: String,
    pub dest_se: String,
    pub windows: Vec<(String, String, bool)>,
    pub rows: Vec<LinkRow>,
    pub pager: Pager,
}

pub async fn list(req: &Req<'_>, partial: bool) -> Result<Rendered, ApiError> {
    let page = req.ctx.service.mon_optimizer(&req.user, &req.mq).await?;
    let int = |v: &Value| v.as_i64().unwrap_or(0);
    let rows = page
        .items
        .iter()
        .map(|r| {
            let s = r["source_se"].as_str().unwrap_or_default().to_string();
            let d = r["dest_se"].as_str().unwrap_or_default().to_string();
            LinkRow {
                href: link(
                    "/web/optimizer/detail",
                    &[("source", s.as_str()), ("destination", d.as_str())],
                ),
                source_se: s,
                dest_se: d,
                datetime: time(&r["datetime"]),
                decision: int(&r["active"]),
                running: int(&r["actual_active"]),
                queue: int(&r["queue_size"]),
                success: format!("{:.1} %", f64_of(&r["success"])),
                throughput: mib_s(f64_of(&r["throughput"]) / MIB),
                ema: mib_s(f64_of(&r["ema"]) / MIB),
            }
        })
        .collect();
    let view = ListPage {
        layout: req.layout("Optimizer", "optimizer", req.here("/ftsmon/optimizer", &[])),
        source_se: req.param("source_se"),
        dest_se: req.param("dest_se"),
        windows: windows(req.mq.time_window),
        pager: Pager::new(req, "/web/optimizer", &page),
        rows,
    };
    render(&view, |v| v.as_live().render(), partial)
}

pub struct Decision {
    pub datetime: String,
    pub decision: i64,
    pub running: i64,
    pub queue: i64,
    pub success: String,
    pub throughput: String,
    pub ema: String,
    pub diff: i64,
    /// `up`, `down` or "" (the sign of `diff`), to tint the row.
    pub class: &'static str,
    pub rationale: String,
}

pub struct Storage {
    pub storage: String,
    pub active: u64,
    pub max_active: String,
}

#[derive(Template)]
#[template(path = "web/optimizer_detail.html", blocks = ["live"])]
pub struct DetailPage {
    pub layout: Layout,
    pub source: String,
    pub destination: String,
    pub windows: Vec<(String, String, bool)>,
    /// The plots' data (`/ftsmon/optimizer/series`).
    pub series: String,
    pub storages: Vec<Storage>,
    pub rows: Vec<Decision>,
    pub pager: Pager,
}

pub async fn detail(req: &Req<'_>, partial: bool) -> Result<Rendered, ApiError> {
    let (source, destination) = (req.param("source"), req.param("destination"));
    if source.is_empty() || destination.is_empty() {
        return Err(ApiError::new(
            warp::http::StatusCode::BAD_REQUEST,
            "source and destination are required",
        ));
    }
    let v = req
        .ctx
        .service
        .mon_optimizer_detail(&req.user, &source, &destination, &req.mq)
        .await?;
    let int = |v: &Value| v.as_i64().unwrap_or(0);
    let evolution = &v["evolution"];
    let rows = evolution["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|e| {
                    let diff = int(&e["diff"]);
                    Decision {
                        datetime: time(&e["datetime"]),
                        decision: int(&e["active"]),
                        running: int(&e["actual_active"]),
                        queue: int(&e["queue_size"]),
                        success: format!("{:.1} %", f64_of(&e["success"])),
                        throughput: mib_s(f64_of(&e["throughput"]) / MIB),
                        ema: mib_s(f64_of(&e["ema"]) / MIB),
                        diff,
                        class: match diff.signum() {
                            1 => "up",
                            -1 => "down",
                            _ => "",
                        },
                        rationale: e["rationale"].as_str().unwrap_or_default().to_string(),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let storages = v["storage_info"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|s| Storage {
                    storage: s["storage"].as_str().unwrap_or_default().to_string(),
                    active: s["active"].as_u64().unwrap_or(0),
                    max_active: s["max_active"]
                        .as_i64()
                        .map(|m| m.to_string())
                        .unwrap_or_else(|| "–".into()),
                })
                .collect()
        })
        .unwrap_or_default();
    let pager = Pager {
        count: evolution["count"].as_u64().unwrap_or(0) as usize,
        start: evolution["startIndex"].as_u64().unwrap_or(0) as usize,
        end: evolution["endIndex"].as_u64().unwrap_or(0) as usize,
        page: evolution["page"].as_u64().unwrap_or(1) as usize,
        pages: evolution["pageCount"].as_u64().unwrap_or(1) as usize,
        prev: None,
        next: None,
    };
    let to = |n: usize| req.here("/web/optimizer/detail", &[("page", &n.to_string())]);
    let pager = Pager {
        prev: (pager.page > 1).then(|| to(pager.page - 1)),
        next: (pager.page < pager.pages).then(|| to(pager.page + 1)),
        ..pager
    };
    let window = req
        .mq
        .time_window
        .map(|h| h.to_string())
        .unwrap_or_default();
    let mut layout = req.layout(
        format!("Optimizer: {source} → {destination}"),
        "optimizer",
        req.here("/ftsmon/optimizer/detailed", &[]),
    );
    layout.plots = true;
    let view = DetailPage {
        layout,
        series: link(
            "/ftsmon/optimizer/series",
            &[
                ("source", source.as_str()),
                ("destination", destination.as_str()),
                ("time_window", window.as_str()),
            ],
        ),
        source,
        destination,
        windows: windows(req.mq.time_window),
        storages,
        rows,
        pager,
    };
    render(&view, |v| v.as_live().render(), partial)
}
