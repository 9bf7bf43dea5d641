//! The control socket: a Unix stream socket speaking JSON lines (one request object per line,
//! one response object per line; protocol in `docs/clusterd.md`).

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

/// One request for the node runtime, with the channel for its answer.
pub type ControlRequest = (Value, oneshot::Sender<Value>);

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
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let answer = if line.len() > MAX_LINE {
            json!({"ok": false, "error": "request line too long"})
        } else {
            match serde_json::from_str::<Value>(line.trim()) {
                Ok(v) if v.get("cmd").and_then(Value::as_str).is_some() => {
                    let (otx, orx) = oneshot::channel();
                    if tx.send((v, otx)).await.is_err() {
                        return;
                    }
                    orx.await
                        .unwrap_or_else(|_| json!({"ok": false, "error": "node stopping"}))
                }
                Ok(_) => {
                    json!({"ok": false, "error": "a request is a JSON object with a \"cmd\" string"})
                }
                Err(e) => json!({"ok": false, "error": format!("not JSON: {e}")}),
            }
        };
        let mut out = answer.to_string();
        out.push('\n');
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
    /// I/O errors, a timeout, or an answer that is not JSON.
    pub async fn call(&mut self, req: &Value, timeout: Duration) -> std::io::Result<Value> {
        let mut line = req.to_string();
        line.push('\n');
        let fut = async {
            self.writer.write_all(line.as_bytes()).await?;
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
}

/// Connects, sends one request, returns the answer.
///
/// # Errors
/// As [`ControlClient::call`].
pub async fn call_once(path: &Path, req: &Value, timeout: Duration) -> std::io::Result<Value> {
    let mut c = tokio::time::timeout(timeout, ControlClient::connect(path))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timeout"))??;
    c.call(req, timeout).await
}
