//! The real app with the keyboard alone (issue 14, "Usable by everyone"): in a private X
//! server, tauri-driver + WebKitWebDriver drive the release-like binary in demo mode, as
//! tests/app_e2e.rs does, but never click. Every step is a key stroke sent through WebDriver's
//! Actions API: Tab and Shift+Tab to move, Enter or Space to press, characters typed into the
//! focused field. Onboard (create a key, read the 24 words, type back the three asked for),
//! claim the demo door with the Demo panel's "Scan from screen", open it, then go to the door's
//! own screen and back (each new screen starts the focus at its heading), its Data sharing
//! screen, and every section from its tab. At each Tab the
//! focused element must show that it has the focus (a computed outline or box shadow), so a
//! keyboard user always sees where they are. The app runs in the dark colour scheme here (the
//! light one is app_e2e's), and axe-core audits each step as in app_e2e. Screenshots and axe
//! results of each step go to `target/app-e2e-keyboard/`.
//!
//! Gated like tests/app_e2e.rs: it runs when LATCHKEY_APP_E2E=1 (scripts/test.sh sets it),
//! and says so and does nothing otherwise.

#[allow(dead_code)]
#[path = "support/webdriver.rs"]
mod webdriver;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use webdriver::{key, Axe, DemoWindow, Focused, Session};

const APP: &str = env!("CARGO_BIN_EXE_latchkey-app");

/// The most Tab presses between two controls before the test gives up: the whole owner
/// screen (tabs, reminder, device card, demo panel) has fewer stops than this.
const MAX_STOPS: usize = 40;

fn screenshots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("app-e2e-keyboard");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A keyboard user: moves the focus with Tab or Shift+Tab, checks that every stop is drawn,
/// and keeps the stops it passed for the failure messages.
struct Keyboard<'a> {
    s: &'a Session,
    axe: Axe,
}

impl Keyboard<'_> {
    /// Presses Tab (or Shift+Tab when `backwards`) until the focused element matches `css`.
    /// Each element the focus lands on must be drawn as focused.
    async fn tab_to(&self, css: &str, backwards: bool) -> Focused {
        let mut path = Vec::new();
        for _ in 0..MAX_STOPS {
            if backwards {
                self.s.press_shift_tab().await;
            } else {
                self.s.press(key::TAB).await;
            }
            let focused = self.s.focused().await;
            path.push(focused.what.clone());
            if focused.body {
                continue;
            }
            assert!(
                focused.is_drawn(),
                "{} has the focus but does not show it (outline {:?}, box-shadow {:?}, \
                 :focus-visible {}); stops so far: {path:?}",
                focused.what,
                focused.outline,
                focused.box_shadow,
                focused.focus_visible
            );
            if self.focus_matches(css).await {
                eprintln!("app_keyboard_e2e: {css} after {path:?}");
                return focused;
            }
        }
        panic!(
            "{MAX_STOPS} presses of {} never reached {css}; stops: {path:?}; the page says: {:?}",
            if backwards { "Shift+Tab" } else { "Tab" },
            self.s.page_text().await
        );
    }

    async fn focus_matches(&self, css: &str) -> bool {
        self.s
            .execute(
                "const el = document.activeElement; return !!el && el.matches(arguments[0]);",
                json!([css]),
            )
            .await
            .as_bool()
            .unwrap_or(false)
    }

    /// A screenshot and an axe audit (of the dark scheme: see GTK_THEME below).
    async fn shot(&mut self, name: &str) {
        // Let the page scroll to the focus and paint its ring before the picture.
        tokio::time::sleep(Duration::from_millis(400)).await;
        self.axe.shot(self.s, name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onboard_claim_and_open_with_the_keyboard_only() {
    if std::env::var("LATCHKEY_APP_E2E").as_deref() != Ok("1") {
        eprintln!(
            "app_keyboard_e2e: not run (set LATCHKEY_APP_E2E=1, as scripts/test.sh does, to drive the real app)"
        );
        return;
    }
    let shots = screenshots_dir();
    let demo = DemoWindow::start(
        Path::new(APP),
        // The dark scheme here (app_e2e sees the light one), for the audit's contrast check.
        &[("GTK_THEME", "Adwaita:dark".into())],
        &shots.join("tauri-driver.log"),
    )
    .await;
    let s = &demo.s;
    let long = Duration::from_secs(60);
    // The window's own size (tauri.conf.json): a phone. There is no window manager in the
    // private X server, so the keyboard focus follows the mouse pointer, which stays where
    // the server put it, in the middle of the screen (1280 × 900): the window goes under it,
    // or WebKit would not count the page as focused and draw no focus at all.
    s.set_window_rect(430, 70, 420, 760).await;
    let mut k = Keyboard {
        s,
        axe: Axe::new(&shots),
    };

    // Onboarding: create the key.
    k.tab_to("[data-testid=create-identity]", false).await;
    k.shot("01-create-focused").await;
    s.press(key::ENTER).await;
    let word_elements = s.wait_all("[data-testid=word]", long).await;
    assert_eq!(word_elements.len(), 24);
    let mut words = Vec::new();
    for el in &word_elements {
        words.push(s.text(el).await);
    }
    k.tab_to("[data-testid=words-written]", false).await;
    k.shot("02-words-written-focused").await;
    s.press(key::ENTER).await;

    // Type back the three words asked for, each in its field, then Enter submits the form.
    let inputs = s.wait_all("[data-testid=confirm-word]", long).await;
    assert_eq!(inputs.len(), 3);
    for input in &inputs {
        let position = s.attribute(input, "data-position").await.unwrap();
        let field = format!("[data-testid=confirm-word][data-position=\"{position}\"]");
        k.tab_to(&field, false).await;
        let position: usize = position.parse().unwrap();
        s.type_keys(&words[position - 1]).await;
    }
    k.shot("03-words-typed").await;
    s.press(key::ENTER).await;

    // The owner's screens: claim the demo door from the Demo panel.
    s.wait("[data-testid=no-devices]", long).await;
    s.wait("[data-testid=demo-claim]", long).await;
    k.tab_to("[data-testid=demo-claim]", false).await;
    k.shot("04-scan-from-screen-focused").await;
    s.press(key::ENTER).await;
    let ownership = s
        .wait_text("[data-testid=ownership]", "You own it", long)
        .await;
    assert_eq!(ownership, "You own it");

    // Back to the door's card, then open it with Space (a button takes Enter or Space).
    k.tab_to("[data-testid=open-button]", true).await;
    k.shot("05-open-focused").await;
    s.press(key::SPACE).await;
    let result = s
        .wait_text(
            "[data-testid=open-result]",
            "Unlock accepted · signed by the device",
            long,
        )
        .await;
    assert!(result.contains("Door unlocked."), "{result}");
    s.wait_text("[data-testid=door-state]", "Opened 1 time", long)
        .await;
    k.shot("06-opened").await;

    // The door's own screen and back: each new screen starts the keyboard at its heading.
    k.tab_to("[data-testid=device-details]", false).await;
    s.press(key::ENTER).await;
    s.wait_text("[data-testid=audit]", "You · unlock · accepted", long)
        .await;
    assert!(
        k.focus_matches("[data-testid=device-detail] h1").await,
        "the device's screen opened with the focus on {}",
        s.focused().await.what
    );
    k.tab_to("[data-testid=device-detail] button.back", true)
        .await;
    k.shot("07-back-focused").await;
    s.press(key::ENTER).await;
    s.wait("[data-testid=devices-screen]", long).await;
    assert!(
        k.focus_matches("[data-testid=devices-screen] h1").await,
        "back on the list, the focus is on {}",
        s.focused().await.what
    );

    // The door's Data sharing screen, and every section of the app from its tab, by keyboard,
    // each one audited in the dark scheme.
    k.tab_to("[data-testid=device-data-sharing]", false).await;
    s.press(key::ENTER).await;
    s.wait("[data-testid=meter-chart]", long).await;
    k.shot("08-data-sharing").await;
    k.tab_to("[data-testid=data-sharing] button.back", true)
        .await;
    s.press(key::ENTER).await;
    s.wait("[data-testid=devices-screen]", long).await;
    let sections = [
        ("stays", "[data-testid=stays-screen]"),
        ("activity", "[data-testid=activity-screen]"),
        ("add", "[data-testid=scan-screen]"),
        ("invitations", "[data-testid=invitations-screen]"),
        ("settings", "[data-testid=settings-screen]"),
    ];
    for (i, (tab, screen)) in sections.iter().enumerate() {
        // From the list's heading the tabs are behind; from one tab the next is ahead.
        k.tab_to(&format!("[data-testid=tab-{tab}]"), i == 0).await;
        s.press(key::ENTER).await;
        s.wait(screen, long).await;
        k.shot(&format!("{:02}-{tab}", 9 + i)).await;
    }

    let axe = k.axe;
    demo.stop().await;
    axe.assert_clean();
}
