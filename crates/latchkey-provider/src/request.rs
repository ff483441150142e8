//! Consent requests: what the provider asks an owner for (stream, purpose, retention, period,
//! terms), signed with the provider's key, handed out as a `LATCHKEY://C/…` link and QR code.

use latchkey_proto::consent::{purpose, ConsentRequest, ProviderIdentity, SignedConsentRequest};
use latchkey_proto::keys::DeviceId;
use latchkey_proto::stream::validate_stream_name;
use qrcode::render::unicode::Dense1x2;
use qrcode::{EcLevel, QrCode};
use rand_core::{CryptoRng, RngCore};

use crate::error::{Error, Result};
use crate::identity::Secrets;
use crate::profile::{Profile, RequestRecord};

/// What the provider asks for, before it is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSpec {
    pub device: DeviceId,
    pub stream: String,
    pub purpose_code: u16,
    pub purpose: String,
    pub retention_days: u32,
    pub until_ms: Option<u64>,
    pub history: bool,
    pub terms: Option<String>,
}

/// `insights`, `billing`, `research`, `grid`, `monitoring`, `other` (or the number).
pub fn parse_purpose_code(text: &str) -> Result<u16> {
    let code = match text.trim().to_ascii_lowercase().as_str() {
        "other" => purpose::OTHER,
        "insights" => purpose::INSIGHTS,
        "billing" => purpose::BILLING,
        "research" => purpose::RESEARCH,
        "grid" => purpose::GRID,
        "monitoring" => purpose::MONITORING,
        other => other.parse().map_err(|_| Error::BadInput {
            what: "purpose code",
            why: format!(
                "\"{text}\" is not one of insights, billing, research, grid, monitoring, other"
            ),
        })?,
    };
    Ok(code)
}

/// Signs a request with the provider's key, records it in the profile and returns it.
pub fn make_request(
    profile: &Profile,
    secrets: &Secrets,
    spec: RequestSpec,
    now_ms: u64,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<(SignedConsentRequest, RequestRecord)> {
    validate_stream_name(&spec.stream).map_err(|e| Error::BadInput {
        what: "stream name",
        why: e.to_string(),
    })?;
    if let Some(until) = spec.until_ms {
        if until <= now_ms {
            return Err(Error::BadInput {
                what: "--until",
                why: "it is in the past; give a time after now".into(),
            });
        }
    }
    let identity = profile.identity();
    let mut nonce = [0u8; 16];
    rng.fill_bytes(&mut nonce);
    let request = ConsentRequest {
        provider: ProviderIdentity {
            name: identity.name.clone(),
            url: identity.url.clone(),
            signing: secrets.signing.public_key(),
            kem: secrets.kem.public().clone(),
        },
        device: spec.device,
        stream: spec.stream.clone(),
        purpose_code: spec.purpose_code,
        purpose: spec.purpose.clone(),
        retention_days: spec.retention_days,
        until_ms: spec.until_ms,
        history: spec.history,
        terms: spec.terms.clone(),
        issued_ms: now_ms,
        nonce,
    };
    let signed = request.sign(&secrets.signing)?;
    let record = RequestRecord {
        id: signed.id().to_string(),
        link: signed.to_link(),
        device: spec.device.to_string(),
        stream: spec.stream,
        purpose_code: spec.purpose_code,
        purpose_label: purpose::label(spec.purpose_code).to_owned(),
        purpose: spec.purpose,
        retention_days: spec.retention_days,
        until_ms: spec.until_ms,
        history: spec.history,
        terms: spec.terms,
        issued_ms: now_ms,
    };
    profile.add_request(record.clone())?;
    Ok((signed, record))
}

/// The link as a QR code for a terminal (light modules on a dark terminal read fine).
pub fn terminal_qr(link: &str) -> Result<String> {
    let code = QrCode::with_error_correction_level(link, EcLevel::M)
        .or_else(|_| QrCode::with_error_correction_level(link, EcLevel::L))
        .map_err(|e| Error::BadInput {
            what: "request link",
            why: format!("too long for a QR code: {e}"),
        })?;
    Ok(code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}
