//! `latchkey consents`, `latchkey consent approve|revoke|log` and `latchkey meter` through the
//! real binary, the real OS keychain (run inside `source scripts/lib.sh; with_secret_service
//! cargo test -p latchkey-cli`), three registry nodes and a device agent on loopback: the
//! argument handling (no approval without a terminal or --yes, bad links and ids refused in
//! words) and the `--json` shapes fronts and scripts rely on.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;

use latchkey_device::config::parse_stream_option;
use latchkey_device::config::Driver;
use latchkey_device::lifecycle::{init_with_streams, InitOptions, StreamOptions};
use latchkey_node::{Limits, NodeConfig};
use latchkey_proto::consent::{purpose, ConsentRequest, ProviderIdentity};
use latchkey_proto::kem::KemSecretKey;
use latchkey_proto::keys::{DeviceId, SigningKey};
use rand_core::{OsRng, RngCore};
use serde_json::Value;

async fn latchkey(profile: &Path, args: &[&str]) -> Output {
    assert!(
        std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some(),
        "this test needs a Secret Service: run it inside `source scripts/lib.sh; \
         with_secret_service cargo test -p latchkey-cli`"
    );
    tokio::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .arg("--profile")
        .arg(profile)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap()
}

fn text(out: &Output) -> (Option<i32>, String, String) {
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn free_addr() -> SocketAddr {
    latchkey_testkit::free_addr()
}

fn consent_link(device: DeviceId, stream: &str) -> String {
    let key = SigningKey::generate(&mut OsRng);
    let kem = KemSecretKey::generate(&mut OsRng);
    let mut nonce = [0u8; 16];
    OsRng.fill_bytes(&mut nonce);
    ConsentRequest {
        provider: ProviderIdentity {
            name: "Acme Energy".into(),
            url: "https://acme.example".into(),
            signing: key.public_key(),
            kem: kem.public().clone(),
        },
        device,
        stream: stream.into(),
        purpose_code: purpose::INSIGHTS,
        purpose: "Monthly savings report".into(),
        retention_days: 30,
        until_ms: None,
        history: false,
        terms: None,
        issued_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
        nonce,
    }
    .sign(&key)
    .unwrap()
    .to_link()
}

fn door(dir: PathBuf, nodes: &[String]) -> InitOptions {
    InitOptions {
        dir,
        name: "Meter".into(),
        listen: free_addr(),
        nodes: nodes.to_vec(),
        actions: vec![(
            "unlock".into(),
            Driver::Exec {
                program: "/bin/true".into(),
            },
        )],
        advertise: vec![],
        mdns: false,
        refresh_secs: Some(1),
        max_view_age_secs: None,
        max_guest_staleness_secs: None,
        max_owner_staleness_secs: None,
        trust_clock: true,
    }
}

/// Stream `p1`: the device crate's recorded DSMR 5 telegrams at 5 per second, to `broker`.
fn meter_stream(broker: &str) -> StreamOptions {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../latchkey-device/tests/fixtures/dsmr/recorded-dsmr5.txt");
    StreamOptions {
        streams: vec![parse_stream_option(&format!("p1=dsmr:file:{}@5", file.display())).unwrap()],
        broker: Some(broker.to_owned()),
        free_aggregate: vec![],
    }
}

/// A real Mosquitto on a free loopback port (its config in the kept directory), killed when
/// dropped.
struct Mosquitto(
    std::process::Child,
    u16,
    #[allow(dead_code)] tempfile::TempDir,
);

impl Mosquitto {
    fn start() -> Mosquitto {
        let port = free_addr().port();
        let conf = tempfile::tempdir().unwrap();
        let path = conf.path().join("mosquitto.conf");
        std::fs::write(
            &path,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
        )
        .unwrap();
        let child = std::process::Command::new("mosquitto")
            .args(["-c", path.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("mosquitto is installed");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Mosquitto(child, port, conf)
    }

    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.1)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn consent_commands_check_their_arguments_and_print_stable_json() {
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
    let profile = tmp.path().join("owner");
    let run = |args: Vec<String>| {
        let profile = profile.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            text(&latchkey(&profile, &args).await)
        }
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(run(args(&["init"])).await.0, Some(0));
    let mut add = args(&["nodes", "add"]);
    add.extend(urls.iter().cloned());
    assert_eq!(run(add).await.0, Some(0));
    let broker = Mosquitto::start();
    let dir = tmp.path().join("meter");
    let claim = init_with_streams(&door(dir.clone(), &urls), &meter_stream(&broker.url())).unwrap();
    let agent = latchkey_device::agent::start(&dir).await.unwrap();
    let (code, _, err) = run(args(&["claim", "--text", &claim.claim_text])).await;
    assert_eq!(code, Some(0), "{err}");
    let device = DeviceId::from_identity(
        &latchkey_device::files::DeviceDir::new(&dir)
            .read_keys()
            .unwrap()
            .identity
            .public_key(),
    );

    // A link that is not one, and an id nothing matches: exit 1, words, nothing kept.
    let (code, _, err) = run(args(&[
        "consent",
        "approve",
        "LATCHKEY://C/NOTALINK",
        "--yes",
    ]))
    .await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("not a valid consent request link"), "{err}");
    let (code, _, err) = run(args(&["consent", "revoke", "0123456789abcdef"])).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no consent or request matches"), "{err}");
    let (code, out, _) = run(args(&["consent", "requests", "--json"])).await;
    assert_eq!(code, Some(0));
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        serde_json::json!({"requests": []})
    );

    // Without --yes and without a terminal: the summary, then a refusal; nothing approved.
    let link = consent_link(device, "p1");
    let (code, out, err) = run(args(&["consent", "approve", &link])).await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains("Acme Energy (https://acme.example) asks to read"),
        "{out}"
    );
    assert!(err.contains("pass --yes"), "{err}");
    let (_, out, _) = run(args(&["consents", "Meter", "--json"])).await;
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["consents"], serde_json::json!([]), "{v}");

    // With --yes --json: one ConsentView on stdout, the summary on stderr.
    let (code, out, err) = run(args(&["consent", "approve", &link, "--yes", "--json"])).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("asks to read"), "{err}");
    let view: Value = serde_json::from_str(&out).unwrap();
    let id = view["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 64);
    assert_eq!(view["state"], "active");
    for key in [
        "given_ms",
        "given_by",
        "ended_ms",
        "delivery",
        "delivery_note",
        "request",
    ] {
        assert!(view.get(key).is_some(), "{key} in {view}");
    }
    let r = &view["request"];
    for key in [
        "id",
        "device",
        "device_name",
        "stream",
        "provider_name",
        "provider_url",
        "provider_key",
        "purpose_code",
        "purpose_label",
        "purpose",
        "retention_days",
        "until_ms",
        "history",
        "terms",
        "summary",
    ] {
        assert!(r.get(key).is_some(), "{key} in {r}");
    }
    assert_eq!(r["device"], device.to_string());
    assert_eq!(r["purpose_label"], "insights");

    // `consents DEVICE` takes what other commands take: the name, the short id, lkdev1….
    for name in ["Meter".to_owned(), device.short(), device.to_string()] {
        let (code, out, err) = run(args(&["consents", &name, "--json"])).await;
        assert_eq!(code, Some(0), "{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["device"], device.to_string());
        assert_eq!(v["consents"][0]["id"], id.as_str());
    }
    let (code, out, _) = run(args(&["consents", "Meter"])).await;
    assert_eq!(code, Some(0));
    assert!(out.contains(&id[..16]) && out.contains("active"), "{out}");

    // Revoke by prefix, then the log: two entries, in order, with who and why.
    let (code, out, err) = run(args(&["consent", "revoke", &id[..12]])).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("revoked"), "{out}");
    let (code, out, _) = run(args(&["consent", "log", "Meter", "--json"])).await;
    assert_eq!(code, Some(0));
    let v: Value = serde_json::from_str(&out).unwrap();
    let entries = v["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(
        (entries[0]["seq"].as_u64(), entries[0]["kind"].as_str()),
        (Some(1), Some("given"))
    );
    assert_eq!(entries[1]["kind"], "revoked");
    for key in [
        "seq",
        "time_ms",
        "kind",
        "consent_id",
        "provider_name",
        "stream",
        "purpose",
        "signer",
        "signer_is_me",
        "hash",
    ] {
        assert!(entries[0].get(key).is_some(), "{key} in {}", entries[0]);
    }
    let (code, out, _) = run(args(&["consent", "log", "Meter"])).await;
    assert_eq!(code, Some(0));
    assert!(
        out.contains("SEQ") && out.contains("given") && out.contains("you"),
        "{out}"
    );

    // meter: the owner's own copy of the stream key, one snapshot as JSON.
    let (code, out, err) = run(args(&[
        "meter",
        "Meter",
        "--broker",
        &broker.url(),
        "--json",
    ]))
    .await;
    assert_eq!(code, Some(0), "{err}");
    let s: Value = serde_json::from_str(out.trim()).unwrap();
    for key in [
        "power_kw",
        "energy_today_kwh",
        "series",
        "key_id",
        "last_seq",
        "readings",
        "last_reading_ms",
        "problem",
    ] {
        assert!(s.get(key).is_some(), "{key} in {s}");
    }
    assert!(s["readings"].as_u64().unwrap() >= 1, "{s}");
    assert!(s["power_kw"].is_number(), "{s}");
    // After the revoke above the device rotated: the owner reads under key 2.
    assert_eq!(s["key_id"], 2, "{s}");
    let (code, out, err) = run(args(&["meter", "Meter", "--broker", &broker.url()])).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("power ") && out.contains(" kW, today "),
        "{out}"
    );

    // meter: the broker address is checked before anything is asked.
    let (code, _, err) = run(args(&["meter", "Meter", "--broker", "http://x:1"])).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("mqtt://HOST:PORT"), "{err}");
    let (code, _, err) = run(args(&["meter", "Nope", "--broker", "mqtt://127.0.0.1:1"])).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no device matches"), "{err}");

    agent.shutdown().await.unwrap();
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}
