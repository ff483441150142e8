//! DSMR P1 telegrams: the text a Dutch or Belgian smart meter writes on its P1 port.
//!
//! A telegram is an identification line (`/ISK5\2M550T-1012`), an empty line, one COSEM object
//! per line (`1-0:1.8.1(001581.123*kWh)`: an OBIS code and values in parentheses) and an end
//! line `!` followed, from DSMR 4 on, by the CRC16 of everything from `/` through `!` as four
//! hex digits (CRC-16/ARC: polynomial 0xA001 reflected, initial value 0). DSMR 2.2 and 3 put a
//! gas reading's value on the line after its object, and end with a bare `!`.
//!
//! Why our own parser and not a crate: the maintained Rust crates (`dsmr5`, `dsmr-parse`) read
//! DSMR 5 only; neither reads DSMR 2.2/3 (no CRC, gas value on the next line), Fluvius e-MUCS
//! (gas on `0-n:24.2.3`, version on `0-0:96.1.4`) or meters that count in W/Wh. This one is
//! small and strict: a telegram over [`MAX_TELEGRAM_BYTES`] is refused before it is read, a
//! malformed line is an error naming the line and why, unknown OBIS codes are checked for
//! shape and skipped, and no input makes it panic (property tests and the `dsmr` fuzz target).
//!
//! Units are normalised into the integers of [`Reading`]: kWh → Wh, kW → W, V → mV, A → mA,
//! m³ → litres (meters that already count in Wh or W are read as such). Decimals finer than the
//! integer unit are truncated. Meter times are local Dutch/Belgian time with a DST flag
//! (`S` = summer, UTC+2; `W` = winter, UTC+1) and become UTC milliseconds.

use std::fmt::Write as _;
use std::sync::LazyLock;

use jiff::civil::DateTime;
use jiff::tz::{Offset, TimeZone, TimeZoneDatabase};
use jiff::Timestamp;

pub use latchkey_proto::stream::{Phase, Reading};

/// The largest telegram accepted (bytes from `/` through the end line). Real DSMR 5 telegrams
/// with a full power-failure log are under 2 KiB; the P1 companion standard caps the text
/// message object at 1,024 characters.
pub const MAX_TELEGRAM_BYTES: usize = 4096;

/// The longest identification line accepted (the standard allows 96 characters).
const MAX_IDENTIFICATION: usize = 128;

/// Why a telegram was refused: the line (1-based, counted within the telegram, the `/` line
/// being 1) and what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct DsmrError {
    pub line: usize,
    pub reason: String,
}

impl DsmrError {
    fn new(line: usize, reason: impl Into<String>) -> Self {
        DsmrError {
            line,
            reason: reason.into(),
        }
    }
}

/// CRC-16/ARC (polynomial 0xA001 reflected, initial value 0, no final xor): what DSMR 4 and
/// later write after `!`, computed over the bytes from `/` through `!`.
static CRC_ARC: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_ARC);

/// The CRC DSMR 4+ writes after `!` ([`CRC_ARC`]) of `bytes`.
pub fn crc16(bytes: &[u8]) -> u16 {
    CRC_ARC.checksum(bytes)
}

/// At most this much of a bad value is quoted in an error.
fn shown(s: &str) -> String {
    const MAX: usize = 24;
    if s.len() <= MAX {
        format!("{s:?}")
    } else {
        let mut end = MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{:?}…", &s[..end])
    }
}

/// An OBIS code `A-B:C.D.E` (an optional `*F` suffix, as some meters write, is ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Obis([u8; 5]);

impl std::fmt::Display for Obis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b, c, d, e] = self.0;
        write!(f, "{a}-{b}:{c}.{d}.{e}")
    }
}

/// Reads `A-B:C.D.E[*F]` at the start of `s`; returns the code and the rest of the line.
fn parse_obis(s: &str) -> Option<(Obis, &str)> {
    let bytes = s.as_bytes();
    let mut pos = 0;
    let mut parts = [0u8; 5];
    for (i, sep) in [b'-', b':', b'.', b'.', 0].into_iter().enumerate() {
        let start = pos;
        let mut value: u16 = 0;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() && pos - start < 3 {
            value = value * 10 + u16::from(bytes[pos] - b'0');
            pos += 1;
        }
        if pos == start || value > 255 {
            return None;
        }
        parts[i] = value as u8;
        if sep != 0 {
            if bytes.get(pos) != Some(&sep) {
                return None;
            }
            pos += 1;
        }
    }
    if bytes.get(pos) == Some(&b'*') {
        pos += 1;
        let start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() && pos - start < 3 {
            pos += 1;
        }
        if pos == start {
            return None;
        }
    }
    Some((Obis(parts), &s[pos..]))
}

/// Splits `(a)(b*u)()` into its group contents; `None` when the text is not such a sequence.
fn split_groups<'a>(
    mut s: &'a str,
    line: usize,
    out: &mut Vec<(usize, &'a str)>,
) -> Result<(), DsmrError> {
    if s.is_empty() {
        return Err(DsmrError::new(
            line,
            "the OBIS code has no value: expected '(' after it",
        ));
    }
    while !s.is_empty() {
        let Some(inner) = s.strip_prefix('(') else {
            return Err(DsmrError::new(
                line,
                format!("expected '(' before {}", shown(s)),
            ));
        };
        let Some(close) = inner.find(')') else {
            return Err(DsmrError::new(line, "a value is not closed with ')'"));
        };
        let content = &inner[..close];
        if let Some(bad) = content
            .bytes()
            .find(|&b| b == b'(' || !(0x20..=0x7E).contains(&b))
        {
            return Err(DsmrError::new(
                line,
                if bad == b'(' {
                    "a value holds '(' (a ')' is missing)".to_owned()
                } else {
                    format!("a value holds the byte 0x{bad:02X}, which is not printable ASCII")
                },
            ));
        }
        out.push((line, content));
        s = &inner[close + 1..];
    }
    Ok(())
}

/// One object: its code, the line it starts on and its values (`groups[start..end]`).
#[derive(Debug)]
struct Object {
    line: usize,
    code: Obis,
    start: usize,
    end: usize,
}

/// A decimal `123.456` as an integer in units of 10^-`decimals` (extra decimals truncated).
fn fixed_point(number: &str, decimals: u32) -> Option<u64> {
    let (int, frac) = match number.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (number, None),
    };
    if int.is_empty()
        || int.len() > 19
        || !int.bytes().all(|b| b.is_ascii_digit())
        || frac.is_some_and(|f| f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let mut value: u64 = 0;
    for b in int.bytes() {
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    let frac = frac.unwrap_or("").as_bytes();
    for i in 0..decimals as usize {
        let digit = frac.get(i).map_or(0, |b| u64::from(b - b'0'));
        value = value.checked_mul(10)?.checked_add(digit)?;
    }
    Some(value)
}

/// What a value measures, and the units a meter may write it in (with the power of ten that
/// turns each into the reading's integer unit).
#[derive(Debug, Clone, Copy)]
enum Quantity {
    Energy,
    Power,
    Voltage,
    Current,
    Volume,
}

impl Quantity {
    fn units(self) -> &'static [(&'static str, u32)] {
        match self {
            Quantity::Energy => &[("kWh", 3), ("Wh", 0)],
            Quantity::Power => &[("kW", 3), ("W", 0)],
            Quantity::Voltage => &[("V", 3)],
            Quantity::Current => &[("A", 3)],
            Quantity::Volume => &[("m3", 3)],
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Quantity::Energy => "kWh or Wh",
            Quantity::Power => "kW or W",
            Quantity::Voltage => "V",
            Quantity::Current => "A",
            Quantity::Volume => "m3",
        }
    }
}

/// `001581.123*kWh` → 1,581,123 (Wh).
fn quantity(code: Obis, line: usize, value: &str, q: Quantity) -> Result<u64, DsmrError> {
    let Some((number, unit)) = value.split_once('*') else {
        return Err(DsmrError::new(
            line,
            format!(
                "{code} value {} has no unit (expected {})",
                shown(value),
                q.expected()
            ),
        ));
    };
    let Some(&(_, exp)) = q.units().iter().find(|(u, _)| *u == unit) else {
        return Err(DsmrError::new(
            line,
            format!("{code} is in {}, expected {}", shown(unit), q.expected()),
        ));
    };
    fixed_point(number, exp).ok_or_else(|| {
        DsmrError::new(
            line,
            format!(
                "{code} value {} is not a decimal number that fits",
                shown(number)
            ),
        )
    })
}

fn narrow(code: Obis, line: usize, v: u64) -> Result<u32, DsmrError> {
    u32::try_from(v)
        .map_err(|_| DsmrError::new(line, format!("{code} value is too large for a meter")))
}

/// The rules of the meters' clocks: Dutch and Belgian meters keep Central European time, from
/// jiff's embedded copy of the IANA database (as latchkey-proto's schedules), so a meter's time
/// reads the same whatever zoneinfo the machine has. `None` only if this build lacks it.
static METER_ZONE: LazyLock<Option<TimeZone>> =
    LazyLock::new(|| TimeZoneDatabase::bundled().get("Europe/Amsterdam").ok());

fn meter_zone() -> Result<&'static TimeZone, String> {
    METER_ZONE
        .as_ref()
        .ok_or_else(|| "this build has no Europe/Amsterdam time zone rules".to_owned())
}

/// `YYMMDDhhmmss` (DSMR years are 2000–2099) as a wall-clock date and time.
fn civil_datetime(digits: &str) -> Result<DateTime, String> {
    if digits.len() != 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{} is not YYMMDDhhmmss", shown(digits)));
    }
    // Two ASCII digits: 0..=99, so the `as i8` below cannot wrap.
    let n = |i: usize| (digits.as_bytes()[i] - b'0') * 10 + (digits.as_bytes()[i + 1] - b'0');
    DateTime::new(
        2000 + i16::from(n(0)),
        n(2) as i8,
        n(4) as i8,
        n(6) as i8,
        n(8) as i8,
        n(10) as i8,
        0,
    )
    .map_err(|_| format!("{} is not a real date and time", shown(digits)))
}

/// UTC milliseconds of a timestamp from 2000 on (so never negative).
fn utc_ms(t: Timestamp) -> u64 {
    t.as_millisecond() as u64
}

/// A DSMR 4+ timestamp `YYMMDDhhmmssX` (X = `S` summer, `W` winter) as UTC milliseconds.
fn timestamp(value: &str) -> Result<u64, String> {
    let (digits, flag) = value.split_at(value.len().saturating_sub(1));
    let offset = match flag {
        "S" => Offset::constant(2),
        "W" => Offset::constant(1),
        _ => {
            return Err(format!(
                "{} is not a time YYMMDDhhmmss followed by S (summer) or W (winter)",
                shown(value)
            ))
        }
    };
    offset
        .to_timestamp(civil_datetime(digits)?)
        .map(utc_ms)
        .map_err(|_| format!("{} is out of range", shown(value)))
}

/// A DSMR 2.2/3 gas time `YYMMDDhhmmss` without a DST flag: Dutch local time (in the repeated
/// autumn hour, the first, summer, one; a time in the skipped spring hour is read with the
/// winter offset).
fn local_timestamp(digits: &str) -> Result<u64, String> {
    meter_zone()?
        .to_timestamp(civil_datetime(digits)?)
        .map(utc_ms)
        .map_err(|_| format!("{} is out of range", shown(digits)))
}

/// Per M-Bus channel (`0-n:…`, n = 1..=4): what is attached and its reading.
#[derive(Debug, Default, Clone, Copy)]
struct Channel {
    device_type: Option<u16>,
    reading: Option<(Option<u64>, u64)>,
    /// The `E` of the object the reading came from (24.2.E, or 0 for DSMR 2.2/3's 24.3.0).
    code: Option<u8>,
}

/// M-Bus device type of a gas meter.
const GAS: u16 = 3;

fn set<T>(slot: &mut Option<T>, value: T, code: Obis, line: usize) -> Result<(), DsmrError> {
    if slot.is_some() {
        return Err(DsmrError::new(line, format!("{code} appears twice")));
    }
    *slot = Some(value);
    Ok(())
}

/// One phase's values, before they become a [`Phase`].
#[derive(Debug, Default, Clone, Copy)]
struct PhaseFields {
    voltage_mv: Option<u32>,
    current_ma: Option<u32>,
    power_delivered_w: Option<u32>,
    power_returned_w: Option<u32>,
}

impl PhaseFields {
    fn is_empty(&self) -> bool {
        self.voltage_mv.is_none()
            && self.current_ma.is_none()
            && self.power_delivered_w.is_none()
            && self.power_returned_w.is_none()
    }
}

/// Everything read from the objects, before it becomes a [`Reading`].
#[derive(Debug, Default)]
struct Fields {
    version: Option<u32>,
    belgian: bool,
    time: Option<u64>,
    tariff: Option<u8>,
    tariff_seen: bool,
    delivered: [Option<(usize, u64)>; 4],
    returned: [Option<(usize, u64)>; 4],
    delivered_total: Option<u64>,
    returned_total: Option<u64>,
    power_delivered: Option<u32>,
    power_returned: Option<u32>,
    phases: [PhaseFields; 3],
    channels: [Channel; 4],
}

/// Parses one telegram: the text from `/` through the end line (`!` and its CRC, with or
/// without the final line break). The CRC is checked when the telegram has one; a telegram
/// that declares DSMR 4 or later (or is Belgian) must have one.
pub fn parse_telegram(text: &str) -> Result<Reading, DsmrError> {
    if text.len() > MAX_TELEGRAM_BYTES {
        return Err(DsmrError::new(
            1,
            format!(
                "the telegram is {} bytes, more than the {MAX_TELEGRAM_BYTES} accepted",
                text.len()
            ),
        ));
    }
    if !text.starts_with('/') {
        return Err(DsmrError::new(
            1,
            "a telegram starts with '/' and the meter's identification",
        ));
    }
    // The end line is the first line that starts with '!'.
    let Some(bang) = text.find("\n!").map(|i| i + 1) else {
        return Err(DsmrError::new(
            text.split('\n').count(),
            "the telegram has no end line ('!' and its CRC)",
        ));
    };
    let end_line = text[..bang].bytes().filter(|&b| b == b'\n').count() + 1;
    let footer = &text[bang + 1..];
    let (crc_text, after) = footer.split_once('\n').unwrap_or((footer, ""));
    let crc_text = crc_text.strip_suffix('\r').unwrap_or(crc_text);
    if !after.is_empty() {
        return Err(DsmrError::new(
            end_line + 1,
            "text after the telegram's end line",
        ));
    }
    let has_crc = match crc_text.len() {
        0 => false,
        4 if crc_text.bytes().all(|b| b.is_ascii_hexdigit()) => {
            let given = u16::from_str_radix(crc_text, 16).unwrap_or_default();
            let computed = crc16(&text.as_bytes()[..=bang]);
            if given != computed {
                return Err(DsmrError::new(
                    end_line,
                    format!(
                        "CRC mismatch: the telegram ends with !{crc_text} but its bytes give {computed:04X}; it was damaged on the way and is dropped"
                    ),
                ));
            }
            true
        }
        _ => {
            return Err(DsmrError::new(
                end_line,
                format!(
                    "the end line must be '!' and the CRC's 4 hex digits (DSMR 4 and later) or a bare '!' (DSMR 2.2/3), not {}",
                    shown(&format!("!{crc_text}"))
                ),
            ))
        }
    };

    let body = &text[..bang];
    let mut lines = body
        .split('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)));
    let (_, identification) = lines.next().unwrap_or((1, ""));
    check_identification(identification)?;

    let mut groups: Vec<(usize, &str)> = Vec::with_capacity(64);
    let mut objects: Vec<Object> = Vec::with_capacity(48);
    for (no, line) in lines {
        if line.bytes().all(|b| b == b' ' || b == b'\t') {
            continue;
        }
        if line.starts_with('(') {
            // DSMR 2.2/3: the values of the object above continue on this line.
            let Some(last) = objects.last_mut() else {
                return Err(DsmrError::new(
                    no,
                    "a value line '(…)' with no OBIS line above it",
                ));
            };
            split_groups(line, no, &mut groups)?;
            last.end = groups.len();
            continue;
        }
        let Some((code, rest)) = parse_obis(line) else {
            return Err(DsmrError::new(
                no,
                format!(
                    "expected an OBIS code such as 1-0:1.8.1 at the start of {}",
                    shown(line)
                ),
            ));
        };
        let start = groups.len();
        split_groups(rest, no, &mut groups)?;
        objects.push(Object {
            line: no,
            code,
            start,
            end: groups.len(),
        });
    }

    let mut f = Fields::default();
    for object in &objects {
        read_object(object, &groups[object.start..object.end], &mut f)?;
    }
    if !has_crc {
        if let Some(v) = f.version.filter(|&v| v >= 40) {
            return Err(DsmrError::new(
                end_line,
                format!(
                    "no CRC after '!', but the telegram declares DSMR {}.{} (1-3:0.2.8), which always sends one: its end was damaged",
                    v / 10,
                    v % 10
                ),
            ));
        }
        if f.belgian {
            return Err(DsmrError::new(
                end_line,
                "no CRC after '!', but the telegram is Belgian e-MUCS (0-0:96.1.4), which always sends one: its end was damaged",
            ));
        }
    }
    build(f)
}

fn check_identification(line: &str) -> Result<(), DsmrError> {
    let b = line.as_bytes();
    let well_formed = b.len() >= 5
        && b.len() <= MAX_IDENTIFICATION
        && b[1..4].iter().all(u8::is_ascii_alphabetic)
        && b[4].is_ascii_digit()
        && b[5..].iter().all(|&c| (0x20..=0x7E).contains(&c));
    if well_formed {
        Ok(())
    } else {
        Err(DsmrError::new(
            1,
            format!(
                "the identification line must be '/', a 3-letter maker code, a digit and the meter type (e.g. /ISK5\\2M550T-1012), not {}",
                shown(line)
            ),
        ))
    }
}

fn one<'a>(code: Obis, line: usize, groups: &[(usize, &'a str)]) -> Result<&'a str, DsmrError> {
    match groups {
        [(_, v)] => Ok(v),
        _ => Err(DsmrError::new(
            line,
            format!("{code} takes one value, found {}", groups.len()),
        )),
    }
}

fn digits_value(code: Obis, line: usize, v: &str, max_len: usize) -> Result<u32, DsmrError> {
    if v.is_empty() || v.len() > max_len || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DsmrError::new(
            line,
            format!(
                "{code} value {} is not a number of at most {max_len} digits",
                shown(v)
            ),
        ));
    }
    Ok(v.parse().unwrap_or_default())
}

fn read_object(o: &Object, groups: &[(usize, &str)], f: &mut Fields) -> Result<(), DsmrError> {
    let code = o.code;
    let line = o.line;
    let [a, b, c, d, e] = code.0;
    match (a, b, c, d, e) {
        (1, 3, 0, 2, 8) => {
            let v = digits_value(code, line, one(code, line, groups)?, 5)?;
            set(&mut f.version, v, code, line)?;
        }
        (0, 0, 96, 1, 4) => {
            digits_value(code, line, one(code, line, groups)?, 5)?;
            f.belgian = true;
        }
        (0, 0, 1, 0, 0) => {
            let v = timestamp(one(code, line, groups)?)
                .map_err(|why| DsmrError::new(line, format!("{code} meter time: {why}")))?;
            set(&mut f.time, v, code, line)?;
        }
        (1, 0, 1 | 2, 8, 0..=4) => {
            let v = quantity(code, line, one(code, line, groups)?, Quantity::Energy)?;
            let (tariffs, total) = if c == 1 {
                (&mut f.delivered, &mut f.delivered_total)
            } else {
                (&mut f.returned, &mut f.returned_total)
            };
            match e {
                0 => set(total, v, code, line)?,
                t => set(&mut tariffs[usize::from(t) - 1], (line, v), code, line)?,
            }
        }
        (0, 0, 96, 14, 0) => {
            let v = digits_value(code, line, one(code, line, groups)?, 4)?;
            if f.tariff_seen {
                return Err(DsmrError::new(line, format!("{code} appears twice")));
            }
            f.tariff_seen = true;
            // Some meters write 0000 when no tariff applies; the reading's tariffs start at 1.
            f.tariff = match u8::try_from(v) {
                Ok(0) => None,
                Ok(t) => Some(t),
                Err(_) => {
                    return Err(DsmrError::new(
                        line,
                        format!("{code} tariff {v} is out of range"),
                    ))
                }
            };
        }
        (1, 0, 1 | 2, 7, 0) => {
            let v = quantity(code, line, one(code, line, groups)?, Quantity::Power)?;
            let v = narrow(code, line, v)?;
            let slot = if c == 1 {
                &mut f.power_delivered
            } else {
                &mut f.power_returned
            };
            set(slot, v, code, line)?;
        }
        (1, 0, 21 | 22 | 31 | 32 | 41 | 42 | 51 | 52 | 61 | 62 | 71 | 72, 7, 0) => {
            // L1 is 21/22 (power +/-), 31 (current), 32 (voltage); L2 and L3 add 20 and 40.
            let phase = &mut f.phases[usize::from((c - 21) / 20)];
            let power = (c / 10) % 2 == 0;
            let (slot, q) = match (power, c % 10) {
                (true, 1) => (&mut phase.power_delivered_w, Quantity::Power),
                (true, _) => (&mut phase.power_returned_w, Quantity::Power),
                (false, 1) => (&mut phase.current_ma, Quantity::Current),
                (false, _) => (&mut phase.voltage_mv, Quantity::Voltage),
            };
            let v = narrow(
                code,
                line,
                quantity(code, line, one(code, line, groups)?, q)?,
            )?;
            set(slot, v, code, line)?;
        }
        (0, 1..=4, 24, 1, 0) => {
            let v = digits_value(code, line, one(code, line, groups)?, 3)?;
            set(
                &mut f.channels[usize::from(b) - 1].device_type,
                v as u16,
                code,
                line,
            )?;
        }
        (0, 1..=4, 24, 2, 1 | 3) => {
            let [(_, time), (value_line, value)] = groups else {
                return Err(DsmrError::new(
                    line,
                    format!(
                        "{code} takes a time and a reading, found {} values",
                        groups.len()
                    ),
                ));
            };
            // An empty channel reads `(632525252525W)(00000.000)` or `(00000000)`: no unit,
            // no meter. It is not a gas reading, and not an error either.
            if !value.contains('*') {
                return Ok(());
            }
            let time = timestamp(time)
                .map_err(|why| DsmrError::new(line, format!("{code} reading time: {why}")))?;
            let litres = quantity(code, *value_line, value, Quantity::Volume)?;
            let channel = &mut f.channels[usize::from(b) - 1];
            // A meter may give both the corrected (24.2.1) and the uncorrected (24.2.3, what
            // Belgian meters bill) volume; the first one given is the reading.
            match channel.code {
                Some(first) if first == e => {
                    return Err(DsmrError::new(line, format!("{code} appears twice")))
                }
                Some(_) => {}
                None => {
                    channel.code = Some(e);
                    channel.reading = Some((Some(time), litres));
                }
            }
        }
        (0, 1..=4, 24, 3, 0) => {
            // DSMR 2.2/3: (time)(status)(interval)(values)(OBIS)(unit) and, usually on the
            // next line, (value).
            if groups.len() < 7 {
                return Err(DsmrError::new(
                    line,
                    format!(
                        "{code} has {} values; a DSMR 2.2/3 gas reading has 6 and its value on the next line",
                        groups.len()
                    ),
                ));
            }
            let (_, time) = groups[0];
            let (unit_line, unit) = groups[5];
            let (value_line, value) = groups[6];
            if unit != "m3" {
                return Err(DsmrError::new(
                    unit_line,
                    format!("{code} is in {}, expected m3", shown(unit)),
                ));
            }
            let time = local_timestamp(time)
                .map_err(|why| DsmrError::new(line, format!("{code} reading time: {why}")))?;
            let litres = fixed_point(value, 3).ok_or_else(|| {
                DsmrError::new(
                    value_line,
                    format!(
                        "{code} value {} is not a decimal number that fits",
                        shown(value)
                    ),
                )
            })?;
            let channel = &mut f.channels[usize::from(b) - 1];
            if channel.code.is_some() {
                return Err(DsmrError::new(
                    line,
                    format!("{code}: a second reading for channel {b}"),
                ));
            }
            channel.code = Some(0);
            channel.reading = Some((Some(time), litres));
        }
        // Other objects (identifiers, failure logs, texts, peaks, water, …) are not part of
        // a reading; their shape was checked when the line was split.
        _ => {}
    }
    Ok(())
}

fn tariffs(
    registers: [Option<(usize, u64)>; 4],
    total: Option<u64>,
    what: &str,
) -> Result<Vec<u64>, DsmrError> {
    let count = registers
        .iter()
        .rposition(Option::is_some)
        .map_or(0, |i| i + 1);
    if count == 0 {
        // Meters with one register (Luxembourg, some Belgian ones) give only the total.
        return Ok(total.into_iter().collect());
    }
    let mut out = Vec::with_capacity(count);
    for (i, r) in registers[..count].iter().enumerate() {
        match r {
            Some((_, v)) => out.push(*v),
            None => {
                let line = registers[count - 1].map_or(0, |(l, _)| l);
                return Err(DsmrError::new(
                    line,
                    format!(
                        "energy {what} is given for tariff {count} but not for tariff {}",
                        i + 1
                    ),
                ));
            }
        }
    }
    Ok(out)
}

fn build(f: Fields) -> Result<Reading, DsmrError> {
    let phase_count = f
        .phases
        .iter()
        .rposition(|p| !p.is_empty())
        .map_or(0, |i| i + 1);
    let gas = f
        .channels
        .iter()
        .filter(|c| c.device_type.is_none_or(|t| t == GAS))
        .find_map(|c| c.reading);
    Ok(Reading {
        meter_time_ms: f.time,
        tariff: f.tariff,
        energy_delivered_wh: tariffs(f.delivered, f.delivered_total, "delivered")?,
        energy_returned_wh: tariffs(f.returned, f.returned_total, "returned")?,
        power_delivered_w: f.power_delivered,
        power_returned_w: f.power_returned,
        phases: f.phases[..phase_count]
            .iter()
            .map(|p| Phase {
                voltage_mv: p.voltage_mv,
                current_ma: p.current_ma,
                power_delivered_w: p.power_delivered_w,
                power_returned_w: p.power_returned_w,
            })
            .collect(),
        gas_l: gas.map(|(_, l)| l),
        gas_time_ms: gas.and_then(|(t, _)| t),
    })
}

/// The meter time of UTC `ms` as `YYMMDDhhmmssS|W`; `None` outside 2000–2099 or when `ms` is
/// not a whole second (a meter counts in seconds).
fn write_timestamp(ms: u64) -> Option<String> {
    if !ms.is_multiple_of(1_000) {
        return None;
    }
    let utc = Timestamp::from_second(i64::try_from(ms / 1_000).ok()?).ok()?;
    let zone = meter_zone().ok()?;
    let flag = match zone.to_offset(utc).seconds() {
        7_200 => 'S',
        3_600 => 'W',
        _ => return None,
    };
    let t = zone.to_datetime(utc);
    if !(2000..=2099).contains(&t.year()) {
        return None;
    }
    Some(format!(
        "{:02}{:02}{:02}{:02}{:02}{:02}{flag}",
        t.year() - 2000,
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
    ))
}

/// `value` thousandths as `int.frac` with at least `width` integer digits and at least
/// `min_decimals` (up to 3) decimals; more only when the value needs them.
fn thousandths(value: u64, width: usize, min_decimals: usize) -> String {
    let mut frac = format!("{:03}", value % 1_000);
    while frac.len() > min_decimals && frac.ends_with('0') {
        frac.pop();
    }
    if frac.is_empty() {
        format!("{:0width$}", value / 1_000)
    } else {
        format!("{:0width$}.{frac}", value / 1_000)
    }
}

/// Writes `reading` as a DSMR 5.0 telegram (CRLF line ends, CRC) the way a three-phase meter
/// does, for simulators, the recorded test streams and round-trip tests. `identification` is
/// the header after `/`, e.g. `XMX5LGF0010455307579`. Every digit the reading holds is
/// written, so [`parse_telegram`] gives the same reading back (phases that hold nothing are
/// left out, as meters do). `None` when a time is outside 2000–2099 or not a whole second,
/// or the identification is not one.
pub fn write_telegram(reading: &Reading, identification: &str) -> Option<String> {
    let mut t = String::with_capacity(1024);
    let _ = write!(t, "/{identification}\r\n\r\n1-3:0.2.8(50)\r\n");
    if let Some(ms) = reading.meter_time_ms {
        let _ = write!(t, "0-0:1.0.0({})\r\n", write_timestamp(ms)?);
    }
    let id = identification.as_bytes();
    let _ = write!(
        t,
        "0-0:96.1.1({})\r\n",
        hex::encode_upper(&id[..id.len().min(17)])
    );
    for (register, values) in [
        (1, &reading.energy_delivered_wh),
        (2, &reading.energy_returned_wh),
    ] {
        for (i, wh) in values.iter().enumerate() {
            let _ = write!(
                t,
                "1-0:{register}.8.{}({}*kWh)\r\n",
                i + 1,
                thousandths(*wh, 6, 3)
            );
        }
    }
    if let Some(tariff) = reading.tariff {
        let _ = write!(t, "0-0:96.14.0({tariff:04})\r\n");
    }
    for (register, power) in [
        (1, reading.power_delivered_w),
        (2, reading.power_returned_w),
    ] {
        if let Some(w) = power {
            let _ = write!(
                t,
                "1-0:{register}.7.0({}*kW)\r\n",
                thousandths(w.into(), 2, 3)
            );
        }
    }
    t.push_str("0-0:96.7.21(00004)\r\n0-0:96.7.9(00002)\r\n1-0:99.97.0(0)(0-0:96.7.19)\r\n0-0:96.13.0()\r\n");
    for (i, p) in reading.phases.iter().enumerate().take(3) {
        let base = 20 * (i as u32 + 1);
        if let Some(mv) = p.voltage_mv {
            let _ = write!(
                t,
                "1-0:{}.7.0({}*V)\r\n",
                base + 12,
                thousandths(mv.into(), 3, 1)
            );
        }
        if let Some(ma) = p.current_ma {
            let _ = write!(
                t,
                "1-0:{}.7.0({}*A)\r\n",
                base + 11,
                thousandths(ma.into(), 3, 0)
            );
        }
        if let Some(w) = p.power_delivered_w {
            let _ = write!(
                t,
                "1-0:{}.7.0({}*kW)\r\n",
                base + 1,
                thousandths(w.into(), 2, 3)
            );
        }
        if let Some(w) = p.power_returned_w {
            let _ = write!(
                t,
                "1-0:{}.7.0({}*kW)\r\n",
                base + 2,
                thousandths(w.into(), 2, 3)
            );
        }
    }
    if let (Some(litres), Some(ms)) = (reading.gas_l, reading.gas_time_ms) {
        let _ = write!(
            t,
            "0-1:24.1.0(003)\r\n0-1:96.1.0(4730303339303031393231393034393139)\r\n0-1:24.2.1({})({}*m3)\r\n",
            write_timestamp(ms)?,
            thousandths(litres, 5, 3)
        );
    }
    t.push('!');
    let crc = crc16(t.as_bytes());
    let _ = write!(t, "{crc:04X}\r\n");
    check_identification(&format!("/{identification}")).ok()?;
    Some(t)
}

/// What [`TelegramFramer`] cuts out of a byte stream: a telegram's text (from `/` through its
/// end line) with the stream line its `/` is on, or why bytes were dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Telegram { line: usize, text: String },
    Bad { line: usize, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Between telegrams: waiting for `/`.
    Start,
    /// Inside a telegram: waiting for a line that starts with `!`.
    EndLine,
    /// On the end line: waiting for its line break.
    LineBreak,
    /// Dropping an overlong telegram until the next `/` at a line start.
    Resync,
}

/// Cuts a byte stream (serial port, TCP gateway, file) into telegrams, each at most
/// [`MAX_TELEGRAM_BYTES`]. A telegram runs from `/` to the line break after its `!` line; a
/// telegram cut off by the next `/`, one that grows past the cap, and text outside telegrams
/// are reported as [`Frame::Bad`] with the stream line (1-based) where they start.
#[derive(Debug)]
pub struct TelegramFramer {
    buf: Vec<u8>,
    expect: Expect,
    /// Line number (1-based) of the next byte.
    line: usize,
    at_line_start: bool,
    start_line: usize,
    junk_line: Option<usize>,
    report_junk: bool,
}

impl Default for TelegramFramer {
    fn default() -> Self {
        Self::new()
    }
}

impl TelegramFramer {
    /// A framer for a whole recording: anything but white space outside telegrams is reported.
    pub fn new() -> Self {
        TelegramFramer {
            buf: Vec::with_capacity(MAX_TELEGRAM_BYTES),
            expect: Expect::Start,
            line: 1,
            at_line_start: true,
            start_line: 1,
            junk_line: None,
            report_junk: true,
        }
    }

    /// A framer for a live link joined at any moment (a serial port just opened, a TCP
    /// connection): the tail of a telegram before the first `/` is dropped silently.
    pub fn mid_stream() -> Self {
        TelegramFramer {
            report_junk: false,
            ..Self::new()
        }
    }

    fn begin(&mut self, out: &mut Vec<Frame>) {
        if let Some(line) = self.junk_line.take() {
            out.push(Frame::Bad {
                line,
                reason: "text outside a telegram (a telegram starts with '/')".into(),
            });
        }
        self.buf.clear();
        self.buf.push(b'/');
        self.start_line = self.line;
        self.expect = Expect::EndLine;
        self.report_junk = true;
    }

    fn complete(&mut self, out: &mut Vec<Frame>) {
        let bytes = std::mem::take(&mut self.buf);
        out.push(match String::from_utf8(bytes) {
            Ok(text) => Frame::Telegram {
                line: self.start_line,
                text,
            },
            Err(e) => Frame::Bad {
                line: self.start_line,
                reason: format!(
                    "the telegram is not text (byte 0x{:02X} at offset {})",
                    e.as_bytes()[e.utf8_error().valid_up_to()],
                    e.utf8_error().valid_up_to()
                ),
            },
        });
        self.buf = Vec::with_capacity(MAX_TELEGRAM_BYTES);
        self.expect = Expect::Start;
    }

    /// Feeds bytes; returns the frames they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Frame> {
        let mut out = Vec::new();
        for &b in bytes {
            match self.expect {
                Expect::Start => {
                    if b == b'/' {
                        self.begin(&mut out);
                    } else if !b.is_ascii_whitespace()
                        && self.report_junk
                        && self.junk_line.is_none()
                    {
                        self.junk_line = Some(self.line);
                    }
                }
                Expect::Resync => {
                    if b == b'/' && self.at_line_start {
                        self.begin(&mut out);
                    }
                }
                Expect::EndLine | Expect::LineBreak => {
                    if b == b'/' && self.at_line_start && self.expect == Expect::EndLine {
                        out.push(Frame::Bad {
                            line: self.start_line,
                            reason: format!(
                                "the telegram was cut off: the next one starts on line {} before its end line ('!')",
                                self.line
                            ),
                        });
                        self.begin(&mut out);
                    } else {
                        if b == b'!' && self.at_line_start {
                            self.expect = Expect::LineBreak;
                        }
                        self.buf.push(b);
                        if self.buf.len() > MAX_TELEGRAM_BYTES {
                            out.push(Frame::Bad {
                                line: self.start_line,
                                reason: format!(
                                    "the telegram runs past {MAX_TELEGRAM_BYTES} bytes without its end line ('!'); dropped"
                                ),
                            });
                            self.buf.clear();
                            self.expect = Expect::Resync;
                        } else if b == b'\n' && self.expect == Expect::LineBreak {
                            self.complete(&mut out);
                        }
                    }
                }
            }
            if b == b'\n' {
                self.line += 1;
                self.at_line_start = true;
            } else {
                self.at_line_start = false;
            }
        }
        out
    }

    /// The end of the stream: a telegram whose end line has no final line break is complete;
    /// one without an end line, and trailing text outside telegrams, are reported.
    pub fn finish(&mut self) -> Option<Frame> {
        match self.expect {
            Expect::LineBreak => {
                let mut out = Vec::new();
                self.complete(&mut out);
                out.pop()
            }
            Expect::EndLine => {
                self.expect = Expect::Start;
                self.buf.clear();
                Some(Frame::Bad {
                    line: self.start_line,
                    reason: "the stream ends inside a telegram (no end line '!')".into(),
                })
            }
            Expect::Start => self.junk_line.take().map(|line| Frame::Bad {
                line,
                reason: "text outside a telegram (a telegram starts with '/')".into(),
            }),
            Expect::Resync => None,
        }
    }
}

/// Every frame of a complete recording (a strict framer over all of `bytes`, then its end).
pub fn frames(bytes: &[u8]) -> Vec<Frame> {
    let mut framer = TelegramFramer::new();
    let mut out = framer.push(bytes);
    out.extend(framer.finish());
    out
}

/// A frame as a reading, or why not; a bad telegram's line is counted in the stream
/// (the frame's first line plus the line within the telegram, less one).
pub fn read_frame(frame: Frame) -> Result<Reading, (usize, String)> {
    match frame {
        Frame::Telegram { line, text } => {
            parse_telegram(&text).map_err(|e| (line + e.line - 1, e.reason))
        }
        Frame::Bad { line, reason } => Err((line, reason)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_is_arc() {
        // The CRC-16/ARC check value.
        assert_eq!(crc16(b"123456789"), 0xBB3D);
        assert_eq!(crc16(b""), 0);
    }

    #[test]
    fn obis_codes() {
        assert_eq!(
            parse_obis("1-0:1.8.1(x)"),
            Some((Obis([1, 0, 1, 8, 1]), "(x)"))
        );
        assert_eq!(
            parse_obis("1-0:1.8.0*255(x)"),
            Some((Obis([1, 0, 1, 8, 0]), "(x)"))
        );
        assert_eq!(parse_obis("1-0:1.8(x)"), None);
        assert_eq!(parse_obis("1-0:256.8.1(x)"), None);
        assert_eq!(parse_obis("1-0:1.8.1*(x)"), None);
        assert_eq!(parse_obis(""), None);
    }

    #[test]
    fn fixed_point_scales_and_truncates() {
        assert_eq!(fixed_point("001581.123", 3), Some(1_581_123));
        assert_eq!(fixed_point("0.48", 3), Some(480));
        assert_eq!(fixed_point("006", 3), Some(6_000));
        assert_eq!(fixed_point("00052185.7825309", 3), Some(52_185_782));
        assert_eq!(fixed_point("000747.85", 0), Some(747));
        assert_eq!(fixed_point("1.", 3), None);
        assert_eq!(fixed_point(".5", 3), None);
        assert_eq!(fixed_point("-1", 3), None);
        assert_eq!(fixed_point("1.2.3", 3), None);
        assert_eq!(fixed_point("99999999999999999", 3), None);
    }

    #[test]
    fn timestamps_are_utc() {
        // 2016-11-13 20:57:57 CET = 19:57:57 UTC.
        assert_eq!(timestamp("161113205757W"), Ok(1_479_067_077_000));
        // 2020-05-12 13:54:09 CEST = 11:54:09 UTC.
        assert_eq!(timestamp("200512135409S"), Ok(1_589_284_449_000));
        assert!(timestamp("161313205757W").is_err());
        assert!(timestamp("160230000000W").is_err());
        assert!(timestamp("161113205757X").is_err());
        assert!(timestamp("").is_err());
        assert!(timestamp("632525252525W").is_err());
    }

    #[test]
    fn flagless_times_follow_the_eu_rule() {
        // 2016-11-07 19:00 winter time = 18:00 UTC.
        assert_eq!(local_timestamp("161107190000"), Ok(1_478_541_600_000));
        // 2016-04-10 13:00 summer time = 11:00 UTC.
        assert_eq!(local_timestamp("160410130000"), Ok(1_460_286_000_000));
        // 2016-10-30 02:30 happens twice; the first (summer) one is 00:30 UTC.
        assert_eq!(local_timestamp("161030023000"), Ok(1_477_787_400_000));
    }

    #[test]
    fn written_times_round_trip_across_dst() {
        // Around the 2021 changes (28 March, 31 October, 01:00 UTC).
        for utc in [
            1_616_893_199,
            1_616_893_200,
            1_635_641_999,
            1_635_642_000,
            1_635_638_400,
            946_684_800,
            4_102_441_199,
        ] {
            let written = write_timestamp(utc * 1_000).unwrap();
            assert_eq!(timestamp(&written), Ok(utc * 1_000), "{written}");
        }
        assert_eq!(write_timestamp(946_684_800_000 - 7_200_000), None);
        assert_eq!(write_timestamp(1_500), None);
    }

    #[test]
    fn thousandths_keep_every_digit() {
        assert_eq!(thousandths(230_100, 3, 1), "230.1");
        assert_eq!(thousandths(230_000, 3, 1), "230.0");
        assert_eq!(thousandths(230_123, 3, 1), "230.123");
        assert_eq!(thousandths(2_000, 3, 0), "002");
        assert_eq!(thousandths(1_660, 3, 0), "001.66");
        assert_eq!(thousandths(1_581_123, 6, 3), "001581.123");
    }

    fn telegram(body: &str, crc: bool) -> String {
        let mut t = format!("/ISK5\\2M550T-1012\r\n\r\n{body}!");
        if crc {
            let c = crc16(t.as_bytes());
            t.push_str(&format!("{c:04X}"));
        }
        t.push_str("\r\n");
        t
    }

    #[test]
    fn a_malformed_line_is_named() {
        let t = telegram("1-3:0.2.8(50)\r\n1-0:1.8.1(001.000*kWh\r\n", true);
        let e = parse_telegram(&t).unwrap_err();
        assert_eq!(e.line, 4);
        assert!(e.reason.contains("not closed"), "{e}");

        let t = telegram("1-3:0.2.8(50)\r\n1-0:1.7.0(00.100*kWh)\r\n", true);
        let e = parse_telegram(&t).unwrap_err();
        assert_eq!(
            (e.line, e.to_string().contains("expected kW or W")),
            (4, true),
            "{e}"
        );

        let t = telegram("hello\r\n", false);
        assert_eq!(parse_telegram(&t).unwrap_err().line, 3);
    }

    #[test]
    fn dsmr5_without_crc_is_refused() {
        let t = telegram("1-3:0.2.8(50)\r\n1-0:1.7.0(00.100*kW)\r\n", false);
        let e = parse_telegram(&t).unwrap_err();
        assert_eq!(e.line, 5);
        assert!(e.reason.contains("DSMR 5.0"), "{e}");
    }

    #[test]
    fn a_duplicated_register_is_refused() {
        let t = telegram("1-0:1.7.0(00.100*kW)\r\n1-0:1.7.0(00.200*kW)\r\n", true);
        assert_eq!(parse_telegram(&t).unwrap_err().line, 4);
    }

    #[test]
    fn corrected_and_uncorrected_gas_read_the_first() {
        let t = telegram(
            "0-1:24.1.0(003)\r\n0-1:24.2.3(200512134558S)(00112.384*m3)\r\n0-1:24.2.1(200512134558S)(00110.001*m3)\r\n",
            true,
        );
        assert_eq!(parse_telegram(&t).unwrap().gas_l, Some(112_384));
        let t = telegram(
            "0-1:24.2.1(200512134558S)(00112.384*m3)\r\n0-1:24.2.1(200512134558S)(00112.384*m3)\r\n",
            true,
        );
        assert!(parse_telegram(&t).unwrap_err().reason.contains("twice"));
    }

    #[test]
    fn a_tariff_gap_is_refused() {
        let t = telegram("1-0:1.8.1(1.000*kWh)\r\n1-0:1.8.3(1.000*kWh)\r\n", true);
        let e = parse_telegram(&t).unwrap_err();
        assert_eq!(e.line, 4, "{e}");
    }

    #[test]
    fn text_after_the_end_is_refused() {
        let mut t = telegram("1-0:1.7.0(00.100*kW)\r\n", true);
        t.push_str("junk");
        assert!(parse_telegram(&t).unwrap_err().reason.contains("after"));
    }

    #[test]
    fn framer_cuts_and_counts_lines() {
        let a = telegram("1-0:1.7.0(00.100*kW)\r\n", true);
        let b = telegram("1-0:1.7.0(00.200*kW)\r\n", true);
        let stream = format!("{a}{b}");
        // Byte by byte gives the same frames as all at once.
        let mut framer = TelegramFramer::new();
        let mut frames_seen = Vec::new();
        for byte in stream.as_bytes() {
            frames_seen.extend(framer.push(std::slice::from_ref(byte)));
        }
        assert_eq!(framer.finish(), None);
        assert_eq!(frames_seen, frames(stream.as_bytes()));
        assert_eq!(
            frames_seen,
            vec![
                Frame::Telegram { line: 1, text: a },
                Frame::Telegram { line: 5, text: b },
            ]
        );
    }

    #[test]
    fn framer_reports_cut_off_and_junk() {
        let a = telegram("1-0:1.7.0(00.100*kW)\r\n", true);
        let cut = &a[..a.len() - 10];
        let stream = format!("noise\r\n{cut}\r\n{a}");
        let got = frames(stream.as_bytes());
        assert!(matches!(&got[0], Frame::Bad { line: 1, reason } if reason.contains("outside")));
        assert!(matches!(&got[1], Frame::Bad { line: 2, reason } if reason.contains("cut off")));
        assert!(matches!(&got[2], Frame::Telegram { line: 5, .. }));
        // Joined mid-stream, the first tail is no error.
        let mut live = TelegramFramer::mid_stream();
        let got = live.push(format!("0*kW)\r\n!1234\r\n{a}").as_bytes());
        assert_eq!(
            got,
            vec![Frame::Telegram {
                line: 3,
                text: a.clone()
            }]
        );
    }

    #[test]
    fn framer_caps_telegrams() {
        let long = format!("/ISK5\\2M550T\r\n{}", "0-0:96.13.0()\r\n".repeat(400));
        let stream = format!("{long}!\r\n{}", telegram("", true));
        let got = frames(stream.as_bytes());
        assert!(matches!(&got[0], Frame::Bad { line: 1, reason } if reason.contains("4096")));
        assert!(matches!(&got[1], Frame::Telegram { .. }), "{got:?}");
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn framer_end_of_stream() {
        let a = telegram("", true);
        let got = frames(a.trim_end().as_bytes());
        assert!(matches!(&got[..], [Frame::Telegram { .. }]));
        let got = frames(&a.as_bytes()[..10]);
        assert!(matches!(&got[..], [Frame::Bad { line: 1, .. }]));
    }
}
