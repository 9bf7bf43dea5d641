//! The node's data path on real interfaces (`outside = IF`, `inside = IF`): the simulated
//! card's two Ethernet ports bridged to two interfaces of the node's network namespace
//! (`sim_bridge::bridge::PortBridge`). Every frame read on an interface goes through the member
//! (`Member::on_frame`: the card forwards what its entries allow, the slow path the rest), and
//! the frames that leave are written to the interface of their port. The cluster is then a
//! transparent (bump-in-the-wire) firewall: every node sees every frame of the shared
//! segments, and each card passes only its node's identifiers.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::time::Duration;

use hal::{HalError, Wires};
use serde_json::{json, Value};
use sim_bridge::bridge::{BridgeError, PortBridge};
use tokio::io::unix::AsyncFd;

use crate::core::member::{Member, PacketOutcome, Time};
use crate::daemon::card::CardTable;
use crate::daemon::wireproto::Code;

/// The bridge and its readiness registrations.
pub struct Ports {
    /// Duplicates of the bridge's sockets, owned by their registrations.
    ready: [AsyncFd<OwnedFd>; 2],
    bridge: PortBridge,
    /// Frames dropped because their identifier was in transition (holding full, or off).
    pub held_back: u64,
}

impl Ports {
    /// Opens raw sockets on `outside` and `inside` for a card taking `frame_bytes` frames.
    ///
    /// # Errors
    /// What the bridge or the event loop says, naming the interface and the fix.
    pub fn open(outside: &str, inside: &str, frame_bytes: usize) -> Result<Self, String> {
        for (role, name) in [("outside", outside), ("inside", inside)] {
            check_interface(role, name)?;
        }
        let bridge = PortBridge::open(outside, inside, frame_bytes).map_err(|e| e.to_string())?;
        let [a, b] = bridge.fds();
        let reg = |fd: std::os::fd::BorrowedFd<'_>| -> Result<AsyncFd<OwnedFd>, String> {
            let owned = fd
                .try_clone_to_owned()
                .map_err(|e| format!("interface socket: cannot duplicate it: {e}"))?;
            // `AsyncFd::new` is deprecated because it takes any raw descriptor; this one is an
            // `OwnedFd` the registration owns, so it stays open and the same while registered:
            // the use the deprecation is about cannot happen here.
            #[allow(deprecated)]
            let r = AsyncFd::new(owned);
            r.map_err(|e| format!("interface socket: cannot poll it: {e}"))
        };
        let ready = [reg(a)?, reg(b)?];
        Ok(Ports {
            ready,
            bridge,
            held_back: 0,
        })
    }

    /// Waits until either interface has frames.
    pub async fn readable(&self) {
        tokio::select! {
            g = self.ready[0].readable() => if let Ok(mut g) = g { g.clear_ready() },
            g = self.ready[1].readable() => if let Ok(mut g) = g { g.clear_ready() },
        }
    }

    /// Moves every frame waiting on the interfaces through `member` (at most 64 polls of 64
    /// frames per interface, so the loop's timers keep their deadlines), counting verdicts.
    ///
    /// # Errors
    /// An interface or card failure.
    pub fn pump(
        &mut self,
        member: &mut Member<CardTable>,
        t: Time,
        verdicts: &mut std::collections::BTreeMap<Code, u64>,
    ) -> Result<(), BridgeError> {
        let mut w = NodeWires {
            member,
            t,
            egress: VecDeque::new(),
            scratch: Vec::new(),
            verdicts,
            held_back: 0,
        };
        for _ in 0..64 {
            let step = self.bridge.poll(&mut w, Duration::ZERO)?;
            if step.moved() == 0 && step.dropped == 0 {
                break;
            }
        }
        self.held_back += w.held_back;
        Ok(())
    }

    /// Writes frames the member sent on later (released from holding) out of their ports.
    pub fn send(&mut self, frames: Vec<(u8, Vec<u8>)>) {
        self.bridge.send(frames);
    }

    /// `status.interfaces`.
    pub fn status(&self) -> Value {
        let c = self.bridge.counters();
        let [o, i] = self.bridge.interfaces();
        let dropped: serde_json::Map<String, Value> = c
            .dropped
            .iter()
            .map(|(r, n)| (r.name().to_owned(), json!(n)))
            .collect();
        json!({
            "outside": o,
            "inside": i,
            "frames_in": c.to_card,
            "bytes_in": c.to_card_bytes,
            "frames_out": c.from_card,
            "bytes_out": c.from_card_bytes,
            "checksums_finished": c.checksums_finished,
            "dropped": dropped,
            "last_drop": c.last_drop,
            "held_back": self.held_back,
        })
    }
}

/// Refuses an interface of the config (`role` = `outside` or `inside`) that is not there or
/// is administratively down: a raw socket opens on a down interface and reads nothing, so the
/// node would start and never see a frame.
fn check_interface(role: &str, name: &str) -> Result<(), String> {
    use hal::packet::PacketError;
    match hal::packet::interface_up(name) {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!(
            "{role} = \"{name}\": the interface {name} is down: bring it up (`ip link set {name} \
             up`) and start the node again"
        )),
        Err(PacketError::NoInterface { .. }) => Err(format!(
            "{role} = \"{name}\": no interface {name} in this network namespace: fix the name in \
             the config (`ip link show` lists the interfaces) or create the interface, then \
             start the node again"
        )),
        Err(e) => Err(format!("{role} = \"{name}\": {e}")),
    }
}

/// The card's wires as the bridge sees them: a frame in goes through the member; the frames
/// it sent out come back from `wire_tx`.
struct NodeWires<'a> {
    member: &'a mut Member<CardTable>,
    t: Time,
    egress: VecDeque<(u8, Vec<u8>)>,
    scratch: Vec<(u8, Vec<u8>)>,
    verdicts: &'a mut std::collections::BTreeMap<Code, u64>,
    held_back: u64,
}

impl Wires for NodeWires<'_> {
    fn wire_rx(&mut self, port: u8, frame: &[u8]) -> Result<(), HalError> {
        if port > 1 {
            return Err(HalError::NoPort { port });
        }
        self.scratch.clear();
        let o = self.member.on_frame(self.t, port, frame, &mut self.scratch);
        match o {
            // its verdict and frames come when the member releases it
            PacketOutcome::Held(_) => {}
            PacketOutcome::NotReady => {
                self.held_back += 1;
                *self.verdicts.entry(Code::from(o)).or_insert(0) += 1;
            }
            o => *self.verdicts.entry(Code::from(o)).or_insert(0) += 1,
        }
        self.egress.extend(self.scratch.drain(..));
        Ok(())
    }

    fn wire_tx(&mut self) -> Option<(u8, Vec<u8>)> {
        self.egress.pop_front()
    }
}
