//! Optimizer pages.

use super::{Rendered, Req};
use crate::api::error::ApiError;

pub async fn list(_req: &Req<'_>, _partial: bool) -> Result<Rendered, ApiError> {
    Err(ApiError::not_found())
}

pub async fn detail(_req: &Req<'_>, _partial: bool) -> Result<Rendered, ApiError> {
    Err(ApiError::not_found())
}
