//! The claim QR: the claim code text (docs/PROTOCOL.md §2) for the current setup key, drawn
//! for the terminal and as a PNG. It carries the setup secret: it is shown locally and written
//! only to files readable by the agent's user, never sent over the network.

use std::net::{IpAddr, SocketAddr};

use image::{ImageEncoder, Luma};
use latchkey_proto::claim::{DeviceAddr, MAX_CLAIM_ADDRS};
use latchkey_proto::device::DeviceKeys;
use qrcode::render::unicode::Dense1x2;
use qrcode::{EcLevel, QrCode};
use zeroize::Zeroizing;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::files::{DeviceDir, CLAIM_PNG, CLAIM_TXT};

/// Where owners can reach the device: the configured `advertise` list, else the listen address
/// (or, when it listens on all interfaces, the interfaces' addresses and `host.local`).
pub fn claim_addresses(config: &Config) -> Vec<DeviceAddr> {
    if !config.advertise.is_empty() {
        return config
            .advertise
            .iter()
            .filter_map(|a| DeviceAddr::parse(a).ok())
            .take(MAX_CLAIM_ADDRS)
            .collect();
    }
    let port = config.listen.port();
    if port == 0 {
        // The port is not known before the agent runs; owners find it by mDNS or use relays.
        return Vec::new();
    }
    if !config.listen.ip().is_unspecified() {
        return vec![DeviceAddr::Socket(config.listen)];
    }
    let mut addrs = Vec::new();
    if let Ok(interfaces) = if_addrs::get_if_addrs() {
        let mut ips: Vec<IpAddr> = interfaces
            .iter()
            .filter(|i| !i.is_loopback())
            .map(|i| i.ip())
            .filter(|ip| match ip {
                IpAddr::V4(_) => config.listen.is_ipv4() || config.listen.ip().is_unspecified(),
                IpAddr::V6(v6) => config.listen.is_ipv6() && !v6.is_unicast_link_local(),
            })
            .collect();
        ips.sort_by_key(|ip| !ip.is_ipv4());
        addrs.extend(
            ips.into_iter()
                .take(2)
                .map(|ip| DeviceAddr::Socket(SocketAddr::new(ip, port))),
        );
    }
    if let Some(host) = local_host_name() {
        addrs.push(DeviceAddr::Host {
            host: format!("{host}.local"),
            port,
        });
    }
    addrs.truncate(MAX_CLAIM_ADDRS);
    addrs
}

/// The machine's host name, if it is a valid DNS label.
pub fn local_host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim().to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.len() <= 57
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    valid.then_some(name)
}

/// The claim text for `keys`, dropping addresses from the end until it fits the 300-character
/// limit.
pub fn claim_text(
    keys: &DeviceKeys,
    name: &str,
    mut addrs: Vec<DeviceAddr>,
) -> Result<Zeroizing<String>> {
    loop {
        match keys.claim_payload(name, addrs.clone()).to_text() {
            Ok(text) => return Ok(text),
            Err(_) if !addrs.is_empty() => {
                addrs.pop();
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn qr(text: &str) -> Result<QrCode> {
    // Medium error correction keeps a 300-character code scannable from a small screen.
    QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)
        .map_err(|e| Error::Qr(e.to_string()))
}

/// The QR drawn with Unicode half blocks, light on dark so it scans from a dark terminal.
pub fn render_terminal(text: &str) -> Result<String> {
    Ok(qr(text)?
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

/// The QR as a PNG (black on white, 8 pixels a module at least).
pub fn render_png(text: &str) -> Result<Vec<u8>> {
    let img = qr(text)?
        .render::<Luma<u8>>()
        .module_dimensions(8, 8)
        .build();
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::L8,
        )
        .map_err(|e| Error::Qr(e.to_string()))?;
    Ok(png)
}

/// Writes `claim.txt` and `claim.png` (mode 0600) and returns the text.
pub fn write_claim_files(
    dir: &DeviceDir,
    keys: &DeviceKeys,
    config: &Config,
) -> Result<Zeroizing<String>> {
    let text = claim_text(keys, &config.name, claim_addresses(config))?;
    dir.write_private(CLAIM_TXT, format!("{}\n", text.as_str()).as_bytes())?;
    dir.write_private(CLAIM_PNG, &render_png(&text)?)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use latchkey_proto::claim::ClaimPayload;
    use latchkey_testkit::TestDevice;

    #[test]
    fn claim_text_parses_back_and_draws() {
        let d = TestDevice::new(7, "A very long front door name indeed");
        let addrs = vec![
            DeviceAddr::parse("192.168.1.20:7500").unwrap(),
            DeviceAddr::parse("[fd00::1234:5678:9abc:def0]:7500").unwrap(),
            DeviceAddr::parse("front-door-hub.local:7500").unwrap(),
            DeviceAddr::parse("10.0.0.2:7500").unwrap(),
        ];
        let text = claim_text(&d.keys, &d.name, addrs).unwrap();
        assert!(text.len() <= 300);
        let back = ClaimPayload::parse(&text).unwrap();
        assert_eq!(back.device_id(), d.keys.device_id());
        back.check_kem(d.keys.kem.public()).unwrap();
        assert_eq!(back.setup_key().public_key(), d.keys.setup.public_key());
        let term = render_terminal(&text).unwrap();
        assert!(term.lines().count() > 20);
        let png = render_png(&text).unwrap();
        assert_eq!(&png[1..4], b"PNG");
    }
}
