//! User identities of claim 8 set by an authentication source: bindings of an address to a
//! user, with a lifetime, replicated to every member (`U` records, [`crate::record`]) and
//! applied to the connections their address starts.
//!
//! * A binding names the user of the connections an address **initiates**: the source of a
//!   connection's first packet. A new entry gets the user of a live binding of that address;
//!   without one it gets its rule's static `user` (so a binding takes precedence over the
//!   rule). Entries made before the binding, and related entries, keep what they had.
//! * Sans-I/O time: a binding expires `lifetime` after it was made, on the member's own clock.
//!   Records carry the *remaining* lifetime, so members whose clocks started at different
//!   times agree on the expiry (to within the record's transit).
//! * Unbinding leaves a tombstone until the binding would have expired, so an older copy of
//!   the binding that arrives late (a resync answer) does not bring it back.
//! * Bindings are ordered by `(version, origin)`: a member's bind or unbind takes the next
//!   version of the address it knows; a record replaces the slot only when it is newer.
//! * At most [`MAX_USER_BINDINGS`] addresses (tombstones included) and lifetimes of at most
//!   [`MAX_LIFETIME_S`] seconds: a bind beyond them is refused, and so is such a record.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::entry::UserId;
use crate::ids::{Millis, NodeId};

/// The most addresses a member keeps bindings (and tombstones) for.
pub const MAX_USER_BINDINGS: usize = 65_536;

/// The longest lifetime of a binding, in seconds (7 days).
pub const MAX_LIFETIME_S: u32 = 7 * 86_400;

/// One binding as it is replicated and listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserBinding {
    /// The address whose connections the user starts.
    pub addr: IpAddr,
    /// The user; `None`: unbound (a tombstone).
    pub user: Option<UserId>,
    /// Milliseconds left before it expires (at most [`MAX_LIFETIME_S`] seconds).
    pub remaining_ms: u32,
    /// Its version for the address (see the module documentation).
    pub version: u64,
    /// The member that made this version.
    pub origin: NodeId,
}

/// Why a binding was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// A lifetime of zero, or above [`MAX_LIFETIME_S`].
    #[error("lifetime {0} s: give 1 to {MAX_LIFETIME_S} seconds")]
    Lifetime(u64),
    /// The table holds [`MAX_USER_BINDINGS`] addresses already.
    #[error("{MAX_USER_BINDINGS} addresses are bound already")]
    Full,
    /// Unbinding an address that has no live binding.
    #[error("{0} is not bound")]
    NotBound(IpAddr),
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    user: Option<UserId>,
    expires: Millis,
    version: u64,
    origin: NodeId,
}

/// A member's bindings, keyed by address.
#[derive(Clone, Debug, Default)]
pub struct UserTable {
    slots: HashMap<IpAddr, Slot>,
}

impl UserTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    fn live(&self, now: Millis, addr: &IpAddr) -> Option<&Slot> {
        self.slots.get(addr).filter(|s| s.expires > now)
    }

    /// Makes a free slot for `addr` if there is none (dropping expired slots first).
    fn room(&mut self, now: Millis, addr: IpAddr) -> Result<(), UserError> {
        if self.slots.len() >= MAX_USER_BINDINGS && !self.slots.contains_key(&addr) {
            self.expire(now);
            if self.slots.len() >= MAX_USER_BINDINGS {
                return Err(UserError::Full);
            }
        }
        Ok(())
    }

    /// Binds `addr` to `user` for `lifetime_s` seconds from `now`, made by `origin`; returns
    /// the binding to replicate.
    ///
    /// # Errors
    /// [`UserError::Lifetime`], [`UserError::Full`].
    pub fn bind(
        &mut self,
        now: Millis,
        origin: NodeId,
        addr: IpAddr,
        user: UserId,
        lifetime_s: u64,
    ) -> Result<UserBinding, UserError> {
        if lifetime_s == 0 || lifetime_s > u64::from(MAX_LIFETIME_S) {
            return Err(UserError::Lifetime(lifetime_s));
        }
        self.room(now, addr)?;
        let version = self.slots.get(&addr).map_or(0, |s| s.version) + 1;
        let slot = Slot {
            user: Some(user),
            expires: Millis(now.0 + lifetime_s * 1000),
            version,
            origin,
        };
        self.slots.insert(addr, slot);
        Ok(binding(now, addr, &slot))
    }

    /// Unbinds `addr` (a tombstone until the binding would have expired); returns the
    /// tombstone to replicate.
    ///
    /// # Errors
    /// [`UserError::NotBound`] when `addr` has no live binding.
    pub fn unbind(
        &mut self,
        now: Millis,
        origin: NodeId,
        addr: IpAddr,
    ) -> Result<UserBinding, UserError> {
        let Some(s) = self.live(now, &addr).filter(|s| s.user.is_some()).copied() else {
            return Err(UserError::NotBound(addr));
        };
        let slot = Slot {
            user: None,
            version: s.version + 1,
            origin,
            ..s
        };
        self.slots.insert(addr, slot);
        Ok(binding(now, addr, &slot))
    }

    /// Applies a replicated binding (or tombstone) received at `now`. Returns whether it
    /// replaced what the table held (an older or equal version changes nothing).
    ///
    /// # Errors
    /// [`UserError::Lifetime`] for a remaining lifetime above [`MAX_LIFETIME_S`];
    /// [`UserError::Full`].
    pub fn apply(&mut self, now: Millis, b: &UserBinding) -> Result<bool, UserError> {
        if b.remaining_ms > MAX_LIFETIME_S * 1000 {
            return Err(UserError::Lifetime(u64::from(b.remaining_ms / 1000)));
        }
        if let Some(cur) = self.live(now, &b.addr) {
            if (b.version, b.origin.0) <= (cur.version, cur.origin.0) {
                return Ok(false);
            }
        }
        if b.remaining_ms == 0 {
            return Ok(false);
        }
        self.room(now, b.addr)?;
        self.slots.insert(
            b.addr,
            Slot {
                user: b.user,
                expires: Millis(now.0 + u64::from(b.remaining_ms)),
                version: b.version,
                origin: b.origin,
            },
        );
        Ok(true)
    }

    /// The user bound to `addr` at `now`, if any.
    pub fn user_of(&self, now: Millis, addr: IpAddr) -> Option<UserId> {
        self.live(now, &addr).and_then(|s| s.user)
    }

    /// Drops the slots expired at `now` (bindings and tombstones); returns how many bindings
    /// expired.
    pub fn expire(&mut self, now: Millis) -> usize {
        let mut n = 0;
        self.slots.retain(|_, s| {
            let keep = s.expires > now;
            n += usize::from(!keep && s.user.is_some());
            keep
        });
        n
    }

    /// The live slots at `now` (bindings and tombstones), in no particular order: what a
    /// resync answer replicates.
    pub fn slots(&self, now: Millis) -> impl Iterator<Item = UserBinding> + '_ {
        self.slots
            .iter()
            .filter(move |(_, s)| s.expires > now)
            .map(move |(a, s)| binding(now, *a, s))
    }

    /// The live bindings at `now` (no tombstones), sorted by address.
    pub fn bindings(&self, now: Millis) -> Vec<UserBinding> {
        let mut v: Vec<_> = self.slots(now).filter(|b| b.user.is_some()).collect();
        v.sort_by_key(|b| b.addr);
        v
    }

    /// Slots held (bindings and tombstones, expired or not yet dropped).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no slot is held.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

fn binding(now: Millis, addr: IpAddr, s: &Slot) -> UserBinding {
    UserBinding {
        addr,
        user: s.user,
        remaining_ms: u32::try_from(s.expires.since(now)).unwrap_or(u32::MAX),
        version: s.version,
        origin: s.origin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(x: u8) -> IpAddr {
        IpAddr::from([198, 18, 0, x])
    }

    #[test]
    fn bind_expires_after_its_lifetime() {
        let mut t = UserTable::new();
        let b = t
            .bind(Millis(1000), NodeId(1), addr(10), UserId(7), 60)
            .unwrap();
        assert_eq!(
            (b.remaining_ms, b.version, b.user),
            (60_000, 1, Some(UserId(7)))
        );
        assert_eq!(t.user_of(Millis(60_999), addr(10)), Some(UserId(7)));
        assert_eq!(t.user_of(Millis(61_000), addr(10)), None);
        assert_eq!(t.user_of(Millis(2000), addr(11)), None);
        assert_eq!(t.expire(Millis(61_000)), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn lifetimes_and_unbinds_are_checked() {
        let mut t = UserTable::new();
        let now = Millis(0);
        assert_eq!(
            t.bind(now, NodeId(1), addr(1), UserId(1), 0),
            Err(UserError::Lifetime(0))
        );
        let long = u64::from(MAX_LIFETIME_S) + 1;
        assert_eq!(
            t.bind(now, NodeId(1), addr(1), UserId(1), long),
            Err(UserError::Lifetime(long))
        );
        assert_eq!(
            t.unbind(now, NodeId(1), addr(1)),
            Err(UserError::NotBound(addr(1)))
        );
        t.bind(now, NodeId(1), addr(1), UserId(1), 10).unwrap();
        let tomb = t.unbind(Millis(4000), NodeId(2), addr(1)).unwrap();
        assert_eq!(
            (tomb.user, tomb.version, tomb.remaining_ms),
            (None, 2, 6000)
        );
        assert_eq!(t.user_of(Millis(4000), addr(1)), None);
        assert_eq!(
            t.unbind(Millis(4000), NodeId(1), addr(1)),
            Err(UserError::NotBound(addr(1)))
        );
        assert!(t.bindings(Millis(4000)).is_empty());
    }

    #[test]
    fn replicas_apply_newer_versions_only_and_count_remaining_time_on_their_own_clock() {
        let (mut a, mut b) = (UserTable::new(), UserTable::new());
        let bound = a
            .bind(Millis(500), NodeId(1), addr(3), UserId(9), 30)
            .unwrap();
        // b's clock reads 100 s when the record arrives
        assert_eq!(b.apply(Millis(100_000), &bound), Ok(true));
        assert_eq!(b.user_of(Millis(129_999), addr(3)), Some(UserId(9)));
        assert_eq!(b.user_of(Millis(130_000), addr(3)), None);
        // the tombstone replaces it; the late copy of the binding does not come back
        let tomb = a.unbind(Millis(1500), NodeId(1), addr(3)).unwrap();
        assert_eq!(b.apply(Millis(101_000), &tomb), Ok(true));
        assert_eq!(b.apply(Millis(101_001), &bound), Ok(false));
        assert_eq!(b.user_of(Millis(101_001), addr(3)), None);
        // equal versions: the higher origin wins, everywhere alike
        let from2 = UserBinding {
            user: Some(UserId(5)),
            origin: NodeId(2),
            ..tomb
        };
        assert_eq!(b.apply(Millis(101_002), &from2), Ok(true));
        assert_eq!(b.apply(Millis(101_003), &tomb), Ok(false));
        assert_eq!(b.user_of(Millis(101_003), addr(3)), Some(UserId(5)));
        // hostile lifetimes are refused; nothing remaining changes nothing
        let long = UserBinding {
            remaining_ms: MAX_LIFETIME_S * 1000 + 1,
            version: 99,
            ..from2
        };
        assert!(matches!(
            b.apply(Millis(0), &long),
            Err(UserError::Lifetime(_))
        ));
        let spent = UserBinding {
            remaining_ms: 0,
            addr: addr(4),
            ..from2
        };
        assert_eq!(b.apply(Millis(0), &spent), Ok(false));
        assert_eq!(b.user_of(Millis(0), addr(4)), None);
    }

    #[test]
    fn the_table_is_bounded() {
        let mut t = UserTable::new();
        for i in 0..MAX_USER_BINDINGS as u32 {
            let a = IpAddr::from((0x0a00_0000 + i).to_be_bytes());
            t.bind(Millis(0), NodeId(1), a, UserId(i), 1).unwrap();
        }
        let extra = addr(200);
        assert_eq!(
            t.bind(Millis(0), NodeId(1), extra, UserId(1), 5),
            Err(UserError::Full)
        );
        // once the others expired there is room again
        assert!(t.bind(Millis(1000), NodeId(1), extra, UserId(1), 5).is_ok());
        assert_eq!(t.len(), 1);
    }
}
