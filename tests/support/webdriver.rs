//! A small W3C WebDriver client (plain JSON over HTTP) for driving the real app through
//! tauri-driver, and the processes around it: a private X server and tauri-driver itself.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The W3C key under which an element reference travels.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A child process killed (and reaped) when dropped, so a failing test leaves nothing behind.
#[derive(Debug)]
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A child started as the leader of its own process group (`Command::process_group(0)`);
/// dropping it kills the whole group, so what it started (tauri-driver's WebKitWebDriver,
/// and the app under it) goes too, whichever way the test ends.
#[derive(Debug)]
pub struct ReapedGroup(pub Child);

impl Drop for ReapedGroup {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.0.wait();
    }
}

/// Finds a program on PATH or in cargo's bin directory, or explains how to install it.
pub fn require_program(name: &str, install: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(cargo_home) = std::env::var_os("CARGO_HOME") {
        dirs.push(Path::new(&cargo_home).join("bin"));
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not installed; {install}"))
}

/// Starts a private X server and returns it with its display name (`:N`).
pub fn start_xvfb() -> (Reaped, String) {
    let xvfb = require_program("Xvfb", "apt-get install xvfb");
    let mut child = Command::new(xvfb)
        .args([
            "-displayfd",
            "1",
            "-screen",
            "0",
            "1280x900x24",
            "-nolisten",
            "tcp",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("Xvfb did not start");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let display = format!(":{}", line.trim());
    assert!(display.len() > 1, "Xvfb did not report its display");
    (Reaped(child), display)
}

pub fn free_port() -> u16 {
    latchkey_testkit::free_port()
}

pub fn wait_for_port(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One WebDriver session.
#[derive(Debug)]
pub struct Session {
    http: reqwest::Client,
    base: String,
}

#[derive(Debug, Clone)]
pub struct Element(String);

impl Session {
    /// Opens a session that launches `application` with `args` (tauri-driver's
    /// `tauri:options`).
    pub async fn start(driver_port: u16, application: &Path, args: &[&str]) -> Session {
        let http = reqwest::Client::new();
        let caps = json!({"capabilities": {"alwaysMatch": {"tauri:options": {
            "application": application.to_str().unwrap(),
            "args": args,
        }}}});
        let answer: Value = http
            .post(format!("http://127.0.0.1:{driver_port}/session"))
            .json(&caps)
            .send()
            .await
            .expect("tauri-driver did not answer")
            .json()
            .await
            .unwrap();
        let id = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {answer}"))
            .to_owned();
        Session {
            http,
            base: format!("http://127.0.0.1:{driver_port}/session/{id}"),
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let answer: Value = req.send().await.unwrap().json().await.unwrap();
        answer["value"].clone()
    }

    fn is_error(value: &Value) -> bool {
        value.get("error").is_some()
    }

    /// Every element matching `css` now (possibly none), without waiting.
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        let value = self
            .send(
                reqwest::Method::POST,
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        if Self::is_error(&value) {
            return Vec::new();
        }
        value
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(|s| Element(s.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until at least one element matches `css`; returns them all.
    pub async fn wait_all(&self, css: &str, within: Duration) -> Vec<Element> {
        let deadline = Instant::now() + within;
        loop {
            let found = self.find_all(css).await;
            if !found.is_empty() {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no element matches {css} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// Waits until nothing matches `css`.
    pub async fn wait_gone(&self, css: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.find_all(css).await.is_empty() {
            assert!(
                Instant::now() < deadline,
                "{css} is still there after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    pub async fn wait(&self, css: &str, within: Duration) -> Element {
        self.wait_all(css, within).await.remove(0)
    }

    /// Waits until the text of the first element matching `css` contains `needle`.
    pub async fn wait_text(&self, css: &str, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(el) = self.find_all(css).await.first() {
                let text = self.text(el).await;
                if text.contains(needle) {
                    return text;
                }
                if Instant::now() >= deadline {
                    panic!(
                        "{css} shows {text:?}, not {needle:?}, after {within:?}; the page says: {:?}",
                        self.page_text().await
                    );
                }
            } else if Instant::now() >= deadline {
                panic!(
                    "no element matches {css}; the page says: {:?}",
                    self.page_text().await
                );
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// Clicks what `css` matches until `started` sees the page react, at most three times.
    /// WebKit clicks where the element was when it was found; a page still settling after a
    /// tab switch can move it, and the click then lands beside it (a clean-clone run once
    /// waited a minute on a claim that never started). Only for buttons that are safe to press
    /// again while nothing has happened.
    pub async fn click_until_started(&self, css: &str, within: Duration, started: &str) {
        for _ in 0..3 {
            self.click(&self.wait(css, within).await).await;
            let settle = Instant::now() + Duration::from_secs(3);
            while Instant::now() < settle {
                if !self.find_all(started).await.is_empty() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        }
    }

    pub async fn click(&self, el: &Element) {
        let v = self
            .send(
                reqwest::Method::POST,
                &format!("/element/{}/click", el.0),
                Some(json!({})),
            )
            .await;
        assert!(!Self::is_error(&v), "click failed: {v}");
    }

    pub async fn type_text(&self, el: &Element, text: &str) {
        let v = self
            .send(
                reqwest::Method::POST,
                &format!("/element/{}/value", el.0),
                Some(json!({ "text": text })),
            )
            .await;
        assert!(!Self::is_error(&v), "typing failed: {v}");
    }

    /// Empties an input (WebDriver's Element Clear).
    pub async fn clear(&self, el: &Element) {
        let v = self
            .send(
                reqwest::Method::POST,
                &format!("/element/{}/clear", el.0),
                Some(json!({})),
            )
            .await;
        assert!(!Self::is_error(&v), "clearing failed: {v}");
    }

    /// Everything the window shows as text, for failure messages (what error the app showed).
    pub async fn page_text(&self) -> String {
        match self.find_all("body").await.first() {
            Some(body) => self.text(body).await,
            None => String::new(),
        }
    }

    pub async fn text(&self, el: &Element) -> String {
        let v = self
            .send(
                reqwest::Method::GET,
                &format!("/element/{}/text", el.0),
                None,
            )
            .await;
        v.as_str().unwrap_or_default().to_owned()
    }

    pub async fn attribute(&self, el: &Element, name: &str) -> Option<String> {
        let v = self
            .send(
                reqwest::Method::GET,
                &format!("/element/{}/attribute/{name}", el.0),
                None,
            )
            .await;
        v.as_str().map(str::to_owned)
    }

    /// A DOM property, e.g. an input's or textarea's current `value` or an image's `width`
    /// (numbers come back as their decimal text).
    pub async fn property(&self, el: &Element, name: &str) -> Option<String> {
        let v = self
            .send(
                reqwest::Method::GET,
                &format!("/element/{}/property/{name}", el.0),
                None,
            )
            .await;
        v.as_str()
            .map(str::to_owned)
            .or_else(|| v.as_f64().map(|n| n.to_string()))
    }

    pub async fn set_window_size(&self, width: u32, height: u32) {
        let v = self
            .send(
                reqwest::Method::POST,
                "/window/rect",
                Some(json!({ "width": width, "height": height })),
            )
            .await;
        assert!(!Self::is_error(&v), "resizing the window failed: {v}");
    }

    /// Moves and resizes the window (`x`, `y` of its top left corner on the screen).
    pub async fn set_window_rect(&self, x: i32, y: i32, width: u32, height: u32) {
        let v = self
            .send(
                reqwest::Method::POST,
                "/window/rect",
                Some(json!({ "x": x, "y": y, "width": width, "height": height })),
            )
            .await;
        assert!(!Self::is_error(&v), "moving the window failed: {v}");
    }

    /// Saves a PNG of the window to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let v = self.send(reqwest::Method::GET, "/screenshot", None).await;
        let png = data_encoding::BASE64
            .decode(v.as_str().expect("screenshot is base64").as_bytes())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Runs `script` as a function body in the page (WebDriver's Execute Script); `args`
    /// are its `arguments`. Panics with the driver's message when the script throws.
    pub async fn execute(&self, script: &str, args: Value) -> Value {
        let v = self
            .send(
                reqwest::Method::POST,
                "/execute/sync",
                Some(json!({ "script": script, "args": args })),
            )
            .await;
        assert!(!Self::is_error(&v), "the script failed: {v}");
        v
    }

    /// Like `execute`, for a script that calls its last argument when done.
    pub async fn execute_async(&self, script: &str, args: Value) -> Value {
        let v = self
            .send(
                reqwest::Method::POST,
                "/execute/async",
                Some(json!({ "script": script, "args": args })),
            )
            .await;
        assert!(!Self::is_error(&v), "the script failed: {v}");
        v
    }

    /// How long a script may run (an axe audit of a long screen takes seconds).
    pub async fn set_script_timeout(&self, within: Duration) {
        let v = self
            .send(
                reqwest::Method::POST,
                "/timeouts",
                Some(json!({ "script": within.as_millis() as u64 })),
            )
            .await;
        assert!(
            !Self::is_error(&v),
            "setting the script timeout failed: {v}"
        );
    }

    /// Sends key strokes through WebDriver's Actions API, as a keyboard would: each entry
    /// of `strokes` is pressed and released in turn, with every key of `held` held down
    /// around all of them (e.g. `&[key::SHIFT]` for Shift+Tab).
    pub async fn keys(&self, held: &[&str], strokes: &[&str]) {
        let mut actions = Vec::new();
        for k in held {
            actions.push(json!({"type": "keyDown", "value": k}));
        }
        for k in strokes {
            actions.push(json!({"type": "keyDown", "value": k}));
            actions.push(json!({"type": "keyUp", "value": k}));
        }
        for k in held.iter().rev() {
            actions.push(json!({"type": "keyUp", "value": k}));
        }
        let v = self
            .send(
                reqwest::Method::POST,
                "/actions",
                Some(json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]})),
            )
            .await;
        assert!(!Self::is_error(&v), "key actions failed: {v}");
    }

    /// One key pressed and released.
    pub async fn press(&self, key: &str) {
        self.keys(&[], &[key]).await;
    }

    /// Shift+Tab.
    pub async fn press_shift_tab(&self) {
        self.keys(&[key::SHIFT], &[key::TAB]).await;
    }

    /// Types `text` into whatever has the focus, one key stroke per character.
    pub async fn type_keys(&self, text: &str) {
        let strokes: Vec<String> = text.chars().map(String::from).collect();
        let strokes: Vec<&str> = strokes.iter().map(String::as_str).collect();
        self.keys(&[], &strokes).await;
    }

    /// What has the keyboard focus now, and how it is drawn.
    pub async fn focused(&self) -> Focused {
        let v = self.execute(FOCUSED_JS, json!([])).await;
        serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}: {v}"))
    }

    pub async fn end(self) {
        let _ = self.http.delete(&self.base).send().await;
    }
}

/// WebDriver's codes for keys that type no character (W3C WebDriver, "Keyboard actions").
pub mod key {
    pub const TAB: &str = "\u{E004}";
    pub const ENTER: &str = "\u{E007}";
    pub const SHIFT: &str = "\u{E008}";
    pub const SPACE: &str = "\u{E00D}";
    pub const ESCAPE: &str = "\u{E00C}";
}

/// The focused element as `Session::focused` reports it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Focused {
    /// A short description: tag, test id, text or label.
    pub what: String,
    /// The element's `data-testid`, if any.
    pub testid: Option<String>,
    /// `document.activeElement` is the body (nothing focused).
    pub body: bool,
    /// It matches `:focus-visible`.
    pub focus_visible: bool,
    /// Its computed `outline` (style, width, colour) and `box-shadow`.
    pub outline: String,
    pub box_shadow: String,
}

impl Focused {
    /// Something draws the focus: a visible outline or a box shadow.
    pub fn is_drawn(&self) -> bool {
        let outline = !self.outline.starts_with("none") && !self.outline.contains(" 0px");
        outline || self.box_shadow != "none"
    }
}

const FOCUSED_JS: &str = r#"
const el = document.activeElement;
const body = !el || el === document.body || el === document.documentElement;
const style = el ? getComputedStyle(el) : null;
let visible = false;
try { visible = !!el && el.matches(':focus-visible'); } catch (e) { visible = false; }
const label = el ? (el.getAttribute('aria-label') || (el.innerText || '').trim().slice(0, 40) || el.getAttribute('name') || '') : '';
return {
  what: el ? `${el.tagName.toLowerCase()}${el.dataset.testid ? `[data-testid=${el.dataset.testid}]` : ''} ${JSON.stringify(label)}` : 'nothing',
  testid: el && el.dataset.testid ? el.dataset.testid : null,
  body,
  focus_visible: visible,
  outline: style ? `${style.outlineStyle} ${style.outlineWidth} ${style.outlineColor}` : 'none',
  box_shadow: style ? style.boxShadow : 'none',
};
"#;

/// The automated accessibility audit: axe-core (`ui/node_modules/axe-core`, pinned in
/// `ui/package.json`) injected into the real window through Execute Script, run on a screen,
/// its results saved as `<name>.axe.json`; serious and critical violations are kept for
/// `assert_clean`, lesser ones only printed.
pub struct Axe {
    source: String,
    dir: PathBuf,
    failures: Vec<String>,
    lesser: std::collections::BTreeMap<String, usize>,
    screens: usize,
}

impl Axe {
    /// Reads axe's source; results go to `dir`.
    pub fn new(dir: &Path) -> Axe {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("ui/node_modules/axe-core/axe.min.js");
        let source = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; install the UI's dependencies (npm --prefix ui ci)",
                path.display()
            )
        });
        Axe {
            source,
            dir: dir.to_owned(),
            failures: Vec::new(),
            lesser: Default::default(),
            screens: 0,
        }
    }

    /// A screenshot `<name>.png` and an audit `<name>.axe.json` of what the window shows.
    pub async fn shot(&mut self, s: &Session, name: &str) {
        s.screenshot(&self.dir.join(format!("{name}.png"))).await;
        self.audit(s, name).await;
    }

    /// Audits what the window shows now.
    pub async fn audit(&mut self, s: &Session, name: &str) {
        let loaded = s.execute("return typeof window.axe;", json!([])).await;
        if loaded != "object" {
            // The page's CSP (`script-src 'self'`) does not apply to WebDriver's scripts in
            // WebKitGTK: axe's source runs as the body of an Execute Script function.
            s.set_script_timeout(Duration::from_secs(120)).await;
            let after = s
                .execute(
                    &format!("{}\n;return typeof window.axe;", self.source),
                    json!([]),
                )
                .await;
            assert_eq!(after, "object", "axe-core did not load in the window");
        }
        let started = Instant::now();
        let v = s.execute_async(AXE_RUN_JS, json!([])).await;
        let text = v.as_str().unwrap_or_else(|| panic!("axe answered {v}"));
        let results: Value =
            serde_json::from_str(text).unwrap_or_else(|_| panic!("axe failed: {text}"));
        std::fs::write(
            self.dir.join(format!("{name}.axe.json")),
            serde_json::to_string_pretty(&results).unwrap(),
        )
        .unwrap();
        self.screens += 1;
        let violations = results["violations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        eprintln!(
            "axe {name}: {} violation(s) in {} ms",
            violations.len(),
            started.elapsed().as_millis()
        );
        for v in &violations {
            let id = v["id"].as_str().unwrap_or("?");
            let impact = v["impact"].as_str().unwrap_or("?");
            let targets: Vec<String> = v["nodes"]
                .as_array()
                .map(|nodes| nodes.iter().map(|n| n["target"].to_string()).collect())
                .unwrap_or_default();
            let line = format!(
                "{name}: {id} ({impact}): {} — {} [{}]",
                v["help"].as_str().unwrap_or(""),
                targets.join(", "),
                v["helpUrl"].as_str().unwrap_or("")
            );
            eprintln!("  {line}");
            if matches!(impact, "serious" | "critical") {
                for n in v["nodes"].as_array().into_iter().flatten() {
                    if let Some(summary) = n["failureSummary"].as_str() {
                        eprintln!("    {}: {}", n["target"], summary.replace('\n', " "));
                    }
                }
                self.failures.push(line);
            } else {
                *self.lesser.entry(format!("{id} ({impact})")).or_default() += 1;
            }
        }
    }

    /// Fails on any serious or critical violation seen on any screen, listing them all.
    pub fn assert_clean(&self) {
        eprintln!(
            "axe: {} screens audited; minor and moderate violations left: {:?}",
            self.screens, self.lesser
        );
        assert!(
            self.failures.is_empty(),
            "axe found {} serious or critical violation(s):\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
    }
}

/// Runs axe over the whole document (its default rules: WCAG 2.x A and AA and best
/// practices) and answers the results as JSON text.
const AXE_RUN_JS: &str = r#"
const done = arguments[arguments.length - 1];
window.axe
  .run(document, { resultTypes: ['violations'] })
  .then((r) => done(JSON.stringify(r)), (e) => done('axe error: ' + e));
"#;

/// Starts tauri-driver on free ports; the app it launches inherits `env`.
pub fn start_driver(
    tauri_driver: &Path,
    display: &str,
    env: &[(&str, std::ffi::OsString)],
    log: &Path,
) -> (ReapedGroup, u16) {
    let port = free_port();
    let native_port = free_port();
    let mut cmd = Command::new(tauri_driver);
    cmd.args([
        "--port",
        &port.to_string(),
        "--native-port",
        &native_port.to_string(),
    ])
    .env("DISPLAY", display)
    .env("RUST_LOG", "info")
    .process_group(0)
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(log).unwrap());
    for (key, value) in env {
        cmd.env(key, value);
    }
    let driver = ReapedGroup(cmd.spawn().expect("tauri-driver did not start"));
    wait_for_port(port, Duration::from_secs(20));
    // tauri-driver answers on its own port before the WebKitWebDriver it starts listens on the
    // native one; a session asked for in between is dropped (seen on a loaded 2-core machine).
    wait_for_port(native_port, Duration::from_secs(30));
    (driver, port)
}

/// The app a test started: the process running `app` whose TMPDIR is `tmp`.
pub fn app_pid(app: &Path, tmp: &Path) -> Option<u32> {
    let app = std::fs::canonicalize(app).ok()?;
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

/// The demo's temporary directories under `tmp` (one while the demo app runs).
pub fn demo_dirs(tmp: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(tmp)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("latchkey-demo-"))
        })
        .collect()
}

/// Stops the demo app (`app`, started with TMPDIR `tmp`) as Ctrl-C or `kill` would, and waits
/// until it has stopped the demo and removed its directory. (Ending the WebDriver session
/// instead kills the app outright, as a crash would, leaving the demo's phrase in the keychain.)
pub async fn terminate_demo_app(app: &Path, tmp: &Path) {
    let pid = app_pid(app, tmp).expect("the app's process is not running");
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !demo_dirs(tmp).is_empty() || app_pid(app, tmp).is_some() {
        assert!(
            Instant::now() < deadline,
            "the app or its demo outlived SIGTERM: {:?}",
            demo_dirs(tmp)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The demo app (its nodes and door in its own process) in a private X server, launched
/// through tauri-driver with TMPDIR and XDG_DATA_HOME in a directory of its own, and shown at
/// its first screen. Fields drop in order: the driver's process group (the app with it), the
/// X server, then the directory.
pub struct DemoWindow {
    pub s: Session,
    /// From the WebDriver "new session" request to the onboarding screen in the DOM.
    pub cold_start: Duration,
    pub app: PathBuf,
    /// What started this window, for a second app beside it (a guest's).
    pub tauri_driver: PathBuf,
    pub display: String,
    _driver: ReapedGroup,
    _xvfb: Reaped,
    pub tmp: tempfile::TempDir,
}

impl DemoWindow {
    /// Starts `app` with `LATCHKEY_DEMO=1` and `env`; tauri-driver logs to `driver_log`.
    pub async fn start(app: &Path, env: &[(&str, std::ffi::OsString)], driver_log: &Path) -> Self {
        assert!(
            std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some(),
            "the app keeps its key in the Secret Service: run inside scripts/lib.sh's with_secret_service"
        );
        let tauri_driver = require_program("tauri-driver", "cargo install tauri-driver --locked");
        require_program("WebKitWebDriver", "apt-get install webkit2gtk-driver");
        let tmp = tempfile::tempdir().unwrap();
        let (xvfb, display) = start_xvfb();
        let mut all_env = vec![
            ("LATCHKEY_DEMO", "1".into()),
            ("TMPDIR", tmp.path().into()),
            ("XDG_DATA_HOME", tmp.path().join("data").into()),
        ];
        all_env.extend(env.iter().cloned());
        let (driver, port) = start_driver(&tauri_driver, &display, &all_env, driver_log);
        let started = Instant::now();
        let s = Session::start(port, app, &[]).await;
        s.wait("[data-testid=onboarding]", Duration::from_secs(60))
            .await;
        DemoWindow {
            s,
            cold_start: started.elapsed(),
            app: app.to_path_buf(),
            tauri_driver,
            display,
            _driver: driver,
            _xvfb: xvfb,
            tmp,
        }
    }

    /// Stops the app as Ctrl-C would (its demo torn down, the phrase out of the keychain),
    /// then ends the session.
    pub async fn stop(self) {
        terminate_demo_app(&self.app, self.tmp.path()).await;
        self.s.end().await;
    }
}
