//! The reader's logic with real sealed frames and key messages from latchkey-proto: readings
//! come out in order, keys are taken only from the device, and a cut-off is said once.

mod common;

use common::FakeDevice;
use latchkey_proto::kem::KemSecretKey;
use latchkey_provider::output::{self, Format};
use latchkey_provider::reader::{Output, StreamReader};
use latchkey_testkit::{person, rng};

struct Provider {
    kem: KemSecretKey,
    recipient: [u8; 32],
}

fn provider(seed: u64) -> Provider {
    Provider {
        kem: KemSecretKey::generate(&mut rng(seed)),
        recipient: person(seed).public_key().to_bytes(),
    }
}

fn reader(dev: &FakeDevice, p: &Provider) -> StreamReader {
    StreamReader::new(
        dev.id,
        "p1",
        p.recipient,
        dev.identity().public_key(),
        Vec::new(),
        3_000,
    )
}

fn seqs(outputs: &[Output]) -> Vec<u64> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Reading { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect()
}

#[test]
fn frames_before_their_key_wait_for_it_then_come_out_in_order() {
    let mut dev = FakeDevice::new(1);
    let p = provider(11);
    let mut r = reader(&dev, &p);
    // Frames 1..=3 arrive before the retained key message.
    for seq in 1..=3 {
        assert!(r.frame(&dev.frame(seq), 0).is_empty());
    }
    let msg = dev.key_message(&p.kem, p.recipient, &[1]);
    let out = r.key_message(&msg, &p.kem);
    assert!(
        matches!(&out[0], Output::NewKeys { keys, consent: Some(_) } if keys.len() == 1 && keys[0].key_id == 1)
    );
    assert_eq!(seqs(&out), [1, 2, 3]);
    assert_eq!(seqs(&r.frame(&dev.frame(4), 200)), [4]);
    // A redelivered frame is not shown twice.
    assert!(r.frame(&dev.frame(4), 210).is_empty());
    if let Output::Reading {
        reading, key_id, ..
    } = &r.frame(&dev.frame(5), 220)[0]
    {
        assert_eq!(*reading, common::reading(5));
        assert_eq!(*key_id, 1);
    } else {
        panic!("a reading");
    }
    assert_eq!(r.current_key_id(), Some(1));
}

#[test]
fn fail_a_key_message_signed_by_another_key_gives_no_key() {
    let mut dev = FakeDevice::new(2);
    let p = provider(12);
    let mut r = reader(&dev, &p);
    // Someone on the broker seals a key message to the provider with their own key, as if
    // from the device: the provider's KEM opens it, the signature does not verify.
    let forger = person(99);
    let forged = dev.key_message_by(&forger, p.kem.public(), p.recipient, &[1]);
    let out = r.key_message(&forged, &p.kem);
    assert!(
        matches!(&out[..], [Output::Refused(why)] if why.contains("not signed by the device")),
        "{out:?}"
    );
    assert_eq!(r.current_key_id(), None);
    assert!(r.frame(&dev.frame(1), 10).is_empty(), "not readable");
}

#[test]
fn fail_a_key_message_for_another_recipient_or_garbage_is_refused() {
    let mut dev = FakeDevice::new(3);
    let p = provider(13);
    let other = provider(14);
    let mut r = reader(&dev, &p);
    // Sealed to this provider's KEM but naming another recipient (copied between topics).
    let msg = dev.key_message(&p.kem, other.recipient, &[1]);
    assert!(matches!(
        &r.key_message(&msg, &p.kem)[..],
        [Output::Refused(_)]
    ));
    // Sealed to another provider: this one cannot open it.
    let msg = dev.key_message(&other.kem, p.recipient, &[1]);
    assert!(matches!(
        &r.key_message(&msg, &p.kem)[..],
        [Output::Refused(_)]
    ));
    let mut bent = dev.key_message(&p.kem, p.recipient, &[1]);
    bent[100] ^= 1;
    assert!(matches!(
        &r.key_message(&bent, &p.kem)[..],
        [Output::Refused(_)]
    ));
    assert!(matches!(
        &r.key_message(b"junk", &p.kem)[..],
        [Output::Refused(_)]
    ));
    assert_eq!(r.current_key_id(), None);
    // A frame of another device is dropped, said as such.
    let mut stranger = FakeDevice::new(4);
    assert!(matches!(
        &r.frame(&stranger.frame(1), 0)[..],
        [Output::Refused(_)]
    ));
}

#[test]
fn a_rotation_it_is_not_given_is_a_cut_off_said_once_after_the_grace() {
    let mut dev = FakeDevice::new(5);
    let p = provider(15);
    let mut r = reader(&dev, &p);
    let msg = dev.key_message(&p.kem, p.recipient, &[1]);
    r.key_message(&msg, &p.kem);
    assert_eq!(seqs(&r.frame(&dev.frame(1), 0)), [1]);
    dev.rotate(2);
    assert!(r.frame(&dev.frame(2), 1_000).is_empty());
    assert!(r.frame(&dev.frame(3), 2_000).is_empty());
    assert!(r.tick(3_999).is_empty(), "still within the grace");
    let out = r.tick(4_000);
    assert!(
        matches!(
            &out[..],
            [Output::CutOff {
                from_seq: 2,
                key_id: 2,
                cleared: false,
                ever_held: true
            }]
        ),
        "{out:?}"
    );
    // Said once: later frames are counted, not reported again.
    assert!(r.frame(&dev.frame(4), 5_000).is_empty());
    assert!(r.tick(60_000).is_empty());
    assert_eq!(r.unreadable(), 3);
    // A new consent brings the current key: readable again from then on.
    let msg = dev.key_message(&p.kem, p.recipient, &[2]);
    let out = r.key_message(&msg, &p.kem);
    assert!(
        out.iter().any(|o| matches!(
            o,
            Output::Resumed {
                key_id: 2,
                from_seq: 2
            }
        )),
        "{out:?}"
    );
    assert_eq!(seqs(&r.frame(&dev.frame(5), 61_100)), [5]);
}

#[test]
fn a_key_for_the_rotation_within_the_grace_leaves_no_gap() {
    let mut dev = FakeDevice::new(6);
    let p = provider(16);
    let mut r = reader(&dev, &p);
    let msg = dev.key_message(&p.kem, p.recipient, &[1]);
    r.key_message(&msg, &p.kem);
    assert_eq!(seqs(&r.frame(&dev.frame(1), 0)), [1]);
    dev.rotate(2);
    assert!(r.frame(&dev.frame(2), 100).is_empty());
    assert!(r.tick(1_000).is_empty());
    let msg = dev.key_message(&p.kem, p.recipient, &[1, 2]);
    let out = r.key_message(&msg, &p.kem);
    assert_eq!(seqs(&out), [2]);
    assert_eq!(seqs(&r.frame(&dev.frame(3), 1_600)), [3]);
    assert_eq!(r.current_key_id(), Some(2));
    assert_eq!(r.unreadable(), 0);
}

#[test]
fn a_cleared_key_topic_makes_the_cut_off_immediate() {
    let mut dev = FakeDevice::new(7);
    let p = provider(17);
    let mut r = reader(&dev, &p);
    let msg = dev.key_message(&p.kem, p.recipient, &[1]);
    r.key_message(&msg, &p.kem);
    assert!(matches!(
        &r.key_message(b"", &p.kem)[..],
        [Output::KeyCleared]
    ));
    dev.rotate(1);
    let out = r.frame(&dev.frame(1), 20);
    assert!(
        matches!(
            &out[..],
            [Output::CutOff {
                from_seq: 1,
                key_id: 2,
                cleared: true,
                ..
            }]
        ),
        "{out:?}"
    );
}

#[test]
fn json_and_csv_lines_carry_seq_key_id_and_the_reading_view() {
    let reading = common::reading(9);
    let line = output::line(Format::Json, 9, 2, &reading);
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["seq"], 9);
    assert_eq!(v["key_id"], 2);
    assert_eq!(v["tariff"], 2);
    assert_eq!(v["power_delivered_kw"], 1.009);
    assert_eq!(v["energy_delivered_kwh"][0], 1000.009);
    assert_eq!(v["meter_time"], "2027-01-15T08:00:09Z");
    let header = output::csv_header();
    let row = output::line(Format::Csv, 9, 2, &reading);
    assert!(
        header.starts_with("seq,key_id,meter_time,tariff,"),
        "{header}"
    );
    assert_eq!(header.split(',').count(), row.split(',').count(), "{row}");
    assert!(
        row.starts_with("9,2,2027-01-15T08:00:09Z,2,1000.009,"),
        "{row}"
    );
    assert_eq!("csv".parse::<Format>().unwrap(), Format::Csv);
    assert!("xml".parse::<Format>().is_err());
}

#[test]
fn without_any_key_the_cut_off_says_no_consent_was_held() {
    let mut dev = FakeDevice::new(8);
    let p = provider(18);
    let mut r = reader(&dev, &p);
    assert!(r.frame(&dev.frame(1), 0).is_empty());
    let out = r.tick(3_000);
    assert!(
        matches!(
            &out[..],
            [Output::CutOff {
                from_seq: 1,
                key_id: 1,
                ever_held: false,
                ..
            }]
        ),
        "{out:?}"
    );
}
