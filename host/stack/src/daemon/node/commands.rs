//! The control socket's commands on a running node: status, allocation, operator moves,
//! dumps, SA commands, the synthesize helper.

use super::*;

impl Runtime {
    pub(super) fn control(&mut self, req: &Value) -> Value {
        let cmd = req.get("cmd").and_then(Value::as_str).unwrap_or("");
        match cmd {
            "status" => self.status(),
            "allocation" => {
                let a = self.core.allocation();
                json!({"ok": true, "epoch": a.epoch.0, "agreed_epoch": self.raft.allocation().epoch.0,
                       "owners": a.owners.iter().map(|o| o.map(|n| n.0)).collect::<Vec<_>>()})
            }
            "counts" => {
                let a = self.core.allocation();
                let ids: Vec<Value> = self
                    .cfg
                    .identifiers
                    .all()
                    .map(|d| {
                        json!({"id": d.0, "owner": a.owner(d).map(|n| n.0),
                               "common": self.core.common().dist_len(d),
                               "digest": format!("{:016x}", self.core.common().digest(d).hash),
                               "card": self.core.node_table().dist_len(d)})
                    })
                    .collect();
                json!({"ok": true, "ids": ids})
            }
            "move" | "drain" | "undrain" | "rebalance" => self.operator(cmd, req),
            "resync" => {
                let peers = self.replication_peers();
                for p in peers {
                    self.request_resync(p);
                }
                json!({"ok": true, "requested_from": self.replication_peers().iter().map(|n| n.0).collect::<Vec<_>>()})
            }
            "dump" => {
                let entries: Vec<Value> = self
                    .core
                    .node_table()
                    .entries()
                    .take(req.get("limit").and_then(Value::as_u64).unwrap_or(10_000) as usize)
                    .map(|e| {
                        json!({"key": format!("{:?}", e.key), "dist": e.dist.0,
                               "state": format!("{:?}", e.state), "action": format!("{:?}", e.action),
                               "creator": e.creator.0, "version": e.version})
                    })
                    .collect();
                json!({"ok": true, "backend": self.cfg.card, "len": self.core.node_table().len(),
                       "capacity": self.core.node_table().capacity(), "entries": entries})
            }
            "sas" => {
                let sas: Vec<Value> = self
                    .sa_spis
                    .iter()
                    .filter_map(|spi| self.core.sa_state(*spi))
                    .map(|s| {
                        json!({"spi": s.spi, "dist": s.dist.0, "dst": s.dst.to_string(),
                               "outbound_seq": s.outbound_seq, "replay_top": s.replay_top,
                               "replay_bitmap": s.replay_bitmap, "owned": self.core.owns(s.dist),
                               "key_present": self.sa_keys.contains_key(&s.spi)})
                    })
                    .collect();
                json!({"ok": true, "sas": sas})
            }
            "sa_add" => self.sa_add(req),
            "esp_send" | "esp_recv" => self.esp_command(cmd, req),
            "sa_advance"
                if self.esp.has(
                    req.get("spi")
                        .and_then(Value::as_u64)
                        .and_then(|v| u32::try_from(v).ok())
                        .unwrap_or(0),
                ) =>
            {
                json!({"ok": false, "error": "this SA runs in the ESP engine here; its state comes from the engine (use esp_send)"})
            }
            "sa_advance" => {
                let spi = req
                    .get("spi")
                    .and_then(Value::as_u64)
                    .and_then(|v| u32::try_from(v).ok())
                    .unwrap_or(0);
                let Some(s) = self.core.sa_state(spi) else {
                    return json!({"ok": false, "error": format!("no SA with spi {spi}")});
                };
                let seq = req
                    .get("outbound_seq")
                    .and_then(Value::as_u64)
                    .unwrap_or(s.outbound_seq);
                let top = req
                    .get("replay_top")
                    .and_then(Value::as_u64)
                    .unwrap_or(s.replay_top);
                self.core.update_sa(SaState {
                    outbound_seq: seq,
                    replay_top: top,
                    ..s
                });
                json!({"ok": true})
            }
            "check" => {
                let problems = self.core.check_tables();
                json!({"ok": true, "problems": problems})
            }
            "partition" => {
                let peers: BTreeSet<NodeId> = req
                    .get("peers")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_u64)
                            .filter_map(|n| u16::try_from(n).ok().map(NodeId))
                            .collect()
                    })
                    .unwrap_or_default();
                self.udp.fault.config.partitioned = peers;
                // optional: drop this share of the frames this node sends (0 by default)
                self.udp.fault.config.loss = req
                    .get("loss")
                    .and_then(Value::as_f64)
                    .filter(|p| (0.0..=1.0).contains(p))
                    .unwrap_or(0.0);
                json!({"ok": true})
            }
            "applied" => json!({"ok": true, "applied": self.applied}),
            // hwctl --device unix:PATH dump: the node-specific entries with their keys in the
            // card's layout (as `hwctl dump` shows a local card), on the card or in overflow.
            "card_dump" => {
                let did = req.get("did").and_then(Value::as_u64);
                let table = self.core.node_table();
                let entries: Vec<Value> = table
                    .entries()
                    .filter(|e| match did {
                        Some(d) => u64::from(e.dist.0) == d,
                        None => true,
                    })
                    .map(|e| {
                        let k = crate::core::card_table::cam_key(&e.key).ok();
                        let on_card = table.card().get(&e.key).is_some();
                        json!({"did": e.dist.0, "where": if on_card { "card" } else { "overflow" },
                               "key": k, "key_text": k.map_or_else(|| format!("{:?}", e.key), |k| k.to_string()),
                               "state": format!("{:?}", e.state), "action": format!("{:?}", e.action),
                               "creator": e.creator.0, "version": e.version, "packets": e.packets})
                    })
                    .collect();
                json!({"ok": true, "backend": self.cfg.card, "len": table.len(),
                       "capacity": table.capacity(), "entries": entries})
            }
            // hwctl --device unix:PATH regs. The node-specific table runs on the state core's
            // card stand-in (`daemon::card`), which has no register file to read.
            "card_regs" => {
                // Register reads only: they change nothing on the card the node is driving.
                match self
                    .core
                    .node_table_mut()
                    .card_mut()
                    .card_mut()
                    .read_all_regs()
                {
                    Ok(all) => json!({"ok": true, "backend": self.cfg.card,
                                      "blocks": crate::regs_report::regs_report(&all)}),
                    Err(e) => json!({"ok": false, "backend": self.cfg.card,
                                     "error": format!("reading the card's registers: {e}")}),
                }
            }
            "stop" => {
                self.stopping = true;
                json!({"ok": true})
            }
            "" => json!({"ok": false, "error": "missing \"cmd\""}),
            other => json!({"ok": false, "error": format!("unknown command {other:?}"),
                "commands": ["status", "allocation", "counts", "move", "drain", "undrain", "rebalance",
                             "resync", "dump", "sas", "sa_add", "sa_advance", "esp_send", "esp_recv", "check", "partition",
                             "applied", "synthesize", "card_dump", "card_regs", "stop"]}),
        }
    }

    fn operator(&mut self, cmd: &str, req: &Value) -> Value {
        if !self.raft.is_leader() {
            return json!({"ok": false, "error": "not the leader; send this to the leader",
                          "leader": self.raft.leader().map(|n| n.0)});
        }
        let node = req
            .get("node")
            .or(req.get("to"))
            .and_then(Value::as_u64)
            .and_then(|n| u16::try_from(n).ok())
            .map(NodeId);
        match cmd {
            "move" => {
                let Some(to) = node.filter(|n| self.members.contains(n)) else {
                    return json!({"ok": false, "error": "move needs \"to\": a member node id"});
                };
                let ids: Vec<DistributionId> = req
                    .get("ids")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_u64)
                            .filter(|d| *d < u64::from(self.cfg.identifiers.get()))
                            .map(|d| DistributionId(d as u16))
                            .collect()
                    })
                    .unwrap_or_default();
                if ids.is_empty() {
                    return json!({"ok": false, "error": "move needs \"ids\": identifiers in range"});
                }
                self.ops.push_back(OpRequest::Move(ids, to));
            }
            "drain" | "undrain" => {
                let Some(n) = node.filter(|n| self.members.contains(n)) else {
                    return json!({"ok": false, "error": "drain needs \"node\": a member node id"});
                };
                if cmd == "drain" {
                    self.drained.insert(n);
                } else {
                    self.drained.remove(&n);
                }
            }
            _ => self.ops.push_back(OpRequest::Rebalance),
        }
        json!({"ok": true, "queued": true})
    }

    /// Benchmark and test helper: feeds the handshakes of `flows` generated TCP connections
    /// (client 10.x.y.z:40000 to 192.0.2.1:443, numbered from `first`) through packet handling,
    /// exactly as if they had come from the wire; the owners create, install and replicate the
    /// entries. Send the same command to every node. Worked on in slices of 200 connections
    /// between the node's other duties; the answer comes when all are done.
    pub(super) fn start_synthesize(
        &mut self,
        req: &Value,
        reply: tokio::sync::oneshot::Sender<Value>,
    ) {
        if self.synth.is_some() {
            let _ = reply
                .send(json!({"ok": false, "error": "a synthesize command is already running"}));
            return;
        }
        let flows = req
            .get("flows")
            .and_then(Value::as_u64)
            .unwrap_or(0)
            .min(4_000_000) as u32;
        let first = req
            .get("first")
            .and_then(Value::as_u64)
            .unwrap_or(0)
            .min(1 << 24) as u32;
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
            for pkt in crate::daemon::traffic::handshake(i) {
                let now = self.millis();
                if let Verdict::Accept { created: true, .. } = self.core.handle_packet(now, &pkt) {
                    job.created += 1;
                }
            }
        }
        job.next = stop;
        self.flush_outbox();
        if job.next >= job.end {
            let _ = job.reply.send(json!({"ok": true, "created": job.created,
                "took_ms": job.started.elapsed().as_millis() as u64}));
        } else {
            self.synth = Some(job);
        }
    }

    /// `esp_send {"spi", "count"}`: seal `count` packets on the owner's outbound SA; answers
    /// the sequence numbers used. `esp_recv {"spi", "packets": [hex]}`: open inbound packets;
    /// answers accepted / replays / bad.
    fn esp_command(&mut self, cmd: &str, req: &Value) -> Value {
        let spi = req
            .get("spi")
            .and_then(Value::as_u64)
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(0);
        if !self.ready || self.fenced || self.behind {
            return json!({"ok": false, "error": "this node is not taking traffic now (syncing, fenced or behind the agreed epoch)"});
        }
        let waiting = self
            .core
            .sa_state(spi)
            .and_then(|s| self.waiting.get(&s.dist));
        if let Some((r, e, _)) = waiting {
            return json!({"ok": false, "error": format!(
                "SA {spi} does not run on this node yet: waiting for node {}'s final state of epoch {}",
                r.0, e.0)});
        }
        if !self.esp.has(spi) {
            let owner = self
                .core
                .sa_state(spi)
                .and_then(|s| self.core.allocation().owner(s.dist))
                .map(|n| n.0);
            return json!({"ok": false, "error": format!("SA {spi} does not run on this node"), "owner": owner});
        }
        if cmd == "esp_send" {
            let count = req
                .get("count")
                .and_then(Value::as_u64)
                .unwrap_or(1)
                .clamp(1, 10_000) as u32;
            match self.esp.send(spi, count, &[0x45; 40]) {
                Ok((first, last, _)) => json!({"ok": true, "first_seq": first, "last_seq": last}),
                Err(e) => json!({"ok": false, "error": e.to_string()}),
            }
        } else {
            let packets: Vec<Vec<u8>> = req
                .get("packets")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .filter_map(crate::daemon::esp::from_hex)
                        .collect()
                })
                .unwrap_or_default();
            let (accepted, replays, bad) = self.esp.receive(&packets);
            json!({"ok": true, "accepted": accepted, "replays": replays, "bad": bad})
        }
    }

    fn sa_add(&mut self, req: &Value) -> Value {
        let ip = |k: &str| {
            req.get(k)
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<IpAddr>().ok())
        };
        let (Some(peer), Some(dst)) = (ip("peer"), ip("dst")) else {
            return json!({"ok": false, "error": "sa_add needs \"peer\" and \"dst\" IP addresses"});
        };
        let spi = req
            .get("spi")
            .and_then(Value::as_u64)
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(0);
        if spi == 0 {
            return json!({"ok": false, "error": "sa_add needs a non-zero \"spi\""});
        }
        let key_hex = Zeroizing::new(
            req.get("key")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        );
        let key = match ClusterKey::from_hex(&key_hex) {
            Ok(_) => {
                let mut k = Zeroizing::new(vec![0u8; 32]);
                for (i, c) in key_hex.as_bytes().chunks_exact(2).enumerate() {
                    let hv = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
                    k[i] = (hv(c[0]) << 4) | hv(c[1]);
                }
                k
            }
            Err(e) => return json!({"ok": false, "error": format!("key: {e}")}),
        };
        let now = self.millis();
        let d = self.core.install_sa(now, peer, dst, spi);
        self.sa_spis.insert(spi);
        let rec = key_record(spi, &key);
        for p in self.replication_peers() {
            self.send_record(p, &rec);
        }
        self.sa_keys.insert(spi, key);
        self.reconcile_esp();
        self.flush_outbox();
        json!({"ok": true, "dist": d.0})
    }

    fn status(&self) -> Value {
        let now = self.now();
        let a = self.core.allocation();
        let st = self.core.stats();
        let peers: Vec<Value> = self
            .live
            .iter()
            .map(|(id, l)| {
                json!({"node": id.0, "alive": l.alive, "ready": l.ready, "witness": l.witness,
                       "fenced": l.fenced, "applied_epoch": l.applied.0,
                       "last_heard_ms": l.last_heard.map(|t| now.saturating_sub(t).as_millis() as u64)})
            })
            .collect();
        let tstats = self.core.node_table().stats();
        let core = json!({
            "packets": st.packets, "not_ours": st.not_ours, "hits": st.hits, "created": st.created,
            "dropped_tcp_no_state": st.dropped_tcp_no_state, "dropped_no_state": st.dropped_no_state,
            "dropped_rule": st.dropped_rule, "dropped_table_full": st.dropped_table_full,
            "messages_out": st.messages_out, "messages_in": st.messages_in,
            "duplicates": st.duplicates, "seq_gaps": st.seq_gaps,
            "repairs_requested": st.repairs_requested, "snapshots_applied": st.snapshots_applied,
            "install_failures": st.install_failures, "expired": st.expired, "closed": st.closed,
        });
        json!({
            "ok": true,
            "node": self.cfg.node.0,
            "role": self.cfg.role,
            "pid": std::process::id(),
            "incarnation": self.ep.incarnation(),
            "started_unix_ms": self.started_unix_ms,
            "uptime_ms": now.as_millis() as u64,
            "ready": self.ready,
            "fenced": self.fenced,
            "behind": self.behind,
            "leader": self.raft.leader().map(|n| n.0),
            "is_leader": self.raft.is_leader(),
            "voters": self.raft.voters().iter().map(|n| n.0).collect::<Vec<_>>(),
            "term": self.raft.term(),
            "epoch": a.epoch.0,
            "agreed_epoch": self.raft.allocation().epoch.0,
            "owned": a.ids_of(self.cfg.node).len(),
            "card_backend": self.cfg.card,
            "card_entries": self.core.node_table().card().len(),
            "card_capacity": self.core.node_table().card().capacity(),
            "software_overflow_entries": self.core.node_table().overflow().len(),
            "node_table_entries": self.core.node_table().len(),
            "card_overflowed": tstats.overflowed,
            "common_entries": self.core.common().len(),
            "common_bytes": self.core.common().heap_bytes(),
            "last_resync": self.last_resync.map(|(n, d)| json!({
                "entries": n,
                "took_us": d.as_micros() as u64,
                "entries_per_s": if d.is_zero() { 0.0 } else { n as f64 / d.as_secs_f64() },
            })),
            "sa_count": self.sa_spis.len(),
            "sa_seq_jumps": self.sa_jumps,
            "esp": self.esp.counters,
            "esp_installed": self.esp.installed().count(),
            "verdicts": self.verdicts.iter().map(|(c, n)| (format!("{c:?}"), *n)).collect::<BTreeMap<_, _>>(),
            "core": core,

            "sync": self.ep.stats(),
            "sync_peers": self.ep.peer_status(now),
            "sync_send_failures": self.udp.send_failures,
            "fault_dropped": self.udp.fault.dropped,
            "records_dropped": self.records_dropped,
            "decode_errors": self.decode_errors,
            "apply_errors": self.apply_errors,
            "peers": peers,
            "drained": self.drained.iter().map(|n| n.0).collect::<Vec<_>>(),
        })
    }
}
