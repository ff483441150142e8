//! `latchkey-provider`: a data provider's command line — an identity in the OS keychain,
//! consent request links, the consents it holds, and a reader for the streams it was given.
//!
//! Exit status: 0 on success; 1 on an error (printed as `error: …` with what to do next);
//! 2 when `read` (without `--follow`) stopped because the consent ended (revoked or expired).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use latchkey_proto::keys::DeviceId;
use latchkey_provider::keychain::{KeyringStore, SecretStore};
use latchkey_provider::output::{self, Format};
use latchkey_provider::read::{self, ReadEvent, ReadOptions};
use latchkey_provider::request::{self, RequestSpec};
use latchkey_provider::{profile, Profile};

// The owner's CLI and this one read times alike: one source file, shared.
#[path = "../../latchkey-cli/src/when.rs"]
mod when;

#[derive(Debug, Parser)]
#[command(
    name = "latchkey-provider",
    version,
    about = "Ask a device's owner for consent to read its data stream, and read it while consent lasts"
)]
struct Cli {
    /// Profile directory (public identity, requests, sealed stream keys; the secrets stay in
    /// the OS keychain). Default: $LATCHKEY_PROVIDER_PROFILE, else
    /// $XDG_DATA_HOME/latchkey-provider.
    #[arg(long, global = true)]
    profile: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create this provider's identity: signing and KEM keys in the OS keychain.
    Init {
        /// The name owners see in requests (1-64 bytes).
        #[arg(long)]
        name: String,
        /// A web address owners can look the provider up at.
        #[arg(long, default_value = "")]
        url: String,
        #[arg(long)]
        json: bool,
    },
    /// Ask a device's owner for consent: prints a link and its QR code to hand to the owner.
    Request {
        /// Device id (lkdev1…).
        device: String,
        #[arg(long)]
        stream: String,
        /// Why, in plain words (1-500 bytes).
        #[arg(long)]
        purpose: String,
        /// insights, billing, research, grid, monitoring or other.
        #[arg(long, default_value = "other")]
        purpose_code: String,
        /// How long the provider keeps readings.
        #[arg(long, default_value_t = 30)]
        retention_days: u32,
        /// End of the consent: +2h, +30d, 2027-01-01, 2027-01-01T00:00:00Z (default: open-ended).
        #[arg(long)]
        until: Option<String>,
        /// Also ask for the keys of readings published before the consent.
        #[arg(long)]
        history: bool,
        /// Terms offered, recorded with the consent (e.g. "500 units per hour").
        #[arg(long)]
        terms: Option<String>,
        /// Print JSON (id, link, request fields) and no QR code.
        #[arg(long)]
        json: bool,
    },
    /// The consents this provider asked for and the stream keys it holds.
    Status {
        /// Fetch the current key messages from this broker first (mqtt://HOST:PORT).
        #[arg(long)]
        broker: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Read and decrypt a device's stream with the keys it was given.
    Read {
        /// Device id (lkdev1…).
        device: String,
        #[arg(long)]
        stream: String,
        /// The home broker, mqtt://HOST:PORT.
        #[arg(long)]
        broker: String,
        /// A registry node (repeatable): the device's identity key comes from its verified
        /// chain, and a cut-off is explained from the verified consent log.
        #[arg(long = "node")]
        nodes: Vec<String>,
        /// Keep reading (until Ctrl-C), even after the consent ends.
        #[arg(long)]
        follow: bool,
        #[arg(long, default_value = "json")]
        format: Format,
        /// Stop after this many readings (default without --follow: 10).
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this many seconds (default without --follow: 60).
        #[arg(long)]
        timeout_secs: Option<u64>,
        /// How long a reading under an unknown key waits for its key message.
        #[arg(long, default_value_t = 3)]
        grace_secs: u64,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn parse_device(text: &str) -> anyhow::Result<DeviceId> {
    let t = text.trim();
    if t.len() == 64 {
        if let Ok(bytes) = hex::decode(t) {
            return Ok(DeviceId(bytes.try_into().expect("64 hex digits")));
        }
    }
    DeviceId::parse(t).with_context(|| format!("\"{t}\" is not a device id (lkdev1…)"))
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let dir = cli.profile.unwrap_or_else(profile::default_dir);
    match cli.command {
        Cmd::Init { name, url, json } => {
            let store = KeyringStore::open()?;
            let p = Profile::init(&dir, &name, &url, &store, &mut rand::rngs::OsRng, now_ms())?;
            let id = p.identity();
            if json {
                println!("{}", serde_json::to_string_pretty(id)?);
            } else {
                println!("provider {} created in {}", id.name, dir.display());
                println!("signing key: {}", id.signing_key);
                println!(
                    "secrets: OS keychain, service {}, account {}",
                    latchkey_provider::keychain::SERVICE,
                    id.account
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Request {
            device,
            stream,
            purpose,
            purpose_code,
            retention_days,
            until,
            history,
            terms,
            json,
        } => {
            let p = Profile::open(&dir)?;
            let store = KeyringStore::open()?;
            let secrets = p.secrets(&store)?;
            let now = now_ms();
            let spec = RequestSpec {
                device: parse_device(&device)?,
                stream,
                purpose_code: request::parse_purpose_code(&purpose_code)?,
                purpose,
                retention_days,
                until_ms: until.as_deref().map(|u| when::parse(u, now)).transpose()?,
                history,
                terms,
            };
            let (_, record) =
                request::make_request(&p, &secrets, spec, now, &mut rand::rngs::OsRng)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&record)?);
            } else {
                println!("{}", request::terminal_qr(&record.link)?);
                println!(
                    "Hand this link (or the QR code above) to the owner of {}:",
                    record.device
                );
                println!("{}", record.link);
                println!("consent id: {}", record.id);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status { broker, json } => status(&dir, broker, json).await,
        Cmd::Read {
            device,
            stream,
            broker,
            nodes,
            follow,
            format,
            count,
            timeout_secs,
            grace_secs,
        } => {
            let p = Profile::open(&dir)?;
            let store = KeyringStore::open()?;
            let (count, timeout) = if follow {
                (count, timeout_secs)
            } else {
                (Some(count.unwrap_or(10)), Some(timeout_secs.unwrap_or(60)))
            };
            let opts = ReadOptions {
                device: parse_device(&device)?,
                stream,
                broker,
                nodes,
                follow,
                count,
                timeout: timeout.map(Duration::from_secs),
                grace: Duration::from_secs(grace_secs),
            };
            if format == Format::Csv {
                println!("{}", output::csv_header());
            }
            let mut sink = move |event: ReadEvent| match event {
                ReadEvent::Reading {
                    seq,
                    key_id,
                    reading,
                } => {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{}", output::line(format, seq, key_id, &reading));
                    let _ = out.flush();
                }
                ReadEvent::Notice(text) => eprintln!("{text}"),
            };
            let stop = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            let summary = read::read(&p, &store, opts, stop, &mut sink).await?;
            if summary.cut_off.is_some() && !follow {
                return Ok(ExitCode::from(2));
            }
            if !follow && summary.readings == 0 {
                bail!(
                    "no reading arrived within {} s; check that the device publishes on this broker and stream",
                    timeout.unwrap_or(0)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn status(
    dir: &std::path::Path,
    broker: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let p = Profile::open(dir)?;
    let mut notes = Vec::new();
    if let Some(broker) = broker {
        let store = KeyringStore::open()?;
        let secrets = p.secrets(&store as &dyn SecretStore)?;
        notes = read::refresh_keys(&p, &secrets, &broker, Duration::from_secs(2)).await?;
    }
    let id = p.identity();
    let requests = p.requests()?;
    let streams = p.streams()?;
    let devices = p.devices()?;
    if json {
        let streams: Vec<serde_json::Value> = streams
            .iter()
            .map(|s| {
                let mut v = serde_json::to_value(s).expect("plain data");
                v["current_key_id"] = serde_json::json!(s.key_ids.last());
                v
            })
            .collect();
        let v = serde_json::json!({
            "provider": { "name": id.name, "url": id.url, "signing_key": id.signing_key,
                          "account": id.account, "profile": dir.display().to_string() },
            "requests": requests,
            "streams": streams,
            "devices": devices,
            "notes": notes,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("provider {} ({})", id.name, id.signing_key);
    if requests.is_empty() {
        println!("no consent requests yet; make one with `latchkey-provider request DEVICE --stream NAME --purpose TEXT`");
    }
    for r in &requests {
        let until = r
            .until_ms
            .map(|u| format!(" until {}", when::show(u)))
            .unwrap_or_default();
        println!(
            "request {} for {} {}: {} ({}){until}",
            &r.id[..12],
            r.device,
            r.stream,
            r.purpose,
            r.purpose_label
        );
    }
    for s in &streams {
        let keys = match s.key_ids.last() {
            Some(k) => format!(
                "current key id {k} (held: {})",
                s.key_ids
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => "no key received".to_owned(),
        };
        let last = s
            .last_seq
            .map(|q| format!(", last seq {q}"))
            .unwrap_or_default();
        println!("stream {} {}: {keys}{last}", s.device, s.stream);
        if let Some(c) = &s.cut_off {
            println!("  cut off from seq {}: {}", c.from_seq, c.why);
        }
    }
    for n in notes {
        eprintln!("{n}");
    }
    Ok(ExitCode::SUCCESS)
}
