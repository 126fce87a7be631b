//! Errors: failed transfers per link in the window (`/web/errors`, with the failure classes
//! by scope, phase and category), and one link's reasons (`/web/errors/list`), each linking
//! to the transfers that failed with it.

use std::collections::BTreeMap;

use askama::Template;

use super::{Filters, Layout, Pager, Rendered, Req, link, render};
use crate::api::error::ApiError;
use crate::model::monitor::ErrorCount;

pub struct LinkErrors {
    pub source_se: String,
    pub dest_se: String,
    pub count: u64,
    pub href: String,
}

/// A failure class and how often it happened.
pub struct ClassRow {
    pub scope: String,
    pub phase: String,
    pub category: String,
    pub recoverable: bool,
    pub count: u64,
    /// The largest count of the table, for the `<meter>`.
    pub max: u64,
}

fn classes(errors: &[ErrorCount]) -> Vec<ClassRow> {
    let mut by: BTreeMap<(String, String, String, bool), u64> = BTreeMap::new();
    for e in errors {
        let c = &e.class;
        *by.entry((
            c.scope.clone(),
            c.phase.clone(),
            c.category.clone(),
            c.recoverable,
        ))
        .or_default() += e.count;
    }
    let max = by.values().copied().max().unwrap_or(0);
    let mut rows: Vec<ClassRow> = by
        .into_iter()
        .map(|((scope, phase, category, recoverable), count)| ClassRow {
            scope,
            phase,
            category,
            recoverable,
            count,
            max,
        })
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.count));
    rows
}

#[derive(Template)]
#[template(path = "web/errors.html", blocks = ["live"])]
pub struct LinksPage {
    pub layout: Layout,
    pub filters: Filters,
    pub reason: String,
    pub rows: Vec<LinkErrors>,
    pub classes: Vec<ClassRow>,
    pub pager: Pager,
}

pub async fn links(req: &Req<'_>, partial: bool) -> Result<Rendered, ApiError> {
    let s = &req.ctx.service;
    let page = s.mon_errors(&req.user, &req.mq).await?;
    let window = req.mq.time_window.unwrap_or(1).to_string();
    let rows = page
        .items
        .iter()
        .map(|e| {
            let src = e["source_se"].as_str().unwrap_or_default().to_string();
            let dst = e["dest_se"].as_str().unwrap_or_default().to_string();
            LinkErrors {
                href: link(
                    "/web/errors/list",
                    &[
                        ("source_se", src.as_str()),
                        ("dest_se", dst.as_str()),
                        ("vo", req.param("vo").as_str()),
                        ("reason", req.param("reason").as_str()),
                        ("time_window", window.as_str()),
                    ],
                ),
                source_se: src,
                dest_se: dst,
                count: e["count"].as_u64().unwrap_or(0),
            }
        })
        .collect();
    let classes = classes(&s.mon_error_classes(&req.user, &req.mq).await?);
    let view = LinksPage {
        layout: req.layout("Errors", "errors", req.here("/ftsmon/errors", &[])),
        filters: Filters::new(req, 1),
        reason: req.param("reason"),
        pager: Pager::new(req, "/web/errors", &page),
        rows,
        classes,
    };
    render(&view, |v| v.as_live().render(), partial)
}

pub struct ReasonRow {
    pub vo_name: String,
    pub reason: String,
    pub count: u64,
    pub max: u64,
    /// The transfers that failed with this reason.
    pub href: String,
}

#[derive(Template)]
#[template(path = "web/errors_list.html", blocks = ["live"])]
pub struct ReasonsPage {
    pub layout: Layout,
    pub filters: Filters,
    pub reason: String,
    pub rows: Vec<ReasonRow>,
    /// Failures per scope (the reason's first word, as ftsmon's pie).
    pub scopes: Vec<(String, u64)>,
    pub classes: Vec<ClassRow>,
    pub pager: Pager,
}

pub async fn reasons(req: &Req<'_>, partial: bool) -> Result<Rendered, ApiError> {
    let s = &req.ctx.service;
    let (source, dest) = (req.param("source_se"), req.param("dest_se"));
    let (page, scopes) = s.mon_error_reasons(&req.user, &req.mq).await?;
    let max = page
        .items
        .iter()
        .filter_map(|r| r["count"].as_u64())
        .max()
        .unwrap_or(0);
    let window = req.mq.time_window.unwrap_or(1).to_string();
    let rows = page
        .items
        .iter()
        .map(|r| {
            let reason = r["reason"].as_str().unwrap_or_default().to_string();
            let vo = r["vo_name"].as_str().unwrap_or_default().to_string();
            ReasonRow {
                href: link(
                    "/web/transfers",
                    &[
                        ("state", "FAILED"),
                        ("source_se", source.as_str()),
                        ("dest_se", dest.as_str()),
                        ("vo", vo.as_str()),
                        ("reason", reason.as_str()),
                        ("time_window", window.as_str()),
                    ],
                ),
                vo_name: vo,
                reason,
                count: r["count"].as_u64().unwrap_or(0),
                max,
            }
        })
        .collect();
    let classes = classes(&s.mon_error_classes(&req.user, &req.mq).await?);
    let view = ReasonsPage {
        layout: req.layout(
            format!("Errors: {source} → {dest}"),
            "errors",
            req.here("/ftsmon/errors/list", &[]),
        ),
        filters: Filters::new(req, 1),
        reason: req.param("reason"),
        pager: Pager::new(req, "/web/errors/list", &page),
        rows,
        scopes: scopes.into_iter().collect(),
        classes,
    };
    render(&view, |v| v.as_live().render(), partial)
}
