//! What the owner core's network tests (and its benchmark) share: registry nodes on loopback,
//! a door's settings, and a recovery phrase kept in memory where a test is about the network,
//! not the keychain.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use latchkey_device::config::Driver;
use latchkey_device::lifecycle::InitOptions;
use latchkey_node::{Limits, NodeConfig, RunningNode};
use latchkey_owner::keychain::SeedStore;
use zeroize::Zeroizing;

/// The recovery phrase in memory, for tests and benchmarks only (real profiles use the OS
/// keychain).
#[derive(Debug, Default)]
pub struct MemorySeeds(Mutex<HashMap<String, Zeroizing<String>>>);

impl SeedStore for MemorySeeds {
    fn load(&self, profile: &str) -> latchkey_owner::Result<Option<Zeroizing<String>>> {
        Ok(self.0.lock().unwrap().get(profile).cloned())
    }
    fn save(&self, profile: &str, phrase: &str) -> latchkey_owner::Result<()> {
        self.0
            .lock()
            .unwrap()
            .insert(profile.to_owned(), Zeroizing::new(phrase.to_owned()));
        Ok(())
    }
    fn delete(&self, profile: &str) -> latchkey_owner::Result<()> {
        self.0.lock().unwrap().remove(profile);
        Ok(())
    }
}

/// `n` registry nodes on 127.0.0.1 port 0, each with its SQLite file in `dir`, without rate
/// limits (every test client shares one address).
pub async fn start_nodes(dir: &Path, n: usize) -> Vec<RunningNode> {
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        let mut config = NodeConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            dir.join(format!("node{i}.db")),
        );
        config.limits = Limits::without_rate_limits();
        nodes.push(latchkey_node::start(config).await.unwrap());
    }
    nodes
}

/// A loopback address nothing listens on yet.
pub fn free_addr() -> SocketAddr {
    latchkey_testkit::free_addr()
}

/// A door in `dir` whose one action, `unlock`, runs `program`: on `listen`, checking `nodes`
/// every second, no mDNS, the system clock trusted, default staleness limits.
pub fn unlock_door(
    dir: PathBuf,
    name: &str,
    listen: SocketAddr,
    nodes: &[String],
    program: PathBuf,
) -> InitOptions {
    InitOptions {
        dir,
        name: name.into(),
        listen,
        nodes: nodes.to_vec(),
        actions: vec![("unlock".into(), Driver::Exec { program })],
        advertise: vec![],
        mdns: false,
        refresh_secs: Some(1),
        max_view_age_secs: None,
        max_guest_staleness_secs: None,
        max_owner_staleness_secs: None,
        trust_clock: true,
    }
}

/// A real Mosquitto broker on a free loopback port, killed when dropped.
pub struct Mosquitto {
    child: std::process::Child,
    pub port: u16,
    _conf: tempfile::TempDir,
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        Mosquitto::start_on(free_addr().port())
    }

    /// On `port` (e.g. again after [`Drop`], as a broker that restarted).
    pub fn start_on(port: u16) -> Mosquitto {
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
            .expect("mosquitto is installed (apt-get install mosquitto)");
        // Ready once it accepts connections.
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Mosquitto {
            child,
            port,
            _conf: conf,
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The recorded DSMR 5 telegrams (300, one second apart in meter time) the device crate keeps.
pub fn recorded_telegrams() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../latchkey-device/tests/fixtures/dsmr/recorded-dsmr5.txt")
}

/// Initialises a meter device in `dir` (action `unlock` runs /bin/true) on `listen`, checking
/// `nodes` every second, publishing stream `p1` (the recorded telegrams replayed at 5 per
/// second) to `broker`, and returns its claim.
pub fn init_meter(
    dir: PathBuf,
    name: &str,
    listen: SocketAddr,
    nodes: &[String],
    broker: &str,
) -> latchkey_device::lifecycle::ClaimReport {
    let stream = latchkey_device::config::parse_stream_option(&format!(
        "p1=dsmr:file:{}@5",
        recorded_telegrams().display()
    ))
    .unwrap();
    latchkey_device::lifecycle::init_with_streams(
        &unlock_door(dir, name, listen, nodes, "/bin/true".into()),
        &latchkey_device::lifecycle::StreamOptions {
            streams: vec![stream],
            broker: Some(broker.to_owned()),
            free_aggregate: vec![],
        },
    )
    .unwrap()
}
