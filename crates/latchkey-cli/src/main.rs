//! `latchkey`: the owner's command line, a thin front over latchkey-owner.
//!
//! Exit status: 0 on success; 1 on an error (printed as `error: …` with what to do next);
//! 2 when a device answered but refused the command (`open`), or when the person answered no
//! (`consent approve`).

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use latchkey_owner::keychain::KeyringStore;
use latchkey_owner::store::DeviceRecord;
use latchkey_owner::{
    ClaimSource, ClaimStage, InviteRequest, IssuedGrant, IssuedInvitation, MyPart, OwnerChange,
    Profile, Proposal, ProposalReport, Redemption, RevokeReport, Route, StayChange, StayStatus,
    StaySyncReport, StayTimes, SystemClock,
};
use latchkey_proto::command::{Outcome, RejectCode};
use latchkey_proto::keys::PublicKey;
use latchkey_proto::schedule::WeeklySchedule;
use zeroize::Zeroizing;

mod consent;
mod when;

#[derive(Debug, Parser)]
#[command(
    name = "latchkey",
    version,
    about = "Own, open and share Latchkey devices without trusting a cloud"
)]
struct Cli {
    /// Profile directory (its store; the recovery phrase stays in the OS keychain).
    /// Default: ~/.local/share/latchkey.
    #[arg(long, global = true)]
    profile: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create a new recovery phrase in the OS keychain and show its 24 words once.
    Init,
    /// Bring an existing recovery phrase: reads the 24 words from standard input.
    Restore,
    /// Registry nodes this profile asks.
    Nodes {
        #[command(subcommand)]
        command: NodesCmd,
    },
    /// Take ownership of a device from the QR code it shows.
    Claim {
        /// A PNG or JPEG of the QR code (a screenshot or a photo).
        #[arg(long, conflicts_with = "text", required_unless_present = "text")]
        image: Option<PathBuf>,
        /// The code's text, LATCHKEY:C1:…
        #[arg(long)]
        text: Option<String>,
        /// A name for the device in this profile (default: the name it announces).
        #[arg(long)]
        name: Option<String>,
    },
    /// Devices this profile knows.
    Devices {
        #[arg(long)]
        json: bool,
    },
    /// Send an action to a device and print its signed answer (exit 0 only if it accepted).
    Open {
        /// Device id (lkdev1…), short id (XXXX-XXXX) or name.
        device: String,
        #[arg(long, default_value = "unlock")]
        action: String,
        /// Arguments to send with the action, as text (owners may send any; a guest only what
        /// its invitation pins, byte for byte).
        #[arg(long, conflicts_with = "args_hex")]
        args: Option<String>,
        /// Arguments as hex, for bytes text cannot hold (e.g. NUL between argv entries).
        #[arg(long)]
        args_hex: Option<String>,
    },
    /// This profile's owner key (what another owner adds with `latchkey owners add`).
    Key {
        #[arg(long)]
        json: bool,
    },
    /// Read a device's signed audit log (owners only), verified and kept in the profile.
    Audit {
        device: String,
        /// Show the page before this entry number.
        #[arg(long)]
        before: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// A device's owners and threshold; changes need m of n owners to sign.
    #[command(args_conflicts_with_subcommands = true)]
    Owners {
        #[command(subcommand)]
        command: Option<OwnersCmd>,
        /// Device to list the owners of.
        device: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Propose handing a device to a new set of owners (needs m of the current owners, and
    /// each new owner accepts it with `latchkey owners accept`).
    Transfer {
        device: String,
        /// The new owners' keys (lkpk1…); repeat for several.
        #[arg(long = "to", required = true, num_args = 1..)]
        to: Vec<String>,
        /// Signatures the new owners will need for changes (default 1).
        #[arg(long, default_value_t = 1)]
        threshold: u8,
    },
    /// Invite a guest: prints a short LATCHKEY://I/ link (its invitation sealed on the nodes),
    /// valid from --from until --until, bound to the first phone that redeems it.
    Invite {
        device: String,
        /// Another door the same grant covers (repeat for up to 7 more).
        #[arg(long = "door")]
        doors: Vec<String>,
        /// Who the invitation is for.
        #[arg(long)]
        name: String,
        /// now, +2h, 2026-12-24 15:00 (local) or RFC 3339 (default now; with --from-grant,
        /// the held invitation's start or now, whichever is later).
        #[arg(long)]
        from: Option<String>,
        /// When it ends (required, except with --from-grant: then the held invitation's end).
        #[arg(long)]
        until: Option<String>,
        /// Let the guest invite others with narrower invitations from this one (depth 1),
        /// e.g. a property manager who invites the cleaner.
        #[arg(long)]
        may_delegate: bool,
        /// Issue from an invitation this profile holds as a guest (its id or first 8+ hex
        /// characters, see `latchkey invitations`) instead of as an owner; doors, actions,
        /// time, uses and arguments may only narrow it (defaults: the held invitation's).
        #[arg(long)]
        from_grant: Option<String>,
        /// Action the guest may send; repeat for several (default unlock).
        #[arg(long = "action")]
        actions: Vec<String>,
        /// Total number of commands allowed.
        #[arg(long)]
        uses: Option<u32>,
        /// Let the guest send exactly these arguments (repeat for up to 8; byte-for-byte match).
        /// Without it the guest may send its actions only without arguments.
        #[arg(long = "args")]
        args: Vec<String>,
        /// Like --args, given as hex (e.g. 2d2d686f6c642d6f70656e0035 for "--hold-open\0" "5").
        #[arg(long = "args-hex")]
        args_hex: Vec<String>,
        /// Only in this weekly window, e.g. "mon-fri 08:00-12:00" or "sat,sun 10:00-24:00"
        /// (days mon..sun, ranges, comma lists); repeat for up to 16. The door checks it in --tz.
        #[arg(long = "weekly", value_name = "DAYS HH:MM-HH:MM")]
        weekly: Vec<String>,
        /// IANA time zone of the --weekly windows, e.g. Europe/Amsterdam (default: this
        /// system's zone, when it has an IANA name).
        #[arg(long, value_name = "ZONE", requires = "weekly")]
        tz: Option<String>,
        /// Also write the link as a QR code PNG here.
        #[arg(long)]
        qr: Option<PathBuf>,
        /// Print the old self-contained latchkey://invite/ link (500 characters and more; no
        /// node needed to fetch it) instead of a short one.
        #[arg(long)]
        long: bool,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a grant and issue a fresh link with the same terms in one step (for a link that
    /// reached the wrong phone: `latchkey grants` shows it redeemed by another phone).
    Reissue {
        /// Grant id or its first 8+ hex characters.
        grant: String,
        /// Also write the new link as a QR code PNG here.
        #[arg(long)]
        qr: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Accept an invitation link (as a guest), short LATCHKEY://I/… or long
    /// latchkey://invite/…; redeems it for this profile's own key. Then `latchkey open DEVICE`.
    Accept { link: String },
    /// Invitations this profile holds as a guest.
    Invitations {
        #[arg(long)]
        json: bool,
    },
    /// Grants this profile issued, with their status.
    Grants {
        device: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a grant (by id or its first 8+ hex characters); the device learns it from the nodes.
    Revoke { grant: String },
    /// Stays from a booking calendar: list them (with links and status), or `sync`.
    #[command(args_conflicts_with_subcommands = true)]
    Stays {
        #[command(subcommand)]
        command: Option<StaysCmd>,
        #[arg(long)]
        json: bool,
    },
    /// Who opened what, when: the events your devices post (first opens, redemptions, refused
    /// guests), newest last. Subscribes to your devices' events first if needed.
    Events {
        /// Only this device (name, short id or lkdev1…).
        device: Option<String>,
        /// Keep waiting and print events as they arrive (Ctrl-C stops).
        #[arg(long)]
        follow: bool,
        /// JSON: one object {"events": […]}; with --follow, one event object per line.
        #[arg(long)]
        json: bool,
    },
    /// The consents given for a device's data streams (who may read what, why, until when),
    /// verified from its consent log on the nodes. Records the end of consents whose time ran
    /// out, and tells the device what it has not been told yet.
    Consents {
        /// Device id (lkdev1…), short id (XXXX-XXXX) or name.
        device: String,
        /// JSON: {"device": "lkdev1…", "consents": […]}.
        #[arg(long)]
        json: bool,
    },
    /// Answer a provider's request to read a data stream, or withdraw a consent.
    Consent {
        #[command(subcommand)]
        command: ConsentCmd,
    },
    /// Your own meter, decrypted with your copy of the stream key: power now and today's
    /// energy, read from the home broker.
    Meter {
        /// Device id (lkdev1…), short id (XXXX-XXXX) or name.
        device: String,
        /// The home broker the device publishes to, mqtt://HOST:PORT.
        #[arg(long)]
        broker: String,
        #[arg(long, default_value = "p1")]
        stream: String,
        /// Keep printing a line per reading (Ctrl-C stops); without it, print the first one.
        #[arg(long)]
        follow: bool,
        /// One JSON snapshot object per line.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ConsentCmd {
    /// Approve a provider's request link (LATCHKEY://C/…, or the id of a pending request):
    /// shows who asks what, why and for how long, asks y/N (or --yes), then signs the consent
    /// into the device's log on the nodes and tells the device.
    Approve {
        link: String,
        /// Approve without asking (needed when standard input is not a terminal).
        #[arg(long)]
        yes: bool,
        /// Print the consent as JSON (the summary goes to stderr).
        #[arg(long)]
        json: bool,
    },
    /// Withdraw a consent (its id or first 8+ hex characters): the device rotates the stream
    /// key at once and the provider gets no new key.
    Revoke {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// A device's consent log, verified: every consent given, revoked or expired, by whom.
    Log {
        device: String,
        /// JSON: {"device": "lkdev1…", "entries": […]}.
        #[arg(long)]
        json: bool,
    },
    /// Requests kept as pending (added by `approve` without an answer, or by the app).
    Requests {
        #[arg(long)]
        json: bool,
    },
    /// Drop a pending request without answering it.
    Dismiss { id: String },
}

#[derive(Debug, Subcommand)]
enum StaysCmd {
    /// Read an Airbnb/Booking.com/Vrbo calendar export and issue one invitation per stay for
    /// these doors; again later: unchanged stays keep theirs, changed dates re-issue,
    /// cancelled stays are revoked. Prints what changed.
    Sync {
        /// The doors each guest may open.
        #[arg(required = true, num_args = 1..)]
        devices: Vec<String>,
        /// The calendar: an .ics file or its http(s):// export URL.
        #[arg(long)]
        ics: String,
        /// Check-in time on the arrival day (HH:MM).
        #[arg(long, default_value = "15:00")]
        check_in: String,
        /// Check-out time on the departure day (HH:MM).
        #[arg(long, default_value = "11:00")]
        check_out: String,
        /// The property's time zone (IANA name; default the system's).
        #[arg(long)]
        tz: Option<String>,
        /// Hand out self-contained latchkey://invite/ links instead of short ones.
        #[arg(long)]
        long: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum OwnersCmd {
    /// Propose adding an owner.
    Add {
        device: String,
        key: String,
        /// Also set the threshold.
        #[arg(long)]
        threshold: Option<u8>,
    },
    /// Propose removing an owner.
    Remove {
        device: String,
        key: String,
        #[arg(long)]
        threshold: Option<u8>,
    },
    /// Propose a new threshold.
    Threshold { device: String, threshold: u8 },
    /// Proposals waiting for signatures (read from your mailbox on the nodes).
    Proposals {
        #[arg(long)]
        json: bool,
    },
    /// Co-sign a proposal as a current owner (by id or its first 8+ hex characters).
    Approve { proposal: String },
    /// Accept a proposal that adds your key (a transfer to you, or joining the owners): your
    /// signature proves you hold the key; the change takes effect once enough owners approved.
    Accept { proposal: String },
}

#[derive(Debug, Subcommand)]
enum NodesCmd {
    /// Add registry node base URLs.
    Add {
        #[arg(required = true, num_args = 1..)]
        urls: Vec<String>,
    },
    /// List the configured nodes.
    List {
        #[arg(long)]
        json: bool,
    },
    /// How many randomly chosen nodes each ownership check asks (default 5).
    Ask { count: usize },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn profile_dir(cli: &Cli) -> anyhow::Result<PathBuf> {
    if let Some(dir) = &cli.profile {
        return Ok(dir.clone());
    }
    let home = std::env::var_os("HOME")
        .context("no --profile given and HOME is not set; pass --profile DIR")?;
    Ok(PathBuf::from(home).join(".local/share/latchkey"))
}

fn open_profile(cli: &Cli) -> anyhow::Result<Profile> {
    let dir = profile_dir(cli)?;
    let seeds = Arc::new(KeyringStore::open()?);
    Ok(Profile::at(&dir, seeds, Arc::new(SystemClock))?)
}

fn parse_key(text: &str) -> anyhow::Result<PublicKey> {
    PublicKey::parse(text).with_context(|| {
        format!("\"{text}\" is not an owner key; ask for the lkpk1… that `latchkey key` prints")
    })
}

fn print_proposal(report: &ProposalReport) {
    let p = &report.proposal;
    if report.applied {
        println!(
            "{} of {} is in effect: owners {}/{} (stored on {} node(s))",
            p.kind,
            p.device_name,
            p.threshold,
            p.owners.len(),
            report.nodes_stored
        );
        if let Some(door) = &report.door {
            println!("{}", door.describe());
        }
        return;
    }
    let id = &p.id.to_string()[..16];
    println!(
        "proposal {id} ({} of {}): {} of {} owner signatures; sent to {} key(s)",
        p.kind, p.device_name, p.approvals, p.needed, report.sent_to
    );
    if !p.awaiting_acceptance.is_empty() {
        let keys: Vec<String> = p.awaiting_acceptance.iter().map(|k| k.short()).collect();
        println!(
            "waiting for the new owner(s) to accept: {} (nothing changes until they do)",
            keys.join(", ")
        );
        println!("each new owner accepts it with: latchkey owners accept {id}");
    }
    if p.approvals < usize::from(p.needed) {
        println!("co-owners approve it with: latchkey owners approve {id}");
    }
}

/// "lkpk1abcdefghi… (you)": who made a proposal, as the lists show it.
fn proposer_label(p: &Proposal) -> String {
    match (&p.proposed_by, p.proposed_by_me) {
        (Some(k), true) => format!("{}… (you)", k.short()),
        (Some(k), false) => format!("{}…", k.short()),
        (None, _) => "an owner".into(),
    }
}

fn proposal_json(p: &Proposal) -> serde_json::Value {
    let keys = |list: &[PublicKey]| list.iter().map(|o| o.to_string()).collect::<Vec<_>>();
    serde_json::json!({
        "id": p.id.to_string(),
        "device": p.device.to_string(),
        "device_name": p.device_name,
        "kind": p.kind,
        "owners": keys(&p.owners),
        "threshold": p.threshold,
        "signed_by": keys(&p.signed_by),
        "needed": p.needed,
        "approvals": p.approvals,
        "proposed_by": p.proposed_by.map(|k| k.to_string()),
        "proposed_by_me": p.proposed_by_me,
        "new_owners": keys(&p.new_owners),
        "awaiting_acceptance": keys(&p.awaiting_acceptance),
        "signed_by_me": p.signed_by_me,
        "my_part": match p.my_part {
            MyPart::Approve => "approve",
            MyPart::Accept => "accept",
            MyPart::Nothing => "nothing",
        },
    })
}

fn grant_json(g: &IssuedGrant) -> serde_json::Value {
    let b = &g.grant.body;
    serde_json::json!({
        "id": g.id.to_string(),
        "device": g.device.to_string(),
        "device_name": g.device_name,
        "guest_name": g.guest_name,
        "actions": b.actions,
        "not_before_ms": b.not_before_ms,
        "not_after_ms": b.not_after_ms,
        "use_limit": b.use_limit,
        "arguments": latchkey_owner::pinned_by(&g.grant)
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<_>>(),
        "arguments_hex": latchkey_owner::pinned_by(&g.grant)
            .iter()
            .map(hex::encode)
            .collect::<Vec<_>>(),
        "schedule": g.grant.schedule().as_ref().map(schedule_json),
        "status": g.status.as_str(),
        "created_ms": g.created_ms,
        "may_delegate": b.delegation_depth > 0,
        "parent": g.parent.map(|p| p.to_string()),
        "doors": g.doors.iter().map(|(id, name)| serde_json::json!({"id": id.to_string(), "name": name})).collect::<Vec<_>>(),
        "redemption": redemption_json(&g.redemption),
        "reissued_as": g.reissued_as.map(|id| id.to_string()),
    })
}

/// A weekly schedule for `--json`: its zone, its windows as `--weekly` takes them, and words.
fn schedule_json(s: &WeeklySchedule) -> serde_json::Value {
    serde_json::json!({
        "tz": s.tz_name(),
        "weekly": s.to_specs(),
        "description": s.describe(),
    })
}

/// This system's IANA time zone name, if it has one (`TZ` or /etc/localtime).
fn system_zone_name() -> Option<String> {
    jiff::tz::TimeZone::try_system()
        .ok()?
        .iana_name()
        .map(str::to_owned)
}

/// `--weekly` specs and `--tz` as a schedule; `system_zone` stands in for a missing `--tz`.
fn weekly_schedule(
    weekly: &[String],
    tz: Option<&str>,
    system_zone: Option<String>,
) -> anyhow::Result<Option<WeeklySchedule>> {
    if weekly.is_empty() {
        return Ok(None);
    }
    let Some(tz) = tz.map(str::to_owned).or(system_zone) else {
        anyhow::bail!(
            "--weekly needs --tz ZONE (an IANA name such as Europe/Amsterdam): this system's \
             time zone has no IANA name"
        );
    };
    let specs: Vec<&str> = weekly.iter().map(String::as_str).collect();
    WeeklySchedule::parse_spec(&specs, &tz)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("--weekly: {e}"))
}

fn redemption_json(r: &Redemption) -> serde_json::Value {
    let (phone, at_ms, others) = match r {
        Redemption::Redeemed {
            phone,
            at_ms,
            other_phones,
        } => (phone.map(|k| k.to_string()), *at_ms, *other_phones),
        _ => (None, None, 0),
    };
    serde_json::json!({
        "state": r.as_str(),
        "phone": phone,
        "at_ms": at_ms,
        "other_phones": others,
    })
}

/// "redeemed by phone lkpk1abc… at …; 1 other phone refused since", for the grants list.
fn redemption_words(r: &Redemption) -> String {
    match r {
        Redemption::NotNeeded => "link key opens (issued before binding)".into(),
        Redemption::NotRedeemed => "not redeemed".into(),
        Redemption::Redeemed {
            phone,
            at_ms,
            other_phones,
        } => {
            let mut words = "redeemed".to_owned();
            if let Some(k) = phone {
                words.push_str(&format!(" by phone {}…", k.short()));
            }
            if let Some(at) = at_ms {
                words.push_str(&format!(" at {}", when::show(*at)));
            }
            if *other_phones > 0 {
                words.push_str(&format!(
                    "; REDEEMED BY ANOTHER PHONE? {other_phones} later try by a different phone refused: if your guest says it does not work, `latchkey reissue` it"
                ));
            }
            words
        }
    }
}

/// Prints an invitation just issued: the link, its length and QR version, where it went.
fn print_issued(issued: &IssuedInvitation, qr: Option<&PathBuf>) {
    let g = &issued.grant;
    let doors: Vec<&str> = g.doors.iter().map(|(_, n)| n.as_str()).collect();
    println!(
        "invitation for {} to {} ({}), {} to {}:",
        g.guest_name,
        doors.join(" + "),
        g.grant.body.actions.join(", "),
        when::show(g.grant.body.not_before_ms),
        when::show(g.grant.body.not_after_ms)
    );
    let pinned = latchkey_owner::pinned_by(&g.grant);
    if pinned.is_empty() {
        println!("the guest may send these actions only without arguments");
    } else {
        let shown: Vec<String> = pinned.iter().map(|a| show_argument(a)).collect();
        println!(
            "the guest may send no arguments or exactly: {}",
            shown.join(", ")
        );
    }
    if let Some(schedule) = g.grant.schedule() {
        println!("only: {}", schedule.describe());
    }
    println!("{}", issued.link.as_str());
    if issued.nodes_stored > 0 {
        println!(
            "{} characters, QR version {}; the invitation is sealed on {} node(s)",
            issued.link.len(),
            issued.qr_version,
            issued.nodes_stored
        );
    } else {
        println!(
            "{} characters, QR version {} (self-contained)",
            issued.link.len(),
            issued.qr_version
        );
    }
    if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        if let Ok(code) = latchkey_owner::invitation_qr_text(&issued.link) {
            println!("{code}");
        }
    }
    println!(
        "The first phone that redeems this link is the only one it works for; send it privately. Revoke with: latchkey revoke {id}; if it reached the wrong phone: latchkey reissue {id}",
        id = &g.id.to_string()[..16]
    );
    if let Some(path) = qr {
        println!("QR code written to {}", path.display());
    }
}

fn issued_json(issued: &IssuedInvitation) -> serde_json::Value {
    let mut out = grant_json(&issued.grant);
    out["link"] = serde_json::Value::from(issued.link.as_str());
    out["link_len"] = serde_json::Value::from(issued.link.len());
    out["qr_version"] = serde_json::Value::from(issued.qr_version);
    out["nodes_stored"] = serde_json::Value::from(issued.nodes_stored);
    out
}

fn write_qr(issued: &IssuedInvitation, qr: Option<&PathBuf>) -> anyhow::Result<()> {
    if let Some(path) = qr {
        let png = latchkey_owner::invitation_qr_png(&issued.link)?;
        std::fs::write(path, png)
            .with_context(|| format!("writing the QR code to {}", path.display()))?;
    }
    Ok(())
}

fn stay_links_json(links: &[latchkey_owner::StayLink]) -> serde_json::Value {
    links
        .iter()
        .map(|l| {
            serde_json::json!({
                "device": l.device.to_string(),
                "device_name": l.device_name,
                "grant": l.grant.to_string(),
                "link": l.link.as_ref().map(|k| k.as_str().to_owned()),
            })
        })
        .collect()
}

/// A device's fork alarm as JSON (`null` when none stands).
fn alarm_json(profile: &Profile, device: &DeviceRecord) -> anyhow::Result<serde_json::Value> {
    let Some(alarm) = profile.fork_alarm(&device.id)? else {
        return Ok(serde_json::Value::Null);
    };
    let me = profile.identity().ok().map(|k| k.public_key());
    let owner = me.is_some_and(|k| device.chain.state().is_owner(&k));
    let words = alarm.words(&device.name, me.as_ref(), owner);
    Ok(serde_json::json!({
        "kind": alarm.kind.as_str(),
        "seq": alarm.seq,
        "title": words.title,
        "meaning": words.meaning,
        "what_to_do": words.what_to_do,
        "ours": alarm.ours.id().to_string(),
        "theirs": alarm.theirs.id().to_string(),
        "first_seen_ms": alarm.first_seen_ms,
        "last_seen_ms": alarm.last_seen_ms,
    }))
}

/// Prints a device's fork alarm, if one stands, to stderr (stdout stays the result).
fn warn_alarm(profile: &Profile, device: &DeviceRecord) -> anyhow::Result<()> {
    let v = alarm_json(profile, device)?;
    if !v.is_null() {
        eprintln!(
            "ALARM: {}. {} {}",
            v["title"].as_str().unwrap_or_default(),
            v["meaning"].as_str().unwrap_or_default(),
            v["what_to_do"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}

fn print_revoked(report: &RevokeReport, query: &str) {
    for r in std::iter::once(report).chain(&report.more) {
        if r.already_revoked {
            println!(
                "grant {} was already revoked at {} (published again to {} node(s))",
                &r.grant.to_string()[..16],
                r.device.short(),
                r.nodes_stored
            );
        } else {
            println!(
                "revoked grant {} at {} (made against op {}, stored on {} node(s))",
                &r.grant.to_string()[..16],
                r.device.short(),
                r.seq,
                r.nodes_stored
            );
        }
        println!("{}", r.door.describe());
        if let Some(why) = &r.nodes_error {
            eprintln!(
                "warning: the registry nodes did not store it ({why}); run `latchkey revoke {query}` again once they are reachable"
            );
        }
    }
}

fn hex_arg(text: &str, option: &str) -> anyhow::Result<Vec<u8>> {
    hex::decode(text.trim())
        .with_context(|| format!("{option} \"{text}\" is not hex (two digits per byte)"))
}

/// Pinned arguments for people: text when it is printable UTF-8, else hex.
fn show_argument(a: &[u8]) -> String {
    match std::str::from_utf8(a) {
        Ok(t) if !t.chars().any(char::is_control) => format!("'{t}'"),
        _ => format!("hex:{}", hex::encode(a)),
    }
}

/// The table of what a stays sync changed (or its JSON).
fn print_stay_sync(report: &StaySyncReport, times: &StayTimes, json: bool) {
    let show = |ms: u64| latchkey_owner::stays::show_in(ms, &times.tz_name);
    if json {
        let lines: Vec<_> = report
            .lines
            .iter()
            .map(|l| {
                serde_json::json!({
                    "uid": l.uid,
                    "summary": l.summary,
                    "guest_name": l.guest_name,
                    "check_in": l.check_in.to_string(),
                    "check_out": l.check_out.to_string(),
                    "from_ms": l.from_ms,
                    "until_ms": l.until_ms,
                    "change": l.change.as_str(),
                    "links": stay_links_json(&l.links),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "source": report.source,
                "stays": lines,
                "node_writes": report.node_writes,
                "elapsed_ms": report.elapsed_ms,
            })
        );
        return;
    }
    println!(
        "{:<16} {:<10} {:<10} {:<24} LINK",
        "CHANGE", "CHECK-IN", "CHECK-OUT", "GUEST"
    );
    for l in &report.lines {
        let link = l
            .links
            .iter()
            .filter_map(|k| k.link.as_ref().map(|t| t.as_str().to_owned()))
            .collect::<Vec<_>>()
            .join(" ");
        let guest = if l.change == StayChange::SkippedBlocked {
            l.summary.clone()
        } else {
            l.guest_name.clone()
        };
        println!(
            "{:<16} {:<10} {:<10} {:<24} {}",
            l.change.as_str(),
            l.check_in,
            l.check_out,
            guest,
            if matches!(l.change, StayChange::Added | StayChange::Reissued) {
                link
            } else {
                String::new()
            }
        );
    }
    let n = |c| report.count(c);
    println!(
        "{} added, {} unchanged, {} reissued, {} revoked, {} blocked periods skipped, {} past; \
         {} node write(s) in {} ms",
        n(StayChange::Added),
        n(StayChange::Unchanged),
        n(StayChange::Reissued),
        n(StayChange::Revoked),
        n(StayChange::SkippedBlocked),
        n(StayChange::Past),
        report.node_writes,
        report.elapsed_ms
    );
    if let Some(first) = report.lines.iter().find(|l| l.from_ms > 0) {
        println!(
            "windows: check-in {} to check-out {} ({}); e.g. {} to {}",
            times.check_in,
            times.check_out,
            times.tz_name,
            show(first.from_ms),
            show(first.until_ms)
        );
    }
    println!("links are kept in the OS keychain; list them with `latchkey stays`");
}

fn reject_name(code: u16) -> String {
    RejectCode::from_u16(code)
        .map(|c| format!("{c:?}"))
        .unwrap_or_else(|| "unknown".into())
}

fn print_event(view: &latchkey_owner::events::EventView, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(view)?);
    } else {
        let at = view
            .time_ms
            .map_or_else(|| "(device clock unset)".to_owned(), when::show);
        println!(
            "{at}  {:<16} {:<11} {}  [grant {}…, key {}]",
            view.door,
            view.kind,
            view.what,
            &view.grant[..view.grant.len().min(8)],
            view.guest_key
        );
    }
    Ok(())
}

/// `latchkey events`: subscribe where needed, take in what the nodes hold, print.
async fn events(
    profile: &Profile,
    device: Option<String>,
    follow: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use latchkey_owner::events::{self, EventFilter};
    // One Ctrl-C listener for the whole run: a signal that arrives between two waits is kept
    // for the next one, not lost (a listener made after the signal would never see it).
    let mut stop = Box::pin(tokio::signal::ctrl_c());
    match events::subscribe(profile).await {
        Ok(report) => {
            for name in &report.subscribed {
                eprintln!("subscribed to the events of {name}");
            }
            for (name, why) in &report.failed {
                eprintln!(
                    "could not subscribe to the events of {name} yet ({why}); retried next time"
                );
            }
        }
        Err(e) => eprintln!("could not subscribe to events: {e}"),
    }
    events::fetch(profile, 0).await?;
    let filter = EventFilter {
        device,
        ..EventFilter::default()
    };
    let mut shown: std::collections::HashSet<(String, u64)> = std::collections::HashSet::new();
    let mut views = events::list(profile, &filter)?;
    views.reverse();
    if json && !follow {
        println!("{}", serde_json::json!({ "events": views }));
        return Ok(ExitCode::SUCCESS);
    }
    if views.is_empty() && !follow && !json {
        println!("no events yet");
    }
    for view in &views {
        shown.insert((view.device.clone(), view.seq));
        print_event(view, json)?;
    }
    if !follow {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        let fetched = tokio::select! {
            r = events::fetch(profile, 25) => r,
            _ = &mut stop => return Ok(ExitCode::SUCCESS),
        };
        if let Err(e) = fetched {
            // A node down is not the end of following: say so and try again shortly.
            eprintln!("reading events failed ({e}); retrying");
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                _ = &mut stop => return Ok(ExitCode::SUCCESS),
            }
            continue;
        }
        let mut views = events::list(profile, &filter)?;
        views.reverse();
        for view in views {
            if shown.insert((view.device.clone(), view.seq)) {
                print_event(&view, json)?;
            }
        }
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let profile = open_profile(&cli)?;
    match cli.command {
        Cmd::Init => {
            let phrase = profile.create_seed()?;
            let key = profile.identity()?.public_key();
            println!("Your recovery phrase (write it down now; it is shown only this once):");
            println!();
            for (i, word) in phrase.words().iter().enumerate() {
                print!("{:>2}. {:<10}", i + 1, word);
                if i % 6 == 5 {
                    println!();
                }
            }
            println!();
            println!(
                "It is stored in the OS keychain for profile {}.",
                profile.id()
            );
            println!("owner key: {key}");
            println!("next: latchkey nodes add URL...");
        }
        Cmd::Restore => {
            let mut text = Zeroizing::new(String::new());
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the recovery phrase from standard input")?;
            let key = profile.restore_seed(&text)?;
            println!(
                "recovery phrase stored in the OS keychain for profile {}",
                profile.id()
            );
            println!("owner key: {key}");
        }
        Cmd::Nodes { command } => match command {
            NodesCmd::Add { urls } => {
                let added = profile.add_nodes(&urls)?;
                println!(
                    "{added} node(s) added; {} configured",
                    profile.nodes()?.len()
                );
            }
            NodesCmd::Ask { count } => {
                profile.set_nodes_to_ask(count)?;
                println!(
                    "each check asks {} of the {} configured node(s)",
                    count.min(profile.nodes()?.len()),
                    profile.nodes()?.len()
                );
            }
            NodesCmd::List { json } => {
                let nodes = profile.nodes()?;
                if json {
                    println!(
                        "{}",
                        serde_json::json!({ "nodes": nodes, "ask": profile.nodes_to_ask()? })
                    );
                } else if nodes.is_empty() {
                    println!("no nodes; add some with `latchkey nodes add URL...`");
                } else {
                    for n in nodes {
                        println!("{n}");
                    }
                }
            }
        },
        Cmd::Claim { image, text, name } => {
            let source = match (&image, &text) {
                (Some(path), _) => ClaimSource::Image(path),
                (None, Some(text)) => ClaimSource::Text(text),
                (None, None) => anyhow::bail!("give --image PNG or --text PAYLOAD"),
            };
            // Progress on stderr, so stdout stays the result alone.
            let tell = |stage: ClaimStage| {
                let line = match stage {
                    ClaimStage::CheckingKeys => {
                        "checking the device's keys against its code…".to_owned()
                    }
                    ClaimStage::Publishing => "publishing the claim to the nodes…".to_owned(),
                    ClaimStage::WaitingForQuorum { stored_on } => {
                        format!("stored on {stored_on} node(s); waiting until a quorum shows it…")
                    }
                    ClaimStage::TellingDevice => "telling the device…".to_owned(),
                };
                eprintln!("{line}");
            };
            let report = profile
                .claim_with_progress(source, name.as_deref(), &tell)
                .await?;
            if report.already_owned {
                println!("{} ({}) is already yours", report.name, report.device);
            } else {
                println!("claimed {} ({})", report.name, report.device);
                println!(
                    "stored on {} node(s); visible on a quorum after {} ms",
                    report.nodes_stored, report.visible_after_ms
                );
                if report.device_confirmed {
                    println!("the device confirmed it is yours");
                    // Events about its guests from now on; `latchkey events` retries if not.
                    match latchkey_owner::events::subscribe(&profile).await {
                        Ok(r) if r.subscribed.contains(&report.name) => {
                            println!("subscribed to its events (see `latchkey events`)")
                        }
                        _ => eprintln!("not subscribed to its events yet; `latchkey events` will"),
                    }
                } else {
                    println!("the device will learn it from the nodes within its refresh interval");
                }
            }
        }
        Cmd::Devices { json } => {
            // Devices another owner added this profile to arrive as notices in its mailbox.
            if let Err(e) = profile.sync_mailbox().await {
                tracing::warn!(error = %e, "could not read this profile's mailbox on the nodes");
            }
            let me = profile.identity().ok().map(|k| k.public_key());
            let devices = profile.devices()?;
            if json {
                let list: Vec<_> = devices
                    .iter()
                    .map(|d| {
                        let s = d.chain.state();
                        Ok(serde_json::json!({
                            "id": d.id.to_string(),
                            "short": d.id.short(),
                            "name": d.name,
                            "addrs": d.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                            "owners": s.owners.iter().map(|o| o.to_string()).collect::<Vec<_>>(),
                            "threshold": s.threshold,
                            "mine": me.is_some_and(|k| s.is_owner(&k)),
                            "seq": s.seq,
                            "verified_at_ms": d.verified_at_ms,
                            "alarm": alarm_json(&profile, d)?,
                        }))
                    })
                    .collect::<anyhow::Result<_>>()?;
                println!("{}", serde_json::json!({ "devices": list }));
            } else if devices.is_empty() {
                println!("no devices; claim one with `latchkey claim --image PNG`");
            } else {
                for d in devices {
                    let s = d.chain.state();
                    let role = if me.is_some_and(|k| s.is_owner(&k)) {
                        "owner"
                    } else {
                        "-"
                    };
                    println!(
                        "{}  {:<24} {}  owners {}/{}  {}",
                        d.id.short(),
                        d.name,
                        role,
                        s.threshold,
                        s.owners.len(),
                        d.id
                    );
                    let v = alarm_json(&profile, &d)?;
                    if !v.is_null() {
                        println!("  ALARM: {}", v["title"].as_str().unwrap_or_default());
                        println!("    {}", v["meaning"].as_str().unwrap_or_default());
                        println!("    {}", v["what_to_do"].as_str().unwrap_or_default());
                        if v["kind"] == "unresolved" {
                            println!("    (latchkey transfer {} --to KEY)", d.id.short());
                        }
                    }
                }
            }
        }
        Cmd::Open {
            device,
            action,
            args,
            args_hex,
        } => {
            let args = match (args, args_hex) {
                (Some(text), _) => text.into_bytes(),
                (None, Some(h)) => hex_arg(&h, "--args-hex")?,
                (None, None) => Vec::new(),
            };
            let report = profile.open(&device, &action, &args).await?;
            warn_alarm(&profile, &report.device)?;
            let route = match &report.route {
                Route::Direct(a) => format!("directly at {a}"),
                Route::Relay(n) => format!("through {n}"),
            };
            let r = &report.response;
            match &r.outcome {
                Outcome::Accepted => {
                    println!(
                        "{}: {} accepted ({route}, {} ms, signed by the device)",
                        report.device.name, report.action, report.latency_ms
                    );
                    if report.challenged {
                        println!("(after a challenge round trip: the device does not trust its own clock)");
                    }
                    if !r.body.is_empty() {
                        print!("{}", String::from_utf8_lossy(&r.body));
                    }
                }
                Outcome::Rejected { .. } if report.outcome_unknown() => {
                    eprintln!(
                        "{}: {} reached the door but its answer was lost on the way back ({route}); \
                         it was not sent again, so it ran at most once. See what happened with \
                         `latchkey audit {device}`",
                        report.device.name, report.action
                    );
                    return Ok(ExitCode::from(3));
                }
                Outcome::Rejected { code, reason } => {
                    let refusal = latchkey_owner::explain(*code, reason);
                    eprintln!(
                        "{}: {} refused. {} {} ({}, code {code})",
                        report.device.name,
                        report.action,
                        refusal.meaning,
                        refusal.what_to_do,
                        refusal.name
                    );
                    return Ok(ExitCode::from(2));
                }
                Outcome::ChallengeRequired { .. } => {
                    anyhow::bail!("the device kept asking for a challenge")
                }
            }
        }
        Cmd::Key { json } => {
            let key = profile.identity()?.public_key();
            if json {
                println!("{}", serde_json::json!({ "key": key.to_string() }));
            } else {
                println!("{key}");
            }
        }
        Cmd::Audit {
            device,
            before,
            json,
        } => {
            let report = profile.audit(&device, before).await?;
            let lines = latchkey_owner::audit::describe_entries(&report.entries, &when::show);
            if json {
                let entries: Vec<_> = lines
                    .iter()
                    .map(|l| {
                        serde_json::json!({
                            "seq": l.seq,
                            "time_ms": l.time_ms,
                            "kind": l.kind,
                            "sender": l.sender.map(|k| k.to_string()),
                            "code": l.code,
                            "action": l.action,
                            "stage": l.stage.map(|s| s.name()),
                            "via": l.via.map(|v| format!("{v:?}").to_lowercase()),
                            "text": l.text,
                        })
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({
                        "device": report.device.id.to_string(),
                        "oldest": report.oldest,
                        "next_seq": report.next_seq,
                        "verified": true,
                        "entries": entries,
                    })
                );
            } else {
                println!(
                    "{}: {} entries, signed by the device and verified",
                    report.device.name,
                    report.entries.len()
                );
                let me = profile.identity().ok().map(|k| k.public_key());
                for l in &lines {
                    let who = match l.sender {
                        Some(k) if Some(k) == me => "you".to_owned(),
                        Some(k) => k.to_string()[..14].to_owned(),
                        None => "-".to_owned(),
                    };
                    let text = if l.code != 0 {
                        format!("{} ({})", l.text, reject_name(l.code))
                    } else {
                        l.text.clone()
                    };
                    println!(
                        "{:>5}  {}  {:<14} {text}",
                        l.seq,
                        l.time_ms
                            .map(when::show)
                            .unwrap_or_else(|| "(no clock)".into()),
                        who,
                    );
                }
                if report
                    .entries
                    .first()
                    .is_some_and(|e| e.entry.seq > report.oldest)
                {
                    println!(
                        "older entries: latchkey audit {device} --before {}",
                        report.entries[0].entry.seq
                    );
                }
            }
        }
        Cmd::Owners {
            command,
            device,
            json,
        } => match (command, device) {
            (None, Some(device)) => {
                let view = profile.owners(&device).await?;
                let alarm = alarm_json(&profile, &view.device)?;
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "device": view.device.id.to_string(),
                            "owners": view.owners.iter().map(|o| o.to_string()).collect::<Vec<_>>(),
                            "threshold": view.threshold,
                            "me": view.me.map(|k| k.to_string()),
                            "proposals": view.proposals.iter().map(proposal_json).collect::<Vec<_>>(),
                            "alarm": alarm,
                        })
                    );
                } else {
                    warn_alarm(&profile, &view.device)?;
                    println!(
                        "{}: {} of {} owners must sign changes",
                        view.device.name,
                        view.threshold,
                        view.owners.len()
                    );
                    for o in &view.owners {
                        let you = if view.me == Some(*o) { "  (you)" } else { "" };
                        println!("  {o}{you}");
                    }
                    for p in &view.proposals {
                        println!(
                            "waiting: {} {} proposed by {} ({}/{} owner signatures, {} new owner(s) yet to accept)",
                            p.kind,
                            &p.id.to_string()[..16],
                            proposer_label(p),
                            p.approvals,
                            p.needed,
                            p.awaiting_acceptance.len()
                        );
                    }
                }
            }
            (None, None) => anyhow::bail!("name a device: latchkey owners DEVICE"),
            (Some(cmd), _) => match cmd {
                OwnersCmd::Add {
                    device,
                    key,
                    threshold,
                } => {
                    let change = OwnerChange {
                        add: vec![parse_key(&key)?],
                        threshold,
                        ..OwnerChange::default()
                    };
                    print_proposal(&profile.propose_owners(&device, &change).await?);
                }
                OwnersCmd::Remove {
                    device,
                    key,
                    threshold,
                } => {
                    let change = OwnerChange {
                        remove: vec![parse_key(&key)?],
                        threshold,
                        ..OwnerChange::default()
                    };
                    print_proposal(&profile.propose_owners(&device, &change).await?);
                }
                OwnersCmd::Threshold { device, threshold } => {
                    let change = OwnerChange {
                        threshold: Some(threshold),
                        ..OwnerChange::default()
                    };
                    print_proposal(&profile.propose_owners(&device, &change).await?);
                }
                OwnersCmd::Proposals { json } => {
                    profile.sync_mailbox().await?;
                    let proposals = profile.proposals()?;
                    if json {
                        let list: Vec<_> = proposals.iter().map(proposal_json).collect();
                        println!("{}", serde_json::json!({ "proposals": list }));
                    } else if proposals.is_empty() {
                        println!("no proposals waiting");
                    } else {
                        for p in &proposals {
                            let id = &p.id.to_string()[..16];
                            let mine = match p.my_part {
                                MyPart::Approve => format!("approve: latchkey owners approve {id}"),
                                MyPart::Accept => {
                                    format!("it adds your key; accept: latchkey owners accept {id}")
                                }
                                MyPart::Nothing if p.signed_by_me => "signed by you".into(),
                                MyPart::Nothing => "nothing for you to sign".into(),
                            };
                            println!(
                                "{id}  {} of {} proposed by {}: owners {}/{}  {}/{} owner signatures, {} of {} new owner(s) accepted; {mine}",
                                p.kind,
                                p.device_name,
                                proposer_label(p),
                                p.threshold,
                                p.owners.len(),
                                p.approvals,
                                p.needed,
                                p.new_owners.len() - p.awaiting_acceptance.len(),
                                p.new_owners.len(),
                            );
                        }
                    }
                }
                OwnersCmd::Approve { proposal } => {
                    print_proposal(&profile.approve(&proposal).await?);
                }
                OwnersCmd::Accept { proposal } => {
                    print_proposal(&profile.accept_proposal(&proposal).await?);
                }
            },
        },
        Cmd::Transfer {
            device,
            to,
            threshold,
        } => {
            let owners = to
                .iter()
                .map(|k| parse_key(k))
                .collect::<anyhow::Result<Vec<_>>>()?;
            print_proposal(&profile.transfer(&device, owners, threshold).await?);
        }
        Cmd::Invite {
            device,
            doors,
            name,
            from,
            until,
            actions,
            uses,
            args,
            args_hex,
            weekly,
            tz,
            qr,
            long,
            json,
            may_delegate,
            from_grant,
        } => {
            // Checked before anything is looked up or signed: a typo changes nothing.
            let schedule = weekly_schedule(&weekly, tz.as_deref(), system_zone_name())?;
            let now = profile.now_ms();
            let mut arguments: Vec<Vec<u8>> = args.into_iter().map(String::into_bytes).collect();
            for h in &args_hex {
                arguments.push(hex_arg(h, "--args-hex")?);
            }
            // Delegating: what is not given is the held invitation's own.
            let held = match &from_grant {
                Some(q) => Some(profile.held_invitation(q)?),
                None => None,
            };
            let from_ms = match (&from, &held) {
                (Some(t), _) => when::parse(t, now).context("--from")?,
                (None, Some(h)) => h.not_before_ms.max(now),
                (None, None) => now,
            };
            let until_ms = match (&until, &held) {
                (Some(t), _) => when::parse(t, now).context("--until")?,
                (None, Some(h)) => h.not_after_ms,
                (None, None) => anyhow::bail!("give --until: when the invitation ends"),
            };
            let request = InviteRequest {
                guest_name: name,
                from_ms,
                until_ms,
                actions: match (actions.is_empty(), &held) {
                    (false, _) => actions,
                    (true, Some(_)) => Vec::new(),
                    (true, None) => vec!["unlock".to_owned()],
                },
                use_limit: uses,
                arguments,
                schedule,
                long_link: long,
                may_delegate,
                from_grant,
            };
            let mut queries = vec![device.as_str()];
            queries.extend(doors.iter().map(String::as_str));
            let issued = profile.invite_doors(&queries, &request).await?;
            write_qr(&issued, qr.as_ref())?;
            if json {
                println!("{}", issued_json(&issued));
            } else {
                print_issued(&issued, qr.as_ref());
            }
        }
        Cmd::Reissue { grant, qr, json } => {
            let report = profile.reissue(&grant).await?;
            write_qr(&report.issued, qr.as_ref())?;
            if json {
                let mut out = issued_json(&report.issued);
                out["revoked"] = serde_json::Value::from(report.revoked.grant.to_string());
                println!("{out}");
            } else {
                print_revoked(&report.revoked, &grant);
                print_issued(&report.issued, qr.as_ref());
            }
        }
        Cmd::Accept { link } => {
            let held = profile.accept(&link).await?;
            println!(
                "{} invited you ({}) to {}: {} from {} to {}",
                if held.already_held {
                    "already accepted:"
                } else {
                    "accepted:"
                },
                held.guest_name,
                held.device_name,
                held.actions.join(", "),
                when::show(held.not_before_ms),
                when::show(held.not_after_ms)
            );
            if !held.arguments.is_empty() {
                let shown: Vec<String> = held.arguments.iter().map(|a| show_argument(a)).collect();
                println!(
                    "you may send no arguments, or exactly one of: {}",
                    shown.join(", ")
                );
            }
            for schedule in &held.schedules {
                println!("only: {}", schedule.describe());
            }
            if held.binds {
                for d in &held.doors {
                    if d.redeemed {
                        println!("{}: redeemed for this profile's own key", d.name);
                    } else {
                        println!(
                            "{}: not reached now; redeemed automatically at the first open",
                            d.name
                        );
                    }
                }
            }
            println!("open it with: latchkey open {}", held.device.short());
        }
        Cmd::Invitations { json } => {
            let held = profile.invitations()?;
            // Invitations this profile issued from one it holds, shown under it.
            let delegated: Vec<IssuedGrant> = profile
                .grants(None)?
                .into_iter()
                .filter(|g| g.parent.is_some())
                .collect();
            let under = |id: latchkey_proto::grant::GrantId| {
                delegated
                    .iter()
                    .filter(move |g| g.parent == Some(id))
                    .collect::<Vec<_>>()
            };
            if json {
                let list: Vec<_> = held
                    .iter()
                    .map(|h| {
                        serde_json::json!({
                            "may_delegate": h.may_delegate,
                            "delegated": under(h.id).into_iter().map(grant_json).collect::<Vec<_>>(),
                            "id": h.id.to_string(),
                            "device": h.device.to_string(),
                            "device_name": h.device_name,
                            "guest_name": h.guest_name,
                            "actions": h.actions,
                            "not_before_ms": h.not_before_ms,
                            "not_after_ms": h.not_after_ms,
                            "arguments_hex": h.arguments.iter().map(hex::encode).collect::<Vec<_>>(),
                            "schedules": h.schedules.iter().map(schedule_json).collect::<Vec<_>>(),
                            "status": h.status.as_str(),
                            "binds": h.binds,
                            "doors": h.doors.iter().map(|d| serde_json::json!({
                                "id": d.device.to_string(),
                                "name": d.name,
                                "redeemed": d.redeemed,
                            })).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                println!("{}", serde_json::json!({ "invitations": list }));
            } else if held.is_empty() {
                println!("no invitations; accept one with `latchkey accept LINK`");
            } else {
                for h in held {
                    let binding = if !h.binds {
                        "link key".to_owned()
                    } else if h.doors.iter().all(|d| d.redeemed) {
                        "redeemed".to_owned()
                    } else {
                        let pending: Vec<&str> = h
                            .doors
                            .iter()
                            .filter(|d| !d.redeemed)
                            .map(|d| d.name.as_str())
                            .collect();
                        format!("to redeem at first open: {}", pending.join(", "))
                    };
                    println!(
                        "{}  {}  {:<20} {:<8} {} to {}  {}  {binding}{}{}",
                        &h.id.to_string()[..16],
                        h.device.short(),
                        h.device_name,
                        h.status.as_str(),
                        when::show(h.not_before_ms),
                        when::show(h.not_after_ms),
                        h.actions.join(","),
                        if h.may_delegate {
                            "  (may delegate)"
                        } else {
                            ""
                        },
                        h.schedules
                            .iter()
                            .map(|s| format!("  only {}", s.describe()))
                            .collect::<String>()
                    );
                    for g in under(h.id) {
                        println!(
                            "    └ {}  {:<16} {:<8} {} to {}  {}",
                            &g.id.to_string()[..16],
                            g.guest_name,
                            g.status.as_str(),
                            when::show(g.grant.body.not_before_ms),
                            when::show(g.grant.body.not_after_ms),
                            g.grant.body.actions.join(",")
                        );
                    }
                }
            }
        }
        Cmd::Grants { device, json } => {
            if let Some(d) = &device {
                let record = profile.find_device(d)?;
                profile.refresh_device(record).await?;
            }
            // Redemptions are read from the doors' audit logs; a door not reached leaves what
            // was read before.
            for unread in profile.check_redemptions(device.as_deref()).await? {
                eprintln!("warning: could not read the audit log of {unread}");
            }
            let grants = profile.grants(device.as_deref())?;
            if json {
                let list: Vec<_> = grants.iter().map(grant_json).collect();
                println!("{}", serde_json::json!({ "grants": list }));
            } else if grants.is_empty() {
                println!("no grants issued; invite someone with `latchkey invite DEVICE --name NAME --until +2h`");
            } else {
                for g in grants {
                    let pinned: Vec<String> = latchkey_owner::pinned_by(&g.grant)
                        .iter()
                        .map(|a| show_argument(a))
                        .collect();
                    let only = g
                        .grant
                        .schedule()
                        .map(|s| format!("  only {}", s.describe()))
                        .unwrap_or_default();
                    let doors: Vec<&str> = g.doors.iter().map(|(_, n)| n.as_str()).collect();
                    println!(
                        "{}  {:<16} {:<20} {:<8} {} to {}  {}{}  {}{}{only}",
                        &g.id.to_string()[..16],
                        g.guest_name,
                        doors.join("+"),
                        g.status.as_str(),
                        when::show(g.grant.body.not_before_ms),
                        when::show(g.grant.body.not_after_ms),
                        g.grant.body.actions.join(","),
                        if pinned.is_empty() {
                            String::new()
                        } else {
                            format!("  args {}", pinned.join(" "))
                        },
                        redemption_words(&g.redemption),
                        g.reissued_as
                            .map(|id| format!("  (reissued as {})", &id.to_string()[..16]))
                            .unwrap_or_default()
                    );
                }
            }
        }
        Cmd::Events {
            device,
            follow,
            json,
        } => return events(&profile, device, follow, json).await,
        Cmd::Consents { device, json } => return consent::consents(&profile, &device, json).await,
        Cmd::Consent { command } => {
            return match command {
                ConsentCmd::Approve { link, yes, json } => {
                    consent::approve(&profile, &link, yes, json).await
                }
                ConsentCmd::Revoke { id, json } => consent::revoke(&profile, &id, json).await,
                ConsentCmd::Log { device, json } => consent::log(&profile, &device, json).await,
                ConsentCmd::Requests { json } => consent::requests(&profile, json),
                ConsentCmd::Dismiss { id } => {
                    profile.consent_request_dismiss(&id)?;
                    println!("request dismissed");
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
        Cmd::Meter {
            device,
            broker,
            stream,
            follow,
            json,
        } => return consent::meter(&profile, &device, &broker, &stream, follow, json).await,
        Cmd::Revoke { grant } => {
            let report = profile.revoke(&grant).await?;
            print_revoked(&report, &grant);
        }
        Cmd::Stays { command, json } => match command {
            Some(StaysCmd::Sync {
                devices,
                ics,
                check_in,
                check_out,
                tz,
                long,
                json,
            }) => {
                let mut times = StayTimes::parse(&check_in, &check_out, tz.as_deref())?;
                times.long_links = long;
                let doors: Vec<&str> = devices.iter().map(String::as_str).collect();
                let report = profile.sync_stays(&doors, &ics, &times).await?;
                print_stay_sync(&report, &times, json);
            }
            None => {
                let stays = profile.stays()?;
                if json {
                    let list: Vec<_> = stays
                        .iter()
                        .map(|s| {
                            let (status, at) = match s.status {
                                StayStatus::Opened { at_ms } | StayStatus::Sent { at_ms } => {
                                    (s.status.as_str(), Some(at_ms))
                                }
                                StayStatus::Redeemed { at_ms } => (s.status.as_str(), at_ms),
                                _ => (s.status.as_str(), None),
                            };
                            serde_json::json!({
                                "source": s.source,
                                "uid": s.uid,
                                "summary": s.summary,
                                "guest_name": s.guest_name,
                                "check_in": s.check_in.to_string(),
                                "check_out": s.check_out.to_string(),
                                "from_ms": s.from_ms,
                                "until_ms": s.until_ms,
                                "tz": s.tz,
                                "phase": s.phase.as_str(),
                                "status": status,
                                "status_at_ms": at,
                                "links": stay_links_json(&s.links),
                            })
                        })
                        .collect();
                    println!("{}", serde_json::json!({ "stays": list }));
                } else if stays.is_empty() {
                    println!("no stays; import a calendar with `latchkey stays sync DEVICE --ics FILE|URL`");
                } else {
                    for s in &stays {
                        let status = match s.status {
                            StayStatus::Opened { at_ms } => {
                                format!("opened at {}", when::show(at_ms))
                            }
                            StayStatus::Sent { at_ms } => format!("sent at {}", when::show(at_ms)),
                            StayStatus::Redeemed { at_ms: Some(at_ms) } => {
                                format!("redeemed at {}", when::show(at_ms))
                            }
                            other => other.as_str().to_owned(),
                        };
                        println!(
                            "{} to {}  {:<8} {:<28} {}",
                            s.check_in,
                            s.check_out,
                            s.phase.as_str(),
                            s.guest_name,
                            status
                        );
                        for l in &s.links {
                            if let Some(link) = &l.link {
                                println!("    {}: {}", l.device_name, link.as_str());
                            }
                        }
                    }
                }
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invite_flags(extra: &[&str]) -> Result<Cli, clap::Error> {
        let mut args = vec![
            "latchkey", "invite", "Flat", "--name", "Cleaner", "--until", "+30d",
        ];
        args.extend_from_slice(extra);
        Cli::try_parse_from(args)
    }

    fn weekly_of(cli: Cli) -> (Vec<String>, Option<String>) {
        match cli.command {
            Cmd::Invite { weekly, tz, .. } => (weekly, tz),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn weekly_is_repeatable_and_reads_in_its_zone() {
        let cli = invite_flags(&[
            "--weekly",
            "mon-fri 08:00-12:00",
            "--weekly",
            "sat 10:00-11:00",
            "--tz",
            "Europe/Amsterdam",
        ])
        .unwrap();
        let (weekly, tz) = weekly_of(cli);
        let s = weekly_schedule(&weekly, tz.as_deref(), None)
            .unwrap()
            .unwrap();
        assert_eq!(
            s.describe(),
            "Mon–Fri 08:00–12:00; Sat 10:00–11:00 (Europe/Amsterdam)"
        );
        let json = schedule_json(&s);
        assert_eq!(json["tz"], "Europe/Amsterdam");
        assert_eq!(
            json["weekly"],
            serde_json::json!(["mon-fri 08:00-12:00", "sat 10:00-11:00"])
        );
        // Without --weekly there is no schedule, whatever the system's zone.
        let (weekly, tz) = weekly_of(invite_flags(&[]).unwrap());
        assert!(weekly_schedule(&weekly, tz.as_deref(), Some("UTC".into()))
            .unwrap()
            .is_none());
    }

    #[test]
    fn tz_defaults_to_the_systems_zone_and_is_required_without_one() {
        let (weekly, tz) = weekly_of(invite_flags(&["--weekly", "wed 09:00-12:00"]).unwrap());
        let s = weekly_schedule(&weekly, tz.as_deref(), Some("America/New_York".into()))
            .unwrap()
            .unwrap();
        assert_eq!(s.tz_name(), "America/New_York");
        let e = weekly_schedule(&weekly, tz.as_deref(), None).unwrap_err();
        assert!(e.to_string().contains("--weekly needs --tz"), "{e}");
        // --tz alone means nothing: refused by the parser.
        assert!(invite_flags(&["--tz", "Europe/Amsterdam"]).is_err());
    }

    #[test]
    fn bad_weekly_flags_say_what_is_wrong() {
        for (spec, tz, needle) in [
            ("mo 08:00-12:00", "UTC", "\"mo\" is not a day"),
            ("mon 8-12", "UTC", "is not a time"),
            ("fri 22:00-02:00", "UTC", "crosses midnight"),
            (
                "mon 08:00-09:00",
                "Europe/Atlantis",
                "unknown time zone \"Europe/Atlantis\"",
            ),
        ] {
            let e = weekly_schedule(&[spec.to_owned()], Some(tz), None).unwrap_err();
            assert!(e.to_string().contains(needle), "{spec}: {e}");
            assert!(e.to_string().starts_with("--weekly: "), "{e}");
        }
    }
}
