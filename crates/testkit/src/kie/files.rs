//! Files: the three uploads, `GET /files/...` (results and uploads) and
//! `POST /api/v1/common/download-url`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::{Body, Bytes};
use axum::extract::{Multipart, Path, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use rand::Rng;
use serde_json::{Value, json};

use super::state::{Shared, StoredFile};
use super::util::{iso_now, json_reply, safe_name, success};
use super::{Endpoint, TINY_MP3, TINY_MP4, TINY_PNG};

/// The extension of a name (`photo.JPG` -> `jpg`) if it looks like one.
fn extension_of(name: &str) -> Option<String> {
    let (_, ext) = name.rsplit_once('.')?;
    (!ext.is_empty() && ext.len() <= 5 && ext.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| ext.to_ascii_lowercase())
}

fn extension_for(mime: &str) -> Option<&'static str> {
    Some(match mime.split(';').next()?.trim() {
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "image/webp" => "webp",
        "image/gif" => "gif",
        "video/mp4" => "mp4",
        "video/quicktime" => "mov",
        "video/webm" => "webm",
        "audio/mpeg" => "mp3",
        "audio/wav" | "audio/x-wav" => "wav",
        "audio/ogg" => "ogg",
        "audio/mp4" => "m4a",
        _ => return None,
    })
}

/// A name KIE would pick for an upload without `fileName`: unique, with the
/// extension of the original name or of the MIME type.
fn unique_name(number: u64, hint: &str, mime: &str) -> String {
    let ext = extension_of(hint).or_else(|| extension_for(mime).map(str::to_owned));
    match ext {
        Some(ext) => format!("upload-{number}.{ext}"),
        None => format!("upload-{number}"),
    }
}

/// Stores an upload and answers with KIE's upload reply. A `file_name`
/// already used in the same `upload_path` overwrites that file (its earlier
/// `downloadUrl` serves the new bytes), as KIE does; without one the fake
/// picks a unique name (`hint` lends it an extension).
fn store_upload(
    shared: &Shared,
    upload_path: &str,
    file_name: Option<&str>,
    hint: &str,
    mime: &str,
    bytes: Bytes,
) -> Response {
    let dir = safe_name(upload_path);
    let name = match file_name.map(str::trim).filter(|n| !n.is_empty()) {
        Some(given) => safe_name(given),
        None => unique_name(shared.next_id.fetch_add(1, Ordering::Relaxed), hint, mime),
    };
    let key = format!("uploads/{dir}/{name}");
    let size = bytes.len();
    let mime = if mime.is_empty() {
        "application/octet-stream".to_owned()
    } else {
        mime.to_owned()
    };
    shared.lock().files.insert(
        key.clone(),
        StoredFile {
            bytes,
            mime: mime.clone(),
        },
    );
    json_reply(
        StatusCode::OK,
        &json!({
            "success": true,
            "code": 200,
            "msg": "File uploaded successfully",
            "data": {
                "fileName": name,
                "filePath": format!("{dir}/{name}"),
                "downloadUrl": format!("{}/files/{key}", shared.base_url),
                "fileSize": size,
                "mimeType": mime,
                "uploadedAt": iso_now(),
            }
        }),
    )
}

/// An upload's error reply (`success: false`), its text under the set key.
fn upload_error(shared: &Shared, code: i64, msg: &str) -> Response {
    let key = if shared.error_text_message.load(Ordering::Relaxed) {
        "message"
    } else {
        "msg"
    };
    let mut body = json!({"success": false, "code": code, "data": null});
    body[key] = Value::String(msg.to_owned());
    json_reply(StatusCode::OK, &body)
}

pub(super) async fn stream_upload(
    AxumState(shared): AxumState<Arc<Shared>>,
    headers: HeaderMap,
    mut multipart: Multipart,
) -> Response {
    if let Err(reply) = shared.admit_api(Endpoint::StreamUpload, &headers).await {
        return reply;
    }
    let mut file: Option<(Bytes, String, String)> = None;
    let mut upload_path = String::new();
    let mut file_name: Option<String> = None;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(_) => return upload_error(&shared, 400, "Malformed multipart body"),
        };
        let name = field.name().unwrap_or("").to_owned();
        let part_file_name = field.file_name().unwrap_or("").to_owned();
        let mime = field.content_type().unwrap_or("").to_owned();
        let Ok(bytes) = field.bytes().await else {
            return upload_error(&shared, 400, "Malformed multipart body");
        };
        match name.as_str() {
            "file" => file = Some((bytes, part_file_name, mime)),
            "uploadPath" => upload_path = String::from_utf8_lossy(&bytes).into_owned(),
            "fileName" => file_name = Some(String::from_utf8_lossy(&bytes).into_owned()),
            _ => {}
        }
    }
    let Some((bytes, part_file_name, mime)) = file else {
        return upload_error(&shared, 400, "file is required");
    };
    if upload_path.is_empty() {
        return upload_error(&shared, 400, "uploadPath is required");
    }
    store_upload(
        &shared,
        &upload_path,
        file_name.as_deref(),
        &part_file_name,
        &mime,
        bytes,
    )
}

pub(super) async fn url_upload(
    AxumState(shared): AxumState<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(reply) = shared.admit_api(Endpoint::UrlUpload, &headers).await {
        return reply;
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return upload_error(&shared, 400, "Invalid JSON body");
    };
    let text = |k: &str| request.get(k).and_then(Value::as_str).unwrap_or("");
    let (file_url, upload_path, file_name) =
        (text("fileUrl"), text("uploadPath"), text("fileName"));
    if file_url.is_empty() || upload_path.is_empty() {
        return upload_error(&shared, 400, "fileUrl and uploadPath are required");
    }
    let fetched = async {
        let response = shared.http.get(file_url).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        let mime = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = response.bytes().await.ok()?;
        Some((bytes, mime))
    }
    .await;
    let Some((bytes, mime)) = fetched else {
        return upload_error(&shared, 400, "Failed to download the file from fileUrl");
    };
    let hint = file_url
        .split(['?', '#'])
        .next()
        .and_then(|u| u.rsplit('/').next())
        .unwrap_or("");
    store_upload(&shared, upload_path, Some(file_name), hint, &mime, bytes)
}

pub(super) async fn base64_upload(
    AxumState(shared): AxumState<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(reply) = shared.admit_api(Endpoint::Base64Upload, &headers).await {
        return reply;
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return upload_error(&shared, 400, "Invalid JSON body");
    };
    let text = |k: &str| request.get(k).and_then(Value::as_str).unwrap_or("");
    let (data, upload_path, file_name) = (text("base64Data"), text("uploadPath"), text("fileName"));
    if data.is_empty() || upload_path.is_empty() {
        return upload_error(&shared, 400, "base64Data and uploadPath are required");
    }
    // `data:image/png;base64,<payload>` or the bare payload.
    let (mime, payload) = match data.strip_prefix("data:").and_then(|d| d.split_once(',')) {
        Some((meta, payload)) => (meta.trim_end_matches(";base64"), payload),
        None => ("", data),
    };
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(payload.trim()) else {
        return upload_error(&shared, 400, "base64Data is not valid base64");
    };
    store_upload(
        &shared,
        upload_path,
        Some(file_name),
        "",
        mime,
        Bytes::from(bytes),
    )
}

/// A direct link (`direct/<token>/<path>`) names the file at `<path>`.
fn undirect(path: &str) -> &str {
    path.strip_prefix("direct/")
        .and_then(|rest| rest.split_once('/'))
        .map_or(path, |(_, original)| original)
}

/// A result file's type and bytes, by extension.
fn result_file(path: &str) -> Option<(&'static str, &'static [u8])> {
    if !path.starts_with("results/") {
        return None;
    }
    if path.ends_with(".png") {
        Some(("image/png", TINY_PNG))
    } else if path.ends_with(".mp4") {
        Some(("video/mp4", TINY_MP4))
    } else if path.ends_with(".mp3") {
        Some(("audio/mpeg", TINY_MP3))
    } else {
        None
    }
}

pub(super) async fn file(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(path): Path<String>,
) -> Response {
    shared.count(Endpoint::Files);
    let (redirect, size) = {
        let mut state = shared.lock();
        state.file_requests.push(path.clone());
        (state.redirects.get(&path).cloned(), state.result_size)
    };
    if let Some(location) = redirect {
        return Response::builder()
            .status(StatusCode::FOUND)
            .header(header::LOCATION, location)
            .body(Body::empty())
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    }
    let path = undirect(&path);
    if let Some((mime, bytes)) = result_file(path) {
        if let Some((size, declare_length)) = size {
            return zeros_reply(mime, size, declare_length);
        }
        return file_reply(mime, Bytes::from_static(bytes));
    }
    let stored = shared.lock().files.get(path).cloned();
    match stored {
        Some(f) => file_reply(&f.mime, f.bytes),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `size` zero bytes, made a chunk at a time as they are sent (the fake never
/// holds a big file); without `declare_length` the body is chunked, so only
/// the bytes themselves tell the size.
fn zeros_reply(mime: &str, size: u64, declare_length: bool) -> Response {
    const CHUNK: u64 = 64 * 1024;
    let chunk = Bytes::from(vec![0u8; CHUNK as usize]);
    let stream = futures::stream::unfold(0u64, move |sent| {
        let chunk = chunk.clone();
        async move {
            (sent < size).then(|| {
                let n = CHUNK.min(size - sent);
                (
                    Ok::<_, std::convert::Infallible>(chunk.slice(..n as usize)),
                    sent + n,
                )
            })
        }
    });
    let mut response = Response::new(Body::from_stream(stream));
    if let Ok(value) = HeaderValue::from_str(mime) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    if declare_length {
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    }
    response
}

fn file_reply(mime: &str, bytes: Bytes) -> Response {
    let mut response = Response::new(Body::from(bytes));
    if let Ok(value) = HeaderValue::from_str(mime) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

/// `POST /api/v1/common/download-url {"url": ...}`: a fresh direct link to a
/// file the fake hosts; any other URL is refused with 422.
pub(super) async fn download_url(
    AxumState(shared): AxumState<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(reply) = shared.admit_api(Endpoint::DownloadUrl, &headers).await {
        return reply;
    }
    let requested = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("url").and_then(Value::as_str).map(str::to_owned));
    let Some(requested) = requested.filter(|u| !u.trim().is_empty()) else {
        return shared.error(StatusCode::OK, 422, "url is required");
    };
    let Ok(parsed) = url::Url::parse(&requested) else {
        return shared.error(StatusCode::OK, 422, "url is not a valid URL");
    };
    let own_host = (matches!(parsed.host_str(), Some("127.0.0.1" | "localhost"))
        || parsed
            .host_str()
            .is_some_and(|h| shared.lock().file_hosts.iter().any(|f| f == h)))
        && parsed.port_or_known_default() == Some(shared.addr.port());
    if !own_host {
        return shared.error(
            StatusCode::OK,
            422,
            "url: only files hosted by KIE can be converted",
        );
    }
    let path = parsed.path().strip_prefix("/files/").map(undirect);
    let exists =
        path.is_some_and(|p| result_file(p).is_some() || shared.lock().files.contains_key(p));
    let (Some(path), true) = (path, exists) else {
        return shared.error(StatusCode::OK, 422, "url: the file does not exist");
    };
    let token: u64 = rand::rng().random();
    success(json!(format!(
        "{}/files/direct/{token:016x}/{path}",
        shared.base_url
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picked_names_keep_an_extension() {
        assert_eq!(unique_name(7, "photo.JPG", ""), "upload-7.jpg");
        assert_eq!(unique_name(8, "", "image/png"), "upload-8.png");
        assert_eq!(unique_name(9, "blob", "application/x-unknown"), "upload-9");
    }

    #[test]
    fn direct_links_name_the_original_file() {
        assert_eq!(undirect("direct/00ff/uploads/a/b.png"), "uploads/a/b.png");
        assert_eq!(undirect("uploads/a/b.png"), "uploads/a/b.png");
    }
}
