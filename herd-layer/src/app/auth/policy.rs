//! Which part of the API each route belongs to — one table.
//!
//! Every inference endpoint of [`crate::request::ENDPOINTS`] is
//! `inference`; every other route is listed here by method and path (as
//! the router writes it, `{node}` and all). A route missing from the table
//! is `admin`: a new endpoint is closed until someone decides otherwise,
//! never open by accident — and a test fails until it is listed.

use http::Method;

use super::Part;
use crate::request::Endpoint;

/// Method (`*`: any), path template, part. Paths as in `app::api::router`.
#[rustfmt::skip]
pub const ROUTES: &[(&str, &str, Part)] = &[
    ("GET", "/", Part::Inference),
    ("HEAD", "/", Part::Inference),
    ("GET", "/api/version", Part::Inference),
    ("GET", "/api/tags", Part::Inference),
    ("GET", "/api/ps", Part::Inference),
    ("POST", "/api/show", Part::Inference),
    ("GET", "/v1/models", Part::Inference),
    ("GET", "/v1/models/{*id}", Part::Inference),
    ("POST", "/v1/messages/count_tokens", Part::Inference),
    ("GET", "/metrics", Part::Fleet),
    ("GET", "/fleet/status", Part::Fleet),
    ("GET", "/fleet/explain", Part::Fleet),
    ("GET", "/fleet/health", Part::Fleet),
    ("GET", "/fleet/context", Part::Fleet),
    ("GET", "/fleet/pulls", Part::Fleet),
    ("GET", "/fleet/benchmark", Part::Fleet),
    ("POST", "/fleet/explain", Part::Fleet),
    // The live stream: fleet state and routing decisions (no tags, users
    // or keys), and the config in effect with its secrets redacted.
    ("GET", "/fleet/events", Part::Fleet),
    ("GET", "/fleet/config", Part::Fleet),
    // The dashboard's page and files: always open (a browser cannot send
    // a key when it opens a page); what it shows comes from the routes
    // above and below, each under its own part.
    ("GET", "/dashboard", Part::Public),
    ("GET", "/dashboard/info", Part::Public),
    ("GET", "/dashboard/{file}", Part::Public),
    ("GET", "/fleet/traces", Part::Traces),
    ("GET", "/fleet/analytics/usage", Part::Traces),
    ("POST", "/fleet/benchmark", Part::Admin),
    ("POST", "/fleet/nodes/{node}/command", Part::Admin),
    ("POST", "/api/pull", Part::Admin),
    ("POST", "/api/push", Part::Admin),
    ("DELETE", "/api/delete", Part::Admin),
    ("POST", "/api/copy", Part::Admin),
    ("POST", "/api/create", Part::Admin),
    ("*", "/api/blobs/{digest}", Part::Admin),
    ("*", "/fleet/keys", Part::Admin),
    ("*", "/fleet/keys/{name}", Part::Admin),
];

/// The part of the API a request to `path` (the matched route) with
/// `method` belongs to.
pub fn part_of(method: &Method, path: &str) -> Part {
    if Endpoint::from_path(path).is_some() && method == Method::POST {
        return Part::Inference;
    }
    // HEAD is answered by GET routes.
    let m = if method == Method::HEAD && !ROUTES.iter().any(|(m, p, _)| *m == "HEAD" && *p == path)
    {
        "GET"
    } else {
        method.as_str()
    };
    ROUTES
        .iter()
        .find(|(rm, rp, _)| *rp == path && (*rm == "*" || *rm == m))
        .map_or(Part::Admin, |(_, _, part)| *part)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inference_fleet_traces_admin() {
        assert_eq!(part_of(&Method::POST, "/api/chat"), Part::Inference);
        assert_eq!(part_of(&Method::POST, "/v1/messages"), Part::Inference);
        assert_eq!(part_of(&Method::GET, "/api/tags"), Part::Inference);
        assert_eq!(part_of(&Method::HEAD, "/fleet/status"), Part::Fleet);
        assert_eq!(part_of(&Method::GET, "/fleet/traces"), Part::Traces);
        assert_eq!(
            part_of(&Method::POST, "/fleet/nodes/{node}/command"),
            Part::Admin
        );
        assert_eq!(part_of(&Method::HEAD, "/api/blobs/{digest}"), Part::Admin);
        assert_eq!(part_of(&Method::GET, "/fleet/keys"), Part::Admin);
        assert_eq!(
            part_of(&Method::POST, "/fleet/status"),
            Part::Admin,
            "unknown method"
        );
        assert_eq!(
            part_of(&Method::GET, "/fleet/new-thing"),
            Part::Admin,
            "unlisted"
        );
    }

    /// A route listed twice would have its second row silently ignored
    /// (the first match wins).
    #[test]
    fn no_route_is_listed_twice() {
        for (i, (m, p, _)) in ROUTES.iter().enumerate() {
            assert!(
                !ROUTES[i + 1..].iter().any(|(m2, p2, _)| m2 == m && p2 == p),
                "{m} {p} is listed twice"
            );
        }
    }

    #[test]
    fn the_dashboard_page_is_public() {
        for p in ["/dashboard", "/dashboard/info", "/dashboard/{file}"] {
            assert_eq!(part_of(&Method::GET, p), Part::Public, "{p}");
        }
        assert_eq!(part_of(&Method::GET, "/fleet/events"), Part::Fleet);
    }

    /// Every route the app registers (`.route("…"` in `src/app`) is in
    /// the table or is an inference endpoint: a new route must be given a
    /// part on purpose (else it is admin-only, which a LAN client would
    /// find out the hard way).
    #[test]
    fn every_route_of_the_app_is_classified() {
        fn walk(dir: &std::path::Path, out: &mut Vec<(String, String)>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    let text = std::fs::read_to_string(&p).unwrap();
                    let code = text.split("#[cfg(test)]").next().unwrap_or("");
                    for (i, _) in code.match_indices(".route(") {
                        let rest = code[i + 7..].trim_start();
                        if let Some(lit) = rest.strip_prefix('"')
                            && let Some(end) = lit.find('"')
                        {
                            out.push((lit[..end].to_string(), p.display().to_string()));
                        }
                    }
                }
            }
        }
        let mut found = Vec::new();
        let app = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/app");
        walk(&app, &mut found);
        assert!(found.iter().any(|(p, _)| p == "/fleet/status"), "{found:?}");
        let missing: Vec<_> = found
            .iter()
            .filter(|(p, _)| {
                Endpoint::from_path(p).is_none() && !ROUTES.iter().any(|(_, rp, _)| rp == p)
            })
            .collect();
        assert!(
            missing.is_empty(),
            "routes without a part in app/auth/policy.rs ROUTES (give each one: inference, fleet, traces or admin): {missing:?}"
        );
    }
}
