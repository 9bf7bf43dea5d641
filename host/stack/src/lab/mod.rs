//! The lab around the daemon: a whole cluster of `clusterd` processes on loopback
//! ([`cluster`]), the traffic wire that feeds them ([`traffic`]), the demo that drives and
//! reports on them ([`demo`]) and its SVG drawing ([`svg`]); and the same cluster as a
//! firewall between real network namespaces ([`netns`], `clusterd lab`), and the Linux
//! kernel with nftables and conntrackd as the baseline it is measured against ([`kernel`]). Nothing here runs inside a node;
//! a node uses only [`traffic::handshake`] (for its `synthesize` benchmark command).

pub mod cluster;
pub mod demo;
pub mod kernel;
pub mod netns;
pub mod run;
pub mod skew;
pub mod svg;
pub mod traffic;

use std::path::{Path, PathBuf};

/// The single-threaded tokio runtime (timers and I/O enabled) that the lab's tools, its
/// examples and the tests run their control calls and clusters on.
///
/// # Errors
/// The runtime's I/O error (no more file descriptors, for example).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// `<tmp>/<name>-<pid>`, removed if it exists (and not created): a working directory of this
/// process's own, for a benchmark's or a test's cluster.
#[must_use]
pub fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Removes a lab when dropped, also when what runs in it fails or panics: our cluster's
/// ([`netns::down`]) or the kernel baseline's ([`kernel::down`]).
pub struct DownOnDrop {
    prefix: String,
    dir: PathBuf,
    kernel: bool,
}

impl DownOnDrop {
    /// Removes the `clusterd lab` of `prefix` in `dir` when dropped.
    #[must_use]
    pub fn ours(prefix: &str, dir: &Path) -> Self {
        Self {
            prefix: prefix.to_owned(),
            dir: dir.to_path_buf(),
            kernel: false,
        }
    }

    /// Removes the kernel baseline's lab of `prefix` in `dir` when dropped.
    #[must_use]
    pub fn kernel(prefix: &str, dir: &Path) -> Self {
        Self {
            prefix: prefix.to_owned(),
            dir: dir.to_path_buf(),
            kernel: true,
        }
    }
}

impl Drop for DownOnDrop {
    fn drop(&mut self) {
        if self.kernel {
            kernel::down(&self.prefix, &self.dir);
        } else {
            let _ = netns::down(&self.prefix, &self.dir);
        }
    }
}
