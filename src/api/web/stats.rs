//! Server statistics (`/web/stats`): files per state over the window and now, retried
//! transfers, the queue per VO, and the hosts with their heartbeat, drain flag and the
//! segment of the hash range they serve.

use askama::Template;

use super::{Filters, Layout, Rendered, Req, render};
use crate::api::error::ApiError;

pub struct Host {
    pub host: String,
    pub submissions: u64,
    pub transfers: u64,
    pub active: u64,
    pub staging: u64,
    pub started: u64,
    /// (service, status, beat, drain, hash segment).
    pub services: Vec<(String, String, String, bool, String)>,
}

#[derive(Template)]
#[template(path = "web/stats.html", blocks = ["live"])]
pub struct StatsPage {
    pub layout: Layout,
    pub filters: Filters,
    pub lasthour: Vec<(String, u64)>,
    pub retried: Vec<(String, u64)>,
    /// The states shown as columns of the per-VO table.
    pub vo_states: Vec<String>,
    /// (VO, count per state of `vo_states`).
    pub vos: Vec<(String, Vec<u64>)>,
    pub hosts: Vec<Host>,
}

pub async fn stats(req: &Req<'_>, partial: bool) -> Result<Rendered, ApiError> {
    let s = &req.ctx.service;
    let stats = s.mon_stats(&req.user, &req.mq).await?;
    let per_vo = s.mon_stats_vo(&req.user, &req.mq).await?;
    let servers = s.mon_servers(&req.user, &req.mq).await?;
    let mut vo_states: Vec<String> = per_vo.values().flat_map(|m| m.keys().cloned()).collect();
    vo_states.sort();
    vo_states.dedup();
    let vos = per_vo
        .iter()
        .map(|(vo, m)| {
            (
                vo.clone(),
                vo_states
                    .iter()
                    .map(|st| m.get(st).copied().unwrap_or(0))
                    .collect(),
            )
        })
        .collect();
    let time = |v: &serde_json::Value| {
        v.as_str()
            .map(|t| t.trim_end_matches('Z').replace('T', " "))
            .unwrap_or_default()
    };
    let hosts = servers
        .iter()
        .map(|(host, v)| {
            let n = |k: &str| v[k].as_u64().unwrap_or(0);
            let services = v["services"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(name, st)| {
                            let segment = match (st["start"].as_str(), st["end"].as_str()) {
                                (Some(a), Some(b)) => format!("{a}–{b}"),
                                _ => String::new(),
                            };
                            (
                                name.clone(),
                                st["status"].as_str().unwrap_or_default().to_string(),
                                time(&st["beat"]),
                                st["drain"].as_u64().unwrap_or(0) != 0,
                                segment,
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            Host {
                host: host.clone(),
                submissions: n("submissions"),
                transfers: n("transfers"),
                active: n("active"),
                staging: n("staging"),
                started: n("started"),
                services,
            }
        })
        .collect();
    let view = StatsPage {
        layout: req.layout("Statistics", "stats", req.here("/ftsmon/stats", &[])),
        filters: Filters::new(req, 1),
        lasthour: stats.lasthour.into_iter().collect(),
        retried: stats.retried.into_iter().collect(),
        vo_states,
        vos,
        hosts,
    };
    render(&view, |v| v.as_live().render(), partial)
}
