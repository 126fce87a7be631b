//! The configuration, read-only (`/web/config`): server settings per VO, links with their
//! limits and shares, storages, operation limits; the configuration audit and the gfal2
//! files only when their ftsmon opt-in settings are on (`[monitoring] show_config_audit`,
//! `show_gfal2_config`: they may show DNs and secrets), as ftsmon does.

use askama::Template;
use serde_json::Value;

use super::{Layout, Rendered, Req, render};
use crate::api::error::ApiError;
use crate::service::ServiceError;

/// A table made from JSON objects: the columns are the keys, in first-seen order.
pub struct Table {
    pub id: &'static str,
    pub title: &'static str,
    /// Why the section is empty or left out.
    pub note: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Object(m) if m.is_empty() => String::new(),
        other => other.to_string(),
    }
}

fn table(id: &'static str, title: &'static str, items: &[Value]) -> Table {
    let mut columns: Vec<String> = Vec::new();
    for item in items {
        if let Some(m) = item.as_object() {
            for k in m.keys() {
                if !columns.contains(k) {
                    columns.push(k.clone());
                }
            }
        }
    }
    let rows = items
        .iter()
        .map(|item| columns.iter().map(|c| text(&item[c.as_str()])).collect())
        .collect();
    Table {
        id,
        title,
        note: if items.is_empty() {
            "Nothing configured.".into()
        } else {
            String::new()
        },
        columns,
        rows,
    }
}

/// A section that is off by configuration: its note says which setting turns it on.
fn off(id: &'static str, title: &'static str, why: String) -> Table {
    Table {
        id,
        title,
        note: why,
        columns: Vec::new(),
        rows: Vec::new(),
    }
}

#[derive(Template)]
#[template(path = "web/config.html", blocks = ["live"])]
pub struct ConfigPage {
    pub layout: Layout,
    pub tables: Vec<Table>,
    /// gfal2 configuration files: (path, content).
    pub gfal2: Vec<(String, String)>,
    pub gfal2_note: String,
}

pub async fn config(req: &Req<'_>, partial: bool) -> Result<Rendered, ApiError> {
    let s = &req.ctx.service;
    let u = &req.user;
    let all = crate::service::monitor::MonQuery {
        page: crate::service::monitor::PageReq::All,
        ..req.mq.clone()
    };
    let server = s.mon_config_server(u).await?;
    let links = s.mon_config_links(u, &all).await?;
    let storages = s.mon_config_storages(u, &all).await?;
    let ops = s.mon_config_ops(u).await?;
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let mut tables = vec![
        table("server", "Server, per VO", &list(&server["per_vo"])),
        table("links", "Links", &links.items),
        table("storages", "Storages", &storages.items),
        table("ops", "Operation limits", &list(&ops)),
    ];
    // Opt-in sections: their refusal is the explanation shown.
    tables.push(match s.mon_config_audit(u, &all).await {
        Ok(page) => table("audit", "Configuration audit", &page.items),
        Err(ServiceError::NotFound(why)) => off("audit", "Configuration audit", why),
        Err(e) => return Err(e.into()),
    });
    let (gfal2, gfal2_note) = match s.mon_config_gfal2(u).await {
        Ok(v) => (
            v.as_object()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), text(v))).collect())
                .unwrap_or_default(),
            String::new(),
        ),
        Err(ServiceError::NotFound(why)) => (Vec::new(), why),
        Err(e) => return Err(e.into()),
    };
    let view = ConfigPage {
        layout: req.layout("Configuration", "config", "/ftsmon/config/links".into()),
        tables,
        gfal2,
        gfal2_note,
    };
    render(&view, |v| v.as_live().render(), partial)
}
