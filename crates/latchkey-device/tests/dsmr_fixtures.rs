//! Real telegrams from meters of several makes and DSMR versions (tests/fixtures/dsmr/*.txt,
//! sources in tests/fixtures/dsmr/README.md), each with its expected reading in the `.json`
//! next to it, derived independently of this parser; and the recorded DSMR 5 stream the
//! end-to-end tests replay (`recorded-dsmr5.txt`), which must be exactly what its generator
//! below writes.
//!
//! Regenerate the recording: `cargo test -p latchkey-device --test dsmr_fixtures -- --ignored
//! write_recorded_stream`.

use std::fs;
use std::path::{Path, PathBuf};

use latchkey_device::stream::dsmr::{
    frames, parse_telegram, read_frame, write_telegram, Frame, Phase, Reading,
};
use serde_json::{json, Value};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dsmr")
}

/// The reading in the fixtures' JSON shape (integer units, as the reading holds them).
fn as_json(r: &Reading) -> Value {
    json!({
        "meter_time_ms": r.meter_time_ms,
        "tariff": r.tariff,
        "energy_delivered_wh": r.energy_delivered_wh,
        "energy_returned_wh": r.energy_returned_wh,
        "power_delivered_w": r.power_delivered_w,
        "power_returned_w": r.power_returned_w,
        "phases": r.phases.iter().map(|p| json!({
            "voltage_mv": p.voltage_mv,
            "current_ma": p.current_ma,
            "power_delivered_w": p.power_delivered_w,
            "power_returned_w": p.power_returned_w,
        })).collect::<Vec<_>>(),
        "gas_l": r.gas_l,
        "gas_time_ms": r.gas_time_ms,
    })
}

/// Every fixture named here must exist and check; a new file must be named here too.
const FIXTURES: &[&str] = &[
    "dsmr22-iskra-mt382",
    "dsmr22-landisgyr-xemex",
    "dsmr30-iskra-me382",
    "dsmr42-kaifa",
    "dsmr42-landisgyr-e350",
    "dsmr42-sagemcom-smarty-lu",
    "dsmr50-landisgyr-e360-1phase",
    "dsmr50-landisgyr-e360-3phase",
    "dsmr50-sagemcom-t210dr-eso",
    "emucs-fluvius-3phase",
    "emucs-fluvius-gas-water",
    "emucs-fluvius-solar-gas",
    "fail-crc-landisgyr-e360",
    "fail-nocrc-landisgyr-e360",
    "fail-nogasvalue-iskra-mt382",
];

#[test]
fn every_real_telegram_gives_its_expected_reading() {
    let mut on_disk: Vec<String> = fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".json").map(str::to_owned))
        .collect();
    on_disk.sort();
    assert_eq!(on_disk, FIXTURES, "fixtures on disk and in FIXTURES differ");

    for name in FIXTURES {
        let text = fs::read_to_string(fixtures().join(format!("{name}.txt"))).unwrap();
        let expected: Value = serde_json::from_str(
            &fs::read_to_string(fixtures().join(format!("{name}.json"))).unwrap(),
        )
        .unwrap();
        let got = parse_telegram(&text);
        match (&expected["reading"], &expected["error"]) {
            (Value::Object(want), Value::Null) => {
                let reading = got.unwrap_or_else(|e| panic!("{name}: {e}"));
                let mut want = Value::Object(want.clone());
                // Human-readable copies of the times, not part of the reading.
                want.as_object_mut().unwrap().remove("meter_time_utc");
                want.as_object_mut().unwrap().remove("gas_time_utc");
                assert_eq!(as_json(&reading), want, "{name}");
            }
            (Value::Null, Value::Object(err)) => {
                let e = got.expect_err(name);
                assert_eq!(Some(e.line as u64), err["line"].as_u64(), "{name}: {e}");
                assert!(
                    e.reason.contains(err["contains"].as_str().unwrap()),
                    "{name}: {e}"
                );
            }
            _ => panic!("{name}.json has neither a reading nor an error"),
        }
        // A recording of the telegram frames to the same text, whatever the line ends.
        let framed = frames(text.as_bytes());
        assert_eq!(
            framed,
            vec![Frame::Telegram {
                line: 1,
                text: text.clone()
            }],
            "{name}"
        );
    }
}

#[test]
fn every_byte_of_a_crc_telegram_is_covered() {
    // Flipping any one bit between '/' and '!' of a real DSMR 5 telegram is caught: by the CRC
    // or, where the flip breaks the end line, by the framing rules. Never a wrong reading.
    let text = fs::read_to_string(fixtures().join("dsmr50-landisgyr-e360-3phase.txt")).unwrap();
    let good = parse_telegram(&text).unwrap();
    let bang = text.find("\r\n!").unwrap() + 2;
    let mut bytes = text.clone().into_bytes();
    for i in 0..=bang {
        for bit in 0..8 {
            bytes[i] ^= 1 << bit;
            if let Ok(s) = std::str::from_utf8(&bytes) {
                match parse_telegram(s) {
                    Ok(r) => panic!("byte {i} bit {bit} flipped still parses: {r:?} vs {good:?}"),
                    Err(e) => assert!(e.line >= 1),
                }
            }
            bytes[i] ^= 1 << bit;
        }
    }
}

/// A plausible three-phase household on a weekday morning in winter, 1 s apart: a base load
/// wandering around 400 W, a kettle on L1 from 60 s to 150 s, solar panels pushing the house
/// to return power from 190 s to 260 s; voltages around 230 V; energy and gas counting up.
/// Deterministic (a fixed linear congruential generator), so the file can be checked.
fn recorded_stream() -> String {
    const START_MS: u64 = 1_772_438_400_000; // 2026-03-02T08:00:00Z, 09:00 in Amsterdam
    let mut rng: u64 = 0x1a7c_4b3e;
    let mut next = |range: u64| {
        rng = rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (rng >> 33) % range
    };
    let mut delivered_mwh: [u64; 2] = [4_512_734_000, 3_981_225_000];
    let mut returned_mwh: [u64; 2] = [1_204_551_000, 2_730_118_000];
    let mut out = String::new();
    for i in 0..300u64 {
        let base = 380 + next(60) as i64 - 30 + ((i as i64 % 40) - 20).abs() * 3;
        let kettle = if (60..150).contains(&i) { 2_050 } else { 0 };
        let solar = if (190..260).contains(&i) {
            900 + next(200) as i64
        } else {
            0
        };
        // Per phase: L1 carries the kettle, solar feeds in on L2.
        let phase_w = [base / 3 + kettle, base / 3 - solar, base - 2 * (base / 3)];
        let net: i64 = phase_w.iter().sum();
        let phases: Vec<Phase> = phase_w
            .iter()
            .map(|&w| {
                let mv = 229_000 + next(3_000) as u32;
                Phase {
                    voltage_mv: Some(mv / 100 * 100),
                    // Amps, rounded to whole amperes as Dutch meters show them.
                    current_ma: Some(((w.unsigned_abs() as u32 * 1_000 + mv / 2) / mv) * 1_000),
                    power_delivered_w: Some(w.max(0) as u32),
                    power_returned_w: Some((-w).max(0) as u32),
                }
            })
            .collect();
        let tariff = 2; // normal tariff on weekdays 07:00–23:00
        if net >= 0 {
            delivered_mwh[tariff - 1] += net as u64 * 1_000 / 3_600;
        } else {
            returned_mwh[tariff - 1] += (-net) as u64 * 1_000 / 3_600;
        }
        let t = START_MS + i * 1_000;
        let reading = Reading {
            meter_time_ms: Some(t),
            tariff: Some(tariff as u8),
            energy_delivered_wh: delivered_mwh.iter().map(|m| m / 1_000).collect(),
            energy_returned_wh: returned_mwh.iter().map(|m| m / 1_000).collect(),
            power_delivered_w: Some(net.max(0) as u32),
            power_returned_w: Some((-net).max(0) as u32),
            phases,
            // DSMR 5 gas meters report every 5 minutes; the boiler ran since the last one.
            gas_l: Some(1_650_117 + if i >= 240 { 41 } else { 0 }),
            gas_time_ms: Some(if i >= 240 {
                START_MS + 240_000 - 5_000
            } else {
                START_MS - 60_000 - 5_000
            }),
        };
        out.push_str(&write_telegram(&reading, "ISK5\\2M550T-1012").unwrap());
    }
    out
}

#[test]
fn recorded_stream_is_what_its_generator_writes() {
    let path = fixtures().join("recorded-dsmr5.txt");
    let on_disk = fs::read_to_string(&path).unwrap();
    assert!(
        on_disk == recorded_stream(),
        "{} differs from its generator; regenerate it (see the top of this file)",
        path.display()
    );
    let readings: Vec<Reading> = frames(on_disk.as_bytes())
        .into_iter()
        .map(|f| read_frame(f).unwrap())
        .collect();
    assert_eq!(readings.len(), 300);
    for pair in readings.windows(2) {
        assert_eq!(
            pair[1].meter_time_ms.unwrap(),
            pair[0].meter_time_ms.unwrap() + 1_000
        );
        assert!(pair[1].energy_delivered_wh[1] >= pair[0].energy_delivered_wh[1]);
    }
    let powers: Vec<u32> = readings
        .iter()
        .map(|r| r.power_delivered_w.unwrap())
        .collect();
    assert!(powers.iter().max().unwrap() > &2_000, "the kettle shows");
    assert!(
        readings.iter().any(|r| r.power_returned_w.unwrap() > 300),
        "the solar panels show"
    );
    assert!(readings
        .iter()
        .all(|r| r.phases.len() == 3 && r.gas_l.is_some()));
}

#[test]
#[ignore = "writes tests/fixtures/dsmr/recorded-dsmr5.txt; run by hand"]
fn write_recorded_stream() {
    fs::write(fixtures().join("recorded-dsmr5.txt"), recorded_stream()).unwrap();
}
