//! The reader's logic without I/O: key messages and sealed frames in, readings and plain
//! notices out. [`crate::read`] feeds it from MQTT; tests feed it directly.
//!
//! A frame under a key id this provider holds is opened and passed on, in sequence order. A
//! frame under a key id it does not hold is kept for a short grace (the key message for a
//! fresh rotation may arrive just after the first frames under it); if no key arrives by then,
//! or the device has cleared this provider's key topic, the reader reports a cut-off once:
//! readings from that seq on cannot be read.

use std::collections::BTreeMap;

use latchkey_proto::kem::KemSecretKey;
use latchkey_proto::keys::{DeviceId, PublicKey};
use latchkey_proto::stream::{open_key_grant, open_reading, peek_reading, Reading, StreamKey};
use zeroize::Zeroizing;

use crate::keystore::HeldKey;

/// Frames kept while waiting for a key: ~10 minutes of a 1 Hz meter; older ones are dropped.
const MAX_PENDING: usize = 600;

/// What the reader tells its driver.
#[derive(Debug)]
pub enum Output {
    /// A reading, opened and in order.
    Reading {
        seq: u64,
        key_id: u32,
        reading: Reading,
    },
    /// A verified key message brought keys not held before: persist them before going on.
    NewKeys {
        keys: Vec<HeldKey>,
        consent: Option<String>,
    },
    /// The device cleared this provider's key topic (it does so for a revoked provider).
    KeyCleared,
    /// Readings from `from_seq` on are sealed under a key this provider was not given.
    CutOff {
        from_seq: u64,
        key_id: u32,
        /// Whether the device had cleared this provider's key topic.
        cleared: bool,
        /// Whether this provider ever held a key for the stream.
        ever_held: bool,
    },
    /// A key arrived for a stream that had been cut off: readable again from `from_seq`.
    Resumed { key_id: u32, from_seq: u64 },
    /// Something arrived that was refused (not from this device, not for this provider, does
    /// not open); said once per kind of problem, never fatal.
    Refused(String),
}

/// One device stream, read with the keys held for it.
#[derive(Debug)]
pub struct StreamReader {
    device: DeviceId,
    stream: String,
    recipient: [u8; 32],
    identity: PublicKey,
    keys: Vec<HeldKey>,
    grace_ms: u64,
    /// Frames under keys not held, by seq: (key id, frame, arrival ms).
    pending: BTreeMap<u64, (u32, Vec<u8>, u64)>,
    last_seq: Option<u64>,
    cleared: bool,
    /// The key id of the cut-off reported last, until a key for it (or a later one) arrives.
    cut: Option<u32>,
    unreadable: u64,
}

impl StreamReader {
    /// `identity` is the device identity key from its verified chain: key messages must be
    /// signed by it. `recipient` is this provider's signing key bytes.
    pub fn new(
        device: DeviceId,
        stream: &str,
        recipient: [u8; 32],
        identity: PublicKey,
        keys: Vec<HeldKey>,
        grace_ms: u64,
    ) -> Self {
        StreamReader {
            device,
            stream: stream.to_owned(),
            recipient,
            identity,
            keys,
            grace_ms,
            pending: BTreeMap::new(),
            last_seq: None,
            cleared: false,
            cut: None,
            unreadable: 0,
        }
    }

    pub fn current_key_id(&self) -> Option<u32> {
        self.keys.last().map(|k| k.key_id)
    }

    pub fn last_seq(&self) -> Option<u64> {
        self.last_seq
    }

    /// Frames seen that could not be read (after a cut-off).
    pub fn unreadable(&self) -> u64 {
        self.unreadable
    }

    /// A retained message on `…/keys/<me>`; empty = cleared.
    pub fn key_message(&mut self, msg: &[u8], kem: &KemSecretKey) -> Vec<Output> {
        if msg.is_empty() {
            self.cleared = true;
            return vec![Output::KeyCleared];
        }
        let grant = match open_key_grant(msg, kem, &self.identity) {
            Ok(g) => g,
            Err(e) => {
                return vec![Output::Refused(format!(
                    "refused a key message on this provider's topic: {e} (it is not signed by \
                     the device's identity key from its verified chain, or not sealed to this \
                     provider); no key taken from it"
                ))]
            }
        };
        if grant.device != self.device
            || grant.stream != self.stream
            || grant.recipient != self.recipient
        {
            return vec![Output::Refused(
                "refused a key message meant for another device, stream or provider".into(),
            )];
        }
        self.cleared = false;
        let mut new = Vec::new();
        for e in grant.keys {
            if self.keys.iter().any(|k| k.key_id == e.key_id) {
                continue;
            }
            let mut key = Zeroizing::new([0u8; 32]);
            key.copy_from_slice(e.key.as_bytes());
            new.push(HeldKey {
                key_id: e.key_id,
                from_seq: e.from_seq,
                key,
            });
        }
        let mut out = Vec::new();
        if new.is_empty() {
            return out;
        }
        self.keys.extend(new.iter().cloned());
        self.keys.sort_by_key(|k| k.key_id);
        out.push(Output::NewKeys {
            keys: new,
            consent: grant.consent.map(|c| c.to_string()),
        });
        if let Some(cut) = self.cut {
            if let Some(k) = self.keys.iter().find(|k| k.key_id >= cut) {
                out.push(Output::Resumed {
                    key_id: k.key_id,
                    from_seq: k.from_seq,
                });
                self.cut = None;
            }
        }
        out.extend(self.flush());
        out
    }

    /// A message on `…/live`.
    pub fn frame(&mut self, frame: &[u8], now_ms: u64) -> Vec<Output> {
        let header = match peek_reading(frame) {
            Ok(h) => h,
            Err(e) => return vec![Output::Refused(format!("dropped a malformed frame: {e}"))],
        };
        if header.device != self.device || header.stream != self.stream {
            return vec![Output::Refused(
                "dropped a frame for another device or stream".into(),
            )];
        }
        if self.last_seq.is_some_and(|l| header.seq <= l) {
            // An MQTT redelivery or a replay: each reading once.
            return Vec::new();
        }
        if self.keys.iter().any(|k| k.key_id == header.key_id) {
            self.pending
                .insert(header.seq, (header.key_id, frame.to_vec(), now_ms));
            return self.flush();
        }
        if self.cut.is_some() {
            self.unreadable += 1;
            return Vec::new();
        }
        self.pending
            .insert(header.seq, (header.key_id, frame.to_vec(), now_ms));
        while self.pending.len() > MAX_PENDING {
            self.pending.pop_first();
        }
        if self.cleared {
            return self.cut_off();
        }
        self.flush()
    }

    /// Time passing: reports a cut-off once the oldest waiting frame has waited the grace.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Output> {
        let mut out = self.flush();
        if out.is_empty() {
            let expired = self
                .pending
                .values()
                .next()
                .is_some_and(|(_, _, at)| now_ms.saturating_sub(*at) >= self.grace_ms);
            if expired {
                out = self.cut_off();
            }
        }
        out
    }

    /// Opens waiting frames in seq order as far as keys allow; stops at the first frame whose
    /// key is not held, so readings are never printed out of order.
    fn flush(&mut self) -> Vec<Output> {
        let mut out = Vec::new();
        while let Some((&seq, (key_id, _, _))) = self.pending.first_key_value() {
            let Some(held) = self.keys.iter().find(|k| k.key_id == *key_id) else {
                break;
            };
            let key = StreamKey::from_bytes(*held.key);
            let (_, (key_id, frame, _)) = self.pending.pop_first().expect("just peeked");
            match open_reading(&frame, &key) {
                Ok((header, reading)) => {
                    self.last_seq = Some(header.seq);
                    out.push(Output::Reading {
                        seq,
                        key_id,
                        reading,
                    });
                }
                Err(e) => out.push(Output::Refused(format!(
                    "a frame (seq {seq}) did not open under key id {key_id}: {e}; it was altered \
                     in transit or not sealed by this device"
                ))),
            }
        }
        out
    }

    fn cut_off(&mut self) -> Vec<Output> {
        let Some((&from_seq, &(key_id, _, _))) = self.pending.first_key_value() else {
            return Vec::new();
        };
        let keys = &self.keys;
        let before = self.pending.len();
        self.pending
            .retain(|_, (id, _, _)| keys.iter().any(|k| k.key_id == *id));
        self.unreadable += (before - self.pending.len()) as u64;
        self.cut = Some(key_id);
        let mut out = vec![Output::CutOff {
            from_seq,
            key_id,
            cleared: self.cleared,
            ever_held: !self.keys.is_empty(),
        }];
        out.extend(self.flush());
        out
    }
}
