//! The software ESP path on `ring`: used when there is no card or no free slot.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::codec::{strip_trailer, EspCipher, EspHeader, OpenError, SealHeader};
use super::replay::infer_esn;
use super::sa::{Direction, SaConfig, SaState, Spi};
use super::{new_sa_key, EspEngine, EspError, EspOutcome, EspRequest, SaSlot};

/// Multiply-shift hasher for the (direction, SPI) index. SipHash's
/// flooding resistance is not needed: only SAs we install are in the table
/// (inbound SPIs are chosen locally), a lookup of a foreign SPI only probes.
#[derive(Default)]
struct SpiHasher(u64);

impl Hasher for SpiHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, v: u32) {
        self.0 = (self.0.rotate_left(32) ^ u64::from(v)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_u8(&mut self, v: u8) {
        self.0 = (self.0 ^ u64::from(v)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_isize(&mut self, v: isize) {
        self.0 = (self.0 ^ v as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type SpiIndex = HashMap<(Direction, Spi), usize, BuildHasherDefault<SpiHasher>>;

struct SoftSa {
    config: SaConfig,
    cipher: EspCipher,
    state: SaState,
}

impl SoftSa {
    /// Counts a packet of `bytes` payload bytes that the SA in slot `i` sealed
    /// or opened, and its outcome.
    fn processed(
        &mut self,
        bytes: usize,
        spi: Spi,
        seq: u64,
        next_header: u8,
        i: usize,
    ) -> EspOutcome {
        self.state.counters.packets += 1;
        self.state.counters.bytes += bytes as u64;
        EspOutcome {
            spi,
            seq,
            next_header,
            slot: SoftwareEsp::slot_of(i),
        }
    }
}

/// AES-GCM ESP in host software, behind [`EspEngine`].
///
/// Holds up to `capacity` SAs. Key copies live in [`super::SaKey`]s (zeroized
/// on drop) and in `ring`'s expanded keys.
pub struct SoftwareEsp {
    slots: Vec<Option<SoftSa>>,
    index: SpiIndex,
    free: Vec<usize>,
}

impl std::fmt::Debug for SoftwareEsp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftwareEsp")
            .field("capacity", &self.slots.len())
            .field("installed", &self.index.len())
            .finish()
    }
}

impl Default for SoftwareEsp {
    fn default() -> Self {
        Self::new(4096)
    }
}

impl SoftwareEsp {
    /// An empty engine holding at most `capacity` SAs (at most 65536: slots
    /// are 16-bit, as on the card).
    #[must_use]
    pub fn new(capacity: u32) -> Self {
        let n = capacity.min(1 << 16) as usize;
        SoftwareEsp {
            slots: (0..n).map(|_| None).collect(),
            index: SpiIndex::default(),
            free: (0..n).rev().collect(),
        }
    }

    fn find(&mut self, direction: Direction, spi: Spi) -> Result<(usize, &mut SoftSa), EspError> {
        let i = *self
            .index
            .get(&(direction, spi))
            .ok_or(EspError::unknown_spi(direction, spi))?;
        match self.slots.get_mut(i).and_then(Option::as_mut) {
            Some(sa) => Ok((i, sa)),
            None => Err(EspError::unknown_spi(direction, spi)),
        }
    }

    fn slot_of(i: usize) -> SaSlot {
        // i < capacity <= 65536
        SaSlot(u16::try_from(i).unwrap_or(u16::MAX))
    }
}

impl EspEngine for SoftwareEsp {
    fn capacity(&self) -> u32 {
        u32::try_from(self.slots.len()).unwrap_or(u32::MAX)
    }

    fn install_sa(&mut self, sa: &SaConfig) -> Result<SaSlot, EspError> {
        let k = new_sa_key(&self.index, sa)?;
        let cipher = EspCipher::new(&sa.key, sa.cipher, sa.icv)?;
        let i = self.free.pop().ok_or(EspError::NoFreeSlot {
            capacity: self.capacity(),
        })?;
        self.slots[i] = Some(SoftSa {
            config: sa.clone(),
            cipher,
            state: SaState::default(),
        });
        self.index.insert(k, i);
        Ok(Self::slot_of(i))
    }

    fn remove_sa(&mut self, direction: Direction, spi: Spi) -> Result<(), EspError> {
        let i = self
            .index
            .remove(&(direction, spi))
            .ok_or(EspError::unknown_spi(direction, spi))?;
        // Dropping the SoftSa zeroizes its SaKey.
        self.slots[i] = None;
        self.free.push(i);
        Ok(())
    }

    fn sa_state(&mut self, direction: Direction, spi: Spi) -> Result<SaState, EspError> {
        Ok(self.find(direction, spi)?.1.state)
    }

    fn set_sa_state(
        &mut self,
        direction: Direction,
        spi: Spi,
        state: &SaState,
    ) -> Result<(), EspError> {
        self.find(direction, spi)?.1.state = *state;
        Ok(())
    }

    fn process_into(
        &mut self,
        req: EspRequest<'_>,
        out: &mut Vec<u8>,
    ) -> Result<EspOutcome, EspError> {
        out.clear();
        match req {
            EspRequest::Encapsulate {
                spi,
                next_header,
                payload,
            } => {
                let (i, sa) = self.find(Direction::Outbound, spi)?;
                let limit = if sa.config.esn {
                    u64::MAX
                } else {
                    u64::from(u32::MAX)
                };
                if sa.state.seq >= limit {
                    return Err(EspError::SeqExhausted { spi: spi.0 });
                }
                let seq = sa.state.seq + 1;
                let h = SealHeader {
                    spi,
                    seq,
                    esn: sa.config.esn,
                    iv: seq.to_be_bytes(),
                };
                sa.cipher.seal(&h, next_header, payload, out)?;
                sa.state.seq = seq;
                Ok(sa.processed(payload.len(), spi, seq, next_header, i))
            }
            EspRequest::Decapsulate { packet } => {
                let hdr = EspHeader::new_checked(packet)?;
                let (spi, seq_lo) = (hdr.spi(), hdr.seq_lo());
                let (i, sa) = self.find(Direction::Inbound, spi)?;
                let seq = infer_esn(sa.state.window.top, seq_lo, sa.config.esn);
                // Cheap pre-check; the window changes only after the ICV verifies.
                if !sa.state.window.check(seq) {
                    sa.state.counters.replay_drops += 1;
                    return Err(EspError::Replay { spi: spi.0, seq });
                }
                match sa.cipher.open_auth(seq, sa.config.esn, packet, out) {
                    Ok(()) => {}
                    Err(OpenError::Auth) => {
                        out.clear();
                        sa.state.counters.auth_failures += 1;
                        return Err(EspError::AuthFailed { spi: spi.0, seq });
                    }
                    Err(OpenError::Malformed(reason)) => {
                        out.clear();
                        return Err(EspError::Malformed { reason });
                    }
                }
                // Authenticated: record the sequence number (cannot fail, the
                // window did not change since the check), then the trailer.
                sa.state.window.accept(seq);
                match strip_trailer(out) {
                    Ok(next_header) => Ok(sa.processed(out.len(), spi, seq, next_header, i)),
                    Err(OpenError::Malformed(reason)) => {
                        out.clear();
                        Err(EspError::Malformed { reason })
                    }
                    Err(OpenError::Auth) => {
                        out.clear();
                        Err(EspError::AuthFailed { spi: spi.0, seq })
                    }
                }
            }
        }
    }
}
