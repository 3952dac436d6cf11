//! Uploaded files.

use serde_json::Value;

use crate::error::KieError;

/// A file on KIE's upload host, ready to be put into a task's input.
///
/// Uploads expire after about three days: use `download_url` for a task
/// created now, never store it for later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedFile {
    /// The URL to put in the task input (`downloadUrl`).
    pub download_url: String,
    /// The file name KIE stored (`fileName`).
    pub file_name: String,
    /// Size in bytes (`fileSize`; 0 when KIE does not say).
    pub size: u64,
    /// MIME type KIE detected (`mimeType`; empty when KIE does not say).
    pub mime: String,
}

/// Parses the `data` of an upload reply.
pub(crate) fn parse_uploaded(data: &Value) -> Result<UploadedFile, KieError> {
    let text = |k: &str| data.get(k).and_then(Value::as_str).map(str::to_owned);
    let download_url = text("downloadUrl")
        .filter(|u| !u.is_empty())
        .ok_or_else(|| KieError::BadResponse("upload reply has no downloadUrl".into()))?;
    Ok(UploadedFile {
        download_url,
        file_name: text("fileName").unwrap_or_default(),
        size: data.get("fileSize").and_then(Value::as_u64).unwrap_or(0),
        mime: text("mimeType").unwrap_or_default(),
    })
}
