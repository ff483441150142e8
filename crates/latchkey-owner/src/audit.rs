//! Reading a device's audit log as an owner: the built-in `audit` action returns a page of
//! entries signed by the device and hash-chained; the page is verified against the device's
//! identity key from the verified chain, and every entry is kept in the profile's store, so a
//! device that later rewrites an entry it once showed is caught.

use latchkey_proto::audit::{parse_page_args, verify_entries, AuditPage, SignedEntry};
use latchkey_proto::codec::Codec;
use latchkey_proto::command::Outcome;

use crate::error::{Error, Result};
use crate::open::Route;
use crate::profile::Profile;
use crate::store::DeviceRecord;

/// The built-in action that returns audit pages (owners only).
pub const AUDIT_ACTION: &str = "audit";

/// A verified page of a device's audit log, oldest entry first.
#[derive(Debug, Clone)]
pub struct AuditReport {
    pub device: DeviceRecord,
    pub entries: Vec<SignedEntry>,
    /// The sequence number the device's next entry will get.
    pub next_seq: u64,
    pub route: Route,
}

impl Profile {
    /// Fetches the newest page of `query`'s audit log, or the page before sequence `before`.
    pub async fn audit(&self, query: &str, before: Option<u64>) -> Result<AuditReport> {
        let args = before.map(|b| b.to_be_bytes().to_vec()).unwrap_or_default();
        debug_assert!(parse_page_args(&args).is_ok());
        let report = self.open(query, AUDIT_ACTION, &args).await?;
        let device = report.device.clone();
        let bad = |why: String| Error::BadAnswer {
            device: device.id.to_string(),
            why,
        };
        match &report.response.outcome {
            Outcome::Accepted => {}
            Outcome::Rejected { reason, .. } => {
                return Err(bad(format!("the device refused to show its log: {reason}")))
            }
            Outcome::ChallengeRequired { .. } => {
                return Err(Error::ChallengeLoop {
                    device: device.id.to_string(),
                })
            }
        }
        let page = AuditPage::from_bytes(&report.response.body)
            .map_err(|e| bad(format!("its audit page does not decode: {e}")))?;
        verify_entries(&page.entries, &device.chain.state().identity, None)
            .map_err(|e| bad(format!("its audit log does not verify: {e}")))?;
        for entry in &page.entries {
            let bytes = entry.to_bytes();
            if !self
                .store
                .keep_audit_entry(&device.id, entry.entry.seq, &bytes)?
            {
                return Err(Error::AuditRewritten {
                    device: device.id.to_string(),
                    seq: entry.entry.seq,
                });
            }
        }
        Ok(AuditReport {
            device: report.device,
            entries: page.entries,
            next_seq: page.next_seq,
            route: report.route,
        })
    }
}
