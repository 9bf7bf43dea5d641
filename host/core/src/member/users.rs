//! The user bindings of claim 8 on a member: an authentication source binds or unbinds an
//! address through the control API, the member applies it to its state core and replicates
//! it to every peer (`U` records); a resync answer carries every live binding.

use std::net::IpAddr;
use std::time::Duration;

use super::{Member, To};
use crate::entry::UserId;
use crate::node_table::NodeSpecificTable;
use crate::record::Record;
use crate::users::{UserBinding, UserError};

impl<T: NodeSpecificTable> Member<T> {
    /// Binds `addr` to `user` for `lifetime` (whole seconds) and replicates the binding: new
    /// connections `addr` starts get `user` on whichever member handles them.
    ///
    /// # Errors
    /// [`UserError::Lifetime`] (0 s or above 7 days), [`UserError::Full`].
    pub fn user_bind(
        &mut self,
        t: super::Time,
        user: UserId,
        addr: IpAddr,
        lifetime: Duration,
    ) -> Result<UserBinding, UserError> {
        let me = self.cfg.node;
        let b = self
            .core
            .users_mut()
            .bind(t.millis(), me, addr, user, lifetime.as_secs())?;
        self.send(To::Peers, Record::UserBinding(b));
        Ok(b)
    }

    /// Unbinds `addr` and replicates the unbinding.
    ///
    /// # Errors
    /// [`UserError::NotBound`].
    pub fn user_unbind(&mut self, t: super::Time, addr: IpAddr) -> Result<UserBinding, UserError> {
        let me = self.cfg.node;
        let b = self.core.users_mut().unbind(t.millis(), me, addr)?;
        self.send(To::Peers, Record::UserBinding(b));
        Ok(b)
    }

    /// The live bindings, sorted by address, with their remaining lifetimes at `t`.
    pub fn user_bindings(&self, t: super::Time) -> Vec<UserBinding> {
        self.core.users().bindings(t.millis())
    }

    /// A `U` record from a peer.
    pub(super) fn on_user_binding(&mut self, t: super::Time, b: &UserBinding) {
        if self.core.users_mut().apply(t.millis(), b).is_err() {
            self.counters.user_bindings_refused += 1;
        }
    }

    /// Sends every live binding and tombstone to `to` (part of a resync answer).
    pub(super) fn send_user_bindings(&mut self, t: super::Time, to: crate::ids::NodeId) {
        let all: Vec<UserBinding> = self.core.users().slots(t.millis()).collect();
        for b in all {
            self.send(To::Node(to), Record::UserBinding(b));
        }
    }
}
