//! The node's periodic upkeep: the card's health (rebuilt from the common table when it has
//! gone away) and Raft's ready states (storage, messages, the agreed allocation).

use super::*;

impl Runtime {
    /// A card that failed (gone from the bus, a command error) is reopened and rebuilt from the
    /// common table; while it cannot be reopened, the failure is logged once a second and the
    /// node keeps its common table (and replicates) without a card.
    pub(super) fn check_card(&mut self) {
        let Some(e) = self.member.take_card_error() else {
            return;
        };
        self.card_errors += 1;
        let now = self.udp.now();
        if now < self.next_card_retry {
            return;
        }
        self.next_card_retry = now + Duration::from_secs(1);
        let mut cause = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            cause.push_str(": ");
            cause.push_str(&s.to_string());
            src = s.source();
        }
        log!(
            ERROR,
            "clusterd::card",
            self.cfg.node,
            "card failed: {cause}; reopening it"
        );
        match card::open(&self.cfg.card, self.cfg.identifiers, self.cfg.card_capacity) {
            Ok(table) => {
                let t = self.time();
                self.member.rebuild_card(t, table);
                self.handle_outputs();
            }
            Err(e) => log!(
                ERROR,
                "clusterd::card",
                self.cfg.node,
                "card {}: cannot reopen: {e}",
                self.cfg.card
            ),
        }
    }

    pub(super) fn pump_raft(&mut self) {
        let was_leader = self.raft.leader();
        if self.raft.poll().is_err() {
            self.raft_errors += 1;
        }
        if self.raft.leader() != was_leader {
            log!(
                INFO,
                "clusterd::raft",
                self.cfg.node,
                "leader is now {:?} (term {})",
                self.raft.leader().map(|n| n.0),
                self.raft.term()
            );
        }
        for (to, bytes) in self.raft.take_messages() {
            let mut d = Vec::with_capacity(bytes.len() + 1);
            Datagram::Raft(&bytes).emit(&mut d);
            let _ = self.ep.send_datagram(to, &d);
        }
        let committed = self.raft.take_committed();
        if committed.is_empty() {
            return;
        }
        // followers learn the commit from these messages: send them before a long install
        self.member.send_heartbeats();
        self.handle_outputs();
        self.udp.send_all(&mut self.ep);
        for a in committed {
            let t0 = std::time::Instant::now();
            let t = self.time();
            let before = self.views_before_epoch();
            self.member.on_agreed(t, &a, || t0.elapsed());
            self.handle_outputs();
            self.views_after_epoch(before);
        }
    }
}
