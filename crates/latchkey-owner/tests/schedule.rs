//! Weekly schedules from the owner core to a real device agent over loopback, with real
//! registry nodes: an invitation carries the schedule (grant extension 0x81), the owner's grant
//! list and the guest's held invitation show it, and the door lets the guest in on the days it
//! names and refuses it on the others (`OutsideSchedule`, worded for people).

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{start_nodes, MemorySeeds};
use latchkey_device::lifecycle::init;
use latchkey_owner::{explain, ClaimSource, Clock, InviteRequest, Profile, SystemClock};
use latchkey_proto::command::{Outcome, RejectCode};
use latchkey_proto::schedule::WeeklySchedule;

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const DAY_MS: u64 = 86_400_000;

fn profile(dir: &Path, nodes: &[String]) -> Profile {
    let p = Profile::at(dir, Arc::new(MemorySeeds::default()), Arc::new(SystemClock)).unwrap();
    p.create_seed().unwrap();
    p.add_nodes(nodes).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_invitation_opens_on_its_days_only() {
    // Today's weekday in UTC (1970-01-01 was a Thursday); not within a minute of midnight, so
    // the day cannot change between issuing and opening.
    let mut now = SystemClock.now_ms();
    if DAY_MS - now % DAY_MS < 60_000 {
        tokio::time::sleep(std::time::Duration::from_millis(
            DAY_MS - now % DAY_MS + 1_000,
        ))
        .await;
        now = SystemClock.now_ms();
    }
    let today = ((now / DAY_MS + 3) % 7) as usize;
    let other_days: Vec<&str> = (0..7).filter(|d| *d != today).map(|d| DAYS[d]).collect();
    let today_only = format!("{} 00:00-24:00", DAYS[today]);
    let not_today = format!("{} 00:00-24:00", other_days.join(","));

    let tmp = tempfile::tempdir().unwrap();
    let nodes = start_nodes(tmp.path(), 3).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let marker = tmp.path().join("opened");
    let script = tmp.path().join("open-door");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$LATCHKEY_ACTION\" >> '{}'\n",
            marker.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let dir = tmp.path().join("door");
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let claim = init(&common::unlock_door(
        dir.clone(),
        "Holiday flat",
        listen,
        &urls,
        script,
    ))
    .unwrap();
    let _agent = latchkey_device::agent::start(&dir).await.unwrap();
    let owner = profile(&tmp.path().join("owner"), &urls);
    let device = owner
        .claim(ClaimSource::Text(&claim.claim_text), None)
        .await
        .unwrap()
        .device
        .to_string();

    let invite = |name: &str, spec: &str| InviteRequest {
        guest_name: name.into(),
        from_ms: now - 60_000,
        until_ms: now + 30 * DAY_MS,
        actions: vec!["unlock".into()],
        schedule: Some(WeeklySchedule::parse_spec(&[spec], "UTC").unwrap()),
        ..InviteRequest::default()
    };
    let today_link = owner
        .invite(&device, &invite("Today", &today_only))
        .await
        .unwrap();
    let other_link = owner
        .invite(&device, &invite("Other days", &not_today))
        .await
        .unwrap();
    let expected = WeeklySchedule::parse_spec(&[&not_today], "UTC").unwrap();
    assert_eq!(other_link.grant.grant.schedule(), Some(expected.clone()));
    let listed = owner.grants(None).unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|g| g.grant.schedule().is_some()));

    // Each guest on its own profile: accept, then open through the real door.
    let open_as = |name: &str, link: String| {
        let guest = profile(&tmp.path().join(name), &[]);
        async move {
            let held = guest.accept(&link).await.unwrap();
            let report = guest
                .open(&held.device.to_string(), "unlock", b"")
                .await
                .unwrap();
            (held, report)
        }
    };
    let (held, report) = open_as("guest-today", today_link.link.to_string()).await;
    assert_eq!(held.schedules.len(), 1);
    assert_eq!(
        held.schedules[0].describe(),
        format!("{} (UTC)", held.schedules[0].windows()[0].describe())
    );
    assert!(report.accepted(), "{:?}", report.response.outcome);
    assert_eq!(std::fs::read_to_string(&marker).unwrap().lines().count(), 1);

    let (held, report) = open_as("guest-other", other_link.link.to_string()).await;
    assert_eq!(held.schedules, [expected]);
    let Outcome::Rejected { code, reason } = &report.response.outcome else {
        panic!("opened outside its schedule: {:?}", report.response.outcome);
    };
    assert_eq!(*code, RejectCode::OutsideSchedule as u16);
    assert!(reason.contains("opens in"), "{reason}");
    let words = explain(*code, reason);
    assert_eq!(words.name, "OutsideSchedule");
    assert!(
        words.meaning.contains("at this time of the week"),
        "{}",
        words.meaning
    );
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap().lines().count(),
        1,
        "the door ran for a guest outside its schedule"
    );
}
