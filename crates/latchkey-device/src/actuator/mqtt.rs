//! `mqtt:HOST:PORT/topic`: publishes (QoS 1, waits for the broker's acknowledgement) the
//! configured payload, or else the command's arguments. A configured payload wins: the
//! arguments are dropped.

use std::time::Duration;

use futures::future::BoxFuture;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use super::{ActionRequest, Actuator, ActuatorError};

pub struct MqttActuator {
    pub host: String,
    pub port: u16,
    pub topic: String,
    pub payload: Option<String>,
    pub credentials: Option<(String, String)>,
    pub timeout: Duration,
}

impl std::fmt::Debug for MqttActuator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttActuator")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl Actuator for MqttActuator {
    fn run<'a>(
        &'a self,
        request: &'a ActionRequest,
    ) -> BoxFuture<'a, Result<Vec<u8>, ActuatorError>> {
        Box::pin(async move {
            match tokio::time::timeout(self.timeout, self.publish(request)).await {
                Ok(result) => result,
                Err(_) => Err(ActuatorError::TimedOut(self.timeout)),
            }
        })
    }
}

impl MqttActuator {
    async fn publish(&self, request: &ActionRequest) -> Result<Vec<u8>, ActuatorError> {
        let payload = match &self.payload {
            Some(p) => p.clone().into_bytes(),
            None => request.args.clone(),
        };
        let mut nonce = [0u8; 6];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
        let client_id = format!("latchkeyd-{}", hex::encode(nonce));
        let mut options = MqttOptions::new(client_id, self.host.clone(), self.port);
        options.set_keep_alive(Duration::from_secs(10));
        if let Some((user, pass)) = &self.credentials {
            options.set_credentials(user.clone(), pass.clone());
        }
        let (client, mut events) = AsyncClient::new(options, 4);
        client
            .publish(&self.topic, QoS::AtLeastOnce, false, payload.clone())
            .await
            .map_err(|e| ActuatorError::Failed(e.to_string()))?;
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => break,
                Ok(Event::Incoming(Packet::ConnAck(ack)))
                    if ack.code != rumqttc::ConnectReturnCode::Success =>
                {
                    return Err(ActuatorError::Failed(format!(
                        "the broker refused the connection: {:?}",
                        ack.code
                    )))
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(ActuatorError::Failed(format!(
                        "{}:{}: {e}",
                        self.host, self.port
                    )))
                }
            }
        }
        let _ = client.disconnect().await;
        // Let the disconnect go out; the broker has the message already.
        let _ = tokio::time::timeout(Duration::from_millis(200), events.poll()).await;
        Ok(format!("published {} bytes to {}", payload.len(), self.topic).into_bytes())
    }
}
