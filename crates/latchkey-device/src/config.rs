//! `latchkeyd.toml`: the device's name, where it listens, its registry nodes, its actions and
//! the quorum and freshness knobs. Written by `latchkeyd init`, read by every other command.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use latchkey_proto::grant::is_action_name;
use latchkey_proto::replay::ReplayWindow;
use latchkey_quorum::QuorumConfig;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The built-in action that returns the audit log (owners only); no actuator may take its name.
pub const AUDIT_ACTION: &str = "audit";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Shown to owners (genesis op, claim QR, mDNS).
    pub name: String,
    /// Local HTTP address for direct commands (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Registry nodes (base URLs).
    pub nodes: Vec<String>,
    /// Addresses put in the claim QR (`IP:PORT` or `host.local:PORT`); empty means derived
    /// from `listen` and the network interfaces.
    #[serde(default)]
    pub advertise: Vec<String>,
    /// Advertise `_latchkey._tcp.local.` on mDNS.
    #[serde(default = "yes")]
    pub mdns: bool,
    #[serde(default)]
    pub quorum: QuorumKnobs,
    #[serde(default)]
    pub window: WindowKnobs,
    /// Audit entries kept (older ones are pruned; the chain stays verifiable from the oldest).
    #[serde(default = "default_audit_keep")]
    pub audit_keep: u64,
    #[serde(default)]
    pub actions: BTreeMap<String, ActionConfig>,
    /// The home MQTT broker streams are published on (`mqtt://HOST[:PORT]`, docs/PROTOCOL.md
    /// §14); needed once a stream is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    /// Data streams (a smart meter's P1 port) the agent reads, seals and publishes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub streams: BTreeMap<String, StreamConfig>,
}

/// One data stream: where its telegrams come from and whether its free tier is published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// `serial:/dev/ttyUSB0[@BAUD]`, `tcp:HOST:PORT` or `file:PATH[@RATE]`.
    pub source: String,
    /// The telegram format; `dsmr` (P1 port, DSMR 2.2 to 5.0) is the one there is.
    #[serde(default = "dsmr")]
    pub format: String,
    /// Publish the 1-minute mean power and the hour's energy in clear on `…/avg1m`.
    #[serde(default)]
    pub free_aggregate: bool,
}

fn dsmr() -> String {
    STREAM_FORMAT_DSMR.to_owned()
}

/// The one stream format.
pub const STREAM_FORMAT_DSMR: &str = "dsmr";

/// The MQTT port used when a broker URL names none.
pub const MQTT_DEFAULT_PORT: u16 = 1883;

/// Parses `mqtt://HOST[:PORT]` (IPv6 hosts in brackets) into host and port.
pub fn parse_broker(url: &str) -> Result<(String, u16), String> {
    let rest = url.strip_prefix("mqtt://").ok_or_else(|| {
        format!("broker \"{url}\" must be mqtt://HOST[:PORT], e.g. mqtt://127.0.0.1:1883")
    })?;
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains(['/', '@', '?', '#']) {
        return Err(format!(
            "broker \"{url}\" must be mqtt://HOST[:PORT] (no path, user or query)"
        ));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("broker \"{url}\": unclosed '[' around an IPv6 host"))?;
        match after.strip_prefix(':') {
            Some(p) => (host, Some(p)),
            None if after.is_empty() => (host, None),
            None => return Err(format!("broker \"{url}\": junk after the IPv6 host")),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return Err(format!("broker \"{url}\" names no host"));
    }
    let port = match port {
        None => MQTT_DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("broker \"{url}\": port \"{p}\" is not 1 to 65535"))?,
    };
    Ok((host.to_owned(), port))
}

/// Stream names: 1 to 32 of `a-z`, `0-9`, `_`, `-` (they are MQTT topic levels).
pub fn check_stream_name(name: &str) -> Result<(), String> {
    latchkey_proto::stream::validate_stream_name(name).map_err(|_| {
        format!("stream name \"{name}\" must be 1 to 32 of a-z, 0-9, '_' and '-' (e.g. p1)")
    })
}

/// Checks a stream's source spec (`serial:`, `tcp:` or `file:`).
pub fn check_stream_source(spec: &str) -> Result<(), String> {
    crate::stream::source::SourceSpec::parse(spec)
        .map(|_| ())
        .map_err(|e| match e {
            Error::Invalid(why) => why,
            other => other.to_string(),
        })
}

/// Parses a `--stream NAME=FORMAT:SOURCE` option, e.g. `p1=dsmr:serial:/dev/ttyUSB0@115200`.
pub fn parse_stream_option(spec: &str) -> Result<(String, StreamConfig)> {
    let bad = |why: String| {
        Error::Invalid(format!(
            "--stream \"{spec}\": {why} (expected NAME=dsmr:SOURCE, e.g. p1=dsmr:serial:/dev/ttyUSB0@115200, p1=dsmr:tcp:gateway.local:2001 or p1=dsmr:file:/path/telegrams.txt@1)"
        ))
    };
    let (name, rest) = spec.split_once('=').ok_or_else(|| bad("no '='".into()))?;
    check_stream_name(name).map_err(bad)?;
    let (format, source) = rest
        .split_once(':')
        .ok_or_else(|| bad("no format before the source".into()))?;
    if format != STREAM_FORMAT_DSMR {
        return Err(bad(format!(
            "unknown format \"{format}\"; the one format is dsmr"
        )));
    }
    check_stream_source(source).map_err(bad)?;
    Ok((
        name.to_owned(),
        StreamConfig {
            source: source.to_owned(),
            format: format.to_owned(),
            free_aggregate: false,
        },
    ))
}

fn yes() -> bool {
    true
}

fn default_audit_keep() -> u64 {
    100_000
}

/// How the agent asks its registry nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuorumKnobs {
    /// Nodes asked per ownership check (k).
    pub sample: usize,
    /// Fewest valid answers for a check to count as a quorum.
    pub min_answers: usize,
    /// Per-node time limit.
    pub timeout_ms: u64,
    /// Nodes the agent publishes its own ops to.
    pub publish_to: usize,
    /// Nodes that must store them.
    pub min_acks: usize,
    /// Seconds between background ownership checks.
    pub refresh_secs: u64,
    /// Before acting on a command, re-check the nodes when the last quorum is older than this.
    pub max_view_age_secs: u64,
    /// Refuse guests once this boot's last quorum is older than this (or there was none).
    pub max_guest_staleness_secs: u64,
    /// Refuse owners once the up-time since the last quorum is longer than this; 0 = never.
    pub max_owner_staleness_secs: u64,
    /// Nodes whose mailbox for this device the agent long-polls.
    pub relay_nodes: usize,
    /// Long-poll wait per mailbox read.
    pub relay_wait_secs: u64,
}

impl Default for QuorumKnobs {
    fn default() -> Self {
        QuorumKnobs {
            sample: 5,
            min_answers: 3,
            timeout_ms: 3000,
            publish_to: 5,
            min_acks: 2,
            refresh_secs: 60,
            max_view_age_secs: 300,
            max_guest_staleness_secs: 900,
            max_owner_staleness_secs: 86_400,
            relay_nodes: 3,
            relay_wait_secs: 25,
        }
    }
}

impl QuorumKnobs {
    /// Sensible knobs for `n` configured nodes: ask up to five, need a majority of those.
    pub fn for_nodes(n: usize) -> Self {
        let sample = n.clamp(1, 5);
        QuorumKnobs {
            sample,
            min_answers: sample / 2 + 1,
            publish_to: n.max(1),
            min_acks: (n / 2 + 1).min(n.max(1)),
            relay_nodes: n.clamp(1, 3),
            ..QuorumKnobs::default()
        }
    }

    pub fn quorum_config(&self) -> QuorumConfig {
        QuorumConfig {
            sample: self.sample.max(1),
            min_answers: self.min_answers.clamp(1, self.sample.max(1)),
            timeout: Duration::from_millis(self.timeout_ms.max(1)),
            publish_to: self.publish_to.max(1),
            min_acks: self.min_acks.max(1),
        }
    }
}

/// The replay window (docs/PROTOCOL.md §6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowKnobs {
    pub max_age_ms: u64,
    pub max_lead_ms: u64,
    /// `false`: never trust the system clock; every command needs a challenge.
    pub trust_clock: bool,
}

impl Default for WindowKnobs {
    fn default() -> Self {
        let w = ReplayWindow::default();
        WindowKnobs {
            max_age_ms: w.max_age_ms,
            max_lead_ms: w.max_lead_ms,
            trust_clock: true,
        }
    }
}

impl WindowKnobs {
    pub fn replay_window(&self) -> ReplayWindow {
        ReplayWindow {
            max_age_ms: self.max_age_ms,
            max_lead_ms: self.max_lead_ms,
        }
    }
}

/// One action: its driver and the driver's options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    /// `exec:/path`, `http:URL`, `mqtt:HOST:PORT/topic`, `gpio:/dev/gpiochipN:LINE` or `log`.
    pub driver: String,
    /// Time limit (exec, http, mqtt); default 10 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// exec: fixed arguments placed before the command's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// http: bearer token (e.g. a Home Assistant long-lived access token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// http and mqtt: fixed body instead of the command's arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// mqtt: credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// gpio: how long the line is held active (default 500 ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pulse_ms: Option<u64>,
}

impl ActionConfig {
    pub fn new(driver: Driver) -> Self {
        ActionConfig {
            driver: driver.to_string(),
            timeout_ms: None,
            args: Vec::new(),
            token: None,
            payload: None,
            username: None,
            password: None,
            pulse_ms: None,
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.unwrap_or(10_000).max(1))
    }

    /// Whether the command's arguments reach the actuator with `driver`: exec appends them to
    /// argv; http and mqtt send them as the body unless a fixed `payload` is configured (then
    /// the payload wins and the arguments are dropped).
    pub fn takes_arguments(&self, driver: &Driver) -> bool {
        match driver {
            Driver::Exec { .. } => true,
            Driver::Http { .. } | Driver::Mqtt { .. } => self.payload.is_none(),
            Driver::Gpio { .. } | Driver::Log => false,
        }
    }

    /// Who may pass arguments to this action, in the words `latchkeyd status` prints.
    pub fn arguments_note(&self, driver: &Driver) -> &'static str {
        match driver {
            _ if self.takes_arguments(driver) => match driver {
                Driver::Exec { .. } => {
                    "the command's arguments become argv entries: only owners may pass them \
                     (guests only the exact arguments pinned in their grant)"
                }
                _ => {
                    "no fixed payload, so the command's arguments are the body sent: only \
                     owners may pass them (guests only the exact arguments pinned in their grant)"
                }
            },
            Driver::Http { .. } | Driver::Mqtt { .. } => {
                "sends its fixed payload; the command's arguments are ignored"
            }
            _ => "ignores the command's arguments",
        }
    }
}

/// Where an action goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Driver {
    /// Run a program (absolute path) with the command's arguments as argv; never a shell.
    Exec { program: PathBuf },
    /// POST to a URL.
    Http { url: String },
    /// Publish to an MQTT topic.
    Mqtt {
        host: String,
        port: u16,
        topic: String,
    },
    /// Pulse a line of a Linux GPIO character device.
    Gpio { chip: PathBuf, line: u32 },
    /// Dry run: log and succeed.
    Log,
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Driver::Exec { program } => write!(f, "exec:{}", program.display()),
            Driver::Http { url } => write!(f, "http:{url}"),
            Driver::Mqtt { host, port, topic } => write!(f, "mqtt:{host}:{port}/{topic}"),
            Driver::Gpio { chip, line } => write!(f, "gpio:{}:{line}", chip.display()),
            Driver::Log => f.write_str("log"),
        }
    }
}

impl Driver {
    /// Parses `exec:/path`, `http:URL`, `mqtt:HOST:PORT/topic`, `gpio:/dev/gpiochipN:LINE`, `log`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        if spec == "log" {
            return Ok(Driver::Log);
        }
        let (kind, rest) = spec
            .split_once(':')
            .ok_or("the driver must be exec:, http:, mqtt:, gpio: or log")?;
        match kind {
            "exec" => {
                let program = PathBuf::from(rest);
                if !program.is_absolute() {
                    return Err("exec needs an absolute program path".into());
                }
                Ok(Driver::Exec { program })
            }
            "http" => {
                if !(rest.starts_with("http://") || rest.starts_with("https://")) {
                    return Err("http needs a URL starting with http:// or https://".into());
                }
                Ok(Driver::Http {
                    url: rest.to_owned(),
                })
            }
            "mqtt" => {
                let (host_port, topic) =
                    rest.split_once('/').ok_or("mqtt needs HOST:PORT/topic")?;
                let (host, port) = host_port
                    .rsplit_once(':')
                    .ok_or("mqtt needs HOST:PORT/topic")?;
                let port = port.parse().map_err(|_| "mqtt port is not a number")?;
                if host.is_empty() || topic.is_empty() || topic.contains(['+', '#']) {
                    return Err("mqtt needs a host and a topic without wildcards".into());
                }
                Ok(Driver::Mqtt {
                    host: host.trim_matches(['[', ']']).to_owned(),
                    port,
                    topic: topic.to_owned(),
                })
            }
            "gpio" => {
                let (chip, line) = rest
                    .rsplit_once(':')
                    .ok_or("gpio needs /dev/gpiochipN:LINE")?;
                let line = line.parse().map_err(|_| "gpio line is not a number")?;
                if !chip.starts_with('/') {
                    return Err("gpio needs the chip's device path, e.g. /dev/gpiochip0".into());
                }
                Ok(Driver::Gpio {
                    chip: PathBuf::from(chip),
                    line,
                })
            }
            other => Err(format!(
                "unknown driver \"{other}\"; use exec, http, mqtt, gpio or log"
            )),
        }
    }
}

/// Parses a `--action NAME=DRIVER:SPEC` option.
pub fn parse_action_option(spec: &str) -> Result<(String, Driver)> {
    let bad = |why: &str| Error::BadAction {
        spec: spec.to_owned(),
        why: why.to_owned(),
    };
    let (name, driver) = spec.split_once('=').ok_or_else(|| bad("no '='"))?;
    check_action_name(name).map_err(|why| bad(&why))?;
    let driver = Driver::parse(driver).map_err(|why| bad(&why))?;
    Ok((name.to_owned(), driver))
}

fn check_action_name(name: &str) -> Result<(), String> {
    if !is_action_name(name) {
        return Err("action names are 1-32 of a-z, 0-9, '-', '_', '.'".into());
    }
    if name == AUDIT_ACTION {
        return Err("\"audit\" is built in (owners read the audit log with it)".into());
    }
    Ok(())
}

impl Config {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
        let config: Config = toml::from_str(&text).map_err(|e| Error::Config {
            path: path.to_owned(),
            why: e.to_string(),
        })?;
        config.validate().map_err(|why| Error::Config {
            path: path.to_owned(),
            why,
        })?;
        Ok(config)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("the config serializes")
    }

    /// Every action's driver, parsed.
    pub fn drivers(&self) -> Result<BTreeMap<String, Driver>, String> {
        self.actions
            .iter()
            .map(|(name, a)| {
                check_action_name(name).map_err(|why| format!("action {name}: {why}"))?;
                let d = Driver::parse(&a.driver).map_err(|why| format!("action {name}: {why}"))?;
                Ok((name.clone(), d))
            })
            .collect()
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() || self.name.len() > latchkey_proto::chain::MAX_DEVICE_NAME {
            return Err("name must be 1 to 64 bytes".into());
        }
        if self.nodes.is_empty() {
            return Err("list at least one registry node in `nodes`".into());
        }
        for n in &self.nodes {
            if !(n.starts_with("http://") || n.starts_with("https://")) {
                return Err(format!("node {n} must start with http:// or https://"));
            }
        }
        for a in &self.advertise {
            latchkey_proto::claim::DeviceAddr::parse(a)
                .map_err(|e| format!("advertise {a}: {e}"))?;
        }
        if self.window.max_age_ms == 0 || self.quorum.refresh_secs == 0 {
            return Err("window.max_age_ms and quorum.refresh_secs must be above zero".into());
        }
        self.drivers()?;
        self.check_streams()
    }

    fn check_streams(&self) -> Result<(), String> {
        if let Some(b) = &self.broker {
            parse_broker(b)?;
        }
        if self.streams.is_empty() {
            return Ok(());
        }
        if self.broker.is_none() {
            return Err(
                "streams are published on an MQTT broker: set `broker = \"mqtt://HOST:PORT\"` (latchkeyd init --broker)"
                    .into(),
            );
        }
        for (name, s) in &self.streams {
            check_stream_name(name)?;
            if s.format != STREAM_FORMAT_DSMR {
                return Err(format!(
                    "stream {name}: unknown format \"{}\"; the one format is dsmr",
                    s.format
                ));
            }
            check_stream_source(&s.source).map_err(|why| format!("stream {name}: {why}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drivers_parse_and_print_back() {
        for spec in [
            "exec:/usr/local/bin/open-door",
            "http:http://ha.local:8123/api/services/lock/unlock",
            "mqtt:broker.local:1883/home/door/set",
            "gpio:/dev/gpiochip0:17",
            "log",
        ] {
            let d = Driver::parse(spec).unwrap();
            assert_eq!(d.to_string(), spec);
        }
        assert_eq!(
            Driver::parse("mqtt:[::1]:1883/a/b").unwrap(),
            Driver::Mqtt {
                host: "::1".into(),
                port: 1883,
                topic: "a/b".into()
            }
        );
    }

    #[test]
    fn bad_actions_say_what_is_wrong() {
        for (spec, needle) in [
            ("unlock", "no '='"),
            ("Unlock=log", "a-z"),
            ("audit=log", "built in"),
            ("x=exec:relative/path", "absolute"),
            ("x=ftp:/x", "unknown driver"),
            ("x=mqtt:host/topic", "HOST:PORT"),
            ("x=mqtt:host:1/a/#", "wildcards"),
            ("x=gpio:/dev/gpiochip0:x", "not a number"),
            ("x=http:ha.local", "http://"),
        ] {
            let e = parse_action_option(spec).unwrap_err().to_string();
            assert!(e.contains(needle), "{spec}: {e}");
        }
        let (name, d) = parse_action_option("unlock=exec:/bin/true").unwrap();
        assert_eq!(name, "unlock");
        assert_eq!(
            d,
            Driver::Exec {
                program: "/bin/true".into()
            }
        );
    }

    #[test]
    fn config_round_trips_through_toml() {
        let mut actions = BTreeMap::new();
        actions.insert("unlock".into(), ActionConfig::new(Driver::Log));
        let c = Config {
            name: "Front door".into(),
            listen: "127.0.0.1:7500".parse().unwrap(),
            nodes: vec!["http://127.0.0.1:7400".into()],
            advertise: vec![],
            mdns: false,
            quorum: QuorumKnobs::for_nodes(3),
            window: WindowKnobs::default(),
            audit_keep: 10,
            actions,
            broker: None,
            streams: BTreeMap::new(),
        };
        let text = c.to_toml();
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back, c);
        assert!(back.validate().is_ok());
        let minimal: Config =
            toml::from_str("name = \"x\"\nlisten = \"0.0.0.0:7500\"\nnodes = [\"http://n:1\"]\n")
                .unwrap();
        assert!(minimal.mdns);
        assert_eq!(minimal.quorum, QuorumKnobs::default());
        assert!(toml::from_str::<Config>("name = \"x\"\nbogus = 1\n").is_err());
    }

    #[test]
    fn the_packaged_example_config_is_valid() {
        let c: Config = toml::from_str(include_str!("../debian/latchkeyd.toml.example")).unwrap();
        c.validate().unwrap();
        assert_eq!(c.drivers().unwrap().len(), 5);
    }

    #[test]
    fn status_says_which_actions_take_arguments() {
        let http = Driver::parse("http:http://ha.local:8123/api/services/lock/unlock").unwrap();
        let exec = Driver::parse("exec:/usr/local/bin/open-door").unwrap();
        let mut with_payload = ActionConfig::new(http.clone());
        with_payload.payload = Some("{\"entity_id\":\"lock.front\"}".into());
        let cases = [
            (ActionConfig::new(http.clone()), &http, true, "only owners"),
            (with_payload, &http, false, "fixed payload"),
            (ActionConfig::new(exec.clone()), &exec, true, "argv"),
            (
                ActionConfig::new(Driver::Log),
                &Driver::Log,
                false,
                "ignores",
            ),
        ];
        for (config, driver, takes, words) in cases {
            assert_eq!(config.takes_arguments(driver), takes, "{driver}");
            assert!(config.arguments_note(driver).contains(words), "{driver}");
        }
    }

    #[test]
    fn brokers_parse_or_say_what_is_wrong() {
        assert_eq!(
            parse_broker("mqtt://127.0.0.1:1883").unwrap(),
            ("127.0.0.1".into(), 1883)
        );
        assert_eq!(
            parse_broker("mqtt://broker.local").unwrap(),
            ("broker.local".into(), MQTT_DEFAULT_PORT)
        );
        assert_eq!(
            parse_broker("mqtt://[::1]:1884").unwrap(),
            ("::1".into(), 1884)
        );
        for (url, needle) in [
            ("tcp://h:1", "mqtt://HOST"),
            ("mqtt://", "no path"),
            ("mqtt://h:0", "not 1 to 65535"),
            ("mqtt://h:x", "not 1 to 65535"),
            ("mqtt://h:1/topic", "no path"),
            ("mqtt://user@h:1", "no path"),
            ("mqtt://[::1", "unclosed"),
        ] {
            let e = parse_broker(url).unwrap_err();
            assert!(e.contains(needle), "{url}: {e}");
        }
    }

    #[test]
    fn stream_options_parse_or_say_what_is_wrong() {
        let (name, s) = parse_stream_option("p1=dsmr:serial:/dev/ttyUSB0@115200").unwrap();
        assert_eq!(name, "p1");
        assert_eq!(s.source, "serial:/dev/ttyUSB0@115200");
        assert_eq!(s.format, "dsmr");
        assert!(!s.free_aggregate);
        for (spec, needle) in [
            ("p1", "no '='"),
            ("P1=dsmr:file:/x", "a-z"),
            ("=dsmr:file:/x", "1 to 32"),
            ("a/b=dsmr:file:/x", "a-z"),
            ("p1=file:/x", "unknown format"),
            ("p1=dsmr", "no format"),
            ("p1=dsmr:ftp:/x", "source"),
        ] {
            let e = parse_stream_option(spec).unwrap_err().to_string();
            assert!(e.contains(needle), "{spec}: {e}");
            assert!(e.contains("NAME=dsmr:SOURCE"), "{spec}: {e}");
        }
        assert!(check_stream_name(&"a".repeat(32)).is_ok());
        assert!(check_stream_name(&"a".repeat(33)).is_err());
    }

    #[test]
    fn streams_need_a_broker_and_round_trip_through_toml() {
        let mut c: Config =
            toml::from_str("name = \"x\"\nlisten = \"0.0.0.0:7500\"\nnodes = [\"http://n:1\"]\n")
                .unwrap();
        let (name, mut s) = parse_stream_option("p1=dsmr:file:/tmp/t.txt@0").unwrap();
        s.free_aggregate = true;
        c.streams.insert(name, s);
        assert!(c.validate().unwrap_err().contains("broker"));
        c.broker = Some("mqtt://127.0.0.1:1883".into());
        c.validate().unwrap();
        let text = c.to_toml();
        assert!(text.contains("[streams.p1]"), "{text}");
        assert!(text.contains("free_aggregate = true"), "{text}");
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back, c);
        c.broker = Some("http://x".into());
        assert!(c.validate().unwrap_err().contains("mqtt://"));
    }

    #[test]
    fn knobs_for_three_nodes() {
        let k = QuorumKnobs::for_nodes(3);
        assert_eq!(
            (k.sample, k.min_answers, k.min_acks, k.relay_nodes),
            (3, 2, 2, 3)
        );
        let q = k.quorum_config();
        assert_eq!(q.sample, 3);
    }
}
