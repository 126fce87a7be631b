//! Error pages.

use super::{Rendered, Req};
use crate::api::error::ApiError;

pub async fn links(_req: &Req<'_>, _partial: bool) -> Result<Rendered, ApiError> {
    Err(ApiError::not_found())
}

pub async fn reasons(_req: &Req<'_>, _partial: bool) -> Result<Rendered, ApiError> {
    Err(ApiError::not_found())
}
