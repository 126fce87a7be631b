//! The table of every route the API serves, with its methods. It answers what warp's filters
//! cannot: `OPTIONS` (with `Allow`), 405 for a known path with another method, 404 otherwise.
//!
//! Decision: the reference answers `POST /unknown` with 405 and `OPTIONS /unknown` with 200
//! (an artefact of Flask's static route); ftsd answers 404 for every method on an unknown path,
//! which no client depends on and which tells the user what is wrong.

use warp::http::{HeaderValue, Method, StatusCode, header};
use warp::reply::Response;

use super::error::ApiError;

/// A route: path pattern (`{name}` matches one segment) and its methods (HEAD follows GET).
pub struct Route {
    pub pattern: &'static str,
    pub methods: &'static [&'static str],
}

/// Every route served. Handlers in the other files of `api` must be listed here.
pub const ROUTES: &[Route] = &[
    Route {
        pattern: "/",
        methods: &["GET"],
    },
    Route {
        pattern: "/whoami",
        methods: &["GET"],
    },
    Route {
        pattern: "/whoami/certificate",
        methods: &["GET"],
    },
    Route {
        pattern: "/delegation/{dlg_id}",
        methods: &["GET", "DELETE"],
    },
    Route {
        pattern: "/delegation/{dlg_id}/request",
        methods: &["GET"],
    },
    Route {
        pattern: "/delegation/{dlg_id}/credential",
        methods: &["PUT", "POST"],
    },
    Route {
        pattern: "/delegation/{dlg_id}/voms",
        methods: &["POST"],
    },
    Route {
        pattern: "/api-docs",
        methods: &["GET"],
    },
    Route {
        pattern: "/api-docs/schema/submit",
        methods: &["GET"],
    },
    Route {
        pattern: "/jobs",
        methods: &["GET", "POST", "PUT"],
    },
    Route {
        pattern: "/jobs/{job_ids}",
        methods: &["GET", "DELETE", "POST"],
    },
    Route {
        pattern: "/jobs/{job_id}/{field}",
        methods: &["GET"],
    },
    Route {
        pattern: "/jobs/{job_id}/files/{file_ids}",
        methods: &["DELETE"],
    },
    Route {
        pattern: "/jobs/{job_id}/files/{file_id}/retries",
        methods: &["GET"],
    },
    Route {
        pattern: "/jobs/vo/{vo_name}",
        methods: &["DELETE"],
    },
    Route {
        pattern: "/files",
        methods: &["GET"],
    },
    Route {
        pattern: "/admin/force-start",
        methods: &["POST"],
    },
    Route {
        pattern: "/ban/se",
        methods: &["GET", "POST", "DELETE"],
    },
    Route {
        pattern: "/ban/dn",
        methods: &["GET", "POST", "DELETE"],
    },
    Route {
        pattern: "/config/audit",
        methods: &["GET"],
    },
    Route {
        pattern: "/config",
        methods: &["GET"],
    },
    Route {
        pattern: "/config/drain",
        methods: &["POST"],
    },
    Route {
        pattern: "/config/global",
        methods: &["GET", "POST", "DELETE"],
    },
    Route {
        pattern: "/config/links",
        methods: &["GET", "POST"],
    },
    Route {
        pattern: "/config/links/{symbolicname}",
        methods: &["GET", "DELETE"],
    },
    Route {
        pattern: "/config/shares",
        methods: &["GET", "POST", "DELETE"],
    },
    Route {
        pattern: "/config/se",
        methods: &["GET", "POST", "DELETE"],
    },
    Route {
        pattern: "/config/activity_shares",
        methods: &["GET", "POST"],
    },
    Route {
        pattern: "/config/activity_shares/{vo_name}",
        methods: &["GET", "DELETE"],
    },
    Route {
        pattern: "/config/authorize",
        methods: &["GET", "POST", "DELETE"],
    },
    Route {
        pattern: "/optimizer",
        methods: &["GET"],
    },
    Route {
        pattern: "/optimizer/evolution",
        methods: &["GET"],
    },
    Route {
        pattern: "/optimizer/current",
        methods: &["GET", "POST"],
    },
    Route {
        pattern: "/optimizer/snapshot",
        methods: &["GET"],
    },
    Route {
        pattern: "/snapshot",
        methods: &["GET"],
    },
    Route {
        pattern: "/status/hosts",
        methods: &["GET"],
    },
];

fn matches(pattern: &str, path: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty()).collect();
    let path: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    pattern.len() == path.len()
        && pattern
            .iter()
            .zip(&path)
            .all(|(p, s)| p.starts_with('{') || p == s)
}

/// The methods allowed on `path`, if it is a known route: the route's methods plus HEAD (where
/// GET is) and OPTIONS, as the reference's `Allow` header lists them.
pub fn allowed(path: &str) -> Option<Vec<&'static str>> {
    let mut methods: Vec<&'static str> = Vec::new();
    for route in ROUTES.iter().filter(|r| matches(r.pattern, path)) {
        for m in route.methods {
            if !methods.contains(m) {
                methods.push(m);
            }
        }
    }
    if methods.is_empty() {
        return None;
    }
    if methods.contains(&"GET") {
        methods.push("HEAD");
    }
    methods.push("OPTIONS");
    Some(methods)
}

/// Answer for a request no handler took.
pub fn fallback(method: &Method, path: &str) -> Response {
    let Some(methods) = allowed(path) else {
        return ApiError::not_found().into_response();
    };
    let allow = HeaderValue::from_str(&methods.join(", "))
        .unwrap_or_else(|_| HeaderValue::from_static("OPTIONS"));
    let mut response = if method == Method::OPTIONS {
        let mut r = Response::new("".into());
        *r.status_mut() = StatusCode::OK;
        r
    } else {
        ApiError::method_not_allowed().into_response()
    };
    response.headers_mut().insert(header::ALLOW, allow);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_whole_segments() {
        assert!(matches("/", "/"));
        assert!(matches("/whoami", "/whoami/"));
        assert!(matches("/jobs/{job_ids}", "/jobs/abc"));
        assert!(!matches("/jobs/{job_ids}", "/jobs"));
        assert!(!matches("/whoami", "/whoamix"));
    }

    #[test]
    fn allow_lists_head_and_options() {
        assert_eq!(allowed("/whoami").unwrap(), vec!["GET", "HEAD", "OPTIONS"]);
        assert!(allowed("/nowhere").is_none());
    }
}
