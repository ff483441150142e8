//! What a run measured: per kind of request, successes with their latency (an HDR histogram,
//! so p999 of a million requests costs a few kilobytes) and failures by status.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// Latencies are recorded in microseconds, up to two minutes (longer ones are clamped).
const MAX_MICROS: u64 = 120_000_000;

pub struct Kind {
    pub latency: Histogram<u64>,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
}

impl Kind {
    fn new() -> Self {
        Kind {
            latency: Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid bounds"),
            ok: 0,
            errors: BTreeMap::new(),
        }
    }

    fn failed(&self) -> u64 {
        self.errors.values().sum()
    }
}

#[derive(Default)]
pub struct Stats {
    pub kinds: BTreeMap<&'static str, Kind>,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_MICROS)
}

impl Stats {
    pub fn ok(&mut self, kind: &'static str, latency: Duration) {
        let k = self.kinds.entry(kind).or_insert_with(Kind::new);
        k.ok += 1;
        k.latency.saturating_record(micros(latency));
    }

    pub fn failed(&mut self, kind: &'static str, why: String) {
        let k = self.kinds.entry(kind).or_insert_with(Kind::new);
        *k.errors.entry(why).or_default() += 1;
    }

    /// Requests answered or failed, of the kinds in `kinds` (long polls are counted apart).
    pub fn done(&self, kinds: &[&str]) -> u64 {
        self.kinds
            .iter()
            .filter(|(name, _)| kinds.contains(name))
            .map(|(_, k)| k.ok + k.failed())
            .sum()
    }

    /// Whether any request was refused by a rate limit or a per-address cap.
    pub fn saw_429(&self) -> bool {
        self.kinds
            .values()
            .any(|k| k.errors.keys().any(|e| e.starts_with("429")))
    }

    pub fn saw(&self, code: &str) -> bool {
        self.kinds
            .values()
            .any(|k| k.errors.keys().any(|e| e.contains(code)))
    }

    pub fn json(&self, elapsed: Duration) -> Value {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let kinds: serde_json::Map<String, Value> = self
            .kinds
            .iter()
            .map(|(name, k)| {
                let q = |p: f64| k.latency.value_at_quantile(p) as f64 / 1000.0;
                (
                    name.to_string(),
                    json!({
                        "ok": k.ok,
                        "failed": k.failed(),
                        "errors": k.errors,
                        "per_sec": k.ok as f64 / secs,
                        "p50_ms": q(0.5),
                        "p99_ms": q(0.99),
                        "p999_ms": q(0.999),
                        "max_ms": k.latency.max() as f64 / 1000.0,
                    }),
                )
            })
            .collect();
        Value::Object(kinds)
    }

    pub fn print(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64().max(1e-9);
        println!(
            "{:<22} {:>9} {:>8} {:>10} {:>9} {:>9} {:>9} {:>9}",
            "kind", "ok", "failed", "ok/s", "p50 ms", "p99 ms", "p999 ms", "max ms"
        );
        for (name, k) in &self.kinds {
            let q = |p: f64| k.latency.value_at_quantile(p) as f64 / 1000.0;
            println!(
                "{:<22} {:>9} {:>8} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                name,
                k.ok,
                k.failed(),
                k.ok as f64 / secs,
                q(0.5),
                q(0.99),
                q(0.999),
                k.latency.max() as f64 / 1000.0
            );
        }
        let errors: Vec<String> = self
            .kinds
            .iter()
            .flat_map(|(name, k)| {
                k.errors
                    .iter()
                    .map(move |(why, n)| format!("  {name}: {n} × {why}"))
            })
            .collect();
        if !errors.is_empty() {
            println!("errors by status:");
            for e in errors {
                println!("{e}");
            }
        }
    }
}
