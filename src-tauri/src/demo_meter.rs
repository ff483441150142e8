//! The demo's smart meter: a home MQTT broker (the system's Mosquitto, started on a loopback
//! port and stopped with the demo) and a simulated DSMR 5 meter that writes one P1 telegram a
//! second to whoever connects over TCP, as a ser2net-style P1 gateway does. The demo door's
//! agent reads it through its real `tcp:` stream source, seals each reading and publishes it
//! on the broker, where the owner's meter watch (and any provider allowed) reads it.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Mosquitto on a free loopback port; killed (and reaped) when dropped.
#[derive(Debug)]
pub struct Broker {
    child: Child,
    port: u16,
}

impl Broker {
    /// Starts `mosquitto` with a configuration in `dir` and waits until it accepts
    /// connections. Fails with a sentence fit for the demo panel when it cannot.
    pub fn start(dir: &Path) -> Result<Broker, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| format!("no free loopback port for the demo's broker: {e}"))?;
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
        )
        .map_err(|e| format!("cannot write the demo broker's configuration: {e}"))?;
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "the demo's smart meter needs Mosquitto as its home broker, which did not \
                     start ({e}); install it (apt-get install mosquitto) and start the demo again"
                )
            })?;
        let mut broker = Broker { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(broker);
            }
            if let Ok(Some(status)) = broker.child.try_wait() {
                return Err(format!(
                    "the demo's Mosquitto broker stopped at once ({status})"
                ));
            }
            if Instant::now() > deadline {
                return Err("the demo's Mosquitto broker did not listen within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The simulated meter's P1 port, on a loopback TCP port; stops when dropped.
#[derive(Debug)]
pub struct MeterPort {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl MeterPort {
    /// Listens on a free loopback port; every connection gets the same household's telegrams,
    /// one a second, from the moment it connects.
    pub async fn start() -> Result<MeterPort, String> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("no loopback port for the demo's meter: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("the demo's meter port has no address: {e}"))?;
        let task = tokio::spawn(async move {
            let household = std::sync::Arc::new(std::sync::Mutex::new(Household::new()));
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    continue;
                };
                let household = household.clone();
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_secs(1));
                    loop {
                        tick.tick().await;
                        let telegram = match household.lock() {
                            Ok(mut h) => h.next_telegram(jiff::Timestamp::now()),
                            Err(_) => return,
                        };
                        if socket.write_all(telegram.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Ok(MeterPort { addr, task })
    }

    /// The device's stream source for it (`latchkeyd init --stream p1=dsmr:…`).
    pub fn source(&self) -> String {
        format!("tcp:{}", self.addr)
    }
}

impl Drop for MeterPort {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A plausible Dutch household: a base load, a fridge that cycles, and now and then a kettle
/// or an oven; the counters advance with what it draws.
#[derive(Debug)]
struct Household {
    /// Energy delivered, tariff 1 and 2, in Wh (as floats, so one second's share adds up).
    delivered_wh: [f64; 2],
    gas_l: f64,
    /// A big appliance on: its power (W) and the seconds it still runs.
    appliance: Option<(f64, u32)>,
    started: Instant,
}

impl Household {
    fn new() -> Self {
        Household {
            delivered_wh: [4_812_345.0, 3_998_765.0],
            gas_l: 2_345_678.0,
            appliance: None,
            started: Instant::now(),
        }
    }

    /// The power drawn this second (W).
    fn power_w(&mut self, rng: &mut impl Rng) -> f64 {
        let secs = self.started.elapsed().as_secs();
        // The fridge runs six minutes of every fifteen; the demo starts with it on.
        let fridge = if secs % 900 < 360 { 110.0 } else { 0.0 };
        self.appliance = match self.appliance {
            Some((w, left)) if left > 1 => Some((w, left - 1)),
            Some(_) => None,
            // About one appliance every two minutes, for 30 s to 3 min.
            None if rng.gen_ratio(1, 120) => {
                let w = [2_000.0, 1_200.0, 2_400.0, 800.0][rng.gen_range(0..4)];
                Some((w, rng.gen_range(30..180)))
            }
            None => None,
        };
        let base = 280.0 + 60.0 * ((secs as f64) / 97.0).sin();
        base + fridge + self.appliance.map_or(0.0, |(w, _)| w) + rng.gen_range(-25.0..25.0)
    }

    /// The next telegram for `now`, with the meter's clock in Dutch local time.
    fn next_telegram(&mut self, now: jiff::Timestamp) -> String {
        let mut rng = rand::thread_rng();
        let power_w = self.power_w(&mut rng).max(0.0);
        let tz = jiff::tz::TimeZone::get("Europe/Amsterdam").unwrap_or(jiff::tz::TimeZone::UTC);
        let local = now.to_zoned(tz.clone());
        // Low tariff (1) at night and at weekends, normal (2) on weekdays 07–23.
        let weekday = local.weekday().to_monday_one_offset() <= 5;
        let tariff = if weekday && (7..23).contains(&local.hour()) {
            2
        } else {
            1
        };
        self.delivered_wh[tariff - 1] += power_w / 3600.0;
        // Heating: a little gas every second.
        self.gas_l += rng.gen_range(0.0..0.3);
        let dst = if tz.to_offset_info(now).dst().is_dst() {
            'S'
        } else {
            'W'
        };
        let stamp = format!("{}{dst}", local.strftime("%y%m%d%H%M%S"));
        let kwh = |wh: f64| wh / 1000.0;
        let volts = 229.0 + rng.gen_range(0.0..3.0);
        let amps = (power_w / volts).round();
        let body = format!(
            "/ISK5\\2M550T-1013\r\n\r\n\
             1-3:0.2.8(50)\r\n\
             0-0:1.0.0({stamp})\r\n\
             0-0:96.1.1(4530303434303037313331363530363137)\r\n\
             1-0:1.8.1({:010.3}*kWh)\r\n\
             1-0:1.8.2({:010.3}*kWh)\r\n\
             1-0:2.8.1(000000.000*kWh)\r\n\
             1-0:2.8.2(000000.000*kWh)\r\n\
             0-0:96.14.0({tariff:04})\r\n\
             1-0:1.7.0({:06.3}*kW)\r\n\
             1-0:2.7.0(00.000*kW)\r\n\
             0-0:96.7.21(00004)\r\n\
             0-0:96.7.9(00002)\r\n\
             1-0:32.7.0({volts:05.1}*V)\r\n\
             1-0:31.7.0({amps:03}*A)\r\n\
             1-0:21.7.0({:06.3}*kW)\r\n\
             1-0:22.7.0(00.000*kW)\r\n\
             0-1:24.1.0(003)\r\n\
             0-1:96.1.0(4730303339303031363532303530323136)\r\n\
             0-1:24.2.1({stamp})({:09.3}*m3)\r\n\
             !",
            kwh(self.delivered_wh[0]),
            kwh(self.delivered_wh[1]),
            power_w / 1000.0,
            power_w / 1000.0,
            self.gas_l / 1000.0,
        );
        format!("{body}{:04X}\r\n", crc16_arc(body.as_bytes()))
    }
}

/// CRC-16/ARC (poly 0xA001 reflected, init 0), over `/` … `!` as DSMR 4+ specifies.
fn crc16_arc(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |mut crc, &b| {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
        crc
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_arc_matches_the_check_value() {
        // The catalogue's check value for CRC-16/ARC over "123456789".
        assert_eq!(crc16_arc(b"123456789"), 0xBB3D);
    }

    #[test]
    fn telegrams_are_framed_and_the_counters_advance() {
        let mut h = Household::new();
        let t0: jiff::Timestamp = "2026-12-01T11:00:00Z".parse().unwrap();
        let first = h.next_telegram(t0);
        let second = h.next_telegram(t0 + jiff::SignedDuration::from_secs(1));
        for t in [&first, &second] {
            assert!(t.starts_with("/ISK5\\2M550T-1013\r\n"), "{t}");
            let bang = t.rfind('!').unwrap();
            let crc = u16::from_str_radix(&t[bang + 1..bang + 5], 16).unwrap();
            assert_eq!(crc, crc16_arc(&t.as_bytes()[..=bang]));
            assert!(t.ends_with("\r\n"));
        }
        // 12:00 in Amsterdam on a Tuesday in winter: normal tariff, winter time.
        assert!(first.contains("0-0:1.0.0(261201120000W)"), "{first}");
        assert!(first.contains("0-0:96.14.0(0002)"), "{first}");
        let counter = |t: &str| -> f64 {
            let line = t.lines().find(|l| l.starts_with("1-0:1.8.2(")).unwrap();
            line[10..20].parse().unwrap()
        };
        // The register shows whole Wh: a minute at a few hundred watts moves it.
        let mut later = second.clone();
        for s in 2..62 {
            later = h.next_telegram(t0 + jiff::SignedDuration::from_secs(s));
        }
        assert!(counter(&later) > counter(&first), "{first}\n{later}");
        let summer: jiff::Timestamp = "2026-07-01T11:00:00Z".parse().unwrap();
        assert!(h.next_telegram(summer).contains("(260701130000S)"));
    }

    #[test]
    fn the_device_parses_the_simulated_telegrams() {
        let mut h = Household::new();
        let t0: jiff::Timestamp = "2026-12-01T11:00:00Z".parse().unwrap();
        let telegram = h.next_telegram(t0);
        let reading = latchkey_device::stream::dsmr::parse_telegram(&telegram)
            .unwrap_or_else(|e| panic!("{e}\n{telegram}"));
        assert_eq!(reading.meter_time_ms, Some(t0.as_millisecond() as u64));
        assert_eq!(reading.tariff, Some(2));
        assert_eq!(reading.energy_delivered_wh.len(), 2);
        assert!(reading.energy_delivered_wh[0] >= 4_812_345);
        let w = reading.power_delivered_w.unwrap();
        assert!((100..5_000).contains(&w), "{w} W");
        assert_eq!(reading.phases.len(), 1);
        assert!(reading.gas_l.is_some());
    }

    #[tokio::test]
    async fn the_p1_port_hands_each_connection_a_telegram_a_second() {
        use tokio::io::AsyncReadExt;
        let port = MeterPort::start().await.unwrap();
        let addr = port.source().strip_prefix("tcp:").unwrap().to_owned();
        let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), async {
            while got.windows(2).filter(|w| w == b"\r\n").count() < 2 * 22 {
                let mut buf = [0u8; 1024];
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "the meter port closed the connection");
                got.extend_from_slice(&buf[..n]);
            }
        })
        .await;
        assert!(read.is_ok(), "two telegrams within 10 s: {got:?}");
        let text = String::from_utf8(got).unwrap();
        assert_eq!(text.matches("/ISK5").count(), 2, "{text}");
        drop(port);
        // Dropped: the port stops listening.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(tokio::net::TcpStream::connect(&addr).await.is_err());
    }

    #[test]
    fn the_broker_listens_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::start(dir.path()).expect("mosquitto is installed (scripts/lib.sh)");
        let port: u16 = broker.url().rsplit(':').next().unwrap().parse().unwrap();
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        drop(broker);
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    }
}
