//! Time, injected: the pipeline asks a [`Clock`], which may say the time is not known.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Where the agent gets the time. `None` means the clock is not set (a board without a
/// real-time clock before NTP): the agent then trusts no timestamp and hands out challenges.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> Option<u64>;

    /// Milliseconds for measuring intervals only (how old the ownership view is, when to retry
    /// the nodes), available even when [`Clock::now_ms`] is not: never used to judge a command.
    fn ticks_ms(&self) -> u64 {
        wall_ms()
    }
}

/// A system clock reading before this (2024-01-01T00:00:00Z) is taken as "not set": boards
/// without a battery-backed clock boot in 1970.
pub const CLOCK_FLOOR_MS: u64 = 1_704_067_200_000;

/// The operating system's clock.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    /// `false` forces clockless mode (every command needs a challenge), e.g. on a device whose
    /// clock is known to be untrustworthy.
    pub trusted: bool,
}

impl Clock for SystemClock {
    fn now_ms(&self) -> Option<u64> {
        if !self.trusted {
            return None;
        }
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()?
            .as_millis();
        let ms = u64::try_from(ms).ok()?;
        (ms >= CLOCK_FLOOR_MS).then_some(ms)
    }
}

/// A clock tests and benchmarks set by hand; `0` means not set.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    pub fn at(ms: u64) -> Self {
        ManualClock(Arc::new(AtomicU64::new(ms)))
    }
    pub fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
    pub fn unset(&self) {
        self.0.store(0, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> Option<u64> {
        match self.0.load(Ordering::SeqCst) {
            0 => None,
            ms => Some(ms),
        }
    }

    fn ticks_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Wall-clock milliseconds for bookkeeping that is not a security decision (retry timers,
/// cache ages), 0 if the clock is before 1970.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_starts_unset_and_moves() {
        let c = ManualClock::default();
        assert_eq!(c.now_ms(), None);
        c.set(5);
        c.advance(10);
        assert_eq!(c.now_ms(), Some(15));
        c.unset();
        assert_eq!(c.now_ms(), None);
    }

    #[test]
    fn untrusted_system_clock_is_unset() {
        assert_eq!(SystemClock { trusted: false }.now_ms(), None);
        assert!(SystemClock { trusted: true }.now_ms().unwrap() > CLOCK_FLOOR_MS);
    }
}
