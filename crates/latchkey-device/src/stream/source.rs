//! Where a stream's telegrams come from, as configured in `latchkeyd.toml` (`source = "…"`):
//!
//! - `serial:PATH[@BAUD]` — a P1 cable on a serial port: 115200 baud 8N1 (DSMR 4 and later,
//!   the default), or 7E1 at `@9600` (the DSMR 2.2/3 convention); any other listed rate is 8N1.
//! - `tcp:HOST:PORT` — a ser2net-style gateway that relays the P1 port over TCP; reconnects
//!   with a backoff (0.5 s doubling to 30 s) when the connection drops or stays silent 60 s.
//! - `file:PATH[@RATE]` — a recording replayed at RATE telegrams per second (default 1; `@0`
//!   as fast as the receiver takes them); the source ends after the last telegram.
//!
//! [`Source::spawn`] runs one on the current tokio runtime and hands out a channel of
//! [`SourceItem`]s: a reading per good telegram, and a [`SourceItem::Bad`] per telegram that did
//! not frame, parse or pass its CRC (the device counts those and never publishes them). Line
//! numbers count from the start of the file, or of the connection or port opening.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio::time::{timeout, MissedTickBehavior};

use super::dsmr::{read_frame, Frame, Reading, TelegramFramer};
use crate::{Error, Result};

/// The serial rate of DSMR 4 and later.
pub const DEFAULT_BAUD: u32 = 115_200;
/// The serial rate of DSMR 2.2 and 3, with 7 data bits and even parity.
pub const DSMR3_BAUD: u32 = 9_600;
const BAUDS: &[u32] = &[
    1_200, 2_400, 4_800, 9_600, 19_200, 38_400, 57_600, 115_200, 230_400,
];
/// The fastest replay accepted, in telegrams per second.
pub const MAX_RATE: f64 = 10_000.0;
/// Readings waiting for the receiver; a slow receiver slows a file replay down rather than
/// letting readings pile up.
const CHANNEL: usize = 64;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A meter writes a telegram every 1 s (DSMR 5) or 10 s (DSMR 2.2–4); a link silent this long
/// is treated as dead and reopened.
const SILENCE: Duration = Duration::from_secs(60);

/// A stream source, as written in the configuration.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    Serial { path: PathBuf, baud: u32 },
    Tcp { host: String, port: u16 },
    File { path: PathBuf, rate: f64 },
}

fn bad(text: &str, why: impl fmt::Display) -> Error {
    Error::Invalid(format!(
        "stream source {text:?}: {why} (expected serial:PATH[@BAUD], tcp:HOST:PORT or file:PATH[@RATE], e.g. serial:/dev/ttyUSB0)"
    ))
}

impl SourceSpec {
    /// Reads `serial:PATH[@BAUD]`, `tcp:HOST:PORT` or `file:PATH[@RATE]`.
    pub fn parse(text: &str) -> Result<SourceSpec> {
        let Some((kind, rest)) = text.split_once(':') else {
            return Err(bad(text, "no kind before ':'"));
        };
        match kind {
            "serial" => {
                let (path, baud) = match rest.rsplit_once('@') {
                    Some((path, baud)) => {
                        let baud: u32 = baud.parse().map_err(|_| {
                            bad(text, format!("baud rate {baud:?} is not a number"))
                        })?;
                        if !BAUDS.contains(&baud) {
                            return Err(bad(
                                text,
                                format!("baud rate {baud} is not one of {BAUDS:?}"),
                            ));
                        }
                        (path, baud)
                    }
                    None => (rest, DEFAULT_BAUD),
                };
                if path.is_empty() {
                    return Err(bad(text, "no serial port path"));
                }
                Ok(SourceSpec::Serial {
                    path: path.into(),
                    baud,
                })
            }
            "tcp" => {
                let Some((host, port)) = rest.rsplit_once(':') else {
                    return Err(bad(text, "no port: write tcp:HOST:PORT"));
                };
                let port: u16 = port
                    .parse()
                    .ok()
                    .filter(|&p| p != 0)
                    .ok_or_else(|| bad(text, format!("port {port:?} is not 1–65535")))?;
                let host = host
                    .strip_prefix('[')
                    .and_then(|h| h.strip_suffix(']'))
                    .unwrap_or(host);
                if host.is_empty()
                    || host
                        .chars()
                        .any(|c| c.is_whitespace() || c == '/' || c == '[' || c == ']')
                {
                    return Err(bad(
                        text,
                        format!("host {host:?} is not a host name or address"),
                    ));
                }
                Ok(SourceSpec::Tcp {
                    host: host.to_owned(),
                    port,
                })
            }
            "file" => {
                // A suffix that is not a number belongs to the path (paths may hold '@').
                let (path, rate) = match rest.rsplit_once('@') {
                    Some((path, rate)) if rate.parse::<f64>().is_ok() => {
                        let rate: f64 = rate.parse().unwrap_or_default();
                        if !(0.0..=MAX_RATE).contains(&rate) {
                            return Err(bad(
                                text,
                                format!("rate {rate} is not 0 (as fast as possible) to {MAX_RATE} telegrams per second"),
                            ));
                        }
                        (path, rate)
                    }
                    _ => (rest, 1.0),
                };
                if path.is_empty() {
                    return Err(bad(text, "no file path"));
                }
                Ok(SourceSpec::File {
                    path: path.into(),
                    rate,
                })
            }
            other => Err(bad(text, format!("unknown kind {other:?}"))),
        }
    }
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceSpec::Serial { path, baud } => write!(f, "serial:{}@{baud}", path.display()),
            SourceSpec::Tcp { host, port } if host.contains(':') => {
                write!(f, "tcp:[{host}]:{port}")
            }
            SourceSpec::Tcp { host, port } => write!(f, "tcp:{host}:{port}"),
            SourceSpec::File { path, rate } => write!(f, "file:{}@{rate}", path.display()),
        }
    }
}

/// What a source yields per telegram.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceItem {
    /// A telegram that framed, parsed and passed its CRC (when it has one).
    Ok(Reading),
    /// A telegram that did not, or bytes outside telegrams: where (line in the file, or since
    /// the connection or port opened) and why. Never published.
    Bad { line: usize, reason: String },
}

impl From<Frame> for SourceItem {
    fn from(frame: Frame) -> Self {
        match read_frame(frame) {
            Ok(reading) => SourceItem::Ok(reading),
            Err((line, reason)) => SourceItem::Bad { line, reason },
        }
    }
}

/// Runs sources.
#[derive(Debug)]
pub struct Source {
    _private: (),
}

impl Source {
    /// Starts reading `spec` on the current tokio runtime. The task stops when the receiver is
    /// dropped; a file source also when the file ends (the channel then closes). A file that
    /// cannot be opened is logged and closes the channel at once; a serial port or TCP gateway
    /// that cannot be reached is retried with a backoff, logged, for as long as the receiver
    /// lives.
    pub fn spawn(spec: SourceSpec) -> mpsc::Receiver<SourceItem> {
        let (tx, rx) = mpsc::channel(CHANNEL);
        tokio::spawn(async move {
            match spec {
                SourceSpec::File { path, rate } => replay(path, rate, tx).await,
                SourceSpec::Tcp { host, port } => tcp(host, port, tx).await,
                SourceSpec::Serial { path, baud } => serial(path, baud, tx).await,
            }
        });
        rx
    }
}

/// Sends each frame as an item; `false` once the receiver is gone.
async fn send_all(frames: Vec<Frame>, tx: &mpsc::Sender<SourceItem>) -> bool {
    for frame in frames {
        if tx.send(frame.into()).await.is_err() {
            return false;
        }
    }
    true
}

async fn replay(path: PathBuf, rate: f64, tx: mpsc::Sender<SourceItem>) {
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(
                "stream source file:{}: {e}; the stream has no readings",
                path.display()
            );
            return;
        }
    };
    let mut ticker = (rate > 0.0).then(|| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        t.set_missed_tick_behavior(MissedTickBehavior::Delay);
        t
    });
    let mut framer = TelegramFramer::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let (frames, done) = match file.read(&mut buf).await {
            Ok(0) => (framer.finish().into_iter().collect(), true),
            Ok(n) => (framer.push(&buf[..n]), false),
            Err(e) => {
                tracing::error!("stream source file:{}: {e}; replay stopped", path.display());
                return;
            }
        };
        for frame in frames {
            if let Some(t) = ticker.as_mut() {
                t.tick().await;
            }
            if tx.send(frame.into()).await.is_err() {
                return;
            }
        }
        if done {
            tracing::info!("stream source file:{}: replay finished", path.display());
            return;
        }
    }
}

/// Reads a live link until it fails, stays silent too long, or the receiver is gone (`Err`).
/// `Ok(true)` when it delivered at least one telegram.
async fn pump(
    mut link: impl AsyncRead + Unpin,
    tx: &mpsc::Sender<SourceItem>,
    what: &str,
) -> std::result::Result<bool, ()> {
    let mut framer = TelegramFramer::mid_stream();
    let mut buf = vec![0u8; 4 * 1024];
    let mut delivered = false;
    loop {
        match timeout(SILENCE, link.read(&mut buf)).await {
            Err(_) => {
                tracing::warn!(
                    "stream source {what}: no bytes for {} s; reopening",
                    SILENCE.as_secs()
                );
                return Ok(delivered);
            }
            Ok(Ok(0)) => {
                tracing::warn!("stream source {what}: closed by the other end; reopening");
                return Ok(delivered);
            }
            Ok(Ok(n)) => {
                let frames = framer.push(&buf[..n]);
                delivered |= frames.iter().any(|f| matches!(f, Frame::Telegram { .. }));
                if !send_all(frames, tx).await {
                    return Err(());
                }
            }
            Ok(Err(e)) => {
                tracing::warn!("stream source {what}: {e}; reopening");
                return Ok(delivered);
            }
        }
    }
}

/// Waits before the next attempt, unless the receiver is gone (`false`).
async fn back_off(backoff: &mut Duration, tx: &mpsc::Sender<SourceItem>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(*backoff) => {}
        _ = tx.closed() => return false,
    }
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    true
}

async fn tcp(host: String, port: u16, tx: mpsc::Sender<SourceItem>) {
    let what = SourceSpec::Tcp {
        host: host.clone(),
        port,
    }
    .to_string();
    let mut backoff = FIRST_BACKOFF;
    loop {
        match timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        {
            Ok(Ok(stream)) => {
                tracing::info!("stream source {what}: connected");
                match pump(stream, &tx, &what).await {
                    Err(()) => return,
                    Ok(true) => backoff = FIRST_BACKOFF,
                    Ok(false) => {}
                }
            }
            Ok(Err(e)) => tracing::warn!("stream source {what}: {e}; retrying in {backoff:?}"),
            Err(_) => tracing::warn!(
                "stream source {what}: no answer in {CONNECT_TIMEOUT:?}; retrying in {backoff:?}"
            ),
        }
        if !back_off(&mut backoff, &tx).await {
            return;
        }
    }
}

/// The serial settings for a rate: 7E1 at 9600 (DSMR 2.2/3), 8N1 otherwise.
pub fn serial_settings(baud: u32) -> (tokio_serial::DataBits, tokio_serial::Parity) {
    if baud == DSMR3_BAUD {
        (tokio_serial::DataBits::Seven, tokio_serial::Parity::Even)
    } else {
        (tokio_serial::DataBits::Eight, tokio_serial::Parity::None)
    }
}

async fn serial(path: PathBuf, baud: u32, tx: mpsc::Sender<SourceItem>) {
    let what = SourceSpec::Serial {
        path: path.clone(),
        baud,
    }
    .to_string();
    let (data_bits, parity) = serial_settings(baud);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let builder = tokio_serial::new(path.to_string_lossy(), baud)
            .data_bits(data_bits)
            .parity(parity)
            .stop_bits(tokio_serial::StopBits::One)
            .flow_control(tokio_serial::FlowControl::None);
        match tokio_serial::SerialStream::open(&builder) {
            Ok(port) => {
                tracing::info!("stream source {what}: open");
                match pump(port, &tx, &what).await {
                    Err(()) => return,
                    Ok(true) => backoff = FIRST_BACKOFF,
                    Ok(false) => {}
                }
            }
            Err(e) => tracing::warn!("stream source {what}: {e}; retrying in {backoff:?}"),
        }
        if !back_off(&mut backoff, &tx).await {
            return;
        }
    }
}
