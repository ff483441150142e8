//! Weekly schedules (grant extension 0x81, docs/PROTOCOL.md §4): evaluation checked against
//! jiff's own time zone arithmetic across DST in three zones, the extension's codec, and grant
//! chains refused outside any of their schedules.

use jiff::tz::TimeZoneDatabase;
use jiff::Timestamp;
use latchkey_proto::chain::OpBody;
use latchkey_proto::command::{authorize, Command, RejectCode, ReplyTo};
use latchkey_proto::grant::{
    verify_chain_structure, verify_grant_chain, Extension, Grant, GrantBody, GrantRequest,
    EXT_WEEKLY_SCHEDULE,
};
use latchkey_proto::keys::SigningKey;
use latchkey_proto::schedule::{Days, WeeklySchedule, Window, LOOKAHEAD_MS, MAX_SCHEDULE_LEN};
use latchkey_proto::Error;
use latchkey_testkit::{person, TestDevice};
use proptest::prelude::*;

const ZONES: [&str; 3] = [
    "Europe/Amsterdam",
    "America/New_York",
    "Australia/Lord_Howe",
];
/// 2020-01-01T00:00:00Z and 2036-01-01T00:00:00Z.
const FROM_MS: u64 = 1_577_836_800_000;
const UNTIL_MS: u64 = 2_082_758_400_000;
const MINUTE: u64 = 60_000;

fn ms(text: &str) -> u64 {
    text.parse::<Timestamp>().unwrap().as_millisecond() as u64
}

/// What the schedule must answer, from jiff directly: the instant's local weekday and minute.
fn oracle(tz: &str, windows: &[Window], t_ms: u64) -> bool {
    let zone = TimeZoneDatabase::bundled().get(tz).unwrap();
    let local = Timestamp::from_millisecond(t_ms as i64)
        .unwrap()
        .to_zoned(zone);
    let day = local.weekday().to_monday_zero_offset() as u8;
    let minute = local.hour() as u16 * 60 + local.minute() as u16;
    windows
        .iter()
        .any(|w| w.days.contains(day) && w.start_min <= minute && minute < w.end_min)
}

fn window() -> impl Strategy<Value = Window> {
    (1u8..=0x7f, 0u16..1440, 1u16..=1440).prop_filter_map("non-empty", |(d, a, b)| {
        Window::new(Days::from_bits(d).unwrap(), a.min(b), a.max(b)).ok()
    })
}

fn schedule() -> impl Strategy<Value = WeeklySchedule> {
    (
        prop::sample::select(&ZONES[..]),
        prop::collection::vec(window(), 1..=4),
    )
        .prop_map(|(tz, windows)| WeeklySchedule::new(tz, windows).unwrap())
}

/// Windows that sit on the hours DST moves: 01:00-04:00 local, on Sundays (when every zone here
/// switches) and in short slices, so the gap and the repeated hour are hit often.
fn dst_schedule() -> impl Strategy<Value = WeeklySchedule> {
    (
        prop::sample::select(&ZONES[..]),
        prop::collection::vec(
            (60u16..240, 1u16..=90).prop_map(|(start, len)| {
                Window::new(Days::SUN, start, (start + len).min(1440)).unwrap()
            }),
            1..=3,
        ),
    )
        .prop_map(|(tz, windows)| WeeklySchedule::new(tz, windows).unwrap())
}

/// An instant near one of the zones' DST transitions (±2 days), 2020-2035.
fn near_transition() -> impl Strategy<Value = u64> {
    (
        prop::sample::select(&ZONES[..]),
        FROM_MS..UNTIL_MS,
        0u64..4 * 86_400_000,
    )
        .prop_map(|(tz, t, jitter)| {
            let zone = TimeZoneDatabase::bundled().get(tz).unwrap();
            let ts = Timestamp::from_millisecond(t as i64).unwrap();
            let tr = zone.following(ts).next().unwrap().timestamp();
            (tr.as_millisecond() as u64 + jitter).saturating_sub(2 * 86_400_000)
        })
}

/// `next` is the earliest allowed instant ≥ t: allowed itself, and nothing before it is. The
/// answer can only change at a minute boundary (every offset here is whole minutes), so checking
/// `t` and each boundary after it is exhaustive.
fn check_next_open(s: &WeeklySchedule, t: u64) {
    let next = s.next_open_ms(t);
    let end = next.unwrap_or(t + LOOKAHEAD_MS + 1);
    if let Some(n) = next {
        assert!(n >= t && s.allows(n), "{s:?} at {t}: {n} is not allowed");
    }
    assert!(next == Some(t) || !s.allows(t), "{s:?}: {t} is allowed");
    let mut m = (t / MINUTE + 1) * MINUTE;
    while m < end {
        assert!(
            !s.allows(m),
            "{s:?} from {t}: {m} is allowed, before {next:?}"
        );
        m += MINUTE;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn allows_agrees_with_jiff(s in schedule(), t in FROM_MS..UNTIL_MS) {
        prop_assert_eq!(s.allows(t), oracle(s.tz_name(), s.windows(), t));
    }

    #[test]
    fn allows_agrees_with_jiff_across_dst(s in dst_schedule(), t in near_transition()) {
        for step in 0..(4 * 60) {
            let at = t + step * 15 * MINUTE;
            prop_assert_eq!(s.allows(at), oracle(s.tz_name(), s.windows(), at), "at {}", at);
        }
    }

    #[test]
    fn encoding_round_trips(s in schedule()) {
        let bytes = s.encode();
        prop_assert!(bytes.len() <= MAX_SCHEDULE_LEN);
        prop_assert_eq!(WeeklySchedule::decode(&bytes).unwrap(), s.clone());
        let specs = s.to_specs();
        let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
        prop_assert_eq!(WeeklySchedule::parse_spec(&specs, s.tz_name()).unwrap(), s);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(s) = WeeklySchedule::decode(&bytes) {
            prop_assert_eq!(s.encode(), bytes);
        }
    }
}

proptest! {
    // Each case scans up to eight days minute by minute.
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn next_open_is_the_earliest_allowed_instant(s in schedule(), t in FROM_MS..UNTIL_MS) {
        check_next_open(&s, t);
    }

    #[test]
    fn next_open_is_the_earliest_across_dst(s in dst_schedule(), t in near_transition()) {
        check_next_open(&s, t);
    }
}

#[test]
fn next_open_from_inside_gaps_and_repeats() {
    // Every quarter hour around each zone's 2026 transitions, for windows on those very hours.
    for tz in ZONES {
        let zone = TimeZoneDatabase::bundled().get(tz).unwrap();
        let transitions = zone
            .following(Timestamp::from_millisecond(ms("2026-01-01T00:00:00Z") as i64).unwrap())
            .take(2)
            .map(|t| t.timestamp().as_millisecond() as u64)
            .collect::<Vec<_>>();
        for spec in [
            "sun 02:00-03:00",
            "sun 02:15-02:45",
            "sun 01:30-02:30",
            "sun 02:30-03:30",
            "sat,sun 00:00-01:30",
        ] {
            let s = WeeklySchedule::parse_spec(&[spec], tz).unwrap();
            for tr in &transitions {
                for q in 0..16 {
                    check_next_open(&s, tr - 2 * 3_600_000 + q * 15 * MINUTE);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Grant chains.

fn door() -> (TestDevice, SigningKey) {
    let owner = person(1);
    let mut dev = TestDevice::new(60, "Flat");
    dev.claim(&[&owner], 1);
    (dev, owner)
}

fn with_schedule(base: &Grant, issuer: &SigningKey, extensions: Vec<Extension>) -> Grant {
    GrantBody {
        extensions,
        ..base.body.clone()
    }
    .sign(issuer)
    .unwrap()
}

fn weekly(specs: &[&str]) -> Extension {
    WeeklySchedule::parse_spec(specs, "Europe/Amsterdam")
        .unwrap()
        .to_extension()
}

/// The host → cleaner chain of the issue: the host may come Mon-Fri 08:00-12:00, the cleaner
/// (delegated by the host) Wednesdays 09:00-12:00, Amsterdam time.
struct Flat {
    dev: TestDevice,
    host: SigningKey,
    cleaner: SigningKey,
    host_grant: Grant,
    cleaner_grant: Grant,
}

fn flat() -> Flat {
    let (dev, owner) = door();
    let (host, cleaner) = (person(2), person(3));
    let (from, until) = (ms("2026-01-01T00:00:00Z"), ms("2027-01-01T00:00:00Z"));
    let host_base = dev.grant(&owner, &host.public_key(), &["unlock"], from, until, 1);
    let host_grant = with_schedule(&host_base, &owner, vec![weekly(&["mon-fri 08:00-12:00"])]);
    let cleaner_base = GrantBody {
        issuer: host.public_key(),
        subject: cleaner.public_key(),
        delegation_depth: 0,
        extensions: vec![weekly(&["wed 09:00-12:00"])],
        ..host_grant.body.clone()
    };
    let cleaner_grant = cleaner_base.sign(&host).unwrap();
    Flat {
        dev,
        host,
        cleaner,
        host_grant,
        cleaner_grant,
    }
}

fn check(flat: &Flat, chain: &[Grant], sender: &SigningKey, at: &str) -> Result<(), Error> {
    verify_grant_chain(
        chain,
        flat.dev.chain.state(),
        &GrantRequest {
            device: &flat.dev.chain.device(),
            sender: &sender.public_key(),
            action: "unlock",
            args: b"",
            now_ms: ms(at),
        },
    )
    .map(|_| ())
}

#[test]
fn a_scheduled_grant_opens_inside_its_windows_only() {
    let f = flat();
    let host = [f.host_grant.clone()];
    assert_eq!(
        f.host_grant.schedule().unwrap().describe(),
        "Mon–Fri 08:00–12:00 (Europe/Amsterdam)"
    );
    // Wednesday 2026-06-10, CEST: 10:00 local is 08:00Z.
    check(&f, &host, &f.host, "2026-06-10T08:00:00Z").unwrap();
    assert_eq!(
        check(&f, &host, &f.host, "2026-06-10T12:00:00Z"),
        Err(Error::OutsideSchedule {
            opens_in_s: Some(18 * 3600)
        })
    );
    // Saturday: opens Monday 08:00 local.
    assert_eq!(
        check(&f, &host, &f.host, "2026-06-13T08:00:00Z"),
        Err(Error::OutsideSchedule {
            opens_in_s: Some(46 * 3600)
        })
    );
}

#[test]
fn a_delegated_schedule_only_narrows() {
    let f = flat();
    let chain = [f.host_grant.clone(), f.cleaner_grant.clone()];
    check(&f, &chain, &f.cleaner, "2026-06-10T08:00:00Z").unwrap();
    // 14:00 Wednesday: the cleaner's next opening is next Wednesday 09:00, not the host's
    // Thursday 08:00.
    assert_eq!(
        check(&f, &chain, &f.cleaner, "2026-06-10T12:00:00Z"),
        Err(Error::OutsideSchedule {
            opens_in_s: Some((6 * 24 + 19) * 3600)
        })
    );
    // Thursday 10:00 suits the host's schedule, not the cleaner's.
    assert!(matches!(
        check(&f, &chain, &f.cleaner, "2026-06-11T08:00:00Z"),
        Err(Error::OutsideSchedule { .. })
    ));
    // A cleaner's grant claiming every hour of the week is still held to the host's.
    let wide = with_schedule(
        &f.cleaner_grant,
        &f.host,
        vec![weekly(&["mon-sun 00:00-24:00"])],
    );
    let chain = [f.host_grant.clone(), wide];
    check(&f, &chain, &f.cleaner, "2026-06-11T08:00:00Z").unwrap();
    assert!(matches!(
        check(&f, &chain, &f.cleaner, "2026-06-13T08:00:00Z"),
        Err(Error::OutsideSchedule { .. })
    ));
    // So is one without any schedule.
    let bare = with_schedule(&f.cleaner_grant, &f.host, vec![]);
    assert!(matches!(
        check(
            &f,
            &[f.host_grant.clone(), bare],
            &f.cleaner,
            "2026-06-10T13:00:00Z"
        ),
        Err(Error::OutsideSchedule { .. })
    ));
}

#[test]
fn revocation_and_expiry_are_told_before_the_schedule() {
    let mut f = flat();
    let late = "2027-06-09T12:00:00Z";
    assert!(matches!(
        check(&f, &[f.host_grant.clone()], &f.host, late),
        Err(Error::GrantExpired(_))
    ));
    let owner = person(1);
    f.dev.apply(
        OpBody::RevokeGrant {
            chain: vec![f.host_grant.clone()],
        },
        &[&owner],
    );
    assert_eq!(
        check(&f, &[f.host_grant.clone()], &f.host, "2026-06-10T12:00:00Z"),
        Err(Error::GrantRevoked)
    );
}

#[test]
fn the_device_refuses_with_reject_code_20() {
    let f = flat();
    let cmd = Command {
        device: f.dev.chain.device(),
        sender: f.cleaner.public_key(),
        action: "unlock".into(),
        args: vec![],
        timestamp_ms: ms("2026-06-10T12:00:00Z"),
        nonce: [9; 16],
        challenge: None,
        grants: vec![f.host_grant.clone(), f.cleaner_grant.clone()],
        reply_to: ReplyTo::Direct,
    };
    let e = authorize(&cmd, f.dev.chain.state(), cmd.timestamp_ms).unwrap_err();
    assert_eq!(RejectCode::for_error(&e) as u16, 20);
    assert_eq!(RejectCode::from_u16(20), Some(RejectCode::OutsideSchedule));
    assert!(e.to_string().contains("opens in 6d 19h"), "{e}");
}

#[test]
fn schedules_are_well_formed_when_signed_and_verified() {
    let f = flat();
    let owner = person(1);
    let base = &f.host_grant;
    let two = GrantBody {
        extensions: vec![weekly(&["mon 08:00-09:00"]), weekly(&["tue 08:00-09:00"])],
        ..base.body.clone()
    };
    assert!(matches!(
        two.clone().sign(&owner),
        Err(Error::Invalid { .. })
    ));
    let junk = Extension {
        tag: EXT_WEEKLY_SCHEDULE,
        value: vec![3, b'U', b'T', b'C', 1, 0x1f, 0, 0, 0, 0],
    };
    let bad = GrantBody {
        extensions: vec![junk.clone()],
        ..base.body.clone()
    };
    assert!(bad.clone().sign(&owner).is_err());
    let unknown_zone = Extension {
        tag: EXT_WEEKLY_SCHEDULE,
        value: [&[4u8][..], b"Mars", &[1, 0x1f, 0, 0, 0, 60]].concat(),
    };
    assert_eq!(
        GrantBody {
            extensions: vec![unknown_zone],
            ..base.body.clone()
        }
        .sign(&owner),
        Err(Error::UnknownTimeZone("Mars".into()))
    );
    // Signed by hand around the checks: the chain is refused as malformed, not evaluated.
    let forged = Grant {
        signature: owner.sign(&[b"latchkey/v1/grant\0".as_slice(), &bad.content_bytes()].concat()),
        body: bad,
    };
    assert_eq!(forged.schedule(), None);
    assert!(matches!(
        verify_chain_structure(&[forged], f.dev.chain.state()),
        Err(Error::GrantInvalid { index: 0, .. })
    ));
}
