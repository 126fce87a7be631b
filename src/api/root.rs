//! `GET /`: versions and HAL links. The Python client reads `api.major/minor/patch` as integers
//! on every command, so their shape is fixed. ftsd adds `schemes`: the URL schemes its transfer
//! engine serves (`null` on an API-only instance, which accepts any).

use serde_json::json;
use warp::{http::StatusCode, reply::Response};

use super::{Ctx, error::json_response};
use crate::store::schema::SCHEMA_VERSION;

/// The REST API version this server implements (fts-rest-flask 3.13.4).
pub const API_VERSION: (u32, u32, u32) = (3, 13, 4);
/// The delegation protocol version.
pub const DELEGATION_VERSION: (u32, u32, u32) = (1, 0, 0);

pub fn root(ctx: Ctx) -> Response {
    let version = |(major, minor, patch): (u32, u32, u32)| json!({"major": major, "minor": minor, "patch": patch});
    let body = json!({
        "delegation": version(DELEGATION_VERSION),
        "api": version(API_VERSION),
        // No FTS3 core packages are installed beside ftsd: null, as the reference reports then.
        "core": null,
        "schema": {"major": SCHEMA_VERSION, "minor": 0, "patch": 0},
        "schemes": ctx.service.schemes(),
        "_links": {
            "curies": [{"name": "fts", "href": "https://gitlab.cern.ch/fts/fts3"}],
            "fts:whoami": {"href": "/whoami", "title": "Check user certificate"},
            "fts:joblist": {"href": "/jobs{?vo_name,user_dn,dlg_id,state_in}", "title": "List of active jobs", "templated": true},
            "fts:job": {"href": "/jobs/{id}", "title": "Job information", "templated": true, "hints": {"allow": ["GET", "DELETE"]}},
            "fts:configaudit": {"href": "/config/audit", "title": "Configuration"},
            "fts:submitschema": {"href": "/api-docs/schema/submit", "title": "JSON schema of messages"},
            "fts:apidocs": {"href": "/api-docs/", "title": "API Documentation"},
            "fts:jobsubmit": {"href": "/jobs", "hints": {"allow": ["POST"], "representations": ["fts:submitschema"]}},
            "fts:optimizer": {"href": "/optimizer/", "title": "Optimizer"},
            "fts:archive": {"href": "/archive/", "title": "Archive"}
        }
    });
    json_response(StatusCode::OK, &body)
}
