//! Weekly schedules (grant extension `0x81`, docs/PROTOCOL.md §4): windows of local wall time
//! such as "Mon–Fri 08:00–12:00" in an IANA time zone, evaluated on the device.
//!
//! The time zone rules come from jiff's **embedded** copy of the IANA database
//! (`TimeZoneDatabase::bundled()` with the `tzdb-bundle-always` feature), never from
//! `/usr/share/zoneinfo`: the protocol core reads no file, and the owner who issues a grant, the
//! device that enforces it and the vectors all evaluate it with the same rules, whatever (or
//! whether any) zoneinfo is installed on a minimal Raspberry Pi image.
//!
//! Evaluation is by wall clock: an instant matches a window when its local date and time in the
//! schedule's zone fall on one of the window's days and in `[start, end)`. So in the repeated
//! autumn hour both instants that show the same wall time match, and wall times skipped in
//! spring match no instant at all.

use core::fmt;

use jiff::tz::{TimeZone, TimeZoneDatabase};
use jiff::Timestamp;

use crate::codec::{check_len, Reader, Writer};
use crate::error::{Error, Result};
use crate::grant::{Extension, EXT_WEEKLY_SCHEDULE};

/// At most this many windows per schedule.
pub const MAX_WINDOWS: usize = 16;
/// Longest time zone name, in bytes (the longest IANA name today is 32).
pub const MAX_TZ_NAME_LEN: usize = 64;
/// The largest `0x81` value: `str8` name (1 + 64) and `list8` of 16 windows of 5 bytes.
pub const MAX_SCHEDULE_LEN: usize = 1 + MAX_TZ_NAME_LEN + 1 + MAX_WINDOWS * Window::LEN;
/// Minutes in a day; a window's end may equal it (`24:00`).
pub const MINUTES_PER_DAY: u16 = 1440;
/// How far [`WeeklySchedule::next_open_ms`] looks ahead: a week plus a day, so a DST shift or a
/// window that starts just after `t` a week later is still found.
pub const LOOKAHEAD_MS: u64 = 8 * DAY_MS;

const WHAT: &str = "weekly-schedule extension";
const DAY_MS: u64 = 86_400_000;
const WEEK_MS: i64 = 7 * DAY_MS as i64;
const MINUTE_MS: i64 = 60_000;
const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const DAY_LABELS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// A set of weekdays: bit 0 is Monday … bit 6 Sunday; bit 7 is always clear.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Days(u8);

impl Days {
    pub const MON: Days = Days(1);
    pub const TUE: Days = Days(1 << 1);
    pub const WED: Days = Days(1 << 2);
    pub const THU: Days = Days(1 << 3);
    pub const FRI: Days = Days(1 << 4);
    pub const SAT: Days = Days(1 << 5);
    pub const SUN: Days = Days(1 << 6);
    pub const WEEKDAYS: Days = Days(0x1f);
    pub const WEEKEND: Days = Days(0x60);
    pub const ALL: Days = Days(0x7f);

    /// The set with these bits; refused if empty or bit 7 is set.
    pub fn from_bits(bits: u8) -> Result<Self> {
        if bits == 0 {
            return Err(invalid("a window covers no day"));
        }
        if bits & 0x80 != 0 {
            return Err(invalid(
                "a window's day bit 7 is set (bits 0-6 are Monday-Sunday)",
            ));
        }
        Ok(Days(bits))
    }

    pub fn bits(self) -> u8 {
        self.0
    }

    /// Whether the set holds the day `monday_zero` (0 = Monday … 6 = Sunday).
    pub fn contains(self, monday_zero: u8) -> bool {
        monday_zero < 7 && self.0 & (1 << monday_zero) != 0
    }

    pub fn union(self, other: Days) -> Days {
        Days(self.0 | other.0)
    }

    /// Days in CLI syntax: `mon-fri`, `sat,sun`, `mon,wed-fri`.
    pub fn to_spec(self) -> String {
        self.runs()
            .map(|(a, b)| match b - a {
                0 => DAY_NAMES[a].to_owned(),
                1 => format!("{},{}", DAY_NAMES[a], DAY_NAMES[b]),
                _ => format!("{}-{}", DAY_NAMES[a], DAY_NAMES[b]),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Days for people: `Mon–Fri`, `Sat, Sun`, `Every day`.
    pub fn describe(self) -> String {
        if self == Days::ALL {
            return "Every day".to_owned();
        }
        self.runs()
            .map(|(a, b)| match b - a {
                0 => DAY_LABELS[a].to_owned(),
                1 => format!("{}, {}", DAY_LABELS[a], DAY_LABELS[b]),
                _ => format!("{}–{}", DAY_LABELS[a], DAY_LABELS[b]),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Maximal runs of consecutive days, Monday first, as `(first, last)` indices.
    fn runs(self) -> impl Iterator<Item = (usize, usize)> {
        let mut runs = Vec::new();
        let mut day = 0;
        while day < 7 {
            if self.contains(day as u8) {
                let start = day;
                while day + 1 < 7 && self.contains(day as u8 + 1) {
                    day += 1;
                }
                runs.push((start, day));
            }
            day += 1;
        }
        runs.into_iter()
    }

    /// Parses `mon`, `mon-fri`, `fri-mon` (wraps over the weekend), `mon,wed,fri`, `mon,wed-fri`
    /// (ASCII case ignored).
    pub fn parse(text: &str) -> Result<Self> {
        let mut bits = 0u8;
        for part in text.split(',') {
            let part = part.trim();
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (day_index(a)?, day_index(b)?),
                None => {
                    let d = day_index(part)?;
                    (d, d)
                }
            };
            let mut d = a;
            loop {
                bits |= 1 << d;
                if d == b {
                    break;
                }
                d = (d + 1) % 7;
            }
        }
        Days::from_bits(bits)
    }
}

impl fmt::Debug for Days {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Days({})", self.to_spec())
    }
}

fn day_index(name: &str) -> Result<u8> {
    let lower = name.trim().to_ascii_lowercase();
    DAY_NAMES
        .iter()
        .position(|d| *d == lower)
        .map(|i| i as u8)
        .ok_or_else(|| {
            spec_error(
                name,
                "is not a day; use mon, tue, wed, thu, fri, sat or sun, a range such as mon-fri, or a list such as sat,sun",
            )
        })
}

/// One weekly window: on each of `days`, local wall time in `[start_min, end_min)` minutes after
/// midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    pub days: Days,
    pub start_min: u16,
    pub end_min: u16,
}

impl Window {
    /// Encoded length: `days u8 || start u16 || end u16`.
    pub const LEN: usize = 5;

    /// A window; refused unless `start < end ≤ 1440`.
    pub fn new(days: Days, start_min: u16, end_min: u16) -> Result<Self> {
        let w = Window {
            days,
            start_min,
            end_min,
        };
        w.check()?;
        Ok(w)
    }

    fn check(&self) -> Result<()> {
        Days::from_bits(self.days.0)?;
        if self.end_min > MINUTES_PER_DAY {
            return Err(invalid("a window ends after 24:00 (1440 minutes)"));
        }
        if self.start_min >= self.end_min {
            return Err(invalid("a window ends before it starts or is empty"));
        }
        Ok(())
    }

    /// Parses the CLI syntax `DAYS HH:MM-HH:MM`, e.g. `mon-fri 08:00-12:00`, `sat 10:00-24:00`.
    pub fn parse(spec: &str) -> Result<Self> {
        let spec = spec.trim();
        let Some((days, times)) = spec.rsplit_once(char::is_whitespace) else {
            return Err(spec_error(
                spec,
                "needs days and a time range, e.g. \"mon-fri 08:00-12:00\"",
            ));
        };
        let days = Days::parse(days.trim())?;
        let Some((start, end)) = times.split_once('-') else {
            return Err(spec_error(
                times,
                "is not a time range; write it as HH:MM-HH:MM, e.g. 08:00-12:00",
            ));
        };
        let (start_min, end_min) = (parse_time(start)?, parse_time(end)?);
        if start_min == MINUTES_PER_DAY {
            return Err(spec_error(start, "24:00 may only end a window"));
        }
        if start_min >= end_min {
            return Err(spec_error(
                times,
                "does not end after it starts; a window that crosses midnight is two: \
                 \"fri 22:00-24:00\" and \"sat 00:00-02:00\"",
            ));
        }
        Window::new(days, start_min, end_min)
    }

    /// The window in CLI syntax (what [`Window::parse`] reads back).
    pub fn to_spec(&self) -> String {
        format!(
            "{} {}-{}",
            self.days.to_spec(),
            hhmm(self.start_min),
            hhmm(self.end_min)
        )
    }

    /// For people: `Mon–Fri 08:00–12:00`.
    pub fn describe(&self) -> String {
        format!(
            "{} {}–{}",
            self.days.describe(),
            hhmm(self.start_min),
            hhmm(self.end_min)
        )
    }

    fn matches(&self, weekday: u8, minute: u16) -> bool {
        self.days.contains(weekday) && self.start_min <= minute && minute < self.end_min
    }

    fn encode(&self, w: &mut Writer) {
        w.u8(self.days.0);
        w.u16(self.start_min);
        w.u16(self.end_min);
    }

    fn bytes(&self) -> [u8; Window::LEN] {
        let [s0, s1] = self.start_min.to_be_bytes();
        let [e0, e1] = self.end_min.to_be_bytes();
        [self.days.0, s0, s1, e0, e1]
    }
}

fn parse_time(text: &str) -> Result<u16> {
    let bad = || {
        spec_error(
            text,
            "is not a time; write HH:MM from 00:00 to 24:00, e.g. 08:00",
        )
    };
    let (h, m) = text.trim().split_once(':').ok_or_else(bad)?;
    // Hours of one or two digits, minutes of exactly two: `8:00` and `08:00`, never `08:0`.
    let number = |s: &str, lengths: core::ops::RangeInclusive<usize>| {
        (lengths.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u16>().ok())
            .flatten()
            .ok_or_else(bad)
    };
    let (h, m) = (number(h, 1..=2)?, number(m, 2..=2)?);
    if h > 24 || m > 59 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

fn hhmm(minutes: u16) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

/// A weekly schedule: 1–16 windows in one IANA time zone. The zone's rules are resolved once,
/// when the schedule is built or decoded, so checking an instant costs one offset lookup.
#[derive(Clone)]
pub struct WeeklySchedule {
    tz_name: String,
    windows: Vec<Window>,
    tz: TimeZone,
}

impl PartialEq for WeeklySchedule {
    fn eq(&self, other: &Self) -> bool {
        // The zone follows from its name: one database.
        self.tz_name == other.tz_name && self.windows == other.windows
    }
}
impl Eq for WeeklySchedule {}

impl fmt::Debug for WeeklySchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeeklySchedule")
            .field("tz", &self.tz_name)
            .field("windows", &self.windows)
            .finish()
    }
}

impl fmt::Display for WeeklySchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// The zone named `name` in the embedded database, with its canonical spelling.
fn lookup_zone(name: &str) -> Result<TimeZone> {
    let unknown = || Error::UnknownTimeZone(name.chars().take(MAX_TZ_NAME_LEN).collect());
    if name.is_empty() || name.len() > MAX_TZ_NAME_LEN {
        return Err(unknown());
    }
    let tz = TimeZoneDatabase::bundled()
        .get(name)
        .map_err(|_| unknown())?;
    // `Etc/Unknown` is jiff's stand-in for "no zone", not a place anyone's door is in.
    if tz.iana_name().is_none_or(|n| n == "Etc/Unknown") {
        return Err(unknown());
    }
    Ok(tz)
}

impl WeeklySchedule {
    /// A schedule from windows in any order (sorted, repeats dropped) in the zone `tz`, looked
    /// up ignoring ASCII case and stored in the database's spelling (`europe/amsterdam` →
    /// `Europe/Amsterdam`).
    pub fn new(tz: &str, mut windows: Vec<Window>) -> Result<Self> {
        let zone = lookup_zone(tz.trim())?;
        let tz_name = zone.iana_name().unwrap_or_default().to_owned();
        windows.sort_by_key(Window::bytes);
        windows.dedup();
        if windows.is_empty() {
            return Err(invalid(
                "it has no window (leave the extension out for no schedule)",
            ));
        }
        check_len(WHAT, windows.len(), MAX_WINDOWS)?;
        for w in &windows {
            w.check()?;
        }
        Ok(WeeklySchedule {
            tz_name,
            windows,
            tz: zone,
        })
    }

    /// Parses the CLI syntax: one spec per window (`"mon-fri 08:00-12:00"`,
    /// `"sat,sun 10:00-11:00"`) and an IANA zone name.
    pub fn parse_spec(specs: &[&str], tz: &str) -> Result<Self> {
        if specs.is_empty() {
            return Err(spec_error("", "no weekly window given"));
        }
        if specs.len() > MAX_WINDOWS {
            return Err(Error::ScheduleSpec {
                spec: format!("{} windows", specs.len()),
                why: format!("a schedule holds at most {MAX_WINDOWS} windows"),
            });
        }
        let windows = specs
            .iter()
            .map(|s| Window::parse(s))
            .collect::<Result<Vec<_>>>()?;
        WeeklySchedule::new(tz, windows)
    }

    /// The zone's IANA name, as the database spells it.
    pub fn tz_name(&self) -> &str {
        &self.tz_name
    }

    /// The windows, in canonical (encoded) order.
    pub fn windows(&self) -> &[Window] {
        &self.windows
    }

    /// Each window in CLI syntax, for `--weekly` and the app's week picker.
    pub fn to_specs(&self) -> Vec<String> {
        self.windows.iter().map(Window::to_spec).collect()
    }

    /// For people: `Mon–Fri 08:00–12:00 (Europe/Amsterdam)`; windows joined with `; `.
    pub fn describe(&self) -> String {
        let windows: Vec<String> = self.windows.iter().map(Window::describe).collect();
        format!("{} ({})", windows.join("; "), self.tz_name)
    }

    /// The extension value: `str8 tz || list8 of (days u8, start u16, end u16)`.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes8(self.tz_name.as_bytes());
        w.list8(&self.windows, |w, win| win.encode(w));
        w.into_inner()
    }

    pub fn to_extension(&self) -> Extension {
        Extension {
            tag: EXT_WEEKLY_SCHEDULE,
            value: self.encode(),
        }
    }

    /// Decodes an extension value in canonical form: the zone as the embedded database spells
    /// it, 1–16 valid windows in strictly ascending order of their five bytes, nothing after.
    pub fn decode(value: &[u8]) -> Result<Self> {
        check_len(WHAT, value.len(), MAX_SCHEDULE_LEN)?;
        let mut r = Reader::new(WHAT, value);
        let name = r.str8("time zone name", MAX_TZ_NAME_LEN)?;
        let windows = r.list8(MAX_WINDOWS, |r| {
            Ok(Window {
                days: Days(r.u8()?),
                start_min: r.u16()?,
                end_min: r.u16()?,
            })
        })?;
        r.finish()?;
        if name.is_empty() {
            return Err(invalid("its time zone name is empty"));
        }
        if windows.is_empty() {
            return Err(invalid(
                "it has no window (leave the extension out for no schedule)",
            ));
        }
        for w in &windows {
            w.check()?;
        }
        if windows.windows(2).any(|p| p[0].bytes() >= p[1].bytes()) {
            return Err(invalid(
                "its windows must be distinct and in ascending order of their bytes",
            ));
        }
        let tz = lookup_zone(&name)?;
        if tz.iana_name() != Some(name.as_str()) {
            return Err(invalid(
                "its time zone name is not spelled as in the IANA database (letter case)",
            ));
        }
        Ok(WeeklySchedule {
            tz_name: name,
            windows,
            tz,
        })
    }

    /// Local weekday (0 = Monday) and milliseconds since local midnight of `t_ms`, or `None`
    /// for an instant outside what the zone rules cover (after the year 9999).
    fn local(&self, t_ms: u64) -> Option<(u8, i64)> {
        let ts = Timestamp::from_millisecond(i64::try_from(t_ms).ok()?).ok()?;
        let dt = self.tz.to_datetime(ts);
        let weekday = dt.weekday().to_monday_zero_offset() as u8;
        let ms = ((i64::from(dt.hour()) * 60 + i64::from(dt.minute())) * 60
            + i64::from(dt.second()))
            * 1000
            + i64::from(dt.millisecond());
        Some((weekday, ms))
    }

    /// Whether the instant `t_ms` (Unix milliseconds) falls in a window.
    pub fn allows(&self, t_ms: u64) -> bool {
        let Some((weekday, ms)) = self.local(t_ms) else {
            return false;
        };
        let minute = (ms / MINUTE_MS) as u16;
        self.windows.iter().any(|w| w.matches(weekday, minute))
    }

    /// The earliest instant `≥ t_ms` that [`allows`](Self::allows) accepts, if there is one
    /// within [`LOOKAHEAD_MS`].
    pub fn next_open_ms(&self, t_ms: u64) -> Option<u64> {
        let limit = t_ms.saturating_add(LOOKAHEAD_MS);
        let mut t = t_ms;
        // Each round either lands on a window's start (the offset did not change on the way, so
        // the wall clock shows exactly that start) or on a zone transition, where the wall clock
        // jumps and is read again. A week holds a handful of transitions at most.
        for _ in 0..64 {
            if t > limit {
                return None;
            }
            let (weekday, ms) = self.local(t)?;
            let minute = (ms / MINUTE_MS) as u16;
            if self.windows.iter().any(|w| w.matches(weekday, minute)) {
                return Some(t);
            }
            let now_in_week = i64::from(weekday) * DAY_MS as i64 + ms;
            let wait = self
                .windows
                .iter()
                .flat_map(|w| {
                    (0..7u8).filter(move |d| w.days.contains(*d)).map(move |d| {
                        i64::from(d) * DAY_MS as i64 + i64::from(w.start_min) * MINUTE_MS
                    })
                })
                .map(|start| (start - now_in_week).rem_euclid(WEEK_MS))
                .filter(|wait| *wait > 0)
                .min()?;
            let by_wall = t.saturating_add(wait as u64);
            let ts = Timestamp::from_millisecond(i64::try_from(t).ok()?).ok()?;
            let transition = self
                .tz
                .following(ts)
                .next()
                .and_then(|tr| u64::try_from(tr.timestamp().as_millisecond()).ok());
            t = match transition {
                Some(tr) if tr < by_wall => tr,
                _ => by_wall,
            };
        }
        None
    }
}

/// When every schedule allows `t_ms`: the earliest instant `≥ t_ms` all of them allow, searched
/// within [`LOOKAHEAD_MS`] (a delegated grant's schedule and its parent's must both allow).
pub fn next_open_all(schedules: &[WeeklySchedule], t_ms: u64) -> Option<u64> {
    let limit = t_ms.saturating_add(LOOKAHEAD_MS);
    let mut t = t_ms;
    // Each round moves t to the latest of the schedules' next openings, which no common
    // opening can precede; it stops when all agree. Bounded for schedules that never meet.
    for _ in 0..256 {
        let mut latest = t;
        for s in schedules {
            latest = latest.max(s.next_open_ms(t)?);
        }
        if latest > limit {
            return None;
        }
        if latest == t {
            return Some(t);
        }
        t = latest;
    }
    None
}

fn invalid(why: &'static str) -> Error {
    Error::Invalid { what: WHAT, why }
}

fn spec_error(spec: &str, why: &str) -> Error {
    Error::ScheduleSpec {
        spec: spec.chars().take(64).collect(),
        why: why.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> u64 {
        let ts: Timestamp = text.parse().unwrap();
        ts.as_millisecond() as u64
    }

    #[test]
    fn parses_cli_syntax() {
        let s = WeeklySchedule::parse_spec(
            &["mon-fri 08:00-12:00", "SAT,Sun 10:00-24:00"],
            "europe/amsterdam",
        )
        .unwrap();
        assert_eq!(s.tz_name(), "Europe/Amsterdam");
        assert_eq!(s.windows()[0].days, Days::WEEKDAYS);
        assert_eq!(
            (s.windows()[0].start_min, s.windows()[0].end_min),
            (480, 720)
        );
        assert_eq!(s.windows()[1].days, Days::WEEKEND);
        assert_eq!(s.windows()[1].end_min, 1440);
        assert_eq!(
            s.describe(),
            "Mon–Fri 08:00–12:00; Sat, Sun 10:00–24:00 (Europe/Amsterdam)"
        );
        assert_eq!(s.to_specs(), ["mon-fri 08:00-12:00", "sat,sun 10:00-24:00"]);
        let again = WeeklySchedule::parse_spec(
            &s.to_specs().iter().map(String::as_str).collect::<Vec<_>>(),
            s.tz_name(),
        )
        .unwrap();
        assert_eq!(again, s);
    }

    #[test]
    fn day_lists_and_wrapping_ranges() {
        assert_eq!(Days::parse("mon,wed,fri").unwrap().bits(), 0b10101);
        assert_eq!(Days::parse("mon,wed-fri").unwrap().bits(), 0b11101);
        assert_eq!(Days::parse("fri-mon").unwrap().bits(), 0b111_0001);
        assert_eq!(Days::parse("mon-sun").unwrap(), Days::ALL);
        assert_eq!(Days::ALL.describe(), "Every day");
        assert_eq!(Days(0b10101).describe(), "Mon, Wed, Fri");
        assert_eq!(Days(0b11101).to_spec(), "mon,wed-fri");
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        let err = |specs: &[&str], tz| WeeklySchedule::parse_spec(specs, tz).unwrap_err();
        for (spec, needle) in [
            ("mon-fri", "needs days and a time range"),
            ("mo 08:00-12:00", "is not a day"),
            ("mon 8-12", "is not a time"),
            ("mon 08:00-25:00", "is not a time"),
            ("mon 08:60-09:00", "is not a time"),
            ("mon 24:00-24:00", "24:00 may only end"),
            ("mon 12:00-08:00", "crosses midnight"),
            ("mon 08:00-08:00", "does not end after it starts"),
            ("mon 08:00", "is not a time range"),
            ("mon 08:000-09:00", "is not a time"),
        ] {
            let e = err(&[spec], "UTC");
            assert!(
                matches!(&e, Error::ScheduleSpec { .. }) && e.to_string().contains(needle),
                "{spec}: {e}"
            );
        }
        assert!(matches!(err(&[], "UTC"), Error::ScheduleSpec { .. }));
        assert_eq!(
            err(&["mon 08:00-09:00"], "Mars/Olympus_Mons"),
            Error::UnknownTimeZone("Mars/Olympus_Mons".into())
        );
        assert!(matches!(
            err(&["mon 08:00-09:00"], "Etc/Unknown"),
            Error::UnknownTimeZone(_)
        ));
        let many: Vec<String> = (0..17)
            .map(|h| format!("mon {h:02}:00-{h:02}:30"))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(err(&many, "UTC").to_string().contains("at most 16"));
    }

    #[test]
    fn encoding_round_trips_and_is_canonical() {
        let s =
            WeeklySchedule::parse_spec(&["sat 10:00-11:00", "mon-fri 08:00-12:00"], "UTC").unwrap();
        let bytes = s.encode();
        assert_eq!(
            bytes,
            [
                &[3u8][..],
                b"UTC",
                &[2, 0x1f, 0x01, 0xe0, 0x02, 0xd0, 0x20, 0x02, 0x58, 0x02, 0x94]
            ]
            .concat()
        );
        assert_eq!(WeeklySchedule::decode(&bytes).unwrap(), s);
        // Swapped windows, lower-case zone, trailing byte, bit 7, empty list: all refused.
        let mut swapped = bytes.clone();
        swapped[5..10].copy_from_slice(&bytes[10..15]);
        swapped[10..15].copy_from_slice(&bytes[5..10]);
        assert!(WeeklySchedule::decode(&swapped).is_err());
        let lower = [&[3u8][..], b"utc", &bytes[4..]].concat();
        assert!(WeeklySchedule::decode(&lower).is_err());
        assert!(matches!(
            WeeklySchedule::decode(&[bytes.clone(), vec![0]].concat()),
            Err(Error::TrailingBytes { .. })
        ));
        let mut high = bytes.clone();
        high[5] = 0x9f;
        assert!(WeeklySchedule::decode(&high).is_err());
        assert!(WeeklySchedule::decode(&[3, b'U', b'T', b'C', 0]).is_err());
        assert!(matches!(
            WeeklySchedule::decode(&[0; MAX_SCHEDULE_LEN + 1]),
            Err(Error::TooLarge { .. })
        ));
    }

    #[test]
    fn amsterdam_weekday_mornings() {
        let s = WeeklySchedule::parse_spec(&["mon-fri 08:00-12:00"], "Europe/Amsterdam").unwrap();
        // Wednesday 2026-06-10, CEST (UTC+2).
        assert!(s.allows(ms("2026-06-10T08:00:00Z")));
        assert!(s.allows(ms("2026-06-10T06:00:00Z")));
        assert!(!s.allows(ms("2026-06-10T05:59:59.999Z")));
        assert!(!s.allows(ms("2026-06-10T10:00:00Z")));
        assert_eq!(
            s.next_open_ms(ms("2026-06-10T12:00:00Z")),
            Some(ms("2026-06-11T06:00:00Z"))
        );
        // Friday afternoon → Monday 08:00.
        assert_eq!(
            s.next_open_ms(ms("2026-06-12T12:00:00Z")),
            Some(ms("2026-06-15T06:00:00Z"))
        );
    }

    #[test]
    fn spring_gap_and_autumn_repeat() {
        // Amsterdam 2026: 29 March 02:00 CET → 03:00 CEST; 25 October 03:00 CEST → 02:00 CET.
        let gap = WeeklySchedule::parse_spec(&["sun 02:00-03:00"], "Europe/Amsterdam").unwrap();
        assert!(!gap.allows(ms("2026-03-29T00:59:59Z")));
        assert!(!gap.allows(ms("2026-03-29T01:00:00Z")));
        // The next opening is a week later, not inside the skipped hour.
        assert_eq!(
            gap.next_open_ms(ms("2026-03-28T12:00:00Z")),
            Some(ms("2026-04-05T00:00:00Z"))
        );
        // A window straddling the gap opens at its start and runs until 03:30 CEST.
        let straddle =
            WeeklySchedule::parse_spec(&["sun 02:30-03:30"], "Europe/Amsterdam").unwrap();
        assert_eq!(
            straddle.next_open_ms(ms("2026-03-28T12:00:00Z")),
            Some(ms("2026-03-29T01:00:00Z"))
        );
        assert!(straddle.allows(ms("2026-03-29T01:29:59Z")));
        assert!(!straddle.allows(ms("2026-03-29T01:30:00Z")));
        // Autumn: 02:00-03:00 local happens twice; both match.
        assert!(gap.allows(ms("2026-10-25T00:00:00Z")));
        assert!(gap.allows(ms("2026-10-25T01:59:59Z")));
        assert!(!gap.allows(ms("2026-10-25T02:00:00Z")));
        assert!(!gap.allows(ms("2026-10-24T23:59:59Z")));
    }

    #[test]
    fn lord_howe_half_hour_shift() {
        // Lord Howe 2026-10-04: 02:00 +10:30 → 02:30 +11:00 (a 30-minute gap).
        let s = WeeklySchedule::parse_spec(&["sun 02:00-02:30"], "Australia/Lord_Howe").unwrap();
        let day_start = ms("2026-10-03T12:00:00Z");
        for m in 0..(24 * 60) {
            assert!(!s.allows(day_start + m * 60_000), "minute {m}");
        }
    }

    #[test]
    fn windows_a_chain_never_meets_have_no_common_opening() {
        let a = WeeklySchedule::parse_spec(&["mon 08:00-09:00"], "UTC").unwrap();
        let b = WeeklySchedule::parse_spec(&["tue 08:00-09:00"], "UTC").unwrap();
        let c = WeeklySchedule::parse_spec(&["mon 08:30-10:00"], "UTC").unwrap();
        let t = ms("2026-06-10T12:00:00Z");
        assert_eq!(next_open_all(&[a.clone(), b], t), None);
        assert_eq!(next_open_all(&[a, c], t), Some(ms("2026-06-15T08:30:00Z")));
    }
}
