//! `/ban/se`, `/ban/dn` and `/config/audit`. Ban inputs are read as the reference reads them: a
//! JSON object when the content type is exactly `application/json` (anything unparsable is
//! "Malformed input"), otherwise the form fields and the query string (query first, as
//! werkzeug's `request.values`).

use serde_json::{Map, Value, json};
use warp::{http::StatusCode, reply::Response};

use super::{
    Ctx, Query,
    error::{ApiError, json_response},
};
use crate::{
    model::{
        audit::AuditEntry,
        ban::{DnBan, SeBan},
        time::fts_datetime,
    },
    service::bans::{DnBanRequest, SeBanRequest},
};

/// Largest body of a ban request (a storage name and a message).
pub const MAX_BAN_BODY: usize = 64 * 1024;

/// The parameters of a ban request.
fn ban_input(
    content_type: Option<&str>,
    query: Query,
    body: &[u8],
) -> Result<Map<String, Value>, ApiError> {
    let content_type = content_type.map(str::trim);
    if content_type == Some("application/json") {
        return match serde_json::from_slice(body) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(ApiError::new(StatusCode::BAD_REQUEST, "Malformed input")),
        };
    }
    let mut values = Map::new();
    if content_type.is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded")) {
        for (k, v) in form_urlencoded::parse(body) {
            values.insert(k.into_owned(), Value::String(v.into_owned()));
        }
    }
    for (k, v) in query {
        values.insert(k, Value::String(v));
    }
    Ok(values)
}

fn no_content() -> Response {
    let mut response = Response::new("".into());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

pub async fn ban_se(
    ctx: &Ctx,
    content_type: Option<&str>,
    query: Query,
    body: &[u8],
) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    let input = ban_input(content_type, query, body)?;
    let affected = ctx
        .service
        .ban_se(&user, SeBanRequest::from_json(&input))
        .await?;
    Ok(json_response(StatusCode::OK, &affected))
}

pub async fn unban_se(ctx: &Ctx, mut query: Query) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    ctx.service
        .unban_se(&user, query.remove("storage").as_deref())
        .await?;
    Ok(no_content())
}

fn se_ban_json(b: &SeBan) -> Value {
    json!({"se": b.se, "message": b.message, "addition_time": fts_datetime(b.addition_time),
           "admin_dn": b.admin_dn, "vo": b.vo, "status": b.status.as_str()})
}

pub async fn list_se(ctx: &Ctx) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    let bans: Vec<Value> = ctx
        .service
        .list_se_bans(&user)
        .await?
        .iter()
        .map(se_ban_json)
        .collect();
    Ok(json_response(StatusCode::OK, &bans))
}

pub async fn ban_dn(
    ctx: &Ctx,
    content_type: Option<&str>,
    query: Query,
    body: &[u8],
) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    let input = ban_input(content_type, query, body)?;
    let canceled = ctx
        .service
        .ban_dn(&user, DnBanRequest::from_json(&input))
        .await?;
    Ok(json_response(StatusCode::OK, &canceled))
}

pub async fn unban_dn(ctx: &Ctx, mut query: Query) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    ctx.service
        .unban_dn(&user, query.remove("user_dn").as_deref())
        .await?;
    Ok(no_content())
}

fn dn_ban_json(b: &DnBan) -> Value {
    json!({"dn": b.dn, "message": b.message, "addition_time": fts_datetime(b.addition_time),
           "admin_dn": b.admin_dn, "status": null})
}

pub async fn list_dn(ctx: &Ctx) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    let bans: Vec<Value> = ctx
        .service
        .list_dn_bans(&user)
        .await?
        .iter()
        .map(dn_ban_json)
        .collect();
    Ok(json_response(StatusCode::OK, &bans))
}

fn audit_json(a: &AuditEntry) -> Value {
    json!({"datetime": fts_datetime(a.datetime), "dn": a.dn, "config": a.config, "action": a.action})
}

pub async fn config_audit(ctx: &Ctx) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    let entries: Vec<Value> = ctx
        .service
        .config_audit(&user)
        .await?
        .iter()
        .map(audit_json)
        .collect();
    Ok(json_response(StatusCode::OK, &entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_json_only_for_exactly_application_json() {
        let q = |pairs: &[(&str, &str)]| -> Query {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let m = ban_input(
            Some("application/json"),
            q(&[]),
            br#"{"storage": "mock://a"}"#,
        )
        .unwrap();
        assert_eq!(m["storage"], "mock://a");
        let e = ban_input(Some("application/json"), q(&[]), b"nope").unwrap_err();
        assert_eq!(e.message, "Malformed input");
        let m = ban_input(
            Some("application/x-www-form-urlencoded"),
            q(&[("status", "wait")]),
            b"storage=mock%3A%2F%2Fa&status=cancel",
        )
        .unwrap();
        assert_eq!(m["storage"], "mock://a");
        assert_eq!(m["status"], "wait", "the query string wins");
        let m = ban_input(Some("text/plain"), q(&[("storage", "x")]), b"storage=y").unwrap();
        assert_eq!(m["storage"], "x");
    }
}
