//! Domain-separated hashing. Every hash in the protocol has its own label, so a value hashed
//! for one purpose can never be mistaken for another (labels are listed in docs/PROTOCOL.md).

use crypto::hashes::blake2b::Blake2b256;
use crypto::hashes::Digest;

/// BLAKE2b-256 over `label || 0x00 || parts...`.
pub fn labeled(label: &str, parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Blake2b256::new();
    h.update(label.as_bytes());
    h.update([0u8]);
    for part in parts {
        h.update(part);
    }
    h.finalize().into()
}

pub const DEVICE_ID: &str = "latchkey/v1/device-id";
pub const KEM_COMMITMENT: &str = "latchkey/v1/kem-commitment";
pub const OP_ID: &str = "latchkey/v1/op-id";
pub const GRANT_ID: &str = "latchkey/v1/grant-id";
pub const COMMAND_ID: &str = "latchkey/v1/command-id";
pub const OWNER_MAILBOX: &str = "latchkey/v1/owner-mailbox";
/// A short link's blob id on the nodes, from its secret (docs/PROTOCOL.md §10).
pub const INVITE_ID: &str = "latchkey/v1/invite-id";
/// A short link's blob key, from its secret (docs/PROTOCOL.md §10).
pub const INVITE_KEY: &str = "latchkey/v1/invite-key";
/// A consent's id, from its request's content (docs/PROTOCOL.md §14).
pub const CONSENT_ID: &str = "latchkey/v1/consent-id";
/// A consent entry's hash, from its content (docs/PROTOCOL.md §14).
pub const CONSENT_ENTRY_HASH: &str = "latchkey/v1/consent-entry-hash";

/// An owner's mailbox id on the registry nodes: `H("latchkey/v1/owner-mailbox", owner key)`
/// (docs/PROTOCOL.md §11). Proposals and notices for that owner are posted there.
pub fn owner_mailbox(owner: &crate::keys::PublicKey) -> [u8; 32] {
    labeled(OWNER_MAILBOX, &[&owner.to_bytes()])
}

/// A device's mailbox id on the registry nodes: its device id's 32 bytes, unhashed
/// (docs/PROTOCOL.md §11), so a sender who knows the device knows where to post.
pub fn device_mailbox(device: &crate::keys::DeviceId) -> [u8; 32] {
    device.0
}
