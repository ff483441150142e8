//! The free tier (docs/PROTOCOL.md §14): per stream, the 1-minute mean power and the energy
//! so far in the current clock hour, in clear JSON on `latchkey/<device>/<stream>/avg1m`
//! (retained), for anyone on the broker. Coarse on purpose: a minute's mean and an hour's
//! energy do not show what the second-by-second readings show.
//!
//! Minutes and hours follow the meter's clock (a replayed file keeps its own time); a reading
//! without a meter time uses the device's clock. A minute is published when the first reading
//! of a later minute arrives.

use latchkey_proto::keys::DeviceId;
use latchkey_proto::stream::Reading;
use serde::Serialize;

const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 3_600_000;

/// One `avg1m` message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MinuteAggregate {
    pub device: String,
    pub stream: String,
    pub minute_start: String,
    pub samples: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power_delivered_kw_mean: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power_returned_kw_mean: Option<f64>,
    pub hour_start: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub energy_delivered_kwh_hour: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub energy_returned_kwh_hour: Option<f64>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Mean {
    sum: u64,
    n: u64,
}

impl Mean {
    fn add(&mut self, v: Option<u32>) {
        if let Some(v) = v {
            self.sum += u64::from(v);
            self.n += 1;
        }
    }
    fn kw(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum as f64 / self.n as f64 / 1000.0)
    }
}

#[derive(Debug, Clone, Copy)]
struct Minute {
    start_ms: u64,
    samples: u64,
    delivered: Mean,
    returned: Mean,
}

/// Energy so far in one clock hour: the meter totals at its start and the latest.
#[derive(Debug, Clone, Copy)]
struct Hour {
    start_ms: u64,
    base: (Option<u64>, Option<u64>),
    last: (Option<u64>, Option<u64>),
}

/// Folds readings into minute aggregates.
#[derive(Debug, Clone)]
pub struct Aggregator {
    device: String,
    stream: String,
    minute: Option<Minute>,
    hour: Option<Hour>,
}

fn total(values: &[u64]) -> Option<u64> {
    (!values.is_empty()).then(|| values.iter().sum())
}

fn kwh(base: Option<u64>, last: Option<u64>) -> Option<f64> {
    Some(last?.saturating_sub(base?) as f64 / 1000.0)
}

/// `ms` (a whole minute) as RFC 3339 UTC with seconds: `2026-12-01T06:00:00Z`.
pub fn rfc3339_minute(ms: u64) -> String {
    let m = crate::clock::utc_minute(ms);
    format!("{}:00Z", m.trim_end_matches('Z'))
}

impl Aggregator {
    pub fn new(device: &DeviceId, stream: &str) -> Self {
        Aggregator {
            device: device.to_string(),
            stream: stream.to_owned(),
            minute: None,
            hour: None,
        }
    }

    /// Adds a reading taken at `now_ms` (device clock, used when the meter gives no time);
    /// returns the previous minute's aggregate when this reading starts a new minute.
    pub fn push(&mut self, reading: &Reading, now_ms: u64) -> Option<MinuteAggregate> {
        let t = reading.meter_time_ms.unwrap_or(now_ms);
        let minute_start = t - t % MINUTE_MS;
        let hour_start = t - t % HOUR_MS;
        let done = match self.minute {
            Some(m) if m.start_ms != minute_start => Some(self.finish(m)),
            _ => None,
        };
        if self.minute.is_none_or(|m| m.start_ms != minute_start) {
            self.minute = Some(Minute {
                start_ms: minute_start,
                samples: 0,
                delivered: Mean::default(),
                returned: Mean::default(),
            });
        }
        let now_totals = (
            total(&reading.energy_delivered_wh),
            total(&reading.energy_returned_wh),
        );
        match &mut self.hour {
            Some(h) if h.start_ms == hour_start => h.last = now_totals,
            other => {
                // A new hour starts from the last totals of the one before (so the energy
                // between its last reading and this one counts), else from this reading.
                let base = match other {
                    Some(prev) if prev.start_ms < hour_start => {
                        (prev.last.0.or(now_totals.0), prev.last.1.or(now_totals.1))
                    }
                    _ => now_totals,
                };
                *other = Some(Hour {
                    start_ms: hour_start,
                    base,
                    last: now_totals,
                });
            }
        }
        if let Some(m) = &mut self.minute {
            m.samples += 1;
            m.delivered.add(reading.power_delivered_w);
            m.returned.add(reading.power_returned_w);
        }
        done
    }

    fn finish(&self, m: Minute) -> MinuteAggregate {
        let (hour_start, delivered, returned) = match self.hour {
            Some(h) => (h.start_ms, kwh(h.base.0, h.last.0), kwh(h.base.1, h.last.1)),
            None => (m.start_ms - m.start_ms % HOUR_MS, None, None),
        };
        MinuteAggregate {
            device: self.device.clone(),
            stream: self.stream.clone(),
            minute_start: rfc3339_minute(m.start_ms),
            samples: m.samples,
            power_delivered_kw_mean: m.delivered.kw(),
            power_returned_kw_mean: m.returned.kw(),
            hour_start: rfc3339_minute(hour_start),
            energy_delivered_kwh_hour: delivered,
            energy_returned_kwh_hour: returned,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(t: u64, w: u32, wh: u64) -> Reading {
        Reading {
            meter_time_ms: Some(t),
            tariff: Some(1),
            energy_delivered_wh: vec![wh, 1000],
            energy_returned_wh: vec![],
            power_delivered_w: Some(w),
            power_returned_w: None,
            phases: vec![],
            gas_l: None,
            gas_time_ms: None,
        }
    }

    #[test]
    fn a_minute_is_its_mean_and_the_hour_its_energy_so_far() {
        // 2026-12-01T06:59:00Z
        let t0 = 1_796_108_340_000;
        let mut a = Aggregator::new(&DeviceId([1; 32]), "p1");
        assert_eq!(a.push(&reading(t0, 1000, 5_000), 0), None);
        assert_eq!(a.push(&reading(t0 + 30_000, 2000, 5_010), 0), None);
        // 07:00:10 closes 06:59 and starts a new hour from 06:59's last totals.
        let m = a.push(&reading(t0 + 70_000, 500, 5_030), 0).unwrap();
        assert_eq!(m.minute_start, "2026-12-01T06:59:00Z");
        assert_eq!(m.samples, 2);
        assert_eq!(m.power_delivered_kw_mean, Some(1.5));
        assert_eq!(m.power_returned_kw_mean, None, "the meter gave none");
        assert_eq!(m.hour_start, "2026-12-01T06:00:00Z");
        assert_eq!(m.energy_delivered_kwh_hour, Some(0.01));
        assert_eq!(m.energy_returned_kwh_hour, None);
        let m = a.push(&reading(t0 + 130_000, 500, 5_050), 0).unwrap();
        assert_eq!(m.minute_start, "2026-12-01T07:00:00Z");
        assert_eq!(m.hour_start, "2026-12-01T07:00:00Z");
        assert_eq!(m.energy_delivered_kwh_hour, Some(0.02));
        let json = serde_json::to_value(&m).unwrap();
        assert!(json.get("power_returned_kw_mean").is_none());
        assert_eq!(json["samples"], 1);
        assert!(json["device"].as_str().unwrap().starts_with("lkdev1"));
    }
}
