//! schedule.json: weekly schedules (grant extension 0x81): encodings, what they allow around
//! the 2026 DST transitions of Europe/Amsterdam, America/New_York and Australia/Lord_Howe,
//! scheduled grant chains, and values or specs that must be refused.

use jiff::tz::TimeZoneDatabase;
use jiff::Timestamp;
use latchkey_proto::grant::EXT_WEEKLY_SCHEDULE;
use latchkey_proto::schedule::{WeeklySchedule, MAX_SCHEDULE_LEN};

use crate::*;

fn ms(text: &str) -> u64 {
    text.parse::<Timestamp>().unwrap().as_millisecond() as u64
}

/// The instant as UTC and as local wall time with its offset, for people reading the file.
fn show(tz: &str, t_ms: u64) -> (String, String) {
    let zone = TimeZoneDatabase::bundled().get(tz).unwrap();
    let ts = Timestamp::from_millisecond(t_ms as i64).unwrap();
    let local = ts.to_zoned(zone);
    (
        ts.to_string(),
        local.strftime("%a %Y-%m-%d %H:%M:%S%:z").to_string(),
    )
}

/// jiff's own reading of the instant, independent of the schedule module: the generator checks
/// every `allows` against it before writing.
fn oracle(s: &WeeklySchedule, t_ms: u64) -> bool {
    let zone = TimeZoneDatabase::bundled().get(s.tz_name()).unwrap();
    let local = Timestamp::from_millisecond(t_ms as i64)
        .unwrap()
        .to_zoned(zone);
    let day = local.weekday().to_monday_zero_offset() as u8;
    let minute = local.hour() as u16 * 60 + local.minute() as u16;
    s.windows()
        .iter()
        .any(|w| w.days.contains(day) && w.start_min <= minute && minute < w.end_min)
}

/// The zone's first two transitions of 2026 (spring and autumn, in either order).
fn transitions_2026(tz: &str) -> Vec<u64> {
    let zone = TimeZoneDatabase::bundled().get(tz).unwrap();
    zone.following(Timestamp::from_millisecond(ms("2026-01-01T00:00:00Z") as i64).unwrap())
        .take(2)
        .map(|t| t.timestamp().as_millisecond() as u64)
        .collect()
}

struct Case<'a> {
    name: &'a str,
    description: &'a str,
    tz: &'a str,
    specs: &'a [&'a str],
    /// Every instant to record, with what the vector claims (checked against jiff here).
    at: Vec<u64>,
    /// Instants that must be allowed / refused: the point of the vector, asserted here.
    must_allow: Vec<u64>,
    must_refuse: Vec<u64>,
}

fn schedule_vector(v: &mut Vectors, case: Case<'_>) {
    let s = WeeklySchedule::parse_spec(case.specs, case.tz).unwrap();
    for t in &case.must_allow {
        assert!(
            s.allows(*t),
            "{}: {:?} must allow",
            case.name,
            show(case.tz, *t)
        );
    }
    for t in &case.must_refuse {
        assert!(
            !s.allows(*t),
            "{}: {:?} must refuse",
            case.name,
            show(case.tz, *t)
        );
    }
    let mut instants: Vec<u64> = case
        .at
        .iter()
        .chain(&case.must_allow)
        .chain(&case.must_refuse)
        .copied()
        .collect();
    instants.sort();
    instants.dedup();
    let checks: Vec<Value> = instants
        .iter()
        .map(|&t| {
            let allows = s.allows(t);
            assert_eq!(allows, oracle(&s, t), "{}: at {t}", case.name);
            let (utc, local) = show(case.tz, t);
            json!({
                "t_ms": t,
                "utc": utc,
                "local": local,
                "allows": allows,
                "next_open_ms": s.next_open_ms(t),
            })
        })
        .collect();
    let value = s.encode();
    assert_eq!(WeeklySchedule::decode(&value).unwrap(), s);
    v.ok(
        case.name,
        "schedule",
        case.description,
        json!({
            "tz": case.tz,
            "specs": case.specs,
            "value": h(&value),
            "canonical_tz": s.tz_name(),
            "windows": s.windows().iter().map(|w| json!({
                "days": w.days.bits(), "start_min": w.start_min, "end_min": w.end_min,
            })).collect::<Vec<_>>(),
            "description_text": s.describe(),
            "checks": checks,
        }),
    );
}

/// Every 15 minutes from 2 h before to 2 h after `t`.
fn around(t: u64) -> Vec<u64> {
    (0..=16).map(|q| t - 2 * HOUR + q * 15 * MINUTE).collect()
}

pub fn vectors(w: &World) -> Vectors {
    let mut v = Vectors::new();
    let wed = |hhmm: &str| ms(&format!("2026-06-10T{hhmm}:00+02:00[Europe/Amsterdam]"));
    schedule_vector(
        &mut v,
        Case {
            name: "schedule_weekday_mornings_amsterdam",
            description: "Mon-Fri 08:00-12:00 in Europe/Amsterdam (summer time, UTC+2): open \
                          from 08:00:00.000 to 11:59:59.999 local; at 12:00 the next opening is \
                          Thursday 08:00; on Friday afternoon, Monday 08:00.",
            tz: "Europe/Amsterdam",
            specs: &["mon-fri 08:00-12:00"],
            at: vec![ms("2026-06-12T12:00:00Z"), ms("2026-06-13T08:00:00Z")],
            must_allow: vec![wed("08:00"), wed("10:00"), wed("12:00") - 1],
            must_refuse: vec![wed("08:00") - 1, wed("12:00"), wed("14:00")],
        },
    );
    schedule_vector(
        &mut v,
        Case {
            name: "schedule_two_windows_to_midnight",
            description: "Two windows given out of order and in another letter case \
                          (\"SAT 10:00-24:00\", \"mon,wed-fri 08:00-09:30\", \
                          \"europe/amsterdam\"): stored sorted by their bytes, the zone as the \
                          database spells it; 24:00 ends a window at midnight.",
            tz: "europe/amsterdam",
            specs: &["SAT 10:00-24:00", "mon,wed-fri 08:00-09:30"],
            at: vec![],
            must_allow: vec![
                ms("2026-06-13T23:59:59.999+02:00[Europe/Amsterdam]"),
                ms("2026-06-10T09:29:00+02:00[Europe/Amsterdam]"),
            ],
            must_refuse: vec![
                ms("2026-06-14T00:00:00+02:00[Europe/Amsterdam]"),
                ms("2026-06-09T08:30:00+02:00[Europe/Amsterdam]"),
            ],
        },
    );

    // Around each zone's 2026 transitions: a window on exactly the skipped or repeated local
    // time, one straddling it, and the rest of the day.
    let zones: [(&str, &str, [&str; 3], &str, &str); 3] = [
        (
            "amsterdam",
            "Europe/Amsterdam",
            ["sun 02:00-03:00", "sun 02:30-03:30", "sun 01:00-04:00"],
            "29 March 2026 02:00 CET (+01:00) jumps to 03:00 CEST (+02:00)",
            "25 October 2026 03:00 CEST goes back to 02:00 CET, so 02:00-03:00 happens twice",
        ),
        (
            "new_york",
            "America/New_York",
            ["sun 02:00-03:00", "sun 02:30-03:30", "sun 01:00-04:00"],
            "8 March 2026 02:00 EST (-05:00) jumps to 03:00 EDT (-04:00)",
            "1 November 2026 02:00 EDT goes back to 01:00 EST, so 01:00-02:00 happens twice",
        ),
        (
            "lord_howe",
            "Australia/Lord_Howe",
            ["sun 02:00-02:30", "sun 02:15-02:45", "sun 01:00-04:00"],
            "4 October 2026 02:00 (+10:30) jumps to 02:30 (+11:00): a 30-minute gap",
            "5 April 2026 02:00 (+11:00) goes back to 01:30 (+10:30), so 01:30-02:00 happens twice",
        ),
    ];
    for (short, tz, [gap, straddle, wide], spring, autumn) in zones {
        let trs = transitions_2026(tz);
        // Spring is the transition where the offset grows (the wall clock skips).
        let offset_at = |t: u64| {
            let zone = TimeZoneDatabase::bundled().get(tz).unwrap();
            zone.to_offset(Timestamp::from_millisecond(t as i64).unwrap())
                .seconds()
        };
        let (spring_t, autumn_t) = if offset_at(trs[0]) > offset_at(trs[0] - 1) {
            (trs[0], trs[1])
        } else {
            (trs[1], trs[0])
        };
        let gap_s = WeeklySchedule::parse_spec(&[gap], tz).unwrap();
        // The gap window matches nothing that Sunday: its next opening is a week later.
        let next = gap_s.next_open_ms(spring_t - 3 * HOUR).unwrap();
        assert!(next > spring_t + 6 * 24 * HOUR, "{tz}: {next}");
        schedule_vector(
            &mut v,
            Case {
                name: &format!("schedule_{short}_spring_gap"),
                description: &format!(
                    "{spring}. The window \"{gap}\" lies inside the skipped local time, so it \
                     matches no instant that Sunday; from before the jump its next opening is \
                     the following Sunday."
                ),
                tz,
                specs: &[gap],
                at: around(spring_t),
                must_allow: vec![next],
                must_refuse: around(spring_t),
            },
        );
        let straddle_s = WeeklySchedule::parse_spec(&[straddle], tz).unwrap();
        assert_eq!(straddle_s.next_open_ms(spring_t - 3 * HOUR), Some(spring_t));
        schedule_vector(
            &mut v,
            Case {
                name: &format!("schedule_{short}_spring_straddle"),
                description: &format!(
                    "{spring}. The window \"{straddle}\" starts inside the skipped time: it opens \
                     at the jump itself (its next opening from before is the transition \
                     instant) and closes at its end in the new offset."
                ),
                tz,
                specs: &[straddle],
                at: around(spring_t),
                must_allow: vec![spring_t],
                must_refuse: vec![spring_t - 1],
            },
        );
        // The repeated hour: the same local wall times before and after the transition.
        let (repeat_start, repeat_len) = {
            let back = (offset_at(autumn_t - 1) - offset_at(autumn_t)) as u64 * 1000;
            (autumn_t - back, back)
        };
        let wide_s = WeeklySchedule::parse_spec(&[wide], tz).unwrap();
        let repeated_window = {
            let (_, local) = show(tz, repeat_start);
            let hhmm = &local[15..20];
            let end_min = hhmm[..2].parse::<u16>().unwrap() * 60
                + hhmm[3..].parse::<u16>().unwrap()
                + (repeat_len / MINUTE) as u16;
            format!("sun {hhmm}-{:02}:{:02}", end_min / 60, end_min % 60)
        };
        let rep_s = WeeklySchedule::parse_spec(&[repeated_window.as_str()], tz).unwrap();
        assert!(rep_s.allows(repeat_start) && rep_s.allows(autumn_t));
        assert!(wide_s.allows(repeat_start) && wide_s.allows(autumn_t));
        schedule_vector(
            &mut v,
            Case {
                name: &format!("schedule_{short}_autumn_repeat"),
                description: &format!(
                    "{autumn}. The window \"{repeated_window}\" covers exactly the repeated \
                     local time: both occurrences match (the documented rule), so it is open \
                     for twice its length, from the first occurrence's start to the second's \
                     end."
                ),
                tz,
                specs: &[repeated_window.as_str()],
                at: around(autumn_t),
                must_allow: vec![
                    repeat_start,
                    autumn_t - 1,
                    autumn_t,
                    autumn_t + repeat_len - 1,
                ],
                must_refuse: vec![repeat_start - 1, autumn_t + repeat_len],
            },
        );
        schedule_vector(
            &mut v,
            Case {
                name: &format!("schedule_{short}_both_transitions_wide"),
                description: &format!(
                    "\"{wide}\" around both 2026 transitions: {spring}; {autumn}. Open for \
                     the local hours shown, whichever offset is in force."
                ),
                tz,
                specs: &[wide],
                at: [around(spring_t), around(autumn_t)].concat(),
                must_allow: vec![spring_t, autumn_t, repeat_start],
                must_refuse: vec![],
            },
        );
    }

    decode_fails(&mut v);
    spec_fails(&mut v);
    chains(w, &mut v);
    v
}

fn decode_fails(v: &mut Vectors) {
    let good = WeeklySchedule::parse_spec(
        &["mon-fri 08:00-12:00", "sat 10:00-11:00"],
        "Europe/Amsterdam",
    )
    .unwrap()
    .encode();
    let tz = |name: &[u8]| [&[name.len() as u8][..], name].concat();
    let win = |d: u8, a: u16, b: u16| {
        let mut out = vec![d];
        out.extend(a.to_be_bytes());
        out.extend(b.to_be_bytes());
        out
    };
    let with = |name: &[u8], windows: &[Vec<u8>]| {
        [tz(name), vec![windows.len() as u8], windows.concat()].concat()
    };
    let ams: &[u8] = b"Europe/Amsterdam";
    let many: Vec<Vec<u8>> = (0..17).map(|i| win(1, i * 60, i * 60 + 30)).collect();
    let cases: Vec<(&str, &str, Vec<u8>, &str)> =
        vec![
        ("fail_schedule_empty", "An empty value.", vec![], "Truncated"),
        (
            "fail_schedule_too_large",
            "147 bytes: over the value's cap (1 + 64 + 1 + 16 × 5 = 146), refused before decoding.",
            vec![0; MAX_SCHEDULE_LEN + 1],
            "TooLarge",
        ),
        (
            "fail_schedule_trailing",
            "A valid value with one byte after it.",
            [good.clone(), vec![0]].concat(),
            "TrailingBytes",
        ),
        (
            "fail_schedule_cut",
            "A valid value without its last byte.",
            good[..good.len() - 1].to_vec(),
            "Truncated",
        ),
        (
            "fail_schedule_no_window",
            "A zone and an empty window list (leave the extension out instead).",
            with(ams, &[]),
            "Invalid",
        ),
        (
            "fail_schedule_17_windows",
            "Seventeen windows; at most 16.",
            with(ams, &many),
            "TooLarge",
        ),
        (
            "fail_schedule_zone_empty",
            "An empty zone name.",
            with(b"", &[win(1, 480, 720)]),
            "Invalid",
        ),
        (
            "fail_schedule_zone_too_long",
            "A 65-byte zone name; at most 64.",
            with(&[b'A'; 65], &[win(1, 480, 720)]),
            "TooLarge",
        ),
        (
            "fail_schedule_zone_not_utf8",
            "A zone name that is not UTF-8.",
            with(b"Europe/\xff", &[win(1, 480, 720)]),
            "NotUtf8",
        ),
        (
            "fail_schedule_zone_unknown",
            "A zone the embedded IANA database does not hold (Mars/Olympus_Mons).",
            with(b"Mars/Olympus_Mons", &[win(1, 480, 720)]),
            "UnknownTimeZone",
        ),
        (
            "fail_schedule_zone_case",
            "europe/amsterdam: a known zone, but not spelled as the database does (the value \
             must be canonical).",
            with(b"europe/amsterdam", &[win(1, 480, 720)]),
            "Invalid",
        ),
        (
            "fail_schedule_zone_unknown_placeholder",
            "Etc/Unknown: jiff's stand-in for no zone, not a place.",
            with(b"Etc/Unknown", &[win(1, 480, 720)]),
            "UnknownTimeZone",
        ),
        (
            "fail_schedule_no_days",
            "A window with no day bit set.",
            with(ams, &[win(0, 480, 720)]),
            "Invalid",
        ),
        (
            "fail_schedule_day_bit7",
            "A window with day bit 7 set (bits 0-6 are Monday-Sunday).",
            with(ams, &[win(0x81, 480, 720)]),
            "Invalid",
        ),
        (
            "fail_schedule_end_after_midnight",
            "A window ending at minute 1441 (after 24:00).",
            with(ams, &[win(1, 480, 1441)]),
            "Invalid",
        ),
        (
            "fail_schedule_empty_window",
            "A window that starts where it ends (08:00-08:00).",
            with(ams, &[win(1, 480, 480)]),
            "Invalid",
        ),
        (
            "fail_schedule_reversed_window",
            "A window that ends before it starts (12:00-08:00).",
            with(ams, &[win(1, 720, 480)]),
            "Invalid",
        ),
        (
            "fail_schedule_unsorted",
            "Two valid windows in descending byte order.",
            with(ams, &[win(0x20, 600, 660), win(0x1f, 480, 720)]),
            "Invalid",
        ),
        (
            "fail_schedule_duplicate",
            "The same window twice.",
            with(ams, &[win(0x1f, 480, 720), win(0x1f, 480, 720)]),
            "Invalid",
        ),
    ];
    for (name, description, value, error) in cases {
        v.fail(
            name,
            "schedule_fail",
            description,
            WeeklySchedule::decode(&value),
            error,
            json!({ "value": h(&value) }),
        );
    }
}

fn spec_fails(v: &mut Vectors) {
    let cases: [(&str, &str, &[&str], &str, &str); 7] = [
        (
            "fail_schedule_spec_day",
            "\"mo\" is not a day.",
            &["mo 08:00-12:00"],
            "UTC",
            "ScheduleSpec",
        ),
        (
            "fail_schedule_spec_time",
            "\"8-12\" is not HH:MM-HH:MM.",
            &["mon 8-12"],
            "UTC",
            "ScheduleSpec",
        ),
        (
            "fail_schedule_spec_25h",
            "25:00 is not a time.",
            &["mon 08:00-25:00"],
            "UTC",
            "ScheduleSpec",
        ),
        (
            "fail_schedule_spec_midnight",
            "A window crossing midnight must be written as two.",
            &["fri 22:00-02:00"],
            "UTC",
            "ScheduleSpec",
        ),
        (
            "fail_schedule_spec_no_times",
            "Days without times.",
            &["mon-fri"],
            "UTC",
            "ScheduleSpec",
        ),
        (
            "fail_schedule_spec_none",
            "No window at all.",
            &[],
            "UTC",
            "ScheduleSpec",
        ),
        (
            "fail_schedule_spec_zone",
            "A zone the embedded database does not hold.",
            &["mon 08:00-09:00"],
            "Europe/Atlantis",
            "UnknownTimeZone",
        ),
    ];
    for (name, description, specs, tz, error) in cases {
        v.fail(
            name,
            "schedule_spec_fail",
            description,
            WeeklySchedule::parse_spec(specs, tz),
            error,
            json!({ "specs": specs, "tz": tz }),
        );
    }
}

/// A host with Mon-Fri 08:00-12:00 and the cleaner the host delegates to with Wed 09:00-12:00,
/// Europe/Amsterdam, on the front door (claimed by A).
fn chains(w: &World, v: &mut Vectors) {
    let ops = lifecycle(w)[..2].to_vec();
    let epoch = epoch_of(&ops);
    let weekly = |spec: &str| {
        WeeklySchedule::parse_spec(&[spec], "Europe/Amsterdam")
            .unwrap()
            .to_extension()
    };
    let host = GrantBody {
        issuer: w.a.public_key(),
        subject: w.host.public_key(),
        scope: vec![GrantScope {
            device: w.front_id(),
            epoch,
        }],
        actions: vec!["unlock".into()],
        not_before_ms: ms("2026-01-01T00:00:00Z"),
        not_after_ms: ms("2027-01-01T00:00:00Z"),
        use_limit: None,
        delegation_depth: 1,
        extensions: vec![weekly("mon-fri 08:00-12:00")],
        salt: random(&mut rng(900)),
    }
    .sign(&w.a)
    .unwrap();
    let cleaner_body = GrantBody {
        issuer: w.host.public_key(),
        subject: w.cleaner.public_key(),
        delegation_depth: 0,
        extensions: vec![weekly("wed 09:00-12:00")],
        salt: random(&mut rng(901)),
        ..host.body.clone()
    };
    let cleaner = cleaner_body.clone().sign(&w.host).unwrap();
    let wide = GrantBody {
        extensions: vec![weekly("mon-sun 00:00-24:00")],
        ..cleaner_body
    }
    .sign(&w.host)
    .unwrap();
    assert_eq!(host.body.extensions[0].tag, EXT_WEEKLY_SCHEDULE);
    v.ok(
        "grant_scheduled_host",
        "grant",
        "Owner A's grant to the host with a weekly schedule (extension 0x81): Mon-Fri \
         08:00-12:00 Europe/Amsterdam, delegable one level, all of 2026.",
        json!({ "grant": grant_json(&host) }),
    );
    let at = |local: &str| ms(&format!("{local}[Europe/Amsterdam]"));
    let run = |grants: &[Grant], sender: &SigningKey, now: u64| {
        let chain = Chain::verify(ops.clone()).unwrap();
        grant::verify_grant_chain(
            grants,
            chain.state(),
            &GrantRequest {
                device: &w.front_id(),
                sender: &sender.public_key(),
                action: "unlock",
                args: b"",
                now_ms: now,
            },
        )
    };
    let fields = |grants: &[Grant], sender: &SigningKey, now: u64| {
        json!({
            "chain_ops": ops.iter().map(|o| h(o.to_bytes())).collect::<Vec<_>>(),
            "grants": grants.iter().map(|g| h(g.to_bytes())).collect::<Vec<_>>(),
            "request": {
                "device": h(w.front_id().0),
                "sender": pk_hex(&sender.public_key()),
                "action": "unlock",
                "args": "",
                "now_ms": now,
            },
        })
    };
    let chain = [host.clone(), cleaner.clone()];
    let wed_10 = at("2026-06-10T10:00:00+02:00");
    run(&chain, &w.cleaner, wed_10).unwrap();
    let mut ok = fields(&chain, &w.cleaner, wed_10);
    ok["use_limits"] = json!([]);
    v.ok(
        "grant_chain_scheduled_cleaner_inside",
        "grant_chain",
        "Host (Mon-Fri 08:00-12:00) → cleaner (Wed 09:00-12:00), Europe/Amsterdam: the cleaner \
         opens on Wednesday 10 June 2026 at 10:00 local.",
        ok,
    );
    let fails: Vec<(&str, &str, Vec<Grant>, &SigningKey, u64, Option<u64>)> = vec![
        (
            "fail_grant_chain_scheduled_cleaner_afternoon",
            "The same chain on Wednesday at 14:00 local: the cleaner's window is over; both \
             schedules next allow Wednesday 17 June 09:00, 163 hours later.",
            chain.to_vec(),
            &w.cleaner,
            at("2026-06-10T14:00:00+02:00"),
            Some(163 * 3600),
        ),
        (
            "fail_grant_chain_scheduled_cleaner_thursday",
            "Thursday 10:00 local: inside the host's schedule, outside the cleaner's.",
            chain.to_vec(),
            &w.cleaner,
            at("2026-06-11T10:00:00+02:00"),
            Some(143 * 3600),
        ),
        (
            "fail_grant_chain_scheduled_widened_child",
            "The cleaner's grant claims every hour of the week; on Saturday 10:00 local the \
             host's schedule still refuses (a delegated schedule only narrows). Next: Monday \
             08:00.",
            vec![host.clone(), wide.clone()],
            &w.cleaner,
            at("2026-06-13T10:00:00+02:00"),
            Some(46 * 3600),
        ),
        (
            "fail_grant_chain_scheduled_host_spring_gap",
            "The host alone on Monday 30 March 2026 07:59:59 local (CEST, the day after the \
             spring jump): refused, opens in one second.",
            vec![host.clone()],
            &w.host,
            at("2026-03-30T07:59:59+02:00"),
            Some(1),
        ),
    ];
    for (name, description, grants, sender, now, opens_in_s) in fails {
        let result = run(&grants, sender, now);
        assert_eq!(
            result.clone().err(),
            Some(Error::OutsideSchedule { opens_in_s }),
            "{name}"
        );
        let mut f = fields(&grants, sender, now);
        f["opens_in_s"] = json!(opens_in_s);
        v.fail(
            name,
            "schedule_chain_fail",
            description,
            result,
            "OutsideSchedule",
            f,
        );
    }
}
