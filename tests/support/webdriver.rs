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

    /// Saves a PNG of the window to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let v = self.send(reqwest::Method::GET, "/screenshot", None).await;
        let png = data_encoding::BASE64
            .decode(v.as_str().expect("screenshot is base64").as_bytes())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }

    pub async fn end(self) {
        let _ = self.http.delete(&self.base).send().await;
    }
}
