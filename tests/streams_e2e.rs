//! A smart meter's data, shared with consent and taken back — end to end with real parts: a
//! real Mosquitto on a free loopback port, three registry nodes (in process), the real
//! `latchkeyd` replaying a recorded DSMR 5 telegram file at 20 telegrams a second, the owner's
//! real `latchkey` CLI and three providers, each a profile of the real `latchkey-provider`
//! binary, all with the real OS keychain (run inside `with_secret_service`, as
//! scripts/test.sh does).
//!
//! A and B ask for consent to read `p1` and the owner approves both; both read. The owner
//! revokes A: A's reader says it can no longer read, from which seq, and — from the verified
//! consent log — when and by which owner; B reads on with no seq gap. C asks for a consent that
//! ends a few seconds later: when it lapses the device rotates again, C is told, and B still
//! reads on without a gap. `latchkey consent log --json` shows given, given, revoked, given,
//! expired in order; the providers' `status` shows what each holds. Also reported (not
//! asserted): the delay from the broker handing a sealed reading to a subscriber to the
//! provider printing it decrypted.

#[path = "support/cli.rs"]
mod cli;
mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cli::{free_port, require_secret_service, start_nodes, Cli, Door};
use serde_json::Value;

const RECORDED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/crates/latchkey-device/tests/fixtures/dsmr/recorded-dsmr5.txt"
);

/// A Mosquitto on a free loopback port; killed on drop.
struct Mosquitto {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    fn start() -> Mosquitto {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
        )
        .unwrap();
        let child = Command::new("mosquitto")
            .args(["-c", conf.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is installed (scripts/lib.sh installs it)");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "mosquitto did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Mosquitto {
            child,
            port,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One provider profile of the real binary.
struct Provider {
    profile: PathBuf,
}

impl Provider {
    fn new(dir: &Path, name: &str) -> Provider {
        let p = Provider {
            profile: dir.join(name),
        };
        let out = p.run(&["init", "--name", name]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        p
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(support::workspace_bin("latchkey-provider"));
        cmd.arg("--profile").arg(&self.profile);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "latchkey-provider {args:?}: {}",
            text(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// `read --follow` in the background; its stdout and stderr lines arrive timestamped.
    fn follow(&self, args: &[&str]) -> Follower {
        let mut child = self
            .command()
            .arg("read")
            .args(args)
            .arg("--follow")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let readings = Arc::new(Mutex::new(Vec::<(Instant, Value)>::new()));
        let notices = Arc::new(Mutex::new(Vec::<String>::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = readings.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not a JSON reading: {e}: {line}"));
                sink.lock().unwrap().push((Instant::now(), v));
            }
        });
        let stderr = child.stderr.take().unwrap();
        let sink = notices.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Follower {
            child,
            readings,
            notices,
        }
    }
}

/// A `latchkey-provider read --follow`; killed and reaped however the test ends.
struct Follower {
    child: Child,
    readings: Arc<Mutex<Vec<(Instant, Value)>>>,
    notices: Arc<Mutex<Vec<String>>>,
}

impl Follower {
    fn seqs(&self) -> Vec<u64> {
        self.readings
            .lock()
            .unwrap()
            .iter()
            .map(|(_, v)| v["seq"].as_u64().unwrap())
            .collect()
    }

    fn key_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .readings
            .lock()
            .unwrap()
            .iter()
            .map(|(_, v)| v["key_id"].as_u64().unwrap())
            .collect();
        ids.dedup();
        ids
    }

    fn notices(&self) -> Vec<String> {
        self.notices.lock().unwrap().clone()
    }

    /// Waits until `n` readings have been printed.
    fn wait_readings(&self, n: usize, limit: Duration) {
        let started = Instant::now();
        while self.readings.lock().unwrap().len() < n {
            assert!(
                started.elapsed() < limit,
                "fewer than {n} readings after {limit:?}; stderr: {:?}",
                self.notices()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until a stderr line contains `needle`, and returns it.
    fn wait_notice(&self, needle: &str, limit: Duration) -> String {
        let started = Instant::now();
        loop {
            if let Some(l) = self.notices().into_iter().find(|l| l.contains(needle)) {
                return l;
            }
            assert!(
                started.elapsed() < limit,
                "no notice with {needle:?} after {limit:?}: {:?}",
                self.notices()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until a reading under key id `key_id` has been printed.
    fn wait_key(&self, key_id: u64, limit: Duration) {
        let started = Instant::now();
        while !self.key_ids().contains(&key_id) {
            assert!(
                started.elapsed() < limit,
                "no reading under key id {key_id} after {limit:?}: key ids {:?}, stderr {:?}",
                self.key_ids(),
                self.notices()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_no_gap(seqs: &[u64], who: &str) {
    for w in seqs.windows(2) {
        assert_eq!(w[1], w[0] + 1, "{who} has a gap or repeat at {w:?}");
    }
}

/// The number after `from seq ` in a notice.
fn from_seq(notice: &str) -> u64 {
    notice
        .split("from seq ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no seq in {notice:?}"))
}

/// The recorded file, repeated so that at 20 telegrams a second it outlasts the test.
fn long_recording(dir: &Path) -> PathBuf {
    let one = std::fs::read_to_string(RECORDED).expect("the recorded DSMR 5 file");
    let path = dir.join("telegrams.txt");
    std::fs::write(&path, one.repeat(60)).unwrap();
    path
}

/// Arrival times of sealed readings (by seq) at a plain subscriber of the live topic.
fn watch_live(port: u16, topic: String) -> Arc<Mutex<BTreeMap<u64, Instant>>> {
    let seen = Arc::new(Mutex::new(BTreeMap::new()));
    let sink = seen.clone();
    tokio::spawn(async move {
        let mut options = rumqttc::MqttOptions::new("e2e-delay-watch", "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(30));
        let (client, mut events) = rumqttc::AsyncClient::new(options, 64);
        client
            .subscribe(topic, rumqttc::QoS::AtLeastOnce)
            .await
            .unwrap();
        loop {
            match events.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    if let Ok(h) = latchkey_proto::stream::peek_reading(&p.payload) {
                        sink.lock().unwrap().insert(h.seq, Instant::now());
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_share_a_meter_stream_with_providers_and_take_it_back() {
    require_secret_service();
    let broker = Mosquitto::start();
    let tmp = tempfile::tempdir().unwrap();
    let nodes = start_nodes(tmp.path(), 3).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let telegrams = long_recording(tmp.path());
    let stream = format!("p1=dsmr:file:{}@20", telegrams.display());
    // A second stream from a ser2net-style TCP gateway the test plays, for the delay figure.
    let gateway = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let p2 = format!("p2=dsmr:tcp:{}", gateway.local_addr().unwrap());
    let broker_url = broker.url();
    let meter = Door::start(
        tmp.path(),
        "Meter",
        &urls,
        &[
            "--stream",
            &stream,
            "--stream",
            &p2,
            "--broker",
            &broker_url,
        ],
    );

    let mut owner = Cli::new(tmp.path().join("owner"));
    owner.init();
    let mut add = vec!["nodes", "add"];
    add.extend(urls.iter().map(String::as_str));
    owner.ok(&add);
    let claim = std::fs::read_to_string(meter.dir.join("claim.txt")).unwrap();
    assert!(owner
        .ok(&["claim", "--text", &claim])
        .contains("claimed Meter"));
    let device = owner.json(&["devices"])["devices"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(device.starts_with("lkdev1"), "{device}");
    let device_hex = hex::encode(latchkey_proto::keys::DeviceId::parse(&device).unwrap().0);
    let live = watch_live(broker.port, format!("latchkey/{device_hex}/p1/live"));

    // Two providers ask; the owner approves both.
    let a = Provider::new(tmp.path(), "Acme Insights");
    let b = Provider::new(tmp.path(), "Grid Research");
    let ask = |p: &Provider, purpose: &str, extra: &[&str]| -> Value {
        let mut args = vec!["request", device.as_str(), "--purpose", purpose, "--json"];
        args.extend_from_slice(extra);
        if !extra.contains(&"--stream") {
            args.extend(["--stream", "p1"]);
        }
        p.json(&args)
    };
    let req_a = ask(
        &a,
        "Hourly insights into your use",
        &["--purpose-code", "insights"],
    );
    let req_b = ask(
        &b,
        "Load research for the local grid",
        &[
            "--purpose-code",
            "research",
            "--terms",
            "500 units per hour",
        ],
    );
    for req in [&req_a, &req_b] {
        let approved = owner.json(&["consent", "approve", req["link"].as_str().unwrap(), "--yes"]);
        assert_eq!(approved["id"], req["id"], "{approved}");
        assert_eq!(approved["state"], "active", "{approved}");
    }

    // Both read. A learns the device's identity key from the nodes' verified chain.
    let mut read_args = vec!["--stream", "p1", "--broker", broker_url.as_str()];
    for u in &urls {
        read_args.extend(["--node", u.as_str()]);
    }
    let mut a_args = vec![device.as_str()];
    a_args.extend_from_slice(&read_args);
    let reader_a = a.follow(&a_args);
    let reader_b = b.follow(&a_args);
    reader_a.wait_readings(20, Duration::from_secs(60));
    reader_b.wait_readings(20, Duration::from_secs(60));
    assert_eq!(reader_a.key_ids(), [1]);
    assert!(reader_a
        .wait_notice("received stream key id", Duration::from_secs(1))
        .contains("1"));
    let first = reader_b.readings.lock().unwrap()[0].1.clone();
    assert_eq!(first["tariff"], 2, "{first}");
    assert!(
        first["energy_delivered_kwh"][0].as_f64().unwrap() > 4000.0,
        "{first}"
    );
    assert!(first["phases"].as_array().unwrap().len() == 3, "{first}");

    // The owner revokes A: the device rotates, A is told, B reads on with no gap.
    let revoked = owner.json(&["consent", "revoke", &req_a["id"].as_str().unwrap()[..12]]);
    assert_eq!(revoked["state"], "revoked", "{revoked}");
    let notice = reader_a.wait_notice("consent revoked or expired", Duration::from_secs(30));
    eprintln!("A was told: {notice}");
    let cut_at = from_seq(&notice);
    assert!(notice.contains("key id 2"), "{notice}");
    assert!(notice.contains("was revoked at"), "{notice}");
    let owner_key = owner.json(&["key"]);
    let short: String = owner_key["key"]
        .as_str()
        .map(|k| k.chars().take(14).collect())
        .unwrap_or_default();
    assert!(notice.contains(&format!("by owner {short}")), "{notice}");
    reader_b.wait_key(2, Duration::from_secs(30));
    let a_seqs = reader_a.seqs();
    assert!(
        a_seqs.iter().all(|&s| s < cut_at),
        "A read past its cut-off"
    );
    assert_eq!(
        reader_a
            .notices()
            .iter()
            .filter(|l| l.contains("consent revoked or expired"))
            .count(),
        1,
        "said once"
    );
    // Nothing under key 2 ever reached A's output, while more frames went by.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(reader_a.key_ids(), [1]);
    assert_eq!(reader_a.seqs().len(), a_seqs.len());
    drop(reader_a);

    // C asks for a consent that ends by itself a few seconds after it is given.
    let c = Provider::new(tmp.path(), "Short Study");
    let req_c = ask(&c, "A short study", &["--until", "+15s"]);
    let approved = owner.json(&[
        "consent",
        "approve",
        req_c["link"].as_str().unwrap(),
        "--yes",
    ]);
    assert_eq!(approved["state"], "active", "{approved}");
    let mut c_args = vec!["read", device.as_str()];
    c_args.extend_from_slice(&read_args);
    c_args.extend(["--count", "100000", "--timeout-secs", "90"]);
    let out = tokio::task::spawn_blocking({
        let cmd_args: Vec<String> = c_args.iter().map(|s| s.to_string()).collect();
        let profile = c.profile.clone();
        move || {
            Command::new(support::workspace_bin("latchkey-provider"))
                .arg("--profile")
                .arg(profile)
                .args(cmd_args)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    eprintln!("C was told: {stderr}");
    assert!(stderr.contains("consent revoked or expired"), "{stderr}");
    assert!(
        stderr.contains("lapsed at the end of its period") || stderr.contains("expired at"),
        "{stderr}"
    );
    let c_seqs: Vec<u64> = text(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(
        !c_seqs.is_empty(),
        "C read while its consent lasted: {stderr}"
    );
    assert_no_gap(&c_seqs, "C");
    // B, still authorised, got the key of that rotation too and read through it.
    reader_b.wait_key(3, Duration::from_secs(30));
    reader_b.wait_readings(reader_b.seqs().len() + 20, Duration::from_secs(30));
    let b_seqs = reader_b.seqs();
    assert_no_gap(&b_seqs, "B");
    assert_eq!(reader_b.key_ids(), [1, 2, 3]);
    assert!(b_seqs.contains(&cut_at), "B read the reading A could not");
    assert!(
        !reader_b
            .notices()
            .iter()
            .any(|l| l.contains("consent revoked")),
        "{:?}",
        reader_b.notices()
    );

    // The verified log: given A, given B, revoked A, given C, expired C (the owner's
    // `consents` records the expiry of a lapsed consent).
    let consents = owner.json(&["consents", &device]);
    let states: Vec<&str> = consents["consents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["revoked", "active", "expired"], "{consents}");
    let log = owner.json(&["consent", "log", &device]);
    let entries = log["entries"].as_array().unwrap();
    let kinds: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap(),
                e["consent_id"].as_str().unwrap(),
            )
        })
        .collect();
    let (ia, ib, ic) = (
        req_a["id"].as_str().unwrap(),
        req_b["id"].as_str().unwrap(),
        req_c["id"].as_str().unwrap(),
    );
    assert_eq!(
        kinds,
        [
            ("given", ia),
            ("given", ib),
            ("revoked", ia),
            ("given", ic),
            ("expired", ic)
        ],
        "{log}"
    );
    let seqs: Vec<u64> = entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(entries[1]["provider_name"], "Grid Research");

    // Each provider's status shows what it holds.
    let sa = a.json(&["status", "--json"]);
    assert_eq!(sa["requests"][0]["id"], ia);
    assert_eq!(sa["streams"][0]["key_ids"], serde_json::json!([1]));
    assert_eq!(sa["streams"][0]["consent"], ia);
    assert!(sa["streams"][0]["cut_off"]["why"]
        .as_str()
        .unwrap()
        .contains("revoked"));
    let sb = b.json(&["status", "--json", "--broker", &broker_url]);
    assert_eq!(sb["streams"][0]["current_key_id"], 3, "{sb}");
    assert_eq!(sb["streams"][0]["cut_off"], Value::Null, "{sb}");
    assert_eq!(sb["requests"][0]["terms"], "500 units per hour");

    // Figure: meter → provider output. B also reads p2, which latchkeyd reads from the test's
    // TCP gateway: each telegram's write to the socket until B prints it decrypted.
    let req_b2 = ask(&b, "Load research for the local grid", &["--stream", "p2"]);
    owner.json(&[
        "consent",
        "approve",
        req_b2["link"].as_str().unwrap(),
        "--yes",
    ]);
    let (mut socket, _) = gateway.accept().unwrap();
    let mut b2_args = vec![device.as_str()];
    b2_args.extend_from_slice(&read_args);
    let at = b2_args.iter().position(|a| *a == "p1").unwrap();
    b2_args[at] = "p2";
    let reader_b2 = b.follow(&b2_args);
    reader_b2.wait_notice("received stream key id", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    let recorded = std::fs::read_to_string(RECORDED).unwrap();
    let one_by_one: Vec<String> =
        recorded
            .split_inclusive('\n')
            .fold(Vec::<String>::new(), |mut all, line| {
                if line.starts_with('/') || all.is_empty() {
                    all.push(String::new());
                }
                all.last_mut().unwrap().push_str(line);
                all
            });
    let mut written = Vec::new();
    for telegram in one_by_one.iter().take(40) {
        std::io::Write::write_all(&mut socket, telegram.as_bytes()).unwrap();
        written.push(Instant::now());
        std::thread::sleep(Duration::from_millis(100));
    }
    reader_b2.wait_readings(40, Duration::from_secs(30));
    let printed: Vec<Instant> = reader_b2
        .readings
        .lock()
        .unwrap()
        .iter()
        .map(|(at, _)| *at)
        .collect();
    let mut meter_delays: Vec<f64> = written
        .iter()
        .zip(&printed)
        .map(|(w, p)| p.saturating_duration_since(*w).as_secs_f64() * 1000.0)
        .collect();
    meter_delays.sort_by(|x, y| x.partial_cmp(y).unwrap());
    let pick = |d: &[f64], q: f64| d[((d.len() - 1) as f64 * q) as usize];
    eprintln!(
        "FIGURE meter (TCP gateway) -> provider output: n={} median={:.2} ms p95={:.2} ms max={:.2} ms",
        meter_delays.len(),
        pick(&meter_delays, 0.5),
        pick(&meter_delays, 0.95),
        pick(&meter_delays, 1.0)
    );
    drop(reader_b2);

    // Figure: broker → provider output (decrypted, printed), over B's p1 readings.
    let arrivals = live.lock().unwrap().clone();
    let mut delays: Vec<f64> = reader_b
        .readings
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(at, v)| {
            let seq = v["seq"].as_u64()?;
            let seen = arrivals.get(&seq)?;
            Some(at.saturating_duration_since(*seen).as_secs_f64() * 1000.0)
        })
        .collect();
    delays.sort_by(|x, y| x.partial_cmp(y).unwrap());
    if !delays.is_empty() {
        eprintln!(
            "FIGURE broker -> provider output: n={} median={:.2} ms p95={:.2} ms max={:.2} ms",
            delays.len(),
            pick(&delays, 0.5),
            pick(&delays, 0.95),
            pick(&delays, 1.0)
        );
    }

    drop(reader_b);
    drop(meter);
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}
