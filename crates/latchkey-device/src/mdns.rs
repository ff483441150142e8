//! mDNS: advertises `_latchkey._tcp.local.` with the device id in a TXT record, so owner apps
//! on the local network find the agent's address without the QR.

use std::net::SocketAddr;

use latchkey_proto::keys::DeviceId;
use mdns_sd::{IfKind, ServiceDaemon, ServiceInfo};

pub const SERVICE_TYPE: &str = "_latchkey._tcp.local.";

/// A registered service; [`Advertiser::stop`] withdraws it.
pub struct Advertiser {
    daemon: ServiceDaemon,
    fullname: String,
}

impl std::fmt::Debug for Advertiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Advertiser")
            .field("fullname", &self.fullname)
            .finish()
    }
}

/// The instance name: the device name and its short id (so two "Front door"s differ), cut to
/// the 63 bytes a DNS label allows.
pub fn instance_name(name: &str, device: &DeviceId) -> String {
    let suffix = format!(" {}", device.short());
    let mut head = name.to_owned();
    let room = 63 - suffix.len();
    if head.len() > room {
        let mut cut = room;
        while !head.is_char_boundary(cut) {
            cut -= 1;
        }
        head.truncate(cut);
    }
    head + &suffix
}

pub fn advertise(name: &str, device: &DeviceId, addr: SocketAddr) -> Result<Advertiser, String> {
    let daemon = ServiceDaemon::new().map_err(|e| e.to_string())?;
    let host = format!("latchkey-{}.local.", device.short().to_ascii_lowercase());
    let id = device.to_string();
    let properties = [("id", id.as_str()), ("v", "1")];
    let instance = instance_name(name, device);
    let info = if addr.ip().is_unspecified() {
        ServiceInfo::new(
            SERVICE_TYPE,
            &instance,
            &host,
            (),
            addr.port(),
            &properties[..],
        )
        .map(|i| i.enable_addr_auto())
    } else {
        ServiceInfo::new(
            SERVICE_TYPE,
            &instance,
            &host,
            addr.ip(),
            addr.port(),
            &properties[..],
        )
    }
    .map_err(|e| e.to_string())?;
    // Announce only where the agent listens: a loopback or single-address listener is not
    // advertised on the other interfaces.
    if !addr.ip().is_unspecified() {
        let only = if addr.ip().is_loopback() && addr.is_ipv4() {
            IfKind::LoopbackV4
        } else if addr.ip().is_loopback() {
            IfKind::LoopbackV6
        } else {
            IfKind::Addr(addr.ip())
        };
        daemon
            .disable_interface(IfKind::All)
            .and_then(|_| daemon.enable_interface(only))
            .map_err(|e| e.to_string())?;
    }
    let fullname = info.get_fullname().to_owned();
    daemon.register(info).map_err(|e| e.to_string())?;
    tracing::info!(service = %fullname, "advertising on mDNS");
    Ok(Advertiser { daemon, fullname })
}

impl Advertiser {
    pub fn fullname(&self) -> &str {
        &self.fullname
    }

    pub fn stop(self) {
        let _ = self.daemon.unregister(&self.fullname);
        let _ = self.daemon.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use latchkey_testkit::TestDevice;

    #[test]
    fn instance_names_fit_a_label() {
        let id = TestDevice::new(1, "d").keys.device_id();
        let n = instance_name(&"é".repeat(60), &id);
        assert!(n.len() <= 63);
        assert!(n.ends_with(&id.short()));
        assert_eq!(instance_name("Door", &id), format!("Door {}", id.short()));
    }
}
