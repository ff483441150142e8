//! Hostile registry nodes of every kind, 40 servers on loopback, many random samples: no forged
//! owner is ever accepted, a stale view is accepted only as often as the analytic chance that
//! every sampled node withholds, and forks are reported.

mod sim;

use sim::{p_all_withholding, population, run_checks, start_nodes, Kind, World};

const N: usize = 40;
const K: usize = 5;
const CHECKS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_forged_owner_is_ever_accepted() {
    let world = World::new();
    for hostile in [10, 30, 39] {
        let urls = start_nodes(&world, &population(N, Kind::Forger, hostile, 1)).await;
        let tally = run_checks(&world, &urls, K, CHECKS, 2).await;
        assert_eq!(tally.forged_accepted, 0, "{hostile} forgers: {tally:?}");
        assert!(tally.lies_detected > 0);
        // Forgers also serve the true chain under their forgery, so nothing is stale.
        assert_eq!(tally.stale_accepted, 0, "{tally:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_views_match_the_analytic_rate() {
    let world = World::new();
    for kind in [Kind::Stale, Kind::Slow, Kind::Down, Kind::OtherDevice] {
        let hostile = 30;
        let urls = start_nodes(&world, &population(N, kind, hostile, 3)).await;
        let tally = run_checks(&world, &urls, K, CHECKS, 4).await;
        let p = p_all_withholding(N, hostile, K);
        let expected = p * CHECKS as f64;
        let sigma = (CHECKS as f64 * p * (1.0 - p)).sqrt();
        // A check with no view at all leaves the client on its cache: stale as well.
        let observed = (tally.stale_accepted + tally.no_view) as f64;
        assert!(
            (observed - expected).abs() <= 4.0 * sigma + 2.0,
            "{}: observed {observed}, expected {expected:.1} ± {sigma:.1}",
            kind.name()
        );
        assert_eq!(tally.forged_accepted, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forks_are_reported_whenever_both_branches_are_sampled() {
    let world = World::new();
    let hostile = 10;
    let urls = start_nodes(&world, &population(N, Kind::Forker, hostile, 5)).await;
    let tally = run_checks(&world, &urls, K, CHECKS, 6).await;
    // P(at least one forker and at least one honest node among the 5).
    let p_both = 1.0 - p_all_withholding(N, hostile, K) - p_all_withholding(N, N - hostile, K);
    let expected = p_both * CHECKS as f64;
    let sigma = (CHECKS as f64 * p_both * (1.0 - p_both)).sqrt();
    assert!(
        (tally.forks_reported as f64 - expected).abs() <= 4.0 * sigma + 2.0,
        "forks reported {} expected {expected:.1}",
        tally.forks_reported
    );
    assert_eq!(tally.forged_accepted, 0);
}
