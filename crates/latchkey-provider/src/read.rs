//! Reading a device's stream from the home broker: subscribe to `…/live` and to this
//! provider's key topic, feed both to a [`StreamReader`], keep new keys durably (sealed under
//! the keychain's store key) before using them, and tell the caller what happened.

use std::collections::HashSet;
use std::future::Future;
use std::time::{Duration, Instant};

use latchkey_proto::keys::DeviceId;
use latchkey_proto::stream::{key_topic, live_topic, Reading};
use rand::RngCore;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::error::{Error, Result};
use crate::identity::Secrets;
use crate::keychain::SecretStore;
use crate::keystore::KeyStore;
use crate::profile::{CutOff, Profile};
use crate::reader::{Output, StreamReader};
use crate::registry;

/// The broker's address, from `mqtt://HOST:PORT` (or `HOST:PORT`; port 1883 by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    pub host: String,
    pub port: u16,
}

impl Broker {
    pub fn parse(url: &str) -> Result<Broker> {
        let bad = |why: &str| Error::BadBroker {
            url: url.to_owned(),
            why: why.to_owned(),
        };
        let rest = match url.split_once("://") {
            Some(("mqtt", rest)) => rest,
            Some(_) => {
                return Err(bad(
                    "only mqtt:// (plain MQTT on the home network) is supported",
                ))
            }
            None => url,
        };
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || rest.contains('/') || rest.contains('@') {
            return Err(bad("expected HOST or HOST:PORT after mqtt://"));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') || h.starts_with('[') => (
                h.trim_start_matches('[').trim_end_matches(']'),
                p.parse().map_err(|_| bad("the port is not a number"))?,
            ),
            _ => (rest, 1883),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Broker {
            host: host.to_owned(),
            port,
        })
    }
}

/// What `read` does.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    pub device: DeviceId,
    pub stream: String,
    pub broker: String,
    /// Registry nodes: the device identity key from its verified chain, and the consent log.
    pub nodes: Vec<String>,
    /// Keep reading after a cut-off.
    pub follow: bool,
    /// Stop after this many readings.
    pub count: Option<u64>,
    /// Stop after this long.
    pub timeout: Option<Duration>,
    /// How long a frame under an unknown key waits for its key message.
    pub grace: Duration,
}

/// What the caller prints.
#[derive(Debug)]
pub enum ReadEvent {
    Reading {
        seq: u64,
        key_id: u32,
        reading: Reading,
    },
    /// One plain sentence for stderr.
    Notice(String),
}

/// How reading ended.
#[derive(Debug, Default)]
pub struct ReadSummary {
    pub readings: u64,
    pub last_seq: Option<u64>,
    pub current_key_id: Option<u32>,
    pub cut_off: Option<CutOff>,
    pub unreadable: u64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn mqtt_options(broker: &Broker) -> MqttOptions {
    let mut id = [0u8; 6];
    rand::thread_rng().fill_bytes(&mut id);
    let mut options = MqttOptions::new(
        format!("latchkey-provider-{}", hex::encode(id)),
        broker.host.clone(),
        broker.port,
    );
    options.set_keep_alive(Duration::from_secs(30));
    options.set_clean_session(true);
    // A key message carries a KEM ciphertext (1,071 bytes) and up to 64 keys.
    options.set_max_packet_size(64 * 1024, 64 * 1024);
    options
}

/// Polls the MQTT event loop on its own task, so the reader's `select!` waits on a channel
/// (cancel-safe) and never drops a half-read packet when a timer fires. A connection error is
/// passed on as text and retried after a pause (rumqttc reconnects on the next poll). The task
/// ends when the receiver is dropped.
fn spawn_events(
    mut events: rumqttc::EventLoop,
) -> tokio::sync::mpsc::Receiver<std::result::Result<Event, String>> {
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(async move {
        loop {
            let ev = events.poll().await;
            let failed = ev.is_err();
            if tx.send(ev.map_err(|e| e.to_string())).await.is_err() {
                break;
            }
            if failed {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    });
    rx
}

/// Reads until the count, the timeout, `stop`, or (without `follow`) a cut-off.
pub async fn read(
    profile: &Profile,
    store: &dyn SecretStore,
    opts: ReadOptions,
    stop: impl Future<Output = ()>,
    sink: &mut (dyn FnMut(ReadEvent) + Send),
) -> Result<ReadSummary> {
    let broker = Broker::parse(&opts.broker)?;
    latchkey_proto::stream::validate_stream_name(&opts.stream).map_err(|e| Error::BadInput {
        what: "stream name",
        why: e.to_string(),
    })?;
    let secrets = profile.secrets(store)?;
    let account = profile.identity().account.clone();
    let mut keystore = KeyStore::open(profile.dir(), &account, &secrets.store_key)?;
    let client = if opts.nodes.is_empty() {
        None
    } else {
        Some(registry::client(&opts.nodes)?)
    };
    let (identity, chain) = match &client {
        Some(c) => {
            let (identity, chain) =
                registry::learn_device(profile, c, &opts.device, now_ms()).await?;
            (identity, Some(chain))
        }
        None => (registry::known_device(profile, &opts.device)?, None),
    };
    let me = secrets.signing.public_key();
    let recipient = me.to_bytes();
    let device_text = opts.device.to_string();
    let mut reader = StreamReader::new(
        opts.device,
        &opts.stream,
        recipient,
        identity,
        keystore.keys(&opts.device.0, &opts.stream).to_vec(),
        opts.grace.as_millis() as u64,
    );
    let live = live_topic(&opts.device, &opts.stream);
    let keys = key_topic(&opts.device, &opts.stream, &recipient);

    let (mqtt, events) = AsyncClient::new(mqtt_options(&broker), 64);
    let mut events = spawn_events(events);
    let started = Instant::now();
    let deadline = opts.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tokio::pin!(stop);
    let mut summary = ReadSummary::default();
    let mut connected = false;
    let mut said: HashSet<String> = HashSet::new();
    let mut lost_said = false;

    'outer: loop {
        let outputs = tokio::select! {
            _ = &mut stop => break,
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break,
            _ = tick.tick() => reader.tick(now_ms()),
            ev = events.recv() => match ev {
                None => break,
                Some(ev) => match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    connected = true;
                    lost_said = false;
                    // A clean session forgets subscriptions: subscribe on every (re)connect.
                    // Keys first, so a retained key message comes before live frames.
                    let _ = mqtt.try_subscribe(keys.clone(), QoS::AtLeastOnce);
                    let _ = mqtt.try_subscribe(live.clone(), QoS::AtLeastOnce);
                    Vec::new()
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if p.topic == keys {
                        reader.key_message(&p.payload, &secrets.kem)
                    } else if p.topic == live {
                        reader.frame(&p.payload, now_ms())
                    } else {
                        Vec::new()
                    }
                }
                Ok(_) => Vec::new(),
                Err(e) => {
                    if !connected && started.elapsed() > Duration::from_secs(10) {
                        return Err(Error::Broker { url: opts.broker.clone(), why: e });
                    }
                    if connected && !lost_said {
                        lost_said = true;
                        sink(ReadEvent::Notice(format!("lost the broker ({e}); reconnecting")));
                    }
                    Vec::new()
                }
            }},
        };
        for out in outputs {
            match out {
                Output::Reading {
                    seq,
                    key_id,
                    reading,
                } => {
                    summary.readings += 1;
                    summary.last_seq = Some(seq);
                    sink(ReadEvent::Reading {
                        seq,
                        key_id,
                        reading,
                    });
                    if opts.count.is_some_and(|n| summary.readings >= n) {
                        break 'outer;
                    }
                }
                Output::NewKeys { keys: new, consent } => {
                    let ids: Vec<u32> = new.iter().map(|k| k.key_id).collect();
                    // Durable before the first reading under them is shown.
                    keystore.add(&opts.device.0, &opts.stream, new);
                    keystore.save(&secrets.store_key, &mut rand::rngs::OsRng)?;
                    let held: Vec<u32> = keystore
                        .keys(&opts.device.0, &opts.stream)
                        .iter()
                        .map(|k| k.key_id)
                        .collect();
                    profile.update_stream(&device_text, &opts.stream, |s| {
                        s.key_ids = held;
                        if consent.is_some() {
                            s.consent = consent.clone();
                        }
                        s.last_key_ms = Some(now_ms());
                    })?;
                    sink(ReadEvent::Notice(format!(
                        "received stream key id{} {} for {} {}",
                        if ids.len() > 1 { "s" } else { "" },
                        ids.iter()
                            .map(u32::to_string)
                            .collect::<Vec<_>>()
                            .join(", "),
                        device_text,
                        opts.stream
                    )));
                }
                Output::KeyCleared => {
                    tracing::info!("the device cleared this provider's key topic");
                }
                Output::CutOff {
                    from_seq,
                    key_id,
                    cleared,
                    ever_held,
                } => {
                    let mut why = if ever_held {
                        format!(
                            "consent revoked or expired: readings of {device_text} stream {} from \
                             seq {from_seq} on are sealed under key id {key_id}, which this \
                             provider was not given; they cannot be read",
                            opts.stream
                        )
                    } else {
                        format!(
                            "no consent: this provider holds no key for {device_text} stream {}, \
                             so readings from seq {from_seq} on (key id {key_id}) cannot be read; \
                             the owner has not approved its request yet, or revoked it, or it \
                             expired",
                            opts.stream
                        )
                    };
                    if cleared {
                        why.push_str(" (the device has withdrawn this provider's key message)");
                    }
                    match (&client, &chain) {
                        (Some(c), Some(chain)) => match registry::consent_log(c, chain).await {
                            Ok(log) => {
                                why.push_str("; ");
                                why.push_str(&registry::explain(&log, &me, &opts.stream, now_ms()));
                            }
                            Err(e) => why
                                .push_str(&format!("; the consent log could not be fetched: {e}")),
                        },
                        _ => why.push_str(
                            "; pass --node URL to see when and by whom in the verified consent log",
                        ),
                    }
                    let cut = CutOff {
                        from_seq,
                        key_id,
                        noticed_ms: now_ms(),
                        why: why.clone(),
                    };
                    profile.update_stream(&device_text, &opts.stream, |s| {
                        s.cut_off = Some(cut.clone())
                    })?;
                    summary.cut_off = Some(cut);
                    sink(ReadEvent::Notice(why));
                    if !opts.follow {
                        break 'outer;
                    }
                }
                Output::Resumed { key_id, from_seq } => {
                    profile.update_stream(&device_text, &opts.stream, |s| s.cut_off = None)?;
                    summary.cut_off = None;
                    sink(ReadEvent::Notice(format!(
                        "readable again: key id {key_id} arrived (readings from seq {from_seq} on)"
                    )));
                }
                Output::Refused(why) => {
                    if said.insert(why.clone()) {
                        sink(ReadEvent::Notice(why));
                    }
                }
            }
        }
    }
    let _ = mqtt.try_disconnect();
    summary.unreadable = reader.unreadable();
    summary.current_key_id = reader.current_key_id();
    let (readings, last_seq) = (summary.readings, reader.last_seq());
    profile.update_stream(&device_text, &opts.stream, |s| {
        s.readings += readings;
        if last_seq.is_some() {
            s.last_seq = last_seq;
        }
    })?;
    Ok(summary)
}

/// For `status --broker`: fetches the retained key message of every stream this profile knows
/// (requested or read before) and keeps any new keys. Returns one line per stream.
pub async fn refresh_keys(
    profile: &Profile,
    secrets: &Secrets,
    broker_url: &str,
    wait: Duration,
) -> Result<Vec<String>> {
    let broker = Broker::parse(broker_url)?;
    let account = profile.identity().account.clone();
    let mut keystore = KeyStore::open(profile.dir(), &account, &secrets.store_key)?;
    let recipient = secrets.signing.public_key().to_bytes();
    let mut targets: Vec<(DeviceId, String)> = Vec::new();
    for (device, stream) in profile
        .requests()?
        .into_iter()
        .map(|r| (r.device, r.stream))
        .chain(profile.streams()?.into_iter().map(|s| (s.device, s.stream)))
    {
        if let Ok(d) = DeviceId::parse(&device) {
            if !targets.contains(&(d, stream.clone())) {
                targets.push((d, stream));
            }
        }
    }
    let mut notes = Vec::new();
    let mut readers = Vec::new();
    for (device, stream) in targets {
        match registry::known_device(profile, &device) {
            Ok(identity) => {
                let reader = StreamReader::new(
                    device,
                    &stream,
                    recipient,
                    identity,
                    keystore.keys(&device.0, &stream).to_vec(),
                    0,
                );
                readers.push((
                    key_topic(&device, &stream, &recipient),
                    device,
                    stream,
                    reader,
                ));
            }
            Err(e) => notes.push(format!("{device} {stream}: {e}")),
        }
    }
    if readers.is_empty() {
        return Ok(notes);
    }
    let (mqtt, events) = AsyncClient::new(mqtt_options(&broker), 64);
    let mut events = spawn_events(events);
    let started = Instant::now();
    let mut connected_at = None;
    loop {
        if connected_at.is_some_and(|t: Instant| t.elapsed() >= wait) {
            break;
        }
        if connected_at.is_none() && started.elapsed() > Duration::from_secs(10) {
            return Err(Error::Broker {
                url: broker_url.to_owned(),
                why: "no connection within 10 s".into(),
            });
        }
        let ev = match tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
            Err(_) => continue,
            Ok(None) => break,
            Ok(Some(ev)) => ev,
        };
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                connected_at = Some(Instant::now());
                for (topic, ..) in &readers {
                    let _ = mqtt.try_subscribe(topic.clone(), QoS::AtLeastOnce);
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let Some((_, device, stream, reader)) =
                    readers.iter_mut().find(|(t, ..)| *t == p.topic)
                else {
                    continue;
                };
                for out in reader.key_message(&p.payload, &secrets.kem) {
                    match out {
                        Output::NewKeys { keys, consent } => {
                            keystore.add(&device.0, stream, keys);
                            keystore.save(&secrets.store_key, &mut rand::rngs::OsRng)?;
                            let held: Vec<u32> = keystore
                                .keys(&device.0, stream)
                                .iter()
                                .map(|k| k.key_id)
                                .collect();
                            profile.update_stream(&device.to_string(), stream, |s| {
                                s.key_ids = held;
                                if consent.is_some() {
                                    s.consent = consent.clone();
                                }
                                s.last_key_ms = Some(now_ms());
                            })?;
                        }
                        Output::Refused(why) => notes.push(format!("{device} {stream}: {why}")),
                        _ => {}
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                if started.elapsed() > Duration::from_secs(10) {
                    return Err(Error::Broker {
                        url: broker_url.to_owned(),
                        why: e,
                    });
                }
            }
        }
    }
    let _ = mqtt.try_disconnect();
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_addresses_parse() {
        let b = Broker::parse("mqtt://127.0.0.1:18830").unwrap();
        assert_eq!((b.host.as_str(), b.port), ("127.0.0.1", 18830));
        assert_eq!(Broker::parse("mqtt://hub.local").unwrap().port, 1883);
        assert_eq!(Broker::parse("hub.local:1884").unwrap().port, 1884);
        assert_eq!(Broker::parse("mqtt://[::1]:1884").unwrap().host, "::1");
    }

    #[test]
    fn fail_broker_addresses_that_are_not_plain_mqtt() {
        for bad in [
            "mqtts://hub:8883",
            "http://hub",
            "mqtt://",
            "mqtt://hub:port",
            "mqtt://u@hub",
        ] {
            let e = Broker::parse(bad).unwrap_err().to_string();
            assert!(e.contains("mqtt://HOST:PORT"), "{bad}: {e}");
        }
    }
}
