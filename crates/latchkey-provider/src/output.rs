//! How readings are printed: one JSON object per line (the shared `ReadingView` plus the
//! frame's `seq` and `key_id`), or CSV with the same two columns first.

use latchkey_proto::stream::{Reading, ReadingView};
use serde::Serialize;

use crate::error::{Error, Result};

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
}

impl std::str::FromStr for Format {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            other => Err(Error::BadInput {
                what: "format",
                why: format!("\"{other}\": use json or csv"),
            }),
        }
    }
}

#[derive(Serialize)]
struct Line {
    seq: u64,
    key_id: u32,
    #[serde(flatten)]
    view: ReadingView,
}

/// The CSV header line (no newline).
pub fn csv_header() -> String {
    format!("seq,key_id,{}", ReadingView::csv_header())
}

/// One reading as one line (no newline).
pub fn line(format: Format, seq: u64, key_id: u32, reading: &Reading) -> String {
    let view = reading.view();
    match format {
        Format::Json => serde_json::to_string(&Line { seq, key_id, view })
            .expect("a reading view always serializes"),
        Format::Csv => format!("{seq},{key_id},{}", view.csv_row()),
    }
}
