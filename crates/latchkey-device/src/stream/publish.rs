//! The stream publisher: one MQTT connection to the home broker (rumqttc, reconnecting with
//! backoff) and, per configured stream, a task that reads its source, counts and drops bad
//! telegrams, seals each reading under the current stream key and publishes it (QoS 1) on
//! `latchkey/<device>/<stream>/live`, after first publishing any key messages the stream owes
//! ([`crate::stream::keys`]). Optionally the free tier on `…/avg1m`.
//!
//! Key messages are republished on start, after every rotation or new consent, when an owner
//! subscribes, and whenever the broker connection comes back (a broker without persistence
//! forgets retained messages when it restarts).

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::agent::Agent;
use crate::config::{parse_broker, Config, StreamConfig};
use crate::stream::aggregate::Aggregator;
use crate::stream::keys::StreamKeys;
use latchkey_proto::stream::{avg1m_topic, live_topic};
use crate::stream::source::{Source, SourceItem, SourceSpec};

/// Requests the MQTT client queues before `publish` waits (live readings are dropped and
/// counted instead of waiting when it is full).
const MQTT_QUEUE: usize = 256;
/// The longest wait between two reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How often the device's clock is compared with consents' `until`.
pub const LAPSE_CHECK: Duration = Duration::from_millis(250);
/// How often counters are saved for `latchkeyd status`.
const SAVE_COUNTERS: Duration = Duration::from_secs(2);
/// Key messages can carry 64 keys and a hybrid KEM ciphertext: well under this.
const MAX_PACKET: usize = 64 * 1024;

/// Connects to the broker: the client and its event loop (polled by [`drive`]).
pub fn connect(broker: &str, device: &latchkey_proto::keys::DeviceId) -> Result<(AsyncClient, EventLoop), String> {
    let (host, port) = parse_broker(broker)?;
    let mut nonce = [0u8; 4];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
    let id = format!("latchkeyd-{}-{}", &hex::encode(device.0)[..12], hex::encode(nonce));
    let mut options = MqttOptions::new(id, host, port);
    options.set_keep_alive(Duration::from_secs(15));
    options.set_max_packet_size(MAX_PACKET, MAX_PACKET);
    Ok(AsyncClient::new(options, MQTT_QUEUE))
}

/// Polls the event loop until shutdown: reconnects with backoff on errors, and marks every
/// stream's key messages for republishing at each new connection.
pub async fn drive(
    mut events: EventLoop,
    keys: Arc<StreamKeys>,
    connected: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let polled = tokio::select! {
            p = events.poll() => p,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        match polled {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                if ack.code == rumqttc::ConnectReturnCode::Success {
                    tracing::info!("connected to the MQTT broker");
                    backoff = Duration::from_millis(100);
                    let _ = connected.send(true);
                    keys.mark_all_dirty();
                } else {
                    tracing::warn!(code = ?ack.code, "the MQTT broker refused the connection");
                }
            }
            Ok(_) => {}
            Err(e) => {
                let _ = connected.send(false);
                tracing::warn!(error = %e, retry_ms = backoff.as_millis() as u64, "MQTT broker connection lost; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Starts the publisher: the broker connection, one task per stream, the lapse timer.
pub fn start(
    agent: Arc<Agent>,
    keys: Arc<StreamKeys>,
    config: &Config,
    shutdown: watch::Receiver<bool>,
) -> crate::Result<Vec<JoinHandle<()>>> {
    let Some(broker) = &config.broker else {
        return Ok(Vec::new());
    };
    let device = agent.device_id();
    let (client, events) = connect(broker, &device).map_err(crate::Error::Invalid)?;
    let (connected_tx, connected) = watch::channel(false);
    let mut tasks = vec![tokio::spawn(drive(
        events,
        keys.clone(),
        connected_tx,
        shutdown.clone(),
    ))];
    for (name, stream) in &config.streams {
        let spec = SourceSpec::parse(&stream.source).map_err(|e| crate::Error::Config {
            path: "latchkeyd.toml".into(),
            why: format!("stream {name}: {e}"),
        })?;
        let items = Source::spawn(spec);
        tasks.push(tokio::spawn(run_stream(
            agent.clone(),
            keys.clone(),
            client.clone(),
            connected.clone(),
            name.clone(),
            stream.clone(),
            items,
            shutdown.clone(),
        )));
    }
    tasks.push(tokio::spawn(lapse_timer(agent, keys, shutdown)));
    Ok(tasks)
}

/// Ends consents whose `until` the device's trusted clock passed (rotating their streams),
/// and saves the counters now and then.
async fn lapse_timer(agent: Arc<Agent>, keys: Arc<StreamKeys>, mut shutdown: watch::Receiver<bool>) {
    let mut last_save = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(LAPSE_CHECK) => {}
            _ = shutdown.wait_for(|s| *s) => {
                keys.save_counters();
                return;
            }
        }
        let Some(now) = agent.pipeline.wall_clock().effective() else {
            continue;
        };
        let k = keys.clone();
        let lapsed =
            tokio::task::spawn_blocking(move || k.lapse_due(now, &mut rand_core::OsRng)).await;
        match lapsed {
            Ok(Ok(streams)) if !streams.is_empty() => {
                tracing::info!(?streams, "a consent's period ended: stream keys rotated")
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "ending lapsed consents failed"),
            Err(e) => tracing::error!(error = %e, "ending lapsed consents panicked"),
        }
        if last_save.elapsed() >= SAVE_COUNTERS {
            last_save = tokio::time::Instant::now();
            let k = keys.clone();
            let _ = tokio::task::spawn_blocking(move || k.save_counters()).await;
        }
    }
}

/// Publishes the key messages `stream` owes, if any. `false` when they could not all be
/// queued (the stream stays dirty and nothing is sealed under an unannounced key).
pub async fn announce(agent: &Arc<Agent>, keys: &Arc<StreamKeys>, client: &AsyncClient, stream: &str) -> bool {
    let (k, p, name) = (keys.clone(), agent.pipeline.clone(), stream.to_owned());
    let built = tokio::task::spawn_blocking(move || -> crate::Result<_> {
        let Some(plan) = k.plan(&name)? else {
            return Ok(None);
        };
        let state = p.view().chain.state().clone();
        let owners = crate::events::subscriptions(p.store(), &state)?;
        let now = crate::clock::wall_ms();
        let messages = plan.build(&k.device(), &p.keys().identity, &owners, now, &mut rand_core::OsRng);
        if messages.is_err() {
            k.unpublished(&name);
        }
        Ok(Some((plan.key_id, messages?)))
    })
    .await;
    let (key_id, messages) = match built {
        Ok(Ok(Some(m))) => m,
        Ok(Ok(None)) => return true,
        Ok(Err(e)) => {
            tracing::error!(error = %e, %stream, "building key messages failed");
            keys.unpublished(stream);
            return false;
        }
        Err(e) => {
            tracing::error!(error = %e, %stream, "building key messages panicked");
            keys.unpublished(stream);
            return false;
        }
    };
    let n = messages.len();
    for m in messages {
        if let Err(e) = client
            .publish(m.topic, QoS::AtLeastOnce, true, m.payload)
            .await
        {
            tracing::warn!(error = %e, %stream, "queueing a key message failed; retried later");
            keys.unpublished(stream);
            return false;
        }
    }
    tracing::info!(%stream, key_id, messages = n, "key messages published");
    true
}

#[allow(clippy::too_many_arguments)]
async fn run_stream(
    agent: Arc<Agent>,
    keys: Arc<StreamKeys>,
    client: AsyncClient,
    mut connected: watch::Receiver<bool>,
    name: String,
    config: StreamConfig,
    mut items: mpsc::Receiver<SourceItem>,
    mut shutdown: watch::Receiver<bool>,
) {
    let live = live_topic(&keys.device(), &name);
    let avg = avg1m_topic(&keys.device(), &name);
    let mut aggregate = config
        .free_aggregate
        .then(|| Aggregator::new(&keys.device(), &name));
    let mut changes = keys.subscribe_changes();
    let mut source_open = true;
    // Wait for the first connection, so the first key messages are not queued behind a dead
    // socket for the whole backoff.
    let _ = tokio::time::timeout(Duration::from_secs(5), connected.wait_for(|c| *c)).await;
    announce(&agent, &keys, &client, &name).await;
    loop {
        let item = tokio::select! {
            item = items.recv(), if source_open => item,
            _ = changes.changed() => {
                announce(&agent, &keys, &client, &name).await;
                continue;
            }
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let reading = match item {
            None => {
                tracing::info!(stream = %name, "the stream's source ended; the stream idles");
                source_open = false;
                continue;
            }
            Some(SourceItem::Bad { line, reason }) => {
                tracing::warn!(stream = %name, line, %reason, "bad telegram dropped");
                keys.count_bad(&name, format!("line {line}: {reason}"));
                continue;
            }
            Some(SourceItem::Ok(reading)) => reading,
        };
        let mut sealed = None;
        for _ in 0..3 {
            match keys.seal(&name, &reading, &mut rand_core::OsRng) {
                Ok(Some(s)) => {
                    sealed = Some(s);
                    break;
                }
                Ok(None) => {
                    announce(&agent, &keys, &client, &name).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, stream = %name, "sealing a reading failed");
                    break;
                }
            }
        }
        let Some(sealed) = sealed else {
            keys.count_dropped(&name);
            continue;
        };
        match client.try_publish(&live, QoS::AtLeastOnce, false, sealed.frame) {
            Ok(()) => keys.count_published(&name),
            Err(e) => {
                tracing::debug!(error = %e, stream = %name, "broker queue full; reading dropped");
                keys.count_dropped(&name);
            }
        }
        if let Some(agg) = &mut aggregate {
            if let Some(minute) = agg.push(&reading, crate::clock::wall_ms()) {
                match serde_json::to_vec(&minute) {
                    Ok(json) => {
                        if let Err(e) = client.try_publish(&avg, QoS::AtLeastOnce, true, json) {
                            tracing::debug!(error = %e, stream = %name, "free-tier message dropped");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "free-tier JSON failed"),
                }
            }
        }
    }
}
