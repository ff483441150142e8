//! `--scenario raw-sqlite`: the disk's own limit for comparison, with no node in between —
//! sequential SQLite transactions (WAL, `synchronous=FULL`, as the node opens its file), each
//! writing the rows of one genesis + claim post of real encoded ops.

use std::time::{Duration, Instant};

use anyhow::Context;
use latchkey_proto::chain::OpList;
use latchkey_proto::codec::Codec;
use serde_json::json;

use super::stats::Stats;
use super::{chains, BenchArgs};

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let dir = args.raw_dir.clone().unwrap_or_else(std::env::temp_dir);
    let path = dir.join(format!("latchkey-bench-raw-{}.db", std::process::id()));
    let result = measure(args, &path);
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    result
}

fn measure(args: &BenchArgs, path: &std::path::Path) -> anyhow::Result<()> {
    let sample = chains::device_posts(0, 0, 0, 1)?;
    let ops = OpList::from_bytes(&sample.bodies[0])
        .context("own op list")?
        .0;
    let rows: Vec<(Vec<u8>, Vec<u8>)> = ops
        .iter()
        .map(|op| (op.id().0.to_vec(), op.to_bytes()))
        .collect();
    let mut db =
        rusqlite::Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    db.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
         CREATE TABLE ops (device BLOB, seq INTEGER, id BLOB, bytes BLOB,
                           PRIMARY KEY (device, seq));",
    )?;
    let mut stats = Stats::default();
    let limit = Duration::from_secs(args.duration);
    let start = Instant::now();
    let mut done = 0u64;
    while done < args.count && start.elapsed() < limit {
        let t = Instant::now();
        let tx = db.transaction()?;
        for (seq, (id, bytes)) in rows.iter().enumerate() {
            tx.execute(
                "INSERT INTO ops VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![done.to_be_bytes().to_vec(), seq as i64, id, bytes],
            )?;
        }
        tx.commit()?;
        stats.ok("raw commit", t.elapsed());
        done += 1;
    }
    let elapsed = start.elapsed();
    let per_sec = done as f64 / elapsed.as_secs_f64().max(1e-9);
    let bytes: usize = rows.iter().map(|(_, b)| b.len()).sum();
    if args.json {
        println!(
            "{}",
            json!({
                "scenario": "raw-sqlite",
                "file": path.display().to_string(),
                "transactions": done,
                "elapsed_secs": elapsed.as_secs_f64(),
                "per_sec": per_sec,
                "rows_per_transaction": rows.len(),
                "bytes_per_transaction": bytes,
                "kinds": stats.json(elapsed),
            })
        );
    } else {
        println!(
            "raw SQLite on {}: {done} sequential transactions (WAL, synchronous=FULL, {} rows \
             of {bytes} op bytes each) in {:.2} s: {per_sec:.0}/s",
            path.display(),
            rows.len(),
            elapsed.as_secs_f64()
        );
        stats.print(elapsed);
    }
    Ok(())
}
