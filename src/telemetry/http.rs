//! The HTTP listener of `--http-addr` (alias `--metrics-addr`): `/metrics`,
//! `/healthz`, `/readyz`, and the local API and dashboard (one router,
//! `crate::apiserver::routes`, serves both this listener and the Unix socket).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use hyper::Request;

use super::Metrics;
use crate::apiserver::auth::Transport;
use crate::apiserver::Hub;

/// The answer to a metrics or health path (status, content type, body);
/// `None` for any other path.
pub fn respond_metrics(metrics: &Metrics, path: &str) -> Option<(u16, &'static str, String)> {
    Some(match path {
        "/metrics" => (
            200,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        "/healthz" if metrics.healthy() => (200, "text/plain", "ok\n".into()),
        "/healthz" => (
            503,
            "text/plain",
            "the reconcile loop has not completed a pass within two resync intervals\n".into(),
        ),
        "/readyz" if metrics.ready.load(Ordering::Relaxed) => (200, "text/plain", "ready\n".into()),
        "/readyz" => (503, "text/plain", "not ready: no pass yet\n".into()),
        _ => return None,
    })
}

/// Binds `addr` and serves until the runtime ends. Returns the bound
/// address. `token`: from `--http-token-file` (without it, TCP reads only).
pub async fn serve(
    addr: SocketAddr,
    hub: Arc<Hub>,
    token: Option<Arc<str>>,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let hub = hub.clone();
            let transport = Transport::Tcp {
                token: token.clone(),
            };
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let hub = hub.clone();
                        let transport = transport.clone();
                        async move {
                            Ok::<_, Infallible>(
                                crate::apiserver::routes::handle(req, hub, transport).await,
                            )
                        }
                    });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    Ok(bound)
}
