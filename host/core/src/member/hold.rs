//! Lossless planned moves: packets and frames of an identifier whose new owner waits for the
//! previous owner's final state (the handover gate) are held here instead of dropped, in
//! arrival order, and handled once the gate opens (OpenNF-style buffering at the new owner).
//! The gate keeps its meaning: nothing held is handled before the final state arrived. What
//! waits longer than [`Hold::max_wait`] (a previous owner that died mid-move: the gate then
//! opens on its replicated state instead, after failure detection) or does not fit is released
//! as `NotReady`, as it was dropped before holding existed.
//!
//! Holding is off until the I/O shell turns it on ([`super::Member::set_hold`]): each held
//! item answers later, as an [`super::Output::Released`], so the shell must be able to give a
//! late verdict (the daemon keeps a token for each).

use std::collections::VecDeque;
use std::time::Duration;

use crate::ids::DistributionId;
use crate::packet::Framing;

/// One held packet or frame.
#[derive(Debug)]
pub(super) struct Held {
    /// The token the shell got for it.
    pub token: u64,
    /// Its identifier.
    pub did: DistributionId,
    /// `Some(port)` for a frame from a real interface, `None` for a packet of the wire.
    pub port: Option<u8>,
    /// How its bytes are framed.
    pub framing: Framing,
    /// The bytes.
    pub bytes: Vec<u8>,
    /// When it arrived.
    pub since: Duration,
}

/// The held items and their bounds.
#[derive(Debug, Default)]
pub(super) struct Hold {
    pub items: VecDeque<Held>,
    pub bytes: usize,
    next_token: u64,
    /// Items held at most (0: holding off).
    pub max_items: usize,
    /// Bytes held at most.
    pub max_bytes: usize,
    /// How long an item waits at most.
    pub max_wait: Duration,
    /// Held since start.
    pub held: u64,
    /// Released after the gate opened.
    pub released: u64,
    /// Dropped: full, or waited too long.
    pub dropped: u64,
}

impl Hold {
    /// Holds `bytes` if there is room; its token.
    pub fn push(
        &mut self,
        did: DistributionId,
        port: Option<u8>,
        framing: Framing,
        bytes: &[u8],
        now: Duration,
    ) -> Option<u64> {
        if self.items.len() >= self.max_items || self.bytes + bytes.len() > self.max_bytes {
            if self.max_items > 0 {
                self.dropped += 1;
            }
            return None;
        }
        self.next_token += 1;
        self.bytes += bytes.len();
        self.held += 1;
        self.items.push_back(Held {
            token: self.next_token,
            did,
            port,
            framing,
            bytes: bytes.to_vec(),
            since: now,
        });
        Some(self.next_token)
    }

    /// Takes out, in order, every item `waiting` no longer holds back or that waited too long
    /// (`true` with it: expired).
    pub fn take_ready(
        &mut self,
        now: Duration,
        waiting: impl Fn(DistributionId) -> bool,
    ) -> Vec<(Held, bool)> {
        if self.items.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut keep = VecDeque::with_capacity(self.items.len());
        for h in self.items.drain(..) {
            let expired = now.saturating_sub(h.since) > self.max_wait;
            if expired || !waiting(h.did) {
                self.bytes -= h.bytes.len();
                out.push((h, expired));
            } else {
                keep.push_back(h);
            }
        }
        self.items = keep;
        out
    }
}
