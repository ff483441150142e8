//! Prints the adversarial simulation's table (docs/SECURITY.md):
//!
//! ```text
//! cargo run --release -p latchkey-quorum --example adversarial
//! ```
//!
//! 40 in-process registry servers on loopback, `f` of them hostile in one way, and 400 quorum
//! checks of `k` random nodes each, per row.

#[path = "../tests/sim/mod.rs"]
mod sim;

use sim::{p_all_withholding, population, run_checks, start_nodes, Kind, World};

const N: usize = 40;
const CHECKS: usize = 400;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let world = World::new();
    println!("| hostile kind | f of {N} | k | checks | forged owners accepted | stale or other-branch views accepted (rate) | analytic C(f,k)/C(N,k) | forks reported | lying answers detected |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut rows: Vec<(Kind, usize, usize)> = Vec::new();
    for kind in Kind::HOSTILE {
        for f in [10, 20, 30, 35] {
            rows.push((kind, f, 5));
        }
    }
    for k in [3, 7] {
        for f in [10, 20, 30, 35] {
            rows.push((Kind::Stale, f, k));
        }
    }
    for (i, (kind, f, k)) in rows.into_iter().enumerate() {
        let urls = start_nodes(&world, &population(N, kind, f, i as u64)).await;
        let t = run_checks(&world, &urls, k, CHECKS, 1000 + i as u64).await;
        let stale = t.stale_accepted + t.no_view;
        let analytic = if kind.withholds_newest() {
            format!("{:.4}", p_all_withholding(N, f, k))
        } else {
            "0 (serves the newest op)".to_owned()
        };
        println!(
            "| {} | {f} | {k} | {} | {} | {} ({:.4}) | {analytic} | {} | {} |",
            kind.name(),
            t.checks,
            t.forged_accepted,
            stale,
            stale as f64 / t.checks as f64,
            t.forks_reported,
            t.lies_detected,
        );
    }
}
