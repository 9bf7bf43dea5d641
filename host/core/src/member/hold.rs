//! Lossless planned moves: packets and frames of an identifier whose new owner waits for the
//! previous owner's final state (the handover gate) are held here instead of dropped, in
//! arrival order, and handled once the gate opens (OpenNF-style buffering at the new owner).
//! The gate keeps its meaning: nothing held is handled before the final state arrived. What
//! waits longer than [`Hold::max_wait`] (a previous owner that died mid-move: the gate then
//! opens on its replicated state instead, after failure detection) or does not fit is released
//! as `NotReady`, as it was dropped before holding existed.
//!
//! The next owner named by a planned move holds from the move's first step (the prepare epoch)
//! on, while the releaser still handles the identifier: some held frames are then ones the
//! releaser handled. The releaser's `L` record names, per input, the last frames it handled
//! ([`crate::record::Record::LastHandled`]); every input delivers its frames to each member in
//! the same order (the segments flood), so the held frames of that input up to the last of
//! them are the releaser's and are handed back ([`Hold::hand_back`]), never handled twice, and
//! the rest are handled here: none lost.
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
    /// Held only because this member was behind a peer's epoch, before it held the
    /// identifier for a planned move: if the identifier turns out to be coming here, the
    /// releaser handles this frame (see [`Hold::take_early`]).
    pub early: bool,
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
    /// Handed back: the releaser had handled them ([`Hold::hand_back`]).
    pub handed_back: u64,
}

/// The input a held item came from, as an `L` record's marks name it: 0 and 1 the card's
/// ports, 2 the wire's packets.
pub(super) fn input_of(port: Option<u8>) -> u8 {
    port.map_or(2, |p| p.min(1))
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
            early: false,
        });
        Some(self.next_token)
    }

    /// Takes out the items of `did` a releaser handled. Per `(input, digests)` mark (the
    /// digests of the last frames it handled from that input, oldest first): the held items of
    /// `did` from that input up to and including the last one that ends a run matching the
    /// mark's digests (all of them, or, at the start of what is held, their last ones: this
    /// member may have begun holding after the first of them). The run, not one digest, tells
    /// the releaser's last frame from a byte-identical copy that came after it. A mark that
    /// matches nothing held (the releaser's last frames came before this member began
    /// holding) takes nothing.
    /// Returns what it took and the inputs whose mark matched nothing held.
    pub fn hand_back(
        &mut self,
        did: DistributionId,
        marks: &[(u8, Vec<u64>)],
    ) -> (Vec<Held>, Vec<u8>) {
        let mut cut: Vec<(u8, usize)> = Vec::new();
        let mut unmatched = Vec::new();
        for (input, digests) in marks {
            if digests.is_empty() {
                continue;
            }
            // positions (in `items`) and digests of the held frames of this input, in order
            let seq: Vec<(usize, u64)> = self
                .items
                .iter()
                .enumerate()
                .filter(|(_, h)| h.did == did && input_of(h.port) == *input)
                .map(|(i, h)| (i, crate::record::frame_digest(&h.bytes)))
                .collect();
            let ends_run = |j: usize| {
                let m = digests.len().min(j + 1);
                seq[j + 1 - m..=j]
                    .iter()
                    .map(|(_, d)| *d)
                    .eq(digests[digests.len() - m..].iter().copied())
            };
            match (0..seq.len()).rev().find(|&j| ends_run(j)) {
                Some(j) => cut.push((*input, seq[j].0)),
                None => unmatched.push(*input),
            }
        }
        if cut.is_empty() {
            return (Vec::new(), unmatched);
        }
        let mut out = Vec::new();
        let mut keep = VecDeque::with_capacity(self.items.len());
        for (i, h) in self.items.drain(..).enumerate() {
            let back = h.did == did
                && cut
                    .iter()
                    .any(|&(input, upto)| input_of(h.port) == input && i <= upto);
            if back {
                self.bytes -= h.bytes.len();
                self.handed_back += 1;
                out.push(h);
            } else {
                keep.push_back(h);
            }
        }
        self.items = keep;
        (out, unmatched)
    }

    /// Takes out the early items (held while behind, see [`Held::early`]) whose identifier
    /// `coming` says is coming here in a planned move: they are the releaser's.
    pub fn take_early(&mut self, coming: impl Fn(DistributionId) -> bool) -> Vec<Held> {
        if !self.items.iter().any(|h| h.early) {
            return Vec::new();
        }
        let (out, keep): (Vec<Held>, Vec<Held>) =
            self.items.drain(..).partition(|h| h.early && coming(h.did));
        self.items = keep.into();
        for h in &mut self.items {
            h.early = false;
        }
        self.bytes = self.items.iter().map(|h| h.bytes.len()).sum();
        self.handed_back += out.len() as u64;
        out
    }

    /// Takes out every item of `did` (a move that did not happen as planned).
    pub fn take_all_of(&mut self, did: DistributionId) -> Vec<Held> {
        let (out, keep): (Vec<Held>, Vec<Held>) = self.items.drain(..).partition(|h| h.did == did);
        self.items = keep.into();
        self.bytes = self.items.iter().map(|h| h.bytes.len()).sum();
        out
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::frame_digest;

    fn hold_of(items: &[(u8, &[u8])]) -> Hold {
        let mut h = Hold {
            max_items: 64,
            max_bytes: 1 << 20,
            max_wait: Duration::from_secs(1),
            ..Hold::default()
        };
        for (port, bytes) in items {
            h.push(
                DistributionId(7),
                Some(*port),
                Framing::Ethernet,
                bytes,
                Duration::ZERO,
            )
            .unwrap();
        }
        h
    }

    /// The releaser's last frames, matched as a run: a byte-identical copy after them stays, a
    /// hold that began after the first of them still matches, other inputs and identifiers are
    /// left alone, and marks that match nothing take nothing.
    #[test]
    fn hand_back_matches_the_releasers_last_run() {
        let (u0, u1, u2) = (&b"frame zero"[..], &b"frame one"[..], &b"frame two"[..]);
        let mark = |fs: &[&[u8]]| fs.iter().map(|f| frame_digest(f)).collect::<Vec<_>>();
        // [u0 u1 | u1 u2]: the releaser handled u0 then u1; the second u1 is a later copy
        let mut h = hold_of(&[(0, u0), (0, u1), (1, u1), (0, u1), (0, u2)]);
        let (back, unmatched) = h.hand_back(DistributionId(7), &[(0, mark(&[u0, u1]))]);
        assert_eq!(back.iter().map(|b| b.token).collect::<Vec<_>>(), [1, 2]);
        assert!(unmatched.is_empty());
        assert_eq!(
            h.items.iter().map(|b| b.token).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        assert_eq!((h.handed_back, h.bytes), (2, u1.len() * 2 + u2.len()));
        // the hold began after u0: [u1 u1 u2] against the mark [u0 u1] takes the first u1
        let mut h = hold_of(&[(0, u1), (0, u1), (0, u2)]);
        let (back, _) = h.hand_back(DistributionId(7), &[(0, mark(&[u0, u1]))]);
        assert_eq!(back.iter().map(|b| b.token).collect::<Vec<_>>(), [1]);
        // nothing of the mark held, another identifier, an empty mark: nothing taken
        let mut h = hold_of(&[(0, u2), (1, u0)]);
        assert_eq!(
            h.hand_back(DistributionId(7), &[(0, mark(&[u0]))]).1,
            [0],
            "unmatched"
        );
        assert!(h
            .hand_back(DistributionId(8), &[(1, mark(&[u0]))])
            .0
            .is_empty());
        assert!(h
            .hand_back(DistributionId(7), &[(1, Vec::new())])
            .0
            .is_empty());
        assert_eq!(
            h.hand_back(DistributionId(7), &[(1, mark(&[u0]))]).0.len(),
            1
        );
        assert_eq!(h.items.len(), 1);
        // every item of an identifier
        let mut h = hold_of(&[(0, u0), (1, u1)]);
        assert_eq!(h.take_all_of(DistributionId(7)).len(), 2);
        assert_eq!((h.items.len(), h.bytes), (0, 0));
    }
}
