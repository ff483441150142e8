//! A device's publishing side built from latchkey-proto's seal functions (what latchkeyd
//! does), for tests of the provider's reader without a device agent.

#![allow(dead_code)]

use latchkey_proto::consent::ConsentId;
use latchkey_proto::kem::{KemPublicKey, KemSecretKey};
use latchkey_proto::keys::{DeviceId, SigningKey};
use latchkey_proto::stream::{
    seal_key_grant, seal_reading, KeyEntry, KeyGrant, Reading, StreamKey,
};
use latchkey_testkit::{rng, ChaCha20Rng, TestDevice};

pub struct FakeDevice {
    pub device: TestDevice,
    pub id: DeviceId,
    pub keys: Vec<KeyEntry>,
    pub rng: ChaCha20Rng,
    /// The consent its key messages name.
    pub consent: Option<ConsentId>,
}

impl FakeDevice {
    pub fn new(seed: u64) -> FakeDevice {
        let device = TestDevice::new(seed, "Meter");
        let id = device.chain.device();
        let mut rng = rng(seed + 1000);
        let keys = vec![KeyEntry {
            key_id: 1,
            from_seq: 1,
            key: StreamKey::generate(&mut rng),
        }];
        FakeDevice {
            device,
            id,
            keys,
            rng,
            consent: Some(ConsentId([7; 32])),
        }
    }

    pub fn identity(&self) -> &SigningKey {
        &self.device.keys.identity
    }

    /// A rotation: a new current key from `from_seq`.
    pub fn rotate(&mut self, from_seq: u64) -> u32 {
        let key_id = self.keys.last().unwrap().key_id + 1;
        self.keys.push(KeyEntry {
            key_id,
            from_seq,
            key: StreamKey::generate(&mut self.rng),
        });
        key_id
    }

    pub fn frame(&mut self, seq: u64) -> Vec<u8> {
        let k = self
            .keys
            .iter()
            .rev()
            .find(|k| k.from_seq <= seq)
            .unwrap()
            .clone();
        seal_reading(
            &self.id,
            "p1",
            k.key_id,
            &k.key,
            seq,
            &reading(seq),
            &mut self.rng,
        )
        .unwrap()
    }

    /// A key message with the keys `ids`, signed by `signer`, sealed to `to`.
    pub fn key_message_by(
        &mut self,
        signer: &SigningKey,
        to: &KemPublicKey,
        recipient: [u8; 32],
        ids: &[u32],
    ) -> Vec<u8> {
        let grant = KeyGrant {
            device: self.id,
            stream: "p1".into(),
            recipient,
            consent: self.consent,
            issued_ms: 0,
            keys: self
                .keys
                .iter()
                .filter(|k| ids.contains(&k.key_id))
                .cloned()
                .collect(),
        };
        seal_key_grant(&grant, signer, to, &mut self.rng).unwrap()
    }

    pub fn key_message(&mut self, to: &KemSecretKey, recipient: [u8; 32], ids: &[u32]) -> Vec<u8> {
        let signer = SigningKey::from_bytes(&self.device.keys.identity.to_bytes());
        self.key_message_by(&signer, to.public(), recipient, ids)
    }
}

/// A reading whose numbers follow from `seq`, so a test can tell which one it got.
pub fn reading(seq: u64) -> Reading {
    Reading {
        meter_time_ms: Some(1_800_000_000_000 + seq * 1000),
        tariff: Some(2),
        energy_delivered_wh: vec![1_000_000 + seq, 2_000_000],
        energy_returned_wh: vec![0, 5],
        power_delivered_w: Some(1000 + seq as u32),
        power_returned_w: Some(0),
        phases: Vec::new(),
        gas_l: None,
        gas_time_ms: None,
    }
}
