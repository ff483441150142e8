//! freshness.json: the replay window, the strike register and challenges (PROTOCOL.md §6):
//! inputs, and accept or the name of the refusal.

use crate::*;
use latchkey_proto::replay::{
    ChallengeBook, MemoryNonceStore, NonceStore, ReplayWindow, CHALLENGES_PER_SENDER,
    CHALLENGE_LIFETIME_MS,
};

/// Device time of the scenarios: T0 + 10 h.
const NOW: u64 = T0 + 10 * HOUR;
const SECOND: u64 = 1000;

fn window_json(w: &ReplayWindow) -> Value {
    json!({ "max_age_ms": w.max_age_ms, "max_lead_ms": w.max_lead_ms })
}

fn decision(result: Result<(), Error>) -> String {
    match result {
        Ok(()) => "accept".to_owned(),
        Err(e) => variant(&e),
    }
}

/// One window decision: `check_time` plus the floor and whether the clock is behind its mark.
fn window_case(
    v: &mut Vectors,
    name: &str,
    description: &str,
    (now, mark, ts): (u64, u64, u64),
    expect: &str,
) {
    let w = ReplayWindow::default();
    let fields = json!({
        "window": window_json(&w),
        "now_ms": now,
        "mark_ms": mark,
        "timestamp_ms": ts,
        "floor_ms": w.floor(now, mark),
        "clock_behind": w.clock_behind(now, mark),
    });
    let result = w.check_time(now, mark, ts);
    if expect == "accept" {
        result.expect("an accepted timestamp");
        v.ok(name, "freshness_window", description, fields);
    } else {
        v.fail(
            name,
            "freshness_window",
            description,
            result,
            expect,
            fields,
        );
    }
}

/// A step of a strike-register scenario, run against `store` as the test will run it.
enum Step {
    /// A command inside or outside the window.
    Command {
        now: u64,
        mark: u64,
        ts: u64,
        nonce: u8,
    },
    /// Forget every record below the floor of (now, mark).
    Forget { now: u64, mark: u64 },
}

fn register_case(v: &mut Vectors, name: &str, description: &str, steps: &[(Step, &str)]) {
    let w = ReplayWindow::default();
    let mut store = MemoryNonceStore::default();
    let mut out = Vec::new();
    for (step, expect) in steps {
        match *step {
            Step::Command {
                now,
                mark,
                ts,
                nonce,
            } => {
                let n = [nonce; 16];
                let got = decision(w.check(now, mark, ts, &n, &mut store));
                assert_eq!(&got, expect, "{name}: command {nonce} at {ts}");
                out.push(json!({
                    "step": "command",
                    "now_ms": now,
                    "mark_ms": mark,
                    "timestamp_ms": ts,
                    "nonce": h(n),
                    "expect": expect,
                    "remembered": store.len(),
                }));
            }
            Step::Forget { now, mark } => {
                let floor = w.floor(now, mark);
                store.forget_before(floor).unwrap();
                assert_eq!(store.len().to_string(), *expect, "{name}: forget");
                out.push(json!({
                    "step": "forget",
                    "now_ms": now,
                    "mark_ms": mark,
                    "floor_ms": floor,
                    "remembered": store.len(),
                }));
            }
        }
    }
    v.ok(
        name,
        "strike_register",
        description,
        json!({ "window": window_json(&w), "steps": out }),
    );
}

/// A step of a challenge scenario.
enum Ch<'a> {
    Issue {
        sender: &'a PublicKey,
        now: u64,
        label: &'a str,
    },
    Redeem {
        sender: &'a PublicKey,
        label: &'a str,
        now: u64,
    },
}

fn challenge_case(v: &mut Vectors, name: &str, description: &str, steps: &[(Ch<'_>, &str)]) {
    let mut book = ChallengeBook::default();
    let mut issued: Vec<(String, [u8; 16])> = Vec::new();
    let mut r = rng(900);
    let mut out = Vec::new();
    for (step, expect) in steps {
        match *step {
            Ch::Issue { sender, now, label } => {
                let c = book.issue(sender, now, &mut r);
                issued.push((label.to_owned(), c));
                out.push(json!({
                    "step": "issue",
                    "sender": pk_hex(sender),
                    "now_ms": now,
                    "label": label,
                    "challenge": h(c),
                    "outstanding": book.len(),
                }));
            }
            Ch::Redeem { sender, label, now } => {
                // A label never issued stands for 16 bytes the device never handed out.
                let c = issued
                    .iter()
                    .find(|(l, _)| l == label)
                    .map(|(_, c)| *c)
                    .unwrap_or([0xee; 16]);
                let got = decision(book.redeem(sender, &c, now));
                assert_eq!(&got, expect, "{name}: redeem {label}");
                out.push(json!({
                    "step": "redeem",
                    "sender": pk_hex(sender),
                    "now_ms": now,
                    "label": label,
                    "challenge": h(c),
                    "expect": expect,
                    "outstanding": book.len(),
                }));
            }
        }
    }
    v.ok(
        name,
        "challenge_book",
        description,
        json!({
            "capacity": 64,
            "per_sender": CHALLENGES_PER_SENDER,
            "lifetime_ms": CHALLENGE_LIFETIME_MS,
            "steps": out,
        }),
    );
}

pub fn vectors(w: &World) -> Vectors {
    let mut v = Vectors::new();

    // --- the window ---
    window_case(
        &mut v,
        "window_now",
        "A timestamp equal to the device's clock, no mark yet (0).",
        (NOW, 0, NOW),
        "accept",
    );
    window_case(
        &mut v,
        "window_oldest_accepted",
        "Exactly 60 s old: the lower bound is inclusive.",
        (NOW, 0, NOW - 60 * SECOND),
        "accept",
    );
    window_case(
        &mut v,
        "fail_window_one_ms_too_old",
        "60 s and 1 ms old: TooOld.",
        (NOW, 0, NOW - 60 * SECOND - 1),
        "TooOld",
    );
    window_case(
        &mut v,
        "window_newest_accepted",
        "30 s ahead of the device's clock: the upper bound is inclusive.",
        (NOW, 0, NOW + 30 * SECOND),
        "accept",
    );
    window_case(
        &mut v,
        "fail_window_one_ms_too_new",
        "30 s and 1 ms ahead: TooNew.",
        (NOW, 0, NOW + 30 * SECOND + 1),
        "TooNew",
    );
    window_case(
        &mut v,
        "window_mark_ahead_of_the_clock",
        "The clock was set back 10 s (mark = now + 10 s): the floor is mark − 60 s, and a \
         timestamp 40 s before now is still above it.",
        (NOW, NOW + 10 * SECOND, NOW - 40 * SECOND),
        "accept",
    );
    window_case(
        &mut v,
        "fail_window_under_the_mark",
        "The clock was set back 10 s (mark = now + 10 s): a timestamp 55 s before now would pass \
         a window judged at now alone, but is under the floor max(now, mark) − 60 s: TooOld.",
        (NOW, NOW + 10 * SECOND, NOW - 55 * SECOND),
        "TooOld",
    );
    window_case(
        &mut v,
        "fail_window_upper_bound_ignores_the_mark",
        "mark = now + 20 s: a timestamp 35 s ahead of now is refused (TooNew) although it is \
         within 30 s of the mark; the upper bound is now + 30 s, so accepted timestamps cannot \
         ratchet the mark forward.",
        (NOW, NOW + 20 * SECOND, NOW + 35 * SECOND),
        "TooNew",
    );
    window_case(
        &mut v,
        "window_clock_behind_its_mark",
        "The clock reads more than 60 s behind the mark (now + 60 s + 1 ms < mark): \
         clock_behind is true, so a device treats itself as clockless (challenges for owners, \
         guests refused); the window itself is unchanged.",
        (NOW, NOW + 60 * SECOND + 1, NOW + 10 * SECOND),
        "accept",
    );
    window_case(
        &mut v,
        "window_clock_exactly_60_s_behind",
        "now + 60 s = mark: not behind (the test is strict).",
        (NOW, NOW + 60 * SECOND, NOW + 10 * SECOND),
        "accept",
    );
    window_case(
        &mut v,
        "window_clock_at_zero",
        "A device clock at 0 (never set) with no mark: the floor saturates at 0, nothing \
         underflows.",
        (0, 0, 0),
        "accept",
    );

    // --- the strike register ---
    use Step::*;
    register_case(
        &mut v,
        "strike_register_replay_inside_the_window",
        "A nonce is accepted once: its copy 1 s later is Replayed, another nonce with the same \
         timestamp is accepted, and after forgetting below the floor (which is under the first \
         timestamp) the copy is still Replayed.",
        &[
            (
                Command {
                    now: NOW,
                    mark: NOW,
                    ts: NOW,
                    nonce: 1,
                },
                "accept",
            ),
            (
                Command {
                    now: NOW + SECOND,
                    mark: NOW,
                    ts: NOW,
                    nonce: 1,
                },
                "Replayed",
            ),
            (
                Command {
                    now: NOW + SECOND,
                    mark: NOW,
                    ts: NOW,
                    nonce: 2,
                },
                "accept",
            ),
            (
                Forget {
                    now: NOW + 30 * SECOND,
                    mark: NOW,
                },
                "2",
            ),
            (
                Command {
                    now: NOW + 30 * SECOND,
                    mark: NOW,
                    ts: NOW,
                    nonce: 1,
                },
                "Replayed",
            ),
        ],
    );
    register_case(
        &mut v,
        "strike_register_rollback_by_less_than_the_window",
        "PROTOCOL.md §6's example: a command captured at t is accepted (mark t); at t + 61 s \
         (mark t + 61 s from a trusted reading) its nonce is forgotten (floor t + 1 s); the \
         clock is then set back to t + 10 s. The replay is refused TooOld because the floor \
         uses the mark, not the clock (with the clock alone it would be 50 s old and its nonce \
         forgotten: it would run again).",
        &[
            (
                Command {
                    now: NOW,
                    mark: NOW,
                    ts: NOW,
                    nonce: 3,
                },
                "accept",
            ),
            (
                Forget {
                    now: NOW + 61 * SECOND,
                    mark: NOW + 61 * SECOND,
                },
                "0",
            ),
            (
                Command {
                    now: NOW + 10 * SECOND,
                    mark: NOW + 61 * SECOND,
                    ts: NOW,
                    nonce: 3,
                },
                "TooOld",
            ),
        ],
    );
    register_case(
        &mut v,
        "strike_register_refusals_leave_no_trace",
        "Out-of-window commands never touch the register: a nonce first sent with a timestamp \
         too far ahead (TooNew) and then too old (TooOld) is accepted when it arrives in the \
         window.",
        &[
            (
                Command {
                    now: NOW,
                    mark: NOW,
                    ts: NOW + 31 * SECOND,
                    nonce: 4,
                },
                "TooNew",
            ),
            (
                Command {
                    now: NOW,
                    mark: NOW,
                    ts: NOW - 61 * SECOND,
                    nonce: 4,
                },
                "TooOld",
            ),
            (
                Command {
                    now: NOW,
                    mark: NOW,
                    ts: NOW - 5 * SECOND,
                    nonce: 4,
                },
                "accept",
            ),
        ],
    );
    register_case(
        &mut v,
        "strike_register_forgets_below_the_floor_only",
        "Nonces with timestamps t and t + 30 s; forgetting at now = t + 75 s (floor t + 15 s) \
         drops the first and keeps the second. Replays: the second is Replayed (remembered), \
         the first TooOld (the window refuses what the register forgot).",
        &[
            (
                Command {
                    now: NOW,
                    mark: NOW,
                    ts: NOW,
                    nonce: 5,
                },
                "accept",
            ),
            (
                Command {
                    now: NOW + 30 * SECOND,
                    mark: NOW,
                    ts: NOW + 30 * SECOND,
                    nonce: 6,
                },
                "accept",
            ),
            (
                Forget {
                    now: NOW + 75 * SECOND,
                    mark: NOW + 30 * SECOND,
                },
                "1",
            ),
            (
                Command {
                    now: NOW + 75 * SECOND,
                    mark: NOW + 30 * SECOND,
                    ts: NOW + 30 * SECOND,
                    nonce: 6,
                },
                "Replayed",
            ),
            (
                Command {
                    now: NOW + 75 * SECOND,
                    mark: NOW + 30 * SECOND,
                    ts: NOW,
                    nonce: 5,
                },
                "TooOld",
            ),
        ],
    );

    // --- challenges ---
    let a = w.a.public_key();
    let b = w.b.public_key();
    use Ch::{Issue, Redeem};
    challenge_case(
        &mut v,
        "challenge_once_by_its_sender",
        "A challenge issued to owner A: owner B cannot redeem it (BadChallenge, and it stays \
         outstanding), A can once, a second use is BadChallenge, and 16 bytes never issued are \
         BadChallenge.",
        &[
            (
                Issue {
                    sender: &a,
                    now: 1_000,
                    label: "c1",
                },
                "",
            ),
            (
                Redeem {
                    sender: &b,
                    label: "c1",
                    now: 2_000,
                },
                "BadChallenge",
            ),
            (
                Redeem {
                    sender: &a,
                    label: "c1",
                    now: 3_000,
                },
                "accept",
            ),
            (
                Redeem {
                    sender: &a,
                    label: "c1",
                    now: 4_000,
                },
                "BadChallenge",
            ),
            (
                Redeem {
                    sender: &a,
                    label: "never-issued",
                    now: 5_000,
                },
                "BadChallenge",
            ),
        ],
    );
    challenge_case(
        &mut v,
        "challenge_lifetime",
        "Challenges are judged on the device's monotonic clock: one redeemed exactly 120 s after \
         it was issued is accepted; one redeemed 120 s + 1 ms after is BadChallenge (and \
         dropped).",
        &[
            (
                Issue {
                    sender: &a,
                    now: 10_000,
                    label: "c1",
                },
                "",
            ),
            (
                Issue {
                    sender: &a,
                    now: 10_000,
                    label: "c2",
                },
                "",
            ),
            (
                Redeem {
                    sender: &a,
                    label: "c1",
                    now: 130_000,
                },
                "accept",
            ),
            (
                Redeem {
                    sender: &a,
                    label: "c2",
                    now: 130_001,
                },
                "BadChallenge",
            ),
        ],
    );
    let mut steps: Vec<(Ch<'_>, &str)> = ["c1", "c2", "c3", "c4", "c5"]
        .iter()
        .enumerate()
        .map(|(i, label)| {
            (
                Issue {
                    sender: &a,
                    now: 1_000 + i as u64,
                    label,
                },
                "",
            )
        })
        .collect();
    steps.push((
        Issue {
            sender: &b,
            now: 2_000,
            label: "b1",
        },
        "",
    ));
    for (label, expect) in [
        ("c1", "BadChallenge"),
        ("c2", "accept"),
        ("c5", "accept"),
        ("b1", "accept"),
    ] {
        steps.push((
            Redeem {
                sender: if label == "b1" { &b } else { &a },
                label,
                now: 3_000,
            },
            expect,
        ));
    }
    challenge_case(
        &mut v,
        "challenge_four_per_sender",
        "A asks five times: at most 4 are outstanding per sender, so A's fifth drops A's own \
         oldest (c1: BadChallenge) and nobody else's (B's b1 is still accepted).",
        &steps,
    );
    let others: Vec<PublicKey> = (0..64)
        .map(|i| SigningKey::generate(&mut rng(950 + i)).public_key())
        .collect();
    let mut steps: Vec<(Ch<'_>, &str)> = vec![(
        Issue {
            sender: &a,
            now: 1_000,
            label: "a1",
        },
        "",
    )];
    let labels: Vec<String> = (0..64).map(|i| format!("o{i}")).collect();
    for (i, key) in others.iter().enumerate() {
        steps.push((
            Issue {
                sender: key,
                now: 2_000 + i as u64,
                label: &labels[i],
            },
            "",
        ));
    }
    steps.push((
        Redeem {
            sender: &a,
            label: "a1",
            now: 3_000,
        },
        "BadChallenge",
    ));
    steps.push((
        Redeem {
            sender: &others[0],
            label: "o0",
            now: 3_000,
        },
        "accept",
    ));
    challenge_case(
        &mut v,
        "challenge_64_in_all",
        "A's challenge, then one each for 64 other senders: the book holds 64 in all, so the \
         oldest overall (A's) is dropped (BadChallenge); the others stay. (A device hands \
         challenges only to senders it would authorize, so strangers never fill it.)",
        &steps,
    );
    v
}
