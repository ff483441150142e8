//! The claim code: the text a new or reset device shows locally as a QR code.
//!
//! `LATCHKEY:C1:` followed by unpadded RFC 4648 base32 of the binary payload. Upper-case base32
//! and the prefix all lie in the QR alphanumeric set, which packs 5.5 bits per character, so the
//! code is smaller than the same bytes in base64 (byte mode, 8 bits per character).

use core::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use zeroize::Zeroizing;

use crate::codec::{Codec, Reader, Writer};
use crate::error::{Error, Result};
use crate::kem::KemPublicKey;
use crate::keys::{DeviceId, PublicKey, SigningKey};

pub const CLAIM_VERSION: u8 = 1;
pub const CLAIM_PREFIX: &str = "LATCHKEY:C1:";
/// A QR code above about 300 characters gets too dense to scan from a small display.
pub const MAX_CLAIM_TEXT: usize = 300;
/// The most bytes a code of [`MAX_CLAIM_TEXT`] characters can carry: (300 − 12) × 5 / 8 = 180.
/// The payload decoder's cap, so bytes that no scannable code could hold are refused as such.
pub const MAX_CLAIM_PAYLOAD: usize = (MAX_CLAIM_TEXT - CLAIM_PREFIX.len()) * 5 / 8;
pub const MAX_CLAIM_NAME: usize = 24;
pub const MAX_CLAIM_ADDRS: usize = 4;
pub const MAX_HOST_LEN: usize = 63;

/// Where a device can be reached on the local network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceAddr {
    /// Tags 4 (IPv4) and 6 (IPv6).
    Socket(SocketAddr),
    /// Tag 0x44 ('D'): a host name (e.g. `door.local`) and port.
    Host { host: String, port: u16 },
}

impl fmt::Display for DeviceAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceAddr::Socket(s) => write!(f, "{s}"),
            DeviceAddr::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl DeviceAddr {
    pub fn parse(text: &str) -> Result<Self> {
        if let Ok(s) = text.parse::<SocketAddr>() {
            return Ok(DeviceAddr::Socket(s));
        }
        let bad = Error::Invalid {
            what: "device address",
            why: "expected host:port",
        };
        let (host, port) = text.rsplit_once(':').ok_or(bad.clone())?;
        let port = port.parse().map_err(|_| bad.clone())?;
        if host.is_empty()
            || host.len() > MAX_HOST_LEN
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(bad);
        }
        Ok(DeviceAddr::Host {
            host: host.to_owned(),
            port,
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        match self {
            DeviceAddr::Socket(SocketAddr::V4(a)) => {
                w.u8(4);
                w.raw(&a.ip().octets());
                w.u16(a.port());
            }
            DeviceAddr::Socket(SocketAddr::V6(a)) => {
                w.u8(6);
                w.raw(&a.ip().octets());
                w.u16(a.port());
            }
            DeviceAddr::Host { host, port } => {
                w.u8(0x44);
                w.bytes8(host.as_bytes());
                w.u16(*port);
            }
        }
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        Ok(match r.u8()? {
            4 => {
                let ip = Ipv4Addr::from(r.array::<4>()?);
                DeviceAddr::Socket(SocketAddr::new(IpAddr::V4(ip), r.u16()?))
            }
            6 => {
                let ip = Ipv6Addr::from(r.array::<16>()?);
                DeviceAddr::Socket(SocketAddr::new(IpAddr::V6(ip), r.u16()?))
            }
            0x44 => {
                let host = r.str8("host name", MAX_HOST_LEN)?;
                let port = r.u16()?;
                match DeviceAddr::parse(&format!("{host}:{port}"))? {
                    // An IP literal has its own tag; taking it here too would give one address
                    // two encodings.
                    DeviceAddr::Socket(_) => {
                        return Err(Error::Invalid {
                            what: "device address",
                            why: "an IP address must use tag 4 or 6, not a host name",
                        })
                    }
                    host => host,
                }
            }
            tag => {
                return Err(Error::UnknownTag {
                    what: "address",
                    tag,
                })
            }
        })
    }
}

/// What a device's claim QR says.
#[derive(Clone, PartialEq, Eq)]
pub struct ClaimPayload {
    /// The device's identity key; the device id is derived from it.
    pub identity: PublicKey,
    /// Commits to the KEM keys the genesis op publishes.
    pub kem_commitment: [u8; 32],
    /// The setup key's secret: whoever scans the code can sign the claim. It proves physical
    /// presence and is spent by the claim.
    pub setup_secret: Zeroizing<[u8; 32]>,
    pub name: String,
    pub addrs: Vec<DeviceAddr>,
}

impl fmt::Debug for ClaimPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClaimPayload")
            .field("device", &self.device_id())
            .field("name", &self.name)
            .field("addrs", &self.addrs)
            .field("setup_secret", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl ClaimPayload {
    pub fn device_id(&self) -> DeviceId {
        DeviceId::from_identity(&self.identity)
    }

    pub fn setup_key(&self) -> SigningKey {
        SigningKey::from_bytes(&self.setup_secret)
    }

    /// Checks the full KEM keys fetched from the network against the code's commitment.
    pub fn check_kem(&self, kem: &KemPublicKey) -> Result<()> {
        if kem.commitment() == self.kem_commitment {
            Ok(())
        } else {
            Err(Error::KemCommitmentMismatch)
        }
    }

    /// The QR text. Fails if the name or addresses make it longer than [`MAX_CLAIM_TEXT`].
    pub fn to_text(&self) -> Result<Zeroizing<String>> {
        if self.name.len() > MAX_CLAIM_NAME || self.addrs.len() > MAX_CLAIM_ADDRS {
            return Err(Error::Invalid {
                what: "claim code",
                why: "name over 24 bytes or more than 4 addresses",
            });
        }
        let bytes = Zeroizing::new(self.to_bytes());
        let text = Zeroizing::new(format!(
            "{CLAIM_PREFIX}{}",
            data_encoding::BASE32_NOPAD.encode(&bytes)
        ));
        if text.len() > MAX_CLAIM_TEXT {
            return Err(Error::TooLarge {
                what: "claim code (shorten the name or list fewer addresses)",
                actual: text.len(),
                limit: MAX_CLAIM_TEXT,
            });
        }
        Ok(text)
    }

    /// Parses scanned or pasted text. Surrounding white space and lower case are forgiven.
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        if text.len() > MAX_CLAIM_TEXT {
            return Err(Error::TooLarge {
                what: "claim code",
                actual: text.len(),
                limit: MAX_CLAIM_TEXT,
            });
        }
        let upper = Zeroizing::new(text.to_ascii_uppercase());
        let body = upper.strip_prefix(CLAIM_PREFIX).ok_or(Error::WrongKind {
            expected: "Latchkey claim code (LATCHKEY:C1:…)",
            found: crate::error::looks_like(text),
        })?;
        let bytes = Zeroizing::new(
            data_encoding::BASE32_NOPAD
                .decode(body.as_bytes())
                .map_err(|_| Error::BadText {
                    what: "claim code",
                    encoding: "base32",
                })?,
        );
        Self::from_bytes(&bytes)
    }
}

impl Codec for ClaimPayload {
    const NAME: &'static str = "claim code";
    const MAX_LEN: usize = MAX_CLAIM_PAYLOAD;
    fn encode(&self, w: &mut Writer) {
        w.u8(CLAIM_VERSION);
        w.nested(&self.identity);
        w.raw(&self.kem_commitment);
        w.raw(self.setup_secret.as_slice());
        w.bytes8(self.name.as_bytes());
        w.list8(&self.addrs, |w, a| a.encode(w));
    }
    fn read(r: &mut Reader<'_>) -> Result<Self> {
        let version = r.u8()?;
        if version != CLAIM_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "claim code",
                found: version,
                supported: CLAIM_VERSION,
            });
        }
        Ok(ClaimPayload {
            identity: r.nested()?,
            kem_commitment: r.array()?,
            setup_secret: Zeroizing::new(r.array()?),
            name: r.str8("device name", MAX_CLAIM_NAME)?,
            addrs: r.list8(MAX_CLAIM_ADDRS, DeviceAddr::read)?,
        })
    }
}
