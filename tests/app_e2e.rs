//! The real app, end to end, in a private X server: tauri-driver + WebKitWebDriver drive the
//! release-like binary (built with `--features tauri/custom-protocol`) in demo mode, so three
//! registry nodes and a simulated door run inside it. Onboard (create a key, type three words
//! back), claim the demo door from its on-screen QR, open it, and check what the screen shows;
//! a screenshot of each screen goes to `target/app-e2e/`.
//!
//! Needs Xvfb, WebKitWebDriver and tauri-driver, and a Secret Service session (scripts/test.sh
//! provides all of it and sets LATCHKEY_APP_E2E=1; CI runs that). Without the variable the
//! test says so and does nothing, so a plain `cargo test` on a laptop does not pop up tools it
//! lacks; with it, anything missing fails the test.

#[path = "support/webdriver.rs"]
mod webdriver;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use webdriver::{free_port, require_program, start_xvfb, wait_for_port, Reaped, Session};

const APP: &str = env!("CARGO_BIN_EXE_latchkey-app");

fn screenshots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("app-e2e");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn demo_dirs(tmp: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(tmp)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("latchkey-demo-"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onboard_claim_the_demo_door_and_open_it() {
    if std::env::var("LATCHKEY_APP_E2E").as_deref() != Ok("1") {
        eprintln!(
            "app_e2e: not run (set LATCHKEY_APP_E2E=1, as scripts/test.sh does, to drive the real app)"
        );
        return;
    }
    assert!(
        std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some(),
        "the app keeps its key in the Secret Service: run inside scripts/lib.sh's with_secret_service"
    );
    let tauri_driver = require_program("tauri-driver", "cargo install tauri-driver --locked");
    require_program("WebKitWebDriver", "apt-get install webkit2gtk-driver");
    let shots = screenshots_dir();
    let tmp = tempfile::tempdir().unwrap();
    let (_xvfb, display) = start_xvfb();

    let port = free_port();
    let native_port = free_port();
    let driver_log = std::fs::File::create(shots.join("tauri-driver.log")).unwrap();
    let _driver = Reaped(
        Command::new(tauri_driver)
            .args([
                "--port",
                &port.to_string(),
                "--native-port",
                &native_port.to_string(),
            ])
            .env("DISPLAY", &display)
            // The app inherits these through WebKitWebDriver.
            .env("LATCHKEY_DEMO", "1")
            .env("TMPDIR", tmp.path())
            .env("XDG_DATA_HOME", tmp.path().join("data"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(driver_log)
            .spawn()
            .expect("tauri-driver did not start"),
    );
    wait_for_port(port, Duration::from_secs(20));

    let long = Duration::from_secs(60);
    let started = Instant::now();
    let s = Session::start(port, Path::new(APP)).await;
    s.wait("[data-testid=onboarding]", long).await;
    let first_screen = started.elapsed();
    eprintln!(
        "app_e2e: cold start to the first screen: {} ms",
        first_screen.as_millis()
    );
    s.screenshot(&shots.join("01-welcome.png")).await;

    // Onboarding: 24 words, shown once; three of them typed back.
    s.click(&s.wait("[data-testid=create-identity]", long).await)
        .await;
    let word_elements = s.wait_all("[data-testid=word]", long).await;
    assert_eq!(word_elements.len(), 24);
    let mut words = Vec::new();
    for el in &word_elements {
        words.push(s.text(el).await);
    }
    assert!(words
        .iter()
        .all(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase())));
    s.screenshot(&shots.join("02-recovery-words.png")).await;
    s.click(&s.wait("[data-testid=words-written]", long).await)
        .await;
    let inputs = s.wait_all("[data-testid=confirm-word]", long).await;
    assert_eq!(inputs.len(), 3);
    // A wrong word first: the screen must say which one.
    let first_position: usize = s
        .attribute(&inputs[0], "data-position")
        .await
        .unwrap()
        .parse()
        .unwrap();
    s.type_text(&inputs[0], "wrongword").await;
    s.click(&s.wait("[data-testid=confirm-submit]", long).await)
        .await;
    s.wait_text(
        "[data-testid=error]",
        &format!("Word {first_position} does not match"),
        long,
    )
    .await;
    s.screenshot(&shots.join("03-confirm-wrong-word.png")).await;
    let inputs = s.wait_all("[data-testid=confirm-word]", long).await;
    for input in &inputs {
        let position: usize = s
            .attribute(input, "data-position")
            .await
            .unwrap()
            .parse()
            .unwrap();
        s.clear(input).await;
        s.type_text(input, &words[position - 1]).await;
    }
    s.click(&s.wait("[data-testid=confirm-submit]", long).await)
        .await;

    // Devices: none yet; the demo panel shows the door's claim QR.
    s.wait("[data-testid=no-devices]", long).await;
    s.wait_text("[data-testid=door-state]", "Door locked", long)
        .await;
    s.screenshot(&shots.join("04-devices-empty-demo.png")).await;

    // Claim it from the QR on screen.
    s.click(&s.wait("[data-testid=demo-claim]", long).await)
        .await;
    let ownership = s
        .wait_text("[data-testid=ownership]", "You own it", long)
        .await;
    assert_eq!(ownership, "You own it");
    s.screenshot(&shots.join("05-claimed.png")).await;

    // Open it: the card shows the device's signed answer, the panel the door opening.
    s.click(&s.wait("[data-testid=open-button]", long).await)
        .await;
    let result = s
        .wait_text(
            "[data-testid=open-result]",
            "Unlock accepted · signed by the device",
            long,
        )
        .await;
    assert!(result.contains("Door unlocked."), "{result}");
    s.wait_text("[data-testid=door-state]", "Door open", long)
        .await;
    s.wait_text("[data-testid=door-state]", "Opened 1 time", long)
        .await;
    s.screenshot(&shots.join("06-opened.png")).await;

    // Settings: the three demo nodes.
    s.click(&s.wait("[data-testid=tab-settings]", long).await)
        .await;
    let nodes = s.wait("[data-testid=node-list]", long).await;
    assert_eq!(s.text(&nodes).await.matches("http://127.0.0.1:").count(), 3);
    s.screenshot(&shots.join("07-settings.png")).await;

    // The same app at laptop width.
    s.click(&s.wait("[data-testid=tab-devices]", long).await)
        .await;
    s.set_window_size(1100, 760).await;
    s.wait("[data-testid=device-card]", long).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.screenshot(&shots.join("08-laptop.png")).await;

    assert_eq!(
        demo_dirs(tmp.path()).len(),
        1,
        "the demo runs in one temporary directory"
    );
    // Stop the app as Ctrl-C or `kill` would: it stops the demo and removes its directory.
    // (Ending the WebDriver session instead kills the app outright, as a crash would.)
    let app = app_pid(tmp.path()).expect("the app's process is not running");
    let status = Command::new("kill")
        .args(["-TERM", &app.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !demo_dirs(tmp.path()).is_empty() || app_pid(tmp.path()).is_some() {
        assert!(
            Instant::now() < deadline,
            "the app or its demo outlived SIGTERM: {:?}",
            demo_dirs(tmp.path())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    s.end().await;
}

/// The app started for this test: the process running APP whose TMPDIR is `tmp`.
fn app_pid(tmp: &Path) -> Option<u32> {
    let app = std::fs::canonicalize(APP).ok()?;
    let marker = format!("TMPDIR={}", tmp.display());
    std::fs::read_dir("/proc").ok()?.find_map(|entry| {
        let entry = entry.ok()?;
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let exe = std::fs::read_link(entry.path().join("exe")).ok()?;
        let environ = std::fs::read(entry.path().join("environ")).ok()?;
        let ours = exe == app
            && environ
                .split(|b| *b == 0)
                .any(|var| var == marker.as_bytes());
        ours.then_some(pid)
    })
}
