//! A measurement, not a test: how long the app takes from launch to its first screen, and how
//! much memory it holds once idle, for the figures in docs/BENCHMARKS.md ("The app"). It
//! asserts nothing about time; it prints.
//!
//! ```sh
//! source scripts/lib.sh
//! LATCHKEY_APP_BENCH=1 LATCHKEY_APP_BIN=$PWD/target/product/latchkey-app \
//!   with_secret_service cargo test -p latchkey-app --features tauri/custom-protocol \
//!   --test app_startup_bench -- --nocapture
//! ```
//!
//! Each run launches the binary through tauri-driver in a private X server with a fresh
//! profile and times the WebDriver "new session" request (which starts the app) until the
//! onboarding screen is in the DOM. The last run then idles for `LATCHKEY_APP_IDLE_SECS`
//! (default 20) before the app's RSS and the PSS of the app and every process under it (the
//! WebKit web and network processes) are read from /proc. Without LATCHKEY_APP_BENCH=1 it
//! says so and does nothing.

#[path = "support/webdriver.rs"]
#[allow(dead_code)]
mod webdriver;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use webdriver::{app_pid, require_program, start_driver, start_xvfb, Session};

const RUNS: usize = 7;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_start_and_idle_memory() {
    if std::env::var("LATCHKEY_APP_BENCH").as_deref() != Ok("1") {
        eprintln!("app_startup_bench: not run (set LATCHKEY_APP_BENCH=1 to measure)");
        return;
    }
    let app = std::env::var_os("LATCHKEY_APP_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_latchkey-app")));
    let app = std::fs::canonicalize(&app).unwrap();
    let idle = Duration::from_secs(
        std::env::var("LATCHKEY_APP_IDLE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20),
    );
    let tauri_driver = require_program("tauri-driver", "cargo install tauri-driver --locked");
    let (_xvfb, display) = start_xvfb();
    let mut starts = Vec::new();
    for run in 0..RUNS {
        let tmp = tempfile::tempdir().unwrap();
        let (_driver, port) = start_driver(
            &tauri_driver,
            &display,
            &[
                ("TMPDIR", tmp.path().into()),
                ("XDG_DATA_HOME", tmp.path().join("data").into()),
            ],
            &tmp.path().join("tauri-driver.log"),
        );
        let started = Instant::now();
        // A profile of its own: the default one would make the single-instance plugin hand a
        // launch to an instance of an earlier run still closing, and no window would come.
        let profile = tmp.path().join("profile");
        let s = Session::start(port, &app, &["--profile", profile.to_str().unwrap()]).await;
        s.wait("[data-testid=onboarding]", Duration::from_secs(60))
            .await;
        starts.push(started.elapsed());
        if run + 1 == RUNS {
            tokio::time::sleep(idle).await;
            let pid = app_pid(&app, tmp.path()).expect("the app's process is not running");
            let rss = status_kib(pid, "VmRSS").unwrap_or(0);
            let tree = with_descendants(pid);
            let pss: u64 = tree.iter().filter_map(|p| pss_kib(*p)).sum();
            println!(
                "idle after {} s: app RSS {} MiB; PSS of the app and its {} child processes {} MiB",
                idle.as_secs(),
                rss / 1024,
                tree.len() - 1,
                pss / 1024
            );
        }
        s.end().await;
    }
    starts.sort();
    let ms: Vec<u128> = starts.iter().map(Duration::as_millis).collect();
    println!(
        "cold start to the first screen, {RUNS} runs of {}: min {} ms, median {} ms, max {} ms ({ms:?})",
        app.display(),
        ms[0],
        ms[RUNS / 2],
        ms[RUNS - 1]
    );
}

fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// `pid` and every process below it.
fn with_descendants(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = pids()
        .into_iter()
        .filter_map(|p| Some((p, status_kib(p, "PPid")? as u32)))
        .collect();
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    tree
}

/// A numeric field of /proc/PID/status (kB for the memory fields).
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

fn pss_kib(pid: u32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    rollup.lines().find_map(|l| {
        let rest = l.strip_prefix("Pss:")?;
        rest.split_whitespace().next()?.parse().ok()
    })
}
