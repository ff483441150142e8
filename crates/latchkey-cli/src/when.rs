//! Times as people type and read them, in the local time zone: invitation windows here, and
//! `latchkey-provider request --until` (which includes this file by path).

use anyhow::{bail, Context};
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};

/// Parses `now`, a span from now (`+2h`, `+3d`, `+1h30m`), an RFC 3339 instant
/// (`2026-12-24T15:00:00Z`), or a local date and time (`2026-12-24 15:00`, `2026-12-24`).
pub fn parse(text: &str, now_ms: u64) -> anyhow::Result<u64> {
    let t = text.trim();
    let now = Timestamp::from_millisecond(now_ms as i64).context("the clock is out of range")?;
    let at = if t.eq_ignore_ascii_case("now") {
        now
    } else if let Some(span) = t.strip_prefix('+') {
        let span: Span = span
            .parse()
            .with_context(|| format!("\"{t}\" is not a span like +2h, +3d or +1h30m"))?;
        now.to_zoned(TimeZone::system())
            .checked_add(span)
            .with_context(|| format!("{t} from now is out of range"))?
            .timestamp()
    } else if let Ok(ts) = t.parse::<Timestamp>() {
        ts
    } else {
        let civil: DateTime = t.parse().with_context(|| {
            format!(
                "\"{t}\" is not a time: use now, +2h, 2026-12-24 15:00 (local time) or 2026-12-24T15:00:00Z"
            )
        })?;
        civil
            .to_zoned(TimeZone::system())
            .with_context(|| format!("{t} does not exist in the local time zone"))?
            .timestamp()
    };
    let ms = at.as_millisecond();
    if ms < 0 {
        bail!("{t} is before 1970");
    }
    Ok(ms as u64)
}

/// A time in the local zone, to the minute, with the zone's abbreviation.
pub fn show(ms: u64) -> String {
    match Timestamp::from_millisecond(ms as i64) {
        Ok(ts) => ts
            .to_zoned(TimeZone::system())
            .strftime("%Y-%m-%d %H:%M %Z")
            .to_string(),
        Err(_) => format!("{ms} ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_000_000_000;

    #[test]
    fn relative_absolute_and_local_times_parse() {
        assert_eq!(parse("now", NOW).unwrap(), NOW);
        assert_eq!(parse("+2h", NOW).unwrap(), NOW + 7_200_000);
        assert_eq!(parse("+1h30m", NOW).unwrap(), NOW + 5_400_000);
        assert_eq!(
            parse("2026-12-24T15:00:00Z", NOW).unwrap(),
            1_798_124_400_000
        );
        let local = parse("2026-12-24 15:00", NOW).unwrap();
        // Whatever the machine's zone, it is within a day of the UTC reading.
        assert!(local.abs_diff(1_798_124_400_000) <= 86_400_000);
    }

    #[test]
    fn fail_nonsense_says_what_is_accepted() {
        let e = parse("tomorrowish", NOW).unwrap_err().to_string();
        assert!(e.contains("+2h"), "{e}");
        assert!(parse("+2 fortnights", NOW).is_err());
    }
}
