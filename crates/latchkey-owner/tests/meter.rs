//! The owner's meter watch against a real Mosquitto broker.
//!
//! 1. Frame by frame: a real claimed device (its chain on a real node), but its stream frames
//!    published by the test with proto's seal functions and the device's own identity key read
//!    from its key file, to show what the watch accepts and refuses (forged and replayed key
//!    messages, replayed readings, unknown keys, a broker restart), which a running latchkeyd
//!    would not produce on demand.
//! 2. A real latchkeyd agent replaying recorded DSMR 5 telegrams: the owner subscribes, reads
//!    its own copy of the stream key, and follows a rotation caused by revoking a provider.
//!
//! Run inside a private Secret Service (`source scripts/lib.sh; with_secret_service cargo test
//! -p latchkey-owner --test meter`): the owner's event KEM secret is in the real keychain.

mod common;

use std::sync::Arc;
use std::time::Duration;

use latchkey_device::files::DeviceDir;
use latchkey_device::lifecycle::init;
use latchkey_owner::keychain::{KeyringStore, SeedStore};
use latchkey_owner::{ClaimSource, MeterSnapshot, MeterWatch, Profile, SystemClock};
use latchkey_proto::kem::KemSecretKey;
use latchkey_proto::keys::{DeviceId, PublicKey, SigningKey};
use latchkey_proto::stream::{
    seal_key_grant, seal_reading, KeyEntry, KeyGrant, Reading, StreamKey,
};
use rand_core::OsRng;
use rumqttc::{AsyncClient, MqttOptions, QoS};

/// Acts as the device on the broker.
struct FakeMeter {
    client: AsyncClient,
    device: DeviceId,
    identity: SigningKey,
    owner: PublicKey,
    owner_kem: latchkey_proto::kem::KemPublicKey,
}

impl FakeMeter {
    fn topic(&self, tail: &str) -> String {
        format!("latchkey/{}/p1/{tail}", hex::encode(self.device.0))
    }

    async fn grant(&self, signer: &SigningKey, keys: Vec<(u32, &StreamKey)>, issued_ms: u64) {
        let grant = KeyGrant {
            device: self.device,
            stream: "p1".into(),
            recipient: self.owner.to_bytes(),
            consent: None,
            issued_ms,
            keys: keys
                .into_iter()
                .map(|(key_id, k)| KeyEntry {
                    key_id,
                    from_seq: 0,
                    key: StreamKey::from_bytes(*k.as_bytes()),
                })
                .collect(),
        };
        let msg = seal_key_grant(&grant, signer, &self.owner_kem, &mut OsRng).unwrap();
        let topic = self.topic(&format!("keys/{}", hex::encode(self.owner.to_bytes())));
        self.client
            .publish(topic, QoS::AtLeastOnce, true, msg)
            .await
            .unwrap();
    }

    async fn reading(&self, key_id: u32, key: &StreamKey, seq: u64, t_ms: u64, w: u32, wh: u64) {
        let reading = Reading {
            meter_time_ms: Some(t_ms),
            tariff: Some(1),
            energy_delivered_wh: vec![wh, 1_000],
            energy_returned_wh: vec![0, 0],
            power_delivered_w: Some(w),
            power_returned_w: Some(0),
            phases: vec![],
            gas_l: None,
            gas_time_ms: None,
        };
        let frame =
            seal_reading(&self.device, "p1", key_id, key, seq, &reading, &mut OsRng).unwrap();
        self.client
            .publish(self.topic("live"), QoS::AtLeastOnce, false, frame)
            .await
            .unwrap();
    }
}

async fn wait_for(
    watch: &MeterWatch,
    what: &str,
    ok: impl Fn(&MeterSnapshot) -> bool,
) -> MeterSnapshot {
    for _ in 0..200 {
        let s = watch.snapshot();
        if ok(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: {:?}", watch.snapshot());
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread")]
async fn the_meter_watch_opens_the_owners_key_copy_and_refuses_what_is_not_the_devices() {
    let tmp = tempfile::tempdir().unwrap();
    let nodes = common::start_nodes(tmp.path(), 1).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let seeds = Arc::new(KeyringStore::open().expect("a Secret Service (with_secret_service)"));
    let owner = Profile::at(
        &tmp.path().join("owner"),
        seeds.clone(),
        Arc::new(SystemClock),
    )
    .unwrap();
    owner.create_seed().unwrap();
    owner.add_nodes(&urls).unwrap();
    let dir = tmp.path().join("meter");
    let claim = init(&common::unlock_door(
        dir.clone(),
        "Meter",
        common::free_addr(),
        &urls,
        "/bin/true".into(),
    ))
    .unwrap();
    let agent = latchkey_device::agent::start(&dir).await.unwrap();
    let device = owner
        .claim(ClaimSource::Text(&claim.claim_text), None)
        .await
        .unwrap()
        .device;
    agent.shutdown().await.unwrap();
    let identity = DeviceDir::new(&dir).read_keys().unwrap().identity;

    let broker = common::Mosquitto::start();
    let watch = MeterWatch::start(&owner, device, "p1", &broker.url())
        .await
        .unwrap();
    // The event key the device would have from `latchkey.subscribe`.
    let kem_text = seeds
        .load(&format!("{}/event-kem", owner.id()))
        .unwrap()
        .expect("made by MeterWatch::start");
    let kem = KemSecretKey::from_bytes(&data_encoding::BASE64.decode(kem_text.as_bytes()).unwrap())
        .unwrap();
    let mut options = MqttOptions::new("fake-meter", "127.0.0.1", broker.port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(options, 64);
    tokio::spawn(async move {
        loop {
            if events.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let meter = FakeMeter {
        client,
        device,
        identity,
        owner: owner.identity().unwrap().public_key(),
        owner_kem: kem.public().clone(),
    };
    wait_for(&watch, "connected", |s| {
        s.problem.as_deref() == Some("connected; waiting for readings…")
    })
    .await;

    let k1 = StreamKey::generate(&mut OsRng);
    let t0 = now_ms();
    // A key message signed by someone else is ignored: readings under its key do not open.
    let mallory = SigningKey::generate(&mut OsRng);
    meter.grant(&mallory, vec![(1, &k1)], t0).await;
    meter.reading(1, &k1, 1, t0, 1_500, 10_000).await;
    let s = wait_for(&watch, "refused", |s| {
        s.problem
            .as_deref()
            .is_some_and(|p| p.contains("no stream key"))
    })
    .await;
    assert_eq!(s.readings, 0);

    // The device's own key message: readings open.
    meter.grant(&meter.identity, vec![(1, &k1)], t0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    meter.reading(1, &k1, 2, t0 + 1_000, 1_500, 10_000).await;
    meter.reading(1, &k1, 3, t0 + 2_000, 2_250, 10_250).await;
    let s = wait_for(&watch, "two readings", |s| s.readings == 2).await;
    assert_eq!(s.power_kw, Some(2.25));
    assert_eq!(s.energy_today_kwh, Some(0.25), "{s:?}");
    assert_eq!(s.series, vec![(t0 + 1_000, 1.5), (t0 + 2_000, 2.25)]);
    assert_eq!((s.key_id, s.last_seq), (Some(1), Some(3)));
    assert_eq!(s.problem, None);

    // A replayed reading is not counted; one under a key not sent to this owner says so.
    meter.reading(1, &k1, 3, t0 + 3_000, 9_000, 10_300).await;
    let k2 = StreamKey::generate(&mut OsRng);
    meter.reading(2, &k2, 4, t0 + 3_000, 9_000, 10_300).await;
    let s = wait_for(&watch, "unknown key", |s| {
        s.problem.as_deref().is_some_and(|p| p.contains("key 2"))
    })
    .await;
    assert_eq!((s.readings, s.power_kw), (2, Some(2.25)));

    // Rotation: the device sends key 2; an older key message replayed after it is ignored.
    meter
        .grant(&meter.identity, vec![(1, &k1), (2, &k2)], t0 + 3_500)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    meter.grant(&meter.identity, vec![(1, &k1)], t0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    meter.reading(2, &k2, 5, t0 + 4_000, 500, 10_400).await;
    let s = wait_for(&watch, "after rotation", |s| s.readings == 3).await;
    assert_eq!((s.key_id, s.power_kw), (Some(2), Some(0.5)));
    assert_eq!(s.energy_today_kwh, Some(0.4));

    // The broker goes away and comes back on the same port: the watch reconnects.
    let port = broker.port;
    drop(broker);
    wait_for(&watch, "disconnected", |s| {
        s.problem
            .as_deref()
            .is_some_and(|p| p.contains("unreachable"))
    })
    .await;
    let broker = common::Mosquitto::start_on(port);
    wait_for(&watch, "reconnected", |s| {
        s.problem.as_deref() == Some("connected; waiting for readings…") || s.problem.is_none()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    meter.reading(2, &k2, 6, t0 + 5_000, 750, 10_500).await;
    let s = wait_for(&watch, "after reconnect", |s| s.readings == 4).await;
    assert_eq!(s.power_kw, Some(0.75));
    assert_eq!(s.energy_today_kwh, Some(0.5));

    // A watch started again later the same day counts today's energy from the first reading
    // this profile saw today, not from its own first one.
    drop(watch);
    let watch = MeterWatch::start(&owner, device, "p1", &broker.url())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    meter
        .grant(&meter.identity, vec![(1, &k1), (2, &k2)], t0 + 3_500)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    meter.reading(2, &k2, 7, t0 + 6_000, 750, 10_700).await;
    let s = wait_for(&watch, "after a restart of the watch", |s| s.readings == 1).await;
    assert_eq!(s.energy_today_kwh, Some(0.7));
    drop(broker);
    drop(watch);
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

/// With a real latchkeyd agent replaying recorded telegrams: the owner subscribes, gets its own
/// copy of the stream key, and the watch shows power and today's energy; when a provider's
/// consent is revoked the device rotates, and the owner's copy follows without a gap.
#[tokio::test(flavor = "multi_thread")]
async fn the_meter_watch_reads_a_real_device_and_follows_a_rotation() {
    use latchkey_proto::consent::{purpose, ConsentRequest, ProviderIdentity};
    use rand_core::RngCore;

    let tmp = tempfile::tempdir().unwrap();
    let nodes = common::start_nodes(tmp.path(), 3).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let seeds = Arc::new(KeyringStore::open().expect("a Secret Service (with_secret_service)"));
    let owner = Profile::at(&tmp.path().join("owner"), seeds, Arc::new(SystemClock)).unwrap();
    owner.create_seed().unwrap();
    owner.add_nodes(&urls).unwrap();
    let broker = common::Mosquitto::start();
    let dir = tmp.path().join("meter");
    let claim = common::init_meter(
        dir.clone(),
        "Meter",
        common::free_addr(),
        &urls,
        &broker.url(),
    );
    let agent = latchkey_device::agent::start(&dir).await.unwrap();
    let device = owner
        .claim(ClaimSource::Text(&claim.claim_text), None)
        .await
        .unwrap()
        .device;
    let report = latchkey_owner::events::subscribe_device(&owner, &device)
        .await
        .unwrap();
    assert_eq!(report.subscribed, vec!["Meter".to_owned()], "{report:?}");

    let watch = MeterWatch::start(&owner, device, "p1", &broker.url())
        .await
        .unwrap();
    let s = wait_for(&watch, "readings from the device", |s| s.readings >= 3).await;
    assert_eq!(s.key_id, Some(1));
    assert!(
        s.power_kw.is_some() && s.energy_today_kwh.is_some(),
        "{s:?}"
    );
    assert!(s.energy_today_kwh.unwrap() >= 0.0);
    assert!(!s.series.is_empty());
    assert_eq!(s.problem, None);

    // A provider is given consent, then revoked: the device rotates to key 2.
    let key = SigningKey::generate(&mut OsRng);
    let kem = KemSecretKey::generate(&mut OsRng);
    let mut nonce = [0u8; 16];
    OsRng.fill_bytes(&mut nonce);
    let link = ConsentRequest {
        provider: ProviderIdentity {
            name: "Acme Energy".into(),
            url: String::new(),
            signing: key.public_key(),
            kem: kem.public().clone(),
        },
        device,
        stream: "p1".into(),
        purpose_code: purpose::MONITORING,
        purpose: "Outage alerts".into(),
        retention_days: 1,
        until_ms: None,
        history: false,
        terms: None,
        issued_ms: now_ms(),
        nonce,
    }
    .sign(&key)
    .unwrap()
    .to_link();
    let given = owner.consent_approve(&link).await.unwrap();
    assert_eq!(given.delivery, "delivered", "{:?}", given.delivery_note);
    let before = watch.snapshot().readings;
    let revoked = owner.consent_revoke(&given.id).await.unwrap();
    assert_eq!(revoked.delivery, "delivered", "{:?}", revoked.delivery_note);
    let s = wait_for(&watch, "readings under the new key", |s| {
        s.key_id == Some(2) && s.readings > before
    })
    .await;
    assert_eq!(s.problem, None);
    drop(watch);
    agent.shutdown().await.unwrap();
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}
