//! The keyed hash behind distribution identifiers and session digests: SipHash-1-3 from the
//! `siphasher` crate (the fast SipHash variant, keyed with the cluster secret so that nobody can
//! aim traffic at one identifier by choosing addresses).

use siphasher::sip::SipHasher13;
use std::hash::Hasher;

/// SipHash-1-3 of `data` under the key `(k0, k1)`.
#[must_use]
pub fn siphash13(k0: u64, k1: u64, data: &[u8]) -> u64 {
    let mut h = SipHasher13::new_with_keys(k0, k1);
    h.write(data);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Identifiers must not change between releases (a mixed-version cluster would disagree on
    /// owners): these values pin the function to SipHash-1-3 over the raw bytes.
    #[test]
    fn values_are_pinned() {
        let pins = [
            (0usize, 0xabac_0158_050f_c4dc_u64),
            (7, 0xc2b1_c4ef_b962_bfb6),
            (8, 0x5e53_2924_8666_2ee6),
            (15, 0x57c2_a248_9d64_ff8f),
            (37, 0x501f_dbe9_a43e_2589),
        ];
        for (len, want) in pins {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            assert_eq!(
                siphash13(0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908, &data),
                want,
                "len {len}"
            );
        }
    }

    #[test]
    fn key_changes_everything() {
        let d = b"10.0.0.1:1234->10.0.0.2:80";
        assert_ne!(siphash13(1, 2, d), siphash13(1, 3, d));
        assert_ne!(siphash13(1, 2, d), siphash13(2, 2, d));
    }
}
