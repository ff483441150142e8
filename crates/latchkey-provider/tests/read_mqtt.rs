//! The real `latchkey-provider` binary against a real Mosquitto and real registry nodes (in
//! process), with the device's publishing side built from latchkey-proto's seal functions. Run
//! inside `with_secret_service` (scripts/lib.sh): the provider's secrets are in the keychain.
//!
//! The provider asks for consent; an owner gives it on the nodes; the "device" publishes a
//! retained key message and sealed readings. The provider reads them (JSON and CSV), refuses a
//! forged key message and keeps reading with the key it holds, and after the owner revokes and
//! the device rotates it says plainly that it can no longer read, from which seq, and — from
//! the verified consent log — when and by which owner.

mod common;

use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::FakeDevice;
use latchkey_node::{Limits, NodeConfig};
use latchkey_proto::consent::{ConsentAction, ConsentLog, SignedConsentRequest};
use latchkey_proto::stream::{key_topic, live_topic};
use latchkey_provider::Profile;
use latchkey_quorum::{QuorumClient, QuorumConfig};
use latchkey_testkit::person;
use rumqttc::{AsyncClient, MqttOptions, QoS};

fn require_secret_service() {
    assert!(
        std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some(),
        "this test needs a Secret Service: run it inside `with_secret_service` (scripts/lib.sh)"
    );
}

fn free_port() -> u16 {
    latchkey_testkit::free_port()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A Mosquitto on a free loopback port; killed on drop.
struct Mosquitto {
    child: std::process::Child,
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
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("mosquitto is installed (scripts/lib.sh installs it)");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
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

fn provider(profile: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_latchkey-provider"))
        .arg("--profile")
        .arg(profile)
        .args(args)
        .output()
        .unwrap()
}

async fn provider_async(profile: &std::path::Path, args: &[&str]) -> Output {
    let profile = profile.to_owned();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        provider(&profile, &args)
    })
    .await
    .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn seqs_of_json(stdout: &str) -> Vec<u64> {
    stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            v["seq"].as_u64().unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_reads_with_the_devices_keys_and_says_when_its_consent_was_revoked() {
    require_secret_service();
    let broker = Mosquitto::start();
    let tmp = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for i in 0..3 {
        let mut config = NodeConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            tmp.path().join(format!("node{i}.db")),
        );
        config.limits = Limits::without_rate_limits();
        nodes.push(latchkey_node::start(config).await.unwrap());
    }
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let quorum = QuorumClient::new(
        urls.clone(),
        QuorumConfig {
            sample: 3,
            min_answers: 2,
            publish_to: 3,
            min_acks: 2,
            ..QuorumConfig::default()
        },
    )
    .unwrap();

    // A claimed device whose chain the nodes hold.
    let owner = person(1);
    let mut dev = FakeDevice::new(40);
    dev.device.claim(&[&owner], 1);
    let chain = dev.device.chain.clone();
    quorum
        .publish_chain(&chain, 0, &mut rand::thread_rng())
        .await
        .unwrap();
    let device = dev.id;

    // The provider: identity, then a request link for the device's p1 stream.
    let profile = tmp.path().join("acme");
    let out = provider(
        &profile,
        &[
            "init",
            "--name",
            "Acme Energy",
            "--url",
            "https://acme.example",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = provider(
        &profile,
        &[
            "request",
            &device.to_string(),
            "--stream",
            "p1",
            "--purpose",
            "Hourly insights into your use",
            "--purpose-code",
            "insights",
            "--retention-days",
            "90",
            "--until",
            "+30d",
            "--terms",
            "free",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let me = Profile::open(&profile).unwrap().identity().clone();
    // The link round-trips: it verifies and says exactly what was asked, by this provider.
    let signed = SignedConsentRequest::from_link(record["link"].as_str().unwrap()).unwrap();
    let req = signed.request();
    assert_eq!(signed.id().to_string(), record["id"].as_str().unwrap());
    assert_eq!(req.device, device);
    assert_eq!(req.stream, "p1");
    assert_eq!(req.purpose, "Hourly insights into your use");
    assert_eq!(req.purpose_code, latchkey_proto::consent::purpose::INSIGHTS);
    assert_eq!(req.retention_days, 90);
    assert_eq!(req.terms.as_deref(), Some("free"));
    assert_eq!(req.provider.name, "Acme Energy");
    assert_eq!(req.provider.signing, me.signing().unwrap());
    assert_eq!(req.provider.kem, me.kem().unwrap());
    let until = req.until_ms.unwrap();
    assert!(
        until.abs_diff(now_ms() + 30 * 86_400_000) < 3_600_000,
        "{until}"
    );
    // Without --json it prints a QR code and the link.
    let out = provider(
        &profile,
        &[
            "request",
            &device.to_string(),
            "--stream",
            "p1",
            "--purpose",
            "x",
        ],
    );
    let shown = text(&out.stdout);
    assert!(
        shown.contains('█') || shown.contains('▀'),
        "a QR code: {shown}"
    );
    assert!(shown.contains("LATCHKEY://C/"), "{shown}");
    // Bad input is refused and changes nothing.
    for bad in [
        vec![
            "request",
            "lkdev1nonsense",
            "--stream",
            "p1",
            "--purpose",
            "x",
        ],
        vec![
            "request",
            &device.to_string(),
            "--stream",
            "P 1",
            "--purpose",
            "x",
        ],
        vec![
            "request",
            &device.to_string(),
            "--stream",
            "p1",
            "--purpose",
            "x",
            "--until",
            "2001-01-01T00:00:00Z",
        ],
        vec![
            "request",
            &device.to_string(),
            "--stream",
            "p1",
            "--purpose",
            "x",
            "--purpose-code",
            "spying",
        ],
    ] {
        let out = provider(&profile, &bad);
        assert_eq!(out.status.code(), Some(1), "{bad:?}");
        assert!(
            text(&out.stderr).starts_with("error: "),
            "{}",
            text(&out.stderr)
        );
    }
    let requests = Profile::open(&profile).unwrap().requests().unwrap();
    assert_eq!(requests.len(), 2);

    // The owner gives consent (on the nodes), the device publishes the key message and
    // readings.
    let mut log = ConsentLog::new(&chain);
    let given = log
        .next_entry(
            &chain,
            &owner,
            now_ms(),
            ConsentAction::Given(signed.clone()),
        )
        .unwrap();
    quorum.post_consent(&given).await.unwrap();
    log.append(&chain, given).unwrap();

    let recipient = me.signing().unwrap().to_bytes();
    dev.consent = Some(signed.id());
    let kem = me.kem().unwrap();
    let mut options = MqttOptions::new("fake-device", "127.0.0.1", broker.port);
    options.set_max_packet_size(64 * 1024, 64 * 1024);
    let (mqtt, mut events) = AsyncClient::new(options, 64);
    tokio::spawn(async move {
        loop {
            if events.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let key_msg = {
        let identity = latchkey_proto::keys::SigningKey::from_bytes(&dev.identity().to_bytes());
        dev.key_message_by(&identity, &kem, recipient, &[1])
    };
    let keys_topic = key_topic(&device, "p1", &recipient);
    mqtt.publish(&keys_topic, QoS::AtLeastOnce, true, key_msg)
        .await
        .unwrap();
    let first_key = *dev.keys[0].key.as_bytes();
    let dev = Arc::new(Mutex::new((dev, 0u64)));
    let publisher = {
        let dev = dev.clone();
        let mqtt = mqtt.clone();
        let topic = live_topic(&device, "p1");
        tokio::spawn(async move {
            loop {
                let frame = {
                    let mut guard = dev.lock().unwrap();
                    guard.1 += 1;
                    let seq = guard.1;
                    guard.0.frame(seq)
                };
                let _ = mqtt.publish(&topic, QoS::AtLeastOnce, false, frame).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // Reads 5 readings, in order and without a gap, learning the device key through the nodes.
    let broker_url = broker.url();
    let dev_text = device.to_string();
    let mut read = vec![
        "read",
        &dev_text,
        "--stream",
        "p1",
        "--broker",
        &broker_url,
        "--count",
        "5",
        "--timeout-secs",
        "30",
    ];
    for u in &urls {
        read.extend(["--node", u.as_str()]);
    }
    let out = provider_async(&profile, &read).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let seqs = seqs_of_json(&text(&out.stdout));
    assert_eq!(seqs.len(), 5);
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert!(
        text(&out.stderr).contains("received stream key id 1"),
        "{}",
        text(&out.stderr)
    );
    // The stream key it keeps is not in any profile file in clear.
    for entry in std::fs::read_dir(&profile).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!bytes.windows(32).any(|w| w == first_key));
        assert!(!String::from_utf8_lossy(&bytes).contains(&hex::encode(first_key)));
    }

    // Someone else on the broker replaces the retained key message with one they signed: the
    // provider refuses it, and reads on with the key it holds (CSV this time, no nodes: the
    // identity key it learnt from the verified chain is remembered).
    let forged = {
        let mut guard = dev.lock().unwrap();
        guard.0.rotate(u64::MAX);
        let forger = person(66);
        let m = guard.0.key_message_by(&forger, &kem, recipient, &[2]);
        guard.0.keys.pop();
        m
    };
    mqtt.publish(&keys_topic, QoS::AtLeastOnce, true, forged)
        .await
        .unwrap();
    let out = provider_async(
        &profile,
        &[
            "read",
            &dev_text,
            "--stream",
            "p1",
            "--broker",
            &broker_url,
            "--count",
            "3",
            "--format",
            "csv",
            "--timeout-secs",
            "30",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(lines[0].starts_with("seq,key_id,meter_time,"));
    assert!(
        lines[1..].iter().all(|l| l.split(',').nth(1) == Some("1")),
        "{stdout}"
    );
    assert!(
        text(&out.stderr).contains("refused a key message"),
        "{}",
        text(&out.stderr)
    );

    // The owner revokes; the device rotates, clears the provider's key topic and seals on
    // under key 2, which it does not send to this provider.
    let revoked = log
        .next_entry(
            &chain,
            &owner,
            now_ms(),
            ConsentAction::Revoked(signed.id()),
        )
        .unwrap();
    quorum.post_consent(&revoked).await.unwrap();
    mqtt.publish(&keys_topic, QoS::AtLeastOnce, true, Vec::<u8>::new())
        .await
        .unwrap();
    let rotated_at = {
        let mut guard = dev.lock().unwrap();
        let next = guard.1 + 1;
        guard.0.rotate(next);
        next
    };
    let out = provider_async(&profile, &read).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("consent revoked or expired"), "{stderr}");
    let from: u64 = stderr
        .split("from seq ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(from >= rotated_at, "{from} < {rotated_at}: {stderr}");
    assert!(stderr.contains("was revoked at"), "{stderr}");
    assert!(
        stderr.contains(&format!("by owner {}", owner.public_key().short())),
        "{stderr}"
    );
    assert!(
        text(&out.stdout).is_empty(),
        "nothing readable after the rotation"
    );

    // Status lists the requests and the key it holds, and the cut-off.
    let out = provider(&profile, &["status", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["provider"]["name"], "Acme Energy");
    assert_eq!(status["requests"].as_array().unwrap().len(), 2);
    let stream = &status["streams"][0];
    assert_eq!(stream["device"], dev_text.as_str());
    assert_eq!(stream["key_ids"], serde_json::json!([1]));
    assert_eq!(stream["current_key_id"], 1);
    assert_eq!(stream["consent"], signed.id().to_string().as_str());
    assert!(stream["cut_off"]["why"]
        .as_str()
        .unwrap()
        .contains("revoked"));
    let words = text(&provider(&profile, &["status"]).stdout);
    assert!(words.contains("current key id 1"), "{words}");
    assert!(words.contains("cut off from seq"), "{words}");

    publisher.abort();
    for node in nodes {
        node.shutdown().await.unwrap();
    }
    let store = latchkey_provider::keychain::KeyringStore::open().unwrap();
    latchkey_provider::keychain::SecretStore::delete(&store, &me.account).unwrap();
}
