//! One entry per fuzz target. Each feeds its input to the decoder the owner core uses and checks
//! what a success promises.
//!
//! Also compiled, unchanged, into `crates/latchkey-owner/tests/fuzz_corpus.rs`, which replays
//! `corpus/<target>/` as an ordinary test. It may use only `latchkey_owner`, `jiff` and std.

use jiff::tz::TimeZone;
use latchkey_owner::stays::{parse_calendar, MAX_CALENDAR_EVENTS};

/// A target's entry: takes any input; panics only on a bug.
pub type Entry = fn(&[u8]);

/// Every target: the name of its binary and corpus directory, and its entry.
pub const TARGETS: &[(&str, Entry)] = &[("calendar", calendar)];

/// A calendar export as `latchkey stays sync` reads it (UTF-8 text, checked by the reader
/// first): either an error naming a line of the input, or events that each end after they
/// start, with a UID, no UID twice.
pub fn calendar(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_calendar(text, &TimeZone::UTC) {
        Ok(events) => {
            assert!(events.len() <= MAX_CALENDAR_EVENTS);
            let mut uids = std::collections::HashSet::new();
            for e in &events {
                assert!(e.check_out > e.check_in, "{e:?}");
                assert!(!e.uid.is_empty());
                assert!(uids.insert(e.uid.clone()), "UID twice: {}", e.uid);
            }
        }
        Err(latchkey_owner::Error::BadCalendar { line, .. }) => {
            let lines = text.split('\n').count().max(1);
            // Line 0: refused whole for its size, before any line is read.
            let oversized = text.len() > latchkey_owner::stays::MAX_CALENDAR_BYTES;
            assert!(
                (line >= 1 || oversized) && line <= lines,
                "line {line} of {lines}"
            );
        }
        Err(other) => panic!("a calendar fails only as BadCalendar: {other}"),
    }
}
