//! A measurement, not a test: what an owner's "Open" costs through the whole app, for the
//! figures in docs/BENCHMARKS.md ("Open at the speed limit", the app path). It asserts
//! nothing about time; it prints.
//!
//! ```sh
//! cargo build --release -p latchkey-app --features tauri/custom-protocol
//! source scripts/lib.sh
//! LATCHKEY_APP_BENCH=1 LATCHKEY_APP_BIN=$PWD/target/release/latchkey-app \
//!   with_secret_service cargo test -p latchkey-app --features tauri/custom-protocol \
//!   --test app_open_bench -- --nocapture
//! ```
//!
//! The demo app (its nodes and door in the same process) is started through tauri-driver in a
//! private X server; an identity is made and the door claimed through the app's own commands.
//! Then, timed inside the page with `performance.now()`:
//! - **invoke**: the UI's call to the `open_device` command (IPC → Tauri command → owner core
//!   → door → verified answer → IPC back), `LATCHKEY_APP_OPENS` times (default 300);
//! - **tap**: a click on the device card's Open button until the card shows the answer (the
//!   button is enabled again; the DOM is updated, painting is not included), a third as many.
//!
//! Without LATCHKEY_APP_BENCH=1 it says so and does nothing.

#[path = "support/webdriver.rs"]
#[allow(dead_code)]
mod webdriver;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use webdriver::DemoWindow;

/// Makes an identity, confirms its backup, and claims the demo door, all through the app's
/// commands; answers the door's short id.
const SET_UP: &str = r#"
const done = arguments[arguments.length - 1];
const invoke = window.__TAURI_INTERNALS__.invoke;
(async () => {
  const made = await invoke('create_identity');
  await invoke('confirm_backup', { answers: made.confirm_positions.map((p) => made.words[p - 1]) });
  const demo = await invoke('demo_view');
  const png = demo.claim_qr.slice(demo.claim_qr.indexOf(',') + 1);
  await invoke('claim_image', { imageBase64: png });
  return demo.device_short_id;
})().then((id) => done({ id }), (e) => done({ error: JSON.stringify(e) }));
"#;

/// `arguments[0]` opens of `arguments[1]` through the command; answers each one's ms.
const INVOKE_OPENS: &str = r#"
const [count, device, done] = arguments;
const invoke = window.__TAURI_INTERNALS__.invoke;
(async () => {
  const ms = [];
  for (let i = 0; i < count; i++) {
    const t0 = performance.now();
    const answer = await invoke('open_device', { device, action: 'unlock' });
    ms.push(performance.now() - t0);
    if (!answer.accepted) throw new Error('refused: ' + JSON.stringify(answer));
  }
  return ms;
})().then((ms) => done({ ms }), (e) => done({ error: String(e) + JSON.stringify(e) }));
"#;

/// `arguments[0]` calls of the command `arguments[1]` (no arguments): `app_info` has nothing
/// behind it (the IPC alone); `devices` is the list a card reloads after its open.
const INVOKE_PLAIN: &str = r#"
const [count, command, done] = arguments;
const invoke = window.__TAURI_INTERNALS__.invoke;
(async () => {
  const ms = [];
  for (let i = 0; i < count; i++) {
    const t0 = performance.now();
    await invoke(command);
    ms.push(performance.now() - t0);
  }
  return ms;
})().then((ms) => done({ ms }), (e) => done({ error: String(e) }));
"#;

/// `arguments[0]` taps of the first device card's Open button; each from the click until
/// the button is enabled again (the answer is on the card by then).
const TAPS: &str = r#"
const [count, done] = arguments;
const button = () => document.querySelector('[data-testid=open-button]');
const settled = () =>
  new Promise((resolve) => {
    const check = () => {
      const b = button();
      if (b && !b.disabled) {
        observer.disconnect();
        resolve(performance.now());
        return true;
      }
      return false;
    };
    const observer = new MutationObserver(check);
    observer.observe(document.body, { subtree: true, childList: true, attributes: true });
  });
(async () => {
  const ms = [];
  for (let i = 0; i < count; i++) {
    const until = settled();
    const t0 = performance.now();
    button().click();
    ms.push((await until) - t0);
    const result = document.querySelector('[data-testid=open-result]');
    if (!result || !result.textContent.includes('accepted')) {
      throw new Error('the card shows: ' + (result && result.textContent));
    }
    // The door's panel re-renders on its own timer; a quiet moment between taps.
    await new Promise((r) => setTimeout(r, 20));
  }
  return ms;
})().then((ms) => done({ ms }), (e) => done({ error: String(e) }));
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_through_the_app() {
    if std::env::var("LATCHKEY_APP_BENCH").as_deref() != Ok("1") {
        eprintln!("app_open_bench: not run (set LATCHKEY_APP_BENCH=1 to measure)");
        return;
    }
    let app = std::env::var_os("LATCHKEY_APP_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_latchkey-app")));
    let app = std::fs::canonicalize(&app).unwrap();
    let opens: usize = std::env::var("LATCHKEY_APP_OPENS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let dir = tempfile::tempdir().unwrap();
    let demo = DemoWindow::start(&app, &[], &dir.path().join("tauri-driver.log")).await;
    let s = &demo.s;
    let long = Duration::from_secs(60);
    s.set_script_timeout(Duration::from_secs(600)).await;

    let set_up = s.execute_async(SET_UP, json!([])).await;
    let device = set_up["id"]
        .as_str()
        .unwrap_or_else(|| panic!("setting up failed: {set_up}"))
        .to_owned();
    // Warm-up: connections, the session's key, the door's lease.
    samples(&s.execute_async(INVOKE_OPENS, json!([20, device])).await);
    let invoked = samples(&s.execute_async(INVOKE_OPENS, json!([opens, device])).await);
    let ipc = samples(
        &s.execute_async(INVOKE_PLAIN, json!([opens, "app_info"]))
            .await,
    );
    let listed = samples(
        &s.execute_async(INVOKE_PLAIN, json!([opens, "devices"]))
            .await,
    );

    // The page as a person sees it, with the claimed door on the devices screen.
    s.execute("location.reload()", json!([])).await;
    s.wait("[data-testid=open-button]", long).await;
    samples(&s.execute_async(TAPS, json!([5])).await);
    let tapped = samples(&s.execute_async(TAPS, json!([opens.div_ceil(3)])).await);

    println!(
        "{}, ms:\n| what | n | p50 | p90 | p99 | mean |\n|---|---:|---:|---:|---:|---:|",
        app.display()
    );
    report("invoke open_device → verified answer", invoked);
    report(
        "for comparison: invoke app_info (the IPC, nothing behind it)",
        ipc,
    );
    report(
        "for comparison: invoke devices (the list the screen reloads after an open)",
        listed,
    );
    report("tap Open → answer on the card", tapped);
    demo.stop().await;
}

fn samples(v: &Value) -> Vec<f64> {
    v["ms"]
        .as_array()
        .unwrap_or_else(|| panic!("the page's script failed: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn report(what: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 * q) as usize).min(ms.len() - 1)];
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    println!(
        "| {what} | {} | {:.3} | {:.3} | {:.3} | {:.3} |",
        ms.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        mean
    );
}
