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
    Route {
        pattern: "/metrics",
        methods: &["GET"],
    },
    Route {
        pattern: "/ftsmon/overview",
        methods: &["GET"],
    },
    Route {
        pattern: "/ftsmon/overview/activities",
        methods: &["GET"],
    },
    Route {
        pattern: "/ftsmon/series",
        methods: &["GET"],
    },
    Route {
        pattern: "/ftsmon/linkinfo",
        methods: &["GET"],
    },
    Route {
        pattern: "/ftsmon/jobs",
        methods: &["GET"],
    },
    Route {
        pattern: "/ftsmon/jobs/{job_id}",
        methods: &["GET"],
    },
    Route {
        pattern: "/ftsmon/jobs/{job_id}/files",
        methods: &["GET"],
    },
    Route {
        pattern: "/ftsmon/jobs/{job_id}/files/{file_id}/log",
        methods: &["GET"],
    },
    Route {
        pattern: "/ftsmon/jobs/{job_id}/files/{file_id}/retries/{attempt}/log",
        methods: &["GET"],
    },
    Route {
        pattern: "/ftsmon/transfers",
        methods: &["GET"],
    },
    Route {
        pattern: "/ftsmon/optimizer",
        methods: &["GET"],
    },
    Route {
        pattern: "/ftsmon/optimizer/detailed",
        methods: &["GET"],
    },
    Route {
        pattern: "/ftsmon/optimizer/series",
        methods: &["GET"],
    },
    Route {
        pattern: "/ftsmon/errors",
        methods: &["GET"],
    },
    Route {
        pattern: "/ftsmon/errors/list",
        methods: &["GET"],
    },
    Route {
        pattern: "/ftsmon/errors/classes",
        methods: &["GET"],
    },
    Route {
        pattern: "/ftsmon/stats",
        methods: &["GET"],
    },
    Route {
        pattern: "/ftsmon/stats/servers",
        methods: &["GET"],
    },
    Route {
        pattern: "/ftsmon/stats/vo",
        methods: &["GET"],
    },
    Route {
        pattern: "/ftsmon/config/{section}",
        methods: &["GET"],
    },
    Route {
        pattern: "/ftsmon/config/activities/{vo_name}",
        methods: &["GET"],
    },
    Route {
        pattern: "/ftsmon/unique/{field}",
        methods: &["GET"],
    },
    Route {
        pattern: "/ftsmon/version",
        methods: &["GET"],
    },
    Route {
        pattern: "/web",
        methods: &["GET"],
    },
    Route {
        pattern: "/web/jobs",
        methods: &["GET"],
    },
    Route {
        pattern: "/web/jobs/{job_id}",
        methods: &["GET"],
    },
    Route {
        pattern: "/web/transfers",
        methods: &["GET"],
    },
    Route {
        pattern: "/web/optimizer",
        methods: &["GET"],
    },
    Route {
        pattern: "/web/optimizer/detail",
        methods: &["GET"],
    },
    Route {
        pattern: "/web/errors",
        methods: &["GET"],
    },
    Route {
        pattern: "/web/errors/list",
        methods: &["GET"],
    },
    Route {
        pattern: "/web/stats",
        methods: &["GET"],
    },
    Route {
        pattern: "/web/config",
        methods: &["GET"],
    },
    Route {
        pattern: "/web/static/{asset}",
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

/// The route pattern a path falls under, for metrics labels (bounded: never the path
/// itself); ftsmon's legacy `/fts3/ftsmon/...` paths count as `/ftsmon/...`; unknown paths
/// are `other`.
pub fn route_label(path: &str) -> &'static str {
    let path = match path.strip_prefix("/fts3") {
        Some(rest) if rest.starts_with("/ftsmon") => rest,
        _ => path,
    };
    ROUTES
        .iter()
        .find(|r| matches(r.pattern, path))
        .map_or("other", |r| r.pattern)
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
    fn route_labels_are_patterns() {
        assert_eq!(route_label("/jobs/abc"), "/jobs/{job_ids}");
        assert_eq!(route_label("/fts3/ftsmon/jobs/"), "/ftsmon/jobs");
        assert_eq!(
            route_label("/ftsmon/jobs/x/files/3/log"),
            "/ftsmon/jobs/{job_id}/files/{file_id}/log"
        );
        assert_eq!(route_label("/no/such/thing"), "other");
    }

    #[test]
    fn allow_lists_head_and_options() {
        assert_eq!(allowed("/whoami").unwrap(), vec!["GET", "HEAD", "OPTIONS"]);
        assert!(allowed("/nowhere").is_none());
    }
}
