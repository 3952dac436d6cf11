//! The HTTP client: one method per KIE endpoint.

use std::fmt;
use std::future::Future;
use std::time::Instant;

use bytes::Bytes;
use kiebot_domain::{Credits, Family};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use reqwest::multipart::{Form, Part};
use serde_json::{Map, Value, json};
use tracing::field::Empty;
use tracing::{Instrument, Span};
use url::Url;

use crate::config::KieConfig;
use crate::error::KieError;
use crate::task::{TaskId, TaskRecord, parse_record, parse_suno_record, parse_veo_record};
use crate::upload::{UploadedFile, parse_uploaded};

const CREATE_TASK: &str = "/api/v1/jobs/createTask";
const RECORD_INFO: &str = "/api/v1/jobs/recordInfo";
const VEO_GENERATE: &str = "/api/v1/veo/generate";
const VEO_RECORD_INFO: &str = "/api/v1/veo/record-info";
const SUNO_GENERATE: &str = "/api/v1/generate";
const SUNO_RECORD_INFO: &str = "/api/v1/generate/record-info";
const CREDIT: &str = "/api/v1/chat/credit";
const MODELS: &str = "/api/v1/models";
const DOWNLOAD_URL: &str = "/api/v1/common/download-url";
const FILE_STREAM_UPLOAD: &str = "/api/file-stream-upload";
const FILE_URL_UPLOAD: &str = "/api/file-url-upload";

/// A family's reader of status replies.
type ParseRecord = fn(&Value) -> Result<TaskRecord, KieError>;

/// The callback URL sent when none is configured but the family requires one
/// (Suno): a reserved domain that never resolves, so KIE's post goes nowhere
/// and the task is found by polling.
pub const NO_CALLBACK: &str = "https://callback.invalid/kiebot";

/// How much of a non-JSON reply is described in an error (never its text:
/// it may be anything, including an echo of the request).
const SNIFF_BYTES: usize = 64;

/// A KIE API client. Cheap to clone (the connection pool is shared).
///
/// Every call is bounded by the configured timeouts and runs in a tracing span
/// named after the endpoint (`kie.create_task`, ...), with the fields
/// `endpoint`, `model`, `task_id`, `outcome` and `latency_ms`.
#[derive(Clone)]
pub struct KieClient {
    http: reqwest::Client,
    /// `Bearer <key>`, marked sensitive so that it never prints.
    auth: HeaderValue,
    config: KieConfig,
    create_task_url: Url,
    record_info_url: Url,
    veo_generate_url: Url,
    veo_record_info_url: Url,
    suno_generate_url: Url,
    suno_record_info_url: Url,
    credit_url: Url,
    models_url: Url,
    download_url_url: Url,
    stream_upload_url: Url,
    url_upload_url: Url,
}

impl fmt::Debug for KieClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KieClient")
            .field("api_base", &self.config.api_base.as_str())
            .field("upload_base", &self.config.upload_base.as_str())
            .field("api_key", &self.config.api_key)
            .field("timeout", &self.config.timeout)
            .field("connect_timeout", &self.config.connect_timeout)
            .field("upload_timeout", &self.config.upload_timeout)
            .finish_non_exhaustive()
    }
}

impl KieClient {
    /// Builds a client. Fails only if the key cannot be a header value or the
    /// HTTP client cannot start (TLS set-up).
    pub fn new(config: KieConfig) -> Result<KieClient, KieError> {
        let mut auth = HeaderValue::try_from(format!("Bearer {}", config.api_key.expose()))
            .map_err(|_| {
                KieError::Setup("the API key has characters a header cannot carry".into())
            })?;
        auth.set_sensitive(true);
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .user_agent(concat!("kiebot/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| KieError::Setup(e.without_url().to_string()))?;
        Ok(KieClient {
            create_task_url: endpoint(&config.api_base, CREATE_TASK)?,
            record_info_url: endpoint(&config.api_base, RECORD_INFO)?,
            veo_generate_url: endpoint(&config.api_base, VEO_GENERATE)?,
            veo_record_info_url: endpoint(&config.api_base, VEO_RECORD_INFO)?,
            suno_generate_url: endpoint(&config.api_base, SUNO_GENERATE)?,
            suno_record_info_url: endpoint(&config.api_base, SUNO_RECORD_INFO)?,
            credit_url: endpoint(&config.api_base, CREDIT)?,
            models_url: endpoint(&config.api_base, MODELS)?,
            download_url_url: endpoint(&config.api_base, DOWNLOAD_URL)?,
            stream_upload_url: endpoint(&config.upload_base, FILE_STREAM_UPLOAD)?,
            url_upload_url: endpoint(&config.upload_base, FILE_URL_UPLOAD)?,
            http,
            auth,
            config,
        })
    }

    /// The configuration the client was built with.
    pub fn config(&self) -> &KieConfig {
        &self.config
    }

    /// Creates a task with the family's endpoint: `POST
    /// /api/v1/jobs/createTask` for the market, `/api/v1/veo/generate` for
    /// Veo, `/api/v1/generate` for Suno.
    ///
    /// `request` is the exact body the catalog built (`{"model": ..., "input":
    /// {...}}` for the market, the fields at the top level for the others).
    /// `callback_url`, when given, is added as `callBackUrl`; it is never
    /// logged (its path holds a secret). Suno refuses a task without one, so
    /// it gets [`NO_CALLBACK`] when none is configured and is polled as usual.
    ///
    /// A [`KieError::Timeout`] or [`KieError::Network`] here does not mean
    /// that no task was created: the reply may be what got lost.
    pub async fn create_task(
        &self,
        family: Family,
        request: &Value,
        callback_url: Option<&str>,
    ) -> Result<TaskId, KieError> {
        let model = request
            .get("model")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .ok_or_else(|| KieError::Validation("the request has no model".into()))?;
        let (url, path) = match family {
            Family::Market => (&self.create_task_url, CREATE_TASK),
            Family::Veo => (&self.veo_generate_url, VEO_GENERATE),
            Family::Suno => (&self.suno_generate_url, SUNO_GENERATE),
        };
        let span = tracing::info_span!(
            "kie.create_task",
            endpoint = path,
            family = family.as_str(),
            model = %model,
            task_id = Empty,
            outcome = Empty,
            latency_ms = Empty,
        );
        let mut body: Map<String, Value> = request
            .as_object()
            .cloned()
            .ok_or_else(|| KieError::Validation("the request is not a JSON object".into()))?;
        match (callback_url, family) {
            (Some(url), _) => {
                body.insert("callBackUrl".into(), Value::String(url.to_owned()));
            }
            (None, Family::Suno) => {
                body.insert("callBackUrl".into(), Value::String(NO_CALLBACK.to_owned()));
            }
            (None, _) => {}
        }
        let call = async {
            let data = self
                .exchange(self.http.post(url.clone()).json(&body))
                .await?;
            data.get("taskId")
                .and_then(Value::as_str)
                .and_then(TaskId::parse)
                .ok_or_else(|| KieError::BadResponse("createTask reply has no taskId".into()))
        };
        let result = observe(span.clone(), call).await;
        if let Ok(id) = &result {
            span.record("task_id", id.as_str());
        }
        result
    }

    /// Reads a task's state from the family's status endpoint (`GET
    /// /api/v1/jobs/recordInfo?taskId=`, `/api/v1/veo/record-info`,
    /// `/api/v1/generate/record-info`).
    ///
    /// A malformed record (unknown state, `resultJson` that is not JSON, a
    /// different task id) is [`KieError::BadResponse`], which is final for the
    /// generation.
    pub async fn record_info(
        &self,
        family: Family,
        task_id: &TaskId,
    ) -> Result<TaskRecord, KieError> {
        let (base, path, parse): (&Url, &str, ParseRecord) = match family {
            Family::Market => (&self.record_info_url, RECORD_INFO, parse_record),
            Family::Veo => (&self.veo_record_info_url, VEO_RECORD_INFO, parse_veo_record),
            Family::Suno => (
                &self.suno_record_info_url,
                SUNO_RECORD_INFO,
                parse_suno_record,
            ),
        };
        let span = tracing::info_span!(
            "kie.record_info",
            endpoint = path,
            family = family.as_str(),
            model = Empty,
            task_id = %task_id,
            outcome = Empty,
            latency_ms = Empty,
        );
        let mut url = base.clone();
        url.query_pairs_mut()
            .append_pair("taskId", task_id.as_str());
        let call = async {
            let data = self.exchange(self.get(url)).await?;
            let record = parse(&data)?;
            if &record.task_id != task_id {
                return Err(KieError::BadResponse(
                    "recordInfo answered about another task".into(),
                ));
            }
            Ok(record)
        };
        let result = observe(span.clone(), call).await;
        if let Ok(TaskRecord {
            model: Some(model), ..
        }) = &result
        {
            span.record("model", model.as_str());
        }
        result
    }

    /// The account's remaining credits (`GET /api/v1/chat/credit`), rounded
    /// to the nearest thousandth.
    pub async fn credits(&self) -> Result<Credits, KieError> {
        let span = tracing::info_span!(
            "kie.credits",
            endpoint = CREDIT,
            model = Empty,
            task_id = Empty,
            outcome = Empty,
            latency_ms = Empty,
        );
        let call = async {
            let data = self.exchange(self.get(self.credit_url.clone())).await?;
            credits_from(&data)
        };
        observe(span, call).await
    }

    /// KIE's model catalogue (`GET /api/v1/models`): the envelope's `data`,
    /// as KIE sends it. KIE allows one catalogue request per second; pacing is
    /// the caller's.
    pub async fn list_models(&self) -> Result<Value, KieError> {
        let span = catalogue_span(MODELS);
        observe(span, self.exchange(self.get(self.models_url.clone()))).await
    }

    /// One model's OpenAPI document (`GET /api/v1/models/<model>/schema`; the
    /// slash inside a model id is sent as it is).
    pub async fn model_schema(&self, model: &str) -> Result<Value, KieError> {
        let url = self.model_url(model, "schema")?;
        observe(
            catalogue_span("/api/v1/models/{model}/schema"),
            self.exchange(self.get(url)),
        )
        .await
    }

    /// One model's price (`GET /api/v1/models/<model>/price`): `data` as KIE
    /// sends it (a `pricingDesc` text, or an object holding one).
    pub async fn model_price(&self, model: &str) -> Result<Value, KieError> {
        let url = self.model_url(model, "price")?;
        observe(
            catalogue_span("/api/v1/models/{model}/price"),
            self.exchange(self.get(url)),
        )
        .await
    }

    /// A direct, short-lived (about 20 minutes) download link for a file KIE
    /// hosts (`POST /api/v1/common/download-url`); KIE refuses other hosts
    /// with 422.
    pub async fn download_url(&self, file_url: &str) -> Result<String, KieError> {
        let span = tracing::info_span!(
            "kie.download_url",
            endpoint = DOWNLOAD_URL,
            model = Empty,
            task_id = Empty,
            outcome = Empty,
            latency_ms = Empty,
        );
        let call = async {
            let data = self
                .exchange(
                    self.http
                        .post(self.download_url_url.clone())
                        .json(&json!({ "url": file_url })),
                )
                .await?;
            data.as_str()
                .or_else(|| data.get("url").and_then(Value::as_str))
                .or_else(|| data.get("downloadUrl").and_then(Value::as_str))
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| KieError::BadResponse("download-url reply has no URL".into()))
        };
        observe(span, call).await
    }

    fn model_url(&self, model: &str, what: &str) -> Result<Url, KieError> {
        if model.is_empty()
            || model.contains("..")
            || !model
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
        {
            return Err(KieError::Validation(format!(
                "{model:?} is not a KIE model id"
            )));
        }
        endpoint(&self.config.api_base, &format!("{MODELS}/{model}/{what}"))
    }

    /// A GET request. KIE's getting-started page asks for the JSON content
    /// type on every request, bodies or not, and some endpoints insist.
    fn get(&self, url: Url) -> reqwest::RequestBuilder {
        self.http
            .get(url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
    }

    /// Uploads bytes as a file (`POST /api/file-stream-upload`, multipart
    /// `file`, `uploadPath`, `fileName`). Bounded by the upload timeout.
    pub async fn upload_stream(
        &self,
        bytes: Bytes,
        file_name: &str,
        mime: &str,
        upload_path: &str,
    ) -> Result<UploadedFile, KieError> {
        let len = bytes.len() as u64;
        let chunks = futures::stream::once(async move { Ok::<_, std::io::Error>(bytes) });
        self.upload_from_stream(chunks, len, file_name, mime, upload_path)
            .await
    }

    /// Uploads a file of `len` bytes as they come from `chunks`, never
    /// holding the whole file (`POST /api/file-stream-upload`). A stream that
    /// fails (say, past a size cap) aborts the upload with that error.
    /// Bounded by the upload timeout.
    pub async fn upload_from_stream<S>(
        &self,
        chunks: S,
        len: u64,
        file_name: &str,
        mime: &str,
        upload_path: &str,
    ) -> Result<UploadedFile, KieError>
    where
        S: futures::TryStream + Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        Bytes: From<S::Ok>,
    {
        let span = tracing::info_span!(
            "kie.upload_stream",
            endpoint = FILE_STREAM_UPLOAD,
            model = Empty,
            task_id = Empty,
            size_bytes = len,
            outcome = Empty,
            latency_ms = Empty,
        );
        let part = Part::stream_with_length(reqwest::Body::wrap_stream(chunks), len)
            .file_name(file_name.to_owned());
        // An unparsable MIME type is the caller's slip; KIE sniffs the content
        // anyway, so send the file without one rather than fail (checked
        // first: a streamed part cannot be rebuilt).
        let part = if is_mime(mime) {
            part.mime_str(mime)
                .map_err(|e| KieError::Validation(format!("MIME type {mime:?}: {e}")))?
        } else {
            part
        };
        let form = Form::new()
            .text("uploadPath", upload_path.to_owned())
            .text("fileName", file_name.to_owned())
            .part("file", part);
        let call = async {
            let data = self
                .exchange(
                    self.http
                        .post(self.stream_upload_url.clone())
                        .timeout(self.config.upload_timeout)
                        .multipart(form),
                )
                .await?;
            parse_uploaded(&data)
        };
        observe(span, call).await
    }

    /// Has KIE fetch a file from a URL (`POST /api/file-url-upload`). The
    /// source URL is not logged: it points at a user's file.
    pub async fn upload_url(
        &self,
        file_url: &str,
        upload_path: &str,
        file_name: &str,
    ) -> Result<UploadedFile, KieError> {
        let span = tracing::info_span!(
            "kie.upload_url",
            endpoint = FILE_URL_UPLOAD,
            model = Empty,
            task_id = Empty,
            outcome = Empty,
            latency_ms = Empty,
        );
        let body = json!({"fileUrl": file_url, "uploadPath": upload_path, "fileName": file_name});
        let call = async {
            let data = self
                .exchange(
                    self.http
                        .post(self.url_upload_url.clone())
                        .timeout(self.config.upload_timeout)
                        .json(&body),
                )
                .await?;
            parse_uploaded(&data)
        };
        observe(span, call).await
    }

    /// Sends a request and returns the envelope's `data` after checking both
    /// the HTTP status and the envelope `code`.
    async fn exchange(&self, request: reqwest::RequestBuilder) -> Result<Value, KieError> {
        let response = request
            .header(AUTHORIZATION, self.auth.clone())
            .send()
            .await
            .map_err(KieError::from_transport)?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = response.bytes().await.map_err(KieError::from_transport)?;
        read_envelope(status, &content_type, &body)
    }
}

/// Runs one call inside its span, then records the outcome and latency and
/// logs one line.
async fn observe<T>(
    span: Span,
    call: impl Future<Output = Result<T, KieError>>,
) -> Result<T, KieError> {
    let started = Instant::now();
    let result = call.instrument(span.clone()).await;
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    span.record("latency_ms", latency_ms);
    let _entered = span.enter();
    match &result {
        Ok(_) => {
            span.record("outcome", "ok");
            tracing::debug!(latency_ms, "KIE call succeeded");
        }
        Err(e) => {
            span.record("outcome", e.outcome());
            tracing::warn!(
                latency_ms,
                error = %e,
                retryable = e.is_retryable(),
                "KIE call failed"
            );
        }
    }
    result
}

fn catalogue_span(path: &'static str) -> Span {
    tracing::info_span!(
        "kie.catalogue",
        endpoint = path,
        model = Empty,
        task_id = Empty,
        outcome = Empty,
        latency_ms = Empty,
    )
}

fn endpoint(base: &Url, path: &str) -> Result<Url, KieError> {
    let joined = format!("{}{path}", base.as_str().trim_end_matches('/'));
    Url::parse(&joined).map_err(|e| KieError::Setup(format!("bad KIE base URL: {e}")))
}

/// Checks a reply: the envelope `code` decides when there is an envelope; the
/// HTTP status decides when there is none (a proxy's error page) or when it
/// disagrees with a success `code`.
fn read_envelope(status: StatusCode, content_type: &str, body: &[u8]) -> Result<Value, KieError> {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let Some(Value::Object(mut envelope)) = parsed else {
        if !status.is_success() {
            return Err(from_status(status));
        }
        return Err(KieError::BadResponse(describe_non_json(content_type, body)));
    };
    // Most pages document `msg`; some (recordInfo) `message`.
    let msg = envelope
        .get("msg")
        .or_else(|| envelope.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let Some(code) = envelope.get("code").and_then(Value::as_i64) else {
        if !status.is_success() {
            return Err(from_status(status));
        }
        return Err(KieError::BadResponse("the reply has no code".into()));
    };
    if code != 200 {
        return Err(KieError::from_code(code, msg));
    }
    if !status.is_success() {
        return Err(from_status(status));
    }
    if envelope.get("success").and_then(Value::as_bool) == Some(false) {
        return Err(KieError::BadResponse(
            "the reply says code 200 but success false".into(),
        ));
    }
    Ok(envelope.remove("data").unwrap_or(Value::Null))
}

fn from_status(status: StatusCode) -> KieError {
    KieError::from_code(
        i64::from(status.as_u16()),
        status.canonical_reason().unwrap_or("HTTP error"),
    )
}

fn describe_non_json(content_type: &str, body: &[u8]) -> String {
    let head = &body[..body.len().min(SNIFF_BYTES)];
    let kind = if content_type.contains("html") || head.trim_ascii_start().starts_with(b"<") {
        "an HTML page"
    } else if head.trim_ascii_start().starts_with(b"{") || head.trim_ascii_start().starts_with(b"[")
    {
        "truncated or broken JSON"
    } else if body.is_empty() {
        "an empty body"
    } else {
        "not JSON"
    };
    format!(
        "the reply is {kind} ({} bytes, content type {:?})",
        body.len(),
        content_type
    )
}

/// Credits arrive as a JSON number of whole credits (`1234.5`), or rarely as a
/// numeric string.
fn credits_from(data: &Value) -> Result<Credits, KieError> {
    let bad = || KieError::BadResponse("the credit balance is not a number".into());
    if let Some(whole) = data.as_i64() {
        return whole
            .checked_mul(1000)
            .map(Credits::from_milli)
            .ok_or_else(bad);
    }
    let x = match data {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|x| x.is_finite())
    .ok_or_else(bad)?;
    let milli = (x * 1000.0).round();
    // i64 holds ~9.2e18; a balance anywhere near that is not a balance.
    if milli.abs() > 9.0e15 {
        return Err(bad());
    }
    Ok(Credits::from_milli(milli as i64))
}

/// Whether `mime` reads as `type/subtype` (parameters allowed).
fn is_mime(mime: &str) -> bool {
    let essence = mime.split(';').next().unwrap_or("").trim();
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    essence
        .split_once('/')
        .is_some_and(|(t, s)| token(t) && token(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credits_are_parsed_to_thousandths() {
        for (v, milli) in [
            (json!(1234.5), 1_234_500),
            (json!(0), 0),
            (json!(17), 17_000),
            (json!(0.1), 100),
            (json!(1234.5678), 1_234_568),
            (json!("99.25"), 99_250),
        ] {
            assert_eq!(credits_from(&v).unwrap(), Credits::from_milli(milli), "{v}");
        }
        assert!(credits_from(&json!(null)).is_err());
        assert!(credits_from(&json!("lots")).is_err());
    }

    #[test]
    fn a_200_status_with_an_error_code_is_an_error() {
        let body = br#"{"code":422,"msg":"prompt is required","data":null}"#;
        match read_envelope(StatusCode::OK, "application/json", body) {
            Err(KieError::Validation(m)) => assert_eq!(m, "prompt is required"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_error_status_without_an_envelope_is_classified_by_status() {
        let err =
            read_envelope(StatusCode::BAD_GATEWAY, "text/html", b"<html>502</html>").unwrap_err();
        assert!(err.is_retryable());
        let err = read_envelope(StatusCode::OK, "text/html", b"<html>hi</html>").unwrap_err();
        assert!(matches!(err, KieError::BadResponse(_)));
        assert!(!err.is_retryable());
    }

    #[test]
    fn base_paths_are_kept() {
        let base = Url::parse("http://127.0.0.1:9/kie/").unwrap();
        assert_eq!(
            endpoint(&base, CREDIT).unwrap().as_str(),
            "http://127.0.0.1:9/kie/api/v1/chat/credit"
        );
    }
}
