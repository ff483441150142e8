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
