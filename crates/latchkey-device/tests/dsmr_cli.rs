//! `latchkeyd stream parse --format dsmr FILE [--json]` through the real binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_latchkeyd");

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/dsmr")
        .join(name)
}

fn parse(args: &[&str], file: &Path) -> Output {
    Command::new(BIN)
        .args(["stream", "parse", "--format", "dsmr"])
        .args(args)
        .arg(file)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn the_recording_prints_one_json_reading_per_telegram() {
    let out = parse(&["--json"], &fixture("recorded-dsmr5.txt"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 300);
    let first = &lines[0];
    assert_eq!(first["meter_time"], "2026-03-02T08:00:00Z");
    assert_eq!(first["tariff"], 2);
    assert_eq!(first["energy_delivered_kwh"][0], 4512.734);
    assert_eq!(first["phases"].as_array().unwrap().len(), 3);
    assert_eq!(first["gas_m3"], 1650.117);
    assert_eq!(lines[299]["meter_time"], "2026-03-02T08:04:59Z");
    assert!(text(&out.stderr).contains("300 telegram(s) read"));
}

#[test]
fn people_get_one_line_per_telegram() {
    let out = parse(&[], &fixture("emucs-fluvius-gas-water.txt"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1);
    for part in [
        "2020-05-12T11:54:09Z",
        "tariff 1",
        "+0.034/15.758",
        "L3 234.7 V",
        "gas 112.384 m3",
    ] {
        assert!(stdout.contains(part), "{part} missing from {stdout}");
    }
}

#[test]
fn the_first_crc_failure_stops_with_its_file_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p1.txt");
    let good = std::fs::read_to_string(fixture("dsmr50-landisgyr-e360-3phase.txt")).unwrap();
    let bad = std::fs::read_to_string(fixture("fail-crc-landisgyr-e360.txt")).unwrap();
    std::fs::write(&path, format!("{good}{good}{bad}{good}")).unwrap();
    let lines = good.lines().count();

    let out = parse(&["--json"], &path);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stdout).lines().count(),
        2,
        "the two good ones first"
    );
    let stderr = text(&out.stderr);
    let expected = format!("{} line {}: CRC mismatch", path.display(), 3 * lines);
    assert!(stderr.starts_with(&expected), "{stderr}");
}

#[test]
fn a_malformed_line_is_named_by_its_file_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p1.txt");
    let good = std::fs::read_to_string(fixture("dsmr22-iskra-mt382.txt")).unwrap();
    // DSMR 2.2 has no CRC, so only the parser can catch this.
    let broken = good.replace("1-0:1.7.0(0000.36*kW)", "1-0:1.7.0(0000.36*kW");
    std::fs::write(&path, format!("{good}{broken}")).unwrap();
    let line = good.lines().count()
        + 1
        + broken
            .lines()
            .position(|l| l.starts_with("1-0:1.7.0"))
            .unwrap();

    let out = parse(&[], &path);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!("{} line {line}: ", path.display())),
        "{stderr}"
    );
    assert!(stderr.contains("not closed"), "{stderr}");
}

#[test]
fn a_file_without_telegrams_fails() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let out = parse(&[], &empty);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no telegram"),
        "{}",
        text(&out.stderr)
    );

    let junk = dir.path().join("junk.txt");
    std::fs::write(&junk, "this is not a meter\n").unwrap();
    let out = parse(&[], &junk);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("line 1: text outside a telegram"),
        "{}",
        text(&out.stderr)
    );

    let out = parse(&[], &dir.path().join("missing.txt"));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("missing.txt"),
        "{}",
        text(&out.stderr)
    );
}
