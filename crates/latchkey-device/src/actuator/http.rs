//! `http:URL`: POSTs to a URL (e.g. a Home Assistant service call), with a bearer token from the
//! config. The body is the configured payload, or else the command's arguments; it is sent as
//! JSON when it parses as JSON. A configured payload wins: the arguments are dropped, so what a
//! fixed action sends never depends on the sender. Guests reach here with arguments only when
//! their grant pins them (latchkey-proto `command::authorize`). The headers sent are listed in
//! the crate's README and checked by tests/guest_arguments.rs.

use std::time::Duration;

use futures::future::BoxFuture;

use super::{ActionRequest, Actuator, ActuatorError, MAX_OUTPUT};

pub struct HttpActuator {
    pub client: reqwest::Client,
    pub url: String,
    pub token: Option<String>,
    pub payload: Option<String>,
    pub timeout: Duration,
}

impl std::fmt::Debug for HttpActuator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpActuator")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl Actuator for HttpActuator {
    fn run<'a>(
        &'a self,
        request: &'a ActionRequest,
    ) -> BoxFuture<'a, Result<Vec<u8>, ActuatorError>> {
        Box::pin(async move {
            let body = match &self.payload {
                Some(p) => p.clone().into_bytes(),
                None => request.args.clone(),
            };
            let content_type = if serde_json::from_slice::<serde_json::Value>(&body).is_ok() {
                "application/json"
            } else {
                "application/octet-stream"
            };
            let mut post = self
                .client
                .post(&self.url)
                .timeout(self.timeout)
                .header("content-type", content_type)
                .header("x-latchkey-action", &request.action)
                .header("x-latchkey-sender", request.sender.to_string())
                .body(body);
            if let Some(token) = &self.token {
                post = post.bearer_auth(token);
            }
            let resp = post.send().await.map_err(|e| {
                if e.is_timeout() {
                    ActuatorError::TimedOut(self.timeout)
                } else {
                    ActuatorError::Failed(e.without_url().to_string())
                }
            })?;
            let status = resp.status();
            let out = read_head(resp, MAX_OUTPUT).await?;
            if status.is_success() {
                Ok(out)
            } else {
                let text: String = String::from_utf8_lossy(&out).chars().take(100).collect();
                Err(ActuatorError::Failed(format!("HTTP {status}: {text}")))
            }
        })
    }
}

/// The first `max` bytes of the hook's answer: the rest is never read (the connection is
/// dropped), so a hook that answers with an endless body costs at most `max` bytes of memory.
async fn read_head(mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, ActuatorError> {
    let mut out = Vec::new();
    while out.len() < max {
        let chunk = resp
            .chunk()
            .await
            .map_err(|e| ActuatorError::Failed(e.without_url().to_string()))?;
        let Some(chunk) = chunk else { break };
        let room = max - out.len();
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    Ok(out)
}
