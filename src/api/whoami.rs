//! `GET /whoami` and `GET /whoami/certificate`.

use warp::{
    http::{HeaderValue, StatusCode, header},
    reply::Response,
};

use super::{
    Ctx,
    error::{ApiError, json_response},
};
use crate::service::whoami;

pub async fn whoami(ctx: &Ctx) -> Result<Response, ApiError> {
    let user = ctx.user().await?;
    Ok(json_response(StatusCode::OK, &whoami::whoami(&user)))
}

pub fn certificate(ctx: &Ctx) -> Result<Response, ApiError> {
    let pem = whoami::certificate_chain_pem(ctx.peer())?;
    let mut response = Response::new(pem.into());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-pem-file"),
    );
    Ok(response)
}
