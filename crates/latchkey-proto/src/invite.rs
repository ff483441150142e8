//! Invitations: what an owner hands a guest, as a short `LATCHKEY://I/…` link whose sealed
//! invitation waits on the registry nodes ([`crate::shortlink`]), or as a self-contained
//! `latchkey://invite/…` link.
//!
//! An invitation carries a guest key's secret, the grant chain from an owner to that key, and
//! where to find each door it opens (its addresses) and the registry nodes. Whoever holds it can
//! act as that key, so it is a **bearer credential** until it is redeemed: a short link's grant
//! binds on first use (extension 0x83), so after the guest's phone redeemed it the key in it
//! opens nothing (docs/PROTOCOL.md §10). Byte layout: docs/PROTOCOL.md §10.

use core::fmt;

use zeroize::Zeroizing;

use crate::claim::DeviceAddr;
use crate::codec::{check_len, Codec, Reader, Writer};
use crate::error::{Error, Result};
use crate::grant::{Grant, MAX_GRANT_CHAIN};
use crate::keys::{DeviceId, SigningKey};

/// The first, one-door layout: still decoded (a link made before short links keeps working),
/// written only by [`Invitation::to_v1_bytes`].
pub const INVITE_VERSION_1: u8 = 1;
/// The current layout: several doors under one grant chain.
pub const INVITE_VERSION: u8 = 2;
/// The long link's scheme and path; the rest is unpadded base64url of the encoding.
pub const INVITE_PREFIX: &str = "latchkey://invite/";
/// The largest invitation in a long link (its QR code stays scannable from a phone screen).
pub const MAX_INVITE_LEN: usize = 2048;
/// The largest encoded invitation (sealed on the nodes behind a short link).
pub const MAX_INVITATION: usize = 8192;
/// The longest link text a parser looks at.
pub const MAX_INVITE_TEXT: usize = INVITE_PREFIX.len() + MAX_INVITE_LEN.div_ceil(3) * 4;
pub const MAX_INVITE_LABEL: usize = 64;
pub const MAX_INVITE_ADDRS: usize = 4;
pub const MAX_INVITE_NODES: usize = 8;
/// Doors one invitation may name (each covered by every grant of its chain).
pub const MAX_INVITE_DOORS: usize = 8;
pub const MAX_NODE_URL: usize = 200;

/// One door of an invitation: which device, what the owner calls it, where to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteDoor {
    pub device: DeviceId,
    /// The device's name, as the owner calls it.
    pub name: String,
    pub addrs: Vec<DeviceAddr>,
}

/// An invitation, as decoded from either layout (a version 1 invitation is one door).
#[derive(Clone, PartialEq, Eq)]
pub struct Invitation {
    /// The guest key's secret; its public key is the last grant's subject.
    pub guest_secret: Zeroizing<[u8; 32]>,
    /// From an owner to the guest key, root first.
    pub grants: Vec<Grant>,
    /// Who the invitation is for, as the owner typed it.
    pub guest_name: String,
    /// 1 to 8 doors, each covered by every grant.
    pub doors: Vec<InviteDoor>,
    /// Registry node base URLs to learn the devices' owners from.
    pub nodes: Vec<String>,
}

impl fmt::Debug for Invitation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Invitation")
            .field("guest_name", &self.guest_name)
            .field("doors", &self.doors)
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

    /// The first door (the only one of a version 1 invitation).
    pub fn door(&self) -> &InviteDoor {
        self.doors
            .first()
            .expect("a parsed or checked invitation has at least one door")
    }

    /// Checks what can be checked without the devices' chains: the grants are signed, linked
    /// issuer to subject (below a bind-on-first-use grant the issuer is the key it was bound
    /// to, which only the device knows), cover every door, and end at the guest key. (Whether
    /// the root issuer owns the device is for the guest's quorum check.) A faulty grant is
    /// refused with the errors and in the order a device's grant check uses (docs/PROTOCOL.md
    /// §4): count, then per grant its signature and its link, then every grant's devices, then
    /// the subject; then the rest of the invitation.
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
            if index > 0 {
                let parent = &self.grants[index - 1].body;
                if !parent.binds_on_first_use() && grant.body.issuer != parent.subject {
                    return Err(grant_invalid(
                        "not issued by the holder of the grant before it",
                    ));
                }
            }
        }
        if self.doors.iter().any(|door| {
            self.grants
                .iter()
                .any(|g| !g.body.scope.iter().any(|s| s.device == door.device))
        }) {
            return Err(Error::DeviceNotGranted);
        }
        if self.leaf().body.subject != self.guest_key().public_key() {
            return Err(Error::GrantInvalid {
                index: self.grants.len() - 1,
                why: "it was issued to a different key than the invitation's guest key",
            });
        }
        if self.doors.is_empty() || self.doors.len() > MAX_INVITE_DOORS {
            return Err(invalid("an invitation names 1 to 8 doors"));
        }
        if self
            .doors
            .iter()
            .enumerate()
            .any(|(i, d)| self.doors[..i].iter().any(|e| e.device == d.device))
        {
            return Err(invalid("a door is named twice"));
        }
        if self.guest_name.len() > MAX_INVITE_LABEL
            || self.doors.iter().any(|d| d.name.len() > MAX_INVITE_LABEL)
        {
            return Err(invalid("a name is over 64 bytes"));
        }
        if self.doors.iter().any(|d| d.addrs.len() > MAX_INVITE_ADDRS)
            || self.nodes.len() > MAX_INVITE_NODES
        {
            return Err(invalid("more than 4 addresses for a door or 8 nodes"));
        }
        for node in &self.nodes {
            if !is_node_url(node) {
                return Err(invalid("a node URL is not http(s) or is over 200 bytes"));
            }
        }
        Ok(())
    }

    /// The long, self-contained link text: the version 1 layout for one door (apps from before
    /// short links read it too), version 2 for several. Fails when the invitation does not
    /// check or is too large for a link.
    pub fn to_link(&self) -> Result<Zeroizing<String>> {
        self.check()?;
        let bytes = if self.doors.len() == 1 {
            self.to_v1_bytes()?
        } else {
            Zeroizing::new(self.to_bytes())
        };
        check_len("invitation", bytes.len(), MAX_INVITE_LEN)?;
        Ok(Zeroizing::new(format!(
            "{INVITE_PREFIX}{}",
            data_encoding::BASE64URL_NOPAD.encode(&bytes)
        )))
    }

    /// The version 1 layout (`Invalid` unless exactly one door).
    pub fn to_v1_bytes(&self) -> Result<Zeroizing<Vec<u8>>> {
        let [door] = self.doors.as_slice() else {
            return Err(Error::Invalid {
                what: "invitation",
                why: "a version 1 invitation names exactly one door",
            });
        };
        let mut w = Writer::new();
        w.u8(INVITE_VERSION_1);
        w.nested(&door.device);
        w.raw(self.guest_secret.as_ref());
        w.list8(&self.grants, |w, g| w.nested(g));
        w.bytes8(door.name.as_bytes());
        w.bytes8(self.guest_name.as_bytes());
        w.list8(&door.addrs, |w, a| a.encode(w));
        w.list8(&self.nodes, |w, n| w.bytes8(n.as_bytes()));
        Ok(Zeroizing::new(w.into_inner()))
    }

    /// Parses a long link as pasted, scanned or passed by the OS, in either layout.
    /// Surrounding white space and an upper-case scheme are forgiven; the base64url part is
    /// exact. (Short links are [`crate::shortlink::ShortLink::parse`].)
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
        check_len("invitation", bytes.len(), MAX_INVITE_LEN)?;
        let invitation = Invitation::from_bytes(&bytes)?;
        invitation.check()?;
        Ok(invitation)
    }
}

/// A registry node URL as invitations and short links carry it.
pub(crate) fn is_node_url(node: &str) -> bool {
    node.len() <= MAX_NODE_URL && (node.starts_with("http://") || node.starts_with("https://"))
}

impl Codec for Invitation {
    const NAME: &'static str = "invitation";
    const MAX_LEN: usize = MAX_INVITATION;

    fn encode(&self, w: &mut Writer) {
        w.u8(INVITE_VERSION);
        w.raw(self.guest_secret.as_ref());
        w.list8(&self.grants, |w, g| w.nested(g));
        w.bytes8(self.guest_name.as_bytes());
        w.list8(&self.doors, |w, d| {
            w.nested(&d.device);
            w.bytes8(d.name.as_bytes());
            w.list8(&d.addrs, |w, a| a.encode(w));
        });
        w.list8(&self.nodes, |w, n| w.bytes8(n.as_bytes()));
    }

    fn read(r: &mut Reader<'_>) -> Result<Self> {
        match r.u8()? {
            INVITE_VERSION_1 => {
                let device = r.nested()?;
                let guest_secret = Zeroizing::new(r.array::<32>()?);
                let grants = r.list8(MAX_GRANT_CHAIN, |r| r.nested())?;
                let name = r.str8("device name", MAX_INVITE_LABEL)?;
                let guest_name = r.str8("guest name", MAX_INVITE_LABEL)?;
                let addrs = r.list8(MAX_INVITE_ADDRS, DeviceAddr::read)?;
                let nodes = r.list8(MAX_INVITE_NODES, |r| r.str8("node URL", MAX_NODE_URL))?;
                Ok(Invitation {
                    guest_secret,
                    grants,
                    guest_name,
                    doors: vec![InviteDoor {
                        device,
                        name,
                        addrs,
                    }],
                    nodes,
                })
            }
            INVITE_VERSION => Ok(Invitation {
                guest_secret: Zeroizing::new(r.array::<32>()?),
                grants: r.list8(MAX_GRANT_CHAIN, |r| r.nested())?,
                guest_name: r.str8("guest name", MAX_INVITE_LABEL)?,
                doors: r.list8(MAX_INVITE_DOORS, |r| {
                    Ok(InviteDoor {
                        device: r.nested()?,
                        name: r.str8("device name", MAX_INVITE_LABEL)?,
                        addrs: r.list8(MAX_INVITE_ADDRS, DeviceAddr::read)?,
                    })
                })?,
                nodes: r.list8(MAX_INVITE_NODES, |r| r.str8("node URL", MAX_NODE_URL))?,
            }),
            found => Err(Error::UnsupportedVersion {
                what: "invitation",
                found,
                supported: INVITE_VERSION,
            }),
        }
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
            guest_secret: guest.to_bytes(),
            grants: vec![grant],
            guest_name: "Ana".into(),
            doors: vec![InviteDoor {
                device,
                name: "Front door".into(),
                addrs: vec![DeviceAddr::parse("192.168.1.20:7420").unwrap()],
            }],
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
    fn a_version_1_link_reads_as_one_door() {
        let inv = invitation();
        let v1 = inv.to_link().unwrap();
        assert_eq!(Invitation::parse_link(&v1).unwrap(), inv);
        let v2 = format!(
            "{INVITE_PREFIX}{}",
            data_encoding::BASE64URL_NOPAD.encode(&inv.to_bytes())
        );
        assert_eq!(Invitation::parse_link(&v2).unwrap(), inv);
        assert_eq!(
            Invitation::from_bytes(&inv.to_v1_bytes().unwrap()).unwrap(),
            inv
        );
        assert_eq!(inv.to_bytes()[0], INVITE_VERSION);
        assert_eq!(inv.to_v1_bytes().unwrap()[0], INVITE_VERSION_1);
        let mut two = inv.clone();
        two.doors.push(two.doors[0].clone());
        assert!(two.to_v1_bytes().is_err());
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
        elsewhere.doors[0].device = DeviceId::from_identity(&key(5).public_key());
        assert_eq!(elsewhere.check(), Err(Error::DeviceNotGranted));
        // A second door the grant does not cover.
        let mut more = inv.clone();
        more.doors.push(elsewhere.doors[0].clone());
        assert_eq!(more.check(), Err(Error::DeviceNotGranted));
        let mut twice = inv.clone();
        twice.doors.push(inv.doors[0].clone());
        assert!(matches!(twice.check(), Err(Error::Invalid { .. })));
        let mut none = inv.clone();
        none.doors.clear();
        assert!(matches!(none.check(), Err(Error::Invalid { .. })));
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
