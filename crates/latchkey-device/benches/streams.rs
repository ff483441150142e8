//! What data streams (docs/PROTOCOL.md §14) cost on the device:
//!
//! - `stream_seal/raw_seal_reading`: the primitive, `seal_reading` (XChaCha20-Poly1305 over a
//!   padded reading) — against `stream_seal/device_seal`: the device's whole per-reading
//!   step (stream lock, sequence number, a durable block reservation every 1,024 readings,
//!   the seal). Publishing adds the MQTT client's queueing: see `examples/stream_load.rs`.
//! - `rotation/commit`: a revoke recorded with its new stream key in one durable SQLite
//!   transaction (the part before the answer).
//! - `rotation/key_messages_N` for N = 1, 10, 100 providers: every still-authorised
//!   provider's key message built and sealed (one hybrid X25519 + sntrup761 encapsulation
//!   each) — against `rotation/raw_encapsulate_N`: N bare encapsulations.
//!
//! Run: `cargo bench -p latchkey-device --bench streams`. Figures: docs/BENCHMARKS.md.

use std::cell::Cell;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use latchkey_device::store::Store;
use latchkey_device::stream::keys::{Effect, EndKind, StreamKeys};
use latchkey_proto::consent::{
    purpose, ConsentAction, ConsentLog, ConsentRequest, ProviderIdentity,
};
use latchkey_proto::kem::{encapsulate, KemSecretKey};
use latchkey_proto::stream::{seal_reading, Phase, Reading, StreamKey};
use latchkey_testkit::{person, rng, TestDevice, T0};

/// A DSMR 5 reading with three phases and gas: the largest a Dutch meter gives.
pub fn sample_reading() -> Reading {
    Reading {
        meter_time_ms: Some(T0),
        tariff: Some(2),
        energy_delivered_wh: vec![12_345_678, 9_876_543],
        energy_returned_wh: vec![1_234_567, 765_432],
        power_delivered_w: Some(1_193),
        power_returned_w: Some(0),
        phases: (0..3)
            .map(|i| Phase {
                voltage_mv: Some(230_100 + i),
                current_ma: Some(1_000 + i),
                power_delivered_w: Some(400 + i),
                power_returned_w: Some(0),
            })
            .collect(),
        gas_l: Some(2_569_646),
        gas_time_ms: Some(T0 - 300_000),
    }
}

fn seal(c: &mut Criterion) {
    let reading = sample_reading();
    let device = TestDevice::new(1, "meter").keys.device_id();
    let key = StreamKey::generate(&mut rng(1));
    let mut r = rng(2);
    let mut g = c.benchmark_group("stream_seal");
    g.bench_function("raw_seal_reading", |b| {
        let mut seq = 0;
        b.iter(|| {
            seq += 1;
            black_box(seal_reading(&device, "p1", 1, &key, seq, &reading, &mut r).unwrap())
        })
    });
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&tmp.path().join("state.db")).unwrap());
    let keys = StreamKeys::open(store, device, ["p1".to_owned()], T0, &mut rng(3)).unwrap();
    // Nothing to announce: the publisher would have published the key messages already.
    let _ = keys.plan("p1").unwrap();
    g.bench_function("device_seal", |b| {
        b.iter(|| black_box(keys.seal("p1", &reading, &mut r).unwrap().unwrap()))
    });
    g.finish();
}

/// A device with `n` active consents for `p1`, and a log to add more to.
struct Meter {
    device: TestDevice,
    keys: StreamKeys,
    log: ConsentLog,
    next: Cell<u64>,
    _tmp: tempfile::TempDir,
}

impl Meter {
    fn new(n: usize) -> Meter {
        let tmp = tempfile::tempdir().unwrap();
        let mut device = TestDevice::new(1, "meter");
        device.claim(&[&person(1)], 1);
        let store = Arc::new(Store::open(&tmp.path().join("state.db")).unwrap());
        let keys = StreamKeys::open(
            store,
            device.keys.device_id(),
            ["p1".to_owned()],
            T0,
            &mut rng(3),
        )
        .unwrap();
        let mut m = Meter {
            log: ConsentLog::new(&device.chain),
            device,
            keys,
            next: Cell::new(0),
            _tmp: tmp,
        };
        for _ in 0..n {
            m.give();
        }
        m
    }

    /// Gives one more provider consent; returns its id.
    fn give(&mut self) -> latchkey_proto::consent::ConsentId {
        let i = self.next.get();
        self.next.set(i + 1);
        let provider = person(1000 + i);
        let kem = KemSecretKey::generate(&mut rng(5000 + i));
        let request = ConsentRequest {
            provider: ProviderIdentity {
                name: format!("provider {i}"),
                url: String::new(),
                signing: provider.public_key(),
                kem: kem.public().clone(),
            },
            device: self.device.keys.device_id(),
            stream: "p1".into(),
            purpose_code: purpose::INSIGHTS,
            purpose: "insights".into(),
            retention_days: 30,
            until_ms: None,
            history: false,
            terms: None,
            issued_ms: T0,
            nonce: [i as u8; 16],
        }
        .sign(&provider)
        .unwrap();
        let id = request.id();
        self.record(
            ConsentAction::Given(request.clone()),
            Effect::Given {
                request: Box::new(request),
                ended: None,
            },
        );
        id
    }

    fn record(&mut self, action: ConsentAction, effect: Effect) {
        let entry = self
            .log
            .next_entry(&self.device.chain, &person(1), T0, action)
            .unwrap();
        self.log.append(&self.device.chain, entry.clone()).unwrap();
        self.keys.record(&entry, &effect, T0, &mut rng(9)).unwrap();
    }
}

fn rotation(c: &mut Criterion) {
    let mut g = c.benchmark_group("rotation");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("commit", |b| {
        let mut m = Meter::new(1);
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let id = m.give();
                let entry = m
                    .log
                    .next_entry(&m.device.chain, &person(1), T0, ConsentAction::Revoked(id))
                    .unwrap();
                m.log.append(&m.device.chain, entry.clone()).unwrap();
                let effect = Effect::Ended {
                    id,
                    kind: EndKind::Revoked,
                    time_ms: T0,
                };
                let start = Instant::now();
                black_box(m.keys.record(&entry, &effect, T0, &mut rng(9)).unwrap());
                total += start.elapsed();
            }
            total
        })
    });
    for n in [1usize, 10, 100] {
        let m = Meter::new(n);
        let identity = &m.device.keys.identity;
        let device = m.device.keys.device_id();
        let mut r = rng(11);
        g.bench_function(format!("key_messages_{n}"), |b| {
            b.iter(|| {
                m.keys.mark_all_dirty();
                let plan = m.keys.plan("p1").unwrap().unwrap();
                black_box(plan.build(&device, identity, &[], T0, &mut r).unwrap())
            })
        });
        let kems: Vec<_> = (0..n)
            .map(|i| {
                KemSecretKey::generate(&mut rng(7000 + i as u64))
                    .public()
                    .clone()
            })
            .collect();
        g.bench_function(format!("raw_encapsulate_{n}"), |b| {
            b.iter(|| {
                for k in &kems {
                    black_box(encapsulate(k, &mut r).unwrap());
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, seal, rotation);
criterion_main!(benches);
