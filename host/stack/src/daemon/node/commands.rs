//! The control socket's commands on a running node: one typed handler per
//! [`Request`](crate::daemon::protocol::Request) (status, allocation, operator moves, dumps,
//! SA commands, the synthesize helper).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::*;
use crate::core::ids::NodeId;
use crate::core::member::sas::SaCommandError;
use crate::core::node_table::NodeSpecificTable;
use crate::core::users::UserBinding;
use crate::daemon::protocol::{
    AllocationReply, AppliedReply, CardRegsReply, CountsReply, ErrorReply, EspRecvReply,
    EspSendReply, IdentifierCount, Request, Response, ResyncReply, SaAddReply, SaDir, SaReport,
    SasReply, SecretHex, SynthesizeReply, UserReport, UsersReply,
};
use driver::esp::Direction;

/// The operator commands the leader queues.
enum Operator<'a> {
    Move(&'a [u16], Option<u16>),
    Drain(Option<u16>),
    Undrain(Option<u16>),
    Rebalance,
}

impl Runtime {
    /// Answers one control request (all but `synthesize`, which [`Runtime::start_synthesize`]
    /// works on between the node's other duties, and the walks over the tables, `dump`,
    /// `card_dump` and `check`, which [`super::dumps`] reads in slices).
    pub(super) fn control(&mut self, req: &Request) -> Response {
        match req {
            Request::Status => Response::Status(self.status()),
            Request::Allocation => self.allocation_reply(),
            Request::Counts => self.counts(),
            Request::Move { ids, to } => self.operator(Operator::Move(ids, *to)),
            Request::Drain { node } => self.operator(Operator::Drain(*node)),
            Request::Undrain { node } => self.operator(Operator::Undrain(*node)),
            Request::Rebalance => self.operator(Operator::Rebalance),
            Request::Resync => self.resync(),
            Request::Dump { .. } | Request::CardDump { .. } | Request::Check => {
                Response::error("this command is answered when its walk is done")
            }
            Request::Sas => self.sas(),
            Request::SaAdd {
                dir,
                dst,
                key,
                peer,
                spi,
            } => self.sa_add(*peer, *dst, *spi, *dir, key),
            Request::SaAdvance {
                outbound_seq,
                replay_top,
                spi,
            } => self.sa_advance(*spi, *outbound_seq, *replay_top),
            Request::EspSend { count, spi } => self.esp_send(*spi, count.unwrap_or(1)),
            Request::EspRecv { packets, spi } => self.esp_recv(*spi, packets),
            Request::Partition { loss, peers } => self.partition(peers, *loss),
            Request::Applied => Response::Applied(AppliedReply {
                applied: self
                    .member
                    .applied()
                    .iter()
                    .filter_map(|a| serde_json::to_value(a).ok())
                    .collect(),
            }),
            Request::Synthesize { .. } => {
                Response::error("synthesize is answered when its work is done")
            }
            Request::CardRegs => self.card_regs(),
            Request::TableGet { key, table } => self.table_get(key, *table),
            Request::UserBind {
                addr,
                lifetime_s,
                user,
            } => self.user_bind(*addr, *user, *lifetime_s),
            Request::UserUnbind { addr } => self.user_unbind(*addr),
            Request::Users => {
                let users = self.member.user_bindings(self.time());
                Response::Users(UsersReply {
                    users: users.iter().filter_map(user_report).collect(),
                })
            }
            Request::TableDump { .. } | Request::TableCount { .. } | Request::Events { .. } => {
                Response::error("this command is answered by its view")
            }
            Request::Leave => {
                // answered now; the leave itself takes the next turns of the loop
                self.begin_leave("leave command");
                Response::Done
            }
            Request::Stop => {
                self.stopping = true;
                Response::Done
            }
        }
    }

    fn allocation_reply(&self) -> Response {
        let a = self.member.core().allocation();
        Response::Allocation(AllocationReply {
            agreed_epoch: self.raft.allocation().epoch.0,
            epoch: a.epoch.0,
            owners: a.owners.iter().map(|o| o.map(|n| n.0)).collect(),
        })
    }

    fn counts(&self) -> Response {
        let a = self.member.core().allocation();
        let ids = self
            .cfg
            .identifiers
            .all()
            .map(|d| IdentifierCount {
                card: self.member.core().node_table().dist_len(d),
                common: self.member.core().common().dist_len(d),
                digest: format!("{:016x}", self.member.core().common().digest(d).hash),
                id: d.0,
                owner: a.owner(d).map(|n| n.0),
            })
            .collect();
        Response::Counts(CountsReply { ids })
    }

    fn resync(&mut self) -> Response {
        let t = self.time();
        let peers = self.member.request_resync_all(t);
        self.handle_outputs();
        Response::Resync(ResyncReply {
            requested_from: peers.iter().map(|n| n.0).collect(),
        })
    }

    fn sas(&self) -> Response {
        let sas = self
            .member
            .sa_states()
            .map(|s| SaReport {
                dist: s.dist.0,
                dst: s.dst.to_string(),
                key_present: self.member.has_sa_key(s.spi),
                outbound_seq: s.outbound_seq,
                owned: self.member.core().owns(s.dist),
                replay_bitmap: s.replay_bitmap,
                replay_top: s.replay_top,
                spi: s.spi,
            })
            .collect();
        Response::Sas(SasReply { sas })
    }

    fn sa_advance(&mut self, spi: u32, seq: Option<u64>, top: Option<u64>) -> Response {
        let r = self.member.sa_advance(spi, seq, top);
        self.handle_outputs();
        match r {
            Ok(()) => Response::Done,
            Err(e) => Response::error(e.to_string()),
        }
    }

    fn partition(&mut self, peers: &[u16], loss: Option<f64>) -> Response {
        self.udp.fault.config.partitioned = peers.iter().copied().map(NodeId).collect();
        // optional: drop this share of the frames this node sends (0 by default)
        self.udp.fault.config.loss = loss.filter(|p| (0.0..=1.0).contains(p)).unwrap_or(0.0);
        Response::Done
    }

    /// `hwctl --device unix:PATH regs`. The node-specific table runs on the state core's
    /// card stand-in (`daemon::card`), which has no register file to read.
    fn card_regs(&mut self) -> Response {
        // Register reads only: they change nothing on the card the node is driving.
        match self
            .member
            .node_table_mut()
            .card_mut()
            .card_mut()
            .read_all_regs()
        {
            Ok(all) => Response::CardRegs(CardRegsReply {
                backend: self.cfg.card.clone(),
                blocks: crate::regs_report::regs_report(&all),
            }),
            Err(e) => Response::Error(ErrorReply {
                backend: Some(self.cfg.card.clone()),
                ..ErrorReply::new(format!("reading the card's registers: {e}"))
            }),
        }
    }

    fn operator(&mut self, op: Operator<'_>) -> Response {
        if !self.raft.is_leader() {
            return Response::Error(ErrorReply {
                leader: self.raft.leader().map(|n| n.0),
                ..ErrorReply::new("not the leader; send this to the leader")
            });
        }
        let r = match op {
            Operator::Move(ids, to) => {
                let ids: Vec<u64> = ids.iter().map(|d| u64::from(*d)).collect();
                match to {
                    Some(to) => self.member.request_move(&ids, NodeId(to)),
                    None => Err("move needs \"to\": a member node id".into()),
                }
            }
            Operator::Drain(n) | Operator::Undrain(n) => {
                let drain = matches!(op, Operator::Drain(_));
                match n {
                    Some(n) => self.member.set_drained(NodeId(n), drain),
                    None => Err("drain needs \"node\": a member node id".into()),
                }
            }
            Operator::Rebalance => {
                self.member.request_rebalance();
                Ok(())
            }
        };
        match r {
            Ok(()) => Response::Queued,
            Err(e) => Response::error(e),
        }
    }

    /// Benchmark and test helper: feeds the handshakes of `flows` generated TCP connections
    /// (client 10.x.y.z:40000 to 192.0.2.1:443, numbered from `first`) through packet handling,
    /// exactly as if they had come from the wire; the owners create, install and replicate the
    /// entries. Send the same command to every node. Worked on in slices of 200 connections
    /// between the node's other duties; the answer comes when all are done. The packets come
    /// from the lab's generator ([`crate::lab::traffic::handshake`]), the one thing of the lab
    /// a node uses.
    pub(super) fn start_synthesize(
        &mut self,
        flows: Option<u64>,
        first: Option<u64>,
        reply: tokio::sync::oneshot::Sender<Response>,
    ) {
        if self.synth.is_some() {
            let _ = reply.send(Response::error("a synthesize command is already running"));
            return;
        }
        let flows = flows.unwrap_or(0).min(4_000_000) as u32;
        let first = first.unwrap_or(0).min(1 << 24) as u32;
        self.synth = Some(SynthJob {
            next: first,
            end: first.saturating_add(flows),
            created: 0,
            started: std::time::Instant::now(),
            reply,
        });
    }

    pub(super) fn synthesize_slice(&mut self) {
        let Some(mut job) = self.synth.take() else {
            return;
        };
        let stop = job.end.min(job.next.saturating_add(200));
        for i in job.next..stop {
            for pkt in crate::lab::traffic::handshake(i) {
                let t = self.time();
                if self.member.synthesize_packet(t, &pkt) {
                    job.created += 1;
                }
            }
        }
        job.next = stop;
        self.handle_outputs();
        if job.next >= job.end {
            let _ = job.reply.send(Response::Synthesized(SynthesizeReply {
                created: job.created,
                took_ms: job.started.elapsed().as_millis() as u64,
            }));
        } else {
            self.synth = Some(job);
        }
    }

    /// The answer to an ESP command that cannot run here now.
    fn esp_refusal(err: SaCommandError) -> Response {
        match err {
            SaCommandError::NotHere { owner, .. } => Response::Error(ErrorReply {
                owner,
                ..ErrorReply::new(err.to_string())
            }),
            e => Response::error(e.to_string()),
        }
    }

    /// `esp_send {"spi", "count"}`: seal `count` packets on the owner's outbound SA; answers
    /// the sequence numbers used.
    fn esp_send(&mut self, spi: u32, count: u32) -> Response {
        let mut esp = match self.member.esp_for(spi) {
            Ok(esp) => esp,
            Err(e) => return Self::esp_refusal(e),
        };
        match esp.send(spi, count.clamp(1, 10_000), &[0x45; 40]) {
            Ok((first_seq, last_seq, _)) => Response::EspSent(EspSendReply {
                first_seq,
                last_seq,
            }),
            Err(e) => Response::error(e.to_string()),
        }
    }

    /// `esp_recv {"spi", "packets": [hex]}`: open inbound packets; answers accepted /
    /// replays / bad.
    fn esp_recv(&mut self, spi: u32, packets: &[String]) -> Response {
        let mut esp = match self.member.esp_for(spi) {
            Ok(esp) => esp,
            Err(e) => return Self::esp_refusal(e),
        };
        let packets: Vec<Vec<u8>> = packets.iter().filter_map(|p| hex::decode(p).ok()).collect();
        let (accepted, replays, bad) = esp.receive(&packets);
        // the replay window moved: replicate it now, not at the next periodic sync
        self.member.esp_sync_now();
        Response::EspReceived(EspRecvReply {
            accepted,
            bad,
            replays,
        })
    }

    fn sa_add(
        &mut self,
        peer: Option<IpAddr>,
        dst: Option<IpAddr>,
        spi: u32,
        dir: Option<SaDir>,
        key_hex: &SecretHex,
    ) -> Response {
        let (Some(peer), Some(dst)) = (peer, dst) else {
            return Response::error("sa_add needs \"peer\" and \"dst\" IP addresses");
        };
        if spi == 0 {
            return Response::error("sa_add needs a non-zero \"spi\"");
        }
        let dir = match dir {
            Some(SaDir::Out) => Direction::Outbound,
            Some(SaDir::In) => Direction::Inbound,
            None => {
                return Response::error(
                    "sa_add needs \"dir\": \"out\" (the cluster seals with this SA) or \"in\" \
                     (it opens with it); a tunnel is two SAs, each with its own SPI and key",
                )
            }
        };
        let digits = key_hex.expose().trim();
        if !matches!(digits.len(), 32 | 40 | 64 | 72) {
            return Response::error(format!(
                "key: {} hex digits; give 72 (AES-256 key then 4-byte salt) or 40 (AES-128), \
                 or a bare key of 64 or 32 digits (salt derived from the SPI)",
                digits.len()
            ));
        }
        let mut key = Zeroizing::new(vec![0u8; digits.len() / 2]);
        if hex::decode_to_slice(digits, &mut key[..]).is_err() {
            return Response::error("key: not hex digits");
        }
        let t = self.time();
        let d = match self.member.sa_add(t, peer, dst, spi, dir, key) {
            Ok(d) => d,
            Err(e) => return Response::error(e.to_string()),
        };
        self.handle_outputs();
        Response::SaAdded(SaAddReply { dist: d.0 })
    }

    /// `user_bind`: an authentication source's binding, replicated by the member.
    fn user_bind(
        &mut self,
        addr: Option<IpAddr>,
        user: Option<u32>,
        lifetime_s: Option<u64>,
    ) -> Response {
        let (Some(addr), Some(user), Some(lifetime_s)) = (addr, user, lifetime_s) else {
            return Response::error(
                "user_bind needs \"user\" (a number), \"addr\" (an IP address) and \
                 \"lifetime_s\" (seconds, 1 to 604800)",
            );
        };
        let t = self.time();
        let r = self.member.user_bind(
            t,
            crate::core::entry::UserId(user),
            addr,
            Duration::from_secs(lifetime_s),
        );
        self.handle_outputs();
        match r.map(|b| user_report(&b)) {
            Ok(Some(b)) => Response::UserBound(b),
            Ok(None) => Response::error("the binding was made without a user"),
            Err(e) => Response::error(format!("user_bind: {e}")),
        }
    }

    /// `user_unbind`: ends a binding everywhere.
    fn user_unbind(&mut self, addr: Option<IpAddr>) -> Response {
        let Some(addr) = addr else {
            return Response::error("user_unbind needs \"addr\" (an IP address)");
        };
        let t = self.time();
        let r = self.member.user_unbind(t, addr);
        self.handle_outputs();
        match r {
            Ok(_) => Response::Done,
            Err(e) => Response::error(format!("user_unbind: {e}")),
        }
    }

    /// The `status` report (free-form; keys in `docs/clusterd.md`).
    fn status(&mut self) -> Value {
        let card_path = self.card_path();
        let now = self.udp.now();
        let a = self.member.core().allocation();
        let st = self.member.core().stats();
        let counters = self.member.counters();
        let peers: Vec<Value> = self
            .member
            .peers()
            .map(|(id, l)| {
                json!({"node": id.0, "alive": l.alive, "ready": l.ready, "witness": l.witness,
                       "fenced": l.fenced, "applied_epoch": l.applied.0,
                       "last_heard_ms": l.last_heard.map(|t| now.saturating_sub(t).as_millis() as u64)})
            })
            .collect();
        let tstats = self.member.core().node_table().stats();
        let core = json!({
            "packets": st.packets, "not_ours": st.not_ours, "hits": st.hits, "created": st.created,
            "dropped_tcp_no_state": st.dropped_tcp_no_state, "dropped_no_state": st.dropped_no_state,
            "dropped_rule": st.dropped_rule, "dropped_table_full": st.dropped_table_full,
            "dropped_parse": st.dropped_parse, "dropped_bad_ike": st.dropped_bad_ike,
            "messages_out": st.messages_out, "messages_in": st.messages_in,
            "duplicates": st.duplicates, "seq_gaps": st.seq_gaps,
            "repairs_requested": st.repairs_requested, "snapshots_applied": st.snapshots_applied,
            "install_failures": st.install_failures, "expired": st.expired, "closed": st.closed,
            "user_bindings": self.member.core().users().len(),
            "user_bindings_refused": counters.user_bindings_refused,
        });
        let raft_state = json!({
            "refused": self.raft.refused,
            "clamped": self.raft.clamped,
            "log_bytes": self.raft.log_bytes(),
            "abstaining": self.raft.abstaining(),
        });
        let mut status = json!({
            "node": self.cfg.node.0,
            "role": self.cfg.role,
            "pid": std::process::id(),
            "incarnation": self.ep.incarnation(),
            "started_unix_ms": self.started_unix_ms,
            "uptime_ms": now.as_millis() as u64,
            "ready": self.member.is_ready(),
            "fenced": self.member.is_fenced(),
            "behind": self.member.is_behind(),
            "leader": self.raft.leader().map(|n| n.0),
            "is_leader": self.raft.is_leader(),
            "voters": self.raft.voters().iter().map(|n| n.0).collect::<Vec<_>>(),
            "term": self.raft.term(),
            "epoch": a.epoch.0,
            "agreed_epoch": self.raft.allocation().epoch.0,
            "owned": a.ids_of(self.cfg.node).len(),
            "card_backend": self.cfg.card,
            "card_entries": self.member.core().node_table().card().len(),
            "card_capacity": self.member.core().node_table().card().capacity(),
            "software_overflow_entries": self.member.core().node_table().overflow().len(),
            "node_table_entries": self.member.core().node_table().len(),
            "card_overflowed": tstats.overflowed,
            "common_entries": self.member.core().common().len(),
            "common_bytes": self.member.core().common().heap_bytes(),
            "last_resync": self.member.last_resync().map(|(n, d)| json!({
                "entries": n,
                "took_us": d.as_micros() as u64,
                "entries_per_s": if d.is_zero() { 0.0 } else { n as f64 / d.as_secs_f64() },
            })),
            "sa_count": self.member.sa_states().count(),
            "sa_seq_jumps": counters.sa_jumps,
            "esp": self.member.esp().counters,
            "esp_installed": self.member.esp().installed().count(),
            "verdicts": self.verdicts.iter().map(|(c, n)| (format!("{c:?}"), *n)).collect::<BTreeMap<_, _>>(),
            "core": core,

            "sync": self.ep.stats(),
            "sync_peers": self.ep.peer_status(now),
            "sync_send_failures": self.udp.send_failures,
            "fault_dropped": self.udp.fault.dropped,
            "records_dropped": self.records_dropped,
            "card_errors": self.card_errors,
            "decode_errors": counters.decode_errors,
            "apply_errors": counters.apply_errors + self.raft_errors,
            "peers": peers,
            "drained": self.member.drained().iter().map(|n| n.0).collect::<Vec<_>>(),
        });
        // Raft's message checks and storage (apart: the object above is at serde_json's
        // macro recursion limit)
        status["raft_state"] = raft_state;
        status["card_path"] = card_path;
        status["interfaces"] = self
            .ports
            .as_ref()
            .map_or(Value::Null, super::ports::Ports::status);
        status["esp_installed_on_card"] = json!(self.member.esp().on_card());
        status["leaving"] = json!(self.member.is_leaving());
        // automatic load balancing: per-node load, share and imbalance, the last round
        status["balance"] = json!(self.member.load_view(self.raft.allocation()));
        let [held, released, dropped, now] = self.member.hold_counters();
        status["hold"] = json!({
            "held": held, "released": released, "dropped": dropped, "now": now,
            "handed_back": self.member.hold_handed_back(),
        });
        status
    }

    /// The card's packet path (`status.card_path`): what entered the card and what it did,
    /// what the host's slow path got. `null` for a card without a packet port.
    fn card_path(&mut self) -> Value {
        let st = self.member.core().stats();
        let dp = self
            .member
            .node_table_mut()
            .card_mut()
            .card_mut()
            .counters()
            .ok();
        let Some(c) = self.member.port_counters() else {
            return Value::Null;
        };
        let reasons: BTreeMap<String, u32> = c.reasons.iter().cloned().collect();
        json!({
            "frames_in": c.rx_frames,
            "dp_lookups": dp.map(|d| d.dp_lookups),
            "dp_hits": dp.map(|d| d.dp_hits),
            "forwarded_by_card": c.forwarded,
            "punted": c.punted,
            "punted_before_lookup": c.punted_before_lookup(),
            "dropped": c.dropped,
            "dropped_not_owned": c.reason(driver::port::Reason::NotOwned),
            "host_sent": c.host_sent,
            "queued": c.queued,
            "reasons": reasons,
            "card_rewrites": st.card_rewrites,
        })
    }
}

/// A live binding as the control answers show it (none for a tombstone).
fn user_report(b: &UserBinding) -> Option<UserReport> {
    Some(UserReport {
        addr: b.addr,
        lifetime_s: u64::from(b.remaining_ms).div_ceil(1000),
        origin: b.origin.0,
        user: b.user?.0,
        version: b.version,
    })
}
