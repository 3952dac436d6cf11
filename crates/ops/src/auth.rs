//! The dashboard's bearer token and constant-time comparison of secrets.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

/// The query parameter that may carry the token (for a browser, where no
/// header can be set).
const TOKEN_PARAM: &str = "token";

/// Whether `given` equals `expected`, in time that does not depend on where
/// they differ (only on their lengths).
pub(crate) fn secret_eq(given: &str, expected: &str) -> bool {
    bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

/// Lets the request through if it carries the token; answers 401 otherwise.
/// The token is removed from the query string before the request goes on,
/// so nothing downstream can log it.
pub(crate) async fn require_token(
    State(token): State<Arc<str>>,
    mut req: Request,
    next: Next,
) -> Response {
    let given = bearer(req.headers()).or_else(|| query_token(req.uri()));
    match given {
        Some(given) if secret_eq(&given, &token) => {
            if let Some(uri) = without_token(req.uri()) {
                *req.uri_mut() = uri;
            }
            next.run(req).await
        }
        other => {
            tracing::info!(
                token_given = other.is_some(),
                "dashboard request refused: missing or wrong token"
            );
            let mut res = (
                StatusCode::UNAUTHORIZED,
                "a valid dashboard token is required\n",
            )
                .into_response();
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            res
        }
    }
}

/// `Authorization: Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// `?token=<token>` (URL-decoded).
fn query_token(uri: &Uri) -> Option<String> {
    url::form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(k, _)| k == TOKEN_PARAM)
        .map(|(_, v)| v.into_owned())
}

/// `uri` without its `token` parameters; `None` when it has none.
fn without_token(uri: &Uri) -> Option<Uri> {
    let query = uri.query()?;
    let is_token = |pair: &&str| {
        url::form_urlencoded::parse(pair.as_bytes())
            .next()
            .is_some_and(|(k, _)| k == TOKEN_PARAM)
    };
    if !query.split('&').any(|p| is_token(&p)) {
        return None;
    }
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !is_token(p))
        .collect();
    let path_and_query = if kept.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().ok()?);
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_equal_only_when_identical() {
        assert!(secret_eq("abc", "abc"));
        assert!(!secret_eq("abc", "abd"));
        assert!(!secret_eq("abc", "abcd"));
        assert!(!secret_eq("", "abc"));
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_other_schemes_are_ignored() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  s3cret "),
        );
        assert_eq!(bearer(&h).as_deref(), Some("s3cret"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic czNjcmV0"),
        );
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn the_token_is_read_from_the_query_and_then_removed_from_it() {
        let uri: Uri = "/dashboard/api/v1/tasks?page=2&token=a%2Bb&page_size=5"
            .parse()
            .unwrap();
        assert_eq!(query_token(&uri).as_deref(), Some("a+b"));
        let clean = without_token(&uri).unwrap();
        assert_eq!(
            clean.to_string(),
            "/dashboard/api/v1/tasks?page=2&page_size=5"
        );
        let only: Uri = "/dashboard?token=x".parse().unwrap();
        assert_eq!(without_token(&only).unwrap().to_string(), "/dashboard");
        let none: Uri = "/dashboard?page=1".parse().unwrap();
        assert!(without_token(&none).is_none());
    }
}
