//! The owner's own view of a device's meter stream (docs/PROTOCOL.md §14): readings are
//! sealed on the home broker (`latchkey/<device>/<stream>/live`) under a stream key the owner
//! holds a copy of, sent by the device as a retained key message on
//! `latchkey/<device>/<stream>/keys/<owner key hex>`, sealed to this profile's event KEM key
//! (the one [`crate::events::subscribe`] gives each device; its secret half stays in the OS
//! keychain) and signed by the device identity key of the verified chain.
//!
//! [`MeterWatch::start`] checks what it can at once (an owned device, a valid stream name, a
//! broker address, the keychain's key), then a background task subscribes, opens key messages,
//! decrypts readings and keeps a [`MeterSnapshot`]; it reconnects by itself when the broker
//! goes away. [`MeterWatch::snapshot`] only copies the snapshot under a lock, so a UI may call
//! it on every frame. The broker is not trusted: a key message that is not the device's, for
//! another stream or recipient, or older than the one held is ignored; a reading that does not
//! open, or repeats or goes back in sequence, is not counted.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use latchkey_proto::kem::KemSecretKey;
use latchkey_proto::keys::{DeviceId, PublicKey};
use latchkey_proto::stream::{open_key_grant, open_reading, peek_reading, Reading, StreamKey};
use rand_core::{OsRng, RngCore};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::profile::{Clock, Profile};

/// The series [`MeterSnapshot::series`] keeps.
const SERIES_MS: u64 = 10 * 60 * 1000;
/// Largest sealed reading taken from the broker (they are a few hundred bytes).
const MAX_FRAME: usize = 4096;
/// Largest key message taken (64 keys at most, one KEM ciphertext).
const MAX_KEY_MESSAGE: usize = 64 * 1024;
/// Longest wait between two reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What the owner's meter shows now.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MeterSnapshot {
    /// Net power now in kW: delivered minus returned (negative while returning to the grid).
    pub power_kw: Option<f64>,
    /// Energy delivered today (the profile's local day) in kWh: the meter's delivered total
    /// now minus its first reading of today that this profile saw (kept in the profile
    /// store, so a watch started again later in the day still counts from that reading).
    pub energy_today_kwh: Option<f64>,
    /// The last 10 minutes: (reading time in ms, net kW), oldest first.
    pub series: Vec<(u64, f64)>,
    /// The stream key the readings are sealed under now.
    pub key_id: Option<u32>,
    pub last_seq: Option<u64>,
    /// Readings opened since the watch started.
    pub readings: u64,
    /// When the last reading was taken (meter time, else arrival), ms.
    pub last_reading_ms: Option<u64>,
    /// What stops readings from showing, in words (`None` while they flow).
    pub problem: Option<String>,
}

/// A running watch; dropping it stops the background task.
#[derive(Debug)]
pub struct MeterWatch {
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Default)]
struct State {
    snap: MeterSnapshot,
    series: VecDeque<(u64, f64)>,
}

/// `mqtt://HOST:PORT` (or `HOST:PORT`; port 1883 when left out) as host and port.
pub fn parse_broker(url: &str) -> Result<(String, u16)> {
    let bad = |why: &str| Error::BadBroker {
        url: url.to_owned(),
        why: why.to_owned(),
    };
    let t = url.trim();
    let rest = match t.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("mqtt") => rest,
        Some(_) => return Err(bad("only plain mqtt:// on the home network is supported")),
        None => t,
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || rest.contains('@') {
        return Err(bad("expected a host and a port, nothing else"));
    }
    // `[v6]:port` or `host:port`; a bare IPv6 address needs its brackets.
    let (host, port) = match rest.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((h, "")) => (h, None),
            Some((h, p)) => (
                h,
                Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| bad("expected [ADDRESS]:PORT"))?,
                ),
            ),
            None => return Err(bad("expected [ADDRESS]:PORT")),
        },
        None => match rest.split_once(':') {
            Some((_, p)) if p.contains(':') => {
                return Err(bad("put an IPv6 address in brackets: [ADDRESS]:PORT"))
            }
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        },
    };
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| bad("the port is not a number"))?,
        None => 1883,
    };
    if host.is_empty() || port == 0 {
        return Err(bad("expected a host and a port, nothing else"));
    }
    Ok((host.to_owned(), port))
}

impl MeterWatch {
    /// Starts watching `stream` of `device` (owned by this profile) on `broker`.
    pub async fn start(
        profile: &Profile,
        device: DeviceId,
        stream: &str,
        broker: &str,
    ) -> Result<MeterWatch> {
        latchkey_proto::stream::validate_stream_name(stream)
            .map_err(|_| Error::BadStream(stream.to_owned()))?;
        let (host, port) = parse_broker(broker)?;
        let text = device.to_string();
        let record = profile
            .store
            .devices_where(|id, _| id == text)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::UnknownDevice(text.clone()))?;
        let me = profile.identity()?.public_key();
        if !record.chain.state().is_owner(&me) {
            return Err(Error::NotOwner { device: text });
        }
        let kem = crate::events::event_key(profile)?;
        let day_setting = format!("meter_day:{device}:{stream}");
        let day = profile
            .store
            .setting(&day_setting)?
            .and_then(|v| parse_day(&v));
        let watcher = Watcher {
            device,
            stream: stream.to_owned(),
            me: me.to_bytes(),
            identity: record.chain.state().identity,
            kem,
            keys: BTreeMap::new(),
            grant_issued_ms: None,
            day,
            day_setting,
            dir: profile.dir().to_owned(),
            store: None,
            tz: jiff::tz::TimeZone::system(),
            clock: profile.clock.clone(),
        };
        let state = Arc::new(Mutex::new(State {
            snap: MeterSnapshot {
                problem: Some(format!("connecting to the broker at {host}:{port}…")),
                ..MeterSnapshot::default()
            },
            series: VecDeque::new(),
        }));
        let task = tokio::spawn(run(watcher, host, port, state.clone()));
        Ok(MeterWatch { state, task })
    }

    /// What the meter shows now (a copy; cheap).
    pub fn snapshot(&self) -> MeterSnapshot {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        MeterSnapshot {
            series: state.series.iter().copied().collect(),
            ..state.snap.clone()
        }
    }

    /// Stops the watch (as dropping it does).
    pub fn stop(self) {}
}

impl Drop for MeterWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the background task holds: never shared, so no lock is held while decrypting.
struct Watcher {
    device: DeviceId,
    stream: String,
    me: [u8; 32],
    identity: PublicKey,
    kem: KemSecretKey,
    keys: BTreeMap<u32, StreamKey>,
    grant_issued_ms: Option<u64>,
    /// The local day and the delivered total (Wh) at its first reading seen.
    day: Option<(jiff::civil::Date, u64)>,
    /// Where that baseline is kept in the profile store, and the store (the task's own
    /// connection, opened the first time a day starts).
    day_setting: String,
    dir: std::path::PathBuf,
    store: Option<crate::store::Store>,
    tz: jiff::tz::TimeZone,
    clock: Arc<dyn Clock>,
}

impl Watcher {
    fn live_topic(&self) -> String {
        latchkey_proto::stream::live_topic(&self.device, &self.stream)
    }
    fn keys_topic(&self) -> String {
        latchkey_proto::stream::key_topic(&self.device, &self.stream, &self.me)
    }

    /// Takes a key message in; `Err` says in words why it was ignored.
    fn take_keys(&mut self, payload: &[u8]) -> std::result::Result<(), String> {
        if payload.is_empty() {
            self.keys.clear();
            self.grant_issued_ms = None;
            return Err("the device withdrew this profile's copy of the stream key".into());
        }
        if payload.len() > MAX_KEY_MESSAGE {
            return Err("a key message over the size limit was ignored".into());
        }
        let grant = open_key_grant(payload, &self.kem, &self.identity)
            .map_err(|e| format!("a key message did not open or verify ({e}); ignored"))?;
        if grant.device != self.device || grant.stream != self.stream || grant.recipient != self.me
        {
            return Err("a key message for another device, stream or recipient was ignored".into());
        }
        if self.grant_issued_ms.is_some_and(|t| grant.issued_ms < t) {
            return Err("an older key message was replayed on the broker; ignored".into());
        }
        self.grant_issued_ms = Some(grant.issued_ms);
        self.keys.clear();
        for entry in grant.keys {
            self.keys.insert(entry.key_id, entry.key);
        }
        Ok(())
    }

    /// Opens one sealed reading.
    fn open(&self, frame: &[u8]) -> std::result::Result<(u32, u64, Reading), String> {
        if frame.len() > MAX_FRAME {
            return Err("a reading over the size limit was ignored".into());
        }
        let header = peek_reading(frame).map_err(|e| format!("a malformed reading ({e})"))?;
        if header.device != self.device || header.stream != self.stream {
            return Err("a reading for another device or stream was ignored".into());
        }
        let key = self.keys.get(&header.key_id).ok_or_else(|| {
            if self.keys.is_empty() {
                "no stream key for this profile yet: the device sends its owners a copy with \
                 its events, which are fetched while it is reachable"
                    .to_owned()
            } else {
                format!(
                    "readings are sealed under key {}, which the device has not sent this profile",
                    header.key_id
                )
            }
        })?;
        let (header, reading) = open_reading(frame, key)
            .map_err(|e| format!("a reading did not open under its key ({e}); ignored"))?;
        Ok((header.key_id, header.seq, reading))
    }

    /// Updates the state with one opened reading.
    fn record(&mut self, state: &mut State, key_id: u32, seq: u64, r: &Reading) {
        if state.snap.last_seq.is_some_and(|last| seq <= last) {
            return;
        }
        let t = r.meter_time_ms.unwrap_or_else(|| self.clock.now_ms());
        let kw = |w: Option<u32>| w.map(|w| f64::from(w) / 1000.0);
        let power = match (kw(r.power_delivered_w), kw(r.power_returned_w)) {
            (Some(d), Some(ret)) => Some(d - ret),
            (Some(d), None) => Some(d),
            (None, Some(ret)) => Some(-ret),
            (None, None) => None,
        };
        if !r.energy_delivered_wh.is_empty() {
            let total: u64 = r.energy_delivered_wh.iter().sum();
            let today = jiff::Timestamp::from_millisecond(t as i64)
                .map(|ts| ts.to_zoned(self.tz.clone()).date())
                .ok();
            if let Some(today) = today {
                // The first reading of a new day is its baseline.
                let base = match self.day {
                    Some((day, base)) if day == today && base <= total => base,
                    _ => {
                        self.keep_day(today, total);
                        total
                    }
                };
                self.day = Some((today, base));
                state.snap.energy_today_kwh = Some((total - base) as f64 / 1000.0);
            }
        }
        if let Some(p) = power {
            state.series.push_back((t, p));
        }
        while state
            .series
            .front()
            .is_some_and(|(first, _)| t.saturating_sub(*first) > SERIES_MS)
        {
            state.series.pop_front();
        }
        state.snap.power_kw = power.or(state.snap.power_kw);
        state.snap.key_id = Some(key_id);
        state.snap.last_seq = Some(seq);
        state.snap.readings += 1;
        state.snap.last_reading_ms = Some(t);
        state.snap.problem = None;
    }
}

impl Watcher {
    /// Keeps a new day's baseline in the profile store (once a day; a failure only costs the
    /// baseline after a restart of the watch).
    fn keep_day(&mut self, day: jiff::civil::Date, total_wh: u64) {
        if self.store.is_none() {
            match crate::store::Store::open(&self.dir, Default::default()) {
                Ok(s) => self.store = Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot keep today's meter baseline");
                    return;
                }
            }
        }
        if let Some(store) = &self.store {
            if let Err(e) = store.set_setting(&self.day_setting, &format!("{day} {total_wh}")) {
                tracing::warn!(error = %e, "cannot keep today's meter baseline");
            }
        }
    }
}

/// `YYYY-MM-DD WH`, as [`Watcher::keep_day`] writes it.
fn parse_day(text: &str) -> Option<(jiff::civil::Date, u64)> {
    let (day, wh) = text.split_once(' ')?;
    Some((day.parse().ok()?, wh.parse().ok()?))
}

fn set_problem(state: &Mutex<State>, problem: String) {
    state.lock().unwrap_or_else(|p| p.into_inner()).snap.problem = Some(problem);
}

async fn run(mut w: Watcher, host: String, port: u16, state: Arc<Mutex<State>>) {
    let mut id = [0u8; 6];
    OsRng.fill_bytes(&mut id);
    let mut options = MqttOptions::new(
        format!("latchkey-owner-{}", hex::encode(id)),
        host.clone(),
        port,
    );
    options.set_keep_alive(Duration::from_secs(15));
    options.set_max_packet_size(MAX_KEY_MESSAGE + 1024, 4096);
    let (client, mut events) = AsyncClient::new(options, 16);
    let (live, keys) = (w.live_topic(), w.keys_topic());
    let mut backoff = Duration::from_millis(250);
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                if ack.code != rumqttc::ConnectReturnCode::Success {
                    set_problem(
                        &state,
                        format!(
                            "the broker at {host}:{port} refused the connection ({:?})",
                            ack.code
                        ),
                    );
                    continue;
                }
                backoff = Duration::from_millis(250);
                // A clean session forgets subscriptions: made again on every connection. The
                // key topic's retained message arrives first after subscribing.
                for topic in [&keys, &live] {
                    if let Err(e) = client.try_subscribe(topic.as_str(), QoS::AtLeastOnce) {
                        set_problem(&state, format!("could not subscribe: {e}"));
                    }
                }
                let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                s.snap.problem = if s.snap.readings == 0 {
                    Some("connected; waiting for readings…".into())
                } else {
                    None
                };
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if p.topic == keys {
                    let r = w.take_keys(&p.payload);
                    if let Err(why) = r {
                        set_problem(&state, why);
                    }
                } else if p.topic == live {
                    match w.open(&p.payload) {
                        Ok((key_id, seq, reading)) => {
                            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                            w.record(&mut s, key_id, seq, &reading);
                        }
                        Err(why) => set_problem(&state, why),
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                set_problem(
                    &state,
                    format!("the broker at {host}:{port} is unreachable ({e}); reconnecting"),
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_addresses_are_parsed_or_refused_in_words() {
        assert_eq!(
            parse_broker("mqtt://127.0.0.1:1884").unwrap(),
            ("127.0.0.1".into(), 1884)
        );
        assert_eq!(
            parse_broker("broker.lan").unwrap(),
            ("broker.lan".into(), 1883)
        );
        assert_eq!(parse_broker("MQTT://h:1/").unwrap(), ("h".into(), 1));
        for bad in [
            "mqtts://h:8883",
            "http://h:1",
            "mqtt://h:x",
            "mqtt://",
            "mqtt://u@h:1",
            "mqtt://h:1/t",
        ] {
            let e = parse_broker(bad).unwrap_err();
            assert_eq!(e.code(), "bad_broker", "{bad}");
            assert!(e.to_string().contains("mqtt://HOST:PORT"), "{e}");
        }
    }
}
