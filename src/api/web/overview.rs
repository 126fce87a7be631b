//! The overview (`/web/`): one row per link and VO (and activity, with `activities=1`) with
//! the counts now and in the window, the success rate, the live and the optimizer
//! throughput; each count links to the jobs with files in that state, each row to its errors
//! and its optimizer page. A plot above shows finished and failed transfers per minute.

use askama::Template;

use super::{Filters, Layout, Pager, Rendered, Req, bytes, link, mib_s, percent, render};
use crate::api::error::ApiError;
use crate::service::monitor::OverviewRow;

/// Below this success rate (percent, over the window) a row is marked bad.
pub const BAD_RATE_PERCENT: f64 = 80.0;

/// A count that links to the jobs behind it.
pub struct Count {
    pub n: u64,
    pub href: String,
}

/// One row of the table.
pub struct Row {
    pub source_se: String,
    pub dest_se: String,
    pub vo_name: String,
    pub activity: String,
    /// Links that filter the overview on the source, destination, VO.
    pub source_href: String,
    pub dest_href: String,
    pub vo_href: String,
    pub submitted: Count,
    pub active: Count,
    pub ready: u64,
    pub staging: Count,
    pub started: Count,
    pub archiving: Count,
    pub finished: Count,
    pub failed: Count,
    pub canceled: Count,
    pub rate: String,
    pub throughput: String,
    pub current: String,
    pub bytes: String,
    /// `bad`, `idle` or "" (see the legend).
    pub class: &'static str,
    pub errors_href: String,
    pub optimizer_href: String,
}

#[derive(Template)]
#[template(path = "web/overview.html", blocks = ["live"])]
pub struct OverviewPage {
    pub layout: Layout,
    pub filters: Filters,
    pub activities: bool,
    pub rows: Vec<Row>,
    pub total: Row,
    pub pager: Pager,
    /// Column header links that sort the table (`orderby`).
    pub sort: Vec<(&'static str, String)>,
    /// The per-minute series of the plot, and the window it spans in seconds.
    pub series: String,
    pub window_secs: i64,
    pub bad_rate: f64,
}

fn class(r: &OverviewRow) -> &'static str {
    let terminal = r.finished + r.failed;
    if terminal > 0 && r.rate.is_some_and(|rate| rate < BAD_RATE_PERCENT) {
        "bad"
    } else if r.submitted > 0 && r.active + r.ready == 0 {
        "idle"
    } else {
        ""
    }
}

fn row(req: &Req<'_>, r: &OverviewRow) -> Row {
    let activity = r.activity.clone().unwrap_or_default();
    let jobs = |state: &str, n: u64| Count {
        n,
        href: link(
            "/web/jobs",
            &[
                ("with_file", state),
                ("source_se", r.source_se.as_str()),
                ("dest_se", r.dest_se.as_str()),
                ("vo", r.vo_name.as_str()),
                ("time_window", &req.mq.time_window.unwrap_or(1).to_string()),
            ],
        ),
    };
    let filter = |key: &str, value: &str| req.here("/web/", &[(key, value), ("page", "")]);
    Row {
        source_se: r.source_se.clone(),
        dest_se: r.dest_se.clone(),
        vo_name: r.vo_name.clone(),
        activity,
        source_href: filter("source_se", &r.source_se),
        dest_href: filter("dest_se", &r.dest_se),
        vo_href: filter("vo", &r.vo_name),
        submitted: jobs("SUBMITTED", r.submitted),
        active: jobs("ACTIVE,READY", r.active),
        ready: r.ready,
        staging: jobs("STAGING", r.staging),
        started: jobs("STARTED", r.started),
        archiving: jobs("ARCHIVING", r.archiving),
        finished: jobs("FINISHED", r.finished),
        failed: jobs("FAILED", r.failed),
        canceled: jobs("CANCELED", r.canceled),
        rate: percent(r.rate),
        throughput: mib_s(r.throughput),
        current: mib_s(r.current),
        bytes: if r.bytes > 0 {
            bytes(r.bytes)
        } else {
            String::new()
        },
        class: class(r),
        errors_href: link(
            "/web/errors/list",
            &[
                ("source_se", r.source_se.as_str()),
                ("dest_se", r.dest_se.as_str()),
                ("vo", r.vo_name.as_str()),
            ],
        ),
        optimizer_href: link(
            "/web/optimizer/detail",
            &[
                ("source", r.source_se.as_str()),
                ("destination", r.dest_se.as_str()),
            ],
        ),
    }
}

pub async fn overview(req: &Req<'_>, partial: bool) -> Result<Rendered, ApiError> {
    let activities = req.param("activities") == "1";
    let o = req
        .ctx
        .service
        .mon_overview(&req.user, &req.mq, activities)
        .await?;
    let page = o.overview.as_ref().map(|p| Pager::new(req, "/web/", p));
    let rows: Vec<Row> = o
        .overview
        .as_ref()
        .map(|p| p.items.iter().map(|r| row(req, r)).collect())
        .unwrap_or_default();
    let s = &o.summary;
    let total = row(
        req,
        &OverviewRow {
            submitted: s.submitted,
            active: s.active,
            ready: s.ready,
            staging: s.staging,
            started: s.started,
            archiving: s.archiving,
            finished: s.finished,
            failed: s.failed,
            canceled: s.canceled,
            rate: s.rate,
            current: s.current,
            throughput: s.throughput,
            source_se: req.param("source_se"),
            dest_se: req.param("dest_se"),
            vo_name: req.param("vo"),
            ..OverviewRow::default()
        },
    );
    let json_path = if activities {
        "/ftsmon/overview/activities"
    } else {
        "/ftsmon/overview"
    };
    let sort = [
        ("submitted", "Submitted"),
        ("active", "Active"),
        ("staging", "Staging"),
        ("started", "S.Active"),
        ("archiving", "Archiving"),
        ("finished", "Finished"),
        ("failed", "Failed"),
        ("canceled", "Canceled"),
        ("rate", "Rate"),
        ("throughput", "Thr."),
    ]
    .into_iter()
    .map(|(key, label)| {
        // A second click on the column that sorts descending sorts ascending.
        let current = req.param("orderby");
        let next = if current == format!("-{key}") || (current.is_empty() && key == "submitted") {
            key.to_string()
        } else {
            format!("-{key}")
        };
        (
            label,
            req.here("/web/", &[("orderby", &next), ("page", "")]),
        )
    })
    .collect();
    let mut layout = req.layout(
        "Overview",
        "overview",
        req.here(json_path, &[("activities", "")]),
    );
    layout.plots = true;
    let view = OverviewPage {
        layout,
        filters: Filters::new(req, 1),
        activities,
        rows,
        total,
        pager: page.unwrap_or(Pager {
            count: 0,
            start: 0,
            end: 0,
            page: 1,
            pages: 1,
            prev: None,
            next: None,
        }),
        sort,
        series: link(
            "/ftsmon/series",
            &[
                ("vo", req.param("vo")),
                ("source_se", req.param("source_se")),
                ("dest_se", req.param("dest_se")),
                ("time_window", req.mq.time_window.unwrap_or(1).to_string()),
            ],
        ),
        window_secs: req.mq.time_window.unwrap_or(1).clamp(1, 24) * 3600,
        bad_rate: BAD_RATE_PERCENT,
    };
    render(&view, |v| v.as_live().render(), partial)
}
