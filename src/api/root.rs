//! `GET /`: versions and HAL links. The Python client reads `api.major/minor/patch` as integers
//! on every command, so their shape is fixed. ftsd adds `schemes`: the URL schemes its transfer
//! engine serves (`null` on an API-only instance, which accepts any).
//!
//! `GET /api-docs/`: the endpoints (from the route table, so it cannot drift) and the schema.
//!
//! Deviation: the reference also links `fts:archive` (`/archive/`); ftsd has no archive yet
//! (it comes with retention), and a link that answers 404 only misleads, so it is left out.

use serde_json::json;
use warp::{http::StatusCode, reply::Response};

use super::{Ctx, error::json_response, routes::ROUTES};
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
            "fts:optimizer": {"href": "/optimizer/", "title": "Optimizer"}
        }
    });
    json_response(StatusCode::OK, &body)
}

/// `GET /api-docs/`: every endpoint with its methods, and where the submission schema is. In
/// the reference's Swagger 1.2 envelope (`swaggerVersion`, `apis`, `info`), with the endpoints
/// themselves listed under `apis` (the reference lists resources there and their operations
/// at `/api-docs/<resource>`, which ftsd does not serve).
pub fn api_docs() -> Response {
    let apis: Vec<_> = ROUTES
        .iter()
        .map(|route| {
            let mut methods: Vec<&str> = route.methods.to_vec();
            if methods.contains(&"GET") {
                methods.push("HEAD");
            }
            json!({
                "path": route.pattern,
                "operations": methods.iter().map(|m| json!({"method": m})).collect::<Vec<_>>(),
            })
        })
        .collect();
    let body = json!({
        "swaggerVersion": "1.2",
        "apis": apis,
        "schemas": {"submit": "/api-docs/schema/submit"},
        "info": {
            "title": "FTS3 RESTful API (ftsd)",
            "description": "The FTS3 REST API as ftsd serves it",
            "license": "Apache 2.0",
        },
    });
    json_response(StatusCode::OK, &body)
}
