//! Demo mode (`--demo`): three registry nodes and a simulated front door run inside the app,
//! on loopback ports, in one temporary directory that also holds the demo profile. The door is
//! the real device agent with an exec actuator: a small script that records each unlock and
//! prints what the door did, which travels back in the device's signed answer. The same agent
//! reads a simulated smart meter (`demo_meter.rs`) and publishes its sealed readings on a
//! Mosquitto broker started for the demo; a sample provider ("Watt Insights") offers a consent
//! request link for the Data sharing screen.
//!
//! Everything is torn down when the app exits: the agent, the nodes and the broker stop, the
//! demo profile's recovery phrase is deleted from the keychain, and the directory is removed.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use data_encoding::BASE64;
use latchkey_device::agent::RunningAgent;
use latchkey_device::config::{parse_stream_option, Driver};
use latchkey_device::lifecycle::{InitOptions, StreamOptions};
use latchkey_node::{NodeConfig, RunningNode};
use latchkey_owner::{Profile, SystemClock};

use crate::demo_meter::{Broker, MeterPort};
use crate::error::CommandError;
use crate::state::AppState;
use crate::views::{DemoView, DoorView};

const NODES: usize = 3;
/// A small booking calendar (three stays around today, one to come and a blocked week), for
/// the Stays screen; written as if today were `SAMPLE_TODAY` and moved to the real today.
const SAMPLE_CALENDAR: &str = include_str!("../demo/stays.ics");
const SAMPLE_TODAY: &str = "20261201";
const DEVICE_NAME: &str = "Front door";
/// How long the simulated latch stays open after an unlock.
const OPEN_FOR_MS: u64 = 5_000;
/// The smart meter's stream on the demo door (a DSMR meter's P1 port).
pub const METER_STREAM: &str = "p1";
const DAY_MS: u64 = 86_400_000;

#[derive(Debug)]
pub struct Demo {
    dir: tempfile::TempDir,
    nodes: Vec<RunningNode>,
    agent: Option<RunningAgent>,
    short_id: String,
    /// Read at start: the door deletes its claim QR once claimed (its setup secret is spent).
    claim_png: Vec<u8>,
    door_log: PathBuf,
    sample_calendar: PathBuf,
    /// The home broker and the meter's P1 port; `None` (with `meter_problem`) without Mosquitto.
    meter: Option<(Broker, MeterPort)>,
    meter_problem: Option<String>,
    sample_consent_link: Option<String>,
    /// Set once the demo profile's phrase is out of the keychain (see `forget_demo_phrase`).
    phrase_forgotten: bool,
}

impl Demo {
    /// Starts the nodes and the door, and returns once both serve requests.
    pub async fn start() -> Result<Demo, String> {
        let dir = tempfile::Builder::new()
            .prefix("latchkey-demo-")
            .tempdir()
            .map_err(|e| format!("cannot create the demo's temporary directory: {e}"))?;
        let mut nodes = Vec::new();
        for i in 0..NODES {
            let config = NodeConfig::new(
                ([127, 0, 0, 1], 0).into(),
                dir.path().join(format!("node{i}.db")),
            );
            nodes.push(
                latchkey_node::start(config)
                    .await
                    .map_err(|e| format!("demo node {i} did not start: {e}"))?,
            );
        }
        let urls: Vec<String> = nodes.iter().map(RunningNode::url).collect();

        let door_log = dir.path().join("door.log");
        let script = dir.path().join("front-door");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n# The simulated latch: record the unlock, say what happened.\n\
                 echo \"$LATCHKEY_ACTION\" >> '{}'\n\
                 echo 'Door unlocked. It locks again in {} s.'\n",
                door_log.display(),
                OPEN_FOR_MS / 1000
            ),
        )
        .and_then(|()| std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)))
        .map_err(|e| format!("cannot write the demo door's script: {e}"))?;

        // The smart meter is a bonus: without Mosquitto the door still works, and the panel
        // says what is missing.
        let (meter, meter_problem) = match start_meter(dir.path()).await {
            Ok(meter) => (Some(meter), None),
            Err(why) => {
                tracing::warn!(%why, "the demo runs without its smart meter");
                (None, Some(why))
            }
        };

        let device_dir = dir.path().join("device");
        let listen = free_loopback_port()
            .map_err(|e| format!("no free loopback port for the demo door: {e}"))?;
        // The meter's P1 port is the door's one data stream, published on the demo's broker.
        let streams = match &meter {
            Some((broker, port)) => StreamOptions {
                streams: vec![parse_stream_option(&format!(
                    "{METER_STREAM}=dsmr:{}",
                    port.source()
                ))
                .map_err(|e| format!("the demo meter's stream is not valid: {e}"))?],
                broker: Some(broker.url()),
                free_aggregate: Vec::new(),
            },
            None => StreamOptions::default(),
        };
        let report = latchkey_device::lifecycle::init_with_streams(
            &InitOptions {
                dir: device_dir.clone(),
                name: DEVICE_NAME.into(),
                listen: ([127, 0, 0, 1], listen).into(),
                nodes: urls,
                actions: vec![("unlock".into(), Driver::Exec { program: script })],
                advertise: Vec::new(),
                mdns: false,
                // Learns its new owner within a second of the claim.
                refresh_secs: Some(1),
                max_view_age_secs: None,
                max_guest_staleness_secs: None,
                max_owner_staleness_secs: None,
                trust_clock: true,
            },
            &streams,
        )
        .map_err(|e| format!("the demo door could not be set up: {e}"))?;
        let sample_calendar = dir.path().join("sample-stays.ics");
        let today = std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| (d.as_secs() / 86_400) as i64)
            .unwrap_or_default();
        std::fs::write(&sample_calendar, dated_sample(SAMPLE_CALENDAR, today))
            .map_err(|e| format!("cannot write the demo's sample calendar: {e}"))?;
        let claim_png = std::fs::read(&report.png)
            .map_err(|e| format!("cannot read the demo door's claim QR: {e}"))?;
        let agent = latchkey_device::agent::start(&device_dir)
            .await
            .map_err(|e| format!("the demo door did not start: {e}"))?;
        let sample_consent_link = match &meter {
            Some(_) => Some(sample_consent_link(report.device)?),
            None => None,
        };
        Ok(Demo {
            meter,
            meter_problem,
            sample_consent_link,
            short_id: report.device.short(),
            claim_png,
            door_log,
            sample_calendar,
            nodes,
            agent: Some(agent),
            dir,
            phrase_forgotten: false,
        })
    }

    /// Where the demo profile lives (inside the demo's directory, gone on exit).
    pub fn profile_dir(&self) -> PathBuf {
        self.dir.path().join("profile")
    }

    /// The demo's home broker (`mqtt://127.0.0.1:PORT`), when its meter runs.
    pub fn broker_url(&self) -> Option<String> {
        self.meter.as_ref().map(|(broker, _)| broker.url())
    }

    pub fn node_urls(&self) -> Vec<String> {
        self.nodes.iter().map(RunningNode::url).collect()
    }

    fn view(&self) -> Result<DemoView, CommandError> {
        Ok(DemoView {
            nodes: self.node_urls(),
            device_name: DEVICE_NAME.into(),
            device_short_id: self.short_id.clone(),
            claim_qr: format!("data:image/png;base64,{}", BASE64.encode(&self.claim_png)),
            door: door_view(&self.door_log),
            sample_calendar: self.sample_calendar.display().to_string(),
            sample_consent_link: self.sample_consent_link.clone(),
            meter_problem: self.meter_problem.clone(),
        })
    }

    /// Stops the door and the nodes, then removes the directory (dropping `self`).
    pub async fn shutdown(mut self) {
        if let Some(agent) = self.agent.take() {
            if let Err(e) = agent.shutdown().await {
                tracing::warn!(error = %e, "the demo door did not stop cleanly");
            }
        }
        // The meter and its broker after the agent, which publishes to it.
        drop(self.meter.take());
        for node in self.nodes.drain(..) {
            if let Err(e) = node.shutdown().await {
                tracing::warn!(error = %e, "a demo node did not stop cleanly");
            }
        }
        tracing::info!(dir = %self.dir.path().display(), "demo stopped; removing its directory");
    }
}

async fn start_meter(dir: &Path) -> Result<(Broker, MeterPort), String> {
    let broker = Broker::start(dir)?;
    let port = MeterPort::start().await?;
    Ok((broker, port))
}

/// A sample provider's request to read the door's meter, signed by a key made up for the demo
/// (nobody reads what the door would send it; the request is what the owner answers).
fn sample_consent_link(device: latchkey_proto::keys::DeviceId) -> Result<String, String> {
    use latchkey_proto::consent::{purpose, ConsentRequest, ProviderIdentity};
    use latchkey_proto::kem::KemSecretKey;
    use latchkey_proto::keys::SigningKey;
    use rand::RngCore;

    let mut rng = rand::rngs::OsRng;
    let key = SigningKey::generate(&mut rng);
    let kem = KemSecretKey::generate(&mut rng);
    let now = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    let mut nonce = [0u8; 16];
    rng.fill_bytes(&mut nonce);
    let request = ConsentRequest {
        provider: ProviderIdentity {
            name: "Watt Insights".into(),
            url: "https://watt-insights.example".into(),
            signing: key.public_key(),
            kem: kem.public().clone(),
        },
        device,
        stream: METER_STREAM.into(),
        purpose_code: purpose::INSIGHTS,
        purpose: "Shows which appliances use the most power and when your usage peaks, with \
                  tips to lower your bill."
            .into(),
        retention_days: 30,
        until_ms: Some(now + 90 * DAY_MS),
        history: false,
        terms: Some("Free for the first 3 months".into()),
        issued_ms: now,
        nonce,
    };
    request
        .sign(&key)
        .map(|signed| signed.to_link())
        .map_err(|e| format!("the demo's sample consent request could not be signed: {e}"))
}

fn free_loopback_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The sample calendar with each all-day date (`DTSTART;VALUE=DATE:…`, `DTEND;…`) moved by
/// the days between `SAMPLE_TODAY` and `today` (days since 1970-01-01, UTC).
fn dated_sample(ics: &str, today: i64) -> String {
    let shift = today - days_from_date(SAMPLE_TODAY).unwrap_or(today);
    ics.split_inclusive('\n')
        .map(|line| {
            let moved = ["DTSTART;VALUE=DATE:", "DTEND;VALUE=DATE:"]
                .iter()
                .find_map(|prefix| {
                    let rest = line.strip_prefix(prefix)?;
                    let date = rest.get(..8)?;
                    let days = days_from_date(date)?;
                    Some(format!(
                        "{prefix}{}{}",
                        date_from_days(days + shift),
                        &rest[8..]
                    ))
                });
            moved.unwrap_or_else(|| line.to_owned())
        })
        .collect()
}

/// `YYYYMMDD` → days since 1970-01-01 (proleptic Gregorian; H. Hinnant's `days_from_civil`).
fn days_from_date(date: &str) -> Option<i64> {
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (y, m, d): (i64, i64, i64) = (
        date[..4].parse().ok()?,
        date[4..6].parse().ok()?,
        date[6..].parse().ok()?,
    );
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// Days since 1970-01-01 → `YYYYMMDD` (`civil_from_days`).
fn date_from_days(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}")
}

/// One line per unlock; the file's modification time is the last one.
fn door_view(log: &Path) -> DoorView {
    let unlocks = std::fs::read_to_string(log)
        .map(|s| s.lines().count() as u32)
        .unwrap_or(0);
    let last_unlock_ms = std::fs::metadata(log)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64);
    DoorView {
        unlocks,
        last_unlock_ms,
        open_for_ms: OPEN_FOR_MS,
    }
}

impl AppState {
    /// Points the demo profile at the demo's nodes and keeps the demo for the panel and for
    /// the clean-up at exit.
    pub fn prepare_demo(&self, demo: Demo) -> Result<(), Box<dyn std::error::Error>> {
        // Without a keychain there is no profile to prepare; the first screen says why.
        if let Ok(seeds) = self.seeds() {
            let profile = Profile::at(&demo.profile_dir(), seeds, Arc::new(SystemClock))?;
            profile.add_nodes(&demo.node_urls())?;
        }
        *self
            .demo
            .lock()
            .map_err(|_| "the demo's state is damaged")? = Some(demo);
        Ok(())
    }

    /// Deletes the demo profile's recovery phrase from the keychain, once; the demo keeps
    /// running. Called first on a signal: Ctrl-C in a terminal reaches every process of the
    /// job, and whatever provides the keychain may not outlive a slower teardown.
    pub async fn forget_demo_phrase(&self) {
        let dir = match self.demo.lock() {
            Ok(demo) => match demo.as_ref() {
                Some(demo) if !demo.phrase_forgotten => demo.profile_dir(),
                _ => return,
            },
            Err(_) => return,
        };
        let Ok(seeds) = self.seeds() else {
            return;
        };
        let deleted = tauri::async_runtime::spawn_blocking(move || {
            let profile = Profile::at(&dir, seeds.clone(), Arc::new(SystemClock))?;
            seeds.delete(profile.id())
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
        match deleted {
            Ok(()) => {
                tracing::info!("the demo's recovery phrase was removed from the keychain");
                if let Ok(mut demo) = self.demo.lock() {
                    if let Some(demo) = demo.as_mut() {
                        demo.phrase_forgotten = true;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "the demo's recovery phrase could not be removed from the keychain")
            }
        }
    }

    /// Deletes the demo profile's recovery phrase from the keychain (unless a signal already
    /// did), then stops the demo.
    pub async fn end_demo(&self) {
        self.forget_demo_phrase().await;
        let Some(demo) = self.demo.lock().ok().and_then(|mut d| d.take()) else {
            return;
        };
        demo.shutdown().await;
    }

    /// The demo's home broker, for the meter of the door it runs.
    pub fn demo_broker(&self) -> Option<String> {
        self.demo
            .lock()
            .ok()
            .and_then(|d| d.as_ref().and_then(Demo::broker_url))
    }

    /// The demo panel's view, or `None` outside demo mode.
    pub fn demo_view(&self) -> Result<Option<DemoView>, CommandError> {
        let demo = self.demo.lock().map_err(|_| {
            CommandError::new("internal", "the demo's state is damaged; restart the app")
        })?;
        demo.as_ref().map(Demo::view).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_calendar_moves_to_today() {
        assert_eq!(days_from_date("19700101"), Some(0));
        assert_eq!(days_from_date("20000301"), Some(11_017));
        assert_eq!(date_from_days(11_017), "20000301");
        assert_eq!(
            date_from_days(days_from_date("20261231").unwrap() + 1),
            "20270101"
        );
        assert_eq!(
            date_from_days(days_from_date("20280228").unwrap() + 1),
            "20280229"
        );
        assert_eq!(days_from_date("2026-12-01"), None);

        let today = days_from_date(SAMPLE_TODAY).unwrap();
        assert_eq!(dated_sample(SAMPLE_CALENDAR, today), SAMPLE_CALENDAR);
        let later = dated_sample(SAMPLE_CALENDAR, today + 40);
        // The current stay (30 Nov – 4 Dec) is still around today, 40 days on; other lines,
        // the CRLF line ends and the DTSTAMP stay as they were.
        assert!(later.contains("DTSTART;VALUE=DATE:20270109\r\n"), "{later}");
        assert!(later.contains("DTEND;VALUE=DATE:20270113\r\n"), "{later}");
        assert!(later.contains("DTSTAMP:20261201T080000Z\r\n"));
        assert_eq!(later.lines().count(), SAMPLE_CALENDAR.lines().count());
    }

    #[test]
    fn the_sample_calendar_has_stays_around_today_for_the_owner_core() {
        use latchkey_owner::stays::{parse_calendar, StayTimes};
        let now = std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap();
        let today = (now.as_secs() / 86_400) as i64;
        let now_ms = now.as_millis() as u64;
        let times = StayTimes::parse("15:00", "11:00", Some("UTC")).unwrap();
        let events = parse_calendar(&dated_sample(SAMPLE_CALENDAR, today), &times.tz).unwrap();
        assert_eq!(events.len(), 5);
        let stays: Vec<_> = events.iter().filter(|e| !e.blocked).collect();
        assert_eq!(stays.len(), 4, "one blocked week is no stay");
        let windows: Vec<(u64, u64)> = stays.iter().map(|e| times.window(e).unwrap()).collect();
        // One over, one now, two to come: every part of the Stays screen has something.
        assert!(windows[0].1 < now_ms);
        assert!(windows[1].0 <= now_ms && now_ms < windows[1].1);
        assert!(windows[2..].iter().all(|w| w.0 > now_ms));
    }

    #[test]
    fn the_door_counts_unlocks_from_its_log() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("door.log");
        assert_eq!(door_view(&log).unlocks, 0);
        assert_eq!(door_view(&log).last_unlock_ms, None);
        std::fs::write(&log, "unlock\nunlock\n").unwrap();
        let view = door_view(&log);
        assert_eq!(view.unlocks, 2);
        assert!(view.last_unlock_ms.is_some());
    }
}
