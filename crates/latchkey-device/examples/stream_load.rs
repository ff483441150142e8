//! End-to-end delay of a stream reading on loopback, through a real Mosquitto: the device's
//! per-reading step (`StreamKeys::seal`: sequence number, block reservation, seal) and the
//! rumqttc publish (QoS 1) on one side; a subscriber that receives the frame and opens it with
//! the stream key on the other. Prints the seal cost, the publish queueing cost and the delay
//! from "reading in hand" to "reading opened" (median, p90, p99, max).
//!
//! Run: `cargo run --release -p latchkey-device --example stream_load -- [READINGS] [RATE]`
//! (defaults 2,000 readings at 200 a second; a DSMR 5 meter sends 1 a second). Needs
//! `mosquitto` on the PATH. Figures: docs/BENCHMARKS.md.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use latchkey_device::store::Store;
use latchkey_device::stream::keys::StreamKeys;
use latchkey_proto::keys::DeviceId;
use latchkey_proto::stream::{live_topic, open_reading, peek_reading, Phase, Reading};
use rand_core::OsRng;

fn reading(i: u64) -> Reading {
    Reading {
        meter_time_ms: Some(1_800_000_000_000 + i * 1000),
        tariff: Some(2),
        energy_delivered_wh: vec![12_345_678 + i, 9_876_543],
        energy_returned_wh: vec![1_234_567, 765_432],
        power_delivered_w: Some(1_193),
        power_returned_w: Some(0),
        phases: (0..3)
            .map(|p| Phase {
                voltage_mv: Some(230_100 + p),
                current_ma: Some(1_000 + p),
                power_delivered_w: Some(400 + p),
                power_returned_w: Some(0),
            })
            .collect(),
        gas_l: Some(2_569_646),
        gas_time_ms: Some(1_800_000_000_000),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2_000);
    let rate: f64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(200.0);

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
    )
    .unwrap();
    let mut broker = std::process::Command::new("mosquitto")
        .args(["-c", conf.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("mosquitto on the PATH");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let device = DeviceId([7; 32]);
    let store = Arc::new(Store::open(&dir.path().join("state.db")).unwrap());
    let keys = Arc::new(StreamKeys::open(store, device, ["p1".to_owned()], 0, &mut OsRng).unwrap());
    let _ = keys.plan("p1").unwrap();
    let key = keys.keys("p1").unwrap().remove(0).2;
    let topic = live_topic(&device, "p1");

    let sent: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let delays: Arc<Mutex<Vec<Duration>>> = Arc::default();

    let mut sub_opts = rumqttc::MqttOptions::new("load-sub", "127.0.0.1", port);
    sub_opts.set_max_packet_size(64 * 1024, 64 * 1024);
    let (sub, mut sub_events) = rumqttc::AsyncClient::new(sub_opts, 1000);
    sub.subscribe(&topic, rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    {
        let (sent, delays) = (sent.clone(), delays.clone());
        let mut ready = Some(ready_tx);
        tokio::spawn(async move {
            loop {
                match sub_events.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        let (h, _) = open_reading(&p.payload, &key).expect("opens");
                        let at = sent.lock().unwrap().remove(&h.seq);
                        if let Some(at) = at {
                            delays.lock().unwrap().push(at.elapsed());
                        }
                        let _ = peek_reading(&p.payload);
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
    }
    ready_rx.await.unwrap();

    let (client, mut events) =
        latchkey_device::stream::publish::connect(&format!("mqtt://127.0.0.1:{port}"), &device)
            .unwrap();
    tokio::spawn(async move {
        loop {
            if events.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });

    let mut seal_total = Duration::ZERO;
    let mut publish_total = Duration::ZERO;
    let every = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    for i in 0..n {
        let due = start + every.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let r = reading(i);
        let t0 = Instant::now();
        let sealed = keys.seal("p1", &r, &mut OsRng).unwrap().unwrap();
        let t1 = Instant::now();
        sent.lock().unwrap().insert(sealed.seq, t0);
        client
            .publish(&topic, rumqttc::QoS::AtLeastOnce, false, sealed.frame)
            .await
            .unwrap();
        seal_total += t1 - t0;
        publish_total += t1.elapsed();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while delays.lock().unwrap().len() < n as usize && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut d = delays.lock().unwrap().clone();
    d.sort();
    println!(
        "readings {n} at {rate}/s; received {} ({} lost)",
        d.len(),
        n as usize - d.len()
    );
    println!(
        "device seal per reading: {:.1} µs; publish (queue to the MQTT client) per reading: {:.1} µs",
        seal_total.as_secs_f64() * 1e6 / n as f64,
        publish_total.as_secs_f64() * 1e6 / n as f64
    );
    if !d.is_empty() {
        println!(
            "delay reading → opened by the subscriber: median {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            percentile(&d, 0.5).as_secs_f64() * 1e3,
            percentile(&d, 0.9).as_secs_f64() * 1e3,
            percentile(&d, 0.99).as_secs_f64() * 1e3,
            d[d.len() - 1].as_secs_f64() * 1e3,
        );
    }
    let _ = broker.kill();
    let _ = broker.wait();
}
