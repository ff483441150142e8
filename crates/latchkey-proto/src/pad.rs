//! Padding to fixed size buckets, so an envelope's length does not tell which action, which
//! sender kind or how long an argument it carries.
//!
//! Layout: `u32 length || message || filler`, where filler is random and the whole is exactly
//! one bucket long.

use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Bucket sizes for padded plaintexts, smallest first. Nearly every command (an owner's, or a
/// guest's with a one- or two-link grant chain) fits in the first.
pub const BUCKETS: [usize; 3] = [1024, 4096, 16384];
const LEN_PREFIX: usize = 4;

/// The largest message that can be padded.
pub const MAX_MESSAGE: usize = BUCKETS[BUCKETS.len() - 1] - LEN_PREFIX;

pub fn bucket_for(message_len: usize) -> Result<usize> {
    BUCKETS
        .iter()
        .copied()
        .find(|b| message_len + LEN_PREFIX <= *b)
        .ok_or(Error::TooLarge {
            what: "message to pad",
            actual: message_len,
            limit: MAX_MESSAGE,
        })
}

pub fn pad(message: &[u8], rng: &mut (impl RngCore + CryptoRng)) -> Result<Zeroizing<Vec<u8>>> {
    let bucket = bucket_for(message.len())?;
    let mut out = Zeroizing::new(vec![0u8; bucket]);
    out[..LEN_PREFIX].copy_from_slice(&(message.len() as u32).to_be_bytes());
    out[LEN_PREFIX..LEN_PREFIX + message.len()].copy_from_slice(message);
    rng.fill_bytes(&mut out[LEN_PREFIX + message.len()..]);
    Ok(out)
}

/// Pads to exactly `size` bytes (one of [`BUCKETS`]) whatever the message's length, for
/// messages that must all look alike (key messages, docs/PROTOCOL.md §14).
pub fn pad_to(
    message: &[u8],
    size: usize,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Zeroizing<Vec<u8>>> {
    debug_assert!(BUCKETS.contains(&size));
    if message.len() + LEN_PREFIX > size {
        return Err(Error::TooLarge {
            what: "message to pad",
            actual: message.len(),
            limit: size - LEN_PREFIX,
        });
    }
    let mut out = Zeroizing::new(vec![0u8; size]);
    out[..LEN_PREFIX].copy_from_slice(&(message.len() as u32).to_be_bytes());
    out[LEN_PREFIX..LEN_PREFIX + message.len()].copy_from_slice(message);
    rng.fill_bytes(&mut out[LEN_PREFIX + message.len()..]);
    Ok(out)
}

/// The message inside a padded plaintext. Only exact bucket sizes are accepted.
pub fn unpad(padded: &[u8]) -> Result<&[u8]> {
    if !BUCKETS.contains(&padded.len()) {
        return Err(Error::BadPadding);
    }
    let len = u32::from_be_bytes(padded[..LEN_PREFIX].try_into().expect("bucket > 4")) as usize;
    if len > padded.len() - LEN_PREFIX {
        return Err(Error::BadPadding);
    }
    Ok(&padded[LEN_PREFIX..LEN_PREFIX + len])
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn lengths_land_on_buckets() {
        let mut rng = ChaCha20Rng::seed_from_u64(0);
        for (len, bucket) in [(0, 1024), (1020, 1024), (1021, 4096), (16380, 16384)] {
            let msg = vec![7u8; len];
            let padded = pad(&msg, &mut rng).unwrap();
            assert_eq!(padded.len(), bucket);
            assert_eq!(unpad(&padded).unwrap(), msg.as_slice());
        }
        assert!(pad(&[0u8; 16381], &mut rng).is_err());
    }

    #[test]
    fn unpad_refuses_bad_lengths() {
        assert_eq!(unpad(&[0u8; 1000]), Err(Error::BadPadding));
        let mut p = vec![0u8; 1024];
        p[..4].copy_from_slice(&1021u32.to_be_bytes());
        assert_eq!(unpad(&p), Err(Error::BadPadding));
    }
}
