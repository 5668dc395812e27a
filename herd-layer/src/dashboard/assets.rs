//! The page itself: plain HTML, CSS and JavaScript written for herd,
//! compiled into the binary (`include_str!`), so the dashboard works on a
//! machine with no network and loads nothing from any other origin — the
//! `Content-Security-Policy` sent with every file says so to the browser
//! too. Charts are the page's own small SVG code (`charts.js`).

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Full};

use crate::routed::Body;

struct Asset {
    path: &'static str,
    mime: &'static str,
    body: &'static str,
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "/dashboard",
        mime: "text/html; charset=utf-8",
        body: include_str!("assets/index.html"),
    },
    Asset {
        path: "/dashboard/app.css",
        mime: "text/css; charset=utf-8",
        body: include_str!("assets/app.css"),
    },
    Asset {
        path: "/dashboard/app.js",
        mime: "text/javascript; charset=utf-8",
        body: include_str!("assets/app.js"),
    },
    Asset {
        path: "/dashboard/charts.js",
        mime: "text/javascript; charset=utf-8",
        body: include_str!("assets/charts.js"),
    },
    Asset {
        path: "/dashboard/views.js",
        mime: "text/javascript; charset=utf-8",
        body: include_str!("assets/views.js"),
    },
    Asset {
        path: "/dashboard/icon.svg",
        mime: "image/svg+xml",
        body: include_str!("assets/icon.svg"),
    },
];

/// Sent with every file: nothing but this origin, no inline script, no
/// framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// FNV-1a, for the files' ETags (computed at compile time).
const fn fnv(s: &str) -> u64 {
    let b = s.as_bytes();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < b.len() {
        h ^= b[i] as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    h
}

/// Every path the page is served under.
pub fn paths() -> impl Iterator<Item = &'static str> {
    ASSETS.iter().map(|a| a.path)
}

/// The file at `path` (`/dashboard` or `/dashboard/…`), `None` when there is
/// none. `if_none_match` is the request's `If-None-Match`.
pub fn serve(path: &str, if_none_match: Option<&str>) -> Option<http::Response<Body>> {
    let path = if path == "/dashboard/" {
        "/dashboard"
    } else {
        path
    };
    let a = ASSETS.iter().find(|a| a.path == path)?;
    let etag = format!("\"{:016x}\"", fnv(a.body));
    let (status, body) = if if_none_match == Some(etag.as_str()) {
        (StatusCode::NOT_MODIFIED, Bytes::new())
    } else {
        (StatusCode::OK, Bytes::from_static(a.body.as_bytes()))
    };
    let mut rsp = http::Response::new(Full::new(body).map_err(|e| match e {}).boxed());
    *rsp.status_mut() = status;
    let h = rsp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(a.mime));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Some(rsp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_served_with_its_type_and_the_policy() {
        for p in paths() {
            let rsp = serve(p, None).expect(p);
            assert_eq!(rsp.status(), 200, "{p}");
            assert!(
                rsp.headers()[header::CONTENT_SECURITY_POLICY]
                    .to_str()
                    .unwrap()
                    .contains("default-src 'none'")
            );
            let etag = rsp.headers()[header::ETAG].to_str().unwrap().to_string();
            assert_eq!(serve(p, Some(&etag)).unwrap().status(), 304, "{p}");
        }
        assert!(serve("/dashboard/../etc/passwd", None).is_none());
        assert_eq!(serve("/dashboard/", None).unwrap().status(), 200);
    }

    #[test]
    fn the_page_names_no_other_origin() {
        for a in ASSETS {
            for bad in ["http://", "https://", "//cdn", "@import"] {
                // The SVG namespace is a name, not a request.
                let text = a.body.replace("http://www.w3.org/2000/svg", "");
                assert!(!text.contains(bad), "{} contains {bad:?}", a.path);
            }
        }
    }
}
