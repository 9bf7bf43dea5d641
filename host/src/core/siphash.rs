//! SipHash with configurable rounds, written from the SipHash paper (Aumasson, Bernstein).
//! The distribution identifier uses SipHash-1-3 (the fast variant); the test checks the round
//! function against the standard library's SipHash-2-4.

#[inline]
fn round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13);
    v[1] ^= v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16);
    v[3] ^= v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21);
    v[3] ^= v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17);
    v[1] ^= v[2];
    v[2] = v[2].rotate_left(32);
}

/// SipHash-c-d of `data` under the key `(k0, k1)`.
pub fn siphash<const C: usize, const D: usize>(k0: u64, k1: u64, data: &[u8]) -> u64 {
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        let m = u64::from_le_bytes(b);
        v[3] ^= m;
        for _ in 0..C {
            round(&mut v);
        }
        v[0] ^= m;
    }
    let rest = chunks.remainder();
    let mut last = [0u8; 8];
    last[..rest.len()].copy_from_slice(rest);
    // The length byte: the message length modulo 256, by definition of SipHash.
    last[7] = (data.len() & 0xff) as u8;
    let m = u64::from_le_bytes(last);
    v[3] ^= m;
    for _ in 0..C {
        round(&mut v);
    }
    v[0] ^= m;
    v[2] ^= 0xff;
    for _ in 0..D {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// SipHash-1-3.
pub fn siphash13(k0: u64, k1: u64, data: &[u8]) -> u64 {
    siphash::<1, 3>(k0, k1, data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::Hasher;

    #[test]
    #[allow(deprecated)] // std's SipHasher (2-4) is deprecated but is the reference we check against
    fn matches_std_siphash24() {
        for len in 0..40usize {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut h = std::hash::SipHasher::new_with_keys(0x0706050403020100, 0x0f0e0d0c0b0a0908);
            h.write(&data);
            assert_eq!(
                siphash::<2, 4>(0x0706050403020100, 0x0f0e0d0c0b0a0908, &data),
                h.finish(),
                "len {len}"
            );
        }
    }

    #[test]
    fn paper_vector_siphash24() {
        // The SipHash paper's appendix: key 00..0f, message 00..0e -> a129ca6149be45e5.
        let data: Vec<u8> = (0u8..15).collect();
        assert_eq!(
            siphash::<2, 4>(0x0706050403020100, 0x0f0e0d0c0b0a0908, &data),
            0xa129_ca61_49be_45e5
        );
    }
}
