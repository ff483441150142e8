//! `latchkey consents`, `latchkey consent approve|revoke|log|requests|dismiss` and
//! `latchkey meter`: data sharing with consent, over latchkey-owner's consent and meter
//! modules.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use latchkey_owner::consent::signer_label;
use latchkey_owner::{ConsentView, MeterSnapshot, MeterWatch, Profile};

use crate::when;

/// How long `latchkey meter` without `--follow` waits for a first reading.
const FIRST_READING_WAIT: Duration = Duration::from_secs(20);

fn print_consent(c: &ConsentView) {
    let r = &c.request;
    let mut line = format!(
        "{}  {:<7} {:<20} {:<8} {}: {}  since {}",
        &c.id[..16],
        c.state,
        r.provider_name,
        r.stream,
        r.purpose_label,
        r.purpose,
        when::show(c.given_ms)
    );
    match (c.ended_ms, r.until_ms) {
        (Some(end), _) => line.push_str(&format!(", {} {}", c.state, when::show(end))),
        (None, Some(until)) => line.push_str(&format!(", until {}", when::show(until))),
        (None, None) => line.push_str(", until withdrawn"),
    }
    println!("{line}");
    if let Some(note) = &c.delivery_note {
        if c.delivery != "unknown" {
            println!("    {note}");
        }
    }
}

/// `latchkey consents DEVICE`.
pub async fn consents(profile: &Profile, device: &str, json: bool) -> anyhow::Result<ExitCode> {
    let record = profile.find_device(device)?;
    let list = profile.consents(&record.id).await?;
    if json {
        println!(
            "{}",
            serde_json::json!({ "device": record.id.to_string(), "consents": list })
        );
    } else if list.is_empty() {
        println!(
            "{}: no consents given; approve a provider's request with `latchkey consent approve LINK`",
            record.name
        );
    } else {
        for c in &list {
            print_consent(c);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Asks "approve? [y/N]" on the terminal; `false` unless the answer starts with y.
fn confirm() -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "not approved: standard input is not a terminal, so nobody can be asked; read the \
             request above and pass --yes to approve it"
        );
    }
    eprint!("Approve? [y/N] ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("reading the answer")?;
    Ok(answer.trim().to_ascii_lowercase().starts_with('y'))
}

/// `latchkey consent approve LINK|ID`.
pub async fn approve(
    profile: &Profile,
    link: &str,
    yes: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let preview = if link.trim().to_ascii_lowercase().starts_with("latchkey://") {
        profile.consent_request_preview(link)?
    } else {
        let id = link.trim().to_ascii_lowercase();
        profile
            .consent_requests()?
            .into_iter()
            .find(|r| r.id.starts_with(&id) && id.len() >= 8)
            .with_context(|| {
                format!(
                    "no pending request matches \"{link}\"; give the provider's LATCHKEY://C/ link"
                )
            })?
    };
    // The summary goes to stderr with --json, so stdout stays one JSON document.
    let say = |text: &str| {
        if json {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    };
    say(&preview.summary);
    say(&format!(
        "provider key {}; request {}",
        preview.provider_key,
        &preview.id[..16]
    ));
    if !yes && !confirm()? {
        say("not approved; nothing was changed");
        return Ok(ExitCode::from(2));
    }
    let view = profile.consent_approve(link).await?;
    if json {
        println!("{}", serde_json::to_string(&view)?);
    } else {
        println!(
            "consent {} given: {} may read {} of {}",
            &view.id[..16],
            view.request.provider_name,
            view.request.stream,
            view.request.device_name
        );
        match view.delivery_note.as_deref() {
            None => println!("the device accepted it and sends the provider the stream key"),
            Some(note) => println!("{note}"),
        }
        println!(
            "withdraw it with: latchkey consent revoke {}",
            &view.id[..16]
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `latchkey consent revoke ID`.
pub async fn revoke(profile: &Profile, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let view = profile.consent_revoke(id).await?;
    if json {
        println!("{}", serde_json::to_string(&view)?);
    } else {
        println!(
            "consent {} revoked: {} may no longer read {} of {}",
            &view.id[..16],
            view.request.provider_name,
            view.request.stream,
            view.request.device_name
        );
        match view.delivery_note.as_deref() {
            None => println!(
                "the device accepted it and rotated the stream key: readings from now on are \
                 sealed under a key the provider does not get"
            ),
            Some(note) => println!("{note}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `latchkey consent log DEVICE`.
pub async fn log(profile: &Profile, device: &str, json: bool) -> anyhow::Result<ExitCode> {
    let record = profile.find_device(device)?;
    let entries = profile.consent_log(&record.id).await?;
    if json {
        println!(
            "{}",
            serde_json::json!({ "device": record.id.to_string(), "entries": entries })
        );
        return Ok(ExitCode::SUCCESS);
    }
    if entries.is_empty() {
        println!(
            "{}: the consent log is empty (verified on the nodes)",
            record.name
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:>4}  {:<22} {:<8} {:<20} {:<8} {:<32} BY",
        "SEQ", "TIME", "KIND", "PROVIDER", "STREAM", "PURPOSE"
    );
    for e in &entries {
        let purpose: String = e.purpose.chars().take(32).collect();
        println!(
            "{:>4}  {:<22} {:<8} {:<20} {:<8} {:<32} {}",
            e.seq,
            when::show(e.time_ms),
            e.kind,
            e.provider_name,
            e.stream,
            purpose,
            signer_label(&e.signer, e.signer_is_me)
        );
    }
    println!(
        "{} entries, hash-linked and signed by the device's owners; verified against its ownership chain",
        entries.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// `latchkey consent requests`.
pub fn requests(profile: &Profile, json: bool) -> anyhow::Result<ExitCode> {
    let list = profile.consent_requests()?;
    if json {
        println!("{}", serde_json::json!({ "requests": list }));
    } else if list.is_empty() {
        println!("no pending requests");
    } else {
        for r in &list {
            println!("{}  {}", &r.id[..16], r.summary);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn snapshot_line(s: &MeterSnapshot) -> String {
    let kw = s
        .power_kw
        .map_or_else(|| "-".to_owned(), |p| format!("{p:.3} kW"));
    let today = s
        .energy_today_kwh
        .map_or_else(|| "-".to_owned(), |e| format!("{e:.3} kWh"));
    let at = s.last_reading_ms.map_or_else(String::new, when::show);
    format!(
        "{at}  power {kw}, today {today}  (key {}, seq {}, {} readings)",
        s.key_id.map_or_else(|| "-".into(), |k| k.to_string()),
        s.last_seq.map_or_else(|| "-".into(), |k| k.to_string()),
        s.readings
    )
}

/// `latchkey meter DEVICE --broker URL`.
pub async fn meter(
    profile: &Profile,
    device: &str,
    broker: &str,
    stream: &str,
    follow: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    // Checked before the device is asked anything.
    latchkey_owner::meter::parse_broker(broker)?;
    let record = profile.find_device(device)?;
    // The device sends its owners a copy of the stream key once they subscribed.
    match latchkey_owner::events::subscribe_device(profile, &record.id).await {
        Ok(r) => {
            for (name, why) in &r.failed {
                eprintln!(
                    "could not subscribe to {name} yet ({why}); a key copy sent before still works"
                );
            }
        }
        Err(e) => eprintln!("could not subscribe: {e}"),
    }
    let watch = MeterWatch::start(profile, record.id, stream, broker).await?;
    let print = |s: &MeterSnapshot| -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string(s)?);
        } else {
            println!("{}", snapshot_line(s));
        }
        std::io::stdout().flush().ok();
        Ok(())
    };
    let mut stop = Box::pin(tokio::signal::ctrl_c());
    let started = tokio::time::Instant::now();
    let mut shown = 0;
    let mut last_problem: Option<String> = None;
    loop {
        let s = watch.snapshot();
        if s.readings > shown {
            shown = s.readings;
            print(&s)?;
            if !follow {
                return Ok(ExitCode::SUCCESS);
            }
        }
        if s.problem != last_problem {
            if let Some(p) = &s.problem {
                eprintln!("{}: {p}", record.name);
            }
            last_problem = s.problem.clone();
        }
        if !follow && started.elapsed() > FIRST_READING_WAIT {
            anyhow::bail!(
                "no reading of {stream} from {} within {} s: {}",
                record.name,
                FIRST_READING_WAIT.as_secs(),
                s.problem.unwrap_or_else(|| "nothing arrived".into())
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = &mut stop => return Ok(ExitCode::SUCCESS),
        }
    }
}
