//! Freshness: the replay window (timestamp within a skew window, nonce never seen) and, for a
//! device without a set clock, one-time challenges. Pure logic; the device backs [`NonceStore`]
//! with SQLite so the strike register survives restarts.

use core::fmt;
use std::collections::{HashMap, VecDeque};

use rand_core::{CryptoRng, RngCore};

use crate::command::NONCE_LEN;
use crate::error::{Error, Result};
use crate::keys::PublicKey;

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
    /// Accepts `(timestamp_ms, nonce)` at device time `now_ms`, with the device's durable
    /// high-water mark of time `mark_ms` (0 if none), at most once. A command outside the
    /// window ([`ReplayWindow::check_time`]) is refused before the store is touched; one inside
    /// is recorded. Forget nonces only below [`ReplayWindow::floor`] of the same `now` and mark.
    pub fn check<S: NonceStore>(
        &self,
        now_ms: u64,
        mark_ms: u64,
        timestamp_ms: u64,
        nonce: &[u8; NONCE_LEN],
        store: &mut S,
    ) -> Result<()> {
        self.check_time(now_ms, mark_ms, timestamp_ms)?;
        match store.insert_if_absent(nonce, timestamp_ms) {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::Replayed),
            Err(e) => Err(Error::Store(e.to_string())),
        }
    }

    /// The time half of [`ReplayWindow::check`], with the device's durable high-water mark of
    /// time `mark_ms` (0 if none): accepts `max(now, mark) − max_age ≤ timestamp ≤ now + max_lead`.
    ///
    /// The lower bound uses the mark so that setting the clock back (by less than the window)
    /// cannot make a timestamp whose nonce was already forgotten acceptable again; the upper
    /// bound uses `now` only, so accepted timestamps (which raise the mark) cannot ratchet the
    /// mark into the future.
    pub fn check_time(&self, now_ms: u64, mark_ms: u64, timestamp_ms: u64) -> Result<()> {
        let floor = self.floor(now_ms, mark_ms);
        if timestamp_ms < floor {
            let reference = now_ms.max(mark_ms);
            return Err(Error::TooOld {
                skew_ms: reference - timestamp_ms,
                window_ms: self.max_age_ms,
            });
        }
        if timestamp_ms > now_ms.saturating_add(self.max_lead_ms) {
            return Err(Error::TooNew {
                skew_ms: timestamp_ms - now_ms,
                window_ms: self.max_lead_ms,
            });
        }
        Ok(())
    }

    /// The oldest timestamp accepted at `now_ms` with high-water mark `mark_ms`. Nonces with a
    /// timestamp below it may be forgotten: the window refuses them from now on, because the
    /// mark never goes down.
    pub fn floor(&self, now_ms: u64, mark_ms: u64) -> u64 {
        now_ms.max(mark_ms).saturating_sub(self.max_age_ms)
    }

    /// Whether a clock reading `now_ms` is so far behind the mark that it is not to be trusted
    /// (it was set back, or it lost power): more than the window's age behind.
    pub fn clock_behind(&self, now_ms: u64, mark_ms: u64) -> bool {
        now_ms.saturating_add(self.max_age_ms) < mark_ms
    }
}

/// One-time challenges for a device whose clock is not set (or not trusted): it hands one out
/// in a `ChallengeRequired` response and accepts the command that echoes it, once, from the
/// sender it was issued to, within its lifetime.
///
/// Bounded two ways so that no one can flush another sender's challenge: at most
/// `per_sender` outstanding per sender (a sender's own oldest goes first), and `capacity` in
/// all (the oldest overall goes first). The device issues challenges only to senders it would
/// authorize, so strangers with fresh keys never reach the book.
#[derive(Debug, Clone)]
pub struct ChallengeBook {
    outstanding: VecDeque<Outstanding>,
    capacity: usize,
    per_sender: usize,
    lifetime_ms: u64,
}

#[derive(Debug, Clone)]
struct Outstanding {
    challenge: [u8; NONCE_LEN],
    sender: PublicKey,
    issued_ms: u64,
}

/// Outstanding challenges per sender.
pub const CHALLENGES_PER_SENDER: usize = 4;
/// How long a challenge can be redeemed (device's monotonic milliseconds).
pub const CHALLENGE_LIFETIME_MS: u64 = 120_000;

impl Default for ChallengeBook {
    fn default() -> Self {
        Self::new(64)
    }
}

impl ChallengeBook {
    /// Keeps at most `capacity` unanswered challenges, [`CHALLENGES_PER_SENDER`] per sender,
    /// each for [`CHALLENGE_LIFETIME_MS`].
    pub fn new(capacity: usize) -> Self {
        Self::with_limits(capacity, CHALLENGES_PER_SENDER, CHALLENGE_LIFETIME_MS)
    }

    pub fn with_limits(capacity: usize, per_sender: usize, lifetime_ms: u64) -> Self {
        let capacity = capacity.max(1);
        ChallengeBook {
            outstanding: VecDeque::with_capacity(capacity),
            capacity,
            per_sender: per_sender.max(1),
            lifetime_ms,
        }
    }

    /// A new challenge for `sender` at device time `now_ms` (monotonic; any unit-consistent
    /// clock that never goes back).
    pub fn issue(
        &mut self,
        sender: &PublicKey,
        now_ms: u64,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> [u8; NONCE_LEN] {
        self.expire(now_ms);
        let mut c = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut c);
        let mine = self
            .outstanding
            .iter()
            .filter(|o| o.sender == *sender)
            .count();
        if mine >= self.per_sender {
            if let Some(pos) = self.outstanding.iter().position(|o| o.sender == *sender) {
                self.outstanding.remove(pos);
            }
        } else if self.outstanding.len() >= self.capacity {
            self.outstanding.pop_front();
        }
        self.outstanding.push_back(Outstanding {
            challenge: c,
            sender: *sender,
            issued_ms: now_ms,
        });
        c
    }

    /// Spends a challenge issued to `sender`; a second use, an expired one, one issued to
    /// someone else or one never issued is refused.
    pub fn redeem(
        &mut self,
        sender: &PublicKey,
        challenge: &[u8; NONCE_LEN],
        now_ms: u64,
    ) -> Result<()> {
        self.expire(now_ms);
        let pos = self
            .outstanding
            .iter()
            .position(|o| o.challenge == *challenge && o.sender == *sender)
            .ok_or(Error::BadChallenge)?;
        self.outstanding.remove(pos);
        Ok(())
    }

    /// Outstanding challenges (all senders).
    pub fn len(&self) -> usize {
        self.outstanding.len()
    }

    pub fn is_empty(&self) -> bool {
        self.outstanding.is_empty()
    }

    fn expire(&mut self, now_ms: u64) {
        let lifetime = self.lifetime_ms;
        self.outstanding
            .retain(|o| now_ms.saturating_sub(o.issued_ms) <= lifetime && o.issued_ms <= now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    const NOW: u64 = 1_800_000_000_000;

    fn check(ts: u64, nonce: u8, store: &mut MemoryNonceStore) -> Result<()> {
        ReplayWindow::default().check(NOW, 0, ts, &[nonce; 16], store)
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
        w.check(NOW, 0, NOW - 59_000, &[1; 16], &mut store).unwrap();
        let later = NOW + 5_000;
        let mark = later;
        store.forget_before(w.floor(later, mark)).unwrap();
        assert!(store.is_empty());
        // The replay is now refused by the window instead of the store.
        assert!(matches!(
            w.check(later, mark, NOW - 59_000, &[1; 16], &mut store),
            Err(Error::TooOld { .. })
        ));
        // Also with the clock set back to before the nonce was forgotten: the mark holds.
        assert!(matches!(
            w.check(NOW, mark, NOW - 59_000, &[1; 16], &mut store),
            Err(Error::TooOld { .. })
        ));
    }

    #[test]
    fn clock_at_zero_does_not_underflow() {
        let mut store = MemoryNonceStore::default();
        assert_eq!(
            ReplayWindow::default().check(0, 0, 0, &[1; 16], &mut store),
            Ok(())
        );
        assert_eq!(ReplayWindow::default().floor(0, 0), 0);
        assert!(ReplayWindow::default()
            .check(0, 0, u64::MAX - 1, &[2; 16], &mut store)
            .is_err());
    }

    #[test]
    fn challenges_are_one_time_and_bounded() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let owner = key(1);
        let mut book = ChallengeBook::with_limits(2, 4, 1000);
        let a = book.issue(&owner, 0, &mut rng);
        assert_eq!(book.redeem(&owner, &a, 1), Ok(()));
        assert_eq!(book.redeem(&owner, &a, 1), Err(Error::BadChallenge));
        let b = book.issue(&key(2), 0, &mut rng);
        let _c = book.issue(&key(3), 0, &mut rng);
        let _d = book.issue(&key(4), 0, &mut rng);
        assert_eq!(
            book.redeem(&key(2), &b, 0),
            Err(Error::BadChallenge),
            "oldest dropped at capacity"
        );
        assert_eq!(book.redeem(&owner, &[0; 16], 0), Err(Error::BadChallenge));
    }

    #[test]
    fn a_challenge_belongs_to_its_sender_and_expires() {
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let mut book = ChallengeBook::with_limits(64, 4, 1000);
        let a = book.issue(&key(1), 100, &mut rng);
        assert_eq!(book.redeem(&key(2), &a, 100), Err(Error::BadChallenge));
        assert_eq!(book.redeem(&key(1), &a, 1100), Ok(()), "at the edge");
        let b = book.issue(&key(1), 2000, &mut rng);
        assert_eq!(book.redeem(&key(1), &b, 3001), Err(Error::BadChallenge));
        assert!(book.is_empty());
    }

    #[test]
    fn one_sender_cannot_flush_another_senders_challenge() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let mut book = ChallengeBook::with_limits(64, 4, 1000);
        let owner = key(1);
        let mine = book.issue(&owner, 0, &mut rng);
        for _ in 0..1000 {
            book.issue(&key(2), 0, &mut rng);
        }
        assert_eq!(book.len(), 5, "the other sender holds at most four");
        // A sender's own flood pushes out only its own oldest.
        let first = book.issue(&key(3), 0, &mut rng);
        for _ in 0..4 {
            book.issue(&key(3), 0, &mut rng);
        }
        assert_eq!(book.redeem(&key(3), &first, 0), Err(Error::BadChallenge));
        assert_eq!(book.redeem(&owner, &mine, 0), Ok(()));
    }

    #[test]
    fn the_mark_keeps_the_floor_up_after_a_rollback() {
        let w = ReplayWindow::default();
        // Captured at NOW, nonce forgotten at NOW + 61 s, clock set back to NOW + 10 s.
        let mark = NOW + 61_000;
        assert!(matches!(
            w.check_time(NOW + 10_000, mark, NOW),
            Err(Error::TooOld { .. })
        ));
        assert_eq!(
            w.check_time(NOW + 10_000, 0, NOW),
            Ok(()),
            "without the mark"
        );
        // The upper bound follows the clock, not the mark.
        assert!(matches!(
            w.check_time(NOW, NOW + 20_000, NOW + 31_000),
            Err(Error::TooNew { .. })
        ));
        assert!(!w.clock_behind(NOW, NOW + 60_000));
        assert!(w.clock_behind(NOW, NOW + 60_001));
        assert_eq!(w.floor(NOW, NOW + 61_000), NOW + 1_000);
    }

    fn key(n: u8) -> PublicKey {
        crate::keys::SigningKey::from_bytes(&[n; 32]).public_key()
    }
}
