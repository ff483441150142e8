//! Images chosen in the UI arrive as bytes, not paths (a webview's file picker gives no path).
//! They are decoded here to grey levels and read by the owner core's QR reader.

use data_encoding::BASE64;
use zeroize::Zeroizing;

use crate::error::CommandError;

/// Named in errors; the bytes have no file name.
const SOURCE: &str = "the chosen image";

/// Photos from phones are far larger than a QR code needs; bigger images are scaled down first
/// so decoding stays quick (ZXing finds codes well at this size).
const MAX_SIDE: u32 = 1600;

/// The claim code's text from a PNG or JPEG given as base64.
pub fn claim_text_from_image(image_base64: &str) -> Result<Zeroizing<String>, CommandError> {
    let bytes = Zeroizing::new(BASE64.decode(image_base64.as_bytes()).map_err(|e| {
        CommandError::new(
            "image",
            format!("The image did not arrive intact ({e}); choose it again."),
        )
    })?);
    let image = image::load_from_memory(&bytes).map_err(|e| {
        CommandError::from(latchkey_owner::Error::Image {
            path: SOURCE.into(),
            why: e.to_string(),
        })
    })?;
    let image = if image.width().max(image.height()) > MAX_SIDE {
        image.thumbnail(MAX_SIDE, MAX_SIDE)
    } else {
        image
    };
    let grey = image.to_luma8();
    let (width, height) = grey.dimensions();
    latchkey_owner::qr::decode_luma(grey.into_raw(), width, height, SOURCE)
        .map_err(CommandError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_refused_with_a_code() {
        assert_eq!(claim_text_from_image("!!!").unwrap_err().code, "image");
        let not_an_image = BASE64.encode(b"hello");
        assert_eq!(
            claim_text_from_image(&not_an_image).unwrap_err().code,
            "image"
        );
    }

    #[test]
    fn a_blank_picture_has_no_code() {
        let blank = image::GrayImage::from_pixel(64, 64, image::Luma([255]));
        let mut png = Vec::new();
        blank
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let err = claim_text_from_image(&BASE64.encode(&png)).unwrap_err();
        assert_eq!(err.code, "qr_not_found");
    }
}
