//! End to end on loopback with real components: five registry nodes (in process), the real
//! `latchkeyd` (exec actuator writing a file), the real `latchkey` binary, and the real OS
//! keychain (Secret Service: run inside `dbus-run-session` with an unlocked gnome-keyring, as
//! scripts/test.sh does). Ends with the seed-never-on-disk check.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use latchkey_node::{Limits, NodeConfig, RunningNode};
use latchkey_proto::claim::{ClaimPayload, DeviceAddr};
use latchkey_proto::keys::{KeyPurpose, RecoveryPhrase};

const LATCHKEY: &str = env!("CARGO_BIN_EXE_latchkey");

/// The device agent's binary, built beside this one (built on demand when missing).
fn latchkeyd() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join("latchkeyd");
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "latchkey-device", "--bin", "latchkeyd"])
            .status()
            .unwrap();
        assert!(status.success(), "building latchkeyd failed");
    }
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_agent(dir: &Path) -> Agent {
    let log = std::fs::File::create(dir.join("agent.log")).unwrap();
    let mut child = Command::new(latchkeyd())
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

/// Runs `latchkey --profile DIR args…`, collecting everything it printed.
struct Cli {
    profile: PathBuf,
    printed: Vec<u8>,
}

impl Cli {
    fn run(&mut self, args: &[&str]) -> Output {
        let out = Command::new(LATCHKEY)
            .arg("--profile")
            .arg(&self.profile)
            .args(args)
            .env("RUST_LOG", "debug")
            .output()
            .unwrap();
        self.printed.extend_from_slice(&out.stdout);
        self.printed.extend_from_slice(&out.stderr);
        out
    }

    fn ok(&mut self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "latchkey {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_claim_from_png_open_and_no_seed_on_disk() {
    assert!(
        std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some(),
        "this test needs a Secret Service: run it inside `dbus-run-session` with an unlocked \
         gnome-keyring (scripts/test.sh does; see ../shared/STACK.md)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut nodes: Vec<RunningNode> = Vec::new();
    for i in 0..5 {
        let mut config = NodeConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            tmp.path().join(format!("node{i}.db")),
        );
        config.limits = Limits::without_rate_limits();
        nodes.push(latchkey_node::start(config).await.unwrap());
    }
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();

    // The device: an exec actuator that appends to a file.
    let door_log = tmp.path().join("door.log");
    let script = tmp.path().join("open-door");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$LATCHKEY_ACTION $*\" >> '{}'\necho opened\n",
            door_log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let dev = tmp.path().join("device");
    let listen = format!("127.0.0.1:{}", free_port());
    let action = format!("unlock=exec:{}", script.display());
    let mut args = vec![
        "init",
        "--dir",
        dev.to_str().unwrap(),
        "--name",
        "Front door",
        "--listen",
        &listen,
        "--no-mdns",
        "--refresh-secs",
        "1",
        "--action",
        &action,
    ];
    for u in &urls {
        args.extend(["--node", u.as_str()]);
    }
    let init = Command::new(latchkeyd()).args(&args).output().unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let _agent = start_agent(&dev);

    // The owner: a new phrase in the real keychain.
    let profile = tmp.path().join("owner");
    let mut cli = Cli {
        profile: profile.clone(),
        printed: Vec::new(),
    };
    let shown = cli.ok(&["init"]);
    cli.printed.clear(); // the words are shown once, on purpose; everything after is checked
    let words: Vec<&str> = shown
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0].ends_with('.') && w[0].trim_end_matches('.').parse::<u8>().is_ok())
        .map(|w| w[1])
        .collect();
    assert_eq!(words.len(), 24, "{shown}");
    let phrase = RecoveryPhrase::parse(&words.join(" ")).unwrap();
    let secret = phrase
        .to_seed()
        .derive(KeyPurpose::OwnerIdentity, 0)
        .unwrap()
        .to_bytes();
    let profile_id = shown
        .split_whitespace()
        .find(|w| w.starts_with("profile-"))
        .unwrap()
        .trim_end_matches('.')
        .to_owned();
    let stored = Command::new("secret-tool")
        .args([
            "lookup",
            "service",
            "org.latchkey.app",
            "username",
            &profile_id,
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&stored.stdout).trim(),
        phrase.phrase(),
        "the phrase is in the Secret Service"
    );
    assert!(
        cli.run(&["init"]).status.code() == Some(1),
        "a second init is refused"
    );

    let mut add = vec!["nodes", "add"];
    add.extend(urls.iter().map(String::as_str));
    cli.ok(&add);
    assert_eq!(cli.ok(&["nodes", "list"]).lines().count(), 5);

    // Claim from the PNG the device wrote.
    let started = Instant::now();
    let claimed = cli.ok(&["claim", "--image", dev.join("claim.png").to_str().unwrap()]);
    let claim_wall = started.elapsed();
    assert!(claimed.contains("claimed Front door"), "{claimed}");
    let visible_ms: u64 = claimed
        .split("visible on a quorum after ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    let devices = cli.ok(&["devices", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&devices).unwrap();
    assert_eq!(v["devices"][0]["mine"], true);
    let short = v["devices"][0]["short"].as_str().unwrap().to_owned();

    // Open: the actuator runs, exit 0.
    let started = Instant::now();
    let out = cli.run(&["open", &short]);
    let open_wall = started.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        stdout.contains("unlock accepted") && stdout.contains("opened"),
        "{stdout}"
    );
    assert_eq!(std::fs::read_to_string(&door_log).unwrap(), "unlock \n");

    // An action the device does not have: non-zero exit with the device's reason.
    let out = cli.run(&["open", "Front door", "--action", "lock"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("UnknownAction") && stderr.contains("no action"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&door_log).unwrap().lines().count(),
        1
    );

    // A bad phrase on restore says which word.
    let mut other = Cli {
        profile: tmp.path().join("other"),
        printed: Vec::new(),
    };
    let mut typo: Vec<&str> = words.clone();
    typo[6] = "zzzz";
    let mut child = Command::new(LATCHKEY)
        .arg("--profile")
        .arg(&other.profile)
        .arg("restore")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), typo.join(" ").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("word 7"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    other.printed.extend_from_slice(&out.stdout);
    other.printed.extend_from_slice(&out.stderr);

    // The same phrase restored in another profile, with a claim code whose address does not
    // answer: the claim finds the device already owned by this identity, and open goes through
    // the nodes' mailboxes.
    let relay_profile = tmp.path().join("relay");
    let mut relay = Cli {
        profile: relay_profile.clone(),
        printed: Vec::new(),
    };
    let mut child = Command::new(LATCHKEY)
        .arg("--profile")
        .arg(&relay.profile)
        .arg("restore")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), phrase.phrase().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    relay.printed.extend_from_slice(&out.stdout);
    relay.printed.extend_from_slice(&out.stderr);
    relay.ok(&add);
    let text = std::fs::read_to_string(dev.join("claim.txt")).unwrap();
    let mut payload = ClaimPayload::parse(&text).unwrap();
    payload.addrs = vec![DeviceAddr::parse(&format!("127.0.0.1:{}", free_port())).unwrap()];
    let moved = payload.to_text().unwrap();
    let claimed = relay.ok(&["claim", "--text", &moved]);
    assert!(claimed.contains("already yours"), "{claimed}");
    let started = Instant::now();
    let out = relay.run(&["open", "Front door"]);
    let relay_wall = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("accepted (through http://127.0.0.1"),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read_to_string(&door_log).unwrap().lines().count(),
        2
    );
    println!(
        "open through node mailboxes: whole `latchkey open` {} ms",
        relay_wall.as_millis()
    );

    // Seed never on disk, in logs or in error output.
    let needles: Vec<Vec<u8>> = vec![
        phrase.phrase().as_bytes().to_vec(),
        words[..3].join(" ").into_bytes(),
        words[10..13].join(" ").into_bytes(),
        secret.to_vec(),
        hex::encode(secret.as_slice()).into_bytes(),
        hex::encode_upper(secret.as_slice()).into_bytes(),
        phrase.to_seed().as_bytes().to_vec(),
    ];
    let mut scanned = 0;
    for dir in [&profile, &other.profile, &relay_profile] {
        for file in files_under(dir) {
            let bytes = std::fs::read(&file).unwrap();
            for n in &needles {
                assert!(
                    !contains(&bytes, n),
                    "secret material in {}",
                    file.display()
                );
            }
            scanned += 1;
        }
    }
    for printed in [&cli.printed, &other.printed, &relay.printed] {
        for n in &needles {
            assert!(!contains(printed, n), "secret material in the CLI's output");
        }
    }
    assert!(scanned >= 1);

    println!(
        "claim: visible on a quorum of 5 nodes after {visible_ms} ms (whole `latchkey claim` {} ms); \
         open: whole `latchkey open` {} ms",
        claim_wall.as_millis(),
        open_wall.as_millis()
    );
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}
