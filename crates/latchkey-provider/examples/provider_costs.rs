//! What the provider pays per reading and per key message, against the raw primitives in the
//! same run (docs/BENCHMARKS.md, "Data streams, provider side").
//!
//! `cargo run -p latchkey-provider --example provider_costs [--release]`
//!
//! - per reading: `StreamReader::frame` (peek the header, find the key, HKDF the reading key,
//!   XChaCha20-Poly1305 open of the padded block, decode) plus the JSON line it prints, vs one
//!   XChaCha20-Poly1305 open of a block of the same size;
//! - per key message: `StreamReader::key_message` (hybrid KEM decapsulation, AEAD open of the
//!   4 KiB block, Ed25519 verification of the device's signature, decode, checks), vs the
//!   decapsulation, the AEAD open and one Ed25519 verification alone.
//!
//! Iterations interleave the two sides; medians are printed.

use std::time::Instant;

use latchkey_proto::device::DeviceKeys;
use latchkey_proto::kem::{aead_open, aead_seal, encapsulate, KemSecretKey};
use latchkey_proto::keys::SigningKey;
use latchkey_proto::stream::{
    seal_key_grant, seal_reading, KeyEntry, KeyGrant, Phase, Reading, StreamKey, GRANT_BLOCK,
    READING_BLOCK,
};
use latchkey_provider::output::{self, Format};
use latchkey_provider::reader::{Output, StreamReader};
use rand_chacha::rand_core::SeedableRng;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn time(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64() * 1e6
}

fn main() {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let device = DeviceKeys::generate(&mut rng);
    let id = device.device_id();
    let provider = SigningKey::generate(&mut rng);
    let kem = KemSecretKey::generate(&mut rng);
    let key = StreamKey::generate(&mut rng);
    let reading = Reading {
        meter_time_ms: Some(1_800_000_000_000),
        tariff: Some(2),
        energy_delivered_wh: vec![4_512_734, 3_981_225],
        energy_returned_wh: vec![1_204_551, 2_730_118],
        power_delivered_w: Some(439),
        power_returned_w: Some(0),
        phases: vec![
            Phase {
                voltage_mv: Some(229_300),
                current_ma: Some(1_000),
                power_delivered_w: Some(146),
                power_returned_w: Some(0),
            };
            3
        ],
        gas_l: Some(2_345_678),
        gas_time_ms: Some(1_799_999_700_000),
    };
    let n = 3_000u64;
    let frames: Vec<Vec<u8>> = (1..=n)
        .map(|seq| seal_reading(&id, "p1", 1, &key, seq, &reading, &mut rng).unwrap())
        .collect();
    let grant = KeyGrant {
        device: id,
        stream: "p1".into(),
        recipient: provider.public_key().to_bytes(),
        consent: None,
        issued_ms: 0,
        keys: vec![KeyEntry {
            key_id: 1,
            from_seq: 1,
            key: key.clone(),
        }],
    };
    let held = {
        let mut r = StreamReader::new(
            id,
            "p1",
            provider.public_key().to_bytes(),
            device.identity.public_key(),
            Vec::new(),
            3_000,
        );
        let msg = seal_key_grant(&grant, &device.identity, kem.public(), &mut rng).unwrap();
        match r.key_message(&msg, &kem).remove(0) {
            Output::NewKeys { keys, .. } => keys,
            other => panic!("{other:?}"),
        }
    };
    let reader_keys = held.clone();
    let mut reader = StreamReader::new(
        id,
        "p1",
        provider.public_key().to_bytes(),
        device.identity.public_key(),
        held,
        3_000,
    );
    let block = vec![7u8; READING_BLOCK];
    let nonce = [1u8; 24];
    let sealed_block = aead_seal(key.as_bytes(), &nonce, b"header", &block);
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    for frame in &frames {
        ours.push(time(|| {
            for out in reader.frame(frame, 0) {
                if let Output::Reading {
                    seq,
                    key_id,
                    reading,
                } = out
                {
                    std::hint::black_box(output::line(Format::Json, seq, key_id, &reading));
                }
            }
        }));
        raw.push(time(|| {
            std::hint::black_box(aead_open(key.as_bytes(), &nonce, b"header", &sealed_block))
                .unwrap();
        }));
    }
    let (r_ours, r_raw) = (median(ours), median(raw));
    // The same frames again through a fresh reader, without printing: the open alone.
    let mut again = StreamReader::new(
        id,
        "p1",
        provider.public_key().to_bytes(),
        device.identity.public_key(),
        reader_keys,
        3_000,
    );
    let open_only = median(
        frames
            .iter()
            .map(|frame| time(|| drop(std::hint::black_box(again.frame(frame, 0)))))
            .collect(),
    );
    println!("per reading: open alone (no JSON) {open_only:.1} µs");
    println!(
        "per reading: open + JSON line {r_ours:.1} µs; XChaCha20-Poly1305 open of {READING_BLOCK} bytes {r_raw:.1} µs; ratio {:.2}",
        r_ours / r_raw
    );

    let messages: Vec<Vec<u8>> = (0..60)
        .map(|_| seal_key_grant(&grant, &device.identity, kem.public(), &mut rng).unwrap())
        .collect();
    let grant_block = vec![3u8; GRANT_BLOCK];
    let signed = device.identity.sign(&grant_block[..200]);
    let identity_public = device.identity.public_key();
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    for msg in &messages {
        let mut fresh = StreamReader::new(
            id,
            "p1",
            provider.public_key().to_bytes(),
            device.identity.public_key(),
            Vec::new(),
            3_000,
        );
        ours.push(time(|| {
            let out = fresh.key_message(msg, &kem);
            assert!(matches!(out[0], Output::NewKeys { .. }));
        }));
        let (_, ct) = encapsulate(kem.public(), &mut rng).unwrap();
        let sealed = aead_seal(&[5; 32], &nonce, b"header", &grant_block);
        raw.push(time(|| {
            let shared = kem.decapsulate(&ct).unwrap();
            std::hint::black_box(shared.key_grant_key());
            std::hint::black_box(aead_open(&[5; 32], &nonce, b"header", &sealed)).unwrap();
            assert!(identity_public.verify(&signed, &grant_block[..200]));
        }));
    }
    let (k_ours, k_raw) = (median(ours), median(raw));
    println!(
        "per key message: open + verify + checks {k_ours:.1} µs; decapsulate + AEAD open of {GRANT_BLOCK} bytes + 1 Ed25519 verify {k_raw:.1} µs; ratio {:.2}",
        k_ours / k_raw
    );
}
