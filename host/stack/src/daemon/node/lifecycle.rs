//! A node's life beyond traffic: the graceful leave, reloading the rules, and what the service
//! manager is told.

use super::*;

/// How long a graceful leave may take before the node stops anyway.
pub const LEAVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The next delivery of a signal stream (never, without one).
pub(super) async fn next_signal(s: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

impl Runtime {
    /// Starts a graceful leave: the member hands every identifier over in planned moves, and
    /// the loop ends once that is done and the replication stream is delivered
    /// ([`Self::check_leave`]). A second signal stops at once; so does a node with nobody to
    /// hand over to.
    pub(super) fn begin_leave(&mut self, why: &str) {
        if self.leaving_since.is_some() {
            log!(
                INFO,
                "clusterd::node",
                self.cfg.node,
                "{why} again: stopping now"
            );
            self.stopping = true;
            return;
        }
        if !self.member.has_successor() {
            log!(
                INFO,
                "clusterd::node",
                self.cfg.node,
                "{why}: no other member takes traffic to hand over to: stopping"
            );
            self.stopping = true;
            return;
        }
        let _ = sd_notify::notify(&[
            sd_notify::NotifyState::Stopping,
            sd_notify::NotifyState::Status("leaving: handing identifiers over"),
        ]);
        log!(INFO, "clusterd::node",
            self.cfg.node,
            "{why}: leaving the cluster (planned moves of {} identifiers; a second signal stops at once)",
            self.member.core().allocation().ids_of(self.cfg.node).len()
        );
        self.leaving_since = Some(self.udp.now());
        self.member.leave();
        self.handle_outputs();
    }

    /// Ends a graceful leave: once the member owns nothing and what it sent has reached its
    /// live peers (its final state records among it); after [`LEAVE_TIMEOUT`] it stops
    /// anyway (what it still owns then fails over).
    pub(super) fn check_leave(&mut self) {
        let Some(since) = self.leaving_since else {
            return;
        };
        let now = self.udp.now();
        let delivered = self
            .ep
            .peers()
            .filter(|p| self.member.is_alive(*p))
            .all(|p| self.ep.backlog(p) == 0);
        if self.member.has_left() && delivered {
            log!(
                INFO,
                "clusterd::node",
                self.cfg.node,
                "left the cluster: every identifier handed over in {} ms",
                now.saturating_sub(since).as_millis()
            );
            self.stopping = true;
        } else if now.saturating_sub(since) >= LEAVE_TIMEOUT {
            log!(
                WARN,
                "clusterd::node",
                self.cfg.node,
                "leave not done after {} s (owns {}): stopping; the rest fails over",
                LEAVE_TIMEOUT.as_secs(),
                self.member.core().allocation().ids_of(self.cfg.node).len()
            );
            self.stopping = true;
        } else if !self.member.has_successor() && !self.member.has_left() {
            log!(
                INFO,
                "clusterd::node",
                self.cfg.node,
                "leave: no other member takes traffic any more: stopping"
            );
            self.stopping = true;
        }
    }

    /// SIGHUP: reads the rules file again and replaces the rule set (what else the config
    /// holds needs a restart: addresses, keys and identities, the card). A file that does not
    /// parse keeps the rules in force, with a log line naming the error.
    pub(super) fn reload(&mut self) {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
        match &self.cfg.rules {
            None => log!(
                INFO,
                "clusterd::node",
                self.cfg.node,
                "SIGHUP: no rules file in the config (allow all); nothing to reload"
            ),
            Some(path) => {
                let read = std::fs::read_to_string(path)
                    .map_err(|e| e.to_string())
                    .and_then(|t| RuleSet::parse(&t).map_err(|e| e.to_string()));
                match read {
                    Ok(rules) => {
                        self.member
                            .replace_rules(rules, &path.display().to_string());
                        self.handle_outputs();
                    }
                    Err(e) => {
                        log!(WARN, "clusterd::node",
                        self.cfg.node,
                        "SIGHUP: rules {}: {e}; the rules in force stay (fix the file and send \
                         SIGHUP again)",
                        path.display()
                    )
                    }
                }
            }
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    }

    /// Tells the service manager (systemd, `Type=notify`) that the node is ready once it
    /// takes traffic, and what it does every few seconds. Nothing without `NOTIFY_SOCKET`.
    pub(super) fn notify_service_manager(&mut self) {
        let now = self.udp.now();
        if !self.notified_ready && self.member.takes_traffic() {
            self.notified_ready = true;
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        }
        if now >= self.next_status_notify {
            self.next_status_notify = now + Duration::from_secs(5);
            let a = self.member.core().allocation();
            let status = format!(
                "epoch {}, owns {} of {} identifiers{}",
                a.epoch.0,
                a.ids_of(self.cfg.node).len(),
                a.len(),
                if self.member.takes_traffic() {
                    ""
                } else {
                    ", not taking traffic"
                }
            );
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&status)]);
        }
    }
}
