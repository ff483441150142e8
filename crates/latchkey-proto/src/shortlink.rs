//! Short invitation links: `LATCHKEY://I/` and base32 of a 16-byte secret and 1–4 node URLs,
//! at most 300 characters, so its QR code (alphanumeric mode, version ≤ 10 at level M) scans
//! from a phone screen at arm's length. The invitation itself waits on the nodes, sealed under
//! a key derived from the secret, at an id derived from it too: the nodes see only ciphertext
//! under an id that does not reveal the secret (docs/PROTOCOL.md §10).

use core::fmt;

use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::codec::{check_len, Codec, Reader, Writer};
use crate::error::{Error, Result};
use crate::hash;
use crate::invite::{is_node_url, Invitation, MAX_INVITATION, MAX_NODE_URL};
use crate::kem::{aead_open, aead_seal, AEAD_NONCE_LEN, AEAD_TAG_LEN};
use crate::pad;

/// Upper case, so every character is in the QR alphanumeric set (base32 is A–Z and 2–7).
pub const SHORT_LINK_PREFIX: &str = "LATCHKEY://I/";
pub const SHORT_LINK_VERSION: u8 = 2;
/// The longest short link, in characters (bytes: it is ASCII).
pub const MAX_SHORT_LINK_TEXT: usize = 300;
/// The most payload bytes 300 characters hold: ⌊(300 − 13) × 5 / 8⌋.
pub const MAX_SHORT_LINK_BYTES: usize = (MAX_SHORT_LINK_TEXT - SHORT_LINK_PREFIX.len()) * 5 / 8;
pub const SHORT_LINK_SECRET_LEN: usize = 16;
pub const MAX_SHORT_LINK_NODES: usize = 4;

pub const SEALED_INVITATION_VERSION: u8 = 1;
/// The largest sealed blob: version, nonce, the largest pad bucket and the tag.
pub const MAX_SEALED_INVITATION: usize = 1 + AEAD_NONCE_LEN + pad::BUCKETS[2] + AEAD_TAG_LEN;
/// The smallest: the smallest pad bucket.
pub const MIN_SEALED_INVITATION: usize = 1 + AEAD_NONCE_LEN + pad::BUCKETS[0] + AEAD_TAG_LEN;

/// A short link: the secret the blob's id and key come from, and where the blob is.
#[derive(Clone, PartialEq, Eq)]
pub struct ShortLink {
    pub secret: Zeroizing<[u8; SHORT_LINK_SECRET_LEN]>,
    /// 1 to 4 node base URLs (`http://` or `https://`) that store the sealed invitation.
    pub nodes: Vec<String>,
}

impl fmt::Debug for ShortLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShortLink")
            .field("nodes", &self.nodes)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl ShortLink {
    /// A fresh secret for the given nodes.
    pub fn generate(nodes: Vec<String>, rng: &mut (impl RngCore + CryptoRng)) -> Result<Self> {
        let mut secret = Zeroizing::new([0u8; SHORT_LINK_SECRET_LEN]);
        rng.fill_bytes(secret.as_mut_slice());
        let link = ShortLink { secret, nodes };
        link.to_text()?;
        Ok(link)
    }

    /// The blob's id on the nodes: `H("latchkey/v1/invite-id", secret)`.
    pub fn blob_id(&self) -> [u8; 32] {
        hash::labeled(hash::INVITE_ID, &[self.secret.as_slice()])
    }

    /// The blob's key: `H("latchkey/v1/invite-key", secret)`.
    pub fn key(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(hash::labeled(hash::INVITE_KEY, &[self.secret.as_slice()]))
    }

    fn check_nodes(&self) -> Result<()> {
        if self.nodes.is_empty() {
            return Err(Error::Invalid {
                what: "short link",
                why: "it names no node (1 to 4)",
            });
        }
        if self.nodes.iter().any(|n| !is_node_url(n)) {
            return Err(Error::Invalid {
                what: "short link",
                why: "a node URL is not http(s) or is over 200 bytes",
            });
        }
        Ok(())
    }

    /// The link text, upper case. Fails when a node is not http(s) or the nodes make the link
    /// longer than 300 characters (fewer or shorter node URLs then).
    pub fn to_text(&self) -> Result<Zeroizing<String>> {
        check_len("short link nodes", self.nodes.len(), MAX_SHORT_LINK_NODES)?;
        self.check_nodes()?;
        let bytes = Zeroizing::new(self.to_bytes());
        let text = Zeroizing::new(format!(
            "{SHORT_LINK_PREFIX}{}",
            data_encoding::BASE32_NOPAD.encode(&bytes)
        ));
        check_len("short link", text.len(), MAX_SHORT_LINK_TEXT)?;
        Ok(text)
    }

    /// Parses a short link as scanned, pasted or passed by the OS, in any letter case. In order:
    /// trim; over 300 bytes `TooLarge`; a prefix other than `latchkey://i/` (any case)
    /// `WrongKind`; not canonical unpadded base32 `BadText`; the payload's fields in wire order
    /// (version `UnsupportedVersion`, a short secret `Truncated`, node count over 4 or a URL
    /// over 200 bytes `TooLarge`, `NotUtf8`), `TrailingBytes`; then no node or a node that is
    /// not http(s) `Invalid`.
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        check_len("short link", text.len(), MAX_SHORT_LINK_TEXT)?;
        let split = SHORT_LINK_PREFIX.len().min(text.len());
        let (head, body) = text.split_at_checked(split).unwrap_or((text, ""));
        if !head.eq_ignore_ascii_case(SHORT_LINK_PREFIX) {
            return Err(Error::WrongKind {
                expected: "Latchkey short invitation link (LATCHKEY://I/…)",
                found: crate::error::looks_like(text),
            });
        }
        let bytes = Zeroizing::new(
            data_encoding::BASE32_NOPAD
                .decode(body.to_ascii_uppercase().as_bytes())
                .map_err(|_| Error::BadText {
                    what: "short link",
                    encoding: "base32",
                })?,
        );
        let link = ShortLink::from_bytes(&bytes)?;
        link.check_nodes()?;
        Ok(link)
    }
}

impl Codec for ShortLink {
    const NAME: &'static str = "short link";
    const MAX_LEN: usize = MAX_SHORT_LINK_BYTES;

    fn encode(&self, w: &mut Writer) {
        w.u8(SHORT_LINK_VERSION);
        w.raw(self.secret.as_slice());
        w.list8(&self.nodes, |w, n| w.bytes8(n.as_bytes()));
    }

    fn read(r: &mut Reader<'_>) -> Result<Self> {
        let version = r.u8()?;
        if version != SHORT_LINK_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "short link",
                found: version,
                supported: SHORT_LINK_VERSION,
            });
        }
        Ok(ShortLink {
            secret: Zeroizing::new(r.array()?),
            nodes: r.list8(MAX_SHORT_LINK_NODES, |r| r.str8("node URL", MAX_NODE_URL))?,
        })
    }
}

/// The invitation behind a short link, as the nodes store it:
/// `version (1) || nonce (24) || XChaCha20-Poly1305(key, nonce, aad = blob id, padded invitation)`.
#[derive(Debug)]
pub struct SealedInvitation;

impl SealedInvitation {
    /// Seals a checked invitation (at most 8,192 bytes encoded) for `link`'s key and blob id.
    pub fn seal(
        link: &ShortLink,
        invitation: &Invitation,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Vec<u8>> {
        invitation.check()?;
        let bytes = Zeroizing::new(invitation.to_bytes());
        check_len("invitation", bytes.len(), MAX_INVITATION)?;
        let padded = pad::pad(&bytes, rng)?;
        let mut nonce = [0u8; AEAD_NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let sealed = aead_seal(&link.key(), &nonce, &link.blob_id(), &padded);
        Ok([&[SEALED_INVITATION_VERSION][..], &nonce, &sealed].concat())
    }

    /// Opens a blob fetched for `link`. In order: over 16,425 bytes `TooLarge`; under 1,065
    /// `Truncated`; version `UnsupportedVersion`; the AEAD (a wrong key, id or any change)
    /// `DecryptFailed`; the padding `BadPadding`; the invitation's decoding and its check, as
    /// for a long link (docs/PROTOCOL.md §10).
    pub fn open(link: &ShortLink, blob: &[u8]) -> Result<Invitation> {
        check_len("sealed invitation", blob.len(), MAX_SEALED_INVITATION)?;
        if blob.len() < MIN_SEALED_INVITATION {
            return Err(Error::Truncated {
                what: "sealed invitation",
                needed: MIN_SEALED_INVITATION - blob.len(),
            });
        }
        if blob[0] != SEALED_INVITATION_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "sealed invitation",
                found: blob[0],
                supported: SEALED_INVITATION_VERSION,
            });
        }
        let nonce: [u8; AEAD_NONCE_LEN] = blob[1..1 + AEAD_NONCE_LEN]
            .try_into()
            .expect("length checked");
        let padded = aead_open(
            &link.key(),
            &nonce,
            &link.blob_id(),
            &blob[1 + AEAD_NONCE_LEN..],
        )?;
        let invitation = Invitation::from_bytes(pad::unpad(&padded)?)?;
        invitation.check()?;
        Ok(invitation)
    }
}
