//! `latchkey`: the owner's command line, a thin front over latchkey-owner.
//!
//! Exit status: 0 on success; 1 on an error (printed as `error: …` with what to do next);
//! 2 when a device answered but refused the command (`open`).

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use latchkey_owner::keychain::KeyringStore;
use latchkey_owner::{ClaimSource, Profile, Route, SystemClock};
use latchkey_proto::command::{Outcome, RejectCode};
use zeroize::Zeroizing;

#[derive(Debug, Parser)]
#[command(
    name = "latchkey",
    version,
    about = "Own, open and share Latchkey devices without trusting a cloud"
)]
struct Cli {
    /// Profile directory (its store; the recovery phrase stays in the OS keychain).
    /// Default: ~/.local/share/latchkey.
    #[arg(long, global = true)]
    profile: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create a new recovery phrase in the OS keychain and show its 24 words once.
    Init,
    /// Bring an existing recovery phrase: reads the 24 words from standard input.
    Restore,
    /// Registry nodes this profile asks.
    Nodes {
        #[command(subcommand)]
        command: NodesCmd,
    },
    /// Take ownership of a device from the QR code it shows.
    Claim {
        /// A PNG or JPEG of the QR code (a screenshot or a photo).
        #[arg(long, conflicts_with = "text", required_unless_present = "text")]
        image: Option<PathBuf>,
        /// The code's text, LATCHKEY:C1:…
        #[arg(long)]
        text: Option<String>,
        /// A name for the device in this profile (default: the name it announces).
        #[arg(long)]
        name: Option<String>,
    },
    /// Devices this profile knows.
    Devices {
        #[arg(long)]
        json: bool,
    },
    /// Send an action to a device and print its signed answer (exit 0 only if it accepted).
    Open {
        /// Device id (lkdev1…), short id (XXXX-XXXX) or name.
        device: String,
        #[arg(long, default_value = "unlock")]
        action: String,
    },
}

#[derive(Debug, Subcommand)]
enum NodesCmd {
    /// Add registry node base URLs.
    Add {
        #[arg(required = true, num_args = 1..)]
        urls: Vec<String>,
    },
    /// List the configured nodes.
    List {
        #[arg(long)]
        json: bool,
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn profile_dir(cli: &Cli) -> anyhow::Result<PathBuf> {
    if let Some(dir) = &cli.profile {
        return Ok(dir.clone());
    }
    let home = std::env::var_os("HOME")
        .context("no --profile given and HOME is not set; pass --profile DIR")?;
    Ok(PathBuf::from(home).join(".local/share/latchkey"))
}

fn open_profile(cli: &Cli) -> anyhow::Result<Profile> {
    let dir = profile_dir(cli)?;
    let seeds = Arc::new(KeyringStore::open()?);
    Ok(Profile::at(&dir, seeds, Arc::new(SystemClock))?)
}

fn reject_name(code: u16) -> String {
    RejectCode::from_u16(code)
        .map(|c| format!("{c:?}"))
        .unwrap_or_else(|| "unknown".into())
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let profile = open_profile(&cli)?;
    match cli.command {
        Cmd::Init => {
            let phrase = profile.create_seed()?;
            let key = profile.identity()?.public_key();
            println!("Your recovery phrase (write it down now; it is shown only this once):");
            println!();
            for (i, word) in phrase.words().iter().enumerate() {
                print!("{:>2}. {:<10}", i + 1, word);
                if i % 6 == 5 {
                    println!();
                }
            }
            println!();
            println!(
                "It is stored in the OS keychain for profile {}.",
                profile.id()
            );
            println!("owner key: {key}");
            println!("next: latchkey nodes add URL...");
        }
        Cmd::Restore => {
            let mut text = Zeroizing::new(String::new());
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the recovery phrase from standard input")?;
            let key = profile.restore_seed(&text)?;
            println!(
                "recovery phrase stored in the OS keychain for profile {}",
                profile.id()
            );
            println!("owner key: {key}");
        }
        Cmd::Nodes { command } => match command {
            NodesCmd::Add { urls } => {
                let added = profile.add_nodes(&urls)?;
                println!(
                    "{added} node(s) added; {} configured",
                    profile.nodes()?.len()
                );
            }
            NodesCmd::List { json } => {
                let nodes = profile.nodes()?;
                if json {
                    println!("{}", serde_json::json!({ "nodes": nodes }));
                } else if nodes.is_empty() {
                    println!("no nodes; add some with `latchkey nodes add URL...`");
                } else {
                    for n in nodes {
                        println!("{n}");
                    }
                }
            }
        },
        Cmd::Claim { image, text, name } => {
            let source = match (&image, &text) {
                (Some(path), _) => ClaimSource::Image(path),
                (None, Some(text)) => ClaimSource::Text(text),
                (None, None) => anyhow::bail!("give --image PNG or --text PAYLOAD"),
            };
            let report = profile.claim(source, name.as_deref()).await?;
            if report.already_owned {
                println!("{} ({}) is already yours", report.name, report.device);
            } else {
                println!("claimed {} ({})", report.name, report.device);
                println!(
                    "stored on {} node(s); visible on a quorum after {} ms",
                    report.nodes_stored, report.visible_after_ms
                );
                if report.device_confirmed {
                    println!("the device confirmed it is yours");
                } else {
                    println!("the device will learn it from the nodes within its refresh interval");
                }
            }
        }
        Cmd::Devices { json } => {
            let me = profile.identity().ok().map(|k| k.public_key());
            let devices = profile.devices()?;
            if json {
                let list: Vec<_> = devices
                    .iter()
                    .map(|d| {
                        let s = d.chain.state();
                        serde_json::json!({
                            "id": d.id.to_string(),
                            "short": d.id.short(),
                            "name": d.name,
                            "addrs": d.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                            "owners": s.owners.iter().map(|o| o.to_string()).collect::<Vec<_>>(),
                            "threshold": s.threshold,
                            "mine": me.is_some_and(|k| s.is_owner(&k)),
                            "seq": s.seq,
                            "verified_at_ms": d.verified_at_ms,
                        })
                    })
                    .collect();
                println!("{}", serde_json::json!({ "devices": list }));
            } else if devices.is_empty() {
                println!("no devices; claim one with `latchkey claim --image PNG`");
            } else {
                for d in devices {
                    let s = d.chain.state();
                    let role = if me.is_some_and(|k| s.is_owner(&k)) {
                        "owner"
                    } else {
                        "-"
                    };
                    println!(
                        "{}  {:<24} {}  owners {}/{}  {}",
                        d.id.short(),
                        d.name,
                        role,
                        s.threshold,
                        s.owners.len(),
                        d.id
                    );
                }
            }
        }
        Cmd::Open { device, action } => {
            let report = profile.open(&device, &action, b"").await?;
            let route = match &report.route {
                Route::Direct(a) => format!("directly at {a}"),
                Route::Relay(n) => format!("through {n}"),
            };
            let r = &report.response;
            match &r.outcome {
                Outcome::Accepted => {
                    println!(
                        "{}: {} accepted ({route}, {} ms, signed by the device)",
                        report.device.name, report.action, report.latency_ms
                    );
                    if !r.body.is_empty() {
                        print!("{}", String::from_utf8_lossy(&r.body));
                    }
                }
                Outcome::Rejected { code, reason } => {
                    eprintln!(
                        "{}: {} refused by the device: {} (code {code}): {reason}",
                        report.device.name,
                        report.action,
                        reject_name(*code)
                    );
                    return Ok(ExitCode::from(2));
                }
                Outcome::ChallengeRequired { .. } => {
                    anyhow::bail!("the device kept asking for a challenge")
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
