//! Who may do what over TCP (`--http-addr`). The Unix socket needs no
//! token: only our own user can connect to it (SO_PEERCRED is checked).
//!
//! Without `--http-token-file`, TCP serves reads and refuses acts (403).
//! With it, every TCP request needs the token (`Authorization: Bearer
//! TOKEN`, or the `sessionlet-token` cookie the dashboard gets from
//! `/?token=TOKEN`), except `/healthz` and `/readyz`, which probes call.

use std::path::Path;

/// The cookie the dashboard keeps the token in (a browser cannot add an
/// Authorization header to an EventSource).
pub const COOKIE: &str = "sessionlet-token";

/// How a request reached us.
#[derive(Debug, Clone)]
pub enum Transport {
    /// The Unix socket: the peer is our own user.
    Unix,
    /// TCP, with the token when one is configured.
    Tcp {
        /// The token every request must carry; `None`: reads only.
        token: Option<std::sync::Arc<str>>,
    },
}

/// Reads the token file: its first line, trimmed; an empty one is an error.
pub fn load_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "--http-token-file {}: {e} (fix: write a long random token in it, e.g. `head -c 32 /dev/urandom | base64 > {}`)",
            path.display(),
            path.display()
        )
    })?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.len() < 16 {
        return Err(format!(
            "--http-token-file {}: the token must be at least 16 characters on its first line (fix: `head -c 32 /dev/urandom | base64 > {}`)",
            path.display(),
            path.display()
        ));
    }
    Ok(token)
}

/// Compares in time that depends only on the lengths, so that the answer
/// time does not tell how much of a guess was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token a request carries: `Authorization: Bearer T`, or the cookie.
pub fn presented(headers: &hyper::HeaderMap) -> Option<String> {
    if let Some(v) = headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(t) = v.strip_prefix("Bearer ") {
            return Some(t.trim().to_string());
        }
    }
    let cookies = headers.get(hyper::header::COOKIE)?.to_str().ok()?;
    cookies.split(';').find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == COOKIE).then(|| v.to_string())
    })
}

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead.
    Allowed,
    /// A token is configured and this request lacks the right one (401).
    NeedsToken,
    /// An act over TCP without a configured token (403).
    ActsOff,
}

/// Decides for a request of `path`; `acting`: a POST.
pub fn check(
    transport: &Transport,
    headers: &hyper::HeaderMap,
    path: &str,
    acting: bool,
) -> Verdict {
    match transport {
        Transport::Unix => Verdict::Allowed,
        Transport::Tcp { .. } if matches!(path, "/healthz" | "/readyz") => Verdict::Allowed,
        Transport::Tcp { token: None } if acting => Verdict::ActsOff,
        Transport::Tcp { token: None } => Verdict::Allowed,
        Transport::Tcp { token: Some(t) } => match presented(headers) {
            Some(p) if constant_time_eq(p.as_bytes(), t.as_bytes()) => Verdict::Allowed,
            _ => Verdict::NeedsToken,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_whole_tokens_only() {
        assert!(constant_time_eq(b"abcdef", b"abcdef"));
        assert!(!constant_time_eq(b"abcdef", b"abcdeg"));
        assert!(!constant_time_eq(b"abc", b"abcdef"));
    }

    #[test]
    fn tcp_without_a_token_reads_but_does_not_act() {
        let h = hyper::HeaderMap::new();
        let tcp = Transport::Tcp { token: None };
        assert_eq!(check(&tcp, &h, "/api/v1/sessions", false), Verdict::Allowed);
        assert_eq!(
            check(&tcp, &h, "/api/v1/sessions/a/stop", true),
            Verdict::ActsOff
        );
        assert_eq!(check(&Transport::Unix, &h, "/x", true), Verdict::Allowed);
    }

    #[test]
    fn a_configured_token_is_needed_for_everything_but_probes() {
        let tcp = Transport::Tcp {
            token: Some("0123456789abcdef".into()),
        };
        let mut h = hyper::HeaderMap::new();
        assert_eq!(
            check(&tcp, &h, "/api/v1/sessions", false),
            Verdict::NeedsToken
        );
        assert_eq!(check(&tcp, &h, "/healthz", false), Verdict::Allowed);
        h.insert(
            hyper::header::AUTHORIZATION,
            hyper::header::HeaderValue::from_static("Bearer 0123456789abcdef"),
        );
        assert_eq!(
            check(&tcp, &h, "/api/v1/sessions/a/stop", true),
            Verdict::Allowed
        );
        let mut c = hyper::HeaderMap::new();
        c.insert(
            hyper::header::COOKIE,
            hyper::header::HeaderValue::from_static("x=1; sessionlet-token=0123456789abcdef"),
        );
        assert_eq!(check(&tcp, &c, "/", false), Verdict::Allowed);
    }
}
