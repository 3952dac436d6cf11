//! Method parameters as Telegram accepts them: a JSON body, a multipart form
//! (text fields plus file parts, referenced as `attach://<name>`), a
//! urlencoded form, or the query string.

use std::collections::HashMap;

use axum::extract::{FromRequest, Multipart, Request};
use axum::http::header::CONTENT_TYPE;
use bytes::Bytes;
use serde_json::{Map, Value};

use super::FileContent;
use super::state::ApiErr;

/// The biggest request body the server reads (uploads are checked against the
/// configurable per-file limit after reading).
pub(crate) const MAX_BODY_BYTES: usize = 128 * 1024 * 1024;

/// A file part of a multipart request.
#[derive(Debug, Clone)]
pub(crate) struct Upload {
    pub file_name: String,
    pub data: FileContent,
}

/// The parameters of one call.
#[derive(Debug, Default)]
pub(crate) struct Params {
    pub fields: Map<String, Value>,
    pub files: HashMap<String, Upload>,
}

impl Params {
    /// Reads the parameters; with `discard`, file parts are counted as they
    /// stream in and kept as their size only (a benchmark's uploads).
    pub(crate) async fn from_request(req: Request, discard: bool) -> Result<Self, ApiErr> {
        let mut params = Self::default();
        if let Some(query) = req.uri().query() {
            for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
                params
                    .fields
                    .insert(k.into_owned(), Value::String(v.into_owned()));
            }
        }
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();

        if content_type.starts_with("multipart/form-data") {
            let mut form = Multipart::from_request(req, &())
                .await
                .map_err(|e| ApiErr::bad_request(&format!("can't parse multipart: {e}")))?;
            while let Some(mut field) = form
                .next_field()
                .await
                .map_err(|e| ApiErr::bad_request(&format!("can't parse multipart: {e}")))?
            {
                let name = field.name().unwrap_or_default().to_owned();
                let file_name = field.file_name().map(str::to_owned);
                if discard && let Some(file_name) = &file_name {
                    let mut size = 0u64;
                    while let Some(chunk) = field
                        .chunk()
                        .await
                        .map_err(|e| ApiErr::bad_request(&format!("can't read multipart: {e}")))?
                    {
                        size += chunk.len() as u64;
                    }
                    params.files.insert(
                        name,
                        Upload {
                            file_name: file_name.clone(),
                            data: FileContent::Zeros(size),
                        },
                    );
                    continue;
                }
                let data = field
                    .bytes()
                    .await
                    .map_err(|e| ApiErr::bad_request(&format!("can't read multipart: {e}")))?;
                match (file_name, std::str::from_utf8(&data)) {
                    (None, Ok(text)) => {
                        params.fields.insert(name, Value::String(text.to_owned()));
                    }
                    (file_name, _) => {
                        params.files.insert(
                            name,
                            Upload {
                                file_name: file_name.unwrap_or_default(),
                                data: FileContent::Bytes(data),
                            },
                        );
                    }
                }
            }
            return Ok(params);
        }

        let body = axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES)
            .await
            .map_err(|_| ApiErr::too_large())?;
        if content_type.starts_with("application/x-www-form-urlencoded") {
            for (k, v) in url::form_urlencoded::parse(&body) {
                params
                    .fields
                    .insert(k.into_owned(), Value::String(v.into_owned()));
            }
        } else if !body.iter().all(u8::is_ascii_whitespace) {
            match serde_json::from_slice::<Value>(&body) {
                Ok(Value::Object(map)) => params.fields.extend(map),
                _ => return Err(ApiErr::bad_request("can't parse JSON object")),
            }
        }
        Ok(params)
    }

    /// A parameter as a string (numbers are printed).
    pub(crate) fn str(&self, key: &str) -> Option<String> {
        match self.fields.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }

    /// A parameter as an integer (multipart sends numbers as text).
    pub(crate) fn i64(&self, key: &str) -> Option<i64> {
        match self.fields.get(key)? {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// A parameter as a boolean.
    pub(crate) fn bool(&self, key: &str) -> bool {
        match self.fields.get(key) {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => s == "true" || s == "1",
            Some(Value::Number(n)) => n.as_i64() == Some(1),
            _ => false,
        }
    }

    /// A structured parameter (multipart and forms carry it as JSON text).
    pub(crate) fn json(&self, key: &str) -> Option<Value> {
        match self.fields.get(key)? {
            Value::String(s) => serde_json::from_str(s).ok(),
            Value::Null => None,
            other => Some(other.clone()),
        }
    }

    /// Every parameter as one JSON object with structured ones parsed and
    /// uploads shown as `attach://<name>`.
    pub(crate) fn to_json(&self) -> Value {
        let mut out = Map::new();
        for (k, v) in &self.fields {
            let v = match v {
                Value::String(s) if s.starts_with('{') || s.starts_with('[') => {
                    serde_json::from_str(s).unwrap_or_else(|_| v.clone())
                }
                _ => v.clone(),
            };
            out.insert(k.clone(), v);
        }
        for k in self.files.keys() {
            out.entry(k.clone())
                .or_insert_with(|| Value::String(format!("attach://{k}")));
        }
        Value::Object(out)
    }

    /// The upload a media value refers to: `attach://name`, or a file part
    /// sent directly under the parameter's own name.
    pub(crate) fn upload(&self, field: &str, value: Option<&str>) -> Option<Upload> {
        if let Some(name) = value.and_then(|v| v.strip_prefix("attach://")) {
            return self.files.get(name).cloned().or_else(|| {
                // A part without a file name that happened to be valid UTF-8.
                self.fields
                    .get(name)
                    .and_then(Value::as_str)
                    .map(|s| Upload {
                        file_name: String::new(),
                        data: FileContent::Bytes(Bytes::copy_from_slice(s.as_bytes())),
                    })
            });
        }
        if value.is_none() {
            return self.files.get(field).cloned();
        }
        None
    }
}
