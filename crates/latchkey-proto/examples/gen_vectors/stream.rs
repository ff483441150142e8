//! stream.json: data streams (PROTOCOL.md §14): readings and their JSON/CSV views, sealed
//! reading frames under a stream key (deterministic: the nonce comes from a seeded rng and is
//! in the vector), signed key grants, a key message sealed to a recipient's KEM key (sealed
//! anew each run; it carries the reader's secret key file), and what must be refused.

use crate::*;
use latchkey_proto::consent::ConsentId;
use latchkey_proto::stream::{self, KeyEntry, KeyGrant, Phase, Reading, StreamKey, READING_BLOCK};

pub fn three_phase() -> Reading {
    let phase = |v: u32, a: u32, w: u32| Phase {
        voltage_mv: Some(v),
        current_ma: Some(a),
        power_delivered_w: Some(w),
        power_returned_w: Some(0),
    };
    Reading {
        meter_time_ms: Some(T0 + 90_000),
        tariff: Some(2),
        energy_delivered_wh: vec![4_546_201, 2_984_102],
        energy_returned_wh: vec![12, 0],
        power_delivered_w: Some(1_193),
        power_returned_w: Some(0),
        phases: vec![
            phase(229_000, 2_000, 445),
            phase(230_100, 1_000, 213),
            phase(229_900, 3_000, 535),
        ],
        gas_l: Some(2_569_646),
        gas_time_ms: Some(T0),
    }
}

fn single_phase_returning() -> Reading {
    Reading {
        meter_time_ms: Some(T0 + 1_500),
        tariff: Some(1),
        energy_delivered_wh: vec![1_000, 2_000],
        energy_returned_wh: vec![300, 4_000],
        power_delivered_w: Some(0),
        power_returned_w: Some(2_250),
        phases: vec![Phase {
            voltage_mv: Some(236_400),
            current_ma: Some(9_000),
            power_delivered_w: Some(0),
            power_returned_w: Some(2_250),
        }],
        gas_l: None,
        gas_time_ms: None,
    }
}

pub fn stream_key(n: u8) -> StreamKey {
    StreamKey::from_bytes(hash_bytes(&format!("vector/stream-key-{n}")))
}

fn hash_bytes(label: &str) -> [u8; 32] {
    latchkey_proto::hash::labeled(label, &[])
}

pub fn vectors(w: &World) -> Vectors {
    let mut v = Vectors::new();
    let device = w.front_id();

    for (name, reading, what) in [
        (
            "reading_three_phase_gas",
            three_phase(),
            "A DSMR 5 three-phase reading with gas",
        ),
        (
            "reading_single_phase_returning",
            single_phase_returning(),
            "A single-phase meter returning solar power, no gas",
        ),
        (
            "reading_empty",
            Reading::default(),
            "A reading with nothing in it (every option absent, every list empty)",
        ),
    ] {
        let bytes = reading.to_bytes();
        assert_eq!(Reading::from_bytes(&bytes).as_ref(), Ok(&reading));
        let view = reading.view();
        v.ok(
            name,
            "reading",
            &format!(
                "{what}: the reading's fields (integers), its canonical bytes, the JSON view every \
                 tool prints (kWh, kW, V, A, m³ as floats; RFC 3339 UTC times; absent fields \
                 omitted, meter_time null), and its CSV row under the fixed 26-column header."
            ),
            json!({
                "reading": reading_json(&reading),
                "bytes": h(&bytes),
                "view": serde_json::to_value(&view).unwrap(),
                "csv_header": latchkey_proto::stream::ReadingView::csv_header(),
                "csv_row": view.csv_row(),
            }),
        );
    }

    // Sealed frames: deterministic (the nonce is drawn from a seeded rng and stated).
    let key = stream_key(1);
    for (name, stream_name, key_id, seq, reading, what) in [
        (
            "sealed_reading_p1",
            "p1",
            1u32,
            1u64,
            three_phase(),
            "The three-phase reading sealed on stream p1 under key 1 at seq 1: 347 bytes",
        ),
        (
            "sealed_reading_p1_empty",
            "p1",
            3,
            u64::MAX,
            Reading::default(),
            "An empty reading on p1 under key 3 at the last seq: the same 347 bytes",
        ),
        (
            "sealed_reading_long_name",
            "water_meter-basement_0123456789a",
            7,
            42,
            single_phase_returning(),
            "A reading on a stream with a 32-byte name: 377 bytes, the longest frame",
        ),
    ] {
        let frame = stream::seal_reading(
            &device,
            stream_name,
            key_id,
            &key,
            seq,
            &reading,
            &mut rng(0x5ea1),
        )
        .unwrap();
        assert_eq!(frame.len(), stream::sealed_reading_len(stream_name));
        let header_len = 2 + 32 + 1 + stream_name.len() + 4 + 8 + 24;
        let (h_, opened) = stream::open_reading(&frame, &key).unwrap();
        assert_eq!(opened, reading);
        assert_eq!(h_.seq, seq);
        v.ok(
            name,
            "sealed_reading",
            &format!(
                "{what}: version 1 || kind 5 || device || u8 stream length || stream || u32 key id \
                 || u64 seq || nonce (24) || XChaCha20-Poly1305(reading key, nonce, aad = those \
                 header bytes, u16 length || reading || zeros to 258 bytes) || tag. reading_key = \
                 HKDF-SHA256(salt none, ikm stream key, info \"latchkey/v1/stream-reading-key\" \
                 || 0x00 || device || stream name), 32 bytes."
            ),
            json!({
                "device": h(device.0),
                "stream": stream_name,
                "key_id": key_id,
                "seq": seq,
                "stream_key": h(key.as_bytes()),
                "reading_key": h(*key.reading_key(&device, stream_name)),
                "nonce": h(&frame[header_len - 24..header_len]),
                "header": h(&frame[..header_len]),
                "reading": h(reading.to_bytes()),
                "frame": h(&frame),
            }),
        );
    }

    // Signed key grants (deterministic: Ed25519 signatures are).
    let identity = &w.front.identity;
    let provider_key = w.host.public_key().to_bytes();
    let entry = |n: u8, from_seq: u64| KeyEntry {
        key_id: n as u32,
        from_seq,
        key: stream_key(n),
    };
    let current_only = KeyGrant {
        device,
        stream: "p1".into(),
        recipient: provider_key,
        consent: Some(ConsentId(hash_bytes("vector/consent-id"))),
        issued_ms: T0 + HOUR,
        keys: vec![entry(3, 86_400)],
    };
    let history = KeyGrant {
        keys: vec![entry(1, 0), entry(2, 3_600), entry(3, 86_400)],
        ..current_only.clone()
    };
    let owner_copy = KeyGrant {
        recipient: w.a.public_key().to_bytes(),
        consent: None,
        keys: vec![entry(3, 86_400)],
        ..current_only.clone()
    };
    for (name, grant, what) in [
        (
            "key_grant_current_only",
            &current_only,
            "A provider's grant of the current key only (its consent does not ask for history)",
        ),
        (
            "key_grant_history",
            &history,
            "A provider's grant with history: keys 1 to 3, ascending, the last current",
        ),
        (
            "key_grant_owner_copy",
            &owner_copy,
            "An owner's own copy (recipient = the owner's public key, no consent)",
        ),
    ] {
        let signed = grant.to_signed_bytes(identity).unwrap();
        assert_eq!(
            KeyGrant::from_signed_bytes(&signed, &identity.public_key()).as_ref(),
            Ok(grant)
        );
        v.ok(
            name,
            "key_grant",
            &format!(
                "{what}: the signed grant (version 1 || device || u8 stream length || stream || \
                 recipient (32) || option consent id || u64 issued || u8 count || count × (u32 key \
                 id || u64 from seq || key (32)) || Ed25519 signature by the device identity key \
                 over \"latchkey/v1/key-grant\\0\" || everything before it)."
            ),
            json!({
                "device_identity": pk_hex(&identity.public_key()),
                "grant": key_grant_json(grant),
                "signed_grant": h(signed.as_slice()),
            }),
        );
    }

    // A key message: sealed anew each run to the back door's KEM keys, standing in for a
    // provider's.
    let reader = &w.back;
    let mut r = rng(0x6e75);
    let message = stream::seal_key_grant(&history, identity, reader.kem.public(), &mut r).unwrap();
    assert_eq!(message.len(), stream::KEY_MESSAGE_LEN);
    v.ok(
        "key_message_history",
        "key_message",
        "The history grant sealed to a recipient's KEM public key: version 1 || kind 4 || KEM \
         ciphertext (X25519 ephemeral 32 || sntrup761 1,039) || nonce (24) || XChaCha20-Poly1305( \
         HKDF-Expand(combined key, \"latchkey/v1/key-grant-key\"), nonce, aad = those header \
         bytes, u32 length || signed grant || random filler to 4,096 bytes) || tag: always 5,209 \
         bytes. Sealed anew each run; reader_secret_keys is a device key file whose KEM keys play \
         the recipient's, and the message must open to signed_grant.",
        json!({
            "device_identity": pk_hex(&identity.public_key()),
            "reader_secret_keys": h(reader.to_secret_bytes().as_slice()),
            "message": h(&message),
            "signed_grant": h(history.to_signed_bytes(identity).unwrap().as_slice()),
        }),
    );

    // Refusals: readings.
    let good = three_phase().to_bytes();
    v.fail_truncations("reading", "Reading", &good, "TrailingBytes");
    v.fail_decode(
        "fail_reading_version",
        "Reading",
        "A reading whose version byte is 2.",
        &{
            let mut b = good.clone();
            b[0] = 2;
            b
        },
        "UnsupportedVersion",
    );
    v.fail_decode(
        "fail_reading_tariff_zero",
        "Reading",
        "A reading whose tariff is 0 (tariffs are numbered from 1).",
        &Reading {
            tariff: Some(0),
            ..Reading::default()
        }
        .to_bytes(),
        "Invalid",
    );
    v.fail_decode(
        "fail_reading_five_tariffs",
        "Reading",
        "A reading with 5 delivered-energy registers (at most 4).",
        &Reading {
            energy_delivered_wh: vec![1; 5],
            ..Reading::default()
        }
        .to_bytes(),
        "TooLarge",
    );
    v.fail_decode(
        "fail_reading_four_phases",
        "Reading",
        "A reading with 4 phases (at most 3).",
        &Reading {
            phases: vec![Phase::default(); 4],
            ..Reading::default()
        }
        .to_bytes(),
        "TooLarge",
    );
    v.fail_decode(
        "fail_reading_option_flag",
        "Reading",
        "A reading whose meter-time presence byte is 2 (only 0 and 1 exist).",
        &{
            let mut b = Reading::default().to_bytes();
            b[1] = 2;
            b
        },
        "UnknownTag",
    );
    v.fail_decode(
        "fail_reading_time_after_9999",
        "Reading",
        "A reading whose meter time is after 9999-12-31T23:59:59.999Z.",
        &Reading {
            meter_time_ms: Some(stream::MAX_TIME_MS + 1),
            ..Reading::default()
        }
        .to_bytes(),
        "Invalid",
    );
    v.fail_decode(
        "fail_reading_too_large",
        "Reading",
        "257 bytes: over the reading's 256-byte cap, refused before decoding.",
        &[0u8; 257],
        "TooLarge",
    );

    // Refusals: frames.
    let frame =
        stream::seal_reading(&device, "p1", 1, &key, 1, &three_phase(), &mut rng(0x5ea1)).unwrap();
    let header_len = 2 + 32 + 1 + 2 + 4 + 8 + 24;
    let resealed = |header: &[u8], block: &[u8]| {
        let nonce: [u8; 24] = header[header.len() - 24..].try_into().unwrap();
        let sealed = kem::aead_seal(&key.reading_key(&device, "p1"), &nonce, header, block);
        [header.to_vec(), sealed].concat()
    };
    let block_of = |len: u16, body: &[u8], filler: u8| {
        let mut block = vec![filler; READING_BLOCK];
        block[..2].copy_from_slice(&len.to_be_bytes());
        block[2..2 + body.len()].copy_from_slice(body);
        block
    };
    let body = three_phase().to_bytes();
    let mut nonzero_filler = block_of(body.len() as u16, &body, 0);
    nonzero_filler[READING_BLOCK - 1] = 1;
    let cases: Vec<(&str, &str, Vec<u8>, StreamKey, &str)> = vec![
        (
            "fail_sealed_reading_other_key",
            "A frame opened with another stream key (key 2): the AEAD fails.",
            frame.clone(),
            stream_key(2),
            "DecryptFailed",
        ),
        (
            "fail_sealed_reading_seq_changed",
            "The seq in the clear header changed (it is authenticated): the AEAD fails.",
            flip(&frame, 2 + 32 + 1 + 2 + 4 + 7),
            stream_key(1),
            "DecryptFailed",
        ),
        (
            "fail_sealed_reading_truncated",
            "A frame one byte short of its stream's fixed length.",
            frame[..frame.len() - 1].to_vec(),
            stream_key(1),
            "Truncated",
        ),
        (
            "fail_sealed_reading_trailing",
            "A frame one byte over its stream's fixed length.",
            [frame.clone(), vec![0]].concat(),
            stream_key(1),
            "TrailingBytes",
        ),
        (
            "fail_sealed_reading_version",
            "A frame whose version byte is 2.",
            patch(&frame, 0, &[1], &[2]),
            stream_key(1),
            "UnsupportedVersion",
        ),
        (
            "fail_sealed_reading_kind",
            "A frame whose kind is 4 (a key message's), not 5.",
            patch(&frame, 1, &[5], &[4]),
            stream_key(1),
            "UnknownTag",
        ),
        (
            "fail_sealed_reading_key_id_zero",
            "A frame naming key id 0 (key ids start at 1).",
            patch(&frame, 2 + 32 + 1 + 2, &[0, 0, 0, 1], &[0, 0, 0, 0]),
            stream_key(1),
            "Invalid",
        ),
        (
            "fail_sealed_reading_stream_name",
            "A frame whose stream name is \"P1\" (upper case is not a stream name).",
            patch(&frame, 2 + 32 + 1, b"p1", b"P1"),
            stream_key(1),
            "Invalid",
        ),
        (
            "fail_sealed_reading_too_large",
            "378 bytes: over the longest frame (377), refused before anything is read.",
            vec![1u8; 378],
            stream_key(1),
            "TooLarge",
        ),
        (
            "fail_sealed_reading_kind_before_length",
            "Two faults: kind 4 and one byte short. The kind is read first (UnknownTag).",
            patch(&frame, 1, &[5], &[4])[..frame.len() - 1].to_vec(),
            stream_key(1),
            "UnknownTag",
        ),
        (
            "fail_sealed_reading_key_id_before_aead",
            "Two faults: key id 0 and opened with the wrong key. The header's rule comes before \
             the AEAD (Invalid).",
            patch(&frame, 2 + 32 + 1 + 2, &[0, 0, 0, 1], &[0, 0, 0, 0]),
            stream_key(2),
            "Invalid",
        ),
        (
            "fail_sealed_reading_length_before_aead",
            "Two faults: one byte over the stream's length and the wrong key. The exact length \
             comes before the AEAD (TrailingBytes).",
            [frame.clone(), vec![0]].concat(),
            stream_key(2),
            "TrailingBytes",
        ),
        (
            "fail_sealed_reading_filler",
            "A correctly sealed frame whose padding filler is not all zeros.",
            resealed(&frame[..header_len], &nonzero_filler),
            stream_key(1),
            "BadPadding",
        ),
        (
            "fail_sealed_reading_length",
            "A correctly sealed frame whose inner length says 257 (over the 256-byte cap).",
            resealed(&frame[..header_len], &block_of(257, &body, 0)),
            stream_key(1),
            "BadPadding",
        ),
    ];
    for (name, what, bytes, key, expected) in cases {
        v.fail(
            name,
            "sealed_reading_fail",
            what,
            stream::open_reading(&bytes, &key),
            expected,
            json!({ "frame": h(&bytes), "stream_key": h(key.as_bytes()) }),
        );
    }

    // Refusals: key grants and messages.
    let signed = history.to_signed_bytes(identity).unwrap();
    let unsorted = {
        // Keys 1, 3, 2: re-signed so only the order is wrong.
        let mut g = history.clone();
        g.keys.swap(1, 2);
        let mut w2 = latchkey_proto::codec::Writer::new();
        w2.u8(1);
        w2.raw(&g.device.0);
        w2.bytes8(g.stream.as_bytes());
        w2.raw(&g.recipient);
        w2.u8(1);
        w2.raw(&g.consent.unwrap().0);
        w2.u64(g.issued_ms);
        w2.u8(g.keys.len() as u8);
        for k in &g.keys {
            w2.u32(k.key_id);
            w2.u64(k.from_seq);
            w2.raw(k.key.as_bytes());
        }
        let content = w2.into_inner();
        let sig = identity.sign(&[b"latchkey/v1/key-grant\0".as_slice(), &content].concat());
        [content, sig.0.to_vec()].concat()
    };
    for (name, what, bytes, checked_with, expected) in [
        (
            "fail_key_grant_other_identity",
            "A signed grant checked with another device's identity key (the back door's).",
            signed.to_vec(),
            w.back.identity.public_key(),
            "BadSignature",
        ),
        (
            "fail_key_grant_unsorted",
            "A correctly signed grant whose key ids are 1, 3, 2 (they must ascend).",
            unsorted,
            identity.public_key(),
            "Invalid",
        ),
        (
            "fail_key_grant_truncated",
            "A signed grant without its last byte.",
            signed[..signed.len() - 1].to_vec(),
            identity.public_key(),
            "Truncated",
        ),
    ] {
        v.fail(
            name,
            "key_grant_fail",
            what,
            KeyGrant::from_signed_bytes(&bytes, &checked_with),
            expected,
            json!({ "signed_grant": h(&bytes), "checked_with": pk_hex(&checked_with) }),
        );
    }
    let stranger = &w.front;
    for (name, what, msg, reader_keys, expected) in [
        (
            "fail_key_message_other_recipient",
            "The key message opened with another recipient's KEM keys (the front door's).",
            message.clone(),
            stranger,
            "DecryptFailed",
        ),
        (
            "fail_key_message_tampered",
            "A key message with one ciphertext byte changed.",
            flip(&message, 3000),
            reader,
            "DecryptFailed",
        ),
        (
            "fail_key_message_short",
            "A key message one byte short of its fixed 5,209 bytes.",
            message[..message.len() - 1].to_vec(),
            reader,
            "Truncated",
        ),
    ] {
        v.fail(
            name,
            "key_message_fail",
            what,
            stream::open_key_grant(&msg, &reader_keys.kem, &identity.public_key()),
            expected,
            json!({
                "device_identity": pk_hex(&identity.public_key()),
                "reader_secret_keys": h(reader_keys.to_secret_bytes().as_slice()),
                "message": h(&msg),
            }),
        );
    }
    v
}
