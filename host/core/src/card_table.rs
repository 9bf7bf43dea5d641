//! The node-specific table on the card (claims 21, 22), through `driver::Card<R>` over any
//! `hal::RegIo` backend (the reference-model card by default in tests).
//!
//! The CAM holds the key, the distribution identifier beside it (so losing an identifier is
//! one `FLUSH_DID` command) and a result word; the host keeps the full [`Entry`] (state,
//! counters, NAT, user) in a shadow indexed like the common table. 5-tuple and ICMP keys are
//! written in the core's canonical endpoint order (`lo` as source), which is the order the
//! host's lookup uses. TLS-session and HTTP-cookie keys have no CAM layout: inserting one is a
//! [`TableError::NoCamLayout`] error, which a [`super::node_table::TieredTable`] answers by
//! keeping the entry in host memory. The card's distribution identifiers are as wide as its
//! `CAP_DID_BITS` says (8 bits today), so this table needs an identifier count the card can
//! store. Every driver error of insert, remove and flush is a [`TableError::Device`] with the
//! driver's error as its source; the host copy is changed only after the card command worked.
//!
//! A card with an SA table and an ESP engine block also lends its ESP engine
//! ([`NodeSpecificTable::esp_engine`]): the table keeps the engine's state
//! ([`CardEspState`], slot allocation, never a key) and hands out the driver's borrowed view in
//! [`SaLookup::SlotOnly`] mode, so the engine never writes a CAM entry behind the shadow index.

use super::common::IndexedEntries;
use super::entry::{Action, ConnState, Entry, FlowKey, L4Proto};
use super::ids::{DistributionId, IdCount, Millis};
use super::node_table::{CardOutcome, PacketPath};
use super::node_table::{NodeSpecificTable, TableError, TableStats};
use driver::esp::{CardEspState, EspEngine, EspError, EspTarget, ForwardEsp, SaLookup};
use driver::port::{Dest, PortCounters, Reason};
use driver::RegIo;
use driver::{
    CamEntry, CamKey, Card, DidSet, DriverError, Flow, IpPrefix, ResultFlags, ResultWord,
};
use std::net::IpAddr;

/// A node-specific table on a card.
///
/// # Examples
///
/// The state core's entries in a card's CAM; one command flushes an identifier:
///
/// ```
/// use cluster_core::{
///     CardTable, ConnState, DistributionId, Endpoint, Entry, FlowKey, IdCount, L4Proto, NodeId,
///     NodeSpecificTable,
/// };
/// use driver::Card;
///
/// let count = IdCount::new(16)?;
/// let mut table = CardTable::new(Card::probe(sim_bridge::model::ModelCard::new())?, count)?;
/// let (key, _) = FlowKey::transport(
///     L4Proto::Tcp,
///     Endpoint::new("192.0.2.1".parse()?, 40_000),
///     Endpoint::new("198.51.100.80".parse()?, 443),
/// );
/// table.insert(Entry::new(key, DistributionId(4), ConnState::Established, NodeId(1)))?;
/// assert_eq!(table.card().len(), 1); // in the CAM
/// assert!(table.get(&key).is_some());
/// assert_eq!(table.flush_dist(DistributionId(4))?, 1);
/// assert!(table.card().is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct CardTable<R: RegIo> {
    hw: CardHw<R>,
    shadow: IndexedEntries,
    count: IdCount,
    stats: TableStats,
    errors: u64,
    /// The first driver error of a lookup, hit scan or `clear_all` not yet taken.
    failure: Option<DriverError>,
    /// Rules whose entries send every packet to the host (protocol helpers).
    host_rules: Vec<u16>,
    /// The card's per-reason counters when it last dropped a frame offered to it.
    drop_counts: [u32; driver::port::REASONS],
}

/// The card with its ESP engine state: what [`NodeSpecificTable::esp_engine`] lends.
struct CardHw<R: RegIo> {
    card: Card<R>,
    /// The card's ESP engine state, when the card has an SA table and an ESP engine.
    esp: Option<CardEspState>,
    /// The card left the bus during an ESP command (kept for
    /// [`NodeSpecificTable::take_device_error`], so a card that fails while it only seals and
    /// opens ESP packets is reopened and rebuilt too).
    esp_gone: Option<DriverError>,
}

impl<R: RegIo> CardHw<R> {
    /// Keeps a gone card's error of an ESP command.
    fn noted<V>(&mut self, r: Result<V, EspError>) -> Result<V, EspError> {
        if let Err(EspError::DeviceGone { offset }) = r {
            self.esp_gone
                .get_or_insert(DriverError::DeviceGone { offset });
        }
        r
    }
}

impl<R: RegIo> CardTable<R> {
    /// A table over a probed card.
    ///
    /// # Errors
    /// [`TableError::BadDist`] when the card's identifiers (`CAP_DID_BITS`) cannot hold
    /// `count` identifiers.
    /// A card with an SA table and an ESP engine block gets its SA slots flushed (keys wiped)
    /// and lends its engine through [`NodeSpecificTable::esp_engine`]; a card without them, or
    /// whose engine does not come up, has none (its SAs run in software).
    pub fn new(mut card: Card<R>, count: IdCount) -> Result<Self, TableError> {
        if !DistributionId(count.get() - 1).fits(card.info().cam.did_bits) {
            return Err(TableError::BadDist { dist: count.get() });
        }
        let esp = CardEspState::new(&mut card, SaLookup::SlotOnly).ok();
        let depth = card.depth() as usize;
        Ok(CardTable {
            hw: CardHw {
                card,
                esp,
                esp_gone: None,
            },
            // sized for the card: a takeover filling the card never grows the index
            shadow: IndexedEntries::with_capacity(count, depth),
            count,
            stats: TableStats::default(),
            errors: 0,
            failure: None,
            host_rules: Vec::new(),
            drop_counts: [0; driver::port::REASONS],
        })
    }

    /// The card's ESP engine state (slot allocation; never a key), when it has one.
    pub fn esp_state(&self) -> Option<&CardEspState> {
        self.hw.esp.as_ref()
    }

    /// The card.
    pub fn card(&self) -> &Card<R> {
        &self.hw.card
    }

    /// The card, mutably (aging scans, counters).
    pub fn card_mut(&mut self) -> &mut Card<R> {
        &mut self.hw.card
    }

    /// Device errors and card/host divergences seen where the trait cannot report them:
    /// data-path lookups, hit-bit scans and `clear_all`. The first device error itself is
    /// kept for [`NodeSpecificTable::take_device_error`].
    pub fn device_errors(&self) -> u64 {
        self.errors
    }

    /// Counts a driver error the trait cannot return and keeps the first one.
    fn failed(&mut self, e: DriverError) {
        self.errors += 1;
        self.failure.get_or_insert(e);
    }

    /// The entries the card reports idle since the previous scan (hit bits clear).
    ///
    /// # Errors
    /// [`TableError::Device`] when the aging scan fails.
    pub fn idle_keys(&mut self) -> Result<Vec<FlowKey>, TableError> {
        let scan = self.hw.card.age()?;
        let mut keys = Vec::new();
        for i in scan.idle {
            if let Ok(d) = self.hw.card.read(i) {
                if let Some(k) = key_of(&self.shadow, &d) {
                    keys.push(k);
                }
            }
        }
        Ok(keys)
    }
}

/// The CAM key of a core key.
///
/// # Errors
/// [`TableError::NoCamLayout`] for keys the card has no layout for (TLS session, HTTP cookie).
pub fn cam_key(key: &FlowKey) -> Result<CamKey, TableError> {
    let flow = match *key {
        FlowKey::Transport { proto, lo, hi } => {
            let (src, dst) = (IpPrefix::host(lo.addr), IpPrefix::host(hi.addr));
            let (src_port, dst_port) = (Some(lo.port), Some(hi.port));
            match proto {
                L4Proto::Tcp => Flow::Tcp {
                    src,
                    dst,
                    src_port,
                    dst_port,
                },
                L4Proto::Udp => Flow::Udp {
                    src,
                    dst,
                    src_port,
                    dst_port,
                },
            }
        }
        FlowKey::Icmp { lo, hi, ident } => Flow::Icmp {
            src: IpPrefix::host(lo),
            dst: IpPrefix::host(hi),
            id: Some(ident),
        },
        // The card matches an inbound ESP packet on (destination, SPI), as RFC 4301 looks an
        // SA up: the receiver picks SPIs unique on its address, so the source adds nothing to
        // the match, and the CAM's ESP layout has no source field. The source stays in the
        // host copy (the shadow), which `key_of` reads back.
        FlowKey::Esp { dst, spi, .. } => Flow::Esp {
            dst: IpPrefix::host(dst),
            spi: Some(spi),
        },
        // Either peer may be the packet's destination: any address of the peers' family.
        FlowKey::Isakmp {
            lo,
            initiator_cookie,
            message_id,
            ..
        } => Flow::Isakmp {
            dst: if lo.is_ipv6() {
                IpPrefix::any_v6()
            } else {
                IpPrefix::any_v4()
            },
            initiator_cookie: Some(initiator_cookie),
            message_id: Some(message_id),
        },
        FlowKey::TlsSession(_) => {
            return Err(TableError::NoCamLayout {
                kind: "TLS session",
            })
        }
        FlowKey::HttpCookie(_) => {
            return Err(TableError::NoCamLayout {
                kind: "HTTP cookie",
            })
        }
    };
    Ok(CamKey { zone: None, flow })
}

/// The core key of a CAM entry the card reported. 5-tuple and ICMP keys are whole in the CAM;
/// an ESP or ISAKMP CAM key lacks peer addresses (see [`cam_key`]), so it is the entry of the
/// host copy, under the CAM entry's identifier, whose CAM key it is.
fn key_of(shadow: &IndexedEntries, d: &driver::DumpEntry) -> Option<FlowKey> {
    use super::entry::Endpoint;
    let k = d.key?;
    // A full-length prefix prints as the bare address.
    let host = |p: &IpPrefix| p.to_string().parse::<IpAddr>().ok();
    Some(match k.flow {
        Flow::Tcp {
            src,
            dst,
            src_port,
            dst_port,
        } => FlowKey::Transport {
            proto: L4Proto::Tcp,
            lo: Endpoint::new(host(&src)?, src_port?),
            hi: Endpoint::new(host(&dst)?, dst_port?),
        },
        Flow::Udp {
            src,
            dst,
            src_port,
            dst_port,
        } => FlowKey::Transport {
            proto: L4Proto::Udp,
            lo: Endpoint::new(host(&src)?, src_port?),
            hi: Endpoint::new(host(&dst)?, dst_port?),
        },
        Flow::Icmp { src, dst, id } => FlowKey::Icmp {
            lo: host(&src)?,
            hi: host(&dst)?,
            ident: id?,
        },
        Flow::Esp { .. } | Flow::Isakmp { .. } => {
            return shadow
                .select(d.did)
                .map(|e| e.key)
                .find(|key| cam_key(key).is_ok_and(|c| c == k));
        }
    })
}

/// Whether the card forwards the packets of an entry in state `s` itself: once the connection
/// is established (TCP) or answered (UDP, ICMP), or for an IKE exchange. Until then every packet
/// goes to the host, which follows the handshake and rewrites the entry when it completes.
/// The card punts every TCP SYN, FIN and RST anyway, so a closing connection stays on the card:
/// the host sees both FINs, and the last ACK after them leaves the entry in `Closing` until the
/// short closing timeout clears it (the kernel's TIME_WAIT does the same).
fn offloaded(s: ConnState) -> bool {
    matches!(
        s,
        ConnState::Established
            | ConnState::FinWait
            | ConnState::Closing
            | ConnState::UdpReplied
            | ConnState::IcmpReplied
            | ConnState::Ike
            | ConnState::EspSa
    )
}

/// Whether an entry's card result changes between states `a` and `b` (the slow path then
/// rewrites the entry on the card).
pub fn card_result_changes(a: ConnState, b: ConnState) -> bool {
    offloaded(a) != offloaded(b)
}

fn result_of(e: &Entry, host_rules: &[u16]) -> ResultWord {
    let action = match e.action {
        Action::Allow if !offloaded(e.state) || host_rules.contains(&e.rule) => {
            driver::Action::ToHost
        }
        Action::Allow => driver::Action::Accept,
        Action::Tunnel => driver::Action::Encrypt,
        Action::Drop => driver::Action::Drop,
        Action::Reject => driver::Action::Reject,
    };
    let mut r = ResultWord::new(action);
    if e.state == ConnState::Established || e.state == ConnState::UdpReplied {
        r.flags = ResultFlags(ResultFlags::ESTABLISHED);
    }
    r
}

impl<R: RegIo> NodeSpecificTable for CardTable<R> {
    fn capacity(&self) -> Option<usize> {
        Some(self.hw.card.depth() as usize)
    }
    crate::node_table::reads_from_indexed_entries!(shadow);
    fn insert(&mut self, entry: Entry) -> Result<(), TableError> {
        if !self.count.contains(entry.dist) {
            return Err(TableError::BadDist { dist: entry.dist.0 });
        }
        let cam = CamEntry {
            key: cam_key(&entry.key)?,
            did: entry.dist,
            result: result_of(&entry, &self.host_rules),
        };
        self.stats.commands += 1;
        match self.hw.card.upsert(&cam) {
            Ok(_) => {}
            Err(DriverError::CamFull { depth }) => {
                self.stats.full += 1;
                return Err(TableError::Full {
                    capacity: depth as usize,
                });
            }
            Err(e) => return Err(e.into()),
        }
        crate::node_table::insert_indexed(&mut self.shadow, entry)
    }
    fn insert_batch(&mut self, entries: Vec<Entry>) -> Vec<Result<(), TableError>> {
        // New keys with a CAM layout in range go to the card in one batch (`install_batch`);
        // otherwise, or if the batch fails, each entry is inserted on its own.
        let cams: Option<Vec<CamEntry>> = entries
            .iter()
            .map(|e| {
                let fresh = self.count.contains(e.dist) && self.shadow.get(&e.key).is_none();
                let key = cam_key(&e.key).ok().filter(|_| fresh)?;
                Some(CamEntry {
                    key,
                    did: e.dist,
                    result: result_of(e, &self.host_rules),
                })
            })
            .collect();
        if let Some(cams) = cams.filter(|c| c.len() > 1) {
            if self.hw.card.install_batch(&cams).is_ok() {
                self.stats.commands += cams.len() as u64;
                return entries
                    .into_iter()
                    .map(|e| crate::node_table::insert_indexed(&mut self.shadow, e))
                    .collect();
            }
        }
        entries.into_iter().map(|e| self.insert(e)).collect()
    }
    fn lookup(&mut self, key: &FlowKey) -> Option<&mut Entry> {
        // The card answers the lookup (a SEARCH sets the entry's hit bit, which aging reads);
        // the host copy holds what sits beside the key and does not fit the CAM's result word.
        // A card that misses an entry the host copy has is a divergence: it is counted, and
        // the host copy still serves the packet, so nothing is lost.
        if let Ok(k) = cam_key(key) {
            match self.hw.card.search(&k) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    if self.shadow.get(key).is_some() {
                        self.errors += 1;
                    }
                }
                Err(e) => self.failed(e),
            }
        }
        self.shadow.get_mut(key)
    }
    fn remove(&mut self, key: &FlowKey) -> Result<Option<Entry>, TableError> {
        if self.shadow.get(key).is_none() {
            return Ok(None);
        }
        // Only keys with a CAM layout ever reach the host copy (insert refuses the others).
        let k = cam_key(key)?;
        self.stats.commands += 1;
        self.hw.card.remove(&k)?;
        Ok(self.shadow.remove(key))
    }
    fn flush_dist(&mut self, dist: DistributionId) -> Result<usize, TableError> {
        self.flush_dists(&[dist]).map(|(n, _)| n)
    }
    fn flush_dists(&mut self, dists: &[DistributionId]) -> Result<(usize, usize), TableError> {
        // Identifiers out of the table's range hold no entries (insert refuses them).
        let count = self.count;
        let set = DidSet::from_ids(dists.iter().copied().filter(|&d| count.contains(d)))?;
        if set.is_empty() {
            return Ok((0, 0));
        }
        self.stats.commands += 1;
        self.stats.flushes += 1;
        self.hw.card.flush_dids(&set)?;
        let n = set.iter().map(|d| self.shadow.remove_dist(d).len()).sum();
        Ok((n, 1))
    }
    fn clear_all(&mut self) {
        self.shadow.clear();
        if let Err(e) = self.hw.card.flush_all() {
            self.failed(e);
        }
    }
    fn stats(&self) -> TableStats {
        self.stats
    }
    fn take_device_error(&mut self) -> Option<TableError> {
        self.failure
            .take()
            .or_else(|| self.hw.esp_gone.take())
            .map(TableError::from)
    }
    fn slow_lookup(&mut self, key: &FlowKey) -> Option<&mut Entry> {
        // The card looked the frame up already (and punted it with what it found).
        self.shadow.get_mut(key)
    }
    fn packet_path(&mut self) -> Option<&mut dyn PacketPath> {
        // Frames reach this node's card through the host only on a simulated card (model,
        // RTL); a real card takes them from its own Ethernet ports, and the host serves what
        // reaches it by the host path.
        if self.hw.card.has_packet_port() && self.hw.card.regs_mut().wires().is_some() {
            Some(self)
        } else {
            None
        }
    }
    fn esp_engine(&mut self) -> Option<&mut dyn EspEngine> {
        if self.hw.esp.is_some() {
            Some(&mut self.hw)
        } else {
            None
        }
    }
    fn set_host_rules(&mut self, rules: &[u16]) {
        self.host_rules = rules.to_vec();
    }
    fn sync_hits(&mut self, now: Millis) {
        let scan = match self.hw.card.age() {
            Ok(scan) => scan,
            Err(e) => return self.failed(e),
        };
        for i in scan.active {
            let key = self
                .hw
                .card
                .read(i)
                .ok()
                .and_then(|d| key_of(&self.shadow, &d));
            if let Some(e) = key.and_then(|k| self.shadow.get_mut(&k)) {
                e.last_seen = now;
            }
        }
    }
}

impl<R: RegIo> CardTable<R> {
    /// Why the card dropped the frame it was just given: the reason whose counter moved
    /// since the last drop. `NOT_OWNED` (by far the most common on a shared segment) is read
    /// first, so it costs one register read; another reason costs one pass over the counters.
    fn drop_reason(&mut self) -> Result<Reason, TableError> {
        let not_owned = Reason::NotOwned.code();
        let mut p = self.hw.card.port()?;
        let n = p.reason_count(not_owned)?;
        let seen = &mut self.drop_counts;
        if n != seen[usize::from(not_owned)] {
            seen[usize::from(not_owned)] = n;
            return Ok(Reason::NotOwned);
        }
        let mut found = None;
        for code in 0..seen.len() as u8 {
            let c = p.reason_count(code)?;
            if c != seen[usize::from(code)] {
                seen[usize::from(code)] = c;
                // the lowest code that moved; punt reasons do not move on a drop
                found = found.or(Some(Reason::from_code(code)));
            }
        }
        Ok(found.unwrap_or(Reason::Other(0)))
    }
}

impl<R: RegIo> PacketPath for CardTable<R> {
    fn configure(&mut self, secret: &[u8; 16], count: IdCount) -> Result<(), TableError> {
        Ok(self
            .hw
            .card
            .port()?
            .set_distribution(secret, u32::from(count.get()))?)
    }
    fn set_owned(&mut self, owned: &DidSet) -> Result<(), TableError> {
        Ok(self.hw.card.port()?.set_owned(owned)?)
    }
    fn offer(&mut self, port: u8, frame: &[u8]) -> Result<CardOutcome, TableError> {
        let Some(w) = self.hw.card.regs_mut().wires() else {
            return Err(DriverError::Port {
                what: "this backend has no simulated wires: a real card takes frames from its \
                       Ethernet ports"
                    .into(),
            }
            .into());
        };
        w.wire_rx(port, frame).map_err(DriverError::from)?;
        if let Some((out, sent)) = w.wire_tx() {
            return Ok(CardOutcome::Forwarded(out, sent));
        }
        let mut p = self.hw.card.port()?;
        if let Some(punted) = p.receive()? {
            return Ok(CardOutcome::Punted(punted));
        }
        Ok(CardOutcome::Dropped(self.drop_reason()?))
    }
    fn send_out(&mut self, port: u8, frame: &[u8]) -> Result<Option<(u8, Vec<u8>)>, TableError> {
        self.hw.card.port()?.send(frame, Dest::Out(port))?;
        // The frame left the card: on a simulated card, take it off the wire for the caller.
        Ok(self.hw.card.regs_mut().wires().and_then(|w| w.wire_tx()))
    }
    fn port_counters(&mut self) -> Result<PortCounters, TableError> {
        Ok(self.hw.card.port()?.counters()?)
    }
    fn did_counters(&mut self, d: DistributionId) -> Result<(u32, u64), TableError> {
        Ok(self.hw.card.port()?.did_counters(d)?)
    }
}

const NO_ENGINE: EspError = EspError::Unsupported {
    what: "this card has no ESP engine",
};

/// The card's ESP engine through the driver's borrowed view (no CAM commands).
impl<R: RegIo> ForwardEsp for CardHw<R> {
    fn forwarded_capacity(&self) -> u32 {
        self.esp.as_ref().map_or(0, CardEspState::capacity)
    }
    fn forward<T>(
        &mut self,
        _to: EspTarget<'_>,
        call: impl FnOnce(&mut dyn EspEngine) -> Result<T, EspError>,
    ) -> Result<T, EspError> {
        let st = self.esp.as_mut().ok_or(NO_ENGINE)?;
        let r = call(&mut st.view(&mut self.card));
        self.noted(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Endpoint;
    use crate::ids::NodeId;
    use crate::node_table::TieredTable;
    use driver::esp::{Direction, EspRequest, SaConfig, Spi};
    use hal::fault::{Fault, FaultInjector};
    use sim_bridge::model::ModelCard;
    use std::net::Ipv4Addr;

    /// The default node-specific table: the reference-model card (`depth` CAM entries) through
    /// the driver, with host memory behind it for overflow.
    ///
    /// # Errors
    /// The model's error if the model card does not come up, [`TableError::Device`] if the
    /// probe fails, [`TableError::BadDist`] when `count` exceeds 256.
    fn model_card_table(
        count: IdCount,
        depth: u32,
    ) -> Result<TieredTable<CardTable<ModelCard>>, Box<dyn std::error::Error>> {
        let model = ModelCard::with_depth(depth)?;
        let card = Card::probe(model).map_err(TableError::from)?;
        Ok(TieredTable::new(CardTable::new(card, count)?, count))
    }

    fn entry(i: u32, dist: u16) -> Entry {
        let (k, _) = FlowKey::transport(
            L4Proto::Tcp,
            Endpoint::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)), 1000),
            Endpoint::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 443),
        );
        Entry::new(k, DistributionId(dist), ConnState::Established, NodeId(1))
    }

    #[test]
    fn card_table_on_the_model_card() {
        let c = IdCount::default();
        let model = ModelCard::with_depth(64).expect("depth");
        let card = Card::probe(model).expect("probe");
        let mut t = CardTable::new(card, c).expect("count");
        for i in 0..40 {
            t.insert(entry(i, (i % 4) as u16)).expect("insert");
        }
        assert_eq!(t.len(), 40);
        assert_eq!(t.card().len(), 40);
        let k = entry(5, 1).key;
        let hit = t
            .card_mut()
            .search(&cam_key(&k).expect("cam key"))
            .expect("search");
        assert!(hit.is_some(), "the card finds the canonical key");
        assert_eq!(t.flush_dist(DistributionId(1)).expect("flush"), 10);
        assert_eq!(t.card().len(), 30, "one FLUSH_DID removed them on the card");
        assert!(t.remove(&entry(0, 0).key).expect("remove").is_some());
        assert_eq!(t.card().len(), 29);
        assert_eq!(t.device_errors(), 0);
        // A data-path hit on the card refreshes the entry's idle clock.
        let k2 = entry(6, 2).key;
        t.card_mut()
            .search(&cam_key(&k2).expect("cam key"))
            .expect("search");
        t.sync_hits(Millis(500));
        assert_eq!(t.get(&k2).map(|e| e.last_seen), Some(Millis(500)));
        assert_eq!(
            t.get(&entry(7, 3).key).map(|e| e.last_seen),
            Some(Millis(0))
        );
        // Round trip of the key through the CAM layout.
        let d = t.card_mut().dump(None).expect("dump");
        for x in d {
            let fk = key_of(&t.shadow, &x).expect("decodes");
            assert!(t.get(&fk).is_some());
        }
    }

    #[test]
    fn ipsec_keys_read_back_from_the_card_with_their_peers() {
        let c = IdCount::new(16).expect("count");
        let mut t = CardTable::new(
            Card::probe(ModelCard::with_depth(16).expect("depth")).expect("probe"),
            c,
        )
        .expect("count");
        let peer = |x: u8| IpAddr::from([192, 0, 2, x]);
        let v6 = |x: u16| IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, x]);
        let keys = [
            FlowKey::Esp {
                src: peer(9),
                dst: peer(1),
                spi: 0x1000,
            },
            FlowKey::Esp {
                src: peer(1),
                dst: peer(9),
                spi: 0x2000,
            },
            FlowKey::isakmp(peer(9), peer(1), 0xabc, 0).0,
            FlowKey::isakmp(v6(9), v6(1), 0xabc, 0).0,
        ];
        for (i, k) in keys.iter().enumerate() {
            let state = if i < 2 {
                ConnState::EspSa
            } else {
                ConnState::Ike
            };
            let e = Entry::new(*k, DistributionId(i as u16), state, NodeId(1));
            t.insert(e).expect("insert");
        }
        let dump = t.card_mut().dump(None).expect("dump");
        assert_eq!(dump.len(), keys.len());
        let mut back: Vec<FlowKey> = dump
            .iter()
            .map(|x| key_of(&t.shadow, x).expect("the host copy names it"))
            .collect();
        back.sort();
        let mut want = keys.to_vec();
        want.sort();
        assert_eq!(back, want, "every CAM entry reads back as its whole key");
        // The IPv6 exchange's CAM key matches IPv6 packets.
        let k6 = cam_key(&keys[3]).expect("cam key");
        assert!(matches!(k6.flow, Flow::Isakmp { dst, .. } if dst.addr().is_ipv6()));
        assert!(t
            .card_mut()
            .search(&CamKey {
                zone: None,
                flow: Flow::Esp {
                    dst: IpPrefix::host(peer(9)),
                    spi: Some(0x2000),
                },
            })
            .expect("search")
            .is_some());
    }

    #[test]
    fn default_table_comes_up() {
        let t = model_card_table(IdCount::default(), 128).expect("model card");
        assert_eq!(t.card().capacity(), Some(128));
        assert!(model_card_table(IdCount::default(), 0).is_err());
        // 12-bit identifiers: the host's largest count fits
        let t = model_card_table(IdCount::new(4096).expect("count"), 8).expect("4096 ids");
        assert_eq!(t.card().capacity(), Some(8));
    }

    #[test]
    fn a_batch_goes_to_the_card_in_one_batch_and_what_does_not_fit_overflows() {
        use hal::regs::cam;
        let c = IdCount::default();
        let card = Card::probe(ModelCard::with_depth(16).expect("depth")).expect("probe");
        let mut t = TieredTable::new(CardTable::new(card, c).expect("count"), c);
        let r = t.insert_batch((0..10).map(|i| entry(i, 3)).collect());
        assert!(r.iter().all(Result::is_ok), "{r:?}");
        let done = t
            .card_mut()
            .card_mut()
            .regs_mut()
            .read32(hal::BarOffset(cam::BASE + cam::BATCH_DONE.offset));
        assert_eq!(done.expect("read"), 10, "ten WRITE_P commands");
        t.card_mut()
            .card_mut()
            .verify()
            .expect("card and shadow agree");
        // Ten more do not fit the card whole: one by one, six on the card, four overflow.
        let r = t.insert_batch((10..20).map(|i| entry(i, 4)).collect());
        assert!(r.iter().all(Result::is_ok), "{r:?}");
        assert_eq!((t.card().len(), t.overflow().len()), (16, 4));
        assert_eq!(t.dist_len(DistributionId(4)), 10);
    }

    #[test]
    fn full_card_spills_to_software() {
        let c = IdCount::default();
        let card = Card::probe(ModelCard::with_depth(16).expect("depth")).expect("probe");
        let mut t = TieredTable::new(CardTable::new(card, c).expect("count"), c);
        for i in 0..50 {
            t.insert(entry(i, (i % 8) as u16)).expect("nothing lost");
        }
        assert_eq!(t.card().len(), 16);
        assert_eq!(t.overflow().len(), 34);
        assert_eq!(t.stats().overflowed, 34);
        assert_eq!(t.flush_dist(DistributionId(3)).expect("flush"), 6);
        assert_eq!(t.len(), 44);
        // Several identifiers in one FLUSH_DID command.
        let (n, cmds) = t
            .flush_dists(&[DistributionId(0), DistributionId(1), DistributionId(2)])
            .expect("flush");
        assert_eq!((n, cmds), (20, 1));
        assert_eq!(t.len(), 24);
        // A card with 8-bit identifiers cannot hold 512 of them.
        let mut narrow = FaultInjector::new(ModelCard::new());
        narrow.inject(Fault::ForceBits {
            offset: hal::BarOffset(hal::regs::cam::BASE + hal::regs::cam::CAP_DID_BITS.offset),
            mask: u32::MAX,
            value: 8,
        });
        let card = Card::probe(narrow).expect("probe");
        assert!(CardTable::new(card, IdCount::new(512).expect("count")).is_err());
    }

    type Faulty = FaultInjector<ModelCard>;

    /// A tiered table over a card whose registers can be made to fail.
    fn faulty_table(depth: u32) -> TieredTable<CardTable<Faulty>> {
        let c = IdCount::new(16).expect("count");
        let regs = FaultInjector::new(ModelCard::with_depth(depth).expect("depth"));
        let card = Card::probe(regs).expect("probe");
        TieredTable::new(CardTable::new(card, c).expect("count"), c)
    }

    /// The card leaves the bus: every later register read returns all ones.
    fn pull_card(t: &mut TieredTable<CardTable<Faulty>>) {
        let regs = t.card_mut().card_mut().regs_mut();
        let after_reads = regs.reads();
        regs.inject(Fault::AllOnes { after_reads });
    }

    fn assert_gone<V: std::fmt::Debug>(r: Result<V, TableError>) {
        match r {
            Err(e) => {
                assert!(e.is_device_gone(), "{e:?}");
                // The driver's error is kept as the source, not flattened into text.
                let src = std::error::Error::source(&e).expect("source");
                assert!(src.downcast_ref::<DriverError>().is_some());
            }
            Ok(v) => panic!("a gone card answered {v:?}"),
        }
    }

    #[test]
    fn a_card_that_goes_away_is_an_error_not_an_overflow() {
        let mut t = faulty_table(64);
        for i in 0..20 {
            t.insert(entry(i, (i % 4) as u16)).expect("insert");
        }
        pull_card(&mut t);
        assert_gone(t.insert(entry(100, 1)));
        assert_eq!(t.overflow().len(), 0, "nothing is parked in host memory");
        assert_eq!(t.stats().overflowed, 0);
        assert_gone(t.remove(&entry(3, 3).key));
        assert_gone(t.flush_dist(DistributionId(1)));
        assert_gone(t.flush_dists(&[DistributionId(0), DistributionId(2)]));
        // The host copy is changed only by card commands that worked.
        assert_eq!(t.len(), 20);
        assert!(t.get(&entry(3, 3).key).is_some());
        // A data-path lookup cannot return the error: the table keeps it for the owner.
        assert!(t.take_device_error().is_none());
        assert!(
            t.lookup(&entry(4, 0).key).is_some(),
            "the host copy still serves"
        );
        assert!(t.take_device_error().is_some_and(|e| e.is_device_gone()));
        assert!(t.take_device_error().is_none(), "taken once");
    }

    #[test]
    fn the_card_lends_its_esp_engine_without_cam_entries_and_reports_it_gone() {
        use driver::esp::SaKey;
        let mut t = faulty_table(64);
        let e = t.esp_engine().expect("the model card has an ESP engine");
        assert_eq!(e.capacity(), 256);
        let key = SaKey::new(&[9; 32], [1, 2, 3, 4]).expect("key");
        let mut sa = SaConfig::gcm(Spi(0x4242), Direction::Inbound, key.clone());
        sa.dst = Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)));
        e.install_sa(&sa).expect("inbound SA");
        let out = SaConfig::gcm(Spi(0x4243), Direction::Outbound, key);
        e.install_sa(&out).expect("outbound SA");
        assert!(t.card().card().is_empty(), "no CAM entry behind the shadow");
        assert_eq!(t.len(), 0);
        pull_card(&mut t);
        let e = t.esp_engine().expect("engine");
        let r = e.process(EspRequest::Encapsulate {
            spi: Spi(0x4243),
            next_header: 4,
            payload: b"x",
        });
        assert!(matches!(r, Err(EspError::DeviceGone { .. })), "{r:?}");
        let err = t.take_device_error().expect("the gone card is reported");
        assert!(err.is_device_gone(), "{err}");
        assert!(t.take_device_error().is_none(), "taken once");
    }

    #[test]
    fn host_memory_lends_no_esp_engine() {
        let c = IdCount::new(16).expect("count");
        assert!(crate::node_table::SoftwareTable::new(c)
            .esp_engine()
            .is_none());
    }

    #[test]
    fn a_full_card_still_overflows_and_a_gone_one_stops_promotion() {
        let mut t = faulty_table(4);
        for i in 0..8 {
            t.insert(entry(i, (i % 4) as u16)).expect("nothing lost");
        }
        assert_eq!(t.overflow().len(), 4);
        for _ in 0..10 {
            t.lookup(&entry(7, 3).key).expect("present").packets += 1;
        }
        pull_card(&mut t);
        assert_gone(t.promote_hot(1));
        assert_eq!(t.len(), 8, "promotion lost nothing");
    }

    #[test]
    fn key_kinds_without_a_cam_layout_have_their_own_error() {
        let c = IdCount::new(16).expect("count");
        let card = Card::probe(ModelCard::with_depth(8).expect("depth")).expect("probe");
        let mut t = CardTable::new(card, c).expect("count");
        let e = Entry::new(
            FlowKey::TlsSession(crate::entry::SessionDigest([7; 16])),
            DistributionId(1),
            ConnState::Established,
            NodeId(1),
        );
        assert!(matches!(
            t.insert(e.clone()),
            Err(TableError::NoCamLayout {
                kind: "TLS session"
            })
        ));
        let mut tiered = TieredTable::new(t, c);
        tiered.insert(e).expect("host memory holds it");
        assert_eq!(tiered.overflow().len(), 1);
    }

    #[test]
    fn the_node_reports_a_card_that_went_away() {
        use crate::alloc_policy::even_split;
        use crate::node::{Node, NodeConfig, Verdict};
        use crate::packet::{build, TcpFlags};
        use crate::ClusterSecret;

        let mut cfg = NodeConfig::new(NodeId(1), ClusterSecret::new([9; 16]));
        cfg.count = IdCount::new(16).expect("count");
        let mut node = Node::new(cfg, faulty_table(64));
        let all = even_split(IdCount::new(16).expect("count"), &[NodeId(1)]);
        node.apply_allocation(Millis(0), &all).expect("allocation");
        let syn = TcpFlags::SYN;
        let ip = |x| IpAddr::V4(Ipv4Addr::new(10, 0, 0, x));
        let pkt = |port| build::tcp(ip(1), port, ip(2), 80, syn, b"").expect("packet");
        for port in 1000..1010 {
            assert!(matches!(
                node.handle_packet(Millis(1), &pkt(port)),
                Verdict::Accept { created: true, .. }
            ));
        }
        assert!(node.take_card_error().is_none());
        pull_card(node.node_table_mut());
        // A new connection still gets state: the common table takes it, the failure is
        // reported, and nothing goes to the overflow.
        assert!(matches!(
            node.handle_packet(Millis(2), &pkt(2000)),
            Verdict::Accept { created: true, .. }
        ));
        let e = node.take_card_error().expect("reported");
        assert!(e.is_device_gone(), "{e:?}");
        assert!(node.take_card_error().is_none(), "taken once");
        assert_eq!(node.node_table().overflow().len(), 0);
        assert_eq!(node.common().len(), 11, "the common table holds everything");
        // Reallocation away: the flush fails and is reported too.
        let mut none = even_split(IdCount::new(16).expect("count"), &[NodeId(2)]);
        none.epoch = crate::ids::Epoch(all.epoch.0 + 1);
        node.apply_allocation(Millis(3), &none).expect("allocation");
        assert!(node.take_card_error().is_some_and(|e| e.is_device()));
        assert_eq!(node.common().len(), 11);
    }
}
