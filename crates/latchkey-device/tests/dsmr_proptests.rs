//! Property tests of the DSMR parser and framer: arbitrary bytes (and mangled real telegrams)
//! never panic; any reading written as a telegram parses back to itself, within the proto's
//! caps; any single flipped bit of a telegram with a CRC is caught; and however a stream is cut
//! into chunks, the framer sees the same telegrams.

use latchkey_device::stream::dsmr::{
    frames, parse_telegram, write_telegram, Frame, Phase, Reading, TelegramFramer,
    MAX_TELEGRAM_BYTES,
};
use latchkey_proto::codec::Codec;
use proptest::prelude::*;

/// 2000-01-01T01:00:00Z to 2099-12-31T21:59:59Z in whole seconds: meter times are local
/// YYMMDD in 2000–2099.
fn meter_time() -> impl Strategy<Value = u64> {
    (946_688_400u64..4_102_437_599).prop_map(|s| s * 1_000)
}

prop_compose! {
    fn phase()(
        voltage_mv in proptest::option::of(any::<u32>()),
        current_ma in proptest::option::of(any::<u32>()),
        power_delivered_w in proptest::option::of(any::<u32>()),
        power_returned_w in proptest::option::of(any::<u32>()),
    ) -> Phase {
        Phase { voltage_mv, current_ma, power_delivered_w, power_returned_w }
    }
}

prop_compose! {
    fn reading()(
        meter_time_ms in proptest::option::of(meter_time()),
        tariff in proptest::option::of(1u8..=255),
        energy_delivered_wh in proptest::collection::vec(any::<u64>(), 0..=4),
        energy_returned_wh in proptest::collection::vec(any::<u64>(), 0..=4),
        power_delivered_w in proptest::option::of(any::<u32>()),
        power_returned_w in proptest::option::of(any::<u32>()),
        mut phases in proptest::collection::vec(phase(), 0..=3),
        gas in proptest::option::of((any::<u64>(), meter_time())),
    ) -> Reading {
        // A phase with nothing in it after the last one that has something is not written
        // (meters leave out phases they do not have).
        while phases.last().is_some_and(|p| *p == Phase::default()) {
            phases.pop();
        }
        Reading {
            meter_time_ms,
            tariff,
            energy_delivered_wh,
            energy_returned_wh,
            power_delivered_w,
            power_returned_w,
            phases,
            gas_l: gas.map(|(l, _)| l),
            gas_time_ms: gas.map(|(_, t)| t),
        }
    }
}

fn real_telegram() -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/dsmr/dsmr50-landisgyr-e360-3phase.txt"),
    )
    .unwrap()
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..6_000)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = parse_telegram(&text);
        let _ = parse_telegram(&format!("/{text}"));
        for frame in frames(&bytes) {
            if let Frame::Telegram { text, .. } = frame {
                prop_assert!(text.len() <= MAX_TELEGRAM_BYTES);
                let _ = parse_telegram(&text);
            }
        }
    }

    #[test]
    fn mangled_real_telegrams_never_panic_and_read_within_the_caps(
        cuts in proptest::collection::vec((0usize..2_000, 0usize..40, "[-0-9a-zA-Z:.*()!/\r\n ]{0,12}"), 1..6),
    ) {
        let mut text = real_telegram();
        for (at, len, insert) in cuts {
            let at = at.min(text.len());
            let end = (at + len).min(text.len());
            if text.is_char_boundary(at) && text.is_char_boundary(end) {
                text.replace_range(at..end, &insert);
            }
        }
        if let Ok(reading) = parse_telegram(&text) {
            // Whatever parses fits the proto's reading.
            prop_assert!(reading.validate().is_ok());
            prop_assert!(reading.to_bytes().len() <= 256);
        }
    }

    #[test]
    fn written_readings_parse_back(reading in reading()) {
        let text = write_telegram(&reading, "ISK5\\2M550T-1012").expect("writable");
        prop_assert!(text.len() <= MAX_TELEGRAM_BYTES);
        let back = parse_telegram(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(&back, &reading, "{}", text);
        prop_assert!(back.validate().is_ok());
        prop_assert_eq!(frames(text.as_bytes()), vec![Frame::Telegram { line: 1, text: text.clone() }]);
    }

    #[test]
    fn a_flipped_bit_is_caught(reading in reading(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let text = write_telegram(&reading, "KFM5KAIFA-METER").unwrap();
        let covered = text.rfind('!').unwrap() + 1;
        let mut bytes = text.into_bytes();
        bytes[at.index(covered)] ^= 1 << bit;
        if let Ok(flipped) = std::str::from_utf8(&bytes) {
            prop_assert!(parse_telegram(flipped).is_err());
        }
    }

    #[test]
    fn chunking_does_not_change_the_frames(
        readings in proptest::collection::vec(reading(), 1..5),
        noise in "[a-z \r\n]{0,20}",
        cuts in proptest::collection::vec(1usize..300, 0..30),
    ) {
        let mut stream = noise.clone();
        for r in &readings {
            stream.push_str(&write_telegram(r, "XMX5LGF0010455307579").unwrap());
        }
        let whole = frames(stream.as_bytes());
        let mut framer = TelegramFramer::new();
        let mut pieces = Vec::new();
        let mut rest = stream.as_bytes();
        for cut in cuts {
            let (a, b) = rest.split_at(cut.min(rest.len()));
            pieces.extend(framer.push(a));
            rest = b;
        }
        pieces.extend(framer.push(rest));
        pieces.extend(framer.finish());
        prop_assert_eq!(&pieces, &whole);
        let telegrams = whole.iter().filter(|f| matches!(f, Frame::Telegram { .. })).count();
        prop_assert_eq!(telegrams, readings.len());
    }
}
