//! The monitoring web pages under `/web/` (`/web/` itself is the overview): server-rendered
//! HTML (askama templates in `templates/web/`), usable without JavaScript; with it, htmx
//! re-fetches each page's live block every [`REFRESH_SECONDS`] (the handler answers an
//! `HX-Request` with that block only) and `web/app.js` draws the plots with uPlot from the
//! JSON twins under `/ftsmon/`.
//!
//! Every page reads through the same service functions as ftsmon's JSON, with the caller's
//! identity, so what the REST API hides from a user the pages hide too (another user's job
//! detail is a 403 page). Times are UTC. Every answer carries
//! `Content-Security-Policy: default-src 'self'`: no inline script or style anywhere (plots
//! take their data from `data-*` attributes, progress bars are `<progress>` elements).
//!
//! Layout: this file dispatches and holds what every page shares (the layout, links, the
//! pager, number formats); one file per group of pages builds their views.

mod assets;
mod config;
mod errors;
mod jobs;
mod optimizer;
mod overview;
mod stats;

use askama::Template;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;

use super::{Ctx, Query, error::ApiError, ftsmon::parse_query};
use crate::service::monitor::{MonQuery, Paged};

/// Seconds between two refreshes of a page's live block: fast enough to watch a transfer
/// finish, slow enough that a wall of open pages stays cheap (each refresh reads the in-memory
/// aggregates or one index page).
pub const REFRESH_SECONDS: u32 = 5;

/// The pages' Content-Security-Policy: only this origin's scripts, styles, images and
/// connections; no framing (the pages carry buttons-free data, but clickjacking a
/// certificate-authenticated page is still worth refusing).
pub const CSP: &str = "default-src 'self'; frame-ancestors 'none'; form-action 'self'";

/// Time windows offered by the filter forms, in hours (the rings keep 24).
pub const WINDOWS: [i64; 6] = [1, 2, 3, 6, 12, 24];

/// URLs of the static files, for the layout.
pub struct Static {
    pub htmx: String,
    pub uplot_js: String,
    pub uplot_css: String,
    pub app_js: String,
    pub app_css: String,
    pub favicon: String,
}

impl Static {
    fn new() -> Static {
        Static {
            htmx: assets::url("htmx.min.js"),
            uplot_js: assets::url("uPlot.iife.min.js"),
            uplot_css: assets::url("uPlot.min.css"),
            app_js: assets::url("app.js"),
            app_css: assets::url("app.css"),
            favicon: assets::url("favicon.svg"),
        }
    }
}

/// What the layout (`templates/web/base.html`) shows around every page.
pub struct Layout {
    pub title: String,
    /// The navigation entry to highlight (`overview`, `jobs`, ...).
    pub nav: &'static str,
    /// "Generated at" time, UTC.
    pub generated: String,
    pub host: String,
    pub version: &'static str,
    /// The page's JSON twin under `/ftsmon/`.
    pub json: String,
    /// This page's URL, which htmx polls for the live block.
    pub refresh: String,
    pub refresh_seconds: u32,
    pub assets: Static,
    /// Whether the page draws plots (loads uPlot).
    pub plots: bool,
    /// The caller, as the page's header shows it.
    pub user_dn: String,
}

/// Everything a page builder gets.
pub struct Req<'a> {
    pub ctx: &'a Ctx,
    pub user: crate::model::identity::User,
    /// The raw query string, to rebuild links that keep the filters.
    pub query: Query,
    pub mq: MonQuery,
    /// The request path (for the refresh URL).
    pub path: String,
}

impl Req<'_> {
    pub fn layout(&self, title: impl Into<String>, nav: &'static str, json: String) -> Layout {
        Layout {
            title: title.into(),
            nav,
            generated: when(crate::model::time::now()),
            host: self.ctx.service.node_name().to_string(),
            version: env!("CARGO_PKG_VERSION"),
            json,
            refresh: link(&self.path, &self.query_pairs(&[])),
            refresh_seconds: REFRESH_SECONDS,
            assets: Static::new(),
            plots: false,
            user_dn: self.user.user_dn.clone(),
        }
    }

    /// The query's parameters with `overrides` applied (an empty value removes one), sorted.
    pub fn query_pairs(&self, overrides: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> = self
            .query
            .iter()
            .filter(|(k, _)| !overrides.iter().any(|(o, _)| o == k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .chain(
                overrides
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string())),
            )
            .filter(|(_, v)| !v.is_empty())
            .collect();
        pairs.sort();
        pairs
    }

    /// `path` with this request's filters, changed by `overrides`.
    pub fn here(&self, path: &str, overrides: &[(&str, &str)]) -> String {
        link(path, &self.query_pairs(overrides))
    }

    /// A query parameter, trimmed, or "".
    pub fn param(&self, key: &str) -> String {
        self.query
            .get(key)
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    }
}

/// `path?k=v&...` with the values URL-encoded; empty values are left out.
pub fn link<K: AsRef<str>, V: AsRef<str>>(path: &str, pairs: &[(K, V)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (k, v) in pairs {
        if !v.as_ref().is_empty() {
            query.append_pair(k.as_ref(), v.as_ref());
            any = true;
        }
    }
    if any {
        format!("{path}?{}", query.finish())
    } else {
        path.to_string()
    }
}

/// A job's page.
pub fn job_link(job_id: &str) -> String {
    let id: String = form_urlencoded::byte_serialize(job_id.as_bytes()).collect();
    format!("/web/jobs/{id}")
}

/// A paged table's navigation.
pub struct Pager {
    pub count: usize,
    pub start: usize,
    pub end: usize,
    pub page: usize,
    pub pages: usize,
    pub prev: Option<String>,
    pub next: Option<String>,
}

impl Pager {
    pub fn new<T>(req: &Req<'_>, path: &str, p: &Paged<T>) -> Pager {
        let to = |n: usize| req.here(path, &[("page", &n.to_string())]);
        Pager {
            count: p.count,
            start: p.start_index,
            end: p.end_index,
            page: p.page,
            pages: p.page_count,
            prev: (p.page > 1).then(|| to(p.page - 1)),
            next: (p.page < p.page_count).then(|| to(p.page + 1)),
        }
    }
}

/// The filter form most pages share.
pub struct Filters {
    pub vo: String,
    pub source_se: String,
    pub dest_se: String,
    /// The windows offered, and whether each is the one chosen.
    pub windows: Vec<(i64, bool)>,
}

impl Filters {
    pub fn new(req: &Req<'_>, default_window: i64) -> Filters {
        let time_window = req.mq.time_window.unwrap_or(default_window);
        Filters {
            vo: req.param("vo"),
            source_se: req.param("source_se"),
            dest_se: req.param("dest_se"),
            windows: WINDOWS.iter().map(|w| (*w, *w == time_window)).collect(),
        }
    }
}

/// A time as the pages show it: `2026-12-04 06:44:00` (UTC).
pub fn when(t: i64) -> String {
    crate::model::time::fts_datetime(t).replace('T', " ")
}

/// [`when`], or "" for none.
pub fn when_opt(t: Option<i64>) -> String {
    t.map(when).unwrap_or_default()
}

/// Bytes in binary units: `1.5 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A throughput in MiB/s with two decimals, "" when zero.
pub fn mib_s(v: f64) -> String {
    if v > 0.0 && v.is_finite() {
        format!("{v:.2}")
    } else {
        String::new()
    }
}

/// A percentage with one decimal, "–" when unknown.
pub fn percent(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.1} %"),
        _ => "–".to_string(),
    }
}

/// The error page.
#[derive(Template)]
#[template(path = "web/error.html")]
struct ErrorPage {
    layout: Layout,
    status: String,
    message: String,
}

/// Dispatch `GET /web/<path>`; `partial` when htmx asks for the live block only.
pub async fn get(ctx: &Ctx, path: &str, query: Query, partial: bool) -> Response {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if let ["static", name] = segments.as_slice() {
        return static_file(name);
    }
    let full_path = format!("/web/{}", segments.join("/"));
    let result = match (ctx.user().await, parse_query(&query)) {
        (Ok(user), Ok(mq)) => {
            let req = Req {
                ctx,
                user,
                query,
                mq,
                path: if segments.is_empty() {
                    "/web/".to_string()
                } else {
                    full_path.clone()
                },
            };
            page(&req, &segments, partial).await
        }
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    match result {
        Ok(Rendered::Html(body)) => html(StatusCode::OK, body),
        Ok(Rendered::Redirect(to)) => redirect(&to),
        Err(e) => error_page(ctx, e, &full_path),
    }
}

/// What a page handler produces.
pub enum Rendered {
    Html(String),
    /// 303 to this location (the job-id box).
    Redirect(String),
}

/// Render `page`, or its live block when `partial`.
pub fn render<T: Template>(
    page: &T,
    live: impl FnOnce(&T) -> askama::Result<String>,
    partial: bool,
) -> Result<Rendered, ApiError> {
    let body = if partial { live(page) } else { page.render() };
    body.map(Rendered::Html).map_err(|e| {
        tracing::error!(error = %e, "a web page did not render");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "The page did not render")
    })
}

async fn page(req: &Req<'_>, segments: &[&str], partial: bool) -> Result<Rendered, ApiError> {
    match segments {
        [] | ["overview"] => overview::overview(req, partial).await,
        ["jobs"] => jobs::jobs(req, partial).await,
        ["jobs", id] => jobs::job(req, id, partial).await,
        ["transfers"] => jobs::transfers(req, partial).await,
        ["optimizer"] => optimizer::list(req, partial).await,
        ["optimizer", "detail"] => optimizer::detail(req, partial).await,
        ["errors"] => errors::links(req, partial).await,
        ["errors", "list"] => errors::reasons(req, partial).await,
        ["stats"] => stats::stats(req, partial).await,
        ["config"] => config::config(req, partial).await,
        _ => Err(ApiError::not_found()),
    }
}

/// The headers every page carries.
fn secure(response: &mut Response) {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
}

fn html(status: StatusCode, body: String) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    secure(&mut response);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // The pages show the caller's jobs: never kept by a shared cache.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The same URL answers the whole page or the live block alone.
    h.insert(header::VARY, HeaderValue::from_static("HX-Request"));
    response
}

fn redirect(to: &str) -> Response {
    let mut response = Response::new(Default::default());
    *response.status_mut() = StatusCode::SEE_OTHER;
    secure(&mut response);
    if let Ok(v) = HeaderValue::from_str(to) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

fn error_page(ctx: &Ctx, e: ApiError, path: &str) -> Response {
    let page = ErrorPage {
        layout: Layout {
            title: crate::api::error::status_line(e.status),
            nav: "",
            generated: when(crate::model::time::now()),
            host: ctx.service.node_name().to_string(),
            version: env!("CARGO_PKG_VERSION"),
            json: String::new(),
            refresh: path.to_string(),
            refresh_seconds: REFRESH_SECONDS,
            assets: Static::new(),
            plots: false,
            user_dn: ctx.peer().map(|p| p.user_dn.clone()).unwrap_or_default(),
        },
        status: crate::api::error::status_line(e.status),
        message: e.message.clone(),
    };
    match page.render() {
        Ok(body) => html(e.status, body),
        Err(_) => e.into_response(),
    }
}

fn static_file(name: &str) -> Response {
    let Some(asset) = assets::by_hashed_name(name) else {
        let mut response = Response::new("Not found".into());
        *response.status_mut() = StatusCode::NOT_FOUND;
        return response;
    };
    let mut response = Response::new(asset.bytes.into());
    secure(&mut response);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    response
}

#[cfg(test)]
mod tests;
