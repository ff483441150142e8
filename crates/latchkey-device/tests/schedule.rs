//! Weekly schedules (grant extension 0x81) through the device's real pipeline, with the wall
//! clock injected: a guest opens inside its windows and is refused `OutsideSchedule` (reject
//! code 20, with when it opens) outside them, on both sides of both 2026 DST transitions in
//! Europe/Amsterdam; a cleaner delegated by a host is held to both schedules.

use std::collections::BTreeSet;
use std::sync::Arc;

use latchkey_device::audit::Via;
use latchkey_device::clock::{Clock, ManualClock};
use latchkey_device::pipeline::{Answer, Early, Pipeline, PipelineConfig};
use latchkey_device::store::Store;
use latchkey_device::view::View;
use latchkey_proto::command::{Command, RejectCode, ReplyTo};
use latchkey_proto::envelope::seal_command;
use latchkey_proto::grant::{Grant, GrantBody};
use latchkey_proto::keys::SigningKey;
use latchkey_proto::schedule::WeeklySchedule;
use latchkey_testkit::{person, rng, ChaCha20Rng, TestDevice};
use rand_core::RngCore;

const AMSTERDAM: &str = "Europe/Amsterdam";
const HOUR_MS: u64 = 3_600_000;

/// Unix milliseconds of a UTC date and time (days from the civil calendar, Howard Hinnant's
/// algorithm), so instants here are spelled out rather than computed by the code under test.
fn utc(y: i64, m: i64, d: i64, hour: u64, minute: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe - 719_468) as u64;
    days * 86_400_000 + hour * HOUR_MS + minute * 60_000
}

struct Door {
    device: TestDevice,
    owner: SigningKey,
    clock: ManualClock,
    pipeline: Pipeline<ManualClock, ChaCha20Rng>,
    rng: ChaCha20Rng,
    _tmp: tempfile::TempDir,
}

fn door() -> Door {
    let tmp = tempfile::tempdir().unwrap();
    let owner = person(1);
    let mut device = TestDevice::new(70, "Holiday flat");
    device.claim(&[&owner], 1);
    // 1 March 2026: every instant below is later, so the wall clock only moves forward.
    let clock = ManualClock::at(utc(2026, 3, 1, 0, 0));
    let mut view = View::new(device.chain.clone());
    view.checks
        .record_quorum(&clock.boot_id(), clock.ticks_ms());
    let pipeline = Pipeline::new(
        latchkey_proto::device::DeviceKeys::from_secret_bytes(&device.keys.to_secret_bytes())
            .unwrap(),
        clock.clone(),
        rng(71),
        Arc::new(Store::open(&tmp.path().join("state.db")).unwrap()),
        view,
        PipelineConfig {
            actions: BTreeSet::from(["unlock".to_owned()]),
            ..PipelineConfig::default()
        },
    );
    Door {
        device,
        owner,
        clock,
        pipeline,
        rng: rng(72),
        _tmp: tmp,
    }
}

impl Door {
    /// A grant for all of 2026 from `issuer` to `subject`, keeping to `specs` in Amsterdam.
    fn grant(&self, issuer: &SigningKey, subject: &SigningKey, specs: &[&str], depth: u8) -> Grant {
        let base = self.device.grant(
            &self.owner,
            &subject.public_key(),
            &["unlock"],
            utc(2026, 1, 1, 0, 0),
            utc(2027, 1, 1, 0, 0),
            depth,
        );
        GrantBody {
            issuer: issuer.public_key(),
            extensions: vec![WeeklySchedule::parse_spec(specs, AMSTERDAM)
                .unwrap()
                .to_extension()],
            ..base.body
        }
        .sign(issuer)
        .unwrap()
    }

    /// Sets the device's wall clock to `at` (the view's age runs on ticks, so it stays fresh)
    /// and sends `unlock` as `guest` with `grants`, through every step of the pipeline.
    fn open_at(&mut self, at: u64, guest: &SigningKey, grants: &[Grant]) -> Answer {
        self.clock.set(at);
        let mut nonce = [0u8; 16];
        self.rng.fill_bytes(&mut nonce);
        let command = Command {
            device: self.device.keys.device_id(),
            sender: guest.public_key(),
            action: "unlock".into(),
            args: vec![],
            timestamp_ms: at,
            nonce,
            challenge: None,
            grants: grants.to_vec(),
            reply_to: ReplyTo::Direct,
        };
        let signed = command.sign(guest).unwrap();
        let (env, _) = seal_command(&signed, self.device.keys.kem.public(), &mut self.rng).unwrap();
        let fresh = match self.pipeline.open(&env, Via::Local) {
            Ok(f) => f,
            Err(Early::Answered(a)) => return a,
            Err(Early::Refused(r)) => panic!("refused before authorizing: {:?}", r.stage),
        };
        match self.pipeline.authorize(fresh) {
            Ok(auth) => self.pipeline.complete(auth, Ok(vec![])),
            Err(answer) => answer,
        }
    }
}

fn opens(answer: &Answer) -> bool {
    answer.accepted()
}

fn outside(answer: &Answer, opens_in: &str) -> bool {
    answer.code == RejectCode::OutsideSchedule as u16
        && answer.code == 20
        && answer.reason.contains(opens_in)
}

#[test]
fn a_weekday_morning_guest_across_both_dst_transitions() {
    let mut d = door();
    let guest = person(2);
    let grant = [d.grant(&d.owner, &guest, &["mon-fri 08:00-12:00"], 0)];
    // Wednesday 25 March 2026, CET (UTC+1): 10:00 local opens, 14:00 local is refused and
    // told it opens Thursday 08:00, 18 hours later.
    assert!(opens(&d.open_at(utc(2026, 3, 25, 9, 0), &guest, &grant)));
    let refused = d.open_at(utc(2026, 3, 25, 13, 0), &guest, &grant);
    assert!(outside(&refused, "opens in 18h 00min"), "{refused:?}");
    // Monday 30 March, the day after the spring jump, CEST (UTC+2). 06:30Z is 08:30 local
    // (07:30 if the device had kept winter time); 10:30Z is 12:30 local (11:30 in winter time).
    assert!(opens(&d.open_at(utc(2026, 3, 30, 6, 30), &guest, &grant)));
    let late = d.open_at(utc(2026, 3, 30, 10, 30), &guest, &grant);
    assert!(outside(&late, "opens in 19h 30min"), "{late:?}");
    // Monday 26 October, the day after the autumn fall-back, CET again. 06:30Z is 07:30 local
    // (08:30 in summer time); 10:30Z is 11:30 local (12:30 in summer time).
    let early = d.open_at(utc(2026, 10, 26, 6, 30), &guest, &grant);
    assert!(outside(&early, "opens in 30 min"), "{early:?}");
    assert!(opens(&d.open_at(utc(2026, 10, 26, 10, 30), &guest, &grant)));
}

#[test]
fn the_spring_gap_matches_nothing_and_the_autumn_hour_matches_twice() {
    let mut d = door();
    let guest = person(3);
    let grant = [d.grant(&d.owner, &guest, &["sun 02:00-03:00"], 0)];
    // 29 March 2026: 02:00 CET jumps to 03:00 CEST at 01:00Z; no instant shows 02:xx.
    for at in [
        utc(2026, 3, 29, 0, 59),
        utc(2026, 3, 29, 1, 0),
        utc(2026, 3, 29, 1, 30),
    ] {
        let answer = d.open_at(at, &guest, &grant);
        assert!(outside(&answer, "opens in 6d 2"), "{answer:?}");
    }
    // 25 October 2026: 03:00 CEST falls back to 02:00 CET at 01:00Z; 02:30 local happens at
    // 00:30Z and again at 01:30Z, and both open.
    assert!(opens(&d.open_at(utc(2026, 10, 25, 0, 30), &guest, &grant)));
    assert!(opens(&d.open_at(utc(2026, 10, 25, 1, 30), &guest, &grant)));
    let after = d.open_at(utc(2026, 10, 25, 2, 0), &guest, &grant);
    assert!(outside(&after, "opens in 6d 23h"), "{after:?}");
}

#[test]
fn a_cleaner_under_a_host_keeps_to_both_schedules() {
    let mut d = door();
    let (host, cleaner) = (person(4), person(5));
    let host_grant = d.grant(&d.owner, &host, &["mon-fri 08:00-12:00"], 1);
    let cleaner_grant = d.grant(&host, &cleaner, &["wed 09:00-12:00"], 0);
    let chain = [host_grant.clone(), cleaner_grant];
    // Wednesday 10 June 2026, CEST: 10:00 local opens, 14:00 does not; next Wednesday 09:00.
    assert!(opens(&d.open_at(utc(2026, 6, 10, 8, 0), &cleaner, &chain)));
    let afternoon = d.open_at(utc(2026, 6, 10, 12, 0), &cleaner, &chain);
    assert!(outside(&afternoon, "opens in 6d 19h"), "{afternoon:?}");
    // Thursday 10:00 suits the host's schedule, not the cleaner's.
    let thursday = d.open_at(utc(2026, 6, 11, 8, 0), &cleaner, &chain);
    assert!(outside(&thursday, "opens in 5d 23h"), "{thursday:?}");

    // The host hands a cleaner a grant claiming every hour of the week: the device still holds
    // it to the host's Mon-Fri mornings.
    let wide = d.grant(&host, &cleaner, &["mon-sun 00:00-24:00"], 0);
    let chain = [host_grant, wide];
    assert!(opens(&d.open_at(utc(2026, 6, 12, 8, 0), &cleaner, &chain)));
    let saturday = d.open_at(utc(2026, 6, 13, 8, 0), &cleaner, &chain);
    assert!(outside(&saturday, "opens in 1d 22h"), "{saturday:?}");
    let evening = d.open_at(utc(2026, 6, 15, 18, 0), &cleaner, &chain);
    assert!(outside(&evening, "opens in 12h 00min"), "{evening:?}");
}
