//! ESP packet sealing and opening with AES-GCM / AES-GMAC on `ring`.
//!
//! Stateless: the caller chooses the sequence number and IV, and does the
//! replay check. [`super::SoftwareEsp`] wraps this with SA state.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM};

use super::sa::{Cipher, IcvLen, SaKey, Spi};
use super::EspError;

/// SPI and sequence number.
pub const ESP_HEADER_LEN: usize = 8;
/// The explicit IV carried after the header (RFC 4106).
pub const ESP_IV_LEN: usize = 8;
/// Pad length and next header.
pub const ESP_TRAILER_LEN: usize = 2;

const HDR_IV: usize = ESP_HEADER_LEN + ESP_IV_LEN;

/// A checked view of the header of an ESP packet (RFC 4303 section 2): the SPI
/// and the low 32 bits of the sequence number. The one place that reads them
/// from untrusted bytes: every backend (software, card, fallback) and the
/// host's packet parser go through it. After [`EspHeader::new_checked`] no
/// accessor can panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EspHeader<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> EspHeader<T> {
    /// The SPI field.
    pub const SPI: std::ops::Range<usize> = 0..4;
    /// The sequence-number field (its low 32 bits).
    pub const SEQ: std::ops::Range<usize> = 4..ESP_HEADER_LEN;

    /// A view of `buf`, which must hold at least the 8-byte header.
    ///
    /// # Errors
    /// [`EspError::Malformed`] when `buf` is shorter than [`ESP_HEADER_LEN`].
    pub fn new_checked(buf: T) -> Result<Self, EspError> {
        if buf.as_ref().len() < ESP_HEADER_LEN {
            return Err(EspError::Malformed {
                reason: "shorter than the ESP header",
            });
        }
        Ok(Self { buf })
    }

    fn word(&self, at: std::ops::Range<usize>) -> u32 {
        let mut w = [0u8; 4];
        // new_checked guarantees both fields are present.
        if let Some(b) = self.buf.as_ref().get(at) {
            w.copy_from_slice(b);
        }
        u32::from_be_bytes(w)
    }

    /// The SPI.
    pub fn spi(&self) -> Spi {
        Spi(self.word(Self::SPI))
    }

    /// The low 32 bits of the sequence number, as on the wire.
    pub fn seq_lo(&self) -> u32 {
        self.word(Self::SEQ)
    }

    /// Everything after the header (IV, payload, trailer, ICV).
    pub fn body(&self) -> &[u8] {
        self.buf.as_ref().get(ESP_HEADER_LEN..).unwrap_or_default()
    }

    /// The viewed bytes.
    pub fn into_inner(self) -> T {
        self.buf
    }
}

/// What goes into an ESP header and the AAD of a packet being sealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealHeader {
    /// SPI of the SA.
    pub spi: Spi,
    /// Full sequence number: the low 32 bits go on the wire; with `esn` the
    /// high 32 bits are authenticated too.
    pub seq: u64,
    /// Extended sequence numbers.
    pub esn: bool,
    /// The explicit 8-byte IV.
    pub iv: [u8; 8],
}

/// Why [`EspCipher::open`] refused a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenError {
    /// The ICV did not verify.
    Auth,
    /// Too short, or the trailer is inconsistent.
    Malformed(&'static str),
}

/// An SA's keyed transform: AES-GCM or AES-GMAC with a salt and an ICV
/// length.
///
/// `ring` keeps its own expanded key inside; the raw key bytes are not kept
/// here (the [`SaKey`] they came from is zeroized by its owner).
pub struct EspCipher {
    key: LessSafeKey,
    salt: [u8; 4],
    cipher: Cipher,
    icv: IcvLen,
}

impl std::fmt::Debug for EspCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EspCipher")
            .field("cipher", &self.cipher)
            .field("icv", &self.icv)
            .finish_non_exhaustive()
    }
}

/// Constant-time equality of two equally long byte strings.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut d = 0u8;
    for (x, y) in a.iter().zip(b) {
        d |= x ^ y;
    }
    d == 0
}

/// Padding (RFC 4303 section 2.4) so that payload, padding and the two
/// trailer bytes end on a 4-byte boundary.
#[must_use]
pub(crate) fn pad_len(payload_len: usize) -> usize {
    (4 - (payload_len + ESP_TRAILER_LEN) % 4) % 4
}

/// The AAD of a packet: SPI | seq low, or SPI | seq high | seq low with ESN.
fn aad_bytes(spi: Spi, seq: u64, esn: bool) -> ([u8; 12], usize) {
    let mut a = [0u8; 12];
    a[..4].copy_from_slice(&spi.0.to_be_bytes());
    if esn {
        a[4..12].copy_from_slice(&seq.to_be_bytes());
        (a, 12)
    } else {
        a[4..8].copy_from_slice(&(seq as u32).to_be_bytes());
        (a, 8)
    }
}

impl EspCipher {
    /// Expand `key` for `cipher` with ICV length `icv`.
    ///
    /// # Errors
    /// [`EspError::Unsupported`] for GMAC with a truncated ICV (RFC 4543
    /// allows 16 bytes only).
    pub fn new(key: &SaKey, cipher: Cipher, icv: IcvLen) -> Result<Self, EspError> {
        if cipher == Cipher::AesGmac && icv != IcvLen::Icv16 {
            return Err(EspError::Unsupported {
                what: "AES-GMAC requires a 16-byte ICV",
            });
        }
        let alg = if key.bits() == 256 {
            &AES_256_GCM
        } else {
            &AES_128_GCM
        };
        let unbound = UnboundKey::new(alg, key.key_bytes()).map_err(|_| EspError::Unsupported {
            what: "key rejected by ring",
        })?;
        Ok(EspCipher {
            key: LessSafeKey::new(unbound),
            salt: key.salt(),
            cipher,
            icv,
        })
    }

    /// ICV length in bytes.
    #[must_use]
    pub fn icv_len(&self) -> usize {
        self.icv.bytes()
    }

    fn nonce(&self, iv: &[u8; 8]) -> Nonce {
        let mut n = [0u8; 12];
        n[..4].copy_from_slice(&self.salt);
        n[4..].copy_from_slice(iv);
        Nonce::assume_unique_for_key(n)
    }

    /// Build the ESP packet for `payload` under header `h` into `out`.
    ///
    /// `(h.seq, h.iv)` must never repeat under one key; the engines pass the
    /// sequence number as IV.
    ///
    /// # Errors
    /// [`EspError::Backend`] if `ring` refuses (input beyond GCM's limit).
    pub fn seal(
        &self,
        h: &SealHeader,
        next_header: u8,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), EspError> {
        let SealHeader { spi, seq, esn, iv } = *h;
        let pad = pad_len(payload.len());
        let body = payload.len() + pad + ESP_TRAILER_LEN;
        out.clear();
        out.reserve(HDR_IV + body + self.icv.bytes());
        out.extend_from_slice(&spi.0.to_be_bytes());
        out.extend_from_slice(&(seq as u32).to_be_bytes());
        out.extend_from_slice(&iv);
        out.extend_from_slice(payload);
        // Self-describing padding: 1, 2, 3, ... (pad <= 3).
        out.extend_from_slice(&[1u8, 2, 3][..pad]);
        out.push(pad as u8);
        out.push(next_header);
        let nonce = self.nonce(&iv);
        let (aad, aad_len) = aad_bytes(spi, seq, esn);
        let tag = match self.cipher {
            Cipher::AesGcm => self
                .key
                .seal_in_place_separate_tag(nonce, Aad::from(&aad[..aad_len]), &mut out[HDR_IV..])
                .map_err(|_| EspError::Backend {
                    what: "ring seal failed",
                })?,
            Cipher::AesGmac => {
                let full = gmac_aad(&aad[..aad_len], &out[ESP_HEADER_LEN..]);
                self.key
                    .seal_in_place_separate_tag(nonce, Aad::from(&full[..]), &mut [])
                    .map_err(|_| EspError::Backend {
                        what: "ring seal failed",
                    })?
            }
        };
        out.extend_from_slice(&tag.as_ref()[..self.icv.bytes()]);
        Ok(())
    }

    /// Authenticate and decrypt `packet` (starting at the SPI) whose full
    /// sequence number is `seq`, then check and strip padding and trailer.
    /// On success `out` holds the payload and the next header is returned.
    ///
    /// The SPI and the low 32 bits of `seq` are taken from the packet itself.
    ///
    /// # Errors
    /// [`OpenError::Auth`] when the ICV does not verify,
    /// [`OpenError::Malformed`] when the packet is too short or its trailer
    /// is inconsistent.
    pub fn open(
        &self,
        seq: u64,
        esn: bool,
        packet: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<u8, OpenError> {
        out.clear();
        self.open_auth(seq, esn, packet, out)?;
        strip_trailer(out)
    }

    /// Authenticate and decrypt only: `out` gets payload, padding and trailer.
    ///
    /// # Errors
    /// As for [`EspCipher::open`].
    pub(crate) fn open_auth(
        &self,
        seq: u64,
        esn: bool,
        packet: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), OpenError> {
        let icv = self.icv.bytes();
        if packet.len() < HDR_IV + ESP_TRAILER_LEN + icv {
            return Err(OpenError::Malformed(
                "shorter than header, IV, trailer and ICV",
            ));
        }
        let hdr = EspHeader::new_checked(packet)
            .map_err(|_| OpenError::Malformed("shorter than the ESP header"))?;
        let spi = hdr.spi();
        let seq = (seq & !0xFFFF_FFFF) | u64::from(hdr.seq_lo());
        let mut iv = [0u8; 8];
        iv.copy_from_slice(&packet[ESP_HEADER_LEN..HDR_IV]);
        let nonce = self.nonce(&iv);
        let (aad, aad_len) = aad_bytes(spi, seq, esn);
        let ct_end = packet.len() - icv;
        let ct = &packet[HDR_IV..ct_end];
        let icv_rx = &packet[ct_end..];
        match self.cipher {
            Cipher::AesGcm => self.gcm_open_nonce(nonce, &aad[..aad_len], ct, icv_rx, out),
            Cipher::AesGmac => {
                let full = gmac_aad(&aad[..aad_len], &packet[ESP_HEADER_LEN..ct_end]);
                let tag = self
                    .gcm_seal_nonce(nonce, &full, &mut [])
                    .map_err(|_| OpenError::Malformed("too long for GMAC"))?;
                if !ct_eq(&tag, icv_rx) {
                    return Err(OpenError::Auth);
                }
                out.extend_from_slice(ct);
                Ok(())
            }
        }
    }

    /// Raw AES-GCM encryption in place with a 12-byte nonce; returns the full
    /// 16-byte tag. The building block of [`EspCipher::seal`], public so that
    /// known-answer tests exercise the very calls the ESP path makes.
    ///
    /// # Errors
    /// [`EspError::Backend`] when the input exceeds GCM's limit.
    pub fn gcm_seal(
        &self,
        nonce: [u8; 12],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; 16], EspError> {
        self.gcm_seal_nonce(Nonce::assume_unique_for_key(nonce), aad, in_out)
    }

    fn gcm_seal_nonce(
        &self,
        nonce: Nonce,
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; 16], EspError> {
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(aad), in_out)
            .map_err(|_| EspError::Backend {
                what: "ring seal failed",
            })?;
        let mut t = [0u8; 16];
        t.copy_from_slice(tag.as_ref());
        Ok(t)
    }

    /// Raw AES-GCM decryption with a 12-byte nonce and a tag of 4 to 16
    /// bytes (a truncated tag is compared with the full tag's leading
    /// bytes). On success `out` (cleared first) holds the plaintext; on
    /// failure it is empty.
    ///
    /// # Errors
    /// [`OpenError::Auth`] when the tag does not verify or has a length
    /// outside 4..=16.
    pub fn gcm_open(
        &self,
        nonce: [u8; 12],
        aad: &[u8],
        ct: &[u8],
        tag: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), OpenError> {
        out.clear();
        self.gcm_open_nonce(Nonce::assume_unique_for_key(nonce), aad, ct, tag, out)
    }

    fn gcm_open_nonce(
        &self,
        nonce: Nonce,
        aad: &[u8],
        ct: &[u8],
        tag: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), OpenError> {
        if tag.len() == 16 {
            out.extend_from_slice(ct);
            out.extend_from_slice(tag);
            let res = self
                .key
                .open_in_place(nonce, Aad::from(aad), out)
                .map(|p| p.len());
            match res {
                Ok(n) => {
                    out.truncate(n);
                    return Ok(());
                }
                Err(_) => {
                    out.clear();
                    return Err(OpenError::Auth);
                }
            }
        }
        if tag.len() < 4 || tag.len() > 16 {
            return Err(OpenError::Auth);
        }
        // Truncated tag: ring verifies full tags only. CTR is its own
        // inverse, so sealing the ciphertext yields the plaintext, and
        // sealing that plaintext again yields the ciphertext's full tag.
        let nonce_bytes = *nonce.as_ref();
        out.extend_from_slice(ct);
        self.gcm_seal_nonce(nonce, aad, out)
            .map_err(|_| OpenError::Malformed("too long for GCM"))?;
        let mut again = out.clone();
        let full = self
            .gcm_seal_nonce(Nonce::assume_unique_for_key(nonce_bytes), aad, &mut again)
            .map_err(|_| OpenError::Malformed("too long for GCM"))?;
        if !ct_eq(&full[..tag.len()], tag) {
            out.clear();
            return Err(OpenError::Auth);
        }
        Ok(())
    }
}

/// RFC 4543 AAD: SPI | seq (| ESN high) | IV | payload | padding | trailer.
fn gmac_aad(hdr_aad: &[u8], iv_and_body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(hdr_aad.len() + iv_and_body.len());
    v.extend_from_slice(hdr_aad);
    v.extend_from_slice(iv_and_body);
    v
}

/// Check and strip padding and trailer from a decrypted body.
///
/// # Errors
/// [`OpenError::Malformed`] when the pad length overruns the body or the
/// padding is not 1, 2, 3, ...
pub(crate) fn strip_trailer(body: &mut Vec<u8>) -> Result<u8, OpenError> {
    let n = body.len();
    if n < ESP_TRAILER_LEN {
        return Err(OpenError::Malformed("no room for the trailer"));
    }
    let next_header = body[n - 1];
    let pad = usize::from(body[n - 2]);
    if pad + ESP_TRAILER_LEN > n {
        return Err(OpenError::Malformed("pad length beyond the payload"));
    }
    let start = n - ESP_TRAILER_LEN - pad;
    for (i, b) in body[start..n - ESP_TRAILER_LEN].iter().enumerate() {
        if usize::from(*b) != i + 1 {
            return Err(OpenError::Malformed("padding is not 1, 2, 3, ..."));
        }
    }
    body.truncate(start);
    Ok(next_header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_aligns_to_four() {
        for n in 0..20 {
            assert_eq!((n + pad_len(n) + 2) % 4, 0);
            assert!(pad_len(n) < 4);
        }
    }

    #[test]
    fn trailer_checks() {
        let mut b = vec![9, 9, 1, 2, 2, 4];
        assert_eq!(strip_trailer(&mut b), Ok(4));
        assert_eq!(b, vec![9, 9]);
        let mut b = vec![9, 1, 3, 2, 4];
        assert!(strip_trailer(&mut b).is_err());
        let mut b = vec![1, 9, 4];
        assert!(strip_trailer(&mut b).is_err());
        let mut b = vec![4];
        assert!(strip_trailer(&mut b).is_err());
    }

    #[test]
    fn truncated_icv_round_trip_and_tamper() {
        for icv in [IcvLen::Icv8, IcvLen::Icv12, IcvLen::Icv16] {
            let k = SaKey::new(&[7u8; 16], [1, 2, 3, 4]).unwrap();
            let c = EspCipher::new(&k, Cipher::AesGcm, icv).unwrap();
            let mut pkt = Vec::new();
            let h = SealHeader {
                spi: Spi(5),
                seq: 9,
                esn: false,
                iv: 9u64.to_be_bytes(),
            };
            c.seal(&h, 4, b"hello world", &mut pkt).unwrap();
            let mut out = Vec::new();
            assert_eq!(c.open(9, false, &pkt, &mut out), Ok(4));
            assert_eq!(out, b"hello world");
            let last = pkt.len() - 1;
            pkt[last] ^= 1;
            assert_eq!(c.open(9, false, &pkt, &mut out), Err(OpenError::Auth));
        }
    }

    #[test]
    fn esp_header_view() {
        let p = [0xde, 0xad, 0xbe, 0xef, 0, 0, 1, 2, 9, 9];
        let h = EspHeader::new_checked(&p[..]).unwrap();
        assert_eq!(h.spi(), Spi(0xdead_beef));
        assert_eq!(h.seq_lo(), 0x102);
        assert_eq!(h.body(), &[9, 9]);
        assert!(EspHeader::new_checked(&p[..7]).is_err());
        assert_eq!(
            EspHeader::new_checked(&p[..8]).unwrap().body(),
            &[] as &[u8]
        );
    }
}
