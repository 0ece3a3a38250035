//! The read-only web dashboard at `/`: plain HTML, CSS and a small script,
//! embedded in the binary (no build step, no CDN). The script builds every
//! element with `textContent`, never `innerHTML`, so names, messages and
//! log lines render as text; the Content-Security-Policy `default-src
//! 'self'` forbids inline script.

use super::routes::Body;
use http_body_util::{BodyExt, Full};
use hyper::Response;

const PAGE: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/dashboard.js");
const STYLE: &str = include_str!("dashboard/dashboard.css");

fn asset(content_type: &str, text: &'static str) -> Response<Body> {
    let mut resp =
        Response::new(Full::new(hyper::body::Bytes::from_static(text.as_bytes())).boxed());
    let h = resp.headers_mut();
    for (k, v) in [
        ("content-type", content_type),
        ("content-security-policy", "default-src 'self'"),
        ("x-content-type-options", "nosniff"),
        ("cache-control", "no-store"),
    ] {
        if let Ok(v) = hyper::header::HeaderValue::from_str(v) {
            h.insert(k, v);
        }
    }
    resp
}

/// `/`.
pub fn page() -> Response<Body> {
    asset("text/html; charset=utf-8", PAGE)
}
/// `/dashboard.js`.
pub fn script() -> Response<Body> {
    asset("text/javascript; charset=utf-8", SCRIPT)
}
/// `/dashboard.css`.
pub fn style() -> Response<Body> {
    asset("text/css; charset=utf-8", STYLE)
}
