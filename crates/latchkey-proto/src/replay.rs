//! Freshness: the replay window (timestamp within a skew window, nonce never seen) and, for a
//! device without a set clock, one-time challenges. Pure logic; the device backs [`NonceStore`]
//! with SQLite so the strike register survives restarts.

use core::fmt;
use std::collections::{HashMap, VecDeque};

use rand_core::{CryptoRng, RngCore};

use crate::command::NONCE_LEN;
use crate::error::{Error, Result};

/// Remembers nonces of accepted commands until they are too old to pass the window anyway.
pub trait NonceStore {
    type Error: fmt::Display;
    /// Records `nonce` seen with `timestamp_ms`; returns `false` if it was already recorded.
    /// Must be durable before returning `true` if replays are to be refused across crashes.
    fn insert_if_absent(
        &mut self,
        nonce: &[u8; NONCE_LEN],
        timestamp_ms: u64,
    ) -> Result<bool, Self::Error>;
    /// Forgets nonces whose timestamp is before `timestamp_ms`.
    fn forget_before(&mut self, timestamp_ms: u64) -> Result<(), Self::Error>;
}

/// An in-memory strike register (tests, and senders that track their own nonces).
#[derive(Debug, Default, Clone)]
pub struct MemoryNonceStore {
    seen: HashMap<[u8; NONCE_LEN], u64>,
}

impl MemoryNonceStore {
    pub fn len(&self) -> usize {
        self.seen.len()
    }
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

impl NonceStore for MemoryNonceStore {
    type Error = core::convert::Infallible;
    fn insert_if_absent(
        &mut self,
        nonce: &[u8; NONCE_LEN],
        timestamp_ms: u64,
    ) -> Result<bool, Self::Error> {
        Ok(self.seen.insert(*nonce, timestamp_ms).is_none())
    }
    fn forget_before(&mut self, timestamp_ms: u64) -> Result<(), Self::Error> {
        self.seen.retain(|_, t| *t >= timestamp_ms);
        Ok(())
    }
}

/// How far a command's timestamp may be from the device's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayWindow {
    /// Oldest accepted age. Nonces are kept this long.
    pub max_age_ms: u64,
    /// Furthest accepted lead of the sender's clock over the device's.
    pub max_lead_ms: u64,
}

impl Default for ReplayWindow {
    /// 60 s back (a phone on a slow relay) and 30 s ahead (ordinary clock drift).
    fn default() -> Self {
        ReplayWindow {
            max_age_ms: 60_000,
            max_lead_ms: 30_000,
        }
    }
}

impl ReplayWindow {
    /// Accepts `(timestamp_ms, nonce)` at device time `now_ms` at most once. A command outside
    /// the window is refused before the store is touched; one inside is recorded.
    pub fn check<S: NonceStore>(
        &self,
        now_ms: u64,
        timestamp_ms: u64,
        nonce: &[u8; NONCE_LEN],
        store: &mut S,
    ) -> Result<()> {
        if timestamp_ms.saturating_add(self.max_age_ms) < now_ms {
            return Err(Error::TooOld {
                skew_ms: now_ms - timestamp_ms,
                window_ms: self.max_age_ms,
            });
        }
        if timestamp_ms > now_ms.saturating_add(self.max_lead_ms) {
            return Err(Error::TooNew {
                skew_ms: timestamp_ms - now_ms,
                window_ms: self.max_lead_ms,
            });
        }
        match store.insert_if_absent(nonce, timestamp_ms) {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::Replayed),
            Err(e) => Err(Error::Store(e.to_string())),
        }
    }

    /// The timestamp before which stored nonces can be forgotten at device time `now_ms`.
    pub fn forget_horizon(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.max_age_ms)
    }
}

/// One-time challenges for a device whose clock is not set: it hands one out in a
/// `ChallengeRequired` response and accepts the command that echoes it, once.
#[derive(Debug, Clone)]
pub struct ChallengeBook {
    outstanding: VecDeque<[u8; NONCE_LEN]>,
    capacity: usize,
}

impl Default for ChallengeBook {
    fn default() -> Self {
        Self::new(64)
    }
}

impl ChallengeBook {
    /// Keeps at most `capacity` unanswered challenges; the oldest is dropped first.
    pub fn new(capacity: usize) -> Self {
        ChallengeBook {
            outstanding: VecDeque::with_capacity(capacity),
            capacity: capacity.max(1),
        }
    }

    pub fn issue(&mut self, rng: &mut (impl RngCore + CryptoRng)) -> [u8; NONCE_LEN] {
        let mut c = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut c);
        if self.outstanding.len() == self.capacity {
            self.outstanding.pop_front();
        }
        self.outstanding.push_back(c);
        c
    }

    /// Spends a challenge; a second use, or one never issued, is refused.
    pub fn redeem(&mut self, challenge: &[u8; NONCE_LEN]) -> Result<()> {
        let pos = self
            .outstanding
            .iter()
            .position(|c| c == challenge)
            .ok_or(Error::BadChallenge)?;
        self.outstanding.remove(pos);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    const NOW: u64 = 1_800_000_000_000;

    fn check(ts: u64, nonce: u8, store: &mut MemoryNonceStore) -> Result<()> {
        ReplayWindow::default().check(NOW, ts, &[nonce; 16], store)
    }

    #[test]
    fn accepts_inside_the_window_once() {
        let mut store = MemoryNonceStore::default();
        assert_eq!(check(NOW, 1, &mut store), Ok(()));
        assert_eq!(check(NOW, 1, &mut store), Err(Error::Replayed));
        assert_eq!(
            check(NOW - 1000, 1, &mut store),
            Err(Error::Replayed),
            "nonce alone decides"
        );
        assert_eq!(check(NOW, 2, &mut store), Ok(()));
    }

    #[test]
    fn edges_of_the_window() {
        let mut store = MemoryNonceStore::default();
        assert_eq!(check(NOW - 60_000, 1, &mut store), Ok(()));
        assert_eq!(
            check(NOW - 60_001, 2, &mut store),
            Err(Error::TooOld {
                skew_ms: 60_001,
                window_ms: 60_000
            })
        );
        assert_eq!(check(NOW + 30_000, 3, &mut store), Ok(()));
        assert_eq!(
            check(NOW + 30_001, 4, &mut store),
            Err(Error::TooNew {
                skew_ms: 30_001,
                window_ms: 30_000
            })
        );
    }

    #[test]
    fn refused_commands_leave_no_trace() {
        let mut store = MemoryNonceStore::default();
        assert!(check(NOW - 100_000, 1, &mut store).is_err());
        assert!(check(NOW + 100_000, 1, &mut store).is_err());
        assert!(store.is_empty());
        assert_eq!(check(NOW, 1, &mut store), Ok(()));
    }

    #[test]
    fn forgetting_is_safe_because_the_window_already_refuses() {
        let w = ReplayWindow::default();
        let mut store = MemoryNonceStore::default();
        w.check(NOW, NOW - 59_000, &[1; 16], &mut store).unwrap();
        let later = NOW + 5_000;
        store.forget_before(w.forget_horizon(later)).unwrap();
        assert!(store.is_empty());
        // The replay is now refused by the window instead of the store.
        assert!(matches!(
            w.check(later, NOW - 59_000, &[1; 16], &mut store),
            Err(Error::TooOld { .. })
        ));
    }

    #[test]
    fn clock_at_zero_does_not_underflow() {
        let mut store = MemoryNonceStore::default();
        assert_eq!(
            ReplayWindow::default().check(0, 0, &[1; 16], &mut store),
            Ok(())
        );
        assert_eq!(ReplayWindow::default().forget_horizon(0), 0);
        assert!(ReplayWindow::default()
            .check(0, u64::MAX - 1, &[2; 16], &mut store)
            .is_err());
    }

    #[test]
    fn challenges_are_one_time_and_bounded() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let mut book = ChallengeBook::new(2);
        let a = book.issue(&mut rng);
        assert_eq!(book.redeem(&a), Ok(()));
        assert_eq!(book.redeem(&a), Err(Error::BadChallenge));
        let b = book.issue(&mut rng);
        let _c = book.issue(&mut rng);
        let _d = book.issue(&mut rng);
        assert_eq!(
            book.redeem(&b),
            Err(Error::BadChallenge),
            "oldest dropped at capacity"
        );
        assert_eq!(book.redeem(&[0; 16]), Err(Error::BadChallenge));
    }
}
