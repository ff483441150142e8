//! The last signed answer from each device, kept in the profile so a device card can still say
//! "opened by you at 08:12" after the app was closed. Only public data is kept: the device's
//! signed response (it names the command by its hash, never its contents), how it came back and
//! when. Read back, the signature is checked again against the device's identity key from the
//! profile's verified chain, so a profile file edited by hand cannot put words in a door's mouth.

use latchkey_proto::codec::Codec;
use latchkey_proto::command::SignedResponse;
use rusqlite::{params, OptionalExtension};

use crate::error::Result;
use crate::open::{OpenReport, Route};
use crate::profile::Profile;
use crate::store::DeviceRecord;

/// A device's last answer as this profile received it.
#[derive(Debug, Clone)]
pub struct LastAnswer {
    pub report: OpenReport,
    /// When this profile received it (its own clock).
    pub received_ms: u64,
}

fn route_parts(route: &Route) -> (&'static str, &str) {
    match route {
        Route::Direct(addr) => ("direct", addr),
        Route::Relay(node) => ("relay", node),
    }
}

fn route_from(kind: &str, via: String) -> Option<Route> {
    match kind {
        "direct" => Some(Route::Direct(via)),
        "relay" => Some(Route::Relay(via)),
        _ => None,
    }
}

impl Profile {
    /// Keeps `report` as its device's last answer, replacing the one before.
    pub fn keep_last_answer(&self, report: &OpenReport) -> Result<()> {
        let conn = self.store.conn();
        let signed = SignedResponse {
            response: report.response.clone(),
            signature: report.signature,
        };
        let (route, via) = route_parts(&report.route);
        let lost = report.lost_reply.as_ref().map(route_parts);
        // A copy of a signed answer for the device card: a power cut that loses it loses
        // nothing that cannot be asked again, so this one write is committed without an fsync
        // (WAL with synchronous=NORMAL still survives a crash of the app). It was the only
        // fsync left on an open.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| self.store.wrap(e))?;
        // Whatever fails, the connection goes back to FULL below (it is handed to the next
        // profile of the session).
        let written = conn
            .prepare_cached(
                "INSERT OR REPLACE INTO last_answers (device, action, response, route, via,
                 lost_route, lost_via, latency_ms, challenged, received_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .and_then(|mut insert| {
                insert.execute(params![
                    report.device.id.to_string(),
                    report.action,
                    signed.to_bytes(),
                    route,
                    via,
                    lost.map(|(kind, _)| kind),
                    lost.map(|(_, via)| via),
                    i64::try_from(report.latency_ms).unwrap_or(i64::MAX),
                    report.challenged,
                    i64::try_from(self.now_ms()).unwrap_or(i64::MAX),
                ])
            });
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| self.store.wrap(e))?;
        written.map_err(|e| self.store.wrap(e))?;
        Ok(())
    }

    /// The last answer kept for `record`'s device, if there is one that still verifies against
    /// the device's identity key; one that does not is dropped with a warning.
    pub fn last_answer(&self, record: &DeviceRecord) -> Result<Option<LastAnswer>> {
        let device = &record.id.to_string();
        type Row = (
            String,
            Vec<u8>,
            String,
            String,
            Option<String>,
            Option<String>,
            i64,
            bool,
            i64,
        );
        let row: Option<Row> = self
            .store
            .stmt(
                "SELECT action, response, route, via, lost_route, lost_via, latency_ms,
                        challenged, received_ms
                 FROM last_answers WHERE device = ?1",
            )?
            .query_row(params![device], |r| Row::try_from(r))
            .optional()
            .map_err(|e| self.store.wrap(e))?;
        let Some((action, bytes, route, via, lost_route, lost_via, latency, challenged, received)) =
            row
        else {
            return Ok(None);
        };
        let identity = record.chain.state().identity;
        let checked = SignedResponse::from_bytes(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|signed| {
                signed
                    .verify(&identity, &record.id, &signed.response.command)
                    .map_err(|e| e.to_string())?;
                Ok(signed)
            });
        let signed = match checked {
            Ok(signed) => signed,
            Err(why) => {
                tracing::warn!(%device, %why, "a kept answer no longer verifies; dropped");
                self.forget_last_answer(device)?;
                return Ok(None);
            }
        };
        let Some(route) = route_from(&route, via) else {
            return Ok(None);
        };
        let lost_reply = lost_route
            .zip(lost_via)
            .and_then(|(k, v)| route_from(&k, v));
        Ok(Some(LastAnswer {
            report: OpenReport {
                device: record.clone(),
                action,
                response: signed.response,
                signature: signed.signature,
                route,
                latency_ms: u64::try_from(latency).unwrap_or(0),
                challenged,
                lost_reply,
            },
            received_ms: u64::try_from(received).unwrap_or(0),
        }))
    }

    /// Drops the answer kept for `device`.
    pub fn forget_last_answer(&self, device: &str) -> Result<()> {
        self.store
            .stmt("DELETE FROM last_answers WHERE device = ?1")?
            .execute(params![device])
            .map_err(|e| self.store.wrap(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use latchkey_proto::command::{CommandId, Outcome, Response};
    use latchkey_proto::keys::Signature;
    use latchkey_testkit::{person, TestDevice};

    use crate::keychain::MemoryStore;
    use crate::open::{OpenReport, Route};
    use crate::profile::{Profile, SystemClock};
    use crate::store::DeviceRecord;

    /// The write is made without an fsync and the connection is then handed to the next
    /// profile of the session: a failed write must still leave it at `synchronous=FULL`, or
    /// every later durable write over it (a claim, a grant) would skip its fsync.
    #[test]
    fn a_failed_write_leaves_the_pooled_connection_durable() {
        let tmp = tempfile::tempdir().unwrap();
        let seeds = Arc::new(MemoryStore::default());
        let first = Profile::at(tmp.path(), seeds.clone(), Arc::new(SystemClock)).unwrap();
        let session = first.session();
        let mut door = TestDevice::new(1, "Door");
        door.claim(&[&person(1)], 1);
        let device = DeviceRecord {
            id: door.chain.device(),
            name: "Door".into(),
            addrs: Vec::new(),
            chain: door.chain.clone(),
            verified_at_ms: 0,
        };
        let report = OpenReport {
            response: Response {
                device: device.id,
                command: CommandId([7; 32]),
                timestamp_ms: None,
                outcome: Outcome::Accepted,
                body: Vec::new(),
            },
            device,
            action: "unlock".into(),
            signature: Signature([0; 64]),
            route: Route::Direct("127.0.0.1:1".into()),
            latency_ms: 1,
            challenged: false,
            lost_reply: None,
        };
        // The table gone, the INSERT cannot even be prepared.
        first
            .store
            .conn()
            .execute_batch("DROP TABLE last_answers")
            .unwrap();
        assert!(first.keep_last_answer(&report).is_err());
        drop(first);
        let next =
            Profile::with_session(tmp.path(), seeds, Arc::new(SystemClock), session).unwrap();
        let synchronous: i64 = next
            .store
            .conn()
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            synchronous, 2,
            "the next profile got a connection at NORMAL"
        );
        // The same connection was handed on: it still misses the dropped table.
        assert!(next
            .store
            .conn()
            .prepare("SELECT 1 FROM last_answers")
            .is_err());
    }
}
