//! The inbound anti-replay window (RFC 4303 section 3.4.3 and appendix A).

/// Width of the window in packets.
pub const REPLAY_WINDOW_BITS: u64 = 64;

/// Sliding anti-replay window: the highest authenticated sequence number
/// (`top`, full 64 bits) and a bitmap whose bit `i` says that `top - i` was
/// received.
///
/// A fresh window has `top == 0` and an empty bitmap; sequence number 0 is
/// never sent (RFC 4303 section 3.3.3), so it is always refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    /// Highest sequence number accepted so far.
    pub top: u64,
    /// Bit `i` set: `top - i` has been accepted.
    pub bitmap: u64,
}

impl ReplayWindow {
    /// Would `seq` be accepted? (Checked before the ICV, so that replays are
    /// dropped cheaply; the window is updated only after authentication, by
    /// [`ReplayWindow::accept`].)
    #[must_use]
    pub fn check(&self, seq: u64) -> bool {
        if seq == 0 {
            return false;
        }
        if seq > self.top {
            return true;
        }
        let diff = self.top - seq;
        if diff >= REPLAY_WINDOW_BITS {
            return false;
        }
        self.bitmap & (1u64 << diff) == 0
    }

    /// Check `seq` and record it. Returns `false` (and changes nothing) when
    /// it is a replay or too old.
    pub fn accept(&mut self, seq: u64) -> bool {
        if !self.check(seq) {
            return false;
        }
        if seq > self.top {
            let shift = seq - self.top;
            self.bitmap = if shift >= REPLAY_WINDOW_BITS {
                0
            } else {
                self.bitmap << shift
            };
            self.bitmap |= 1;
            self.top = seq;
        } else {
            self.bitmap |= 1u64 << (self.top - seq);
        }
        true
    }
}

/// The full 64-bit sequence number of a packet carrying the low 32 bits
/// `seq_lo`, given the window's `top` (RFC 4303 appendix A2.2).
///
/// Without ESN the answer is `seq_lo` itself.
#[must_use]
pub fn infer_esn(top: u64, seq_lo: u32, esn: bool) -> u64 {
    if !esn {
        return u64::from(seq_lo);
    }
    let w = REPLAY_WINDOW_BITS as u32;
    let th = (top >> 32) as u32;
    let tl = top as u32;
    let sh = if tl >= w - 1 {
        // Window lies inside one 2^32 sub-space.
        if seq_lo >= tl - (w - 1) {
            th
        } else {
            th.wrapping_add(1)
        }
    } else {
        // Window spans two sub-spaces.
        if seq_lo >= tl.wrapping_sub(w - 1) {
            th.wrapping_sub(1)
        } else {
            th
        }
    };
    (u64::from(sh) << 32) | u64::from(seq_lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn esn_inference_follows_the_rfc() {
        // (window top, low 32 bits, ESN, full sequence number)
        let cases = [
            (0x1_0000_0100, 0x200, true, 0x1_0000_0200),
            (0x1_0000_0100, 0xC1, true, 0x1_0000_00C1),
            // Below the window in the same sub-space: next sub-space.
            (0x1_0000_0100, 0x10, true, 0x2_0000_0010),
            // Window spans the boundary.
            (0x1_0000_0010, 0xFFFF_FFF0, true, 0x0_FFFF_FFF0),
            (0x1_0000_0010, 0x20, true, 0x1_0000_0020),
            (0x1_0000_0010, 5, false, 5),
        ];
        for (top, seq_lo, esn, want) in cases {
            assert_eq!(
                infer_esn(top, seq_lo, esn),
                want,
                "top {top:#x}, low bits {seq_lo:#x}, ESN {esn}"
            );
        }
    }

    #[test]
    fn window_basics() {
        let mut w = ReplayWindow::default();
        assert!(!w.accept(0));
        assert!(w.accept(1));
        assert!(!w.accept(1));
        assert!(w.accept(65));
        assert!(!w.accept(1), "65 - 1 = 64 is outside a 64-wide window");
        assert!(w.accept(2));
        assert!(!w.accept(2));
        assert!(w.accept(1000));
        assert_eq!(w.bitmap, 1);
    }
}
