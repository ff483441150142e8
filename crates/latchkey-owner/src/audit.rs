//! Reading a device's audit log as an owner: the built-in `audit` action returns a page of
//! entries signed by the device and hash-chained; the page is verified against the device's
//! identity key from the verified chain, and every entry is kept in the profile's store, so a
//! device that later rewrites an entry it once showed is caught. Copies are kept per ownership
//! era: a new era's log restarting at entry 0 is not a rewrite, and the old era's copies stay.

use latchkey_proto::audit::{parse_page_args, verify_entries, AuditBody, AuditPage, SignedEntry};
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
    /// The oldest entry the device still holds in this era (page back with `before` down to
    /// it).
    pub oldest: u64,
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
            let e = &entry.entry;
            // A prune marker vouches for the hash of the last entry it deleted: if this profile
            // kept that entry, the two must agree, or the device rewrote what it pruned.
            if let AuditBody::Pruned(p) = &e.body {
                if let Some(kept) = self.store.kept_audit_entry(&device.id, &e.era, p.last)? {
                    let same =
                        SignedEntry::from_bytes(&kept).is_ok_and(|k| k.entry.hash() == p.last_hash);
                    if !same {
                        return Err(Error::AuditRewritten {
                            device: device.id.to_string(),
                            seq: p.last,
                        });
                    }
                }
            }
            if !self
                .store
                .keep_audit_entry(&device.id, &e.era, e.seq, &entry.to_bytes())?
            {
                return Err(Error::AuditRewritten {
                    device: device.id.to_string(),
                    seq: e.seq,
                });
            }
        }
        Ok(AuditReport {
            device: report.device,
            entries: page.entries,
            oldest: page.oldest,
            next_seq: page.next_seq,
            route: report.route,
        })
    }
}

/// One entry in plain words, as the CLI and the app show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryLine {
    pub seq: u64,
    pub time_ms: Option<u64>,
    pub kind: &'static str,
    /// The sender's key when the entry names one.
    pub sender: Option<latchkey_proto::keys::PublicKey>,
    /// E.g. "1,234 unreadable envelopes refused between 02:00 and 02:01", "about to run
    /// unlock for a guest (no arguments) … then: ran".
    pub text: String,
    /// 0 for accepted or informational entries, else the reject code.
    pub code: u16,
    /// For entries about one command: its action, the pipeline stage that decided it, and how
    /// it arrived.
    pub action: Option<String>,
    pub stage: Option<latchkey_proto::audit::Stage>,
    pub via: Option<latchkey_proto::audit::Via>,
}

/// Words a page of entries (oldest first) for people. An "about to run" entry is joined with
/// its outcome ("… then: ran"); one with no outcome after it is flagged: the device stopped
/// while the action ran (a crash or power cut), so whether it finished is unknown.
pub fn describe_entries(entries: &[SignedEntry], time: &dyn Fn(u64) -> String) -> Vec<EntryLine> {
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let entry = &e.entry;
        let (sender, code, action, stage, via) = match &entry.body {
            AuditBody::Decision(r) => (
                r.sender,
                r.code,
                Some(r.action.clone()),
                Some(r.stage),
                Some(r.via),
            ),
            AuditBody::Running(r) => (
                Some(r.sender),
                0,
                Some(r.action.clone()),
                Some(latchkey_proto::audit::Stage::Action),
                Some(r.via),
            ),
            _ => (None, 0, None, None, None),
        };
        let mut text = entry.body.describe(time);
        if let AuditBody::Running(run) = &entry.body {
            let outcome = entries[i + 1..]
                .iter()
                .find_map(|later| match &later.entry.body {
                    AuditBody::Decision(r) if r.command == Some(run.command) => Some(r),
                    _ => None,
                });
            match outcome {
                Some(r) if r.code == 0 => text.push_str(" … then: ran"),
                Some(r) => text.push_str(&format!(" … then: failed ({})", r.detail)),
                None if i + 1 < entries.len() => {
                    text.push_str(" … no outcome recorded: the device stopped while it ran")
                }
                None => text.push_str(" … running"),
            }
        }
        // The outcome is already told with its "about to run" entry.
        if let AuditBody::Decision(r) = &entry.body {
            let told = r.stage == latchkey_proto::audit::Stage::Action
                && entries[..i].iter().any(|before| {
                    matches!(&before.entry.body, AuditBody::Running(run) if Some(run.command) == r.command)
                });
            if told {
                continue;
            }
        }
        out.push(EntryLine {
            seq: entry.seq,
            time_ms: entry.time_ms,
            kind: entry.body.kind_name(),
            sender,
            text,
            code,
            action,
            stage,
            via,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use latchkey_proto::audit::{
        ArgsDigest, AuditEntry, AuditRecord, EraCause, EraStart, Running, Stage, Via, ViewMark,
    };
    use latchkey_proto::command::CommandId;
    use latchkey_proto::keys::{DeviceId, SigningKey};

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[9; 32])
    }

    fn run(era: [u8; 32], bodies: Vec<AuditBody>) -> Vec<SignedEntry> {
        let mut prev = [0; 32];
        std::iter::once(AuditBody::EraStart(EraStart {
            cause: EraCause::Claim,
            op_seq: 1,
        }))
        .chain(bodies)
        .enumerate()
        .map(|(i, body)| {
            let e = AuditEntry {
                seq: i as u64,
                prev,
                era,
                time_ms: Some(1_000),
                body,
            }
            .sign(&key());
            prev = e.entry.hash();
            e
        })
        .collect()
    }

    fn running(n: u8) -> AuditBody {
        AuditBody::Running(Running {
            via: Via::Local,
            envelope: [n; 32],
            sender: key().public_key(),
            command: CommandId([n; 32]),
            action: "unlock".into(),
            args: ArgsDigest::of(b""),
            by_owner: true,
            view: ViewMark::default(),
        })
    }

    fn outcome(n: u8, code: u16) -> AuditBody {
        AuditBody::Decision(AuditRecord {
            via: Via::Local,
            envelope: [n; 32],
            sender: Some(key().public_key()),
            command: Some(CommandId([n; 32])),
            action: "unlock".into(),
            args: Some(ArgsDigest::of(b"")),
            code,
            stage: Stage::Action,
            detail: "ran; 7 bytes of output".into(),
            view: ViewMark::default(),
        })
    }

    #[test]
    fn about_to_run_is_told_with_its_outcome_or_its_absence() {
        let entries = run(
            [1; 32],
            vec![
                running(1),
                outcome(1, 0),
                running(2),
                running(3),
                outcome(3, 15),
            ],
        );
        let lines = describe_entries(&entries, &|ms| ms.to_string());
        let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(
            texts.len(),
            4,
            "outcomes are told with their about-to-run: {texts:?}"
        );
        assert_eq!(texts[0], "claimed: new owners from here");
        assert!(texts[1].ends_with("… then: ran"), "{}", texts[1]);
        assert!(texts[2].contains("no outcome recorded"), "{}", texts[2]);
        assert!(texts[3].contains("then: failed"), "{}", texts[3]);
        assert_eq!(lines[1].action.as_deref(), Some("unlock"));
    }

    #[test]
    fn copies_are_kept_per_era_so_a_new_era_is_not_a_rewrite() {
        let tmp = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(tmp.path(), Default::default()).unwrap();
        let device = DeviceId([4; 32]);
        let old = run([1; 32], vec![]);
        let new = run([2; 32], vec![]);
        assert_ne!(old[0].to_bytes(), new[0].to_bytes());
        assert!(store
            .keep_audit_entry(&device, &[1; 32], 0, &old[0].to_bytes())
            .unwrap());
        // Entry 0 of the next era differs from the old one: kept beside it, no alarm.
        assert!(store
            .keep_audit_entry(&device, &[2; 32], 0, &new[0].to_bytes())
            .unwrap());
        assert_eq!(
            store.kept_audit_entry(&device, &[1; 32], 0).unwrap(),
            Some(old[0].to_bytes()),
            "the old era's copy is left alone"
        );
        // A different entry at a sequence already held in the same era is the alarm.
        assert!(!store
            .keep_audit_entry(&device, &[2; 32], 0, &old[0].to_bytes())
            .unwrap());
    }
}
