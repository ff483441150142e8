//! The longest short link fits a QR code of version 10 at error correction level M, the size a
//! phone camera reads from another phone's screen at arm's length (docs/PROTOCOL.md §10). It
//! does because every character is in the QR alphanumeric set (upper-case base32, the upper-case
//! prefix): the same text in lower case needs byte mode and a larger code.

use latchkey_proto::shortlink::{ShortLink, MAX_SHORT_LINK_TEXT};
use qrcode::{EcLevel, QrCode, Version};
use zeroize::Zeroizing;

fn longest() -> String {
    (1..=200)
        .rev()
        .map(|n| ShortLink {
            secret: Zeroizing::new([0xa5; 16]),
            nodes: vec![format!("https://{}", "n".repeat(n))],
        })
        .find_map(|l| l.to_text().ok())
        .map(|t| t.to_string())
        .unwrap()
}

fn version(text: &str) -> i16 {
    match QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)
        .unwrap()
        .version()
    {
        Version::Normal(v) => v,
        Version::Micro(v) => v,
    }
}

#[test]
fn the_longest_short_link_fits_qr_version_10_at_level_m() {
    let text = longest();
    assert_eq!(text.len(), MAX_SHORT_LINK_TEXT);
    assert!(version(&text) <= 10, "version {}", version(&text));
    // Why upper case: the same link in lower case needs byte mode and a larger code.
    assert!(version(&text.to_lowercase()) > 10);
    // A typical link (three nodes) is smaller still.
    let typical = ShortLink {
        secret: Zeroizing::new([7; 16]),
        nodes: vec![
            "https://n1.latchkey.example".into(),
            "https://n2.latchkey.example".into(),
            "https://n3.latchkey.example".into(),
        ],
    };
    let text = typical.to_text().unwrap();
    println!(
        "typical: {} characters, QR version {}",
        text.len(),
        version(&text)
    );
    assert!(version(&text) <= 10);
}
