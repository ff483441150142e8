//! The device's ownership view: the chain it verified itself, and how fresh its last quorum
//! check of the registry nodes is. Persisted (the chain in `ops`, the rest in `meta`), so a
//! restarted device keeps obeying its owners when no node answers, and says how stale it is.

use latchkey_proto::chain::Chain;
use serde::{Deserialize, Serialize};

use crate::audit::ViewMark;
use crate::error::Result;
use crate::store::Store;

const META_KEY: &str = "view";

/// The chain plus what the last checks of the nodes said.
#[derive(Debug, Clone)]
pub struct View {
    pub chain: Chain,
    pub checks: CheckLog,
}

/// What the agent remembers of its ownership checks. Tick values are
/// [`crate::clock::Clock::ticks_ms`] of the boot named in `boot`: they mean nothing under
/// another boot, so [`View::adopt_boot`] converts them when the agent starts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckLog {
    /// The last check of this boot that reached a quorum of valid answers (ticks).
    pub last_quorum_ms: Option<u64>,
    /// The last check attempted, whatever its result (ticks).
    pub last_check_ms: Option<u64>,
    /// Valid answers the last check got, and how many it needed.
    pub last_answers: usize,
    pub last_needed: usize,
    /// Why the last check fell short, if it did.
    pub last_problem: Option<String>,
    /// Forks seen so far (two valid histories: an alarm for the owners).
    pub forks: usize,
    /// The boot the tick values belong to.
    #[serde(default)]
    pub boot: Option<String>,
    /// When the view was last saved (ticks): how much of a boot's up-time is known after it.
    #[serde(default)]
    pub saved_ms: Option<u64>,
    /// Up-time without a quorum carried over from earlier boots (owners' bound only).
    #[serde(default)]
    pub carried: Option<Carried>,
    /// Nonzero while ops the device made itself (endorsements) wait for a node to store them;
    /// bumped by each new one, so a publish that started before it does not clear it.
    #[serde(default)]
    pub unpublished: u64,
}

/// Up-time since the last quorum that happened in an earlier boot: `age_ms` at `since_ms`
/// (ticks of this boot), growing with this boot's ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Carried {
    pub age_ms: u64,
    pub since_ms: u64,
}

impl CheckLog {
    /// A check reached a quorum at `ticks` of `boot`.
    pub fn record_quorum(&mut self, boot: &str, ticks: u64) {
        self.boot = Some(boot.to_owned());
        self.last_quorum_ms = Some(ticks);
        self.carried = None;
    }
}

impl View {
    pub fn new(chain: Chain) -> Self {
        View {
            chain,
            checks: CheckLog::default(),
        }
    }

    /// Loads the chain and check log from the store.
    pub fn load(store: &Store) -> Result<Option<View>> {
        let Some(chain) = store.load_chain()? else {
            return Ok(None);
        };
        let checks = store
            .meta(META_KEY)?
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        Ok(Some(View { chain, checks }))
    }

    pub fn save(&self, store: &Store) -> Result<()> {
        store.save_chain(&self.chain)?;
        store.set_meta(
            META_KEY,
            &serde_json::to_string(&self.checks).expect("check log serializes"),
        )
    }

    /// Age of the last quorum at `now_ms` (ticks), if there was one in this boot.
    pub fn quorum_age_ms(&self, now_ms: u64) -> Option<u64> {
        Some(now_ms.saturating_sub(self.checks.last_quorum_ms?))
    }

    /// What guests are judged by: the age of the last quorum of *this* boot (`None`: none since
    /// it started, infinitely stale). Time the device was off is unknown, so a quorum from an
    /// earlier boot does not count for them.
    pub fn guest_age_ms(&self, boot: &str, ticks: u64) -> Option<u64> {
        if self.checks.boot.as_deref() != Some(boot) {
            return None;
        }
        self.quorum_age_ms(ticks)
    }

    /// What owners are judged by: the device's up-time since its last quorum, across reboots
    /// (time switched off is not counted; every reboot adds the penalty of
    /// [`View::adopt_boot`]). `None` if it never had a quorum.
    pub fn owner_age_ms(&self, boot: &str, ticks: u64) -> Option<u64> {
        if self.checks.boot.as_deref() != Some(boot) {
            return None;
        }
        if let Some(age) = self.quorum_age_ms(ticks) {
            return Some(age);
        }
        let c = self.checks.carried?;
        Some(c.age_ms.saturating_add(ticks.saturating_sub(c.since_ms)))
    }

    /// Moves the check log to `boot` at `ticks`: tick values of another boot are dropped, and
    /// the up-time without a quorum known at its last save, plus `penalty_ms` (an upper bound
    /// of the up-time after that save, e.g. the refresh interval), is carried for owners. A
    /// log without a boot (written before boots were recorded) carries nothing.
    pub fn adopt_boot(&mut self, boot: &str, ticks: u64, penalty_ms: u64) {
        let c = &mut self.checks;
        if c.boot.as_deref() == Some(boot) {
            return;
        }
        let known = c.boot.is_some();
        let saved = c.saved_ms;
        let age_at_save = match (c.last_quorum_ms, c.carried) {
            (Some(q), _) => Some(saved.unwrap_or(q).saturating_sub(q)),
            (None, Some(carried)) => Some(
                carried.age_ms.saturating_add(
                    saved
                        .unwrap_or(carried.since_ms)
                        .saturating_sub(carried.since_ms),
                ),
            ),
            (None, None) => None,
        };
        c.carried = age_at_save.filter(|_| known).map(|age| Carried {
            age_ms: age.saturating_add(penalty_ms),
            since_ms: ticks,
        });
        c.boot = Some(boot.to_owned());
        c.last_quorum_ms = None;
        c.last_check_ms = None;
        c.saved_ms = Some(ticks);
    }

    /// How much a decision taken now can trust this view.
    pub fn mark(&self, now_ms: u64, max_age_ms: u64) -> ViewMark {
        match self.quorum_age_ms(now_ms) {
            Some(age) => ViewMark {
                stale: age > max_age_ms,
                age_s: Some(u32::try_from(age / 1000).unwrap_or(u32::MAX)),
            },
            None => ViewMark {
                stale: true,
                age_s: None,
            },
        }
    }

    /// Whether to ask the nodes before acting: the last quorum is older than `max_age_ms` and
    /// the last attempt is older than `retry_ms` (so unreachable nodes do not slow every
    /// command down).
    pub fn needs_refresh(&self, now: u64, max_age_ms: u64, retry_ms: u64) -> bool {
        let quorum_old = self
            .checks
            .last_quorum_ms
            .is_none_or(|t| now.saturating_sub(t) > max_age_ms);
        let attempt_old = self
            .checks
            .last_check_ms
            .is_none_or(|t| now.saturating_sub(t) > retry_ms);
        quorum_old && attempt_old
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use latchkey_testkit::{TestDevice, T0};

    #[test]
    fn staleness_and_refresh() {
        let mut v = View::new(TestDevice::new(1, "d").chain);
        assert_eq!(
            v.mark(T0, 1000),
            ViewMark {
                stale: true,
                age_s: None
            }
        );
        assert!(v.needs_refresh(T0, 1000, 100));
        v.checks.last_quorum_ms = Some(T0);
        v.checks.last_check_ms = Some(T0);
        assert_eq!(
            v.mark(T0 + 5000, 10_000),
            ViewMark {
                stale: false,
                age_s: Some(5)
            }
        );
        assert!(v.mark(T0 + 20_000, 10_000).stale);
        assert!(!v.needs_refresh(T0 + 500, 1000, 100));
        assert!(v.needs_refresh(T0 + 1500, 1000, 100));
        v.checks.last_check_ms = Some(T0 + 1450);
        assert!(!v.needs_refresh(T0 + 1500, 1000, 100), "attempted just now");
    }

    #[test]
    fn ages_across_a_reboot() {
        let mut v = View::new(TestDevice::new(1, "d").chain);
        assert_eq!(v.guest_age_ms("b1", 5), None, "never had a quorum");
        v.adopt_boot("b1", 100, 60_000);
        assert_eq!(
            (v.guest_age_ms("b1", 200), v.owner_age_ms("b1", 200)),
            (None, None)
        );
        v.checks.record_quorum("b1", 1_000);
        assert_eq!(v.guest_age_ms("b1", 4_000), Some(3_000));
        assert_eq!(v.guest_age_ms("b2", 4_000), None, "ticks of another boot");
        v.checks.saved_ms = Some(11_000);
        // Rebooted: guests need a new quorum, owners carry 10 s + the penalty.
        v.adopt_boot("b2", 50, 60_000);
        assert_eq!(v.guest_age_ms("b2", 1_050), None);
        assert_eq!(v.owner_age_ms("b2", 1_050), Some(71_000));
        // Rebooted again without a quorum: the carried age keeps growing.
        v.checks.saved_ms = Some(5_050);
        v.adopt_boot("b3", 10, 60_000);
        assert_eq!(v.owner_age_ms("b3", 10), Some(70_000 + 5_000 + 60_000));
        // A quorum clears it.
        v.checks.record_quorum("b3", 20);
        assert_eq!(v.owner_age_ms("b3", 30), Some(10));
        // Adopting the same boot changes nothing.
        let before = v.checks.clone();
        v.adopt_boot("b3", 40, 60_000);
        assert_eq!(v.checks, before);
    }

    #[test]
    fn saved_and_loaded() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("s.db")).unwrap();
        assert!(View::load(&store).unwrap().is_none());
        let mut v = View::new(TestDevice::new(1, "d").chain);
        v.checks.forks = 2;
        v.checks.last_problem = Some("x".into());
        v.save(&store).unwrap();
        let back = View::load(&store).unwrap().unwrap();
        assert_eq!(back.checks, v.checks);
        assert_eq!(back.chain.head(), v.chain.head());
    }
}
