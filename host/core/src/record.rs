//! Provisional replication records (replaced by the checked views of the records work).

use crate::events::{DecodeError, Message};
use crate::ids::Epoch;
use zeroize::Zeroizing;

/// A record on the reliable replication stream.
pub enum Record {
    /// `E`: a state-core message.
    Event(Message),
    /// `F`: final state through an epoch.
    Final(Epoch),
    /// `Q`: resync request.
    ResyncRequest,
    /// `D`: resync done.
    ResyncDone,
    /// `K`: SA key material.
    SaKey {
        /// SPI.
        spi: u32,
        /// Key.
        key: Zeroizing<Vec<u8>>,
    },
}

/// Why bytes are not a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Malformed.
    #[error("malformed record")]
    Malformed,
    /// Bad event.
    #[error("event: {0}")]
    Event(#[from] DecodeError),
}

impl Record {
    /// Parses.
    ///
    /// # Errors
    /// Malformed bytes.
    pub fn parse(rec: &[u8]) -> Result<Record, RecordError> {
        match rec.first() {
            Some(b'E') => Ok(Record::Event(Message::decode(&rec[1..])?)),
            Some(b'F') if rec.len() == 9 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&rec[1..9]);
                Ok(Record::Final(Epoch(u64::from_be_bytes(b))))
            }
            Some(b'Q') if rec.len() == 1 => Ok(Record::ResyncRequest),
            Some(b'D') if rec.len() == 1 => Ok(Record::ResyncDone),
            Some(b'K') if rec.len() >= 6 && rec.len() == 6 + usize::from(rec[5]) => {
                Ok(Record::SaKey {
                    spi: u32::from_be_bytes([rec[1], rec[2], rec[3], rec[4]]),
                    key: Zeroizing::new(rec[6..].to_vec()),
                })
            }
            _ => Err(RecordError::Malformed),
        }
    }
    /// Emits.
    pub fn emit(&self, out: &mut Vec<u8>) {
        match self {
            Record::Event(m) => {
                out.push(b'E');
                m.encode_into(out);
            }
            Record::Final(e) => {
                out.push(b'F');
                out.extend_from_slice(&e.0.to_be_bytes());
            }
            Record::ResyncRequest => out.push(b'Q'),
            Record::ResyncDone => out.push(b'D'),
            Record::SaKey { spi, key } => {
                out.push(b'K');
                out.extend_from_slice(&spi.to_be_bytes());
                let n = key.len().min(255);
                out.push(n as u8);
                out.extend_from_slice(&key[..n]);
            }
        }
    }
    /// The wire bytes.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut v = Zeroizing::new(Vec::new());
        self.emit(&mut v);
        v
    }
}

/// A heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// Ready.
    pub ready: bool,
    /// Witness.
    pub witness: bool,
    /// Fenced.
    pub fenced: bool,
    /// Applied epoch.
    pub applied: Epoch,
}

impl Heartbeat {
    /// Bytes.
    pub fn to_bytes(&self) -> [u8; 13] {
        let mut hb = [0u8; 13];
        hb[0] = b'H';
        hb[1] = u8::from(self.ready);
        hb[2] = u8::from(self.witness);
        hb[3] = u8::from(self.fenced);
        hb[4..12].copy_from_slice(&self.applied.0.to_be_bytes());
        hb
    }
}

/// A datagram.
pub enum Datagram<'a> {
    /// `H`.
    Heartbeat(Heartbeat),
    /// `R`.
    Raft(&'a [u8]),
}

impl<'a> Datagram<'a> {
    /// Parses.
    ///
    /// # Errors
    /// Malformed bytes.
    pub fn parse(d: &'a [u8]) -> Result<Datagram<'a>, RecordError> {
        match d.first() {
            Some(b'H') if d.len() == 13 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&d[4..12]);
                Ok(Datagram::Heartbeat(Heartbeat {
                    ready: d[1] != 0,
                    witness: d[2] != 0,
                    fenced: d[3] != 0,
                    applied: Epoch(u64::from_be_bytes(b)),
                }))
            }
            Some(b'R') => Ok(Datagram::Raft(&d[1..])),
            _ => Err(RecordError::Malformed),
        }
    }
    /// Emits.
    pub fn emit(&self, out: &mut Vec<u8>) {
        match self {
            Datagram::Heartbeat(h) => out.extend_from_slice(&h.to_bytes()),
            Datagram::Raft(b) => {
                out.push(b'R');
                out.extend_from_slice(b);
            }
        }
    }
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Record::SaKey { spi, key } => write!(
                f,
                "SaKey {{ spi: {spi:#x}, key: <{} bytes redacted> }}",
                key.len()
            ),
            Record::Event(m) => write!(f, "Event({m:?})"),
            Record::Final(e) => write!(f, "Final({e:?})"),
            Record::ResyncRequest => f.write_str("ResyncRequest"),
            Record::ResyncDone => f.write_str("ResyncDone"),
        }
    }
}
