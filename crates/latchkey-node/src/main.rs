//! `latchkey-node`: a Latchkey registry node (docs/API.md), and `latchkey-node bench`, a load
//! tool that drives one on loopback (docs/SCALE.md, docs/BENCHMARKS.md).

mod bench;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use latchkey_node::{DbLocation, Limits, NodeConfig, Rate, Url};
use tracing_subscriber::EnvFilter;

/// A Latchkey registry node: stores ownership chains, replicates from peers, relays mailboxes.
#[derive(Debug, Parser)]
// A subcommand stands alone: without one the flags below run the node, as they always did.
#[command(
    name = "latchkey-node",
    version,
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Address to listen on, e.g. 0.0.0.0:7400 (port 0 picks a free port).
    #[arg(long, required = true)]
    listen: Option<SocketAddr>,
    /// Where the data lives: a SQLite file (created if missing), or a PostgreSQL URL
    /// (`postgres://user:password@host/dbname`) that several node processes may share.
    #[arg(long, value_parser = parse_db, required = true)]
    db: Option<DbLocation>,
    /// Base URL of a node to replicate from; repeat for several.
    #[arg(long = "peer", value_name = "URL")]
    peers: Vec<Url>,
    /// Milliseconds between pulls of each peer's feed once caught up.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    sync_interval_ms: u64,
    /// Op posts per second per client IP (0 turns the limit off); bursts of 5x.
    #[arg(long, value_name = "N")]
    ops_rate: Option<u32>,
    /// Mailbox posts per second per client IP (0 turns the limit off); bursts of 3x.
    #[arg(long, value_name = "N")]
    mailbox_rate: Option<u32>,
    /// Other requests per second per client IP (0 turns the limit off); bursts of 5x.
    #[arg(long, value_name = "N")]
    read_rate: Option<u32>,
    /// Ordinary requests (long polls apart) served at once.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_requests: Option<u64>,
    /// Ordinary requests one client address may have in flight at once.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_requests_per_address: Option<u64>,
    /// Long polls held at once (a pool of their own).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_long_polls: Option<u64>,
    /// Long polls one client address may hold at once.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_long_polls_per_address: Option<u64>,
    /// Live messages one sender may hold in one device or owner mailbox.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    mailbox_per_sender: Option<u64>,
    /// Live messages one client address may hold across all mailboxes.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    mailbox_per_address: Option<u64>,
    /// Live messages the node holds across all mailboxes.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    mailbox_capacity: Option<u64>,
    /// Verified chains kept in memory with their encoded answers (a read of any other is
    /// loaded and verified from genesis first); docs/SCALE.md sizes it.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_cached_chains: Option<u64>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Drive a node on loopback with chain reads, op posts and mailbox traffic, and print
    /// throughput and latency percentiles (docs/BENCHMARKS.md, "Registry at scale").
    Bench(bench::BenchArgs),
}

fn parse_db(text: &str) -> Result<DbLocation, String> {
    if text.is_empty() {
        return Err("give a SQLite file path or a postgres:// URL".into());
    }
    Ok(DbLocation::parse(text))
}

fn cap(flag: Option<u64>, default: usize) -> usize {
    flag.map_or(default, |n| usize::try_from(n).unwrap_or(usize::MAX))
}

fn rate(flag: Option<u32>, default: Option<Rate>, burst: u32) -> Option<Rate> {
    match flag {
        None => default,
        Some(0) => None,
        Some(n) => Some(Rate::new(n, n.saturating_mul(burst))),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    if let Some(Command::Bench(args)) = cli.command {
        return bench::run(args).await;
    }
    // clap requires both without a subcommand.
    let (Some(listen), Some(db)) = (cli.listen, cli.db) else {
        anyhow::bail!("--listen and --db are required");
    };

    let defaults = Limits::default();
    let limits = Limits {
        ops_rate: rate(cli.ops_rate, defaults.ops_rate, 5),
        mailbox_rate: rate(cli.mailbox_rate, defaults.mailbox_rate, 3),
        read_rate: rate(cli.read_rate, defaults.read_rate, 5),
        max_concurrent_requests: cap(cli.max_requests, defaults.max_concurrent_requests),
        max_requests_per_address: cap(
            cli.max_requests_per_address,
            defaults.max_requests_per_address,
        ),
        max_long_polls: cap(cli.max_long_polls, defaults.max_long_polls),
        max_long_polls_per_address: cap(
            cli.max_long_polls_per_address,
            defaults.max_long_polls_per_address,
        ),
        mailbox_per_sender: cap(cli.mailbox_per_sender, defaults.mailbox_per_sender),
        mailbox_per_address: cap(cli.mailbox_per_address, defaults.mailbox_per_address),
        mailbox_total_capacity: cap(cli.mailbox_capacity, defaults.mailbox_total_capacity),
        max_cached_chains: cap(cli.max_cached_chains, defaults.max_cached_chains),
        ..defaults
    };
    let config = NodeConfig {
        peers: cli.peers,
        sync_interval: Duration::from_millis(cli.sync_interval_ms),
        limits,
        ..NodeConfig::new(listen, db.clone())
    };
    let node = latchkey_node::start(config)
        .await
        .with_context(|| format!("starting the node on {db}"))?;
    println!("listening on {}", node.url());
    use std::io::Write;
    std::io::stdout().flush().ok();

    shutdown_signal().await;
    tracing::info!("shutting down");
    node.shutdown().await.context("shutting down")?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
