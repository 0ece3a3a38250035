//! The router behind both listeners (the Unix socket and `--http-addr`).

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use super::auth::{self, Transport, Verdict};
use super::{dashboard, sse, Act, ApiError, Hub};

/// Every response's body.
pub type Body = BoxBody<Bytes, Infallible>;

/// Longest `tail` the logs endpoint reads (it also reads at most the last
/// 256 KiB of each file).
pub const MAX_TAIL: usize = 5000;

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// A response with the headers every answer carries: no inline script may
/// run on a page we serve, nothing is sniffed or cached.
fn respond(status: u16, content_type: &str, body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    let pairs = [
        ("content-type", content_type),
        ("content-security-policy", "default-src 'self'"),
        ("x-content-type-options", "nosniff"),
        ("cache-control", "no-store"),
    ];
    for (k, v) in pairs {
        if let Ok(v) = hyper::header::HeaderValue::from_str(v) {
            h.insert(k, v);
        }
    }
    resp
}

fn json_ok(status: u16, v: &Value) -> Response<Body> {
    respond(status, "application/json", full(format!("{v}\n")))
}

fn error(e: &ApiError) -> Response<Body> {
    json_ok(e.status, &json!({"error": e.error, "hint": e.hint}))
}

fn query<'a>(q: Option<&'a str>, key: &str) -> Option<&'a str> {
    q?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then_some(v)
    })
}

/// Percent-decoding of a path segment or query value (names are plain
/// DNS-like words, but a client may still escape them).
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Answers one request.
pub async fn handle(
    req: Request<hyper::body::Incoming>,
    hub: Arc<Hub>,
    transport: Transport,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    let q = req.uri().query().map(str::to_string);
    let method = req.method().clone();
    // The dashboard over TCP with a token: `/?token=T` once sets the cookie.
    if let (Transport::Tcp { token: Some(t) }, "/", Some(given)) =
        (&transport, path.as_str(), query(q.as_deref(), "token"))
    {
        if auth::constant_time_eq(decode(given).as_bytes(), t.as_bytes()) {
            let mut resp = respond(303, "text/plain", full("to the dashboard\n"));
            let cookie = format!("{}={}; HttpOnly; SameSite=Strict; Path=/", auth::COOKIE, t);
            if let Ok(v) = hyper::header::HeaderValue::from_str(&cookie) {
                resp.headers_mut().insert(hyper::header::SET_COOKIE, v);
            }
            resp.headers_mut().insert(
                hyper::header::LOCATION,
                hyper::header::HeaderValue::from_static("/"),
            );
            return resp;
        }
    }
    match auth::check(&transport, req.headers(), &path, method == Method::POST) {
        Verdict::Allowed => {}
        Verdict::NeedsToken => {
            return error(&ApiError::new(
                401,
                "this listener needs the token from --http-token-file",
                "send `Authorization: Bearer TOKEN`; for the dashboard open /?token=TOKEN once; or use the Unix socket .sessionlet/api.sock",
            ))
        }
        Verdict::ActsOff => {
            return error(&ApiError::new(
                403,
                "acting over TCP is off",
                "start the controller with --http-token-file FILE and send `Authorization: Bearer TOKEN`, or use the Unix socket: sessionlet restart|stop NAME",
            ))
        }
    }
    if let Some(resp) = metrics_paths(&hub, &path) {
        return resp;
    }
    let segs: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(decode)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let get = method == Method::GET || method == Method::HEAD;
    let post = method == Method::POST;
    match segs.as_slice() {
        [""] | ["index.html"] if get => dashboard::page(),
        ["dashboard.js"] if get => dashboard::script(),
        ["dashboard.css"] if get => dashboard::style(),
        ["api", "v1", "sessions"] if get => {
            json_ok(200, &json!({"kind": "SessionList", "items": hub.sessions()}))
        }
        ["api", "v1", "sessions", name] if get => match hub.session(name) {
            Some(d) => json_ok(200, &d),
            None => error(&ApiError::unknown("session", name)),
        },
        ["api", "v1", "sessions", name, "logs"] if get => logs(&hub, name, q.as_deref()),
        ["api", "v1", "sessions", name, act @ ("restart" | "stop")] if post => {
            let act = if *act == "restart" {
                Act::Restart
            } else {
                Act::Stop
            };
            match hub.ask(act, name).await {
                Ok(v) => json_ok(202, &v),
                Err(e) => error(&e),
            }
        }
        ["api", "v1", "pools"] if get => {
            json_ok(200, &json!({"kind": "PoolList", "items": hub.pools()}))
        }
        ["api", "v1", "pools", name] if get => match hub.pool(name) {
            Some(d) => json_ok(200, &d),
            None => error(&ApiError::unknown("pool", name)),
        },
        ["api", "v1", "events"] if get => events(&hub, q.as_deref()),
        ["api", "v1", "controller"] if get => json_ok(200, &controller(&hub)),
        ["api", "v1", "watch"] if get => {
            respond(200, "text/event-stream", sse::watch(hub.clone()).boxed())
        }
        ["api", "v1", "sessions", _, "restart" | "stop"]
        | ["api", "v1", "sessions" | "pools" | "events" | "controller" | "watch", ..]
        | ["" | "index.html" | "dashboard.js" | "dashboard.css"] => error(&ApiError::new(
            405,
            format!("{method} is not allowed on {path}"),
            "GET reads; POST only on /api/v1/sessions/{name}/restart and /stop (see docs/openapi.yaml)",
        )),
        _ => error(&ApiError::new(
            404,
            format!("no such endpoint: {path}"),
            "see docs/openapi.yaml: /api/v1/sessions, /api/v1/pools, /api/v1/events, /api/v1/controller, /api/v1/watch, /metrics, /healthz, /readyz",
        )),
    }
}

fn metrics_paths(hub: &Hub, path: &str) -> Option<Response<Body>> {
    let (status, content_type, body) = crate::telemetry::http::respond_metrics(&hub.metrics, path)?;
    Some(respond(status, content_type, full(body)))
}

/// The controller's status with its health and readiness now.
pub fn controller(hub: &Hub) -> Value {
    let mut doc = hub.controller();
    if !doc.is_object() {
        doc = json!({"kind": "ControllerStatus"});
    }
    doc["healthy"] = json!(hub.metrics.healthy());
    doc["ready"] = json!(hub.metrics.ready.load(std::sync::atomic::Ordering::Relaxed));
    doc["apiSocket"] = json!(super::socket_path(&hub.control_dir).display().to_string());
    doc
}

fn events(hub: &Hub, q: Option<&str>) -> Response<Body> {
    let object = query(q, "object").map(decode);
    let since = match query(q, "since").map(decode) {
        None => None,
        Some(s) => match parse_since(&s) {
            Some(t) => Some(t),
            None => {
                return error(&ApiError::new(
                    400,
                    format!("since={s:?} is neither a time nor a duration"),
                    "use an RFC 3339 time (2026-01-02T03:04:05Z) or a duration back from now (90s, 10m, 1h)",
                ))
            }
        },
    };
    let items: Vec<Value> = crate::events::read_all(&hub.control_dir)
        .into_iter()
        .filter(|e| object.as_deref().is_none_or(|o| e.object.name == o))
        .filter(|e| since.is_none_or(|s| e.last_timestamp >= s))
        .filter_map(|e| serde_json::to_value(e).ok())
        .collect();
    json_ok(200, &json!({"kind": "EventList", "items": items}))
}

fn parse_since(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&chrono::Utc));
    }
    let d = s.parse::<crate::api::Duration>().ok()?;
    let d = chrono::Duration::from_std(d.std()).ok()?;
    chrono::Utc::now().checked_sub_signed(d)
}

fn logs(hub: &Hub, name: &str, q: Option<&str>) -> Response<Body> {
    let Some(doc) = hub.session(name) else {
        return error(&ApiError::unknown("session", name));
    };
    let tail = match query(q, "tail") {
        None => 100,
        Some(t) => match t.parse::<usize>() {
            Ok(n) => n.min(MAX_TAIL),
            Err(_) => {
                return error(&ApiError::new(
                    400,
                    format!("tail={t:?} is not a number of lines"),
                    format!("use tail=N with N from 0 to {MAX_TAIL}"),
                ))
            }
        },
    };
    let mut out = json!({"name": name, "tail": tail});
    for stream in ["stdout", "stderr"] {
        let Some(rel) = doc["status"]["logs"][stream].as_str() else {
            out[stream] = json!({"path": null, "lines": []});
            continue;
        };
        let path = hub.status_dir.join(rel);
        let text = crate::runtime::layout::tail_lines(&path, tail);
        let lines: Vec<&str> = text.lines().collect();
        out[stream] = json!({"path": rel, "lines": lines});
    }
    json_ok(200, &out)
}
