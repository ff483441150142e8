//! The packages as people install them: `./scripts/package.sh` builds the app's .deb (Tauri
//! bundler, product build) and the device agent's (cargo-deb); these tests install each with
//! `dpkg -i` on this machine and check what a user gets. The app: its desktop entry, the
//! `latchkey://` scheme registered to it (`xdg-mime`), the installed binary starting, and an
//! invitation link opened the way a desktop opens it — the entry's `Exec` line with the link
//! as `%u` — after which the guest opens a real door from the installed app. The agent: its
//! system user and state directory, its binary, and a systemd unit `systemd-analyze verify`
//! accepts.
//!
//! Installing needs root and changes the machine, so these run only with
//! LATCHKEY_PACKAGE_E2E=1 (scripts/test.sh sets it after package.sh when it runs as root, as
//! CI does) and purge what they installed when they end, however they end.

#[path = "support/cli.rs"]
mod cli;
mod support;
#[path = "support/webdriver.rs"]
#[allow(dead_code)]
mod webdriver;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use cli::{owner_who_claimed, require_secret_service, start_nodes, Door};
use webdriver::{require_program, start_driver, start_xvfb, Session};

/// dpkg takes a lock: the two tests install one after the other.
static DPKG: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn enabled() -> bool {
    if std::env::var("LATCHKEY_PACKAGE_E2E").as_deref() == Ok("1") {
        return true;
    }
    eprintln!(
        "packages_e2e: not run (set LATCHKEY_PACKAGE_E2E=1 after ./scripts/package.sh, as root, \
         as scripts/test.sh does in CI)"
    );
    false
}

/// target/, where package.sh leaves the packages (this test's own tmp dir is target/tmp).
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The one .deb in `dir`, or a message saying how to make it.
fn the_deb(dir: &Path) -> PathBuf {
    let debs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}; run ./scripts/package.sh first", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    assert_eq!(
        debs.len(),
        1,
        "expected one .deb in {}: {debs:?}",
        dir.display()
    );
    debs.into_iter().next().unwrap()
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

fn stdout_of(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A package installed by this test; purged when dropped.
struct Installed {
    package: String,
}

impl Installed {
    fn install(deb: &Path) -> Installed {
        assert_eq!(
            stdout_of("id", &["-u"]).trim(),
            "0",
            "installing a package needs root"
        );
        let deb = deb.to_str().unwrap();
        let package = stdout_of("dpkg-deb", &["--field", deb, "Package"])
            .trim()
            .to_owned();
        let installed = Installed { package };
        stdout_of("dpkg", &["-i", deb]);
        installed
    }

    /// The files the package put on the machine.
    fn files(&self) -> Vec<PathBuf> {
        stdout_of("dpkg", &["-L", &self.package])
            .lines()
            .map(PathBuf::from)
            .filter(|p| p.is_file())
            .collect()
    }

    fn file_named(&self, suffix: &str) -> PathBuf {
        let files = self.files();
        files
            .iter()
            .find(|p| p.to_string_lossy().ends_with(suffix))
            .cloned()
            .unwrap_or_else(|| panic!("{} installs no *{suffix}: {files:?}", self.package))
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg")
            .args(["--purge", &self.package])
            .output();
    }
}

/// The value of `key=` in a desktop entry's [Desktop Entry] group.
fn desktop_key<'a>(entry: &'a str, key: &str) -> Option<&'a str> {
    entry
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_deb_installs_registers_latchkey_links_and_opens_an_invitation() {
    if !enabled() {
        return;
    }
    require_secret_service();
    let _dpkg = DPKG.lock().await;
    let deb = the_deb(&target_dir().join("release/bundle/deb"));
    let app = Installed::install(&deb);

    // The desktop entry: valid, and the handler of latchkey:// links.
    let desktop = app.file_named(".desktop");
    assert!(
        desktop.starts_with("/usr/share/applications"),
        "{}",
        desktop.display()
    );
    let validate = run("desktop-file-validate", &[desktop.to_str().unwrap()]);
    assert!(
        validate.status.success() && validate.stdout.is_empty(),
        "desktop-file-validate: {}",
        String::from_utf8_lossy(&validate.stdout)
    );
    let entry = std::fs::read_to_string(&desktop).unwrap();
    let mime = desktop_key(&entry, "MimeType").unwrap_or_default();
    assert!(
        mime.split(';').any(|m| m == "x-scheme-handler/latchkey"),
        "the desktop entry does not claim latchkey:// links:\n{entry}"
    );
    let handler = stdout_of(
        "xdg-mime",
        &["query", "default", "x-scheme-handler/latchkey"],
    );
    assert_eq!(
        handler.trim(),
        desktop.file_name().unwrap().to_str().unwrap(),
        "xdg-mime names another handler for latchkey:// links"
    );
    let exec: Vec<&str> = desktop_key(&entry, "Exec")
        .unwrap_or_else(|| panic!("no Exec line:\n{entry}"))
        .split_whitespace()
        .collect();
    assert!(exec.contains(&"%u"), "Exec takes no link: {exec:?}");
    let binary = require_program(exec[0], "it should be on PATH after dpkg -i");
    assert!(
        app.files().contains(&binary),
        "{} is not the package's",
        binary.display()
    );
    let version = stdout_of(binary.to_str().unwrap(), &["--version"]);
    assert_eq!(
        version.trim(),
        format!("latchkey-app {}", env!("CARGO_PKG_VERSION"))
    );

    // A real invitation: three nodes, a door, an owner who claims it and invites a guest.
    let tmp = tempfile::tempdir().unwrap();
    let nodes = start_nodes(tmp.path(), 3).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let door = Door::start(tmp.path(), "Front door", &urls, &[]);
    let mut owner = owner_who_claimed(tmp.path(), &urls, &door);
    let invited = owner.json(&["invite", "Front door", "--name", "Ana", "--until", "+1h"]);
    let link = invited["link"].as_str().unwrap().to_owned();

    // The desktop opens the link: the entry's Exec line, `%u` replaced by it.
    let shots = target_dir().join("package-e2e");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();
    let tauri_driver = require_program("tauri-driver", "cargo install tauri-driver --locked");
    require_program("WebKitWebDriver", "apt-get install webkit2gtk-driver");
    let (_xvfb, display) = start_xvfb();
    let app_tmp = tmp.path().join("app-tmp");
    std::fs::create_dir_all(&app_tmp).unwrap();
    let (_driver, port) = start_driver(
        &tauri_driver,
        &display,
        &[
            ("TMPDIR", app_tmp.into()),
            ("XDG_DATA_HOME", tmp.path().join("guest-data").into()),
        ],
        &shots.join("tauri-driver.log"),
    );
    let args: Vec<&str> = exec[1..]
        .iter()
        .map(|a| if *a == "%u" { link.as_str() } else { a })
        .collect();
    let long = Duration::from_secs(60);
    let g = Session::start(port, &binary, &args).await;
    g.wait("[data-testid=guest-shell]", long).await;
    g.wait_text("[data-testid=invitation-window]", "Valid now", long)
        .await;
    g.screenshot(&shots.join("1-invitation-from-link.png"))
        .await;
    g.click(&g.wait("[data-testid=guest-open]", long).await)
        .await;
    g.wait_text(
        "[data-testid=guest-open-result]",
        "Unlock accepted · signed by the device",
        long,
    )
    .await;
    g.screenshot(&shots.join("2-guest-opened.png")).await;
    assert_eq!(door.opened(), 1);
    // The profile went where an installed app keeps it, under the user's data directory.
    assert!(tmp
        .path()
        .join("guest-data/org.latchkey.app/profile")
        .is_dir());
    g.end().await;
}

#[tokio::test]
async fn the_device_agent_deb_installs_its_user_and_a_unit_systemd_accepts() {
    if !enabled() {
        return;
    }
    let _dpkg = DPKG.lock().await;
    let deb = the_deb(&target_dir().join("debian"));
    let agent = Installed::install(&deb);

    let passwd = stdout_of("getent", &["passwd", "latchkey"]);
    assert!(passwd.contains("/var/lib/latchkeyd"), "{passwd}");
    let state = stdout_of("stat", &["-c", "%U %a", "/var/lib/latchkeyd"]);
    assert_eq!(state.trim(), "latchkey 700");
    let binary = agent.file_named("/bin/latchkeyd");
    let version = stdout_of(binary.to_str().unwrap(), &["--version"]);
    assert!(version.starts_with("latchkeyd "), "{version}");

    let unit = agent.file_named("/latchkeyd.service");
    let verify = run("systemd-analyze", &["verify", unit.to_str().unwrap()]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(verify.status.success(), "systemd-analyze verify: {said}");
    // Warnings about this unit (unknown keys, a missing binary) fail it too; lines about
    // other units of the machine are not ours to judge.
    let ours: Vec<&str> = said.lines().filter(|l| l.contains("latchkeyd")).collect();
    assert!(ours.is_empty(), "systemd-analyze verify: {ours:?}");
}
