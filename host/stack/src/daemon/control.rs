//! The control socket: a Unix stream socket speaking JSON lines (one request object per line,
//! one response object per line; the messages are [`crate::daemon::protocol`]'s, described in
//! `docs/clusterd.md`).

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use zeroize::Zeroizing;

use super::protocol::{Request, Response};

/// One parsed request for the node runtime, with the channel for its answer.
pub type ControlRequest = (Request, oneshot::Sender<Response>);

/// Longest request line accepted.
const MAX_LINE: usize = 64 * 1024;

/// Binds the control socket at `path` (a stale socket file is replaced) and serves it, sending
/// every request to `tx`.
///
/// # Errors
/// The bind error.
pub fn serve(path: &Path, tx: mpsc::Sender<ControlRequest>) -> std::io::Result<()> {
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(connection(stream, tx));
        }
    });
    Ok(())
}

async fn connection(stream: UnixStream, tx: mpsc::Sender<ControlRequest>) {
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r);
    // a request line may carry key material (`sa_add`): zeroized when the buffer goes
    let mut line = Zeroizing::new(String::new());
    loop {
        line.clear();
        match lines.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let answer = if line.len() > MAX_LINE {
            Response::error("request line too long")
        } else {
            match Request::parse(&line) {
                Ok(req) => {
                    let (otx, orx) = oneshot::channel();
                    if tx.send((req, otx)).await.is_err() {
                        return;
                    }
                    orx.await
                        .unwrap_or_else(|_| Response::error("node stopping"))
                }
                Err(refusal) => Response::Error(refusal),
            }
        };
        // turned into JSON on a blocking thread: a dump of a large table takes long, and the
        // node's loop runs on this one
        let Ok(out) = tokio::task::spawn_blocking(move || {
            let mut out = answer.to_value().to_string();
            out.push('\n');
            out
        })
        .await
        else {
            return;
        };
        if w.write_all(out.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// A client of a node's control socket.
pub struct ControlClient {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
}

impl ControlClient {
    /// Connects to the socket at `path`.
    ///
    /// # Errors
    /// The connect error.
    pub async fn connect(path: &Path) -> std::io::Result<Self> {
        let s = UnixStream::connect(path).await?;
        let (r, w) = s.into_split();
        Ok(Self {
            reader: BufReader::new(r),
            writer: w,
        })
    }

    /// Sends one request and waits (at most `timeout`) for its answer.
    ///
    /// # Errors
    /// I/O errors, a timeout, or an answer that is not JSON or not of the request's shape.
    pub async fn call(&mut self, req: &Request, timeout: Duration) -> std::io::Result<Response> {
        let line = Zeroizing::new(serde_json::to_string(req).map_err(std::io::Error::other)?);
        let v = self.call_line(&line, timeout).await?;
        req.response(v)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    /// Sends one request line as it is (a test of what the node makes of any JSON) and
    /// returns the answer's JSON.
    ///
    /// # Errors
    /// I/O errors, a timeout, or an answer that is not JSON.
    pub async fn call_json(&mut self, req: &Value, timeout: Duration) -> std::io::Result<Value> {
        self.call_line(&req.to_string(), timeout).await
    }

    async fn call_line(&mut self, req: &str, timeout: Duration) -> std::io::Result<Value> {
        let fut = async {
            self.writer.write_all(req.as_bytes()).await?;
            self.writer.write_all(b"\n").await?;
            let mut resp = String::new();
            if self.reader.read_line(&mut resp).await? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "control socket closed",
                ));
            }
            serde_json::from_str(resp.trim())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "control timeout"))?
    }

    /// Connects within `timeout`.
    async fn connect_within(path: &Path, timeout: Duration) -> std::io::Result<Self> {
        tokio::time::timeout(timeout, Self::connect(path))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timeout"))?
    }
}

/// Connects, sends one request, returns the answer.
///
/// # Errors
/// As [`ControlClient::call`].
pub async fn call_once(path: &Path, req: &Request, timeout: Duration) -> std::io::Result<Response> {
    ControlClient::connect_within(path, timeout)
        .await?
        .call(req, timeout)
        .await
}

/// Connects, sends one request line as it is, returns the answer's JSON.
///
/// # Errors
/// As [`ControlClient::call_json`].
pub async fn call_json_once(path: &Path, req: &Value, timeout: Duration) -> std::io::Result<Value> {
    ControlClient::connect_within(path, timeout)
        .await?
        .call_json(req, timeout)
        .await
}
