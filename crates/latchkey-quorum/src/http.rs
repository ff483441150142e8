//! Reading a peer's answer without trusting its size.
//!
//! A node or a device can answer with a body of any length, or claim one length and stream
//! another. Every body the device and the owner core read from a peer goes through
//! [`read_capped`]: a declared `Content-Length` over the cap is refused before any byte is read,
//! and the body is read chunk by chunk and dropped as soon as it passes the cap, so a peer that
//! streams forever costs at most `cap` bytes of memory (plus one chunk). The caps below are
//! derived from the protocol's maxima (docs/PROTOCOL.md §8.4).

use latchkey_proto::chain::OpList;
use latchkey_proto::codec::Codec;
use latchkey_proto::envelope::MAX_SEALED_RESPONSE;

use crate::error::{Error, Result};

/// One `OpList` as `GET /v1/devices/{d}/ops` and a device's `GET /v1/chain` serve it: the
/// op list's own decoder limit (a node serves a longer chain in parts).
pub const CHAIN_PAGE_CAP: usize = OpList::MAX_LEN;

/// A mailbox page (`GET /v1/mailboxes/…`): at most 64 messages of at most 20,000 bytes, each
/// base64 in JSON (26,668 characters) with its id and expiry (under 100 more): 1,713,152 bytes,
/// rounded up.
pub const MAILBOX_PAGE_CAP: usize = 2 * 1024 * 1024;

/// A direct answer to `POST /v1/command`: one sealed response, or a short JSON error.
pub const SEALED_ANSWER_CAP: usize = if MAX_SEALED_RESPONSE > 4096 {
    MAX_SEALED_RESPONSE
} else {
    4096
};

/// Small JSON answers (`POST …/ops` acknowledgements and errors, `/v1/refresh`, `/v1/ops` on a
/// device): none is legitimately longer than a few hundred bytes.
pub const SMALL_ANSWER_CAP: usize = 16 * 1024;

/// Reads `resp`'s body, refusing it once it is over `cap` bytes — before reading when the
/// declared length is already over, otherwise as soon as the streamed bytes pass it.
pub async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Result<Vec<u8>> {
    if let Some(declared) = resp.content_length() {
        if declared > cap as u64 {
            return Err(Error::TooLarge {
                cap,
                seen: declared,
            });
        }
    }
    // The declared length is not trusted for the allocation either: a liar declares small and
    // streams more, an honest peer declares what it sends.
    let initial = resp.content_length().unwrap_or(0).min(cap as u64) as usize;
    let mut body = Vec::with_capacity(initial);
    loop {
        let chunk = resp
            .chunk()
            .await
            .map_err(|e| Error::Read(e.without_url().to_string()))?;
        let Some(chunk) = chunk else {
            return Ok(body);
        };
        if body.len() + chunk.len() > cap {
            return Err(Error::TooLarge {
                cap,
                seen: (body.len() + chunk.len()) as u64,
            });
        }
        body.extend_from_slice(&chunk);
    }
}
