//! Property tests for the data-stream and consent encodings and the consent log's rules
//! (docs/PROTOCOL.md §14).
//!
//! Codec properties, for values drawn from each type's whole valid range: the value decodes
//! from its encoding to itself; no strict prefix decodes; one more byte is refused; arbitrary
//! bytes never panic a decoder. Sealing: every frame of a stream has one length, opens to what
//! was sealed, and any changed bit is refused. The log: random scripts of gives, revokes and
//! expiries by owners and strangers are accepted exactly when a plain model of the rules says
//! so, the verified log tells the model's story, and a log with any entry dropped, swapped or
//! altered does not verify.

use std::fmt::Debug;
use std::sync::OnceLock;

use latchkey_proto::chain::OpId;
use latchkey_proto::codec::Codec;
use latchkey_proto::consent::{
    ConsentAction, ConsentEntry, ConsentId, ConsentList, ConsentLog, ConsentRequest, EndKind,
    ProviderIdentity, SignedConsentRequest, MAX_PURPOSE,
};
use latchkey_proto::kem::{KemPublicKey, KemSecretKey, SNTRUP_PUBLIC_LEN};
use latchkey_proto::keys::{DeviceId, Signature, SigningKey};
use latchkey_proto::stream::{self, KeyEntry, KeyGrant, Phase, Reading, StreamKey, MAX_TIME_MS};
use latchkey_proto::Error;
use latchkey_testkit::{person, TestDevice, T0};
use proptest::prelude::*;
use proptest::sample::Index;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

// --- strategies ------------------------------------------------------------------------------

fn time() -> impl Strategy<Value = u64> {
    0..=MAX_TIME_MS
}

fn phase() -> impl Strategy<Value = Phase> {
    (
        any::<Option<u32>>(),
        any::<Option<u32>>(),
        any::<Option<u32>>(),
        any::<Option<u32>>(),
    )
        .prop_map(|(v, a, d, r)| Phase {
            voltage_mv: v,
            current_ma: a,
            power_delivered_w: d,
            power_returned_w: r,
        })
}

fn reading() -> impl Strategy<Value = Reading> {
    (
        proptest::option::of(time()),
        proptest::option::of(1u8..),
        prop::collection::vec(any::<u64>(), 0..=4),
        prop::collection::vec(any::<u64>(), 0..=4),
        any::<Option<u32>>(),
        any::<Option<u32>>(),
        prop::collection::vec(phase(), 0..=3),
        any::<Option<u64>>(),
        proptest::option::of(time()),
    )
        .prop_map(|(t, tariff, d, r, pd, pr, phases, gas, gas_t)| Reading {
            meter_time_ms: t,
            tariff,
            energy_delivered_wh: d,
            energy_returned_wh: r,
            power_delivered_w: pd,
            power_returned_w: pr,
            phases,
            gas_l: gas,
            gas_time_ms: gas_t,
        })
}

fn stream_name() -> impl Strategy<Value = String> {
    "[a-z0-9_-]{1,32}"
}

fn kem_from_seed(seed: u64) -> KemPublicKey {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut x25519 = [0u8; 32];
    rng.fill_bytes(&mut x25519);
    let mut sntrup = Box::new([0u8; SNTRUP_PUBLIC_LEN]);
    rng.fill_bytes(sntrup.as_mut_slice());
    KemPublicKey { x25519, sntrup }
}

/// Text without control characters (purpose also allows newlines), up to `max` bytes.
fn text(min: usize, max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[a-zA-Z0-9 .,:é€-]{{{min},{max}}}"))
        .unwrap()
        .prop_map(move |s| {
            let mut s = s;
            while s.len() > max {
                s.pop();
            }
            s
        })
        .prop_filter("non-empty when required", move |s| {
            s.len() >= min && (min == 0 || !s.trim().is_empty())
        })
}

fn identity() -> impl Strategy<Value = ([u8; 32], ProviderIdentity)> {
    (
        any::<[u8; 32]>(),
        any::<u64>(),
        text(1, 64),
        "[a-z0-9:/.]{0,200}",
    )
        .prop_map(|(seed, kem_seed, name, url)| {
            let identity = ProviderIdentity {
                name,
                url,
                signing: SigningKey::from_bytes(&seed).public_key(),
                kem: kem_from_seed(kem_seed),
            };
            (seed, identity)
        })
}

fn request_for(device: DeviceId) -> impl Strategy<Value = SignedConsentRequest> {
    (
        identity(),
        stream_name(),
        any::<u16>(),
        text(1, MAX_PURPOSE),
        any::<u32>(),
        any::<Option<u64>>(),
        any::<bool>(),
        proptest::option::of(text(0, 200)),
        any::<u64>(),
        any::<[u8; 16]>(),
    )
        .prop_map(
            move |(
                (seed, provider),
                stream,
                code,
                purpose,
                retention,
                until,
                history,
                terms,
                issued,
                nonce,
            )| {
                ConsentRequest {
                    provider,
                    device,
                    stream,
                    purpose_code: code,
                    purpose,
                    retention_days: retention,
                    until_ms: until,
                    history,
                    terms,
                    issued_ms: issued,
                    nonce,
                }
                .sign(&SigningKey::from_bytes(&seed))
                .unwrap()
            },
        )
}

fn cuts(len: usize, pick: &Index) -> Vec<usize> {
    if len <= 200 {
        return (0..len).collect();
    }
    let mut cuts: Vec<usize> = (0..32).chain(len - 32..len).collect();
    cuts.extend((1..32).map(|i| i * len / 32));
    cuts.push(pick.index(len));
    cuts
}

/// decode(encode(x)) == x; every strict prefix fails; one more byte is refused.
fn check_codec<T: Codec + PartialEq + Debug>(
    value: &T,
    pick: &Index,
    extra: u8,
) -> Result<(), TestCaseError> {
    let bytes = value.to_bytes();
    prop_assert!(bytes.len() <= T::MAX_LEN, "{} over its limit", T::NAME);
    let decoded = T::from_bytes(&bytes);
    prop_assert_eq!(decoded.as_ref(), Ok(value));
    for cut in cuts(bytes.len(), pick) {
        prop_assert!(
            T::from_bytes(&bytes[..cut]).is_err(),
            "{}-byte prefix of a {}-byte {} decoded",
            cut,
            bytes.len(),
            T::NAME
        );
    }
    let mut longer = bytes.clone();
    longer.push(extra);
    prop_assert!(T::from_bytes(&longer).is_err());
    Ok(())
}

/// One recipient KEM key for the whole run: sntrup761 key generation draws from the OS and is
/// slow enough to matter per case.
fn recipient() -> &'static KemSecretKey {
    static KEM: OnceLock<KemSecretKey> = OnceLock::new();
    KEM.get_or_init(|| KemSecretKey::generate(&mut ChaCha20Rng::seed_from_u64(77)))
}

// --- codecs ----------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn readings_round_trip(reading in reading(), pick in any::<Index>(), extra in any::<u8>()) {
        check_codec(&reading, &pick, extra)?;
        prop_assert!(reading.to_bytes().len() <= 167);
        let view = reading.view();
        prop_assert_eq!(view.csv_row().split(',').count(), 26);
        prop_assert_eq!(view.meter_time.is_some(), reading.meter_time_ms.is_some());
        let json = serde_json::to_value(&view).unwrap();
        prop_assert!(json.get("meter_time").is_some());
        prop_assert_eq!(json.get("gas_m3").is_some(), reading.gas_l.is_some());
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_stream_decoders(
        bytes in prop::collection::vec(any::<u8>(), 0..400),
    ) {
        let _ = Reading::from_bytes(&bytes);
        let _ = stream::peek_reading(&bytes);
        let _ = stream::open_reading(&bytes, &StreamKey::from_bytes([1; 32]));
        let _ = stream::open_key_grant(&bytes, recipient(), &person(1).public_key());
    }

    #[test]
    fn sealed_readings_have_one_length_and_open_with_their_key_only(
        reading in reading(),
        stream in stream_name(),
        device in any::<[u8; 32]>(),
        key_id in 1u32..,
        seq in any::<u64>(),
        key in any::<[u8; 32]>(),
        seed in any::<u64>(),
        flip in any::<Index>(),
    ) {
        let device = DeviceId(device);
        let key = StreamKey::from_bytes(key);
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let frame = stream::seal_reading(&device, &stream, key_id, &key, seq, &reading, &mut rng)
            .unwrap();
        prop_assert_eq!(frame.len(), stream::sealed_reading_len(&stream));
        let (header, opened) = stream::open_reading(&frame, &key).unwrap();
        prop_assert_eq!(&opened, &reading);
        prop_assert_eq!((header.device, header.stream.as_str(), header.key_id, header.seq),
            (device, stream.as_str(), key_id, seq));
        prop_assert_eq!(stream::peek_reading(&frame), Ok(header));
        // Any bit changed: refused (the header is authenticated too).
        let mut bad = frame.clone();
        bad[flip.index(frame.len())] ^= 0x01;
        prop_assert!(stream::open_reading(&bad, &key).is_err());
        prop_assert!(stream::open_reading(&frame[..frame.len() - 1], &key).is_err());
        let other = StreamKey::from_bytes([0xaa; 32]);
        if other != key {
            prop_assert_eq!(stream::open_reading(&frame, &other), Err(Error::DecryptFailed));
        }
    }
}

proptest! {
    // Each case encapsulates to sntrup761 once or twice.
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn key_messages_have_one_length_and_open_to_the_grant(
        device in any::<[u8; 32]>(),
        stream in stream_name(),
        recipient_bytes in any::<[u8; 32]>(),
        consent in any::<Option<[u8; 32]>>(),
        issued in any::<u64>(),
        n in 1usize..=64,
        first in 1u32..1000,
        identity in any::<[u8; 32]>(),
        flip in any::<Index>(),
    ) {
        let identity = SigningKey::from_bytes(&identity);
        let keys = (0..n)
            .map(|i| KeyEntry {
                key_id: first + i as u32,
                from_seq: i as u64 * 1000,
                key: StreamKey::from_bytes([i as u8; 32]),
            })
            .collect();
        let grant = KeyGrant {
            device: DeviceId(device),
            stream,
            recipient: recipient_bytes,
            consent: consent.map(ConsentId),
            issued_ms: issued,
            keys,
        };
        let mut rng = ChaCha20Rng::seed_from_u64(issued);
        let msg = stream::seal_key_grant(&grant, &identity, recipient().public(), &mut rng)
            .unwrap();
        prop_assert_eq!(msg.len(), stream::KEY_MESSAGE_LEN);
        let opened = stream::open_key_grant(&msg, recipient(), &identity.public_key()).unwrap();
        prop_assert_eq!(&opened, &grant);
        prop_assert_eq!(opened.current().key_id, first + n as u32 - 1);
        let mut bad = msg.clone();
        bad[flip.index(msg.len())] ^= 0x01;
        prop_assert!(stream::open_key_grant(&bad, recipient(), &identity.public_key()).is_err());
        let forged = stream::open_key_grant(&msg, recipient(), &person(3).public_key());
        let bad_signature = matches!(forged, Err(Error::BadSignature { .. }));
        prop_assert!(bad_signature);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn signed_requests_and_links_round_trip(
        request in request_for(DeviceId([9; 32])),
        pick in any::<Index>(),
        extra in any::<u8>(),
        lower in prop::collection::vec(any::<bool>(), 0..64),
    ) {
        check_codec(&request, &pick, extra)?;
        check_codec(&request.request().provider, &pick, extra)?;
        prop_assert!(request.verify().is_ok());
        let link = request.to_link();
        prop_assert!(link.len() <= latchkey_proto::consent::MAX_CONSENT_LINK);
        // Any mix of letter cases parses (QR scanners and people vary).
        let mixed: String = link
            .chars()
            .enumerate()
            .map(|(i, c)| if lower.get(i % 64.max(lower.len())).copied().unwrap_or(false) {
                c.to_ascii_lowercase()
            } else {
                c
            })
            .collect();
        let parsed = SignedConsentRequest::from_link(&mixed);
        prop_assert_eq!(parsed.as_ref(), Ok(&request));
        for cut in cuts(link.len(), &pick).into_iter().filter(|&c| c > 0) {
            prop_assert!(SignedConsentRequest::from_link(&link[..cut]).is_err());
        }
        prop_assert_eq!(request.id(), SignedConsentRequest::from_bytes(&request.to_bytes()).unwrap().id());
    }

    #[test]
    fn entries_and_lists_round_trip(
        request in request_for(DeviceId([9; 32])),
        seq in any::<u64>(),
        prev in any::<[u8; 32]>(),
        anchor in any::<[u8; 32]>(),
        time_ms in any::<u64>(),
        tag in 0u8..3,
        id in any::<[u8; 32]>(),
        signer in any::<[u8; 32]>(),
        signature in any::<[u8; 64]>(),
        n in 0usize..4,
        pick in any::<Index>(),
        extra in any::<u8>(),
    ) {
        let action = match tag {
            0 => ConsentAction::Given(request),
            1 => ConsentAction::Revoked(ConsentId(id)),
            _ => ConsentAction::Expired(ConsentId(id)),
        };
        let entry = ConsentEntry {
            device: DeviceId([9; 32]),
            seq,
            prev,
            anchor: OpId(anchor),
            time_ms,
            action,
            signer: SigningKey::from_bytes(&signer).public_key(),
            signature: Signature(signature),
        };
        check_codec(&entry, &pick, extra)?;
        check_codec(&ConsentList(vec![entry; n]), &pick, extra)?;
    }

    #[test]
    fn arbitrary_text_and_bytes_never_panic_the_consent_decoders(
        bytes in prop::collection::vec(any::<u8>(), 0..3000),
        text in "(?i:latchkey://c/)[A-Za-z2-7=]{0,200}",
    ) {
        let _ = SignedConsentRequest::from_bytes(&bytes);
        let _ = ConsentEntry::from_bytes(&bytes);
        let _ = ConsentList::from_bytes(&bytes);
        let _ = ProviderIdentity::from_bytes(&bytes);
        let _ = SignedConsentRequest::from_link(&text);
    }
}

// --- the log's rules -------------------------------------------------------------------------

/// A consent as the model of the rules sees it.
#[derive(Debug, Clone)]
struct Modelled {
    id: ConsentId,
    until: Option<u64>,
    given_ms: u64,
    ended: Option<(EndKind, u64)>,
}

/// One step of a script: what to do, to which consent, how much later, by whom.
#[derive(Debug, Clone)]
struct Step {
    action: u8,
    pick: usize,
    later_ms: u64,
    until_in: Option<u64>,
    signer: u8,
}

fn step() -> impl Strategy<Value = Step> {
    (
        0u8..3,
        any::<usize>(),
        0u64..100_000,
        proptest::option::of(1u64..300_000),
        0u8..5,
    )
        .prop_map(|(action, pick, later_ms, until_in, signer)| Step {
            action,
            pick,
            later_ms,
            until_in,
            signer,
        })
}

fn signed_request(device: DeviceId, nonce: u64, until: Option<u64>) -> SignedConsentRequest {
    let key = SigningKey::from_bytes(&[0x42; 32]);
    ConsentRequest {
        provider: ProviderIdentity {
            name: "P".into(),
            url: String::new(),
            signing: key.public_key(),
            kem: kem_from_seed(1),
        },
        device,
        stream: "p1".into(),
        purpose_code: 1,
        purpose: "insights".into(),
        retention_days: 1,
        until_ms: until,
        history: false,
        terms: None,
        issued_ms: T0,
        nonce: {
            let mut n = [0u8; 16];
            n[..8].copy_from_slice(&nonce.to_be_bytes());
            n
        },
    }
    .sign(&key)
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_log_accepts_exactly_what_the_rules_allow(
        script in prop::collection::vec(step(), 1..24),
        tamper_at in any::<Index>(),
        tamper in 0u8..4,
        probe in any::<Index>(),
    ) {
        let mut d = TestDevice::new(31, "meter");
        let (a, b) = (person(1), person(2));
        d.claim(&[&a, &b], 1);
        let stranger = person(3);
        let chain = &d.chain;
        let mut log = ConsentLog::new(chain);
        let mut model: Vec<Modelled> = Vec::new();
        let mut t = T0;
        for (i, s) in script.iter().enumerate() {
            t += s.later_ms;
            let signer = match s.signer { 0 => &stranger, 1 | 2 => &a, _ => &b };
            let target = (!model.is_empty()).then(|| s.pick % model.len());
            let (action, allowed) = match (s.action, target) {
                (0, _) | (_, None) => {
                    let until = s.until_in.map(|u| T0 + u);
                    let r = signed_request(chain.device(), i as u64, until);
                    let ok = until.is_none_or(|u| u > t);
                    (ConsentAction::Given(r), ok)
                }
                (1, Some(k)) => (ConsentAction::Revoked(model[k].id), model[k].ended.is_none()),
                (_, Some(k)) => (
                    ConsentAction::Expired(model[k].id),
                    model[k].ended.is_none() && model[k].until.is_some_and(|u| u <= t),
                ),
            };
            let allowed = allowed && s.signer != 0;
            let result = log.next_entry(chain, signer, t, action.clone());
            prop_assert_eq!(result.is_ok(), allowed, "step {} {:?}: {:?}", i, action.kind(), result);
            if let Ok(entry) = result {
                log.append(chain, entry).unwrap();
                match (action, target) {
                    (ConsentAction::Given(r), _) => model.push(Modelled {
                        id: r.id(),
                        until: r.request().until_ms,
                        given_ms: t,
                        ended: None,
                    }),
                    (ConsentAction::Revoked(_), Some(k)) => model[k].ended = Some((EndKind::Revoked, t)),
                    (ConsentAction::Expired(_), Some(k)) => model[k].ended = Some((EndKind::Expired, t)),
                    _ => unreachable!(),
                }
            } else {
                let refused = matches!(result, Err(Error::ConsentRefused { .. }));
                prop_assert!(refused);
            }
        }
        // The whole log verifies from scratch and tells the model's story.
        let entries = log.entries().to_vec();
        let verified = ConsentLog::verify(chain, entries.clone()).unwrap();
        let consents = verified.consents();
        prop_assert_eq!(consents.len(), model.len());
        for (c, m) in consents.iter().zip(&model) {
            prop_assert_eq!(c.id, m.id);
            prop_assert_eq!(c.given_ms, m.given_ms);
            prop_assert_eq!(c.ended.map(|e| (e.kind, e.time_ms)), m.ended);
        }
        let at = T0 + probe.index(3_000_000) as u64;
        let readers: Vec<ConsentId> = verified.readers_at(at).iter().map(|c| c.id).collect();
        let expected: Vec<ConsentId> = model
            .iter()
            .filter(|m| m.given_ms <= at
                && m.ended.is_none_or(|(_, e)| e > at)
                && m.until.is_none_or(|u| u > at))
            .map(|m| m.id)
            .collect();
        prop_assert_eq!(readers, expected);
        // Every prefix verifies; a log with one entry dropped, two swapped, or one altered
        // does not.
        if !entries.is_empty() {
            let k = tamper_at.index(entries.len());
            prop_assert!(ConsentLog::verify(chain, entries[..k].to_vec()).is_ok());
            let mut bad = entries.clone();
            match tamper {
                0 => { bad.remove(k); }
                1 => bad[k].time_ms ^= 1,
                2 => bad[k].signature.0[0] ^= 1,
                _ => bad[k].prev[0] ^= 1,
            }
            let changed = tamper != 0 || k + 1 < entries.len();
            if changed {
                let refused = matches!(
                    ConsentLog::verify(chain, bad),
                    Err(Error::ConsentRefused { .. })
                );
                prop_assert!(refused);
            }
            if entries.len() >= 2 {
                let mut swapped = entries.clone();
                swapped.swap(0, entries.len() - 1);
                prop_assert!(ConsentLog::verify(chain, swapped).is_err());
            }
        }
    }
}
