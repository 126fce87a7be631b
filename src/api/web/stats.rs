//! Statistics page.

use super::{Rendered, Req};
use crate::api::error::ApiError;

pub async fn stats(_req: &Req<'_>, _partial: bool) -> Result<Rendered, ApiError> {
    Err(ApiError::not_found())
}
