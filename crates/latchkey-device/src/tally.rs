//! Counting refusals instead of writing them: anyone can post junk to the device or its public
//! mailbox, and make signing keys for free, so a refusal nobody with standing sent must not
//! cost a signed entry and a SQLite write each — or a flood could bury the entries an owner
//! needs. Such refusals are counted per (class, stage, code) in memory and written as one
//! signed summary per interval (docs/PROTOCOL.md §8.3, §9).
//!
//! A pure struct: the caller passes the time, so every rule is unit-tested without a clock.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use latchkey_proto::audit::{RefusalClass, RefusalCount, RefusalSummary, Stage, MAX_SUMMARY_ROWS};
use latchkey_proto::keys::PublicKey;

/// How long one summary counts (monotonic milliseconds).
pub const SUMMARY_INTERVAL_MS: u64 = 60_000;
/// Refusals from one sender with standing written on their own per interval; the rest are
/// counted. Bounds what even a real (e.g. revoked) guest can add to the log.
pub const INDIVIDUAL_PER_SENDER: u32 = 16;
/// Senders tracked for the cap; beyond this every refusal with standing is counted.
const MAX_SENDERS: usize = 1024;
/// Envelopes remembered as already written, so another copy is counted, not written.
const LOGGED_ENVELOPES: usize = 4096;

/// What to do with one refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Write it as its own entry.
    Write,
    /// Count it in the summary under this class.
    Count(RefusalClass),
}

#[derive(Debug)]
pub struct RefusalTally {
    interval_ms: u64,
    /// Ticks when the open summary counted its first refusal.
    opened: Option<u64>,
    first_ms: Option<u64>,
    last_ms: Option<u64>,
    rows: BTreeMap<(RefusalClass, Stage, u16), u32>,
    /// Refusals written on their own this interval, per sender.
    per_sender: HashMap<PublicKey, u32>,
    per_sender_since: u64,
    logged: HashSet<[u8; 32]>,
    logged_order: VecDeque<[u8; 32]>,
}

impl Default for RefusalTally {
    fn default() -> Self {
        RefusalTally::new(SUMMARY_INTERVAL_MS)
    }
}

impl RefusalTally {
    pub fn new(interval_ms: u64) -> Self {
        RefusalTally {
            interval_ms: interval_ms.max(1),
            opened: None,
            first_ms: None,
            last_ms: None,
            rows: BTreeMap::new(),
            per_sender: HashMap::new(),
            per_sender_since: 0,
            logged: HashSet::new(),
            logged_order: VecDeque::new(),
        }
    }

    /// Decides how a refusal of an authenticated command is recorded. `standing` is whether
    /// the sender is a current owner or the subject of a grant chain rooted at one.
    pub fn classify(
        &mut self,
        ticks: u64,
        standing: bool,
        sender: &PublicKey,
        envelope: &[u8; 32],
    ) -> Disposition {
        if !standing {
            return Disposition::Count(RefusalClass::NoStanding);
        }
        if self.logged.contains(envelope) {
            return Disposition::Count(RefusalClass::Repeat);
        }
        if ticks.saturating_sub(self.per_sender_since) >= self.interval_ms {
            self.per_sender.clear();
            self.per_sender_since = ticks;
        }
        if !self.per_sender.contains_key(sender) && self.per_sender.len() >= MAX_SENDERS {
            return Disposition::Count(RefusalClass::OverCap);
        }
        let written = self.per_sender.entry(*sender).or_insert(0);
        if *written >= INDIVIDUAL_PER_SENDER {
            return Disposition::Count(RefusalClass::OverCap);
        }
        *written += 1;
        Disposition::Write
    }

    /// Remembers that an entry naming `envelope` was written, so later copies are counted.
    pub fn logged(&mut self, envelope: [u8; 32]) {
        if envelope == [0; 32] || !self.logged.insert(envelope) {
            return;
        }
        self.logged_order.push_back(envelope);
        if self.logged_order.len() > LOGGED_ENVELOPES {
            if let Some(old) = self.logged_order.pop_front() {
                self.logged.remove(&old);
            }
        }
    }

    /// Counts one refusal. Returns the previous summary when this refusal starts a new one
    /// (its interval is over, or it is full): the caller writes it.
    pub fn count(
        &mut self,
        ticks: u64,
        now_ms: Option<u64>,
        class: RefusalClass,
        stage: Stage,
        code: u16,
    ) -> Option<RefusalSummary> {
        let key = (class, stage, code);
        let full = !self.rows.contains_key(&key) && self.rows.len() >= MAX_SUMMARY_ROWS;
        let saturated = self.rows.get(&key).is_some_and(|c| *c == u32::MAX);
        let closed = if full || saturated {
            self.take()
        } else {
            self.due(ticks)
        };
        if self.opened.is_none() {
            self.opened = Some(ticks);
            self.first_ms = now_ms;
        }
        if self.first_ms.is_none() {
            self.first_ms = now_ms;
        }
        if now_ms.is_some() {
            self.last_ms = now_ms;
        }
        *self.rows.entry(key).or_insert(0) += 1;
        closed
    }

    /// The open summary if its interval is over.
    pub fn due(&mut self, ticks: u64) -> Option<RefusalSummary> {
        match self.opened {
            Some(opened) if ticks.saturating_sub(opened) >= self.interval_ms => self.take(),
            _ => None,
        }
    }

    /// The open summary now, if it counted anything.
    pub fn take(&mut self) -> Option<RefusalSummary> {
        self.opened.take()?;
        let rows = std::mem::take(&mut self.rows)
            .into_iter()
            .map(|((class, stage, code), count)| RefusalCount {
                class,
                stage,
                code,
                count,
            })
            .collect();
        let first_ms = self.first_ms.take();
        let last_ms = self.last_ms.take().or(first_ms);
        Some(RefusalSummary {
            first_ms,
            last_ms,
            rows,
        })
    }

    /// Refusals counted and not yet written.
    pub fn pending(&self) -> u64 {
        self.rows.values().map(|c| u64::from(*c)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use latchkey_testkit::person;

    const U: RefusalClass = RefusalClass::Unauthenticated;

    #[test]
    fn one_summary_per_interval() {
        let mut t = RefusalTally::new(1_000);
        for i in 0..10_000u64 {
            assert!(t
                .count(i / 20, Some(5_000 + i / 20), U, Stage::Decrypt, 1)
                .is_none());
        }
        assert_eq!(t.pending(), 10_000);
        assert!(t.due(999).is_none());
        let s = t.due(1_000).expect("interval over");
        assert_eq!(s.total(), 10_000);
        assert_eq!((s.first_ms, s.last_ms), (Some(5_000), Some(5_499)));
        assert!(t.take().is_none(), "nothing open");
        // The first refusal after the interval closes the old summary and opens a new one.
        t.count(0, None, U, Stage::Size, 1);
        let closed = t.count(1_000, None, U, Stage::Size, 1).expect("closed");
        assert_eq!(closed.total(), 1);
        assert_eq!(closed.first_ms, None);
        assert_eq!(t.pending(), 1);
    }

    #[test]
    fn rows_are_sorted_keys_and_a_full_summary_is_closed() {
        let mut t = RefusalTally::new(1_000);
        let mut closed = Vec::new();
        for round in 0..3 {
            for class in RefusalClass::ALL {
                for stage in Stage::ALL {
                    if let Some(s) = t.count(round, None, class, stage, 1) {
                        closed.push(s);
                    }
                }
            }
        }
        closed.extend(t.take());
        let total: u64 = closed.iter().map(RefusalSummary::total).sum();
        assert_eq!(total, 3 * 4 * 13);
        for s in &closed {
            assert!(s.rows.len() <= MAX_SUMMARY_ROWS);
            assert!(s.rows.windows(2).all(|w| w[0].key() < w[1].key()));
        }
    }

    #[test]
    fn strangers_repeats_and_chatty_senders_are_counted() {
        let mut t = RefusalTally::new(1_000);
        let owner = person(1).public_key();
        let stranger = person(2).public_key();
        assert_eq!(
            t.classify(0, false, &stranger, &[1; 32]),
            Disposition::Count(RefusalClass::NoStanding)
        );
        assert_eq!(t.classify(0, true, &owner, &[2; 32]), Disposition::Write);
        t.logged([2; 32]);
        assert_eq!(
            t.classify(0, true, &owner, &[2; 32]),
            Disposition::Count(RefusalClass::Repeat)
        );
        for i in 1..INDIVIDUAL_PER_SENDER {
            assert_eq!(
                t.classify(10, true, &owner, &[i as u8 + 10; 32]),
                Disposition::Write
            );
        }
        assert_eq!(
            t.classify(10, true, &owner, &[200; 32]),
            Disposition::Count(RefusalClass::OverCap)
        );
        // A new interval writes again.
        assert_eq!(
            t.classify(1_000, true, &owner, &[201; 32]),
            Disposition::Write
        );
    }
}
