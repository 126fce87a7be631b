//! `/config`, `/config/drain`, `/config/global`, `/config/links`, `/config/shares`,
//! `/config/se`, `/config/activity_shares`, `/config/authorize`. Setters read their input the
//! reference's way (`get_input_as_dict`, see `input.rs`); deletions and filters read the query
//! string. Answers are always JSON: the reference's HTML admin pages are not served, whatever
//! `Accept` says.

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
        config::{ActivityShare, Host, LinkConfig, SeConfig, ServerConfig, ShareConfig},
        time::fts_datetime,
    },
    service::config::{
        ActivityShareRequest, DrainRequest, GlobalConfigRequest, GrantRequest, LinkRequest,
        SeConfigRequest, ShareRequest,
    },
};

/// Largest body of a configuration request (a storage map or an activity share list).
pub const MAX_CONFIG_BODY: usize = 256 * 1024;

fn no_content() -> Response {
    let mut response = Response::new("".into());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

fn body_dict(content_type: Option<&str>, body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match input::as_dict(&Method::POST, content_type, body)? {
        Value::Object(map) => Ok(map),
        // as_dict only returns objects.
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "Expecting a dictionary",
        )),
    }
}

/// `urllib.parse.unquote` of a path segment (`+` stays a plus).
pub fn unquote(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn host_json(h: &Host) -> Value {
    json!({"hostname": h.hostname, "service_name": h.service_name,
           "beat": fts_datetime(h.beat), "drain": h.drain})
}

pub async fn hosts(ctx: &Ctx) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    let hosts: Vec<Value> = ctx
        .service
        .hosts(&user)
        .await?
        .iter()
        .map(host_json)
        .collect();
    Ok(json_response(StatusCode::OK, &hosts))
}

pub async fn drain(
    ctx: &Ctx,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    let input = body_dict(content_type, body)?;
    ctx.service
        .set_drain(&user, DrainRequest::parse(&input))
        .await?;
    Ok(json_response(StatusCode::OK, &Value::Null))
}

/// `{"*": {...} or {}, "<vo>": {...}}`.
fn globals_json(rows: &[ServerConfig]) -> Value {
    let mut out = Map::new();
    out.insert("*".into(), json!({}));
    for row in rows {
        out.insert(row.vo_name.clone(), row.to_json());
    }
    Value::Object(out)
}

pub async fn global(ctx: &Ctx) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    let rows = ctx.service.global_config(&user).await?;
    Ok(json_response(StatusCode::OK, &globals_json(&rows)))
}

pub async fn set_global(
    ctx: &Ctx,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    let input = body_dict(content_type, body)?;
    let rows = ctx
        .service
        .set_global_config(&user, GlobalConfigRequest::parse(&input))
        .await?;
    Ok(json_response(StatusCode::OK, &globals_json(&rows)))
}

pub async fn delete_global(ctx: &Ctx, mut query: Query) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    ctx.service
        .delete_global_config(&user, query.remove("vo_name").as_deref())
        .await?;
    Ok(no_content())
}

fn link_json(l: &LinkConfig) -> Value {
    json!({"source": l.source, "destination": l.destination, "symbolicname": l.symbolicname,
           "min_active": l.min_active, "max_active": l.max_active,
           "optimizer_mode": l.optimizer_mode, "tcp_buffer_size": l.tcp_buffer_size,
           "nostreams": l.nostreams, "no_delegation": l.no_delegation})
}

pub async fn links(ctx: &Ctx) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    let links: Vec<Value> = ctx
        .service
        .links(&user)
        .await?
        .iter()
        .map(link_json)
        .collect();
    Ok(json_response(StatusCode::OK, &links))
}

pub async fn link(ctx: &Ctx, name: &str) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    let link = ctx.service.link(&user, &unquote(name)).await?;
    Ok(json_response(StatusCode::OK, &link_json(&link)))
}

pub async fn set_link(
    ctx: &Ctx,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    let input = body_dict(content_type, body)?;
    let link = ctx
        .service
        .set_link(&user, LinkRequest::parse(&input))
        .await?;
    Ok(json_response(StatusCode::CREATED, &link_json(&link)))
}

pub async fn delete_link(ctx: &Ctx, name: &str) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    ctx.service.delete_link(&user, &unquote(name)).await?;
    Ok(no_content())
}

fn share_json(s: &ShareConfig) -> Value {
    json!({"source": s.source, "destination": s.destination, "vo": s.vo, "share": s.share})
}

pub async fn shares(ctx: &Ctx) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    let shares: Vec<Value> = ctx
        .service
        .shares(&user)
        .await?
        .iter()
        .map(share_json)
        .collect();
    Ok(json_response(StatusCode::OK, &shares))
}

pub async fn set_share(
    ctx: &Ctx,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    let input = body_dict(content_type, body)?;
    let share = ctx
        .service
        .set_share(&user, ShareRequest::parse(&input))
        .await?;
    Ok(json_response(StatusCode::OK, &share))
}

pub async fn delete_share(ctx: &Ctx, mut query: Query) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    ctx.service
        .delete_share(
            &user,
            query.remove("source").as_deref(),
            query.remove("destination").as_deref(),
            query.remove("vo").as_deref(),
        )
        .await?;
    Ok(no_content())
}

fn se_info_json(s: &SeConfig) -> Value {
    json!({"inbound_max_active": s.inbound_max_active,
           "inbound_max_throughput": s.inbound_max_throughput,
           "outbound_max_active": s.outbound_max_active,
           "outbound_max_throughput": s.outbound_max_throughput,
           "udt": s.udt, "ipv6": s.ipv6, "se_metadata": s.se_metadata, "site": s.site,
           "debug_level": s.debug_level, "skip_eviction": s.skip_eviction,
           "tpc_support": s.tpc_support, "overwrite_disk_enabled": s.overwrite_disk_enabled})
}

pub async fn se(ctx: &Ctx, mut query: Query) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    let (ses, limits) = ctx
        .service
        .se_configs(&user, query.remove("se").as_deref())
        .await?;
    let mut out = Map::new();
    for s in &ses {
        out.insert(s.storage.clone(), json!({"se_info": se_info_json(s)}));
    }
    for l in limits {
        let entry = out.entry(l.host.clone()).or_insert_with(|| json!({}));
        let ops = &mut entry["operations"];
        if ops.is_null() {
            *ops = json!({});
        }
        let vo = &mut ops[l.vo_name.as_str()];
        if vo.is_null() {
            *vo = json!({});
        }
        vo[l.operation.as_str()] = json!(l.concurrent_ops);
    }
    Ok(json_response(StatusCode::OK, &Value::Object(out)))
}

pub async fn set_se(
    ctx: &Ctx,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    let input = body_dict(content_type, body)?;
    let (info, ops) = ctx
        .service
        .set_se_config(&user, SeConfigRequest::parse(&input))
        .await?;
    let reply = json!([info.as_ref().map(se_info_json), ops]);
    Ok(json_response(StatusCode::OK, &reply))
}

pub async fn delete_se(ctx: &Ctx, mut query: Query) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    ctx.service
        .delete_se_config(&user, query.remove("se").as_deref())
        .await?;
    Ok(no_content())
}

fn activity_json(a: &ActivityShare) -> Value {
    json!({"share": a.share_map(), "active": a.active})
}

pub async fn activity_shares(ctx: &Ctx) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    let mut out = Map::new();
    for row in ctx.service.activity_shares(&user).await? {
        out.insert(row.vo.clone(), activity_json(&row));
    }
    Ok(json_response(StatusCode::OK, &Value::Object(out)))
}

pub async fn activity_share(ctx: &Ctx, vo: &str) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    let row = ctx.service.activity_share(&user, &unquote(vo)).await?;
    Ok(json_response(StatusCode::OK, &activity_json(&row)))
}

pub async fn set_activity_share(
    ctx: &Ctx,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    let input = body_dict(content_type, body)?;
    let row = ctx
        .service
        .set_activity_share(&user, ActivityShareRequest::parse(&input))
        .await?;
    let reply = json!({"vo": row.vo, "activity_share": row.share_list(), "active": row.active});
    Ok(json_response(StatusCode::OK, &reply))
}

pub async fn delete_activity_share(ctx: &Ctx, vo: &str) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    ctx.service
        .delete_activity_share(&user, &unquote(vo))
        .await?;
    Ok(no_content())
}

pub async fn grants(ctx: &Ctx, mut query: Query) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    let grants: Vec<Value> = ctx
        .service
        .grants(
            &user,
            query.remove("dn").as_deref(),
            query.remove("operation").as_deref(),
        )
        .await?
        .into_iter()
        .map(|(dn, operation)| json!({"dn": dn, "operation": operation}))
        .collect();
    Ok(json_response(StatusCode::OK, &grants))
}

pub async fn grant(
    ctx: &Ctx,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    let input = body_dict(content_type, body)?;
    let (dn, operation) = ctx
        .service
        .grant(&user, GrantRequest::parse(&input))
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"dn": dn, "operation": operation}),
    ))
}

pub async fn revoke(ctx: &Ctx, mut query: Query) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    ctx.service
        .revoke(
            &user,
            query.remove("dn").as_deref(),
            query.remove("operation").as_deref(),
        )
        .await?;
    Ok(no_content())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unquote_decodes_percent_escapes_only() {
        assert_eq!(unquote("a%20link+x"), "a link+x");
        assert_eq!(unquote("100%"), "100%");
        assert_eq!(unquote("%zz%2F"), "%zz/");
    }
}
