//! Reading a claim QR from a PNG screenshot or a photo (rxing, a ZXing port).

use std::path::Path;

use rxing::{BarcodeFormat, DecodeHints};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// The text of the QR code in the image at `path`.
pub fn decode_image(path: &Path) -> Result<Zeroizing<String>> {
    let shown = path.display().to_string();
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| Error::Image {
        path: shown.clone(),
        why: e.to_string(),
    })?);
    let image = image::load_from_memory(&bytes).map_err(|e| Error::Image {
        path: shown.clone(),
        why: e.to_string(),
    })?;
    let mut hints = DecodeHints {
        TryHarder: Some(true),
        ..DecodeHints::default()
    };
    let result =
        rxing::helpers::detect_in_image_with_hints(image, Some(BarcodeFormat::QR_CODE), &mut hints)
            .map_err(|_| Error::QrNotFound { path: shown })?;
    Ok(Zeroizing::new(result.getText().to_owned()))
}
