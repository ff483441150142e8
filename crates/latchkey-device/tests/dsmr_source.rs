//! Stream sources through their real I/O: a file replayed from disk, and a TCP gateway played
//! by a real listener on loopback. The serial source is tested only through its spec and
//! settings: this machine has no serial port (a USB P1 cable would be `serial:/dev/ttyUSB0`).

use std::path::Path;
use std::time::{Duration, Instant};

use latchkey_device::stream::dsmr::{write_telegram, Reading};
use latchkey_device::stream::source::{serial_settings, Source, SourceItem, SourceSpec};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/dsmr")
        .join(name)
}

fn telegram(power_w: u32, second: u64) -> String {
    let reading = Reading {
        meter_time_ms: Some(1_772_438_400_000 + second * 1_000),
        tariff: Some(1),
        energy_delivered_wh: vec![1_000, 2_000],
        energy_returned_wh: vec![0, 0],
        power_delivered_w: Some(power_w),
        power_returned_w: Some(0),
        phases: vec![],
        gas_l: None,
        gas_time_ms: None,
    };
    write_telegram(&reading, "XMX5LGF0010455307579").unwrap()
}

fn power(item: &SourceItem) -> u32 {
    match item {
        SourceItem::Ok(r) => r.power_delivered_w.unwrap(),
        SourceItem::Bad { line, reason } => panic!("bad telegram at line {line}: {reason}"),
    }
}

#[test]
fn specs_parse_and_print() {
    let cases = [
        ("serial:/dev/ttyUSB0", "serial:/dev/ttyUSB0@115200"),
        ("serial:/dev/ttyUSB0@9600", "serial:/dev/ttyUSB0@9600"),
        ("tcp:192.168.1.20:2001", "tcp:192.168.1.20:2001"),
        ("tcp:p1-gateway.local:23", "tcp:p1-gateway.local:23"),
        ("tcp:[::1]:2001", "tcp:[::1]:2001"),
        (
            "file:/var/lib/p1/recorded.txt",
            "file:/var/lib/p1/recorded.txt@1",
        ),
        ("file:rec.txt@0", "file:rec.txt@0"),
        ("file:rec.txt@2.5", "file:rec.txt@2.5"),
        ("file:/tmp/a@b/rec.txt", "file:/tmp/a@b/rec.txt@1"),
    ];
    for (text, canonical) in cases {
        let spec = SourceSpec::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(spec.to_string(), canonical);
        assert_eq!(SourceSpec::parse(canonical).unwrap(), spec);
    }
    assert_eq!(
        SourceSpec::parse("serial:/dev/ttyAMA0@9600").unwrap(),
        SourceSpec::Serial {
            path: "/dev/ttyAMA0".into(),
            baud: 9_600
        }
    );
}

#[test]
fn bad_specs_say_what_is_wrong() {
    for (text, says) in [
        ("/dev/ttyUSB0", "no kind"),
        ("usb:/dev/ttyUSB0", "unknown kind"),
        ("serial:", "no serial port path"),
        ("serial:/dev/ttyUSB0@fast", "not a number"),
        ("serial:/dev/ttyUSB0@12345", "not one of"),
        ("tcp:gateway", "no port"),
        ("tcp:gateway:0", "not 1–65535"),
        ("tcp:gateway:70000", "not 1–65535"),
        ("tcp::2001", "not a host"),
        ("tcp:a b:2001", "not a host"),
        ("file:", "no file path"),
        ("file:rec.txt@-1", "rate"),
        ("file:rec.txt@1e9", "rate"),
        ("file:rec.txt@NaN", "rate"),
    ] {
        let e = SourceSpec::parse(text).expect_err(text).to_string();
        assert!(e.contains(says), "{text}: {e}");
        assert!(e.contains("expected serial:PATH"), "{text}: {e}");
    }
}

#[test]
fn serial_framing_follows_the_dsmr_version() {
    use latchkey_device::stream::source::{DEFAULT_BAUD, DSMR3_BAUD};
    assert_eq!(
        serial_settings(DEFAULT_BAUD),
        (tokio_serial::DataBits::Eight, tokio_serial::Parity::None)
    );
    assert_eq!(
        serial_settings(DSMR3_BAUD),
        (tokio_serial::DataBits::Seven, tokio_serial::Parity::Even)
    );
}

#[tokio::test]
async fn a_file_replays_every_telegram_then_ends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p1.txt");
    let good = telegram(500, 0);
    let mut corrupted = telegram(600, 1);
    let at = corrupted.find("00.600").unwrap();
    corrupted.replace_range(at..at + 6, "06.000"); // CRC no longer matches
    let last = telegram(700, 2);
    std::fs::write(&path, format!("{good}{corrupted}{last}")).unwrap();
    let lines_per_telegram = good.matches('\n').count();

    let mut rx = Source::spawn(SourceSpec::parse(&format!("file:{}@0", path.display())).unwrap());
    assert_eq!(power(&rx.recv().await.unwrap()), 500);
    match rx.recv().await.unwrap() {
        SourceItem::Bad { line, reason } => {
            // The end line of the second telegram, counted in the file.
            assert_eq!(line, 2 * lines_per_telegram, "{reason}");
            assert!(reason.contains("CRC mismatch"), "{reason}");
        }
        other => panic!("the corrupted telegram was read: {other:?}"),
    }
    assert_eq!(power(&rx.recv().await.unwrap()), 700);
    assert!(
        rx.recv().await.is_none(),
        "the source ends after the last telegram"
    );
}

#[tokio::test]
async fn a_file_replays_at_its_rate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p1.txt");
    let text: String = (0..5).map(|i| telegram(100 * i, i.into())).collect();
    std::fs::write(&path, text).unwrap();
    let started = Instant::now();
    let mut rx = Source::spawn(SourceSpec::parse(&format!("file:{}@20", path.display())).unwrap());
    let mut n = 0;
    while let Some(item) = rx.recv().await {
        assert_eq!(power(&item), 100 * n);
        n += 1;
    }
    assert_eq!(n, 5);
    // Five telegrams at 20 per second: four intervals of 50 ms at least.
    assert!(
        started.elapsed() >= Duration::from_millis(190),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_recorded_stream_replays_in_full() {
    let spec = format!("file:{}@0", fixture("recorded-dsmr5.txt").display());
    let mut rx = Source::spawn(SourceSpec::parse(&spec).unwrap());
    let mut readings: Vec<Reading> = Vec::new();
    while let Some(item) = rx.recv().await {
        match item {
            SourceItem::Ok(r) => readings.push(r),
            SourceItem::Bad { line, reason } => panic!("line {line}: {reason}"),
        }
    }
    assert_eq!(readings.len(), 300);
}

#[tokio::test]
async fn a_missing_file_closes_the_stream() {
    let mut rx = Source::spawn(SourceSpec::parse("file:/nonexistent/p1.txt@0").unwrap());
    assert!(rx.recv().await.is_none());
}

async fn next(rx: &mut tokio::sync::mpsc::Receiver<SourceItem>) -> SourceItem {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the source delivers within 10 s")
        .expect("the source keeps running")
}

/// A ser2net-style gateway: the first connection starts mid-telegram, sends two telegrams
/// and a corrupted one, then drops; the source reconnects and reads on.
#[tokio::test]
async fn a_tcp_gateway_is_read_and_reconnected() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let first = telegram(1_100, 0);
    let second = telegram(1_200, 1);
    let third = telegram(1_300, 2);
    // A telegram damaged on the way: one digit changed, the CRC no longer matches.
    let bad = telegram(1_400, 3).replace("01.400*kW", "01.401*kW");
    let tail = first[first.len() / 2..].to_owned();
    let gateway = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        // Joined mid-stream: the tail of a telegram, which the source skips.
        conn.write_all(tail.as_bytes()).await.unwrap();
        // Telegrams arrive in pieces, as over a real link.
        for chunk in format!("{first}{second}").as_bytes().chunks(97) {
            conn.write_all(chunk).await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        conn.write_all(bad.as_bytes()).await.unwrap();
        drop(conn);
        let (mut conn, _) = listener.accept().await.unwrap();
        conn.write_all(third.as_bytes()).await.unwrap();
        // Stay open until the test is done reading.
        tokio::time::sleep(Duration::from_secs(5)).await;
    });

    let mut rx = Source::spawn(SourceSpec::parse(&format!("tcp:127.0.0.1:{port}")).unwrap());
    assert_eq!(power(&next(&mut rx).await), 1_100);
    assert_eq!(power(&next(&mut rx).await), 1_200);
    match next(&mut rx).await {
        SourceItem::Bad { reason, .. } => assert!(reason.contains("CRC mismatch"), "{reason}"),
        other => panic!("a damaged telegram was read: {other:?}"),
    }
    // After the gateway dropped the connection, the source reconnected.
    assert_eq!(power(&next(&mut rx).await), 1_300);
    gateway.abort();
}

#[tokio::test]
async fn the_tcp_source_stops_when_the_receiver_is_dropped() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let rx = Source::spawn(SourceSpec::parse(&format!("tcp:127.0.0.1:{port}")).unwrap());
    let (mut conn, _) = listener.accept().await.unwrap();
    drop(rx);
    // The source notices at its next telegram and closes its side.
    let t = telegram(1, 0);
    let mut closed = false;
    for _ in 0..50 {
        if conn.write_all(t.as_bytes()).await.is_err() {
            closed = true;
            break;
        }
        let mut byte = [0u8; 1];
        match tokio::time::timeout(
            Duration::from_millis(100),
            tokio::io::AsyncReadExt::read(&mut conn, &mut byte),
        )
        .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            _ => {}
        }
    }
    assert!(
        closed,
        "the source kept the connection after its receiver was dropped"
    );
}
