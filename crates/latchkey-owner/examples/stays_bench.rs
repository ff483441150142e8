//! Stays sync figures for docs/BENCHMARKS.md: a year of bookings (150 stays over 365 days, plus
//! blocked weeks) synced through `Profile::sync_stays_text`, as `latchkey stays sync` does:
//!
//! ```text
//! cargo run --release -p latchkey-owner --example stays_bench [-- DOORS [short]]
//! ```
//!
//! Links are the self-contained long ones unless `short` is given: short links need nodes
//! that keep sealed invitations (`PUT /v1/invites`); each new stay then adds one blob write
//! per node that stores it.
//!
//! Three registry nodes and the device agents run in this process on loopback (real HTTP, real
//! SQLite files); keys and links are held in memory here (the CLI keeps them in the OS
//! keychain: one more D-Bus round trip per stay). Three runs: the first import, the same
//! export again (nothing may change), and an export with 10 stays cancelled and 10 moved.
//! Node writes are counted twice: what the sync report says the nodes acknowledged, and what
//! the nodes themselves counted (ops accepted plus mailbox posts, summed over the nodes).

#[path = "../tests/common/mod.rs"]
mod common;

use common::{start_nodes, MemorySeeds};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use latchkey_device::config::Driver;
use latchkey_device::lifecycle::{init, InitOptions};
use latchkey_node::RunningNode;
use latchkey_owner::{ClaimSource, Profile, StayChange, StayTimes, SystemClock};

const STAYS: i64 = 150;

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `YYYYMMDD` of today (UTC) plus `offset` days.
fn day(offset: i64) -> String {
    jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
        .checked_add(jiff::Span::new().days(offset))
        .unwrap()
        .strftime("%Y%m%d")
        .to_string()
}

/// 150 stays of two nights, one every ~2.4 days over the coming year, with a blocked weekend
/// between every tenth pair; `cancel` stays left out, `moved` stays a day later.
fn calendar(cancel: &[i64], moved: &[i64]) -> String {
    let mut s = String::from(
        "BEGIN:VCALENDAR\r\nPRODID:-//Airbnb Inc//Hosting Calendar 1.0//EN\r\nVERSION:2.0\r\n",
    );
    for i in 0..STAYS {
        let start = 1 + i * 365 / STAYS + i64::from(moved.contains(&i));
        if i % 10 == 5 {
            s.push_str(&format!(
                "BEGIN:VEVENT\r\nDTSTART;VALUE=DATE:{}\r\nDTEND;VALUE=DATE:{}\r\n\
                 UID:block-{i}@airbnb.com\r\nSUMMARY:Airbnb (Not available)\r\nEND:VEVENT\r\n",
                day(start + 2),
                day(start + 3)
            ));
        }
        if cancel.contains(&i) {
            continue;
        }
        s.push_str(&format!(
            "BEGIN:VEVENT\r\nDTSTART;VALUE=DATE:{}\r\nDTEND;VALUE=DATE:{}\r\n\
             UID:stay-{i}@airbnb.com\r\nSUMMARY:Reserved\r\nDESCRIPTION:Reservation URL: \
             https://www.airbnb.com/hosting/reservations/details/HM{i:08}\r\nEND:VEVENT\r\n",
            day(start),
            day(start + 2)
        ));
    }
    s.push_str("END:VCALENDAR\r\n");
    s
}

fn node_writes(nodes: &[RunningNode]) -> u64 {
    nodes
        .iter()
        .map(|n| {
            let m = n.metrics();
            m.ops_accepted.load(Ordering::Relaxed) + m.mailbox_posts.load(Ordering::Relaxed)
        })
        .sum()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let doors: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("DOORS is a number"))
        .unwrap_or(1);
    let tmp = tempfile::tempdir().unwrap();
    let nodes = start_nodes(tmp.path(), 3).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let host = Profile::at(
        &tmp.path().join("host"),
        Arc::new(MemorySeeds::default()),
        Arc::new(SystemClock),
    )
    .unwrap();
    host.create_seed().unwrap();
    host.add_nodes(&urls).unwrap();
    let mut agents = Vec::new();
    let mut ids = Vec::new();
    for d in 0..doors {
        let dir = tmp.path().join(format!("door{d}"));
        let claim = init(&InitOptions {
            dir: dir.clone(),
            name: format!("Door {d}"),
            listen: free_addr(),
            nodes: urls.clone(),
            actions: vec![("unlock".into(), Driver::Log)],
            advertise: vec![],
            mdns: false,
            refresh_secs: Some(1),
            max_view_age_secs: None,
            max_guest_staleness_secs: None,
            max_owner_staleness_secs: None,
            trust_clock: true,
        })
        .unwrap();
        agents.push(latchkey_device::agent::start(&dir).await.unwrap());
        let report = host
            .claim(ClaimSource::Text(&claim.claim_text), None)
            .await
            .unwrap();
        ids.push(report.device.to_string());
    }
    let doors_q: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut times = StayTimes::parse("15:00", "11:00", Some("Europe/Amsterdam")).unwrap();
    times.long_links = std::env::args().nth(2).as_deref() != Some("short");
    let cancelled: Vec<i64> = (0..10).map(|i| 20 + i * 12).collect();
    let moved: Vec<i64> = (0..10).map(|i| 26 + i * 12).collect();
    let runs = [
        ("first import", calendar(&[], &[])),
        ("same export again", calendar(&[], &[])),
        ("10 cancelled, 10 moved", calendar(&cancelled, &moved)),
    ];
    println!(
        "{} stays over 365 days, {} door(s), 3 nodes, {} links; calendar {} bytes",
        STAYS,
        doors,
        if times.long_links { "long" } else { "short" },
        runs[0].1.len()
    );
    println!("| run | added | unchanged | reissued | revoked | time | node writes (acked) | node writes (counted by nodes) |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (label, text) in &runs {
        let before = node_writes(&nodes);
        let report = host
            .sync_stays_text(&doors_q, "bench.ics", text, &times)
            .await
            .unwrap();
        let n = |c| report.count(c);
        println!(
            "| {label} | {} | {} | {} | {} | {:.2} s | {} | {} |",
            n(StayChange::Added),
            n(StayChange::Unchanged),
            n(StayChange::Reissued),
            n(StayChange::Revoked),
            report.elapsed_ms as f64 / 1e3,
            report.node_writes,
            node_writes(&nodes) - before
        );
    }
    drop(agents);
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}
