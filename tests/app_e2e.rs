//! The real app, end to end, in a private X server: tauri-driver + WebKitWebDriver drive the
//! release-like binary (built with `--features tauri/custom-protocol`) in demo mode, so three
//! registry nodes and a simulated door run inside it. Onboard (create a key, type three words
//! back), claim the demo door from its on-screen QR, open it, read its signed activity log,
//! invite a guest; a second app (the guest's own profile, no key), opened with the link as the
//! OS would (a short `LATCHKEY://I/…` link, bound to the first phone that redeems it),
//! accepts it and opens the door; the owner revokes and
//! the guest is refused; a manager invited with "may invite others" invites a cleaner from
//! the guest app. The host's side: import a booking calendar from an .ics file on the
//! Stays screen, see the stays listed, share a stay's link (text and QR), and find the guest's
//! first open in the activity feed. Data sharing: the door's own smart meter moves on its chart,
//! a sample provider's consent request is approved from its link, then revoked, and the
//! verified consent log shows both. A screenshot of each screen goes to `target/app-e2e/`, and
//! beside it axe-core's accessibility audit of that screen (`<name>.axe.json`); the test fails
//! on any serious or critical violation (tests/support/webdriver.rs's `Axe`).
//!
//! Needs Xvfb, WebKitWebDriver and tauri-driver, and a Secret Service session (scripts/test.sh
//! provides all of it and sets LATCHKEY_APP_E2E=1; CI runs that). Without the variable the
//! test says so and does nothing, so a plain `cargo test` on a laptop does not pop up tools it
//! lacks; with it, anything missing fails the test.

// Not every helper is used here (the keyboard test uses the key actions).
#[allow(dead_code)]
#[path = "support/webdriver.rs"]
mod webdriver;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use webdriver::{demo_dirs, key, start_driver, Axe, DemoWindow, Session};

const APP: &str = env!("CARGO_BIN_EXE_latchkey-app");

/// The app under test: this build's binary, or another one (e.g. the release build, for the
/// cold-start figure in docs/BENCHMARKS.md) named by LATCHKEY_APP_BIN.
fn app_binary() -> PathBuf {
    std::env::var_os("LATCHKEY_APP_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(APP))
}

fn screenshots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("app-e2e");
    // Only this run's screens: an earlier run may have got further.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onboard_claim_the_demo_door_and_open_it() {
    if std::env::var("LATCHKEY_APP_E2E").as_deref() != Ok("1") {
        eprintln!(
            "app_e2e: not run (set LATCHKEY_APP_E2E=1, as scripts/test.sh does, to drive the real app)"
        );
        return;
    }
    let shots = screenshots_dir();
    let mut axe = Axe::new(&shots);
    let long = Duration::from_secs(60);
    let demo = DemoWindow::start(&app_binary(), &[], &shots.join("tauri-driver.log")).await;
    let (s, tmp) = (&demo.s, &demo.tmp);
    eprintln!(
        "app_e2e: cold start to the first screen: {} ms",
        demo.cold_start.as_millis()
    );
    // The narrowest phone the app supports (tauri.conf.json's minWidth); laptop width at the end.
    s.set_window_size(360, 760).await;
    axe.shot(s, "01-welcome").await;

    // The way back for someone who has their words: audited, then left.
    s.click(&s.wait("[data-testid=restore-identity]", long).await)
        .await;
    s.wait("[data-testid=restore-words]", long).await;
    axe.shot(s, "01b-restore").await;
    s.click(&s.wait("form .actions button[type=button]", long).await)
        .await;
    s.wait("[data-testid=create-identity]", long).await;

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
    axe.shot(s, "02-recovery-words").await;
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
    axe.shot(s, "03-confirm-wrong-word").await;
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
    axe.shot(s, "04-devices-empty-demo").await;

    // The camera scanner on a machine without a camera (Xvfb, CI): a clear error, and the
    // photo import stays.
    s.click(&s.wait("[data-testid=tab-add]", long).await).await;
    s.click(&s.wait("[data-testid=camera-start]", long).await)
        .await;
    s.wait_text(
        "[data-testid=camera-error]",
        "No camera could be opened",
        long,
    )
    .await;
    s.wait("[data-testid=camera-start]", long).await;
    axe.shot(s, "04b-no-camera").await;
    s.click(&s.wait("[data-testid=tab-devices]", long).await)
        .await;

    // Claim it from the QR on screen. Anything the claim shows (progress on the disabled
    // button, the owned device, an error) counts as started.
    s.click_until_started(
        "[data-testid=demo-claim]",
        long,
        "[data-testid=demo-claim]:disabled, [data-testid=ownership], [data-testid=demo-panel] [role=alert]",
    )
    .await;
    let ownership = s
        .wait_text("[data-testid=ownership]", "You own it", long)
        .await;
    assert_eq!(ownership, "You own it");
    axe.shot(s, "05-claimed").await;

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
    axe.shot(s, "06-opened").await;

    // Device detail: the device's own signed log shows the unlock; invite a guest.
    s.click(&s.wait("[data-testid=device-details]", long).await)
        .await;
    s.wait_text("[data-testid=audit]", "You · unlock · accepted", long)
        .await;
    s.click(&s.wait("[data-testid=invite-open]", long).await)
        .await;
    s.type_text(&s.wait("[data-testid=invite-name]", long).await, "Ada")
        .await;
    s.click(&s.wait("[data-testid=invite-submit]", long).await)
        .await;
    let link_box = s.wait("[data-testid=invite-link]", long).await;
    let link = s.property(&link_box, "value").await.unwrap();
    // A short link bound to the first phone that redeems it.
    assert!(
        link.starts_with("LATCHKEY://I/") && link.len() <= 300,
        "{link}"
    );
    s.wait_text("[data-testid=grants]", "Valid now", long).await;
    axe.shot(s, "07-invite").await;

    // The guest: another app, another profile (no key of its own), in the same X server.
    let guest_tmp = tmp.path().join("guest-tmp");
    std::fs::create_dir_all(&guest_tmp).unwrap();
    let (guest_driver, guest_port) = start_driver(
        &demo.tauri_driver,
        &demo.display,
        &[
            ("LATCHKEY_PROFILE", tmp.path().join("guest").into()),
            ("TMPDIR", guest_tmp.into()),
            ("XDG_DATA_HOME", tmp.path().join("guest-data").into()),
        ],
        &shots.join("tauri-driver-guest.log"),
    );
    // Opened by its link, as the OS does for a `latchkey://` link (argv on Linux): the app
    // accepts it and shows the invitation, with no key of the guest's own.
    let g = Session::start(guest_port, &app_binary(), &[&link]).await;
    g.wait("[data-testid=guest-shell]", long).await;
    g.wait_text("[data-testid=invitation-window]", "Valid now", long)
        .await;
    axe.shot(&g, "g1-invitation").await;
    g.click(&g.wait("[data-testid=guest-open]", long).await)
        .await;
    let guest_result = g
        .wait_text(
            "[data-testid=guest-open-result]",
            "Unlock accepted · signed by the device",
            long,
        )
        .await;
    assert!(guest_result.contains("Door unlocked."), "{guest_result}");
    s.wait_text("[data-testid=door-state]", "Opened 2 times", long)
        .await;
    axe.shot(&g, "g2-guest-opened").await;

    // The owner revokes; the guest's next try is refused and the invitation shows it.
    s.click(&s.wait("[data-testid=revoke]", long).await).await;
    s.wait_text("[data-testid=grant-status]", "Revoked", long)
        .await;
    s.click(&s.wait("[data-testid=audit-refresh]", long).await)
        .await;
    s.wait_text("[data-testid=audit]", "Ada · unlock · accepted", long)
        .await;
    axe.shot(s, "08-revoked").await;
    // The device learns of the revocation at its next ownership check, which the demo door
    // makes every second: until then it still honours the grant (docs/PROTOCOL.md,
    // "Revoking"). Three of its intervals later it must refuse.
    tokio::time::sleep(Duration::from_secs(3)).await;
    g.click(&g.wait("[data-testid=guest-open]", long).await)
        .await;
    let refused = g
        .wait_text("[data-testid=guest-open-result]", "refused", long)
        .await;
    eprintln!("app_e2e: the revoked guest sees: {refused}");
    g.wait_text("[data-testid=invitation-window]", "Revoked", long)
        .await;
    axe.shot(&g, "g3-guest-revoked").await;

    // Delegation: the owner invites a property manager who may invite others; the same guest
    // app takes that link too and invites a cleaner below it, listed under the manager's.
    s.click(&s.wait("[data-testid=invite-open]", long).await)
        .await;
    s.click(&s.wait("[data-testid=invite-open]", long).await)
        .await;
    s.type_text(&s.wait("[data-testid=invite-name]", long).await, "Manager")
        .await;
    s.click(&s.wait("[data-testid=invite-may-delegate]", long).await)
        .await;
    s.click(&s.wait("[data-testid=invite-submit]", long).await)
        .await;
    let manager_box = s.wait("[data-testid=invite-link]", long).await;
    let manager_link = s.property(&manager_box, "value").await.unwrap();
    g.type_text(
        &g.wait("[data-testid=accept-link]", long).await,
        &manager_link,
    )
    .await;
    g.click(&g.wait("[data-testid=accept-submit]", long).await)
        .await;
    g.click(&g.wait("[data-testid=delegate-open]", long).await)
        .await;
    g.type_text(&g.wait("[data-testid=invite-name]", long).await, "Cleaner")
        .await;
    g.click(&g.wait("[data-testid=invite-submit]", long).await)
        .await;
    g.wait_text("[data-testid=delegated-grant]", "Cleaner", long)
        .await;
    // Let the list and the new QR code paint before the picture.
    tokio::time::sleep(Duration::from_millis(500)).await;
    axe.shot(&g, "g4-manager-invited-a-cleaner").await;
    g.end().await;
    drop(guest_driver);
    s.wait_text("[data-testid=door-state]", "Opened 2 times", long)
        .await;

    // A cleaner on weekday mornings: the week picker's windows become the grant's schedule.
    s.click(&s.wait("[data-testid=invite-open]", long).await)
        .await;
    s.click(&s.wait("[data-testid=invite-open]", long).await)
        .await;
    s.type_text(&s.wait("[data-testid=invite-name]", long).await, "Cleaner")
        .await;
    s.click(&s.wait("[data-testid=invite-weekly-on]", long).await)
        .await;
    s.wait_text("[data-testid=week-spec]", "mon-fri 08:00-12:00", long)
        .await;
    s.click(&s.wait("[data-testid=day-wed]", long).await).await;
    s.wait_text(
        "[data-testid=week-spec]",
        "mon,tue,thu,fri 08:00-12:00",
        long,
    )
    .await;
    axe.shot(s, "08b-week-picker").await;
    s.click(&s.wait("[data-testid=invite-submit]", long).await)
        .await;
    s.wait_text(
        "[data-testid=invite-weekly]",
        "Only mon,tue,thu,fri 08:00-12:00",
        long,
    )
    .await;
    // Let the new QR code paint before the picture.
    tokio::time::sleep(Duration::from_millis(500)).await;
    axe.shot(s, "08c-weekly-invite").await;

    // Stays: the booking calendar's export, chosen as a file (three stays around today and a
    // blocked week that is no stay); one invitation each, listed by when they are.
    let calendar = tmp.path().join("bookings.ics");
    std::fs::write(&calendar, sample_calendar(today())).unwrap();
    s.click(&s.wait("[data-testid=tab-stays]", long).await)
        .await;
    s.wait("[data-testid=no-stays]", long).await;
    s.type_text(
        &s.wait("[data-testid=stays-file]", long).await,
        calendar.to_str().unwrap(),
    )
    .await;
    s.wait_text("[data-testid=stays-file-name]", "bookings.ics", long)
        .await;
    axe.shot(s, "11-stays-file-chosen").await;
    s.click(&s.wait("[data-testid=stays-sync]", long).await)
        .await;
    // The past stay was over before this first import: no invitation, not kept.
    s.wait_text("[data-testid=stays-report]", "2 added", long)
        .await;
    let stays = s.wait_all("[data-testid=stay]", long).await;
    let mut listed = Vec::new();
    for stay in &stays {
        listed.push((
            s.attribute(stay, "data-phase").await.unwrap(),
            s.text(stay).await,
        ));
    }
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(
        listed[0].0 == "current" && listed[0].1.contains("Ada Lovelace"),
        "{listed:?}"
    );
    assert!(
        listed[1].0 == "upcoming" && listed[1].1.contains("Alan Turing"),
        "{listed:?}"
    );
    s.wait_text("[data-testid=stay-status]", "Link not sent", long)
        .await;
    axe.shot(s, "12-stays").await;

    // One tap shares the current stay's link: its text and a QR code large enough to scan.
    s.click(&s.wait("[data-testid=stay-share]", long).await)
        .await;
    let share_box = s.wait("[data-testid=share-link]", long).await;
    let stay_link = s.property(&share_box, "value").await.unwrap();
    // The short link (at most 300 characters: its QR scans from a phone screen).
    assert!(
        stay_link.starts_with("LATCHKEY://I/") && stay_link.len() <= 300,
        "{stay_link}"
    );
    let qr = s.wait("[data-testid=share-qr]", long).await;
    let qr_width: f64 = s
        .property(&qr, "width")
        .await
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("the QR code has no width"));
    assert!(
        qr_width >= 250.0,
        "the QR code is {qr_width} px wide on a 360 px screen"
    );
    axe.shot(s, "13-stay-share").await;
    // A modal dialog: it holds the focus, and Escape closes it, handing the focus back to the
    // button that opened it.
    assert_eq!(
        s.focused().await.testid.as_deref(),
        Some("share-sheet"),
        "the share sheet opened without the focus"
    );
    s.press(key::ESCAPE).await;
    s.wait_gone("[data-testid=share-sheet]", long).await;
    assert_eq!(
        s.focused().await.testid.as_deref(),
        Some("stay-share"),
        "the focus did not go back to the share button"
    );
    s.wait_text("[data-testid=stay-status]", "sent", long).await;

    // The activity feed: the door reported the guest's first open (signed, through the
    // owner's mailbox), and the app fetched it in the background.
    s.click(&s.wait("[data-testid=tab-activity]", long).await)
        .await;
    let opened = s
        .wait_text(
            "[data-testid=activity-entry][data-kind=first_open]",
            "Ada",
            long,
        )
        .await;
    eprintln!("app_e2e: the activity feed says: {opened}");
    // The revoked guest's refused try was reported too.
    let refused = s
        .wait_text(
            "[data-testid=activity-entry][data-kind=refused]",
            "Ada",
            long,
        )
        .await;
    eprintln!("app_e2e: and: {refused}");
    axe.shot(s, "14-activity").await;

    data_sharing(s, &mut axe, long).await;

    // Settings: the three demo nodes.
    s.click(&s.wait("[data-testid=tab-devices]", long).await)
        .await;
    s.click(&s.wait("[data-testid=tab-settings]", long).await)
        .await;
    let nodes = s.wait("[data-testid=node-list]", long).await;
    assert_eq!(s.text(&nodes).await.matches("http://127.0.0.1:").count(), 3);
    axe.shot(s, "09-settings").await;
    // The recovery words again, behind the confirmation: the same 24 as at onboarding.
    s.click(&s.wait("[data-testid=reveal-words]", long).await)
        .await;
    s.wait("[data-testid=reveal-confirm]", long).await;
    axe.shot(s, "09b-reveal-asking").await;
    s.click(&s.wait("[data-testid=reveal-confirm]", long).await)
        .await;
    let revealed = s.wait_all("[data-testid=recovery-words] li", long).await;
    let mut again = Vec::new();
    for li in &revealed {
        let text = s.text(li).await;
        again.push(
            text.split_whitespace()
                .last()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    assert_eq!(
        again, words,
        "Settings shows other words than onboarding did"
    );
    axe.shot(s, "09c-recovery-words").await;
    s.click(&s.wait("[data-testid=recovery-words] ~ button", long).await)
        .await;
    s.wait_gone("[data-testid=recovery-words]", long).await;

    // The same app at laptop width.
    s.click(&s.wait("[data-testid=tab-devices]", long).await)
        .await;
    s.set_window_size(1100, 760).await;
    s.wait("[data-testid=device-card]", long).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    axe.shot(s, "10-laptop").await;

    assert_eq!(
        demo_dirs(tmp.path()).len(),
        1,
        "the demo runs in one temporary directory"
    );
    // Stop the app as Ctrl-C or `kill` would: it stops the demo and removes its directory.
    demo.stop().await;
    axe.assert_clean();
}

/// The door's Data sharing screen: the owner's own meter moves (the demo door reads a
/// simulated smart meter and publishes sealed readings on the demo's Mosquitto); the sample
/// provider's request, pasted from its link, is approved, then revoked, and the verified
/// consent log shows both.
async fn data_sharing(s: &Session, axe: &mut Axe, long: Duration) {
    s.click(&s.wait("[data-testid=tab-devices]", long).await)
        .await;
    s.click(&s.wait("[data-testid=device-data-sharing]", long).await)
        .await;
    s.wait("[data-testid=data-sharing]", long).await;
    s.wait("[data-testid=no-requests]", long).await;
    s.wait("[data-testid=no-consents]", long).await;

    // The chart moves: two snapshots a few seconds apart hold newer readings, and the power
    // shown changes (the simulated household's load varies every second).
    let chart = "[data-testid=meter-chart]";
    let last_seq = |text: Option<String>| -> Option<u64> { text?.parse().ok() };
    let deadline = Instant::now() + long;
    let first = loop {
        let el = s.wait(chart, long).await;
        if let Some(seq) = last_seq(s.attribute(&el, "data-last-seq").await) {
            break seq;
        }
        assert!(
            Instant::now() < deadline,
            "no reading reached the owner's meter; the page says: {:?}",
            s.page_text().await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let mut powers = std::collections::BTreeSet::new();
    let mut latest = first;
    let deadline = Instant::now() + long;
    while latest <= first + 2 || powers.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the chart did not move: seq {first} → {latest}, power {powers:?}"
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
        let el = s.wait(chart, long).await;
        latest = last_seq(s.attribute(&el, "data-last-seq").await).unwrap_or(latest);
        powers.insert(
            s.text(&s.wait("[data-testid=meter-power]", long).await)
                .await,
        );
    }
    let points: u64 = s
        .attribute(&s.wait(chart, long).await, "data-points")
        .await
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(points >= 2, "the chart has {points} points");
    eprintln!("app_e2e: the owner's meter moved: readings {first} → {latest}, power {powers:?}");
    axe.shot(s, "15-data-sharing-meter").await;
    // uPlot drew it (a failure to draw shows its reason, which the panic quotes).
    let deadline = Instant::now() + Duration::from_secs(10);
    while s
        .find_all("[data-testid=meter-chart] .uplot canvas")
        .await
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "uPlot drew no chart; the page says: {:?}",
            s.page_text().await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The sample provider's request, pasted from the link the demo panel offers.
    let link = s
        .property(
            &s.wait("[data-testid=demo-consent-link]", long).await,
            "value",
        )
        .await
        .unwrap();
    assert!(link.starts_with("LATCHKEY://C/"), "{link}");
    s.type_text(
        &s.wait("[data-testid=consent-link-input]", long).await,
        &link,
    )
    .await;
    s.click(&s.wait("[data-testid=consent-link-add]", long).await)
        .await;
    s.wait_text("[data-testid=consent-request-who]", "Watt Insights", long)
        .await;
    s.wait_text(
        "[data-testid=consent-request-why]",
        "For energy insights",
        long,
    )
    .await;
    s.wait_text("[data-testid=consent-request-period]", "(in 89 days)", long)
        .await;
    s.wait_text(
        "[data-testid=consent-request-retention]",
        "keeps readings for 30 days",
        long,
    )
    .await;
    // Clicking the provider's name scrolls the request into view for the picture.
    s.click(&s.wait("[data-testid=consent-request-who]", long).await)
        .await;
    axe.shot(s, "16-data-request").await;

    // Allow: the consent goes into the log on the nodes and to the device.
    s.click(&s.wait("[data-testid=consent-approve]", long).await)
        .await;
    s.wait_text("[data-testid=consent-state]", "Can read now", long)
        .await;
    s.wait("[data-testid=no-requests]", long).await;
    s.wait_text(
        "[data-testid=consent-log-entry][data-kind=given]",
        "Given to Watt Insights for energy insights",
        long,
    )
    .await;
    let key_before = s
        .text(&s.wait("[data-testid=meter-status]", long).await)
        .await;
    axe.shot(s, "17-data-consent-given").await;

    // Revoke, confirmed: the consent ends and the log shows who revoked it.
    s.click(&s.wait("[data-testid=consent-revoke]", long).await)
        .await;
    s.wait("[data-testid=consent-revoke-dialog]", long).await;
    axe.shot(s, "18-data-revoke-confirm").await;
    s.click(&s.wait("[data-testid=consent-revoke-confirm]", long).await)
        .await;
    s.wait_text(
        "[data-testid=consents-ended] [data-testid=consent-state]",
        "Revoked",
        long,
    )
    .await;
    let revoked = s
        .wait_text(
            "[data-testid=consent-log-entry][data-kind=revoked]",
            "Revoked from Watt Insights",
            long,
        )
        .await;
    assert!(revoked.contains("by you"), "{revoked}");
    assert!(revoked.contains("#2"), "{revoked}");
    s.wait("[data-testid=no-consents]", long).await;
    // The device rotated the stream key; the owner's own copy follows and the meter goes on.
    let key_after = s
        .wait_text("[data-testid=meter-status]", "stream key 2", long)
        .await;
    eprintln!("app_e2e: meter before the revocation: {key_before}; after: {key_after}");
    axe.shot(s, "19-data-revoked-phone").await;

    // The same screen at laptop width, then back to the phone for the rest.
    s.set_window_size(1100, 760).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    axe.shot(s, "20-data-sharing-laptop").await;
    s.set_window_size(360, 760).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// Days since 1970-01-01 (UTC) now.
fn today() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    (now.as_secs() / 86_400) as i64
}

/// Days since 1970-01-01 → `YYYYMMDD` (H. Hinnant's `civil_from_days`).
fn ics_date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}")
}

/// A booking platform's export as hosts download it: all-day stays with stable UIDs, one
/// now, one to come, one past, and a blocked week that is no stay.
fn sample_calendar(today: i64) -> String {
    let event = |uid: &str, summary: &str, from: i64, to: i64| {
        format!(
            "BEGIN:VEVENT\r\nDTSTAMP:20261201T080000Z\r\nDTSTART;VALUE=DATE:{}\r\n\
             DTEND;VALUE=DATE:{}\r\nUID:{uid}\r\nSUMMARY:{summary}\r\nEND:VEVENT\r\n",
            ics_date(today + from),
            ics_date(today + to)
        )
    };
    [
        "BEGIN:VCALENDAR\r\nPRODID:-//Airbnb Inc//Hosting Calendar 1.0//EN\r\nVERSION:2.0\r\n"
            .to_owned(),
        event("e2e-grace@example.com", "Reserved - Grace Hopper", -9, -6),
        event("e2e-ada@example.com", "Reserved - Ada Lovelace", -1, 3),
        event("e2e-alan@example.com", "Reserved - Alan Turing", 5, 9),
        event("e2e-blocked@example.com", "Airbnb (Not available)", 12, 19),
        "END:VCALENDAR\r\n".to_owned(),
    ]
    .concat()
}
