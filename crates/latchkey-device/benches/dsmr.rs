//! What reading a smart meter costs (issue 12): DSMR P1 telegrams parsed per second, against
//! the raw CRC16 over the same bytes (the floor: every telegram's bytes are read once for it).
//!
//! - `dsmr/parse_telegram`: a real DSMR 5.0 three-phase telegram with gas (Landis+Gyr E360,
//!   `tests/fixtures/dsmr/dsmr50-landisgyr-e360-3phase.txt`, 888 bytes): CRC, every line,
//!   units into a `Reading`.
//! - `dsmr/crc16`: CRC-16/ARC over the same bytes.
//! - `dsmr/frame+parse`: the recorded DSMR 5 stream (300 telegrams) cut by the framer and
//!   parsed, per telegram: what `latchkeyd` does for each telegram of a source.
//!
//! Run: `cargo bench -p latchkey-device --bench dsmr`. Figures: docs/BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use latchkey_device::stream::dsmr::{crc16, frames, parse_telegram, read_frame};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/dsmr")
            .join(name),
    )
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let telegram = fixture("dsmr50-landisgyr-e360-3phase.txt");
    let recording = fixture("recorded-dsmr5.txt");
    let mut g = c.benchmark_group("dsmr");
    g.sample_size(30)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_telegram", |b| {
        b.iter(|| parse_telegram(black_box(&telegram)).unwrap())
    });
    g.bench_function("crc16", |b| {
        b.iter(|| crc16(black_box(telegram.as_bytes())))
    });
    g.throughput(Throughput::Elements(300));
    g.bench_function("frame+parse", |b| {
        b.iter(|| {
            frames(black_box(recording.as_bytes()))
                .into_iter()
                .map(|f| read_frame(f).unwrap())
                .collect::<Vec<_>>()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
