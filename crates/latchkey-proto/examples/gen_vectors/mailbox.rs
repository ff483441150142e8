//! mailbox.json: the mailbox ids parties post to on the registry nodes (PROTOCOL.md §11).

use crate::*;
use latchkey_proto::hash;

pub fn vectors(w: &World) -> Vectors {
    let mut v = Vectors::new();
    for (name, who, key) in [
        ("owner_mailbox_a", "owner A", &w.a),
        ("owner_mailbox_b", "owner B", &w.b),
        ("owner_mailbox_c", "owner C", &w.c),
    ] {
        let pk = key.public_key();
        v.ok(
            name,
            "owner_mailbox",
            &format!(
                "{who}'s mailbox id: H(\"latchkey/v1/owner-mailbox\", owner public key), 32 bytes, \
                 written as 64 lowercase hex characters in node URLs."
            ),
            json!({
                "owner_public_key": pk_hex(&pk),
                "mailbox_id": h(hash::owner_mailbox(&pk)),
            }),
        );
    }
    for (name, which, id) in [
        ("device_mailbox_front_door", "the front door", w.front_id()),
        ("device_mailbox_back_door", "the back door", w.back_id()),
    ] {
        v.ok(
            name,
            "device_mailbox",
            &format!(
                "{which}'s mailbox id: the device id's 32 bytes themselves (no hash), so anyone \
                 holding the device id can post a sealed command to it."
            ),
            json!({ "device_id": h(id.0), "mailbox_id": h(hash::device_mailbox(&id)) }),
        );
    }
    v
}
