//! The control socket: a Unix stream socket speaking JSON lines (one request object per line,
//! one response object per line; the messages are [`crate::daemon::protocol`]'s, described in
//! `docs/clusterd.md`).

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use zeroize::{Zeroize, Zeroizing};

use super::protocol::{Request, Response};
use crate::core::ids::NodeId;

/// One parsed request for the node runtime, with the channel for its answer.
pub type ControlRequest = (Request, oneshot::Sender<Response>);

/// Longest request line accepted (bytes, without the newline). A longer line gets an error
/// answer and the connection is closed; the node never holds more than this of one line.
pub const MAX_LINE: usize = 1024 * 1024;

/// Bytes read from a connection at a time.
const CHUNK: usize = 8192;

/// Pause after a failed `accept` (e.g. out of file descriptors) before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Who may use the control socket: root, the daemon's own user and, with `control_group`,
/// members of that group (by the peer process's groups or the group's member list).
#[derive(Clone, Debug)]
pub struct Access {
    uids: Vec<u32>,
    group: Option<(u32, String, Vec<String>)>,
}

impl Access {
    /// Root and the daemon's own user, and the members of `group` if one is given.
    ///
    /// # Errors
    /// A group that does not exist (or the lookup failed).
    pub fn for_daemon(group: Option<&str>) -> std::io::Result<Self> {
        let own = nix::unistd::getuid().as_raw();
        let group = match group {
            None => None,
            Some(name) => match nix::unistd::Group::from_name(name) {
                Ok(Some(g)) => Some((g.gid.as_raw(), name.to_string(), g.mem)),
                Ok(None) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!(
                            "control_group = {name}: no such group (create it, e.g. \
                             `groupadd {name}`, or remove the setting)"
                        ),
                    ))
                }
                Err(e) => {
                    return Err(std::io::Error::other(format!(
                        "control_group = {name}: group lookup failed: {e}"
                    )))
                }
            },
        };
        let mut uids = vec![0, own];
        uids.dedup();
        Ok(Self { uids, group })
    }

    /// Allows exactly the users `uids` and nobody else (tests of the refusal).
    #[must_use]
    pub fn only(uids: Vec<u32>) -> Self {
        Self { uids, group: None }
    }

    /// The group id the socket file is given, if any.
    fn gid(&self) -> Option<u32> {
        self.group.as_ref().map(|g| g.0)
    }

    /// Whether a peer with user `uid`, primary group `gid` and supplementary groups `groups`
    /// may use the socket; the refusal says why.
    ///
    /// # Errors
    /// The refusal text.
    pub fn check(&self, uid: u32, gid: u32, groups: &[u32]) -> Result<(), String> {
        if self.uids.contains(&uid) {
            return Ok(());
        }
        if let Some((g, name, members)) = &self.group {
            if gid == *g || groups.contains(g) {
                return Ok(());
            }
            let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten();
            if user.is_some_and(|u| members.contains(&u.name)) {
                return Ok(());
            }
            return Err(format!(
                "permission denied: uid {uid} is not root, the daemon's user or in group {name}"
            ));
        }
        Err(format!(
            "permission denied: uid {uid} is not root or the daemon's user (set \
             control_group to share the socket with a group)"
        ))
    }
}

/// The supplementary groups of process `pid` (from `/proc/PID/status`; empty when unknown).
fn process_groups(pid: Option<i32>) -> Vec<u32> {
    let Some(pid) = pid else { return Vec::new() };
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|st| {
            st.lines().find_map(|l| {
                l.strip_prefix("Groups:").map(|g| {
                    g.split_whitespace()
                        .filter_map(|x| x.parse().ok())
                        .collect()
                })
            })
        })
        .unwrap_or_default()
}

fn io_err(kind: std::io::ErrorKind, msg: String) -> std::io::Error {
    std::io::Error::new(kind, msg)
}

/// Checks what is at `path` before binding: nothing, or a stale socket (replaced), is fine;
/// a file that is not a socket, or a socket some process listens on, is refused.
fn check_path(path: &Path) -> std::io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io_err(
            std::io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; it is left alone (remove it yourself or set \
                 control to another path)",
                path.display()
            ),
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io_err(
            std::io::ErrorKind::AddrInUse,
            format!(
                "control socket {} is in use by another clusterd (stop it, or give this node \
                 another control path)",
                path.display()
            ),
        )),
        // nobody listens: a stale socket of a process that is gone, replaced below
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
        Err(e) => Err(io_err(
            e.kind(),
            format!("cannot check the existing socket {}: {e}", path.display()),
        )),
    }
}

/// Binds a listener at `path` with `mode` (and group `gid`) whatever the umask: the socket is
/// bound in a fresh private (0700) directory beside `path`, given its mode there, then renamed
/// into place, so it is never reachable with a wider mode.
fn bind_private(
    path: &Path,
    mode: u32,
    gid: Option<u32>,
) -> std::io::Result<std::os::unix::net::UnixListener> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let dir = parent.join(format!(".clusterd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    let result = (|| {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        let tmp = dir.join("s");
        let listener = std::os::unix::net::UnixListener::bind(&tmp).map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidInput {
                io_err(
                    e.kind(),
                    format!(
                        "the path is too long: it is bound as {} first, which must fit a Unix \
                         socket address (107 bytes); choose a shorter control path",
                        tmp.display()
                    ),
                )
            } else {
                e
            }
        })?;
        if let Some(g) = gid {
            std::os::unix::fs::chown(&tmp, None, Some(g))?;
        }
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        std::fs::rename(&tmp, path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Binds the control socket at `path` and serves it, sending every request to `tx`. The
/// socket is mode 0600 (0660 and owned by the group when `access` has one); a stale socket
/// is replaced; a file that is not a socket, or a socket another process listens on, is
/// refused. Peers are checked against `access`.
///
/// # Errors
/// The refusal or the bind error.
pub fn serve(
    path: &Path,
    node: NodeId,
    access: Access,
    tx: mpsc::Sender<ControlRequest>,
) -> std::io::Result<()> {
    // sun_path holds 108 bytes with the terminating zero
    let len = path.as_os_str().len();
    if len > 107 {
        return Err(io_err(
            std::io::ErrorKind::InvalidInput,
            format!(
                "the path is too long: {len} bytes, a Unix socket path must fit 107; choose a \
                 shorter control path"
            ),
        ));
    }
    check_path(path)?;
    let gid = access.gid();
    let mode = if gid.is_some() { 0o660 } else { 0o600 };
    let std_listener = bind_private(path, mode, gid)?;
    std_listener.set_nonblocking(true)?;
    let listener = UnixListener::from_std(std_listener)?;
    let access = Arc::new(access);
    tokio::spawn(accept_loop(listener, node, access, tx));
    Ok(())
}

/// Accepts connections for ever: a failed accept (out of file descriptors, say) is logged and
/// retried after [`ACCEPT_BACKOFF`].
async fn accept_loop(
    listener: UnixListener,
    node: NodeId,
    access: Arc<Access>,
    tx: mpsc::Sender<ControlRequest>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, node, access.clone(), tx.clone()));
            }
            Err(e) => {
                tracing::warn!(
                    target: "clusterd::control",
                    node = node.0,
                    "control socket: accept failed: {e}; retrying in {} ms",
                    ACCEPT_BACKOFF.as_millis()
                );
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Appends `bytes` to `line` unless that makes it longer than [`MAX_LINE`] (then false). The
/// buffer grows by copying into a bigger zeroizing one, so no copy of a key is left behind.
fn append(line: &mut Zeroizing<Vec<u8>>, bytes: &[u8]) -> bool {
    let need = line.len() + bytes.len();
    if need > MAX_LINE {
        return false;
    }
    if line.capacity() < need {
        let cap = need.max(line.capacity() * 2).min(MAX_LINE);
        let mut bigger = Zeroizing::new(Vec::with_capacity(cap));
        bigger.extend_from_slice(line);
        std::mem::swap(line, &mut bigger);
    }
    line.extend_from_slice(bytes);
    true
}

async fn write_line(w: &mut tokio::net::unix::OwnedWriteHalf, answer: Response) -> bool {
    if let Response::Stream(body) = answer {
        return write_stream(w, body).await;
    }
    // turned into JSON on a blocking thread: a dump of a large table takes long, and the
    // node's loop runs on this one
    let Ok(out) = tokio::task::spawn_blocking(move || {
        let mut out = answer.to_value().to_string();
        out.push('\n');
        out
    })
    .await
    else {
        return false;
    };
    w.write_all(out.as_bytes()).await.is_ok()
}

/// A streamed answer: its header line, then the lines the node sends until it drops its
/// end. A client that goes away (a failed write) drops the receiver, which the node sees as
/// a closed channel and stops. The node never waits for the client: it sends with
/// `try_send` into the bounded channel.
async fn write_stream(
    w: &mut tokio::net::unix::OwnedWriteHalf,
    body: super::protocol::StreamBody,
) -> bool {
    let mut header = Response::StreamStart(body.header.clone())
        .to_value()
        .to_string();
    header.push('\n');
    if w.write_all(header.as_bytes()).await.is_err() {
        return false;
    }
    let rx = body.lines.lock().ok().and_then(|mut l| l.take());
    let Some(mut rx) = rx else {
        return true;
    };
    while let Some(chunk) = rx.recv().await {
        if w.write_all(chunk.as_bytes()).await.is_err() {
            return false;
        }
    }
    true
}

/// The answer to one request line; `None` when the node is gone.
async fn answer(line: &[u8], tx: &mpsc::Sender<ControlRequest>) -> Option<Response> {
    let Ok(text) = std::str::from_utf8(line) else {
        return Some(Response::error("request line is not UTF-8"));
    };
    Some(match Request::parse(text) {
        Ok(req) => {
            let (otx, orx) = oneshot::channel();
            if tx.send((req, otx)).await.is_err() {
                return None;
            }
            orx.await
                .unwrap_or_else(|_| Response::error("node stopping"))
        }
        Err(refusal) => Response::Error(refusal),
    })
}

async fn connection(
    stream: UnixStream,
    node: NodeId,
    access: Arc<Access>,
    tx: mpsc::Sender<ControlRequest>,
) {
    let verdict = match stream.peer_cred() {
        Ok(c) if access.uids.contains(&c.uid()) => Ok(()),
        Ok(c) => access.check(c.uid(), c.gid(), &process_groups(c.pid())),
        Err(e) => Err(format!("cannot read the peer's credentials: {e}")),
    };
    let (mut r, mut w) = stream.into_split();
    if let Err(why) = verdict {
        tracing::warn!(
            target: "clusterd::control",
            node = node.0,
            "control socket: refused a connection: {why}"
        );
        let _ = write_line(&mut w, Response::error(why)).await;
        return;
    }
    // request lines may carry key material (`sa_add`): both buffers are zeroized when
    // they go, the line after every request
    let mut chunk = Zeroizing::new(vec![0u8; CHUNK]);
    let mut line = Zeroizing::new(Vec::with_capacity(1024));
    loop {
        let n = match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut rest = &chunk[..n];
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            if !append(&mut line, &rest[..i]) {
                break;
            }
            let Some(reply) = answer(&line, &tx).await else {
                return;
            };
            line.zeroize();
            if !write_line(&mut w, reply).await {
                return;
            }
            rest = &rest[i + 1..];
        }
        if !append(&mut line, rest) {
            tracing::warn!(
                target: "clusterd::control",
                node = node.0,
                "control socket: request line longer than {MAX_LINE} bytes; connection closed"
            );
            let reply = Response::error(format!(
                "request line longer than {MAX_LINE} bytes; connection closed"
            ));
            let _ = write_line(&mut w, reply).await;
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

    /// Sends a streamed request (`table_dump`, `events`) and waits (at most `timeout`) for
    /// its first line; read the rest with [`ControlClient::next_line`].
    ///
    /// # Errors
    /// As [`ControlClient::call`].
    pub async fn start_stream(
        &mut self,
        req: &Request,
        timeout: Duration,
    ) -> std::io::Result<Response> {
        self.call(req, timeout).await
    }

    /// The next line of a streamed answer (without its newline); `None` at the end of the
    /// stream. A line longer than [`MAX_LINE`] is an error.
    ///
    /// # Errors
    /// I/O errors, a line that is too long.
    pub async fn next_line(&mut self) -> std::io::Result<Option<String>> {
        let mut line = String::new();
        let n = (&mut self.reader)
            .take(MAX_LINE as u64 + 1)
            .read_line(&mut line)
            .await?;
        if n == 0 {
            return Ok(None);
        }
        if n > MAX_LINE {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a streamed line longer than {MAX_LINE} bytes"),
            ));
        }
        Ok(Some(line.trim_end_matches('\n').to_owned()))
    }

    /// Connects within `timeout`.
    pub async fn connect_within(path: &Path, timeout: Duration) -> std::io::Result<Self> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_allows_root_own_user_and_group() {
        let a = Access {
            uids: vec![0, 1000],
            group: Some((50, "ops".into(), vec![])),
        };
        assert!(a.check(0, 0, &[]).is_ok());
        assert!(a.check(1000, 1000, &[]).is_ok());
        assert!(a.check(2000, 50, &[]).is_ok(), "primary group");
        assert!(a.check(2000, 2000, &[7, 50]).is_ok(), "supplementary group");
        let e = a.check(2000, 2000, &[7]).unwrap_err();
        assert!(
            e.contains("not root, the daemon's user or in group ops"),
            "{e}"
        );
        let e = Access::only(vec![1000])
            .check(2000, 2000, &[50])
            .unwrap_err();
        assert!(e.contains("control_group"), "{e}");
    }

    #[tokio::test]
    async fn a_too_long_path_says_so() {
        let dir = std::env::temp_dir().join(format!("ctl-long-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s".repeat(100));
        let (tx, _rx) = mpsc::channel(1);
        let e = serve(&path, NodeId(1), Access::only(vec![]), tx).unwrap_err();
        assert!(e.to_string().contains("too long"), "{e}");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "nothing left behind"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn append_bounds_the_line() {
        let mut line = Zeroizing::new(Vec::with_capacity(4));
        assert!(append(&mut line, b"abc"));
        assert!(append(&mut line, &[b'x'; 1000]));
        assert_eq!(line.len(), 1003);
        assert!(!append(&mut line, &vec![b'y'; MAX_LINE]));
        assert_eq!(line.len(), 1003, "a refused append leaves the line");
        assert!(line.capacity() <= MAX_LINE);
    }

    #[test]
    fn groups_of_this_process_are_read() {
        let st = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = st.lines().find(|l| l.starts_with("Groups:")).unwrap();
        let want: Vec<u32> = line[7..]
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        assert_eq!(process_groups(Some(std::process::id() as i32)), want);
        assert!(process_groups(None).is_empty());
    }

    #[tokio::test]
    async fn a_refused_peer_gets_a_line_and_the_close() {
        let (server, client) = UnixStream::pair().expect("pair");
        let (tx, mut rx) = mpsc::channel(1);
        tokio::spawn(connection(
            server,
            NodeId(1),
            Arc::new(Access::only(vec![])),
            tx,
        ));
        let (r, mut w) = client.into_split();
        w.write_all(b"{\"cmd\":\"status\"}\n").await.expect("write");
        let mut lines = BufReader::new(r);
        let mut answer = String::new();
        lines.read_line(&mut answer).await.expect("read");
        assert!(answer.contains("permission denied"), "{answer}");
        answer.clear();
        // closed: end of stream, or a reset since the request was never read
        let end = lines.read_line(&mut answer).await;
        assert!(
            matches!(&end, Ok(0))
                || end
                    .as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "{end:?}"
        );
        assert!(rx.try_recv().is_err(), "nothing reached the node");
    }

    #[tokio::test]
    async fn an_allowed_peer_is_served_line_by_line() {
        let (server, client) = UnixStream::pair().expect("pair");
        let (tx, mut rx) = mpsc::channel::<ControlRequest>(4);
        let own = nix::unistd::getuid().as_raw();
        tokio::spawn(connection(
            server,
            NodeId(1),
            Arc::new(Access::only(vec![own])),
            tx,
        ));
        tokio::spawn(async move {
            while let Some((_, otx)) = rx.recv().await {
                let _ = otx.send(Response::error("seen"));
            }
        });
        let (r, mut w) = client.into_split();
        // two requests in one write, a third split over two writes
        w.write_all(b"{\"cmd\":\"status\"}\n{\"cmd\":\"status\"}\n{\"cmd\":")
            .await
            .expect("write");
        w.write_all(b"\"status\"}\n").await.expect("write");
        let mut lines = BufReader::new(r);
        for _ in 0..3 {
            let mut answer = String::new();
            lines.read_line(&mut answer).await.expect("read");
            assert!(answer.contains("seen"), "{answer}");
        }
    }
}
