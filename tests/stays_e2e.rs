//! A holiday-rental host end to end with the real binaries: three registry nodes (in process),
//! the real `latchkeyd` with an exec actuator, the real `latchkey` for the host, each guest, a
//! property manager and a cleaner (each its own profile), and the real OS keychain (run inside
//! `dbus-run-session` with an unlocked gnome-keyring, as scripts/test.sh does).
//!
//! The host imports a booking calendar (a current, a future and a past stay and a blocked
//! period); the current guest opens, the future guest is refused until check-in; a re-sync with
//! the current stay cancelled revokes it and its guest is refused at once; a manager invited
//! with `--may-delegate` invites a cleaner with `--from-grant`, who opens, and revoking the
//! manager voids the cleaner's invitation too.

#[path = "support/cli.rs"]
mod cli;
mod support;

use cli::{require_secret_service, start_nodes, Cli, Door};

/// Today (UTC) plus `offset` days, as an all-day iCalendar date.
fn day(offset: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let days = now.div_euclid(86_400) + offset;
    // Civil date from days since 1970 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}")
}

/// A Booking.com-shaped export of `(uid, summary, check-in offset, check-out offset)`.
fn calendar(events: &[(&str, &str, i64, i64)]) -> String {
    let mut s = String::from(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//admin.booking.com//EN\r\n\
         CALSCALE:GREGORIAN\r\nMETHOD:PUBLISH\r\n",
    );
    for (uid, summary, from, to) in events {
        s.push_str(&format!(
            "BEGIN:VEVENT\r\nDTSTAMP:20261130T081512Z\r\nDTSTART;VALUE=DATE:{}\r\n\
             DTEND;VALUE=DATE:{}\r\nUID:{uid}@booking.com\r\nSUMMARY:{summary}\r\nEND:VEVENT\r\n",
            day(*from),
            day(*to)
        ));
    }
    s.push_str("END:VCALENDAR\r\n");
    s
}

fn stay<'a>(list: &'a serde_json::Value, uid: &str) -> &'a serde_json::Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|s| s["uid"] == format!("{uid}@booking.com"))
        .unwrap_or_else(|| panic!("no stay {uid} in {list}"))
}

const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn now_utc() -> (usize, u64) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // 1970-01-01 was a Thursday (index 3 from Monday).
    (((secs / 86_400 + 3) % 7) as usize, (secs % 86_400) / 60)
}

/// The `--weekly` name of the UTC weekday `days_ahead` days from today.
fn weekday_name(days_ahead: usize) -> &'static str {
    WEEKDAYS[(now_utc().0 + days_ahead) % 7]
}

/// Two `--weekly` specs that together cover the hour before and after now, every day.
fn around_now_specs() -> [String; 2] {
    let minute = now_utc().1;
    let hhmm = |m: u64| format!("{:02}:{:02}", m / 60, m % 60);
    let start = minute.saturating_sub(60);
    let end = (minute + 60).min(1440);
    let before = if minute < 60 {
        1440 - (60 - minute)
    } else {
        1439
    };
    let after = (minute + 60).saturating_sub(1440).max(1);
    [
        format!("mon-sun {}-{}", hhmm(start), hhmm(end)),
        // The other side of midnight (a harmless extra minute when nothing crosses it).
        if minute < 60 {
            format!("mon-sun {}-24:00", hhmm(before))
        } else {
            format!("mon-sun 00:00-{}", hhmm(after))
        },
    ]
}

/// A guest profile that accepts `link`.
fn guest(tmp: &std::path::Path, name: &str, urls: &[String], link: &str) -> Cli {
    let mut cli = Cli::new(tmp.join(name));
    cli.init();
    let mut add = vec!["nodes", "add"];
    add.extend(urls.iter().map(String::as_str));
    cli.ok(&add);
    cli.ok(&["accept", link]);
    cli
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stays_from_a_calendar_and_a_delegated_cleaner() {
    require_secret_service();
    let tmp = tempfile::tempdir().unwrap();
    let nodes = start_nodes(tmp.path(), 3).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let door = Door::start(tmp.path(), "Front door", &urls, &[]);

    let mut host = Cli::new(tmp.path().join("host"));
    host.init();
    let mut add = vec!["nodes", "add"];
    add.extend(urls.iter().map(String::as_str));
    host.ok(&add);
    let claim_text = std::fs::read_to_string(door.dir.join("claim.txt")).unwrap();
    host.ok(&["claim", "--text", &claim_text]);

    // The calendar: a stay now, one in five days, one ten days ago, and a closed week.
    let ics = tmp.path().join("booking.ics");
    let all = [
        ("now", "Guest reservation", -1, 2),
        ("soon", "Guest reservation", 5, 8),
        ("old", "Guest reservation", -10, -7),
        ("shut", "CLOSED - Not available", 12, 15),
    ];
    std::fs::write(&ics, calendar(&all)).unwrap();
    let sync = [
        "stays",
        "sync",
        "Front door",
        "--ics",
        ics.to_str().unwrap(),
        "--check-in",
        "15:00",
        "--check-out",
        "11:00",
        "--tz",
        "UTC",
    ];
    let table = host.ok(&sync);
    assert!(table.contains("CHANGE"), "{table}");
    assert!(
        table.contains(
            "2 added, 0 unchanged, 0 reissued, 0 revoked, 1 blocked periods skipped, 1 past"
        ),
        "{table}"
    );
    assert!(
        table.contains("skipped-blocked") && table.contains("CLOSED - Not available"),
        "{table}"
    );
    let listed = host.json(&["stays"]);
    let stays = &listed["stays"];
    assert_eq!(stays.as_array().unwrap().len(), 2, "{listed}");
    assert_eq!(stay(stays, "now")["phase"], "current");
    assert_eq!(stay(stays, "soon")["phase"], "upcoming");
    assert_eq!(stay(stays, "soon")["status"], "not sent");
    let link_of = |s: &serde_json::Value| s["links"][0]["link"].as_str().unwrap().to_owned();

    // The current guest opens; the future guest is refused (not yet valid).
    let mut now_guest = guest(tmp.path(), "guest-now", &urls, &link_of(stay(stays, "now")));
    let out = now_guest.ok(&["open", "Front door"]);
    assert!(out.contains("unlock accepted"), "{out}");
    assert_eq!(door.opened(), 1);
    let mut soon_guest = guest(
        tmp.path(),
        "guest-soon",
        &urls,
        &link_of(stay(stays, "soon")),
    );
    let out = soon_guest.run(&["open", "Front door"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("GrantNotYetValid"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(door.opened(), 1);

    // The host reads the door's log; the current stay shows when it was opened.
    host.ok(&["audit", "Front door"]);
    let listed = host.json(&["stays"]);
    assert_eq!(
        stay(&listed["stays"], "now")["status"],
        "opened",
        "{listed}"
    );

    // The same calendar again: nothing changes.
    let table = host.ok(&sync);
    assert!(table.contains("0 added, 2 unchanged"), "{table}");
    assert!(table.contains("0 node write(s)"), "{table}");

    // The current stay is cancelled on the booking site: a re-sync revokes it at once.
    std::fs::write(&ics, calendar(&[all[1], all[2], all[3]])).unwrap();
    let mut json_sync = sync.to_vec();
    json_sync.push("--json");
    let report: serde_json::Value = serde_json::from_str(&host.ok(&json_sync)).unwrap();
    assert_eq!(
        stay(&report["stays"], "now")["change"],
        "revoked",
        "{report}"
    );
    assert_eq!(stay(&report["stays"], "soon")["change"], "unchanged");
    assert!(report["node_writes"].as_u64().unwrap() >= 1, "{report}");
    let out = now_guest.run(&["open", "Front door"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("GrantRevoked"));
    assert_eq!(door.opened(), 1);
    let listed = host.json(&["stays"]);
    assert_eq!(stay(&listed["stays"], "now")["status"], "revoked");

    // A malformed calendar changes nothing and names the line.
    std::fs::write(
        &ics,
        calendar(&[all[1]]).replace("SUMMARY:Guest reservation", "SUMMARY Guest reservation"),
    )
    .unwrap();
    let out = host.run(&sync);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 11") && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(host.json(&["stays"]), listed);

    // Delegation: the manager may invite others below its own invitation.
    let manager_invite = host.json(&[
        "invite",
        "Front door",
        "--name",
        "Manager",
        "--until",
        "+2d",
        "--may-delegate",
    ]);
    assert_eq!(manager_invite["may_delegate"], true);
    let mut manager = guest(
        tmp.path(),
        "manager",
        &urls,
        manager_invite["link"].as_str().unwrap(),
    );
    let held = manager.json(&["invitations"]);
    let held_id = held["invitations"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(held["invitations"][0]["may_delegate"], true);
    // Wider than the manager's own: refused, nothing issued.
    let out = manager.run(&[
        "invite",
        "Front door",
        "--name",
        "Cleaner",
        "--from-grant",
        &held_id[..12],
        "--until",
        "+3d",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("wider"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The cleaner's hours: every day, the hour either side of now (in UTC), so the test does
    // not depend on the weekday it runs on; a window that would cross midnight is split.
    let cleaning_now = around_now_specs();
    let cleaner_invite = manager.json(&[
        "invite",
        "Front door",
        "--name",
        "Cleaner",
        "--from-grant",
        &held_id[..12],
        "--until",
        "+1d",
        "--uses",
        "4",
        "--weekly",
        &cleaning_now[0],
        "--weekly",
        &cleaning_now[1],
        "--tz",
        "UTC",
    ]);
    assert_eq!(cleaner_invite["parent"], held_id.as_str());
    let held = manager.json(&["invitations"]);
    let delegated = &held["invitations"][0]["delegated"];
    assert_eq!(delegated[0]["id"], cleaner_invite["id"], "{held}");
    assert_eq!(delegated[0]["parent"], held_id.as_str());
    assert!(manager.ok(&["invitations"]).contains("└"));
    let mut cleaner = guest(
        tmp.path(),
        "cleaner",
        &urls,
        cleaner_invite["link"].as_str().unwrap(),
    );
    assert!(cleaner
        .ok(&["open", "Front door"])
        .contains("unlock accepted"));
    assert_eq!(door.opened(), 2);
    // A second cleaner, only on the day after tomorrow: redeemed today (a redemption is not
    // held back by the schedule), refused at the door now, outside the hours.
    let later_cleaner_invite = manager.json(&[
        "invite",
        "Front door",
        "--name",
        "Cleaner B",
        "--from-grant",
        &held_id[..12],
        "--until",
        "+1d",
        "--weekly",
        &format!("{} 00:00-24:00", weekday_name(2)),
        "--tz",
        "UTC",
    ]);
    assert!(
        later_cleaner_invite["link"]
            .as_str()
            .unwrap()
            .starts_with("LATCHKEY://I/"),
        "{later_cleaner_invite}"
    );
    let mut later_cleaner = guest(
        tmp.path(),
        "cleaner-b",
        &urls,
        later_cleaner_invite["link"].as_str().unwrap(),
    );
    let out = later_cleaner.run(&["open", "Front door"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("OutsideSchedule"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(door.opened(), 2);
    // A plain guest cannot delegate.
    let out = soon_guest.run(&[
        "invite",
        "Front door",
        "--name",
        "Friend",
        "--from-grant",
        &stay(&listed["stays"], "soon")["links"][0]["grant"]
            .as_str()
            .unwrap()[..12],
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--may-delegate"));

    // Revoking the manager voids the cleaner: the door checks the whole chain.
    host.ok(&["revoke", &manager_invite["id"].as_str().unwrap()[..16]]);
    let out = cleaner.run(&["open", "Front door"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("GrantRevoked"));
    assert_eq!(door.opened(), 2);
    drop(door);
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}
