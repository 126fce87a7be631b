//! `/delegation/{id}`, `/delegation/{id}/request`, `/delegation/{id}/credential`,
//! `/delegation/{id}/voms`.

use warp::{
    http::{HeaderValue, StatusCode, header},
    reply::Response,
};

use super::{
    Ctx,
    error::{ApiError, json_response},
};
use crate::service::delegation::{MAX_CREDENTIAL_BODY, empty_view_is_list};

pub async fn view(ctx: &Ctx, dlg_id: &str, user_agent: Option<&str>) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    let body = match ctx.service.delegation_view(&user, dlg_id).await? {
        Some(view) => serde_json::json!({
            "termination_time": view.termination_time,
            "voms_attrs": view.voms_attrs,
        }),
        None if empty_view_is_list(user_agent) => serde_json::json!([]),
        None => serde_json::Value::Null,
    };
    Ok(json_response(StatusCode::OK, &body))
}

pub async fn request(ctx: Ctx, dlg_id: String) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    let key_bits = ctx.peer().and_then(|p| p.key_bits);
    let csr = ctx
        .service
        .delegation_request(&user, key_bits, &dlg_id)
        .await?;
    let mut response = Response::new(csr.into());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(id) = HeaderValue::from_str(&dlg_id) {
        headers.insert("X-Delegation-ID", id);
    }
    Ok(response)
}

pub async fn credential<S, B>(ctx: Ctx, dlg_id: String, body: S) -> Result<Response, ApiError>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>>,
    B: bytes::Buf,
{
    let user = ctx.user().await?;
    let body = super::body::read(body, MAX_CREDENTIAL_BODY).await?;
    ctx.service.delegation_put(&user, &dlg_id, body).await?;
    let mut response = Response::new("".into());
    *response.status_mut() = StatusCode::CREATED;
    Ok(response)
}

pub async fn delete(ctx: &Ctx, dlg_id: &str) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    ctx.service.delegation_delete(&user, dlg_id).await?;
    let mut response = Response::new("".into());
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok(response)
}

pub async fn voms(ctx: &Ctx, dlg_id: &str) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    ctx.service.delegation_voms(&user, dlg_id)?;
    Ok(Response::new("".into()))
}
