//! A fault injector between an endpoint and its socket: seeded loss and duplication, and
//! partitions (all frames to and from chosen peers dropped). Used by tests and by `clusterd`'s
//! `partition` control command.

use std::collections::BTreeSet;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::core::ids::NodeId;

/// What to inject.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultConfig {
    /// Probability of dropping any frame (0.0..=1.0).
    pub loss: f64,
    /// Probability of sending a frame twice.
    pub duplicate: f64,
    /// Peers cut off in both directions.
    pub partitioned: BTreeSet<NodeId>,
}

/// The injector: decides per frame.
#[derive(Clone, Debug)]
pub struct FaultInjector {
    /// Current settings (may be changed at run time).
    pub config: FaultConfig,
    rng: ChaCha8Rng,
    /// Frames dropped so far.
    pub dropped: u64,
    /// Frames duplicated so far.
    pub duplicated: u64,
}

impl FaultInjector {
    /// An injector with `config`, seeded.
    pub fn new(config: FaultConfig, seed: u64) -> Self {
        Self {
            config,
            rng: ChaCha8Rng::seed_from_u64(seed),
            dropped: 0,
            duplicated: 0,
        }
    }

    /// An injector that injects nothing.
    pub fn none() -> Self {
        Self::new(FaultConfig::default(), 0)
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random::<f64>() < p
    }

    /// How many copies (0, 1 or 2) of a frame to `to` go out.
    pub fn outbound(&mut self, to: NodeId) -> usize {
        if self.config.partitioned.contains(&to) || self.chance(self.config.loss) {
            self.dropped += 1;
            return 0;
        }
        if self.chance(self.config.duplicate) {
            self.duplicated += 1;
            return 2;
        }
        1
    }

    /// Whether a received frame (whose sender is read from its header) gets through.
    pub fn inbound(&mut self, frame: &[u8]) -> bool {
        if let Some(s) = frame.get(4..6) {
            let from = NodeId(u16::from_be_bytes([s[0], s[1]]));
            if self.config.partitioned.contains(&from) {
                self.dropped += 1;
                return false;
            }
        }
        true
    }
}
