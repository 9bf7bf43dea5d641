//! Reference model of the SA table block and the AES-GCM ESP engine block
//! (`hdl/CARD.md`, "SA table block" and "ESP engine block";
//! `hdl/crypto/esp_engine.v` is the RTL). AES-GCM itself comes from `ring`.
//!
//! Like the CAM model, every command completes within its `CMD` write, so
//! `STATUS.BUSY` is never seen. The buffer contents after a command are the
//! RTL's to the byte: ENCAP and DECAP write whole 16-byte blocks from byte 16
//! (bytes past the data zeroed), a failed DECAP wipes those blocks.

use hal::regs::{block_type, esp, port, sa, UNMAPPED_PATTERN};

use crate::model::header_read;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM};

/// Element `i` of register array `r` when `o` falls inside it.
fn in_array(r: hal::regs::Reg, o: u32) -> Option<usize> {
    (r.offset..r.offset + 4 * r.count)
        .contains(&o)
        .then(|| ((o - r.offset) / 4) as usize)
}

/// Bits of `CONFIG` that are stored.
const CFG_MASK: u32 = 0x1F0F;
const BUF: usize = esp::BUF_BYTES as usize;
const WINDOW: u64 = sa::WINDOW as u64;

/// The fields of an SA, as a slot stores them and the SA block stages them.
#[derive(Clone, Copy, Default)]
struct SaFields {
    spi: u32,
    config: u32,
    salt: u32,
    key: [u32; 8],
    seq: u64,
    win: u64,
    pkts: u64,
    bytes: u64,
    auth: u32,
    repl: u32,
}

impl SaFields {
    /// Sequence number, replay window and counters := `from`'s (never the key).
    fn set_state(&mut self, from: &SaFields) {
        self.seq = from.seq;
        self.win = from.win;
        self.pkts = from.pkts;
        self.bytes = from.bytes;
        self.auth = from.auth;
        self.repl = from.repl;
    }

    /// Key and salt wiped.
    fn wipe_key(&mut self) {
        self.key = [0; 8];
        self.salt = 0;
    }
}

/// One SA slot.
#[derive(Clone, Default)]
struct Slot {
    valid: bool,
    sa: SaFields,
}

impl Slot {
    /// Invalid, its key and salt wiped.
    fn invalidate(&mut self) {
        self.valid = false;
        self.sa.wipe_key();
    }
}

/// The SA block's data registers: the slot argument and the staged SA.
#[derive(Clone, Copy, Default)]
struct SaStage {
    slot: u32,
    sa: SaFields,
}

/// The ESP engine block's registers.
#[derive(Clone, Default)]
struct EngineRegs {
    cmd: u32,
    status: u32,
    slot: u32,
    len: u32,
    nh: u8,
    seq: u64,
    cmd_count: u32,
    err_count: u32,
    auth: u32,
    repl: u32,
}

/// The SA table and ESP engine blocks.
#[derive(Clone)]
pub(crate) struct CryptoModel {
    slots: Vec<Slot>,
    st: SaStage,
    sa_cmd: u32,
    sa_status: u32,
    sa_cmd_count: u32,
    sa_err_count: u32,
    eng: EngineRegs,
    buf: Vec<u8>,
}

impl std::fmt::Debug for CryptoModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never shows keys or salts.
        f.debug_struct("CryptoModel")
            .field("valid_slots", &self.occupancy())
            .finish_non_exhaustive()
    }
}

impl Default for CryptoModel {
    fn default() -> Self {
        Self::new()
    }
}

fn lo(v: u64) -> u32 {
    v as u32
}
fn hi(v: u64) -> u32 {
    (v >> 32) as u32
}
fn set_lo(v: &mut u64, w: u32) {
    *v = (*v & !0xFFFF_FFFF) | u64::from(w);
}
fn set_hi(v: &mut u64, w: u32) {
    *v = (*v & 0xFFFF_FFFF) | (u64::from(w) << 32);
}

/// RFC 4303 appendix A2.2 with a 64-packet window.
fn infer_seq(top: u64, seq_lo: u32, esn: bool) -> u64 {
    if !esn {
        return u64::from(seq_lo);
    }
    let (th, tl) = (hi(top), lo(top));
    let edge = tl.wrapping_sub(63);
    let sh = if tl >= 63 {
        if seq_lo >= edge {
            th
        } else {
            th.wrapping_add(1)
        }
    } else if seq_lo >= edge {
        th.wrapping_sub(1)
    } else {
        th
    };
    (u64::from(sh) << 32) | u64::from(seq_lo)
}

fn is_replay(top: u64, win: u64, seq: u64) -> bool {
    seq == 0 || (seq <= top && (top - seq >= WINDOW || (win >> (top - seq)) & 1 == 1))
}

fn window_accept(top: u64, win: u64, seq: u64) -> (u64, u64) {
    if seq > top {
        let adv = seq - top;
        (seq, if adv >= WINDOW { 1 } else { (win << adv) | 1 })
    } else {
        (top, win | (1 << (top - seq)))
    }
}

impl CryptoModel {
    /// Power-on state.
    pub(crate) fn new() -> Self {
        Self {
            slots: vec![Slot::default(); sa::SLOTS as usize],
            st: SaStage::default(),
            sa_cmd: 0,
            sa_status: 0,
            sa_cmd_count: 0,
            sa_err_count: 0,
            eng: EngineRegs::default(),
            buf: vec![0; BUF],
        }
    }

    fn occupancy(&self) -> u32 {
        self.slots.iter().filter(|s| s.valid).count() as u32
    }

    // ------------------------------------------------------------- SA block

    /// Read at offset `o` of the SA block.
    pub(crate) fn sa_read(&self, o: u32) -> u32 {
        if let Some(v) = header_read(o, (block_type::SA, sa::MAJOR, sa::MINOR, esp::BASE)) {
            return v;
        }
        let st = &self.st.sa;
        if in_array(sa::KEY, o).is_some() {
            return 0; // write-only
        }
        match o {
            _ if o == sa::CAP_SLOTS.offset => sa::SLOTS,
            _ if o == sa::CAP_WINDOW.offset => sa::WINDOW,
            _ if o == sa::CAP_FEATURES.offset => 0x3F,
            _ if o == sa::OCCUPANCY.offset => self.occupancy(),
            _ if o == sa::CMD.offset => self.sa_cmd,
            _ if o == sa::STATUS.offset => self.sa_status,
            _ if o == sa::SLOT.offset => self.st.slot,
            _ if o == sa::SPI.offset => st.spi,
            _ if o == sa::CONFIG.offset => st.config,
            _ if o == sa::SALT.offset => 0,
            _ if o == sa::SEQ_LO.offset => lo(st.seq),
            _ if o == sa::SEQ_HI.offset => hi(st.seq),
            _ if o == sa::WIN_LO.offset => lo(st.win),
            _ if o == sa::WIN_HI.offset => hi(st.win),
            _ if o == sa::PKTS_LO.offset => lo(st.pkts),
            _ if o == sa::PKTS_HI.offset => hi(st.pkts),
            _ if o == sa::BYTES_LO.offset => lo(st.bytes),
            _ if o == sa::BYTES_HI.offset => hi(st.bytes),
            _ if o == sa::AUTH_FAILS.offset => st.auth,
            _ if o == sa::REPLAYS.offset => st.repl,
            _ if o == sa::CMD_COUNT.offset => self.sa_cmd_count,
            _ if o == sa::ERR_COUNT.offset => self.sa_err_count,
            _ => UNMAPPED_PATTERN,
        }
    }

    /// Write at offset `o` of the SA block.
    pub(crate) fn sa_write(&mut self, o: u32, v: u32) {
        let st = &mut self.st.sa;
        if let Some(i) = in_array(sa::KEY, o) {
            st.key[i] = v;
            return;
        }
        match o {
            _ if o == sa::SLOT.offset => self.st.slot = v,
            _ if o == sa::SPI.offset => st.spi = v,
            _ if o == sa::CONFIG.offset => st.config = v & CFG_MASK,
            _ if o == sa::SALT.offset => st.salt = v,
            _ if o == sa::SEQ_LO.offset => set_lo(&mut st.seq, v),
            _ if o == sa::SEQ_HI.offset => set_hi(&mut st.seq, v),
            _ if o == sa::WIN_LO.offset => set_lo(&mut st.win, v),
            _ if o == sa::WIN_HI.offset => set_hi(&mut st.win, v),
            _ if o == sa::PKTS_LO.offset => set_lo(&mut st.pkts, v),
            _ if o == sa::PKTS_HI.offset => set_hi(&mut st.pkts, v),
            _ if o == sa::BYTES_LO.offset => set_lo(&mut st.bytes, v),
            _ if o == sa::BYTES_HI.offset => set_hi(&mut st.bytes, v),
            _ if o == sa::AUTH_FAILS.offset => st.auth = v,
            _ if o == sa::REPLAYS.offset => st.repl = v,
            _ if o == sa::CMD.offset => self.sa_command(v),
            _ => {}
        }
    }

    fn sa_command(&mut self, code: u32) {
        use sa::{cmd, err, status};
        self.sa_cmd = code;
        let slot = self.st.slot;
        let ok = slot < sa::SLOTS;
        let i = slot as usize;
        let mut valid_bit = 0;
        let e = match code {
            cmd::WRITE => {
                let icv = sa::config::ICV_BYTES.get(self.st.sa.config);
                let e = if !ok {
                    err::BAD_SLOT
                } else if !matches!(icv, 8 | 12 | 16) {
                    err::BAD_CONFIG
                } else {
                    self.slots[i] = Slot {
                        valid: true,
                        sa: self.st.sa,
                    };
                    err::OK
                };
                // Key material never lingers in staging.
                self.st.sa.wipe_key();
                e
            }
            cmd::INVALIDATE if ok => {
                self.slots[i].invalidate();
                err::OK
            }
            cmd::READ if ok => {
                let s = &self.slots[i];
                let st = &mut self.st.sa;
                st.spi = s.sa.spi;
                st.config = s.sa.config;
                st.set_state(&s.sa);
                valid_bit = u32::from(s.valid);
                err::OK
            }
            cmd::SET_STATE if ok => {
                let s = &mut self.slots[i];
                if s.valid {
                    s.sa.set_state(&self.st.sa);
                    err::OK
                } else {
                    err::NOT_VALID
                }
            }
            cmd::INVALIDATE | cmd::READ | cmd::SET_STATE => err::BAD_SLOT,
            cmd::FLUSH_ALL => {
                for s in &mut self.slots {
                    s.invalidate();
                }
                err::OK
            }
            _ => err::UNKNOWN_CMD,
        };
        self.sa_status = status::DONE.put(1) | status::VALID.put(valid_bit) | status::ERR.put(e);
        self.sa_cmd_count = self.sa_cmd_count.wrapping_add(1);
        if e != err::OK {
            self.sa_err_count = self.sa_err_count.wrapping_add(1);
        }
    }

    // ------------------------------------------------------------ ESP block

    /// Read at offset `o` of the ESP block.
    pub(crate) fn esp_read(&self, o: u32) -> u32 {
        if let Some(v) = header_read(o, (block_type::ESP, esp::MAJOR, esp::MINOR, port::BASE)) {
            return v;
        }
        if let Some(i) = in_array(esp::BUF, o) {
            let b = 4 * i;
            return u32::from_be_bytes([
                self.buf[b],
                self.buf[b + 1],
                self.buf[b + 2],
                self.buf[b + 3],
            ]);
        }
        match o {
            _ if o == esp::CAP_BUF_BYTES.offset => esp::BUF_BYTES,
            _ if o == esp::CMD.offset => self.eng.cmd,
            _ if o == esp::STATUS.offset => self.eng.status,
            _ if o == esp::SLOT.offset => self.eng.slot,
            _ if o == esp::LEN.offset => self.eng.len,
            _ if o == esp::NEXT_HDR.offset => u32::from(self.eng.nh),
            _ if o == esp::SEQ_LO.offset => lo(self.eng.seq),
            _ if o == esp::SEQ_HI.offset => hi(self.eng.seq),
            _ if o == esp::CMD_COUNT.offset => self.eng.cmd_count,
            _ if o == esp::ERR_COUNT.offset => self.eng.err_count,
            _ if o == esp::AUTH_FAILS.offset => self.eng.auth,
            _ if o == esp::REPLAYS.offset => self.eng.repl,
            _ => UNMAPPED_PATTERN,
        }
    }

    /// Write at offset `o` of the ESP block.
    pub(crate) fn esp_write(&mut self, o: u32, v: u32) {
        if let Some(i) = in_array(esp::BUF, o) {
            self.buf[4 * i..4 * i + 4].copy_from_slice(&v.to_be_bytes());
            return;
        }
        match o {
            _ if o == esp::SLOT.offset => self.eng.slot = v,
            _ if o == esp::LEN.offset => self.eng.len = v,
            _ if o == esp::NEXT_HDR.offset => self.eng.nh = v as u8,
            _ if o == esp::CMD.offset => self.esp_command(v),
            _ => {}
        }
    }

    fn esp_command(&mut self, code: u32) {
        use esp::{cmd, err, status};
        self.eng.cmd = code;
        let e = match code {
            cmd::ENCAP => self.encap().err().unwrap_or(err::OK),
            cmd::DECAP => self.decap().err().unwrap_or(err::OK),
            _ => err::UNKNOWN_CMD,
        };
        self.eng.status = status::DONE.put(1) | status::ERR.put(e);
        self.eng.cmd_count = self.eng.cmd_count.wrapping_add(1);
        if e != err::OK {
            self.eng.err_count = self.eng.err_count.wrapping_add(1);
        }
    }

    /// The slot for an ENCAP (`outbound`) or DECAP and its SA, or the error code.
    fn engine_sa(&self, outbound: bool) -> Result<(usize, SaFields), u32> {
        let i = self.eng.slot as usize;
        if self.eng.slot >= sa::SLOTS || !self.slots[i].valid {
            return Err(esp::err::BAD_SLOT);
        }
        let s = self.slots[i].sa;
        if (sa::config::OUTBOUND.get(s.config) == 1) != outbound {
            return Err(esp::err::WRONG_DIR);
        }
        Ok((i, s))
    }

    fn cipher(s: &SaFields) -> LessSafeKey {
        let mut key = [0u8; 32];
        for (i, w) in s.key.iter().enumerate() {
            key[4 * i..4 * i + 4].copy_from_slice(&w.to_be_bytes());
        }
        let (alg, n) = if sa::config::KEY256.get(s.config) == 1 {
            (&AES_256_GCM, 32)
        } else {
            (&AES_128_GCM, 16)
        };
        // A 16- or 32-byte key is always accepted.
        let k = UnboundKey::new(alg, &key[..n]).unwrap_or_else(|_| unreachable!("AES key length"));
        LessSafeKey::new(k)
    }

    fn nonce(salt: u32, iv: u64) -> Nonce {
        let mut n = [0u8; 12];
        n[..4].copy_from_slice(&salt.to_be_bytes());
        n[4..].copy_from_slice(&iv.to_be_bytes());
        Nonce::assume_unique_for_key(n)
    }

    fn aad(spi: u32, seq: u64, esn: bool) -> Vec<u8> {
        let mut a = spi.to_be_bytes().to_vec();
        if esn {
            a.extend_from_slice(&seq.to_be_bytes());
        } else {
            a.extend_from_slice(&lo(seq).to_be_bytes());
        }
        a
    }

    /// AES-GCM over `data` in place (CTR, so the same call encrypts and
    /// decrypts); returns the full tag over the ciphertext.
    fn gcm(
        key: &LessSafeKey,
        salt: u32,
        iv: u64,
        aad: &[u8],
        data: &mut [u8],
        decrypt: bool,
    ) -> [u8; 16] {
        let seal = |d: &mut [u8]| {
            let t = key
                .seal_in_place_separate_tag(Self::nonce(salt, iv), Aad::from(aad), d)
                .unwrap_or_else(|_| unreachable!("buffer-sized input is within GCM's limit"));
            let mut out = [0u8; 16];
            out.copy_from_slice(t.as_ref());
            out
        };
        if !decrypt {
            return seal(data);
        }
        // Decrypt: sealing the ciphertext yields the plaintext; sealing the
        // plaintext again yields the ciphertext's tag.
        let ct = data.to_vec();
        seal(data);
        let mut again = data.to_vec();
        let tag = seal(&mut again);
        debug_assert_eq!(again, ct);
        tag
    }

    /// [`Self::gcm`] with SA `s` over the `d` bytes at buffer byte 16: the nonce's IV `iv`,
    /// the AAD of sequence number `seq`.
    fn gcm_payload(
        &mut self,
        s: &SaFields,
        iv: u64,
        seq: u64,
        esn: bool,
        d: usize,
        decrypt: bool,
    ) -> [u8; 16] {
        let key = Self::cipher(s);
        let aad = Self::aad(s.spi, seq, esn);
        Self::gcm(&key, s.salt, iv, &aad, &mut self.buf[16..16 + d], decrypt)
    }

    fn encap(&mut self) -> Result<(), u32> {
        use esp::err;
        let (i, s) = self.engine_sa(true)?;
        let esn = sa::config::ESN.get(s.config) == 1;
        let icv = sa::config::ICV_BYTES.get(s.config) as usize;
        let exhausted = if esn {
            s.seq == u64::MAX
        } else {
            s.seq >= u64::from(u32::MAX)
        };
        if exhausted {
            return Err(err::SEQ_EXHAUSTED);
        }
        let p = u64::from(self.eng.len);
        let pad = (2u64.wrapping_sub(p)) & 3;
        let d = p + pad + 2;
        let d16 = d.div_ceil(16) * 16;
        if p > BUF as u64 || 16 + d16 > BUF as u64 || 16 + d + icv as u64 > BUF as u64 {
            return Err(err::TOO_LONG);
        }
        let (p, pad, d, d16) = (p as usize, pad as usize, d as usize, d16 as usize);
        let seq = s.seq + 1;
        for k in 0..pad {
            self.buf[16 + p + k] = (k + 1) as u8;
        }
        self.buf[16 + p + pad] = pad as u8;
        self.buf[16 + p + pad + 1] = self.eng.nh;
        self.buf[0..4].copy_from_slice(&s.spi.to_be_bytes());
        self.buf[4..8].copy_from_slice(&lo(seq).to_be_bytes());
        self.buf[8..16].copy_from_slice(&seq.to_be_bytes());
        let tag = self.gcm_payload(&s, seq, seq, esn, d, false);
        self.buf[16 + d..16 + d16].fill(0);
        self.buf[16 + d..16 + d + icv].copy_from_slice(&tag[..icv]);
        self.eng.len = (16 + d + icv) as u32;
        self.eng.seq = seq;
        let slot = &mut self.slots[i].sa;
        slot.seq = seq;
        slot.pkts = slot.pkts.wrapping_add(1);
        slot.bytes = slot.bytes.wrapping_add(p as u64);
        Ok(())
    }

    fn decap(&mut self) -> Result<(), u32> {
        use esp::err;
        let (i, s) = self.engine_sa(false)?;
        let esn = sa::config::ESN.get(s.config) == 1;
        let icv = sa::config::ICV_BYTES.get(s.config) as usize;
        let l = self.eng.len as usize;
        if l > BUF || l < 18 + icv {
            return Err(err::MALFORMED);
        }
        let word =
            |b: &[u8], at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        if word(&self.buf, 0) != s.spi {
            return Err(err::SPI_MISMATCH);
        }
        let d = l - 16 - icv;
        let d16 = d.div_ceil(16) * 16;
        let seq = infer_seq(s.seq, word(&self.buf, 4), esn);
        // From here on SEQ reports the packet's sequence number, errors included.
        self.eng.seq = seq;
        if is_replay(s.seq, s.win, seq) {
            self.slots[i].sa.repl = self.slots[i].sa.repl.wrapping_add(1);
            self.eng.repl = self.eng.repl.wrapping_add(1);
            return Err(err::REPLAY);
        }
        let mut icv_rx = [0u8; 16];
        icv_rx[..icv].copy_from_slice(&self.buf[16 + d..16 + d + icv]);
        let iv = u64::from_be_bytes(self.buf[8..16].try_into().unwrap_or([0; 8]));
        let tag = self.gcm_payload(&s, iv, seq, esn, d, true);
        self.buf[16 + d..16 + d16].fill(0);
        // Plain comparison is fine in a model; the RTL compares all bytes at once.
        if tag[..icv] != icv_rx[..icv] {
            self.buf[16..16 + d16].fill(0);
            self.slots[i].sa.auth = self.slots[i].sa.auth.wrapping_add(1);
            self.eng.auth = self.eng.auth.wrapping_add(1);
            return Err(err::AUTH);
        }
        let (top, win) = window_accept(s.seq, s.win, seq);
        self.slots[i].sa.seq = top;
        self.slots[i].sa.win = win;
        let nh = self.buf[16 + d - 1];
        let pad = usize::from(self.buf[16 + d - 2]);
        let pad_ok =
            pad + 2 <= d && (0..pad).all(|k| usize::from(self.buf[16 + d - 2 - pad + k]) == k + 1);
        if !pad_ok {
            self.buf[16..16 + d16].fill(0);
            return Err(err::MALFORMED);
        }
        let len = d - 2 - pad;
        self.eng.len = len as u32;
        self.eng.nh = nh;
        self.eng.seq = seq;
        let slot = &mut self.slots[i].sa;
        slot.pkts = slot.pkts.wrapping_add(1);
        slot.bytes = slot.bytes.wrapping_add(len as u64);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn esn_and_window_helpers() {
        assert_eq!(infer_seq(0x1_0000_0010, 0xFFFF_FFF0, true), 0xFFFF_FFF0);
        assert_eq!(infer_seq(0x1_0000_0100, 0x10, true), 0x2_0000_0010);
        assert!(is_replay(100, 1, 100));
        assert!(is_replay(100, 1, 36));
        assert!(!is_replay(100, 1, 37));
        assert!(is_replay(5, 0, 0));
        assert_eq!(window_accept(100, 1, 200), (200, 1));
        assert_eq!(window_accept(100, 1, 101), (101, 3));
        assert_eq!(window_accept(100, 1, 99), (100, 3));
    }

    #[test]
    fn keys_are_write_only_and_cleared_from_staging() {
        let mut m = CryptoModel::new();
        m.sa_write(sa::KEY.offset, 0xDEAD_BEEF);
        m.sa_write(sa::SALT.offset, 0x1234_5678);
        assert_eq!(m.sa_read(sa::KEY.offset), 0);
        assert_eq!(m.sa_read(sa::SALT.offset), 0);
        m.sa_write(
            sa::CONFIG.offset,
            sa::config::ICV_BYTES.put(16) | 0xFFFF_0000,
        );
        assert_eq!(m.sa_read(sa::CONFIG.offset), sa::config::ICV_BYTES.put(16));
        m.sa_write(sa::CMD.offset, sa::cmd::WRITE);
        assert_eq!(
            sa::status::ERR.get(m.sa_read(sa::STATUS.offset)),
            sa::err::OK
        );
        assert_eq!(m.st.sa.key, [0; 8]);
        assert_eq!(m.st.sa.salt, 0);
        assert_eq!(m.slots[0].sa.key[0], 0xDEAD_BEEF);
        m.sa_write(sa::CMD.offset, sa::cmd::INVALIDATE);
        assert_eq!(m.slots[0].sa.key, [0; 8]);
    }
}
