//! Stays and delegation through the owner core with real parts only: three registry nodes and
//! two device agents on loopback, profiles in SQLite with every key and link in the real OS
//! keychain (run inside a private Secret Service: `source scripts/lib.sh; with_secret_service
//! cargo test -p latchkey-owner --test stays`), and the booking calendar served over HTTP on
//! loopback as a booking site's export URL would be.
//!
//! What is shown: a calendar with a current, a future and a past stay and a blocked period
//! becomes one invitation per stay and door; the current guest opens, the future one is
//! refused until check-in; a second sync changes nothing; a malformed calendar changes nothing
//! and names its line; changed dates re-issue (the old link stops opening) and a cancelled stay
//! is revoked at the door; a manager invited with delegation issues a narrower invitation for
//! a cleaner, cannot issue a wider one, and revoking the manager voids the cleaner.

mod common;

use common::start_nodes;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::get;
use latchkey_device::agent::RunningAgent;
use latchkey_device::lifecycle::init;
use latchkey_node::RunningNode;
use latchkey_owner::keychain::KeyringStore;
use latchkey_owner::{
    ClaimSource, Error, InviteRequest, Profile, StayChange, StayPhase, StayStatus, StayTimes,
    SystemClock,
};
use latchkey_proto::command::{Outcome, RejectCode};

const DAY_MS: u64 = 86_400_000;

/// Today (UTC) plus `offset` days, as an all-day iCalendar date.
fn day(offset: i64) -> String {
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    today
        .checked_add(jiff::Span::new().days(offset))
        .unwrap()
        .strftime("%Y%m%d")
        .to_string()
}

/// An Airbnb-shaped export of `(uid, summary, check-in offset, check-out offset)` events.
fn calendar(events: &[(&str, &str, i64, i64)]) -> String {
    let mut s = String::from(
        "BEGIN:VCALENDAR\r\nPRODID;X-RICAL-TZSOURCE=TZINFO:-//Airbnb Inc//Hosting Calendar \
         1.0//EN\r\nCALSCALE:GREGORIAN\r\nVERSION:2.0\r\n",
    );
    for (uid, summary, from, to) in events {
        s.push_str(&format!(
            "BEGIN:VEVENT\r\nDTEND;VALUE=DATE:{}\r\nDTSTART;VALUE=DATE:{}\r\nUID:{uid}@airbnb.com\r\n\
             SUMMARY:{summary}\r\nEND:VEVENT\r\n",
            day(*to),
            day(*from)
        ));
    }
    s.push_str("END:VCALENDAR\r\n");
    s
}

/// The booking site: serves whatever calendar the test put there.
struct Site {
    url: String,
    ics: Arc<Mutex<String>>,
}

impl Site {
    async fn start() -> Site {
        let ics = Arc::new(Mutex::new(String::new()));
        let app =
            axum::Router::new()
                .route(
                    "/calendar/ical/41839274.ics",
                    get(|State(ics): State<Arc<Mutex<String>>>| async move {
                        ics.lock().unwrap().clone()
                    }),
                )
                // A server that would stream far more than any calendar.
                .route(
                    "/huge.ics",
                    get(|| async {
                        "BEGIN:VCALENDAR\r\n".to_owned()
                            + &"X-PAD:0123456789abcdef\r\n".repeat(150_000)
                    }),
                )
                .with_state(ics.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Site {
            url: format!("http://{addr}/calendar/ical/41839274.ics"),
            ics,
        }
    }

    fn serve(&self, text: String) {
        *self.ics.lock().unwrap() = text;
    }
}

struct World {
    tmp: tempfile::TempDir,
    nodes: Vec<RunningNode>,
    urls: Vec<String>,
    _agents: Vec<RunningAgent>,
    seeds: Arc<KeyringStore>,
    host: Profile,
    doors: Vec<String>,
}

impl World {
    /// Three nodes, two doors (Front, Back) and their host, who claims both.
    async fn start() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let nodes = start_nodes(tmp.path(), 3).await;
        let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
        let seeds =
            Arc::new(KeyringStore::open().expect(
                "a Secret Service: run inside `source scripts/lib.sh; with_secret_service …`",
            ));
        let host = person(tmp.path(), "host", &seeds, &urls);
        let mut agents = Vec::new();
        let mut doors = Vec::new();
        for name in ["Front", "Back"] {
            let dir = tmp.path().join(name);
            let claim = init(&common::unlock_door(
                dir.clone(),
                name,
                common::free_addr(),
                &urls,
                "/bin/true".into(),
            ))
            .unwrap();
            agents.push(latchkey_device::agent::start(&dir).await.unwrap());
            let report = host
                .claim(ClaimSource::Text(&claim.claim_text), None)
                .await
                .unwrap();
            doors.push(report.device.to_string());
        }
        World {
            tmp,
            nodes,
            urls,
            _agents: agents,
            seeds,
            host,
            doors,
        }
    }

    fn person(&self, name: &str) -> Profile {
        person(self.tmp.path(), name, &self.seeds, &self.urls)
    }

    fn doors(&self) -> Vec<&str> {
        self.doors.iter().map(String::as_str).collect()
    }

    async fn stop(self) {
        for node in self.nodes {
            node.shutdown().await.unwrap();
        }
    }
}

fn person(root: &Path, name: &str, seeds: &Arc<KeyringStore>, urls: &[String]) -> Profile {
    let p = Profile::at(&root.join(name), seeds.clone(), Arc::new(SystemClock)).unwrap();
    p.create_seed().unwrap();
    p.add_nodes(urls).unwrap();
    p
}

/// Opens `door` as `who` and returns the reject code (0: accepted).
async fn open(who: &Profile, door: &str) -> u16 {
    match who
        .open(door, "unlock", &[])
        .await
        .unwrap()
        .response
        .outcome
    {
        Outcome::Accepted => 0,
        Outcome::Rejected { code, .. } => code,
        other => panic!("{other:?}"),
    }
}

fn utc_times() -> StayTimes {
    let mut times = StayTimes::parse("15:00", "11:00", Some("UTC")).unwrap();
    // The nodes here do not keep sealed invitations yet (`PUT /v1/invites`): self-contained
    // links, which bind to the first phone just the same.
    times.long_links = true;
    times
}

#[tokio::test(flavor = "multi_thread")]
async fn stays_sync_from_a_calendar_url_and_resync_is_idempotent() {
    let w = World::start().await;
    let site = Site::start().await;
    let doors = w.doors();
    let times = utc_times();
    // Current: arrived yesterday, leaves the day after tomorrow; future: in 5 days; past: 10
    // days ago; and a closed week the host blocked.
    site.serve(calendar(&[
        ("cur", "Reserved", -1, 2),
        ("fut", "Reserved", 5, 8),
        ("old", "Reserved", -10, -7),
        ("blk", "Airbnb (Not available)", 12, 15),
    ]));
    let report = w.host.sync_stays(&doors, &site.url, &times).await.unwrap();
    let change = |uid: &str| {
        report
            .lines
            .iter()
            .find(|l| l.uid == format!("{uid}@airbnb.com"))
            .unwrap()
            .change
    };
    assert_eq!(change("cur"), StayChange::Added);
    assert_eq!(change("fut"), StayChange::Added);
    assert_eq!(change("old"), StayChange::Past);
    assert_eq!(change("blk"), StayChange::SkippedBlocked);
    let links = |uid: &str| {
        report
            .lines
            .iter()
            .find(|l| l.uid == format!("{uid}@airbnb.com"))
            .unwrap()
            .links
            .clone()
    };
    // One invitation, one grant, for both doors of the stay.
    assert_eq!(links("cur").len(), 1);
    assert_eq!(links("cur")[0].doors.len(), 2);
    assert!(links("old").is_empty() && links("blk").is_empty());
    let cur = &links("cur")[0];
    let fut = &links("fut")[0];
    assert_eq!(
        w.host.stays().unwrap().len(),
        2,
        "past and blocked are not kept"
    );

    // The current guest opens; the future guest is refused until check-in.
    let guest = w.person("guest-now");
    let held = guest.accept(cur.link.as_ref().unwrap()).await.unwrap();
    assert_eq!(
        held.not_after_ms - held.not_before_ms,
        3 * DAY_MS - 4 * 3_600_000
    );
    assert_eq!(open(&guest, &cur.device.to_string()).await, 0);
    let later = w.person("guest-later");
    later.accept(fut.link.as_ref().unwrap()).await.unwrap();
    assert_eq!(
        open(&later, &fut.device.to_string()).await,
        RejectCode::GrantNotYetValid as u16
    );

    // The host reads the door's log: the current stay shows it was opened.
    w.host.audit(&cur.device.to_string(), None).await.unwrap();
    let stays = w.host.stays().unwrap();
    let now_stay = stays.iter().find(|s| s.uid == "cur@airbnb.com").unwrap();
    assert_eq!(now_stay.phase, StayPhase::Current);
    assert!(
        matches!(now_stay.status, StayStatus::Opened { .. }),
        "{:?}",
        now_stay.status
    );
    let next_stay = stays.iter().find(|s| s.uid == "fut@airbnb.com").unwrap();
    assert_eq!(next_stay.phase, StayPhase::Upcoming);
    // Its guest accepted: the door recorded the redemption (binding the link to that phone)
    // even before check-in.
    assert!(
        matches!(next_stay.status, StayStatus::Redeemed { at_ms: Some(_) }),
        "{:?}",
        next_stay.status
    );
    // Sharing is recorded, but what the door saw ranks above it.
    w.host
        .mark_stay_shared(&next_stay.source, &next_stay.uid)
        .unwrap();
    assert!(matches!(
        w.host.stays().unwrap()[1].status,
        StayStatus::Redeemed { .. }
    ));
    assert!(w.host.mark_stay_shared(&next_stay.source, "nope").is_err());

    // The same export again: nothing changes, nothing is written to the nodes.
    let again = w.host.sync_stays(&doors, &site.url, &times).await.unwrap();
    assert_eq!(again.count(StayChange::Unchanged), 2);
    assert_eq!(again.count(StayChange::Added), 0);
    assert_eq!(again.node_writes, 0);
    let same = again
        .lines
        .iter()
        .find(|l| l.uid == "cur@airbnb.com")
        .unwrap();
    assert_eq!(same.links[0].grant, cur.grant);
    assert_eq!(same.links[0].link.as_deref(), cur.link.as_deref());

    // A malformed export changes nothing and names the line.
    let before = w.host.stays().unwrap();
    let broken = calendar(&[("cur", "Reserved", -1, 2)]).replace(
        &format!("DTSTART;VALUE=DATE:{}", day(-1)),
        "DTSTART;VALUE=DATE:2026-13-01",
    );
    site.serve(broken);
    let e = w
        .host
        .sync_stays(&doors, &site.url, &times)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::BadCalendar { line: 7, .. }), "{e}");
    assert!(e.to_string().contains("line 7"), "{e}");
    let after = w.host.stays().unwrap();
    assert_eq!(before.len(), after.len());
    assert_eq!(open(&guest, &cur.device.to_string()).await, 0);

    // A URL that serves more than a calendar may hold is cut off, not read to the end.
    let huge = site.url.replace("/calendar/ical/41839274.ics", "/huge.ics");
    let e = w.host.sync_stays(&doors, &huge, &times).await.unwrap_err();
    assert!(e.to_string().contains("larger than"), "{e}");

    // The current stay is cancelled; the future one moves by a day.
    site.serve(calendar(&[
        ("fut", "Reserved", 6, 9),
        ("old", "Reserved", -10, -7),
        ("blk", "Airbnb (Not available)", 12, 15),
    ]));
    let third = w.host.sync_stays(&doors, &site.url, &times).await.unwrap();
    let line = |uid: &str| {
        third
            .lines
            .iter()
            .find(|l| l.uid == format!("{uid}@airbnb.com"))
            .unwrap()
            .clone()
    };
    assert_eq!(line("cur").change, StayChange::Revoked);
    assert_eq!(line("fut").change, StayChange::Reissued);
    assert_ne!(line("fut").links[0].grant, fut.grant);
    // Two grants revoked, each in both doors' chains on the nodes, and one new link stored.
    assert!(third.node_writes >= 5, "{}", third.node_writes);
    // The door was told on the LAN: the cancelled guest is refused now.
    assert_eq!(
        open(&guest, &cur.device.to_string()).await,
        RejectCode::GrantRevoked as u16
    );
    let stays = w.host.stays().unwrap();
    let gone = stays.iter().find(|s| s.uid == "cur@airbnb.com").unwrap();
    assert_eq!(gone.status, StayStatus::Revoked);
    assert!(
        gone.links.iter().all(|l| l.link.is_none()),
        "revoked links are dropped"
    );
    // A fourth sync of the same export is quiet again.
    let fourth = w.host.sync_stays(&doors, &site.url, &times).await.unwrap();
    assert_eq!(fourth.node_writes, 0);
    assert_eq!(fourth.count(StayChange::Unchanged), 1);
    assert_eq!(fourth.count(StayChange::Revoked), 0);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_a_sync_for_a_door_not_owned_or_a_bad_file_changes_nothing() {
    let w = World::start().await;
    let times = utc_times();
    let path = w.tmp.path().join("airbnb.ics");
    std::fs::write(&path, calendar(&[("a", "Reserved", 1, 3)])).unwrap();
    let stranger = w.person("stranger");
    let e = stranger
        .sync_stays(&w.doors(), path.to_str().unwrap(), &times)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "unknown_device", "{e}");
    let e = w
        .host
        .sync_stays(&w.doors(), "/no/such/calendar.ics", &times)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "calendar_source", "{e}");
    assert!(w.host.stays().unwrap().is_empty());
    // From a file, it works the same.
    let report = w
        .host
        .sync_stays(&w.doors()[..1], path.to_str().unwrap(), &times)
        .await
        .unwrap();
    assert_eq!(report.count(StayChange::Added), 1);
    assert_eq!(report.lines[0].links.len(), 1);
    assert_eq!(report.lines[0].links[0].doors.len(), 1);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manager_delegates_a_narrower_invitation_and_revoking_the_manager_voids_it() {
    let w = World::start().await;
    let front = w.doors[0].clone();
    let now = w.host.now_ms();
    let request = |name: &str, until: u64| InviteRequest {
        guest_name: name.into(),
        from_ms: now - 60_000,
        until_ms: until,
        actions: vec!["unlock".into()],
        use_limit: Some(20),
        arguments: vec![],
        long_link: true,
        ..InviteRequest::default()
    };
    // A plain guest cannot delegate.
    let plain = w
        .host
        .invite(&front, &request("Guest", now + 3 * DAY_MS))
        .await
        .unwrap();
    let guest = w.person("guest");
    let held = guest.accept(&plain.link).await.unwrap();
    assert!(!held.may_delegate);
    let e = guest
        .invite(
            &front,
            &InviteRequest {
                from_grant: Some(held.id.to_string()[..12].to_owned()),
                ..request("Friend", now + DAY_MS)
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), "bad_delegation");
    assert!(e.to_string().contains("--may-delegate"), "{e}");

    // The manager may delegate; the cleaner gets a narrower invitation from the manager.
    let manager_grant = w
        .host
        .invite(
            &front,
            &InviteRequest {
                may_delegate: true,
                ..request("Manager", now + 7 * DAY_MS)
            },
        )
        .await
        .unwrap();
    let manager = w.person("manager");
    let held = manager.accept(&manager_grant.link).await.unwrap();
    assert!(held.may_delegate);
    let from = held.id.to_string();
    for (wider, says) in [
        (request("Cleaner", now + 8 * DAY_MS), "time is wider"),
        (
            InviteRequest {
                use_limit: Some(21),
                ..request("Cleaner", now + DAY_MS)
            },
            "uses",
        ),
        (
            InviteRequest {
                actions: vec!["audit".into()],
                ..request("Cleaner", now + DAY_MS)
            },
            "does not allow \"audit\"",
        ),
        (
            InviteRequest {
                may_delegate: true,
                ..request("Cleaner", now + DAY_MS)
            },
            "further",
        ),
    ] {
        let e = manager
            .invite(
                &front,
                &InviteRequest {
                    from_grant: Some(from.clone()),
                    ..wider
                },
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), "bad_delegation", "{e}");
        assert!(e.to_string().contains(says), "{says}: {e}");
    }
    // The other door is not in the manager's invitation.
    let e = manager
        .invite(
            &w.doors[1],
            &InviteRequest {
                from_grant: Some(from.clone()),
                ..request("Cleaner", now + DAY_MS)
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), "unknown_device", "{e}");
    assert!(
        manager.grants(None).unwrap().is_empty(),
        "nothing was issued"
    );

    let cleaner_grant = manager
        .invite(
            &front,
            &InviteRequest {
                from_grant: Some(from.clone()),
                use_limit: None,
                actions: vec![],
                ..request("Cleaner", now + DAY_MS)
            },
        )
        .await
        .unwrap();
    // Defaults are the manager's own: its uses and actions.
    assert_eq!(cleaner_grant.grant.grant.body.use_limit, Some(20));
    assert_eq!(cleaner_grant.grant.grant.body.actions, vec!["unlock"]);
    assert_eq!(cleaner_grant.grant.parent, Some(held.id));
    let listed = manager.grants(None).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].parent, Some(held.id));
    let cleaner = w.person("cleaner");
    let cleaner_held = cleaner.accept(&cleaner_grant.link).await.unwrap();
    assert!(!cleaner_held.may_delegate);
    assert_eq!(open(&cleaner, &front).await, 0);
    assert_eq!(open(&manager, &front).await, 0);

    // The host revokes the manager: the cleaner's grant hangs below it and stops too.
    w.host
        .revoke(&manager_grant.grant.id.to_string())
        .await
        .unwrap();
    assert_eq!(
        open(&manager, &front).await,
        RejectCode::GrantRevoked as u16
    );
    assert_eq!(
        open(&cleaner, &front).await,
        RejectCode::GrantRevoked as u16
    );
    w.stop().await;
}
