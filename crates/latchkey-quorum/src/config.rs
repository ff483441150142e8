//! Knobs, with defaults that are safe for a home device and a phone.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumConfig {
    /// How many nodes to ask per check (k).
    pub sample: usize,
    /// Fewest valid answers for a check to count as a quorum; below it the view is marked
    /// degraded and its age reported.
    pub min_answers: usize,
    /// Per-node time limit for one request.
    pub timeout: Duration,
    /// How many nodes to publish an op to.
    pub publish_to: usize,
    /// Fewest nodes that must durably store an op before publishing succeeds.
    pub min_acks: usize,
}

impl Default for QuorumConfig {
    /// Ask 5, need 3: one lying or down node never decides, and a node that withholds is
    /// outvoted by any honest one among the five.
    fn default() -> Self {
        QuorumConfig {
            sample: 5,
            min_answers: 3,
            timeout: Duration::from_secs(3),
            publish_to: 5,
            min_acks: 3,
        }
    }
}
