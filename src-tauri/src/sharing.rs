//! Commands for sharing and co-owning: invitations and grants, revocation, the audit log,
//! owners and proposals, and the guest side (accepting a `latchkey://invite/…` link). Thin
//! adapters like `commands.rs`; the rules live in latchkey-owner.

use data_encoding::BASE64;
use latchkey_owner::stays::StayTimes;
use latchkey_owner::{InviteRequest, OwnerChange};
use latchkey_proto::keys::PublicKey;
use latchkey_proto::schedule::WeeklySchedule;
use tauri::State;
use zeroize::Zeroizing;

use crate::error::CommandError;
use crate::state::AppState;
use crate::views::{
    AuditView, GrantView, HeldInvitationView, InvitationView, OpenResult, OwnersDetail,
    ProposalResult, ProposalView, RevokeResult, ShareView, StayView, StaysSyncResult,
};

/// A device's owners, threshold and waiting proposals (asks the nodes and the mailbox).
#[tauri::command]
pub async fn device_owners(
    state: State<'_, AppState>,
    device: String,
) -> Result<OwnersDetail, CommandError> {
    state
        .with_profile(move |p| async move { Ok(OwnersDetail::from(&p.owners(&device).await?)) })
        .await
}

/// Proposes adding or removing one owner and/or a new threshold.
#[tauri::command]
pub async fn propose_owners(
    state: State<'_, AppState>,
    device: String,
    add: Option<String>,
    remove: Option<String>,
    threshold: Option<u8>,
) -> Result<ProposalResult, CommandError> {
    let key = |text: Option<String>| -> Result<Vec<PublicKey>, CommandError> {
        text.filter(|t| !t.trim().is_empty())
            .map(|t| PublicKey::parse(t.trim()).map_err(latchkey_owner::Error::from))
            .transpose()
            .map(|k| k.into_iter().collect())
            .map_err(CommandError::from)
    };
    let change = OwnerChange {
        add: key(add)?,
        remove: key(remove)?,
        threshold,
    };
    state
        .with_profile(move |p| async move {
            Ok(ProposalResult::from(
                &p.propose_owners(&device, &change).await?,
            ))
        })
        .await
}

/// Every owner change waiting, for devices this profile owns or is offered (reads the
/// mailbox on the nodes first): where a recipient finds a transfer to it.
#[tauri::command]
pub async fn proposals(state: State<'_, AppState>) -> Result<Vec<ProposalView>, CommandError> {
    state
        .with_profile(move |p| async move {
            // Offline (or no nodes yet), the proposals already held are still worth showing.
            if let Err(e) = p.sync_mailbox().await {
                tracing::warn!(error = %e, "owner mailbox not read; listing proposals held");
            }
            Ok(p.proposals()?.iter().map(ProposalView::from).collect())
        })
        .await
}

/// Accepts a change that adds this profile's key (its signature proves it holds the key).
#[tauri::command]
pub async fn accept_proposal(
    state: State<'_, AppState>,
    id: String,
) -> Result<ProposalResult, CommandError> {
    state
        .with_profile(
            move |p| async move { Ok(ProposalResult::from(&p.accept_proposal(&id).await?)) },
        )
        .await
}

#[tauri::command]
pub async fn approve_proposal(
    state: State<'_, AppState>,
    id: String,
) -> Result<ProposalResult, CommandError> {
    state
        .with_profile(move |p| async move { Ok(ProposalResult::from(&p.approve(&id).await?)) })
        .await
}

/// Grants this profile issued, for one device or all.
#[tauri::command]
pub async fn grants(
    state: State<'_, AppState>,
    device: Option<String>,
) -> Result<Vec<GrantView>, CommandError> {
    state
        .with_profile(move |p| async move {
            Ok(p.grants(device.as_deref())?
                .iter()
                .map(GrantView::from)
                .collect())
        })
        .await
}

/// Invites a guest: one grant for `actions` at every door in `doors` between `from_ms` and
/// `until_ms` (within the `weekly` windows in `tz`, when given), as a short link and QR;
/// `pinned_args` are the exact argument strings the guest may send (none: no arguments);
/// `from_grant` issues below a held invitation that allows it instead of as an owner.
#[tauri::command]
#[allow(clippy::too_many_arguments)]
pub async fn invite(
    state: State<'_, AppState>,
    doors: Vec<String>,
    guest_name: String,
    from_ms: u64,
    until_ms: u64,
    actions: Vec<String>,
    use_limit: Option<u32>,
    pinned_args: Option<Vec<String>>,
    weekly: Vec<String>,
    tz: Option<String>,
    may_delegate: bool,
    from_grant: Option<String>,
) -> Result<InvitationView, CommandError> {
    let schedule = if weekly.is_empty() {
        None
    } else {
        let specs: Vec<&str> = weekly.iter().map(String::as_str).collect();
        let tz = tz.as_deref().map(str::trim).unwrap_or_default();
        Some(WeeklySchedule::parse_spec(&specs, tz).map_err(latchkey_owner::Error::from)?)
    };
    let request = InviteRequest {
        guest_name,
        from_ms,
        until_ms,
        actions,
        use_limit,
        arguments: pinned_args
            .unwrap_or_default()
            .into_iter()
            .map(String::into_bytes)
            .collect(),
        may_delegate,
        from_grant,
        schedule,
        ..InviteRequest::default()
    };
    state
        .with_profile(move |p| async move {
            let queries: Vec<&str> = doors.iter().map(String::as_str).collect();
            let issued = p.invite_doors(&queries, &request).await?;
            let share = share_view(issued.link.as_str())?;
            Ok(InvitationView {
                link: share.link,
                qr: share.qr,
                qr_version: issued.qr_version,
                grant: GrantView::from(&issued.grant),
            })
        })
        .await
}

#[tauri::command]
pub async fn revoke(
    state: State<'_, AppState>,
    grant_id: String,
) -> Result<RevokeResult, CommandError> {
    state
        .with_profile(move |p| async move { Ok(RevokeResult::from(&p.revoke(&grant_id).await?)) })
        .await
}

/// The guest side: keeps the invitation from a `latchkey://invite/…` link.
#[tauri::command]
pub async fn accept_invitation(
    state: State<'_, AppState>,
    link: String,
) -> Result<HeldInvitationView, CommandError> {
    let link = Zeroizing::new(link);
    let (held, last) = state
        .with_profile(move |p| async move {
            let held = p.accept(link.trim()).await?;
            let last = last_result(&p, &held.device.to_string())?;
            Ok((held, last))
        })
        .await?;
    Ok(HeldInvitationView::new(&held, last))
}

/// The device's last answer kept in the profile, as the card shows it.
fn last_result(
    p: &latchkey_owner::Profile,
    device: &str,
) -> latchkey_owner::Result<Option<OpenResult>> {
    // A device no longer in the profile has no card to show an answer on.
    let Ok(record) = p.find_device(device) else {
        return Ok(None);
    };
    Ok(p.last_answer(&record)?
        .map(|a| OpenResult::from_report(&a.report, a.received_ms)))
}

/// Invitations this profile holds as a guest.
#[tauri::command]
pub async fn invitations(
    state: State<'_, AppState>,
) -> Result<Vec<HeldInvitationView>, CommandError> {
    let held = state
        .with_profile(|p| async move {
            p.invitations()?
                .into_iter()
                .map(|h| {
                    let last = last_result(&p, &h.device.to_string())?;
                    Ok((h, last))
                })
                .collect::<latchkey_owner::Result<Vec<_>>>()
        })
        .await?;
    Ok(held
        .into_iter()
        .map(|(h, last)| HeldInvitationView::new(&h, last))
        .collect())
}

/// The newest page of a device's signed audit log (owners only; the device answers it).
#[tauri::command]
pub async fn audit(state: State<'_, AppState>, device: String) -> Result<AuditView, CommandError> {
    state
        .with_profile(move |p| async move { Ok(AuditView::from(&p.audit(&device, None).await?)) })
        .await
}

/// Stays from the booking calendar, as last synced (no network).
#[tauri::command]
pub async fn stays(state: State<'_, AppState>) -> Result<Vec<StayView>, CommandError> {
    state
        .with_profile(|p| async move { Ok(p.stays()?.iter().map(StayView::from).collect()) })
        .await
}

/// Syncs a booking calendar to one invitation per stay for `doors`: the text of a file the
/// person chose (`ics_text`, named by `source`, its file name), or the calendar at `source`
/// (an `http(s)://` URL or a file path).
#[tauri::command]
pub async fn stays_sync(
    state: State<'_, AppState>,
    doors: Vec<String>,
    ics_text: Option<String>,
    source: String,
    check_in: String,
    check_out: String,
    tz: Option<String>,
) -> Result<StaysSyncResult, CommandError> {
    let tz = tz.filter(|t| !t.trim().is_empty());
    let times = StayTimes::parse(&check_in, &check_out, tz.as_deref().map(str::trim))?;
    state
        .with_profile(move |p| async move {
            let doors: Vec<&str> = doors.iter().map(String::as_str).collect();
            let report = match &ics_text {
                Some(text) => p.sync_stays_text(&doors, &source, text, &times).await?,
                None => p.sync_stays(&doors, &source, &times).await?,
            };
            Ok(StaysSyncResult::new(&report, &p.stays()?))
        })
        .await
}

/// A stay's links with their QR codes (one per door it opens), to hand the guest; the stay
/// counts as sent from now on.
#[tauri::command]
pub async fn share_stay(
    state: State<'_, AppState>,
    source: String,
    uid: String,
) -> Result<Vec<ShareView>, CommandError> {
    state
        .with_profile(move |p| async move {
            let stay = p
                .stays()?
                .into_iter()
                .find(|s| s.source == source && s.uid == uid)
                .ok_or_else(|| {
                    latchkey_owner::Error::BadStay(format!(
                        "no stay {uid} from {source}; import the calendar again"
                    ))
                })?;
            let mut shares = Vec::new();
            for link in &stay.links {
                if let Some(text) = &link.link {
                    let mut share = share_view(text)?;
                    share.door = Some(link.device_name.clone());
                    shares.push(share);
                }
            }
            if shares.is_empty() {
                return Err(latchkey_owner::Error::BadStay(format!(
                    "the stay of {} has no link to share: it was revoked (cancelled in the \
                     calendar)",
                    stay.guest_name
                )));
            }
            p.mark_stay_shared(&source, &uid)?;
            Ok(shares)
        })
        .await
}

/// A link with its QR code as a data URL, for the UI to show and copy. The QR version stays
/// 0 (unknown) until the owner core reports it with short links.
fn share_view(link: &str) -> latchkey_owner::Result<ShareView> {
    let png = latchkey_owner::invitation_qr_png(link)?;
    Ok(ShareView {
        door: None,
        link: link.to_owned(),
        qr: format!("data:image/png;base64,{}", BASE64.encode(&png)),
        qr_version: latchkey_owner::qr_version(link)?,
    })
}
