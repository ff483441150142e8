//! `latchkey-node bench` as an operator runs it: the real binary as the node (on a SQLite file,
//! limits off) and the real binary as the load tool, one short bounded run per scenario. Checks
//! that the JSON output parses and its counts add up; speed is not asserted (it is measured).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_latchkey-node");

/// The node under test, killed when dropped.
struct Node {
    child: Child,
    url: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn node(db: &std::path::Path) -> Node {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--db"])
        .arg(db)
        .args([
            "--ops-rate",
            "0",
            "--mailbox-rate",
            "0",
            "--read-rate",
            "0",
            "--max-requests-per-address",
            "4096",
            "--max-long-polls-per-address",
            "1024",
            "--mailbox-per-sender",
            "100000",
            "--mailbox-per-address",
            "100000",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("node binary starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    Node { child, url }
}

fn bench(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .arg("bench")
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("bench runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn run_json(url: &str, args: &[&str]) -> Value {
    let mut all = vec!["--node", url, "--json"];
    all.extend_from_slice(args);
    let (ok, stdout, stderr) = bench(&all);
    assert!(ok, "bench {args:?} failed: {stderr}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

fn kind<'a>(out: &'a Value, name: &str) -> &'a Value {
    &out["kinds"][name]
}

/// Requests counted by kind (answered or failed) add up to the total, and none failed.
fn counts_add_up(out: &Value) {
    let kinds = out["kinds"].as_object().unwrap();
    let sum: u64 = kinds
        .values()
        .map(|k| k["ok"].as_u64().unwrap() + k["failed"].as_u64().unwrap())
        .sum();
    assert_eq!(sum, out["requests"].as_u64().unwrap(), "{out}");
    for (name, k) in kinds {
        assert_eq!(k["failed"], 0, "{name} failed: {}", k["errors"]);
        let (p50, p99, p999) = (
            k["p50_ms"].as_f64().unwrap(),
            k["p99_ms"].as_f64().unwrap(),
            k["p999_ms"].as_f64().unwrap(),
        );
        assert!(p50 > 0.0 && p50 <= p99 && p99 <= p999, "{name}: {k}");
    }
}

#[test]
fn each_scenario_runs_bounded_and_its_counts_add_up() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(&dir.path().join("node.db"));

    // Ops: 20 devices, 120 posts: 20 genesis + claim (2 ops each) and 100 single ops.
    let out = run_json(
        &node.url,
        &["--scenario", "ops", "--count", "120", "--devices", "20"],
    );
    println!("ops: {out}");
    assert_eq!(out["requests"], 120);
    counts_add_up(&out);
    assert_eq!(kind(&out, "op post")["ok"], 120);
    assert_eq!(out["ops"]["ops_written"], 140);

    // Ops in lists of 5: 10 devices, 30 posts: 10 genesis + claim and 20 lists of 5.
    let out = run_json(
        &node.url,
        &[
            "--scenario",
            "ops",
            "--count",
            "30",
            "--devices",
            "10",
            "--ops-per-post",
            "5",
        ],
    );
    println!("ops in lists: {out}");
    counts_add_up(&out);
    assert_eq!(kind(&out, "op post")["ok"], 30);
    assert_eq!(out["ops"]["ops_written"], 120);

    // Reads, open loop: half ops, half head.
    let out = run_json(
        &node.url,
        &[
            "--scenario",
            "reads",
            "--count",
            "200",
            "--rate",
            "400",
            "--read-devices",
            "5",
        ],
    );
    println!("reads: {out}");
    assert_eq!(out["requests"], 200);
    counts_add_up(&out);
    assert_eq!(kind(&out, "chain read (ops)")["ok"], 100);
    assert_eq!(kind(&out, "chain head")["ok"], 100);
    assert_eq!(out["setup"]["setup_posts"], 15);

    // Mailbox: every acknowledged post is delivered once to its long-polling reader.
    let out = run_json(
        &node.url,
        &["--scenario", "mailbox", "--count", "300", "--readers", "50"],
    );
    println!("mailbox: {out}");
    assert_eq!(out["requests"], 300);
    counts_add_up(&out);
    let mailbox = &out["mailbox"];
    assert_eq!(mailbox["readers"], 50);
    assert_eq!(mailbox["posted"], 300);
    assert_eq!(mailbox["delivered"], 300);
    assert_eq!(mailbox["duplicates"], 0);
    assert_eq!(mailbox["delivery"]["post→delivery"]["ok"], 300);
    // From 127.0.0.1 to 127.0.0.64, as many homes would post, not one address.
    assert_eq!(out["setup"]["mailbox_senders"], 64);

    // Mixed: 10 jobs a cycle (6 reads, 2 op posts, 2 mailbox posts); 200 requests = 20 cycles.
    let out = run_json(
        &node.url,
        &[
            "--scenario",
            "mixed",
            "--count",
            "200",
            "--devices",
            "10",
            "--read-devices",
            "5",
            "--readers",
            "20",
        ],
    );
    println!("mixed: {out}");
    assert_eq!(out["requests"], 200);
    counts_add_up(&out);
    assert_eq!(kind(&out, "op post")["ok"], 40);
    // 10 devices: their first posts carry 2 ops, the next 30 one each.
    assert_eq!(out["ops"]["ops_written"], 50);
    assert_eq!(kind(&out, "mailbox post")["ok"], 40);
    assert_eq!(out["mailbox"]["delivered"], 40);
    assert_eq!(kind(&out, "chain read (ops)")["ok"], 60);
    assert_eq!(kind(&out, "chain head")["ok"], 60);

    // The human-readable form prints the table.
    let (ok, stdout, stderr) = bench(&[
        "--node",
        &node.url,
        "--scenario",
        "reads",
        "--count",
        "20",
        "--read-devices",
        "2",
    ]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("p999 ms") && stdout.contains("chain head"),
        "{stdout}"
    );
}

#[test]
fn a_node_limited_per_address_gets_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    // Default limits: 10 op posts/s per address, bursts of 50.
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--db"])
        .arg(dir.path().join("node.db"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let node = Node {
        child,
        url: line.trim().trim_start_matches("listening on ").to_owned(),
    };
    let out = run_json(
        &node.url,
        &["--scenario", "ops", "--count", "200", "--devices", "200"],
    );
    let errors = &kind(&out, "op post")["errors"];
    assert!(errors["429 rate_limited"].as_u64().unwrap() > 0, "{out}");
    assert!(
        out["hints"][0].as_str().unwrap().contains("--ops-rate 0"),
        "{out}"
    );
}

#[test]
fn a_target_off_loopback_is_refused_before_any_request() {
    for url in [
        "http://192.0.2.1:7400",
        "http://example.com:7400",
        "http://[2001:db8::1]:7400",
    ] {
        let (ok, stdout, stderr) = bench(&["--node", url, "--scenario", "reads"]);
        assert!(!ok, "{url} accepted: {stdout}");
        assert!(
            stderr.contains("only targets a node on this machine's loopback"),
            "{stderr}"
        );
    }
    // Loopback spelled as IPv6 passes the check (and then finds no node there).
    let port = latchkey_testkit::free_port();
    let (ok, _, stderr) = bench(&[
        "--node",
        &format!("http://[::1]:{port}"),
        "--scenario",
        "reads",
    ]);
    assert!(!ok);
    assert!(stderr.contains("no node answers"), "{stderr}");
}

#[test]
fn raw_sqlite_calibration_counts_its_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr) = bench(&[
        "--scenario",
        "raw-sqlite",
        "--count",
        "20",
        "--raw-dir",
        dir.path().to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let out: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(out["transactions"], 20);
    assert_eq!(out["kinds"]["raw commit"]["ok"], 20);
    // It cleans up after itself.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
