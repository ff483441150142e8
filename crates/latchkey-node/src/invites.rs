//! Sealed invitations behind short links (docs/PROTOCOL.md §10, docs/API.md "Invitations"):
//! opaque blobs stored write-once under the id the link's secret hashes to, until their expiry.
//! The node never sees the secret, so it cannot read them, and an id cannot be guessed; what it
//! guards is its disk: a cap per blob, per client address and per node, and a lifetime of at
//! most 400 days.

/// The largest blob: a sealed invitation is at most 16,425 bytes (version, nonce, the largest
/// pad bucket, tag); a little room for a later version.
pub const MAX_INVITE_BODY: usize = 16_448;
/// The longest lifetime a blob may ask for.
pub const MAX_INVITE_LIFETIME_MS: u64 = 400 * 86_400_000;

/// What [`crate::store::Backend::invite_put`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// A new blob.
    Created,
    /// The same bytes were already stored under this id (a retry): nothing changed.
    Same,
}

/// Why [`crate::store::Backend::invite_put`] stored nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteRefusal {
    /// Other bytes are stored under this id: blobs are write-once.
    Exists,
    /// This client address holds its maximum of live blobs.
    AddressFull,
    /// The node holds its maximum of live blobs.
    NodeFull,
}

/// Who a blob counts against and how many live blobs may be held.
#[derive(Debug, Clone)]
pub struct InviteQuota {
    pub address: Vec<u8>,
    pub per_address: usize,
    pub capacity: usize,
}
