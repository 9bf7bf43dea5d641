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
//! releaser handled, and one member's input may lag another's by hundreds of milliseconds (a
//! busy loop, a full socket), so frames the releaser handled long before the move can reach
//! the next owner after it. Every input delivers its frames to each member in the same order
//! (the segments flood), so a place in an input's stream means the same to every member: each
//! member keeps the digests of the last frames of each input ([`InputHistory`]), and the
//! releaser's `L` record names, per input, the last frames it had taken in when it released
//! the identifier ([`crate::record::Record::LastHandled`]). The next owner finds that place in
//! its own history (or waits for it to arrive): the held frames of the identifier up to it are
//! the releaser's and are handed back ([`Hold::hand_back`]), never handled twice, and the rest
//! are handled here: none lost.
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
    /// Its place in its input's stream ([`InputHistory::newest`] when it arrived).
    pub pos: u64,
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
        pos: u64,
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
            pos,
            early: false,
        });
        Some(self.next_token)
    }

    /// Takes out the items of `did` from `input` at or before place `upto` in that input's
    /// stream: the releaser took them in before it let the identifier go.
    pub fn hand_back(&mut self, did: DistributionId, input: u8, upto: u64) -> Vec<Held> {
        if !self
            .items
            .iter()
            .any(|h| h.did == did && input_of(h.port) == input && h.pos <= upto)
        {
            return Vec::new();
        }
        let (out, keep): (Vec<Held>, Vec<Held>) = self
            .items
            .drain(..)
            .partition(|h| h.did == did && input_of(h.port) == input && h.pos <= upto);
        self.items = keep.into();
        for h in &out {
            self.bytes -= h.bytes.len();
        }
        self.handed_back += out.len() as u64;
        out
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

/// The digests of the last frames of one input ([`crate::record::frame_digest`]), numbered in
/// arrival order: where in the input's stream a releaser let an identifier go.
#[derive(Debug)]
pub(super) struct InputHistory {
    ring: VecDeque<u64>,
    /// The number of the newest frame (frames count from 1; 0: none yet).
    pub newest: u64,
}

impl Default for InputHistory {
    fn default() -> Self {
        InputHistory {
            ring: VecDeque::with_capacity(Self::LEN),
            newest: 0,
        }
    }
}

impl InputHistory {
    /// Frames kept: at 100,000 frames a second, 40 ms of one input; at the demo's rates, seconds.
    pub const LEN: usize = 4096;

    /// Frames at most between two of a run's frames (see [`Self::find`]).
    pub const MAX_GAP: usize = 16;

    /// Takes in the next frame's digest; its number.
    pub fn push(&mut self, digest: u64) -> u64 {
        if self.ring.len() == Self::LEN {
            self.ring.pop_front();
        }
        self.ring.push_back(digest);
        self.newest += 1;
        self.newest
    }

    /// The digests of the last `k` frames, oldest first.
    pub fn last(&self, k: usize) -> Vec<u64> {
        self.ring
            .iter()
            .skip(self.ring.len().saturating_sub(k))
            .copied()
            .collect()
    }

    /// Whether `digest` is among the kept frames.
    pub fn contains(&self, digest: u64) -> bool {
        self.ring.contains(&digest)
    }

    /// The number of the newest frame after `after` that ends a run matching `run` (oldest
    /// first), leaving out the digests `own` says this member sent itself onto that segment
    /// (the releaser took them in, this member never does): the run's frames in a row, or
    /// else in order with at most [`Self::MAX_GAP`] other frames before each (the releaser's
    /// own transmissions, which this member takes in and it does not). At the very start of this input's stream
    /// (nothing dropped from the history yet) the run's last ones are enough, as this member
    /// may have started after the first of them. The run, not one digest, tells the
    /// releaser's last frame from a byte-identical copy that came after it.
    pub fn find(&self, run: &[u64], after: u64, own: impl Fn(u64) -> bool) -> Option<u64> {
        let run: Vec<u64> = run.iter().copied().filter(|d| !own(*d)).collect();
        // the run as it is first (the same stream at both), then with others between
        self.find_gapped(&run, after, 0)
            .or_else(|| self.find_gapped(&run, after, Self::MAX_GAP))
    }

    fn find_gapped(&self, run: &[u64], after: u64, max_gap: usize) -> Option<u64> {
        let (&last, rest) = run.split_last()?;
        let first = self.newest + 1 - self.ring.len() as u64;
        let whole = self.newest <= Self::LEN as u64;
        let ends_run = |j: usize| {
            let mut pos = j;
            for &want in rest.iter().rev() {
                let mut gap = 0;
                loop {
                    if pos == 0 {
                        // the start of what is kept: a partial run counts only at the start
                        // of the stream
                        return whole;
                    }
                    pos -= 1;
                    if self.ring[pos] == want {
                        break;
                    }
                    gap += 1;
                    if gap > max_gap {
                        return false;
                    }
                }
            }
            true
        };
        let lowest = (after + 1).saturating_sub(first) as usize;
        (lowest..self.ring.len())
            .rev()
            .find(|&j| self.ring[j] == last && ends_run(j))
            .map(|j| first + j as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::frame_digest;

    /// A hold of identifier 7's frames, each at its place in its input's history.
    fn hold_of(items: &[(u8, &[u8])]) -> (Hold, [InputHistory; 2]) {
        let mut h = Hold {
            max_items: 64,
            max_bytes: 1 << 20,
            max_wait: Duration::from_secs(1),
            ..Hold::default()
        };
        let mut hist: [InputHistory; 2] = Default::default();
        for (port, bytes) in items {
            let pos = hist[usize::from(*port)].push(frame_digest(bytes));
            h.push(
                DistributionId(7),
                Some(*port),
                Framing::Ethernet,
                bytes,
                Duration::ZERO,
                pos,
            )
            .unwrap();
        }
        (h, hist)
    }

    fn tokens(held: &[Held]) -> Vec<u64> {
        held.iter().map(|b| b.token).collect()
    }

    /// The releaser's place in an input, found as a run: a byte-identical copy after it stays,
    /// a member that started after the first of the run still finds it, other inputs and
    /// identifiers are left alone, and a run not (yet) seen finds nothing.
    #[test]
    fn the_releasers_place_is_found_and_what_came_before_is_handed_back() {
        let (u0, u1, u2) = (&b"frame zero"[..], &b"frame one"[..], &b"frame two"[..]);
        let run = |fs: &[&[u8]]| fs.iter().map(|f| frame_digest(f)).collect::<Vec<_>>();
        // [u0 u1 | u1 u2] on port 0: the releaser let go after u0 then u1; the second u1 is a
        // later copy
        let (mut h, hist) = hold_of(&[(0, u0), (0, u1), (1, u1), (0, u1), (0, u2)]);
        let at = hist[0].find(&run(&[u0, u1]), 0, |_| false);
        assert_eq!(at, Some(2));
        let back = h.hand_back(DistributionId(7), 0, 2);
        assert_eq!(tokens(&back), [1, 2]);
        assert_eq!(tokens(h.items.make_contiguous()), [3, 4, 5]);
        assert_eq!((h.handed_back, h.bytes), (2, u1.len() * 2 + u2.len()));
        // only places after `after` count (after 2, only [u0 . u1] with a frame between is
        // left, which the gapped match takes); another identifier takes nothing
        assert_eq!(hist[0].find(&run(&[u0, u1]), 3, |_| false), None);
        assert_eq!(hist[0].find(&run(&[u0, u1]), 2, |_| false), Some(3));
        assert!(h.hand_back(DistributionId(8), 1, 10).is_empty());
        assert_eq!(tokens(&h.hand_back(DistributionId(7), 1, 1)), [3]);
        // this member started after u0: [u1 u1 u2] against [u0 u1] finds the first u1
        let (_, hist) = hold_of(&[(0, u1), (0, u1), (0, u2)]);
        assert_eq!(hist[0].find(&run(&[u0, u1]), 0, |_| false), Some(1));
        // a run not seen yet, an empty run: nothing
        assert_eq!(hist[0].find(&run(&[u2, u0]), 0, |_| false), None);
        assert_eq!(hist[0].find(&[], 0, |_| false), None);
        // every item of an identifier
        let (mut h, _) = hold_of(&[(0, u0), (1, u1)]);
        assert_eq!(h.take_all_of(DistributionId(7)).len(), 2);
        assert_eq!((h.items.len(), h.bytes), (0, 0));
    }

    /// On a port, this member takes in what the releaser sent out (the releaser does not) and
    /// never what it sent out itself (the releaser does): the run is found with the
    /// releaser's frames between its own, and with this member's transmissions left out.
    #[test]
    fn a_run_is_found_across_each_members_own_transmissions() {
        let d = |i: u64| frame_digest(&i.to_be_bytes());
        let mut mine = InputHistory::default();
        let mut sent = InputHistory::default();
        // a long stream (the history is full: no partial run at its start counts), then
        // 1, 2, r (the releaser's), 3, m (mine: this member does not take it in), 4, 5
        for i in 0..InputHistory::LEN as u64 {
            mine.push(d(10_000 + i));
        }
        for i in [1u64, 2, 900, 3, 4, 5] {
            mine.push(d(i));
        }
        sent.push(d(901));
        // the releaser took in 2, 3, m, 4 last
        let run = [d(2), d(3), d(901), d(4)];
        let own = |x: u64| sent.contains(x);
        let at = InputHistory::LEN as u64 + 5;
        assert_eq!(mine.find(&run, 0, own), Some(at));
        // without knowing its own transmission, the run is not there
        assert_eq!(mine.find(&run, 0, |_| false), None);
        // more than MAX_GAP frames between two of the run's: not the same place
        let mut far = InputHistory::default();
        for i in 0..InputHistory::LEN as u64 {
            far.push(d(10_000 + i));
        }
        far.push(d(2));
        for i in 0..=InputHistory::MAX_GAP as u64 {
            far.push(d(1000 + i));
        }
        far.push(d(3));
        assert_eq!(far.find(&[d(2), d(3)], 0, |_| false), None);
    }

    /// Once frames fell out of the history, only a whole run counts (a partial one at the
    /// start could be anything); the newest match wins.
    #[test]
    fn a_wrapped_history_needs_the_whole_run() {
        let mut hist = InputHistory::default();
        let d = |i: u64| frame_digest(&i.to_be_bytes());
        for i in 0..InputHistory::LEN as u64 + 10 {
            hist.push(d(i % 100));
        }
        let first = hist.newest + 1 - InputHistory::LEN as u64;
        assert_eq!(
            hist.last(2),
            [d((hist.newest - 2) % 100), d((hist.newest - 1) % 100)]
        );
        // the oldest kept frame alone would end [x, oldest] only partially: not found there
        let oldest = d((first - 1) % 100);
        let before = d((first + 98) % 100);
        assert_ne!(hist.find(&[before, oldest], 0, |_| false), Some(first));
        // a whole run: its newest place
        let newest = hist.newest;
        assert_eq!(
            hist.find(&[d((newest - 2) % 100), d((newest - 1) % 100)], 0, |_| {
                false
            }),
            Some(newest)
        );
    }
}
