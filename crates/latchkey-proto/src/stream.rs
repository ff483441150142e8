//! Data streams (docs/PROTOCOL.md §14): a meter's [`Reading`] in one canonical binary form,
//! sealed under a symmetric stream key into a fixed-size frame (what `latchkey/<device>/<stream>/live`
//! carries), and the key message ([`KeyGrant`]) that hands a recipient the stream keys it may
//! use: signed by the device identity key, sealed to the recipient with the hybrid KEM of
//! [`crate::kem`].
//!
//! Every frame of one stream has the same length whatever the reading holds, so the broker and
//! anyone on the network learn the rate and nothing about the values (a missing phase or gas
//! meter included). Every key message has the same length whatever number of keys it carries.

use core::fmt;

use hkdf::Hkdf;
use rand_core::{CryptoRng, RngCore};
use serde::Serialize;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::codec::{check_len, Codec, Reader, Writer};
use crate::consent::ConsentId;
use crate::error::{Error, Result};
use crate::kem::{self, KemCiphertext, KemPublicKey, KemSecretKey, AEAD_NONCE_LEN, AEAD_TAG_LEN};
use crate::keys::{DeviceId, PublicKey, Signature, SigningKey};
use crate::pad;

/// The version byte every encoding of this module starts with.
pub const STREAM_VERSION: u8 = 1;
/// Longest stream name (`[a-z0-9_-]`, at least one byte).
pub const MAX_STREAM_NAME: usize = 32;
/// Most tariff registers a reading carries (DSMR meters have 2; some have 4).
pub const MAX_TARIFFS: usize = 4;
/// Most phases a reading carries.
pub const MAX_PHASES: usize = 3;
/// The decoder's cap for an encoded [`Reading`]; the largest valid one is 167 bytes.
pub const MAX_READING: usize = 256;
/// The padded plaintext inside every sealed reading: `u16 length || reading || zeros`.
pub const READING_BLOCK: usize = 2 + MAX_READING;
/// The longest sealed reading (a 32-byte stream name).
pub const MAX_SEALED_READING: usize = sealed_reading_len_for(MAX_STREAM_NAME);
/// Largest time a reading carries: 9999-12-31T23:59:59.999Z, the last instant RFC 3339 writes.
pub const MAX_TIME_MS: u64 = 253_402_300_799_999;
/// Most keys one key message carries: the current key and up to 63 earlier ones (history).
pub const MAX_GRANT_KEYS: usize = 64;
/// A signed key grant is at most this long (version, device, stream, recipient, consent,
/// issued, 64 keys of 44 bytes, signature: 3,020 bytes); it is padded to [`GRANT_BLOCK`].
pub const MAX_KEY_GRANT: usize =
    1 + 32 + 1 + MAX_STREAM_NAME + 32 + 33 + 8 + 1 + MAX_GRANT_KEYS * 44 + 64;
/// The padded plaintext of every key message (the second bucket of [`crate::pad`]).
pub const GRANT_BLOCK: usize = pad::BUCKETS[1];
/// A key message: version, kind, KEM ciphertext, nonce, padded grant and its tag (5,209 bytes).
pub const KEY_MESSAGE_LEN: usize =
    2 + kem::KEM_CIPHERTEXT_LEN + AEAD_NONCE_LEN + GRANT_BLOCK + AEAD_TAG_LEN;

/// HKDF-SHA256 info prefix of a reading's AEAD key (then `0x00 || device || stream`).
const READING_KEY_INFO: &[u8] = b"latchkey/v1/stream-reading-key";
/// Signing label of a key grant.
const KEY_GRANT_LABEL: &[u8] = b"latchkey/v1/key-grant\0";
/// Sealed reading frames: kind 5 (commands 1, responses 2, events 3, key messages 4).
const KIND_READING: u8 = 5;
/// Key messages: envelope kind 4.
const KIND_KEY_MESSAGE: u8 = 4;
const KEY_MESSAGE_HEADER_LEN: usize = 2 + kem::KEM_CIPHERTEXT_LEN + AEAD_NONCE_LEN;

/// Checks a stream name: 1 to 32 bytes of `a-z`, `0-9`, `_`, `-` (it is an MQTT topic level
/// and a config table name, so nothing that needs escaping in either).
pub fn validate_stream_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_STREAM_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid {
            what: "stream name",
            why: "stream names are 1-32 of a-z, 0-9, '_', '-'",
        })
    }
}

fn device_hex(device: &DeviceId) -> String {
    data_encoding::HEXLOWER.encode(&device.0)
}

/// The MQTT topic of a stream's sealed readings: `latchkey/<device hex>/<stream>/live`.
pub fn live_topic(device: &DeviceId, stream: &str) -> String {
    format!("latchkey/{}/{stream}/live", device_hex(device))
}

/// The MQTT topic of a stream's free 1-minute aggregate (clear JSON, retained).
pub fn avg1m_topic(device: &DeviceId, stream: &str) -> String {
    format!("latchkey/{}/{stream}/avg1m", device_hex(device))
}

/// The MQTT topic of one recipient's retained key message (`recipient`: a provider's signing
/// key, or an owner's public key, 32 bytes).
pub fn key_topic(device: &DeviceId, stream: &str, recipient: &[u8; 32]) -> String {
    format!(
        "latchkey/{}/{stream}/keys/{}",
        device_hex(device),
        data_encoding::HEXLOWER.encode(recipient)
    )
}

/// One phase's instantaneous values (DSMR 32.7.0, 31.7.0, 21.7.0, 22.7.0 and their L2/L3
/// counterparts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Phase {
    pub voltage_mv: Option<u32>,
    pub current_ma: Option<u32>,
    pub power_delivered_w: Option<u32>,
    pub power_returned_w: Option<u32>,
}

/// One meter reading. Integers only, so the wire form is exact and canonical; [`Reading::view`]
/// gives the units people read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reading {
    /// UTC milliseconds, from the telegram's local time and DST flag.
    pub meter_time_ms: Option<u64>,
    /// The tariff in force, from 1 (DSMR 0-0:96.14.0).
    pub tariff: Option<u8>,
    /// Energy delivered to the home per tariff, `[0]` = tariff 1; at most 4.
    pub energy_delivered_wh: Vec<u64>,
    /// Energy returned to the grid per tariff; at most 4.
    pub energy_returned_wh: Vec<u64>,
    pub power_delivered_w: Option<u32>,
    pub power_returned_w: Option<u32>,
    /// At most 3, `[0]` = L1.
    pub phases: Vec<Phase>,
    /// Gas in litres (m³ with 3 decimals).
    pub gas_l: Option<u64>,
    /// When the gas meter last reported, UTC milliseconds.
    pub gas_time_ms: Option<u64>,
}

impl Reading {
    /// What is wrong with this reading for the wire, if anything.
    fn problem(&self) -> Option<&'static str> {
        if self.tariff == Some(0) {
            return Some("tariffs are numbered from 1");
        }
        if self.energy_delivered_wh.len() > MAX_TARIFFS
            || self.energy_returned_wh.len() > MAX_TARIFFS
        {
            return Some("a reading carries at most 4 tariff registers");
        }
        if self.phases.len() > MAX_PHASES {
            return Some("a reading carries at most 3 phases");
        }
        let late = |t: Option<u64>| t.is_some_and(|t| t > MAX_TIME_MS);
        if late(self.meter_time_ms) || late(self.gas_time_ms) {
            return Some("times are at most 9999-12-31T23:59:59.999Z");
        }
        None
    }

    /// Checks the caps (tariffs ≤ 4, phases ≤ 3, tariff ≥ 1, times ≤ year 9999).
    pub fn validate(&self) -> Result<()> {
        match self.problem() {
            Some(why) => Err(Error::Invalid {
                what: "reading",
                why,
            }),
            None => Ok(()),
        }
    }

    /// The reading in the units people read (kWh, kW, V, A, m³, RFC 3339 UTC times).
    pub fn view(&self) -> ReadingView {
        let k = |v: u64| v as f64 / 1000.0;
        let k32 = |v: Option<u32>| v.map(|v| f64::from(v) / 1000.0);
        ReadingView {
            meter_time: self.meter_time_ms.and_then(rfc3339),
            tariff: self.tariff,
            energy_delivered_kwh: self.energy_delivered_wh.iter().map(|&v| k(v)).collect(),
            energy_returned_kwh: self.energy_returned_wh.iter().map(|&v| k(v)).collect(),
            power_delivered_kw: k32(self.power_delivered_w),
            power_returned_kw: k32(self.power_returned_w),
            phases: self
                .phases
                .iter()
                .map(|p| PhaseView {
                    voltage_v: k32(p.voltage_mv),
                    current_a: k32(p.current_ma),
                    power_delivered_kw: k32(p.power_delivered_w),
                    power_returned_kw: k32(p.power_returned_w),
                })
                .collect(),
            gas_m3: self.gas_l.map(k),
            gas_time: self.gas_time_ms.and_then(rfc3339),
        }
    }
}

/// RFC 3339 UTC (`2026-12-01T06:17:35Z`, with `.mmm` when the milliseconds are not zero).
pub fn rfc3339(ms: u64) -> Option<String> {
    let ms = i64::try_from(ms).ok()?;
    jiff::Timestamp::from_millisecond(ms)
        .ok()
        .map(|t| t.to_string())
}

impl Codec for Reading {
    const NAME: &'static str = "reading";
    const MAX_LEN: usize = MAX_READING;
    fn encode(&self, w: &mut Writer) {
        let opt32 = |w: &mut Writer, v: Option<u32>| w.option(v.as_ref(), |w, v| w.u32(*v));
        w.u8(STREAM_VERSION);
        w.option(self.meter_time_ms.as_ref(), |w, v| w.u64(*v));
        w.option(self.tariff.as_ref(), |w, v| w.u8(*v));
        w.list8(&self.energy_delivered_wh, |w, v| w.u64(*v));
        w.list8(&self.energy_returned_wh, |w, v| w.u64(*v));
        opt32(w, self.power_delivered_w);
        opt32(w, self.power_returned_w);
        w.list8(&self.phases, |w, p| {
            opt32(w, p.voltage_mv);
            opt32(w, p.current_ma);
            opt32(w, p.power_delivered_w);
            opt32(w, p.power_returned_w);
        });
        w.option(self.gas_l.as_ref(), |w, v| w.u64(*v));
        w.option(self.gas_time_ms.as_ref(), |w, v| w.u64(*v));
    }
    fn read(r: &mut Reader<'_>) -> Result<Self> {
        let version = r.u8()?;
        if version != STREAM_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "reading",
                found: version,
                supported: STREAM_VERSION,
            });
        }
        let opt32 = |r: &mut Reader<'_>| r.option(|r| r.u32());
        let reading = Reading {
            meter_time_ms: r.option(|r| r.u64())?,
            tariff: r.option(|r| r.u8())?,
            energy_delivered_wh: r.list8(MAX_TARIFFS, |r| r.u64())?,
            energy_returned_wh: r.list8(MAX_TARIFFS, |r| r.u64())?,
            power_delivered_w: opt32(r)?,
            power_returned_w: opt32(r)?,
            phases: r.list8(MAX_PHASES, |r| {
                Ok(Phase {
                    voltage_mv: opt32(r)?,
                    current_ma: opt32(r)?,
                    power_delivered_w: opt32(r)?,
                    power_returned_w: opt32(r)?,
                })
            })?,
            gas_l: r.option(|r| r.u64())?,
            gas_time_ms: r.option(|r| r.u64())?,
        };
        reading.validate()?;
        Ok(reading)
    }
}

/// What every tool prints for a reading (JSON via serde, or one CSV row). Absent values are
/// omitted from the JSON, except `meter_time`, which is `null` when the telegram had none.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReadingView {
    pub meter_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tariff: Option<u8>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub energy_delivered_kwh: Vec<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub energy_returned_kwh: Vec<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power_delivered_kw: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power_returned_kw: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<PhaseView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gas_m3: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gas_time: Option<String>,
}

/// One phase in people's units.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PhaseView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voltage_v: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_a: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power_delivered_kw: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power_returned_kw: Option<f64>,
}

const CSV_HEADER: &str = "meter_time,tariff,\
energy_delivered_kwh_t1,energy_delivered_kwh_t2,energy_delivered_kwh_t3,energy_delivered_kwh_t4,\
energy_returned_kwh_t1,energy_returned_kwh_t2,energy_returned_kwh_t3,energy_returned_kwh_t4,\
power_delivered_kw,power_returned_kw,\
l1_voltage_v,l1_current_a,l1_power_delivered_kw,l1_power_returned_kw,\
l2_voltage_v,l2_current_a,l2_power_delivered_kw,l2_power_returned_kw,\
l3_voltage_v,l3_current_a,l3_power_delivered_kw,l3_power_returned_kw,\
gas_m3,gas_time";

impl ReadingView {
    /// The CSV header: 26 fixed columns (4 tariffs each way, 3 phases), so rows of readings
    /// with different registers line up.
    pub fn csv_header() -> &'static str {
        CSV_HEADER
    }

    /// One CSV row under [`Self::csv_header`]; absent values are empty cells. No cell ever
    /// needs quoting (numbers and RFC 3339 times only).
    pub fn csv_row(&self) -> String {
        fn num(v: Option<f64>) -> String {
            v.map(|v| v.to_string()).unwrap_or_default()
        }
        let mut cells: Vec<String> = Vec::with_capacity(26);
        cells.push(self.meter_time.clone().unwrap_or_default());
        cells.push(self.tariff.map(|t| t.to_string()).unwrap_or_default());
        for list in [&self.energy_delivered_kwh, &self.energy_returned_kwh] {
            for i in 0..MAX_TARIFFS {
                cells.push(num(list.get(i).copied()));
            }
        }
        cells.push(num(self.power_delivered_kw));
        cells.push(num(self.power_returned_kw));
        for i in 0..MAX_PHASES {
            let p = self.phases.get(i);
            cells.push(num(p.and_then(|p| p.voltage_v)));
            cells.push(num(p.and_then(|p| p.current_a)));
            cells.push(num(p.and_then(|p| p.power_delivered_kw)));
            cells.push(num(p.and_then(|p| p.power_returned_kw)));
        }
        cells.push(num(self.gas_m3));
        cells.push(self.gas_time.clone().unwrap_or_default());
        cells.join(",")
    }
}

/// A stream key: 32 random bytes, wiped on drop, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct StreamKey(Zeroizing<[u8; 32]>);

impl StreamKey {
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(key.as_mut_slice());
        StreamKey(key)
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        StreamKey(Zeroizing::new(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The AEAD key of one stream's readings: HKDF-SHA256 (no salt) of the stream key, info
    /// `"latchkey/v1/stream-reading-key" || 0x00 || device || stream name`, so a key handed
    /// out for one stream opens nothing of another.
    pub fn reading_key(&self, device: &DeviceId, stream: &str) -> Zeroizing<[u8; 32]> {
        let hk = Hkdf::<Sha256>::new(None, self.0.as_slice());
        let info = [READING_KEY_INFO, &[0], &device.0, stream.as_bytes()].concat();
        let mut out = Zeroizing::new([0u8; 32]);
        hk.expand(&info, out.as_mut_slice())
            .expect("32 bytes is a valid HKDF length");
        out
    }
}

impl fmt::Debug for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StreamKey(<redacted>)")
    }
}

/// The clear header of a sealed reading (authenticated, readable without the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedReadingHeader {
    pub device: DeviceId,
    pub stream: String,
    /// Which stream key sealed it (from 1; each rotation adds one).
    pub key_id: u32,
    /// The device's reading counter for this stream: never repeats, across restarts too.
    pub seq: u64,
}

/// The length of every sealed reading of a stream named `stream` (347 bytes for `p1`).
pub fn sealed_reading_len(stream: &str) -> usize {
    sealed_reading_len_for(stream.len())
}

const fn sealed_reading_len_for(name_len: usize) -> usize {
    2 + 32 + 1 + name_len + 4 + 8 + AEAD_NONCE_LEN + READING_BLOCK + AEAD_TAG_LEN
}

fn encode_reading_header(h: &SealedReadingHeader, nonce: &[u8; AEAD_NONCE_LEN]) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(STREAM_VERSION);
    w.u8(KIND_READING);
    w.nested(&h.device);
    w.bytes8(h.stream.as_bytes());
    w.u32(h.key_id);
    w.u64(h.seq);
    w.raw(nonce);
    w.into_inner()
}

/// Seals one reading: `version 1 || kind 5 || device || stream (u8 length) || key id (u32) ||
/// seq (u64) || nonce (24) || XChaCha20-Poly1305(reading key, nonce, aad = all before,
/// u16 length || reading || zeros to 258 bytes)`.
#[allow(clippy::too_many_arguments)]
pub fn seal_reading(
    device: &DeviceId,
    stream: &str,
    key_id: u32,
    key: &StreamKey,
    seq: u64,
    reading: &Reading,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Vec<u8>> {
    validate_stream_name(stream)?;
    check_key_id(key_id)?;
    reading.validate()?;
    let body = Zeroizing::new(reading.to_bytes());
    check_len("reading", body.len(), MAX_READING)?;
    let mut block = Zeroizing::new(vec![0u8; READING_BLOCK]);
    block[..2].copy_from_slice(&(body.len() as u16).to_be_bytes());
    block[2..2 + body.len()].copy_from_slice(&body);
    let mut nonce = [0u8; AEAD_NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let header = SealedReadingHeader {
        device: *device,
        stream: stream.to_owned(),
        key_id,
        seq,
    };
    let aad = encode_reading_header(&header, &nonce);
    let sealed = kem::aead_seal(&key.reading_key(device, stream), &nonce, &aad, &block);
    Ok([aad, sealed].concat())
}

fn check_key_id(key_id: u32) -> Result<()> {
    if key_id == 0 {
        return Err(Error::Invalid {
            what: "stream key id",
            why: "key ids start at 1",
        });
    }
    Ok(())
}

/// Reads a sealed reading's clear header (no key needed), checking the frame's exact length;
/// returns the header, the nonce and the header's length.
fn read_reading_header(frame: &[u8]) -> Result<(SealedReadingHeader, [u8; AEAD_NONCE_LEN], usize)> {
    check_len("sealed reading", frame.len(), MAX_SEALED_READING)?;
    let mut r = Reader::new("sealed reading", frame);
    let version = r.u8()?;
    if version != STREAM_VERSION {
        return Err(Error::UnsupportedVersion {
            what: "sealed reading",
            found: version,
            supported: STREAM_VERSION,
        });
    }
    let kind = r.u8()?;
    if kind != KIND_READING {
        return Err(Error::UnknownTag {
            what: "sealed reading kind",
            tag: kind,
        });
    }
    let device = r.nested()?;
    let stream = r.str8("stream name", MAX_STREAM_NAME)?;
    validate_stream_name(&stream)?;
    let key_id = r.u32()?;
    check_key_id(key_id)?;
    let seq = r.u64()?;
    let nonce = r.array()?;
    let header_len = r.position();
    let expected = sealed_reading_len(&stream);
    if frame.len() != expected {
        return Err(if frame.len() < expected {
            Error::Truncated {
                what: "sealed reading",
                needed: expected - frame.len(),
            }
        } else {
            Error::TrailingBytes {
                what: "sealed reading",
                count: frame.len() - expected,
            }
        });
    }
    Ok((
        SealedReadingHeader {
            device,
            stream,
            key_id,
            seq,
        },
        nonce,
        header_len,
    ))
}

/// The header of a sealed reading, without opening it: which device, stream, key id and seq.
/// A reader uses it to pick the key (or to say it holds none for this key id).
pub fn peek_reading(frame: &[u8]) -> Result<SealedReadingHeader> {
    read_reading_header(frame).map(|(h, _, _)| h)
}

/// Opens a sealed reading with the stream key its header names (the caller picks the key by
/// [`SealedReadingHeader::key_id`]). A wrong key, or any changed byte, is `DecryptFailed`.
pub fn open_reading(frame: &[u8], key: &StreamKey) -> Result<(SealedReadingHeader, Reading)> {
    let (header, nonce, header_len) = read_reading_header(frame)?;
    let block = kem::aead_open(
        &key.reading_key(&header.device, &header.stream),
        &nonce,
        &frame[..header_len],
        &frame[header_len..],
    )?;
    let len = u16::from_be_bytes([block[0], block[1]]) as usize;
    if len > MAX_READING || block[2 + len..].iter().any(|&b| b != 0) {
        return Err(Error::BadPadding);
    }
    let reading = Reading::from_bytes(&block[2..2 + len])?;
    Ok((header, reading))
}

/// One stream key as a key message hands it out.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyEntry {
    /// From 1, one more per rotation.
    pub key_id: u32,
    /// The first reading seq sealed under this key.
    pub from_seq: u64,
    pub key: StreamKey,
}

impl fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyEntry")
            .field("key_id", &self.key_id)
            .field("from_seq", &self.from_seq)
            .finish_non_exhaustive()
    }
}

/// What a key message says: the stream keys one recipient may use, as the device signs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyGrant {
    pub device: DeviceId,
    pub stream: String,
    /// The recipient: a provider's signing key, or an owner's public key (32 bytes), so a key
    /// message copied to another recipient's topic is recognised as not for it.
    pub recipient: [u8; 32],
    /// The consent it follows from; `None` for an owner's own copy.
    pub consent: Option<ConsentId>,
    /// The device's clock when it made this grant (0 when its clock is not set).
    pub issued_ms: u64,
    /// 1 to 64 keys, strictly ascending key ids and non-decreasing `from_seq`; the last is
    /// the current key.
    pub keys: Vec<KeyEntry>,
}

impl KeyGrant {
    /// The key that seals new readings (the last one).
    pub fn current(&self) -> &KeyEntry {
        self.keys
            .last()
            .expect("a verified grant has at least one key")
    }

    /// The key with id `key_id`, if this grant has it.
    pub fn key(&self, key_id: u32) -> Option<&StreamKey> {
        self.keys
            .iter()
            .find(|k| k.key_id == key_id)
            .map(|k| &k.key)
    }

    fn check(&self) -> Result<()> {
        validate_stream_name(&self.stream)?;
        let invalid = |why| Error::Invalid {
            what: "key grant",
            why,
        };
        if self.keys.is_empty() || self.keys.len() > MAX_GRANT_KEYS {
            return Err(invalid("a key grant carries 1 to 64 keys"));
        }
        if self.keys[0].key_id == 0 {
            return Err(invalid("key ids start at 1"));
        }
        if !self
            .keys
            .windows(2)
            .all(|w| w[0].key_id < w[1].key_id && w[0].from_seq <= w[1].from_seq)
        {
            return Err(invalid(
                "keys must be in ascending key id order with non-decreasing from_seq",
            ));
        }
        Ok(())
    }

    fn encode_content(&self, w: &mut Writer) {
        w.u8(STREAM_VERSION);
        w.nested(&self.device);
        w.bytes8(self.stream.as_bytes());
        w.raw(&self.recipient);
        w.option(self.consent.as_ref(), |w, c| w.raw(&c.0));
        w.u64(self.issued_ms);
        w.list8(&self.keys, |w, k| {
            w.u32(k.key_id);
            w.u64(k.from_seq);
            w.raw(k.key.as_bytes());
        });
    }

    fn read_content(r: &mut Reader<'_>) -> Result<Self> {
        let version = r.u8()?;
        if version != STREAM_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "key grant",
                found: version,
                supported: STREAM_VERSION,
            });
        }
        let grant = KeyGrant {
            device: r.nested()?,
            stream: r.str8("stream name", MAX_STREAM_NAME)?,
            recipient: r.array()?,
            consent: r.option(|r| Ok(ConsentId(r.array()?)))?,
            issued_ms: r.u64()?,
            keys: r.list8(MAX_GRANT_KEYS, |r| {
                Ok(KeyEntry {
                    key_id: r.u32()?,
                    from_seq: r.u64()?,
                    key: StreamKey::from_bytes(r.array()?),
                })
            })?,
        };
        grant.check()?;
        Ok(grant)
    }

    fn content_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Writer::new();
        self.encode_content(&mut w);
        Zeroizing::new(w.into_inner())
    }

    /// The signed grant, as a key message carries it inside its padding: content ||
    /// signature by the device identity key over `"latchkey/v1/key-grant\0" || content`.
    pub fn to_signed_bytes(&self, identity: &SigningKey) -> Result<Zeroizing<Vec<u8>>> {
        self.check()?;
        let content = self.content_bytes();
        let signature = identity.sign(&[KEY_GRANT_LABEL, content.as_slice()].concat());
        let mut out = Zeroizing::new(content.to_vec());
        out.extend_from_slice(&signature.0);
        Ok(out)
    }

    /// Decodes a signed grant (at most [`MAX_KEY_GRANT`] bytes) and checks the device's
    /// signature.
    pub fn from_signed_bytes(signed: &[u8], device_identity: &PublicKey) -> Result<KeyGrant> {
        check_len("key grant", signed.len(), MAX_KEY_GRANT)?;
        let mut r = Reader::new("key grant", signed);
        let grant = KeyGrant::read_content(&mut r)?;
        let content = r.consumed();
        let signature: Signature = r.nested()?;
        r.finish()?;
        device_identity.verify_or(
            &signature,
            &[KEY_GRANT_LABEL, content].concat(),
            "key grant",
        )?;
        Ok(grant)
    }
}

/// Builds a key message: the grant signed by the device identity key, padded to 4,096 bytes
/// and sealed to the recipient's KEM public key: `version 1 || kind 4 || KEM ciphertext ||
/// nonce || XChaCha20-Poly1305(key-grant key, nonce, aad = header, padded grant)`. Always
/// [`KEY_MESSAGE_LEN`] bytes.
pub fn seal_key_grant(
    grant: &KeyGrant,
    identity: &SigningKey,
    to: &KemPublicKey,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Vec<u8>> {
    let plaintext = grant.to_signed_bytes(identity)?;
    check_len("key grant", plaintext.len(), MAX_KEY_GRANT)?;
    let (shared, kem_ct) = kem::encapsulate(to, rng)?;
    let mut nonce = [0u8; AEAD_NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let mut w = Writer::new();
    w.u8(STREAM_VERSION);
    w.u8(KIND_KEY_MESSAGE);
    w.nested(&kem_ct);
    w.raw(&nonce);
    let header = w.into_inner();
    let padded = pad::pad_to(&plaintext, GRANT_BLOCK, rng)?;
    let sealed = kem::aead_seal(&shared.key_grant_key(), &nonce, &header, &padded);
    Ok([header, sealed].concat())
}

/// Opens a key message with the recipient's KEM secret key and checks the device's signature
/// (`device_identity`: the identity key current in the reader's verified chain). The caller
/// still checks that `device`, `stream` and `recipient` are what it expects.
pub fn open_key_grant(
    msg: &[u8],
    kem: &KemSecretKey,
    device_identity: &PublicKey,
) -> Result<KeyGrant> {
    check_len("key message", msg.len(), KEY_MESSAGE_LEN)?;
    let mut r = Reader::new("key message", msg);
    let version = r.u8()?;
    if version != STREAM_VERSION {
        return Err(Error::UnsupportedVersion {
            what: "key message",
            found: version,
            supported: STREAM_VERSION,
        });
    }
    let kind = r.u8()?;
    if kind != KIND_KEY_MESSAGE {
        return Err(Error::UnknownTag {
            what: "key message kind",
            tag: kind,
        });
    }
    let kem_ct: KemCiphertext = r.nested()?;
    let nonce: [u8; AEAD_NONCE_LEN] = r.array()?;
    let ciphertext = r.take(r.remaining())?;
    if ciphertext.len() != GRANT_BLOCK + AEAD_TAG_LEN {
        return Err(Error::Truncated {
            what: "key message",
            needed: (GRANT_BLOCK + AEAD_TAG_LEN) - ciphertext.len(),
        });
    }
    let shared = kem.decapsulate(&kem_ct)?;
    let padded = kem::aead_open(
        &shared.key_grant_key(),
        &nonce,
        &msg[..KEY_MESSAGE_HEADER_LEN],
        ciphertext,
    )?;
    let signed = pad::unpad(&padded)?;
    KeyGrant::from_signed_bytes(signed, device_identity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn full() -> Reading {
        let phase = Phase {
            voltage_mv: Some(u32::MAX),
            current_ma: Some(u32::MAX),
            power_delivered_w: Some(u32::MAX),
            power_returned_w: Some(u32::MAX),
        };
        Reading {
            meter_time_ms: Some(MAX_TIME_MS),
            tariff: Some(2),
            energy_delivered_wh: vec![u64::MAX; 4],
            energy_returned_wh: vec![u64::MAX; 4],
            power_delivered_w: Some(1),
            power_returned_w: Some(2),
            phases: vec![phase; 3],
            gas_l: Some(3),
            gas_time_ms: Some(4),
        }
    }

    #[test]
    fn stream_names_and_topics() {
        for ok in ["p1", "a", "water_meter-2", &"x".repeat(32)] {
            assert!(validate_stream_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "P1", "p 1", "p/1", "p+1", "é", &"x".repeat(33)] {
            assert!(validate_stream_name(bad).is_err(), "{bad:?}");
        }
        let device = DeviceId([0xab; 32]);
        let hex = "ab".repeat(32);
        assert_eq!(live_topic(&device, "p1"), format!("latchkey/{hex}/p1/live"));
        assert_eq!(
            avg1m_topic(&device, "p1"),
            format!("latchkey/{hex}/p1/avg1m")
        );
        assert_eq!(
            key_topic(&device, "p1", &[0x01; 32]),
            format!("latchkey/{hex}/p1/keys/{}", "01".repeat(32))
        );
    }

    #[test]
    fn a_stream_key_never_prints() {
        let key = StreamKey::from_bytes([0x77; 32]);
        assert_eq!(format!("{key:?}"), "StreamKey(<redacted>)");
        let entry = KeyEntry {
            key_id: 1,
            from_seq: 0,
            key,
        };
        assert!(!format!("{entry:?}").contains("119"));
    }

    #[test]
    fn a_key_grant_for_another_stream_key_id_order_is_refused_when_signing() {
        let identity = SigningKey::from_bytes(&[1; 32]);
        let entry = |id| KeyEntry {
            key_id: id,
            from_seq: 0,
            key: StreamKey::from_bytes([0; 32]),
        };
        let grant = |keys| KeyGrant {
            device: DeviceId([1; 32]),
            stream: "p1".into(),
            recipient: [2; 32],
            consent: None,
            issued_ms: 0,
            keys,
        };
        assert!(grant(vec![]).to_signed_bytes(&identity).is_err());
        assert!(grant(vec![entry(0)]).to_signed_bytes(&identity).is_err());
        assert!(grant(vec![entry(2), entry(1)])
            .to_signed_bytes(&identity)
            .is_err());
        assert!(grant((1..=65).map(entry).collect())
            .to_signed_bytes(&identity)
            .is_err());
        let max = grant((1..=64).map(entry).collect());
        let max = KeyGrant {
            stream: "x".repeat(32),
            consent: Some(ConsentId([0; 32])),
            ..max
        };
        assert_eq!(max.to_signed_bytes(&identity).unwrap().len(), MAX_KEY_GRANT);
    }

    #[test]
    fn the_largest_reading_fits_its_cap() {
        let bytes = full().to_bytes();
        assert_eq!(bytes.len(), 167);
        assert_eq!(Reading::from_bytes(&bytes).unwrap(), full());
        assert_eq!(Reading::default().to_bytes().len(), 10);
    }

    #[test]
    fn readings_over_the_caps_are_refused() {
        let mut r = full();
        r.phases.push(Phase::default());
        assert!(r.validate().is_err());
        let mut r = full();
        r.tariff = Some(0);
        assert!(Reading::from_bytes(&r.to_bytes()).is_err());
        let mut r = full();
        r.energy_returned_wh.push(0);
        assert!(matches!(
            Reading::from_bytes(&r.to_bytes()),
            Err(Error::TooLarge { .. })
        ));
    }

    #[test]
    fn every_frame_of_a_stream_has_one_length_and_opens_with_its_key_only() {
        let mut rng = ChaCha20Rng::seed_from_u64(21);
        let key = StreamKey::generate(&mut rng);
        let device = DeviceId([7; 32]);
        let small = seal_reading(&device, "p1", 1, &key, 1, &Reading::default(), &mut rng).unwrap();
        let big = seal_reading(&device, "p1", 1, &key, 2, &full(), &mut rng).unwrap();
        assert_eq!(small.len(), 347);
        assert_eq!(big.len(), sealed_reading_len("p1"));
        let (h, r) = open_reading(&big, &key).unwrap();
        assert_eq!(r, full());
        assert_eq!(h.seq, 2);
        assert_eq!(peek_reading(&big).unwrap(), h);
        let other = StreamKey::generate(&mut rng);
        assert_eq!(
            open_reading(&big, &other).unwrap_err(),
            Error::DecryptFailed
        );
        let mut bad = big.clone();
        bad[40] ^= 1; // key id / seq area: authenticated
        assert!(open_reading(&bad, &key).is_err());
        assert!(peek_reading(&big[..big.len() - 1]).is_err());
    }

    #[test]
    fn a_key_message_opens_for_its_recipient_and_hides_its_keys() {
        let mut rng = ChaCha20Rng::seed_from_u64(22);
        let identity = SigningKey::generate(&mut rng);
        let provider = KemSecretKey::generate(&mut rng);
        let grant = KeyGrant {
            device: DeviceId([1; 32]),
            stream: "p1".into(),
            recipient: [2; 32],
            consent: Some(ConsentId([3; 32])),
            issued_ms: 5,
            keys: vec![KeyEntry {
                key_id: 1,
                from_seq: 0,
                key: StreamKey::from_bytes([9; 32]),
            }],
        };
        let msg = seal_key_grant(&grant, &identity, provider.public(), &mut rng).unwrap();
        assert_eq!(msg.len(), KEY_MESSAGE_LEN);
        assert_eq!(
            open_key_grant(&msg, &provider, &identity.public_key()).unwrap(),
            grant
        );
        let stranger = SigningKey::generate(&mut rng).public_key();
        assert!(matches!(
            open_key_grant(&msg, &provider, &stranger),
            Err(Error::BadSignature { .. })
        ));
        assert!(!format!("{grant:?}").contains("9, 9"));
    }
}
