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
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
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
