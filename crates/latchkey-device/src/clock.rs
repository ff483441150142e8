//! Time, injected: the pipeline asks a [`Clock`] for the wall time (which may be unknown) and
//! for monotonic ticks (which measure ages and never go back while the machine runs).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where the agent gets the time. `now_ms` is the wall clock, `None` when not set (a board
/// without a real-time clock before NTP): the agent then trusts no timestamp and hands out
/// challenges. `ticks_ms` is monotonic, for ages only.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> Option<u64>;

    /// Milliseconds for measuring intervals only (how old the ownership view is, when to retry
    /// the nodes), available even when [`Clock::now_ms`] is not: never used to judge a command's
    /// timestamp. Monotonic within one boot ([`Clock::boot_id`]), so setting the wall clock
    /// cannot make a stale view look fresh.
    fn ticks_ms(&self) -> u64;

    /// The boot the ticks belong to: ticks saved under another boot id mean nothing now.
    fn boot_id(&self) -> String;
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

    fn ticks_ms(&self) -> u64 {
        boottime_ms()
    }

    fn boot_id(&self) -> String {
        boot_id()
    }
}

/// `CLOCK_BOOTTIME` in milliseconds: monotonic, counts suspend, shared by every process of
/// this boot (so `latchkeyd status` can age what `latchkeyd run` saved). Setting the wall
/// clock does not move it.
pub fn boottime_ms() -> u64 {
    use nix::time::{clock_gettime, ClockId};
    match clock_gettime(ClockId::CLOCK_BOOTTIME) {
        Ok(t) => (t.tv_sec() as u64)
            .saturating_mul(1000)
            .saturating_add(t.tv_nsec() as u64 / 1_000_000),
        // Not on Linux, or a seccomp filter: the process-wide monotonic clock, whose origin is
        // this process's first call; `boot_id` then names the process, so nothing saved by an
        // earlier process is aged with it.
        Err(_) => fallback_ticks(),
    }
}

fn fallback_ticks() -> u64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`), or a per-process id where there is none.
pub fn boot_id() -> String {
    match std::fs::read_to_string("/proc/sys/kernel/random/boot_id") {
        Ok(s) if !s.trim().is_empty() => s.trim().to_owned(),
        _ => format!("process-{}", std::process::id()),
    }
}

/// A clock tests and benchmarks set by hand: a wall clock (`0` means not set) and separate
/// monotonic ticks, so a test can set the wall clock back while time keeps moving forward.
#[derive(Debug, Clone)]
pub struct ManualClock {
    wall: Arc<AtomicU64>,
    ticks: Arc<AtomicU64>,
    boot: Arc<Mutex<String>>,
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::at(0)
    }
}

impl ManualClock {
    /// Wall clock and ticks both at `ms`.
    pub fn at(ms: u64) -> Self {
        ManualClock {
            wall: Arc::new(AtomicU64::new(ms)),
            ticks: Arc::new(AtomicU64::new(ms)),
            boot: Arc::new(Mutex::new("boot-1".into())),
        }
    }
    /// Sets the wall clock only (as NTP or an attacker would); ticks do not move.
    pub fn set(&self, ms: u64) {
        self.wall.store(ms, Ordering::SeqCst);
    }
    /// Lets `ms` pass: the wall clock (if set) and the ticks move forward.
    pub fn advance(&self, ms: u64) {
        let _ = self
            .wall
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| {
                (w != 0).then_some(w + ms)
            });
        self.ticks.fetch_add(ms, Ordering::SeqCst);
    }
    pub fn unset(&self) {
        self.wall.store(0, Ordering::SeqCst);
    }
    /// A reboot: a new boot id and ticks starting again near zero.
    pub fn reboot(&self, name: &str) {
        *self.boot.lock().unwrap_or_else(|p| p.into_inner()) = name.to_owned();
        self.ticks.store(1, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> Option<u64> {
        match self.wall.load(Ordering::SeqCst) {
            0 => None,
            ms => Some(ms),
        }
    }

    fn ticks_ms(&self) -> u64 {
        self.ticks.load(Ordering::SeqCst)
    }

    fn boot_id(&self) -> String {
        self.boot.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Wall-clock milliseconds for bookkeeping that is not a security decision (relay duplicate
/// expiry), 0 if the clock is before 1970.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `ms` since the epoch as RFC 3339 in UTC, to the minute: `2026-11-30T21:40Z`.
pub fn utc_minute(ms: u64) -> String {
    let minutes = ms / 60_000;
    let (days, rem) = (minutes / 1440, minutes % 1440);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}Z",
        rem / 60,
        rem % 60
    )
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
        assert_eq!(c.ticks_ms(), 10);
        c.set(1);
        assert_eq!(
            c.ticks_ms(),
            10,
            "setting the wall clock does not move the ticks"
        );
        c.unset();
        assert_eq!(c.now_ms(), None);
        c.reboot("b2");
        assert_eq!((c.ticks_ms(), c.boot_id().as_str()), (1, "b2"));
    }

    #[test]
    fn untrusted_system_clock_is_unset() {
        assert_eq!(SystemClock { trusted: false }.now_ms(), None);
        assert!(SystemClock { trusted: true }.now_ms().unwrap() > CLOCK_FLOOR_MS);
    }

    #[test]
    fn boottime_is_monotonic_and_the_boot_has_an_id() {
        let a = boottime_ms();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(boottime_ms() >= a + 4);
        assert!(!boot_id().is_empty());
        assert_eq!(boot_id(), boot_id());
    }

    #[test]
    fn utc_minutes() {
        assert_eq!(utc_minute(0), "1970-01-01T00:00Z");
        assert_eq!(utc_minute(1_704_067_200_000), "2024-01-01T00:00Z");
        assert_eq!(utc_minute(1_764_538_859_000), "2025-11-30T21:40Z");
        assert_eq!(utc_minute(951_782_400_000), "2000-02-29T00:00Z");
    }
}
