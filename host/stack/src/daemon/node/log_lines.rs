//! The node's log lines: where the member's plain-text lines go (level and target), and the
//! rate limits on the lines a remote peer could cause at will.

use super::*;

/// Lines a remote peer (or a broken interface) could cause at will: each kind is
/// rate-limited to [`LOG_LINES_PER_S`] a second.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum LogKind {
    /// Frames of this node's id under another incarnation.
    DuplicateId,
    /// Errors on the card's interfaces.
    Interfaces,
    /// Records of a peer refused (an SA key record).
    PeerRecords,
}

/// Lines of one [`LogKind`] written each second at most.
pub(super) const LOG_LINES_PER_S: u32 = 5;

/// Where and how loud one of the member's log lines goes (the member's lines are plain text:
/// classified by what they say).
pub(super) fn member_line_class(line: &str) -> (tracing::Level, &'static str, Option<LogKind>) {
    use tracing::Level;
    if (line.starts_with("peer ") && line.contains(" failed")) || line == "fenced: true" {
        return (Level::WARN, "node", None);
    }
    if line.starts_with("identifier ") && line.contains("failed before its final state") {
        return (Level::WARN, "node", None);
    }
    if line.starts_with("SA ") {
        if line.contains("key record refused") {
            return (Level::WARN, "esp", Some(LogKind::PeerRecords));
        }
        if line.contains("cannot install") || line.contains("share a key") {
            return (Level::WARN, "esp", None);
        }
        return (Level::INFO, "esp", None);
    }
    if line.starts_with("resync answer") {
        return (Level::WARN, "sync", None);
    }
    if line.starts_with("resync") || line.starts_with("ready (") || line.starts_with("installed ") {
        return (Level::INFO, "sync", None);
    }
    if line.starts_with("card ") {
        return (Level::INFO, "card", None);
    }
    if line.starts_with("leader proposes") || line.starts_with("proposes node") {
        return (Level::INFO, "raft", None);
    }
    (Level::INFO, "node", None)
}

/// Writes `line` at `level` to target `clusterd::<target>` (the targets need literals).
pub(super) fn event_at(level: tracing::Level, target: &str, node: NodeId, line: &str) {
    use tracing::Level;
    macro_rules! at {
        ($t:literal) => {
            match level {
                Level::ERROR => log!(ERROR, $t, node, "{line}"),
                Level::WARN => log!(WARN, $t, node, "{line}"),
                Level::INFO => log!(INFO, $t, node, "{line}"),
                Level::DEBUG => log!(DEBUG, $t, node, "{line}"),
                _ => log!(TRACE, $t, node, "{line}"),
            }
        };
    }
    match target {
        "sync" => at!("clusterd::sync"),
        "raft" => at!("clusterd::raft"),
        "card" => at!("clusterd::card"),
        "esp" => at!("clusterd::esp"),
        _ => at!("clusterd::node"),
    }
}

impl Runtime {
    /// Whether a line of `kind` goes out now; the first after a run of suppressed ones is
    /// preceded by a line that says how many.
    pub(super) fn log_allowed(&mut self, kind: LogKind) -> bool {
        let l = self
            .log_limits
            .entry(kind)
            .or_insert_with(|| RateLimiter::new(LOG_LINES_PER_S));
        match l.check(std::time::Instant::now()) {
            Verdict::Suppress => false,
            Verdict::Log { suppressed } => {
                if suppressed > 0 {
                    self.log_suppressed(kind, suppressed);
                }
                true
            }
        }
    }

    pub(super) fn log_suppressed(&self, kind: LogKind, n: u64) {
        log!(
            WARN,
            "clusterd::node",
            self.cfg.node,
            "suppressed {n} lines of kind {kind:?} (more than {LOG_LINES_PER_S} a second)"
        );
    }

    /// Once a second: the suppressed lines of a second that is over, peers that came back,
    /// frames refused for their authentication (a peer with the wrong key, or forged frames).
    pub(super) fn log_once_a_second(&mut self) {
        let now = std::time::Instant::now();
        let flushed: Vec<(LogKind, u64)> = self
            .log_limits
            .iter_mut()
            .map(|(k, l)| (*k, l.flush(now)))
            .filter(|(_, n)| *n > 0)
            .collect();
        for (k, n) in flushed {
            self.log_suppressed(k, n);
        }
        let alive: Vec<(NodeId, bool)> = self.member.peers().map(|(id, l)| (id, l.alive)).collect();
        for (id, up) in alive {
            let was = self.peers_alive.insert(id, up);
            if up && was != Some(true) {
                let again = if was.is_some() { " again" } else { "" };
                log!(
                    INFO,
                    "clusterd::node",
                    self.cfg.node,
                    "peer {} alive{again}",
                    id.0
                );
            }
        }
        let st = self.ep.stats();
        let refused = st.rejected_auth + st.rejected_signature;
        if refused > self.auth_refused_seen {
            log!(
                WARN,
                "clusterd::sync",
                self.cfg.node,
                "{} frames refused for their authentication (in all: {} failed decryption, {} \
                 bad signatures): a node with another cluster key or identity, or forged frames; \
                 check that every node's key_file holds the same key and each [[peer]] key is \
                 that node's public key",
                refused - self.auth_refused_seen,
                st.rejected_auth,
                st.rejected_signature
            );
            self.auth_refused_seen = refused;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn member_lines_get_their_levels_and_targets() {
        let class = |l: &str| {
            let (level, target, kind) = member_line_class(l);
            (level, target, kind.is_some())
        };
        // the lines of each level, target and kind
        let classes = [
            (
                (Level::WARN, "node", false),
                &[
                    "peer 3 failed (silent for 200 ms)",
                    "fenced: true",
                    "identifier 7: node 2 failed before its final state arrived; taking over",
                ][..],
            ),
            (
                (Level::INFO, "node", false),
                &[
                    "fenced: false",
                    "applied epoch 4: owns 85, gained 3, lost 0, installed 0 in 10 us",
                ],
            ),
            (
                (Level::WARN, "esp", true),
                &["SA 0x00000010: key record refused: bad length"],
            ),
            (
                (Level::WARN, "esp", false),
                &["SA 0x00000010: cannot install: full"],
            ),
            (
                (Level::WARN, "sync", false),
                &["resync answer to node 2 dropped: it went silent"],
            ),
            (
                (Level::INFO, "sync", false),
                &["resync complete: 10 entries in 3 ms"],
            ),
            (
                (Level::INFO, "card", false),
                &["card rebuilt from the common table: 5 entries installed"],
            ),
            ((Level::INFO, "raft", false), &["leader proposes epoch 7"]),
        ];
        for (want, lines) in classes {
            for line in lines {
                assert_eq!(class(line), want, "{line}");
            }
        }
        // every target and level goes out without a subscriber
        for t in ["node", "sync", "raft", "card", "esp", "other"] {
            for l in [
                Level::ERROR,
                Level::WARN,
                Level::INFO,
                Level::DEBUG,
                Level::TRACE,
            ] {
                event_at(l, t, NodeId(1), "a line");
            }
        }
    }
}
