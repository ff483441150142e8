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
    let grey = image.into_luma8();
    let (width, height) = grey.dimensions();
    decode_luma(grey.into_raw(), width, height, &shown)
}

/// The text of the QR code in a grey-level frame (one byte per pixel, row by row), as a camera
/// preview or an image decoded in memory gives it. `source` names the frame in the error.
pub fn decode_luma(
    luma: Vec<u8>,
    width: u32,
    height: u32,
    source: &str,
) -> Result<Zeroizing<String>> {
    if width == 0 || height == 0 || luma.len() != width as usize * height as usize {
        return Err(Error::Image {
            path: source.to_owned(),
            why: format!(
                "{} bytes do not make a {width}x{height} grey frame",
                luma.len()
            ),
        });
    }
    let mut hints = DecodeHints {
        TryHarder: Some(true),
        ..DecodeHints::default()
    };
    let result = rxing::helpers::detect_in_luma_with_hints(
        luma,
        width,
        height,
        Some(BarcodeFormat::QR_CODE),
        &mut hints,
    )
    .map_err(|_| Error::QrNotFound {
        path: source.to_owned(),
    })?;
    Ok(Zeroizing::new(result.getText().to_owned()))
}
