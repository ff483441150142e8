//! Invitations: what an owner hands a guest as a `latchkey://invite/…` link or its QR code.
//!
//! An invitation carries a fresh guest key's secret, the grant chain from an owner to that key,
//! and where to find the device (its addresses and registry nodes). It is a **bearer
//! credential**: whoever holds the link can act as the guest until the grant ends or an owner
//! revokes it, so it travels over a channel the owner trusts (docs/PROTOCOL.md, "Invitations").
//! Putting the key in the link is what makes one tap enough for a guest who has no Latchkey
//! identity yet; the grant's window, actions and revocation bound what a leaked link can do.
//! Byte layout: docs/PROTOCOL.md §10.

use core::fmt;

use zeroize::Zeroizing;

use crate::claim::DeviceAddr;
use crate::codec::{check_len, Codec, Reader, Writer};
use crate::error::{Error, Result};
use crate::grant::{Grant, MAX_GRANT_CHAIN};
use crate::keys::{DeviceId, SigningKey};

pub const INVITE_VERSION: u8 = 1;
/// The link's scheme and path; the rest is unpadded base64url of the encoding.
pub const INVITE_PREFIX: &str = "latchkey://invite/";
/// The largest encoded invitation (a QR code of its link stays scannable from a phone screen).
pub const MAX_INVITE_LEN: usize = 2048;
/// The longest link text a parser looks at.
pub const MAX_INVITE_TEXT: usize = INVITE_PREFIX.len() + MAX_INVITE_LEN.div_ceil(3) * 4;
pub const MAX_INVITE_LABEL: usize = 64;
pub const MAX_INVITE_ADDRS: usize = 4;
pub const MAX_INVITE_NODES: usize = 8;
pub const MAX_NODE_URL: usize = 200;

/// An invitation as it travels in a link.
#[derive(Clone, PartialEq, Eq)]
pub struct Invitation {
    pub device: DeviceId,
    /// The guest key's secret; its public key is the last grant's subject.
    pub guest_secret: Zeroizing<[u8; 32]>,
    /// From an owner to the guest key, root first.
    pub grants: Vec<Grant>,
    /// The device's name, as the owner calls it.
    pub device_name: String,
    /// Who the invitation is for, as the owner typed it.
    pub guest_name: String,
    pub addrs: Vec<DeviceAddr>,
    /// Registry node base URLs to learn the device's owners from.
    pub nodes: Vec<String>,
}

impl fmt::Debug for Invitation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Invitation")
            .field("device", &self.device)
            .field("guest_name", &self.guest_name)
            .field("device_name", &self.device_name)
            .field("grants", &self.grants.len())
            .field("guest_secret", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl Invitation {
    pub fn guest_key(&self) -> SigningKey {
        SigningKey::from_bytes(&self.guest_secret)
    }

    /// The grant that names the guest key.
    pub fn leaf(&self) -> &Grant {
        self.grants
            .last()
            .expect("a parsed or checked invitation has at least one grant")
    }

    /// Checks what can be checked without the device's chain: the grants are signed, linked
    /// issuer to subject, cover the device, and end at the guest key. (Whether the root issuer
    /// owns the device is for the guest's quorum check.) A faulty grant is refused with the
    /// errors and in the order a device's grant check uses (docs/PROTOCOL.md §4): count,
    /// then per grant its signature and its link, then every grant's device, then the subject.
    pub fn check(&self) -> Result<()> {
        let invalid = |why| Error::Invalid {
            what: "invitation",
            why,
        };
        if self.grants.is_empty() || self.grants.len() > MAX_GRANT_CHAIN {
            return Err(Error::GrantInvalid {
                index: 0,
                why: "a grant chain holds 1 to 4 grants",
            });
        }
        for (index, grant) in self.grants.iter().enumerate() {
            let grant_invalid = |why| Error::GrantInvalid { index, why };
            grant
                .verify_signature()
                .map_err(|_| grant_invalid("bad signature"))?;
            if index > 0 && grant.body.issuer != self.grants[index - 1].body.subject {
                return Err(grant_invalid(
                    "not issued by the holder of the grant before it",
                ));
            }
        }
        if self
            .grants
            .iter()
            .any(|g| !g.body.scope.iter().any(|s| s.device == self.device))
        {
            return Err(Error::DeviceNotGranted);
        }
        if self.leaf().body.subject != self.guest_key().public_key() {
            return Err(Error::GrantInvalid {
                index: self.grants.len() - 1,
                why: "it was issued to a different key than the invitation's guest key",
            });
        }
        if self.device_name.len() > MAX_INVITE_LABEL || self.guest_name.len() > MAX_INVITE_LABEL {
            return Err(invalid("a name is over 64 bytes"));
        }
        if self.addrs.len() > MAX_INVITE_ADDRS || self.nodes.len() > MAX_INVITE_NODES {
            return Err(invalid("more than 4 addresses or 8 nodes"));
        }
        for node in &self.nodes {
            if node.len() > MAX_NODE_URL
                || !(node.starts_with("http://") || node.starts_with("https://"))
            {
                return Err(invalid("a node URL is not http(s) or is over 200 bytes"));
            }
        }
        Ok(())
    }

    /// The link text. Fails when the invitation does not check or is too large for a link.
    pub fn to_link(&self) -> Result<Zeroizing<String>> {
        self.check()?;
        let bytes = Zeroizing::new(self.to_bytes());
        check_len("invitation", bytes.len(), MAX_INVITE_LEN)?;
        Ok(Zeroizing::new(format!(
            "{INVITE_PREFIX}{}",
            data_encoding::BASE64URL_NOPAD.encode(&bytes)
        )))
    }

    /// Parses a link as pasted, scanned or passed by the OS. Surrounding white space and an
    /// upper-case scheme are forgiven; the base64url part is exact.
    pub fn parse_link(text: &str) -> Result<Self> {
        let text = text.trim();
        check_len("invitation link", text.len(), MAX_INVITE_TEXT)?;
        let split = INVITE_PREFIX.len().min(text.len());
        let (head, body) = text.split_at_checked(split).unwrap_or((text, ""));
        if !head.eq_ignore_ascii_case(INVITE_PREFIX) {
            return Err(Error::WrongKind {
                expected: "Latchkey invitation link (latchkey://invite/…)",
                found: crate::error::looks_like(text),
            });
        }
        let bytes = Zeroizing::new(
            data_encoding::BASE64URL_NOPAD
                .decode(body.as_bytes())
                .map_err(|_| Error::BadText {
                    what: "invitation link",
                    encoding: "base64url",
                })?,
        );
        let invitation = Invitation::from_bytes(&bytes)?;
        invitation.check()?;
        Ok(invitation)
    }
}

impl Codec for Invitation {
    const NAME: &'static str = "invitation";
    const MAX_LEN: usize = MAX_INVITE_LEN;

    fn encode(&self, w: &mut Writer) {
        w.u8(INVITE_VERSION);
        w.nested(&self.device);
        w.raw(self.guest_secret.as_ref());
        w.list8(&self.grants, |w, g| w.nested(g));
        w.bytes8(self.device_name.as_bytes());
        w.bytes8(self.guest_name.as_bytes());
        w.list8(&self.addrs, |w, a| a.encode(w));
        w.list8(&self.nodes, |w, n| w.bytes8(n.as_bytes()));
    }

    fn read(r: &mut Reader<'_>) -> Result<Self> {
        let version = r.u8()?;
        if version != INVITE_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "invitation",
                found: version,
                supported: INVITE_VERSION,
            });
        }
        let device = r.nested()?;
        let guest_secret = Zeroizing::new(r.array::<32>()?);
        let grants = r.list8(MAX_GRANT_CHAIN, |r| r.nested())?;
        let device_name = r.str8("device name", MAX_INVITE_LABEL)?;
        let guest_name = r.str8("guest name", MAX_INVITE_LABEL)?;
        let addrs = r.list8(MAX_INVITE_ADDRS, DeviceAddr::read)?;
        let nodes = r.list8(MAX_INVITE_NODES, |r| r.str8("node URL", MAX_NODE_URL))?;
        Ok(Invitation {
            device,
            guest_secret,
            grants,
            device_name,
            guest_name,
            addrs,
            nodes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::OpId;
    use crate::grant::{GrantBody, GrantScope};
    use rand_chacha::rand_core::SeedableRng;

    fn key(n: u64) -> SigningKey {
        SigningKey::generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(n))
    }

    fn invitation() -> Invitation {
        let owner = key(1);
        let guest = key(2);
        let device = DeviceId::from_identity(&key(3).public_key());
        let grant = GrantBody {
            issuer: owner.public_key(),
            subject: guest.public_key(),
            scope: vec![GrantScope {
                device,
                epoch: OpId([7; 32]),
            }],
            actions: vec!["unlock".into()],
            not_before_ms: 1_800_000_000_000,
            not_after_ms: 1_800_086_400_000,
            use_limit: None,
            delegation_depth: 0,
            extensions: Vec::new(),
            salt: [9; 16],
        }
        .sign(&owner)
        .unwrap();
        Invitation {
            device,
            guest_secret: guest.to_bytes(),
            grants: vec![grant],
            device_name: "Front door".into(),
            guest_name: "Ana".into(),
            addrs: vec![DeviceAddr::parse("192.168.1.20:7420").unwrap()],
            nodes: vec!["http://127.0.0.1:7001".into(), "https://n2.example".into()],
        }
    }

    #[test]
    fn a_link_round_trips_and_stays_short_enough_for_a_qr_code() {
        let inv = invitation();
        let link = inv.to_link().unwrap();
        assert!(link.starts_with(INVITE_PREFIX));
        assert!(link.len() < 800, "{} chars", link.len());
        assert_eq!(Invitation::parse_link(&link).unwrap(), inv);
        let shouted = link.replacen("latchkey://invite/", "LATCHKEY://INVITE/", 1);
        assert_eq!(
            Invitation::parse_link(&format!(" {shouted}\n")).unwrap(),
            inv
        );
        assert!(!format!("{inv:?}").contains(&hex::encode(*inv.guest_secret)));
    }

    #[test]
    fn fail_links_that_are_not_invitations_or_do_not_check() {
        let inv = invitation();
        let link = inv.to_link().unwrap();
        assert!(matches!(
            Invitation::parse_link("LATCHKEY:C1:ABC"),
            Err(Error::WrongKind { .. })
        ));
        assert!(matches!(
            Invitation::parse_link(&format!("{}=", link.as_str())),
            Err(Error::BadText { .. })
        ));
        let long = format!("{INVITE_PREFIX}{}", "A".repeat(MAX_INVITE_TEXT));
        assert!(matches!(
            Invitation::parse_link(&long),
            Err(Error::TooLarge { .. })
        ));
        // A key that is not the grant's subject: the link would not open anything.
        let mut other = inv.clone();
        other.guest_secret = key(4).to_bytes();
        assert!(other.to_link().is_err());
        let forged = format!(
            "{INVITE_PREFIX}{}",
            data_encoding::BASE64URL_NOPAD.encode(&other.to_bytes())
        );
        assert!(matches!(
            Invitation::parse_link(&forged),
            Err(Error::GrantInvalid { index: 0, .. })
        ));
        // A grant for another device.
        let mut elsewhere = inv.clone();
        elsewhere.device = DeviceId::from_identity(&key(5).public_key());
        assert_eq!(elsewhere.check(), Err(Error::DeviceNotGranted));
        // A tampered grant: named like a device names it in a grant chain, not BadSignature
        // (which is for the signature of the thing checked itself).
        let mut tampered = inv;
        tampered.grants[0].body.not_after_ms += 1;
        assert!(matches!(
            tampered.check(),
            Err(Error::GrantInvalid { index: 0, .. })
        ));
    }
}
