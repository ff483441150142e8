//! The desktop camera, for scanning a device's claim QR: nokhwa opens the first camera, a worker
//! thread takes a few frames a second, the owner core's QR reader looks for a code in each, and
//! the window gets a small preview of each frame (event `camera-frame`) and the code once one is
//! read (event `camera-code`). A machine without a camera gets a clear error and keeps the photo
//! import. (On phones the app would use the barcode-scanner plugin instead; not built here.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use data_encoding::BASE64;
use image::{DynamicImage, ImageEncoder};
use nokhwa::pixel_format::LumaFormat;
use nokhwa::utils::{CameraIndex, RequestedFormat, RequestedFormatType};
use nokhwa::{Buffer, Camera};
use serde::Serialize;
use tauri::{AppHandle, Emitter, Runtime, State};
use ts_rs::TS;

use crate::error::CommandError;

/// Four frames a second: enough to aim a phone-sized code, little enough for a laptop's CPU.
const FRAME_INTERVAL: Duration = Duration::from_millis(250);
/// The preview's longest side, in pixels.
const PREVIEW_SIDE: u32 = 320;
/// How long opening the camera may take before the UI is told it failed.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// The running scan, if any: setting the flag stops its worker.
#[derive(Default)]
pub struct CameraState {
    running: Mutex<Option<Arc<AtomicBool>>>,
}

/// One preview frame, as the window shows it.
#[derive(Debug, Clone, Serialize, TS)]
pub struct CameraFrame {
    pub jpeg_base64: String,
    pub width: u32,
    pub height: u32,
}

/// A preview of `frame` and, when the frame shows a Latchkey claim code, its text.
pub fn read_frame(frame: &Buffer) -> Result<(CameraFrame, Option<String>), String> {
    let luma = frame
        .decode_image::<LumaFormat>()
        .map_err(|e| format!("the camera's frame could not be decoded: {e}"))?;
    let (width, height) = luma.dimensions();
    let code = latchkey_owner::qr::decode_luma(luma.as_raw().clone(), width, height, "the camera")
        .ok()
        .filter(|text| text.to_ascii_uppercase().starts_with("LATCHKEY:"))
        .map(|text| text.as_str().to_owned());
    let preview = if width.max(height) > PREVIEW_SIDE {
        DynamicImage::ImageLuma8(luma)
            .thumbnail(PREVIEW_SIDE, PREVIEW_SIDE)
            .to_luma8()
    } else {
        luma
    };
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 70)
        .write_image(
            preview.as_raw(),
            preview.width(),
            preview.height(),
            image::ExtendedColorType::L8,
        )
        .map_err(|e| e.to_string())?;
    Ok((
        CameraFrame {
            jpeg_base64: BASE64.encode(&jpeg),
            width: preview.width(),
            height: preview.height(),
        },
        code,
    ))
}

fn open_first_camera() -> Result<Camera, String> {
    let format = RequestedFormat::new::<LumaFormat>(RequestedFormatType::AbsoluteHighestFrameRate);
    let mut camera = Camera::new(CameraIndex::Index(0), format).map_err(|e| e.to_string())?;
    camera.open_stream().map_err(|e| e.to_string())?;
    Ok(camera)
}

fn no_camera(why: &str) -> CommandError {
    CommandError::new(
        "no_camera",
        format!(
            "No camera could be opened ({why}). Take a photo or screenshot of the code and choose it instead."
        ),
    )
}

/// Starts scanning; frames and the code arrive as events. Fails when no camera opens.
#[tauri::command]
pub async fn camera_start<R: Runtime>(
    app: AppHandle<R>,
    state: State<'_, CameraState>,
) -> Result<(), CommandError> {
    camera_stop(state.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let (opened_tx, opened_rx) = mpsc::channel::<Result<(), String>>();
    let worker_stop = stop.clone();
    // The camera handle stays on its own thread: it is opened, read and closed there.
    std::thread::spawn(move || {
        let mut camera = match open_first_camera() {
            Ok(camera) => {
                let _ = opened_tx.send(Ok(()));
                camera
            }
            Err(why) => {
                let _ = opened_tx.send(Err(why));
                return;
            }
        };
        while !worker_stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let read = camera
                .frame()
                .map_err(|e| e.to_string())
                .and_then(|f| read_frame(&f));
            match read {
                Ok((preview, code)) => {
                    let _ = app.emit("camera-frame", preview);
                    if let Some(text) = code {
                        let _ = app.emit("camera-code", text);
                        break;
                    }
                }
                Err(why) => {
                    let _ = app.emit("camera-error", why);
                    break;
                }
            }
            std::thread::sleep(FRAME_INTERVAL.saturating_sub(started.elapsed()));
        }
        let _ = camera.stop_stream();
    });
    let opened = tauri::async_runtime::spawn_blocking(move || opened_rx.recv_timeout(OPEN_TIMEOUT))
        .await
        .map_err(|e| no_camera(&e.to_string()))?;
    match opened {
        Ok(Ok(())) => {
            if let Ok(mut running) = state.running.lock() {
                *running = Some(stop);
            }
            Ok(())
        }
        Ok(Err(why)) => Err(no_camera(&why)),
        Err(_) => {
            stop.store(true, Ordering::Relaxed);
            Err(no_camera("it did not answer within 10 s"))
        }
    }
}

/// Stops scanning (nothing happens when no scan runs).
#[tauri::command]
pub fn camera_stop(state: State<'_, CameraState>) {
    if let Some(stop) = state.running.lock().ok().and_then(|mut r| r.take()) {
        stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nokhwa::utils::{FrameFormat, Resolution};

    /// A camera frame as many webcams deliver it (YUYV 4:2:2) showing `text` as a QR code,
    /// with a margin so it sits in a larger scene.
    fn yuyv_frame_showing(text: &str) -> Buffer {
        let code = qrcode::QrCode::new(text.as_bytes()).unwrap();
        let qr = code
            .render::<image::Luma<u8>>()
            .module_dimensions(4, 4)
            .build();
        let (width, height) = (qr.width() + 80, qr.height() + 60);
        let (width, height) = (width + width % 2, height);
        let mut yuyv = Vec::with_capacity((width * height * 2) as usize);
        for y in 0..height {
            for x in 0..width {
                let inside = x >= 40 && y >= 30 && x - 40 < qr.width() && y - 30 < qr.height();
                let luma = if inside {
                    qr.get_pixel(x - 40, y - 30).0[0]
                } else {
                    235
                };
                // Y, then U or V (neutral chroma) for each pixel pair.
                yuyv.extend_from_slice(&[luma, 128]);
            }
        }
        Buffer::new(Resolution::new(width, height), &yuyv, FrameFormat::YUYV)
    }

    #[test]
    fn a_frame_showing_a_claim_code_gives_the_code_and_a_small_preview() {
        let text = "LATCHKEY:C1:ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        let (preview, code) = read_frame(&yuyv_frame_showing(text)).unwrap();
        assert_eq!(code.as_deref(), Some(text));
        assert!(preview.width <= PREVIEW_SIDE && preview.height <= PREVIEW_SIDE);
        let jpeg = BASE64.decode(preview.jpeg_base64.as_bytes()).unwrap();
        assert!(jpeg.starts_with(&[0xFF, 0xD8]), "a JPEG");
    }

    #[test]
    fn other_codes_and_empty_frames_give_only_a_preview() {
        let (_, code) = read_frame(&yuyv_frame_showing("https://example.com/menu")).unwrap();
        assert_eq!(code, None);
        let blank = Buffer::new(
            Resolution::new(64, 48),
            &[200; 64 * 48 * 2],
            FrameFormat::YUYV,
        );
        let (preview, code) = read_frame(&blank).unwrap();
        assert_eq!((code, preview.width), (None, 64));
    }

    #[test]
    fn a_machine_without_a_camera_gets_a_clear_error() {
        if std::path::Path::new("/dev/video0").exists() {
            return; // a real camera: opening it here would light it up
        }
        let err = open_first_camera()
            .err()
            .expect("no camera on this machine");
        let shown = no_camera(&err);
        assert_eq!(shown.code, "no_camera");
        assert!(
            shown.message.contains("choose it instead"),
            "{}",
            shown.message
        );
    }
}
