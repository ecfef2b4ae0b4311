//! # console
//!
//! The two web consoles as static files built into the binary (`assets/`, plain HTML, CSS and
//! JS: no build step, no CDN, no font or script from elsewhere): the tenant console, which an
//! api node (and `resizer dev`) serves on its public port at `/console/`, and the operator
//! console, which the admin listener (the identity service, or `resizer dev`'s admin port)
//! serves at `/console/`. Each page talks only to the API of the origin that served it, with
//! the key or token the person typed, kept in the tab's `sessionStorage`.
//!
//! It owns the assets and the routers that serve them, with their security headers
//! (Content-Security-Policy: this origin only). It must not authenticate, read a store or
//! decide anything: every action in a console is a call of the public or admin API, which
//! decides it and answers its problem+json, shown to the person in words (docs/console.md).

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

/// Scripts, styles, fetches and images from this origin only; `blob:` images for the "try it"
/// panel, which shows the chosen file and the answer from memory. No inline script or style:
/// what the pages draw they draw through the DOM.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; \
                   connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// One file of a console: its path under `/console/`, content type and bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const COMMON: [Asset; 2] = [
    Asset { path: "console.css", content_type: "text/css; charset=utf-8", body: include_str!("../assets/console.css") },
    Asset {
        path: "common.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../assets/common.js"),
    },
];

const TENANT: [Asset; 2] = [
    Asset { path: "", content_type: "text/html; charset=utf-8", body: include_str!("../assets/tenant.html") },
    Asset {
        path: "tenant.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../assets/tenant.js"),
    },
];

const OPERATOR: [Asset; 2] = [
    Asset { path: "", content_type: "text/html; charset=utf-8", body: include_str!("../assets/operator.html") },
    Asset {
        path: "operator.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../assets/operator.js"),
    },
];

/// The tenant console at `/console/`, for an api node's public router (any state: it reads
/// none).
pub fn tenant_router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    router(&TENANT)
}

/// The operator console at `/console/`, for the admin router. The pages are public (they hold
/// no data); every call they make carries the operator's token and is decided by the admin API.
pub fn operator_router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    router(&OPERATOR)
}

fn router<S: Clone + Send + Sync + 'static>(own: &'static [Asset]) -> Router<S> {
    // `/console` without its slash: relative asset paths resolve under `/console/` only.
    let mut router = Router::new().route("/console", get(|| async { Redirect::permanent("/console/") }));
    for asset in own.iter().chain(COMMON.iter()) {
        router = router.route(&format!("/console/{}", asset.path), get(move || async move { serve(asset) }));
    }
    router
}

fn serve(asset: &'static Asset) -> Response {
    let mut response = (StatusCode::OK, asset.body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // A new binary may bring new assets: the browser asks again (cheap: they are small).
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(HeaderName::from_static("cross-origin-opener-policy"), HeaderValue::from_static("same-origin"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_names_only_assets_the_router_serves() {
        for (own, page) in [(&TENANT, TENANT[0].body), (&OPERATOR, OPERATOR[0].body)] {
            for reference in page.split(['"', '\'']).filter(|s| s.ends_with(".js") || s.ends_with(".css")) {
                assert!(
                    own.iter().chain(COMMON.iter()).any(|a| a.path == reference),
                    "the page refers to {reference}, which is not served"
                );
                assert!(!reference.contains("//"), "only this origin: {reference}");
            }
            assert!(!page.contains("style=\""), "no inline style (the CSP refuses it)");
            assert!(!page.contains("<script>"), "no inline script (the CSP refuses it)");
        }
    }
}
