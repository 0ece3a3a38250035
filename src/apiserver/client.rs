//! The CLI's side of the API: HTTP/1 over the Unix socket (`sessionlet
//! restart`, `stop`, `status`, `get -w`).

use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use serde_json::Value;

/// Why the controller could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens: no controller runs for this folder.
    #[error("no controller is running for {dir} (no socket at {socket}); start one with `sessionlet run --dir {dir}`")]
    NoController {
        /// The status folder.
        dir: String,
        /// Where the socket would be.
        socket: String,
    },
    /// Talking to it failed half-way.
    #[error("the controller's API at {socket}: {message}")]
    Broken {
        /// The socket.
        socket: String,
        /// What happened.
        message: String,
    },
}

/// A connection to a controller's API socket.
#[derive(Debug)]
pub struct Client {
    socket: PathBuf,
    dir: PathBuf,
}

impl Client {
    /// The API of the controller whose status folder is `status_dir`.
    pub fn for_dir(status_dir: &Path) -> Client {
        Client {
            socket: super::socket_path(&status_dir.join(".sessionlet")),
            dir: status_dir.to_path_buf(),
        }
    }

    /// The socket's path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn broken(&self, e: impl std::fmt::Display) -> ClientError {
        ClientError::Broken {
            socket: self.socket.display().to_string(),
            message: e.to_string(),
        }
    }

    /// Sends one request; returns the response (its body not read yet).
    pub async fn send(
        &self,
        method: &str,
        path: &str,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let stream = match tokio::net::UnixStream::connect(&self.socket).await {
            Ok(s) => s,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Err(ClientError::NoController {
                    dir: self.dir.display().to_string(),
                    socket: self.socket.display().to_string(),
                })
            }
            Err(e) => return Err(self.broken(e)),
        };
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(io)
            .await
            .map_err(|e| self.broken(e))?;
        tokio::spawn(async move {
            // Ends with the connection; its error shows on the request.
            let _ = conn.await;
        });
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "localhost")
            .body(Empty::new())
            .map_err(|e| self.broken(e))?;
        sender.send_request(req).await.map_err(|e| self.broken(e))
    }

    /// Sends one request and reads its JSON answer: (status code, document).
    pub async fn json(&self, method: &str, path: &str) -> Result<(u16, Value), ClientError> {
        let resp = self.send(method, path).await?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| self.broken(e))?
            .to_bytes();
        let v = serde_json::from_slice(&body).map_err(|e| self.broken(format!("not JSON: {e}")))?;
        Ok((status, v))
    }
}

/// Reads Server-Sent Events from a response body.
#[derive(Debug)]
pub struct SseReader {
    body: Incoming,
    buf: Vec<u8>,
}

impl SseReader {
    /// Reads events from `body`.
    pub fn new(body: Incoming) -> Self {
        SseReader {
            body,
            buf: Vec::new(),
        }
    }

    /// The next event (name and JSON data); `None` when the stream ended.
    pub async fn next(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(at) = find(&self.buf, b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..at + 2).collect();
                let text = String::from_utf8_lossy(&block);
                let mut event = String::from("message");
                let mut data = String::new();
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    // A comment (keepalive).
                    continue;
                }
                let v = serde_json::from_str(&data).unwrap_or(Value::Null);
                return Some((event, v));
            }
            let frame = self.body.frame().await?.ok()?;
            if let Ok(data) = frame.into_data() {
                self.buf.extend_from_slice(&data);
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
