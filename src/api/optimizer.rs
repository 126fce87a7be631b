//! `/optimizer`, `/optimizer/evolution`, `/optimizer/current`, the historic pair status
//! (`/snapshot` and `/optimizer/snapshot`) and `/status/hosts`: the JSON views of the
//! optimizer's records and of the link counters.
//!
//! Query filters that are present but empty count as absent: the reference tests
//! `if value`, and its old snapshot client always sent `vo_name=&source_se=&dest_se=`.

use serde_json::{Map, Value, json};
use warp::{
    http::{Method, StatusCode},
    reply::Response,
};

use super::{
    Ctx, Query,
    error::{ApiError, json_response},
    input,
};
use crate::{
    model::{
        optimizer::{EvolutionEntry, LinkFilter, OptimizerCurrent, PairStatus},
        query::PairFilter,
        time::fts_datetime,
    },
    service::optimizer::decision_request,
};

/// Largest body of `POST /optimizer/current` (a dozen numbers and a rationale).
pub const MAX_OPTIMIZER_BODY: usize = 64 * 1024;

fn param(query: &mut Query, key: &str) -> Option<String> {
    query.remove(key).filter(|v| !v.is_empty())
}

fn link_filter(mut query: Query) -> LinkFilter {
    LinkFilter {
        source_se: param(&mut query, "source_se"),
        dest_se: param(&mut query, "dest_se"),
    }
}

/// Unix microseconds as an FTS3 datetime.
fn datetime(micros: i64) -> String {
    fts_datetime(micros.div_euclid(1_000_000))
}

fn evolution_json(e: &EvolutionEntry) -> Value {
    json!({"datetime": datetime(e.datetime), "source_se": e.source_se, "dest_se": e.dest_se,
           "active": e.active, "throughput": e.throughput, "success": e.success,
           "rationale": e.rationale, "diff": e.diff, "actual_active": e.actual_active,
           "queue_size": e.queue_size, "ema": e.ema, "filesize_avg": e.filesize_avg,
           "filesize_stddev": e.filesize_stddev})
}

fn current_json(c: &OptimizerCurrent) -> Value {
    json!({"source_se": c.source_se, "dest_se": c.dest_se, "ema": c.ema, "active": c.active,
           "datetime": datetime(c.datetime), "nostreams": c.nostreams})
}

pub async fn enabled(ctx: &Ctx) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    Ok(json_response(
        StatusCode::OK,
        &ctx.service.optimizer_enabled(&user),
    ))
}

pub async fn evolution(ctx: &Ctx, query: Query) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    let rows: Vec<Value> = ctx
        .service
        .optimizer_evolution(&user, &link_filter(query))
        .await?
        .iter()
        .map(evolution_json)
        .collect();
    Ok(json_response(StatusCode::OK, &rows))
}

pub async fn current(ctx: &Ctx, query: Query) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    let rows: Vec<Value> = ctx
        .service
        .optimizer_values(&user, &link_filter(query))
        .await?
        .iter()
        .map(current_json)
        .collect();
    Ok(json_response(StatusCode::OK, &rows))
}

pub async fn set_current(
    ctx: &Ctx,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    let input: Map<String, Value> = match input::as_dict(&Method::POST, content_type, body)? {
        Value::Object(map) => map,
        // as_dict only returns objects.
        _ => Map::new(),
    };
    let (evolution, current) = ctx
        .service
        .set_optimizer_values(&user, decision_request(&input))
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!([evolution_json(&evolution), current_json(&current)]),
    ))
}

fn pair_json(p: &PairStatus) -> Value {
    let stats = &p.last_hour;
    let throughput: Map<String, Value> = p
        .avg_throughput
        .iter()
        .map(|(minutes, avg)| (minutes.to_string(), json!(avg)))
        .collect();
    let frequent_error = stats
        .frequent_error()
        .map(|(reason, count)| json!({"count": count, "reason": reason}));
    // `limits` (the storages' throughput caps) come from the storage configuration
    // (`/config/se` outbound/inbound_max_throughput) once ftsd stores it; until then there are
    // none to report.
    json!({"vo_name": p.vo_name, "source_se": p.source_se, "dest_se": p.dest_se,
           "active": p.active, "max_active": p.max_active, "submitted": p.submitted,
           "finished": stats.finished, "failed": stats.failed,
           "success_ratio": stats.success_ratio(), "avg_throughput": throughput,
           "avg_duration": stats.avg_duration(), "avg_queued": p.avg_queued,
           "frequent_error": frequent_error, "limits": null})
}

pub async fn snapshot(ctx: &Ctx, mut query: Query) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    let filter = PairFilter {
        vo_name: param(&mut query, "vo_name"),
        source_se: param(&mut query, "source_se"),
        dest_se: param(&mut query, "dest_se"),
    };
    let pairs: Vec<Value> = ctx
        .service
        .pair_status(&user, &filter)
        .await?
        .iter()
        .map(pair_json)
        .collect();
    Ok(json_response(StatusCode::OK, &pairs))
}

/// `{"<host>": {"active": n, "staging": n}}`, each count present only when non-zero.
pub async fn hosts(ctx: &Ctx) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    let mut out = Map::new();
    for (host, activity) in ctx.service.host_activity(&user).await? {
        let mut counts = Map::new();
        if activity.active > 0 {
            counts.insert("active".into(), json!(activity.active));
        }
        if activity.staging > 0 {
            counts.insert("staging".into(), json!(activity.staging));
        }
        out.insert(host, Value::Object(counts));
    }
    Ok(json_response(StatusCode::OK, &out))
}
