//! Actuators: what an accepted action does. One trait, five drivers: `exec` (a program, argv
//! only, never a shell), `http` (a POST, e.g. a Home Assistant service call), `mqtt` (a
//! publish), `gpio` (a pulse on a Linux GPIO line) and `log` (dry run).

mod exec;
mod gpio;
mod http;
mod mqtt;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;
use latchkey_proto::keys::{DeviceId, PublicKey};

pub use exec::ExecActuator;
pub use gpio::GpioActuator;
pub use http::HttpActuator;
pub use mqtt::MqttActuator;

use crate::config::{ActionConfig, Config, Driver};

/// The largest output an actuator returns (it travels in the signed response body).
pub const MAX_OUTPUT: usize = latchkey_proto::command::MAX_RESPONSE_BODY;

/// One accepted command, as an actuator sees it.
#[derive(Debug, Clone)]
pub struct ActionRequest {
    pub action: String,
    /// The command's arguments (at most 1 KiB).
    pub args: Vec<u8>,
    pub sender: PublicKey,
    pub device: DeviceId,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ActuatorError {
    #[error("could not start: {0}")]
    Start(String),
    #[error("timed out after {0:?} and was stopped")]
    TimedOut(Duration),
    #[error("failed: {0}")]
    Failed(String),
    #[error("bad arguments: {0}")]
    BadArgs(String),
}

/// Runs one kind of action. Implementations must not interpret arguments through a shell.
pub trait Actuator: Send + Sync + fmt::Debug {
    /// Performs the action; the output (at most [`MAX_OUTPUT`] bytes are kept) goes back to
    /// the sender in the signed response.
    fn run<'a>(
        &'a self,
        request: &'a ActionRequest,
    ) -> BoxFuture<'a, Result<Vec<u8>, ActuatorError>>;
}

/// The dry-run driver: logs and succeeds.
#[derive(Debug, Default)]
pub struct LogActuator;

impl Actuator for LogActuator {
    fn run<'a>(
        &'a self,
        request: &'a ActionRequest,
    ) -> BoxFuture<'a, Result<Vec<u8>, ActuatorError>> {
        Box::pin(async move {
            tracing::info!(
                action = %request.action,
                sender = %request.sender,
                args = request.args.len(),
                "dry run (log driver)"
            );
            Ok(format!("dry run: {}", request.action).into_bytes())
        })
    }
}

/// Every configured action's actuator, by name.
#[derive(Debug, Default)]
pub struct Actuators {
    by_name: BTreeMap<String, Box<dyn Actuator>>,
}

impl Actuators {
    pub fn from_config(config: &Config) -> Result<Self, String> {
        let mut by_name: BTreeMap<String, Box<dyn Actuator>> = BTreeMap::new();
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        for (name, driver) in config.drivers()? {
            let settings = &config.actions[&name];
            by_name.insert(name, build(driver, settings, &http));
        }
        Ok(Actuators { by_name })
    }

    pub fn insert(&mut self, name: &str, actuator: Box<dyn Actuator>) {
        self.by_name.insert(name.to_owned(), actuator);
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// Runs `request.action`'s actuator.
    pub async fn run(&self, request: &ActionRequest) -> Result<Vec<u8>, ActuatorError> {
        let actuator = self
            .by_name
            .get(&request.action)
            .ok_or_else(|| ActuatorError::Start(format!("no actuator for {}", request.action)))?;
        let mut out = actuator.run(request).await?;
        out.truncate(MAX_OUTPUT);
        Ok(out)
    }
}

fn build(driver: Driver, settings: &ActionConfig, http: &reqwest::Client) -> Box<dyn Actuator> {
    let timeout = settings.timeout();
    match driver {
        Driver::Exec { program } => Box::new(ExecActuator {
            program,
            fixed_args: settings.args.clone(),
            timeout,
        }),
        Driver::Http { url } => Box::new(HttpActuator {
            client: http.clone(),
            url,
            token: settings.token.clone(),
            payload: settings.payload.clone(),
            timeout,
        }),
        Driver::Mqtt { host, port, topic } => Box::new(MqttActuator {
            host,
            port,
            topic,
            payload: settings.payload.clone(),
            credentials: settings
                .username
                .clone()
                .map(|u| (u, settings.password.clone().unwrap_or_default())),
            timeout,
        }),
        Driver::Gpio { chip, line } => Box::new(GpioActuator {
            chip,
            line,
            pulse: Duration::from_millis(settings.pulse_ms.unwrap_or(500)),
        }),
        Driver::Log => Box::new(LogActuator),
    }
}
