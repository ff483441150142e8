//! Data streams end to end on loopback with real parts: a real Mosquitto broker, registry
//! nodes, the real `latchkeyd` binary replaying the recorded DSMR 5 telegram file fast, an
//! owner sending `latchkey.consent` commands, and test subscribers holding providers' KEM keys:
//! both providers read after consent; after A's revoke its key no longer opens new frames
//! while B reads on with no gap; a short `until` rotates on the device's clock; `kill -9` right
//! after a revoke was answered keeps the new key; bad telegrams are counted, never published.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use latchkey_proto::chain::Chain;
use latchkey_proto::codec::Codec;
use latchkey_proto::consent::{
    purpose, ConsentAction, ConsentLog, ConsentRequest, ProviderIdentity, SignedConsentRequest,
    CONSENT_ACTION,
};
use latchkey_proto::event::{subscribe_args, SUBSCRIBE_ACTION};
use latchkey_proto::kem::KemSecretKey;
use latchkey_proto::keys::{DeviceId, SigningKey};
use latchkey_proto::stream::{
    key_topic, live_topic, open_key_grant, open_reading, peek_reading, KeyGrant,
};
use latchkey_testkit::{person, rng};
use rand_core::RngCore;
use support::*;

const RECORDED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/dsmr/recorded-dsmr5.txt"
);

/// A Mosquitto broker on a free port; killed when dropped.
struct Broker {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Broker {
    fn start() -> Broker {
        Broker::start_on(free_port())
    }

    /// A broker on `port` (a restart of one that was killed).
    fn start_on(port: u16) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
        )
        .unwrap();
        let child = std::process::Command::new("mosquitto")
            .args(["-c", conf.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("mosquitto is installed (apt-get install mosquitto)");
        Broker {
            child,
            port,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Clone)]
struct Msg {
    topic: String,
    payload: Vec<u8>,
}

/// Everything published under `latchkey/<device>/#`, in arrival order.
struct Subscriber {
    msgs: Arc<Mutex<Vec<Msg>>>,
    task: tokio::task::JoinHandle<()>,
    client: rumqttc::AsyncClient,
}

impl Subscriber {
    async fn start(port: u16, filter: &str) -> Subscriber {
        let mut id = [0u8; 4];
        rand_core::OsRng.fill_bytes(&mut id);
        let mut options =
            rumqttc::MqttOptions::new(format!("test-{}", hex::encode(id)), "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(5));
        options.set_max_packet_size(64 * 1024, 64 * 1024);
        let (client, mut events) = rumqttc::AsyncClient::new(options, 100);
        client
            .subscribe(filter, rumqttc::QoS::AtLeastOnce)
            .await
            .unwrap();
        let msgs = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let mut ready_tx = Some(ready_tx);
        let sink = msgs.clone();
        let task = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        sink.lock().unwrap().push(Msg {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                        });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(20), ready)
            .await
            .expect("subscribed to mosquitto")
            .unwrap();
        Subscriber { msgs, task, client }
    }

    fn snapshot(&self) -> Vec<Msg> {
        self.msgs.lock().unwrap().clone()
    }

    /// Waits until `f` finds something in what arrived.
    async fn wait<T>(&self, what: &str, secs: u64, f: impl Fn(&[Msg]) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(t) = f(&self.snapshot()) {
                return t;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(self) {
        let _ = self.client.disconnect().await;
        self.task.abort();
    }
}

/// A provider: its identity keys; only the test holds them.
struct Provider {
    key: SigningKey,
    kem: KemSecretKey,
}

impl Provider {
    fn new(n: u64) -> Provider {
        Provider {
            key: person(100 + n),
            kem: KemSecretKey::generate(&mut rng(200 + n)),
        }
    }

    fn recipient(&self) -> [u8; 32] {
        self.key.public_key().to_bytes()
    }

    fn request(
        &self,
        device: DeviceId,
        until_ms: Option<u64>,
        history: bool,
    ) -> SignedConsentRequest {
        let mut nonce = [0u8; 16];
        rand_core::OsRng.fill_bytes(&mut nonce);
        ConsentRequest {
            provider: ProviderIdentity {
                name: format!("Provider {}", hex::encode(&self.recipient()[..2])),
                url: "https://provider.example".into(),
                signing: self.key.public_key(),
                kem: self.kem.public().clone(),
            },
            device,
            stream: "p1".into(),
            purpose_code: purpose::INSIGHTS,
            purpose: "Energy insights".into(),
            retention_days: 30,
            until_ms,
            history,
            terms: Some("500 units per hour".into()),
            issued_ms: now_ms(),
            nonce,
        }
        .sign(&self.key)
        .unwrap()
    }
}

/// The newest non-empty key message for `recipient`, opened with `kem`.
fn key_grant(
    msgs: &[Msg],
    device: &DeviceId,
    recipient: &[u8; 32],
    kem: &KemSecretKey,
    identity: &latchkey_proto::keys::PublicKey,
) -> Option<KeyGrant> {
    let topic = key_topic(device, "p1", recipient);
    let last = msgs.iter().rev().find(|m| m.topic == topic)?;
    if last.payload.is_empty() {
        return None;
    }
    Some(
        open_key_grant(&last.payload, kem, identity)
            .expect("a key message opens for its recipient"),
    )
}

/// Whether the newest message on `recipient`'s key topic is the empty one that clears it.
fn cleared(msgs: &[Msg], device: &DeviceId, recipient: &[u8; 32]) -> bool {
    let topic = key_topic(device, "p1", recipient);
    msgs.iter()
        .rev()
        .find(|m| m.topic == topic)
        .is_some_and(|m| m.payload.is_empty())
}

/// The live frames: (key id, seq, frame).
fn frames(msgs: &[Msg], device: &DeviceId) -> Vec<(u32, u64, Vec<u8>)> {
    let topic = live_topic(device, "p1");
    msgs.iter()
        .filter(|m| m.topic == topic)
        .map(|m| {
            let h = peek_reading(&m.payload).unwrap();
            (h.key_id, h.seq, m.payload.clone())
        })
        .collect()
}

/// A telegram file long enough for a test: the recorded one, `copies` times over.
fn long_recording(dir: &Path, copies: usize) -> PathBuf {
    let one = std::fs::read_to_string(RECORDED).expect("the recorded DSMR 5 file");
    let path = dir.join("telegrams.txt");
    std::fs::write(&path, one.repeat(copies)).unwrap();
    path
}

struct Setup {
    nodes: Nodes,
    broker: Broker,
    tmp: tempfile::TempDir,
    dir: PathBuf,
    agent: Option<Agent>,
    owner: Sender,
    device: DeviceId,
    log: ConsentLog,
}

async fn setup(rate: &str, extra: &[&str]) -> Setup {
    let broker = Broker::start();
    let nodes = Nodes::start(1).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("device");
    let telegrams = long_recording(tmp.path(), 200);
    let stream = format!("p1=dsmr:file:{}@{rate}", telegrams.display());
    let broker_url = broker.url();
    let mut args = vec!["--stream", stream.as_str(), "--broker", broker_url.as_str()];
    args.extend_from_slice(extra);
    init(&dir, &nodes.urls(), &args);
    let agent = Agent::start(&dir);
    let chain = claim(&dir, &agent.url, &person(1), &nodes.urls()).await;
    let device = chain.device();
    let log = ConsentLog::new(&chain);
    Setup {
        nodes,
        broker,
        tmp,
        dir,
        agent: Some(agent),
        owner: Sender::new(person(1), chain),
        device,
        log,
    }
}

impl Setup {
    fn chain(&self) -> &Chain {
        &self.owner.chain
    }

    fn url(&self) -> String {
        self.agent.as_ref().expect("the agent runs").url.clone()
    }

    fn identity(&self) -> latchkey_proto::keys::PublicKey {
        self.chain().state().identity
    }

    /// Appends an entry to the owner's log and sends it to the device; the answer's code and
    /// words.
    async fn consent(&mut self, action: ConsentAction) -> (u16, String) {
        let entry = self
            .log
            .next_entry(&self.owner.chain, &self.owner.key, now_ms(), action)
            .unwrap();
        self.log.append(&self.owner.chain, entry.clone()).unwrap();
        let (env, pending) = self
            .owner
            .seal(self.owner.command(CONSENT_ACTION, &entry.to_bytes()));
        let r = self.owner.send(&self.url(), env, &pending).await;
        let words = match &r.response.outcome {
            latchkey_proto::command::Outcome::Rejected { reason, .. } => reason.clone(),
            _ => String::from_utf8_lossy(&r.response.body).into_owned(),
        };
        (code(&r), words)
    }

    async fn stop(self) {
        drop(self.agent);
        self.nodes.stop().await;
        drop(self.broker);
        drop(self.tmp);
    }
}

/// Every seq from the first to the last present, once: no gap, no repeat.
fn assert_no_gap(seqs: &[u64], what: &str) {
    for w in seqs.windows(2) {
        assert_eq!(
            w[1],
            w[0] + 1,
            "{what}: a gap or repeat between {} and {}",
            w[0],
            w[1]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_providers_read_and_after_a_revoke_only_the_other_one_reads_on_without_a_gap() {
    let mut s = setup("25", &["--free-aggregate", "p1"]).await;
    let device = s.device;
    let identity = s.identity();
    let sub = Subscriber::start(
        s.broker.port,
        &format!("latchkey/{}/#", hex::encode(device.0)),
    )
    .await;

    // The owner subscribes (its event KEM key) and gets its own copy of the stream key.
    let owner_kem = KemSecretKey::generate(&mut rng(9));
    let (env, pending) = s.owner.seal(
        s.owner
            .command(SUBSCRIBE_ACTION, &subscribe_args(owner_kem.public())),
    );
    assert_eq!(code(&s.owner.send(&s.url(), env, &pending).await), 0);
    let owner_recipient = s.owner.key.public_key().to_bytes();
    let owner_grant = sub
        .wait("the owner's key message", 30, |m| {
            key_grant(m, &device, &owner_recipient, &owner_kem, &identity)
        })
        .await;
    assert_eq!(owner_grant.consent, None);
    assert_eq!(owner_grant.current().key_id, 1);

    let a = Provider::new(1);
    let b = Provider::new(2);
    let ra = a.request(device, None, false);
    let rb = b.request(device, None, false);
    assert_eq!(s.consent(ConsentAction::Given(ra.clone())).await.0, 0);
    assert_eq!(s.consent(ConsentAction::Given(rb)).await.0, 0);
    let ga = sub
        .wait("A's key message", 30, |m| {
            key_grant(m, &device, &a.recipient(), &a.kem, &identity)
        })
        .await;
    let gb = sub
        .wait("B's key message", 30, |m| {
            key_grant(m, &device, &b.recipient(), &b.kem, &identity)
        })
        .await;
    assert_eq!(ga.consent, Some(ra.id()));
    assert_eq!((ga.current().key_id, gb.current().key_id), (1, 1));
    // A's message is A's alone.
    let a_msg = sub
        .snapshot()
        .into_iter()
        .rev()
        .find(|m| m.topic == key_topic(&device, "p1", &a.recipient()))
        .unwrap();
    assert!(open_key_grant(&a_msg.payload, &b.kem, &identity).is_err());

    // Both read the live frames.
    sub.wait("10 frames under key 1", 30, |m| {
        (frames(m, &device).iter().filter(|f| f.0 == 1).count() >= 10).then_some(())
    })
    .await;
    for (_, _, frame) in frames(&sub.snapshot(), &device).iter().take(10) {
        let (_, ra_reading) = open_reading(frame, ga.key(1).unwrap()).unwrap();
        let (_, rb_reading) = open_reading(frame, gb.key(1).unwrap()).unwrap();
        assert_eq!(ra_reading, rb_reading);
        assert!(!ra_reading.energy_delivered_wh.is_empty());
    }

    // Revoke A: answered after the rotation is on disk.
    let (c, words) = s.consent(ConsentAction::Revoked(ra.id())).await;
    assert_eq!(c, 0, "{words}");
    assert!(words.contains("key 2"), "{words}");
    let gb2 = sub
        .wait("B's key message with key 2", 30, |m| {
            key_grant(m, &device, &b.recipient(), &b.kem, &identity)
                .filter(|g| g.current().key_id == 2)
        })
        .await;
    assert_eq!(
        gb2.keys.iter().map(|k| k.key_id).collect::<Vec<_>>(),
        vec![1, 2]
    );
    let from_seq = gb2.current().from_seq;
    sub.wait("A's key topic cleared", 30, |m| {
        cleared(m, &device, &a.recipient()).then_some(())
    })
    .await;
    sub.wait("the owner's copy of key 2", 30, |m| {
        key_grant(m, &device, &owner_recipient, &owner_kem, &identity)
            .filter(|g| g.current().key_id == 2)
    })
    .await;
    sub.wait("10 frames under key 2", 30, |m| {
        (frames(m, &device).iter().filter(|f| f.0 == 2).count() >= 10).then_some(())
    })
    .await;

    let all = frames(&sub.snapshot(), &device);
    let seqs: Vec<u64> = all.iter().map(|f| f.1).collect();
    assert_no_gap(&seqs, "B's view of the live topic");
    for (key_id, seq, frame) in &all {
        // Nothing after the rotation is under the old key.
        assert_eq!(
            *key_id == 2,
            *seq >= from_seq,
            "frame {seq} under key {key_id}, key 2 from {from_seq}"
        );
        // B reads every frame with the keys it holds.
        open_reading(frame, gb2.key(*key_id).unwrap()).unwrap();
        if *key_id == 2 {
            assert!(
                open_reading(frame, ga.key(1).unwrap()).is_err(),
                "A's old key opens no new frame"
            );
            assert!(ga.key(2).is_none());
        }
    }
    // A's latest key message is the empty one: a late A learns nothing new.
    assert!(key_grant(&sub.snapshot(), &device, &a.recipient(), &a.kem, &identity).is_none());

    // The free tier: clear JSON, retained, once a minute of meter time has passed.
    let avg = format!("latchkey/{}/p1/avg1m", hex::encode(device.0));
    let json = sub
        .wait("a free-tier message", 60, |m| {
            m.iter()
                .rev()
                .find(|x| x.topic == avg)
                .map(|x| x.payload.clone())
        })
        .await;
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(v["stream"], "p1");
    assert_eq!(v["device"], device.to_string());
    assert!(v["samples"].as_u64().unwrap() >= 1);
    assert!(v["minute_start"].as_str().unwrap().ends_with(":00Z"));
    assert!(v["power_delivered_kw_mean"].is_number());

    sub.stop().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_until_rotates_on_the_device_clock() {
    let mut s = setup("25", &[]).await;
    let device = s.device;
    let identity = s.identity();
    let sub = Subscriber::start(
        s.broker.port,
        &format!("latchkey/{}/#", hex::encode(device.0)),
    )
    .await;
    let a = Provider::new(1);
    let b = Provider::new(2);
    let until = now_ms() + 4_000;
    let ra = a.request(device, Some(until), false);
    assert_eq!(s.consent(ConsentAction::Given(ra)).await.0, 0);
    assert_eq!(
        s.consent(ConsentAction::Given(b.request(device, None, false)))
            .await
            .0,
        0
    );
    let ga = sub
        .wait("A's key message", 30, |m| {
            key_grant(m, &device, &a.recipient(), &a.kem, &identity)
        })
        .await;
    assert_eq!(ga.current().key_id, 1);
    let gb2 = sub
        .wait("B's key 2 after A's period ended", 30, |m| {
            key_grant(m, &device, &b.recipient(), &b.kem, &identity)
                .filter(|g| g.current().key_id == 2)
        })
        .await;
    assert!(now_ms() >= until, "rotated only once the period ended");
    sub.wait("A's key topic cleared", 30, |m| {
        cleared(m, &device, &a.recipient()).then_some(())
    })
    .await;
    sub.wait("frames under key 2", 30, |m| {
        (frames(m, &device).iter().any(|f| f.0 == 2)).then_some(())
    })
    .await;
    for (key_id, seq, frame) in frames(&sub.snapshot(), &device) {
        assert_eq!(key_id == 2, seq >= gb2.current().from_seq);
        if key_id == 2 {
            assert!(open_reading(&frame, ga.key(1).unwrap()).is_err());
        }
    }
    sub.stop().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_right_after_a_revoke_keeps_the_new_key_and_no_later_frame_uses_the_old_one() {
    let mut s = setup("25", &[]).await;
    let device = s.device;
    let identity = s.identity();
    let sub = Subscriber::start(
        s.broker.port,
        &format!("latchkey/{}/#", hex::encode(device.0)),
    )
    .await;
    let a = Provider::new(1);
    let b = Provider::new(2);
    let ra = a.request(device, None, false);
    assert_eq!(s.consent(ConsentAction::Given(ra.clone())).await.0, 0);
    assert_eq!(
        s.consent(ConsentAction::Given(b.request(device, None, true)))
            .await
            .0,
        0
    );
    sub.wait("B's key message", 30, |m| {
        key_grant(m, &device, &b.recipient(), &b.kem, &identity)
    })
    .await;
    sub.wait("frames", 30, |m| {
        (frames(m, &device).len() >= 5).then_some(())
    })
    .await;

    let (c, words) = s.consent(ConsentAction::Revoked(ra.id())).await;
    assert_eq!(c, 0, "{words}");
    s.agent.take().unwrap().kill9();
    let before = frames(&sub.snapshot(), &device);
    let max_before = before.iter().map(|f| f.1).max().unwrap();

    s.agent = Some(Agent::start(&s.dir));
    let gb = sub
        .wait("B's key 2 after the restart", 30, |m| {
            key_grant(m, &device, &b.recipient(), &b.kem, &identity)
                .filter(|g| g.current().key_id == 2)
        })
        .await;
    sub.wait("frames after the restart", 30, |m| {
        (frames(m, &device)
            .iter()
            .filter(|f| f.1 > max_before)
            .count()
            >= 5)
            .then_some(())
    })
    .await;
    let from_seq = gb.current().from_seq;
    let all = frames(&sub.snapshot(), &device);
    let mut seen = std::collections::BTreeSet::new();
    for (key_id, seq, frame) in &all {
        assert!(seen.insert(*seq), "seq {seq} repeated across the restart");
        assert!(
            *key_id <= 2,
            "no second rotation: the durable key 2 is the one in use"
        );
        assert_eq!(
            *key_id == 2,
            *seq >= from_seq,
            "frame {seq} under key {key_id}"
        );
        // Frames sealed under key 2 before the kill (if any) and after it open with the one
        // key 2 the restarted device republished: it is the same durable key.
        open_reading(frame, gb.key(*key_id).unwrap()).unwrap();
    }
    assert!(cleared(&sub.snapshot(), &device, &a.recipient()));
    let by_key: BTreeMap<u32, usize> = all.iter().fold(BTreeMap::new(), |mut m, f| {
        *m.entry(f.0).or_default() += 1;
        m
    });
    assert!(by_key.get(&2).copied().unwrap_or(0) >= 5, "{by_key:?}");
    sub.stop().await;
    s.stop().await;
}

/// The telegrams of the recorded file, each from `/` through its CRC line.
fn recorded_telegrams() -> Vec<String> {
    let text = std::fs::read_to_string(RECORDED).unwrap();
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find('/') {
        let from = &rest[start..];
        let bang = from.find('!').expect("every telegram ends with !CRC");
        let end = from[bang..].find('\n').map_or(from.len(), |e| bang + e + 1);
        out.push(from[..end].to_owned());
        rest = &from[end..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_telegram_failing_its_crc_is_counted_in_status_and_never_published() {
    let broker = Broker::start();
    let nodes = Nodes::start(1).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("device");
    let mut telegrams = recorded_telegrams()[..10].to_vec();
    assert!(telegrams[3].contains("1-0:1.7.0(00."));
    telegrams[3] = telegrams[3].replace("1-0:1.7.0(00.", "1-0:1.7.0(09.");
    let file = tmp.path().join("ten.txt");
    std::fs::write(&file, telegrams.concat()).unwrap();
    let stream = format!("p1=dsmr:file:{}@20", file.display());
    let broker_url = broker.url();
    init(
        &dir,
        &nodes.urls(),
        &["--stream", &stream, "--broker", &broker_url],
    );
    // The device id is in the claim file; subscribe before the agent starts publishing.
    let payload = latchkey_proto::claim::ClaimPayload::parse(
        &std::fs::read_to_string(dir.join("claim.txt")).unwrap(),
    )
    .unwrap();
    let device = payload.device_id();
    let sub = Subscriber::start(
        broker.port,
        &format!("latchkey/{}/#", hex::encode(device.0)),
    )
    .await;
    let agent = Agent::start(&dir);
    sub.wait("9 frames", 30, |m| {
        (frames(m, &device).len() >= 9).then_some(())
    })
    .await;
    let status = || {
        let out = latchkeyd(&["status", "--dir", dir.to_str().unwrap(), "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["streams"][0].clone()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let s = loop {
        let s = status();
        if s["published"] == 9 && s["bad_telegrams"] == 1 {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "status never showed 9 published and 1 bad: {s}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        s["last_bad"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("crc"),
        "{s}"
    );
    assert_eq!(s["key_id"], 1);
    let text = latchkeyd(&["status", "--dir", dir.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("1 bad telegrams dropped"), "{text}");
    // Exactly the nine good telegrams went out, numbered without a gap.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all = frames(&sub.snapshot(), &device);
    assert_eq!(all.len(), 9);
    assert_no_gap(
        &all.iter().map(|f| f.1).collect::<Vec<_>>(),
        "the live topic",
    );
    sub.stop().await;
    drop(agent);
    nodes.stop().await;
}

#[test]
fn init_refuses_bad_stream_options_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("device");
    let dir_s = dir.to_str().unwrap();
    let base = [
        "init",
        "--dir",
        dir_s,
        "--name",
        "Meter",
        "--listen",
        "127.0.0.1:0",
        "--node",
        "http://127.0.0.1:1",
        "--no-mdns",
    ];
    for (extra, needle) in [
        (vec!["--stream", "p1=dsmr:file:/tmp/t.txt"], "--broker"),
        (
            vec![
                "--stream",
                "p1=dsmr:file:/tmp/t.txt",
                "--broker",
                "mqtt://127.0.0.1:1883",
                "--free-aggregate",
                "p2",
            ],
            "no stream is called p2",
        ),
        (
            vec![
                "--stream",
                "P1=dsmr:file:/tmp/t.txt",
                "--broker",
                "mqtt://h:1",
            ],
            "a-z",
        ),
        (
            vec!["--stream", "p1=dsmr:ftp:/x", "--broker", "mqtt://h:1"],
            "stream source",
        ),
        (
            vec!["--stream", "p1=csv:file:/x", "--broker", "mqtt://h:1"],
            "unknown format",
        ),
        (
            vec!["--stream", "p1=dsmr:file:/x", "--broker", "http://h:1"],
            "mqtt://",
        ),
        (
            vec![
                "--stream",
                "p1=dsmr:file:/x",
                "--stream",
                "p1=dsmr:file:/y",
                "--broker",
                "mqtt://h:1",
            ],
            "given twice",
        ),
    ] {
        let mut args = base.to_vec();
        args.extend(extra.iter().copied());
        let out = latchkeyd(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?} was accepted");
        assert!(err.contains(needle), "{extra:?}: {err}");
        assert!(
            !dir.join("device.key").exists(),
            "{extra:?} left a device behind"
        );
    }
    let mut args = base.to_vec();
    args.extend([
        "--stream",
        "p1=dsmr:file:/tmp/t.txt@0",
        "--broker",
        "mqtt://127.0.0.1:1883",
        "--free-aggregate",
        "p1",
    ]);
    let out = latchkeyd(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let toml = std::fs::read_to_string(dir.join("latchkeyd.toml")).unwrap();
    assert!(
        toml.contains("broker = \"mqtt://127.0.0.1:1883\""),
        "{toml}"
    );
    assert!(toml.contains("[streams.p1]"), "{toml}");
    assert!(toml.contains("source = \"file:/tmp/t.txt@0\""), "{toml}");
    assert!(toml.contains("free_aggregate = true"), "{toml}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_broker_restarts_the_device_reconnects_and_republishes_its_key_messages() {
    let mut s = setup("25", &[]).await;
    let device = s.device;
    let identity = s.identity();
    let filter = format!("latchkey/{}/#", hex::encode(device.0));
    let sub = Subscriber::start(s.broker.port, &filter).await;
    let a = Provider::new(1);
    assert_eq!(
        s.consent(ConsentAction::Given(a.request(device, None, false)))
            .await
            .0,
        0
    );
    sub.wait("A's key message", 30, |m| {
        key_grant(m, &device, &a.recipient(), &a.kem, &identity)
    })
    .await;
    sub.stop().await;

    // The broker dies and comes back empty (no persistence): its retained messages are gone.
    let port = s.broker.port;
    let old = std::mem::replace(&mut s.broker, Broker::start_on(free_port()));
    drop(old);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let replacement = std::mem::replace(&mut s.broker, Broker::start_on(port));
    drop(replacement);
    let sub = Subscriber::start(port, &filter).await;
    // A late subscriber finds A's key message retained again, and frames flow on.
    let grant = sub
        .wait("A's key message republished", 40, |m| {
            key_grant(m, &device, &a.recipient(), &a.kem, &identity)
        })
        .await;
    assert_eq!(grant.current().key_id, 1);
    sub.wait("frames after the reconnection", 30, |m| {
        (frames(m, &device).len() >= 5).then_some(())
    })
    .await;
    for (_, _, frame) in frames(&sub.snapshot(), &device) {
        open_reading(&frame, grant.key(1).unwrap()).unwrap();
    }
    sub.stop().await;
    s.stop().await;
}
