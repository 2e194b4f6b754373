//! Builds an export's three files from conversation records, without I/O: each record
//! is converted with `tollbooth_core::capture::sharegpt` and goes to `valid.jsonl` or,
//! with its reasons, to `invalid.jsonl`. The files are built in memory up to a bound
//! (`max_bytes` for both JSONL files together, docs/training-data.md); past it the job
//! fails with a clear message instead of exhausting the function's memory.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tollbooth_core::capture::sharegpt::{to_openai_messages, to_sharegpt, Conversation};

/// The line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `{"conversations": [{"from", "value"}...], "tools": "<json>"}`
    #[default]
    Sharegpt,
    /// OpenAI fine-tuning: `{"messages": [...], "tools"?: [...]}`
    Openai,
}

/// Records per file and conversations skipped (gone, or without a stored record).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub valid: u64,
    pub invalid: u64,
    /// `valid + invalid`.
    pub total: u64,
    pub skipped: u64,
}

/// A file as stored: its name, byte size, SHA-256 and record count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<u64>,
}

impl FileInfo {
    pub fn of(name: &str, body: &[u8], records: Option<u64>) -> FileInfo {
        FileInfo {
            name: name.to_owned(),
            bytes: body.len() as u64,
            sha256: hex::encode(Sha256::digest(body)),
            records,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the export is larger than {max} bytes (EXPORT_MAX_BYTES): narrow the filter")]
pub struct TooLarge {
    pub max: usize,
}

/// The files being built.
#[derive(Debug)]
pub struct Output {
    format: Format,
    max_bytes: usize,
    valid: Vec<u8>,
    invalid: Vec<u8>,
    valid_ids: Vec<String>,
    invalid_ids: Vec<String>,
    pub counts: Counts,
}

impl Output {
    pub fn new(format: Format, max_bytes: usize) -> Output {
        Output {
            format,
            max_bytes,
            valid: Vec::new(),
            invalid: Vec::new(),
            valid_ids: Vec::new(),
            invalid_ids: Vec::new(),
            counts: Counts::default(),
        }
    }

    /// Converts one conversation's longest record and appends its line.
    pub fn add(&mut self, conversation_id: &str, record: &Value) -> Result<(), TooLarge> {
        let (line, reasons) = convert(self.format, record);
        let (text, ok) = if reasons.is_empty() {
            (line.to_string(), true)
        } else {
            // The id first (to find it in the review API), then the record, then why.
            let mut o = Map::new();
            o.insert("id".into(), json!(conversation_id));
            if let Value::Object(fields) = line {
                o.extend(fields);
            }
            o.insert("reasons".into(), json!(reasons));
            (Value::Object(o).to_string(), false)
        };
        if self.valid.len() + self.invalid.len() + text.len() + 1 > self.max_bytes {
            return Err(TooLarge {
                max: self.max_bytes,
            });
        }
        let (buf, ids) = if ok {
            self.counts.valid += 1;
            (&mut self.valid, &mut self.valid_ids)
        } else {
            self.counts.invalid += 1;
            (&mut self.invalid, &mut self.invalid_ids)
        };
        buf.extend_from_slice(text.as_bytes());
        buf.push(b'\n');
        ids.push(conversation_id.to_owned());
        self.counts.total += 1;
        Ok(())
    }

    pub fn skip(&mut self) {
        self.counts.skipped += 1;
    }

    /// The two JSONL files and the manifest; `meta` (job id, filter, format, times) goes
    /// first in the manifest, then `counts`, `files` and the conversation ids per file in
    /// line order.
    pub fn finish(self, meta: Map<String, Value>) -> Finished {
        let valid_info = FileInfo::of("valid.jsonl", &self.valid, Some(self.counts.valid));
        let invalid_info = FileInfo::of("invalid.jsonl", &self.invalid, Some(self.counts.invalid));
        let mut m = meta;
        m.insert("counts".into(), json!(self.counts));
        m.insert("files".into(), json!([valid_info, invalid_info]));
        m.insert(
            "conversation_ids".into(),
            json!({"valid": self.valid_ids, "invalid": self.invalid_ids}),
        );
        let manifest = serde_json::to_vec_pretty(&Value::Object(m)).unwrap_or_default();
        let manifest_info = FileInfo::of("manifest.json", &manifest, None);
        Finished {
            files: vec![
                (valid_info, self.valid),
                (invalid_info, self.invalid),
                (manifest_info, manifest),
            ],
            counts: self.counts,
        }
    }
}

pub struct Finished {
    /// `valid.jsonl`, `invalid.jsonl`, `manifest.json`, in that order.
    pub files: Vec<(FileInfo, Vec<u8>)>,
    pub counts: Counts,
}

/// One record's line and the reasons it is invalid (the same rules for both formats:
/// an OpenAI line is exported as valid exactly when its ShareGPT form is).
pub fn convert(
    format: Format,
    record: &Value,
) -> (Value, Vec<tollbooth_core::capture::sharegpt::Reason>) {
    let conv = Conversation::from_record(record);
    let (sharegpt, reasons) = to_sharegpt(&conv);
    let line = match format {
        Format::Sharegpt => serde_json::to_value(&sharegpt).unwrap_or(Value::Null),
        Format::Openai => to_openai_messages(&conv),
    };
    (line, reasons)
}
