//! Replays the owner fuzz corpus (`crates/latchkey-owner/fuzz/corpus/<target>/*`) through the
//! fuzz targets' own entries, so every input the fuzzer kept stays a regression test on stable;
//! and property tests of the calendar reader: any text is an answer or an error naming a line,
//! and a calendar written from random stays (folded anywhere, as RFC 5545 allows) reads back
//! as those stays.

#[path = "../fuzz/src/lib.rs"]
mod fuzz_entries;

use std::fs;
use std::path::{Path, PathBuf};

use jiff::civil::Date;
use jiff::tz::TimeZone;
use latchkey_owner::stays::parse_calendar;
use proptest::prelude::*;

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")
}

#[test]
fn every_corpus_file_replays_without_panicking() {
    let mut total = 0;
    for (target, entry) in fuzz_entries::TARGETS {
        let dir = corpus_root().join(target);
        let mut files: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
            .collect();
        files.sort();
        assert!(!files.is_empty(), "corpus/{target}/ is empty");
        for path in files {
            entry(&fs::read(&path).unwrap());
            total += 1;
        }
    }
    assert!(total >= 3);
}

/// Folds a content line RFC 5545's way at the given byte positions (on character boundaries).
fn fold(line: &str, at: &[usize]) -> String {
    let mut cuts: Vec<usize> = at
        .iter()
        .map(|a| a % (line.len() + 1))
        .filter(|a| *a > 0 && *a < line.len() && line.is_char_boundary(*a))
        .collect();
    cuts.sort();
    cuts.dedup();
    let mut out = String::new();
    let mut last = 0;
    for c in cuts {
        out.push_str(&line[last..c]);
        out.push_str("\r\n ");
        last = c;
    }
    out.push_str(&line[last..]);
    out
}

proptest! {
    #[test]
    fn any_text_is_events_or_an_error_naming_a_line(text in "(?s).{0,600}") {
        fuzz_entries::calendar(text.as_bytes());
    }

    #[test]
    fn any_mangled_export_is_events_or_an_error_naming_a_line(
        cut in 0usize..2000,
        junk in "[A-Z:;=\r\n -]{0,12}",
    ) {
        let good = include_str!("fixtures/airbnb.ics");
        let at = (0..=cut.min(good.len())).rev().find(|i| good.is_char_boundary(*i)).unwrap();
        let text = format!("{}{junk}{}", &good[..at], &good[at..]);
        fuzz_entries::calendar(text.as_bytes());
    }

    #[test]
    fn written_stays_read_back(
        stays in proptest::collection::vec(
            // TEXT escapes are the parser's: `\,` and `\;` here (a backslash before another
            // escape may be unescaped twice by it, which only changes how a summary shows).
            (0i32..3000, 1i32..30, "[a-z0-9]{1,20}", "[A-Za-z ,;]{0,40}", any::<bool>()),
            0..20,
        ),
        folds in proptest::collection::vec(0usize..200, 0..4),
    ) {
        let base = jiff::civil::date(2026, 1, 1);
        let mut text = String::from("BEGIN:VCALENDAR\r\nVERSION:2.0\r\n");
        let mut want = Vec::new();
        for (i, (start, nights, uid, summary, blocked)) in stays.iter().enumerate() {
            let check_in: Date = base.checked_add(jiff::Span::new().days(*start)).unwrap();
            let check_out: Date = check_in.checked_add(jiff::Span::new().days(*nights)).unwrap();
            let uid = format!("{uid}-{i}@example.com");
            let summary = if *blocked { "Airbnb (Not available)".to_owned() } else { format!("Reserved {summary}") };
            let escaped = summary.replace('\\', "\\\\").replace(',', "\\,").replace(';', "\\;");
            text.push_str("BEGIN:VEVENT\r\n");
            text.push_str(&fold(&format!("UID:{uid}"), &folds));
            text.push_str("\r\n");
            text.push_str(&fold(&format!("SUMMARY:{escaped}"), &folds));
            text.push_str(&format!(
                "\r\nDTSTART;VALUE=DATE:{}\r\nDTEND;VALUE=DATE:{}\r\nEND:VEVENT\r\n",
                check_in.strftime("%Y%m%d"),
                check_out.strftime("%Y%m%d")
            ));
            want.push((uid, summary.trim().to_owned(), check_in, check_out, *blocked));
        }
        text.push_str("END:VCALENDAR\r\n");
        let got: Vec<_> = parse_calendar(&text, &TimeZone::UTC)
            .unwrap()
            .into_iter()
            .map(|e| (e.uid, e.summary, e.check_in, e.check_out, e.blocked))
            .collect();
        prop_assert_eq!(got, want);
    }
}
