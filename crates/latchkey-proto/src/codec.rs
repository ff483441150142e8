//! The one binary codec every wire type uses.
//!
//! Integers are big-endian and fixed width; byte strings and lists carry a length prefix whose
//! width is part of each field's layout (docs/PROTOCOL.md). A [`Reader`] refuses to read past its
//! end and [`Reader::finish`] refuses trailing bytes, so every encoding has exactly one parse.

use crate::error::{Error, Result};
use crate::keys::PublicKey;

/// A type with one canonical byte encoding.
pub trait Codec: Sized {
    /// What the type is called in error messages.
    const NAME: &'static str;
    /// The largest encoding a decoder accepts.
    const MAX_LEN: usize;

    fn encode(&self, w: &mut Writer);
    fn read(r: &mut Reader<'_>) -> Result<Self>;

    fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode(&mut w);
        w.into_inner()
    }

    /// Decodes exactly one value: the input must be within `MAX_LEN` and fully consumed.
    fn from_bytes(bytes: &[u8]) -> Result<Self> {
        check_len(Self::NAME, bytes.len(), Self::MAX_LEN)?;
        let mut r = Reader::new(Self::NAME, bytes);
        let value = Self::read(&mut r)?;
        r.finish()?;
        Ok(value)
    }
}

pub(crate) fn check_len(what: &'static str, actual: usize, limit: usize) -> Result<()> {
    if actual > limit {
        return Err(Error::TooLarge {
            what,
            actual,
            limit,
        });
    }
    Ok(())
}

/// An append-only output buffer.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn into_inner(self) -> Vec<u8> {
        self.buf
    }
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    /// Fixed-size bytes, no prefix.
    pub fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }
    /// Bytes behind a one-byte length. Callers keep `bytes` under 256 by construction.
    pub fn bytes8(&mut self, bytes: &[u8]) {
        debug_assert!(bytes.len() <= u8::MAX as usize);
        self.u8(bytes.len() as u8);
        self.raw(bytes);
    }
    /// Bytes behind a two-byte length. Callers keep `bytes` under 64 KiB by construction.
    pub fn bytes16(&mut self, bytes: &[u8]) {
        debug_assert!(bytes.len() <= u16::MAX as usize);
        self.u16(bytes.len() as u16);
        self.raw(bytes);
    }
    pub fn option<T>(&mut self, value: Option<&T>, mut put: impl FnMut(&mut Self, &T)) {
        match value {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                put(self, v);
            }
        }
    }
    pub fn list8<T>(&mut self, items: &[T], mut put: impl FnMut(&mut Self, &T)) {
        debug_assert!(items.len() <= u8::MAX as usize);
        self.u8(items.len() as u8);
        for item in items {
            put(self, item);
        }
    }
    pub fn nested<T: Codec>(&mut self, value: &T) {
        value.encode(self);
    }
}

/// A cursor over input that never reads past its end.
#[derive(Debug)]
pub struct Reader<'a> {
    what: &'static str,
    buf: &'a [u8],
    pos: usize,
    /// Public keys this decode has already validated. A command repeats its keys (each grant's
    /// subject is the next grant's issuer, the last subject is the sender) and the strict check
    /// costs two field exponentiations per key, so a repeat is taken from here instead. Exact:
    /// a key is a pure function of its 32 bytes, and only keys that passed are kept.
    keys: [Option<PublicKey>; KEY_MEMO],
    next_key: usize,
}

/// How many validated keys a [`Reader`] remembers (round-robin): enough for a full grant chain's
/// distinct neighbours, small enough to scan in a few nanoseconds.
const KEY_MEMO: usize = 4;

impl<'a> Reader<'a> {
    pub fn new(what: &'static str, buf: &'a [u8]) -> Self {
        Self {
            what,
            buf,
            pos: 0,
            keys: [None; KEY_MEMO],
            next_key: 0,
        }
    }

    /// A key with exactly these bytes that this decode already validated.
    pub(crate) fn known_key(&self, bytes: &[u8; 32]) -> Option<PublicKey> {
        self.keys
            .iter()
            .flatten()
            .find(|k| k.as_bytes() == bytes.as_slice())
            .copied()
    }

    /// Remembers a key that passed validation, replacing the oldest when full.
    pub(crate) fn remember_key(&mut self, key: PublicKey) {
        self.keys[self.next_key] = Some(key);
        self.next_key = (self.next_key + 1) % KEY_MEMO;
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Everything read so far: used to sign or hash the exact bytes a value was decoded from.
    pub fn consumed(&self) -> &'a [u8] {
        &self.buf[..self.pos]
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.remaining() < n {
            return Err(Error::Truncated {
                what: self.what,
                needed: n - self.remaining(),
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub fn bytes8(&mut self) -> Result<&'a [u8]> {
        let n = self.u8()? as usize;
        self.take(n)
    }

    pub fn bytes16(&mut self, limit: usize) -> Result<&'a [u8]> {
        let n = self.u16()? as usize;
        check_len(self.what, n, limit)?;
        self.take(n)
    }

    /// A UTF-8 string behind a one-byte length, at most `limit` bytes.
    pub fn str8(&mut self, field: &'static str, limit: usize) -> Result<String> {
        let bytes = self.bytes8()?;
        check_len(field, bytes.len(), limit)?;
        let s = core::str::from_utf8(bytes).map_err(|_| Error::NotUtf8 { what: field })?;
        Ok(s.to_owned())
    }

    /// A presence byte: 0 absent, 1 present, anything else refused so the encoding stays unique.
    pub fn option<T>(&mut self, get: impl FnOnce(&mut Self) -> Result<T>) -> Result<Option<T>> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(get(self)?)),
            tag => Err(Error::UnknownTag {
                what: "option flag",
                tag,
            }),
        }
    }

    pub fn list8<T>(
        &mut self,
        limit: usize,
        mut get: impl FnMut(&mut Self) -> Result<T>,
    ) -> Result<Vec<T>> {
        let n = self.u8()? as usize;
        check_len(self.what, n, limit)?;
        (0..n).map(|_| get(self)).collect()
    }

    pub fn nested<T: Codec>(&mut self) -> Result<T> {
        T::read(self)
    }

    pub fn finish(self) -> Result<()> {
        if self.remaining() != 0 {
            return Err(Error::TrailingBytes {
                what: self.what,
                count: self.remaining(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_refuses_to_overrun() {
        let mut r = Reader::new("test", &[1, 2]);
        assert_eq!(r.u8().unwrap(), 1);
        assert_eq!(
            r.u16(),
            Err(Error::Truncated {
                what: "test",
                needed: 1
            })
        );
    }

    #[test]
    fn finish_refuses_trailing_bytes() {
        let mut r = Reader::new("test", &[1, 2, 3]);
        r.u8().unwrap();
        assert_eq!(
            r.finish(),
            Err(Error::TrailingBytes {
                what: "test",
                count: 2
            })
        );
    }

    #[test]
    fn option_flag_must_be_zero_or_one() {
        let mut r = Reader::new("test", &[2]);
        assert!(matches!(
            r.option(|r| r.u8()),
            Err(Error::UnknownTag { tag: 2, .. })
        ));
    }

    #[test]
    fn str8_checks_utf8_and_limit() {
        let mut r = Reader::new("test", &[2, 0xff, 0xfe]);
        assert_eq!(r.str8("name", 10), Err(Error::NotUtf8 { what: "name" }));
        let mut r = Reader::new("test", &[3, b'a', b'b', b'c']);
        assert!(matches!(r.str8("name", 2), Err(Error::TooLarge { .. })));
    }

    #[test]
    fn integers_are_big_endian() {
        let mut w = Writer::new();
        w.u16(0x0102);
        w.u32(0x03040506);
        w.u64(7);
        assert_eq!(w.into_inner(), [1, 2, 3, 4, 5, 6, 0, 0, 0, 0, 0, 0, 0, 7]);
    }
}
