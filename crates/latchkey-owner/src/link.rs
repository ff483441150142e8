//! Short invitation links (docs/PROTOCOL.md §10): the owner seals the invitation under a key
//! derived from a 16-byte secret and stores the blob on its nodes; the link carries only the
//! secret and where to fetch it. The guest fetches, tries each node's answer until one opens,
//! makes its own key `K` (OS keychain) and redeems the bind-on-first-use grant at each door with
//! the link's one-time key. The host learns the redemption from the door's signed audit log.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::future::join_all;
use latchkey_proto::audit::{AuditBody, SignedEntry};
use latchkey_proto::codec::Codec;
use latchkey_proto::command::{Outcome, RejectCode};
use latchkey_proto::grant::{Grant, REDEEM_ACTION};
use latchkey_proto::invite::Invitation;
use latchkey_proto::keys::{DeviceId, PublicKey, SigningKey};
use latchkey_proto::redeem::RedeemRequest;
use latchkey_proto::shortlink::{
    SealedInvitation, ShortLink, SHORT_LINK_PREFIX, SHORT_LINK_SECRET_LEN,
};
use latchkey_quorum::invites;
use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::open::OpenReport;
use crate::profile::Profile;
use crate::store::DeviceRecord;

/// Time for one node to take or serve a sealed invitation.
const BLOB_TIMEOUT: Duration = Duration::from_secs(5);
/// The most a node may keep a sealed invitation (docs/API.md, "Invitations").
const MAX_BLOB_LIFETIME_MS: u64 = 400 * 24 * 3600 * 1000;
/// A sealed invitation stays on the nodes this long after the grant ends, so a guest who opens
/// the link late is told the invitation ended rather than that it cannot be found.
const BLOB_GRACE_MS: u64 = 7 * 24 * 3600 * 1000;
/// How long accepting a link waits for a door's answer through the mailboxes: a door that is
/// offline now is redeemed at the first open (and may still take the redemption waiting in its
/// mailbox when it comes back), so the guest is not kept waiting for it.
pub(crate) const ACCEPT_RELAY_WAIT: Duration = Duration::from_secs(8);
/// At most this many pages of a door's audit log are read back when looking for redemptions.
const MAX_AUDIT_PAGES: usize = 16;

/// A link as a guest pasted or scanned it.
pub(crate) enum ParsedLink {
    /// `LATCHKEY://I/…`: the invitation is sealed on the nodes.
    Short(ShortLink),
    /// `latchkey://invite/…`: the invitation itself.
    Long(Invitation),
}

impl ParsedLink {
    pub(crate) fn parse(text: &str) -> Result<Self> {
        let trimmed = text.trim();
        if trimmed
            .get(..SHORT_LINK_PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(SHORT_LINK_PREFIX))
        {
            return ShortLink::parse(trimmed)
                .map(ParsedLink::Short)
                .map_err(Error::BadInvitation);
        }
        Invitation::parse_link(trimmed)
            .map(ParsedLink::Long)
            .map_err(Error::BadInvitation)
    }
}

/// Where an issued invitation stands with its bind-on-first-use grant, as the doors' audit
/// logs kept by this profile show it.
// One per grant listed: the size of a public key is no concern.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redemption {
    /// The grant binds to no phone (issued before short links): the link's key opens.
    NotNeeded,
    /// No door has recorded a redemption (or its log was not read since).
    NotRedeemed,
    /// A phone redeemed the link; `other_phones` later tries by another phone were refused
    /// (the link was seen by someone else: reissue it if the guest says it does not work).
    Redeemed {
        /// The phone key it was bound to, when the door's entry names it.
        phone: Option<PublicKey>,
        at_ms: Option<u64>,
        other_phones: u32,
    },
}

impl Redemption {
    pub fn as_str(&self) -> &'static str {
        match self {
            Redemption::NotNeeded => "not-needed",
            Redemption::NotRedeemed => "not-redeemed",
            Redemption::Redeemed {
                other_phones: 0, ..
            } => "redeemed",
            Redemption::Redeemed { .. } => "redeemed-contested",
        }
    }
}

/// The short link and its sealed invitation, ready to publish.
pub(crate) struct Sealed {
    pub link: ShortLink,
    pub blob: Vec<u8>,
}

/// Seals `invitation` under a fresh secret (the link's nodes are named once they stored it).
pub(crate) fn seal(invitation: &Invitation) -> Result<Sealed> {
    let mut secret = Zeroizing::new([0u8; SHORT_LINK_SECRET_LEN]);
    OsRng.fill_bytes(secret.as_mut_slice());
    let link = ShortLink {
        secret,
        nodes: Vec::new(),
    };
    let blob = SealedInvitation::seal(&link, invitation, &mut OsRng)?;
    Ok(Sealed { link, blob })
}

/// The QR version (level M for a short link, L for a long one, as [`crate::invite::invitation_qr_png`]
/// draws them) of `link`.
pub fn qr_version(link: &str) -> Result<u8> {
    let code = crate::invite::qr_code(link)?;
    Ok(match code.version() {
        qrcode::Version::Normal(v) | qrcode::Version::Micro(v) => v as u8,
    })
}

impl Profile {
    /// Stores `blob` under the link's id on every node in parallel until `expires_ms`; returns
    /// the nodes that hold it (stored, or already held these same bytes), in the order given,
    /// and why each other one did not.
    pub(crate) async fn publish_blob(
        &self,
        nodes: &[String],
        link: &ShortLink,
        blob: &[u8],
        expires_ms: u64,
    ) -> (Vec<String>, Vec<String>) {
        let id = link.blob_id();
        let puts = nodes.iter().map(|node| {
            let id = &id;
            async move {
                let put = tokio::time::timeout(
                    BLOB_TIMEOUT,
                    invites::put_invite(&self.http, node, id, blob, expires_ms),
                )
                .await;
                match put {
                    Ok(Ok(_)) => Ok(node.clone()),
                    Ok(Err(e)) => Err(format!("{node}: {e}")),
                    Err(_) => Err(format!("{node}: timed out")),
                }
            }
        });
        let mut stored = Vec::new();
        let mut failed = Vec::new();
        for r in join_all(puts).await {
            match r {
                Ok(node) => stored.push(node),
                Err(why) => failed.push(why),
            }
        }
        (stored, failed)
    }

    /// Fetches the sealed invitation from the link's nodes, then this profile's, and returns
    /// the first that opens and checks. A node that is down, withholds it or serves other bytes
    /// is skipped (the AEAD under the link's key is what makes an answer trustworthy).
    pub(crate) async fn fetch_invitation(&self, link: &ShortLink) -> Result<Invitation> {
        let mut nodes: Vec<String> = link.nodes.clone();
        for n in self.nodes()? {
            if !nodes.contains(&n) {
                nodes.push(n);
            }
        }
        let id = link.blob_id();
        let mut tried = Vec::new();
        for node in &nodes {
            let got =
                tokio::time::timeout(BLOB_TIMEOUT, invites::get_invite(&self.http, node, &id))
                    .await;
            let why = match got {
                // Opening checks the invitation too (signatures, links, doors).
                Ok(Ok(Some(blob))) => match SealedInvitation::open(link, &blob) {
                    Ok(invitation) => return Ok(invitation),
                    Err(e) => format!("what it served does not open: {e}"),
                },
                Ok(Ok(None)) => "it does not hold it".to_owned(),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "timed out".to_owned(),
            };
            tracing::warn!(node, %why, "skipping a node for this invitation");
            tried.push(format!("{node}: {why}"));
        }
        Err(Error::InvitationNotFound {
            tried: tried.join("; "),
        })
    }

    /// Redeems the bind-on-first-use leaf of `grants` at `device`: signed by the link's
    /// one-time `link_key`, binding the grant to `phone`, waiting at most `relay_wait` for an
    /// answer through the mailboxes. A redemption is idempotent for the same phone key, so an
    /// answer lost on the way back is retried with a fresh nonce.
    pub(crate) async fn redeem(
        &self,
        device: &DeviceRecord,
        grants: &[Grant],
        link_key: &SigningKey,
        phone: &SigningKey,
        nodes: &[String],
        relay_wait: Duration,
    ) -> Result<OpenReport> {
        let leaf = grants
            .last()
            .ok_or_else(|| Error::BadInvite("an invitation without a grant".into()))?
            .id();
        let args = RedeemRequest::sign(phone, &device.id, &leaf).to_args();
        let mut report = self
            .send_within(
                device.clone(),
                link_key,
                grants,
                REDEEM_ACTION,
                &args,
                nodes,
                relay_wait,
            )
            .await?;
        if report.outcome_unknown() {
            report = self
                .send_within(
                    device.clone(),
                    link_key,
                    grants,
                    REDEEM_ACTION,
                    &args,
                    nodes,
                    relay_wait,
                )
                .await?;
        }
        Ok(report)
    }
}

/// Whether a door's answer to a redemption says another phone holds the invitation.
pub(crate) fn already_redeemed(report: &OpenReport) -> bool {
    matches!(
        report.response.outcome,
        Outcome::Rejected { code, .. } if code == RejectCode::AlreadyRedeemed as u16
    )
}

/// What the kept audit entries of a grant's doors say about its redemption: the first
/// accepted redemption by the link key, and how many later commands under the link key the
/// door refused as already redeemed (another phone with the same link).
pub(crate) fn redemption_from(grant: &Grant, entries: &[SignedEntry]) -> Redemption {
    if !grant.body.binds_on_first_use() {
        return Redemption::NotNeeded;
    }
    let link_key = grant.body.subject;
    let mut redeemed: Option<(Option<PublicKey>, Option<u64>)> = None;
    let mut others = 0u32;
    for e in entries {
        let AuditBody::Decision(r) = &e.entry.body else {
            continue;
        };
        if r.sender != Some(link_key) {
            continue;
        }
        if r.code == 0 && r.action == REDEEM_ACTION {
            if redeemed.is_none() {
                redeemed = Some((phone_named_in(&r.detail), e.entry.time_ms));
            }
        } else if r.code == RejectCode::AlreadyRedeemed as u16 {
            others += 1;
        }
    }
    match redeemed {
        Some((phone, at_ms)) => Redemption::Redeemed {
            phone,
            at_ms,
            other_phones: others,
        },
        // Refusals without a recorded redemption: the redemption itself is on a page not read.
        None if others > 0 => Redemption::Redeemed {
            phone: None,
            at_ms: None,
            other_phones: others,
        },
        None => Redemption::NotRedeemed,
    }
}

/// The phone key a redemption entry's detail names, if any (`lkpk1…`).
fn phone_named_in(detail: &str) -> Option<PublicKey> {
    detail
        .split(|c: char| !c.is_ascii_alphanumeric())
        .find_map(|w| PublicKey::parse(w).ok())
}

/// Decodes kept audit copies, skipping any this version cannot read.
pub(crate) fn decode_entries(kept: &[Vec<u8>]) -> Vec<SignedEntry> {
    kept.iter()
        .filter_map(|b| SignedEntry::from_bytes(b).ok())
        .collect()
}

/// How long the nodes keep a sealed invitation for a grant ending at `until_ms`.
pub(crate) fn blob_expiry(now_ms: u64, until_ms: u64) -> u64 {
    until_ms
        .saturating_add(BLOB_GRACE_MS)
        .min(now_ms + MAX_BLOB_LIFETIME_MS)
}

/// A secret kept in the keychain as hex, read back as a signing key.
pub(crate) fn key_from_hex(secret: &Zeroizing<String>) -> Result<SigningKey> {
    let mut raw = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(secret.as_bytes(), raw.as_mut())
        .map_err(|_| Error::Keychain("a stored invitation key is damaged".into()))?;
    Ok(SigningKey::from_bytes(&raw))
}

impl Profile {
    /// Reads the newest pages of the audit log of each door of the unexpired bind-on-first-use
    /// grants this profile issued (for `query`'s device, or every device), back to the oldest
    /// such grant or to entries already kept, so [`Profile::grants`] can tell which links were
    /// redeemed. Returns one line per door that could not be read (the rest is still kept).
    pub async fn check_redemptions(&self, query: Option<&str>) -> Result<Vec<String>> {
        let only = query
            .map(|q| self.find_device(q))
            .transpose()?
            .map(|d| d.id);
        let now = self.now_ms();
        // A guest's profile issued nothing and reads no log.
        let me = match self.identity() {
            Ok(me) => me.public_key(),
            Err(Error::NoSeed) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut since: BTreeMap<DeviceId, u64> = BTreeMap::new();
        for row in self.store.issued(None)? {
            let body = &row.grant.body;
            if !body.binds_on_first_use() || body.not_after_ms < now {
                continue;
            }
            for scope in &body.scope {
                if only.is_some_and(|d| d != scope.device) {
                    continue;
                }
                let at = since.entry(scope.device).or_insert(row.created_ms);
                *at = (*at).min(row.created_ms);
            }
        }
        let mut unread = Vec::new();
        for (device, since) in since {
            let Ok(record) = self.find_device(&device.to_string()) else {
                continue;
            };
            if !record.chain.state().is_owner(&me) {
                continue;
            }
            let known: BTreeSet<([u8; 32], u64)> =
                decode_entries(&self.store.kept_audit_entries(&device)?)
                    .iter()
                    .map(|e| (e.entry.era, e.entry.seq))
                    .collect();
            let mut before = None;
            for _ in 0..MAX_AUDIT_PAGES {
                let page = match self.audit(&device.to_string(), before).await {
                    Ok(page) => page,
                    Err(e) => {
                        unread.push(format!("{}: {e}", record.name));
                        break;
                    }
                };
                let Some(first) = page.entries.first().map(|e| &e.entry) else {
                    break;
                };
                let done = first.seq <= page.oldest
                    || known.contains(&(first.era, first.seq))
                    || first.time_ms.is_some_and(|t| t < since);
                if done {
                    break;
                }
                before = Some(first.seq);
            }
        }
        Ok(unread)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use latchkey_proto::audit::{AuditEntry, AuditRecord, Stage, Via, ViewMark};
    use latchkey_proto::grant::{Extension, GrantBody, GrantScope, EXT_BIND_ON_FIRST_USE};
    use latchkey_proto::keys::DeviceId;
    use latchkey_testkit::{person, HOUR, T0};

    fn grant(binds: bool) -> Grant {
        let owner = person(1);
        GrantBody {
            issuer: owner.public_key(),
            subject: person(2).public_key(),
            scope: vec![GrantScope {
                device: DeviceId([3; 32]),
                epoch: latchkey_proto::chain::OpId([4; 32]),
            }],
            actions: vec!["unlock".into()],
            not_before_ms: T0,
            not_after_ms: T0 + HOUR,
            use_limit: None,
            delegation_depth: 0,
            extensions: if binds {
                vec![Extension {
                    tag: EXT_BIND_ON_FIRST_USE,
                    value: Vec::new(),
                }]
            } else {
                Vec::new()
            },
            salt: [5; 16],
        }
        .sign(&owner)
        .unwrap()
    }

    fn decision(seq: u64, sender: PublicKey, action: &str, code: u16, detail: &str) -> SignedEntry {
        AuditEntry {
            seq,
            prev: [0; 32],
            era: [1; 32],
            time_ms: Some(T0 + seq),
            body: AuditBody::Decision(AuditRecord {
                via: Via::Local,
                envelope: [seq as u8; 32],
                sender: Some(sender),
                command: None,
                action: action.into(),
                args: None,
                code,
                stage: Stage::Authority,
                detail: detail.into(),
                view: ViewMark::default(),
            }),
        }
        .sign(&person(9))
    }

    #[test]
    fn the_first_redemption_by_the_link_key_counts_and_later_refusals_are_other_phones() {
        let g = grant(true);
        let link_key = g.body.subject;
        let phone = person(7).public_key();
        let already = RejectCode::AlreadyRedeemed as u16;
        assert_eq!(redemption_from(&g, &[]), Redemption::NotRedeemed);
        assert_eq!(redemption_from(&grant(false), &[]), Redemption::NotNeeded);
        let entries = vec![
            // Someone else's commands and other grants' redemptions do not count.
            decision(1, person(8).public_key(), REDEEM_ACTION, 0, ""),
            decision(2, link_key, "unlock", RejectCode::NotRedeemed as u16, ""),
            decision(3, link_key, REDEEM_ACTION, 0, &format!("bound to {phone}")),
            // The same phone again (idempotent) is not another phone.
            decision(4, link_key, REDEEM_ACTION, 0, ""),
            decision(5, link_key, REDEEM_ACTION, already, ""),
            decision(6, link_key, "unlock", already, ""),
        ];
        assert_eq!(redemption_from(&g, &entries[..2]), Redemption::NotRedeemed);
        let r = redemption_from(&g, &entries);
        assert_eq!(
            r,
            Redemption::Redeemed {
                phone: Some(phone),
                at_ms: Some(T0 + 3),
                other_phones: 2,
            }
        );
        assert_eq!(r.as_str(), "redeemed-contested");
        assert_eq!(
            redemption_from(&g, &entries[..4]).as_str(),
            "redeemed",
            "no other phone yet"
        );
        // A refusal seen without its redemption (on a page not read): redeemed all the same.
        assert!(matches!(
            redemption_from(&g, &entries[4..]),
            Redemption::Redeemed {
                phone: None,
                other_phones: 2,
                ..
            }
        ));
    }

    #[test]
    fn links_parse_in_either_form_and_any_case_and_junk_is_refused() {
        let link = ShortLink {
            secret: Zeroizing::new([7; SHORT_LINK_SECRET_LEN]),
            nodes: vec!["http://127.0.0.1:7001".into()],
        };
        let text = link.to_text().unwrap();
        for variant in [
            text.to_string(),
            text.to_ascii_lowercase(),
            format!("  {}\n", *text),
        ] {
            match ParsedLink::parse(&variant).unwrap() {
                ParsedLink::Short(s) => assert_eq!(s, link),
                ParsedLink::Long(_) => panic!("short"),
            }
        }
        for junk in [
            "",
            "LATCHKEY://I/!!",
            "latchkey://invite/zz",
            "https://example.com",
        ] {
            let e = ParsedLink::parse(junk).err().expect(junk);
            assert_eq!(e.code(), "bad_invitation", "{junk}: {e}");
        }
    }

    #[test]
    fn a_short_link_with_four_long_node_urls_fits_a_version_10_qr() {
        let link = ShortLink {
            secret: Zeroizing::new([0xAB; SHORT_LINK_SECRET_LEN]),
            nodes: (1..=4)
                .map(|i| format!("https://node{i}.registry.example.org:7001"))
                .collect(),
        };
        let text = link.to_text().unwrap();
        assert!(text.len() <= 300, "{}", text.len());
        let v = qr_version(&text).unwrap();
        assert!(v <= 10, "version {v} for {} characters", text.len());
    }

    #[test]
    fn blobs_outlive_the_grant_a_little_but_never_400_days() {
        assert_eq!(blob_expiry(0, 1_000), 1_000 + BLOB_GRACE_MS);
        assert_eq!(blob_expiry(5, u64::MAX), 5 + MAX_BLOB_LIFETIME_MS);
    }
}
