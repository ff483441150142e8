//! `gpio:/dev/gpiochipN:LINE`: drives a line of a Linux GPIO character device active for a
//! pulse (e.g. a door strike's relay), then inactive again.

use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use gpiocdev::line::Value;

use super::{ActionRequest, Actuator, ActuatorError};

#[derive(Debug)]
pub struct GpioActuator {
    pub chip: PathBuf,
    pub line: u32,
    pub pulse: Duration,
}

impl Actuator for GpioActuator {
    fn run<'a>(
        &'a self,
        _request: &'a ActionRequest,
    ) -> BoxFuture<'a, Result<Vec<u8>, ActuatorError>> {
        Box::pin(async move {
            let chip = self.chip.clone();
            let (line, pulse) = (self.line, self.pulse);
            tokio::task::spawn_blocking(move || pulse_line(&chip, line, pulse))
                .await
                .map_err(|e| ActuatorError::Failed(e.to_string()))?
        })
    }
}

fn pulse_line(chip: &PathBuf, line: u32, pulse: Duration) -> Result<Vec<u8>, ActuatorError> {
    let request = gpiocdev::Request::builder()
        .on_chip(chip)
        .with_consumer("latchkeyd")
        .with_line(line)
        .as_output(Value::Active)
        .request()
        .map_err(|e| ActuatorError::Start(format!("{}:{line}: {e}", chip.display())))?;
    std::thread::sleep(pulse);
    request
        .set_value(line, Value::Inactive)
        .map_err(|e| ActuatorError::Failed(format!("{}:{line}: {e}", chip.display())))?;
    Ok(format!(
        "pulsed {}:{line} for {} ms",
        chip.display(),
        pulse.as_millis()
    )
    .into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use latchkey_testkit::{person, TestDevice};

    #[tokio::test]
    async fn a_missing_chip_is_a_clear_error() {
        let a = GpioActuator {
            chip: "/dev/gpiochip-latchkey-test-missing".into(),
            line: 3,
            pulse: Duration::from_millis(1),
        };
        let request = ActionRequest {
            action: "unlock".into(),
            args: vec![],
            sender: person(1).public_key(),
            device: TestDevice::new(1, "d").keys.device_id(),
        };
        let e = a.run(&request).await.unwrap_err();
        assert!(matches!(e, ActuatorError::Start(_)), "{e}");
        assert!(
            e.to_string().contains("gpiochip-latchkey-test-missing"),
            "{e}"
        );
    }
}
