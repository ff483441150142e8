//! Helpers for the owner end-to-end tests: the real `latchkey` and `latchkeyd` binaries, a
//! door device with an exec actuator, and in-process registry nodes.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use latchkey_node::{Limits, NodeConfig, RunningNode};

use crate::support::workspace_bin;

pub fn free_port() -> u16 {
    latchkey_testkit::free_port()
}

pub fn require_secret_service() {
    assert!(
        std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some(),
        "this test needs a Secret Service: run it inside `dbus-run-session` with an unlocked \
         gnome-keyring (scripts/test.sh does; see ../shared/STACK.md)"
    );
}

/// `n` registry nodes in this process, without rate limits, their databases under `dir`.
pub async fn start_nodes(dir: &Path, n: usize) -> Vec<RunningNode> {
    let mut nodes = Vec::new();
    for i in 0..n {
        let mut config = NodeConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            dir.join(format!("node{i}.db")),
        );
        config.limits = Limits::without_rate_limits();
        nodes.push(latchkey_node::start(config).await.unwrap());
    }
    nodes
}

/// A running `latchkeyd`; killed on drop.
pub struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A door: `latchkeyd init` with an exec actuator appending each run to `log`, then `run`.
pub struct Door {
    pub dir: PathBuf,
    pub log: PathBuf,
    pub agent: Agent,
}

impl Door {
    pub fn start(tmp: &Path, name: &str, nodes: &[String], extra: &[&str]) -> Door {
        let log = tmp.join("door.log");
        let script = tmp.join("open-door");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$LATCHKEY_ACTION $*\" >> '{}'\necho opened\n",
                log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let dir = tmp.join("device");
        let listen = format!("127.0.0.1:{}", free_port());
        let action = format!("unlock=exec:{}", script.display());
        let mut args = vec![
            "init",
            "--dir",
            dir.to_str().unwrap(),
            "--name",
            name,
            "--listen",
            &listen,
            "--no-mdns",
            "--refresh-secs",
            "1",
            "--action",
            &action,
        ];
        for u in nodes {
            args.extend(["--node", u.as_str()]);
        }
        args.extend(extra);
        let init = Command::new(workspace_bin("latchkeyd"))
            .args(&args)
            .output()
            .unwrap();
        assert!(
            init.status.success(),
            "{}",
            String::from_utf8_lossy(&init.stderr)
        );
        let agent = start_agent(&dir);
        Door { dir, log, agent }
    }

    /// Stops the agent (SIGKILL), as a power cut would.
    pub fn stop(&mut self) {
        let _ = self.agent.0.kill();
        let _ = self.agent.0.wait();
    }

    /// Starts the agent again from its directory (same address, keys and store).
    pub fn start_again(&mut self) {
        self.agent = start_agent(&self.dir);
    }

    /// How many times the actuator ran.
    pub fn opened(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }
}

fn start_agent(dir: &Path) -> Agent {
    let log = std::fs::File::create(dir.join("agent.log")).unwrap();
    let mut child = Command::new(workspace_bin("latchkeyd"))
        .args(["run", "--dir", dir.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("listening on ") {
                let _ = tx.send(());
            }
        }
    });
    let agent = Agent(child);
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("latchkeyd did not start"));
    agent
}

/// The owner most tests start from: a new profile under `tmp/owner` that knows `nodes` and
/// has claimed `door` from its claim text.
pub fn owner_who_claimed(tmp: &Path, nodes: &[String], door: &Door) -> Cli {
    let mut owner = Cli::new(tmp.join("owner"));
    owner.init();
    let mut add = vec!["nodes", "add"];
    add.extend(nodes.iter().map(String::as_str));
    owner.ok(&add);
    let text = std::fs::read_to_string(door.dir.join("claim.txt")).unwrap();
    owner.ok(&["claim", "--text", &text]);
    owner
}

/// Runs `latchkey --profile DIR args…`, collecting everything it printed.
pub struct Cli {
    pub profile: PathBuf,
    pub printed: Vec<u8>,
}

impl Cli {
    pub fn new(profile: PathBuf) -> Cli {
        Cli {
            profile,
            printed: Vec::new(),
        }
    }

    pub fn run(&mut self, args: &[&str]) -> Output {
        self.run_with_input(args, None)
    }

    pub fn run_with_input(&mut self, args: &[&str], input: Option<&str>) -> Output {
        let mut child = Command::new(workspace_bin("latchkey"))
            .arg("--profile")
            .arg(&self.profile)
            .args(args)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        if let Some(input) = input {
            std::io::Write::write_all(&mut stdin, input.as_bytes()).unwrap();
        }
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        self.printed.extend_from_slice(&out.stdout);
        self.printed.extend_from_slice(&out.stderr);
        out
    }

    pub fn ok(&mut self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "latchkey {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn json(&mut self, args: &[&str]) -> serde_json::Value {
        let mut with = args.to_vec();
        with.push("--json");
        let out = self.ok(&with);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }

    /// `latchkey init`; returns the 24 words shown and the profile's keychain id. Clears what
    /// was printed, since showing the words once is the point.
    pub fn init(&mut self) -> (Vec<String>, String) {
        let shown = self.ok(&["init"]);
        self.printed.clear();
        let words: Vec<String> = shown
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0].ends_with('.') && w[0].trim_end_matches('.').parse::<u8>().is_ok())
            .map(|w| w[1].to_owned())
            .collect();
        assert_eq!(words.len(), 24, "{shown}");
        let profile_id = shown
            .split_whitespace()
            .find(|w| w.starts_with("profile-"))
            .unwrap()
            .trim_end_matches('.')
            .to_owned();
        (words, profile_id)
    }
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}
