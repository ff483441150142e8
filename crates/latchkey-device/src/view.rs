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

/// What the agent remembers of its ownership checks ([`crate::clock::Clock::ticks_ms`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckLog {
    /// The last check that reached a quorum of valid answers.
    pub last_quorum_ms: Option<u64>,
    /// The last check attempted, whatever its result.
    pub last_check_ms: Option<u64>,
    /// Valid answers the last check got, and how many it needed.
    pub last_answers: usize,
    pub last_needed: usize,
    /// Why the last check fell short, if it did.
    pub last_problem: Option<String>,
    /// Forks seen so far (two valid histories: an alarm for the owners).
    pub forks: usize,
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

    /// Age of the last quorum at `now_ms`, if there was one.
    pub fn quorum_age_ms(&self, now_ms: u64) -> Option<u64> {
        Some(now_ms.saturating_sub(self.checks.last_quorum_ms?))
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
