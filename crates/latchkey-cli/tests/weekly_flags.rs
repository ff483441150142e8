//! `latchkey invite --weekly … --tz …` through the real binary and the real OS keychain (run
//! inside `dbus-run-session` with an unlocked gnome-keyring: `source scripts/lib.sh;
//! with_secret_service cargo test -p latchkey-cli`): bad windows and zones are refused with
//! what was wrong before anything is looked up or signed, `--tz` needs `--weekly`, and a missing
//! `--tz` falls back to the system's zone only when that has an IANA name.

use std::path::Path;
use std::process::{Command, Output};

fn latchkey(profile: &Path, tz_env: &str, args: &[&str]) -> Output {
    assert!(
        std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some(),
        "this test needs a Secret Service: run it inside `dbus-run-session` with an unlocked \
         gnome-keyring (scripts/lib.sh with_secret_service does)"
    );
    Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .arg("--profile")
        .arg(profile)
        .args(args)
        .env("TZ", tz_env)
        .output()
        .unwrap()
}

fn invite(profile: &Path, tz_env: &str, extra: &[&str]) -> (Option<i32>, String) {
    let mut args = vec!["invite", "Flat", "--name", "Cleaner", "--until", "+30d"];
    args.extend_from_slice(extra);
    let out = latchkey(profile, tz_env, &args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn weekly_flags_are_checked_before_anything_is_issued() {
    let tmp = tempfile::tempdir().unwrap();
    let profile = tmp.path().join("owner");
    let ams = "Europe/Amsterdam";
    for (extra, needle) in [
        (
            vec!["--weekly", "mo 08:00-12:00", "--tz", ams],
            "--weekly: weekly window \"mo\" is not a day",
        ),
        (
            vec!["--weekly", "mon-fri 8-12", "--tz", ams],
            "is not a time",
        ),
        (
            vec!["--weekly", "fri 22:00-02:00", "--tz", ams],
            "crosses midnight",
        ),
        (
            vec![
                "--weekly",
                "mon-fri 08:00-12:00",
                "--tz",
                "Mars/Olympus_Mons",
            ],
            "unknown time zone \"Mars/Olympus_Mons\"",
        ),
    ] {
        let (code, stderr) = invite(&profile, ams, &extra);
        assert_eq!(code, Some(1), "{extra:?}: {stderr}");
        assert!(stderr.contains(needle), "{extra:?}: {stderr}");
    }
    // --tz without --weekly is a usage error.
    let (code, stderr) = invite(&profile, ams, &["--tz", ams]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--weekly"), "{stderr}");
    // No --tz, and the system's zone is a POSIX rule without an IANA name: asked for --tz.
    let (code, stderr) = invite(&profile, "<+03>-3", &["--weekly", "wed 09:00-12:00"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("--weekly needs --tz ZONE"), "{stderr}");
    // With an IANA system zone the schedule passes and the invitation gets as far as finding
    // the device (this profile has none), so nothing about the schedule is refused.
    let (code, stderr) = invite(
        &profile,
        "America/New_York",
        &["--weekly", "wed 09:00-12:00"],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        !stderr.contains("weekly") && !stderr.contains("time zone"),
        "{stderr}"
    );
    // The help names both flags.
    let help = latchkey(&profile, ams, &["invite", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--weekly <DAYS HH:MM-HH:MM>") && help.contains("--tz <ZONE>"));
}
