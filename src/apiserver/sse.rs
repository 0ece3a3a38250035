//! `GET /api/v1/watch`: Server-Sent Events.
//!
//! The stream opens with the current documents (one `session`, `pool` and
//! `controller` event each, so a watcher needs no separate list and misses
//! nothing between a list and the stream), then `event: synced`, then one
//! event per changed document and per recorded event (`event: event`), and
//! a comment line every 15 s so that dead clients are noticed.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Bytes, Frame};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};

use super::{Change, Hub};

/// A response body fed from a channel: each message is one chunk.
#[derive(Debug)]
pub struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|m| m.map(|b| Ok(Frame::data(b))))
    }
}

/// One SSE message.
pub fn frame(event: &str, data: &Value) -> Bytes {
    // JSON on one line never contains a newline, which would end the field.
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

fn change_frame(c: &Change) -> Bytes {
    match c {
        Change::Session(doc) => frame("session", doc),
        Change::Pool(doc) => frame("pool", doc),
        Change::Controller(doc) => frame("controller", doc),
        Change::Deleted { kind, name } => {
            frame("deleted", &serde_json::json!({"kind": kind, "name": name}))
        }
    }
}

/// Starts feeding a watch stream; the body ends when the client goes away.
pub fn watch(hub: Arc<Hub>) -> ChannelBody {
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    // Subscribe before taking the snapshot: a change in between is sent twice, never lost.
    let mut changes = hub.subscribe();
    let mut events = hub.subscribe_events();
    tokio::spawn(async move {
        let mut first: Vec<Bytes> = Vec::new();
        first.extend(hub.sessions().iter().map(|d| frame("session", d)));
        first.extend(hub.pools().iter().map(|d| frame("pool", d)));
        first.push(frame("controller", &hub.controller()));
        first.push(frame("synced", &serde_json::json!({})));
        for b in first {
            if tx.send(b).await.is_err() {
                return;
            }
        }
        let mut keepalive = tokio::time::interval(Duration::from_secs(15));
        keepalive.tick().await;
        let mut events_open = true;
        loop {
            let out = tokio::select! {
                c = changes.recv() => match c {
                    Ok(c) => change_frame(&c),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        frame("lagged", &serde_json::json!({"missed": n}))
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                e = events.recv(), if events_open => match e {
                    Ok(e) => frame("event", &serde_json::to_value(&e).unwrap_or_default()),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        frame("lagged", &serde_json::json!({"missedEvents": n}))
                    }
                    // No event log feeding us: only documents from now on.
                    Err(broadcast::error::RecvError::Closed) => {
                        events_open = false;
                        continue;
                    }
                },
                _ = keepalive.tick() => Bytes::from_static(b": keepalive\n\n"),
                () = tx.closed() => return,
            };
            if tx.send(out).await.is_err() {
                return;
            }
        }
    });
    ChannelBody { rx }
}
