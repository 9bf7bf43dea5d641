//! The node's state directory: its lock and the incarnations kept across restarts.

use super::*;

pub(super) fn state_err(path: &Path) -> impl Fn(std::io::Error) -> RunError + '_ {
    move |err| RunError::State {
        path: path.display().to_string(),
        err,
    }
}

/// Takes the state directory's lock (`state_dir/lock`, an exclusive `flock`, which dies with
/// the process): a second process for the same state directory is refused. The file names
/// the holder's process id.
pub(super) fn lock_state_dir(dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, RunError> {
    use std::io::{Read as _, Seek as _, Write as _};
    std::fs::create_dir_all(dir).map_err(state_err(dir))?;
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(state_err(&path))?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            let pid = format!("{}\n", std::process::id());
            let _ = lock
                .set_len(0)
                .and_then(|()| lock.rewind())
                .and_then(|()| lock.write_all(pid.as_bytes()));
            Ok(lock)
        }
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let who = if holder.is_empty() {
                "another clusterd".to_string()
            } else {
                format!("another clusterd (pid {holder})")
            };
            Err(RunError::State {
                path: dir.display().to_string(),
                err: std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    format!(
                        "in use by {who}: {} is locked; stop that node, or give this one its \
                         own state_dir",
                        path.display()
                    ),
                ),
            })
        }
        Err((_, e)) => Err(RunError::State {
            path: path.display().to_string(),
            err: std::io::Error::other(format!("cannot lock: {e}")),
        }),
    }
}

/// Picks incarnations that grow across restarts: max(previous + 1, clock), kept in the state
/// directory. Returns (transport incarnation, core incarnation).
pub(super) fn next_incarnations(dir: &Path) -> Result<(u64, u32), RunError> {
    std::fs::create_dir_all(dir).map_err(state_err(dir))?;
    let path = dir.join("incarnation");
    let prev: (u64, u32) = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace();
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        })
        .unwrap_or((0, 0));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let t = (prev.0 + 1).max(now.as_micros() as u64);
    let c = (prev.1.saturating_add(1)).max(now.as_secs() as u32);
    std::fs::write(&path, format!("{t} {c}\n")).map_err(state_err(&path))?;
    Ok((t, c))
}
