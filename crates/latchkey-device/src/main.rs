//! `latchkeyd`: the Latchkey device agent's command line. Every command is a thin front over
//! the library (`latchkey_device`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use latchkey_device::audit::{AuditBody, SignedEntry, Stage};
use latchkey_device::config::{parse_action_option, parse_stream_option};
use latchkey_device::lifecycle::{self, ClaimReport, InitOptions, StatusReport, StreamOptions};
use latchkey_device::stream::dsmr::{read_frame, TelegramFramer};
use latchkey_proto::stream::ReadingView;

#[derive(Debug, Parser)]
#[command(
    name = "latchkeyd",
    version,
    about = "Latchkey device agent: claim QR, verified commands, actuators, audit log"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

// Parsed once per run: the size of `Init`'s options costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create the device: keys, config (DIR/latchkeyd.toml), claim QR (terminal, DIR/claim.png, DIR/claim.txt).
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// Name shown to owners (at most 64 bytes; the QR shows the first 24).
        #[arg(long)]
        name: String,
        /// Local HTTP address for commands, e.g. 0.0.0.0:7500.
        #[arg(long)]
        listen: SocketAddr,
        /// Registry node base URL; give several.
        #[arg(long = "node", required = true, num_args = 1..)]
        nodes: Vec<String>,
        /// NAME=DRIVER:SPEC, e.g. unlock=exec:/usr/local/bin/open-door (drivers: exec, http, mqtt, gpio, log).
        #[arg(long = "action")]
        actions: Vec<String>,
        /// Address for the claim QR (IP:PORT or host.local:PORT) instead of the derived ones.
        #[arg(long)]
        advertise: Vec<String>,
        /// Do not advertise on mDNS.
        #[arg(long)]
        no_mdns: bool,
        /// Seconds between ownership checks (default 60).
        #[arg(long)]
        refresh_secs: Option<u64>,
        /// Re-check the nodes before acting when the last quorum is older than this (default 300).
        #[arg(long)]
        max_view_age_secs: Option<u64>,
        /// Refuse guests once the last quorum of registry nodes is older than this (default 900).
        #[arg(long)]
        max_guest_staleness_secs: Option<u64>,
        /// Refuse owners once the device has been up this long without a quorum (default 86400; 0 = never).
        #[arg(long)]
        max_owner_staleness_secs: Option<u64>,
        /// Never trust the system clock: every command needs a challenge round trip.
        #[arg(long)]
        untrusted_clock: bool,
        /// NAME=dsmr:SOURCE, a data stream to seal and publish (SOURCE: serial:/dev/ttyUSB0[@BAUD], tcp:HOST:PORT or file:PATH[@RATE]); give several.
        #[arg(long = "stream")]
        streams: Vec<String>,
        /// The MQTT broker streams are published on, e.g. mqtt://127.0.0.1:1883.
        #[arg(long)]
        broker: Option<String>,
        /// Also publish this stream's 1-minute average and hourly energy in clear (the free tier).
        #[arg(long = "free-aggregate")]
        free_aggregate: Vec<String>,
    },
    /// Serve commands until stopped (SIGINT or SIGTERM).
    Run {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Factory reset: new setup key, reset op signed by the device key, new claim QR. Owners and grants lose all power.
    Reset {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Who owns the device (as verified), how fresh that is, where it is reachable.
    Status {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        json: bool,
        /// Also ask the registry nodes now.
        #[arg(long)]
        check: bool,
    },
    /// Data streams (smart-meter readings): check what a meter writes.
    Stream {
        #[command(subcommand)]
        command: StreamCmd,
    },
    /// Print the audit log and verify its hash chain and signatures (exit code 1 if it does not verify).
    Audit {
        #[arg(long)]
        dir: PathBuf,
        /// Show only the newest N entries (all are verified).
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum StreamCmd {
    /// Read a recording of telegrams: one reading per telegram (a JSON line each with --json); exit code 1 with the line and reason at the first bad telegram.
    Parse {
        /// The telegram format.
        #[arg(long, value_enum, default_value_t = StreamFormat::Dsmr)]
        format: StreamFormat,
        /// A file of telegrams as the meter wrote them (e.g. captured with `cat /dev/ttyUSB0`).
        file: PathBuf,
        /// Print each reading as one JSON line.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum StreamFormat {
    /// DSMR P1 telegrams (DSMR 2.2 to 5.0, Belgian e-MUCS).
    Dsmr,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
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
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Cmd) -> anyhow::Result<ExitCode> {
    match command {
        Cmd::Init {
            dir,
            name,
            listen,
            nodes,
            actions,
            advertise,
            no_mdns,
            refresh_secs,
            max_view_age_secs,
            max_guest_staleness_secs,
            max_owner_staleness_secs,
            untrusted_clock,
            streams,
            broker,
            free_aggregate,
        } => {
            let actions = actions
                .iter()
                .map(|a| parse_action_option(a))
                .collect::<Result<Vec<_>, _>>()?;
            let streams = streams
                .iter()
                .map(|s| parse_stream_option(s))
                .collect::<Result<Vec<_>, _>>()?;
            let report = lifecycle::init_with_streams(
                &InitOptions {
                    dir: dir.clone(),
                    name,
                    listen,
                    nodes,
                    actions,
                    advertise,
                    mdns: !no_mdns,
                    refresh_secs,
                    max_view_age_secs,
                    max_guest_staleness_secs,
                    max_owner_staleness_secs,
                    trust_clock: !untrusted_clock,
                },
                &StreamOptions {
                    streams,
                    broker,
                    free_aggregate,
                },
            )?;
            print_claim(&report);
            println!("config: {}", dir.join("latchkeyd.toml").display());
            println!("next: latchkeyd run --dir {}", dir.display());
        }
        Cmd::Run { dir } => {
            let running = latchkey_device::agent::start(&dir)
                .await
                .with_context(|| format!("starting the agent in {}", dir.display()))?;
            println!("listening on {}", running.url());
            println!("device {}", running.agent().device_id());
            wait_for_stop().await?;
            tracing::info!("stopping");
            running.shutdown().await?;
        }
        Cmd::Reset { dir } => {
            let report = lifecycle::reset(&dir).await?;
            println!(
                "factory reset done (op {}): previous owners and grants have no power now",
                report.seq
            );
            match &report.published {
                Ok(n) => println!("reset published to {n} node(s)"),
                Err(e) => println!(
                    "reset not yet published ({e}); `latchkeyd run` publishes it when nodes are reachable"
                ),
            }
            print_claim(&report.claim);
        }
        Cmd::Status { dir, json, check } => {
            let report = lifecycle::status(&dir, check).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_status(&report);
            }
        }
        Cmd::Stream {
            command:
                StreamCmd::Parse {
                    format: StreamFormat::Dsmr,
                    file,
                    json,
                },
        } => return parse_recording(&file, json),
        Cmd::Audit { dir, limit, json } => {
            let dump = lifecycle::audit_log(&dir)?;
            let shown = match limit {
                Some(n) => &dump.entries[dump.entries.len().saturating_sub(n)..],
                None => &dump.entries[..],
            };
            if json {
                let entries: Vec<_> = shown.iter().map(entry_json).collect();
                let out = serde_json::json!({
                    "entries": entries,
                    "verified": dump.verified.is_ok(),
                    "problem": dump.verified.as_ref().err().map(|e| e.to_string()),
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                for e in shown {
                    println!("{}", entry_line(e));
                }
            }
            match dump.verified {
                Ok(()) => eprintln!("audit log verifies: {} entries", dump.entries.len()),
                Err(e) => {
                    eprintln!("AUDIT LOG TAMPERED: {e}");
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `latchkeyd stream parse`: every telegram in `file`, in order, until the first bad one.
fn parse_recording(file: &std::path::Path, json: bool) -> anyhow::Result<ExitCode> {
    use std::io::{Read, Write};
    let mut input =
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut framer = TelegramFramer::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = std::io::stdout().lock();
    let mut count = 0usize;
    loop {
        let n = input
            .read(&mut buf)
            .with_context(|| format!("reading {}", file.display()))?;
        let frames = if n == 0 {
            framer.finish().into_iter().collect()
        } else {
            framer.push(&buf[..n])
        };
        for frame in frames {
            match read_frame(frame) {
                Ok(reading) => {
                    count += 1;
                    let view = reading.view();
                    if json {
                        writeln!(out, "{}", serde_json::to_string(&view)?)?;
                    } else {
                        writeln!(out, "{}", reading_line(&view))?;
                    }
                }
                Err((line, reason)) => {
                    out.flush()?;
                    eprintln!("{} line {line}: {reason}", file.display());
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        if n == 0 {
            break;
        }
    }
    if count == 0 {
        eprintln!(
            "{}: no telegram (a telegram starts with '/' and ends with a '!' line)",
            file.display()
        );
        return Ok(ExitCode::FAILURE);
    }
    eprintln!("{count} telegram(s) read, all valid");
    Ok(ExitCode::SUCCESS)
}

/// One reading on one line, for people.
fn reading_line(v: &ReadingView) -> String {
    let kw = |x: Option<f64>| x.map_or("-".to_owned(), |x| format!("{x:.3}"));
    let list = |l: &[f64]| {
        l.iter()
            .map(|x| format!("{x:.3}"))
            .collect::<Vec<_>>()
            .join("/")
    };
    let mut line = format!(
        "{}  tariff {}  power +{} -{} kW",
        v.meter_time.as_deref().unwrap_or("(no meter time)"),
        v.tariff.map_or("-".to_owned(), |t| t.to_string()),
        kw(v.power_delivered_kw),
        kw(v.power_returned_kw),
    );
    if !v.energy_delivered_kwh.is_empty() || !v.energy_returned_kwh.is_empty() {
        line += &format!(
            "  energy +{} -{} kWh",
            list(&v.energy_delivered_kwh),
            list(&v.energy_returned_kwh)
        );
    }
    for (i, p) in v.phases.iter().enumerate() {
        line += &format!(
            "  L{} {} V {} A",
            i + 1,
            p.voltage_v.map_or("-".to_owned(), |x| format!("{x:.1}")),
            p.current_a.map_or("-".to_owned(), |x| format!("{x:.2}"))
        );
    }
    if let Some(gas) = v.gas_m3 {
        line += &format!(
            "  gas {gas:.3} m3 at {}",
            v.gas_time.as_deref().unwrap_or("-")
        );
    }
    line
}

async fn wait_for_stop() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

fn print_claim(report: &ClaimReport) {
    println!("{}", report.terminal_qr);
    println!("device {} ({})", report.device.short(), report.name);
    println!("id     {}", report.device);
    println!(
        "scan the QR with the Latchkey app to claim this device; it is also in {}",
        report.png.display()
    );
}

fn print_status(s: &StatusReport) {
    println!("device   {} ({}) {}", s.short_id, s.name, s.device);
    println!(
        "agent    {}",
        if s.agent_running {
            "running"
        } else {
            "not running"
        }
    );
    println!("setup    {}", s.setup_code);
    if s.claimed {
        println!("owners   {} (threshold {})", s.owners.len(), s.threshold);
        for o in &s.owners {
            println!("         {o}");
        }
    } else {
        println!("owners   none: unclaimed, waiting for its QR to be scanned");
        if !s.setup_key_matches {
            println!(
                "WARNING  the key file's setup key is not the chain's: run `latchkeyd reset` again"
            );
        }
    }
    println!("chain    seq {} head {}", s.seq, &s.head[..16]);
    let f = &s.freshness;
    let age = f
        .last_quorum_age_s
        .map_or("never".to_owned(), |a| format!("{a} s ago"));
    println!(
        "verified {} by a quorum ({}/{} answers){}",
        age,
        f.answers,
        f.needed,
        if f.stale {
            " — STALE, using the cached view"
        } else {
            ""
        }
    );
    let since = |s: Option<u64>, none: &str| {
        s.map_or(none.to_owned(), |s| {
            format!("{} min without a quorum", s / 60)
        })
    };
    println!(
        "guests   {} ({}; limit {} min)",
        if f.guests_refused {
            "REFUSED: the door cannot confirm invitations"
        } else {
            "accepted"
        },
        since(f.last_quorum_age_s, "no quorum since the device started"),
        f.max_guest_staleness_s / 60
    );
    println!(
        "owners   {} ({}; limit {})",
        if f.owners_refused {
            "REFUSED: the door cannot confirm its owners"
        } else {
            "accepted"
        },
        f.owner_view_age_s
            .map_or("never confirmed by a quorum".to_owned(), |s| format!(
                "{} min of up-time without a quorum",
                s / 60
            )),
        if f.max_owner_staleness_s == 0 {
            "none".to_owned()
        } else {
            format!("{} min", f.max_owner_staleness_s / 60)
        }
    );
    if let Some(m) = &s.clock.message {
        println!("clock    {m}");
    }
    if let Some(p) = &f.problem {
        println!("problem  {p}");
    }
    if f.forks > 0 {
        println!(
            "ALARM    {} fork(s): two valid ownership histories exist; the device keeps its own (the one it endorsed) — owners: find out who signed the other (a leaked claim code, or owners signing two changes)",
            f.forks
        );
    }
    if f.endorsement_unpublished {
        println!("endorse  the device's endorsement of its owners is not on any node yet; retried at every check");
    }
    if let Some(c) = &s.live_check {
        match (&c.problem, c.seq) {
            (_, Some(seq)) => println!(
                "nodes    now: seq {seq}, {} owner(s), {} answers{}",
                c.owners.len(),
                c.answers,
                if c.quorum { "" } else { " (no quorum)" }
            ),
            (Some(p), None) => println!("nodes    now: {p}"),
            (None, None) => {}
        }
    }
    println!("listen   {}", s.addresses.listen);
    for a in &s.addresses.claim {
        println!("address  {a}");
    }
    for n in &s.addresses.nodes {
        println!("node     {n}");
    }
    println!("mailbox  {}", s.addresses.mailbox);
    for (a, args) in s.actions.iter().zip(&s.action_arguments) {
        println!("action   {a}");
        println!("         {}", args.note);
    }
    println!("audit    {} entries", s.audit_entries);
    for st in &s.streams {
        println!(
            "stream   {} ({} from {}) on {}{}",
            st.name,
            st.format,
            st.source,
            st.broker.as_deref().unwrap_or("-"),
            if st.free_aggregate {
                ", free tier on"
            } else {
                ""
            }
        );
        println!(
            "         key {}, {} published, {} bad telegrams dropped, {} dropped (broker queue full), {} active consent(s)",
            st.key_id.map_or("-".to_owned(), |k| k.to_string()),
            st.published,
            st.bad_telegrams,
            st.dropped,
            st.active_consents
        );
        if let Some(b) = &st.last_bad {
            println!("         last bad telegram: {b}");
        }
    }
}

fn entry_line(e: &SignedEntry) -> String {
    let time = e.entry.time_ms.map_or("-".into(), |t| t.to_string());
    let sender = match &e.entry.body {
        AuditBody::Decision(r) => r.sender.map(|s| s.short()),
        AuditBody::Running(r) => Some(r.sender.short()),
        _ => None,
    };
    format!(
        "#{} {time} {}{}",
        e.entry.seq,
        e.entry.body.describe(&|ms| ms.to_string()),
        sender.map_or(String::new(), |s| format!(" sender={s}")),
    )
}

fn entry_json(e: &SignedEntry) -> serde_json::Value {
    let entry = &e.entry;
    let mut out = serde_json::json!({
        "seq": entry.seq,
        "era": hex::encode(entry.era),
        "time_ms": entry.time_ms,
        "kind": entry.body.kind_name(),
        "text": entry.body.describe(&|ms| ms.to_string()),
    });
    let more = match &entry.body {
        AuditBody::Decision(r) => serde_json::json!({
            "via": format!("{:?}", r.via).to_lowercase(),
            "envelope": hex::encode(r.envelope),
            "sender": r.sender.map(|s| s.to_string()),
            "command": r.command.map(|c| hex::encode(c.0)),
            "action": r.action,
            "args_len": r.args.map(|a| a.len),
            "args_hash": r.args.map(|a| hex::encode(a.hash)),
            "code": r.code,
            "stage": r.stage.name(),
            "accepted": r.code == 0 && r.stage == Stage::Action,
            "detail": r.detail,
            "stale_view": r.view.stale,
            "view_age_s": r.view.age_s,
        }),
        AuditBody::Running(r) => serde_json::json!({
            "via": format!("{:?}", r.via).to_lowercase(),
            "envelope": hex::encode(r.envelope),
            "sender": r.sender.to_string(),
            "command": hex::encode(r.command.0),
            "action": r.action,
            "args_len": r.args.len,
            "args_hash": hex::encode(r.args.hash),
            "by_owner": r.by_owner,
        }),
        AuditBody::Refusals(s) => serde_json::json!({
            "first_ms": s.first_ms,
            "last_ms": s.last_ms,
            "total": s.total(),
            "rows": s.rows.iter().map(|r| serde_json::json!({
                "class": r.class.name(),
                "stage": r.stage.name(),
                "code": r.code,
                "count": r.count,
            })).collect::<Vec<_>>(),
        }),
        AuditBody::Pruned(p) => serde_json::json!({
            "first": p.first,
            "last": p.last,
            "unfetched": p.unfetched,
        }),
        AuditBody::EraStart(e) => serde_json::json!({
            "cause": e.cause.name(),
            "op_seq": e.op_seq,
        }),
    };
    if let (Some(out), serde_json::Value::Object(more)) = (out.as_object_mut(), more) {
        out.extend(more);
    }
    out
}
