//! Actuators against real servers on loopback: an HTTP endpoint standing in for Home
//! Assistant, an unreachable MQTT broker, and mDNS discovery of a running agent.

mod support;

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use latchkey_device::actuator::{
    ActionRequest, Actuator, ActuatorError, HttpActuator, MqttActuator,
};
use latchkey_testkit::{person, TestDevice};
use support::*;

fn request(args: &[u8]) -> ActionRequest {
    ActionRequest {
        action: "unlock".into(),
        args: args.to_vec(),
        sender: person(1).public_key(),
        device: TestDevice::new(1, "d").keys.device_id(),
    }
}

#[tokio::test]
async fn the_http_actuator_posts_with_the_bearer_token() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let app = Router::new().route(
        "/api/services/lock/unlock",
        post(move |headers: HeaderMap, body: String| {
            let tx = tx.clone();
            async move {
                let auth = headers
                    .get("authorization")
                    .map(|v| v.to_str().unwrap().to_owned());
                let ctype = headers
                    .get("content-type")
                    .map(|v| v.to_str().unwrap().to_owned());
                let _ = tx.send((auth.clone(), ctype, body));
                if auth.as_deref() == Some("Bearer s3cret") {
                    (StatusCode::OK, "[]")
                } else {
                    (StatusCode::UNAUTHORIZED, "401: Unauthorized")
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/api/services/lock/unlock",
        listener.local_addr().unwrap()
    );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let actuator = |token: Option<&str>| HttpActuator {
        client: reqwest::Client::new(),
        url: url.clone(),
        token: token.map(str::to_owned),
        payload: None,
        timeout: Duration::from_secs(5),
    };

    let out = actuator(Some("s3cret"))
        .run(&request(br#"{"entity_id":"lock.front_door"}"#))
        .await
        .unwrap();
    assert_eq!(out, b"[]");
    let (auth, ctype, body) = rx.recv().await.unwrap();
    assert_eq!(auth.as_deref(), Some("Bearer s3cret"));
    assert_eq!(ctype.as_deref(), Some("application/json"));
    assert_eq!(body, r#"{"entity_id":"lock.front_door"}"#);

    let e = actuator(Some("wrong"))
        .run(&request(b""))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("401"), "{e}");
    let (_, ctype, _) = rx.recv().await.unwrap();
    assert_eq!(ctype.as_deref(), Some("application/octet-stream"));
    server.abort();
}

#[tokio::test]
async fn the_mqtt_actuator_reports_an_unreachable_broker() {
    let a = MqttActuator {
        host: "127.0.0.1".into(),
        port: free_port(),
        topic: "home/door".into(),
        payload: Some("open".into()),
        credentials: None,
        timeout: Duration::from_secs(5),
    };
    let e = a.run(&request(b"")).await.unwrap_err();
    assert!(matches!(e, ActuatorError::Failed(_)), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_agent_is_found_on_mdns() {
    use latchkey_device::lifecycle::{init, InitOptions};
    use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent};

    let tmp = tempfile::tempdir().unwrap();
    let report = init(&InitOptions {
        dir: tmp.path().join("d"),
        name: "Garage".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        // No node is needed to be found locally; nothing listens here.
        nodes: vec![format!("http://127.0.0.1:{}", free_port())],
        actions: vec![],
        advertise: vec![],
        mdns: true,
        refresh_secs: None,
        max_view_age_secs: None,
        max_guest_staleness_secs: None,
        max_owner_staleness_secs: None,
        trust_clock: true,
    })
    .unwrap();
    let agent = latchkey_device::agent::start(&tmp.path().join("d"))
        .await
        .unwrap();

    let browser = ServiceDaemon::new().unwrap();
    browser.disable_interface(IfKind::All).unwrap();
    browser.enable_interface(IfKind::LoopbackV4).unwrap();
    let events = browser.browse(latchkey_device::mdns::SERVICE_TYPE).unwrap();
    let device = report.device.to_string();
    let found = tokio::task::spawn_blocking(move || loop {
        match events.recv_timeout(Duration::from_secs(20)) {
            Ok(ServiceEvent::ServiceResolved(s))
                if s.txt_properties.get_property_val_str("id") == Some(device.as_str()) =>
            {
                return Some(s.get_port());
            }
            Ok(_) => {}
            Err(_) => return None,
        }
    })
    .await
    .unwrap();
    assert_eq!(found, Some(agent.addr().port()));
    let _ = browser.shutdown();
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_hook_answering_forever_costs_the_output_cap_not_the_memory() {
    // A hook (or whoever answers at its address) streams an endless body: the actuator keeps
    // the first MAX_OUTPUT bytes, stops reading and returns well before its time limit.
    let app = Router::new().route(
        "/hook",
        post(|| async {
            let chunk = axum::body::Bytes::from(vec![b'x'; 64 * 1024]);
            let endless =
                futures::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
            axum::body::Body::from_stream(endless)
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let actuator = HttpActuator {
        client: reqwest::Client::new(),
        url,
        token: None,
        payload: Some("{}".into()),
        timeout: Duration::from_secs(10),
    };
    // Reading the whole body (as before) never ends: the run would fail with its time limit.
    let out = actuator.run(&request(b"")).await.unwrap();
    assert_eq!(out.len(), latchkey_device::actuator::MAX_OUTPUT);
    assert!(out.iter().all(|&b| b == b'x'));
    server.abort();
}
