//! Stays from a booking calendar: a host's Airbnb, Booking.com or Vrbo iCalendar export (a
//! file or its URL) becomes one invitation per stay for the given doors, valid from check-in
//! time on the arrival day to check-out time on the departure day, in the property's time zone.
//!
//! [`Profile::sync_stays`] is idempotent: a stay whose dates and doors are unchanged keeps its
//! invitation, changed dates revoke the old grant and issue a new one, a stay gone from the
//! export (a cancellation) is revoked unless it is already over, and stays that are over are
//! left alone. Nothing is issued or revoked unless the whole calendar parses. The stays are
//! kept in the profile's `stays` table; their links (bearer credentials) go to the OS keychain,
//! never to the profile directory. [`Profile::stays`] lists them with what the profile knows
//! of each guest (opened at …, from the audit log copies it holds).
//!
//! Exports seen in the wild (fixtures in `tests/fixtures/`): every event is all-day
//! (`DTSTART;VALUE=DATE`), `DTEND` is exclusive, so it is the check-out day; UIDs stay the same
//! from one export to the next; periods the host closed are events too ("Airbnb (Not
//! available)", "CLOSED - Not available", Vrbo's "Blocked"), and are not stays.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use icalendar::parser::{Component, Property};
use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use latchkey_proto::audit::{AuditBody, SignedEntry};
use latchkey_proto::codec::Codec;
use latchkey_proto::grant::GrantId;
use latchkey_proto::keys::DeviceId;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::invite::{GrantStatus, InviteRequest};
use crate::profile::Profile;
use crate::store::StayRow;

/// The largest calendar read, from a file or a URL: a year of a busy listing is ~100 KiB.
pub const MAX_CALENDAR_BYTES: usize = 2 * 1024 * 1024;
/// The most events one calendar may hold.
pub const MAX_CALENDAR_EVENTS: usize = 5_000;
/// How long fetching a calendar URL may take.
const FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// One event of an export, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalendarEvent {
    pub uid: String,
    pub summary: String,
    /// The arrival day.
    pub check_in: Date,
    /// The departure day (`DTEND` of an all-day event is exclusive: the day the guest leaves).
    pub check_out: Date,
    /// A period the host closed, not a stay.
    pub blocked: bool,
    /// The line of its `BEGIN:VEVENT` in the file, for messages.
    pub line: usize,
}

/// Check-in and check-out times and the property's time zone.
#[derive(Debug, Clone)]
pub struct StayTimes {
    pub check_in: Time,
    pub check_out: Time,
    pub tz: TimeZone,
    /// The zone's IANA name as given (or the system's).
    pub tz_name: String,
}

impl StayTimes {
    /// `check_in`/`check_out` as `HH:MM`; `tz` an IANA name (`None`: the system's zone).
    pub fn parse(check_in: &str, check_out: &str, tz: Option<&str>) -> Result<Self> {
        let time = |text: &str, what: &str| {
            text.trim().parse::<Time>().map_err(|_| {
                Error::BadStay(format!(
                    "{what} time \"{text}\" is not a time of day; use HH:MM such as 15:00"
                ))
            })
        };
        let (tz, tz_name) = match tz {
            Some(name) => (
                TimeZone::get(name.trim()).map_err(|_| {
                    Error::BadStay(format!(
                        "\"{name}\" is not a known time zone; use an IANA name such as Europe/Amsterdam"
                    ))
                })?,
                name.trim().to_owned(),
            ),
            None => {
                let tz = TimeZone::system();
                let name = tz.iana_name().unwrap_or("UTC").to_owned();
                (tz, name)
            }
        };
        Ok(StayTimes {
            check_in: time(check_in, "check-in")?,
            check_out: time(check_out, "check-out")?,
            tz,
            tz_name,
        })
    }

    /// The grant window of a stay: check-in time on the arrival day to check-out time on the
    /// departure day, in milliseconds.
    pub fn window(&self, event: &CalendarEvent) -> Result<(u64, u64)> {
        let at = |day: Date, time: Time| -> Result<u64> {
            let zoned = DateTime::from_parts(day, time)
                .to_zoned(self.tz.clone())
                .map_err(|e| Error::BadStay(format!("{day} {time}: {e}")))?;
            u64::try_from(zoned.timestamp().as_millisecond())
                .map_err(|_| Error::BadStay(format!("{day} is before 1970")))
        };
        let from = at(event.check_in, self.check_in)?;
        let until = at(event.check_out, self.check_out)?;
        if until <= from {
            return Err(Error::BadStay(format!(
                "the stay {} (line {}) would end before it starts with check-in {} and check-out {}",
                event.uid, event.line, self.check_in, self.check_out
            )));
        }
        Ok((from, until))
    }
}

/// Whether an event's summary marks a period the host closed rather than a booking.
pub fn is_blocked(summary: &str) -> bool {
    let s = summary.trim().to_ascii_lowercase();
    s.contains("not available") || s.starts_with("blocked") || s.starts_with("closed")
}

/// The logical (unfolded) lines of a calendar, each with the file line it starts on.
struct Unfolded {
    text: String,
    /// (byte offset in `text`, line number in the file), ascending.
    starts: Vec<(usize, usize)>,
}

impl Unfolded {
    fn new(raw: &str) -> Unfolded {
        let mut text = String::with_capacity(raw.len());
        let mut starts = Vec::new();
        for (i, line) in raw.split('\n').enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            // RFC 5545 §3.1: a line starting with a space or tab continues the one before.
            if let Some(rest) = line.strip_prefix([' ', '\t']) {
                if !starts.is_empty() {
                    text.push_str(rest);
                    continue;
                }
            }
            if line.is_empty() {
                continue;
            }
            if !starts.is_empty() {
                text.push_str("\r\n");
            }
            starts.push((text.len(), i + 1));
            text.push_str(line);
        }
        text.push_str("\r\n");
        Unfolded { text, starts }
    }

    /// Every content line is `NAME[;PARAM=…]:VALUE` and BEGIN/END pair up: checked here, line
    /// by line, because the parser reports a broken line at the component it backtracks to.
    fn check_lines(&self) -> Result<()> {
        let mut open: Vec<(String, usize)> = Vec::new();
        for (i, &(start, line)) in self.starts.iter().enumerate() {
            let end = self
                .starts
                .get(i + 1)
                .map_or(self.text.len(), |s| s.0)
                .saturating_sub(2);
            let content = &self.text[start..end.max(start)];
            let bad = |why: String| Error::BadCalendar { line, why };
            let name_len = content
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'-')
                .count();
            let after = content.as_bytes().get(name_len).copied();
            if name_len == 0 || !matches!(after, Some(b':' | b';')) || !content.contains(':') {
                return Err(bad(
                    "this line is not an iCalendar content line (NAME:VALUE)".into(),
                ));
            }
            let name = &content[..name_len];
            let value = content[name_len..]
                .split_once(':')
                .map(|(_, v)| v.trim())
                .unwrap_or_default();
            if name.eq_ignore_ascii_case("BEGIN") {
                open.push((value.to_ascii_uppercase(), line));
            } else if name.eq_ignore_ascii_case("END") {
                match open.pop() {
                    Some((begun, _)) if begun.eq_ignore_ascii_case(value) => {}
                    Some((begun, at)) => {
                        return Err(bad(format!(
                            "END:{value} closes BEGIN:{begun} of line {at}"
                        )))
                    }
                    None => return Err(bad(format!("END:{value} without a BEGIN"))),
                }
            }
        }
        match open.pop() {
            Some((begun, at)) => Err(Error::BadCalendar {
                line: at,
                why: format!("BEGIN:{begun} is never closed (the file may be cut short)"),
            }),
            None => Ok(()),
        }
    }

    /// The file line of a slice of `text` (the parser's error position or a value it
    /// borrowed), if it points into it.
    fn line_of(&self, s: &str) -> Option<usize> {
        let base = self.text.as_ptr() as usize;
        let at = (s.as_ptr() as usize).checked_sub(base)?;
        if at > self.text.len() {
            return None;
        }
        let i = self.starts.partition_point(|(o, _)| *o <= at);
        Some(self.starts[i.saturating_sub(1)].1)
    }
}

/// Parses an iCalendar export into its events, in file order. Any problem fails the whole
/// calendar with the file line it is on.
pub fn parse_calendar(raw: &str, tz: &TimeZone) -> Result<Vec<CalendarEvent>> {
    if raw.len() > MAX_CALENDAR_BYTES {
        return Err(Error::BadCalendar {
            line: 0,
            why: format!("it is larger than {MAX_CALENDAR_BYTES} bytes"),
        });
    }
    let unfolded = Unfolded::new(raw);
    let first_line = unfolded.starts.first().map_or(1, |s| s.1);
    unfolded.check_lines()?;
    let roots = icalendar::parser::read_calendar_simple(&unfolded.text).map_err(|e| {
        Error::BadCalendar {
            line: unfolded.line_of(e.input).unwrap_or(first_line),
            why: "this line is not a valid iCalendar content line (NAME:VALUE) or a \
                  BEGIN/END does not match"
                .into(),
        }
    })?;
    let calendar = match roots.as_slice() {
        [only] if only.name.as_str().eq_ignore_ascii_case("VCALENDAR") => only,
        _ => {
            return Err(Error::BadCalendar {
                line: first_line,
                why: "an export holds exactly one BEGIN:VCALENDAR … END:VCALENDAR".into(),
            })
        }
    };
    let mut events = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for component in &calendar.components {
        if !component.name.as_str().eq_ignore_ascii_case("VEVENT") {
            continue;
        }
        if events.len() == MAX_CALENDAR_EVENTS {
            return Err(Error::BadCalendar {
                line: event_line(&unfolded, component, first_line),
                why: format!("a calendar may hold at most {MAX_CALENDAR_EVENTS} events"),
            });
        }
        let Some(event) = read_event(&unfolded, component, tz, first_line)? else {
            continue;
        };
        if let Some(before) = seen.insert(event.uid.clone(), event.line) {
            return Err(Error::BadCalendar {
                line: event.line,
                why: format!(
                    "UID {} is used by the event on line {before} too; each booking needs its own",
                    event.uid
                ),
            });
        }
        events.push(event);
    }
    Ok(events)
}

/// The line an event starts on (the line of its first property; its BEGIN is just before).
fn event_line(unfolded: &Unfolded, c: &Component<'_>, fallback: usize) -> usize {
    c.properties
        .iter()
        .find_map(|p| unfolded.line_of(p.name.as_str()))
        .map_or(fallback, |l| l.saturating_sub(1).max(1))
}

fn prop_line(unfolded: &Unfolded, p: &Property<'_>, fallback: usize) -> usize {
    unfolded
        .line_of(p.name.as_str())
        .or_else(|| unfolded.line_of(p.val.as_str()))
        .unwrap_or(fallback)
}

/// One VEVENT; `None` for one that is not a booking at all (cancelled).
fn read_event(
    unfolded: &Unfolded,
    c: &Component<'_>,
    tz: &TimeZone,
    fallback: usize,
) -> Result<Option<CalendarEvent>> {
    let line = event_line(unfolded, c, fallback);
    let bad = |line: usize, why: String| Error::BadCalendar { line, why };
    let find = |name: &str| {
        c.properties
            .iter()
            .find(|p| p.name.as_str().eq_ignore_ascii_case(name))
    };
    if find("STATUS").is_some_and(|s| s.val.as_str().trim().eq_ignore_ascii_case("CANCELLED")) {
        return Ok(None);
    }
    let uid = find("UID")
        .map(|p| p.val.as_str().trim().to_owned())
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            bad(
                line,
                "this event has no UID; bookings are matched across exports by it".into(),
            )
        })?;
    if uid.len() > 255 {
        return Err(bad(line, "its UID is longer than 255 bytes".into()));
    }
    let summary = find("SUMMARY")
        .map(|p| unescape(p.val.as_str()))
        .unwrap_or_default();
    let start_prop =
        find("DTSTART").ok_or_else(|| bad(line, "this event has no DTSTART".into()))?;
    let check_in = day_of(start_prop, tz).map_err(|why| {
        bad(
            prop_line(unfolded, start_prop, line),
            format!("DTSTART: {why}"),
        )
    })?;
    let check_out = match find("DTEND") {
        Some(p) => day_of(p, tz)
            .map_err(|why| bad(prop_line(unfolded, p, line), format!("DTEND: {why}")))?,
        // RFC 5545 §3.6.1: an all-day event without an end lasts that one day.
        None => check_in
            .tomorrow()
            .map_err(|e| bad(line, format!("DTSTART: {e}")))?,
    };
    if check_out <= check_in {
        let at = find("DTEND").map_or(line, |p| prop_line(unfolded, p, line));
        return Err(bad(
            at,
            format!("the event ends ({check_out}) before it starts ({check_in})"),
        ));
    }
    Ok(Some(CalendarEvent {
        blocked: is_blocked(&summary),
        uid,
        summary,
        check_in,
        check_out,
        line,
    }))
}

/// The day a DTSTART/DTEND names: `VALUE=DATE` (`20261201`), or the day of a date-time in
/// its `TZID`, UTC (`…Z`) or, floating, the stay's zone.
fn day_of(p: &Property<'_>, tz: &TimeZone) -> std::result::Result<Date, String> {
    let v = p.val.as_str().trim();
    let param = |key: &str| {
        p.params
            .iter()
            .find(|q| q.key.as_str().eq_ignore_ascii_case(key))
            .and_then(|q| q.val.as_ref().map(|v| v.as_str().trim().to_owned()))
    };
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    if digits(v, 8) {
        let num = |r: std::ops::Range<usize>| v[r].parse::<i16>().unwrap_or(0);
        return Date::new(num(0..4), num(4..6) as i8, num(6..8) as i8)
            .map_err(|_| format!("\"{v}\" is not a calendar date (YYYYMMDD)"));
    }
    if param("VALUE").is_some_and(|t| t.eq_ignore_ascii_case("DATE")) {
        return Err(format!("\"{v}\" is not a date (YYYYMMDD)"));
    }
    let (body, utc) = match v.strip_suffix(['Z', 'z']) {
        Some(b) => (b, true),
        None => (v, false),
    };
    let ok = body.len() == 15
        && digits(&body[..8], 8)
        && body.as_bytes()[8].eq_ignore_ascii_case(&b'T')
        && digits(&body[9..], 6);
    if !ok {
        return Err(format!(
            "\"{v}\" is neither a date (YYYYMMDD) nor a date-time (YYYYMMDDTHHMMSS[Z])"
        ));
    }
    let num = |r: std::ops::Range<usize>| body[r].parse::<i16>().unwrap_or(0);
    let civil = DateTime::new(
        num(0..4),
        num(4..6) as i8,
        num(6..8) as i8,
        num(9..11) as i8,
        num(11..13) as i8,
        num(13..15).min(59) as i8,
        0,
    )
    .map_err(|_| format!("\"{v}\" is not a valid date-time"))?;
    let zone = if utc {
        TimeZone::UTC
    } else if let Some(name) = param("TZID") {
        TimeZone::get(&name).map_err(|_| format!("TZID \"{name}\" is not a known time zone"))?
    } else {
        tz.clone()
    };
    let instant = civil
        .to_zoned(zone)
        .map_err(|e| format!("\"{v}\": {e}"))?
        .timestamp();
    Ok(instant.to_zoned(tz.clone()).date())
}

/// RFC 5545 §3.3.11 TEXT unescaping (`\,` `\;` `\\` `\n`).
fn unescape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n' | 'N') => out.push(' '),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out.trim().to_owned()
}

/// The name an invitation for a stay carries: the guest's name when the export gives it
/// (Vrbo's "Reserved - Ann"), else the stay's dates.
fn guest_name(event: &CalendarEvent) -> String {
    let s = event.summary.trim();
    let name = s
        .strip_prefix("Reserved - ")
        .or_else(|| s.strip_prefix("Reserved – "))
        .map(str::trim)
        .filter(|n| !n.is_empty());
    let mut out = match name {
        Some(n) => format!("{n}, {} to {}", event.check_in, event.check_out),
        None => format!("Stay {} to {}", event.check_in, event.check_out),
    };
    while out.len() > 64 {
        out.pop();
    }
    out
}

/// Where a calendar comes from: an `http(s)://` URL or a file path.
pub fn is_url(source: &str) -> bool {
    let s = source.trim().to_ascii_lowercase();
    s.starts_with("http://") || s.starts_with("https://")
}

/// What happened to one stay in a sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StayChange {
    /// New: an invitation was issued.
    Added,
    /// Same dates and doors: the invitation it has stays.
    Unchanged,
    /// Its dates or doors changed: the old grant was revoked and a new one issued.
    Reissued,
    /// Gone from the export (cancelled) before it was over: its grant was revoked.
    Revoked,
    /// A period the host closed ("Not available", "Blocked"), not a stay.
    SkippedBlocked,
    /// Over already: left as it was (never issued, or kept as issued).
    Past,
}

impl StayChange {
    pub fn as_str(self) -> &'static str {
        match self {
            StayChange::Added => "added",
            StayChange::Unchanged => "unchanged",
            StayChange::Reissued => "reissued",
            StayChange::Revoked => "revoked",
            StayChange::SkippedBlocked => "skipped-blocked",
            StayChange::Past => "past",
        }
    }
}

/// One invitation of a stay (one per door until invitations cover several doors).
#[derive(Debug, Clone)]
pub struct StayLink {
    pub device: DeviceId,
    pub device_name: String,
    pub grant: GrantId,
    /// The invitation link (a bearer credential), from the OS keychain; `None` when it is no
    /// longer kept (revoked) or the keychain lost it.
    pub link: Option<Zeroizing<String>>,
}

/// One line of a sync report.
#[derive(Debug, Clone)]
pub struct StaySyncLine {
    pub uid: String,
    pub summary: String,
    pub guest_name: String,
    pub check_in: Date,
    pub check_out: Date,
    pub from_ms: u64,
    pub until_ms: u64,
    pub change: StayChange,
    pub links: Vec<StayLink>,
}

/// What a sync did.
#[derive(Debug, Clone)]
pub struct StaySyncReport {
    pub source: String,
    pub lines: Vec<StaySyncLine>,
    /// Writes the registry nodes acknowledged (revocations published; invitation blobs stored).
    pub node_writes: usize,
    pub elapsed_ms: u64,
}

impl StaySyncReport {
    pub fn count(&self, change: StayChange) -> usize {
        self.lines.iter().filter(|l| l.change == change).count()
    }
}

/// Where a stay is in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StayPhase {
    Upcoming,
    Current,
    Past,
}

impl StayPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            StayPhase::Upcoming => "upcoming",
            StayPhase::Current => "current",
            StayPhase::Past => "past",
        }
    }
}

/// What the profile knows of a stay's guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StayStatus {
    /// Nothing seen: not marked as shared, no use at the door.
    NotSent,
    /// The host shared the link (see [`Profile::mark_stay_shared`]) at this time.
    Sent { at_ms: u64 },
    /// The guest opened a door with it, first at this time (from the device's signed audit
    /// log as this profile last read it).
    Opened { at_ms: u64 },
    /// Cancelled in the calendar (or revoked by hand): the invitation no longer opens.
    Revoked,
}

impl StayStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StayStatus::NotSent => "not sent",
            StayStatus::Sent { .. } => "sent",
            StayStatus::Opened { .. } => "opened",
            StayStatus::Revoked => "revoked",
        }
    }
}

/// A stay as the profile keeps it.
#[derive(Debug, Clone)]
pub struct StayView {
    pub source: String,
    pub uid: String,
    pub summary: String,
    pub guest_name: String,
    pub check_in: Date,
    pub check_out: Date,
    pub from_ms: u64,
    pub until_ms: u64,
    pub tz: String,
    pub links: Vec<StayLink>,
    pub phase: StayPhase,
    pub status: StayStatus,
    pub synced_ms: u64,
}

/// The keychain account of a stay invitation's link (not a secret itself).
fn link_account(profile: &str, grant: &GrantId) -> String {
    format!("{profile}/stay-link/{grant}")
}

impl Profile {
    /// Reads a calendar from a file or an `http(s)://` URL, at most [`MAX_CALENDAR_BYTES`].
    pub async fn read_calendar(&self, source: &str) -> Result<String> {
        let source = source.trim();
        let too_big = || Error::CalendarSource {
            place: source.to_owned(),
            why: format!("it is larger than {MAX_CALENDAR_BYTES} bytes"),
        };
        let bytes = if is_url(source) {
            let fail = |why: String| Error::CalendarSource {
                place: source.to_owned(),
                why,
            };
            let mut response = self
                .http
                .get(source)
                .timeout(FETCH_TIMEOUT)
                .send()
                .await
                .map_err(|e| fail(e.without_url().to_string()))?;
            if !response.status().is_success() {
                return Err(fail(format!("the server answered {}", response.status())));
            }
            if response
                .content_length()
                .is_some_and(|n| n > MAX_CALENDAR_BYTES as u64)
            {
                return Err(too_big());
            }
            let mut body = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| fail(e.without_url().to_string()))?
            {
                if body.len() + chunk.len() > MAX_CALENDAR_BYTES {
                    return Err(too_big());
                }
                body.extend_from_slice(&chunk);
            }
            body
        } else {
            use std::io::Read;
            let file = std::fs::File::open(source).map_err(|e| Error::CalendarSource {
                place: source.to_owned(),
                why: e.to_string(),
            })?;
            let mut body = Vec::new();
            file.take(MAX_CALENDAR_BYTES as u64 + 1)
                .read_to_end(&mut body)
                .map_err(|e| Error::CalendarSource {
                    place: source.to_owned(),
                    why: e.to_string(),
                })?;
            if body.len() > MAX_CALENDAR_BYTES {
                return Err(too_big());
            }
            body
        };
        let text = String::from_utf8(bytes).map_err(|e| Error::CalendarSource {
            place: source.to_owned(),
            why: format!(
                "it is not UTF-8 text (byte {})",
                e.utf8_error().valid_up_to()
            ),
        })?;
        Ok(text.strip_prefix('\u{feff}').unwrap_or(&text).to_owned())
    }

    /// Syncs the stays of the calendar at `source` (a file path or an `http(s)://` URL) to
    /// invitations for `doors`. See the module docs for what changes.
    pub async fn sync_stays(
        &self,
        doors: &[&str],
        source: &str,
        times: &StayTimes,
    ) -> Result<StaySyncReport> {
        let text = self.read_calendar(source).await?;
        let key = if is_url(source) {
            source.trim().to_owned()
        } else {
            std::fs::canonicalize(source.trim())
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| source.trim().to_owned())
        };
        self.sync_stays_text(doors, &key, &text, times).await
    }

    /// [`Self::sync_stays`] for a calendar already read (the app passes a picked file's
    /// text); `source` names it: stays are compared with the previous sync of the same source.
    pub async fn sync_stays_text(
        &self,
        doors: &[&str],
        source: &str,
        text: &str,
        times: &StayTimes,
    ) -> Result<StaySyncReport> {
        let started = Instant::now();
        let events = parse_calendar(text, &times.tz)?;
        if doors.is_empty() {
            return Err(Error::BadStay("name at least one door".into()));
        }
        // Every door and every window is checked before anything is issued or revoked.
        let me = self.identity()?.public_key();
        let mut devices = Vec::new();
        for q in doors {
            let d = self.find_device(q)?;
            if !d.chain.state().is_owner(&me) {
                return Err(Error::NotOwner {
                    device: d.id.to_string(),
                });
            }
            if !devices
                .iter()
                .any(|x: &crate::store::DeviceRecord| x.id == d.id)
            {
                devices.push(d);
            }
        }
        devices.sort_by_key(|d| d.id.to_string());
        let device_ids: Vec<DeviceId> = devices.iter().map(|d| d.id).collect();
        let mut windows = Vec::with_capacity(events.len());
        for e in &events {
            windows.push(if e.blocked { (0, 0) } else { times.window(e)? });
        }
        let now = self.now_ms();
        let mut existing: HashMap<String, StayRow> = self
            .store
            .stays(Some(source))?
            .into_iter()
            .map(|r| (r.uid.clone(), r))
            .collect();
        let mut report = StaySyncReport {
            source: source.to_owned(),
            lines: Vec::new(),
            node_writes: 0,
            elapsed_ms: 0,
        };
        for (event, (from_ms, until_ms)) in events.iter().zip(windows) {
            let mut line = StaySyncLine {
                uid: event.uid.clone(),
                summary: event.summary.clone(),
                guest_name: guest_name(event),
                check_in: event.check_in,
                check_out: event.check_out,
                from_ms,
                until_ms,
                change: StayChange::SkippedBlocked,
                links: Vec::new(),
            };
            if event.blocked {
                // A stay turned into a closed period is a cancellation: handled below with
                // the stays gone from the export.
                report.lines.push(line);
                continue;
            }
            let before = existing.remove(&event.uid);
            match before {
                Some(row) if row.until_ms <= now => {
                    line.change = StayChange::Past;
                    line.links = self.stay_links(&row)?;
                }
                Some(row)
                    if row.cancelled_ms.is_none()
                        && row.from_ms == from_ms
                        && row.until_ms == until_ms
                        && row.devices == device_ids =>
                {
                    line.change = StayChange::Unchanged;
                    line.links = self.stay_links(&row)?;
                }
                _ if until_ms <= now => line.change = StayChange::Past,
                before => {
                    let reissue = before.as_ref().is_some_and(|r| r.cancelled_ms.is_none());
                    if let Some(row) = &before {
                        if row.cancelled_ms.is_none() {
                            report.node_writes += self.revoke_stay_grants(row).await?;
                        }
                    }
                    let mut row = StayRow {
                        source: source.to_owned(),
                        uid: event.uid.clone(),
                        summary: event.summary.clone(),
                        guest_name: line.guest_name.clone(),
                        check_in: event.check_in.to_string(),
                        check_out: event.check_out.to_string(),
                        from_ms,
                        until_ms,
                        tz: times.tz_name.clone(),
                        devices: device_ids.clone(),
                        grants: Vec::new(),
                        cancelled_ms: None,
                        shared_ms: None,
                        synced_ms: now,
                    };
                    for device in &devices {
                        let issued = self
                            .invite(
                                &device.id.to_string(),
                                &InviteRequest {
                                    guest_name: row.guest_name.clone(),
                                    from_ms,
                                    until_ms,
                                    actions: vec!["unlock".into()],
                                    use_limit: None,
                                    arguments: Vec::new(),
                                    may_delegate: false,
                                    from_grant: None,
                                    schedule: None,
                                },
                            )
                            .await?;
                        self.seeds.save(
                            &link_account(self.id(), &issued.grant.id),
                            issued.link.as_str(),
                        )?;
                        row.grants.push(issued.grant.id);
                        line.links.push(StayLink {
                            device: device.id,
                            device_name: device.name.clone(),
                            grant: issued.grant.id,
                            link: Some(issued.link),
                        });
                    }
                    // Kept stay by stay: a sync cut short by a failure resumes where it
                    // stopped when run again.
                    self.store.put_stay(&row)?;
                    line.change = if reissue {
                        StayChange::Reissued
                    } else {
                        StayChange::Added
                    };
                }
            }
            report.lines.push(line);
        }
        // What the export no longer holds: cancelled, unless over already.
        let mut gone: Vec<StayRow> = existing.into_values().collect();
        gone.sort_by(|a, b| (&a.check_in, &a.uid).cmp(&(&b.check_in, &b.uid)));
        for mut row in gone {
            if row.cancelled_ms.is_some() || row.until_ms <= now {
                continue;
            }
            report.node_writes += self.revoke_stay_grants(&row).await?;
            row.cancelled_ms = Some(now);
            self.store.put_stay(&row)?;
            report.lines.push(StaySyncLine {
                uid: row.uid.clone(),
                summary: row.summary.clone(),
                guest_name: row.guest_name.clone(),
                check_in: row.check_in.parse().unwrap_or(Date::ZERO),
                check_out: row.check_out.parse().unwrap_or(Date::ZERO),
                from_ms: row.from_ms,
                until_ms: row.until_ms,
                change: StayChange::Revoked,
                links: self.stay_links(&row)?,
            });
        }
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        Ok(report)
    }

    /// Revokes a stay's grants (each one published to the nodes and told to its door); returns
    /// the node writes. A grant already revoked by hand is published again, harmlessly.
    async fn revoke_stay_grants(&self, row: &StayRow) -> Result<usize> {
        let mut writes = 0;
        for grant in &row.grants {
            let report = self.revoke(&grant.to_string()).await?;
            writes += report.nodes_stored;
            self.seeds.delete(&link_account(self.id(), grant))?;
        }
        Ok(writes)
    }

    fn stay_links(&self, row: &StayRow) -> Result<Vec<StayLink>> {
        let devices = self.devices()?;
        let issued = self.store.issued(None)?;
        row.grants
            .iter()
            .map(|g| {
                let device = issued
                    .iter()
                    .find(|i| i.grant.id() == *g)
                    .map(|i| i.device)
                    .or_else(|| row.devices.first().copied())
                    .unwrap_or(DeviceId([0; 32]));
                Ok(StayLink {
                    device,
                    device_name: devices
                        .iter()
                        .find(|d| d.id == device)
                        .map(|d| d.name.clone())
                        .unwrap_or_default(),
                    grant: *g,
                    link: self.seeds.load(&link_account(self.id(), g))?,
                })
            })
            .collect()
    }

    /// Records that the host shared a stay's link (the app's "share link").
    pub fn mark_stay_shared(&self, source: &str, uid: &str) -> Result<()> {
        let mut row = self
            .store
            .stays(Some(source))?
            .into_iter()
            .find(|r| r.uid == uid)
            .ok_or_else(|| Error::BadStay(format!("no stay {uid} from {source}")))?;
        if row.shared_ms.is_none() {
            row.shared_ms = Some(self.now_ms());
            self.store.put_stay(&row)?;
        }
        Ok(())
    }

    /// Every stay this profile keeps, by check-in day, with where it stands.
    pub fn stays(&self) -> Result<Vec<StayView>> {
        let now = self.now_ms();
        let rows = self.store.stays(None)?;
        let devices = self.devices()?;
        let issued = self.store.issued(None)?;
        let mut first_use: HashMap<DeviceId, HashMap<[u8; 32], u64>> = HashMap::new();
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let links = self.stay_links(&row)?;
            let revoked_on_chain = links.iter().any(|l| {
                devices.iter().any(|d| {
                    d.id == l.device
                        && crate::invite::status_of(
                            &issued
                                .iter()
                                .filter(|i| i.grant.id() == l.grant)
                                .map(|i| i.grant.clone())
                                .collect::<Vec<_>>(),
                            &d.chain,
                            now,
                        ) == GrantStatus::Revoked
                })
            });
            let mut opened: Option<u64> = None;
            for l in &links {
                let Some(grant) = issued.iter().find(|i| i.grant.id() == l.grant) else {
                    continue;
                };
                if !first_use.contains_key(&l.device) {
                    let uses = self.first_uses(&l.device)?;
                    first_use.insert(l.device, uses);
                }
                if let Some(at) = first_use[&l.device].get(&grant.grant.body.subject.to_bytes()) {
                    opened = Some(opened.map_or(*at, |o| o.min(*at)));
                }
            }
            let status = if row.cancelled_ms.is_some() || revoked_on_chain {
                StayStatus::Revoked
            } else if let Some(at_ms) = opened {
                StayStatus::Opened { at_ms }
            } else if let Some(at_ms) = row.shared_ms {
                StayStatus::Sent { at_ms }
            } else {
                StayStatus::NotSent
            };
            let phase = if now >= row.until_ms {
                StayPhase::Past
            } else if now >= row.from_ms {
                StayPhase::Current
            } else {
                StayPhase::Upcoming
            };
            out.push(StayView {
                check_in: row.check_in.parse().unwrap_or(Date::ZERO),
                check_out: row.check_out.parse().unwrap_or(Date::ZERO),
                source: row.source,
                uid: row.uid,
                summary: row.summary,
                guest_name: row.guest_name,
                from_ms: row.from_ms,
                until_ms: row.until_ms,
                tz: row.tz,
                links,
                phase,
                status,
                synced_ms: row.synced_ms,
            });
        }
        Ok(out)
    }

    /// The first accepted command of each sender in the audit entries this profile kept for
    /// `device` (as `latchkey audit` last read them).
    fn first_uses(&self, device: &DeviceId) -> Result<HashMap<[u8; 32], u64>> {
        let mut out: HashMap<[u8; 32], u64> = HashMap::new();
        for bytes in self.store.audit_copies(device)? {
            let Ok(entry) = SignedEntry::from_bytes(&bytes) else {
                continue;
            };
            let (AuditBody::Decision(r), Some(at)) = (&entry.entry.body, entry.entry.time_ms)
            else {
                continue;
            };
            if r.code != 0 {
                continue;
            }
            if let Some(sender) = r.sender {
                let t = out.entry(sender.to_bytes()).or_insert(at);
                *t = (*t).min(at);
            }
        }
        Ok(out)
    }
}

/// The days of the stays a report names, for tests and front ends.
pub fn stay_days(lines: &[StaySyncLine]) -> BTreeSet<(Date, Date)> {
    lines.iter().map(|l| (l.check_in, l.check_out)).collect()
}

/// A timestamp in the stay's zone, for people (`2026-12-01 15:00 CET`).
pub fn show_in(ms: u64, tz: &str) -> String {
    let zone = TimeZone::get(tz).unwrap_or(TimeZone::UTC);
    Timestamp::from_millisecond(ms as i64)
        .map(|t| t.to_zoned(zone).strftime("%Y-%m-%d %H:%M %Z").to_string())
        .unwrap_or_else(|_| format!("{ms} ms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc() -> TimeZone {
        TimeZone::UTC
    }

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(name),
        )
        .unwrap()
    }

    #[test]
    fn airbnb_export_gives_stays_and_blocks() {
        let events = parse_calendar(&fixture("airbnb.ics"), &utc()).unwrap();
        let stays: Vec<_> = events.iter().filter(|e| !e.blocked).collect();
        let blocked: Vec<_> = events.iter().filter(|e| e.blocked).collect();
        assert_eq!(stays.len(), 2, "{events:?}");
        assert_eq!(blocked.len(), 1);
        assert_eq!(blocked[0].summary, "Airbnb (Not available)");
        assert_eq!(stays[0].check_in, jiff::civil::date(2026, 12, 4));
        // DTEND is exclusive: the guest leaves on the 8th.
        assert_eq!(stays[0].check_out, jiff::civil::date(2026, 12, 8));
        assert!(stays[0].uid.ends_with("@airbnb.com"));
    }

    #[test]
    fn booking_and_vrbo_exports_parse() {
        let booking = parse_calendar(&fixture("booking.ics"), &utc()).unwrap();
        assert!(booking
            .iter()
            .any(|e| e.blocked && e.summary == "CLOSED - Not available"));
        assert!(booking.iter().any(|e| !e.blocked));
        let vrbo = parse_calendar(&fixture("vrbo.ics"), &utc()).unwrap();
        assert!(vrbo.iter().any(|e| e.blocked && e.summary == "Blocked"));
        let ann = vrbo.iter().find(|e| !e.blocked).unwrap();
        assert!(
            guest_name(ann).starts_with("Ann Smith,"),
            "{}",
            guest_name(ann)
        );
    }

    #[test]
    fn a_window_runs_from_check_in_to_check_out_in_the_zone() {
        let times = StayTimes::parse("15:00", "11:00", Some("Europe/Amsterdam")).unwrap();
        let e = CalendarEvent {
            uid: "a".into(),
            summary: "Reserved".into(),
            check_in: jiff::civil::date(2026, 3, 27),
            check_out: jiff::civil::date(2026, 3, 30),
            blocked: false,
            line: 1,
        };
        let (from, until) = times.window(&e).unwrap();
        // 15:00 CET (UTC+1) on the 27th; 11:00 CEST (UTC+2) on the 30th, after the spring change.
        assert_eq!(from, 1_774_620_000_000);
        assert_eq!(until, 1_774_861_200_000);
        assert!(StayTimes::parse("3pm", "11:00", None).is_err());
        assert!(StayTimes::parse("15:00", "11:00", Some("Mars/Olympus")).is_err());
    }

    #[test]
    fn fail_a_malformed_calendar_names_its_line() {
        let good = fixture("airbnb.ics");
        let cases = [
            (
                "DTSTART;VALUE=DATE:20261204",
                "DTSTART;VALUE=DATE:2026124",
                "DTSTART",
            ),
            (
                "DTEND;VALUE=DATE:20261208",
                "DTEND;VALUE=DATE:20261201",
                "before it starts",
            ),
            (
                "DTEND;VALUE=DATE:20261208",
                "DTEND;VALUE=DATE:20261308",
                "DTEND",
            ),
            ("SUMMARY:Reserved", "this line has no colon", "content line"),
            ("END:VEVENT", "END:VTODO", "closes BEGIN:VEVENT"),
        ];
        for (from, to, says) in cases {
            let text = good.replacen(from, to, 1);
            assert_ne!(text, good);
            let want = good.lines().position(|l| l.starts_with(from)).unwrap() + 1;
            let e = parse_calendar(&text, &utc()).unwrap_err();
            let msg = e.to_string();
            assert!(
                matches!(e, Error::BadCalendar { line, .. } if line == want),
                "{to}: {msg}"
            );
            assert!(
                msg.contains(says) && msg.contains(&format!("line {want}")),
                "{msg}"
            );
        }
        let dup = good.replacen(
            "UID:2b3c5d1e0f7a-8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a@airbnb.com",
            "UID:1418fb94e984-5f2b9c3d7a1e4b6c8d0e2f4a6b8c0d1e@airbnb.com",
            1,
        );
        let e = parse_calendar(&dup, &utc()).unwrap_err().to_string();
        assert!(e.contains("UID"), "{e}");
        assert!(parse_calendar("hello", &utc()).is_err());
        assert!(parse_calendar("BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\n", &utc()).is_err());
    }

    #[test]
    fn folded_lines_and_date_times_are_read() {
        let text = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:abc\r\n \
                    @example.com\r\nSUMMARY:Reserved - Jo\r\n \\, family\r\n\
                    DTSTART;TZID=America/New_York:20261204T230000\r\nDTEND:20261207T100000Z\r\n\
                    END:VEVENT\r\nEND:VCALENDAR\r\n";
        let events = parse_calendar(text, &utc()).unwrap();
        assert_eq!(events[0].uid, "abc@example.com");
        assert_eq!(events[0].summary, "Reserved - Jo, family");
        // 23:00 in New York is the next day in UTC.
        assert_eq!(events[0].check_in, jiff::civil::date(2026, 12, 5));
        assert_eq!(events[0].check_out, jiff::civil::date(2026, 12, 7));
    }

    #[test]
    fn cancelled_events_are_not_stays() {
        let text = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\nSTATUS:CANCELLED\r\n\
                    DTSTART;VALUE=DATE:20261204\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
        assert!(parse_calendar(text, &utc()).unwrap().is_empty());
    }

    #[test]
    fn fail_an_oversized_calendar_is_refused_before_parsing() {
        let big = "X".repeat(MAX_CALENDAR_BYTES + 1);
        assert!(parse_calendar(&big, &utc())
            .unwrap_err()
            .to_string()
            .contains("larger"));
    }
}
