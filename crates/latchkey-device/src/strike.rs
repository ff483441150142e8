//! The strike register of one run of the agent, in memory (docs/PROTOCOL.md §6).
//!
//! Nonces are not written to disk: a restart forgets them, and what stops a command captured
//! before the restart is the **restart barrier** instead ([`crate::store::Store::boot`]): every
//! timestamp a run accepts is at or under a durable lease written before it is accepted, and
//! the next run asks a challenge of every command timestamped at or under that lease. So the
//! register only has to refuse repeats within one run, which memory does exactly.
//!
//! **Invariant: the register holds every nonce accepted in this run with a timestamp at or
//! above its floor, and the floor never goes down**: pruning raises it, and [`StrikeRegister::
//! insert`] refuses a timestamp under it (the window check may have run before a prune).

use std::collections::HashMap;

use latchkey_proto::command::NONCE_LEN;

/// What the register said of an authorized command's nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strike {
    /// New; recorded.
    Recorded,
    /// Seen before in this run.
    Replayed,
    /// The timestamp is under the floor the register was pruned to (a prune ran after the
    /// window check): too old.
    BelowFloor { floor: u64 },
}

/// Nonces seen in this run, with their timestamps.
#[derive(Debug, Default)]
pub struct StrikeRegister {
    seen: HashMap<[u8; NONCE_LEN], u64>,
    floor: u64,
}

impl StrikeRegister {
    /// Records `nonce` with `ts_ms`. With a trusted clock (`judged`), a timestamp under the
    /// floor is refused; without one (challenge mode) the timestamp means nothing and the
    /// nonce is kept until the floor passes it like any other.
    pub fn insert(&mut self, nonce: &[u8; NONCE_LEN], ts_ms: u64, judged: bool) -> Strike {
        if judged && ts_ms < self.floor {
            return Strike::BelowFloor { floor: self.floor };
        }
        if self.seen.contains_key(nonce) {
            return Strike::Replayed;
        }
        self.seen.insert(*nonce, ts_ms);
        Strike::Recorded
    }

    /// Forgets a nonce recorded by a command that then did not run (a spent use limit, a
    /// binding to another phone): the command was refused, so its nonce is not spent, as when
    /// the register was one transaction with those checks.
    pub fn release(&mut self, nonce: &[u8; NONCE_LEN]) {
        self.seen.remove(nonce);
    }

    /// Raises the floor to `floor` (never lowers it) and forgets every nonce under it; returns
    /// how many went.
    pub fn prune(&mut self, floor: u64) -> usize {
        self.floor = self.floor.max(floor);
        let before = self.seen.len();
        let keep = self.floor;
        self.seen.retain(|_, ts| *ts >= keep);
        before - self.seen.len()
    }

    pub fn floor(&self) -> u64 {
        self.floor
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_taken_once_until_the_floor_passes_it() {
        let mut r = StrikeRegister::default();
        assert_eq!(r.insert(&[1; 16], 1_000, true), Strike::Recorded);
        assert_eq!(r.insert(&[1; 16], 1_000, true), Strike::Replayed);
        // Whatever timestamp the copy carries: the nonce decides.
        assert_eq!(r.insert(&[1; 16], 5_000, true), Strike::Replayed);
        assert_eq!(r.insert(&[2; 16], 2_000, false), Strike::Recorded);
        assert_eq!(r.prune(1_500), 1);
        assert_eq!(r.len(), 1);
        // Under the floor: refused as too old, never recorded, with or without its old nonce.
        assert_eq!(
            r.insert(&[1; 16], 1_000, true),
            Strike::BelowFloor { floor: 1_500 }
        );
        assert_eq!(
            r.insert(&[3; 16], 1_499, true),
            Strike::BelowFloor { floor: 1_500 }
        );
        assert_eq!(r.insert(&[3; 16], 1_500, true), Strike::Recorded);
        // Challenge mode ignores the floor: the challenge, not the timestamp, is fresh.
        assert_eq!(r.insert(&[4; 16], 10, false), Strike::Recorded);
    }

    #[test]
    fn the_floor_never_goes_down_and_release_frees_only_its_nonce() {
        let mut r = StrikeRegister::default();
        r.prune(2_000);
        assert_eq!(r.prune(1_000), 0);
        assert_eq!(r.floor(), 2_000);
        assert_eq!(r.insert(&[1; 16], 2_500, true), Strike::Recorded);
        assert_eq!(r.insert(&[2; 16], 2_500, true), Strike::Recorded);
        r.release(&[1; 16]);
        assert_eq!(r.insert(&[1; 16], 2_500, true), Strike::Recorded);
        assert_eq!(r.insert(&[2; 16], 2_500, true), Strike::Replayed);
        assert!(!r.is_empty());
    }
}
