//! The ordered rule set that decides the first packet of a set (figure 2, step 205 onwards):
//! first match wins; no match drops. The file format is documented in `docs/rules.md`.

use super::entry::{Action, Nat, NatKind, SaRef, UserId};
use super::packet::{PacketKind, ParsedPacket};
use std::net::IpAddr;

/// A rule-file error, naming the 1-based line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("rules line {line}: {message}")]
pub struct RuleError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Protocol selector of a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtoMatch {
    /// Any protocol.
    Any,
    /// TCP.
    Tcp,
    /// UDP (not IKE).
    Udp,
    /// ICMP or ICMPv6 echo.
    Icmp,
    /// ESP.
    Esp,
    /// IKE (UDP 500/4500).
    Ike,
}

/// An address prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// Network address.
    pub addr: IpAddr,
    /// Prefix length.
    pub len: u8,
}

impl Cidr {
    /// Whether `a` lies in the prefix.
    pub fn contains(&self, a: IpAddr) -> bool {
        match (self.addr, a) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let shift = 32 - u32::from(self.len.min(32));
                let mask = u32::MAX.checked_shl(shift).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let shift = 128 - u32::from(self.len.min(128));
                let mask = u128::MAX.checked_shl(shift).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }

    /// Parses `ADDR` or `ADDR/LEN` (IPv4 or IPv6; without a length, the one address).
    ///
    /// # Errors
    /// A message naming the bad address or prefix length.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| format!("bad address {a:?}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match l {
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|&l| l <= max)
                .ok_or_else(|| format!("bad prefix length {l:?}"))?,
            None => max,
        };
        Ok(Cidr { addr, len })
    }
}

/// Application helpers a rule can enable on the connections it allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Helper {
    /// FTP: a PORT command on the control connection opens the data connection.
    Ftp,
    /// Application sessions: a TLS ClientHello session id or an HTTP `Cookie` header creates
    /// a session entry keyed by its digest.
    Session,
}

/// One rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The verdict.
    pub action: Action,
    /// The tunnel for `tunnel` rules.
    pub tunnel: Option<SaRef>,
    /// Protocol.
    pub proto: ProtoMatch,
    /// Source prefix (`None` = any).
    pub from: Option<Cidr>,
    /// Destination prefix (`None` = any).
    pub to: Option<Cidr>,
    /// Source port range.
    pub sport: Option<(u16, u16)>,
    /// Destination port range.
    pub dport: Option<(u16, u16)>,
    /// Authenticated user recorded in the entries the rule creates.
    pub user: Option<UserId>,
    /// Idle timeout (seconds) of the entries the rule creates (0 = state default).
    pub timeout_s: u32,
    /// NAT of the entries the rule creates.
    pub nat: Option<Nat>,
    /// Application helper.
    pub helper: Option<Helper>,
    /// 1-based line the rule came from.
    pub line: usize,
}

impl Rule {
    /// Whether the rule matches a packet.
    pub fn matches(&self, p: &ParsedPacket<'_>) -> bool {
        let proto_ok = match self.proto {
            ProtoMatch::Any => true,
            ProtoMatch::Tcp => matches!(p.kind, PacketKind::Tcp { .. }),
            ProtoMatch::Udp => matches!(p.kind, PacketKind::Udp { .. }),
            ProtoMatch::Icmp => matches!(p.kind, PacketKind::IcmpEcho { .. }),
            ProtoMatch::Esp => matches!(p.kind, PacketKind::Esp { .. }),
            ProtoMatch::Ike => matches!(p.kind, PacketKind::Isakmp { .. }),
        };
        if !proto_ok
            || !self.from.is_none_or(|c| c.contains(p.src))
            || !self.to.is_none_or(|c| c.contains(p.dst))
        {
            return false;
        }
        let in_range = |r: Option<(u16, u16)>, v: Option<u16>| match (r, v) {
            (None, _) => true,
            (Some((lo, hi)), Some(v)) => lo <= v && v <= hi,
            (Some(_), None) => false,
        };
        let ports = p.ports();
        in_range(self.sport, ports.map(|x| x.0)) && in_range(self.dport, ports.map(|x| x.1))
    }
}

/// An ordered rule set. First match wins; no match means drop.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSet {
    /// The rules, in order.
    pub rules: Vec<Rule>,
}

fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let p = |x: &str| x.parse::<u16>().map_err(|_| format!("bad port {x:?}"));
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (p(a)?, p(b)?),
        None => (p(s)?, p(s)?),
    };
    if lo > hi {
        return Err(format!("empty port range {s:?}"));
    }
    Ok((lo, hi))
}

fn parse_nat_target(s: &str) -> Result<(IpAddr, u16), String> {
    if let Ok(a) = s.parse::<IpAddr>() {
        return Ok((a, 0));
    }
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return Ok((sa.ip(), sa.port()));
    }
    Err(format!("bad NAT address {s:?}"))
}

fn parse_line(line: &str, no: usize) -> Result<Rule, String> {
    let mut words = line.split_whitespace();
    let verb = words.next().ok_or("empty rule")?;
    let mut rule = Rule {
        action: Action::Allow,
        tunnel: None,
        proto: ProtoMatch::Any,
        from: None,
        to: None,
        sport: None,
        dport: None,
        user: None,
        timeout_s: 0,
        nat: None,
        helper: None,
        line: no,
    };
    rule.action = match verb {
        "allow" => Action::Allow,
        "drop" => Action::Drop,
        "reject" => Action::Reject,
        "tunnel" => {
            let spi = words.next().ok_or("tunnel needs an SPI")?;
            let spi = parse_u32(spi).ok_or_else(|| format!("bad SPI {spi:?}"))?;
            rule.tunnel = Some(SaRef { spi });
            Action::Tunnel
        }
        other => {
            return Err(format!(
                "unknown action {other:?} (allow, drop, reject, tunnel)"
            ))
        }
    };
    let mut first = true;
    while let Some(w) = words.next() {
        // A bare protocol right after the action is allowed: `allow tcp ...`.
        let (kw, val) = match w {
            "tcp" | "udp" | "icmp" | "esp" | "ike" | "any" if first => ("proto", Some(w)),
            _ => (w, words.next()),
        };
        first = false;
        let val = val.ok_or_else(|| format!("{kw:?} needs a value"))?;
        match kw {
            "proto" => {
                rule.proto = match val {
                    "any" => ProtoMatch::Any,
                    "tcp" => ProtoMatch::Tcp,
                    "udp" => ProtoMatch::Udp,
                    "icmp" => ProtoMatch::Icmp,
                    "esp" => ProtoMatch::Esp,
                    "ike" => ProtoMatch::Ike,
                    _ => return Err(format!("unknown protocol {val:?}")),
                }
            }
            "from" => {
                rule.from = if val == "any" {
                    None
                } else {
                    Some(Cidr::parse(val)?)
                }
            }
            "to" => {
                rule.to = if val == "any" {
                    None
                } else {
                    Some(Cidr::parse(val)?)
                }
            }
            "sport" => rule.sport = Some(parse_range(val)?),
            "dport" | "port" => rule.dport = Some(parse_range(val)?),
            "user" => {
                rule.user = Some(UserId(
                    parse_u32(val).ok_or_else(|| format!("bad user id {val:?}"))?,
                ))
            }
            "timeout" => {
                rule.timeout_s = val
                    .parse()
                    .map_err(|_| format!("bad timeout {val:?} (seconds)"))?
            }
            "snat" | "dnat" => {
                let (addr, port) = parse_nat_target(val)?;
                let kind = if kw == "snat" {
                    NatKind::Source
                } else {
                    NatKind::Destination
                };
                rule.nat = Some(Nat { kind, addr, port });
            }
            "helper" => {
                rule.helper = match val {
                    "ftp" => Some(Helper::Ftp),
                    "session" => Some(Helper::Session),
                    _ => return Err(format!("unknown helper {val:?}")),
                }
            }
            _ => return Err(format!("unknown keyword {kw:?}")),
        }
    }
    Ok(rule)
}

fn parse_u32(s: &str) -> Option<u32> {
    match s.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

impl RuleSet {
    /// Parses a rule file.
    ///
    /// # Errors
    /// The first [`RuleError`], naming its line.
    pub fn parse(text: &str) -> Result<RuleSet, RuleError> {
        let mut rules = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let rule = parse_line(line, i + 1).map_err(|message| RuleError {
                line: i + 1,
                message,
            })?;
            rules.push(rule);
        }
        if rules.len() > usize::from(u16::MAX) {
            return Err(RuleError {
                line: text.lines().count(),
                message: "more than 65535 rules".into(),
            });
        }
        Ok(RuleSet { rules })
    }

    /// A rule set allowing everything (tests, benchmarks).
    pub fn allow_all() -> RuleSet {
        RuleSet::parse("allow any").unwrap_or_default()
    }

    /// The first matching rule and its index.
    pub fn evaluate(&self, p: &ParsedPacket<'_>) -> Option<(u16, &Rule)> {
        self.rules
            .iter()
            .enumerate()
            .find(|(_, r)| r.matches(p))
            .map(|(i, r)| (i as u16, r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{build, parse_packet, Framing, TcpFlags};
    use std::net::Ipv4Addr;

    #[test]
    fn first_match_wins() {
        let rs = RuleSet::parse(
            "# policy\n\
             drop tcp from 10.0.0.66 to any\n\
             allow tcp from 10.0.0.0/8 to any dport 80-443 user 7 timeout 60 helper ftp\n\
             tunnel 0x10 proto udp to 2001:db8::/32\n\
             reject any\n",
        )
        .unwrap();
        assert_eq!(rs.rules.len(), 4);
        let pkt = |s: u8, dport: u16| {
            build::tcp(
                IpAddr::V4(Ipv4Addr::new(10, 0, 0, s)),
                999,
                IpAddr::V4(Ipv4Addr::new(1, 1, 1, 1)),
                dport,
                TcpFlags::default(),
                b"",
            )
            .unwrap()
        };
        let b = pkt(66, 80);
        let p = parse_packet(&b, Framing::Ip).unwrap();
        assert_eq!(rs.evaluate(&p).unwrap().1.action, Action::Drop);
        let b = pkt(5, 443);
        let p = parse_packet(&b, Framing::Ip).unwrap();
        let (i, r) = rs.evaluate(&p).unwrap();
        assert_eq!((i, r.user, r.timeout_s), (1, Some(UserId(7)), 60));
        let b = pkt(5, 8080);
        let p = parse_packet(&b, Framing::Ip).unwrap();
        assert_eq!(rs.evaluate(&p).unwrap().1.action, Action::Reject);
    }

    #[test]
    fn errors_name_the_line() {
        let e = RuleSet::parse("allow tcp\n\n allow from 300.0.0.1\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.to_string().contains("line 3"), "{e}");
        for bad in [
            "bogus",
            "allow dport",
            "allow dport 9-1",
            "allow proto xyz",
            "tunnel",
            "allow to ::/129",
            "allow helper tftp",
            "allow color red",
        ] {
            assert!(RuleSet::parse(bad).is_err(), "{bad}");
        }
    }
}
