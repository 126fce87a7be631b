//! The pages' static files, compiled into the binary: the vendored htmx and uPlot (see
//! `web/vendor/VERSIONS.md`), ftsd's own script, style sheet and icon. Each is served under a
//! name carrying a hash of its bytes (`htmx.min.3f2a….js`), so a new build changes the URL and
//! browsers may keep a file forever (`Cache-Control: immutable`).

use std::sync::LazyLock;

/// One static file.
pub struct Asset {
    /// The name in the source tree (`htmx.min.js`).
    pub name: &'static str,
    /// The name it is served under, with the hash before the extension.
    pub hashed: String,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

/// FNV-1a, 64 bits: enough to tell builds apart (not a security measure: the files are ours).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn asset(name: &'static str, content_type: &'static str, bytes: &'static [u8]) -> Asset {
    let hash = format!("{:016x}", fnv1a(bytes));
    let hashed = match name.rsplit_once('.') {
        Some((stem, ext)) => format!("{stem}.{hash}.{ext}"),
        None => format!("{name}.{hash}"),
    };
    Asset {
        name,
        hashed,
        content_type,
        bytes,
    }
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    vec![
        asset(
            "htmx.min.js",
            JS,
            include_bytes!("../../../web/vendor/htmx.min.js"),
        ),
        asset(
            "uPlot.iife.min.js",
            JS,
            include_bytes!("../../../web/vendor/uPlot.iife.min.js"),
        ),
        asset(
            "uPlot.min.css",
            CSS,
            include_bytes!("../../../web/vendor/uPlot.min.css"),
        ),
        asset("app.js", JS, include_bytes!("../../../web/app.js")),
        asset("app.css", CSS, include_bytes!("../../../web/app.css")),
        asset(
            "favicon.svg",
            "image/svg+xml",
            include_bytes!("../../../web/favicon.svg"),
        ),
    ]
});

/// The asset served as `hashed`.
pub fn by_hashed_name(hashed: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.hashed == hashed)
}

/// The URL of the asset named `name` in the source tree (`/web/static/<hashed>`).
pub fn url(name: &str) -> String {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => format!("/web/static/{}", a.hashed),
        // Only the templates call this, with the names above; a typo shows as a 404 in the
        // browser tests rather than a panic here.
        None => format!("/web/static/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_found_under_its_hashed_name_only() {
        for a in ASSETS.iter() {
            assert!(a.hashed.starts_with(a.name.split('.').next().unwrap()));
            assert_ne!(a.hashed, a.name);
            assert_eq!(url(a.name), format!("/web/static/{}", a.hashed));
            assert!(std::ptr::eq(by_hashed_name(&a.hashed).unwrap(), a));
            assert!(by_hashed_name(a.name).is_none());
        }
    }
}
