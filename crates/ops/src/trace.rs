//! One tracing span per request.
//!
//! The span names the route *template* (`/kie/callback/{secret}`), never the
//! path, the query string, a header or the body: the path can carry the
//! callback secret, the query the dashboard token.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;
use tracing::field::Empty;

/// The route template for requests that matched no route.
const UNMATCHED: &str = "unmatched";

/// Middleware: runs the request inside an `http.request` span with
/// `http.method`, `http.route` and (when it is known) `http.status`.
pub async fn trace_request(req: Request, next: Next) -> Response {
    let matched = req
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    let route = route_of(matched, req.uri().path());
    let span = tracing::info_span!(
        "http.request",
        http.method = %req.method(),
        http.route = %route,
        http.status = Empty,
        elapsed_ms = Empty,
    );
    let started = Instant::now();
    let res = next.run(req).instrument(span.clone()).await;
    let status = res.status().as_u16();
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    span.record("http.status", status);
    span.record("elapsed_ms", elapsed_ms);
    span.in_scope(|| {
        if res.status().is_server_error() {
            tracing::warn!(status, elapsed_ms, "request failed");
        } else {
            tracing::debug!(status, elapsed_ms, "request answered");
        }
    });
    res
}

/// Services nested under a prefix (axum sets no [`MatchedPath`] for them).
const NESTED_SERVICES: [&str; 1] = ["/dashboard/api/v1"];

/// The route as logged: the matched template, `<prefix>/{*rest}` inside a
/// nested service, or [`UNMATCHED`]. Never the path itself.
fn route_of(matched: Option<&str>, path: &str) -> String {
    if let Some(matched) = matched {
        return matched.to_owned();
    }
    NESTED_SERVICES
        .iter()
        .find(|prefix| {
            path.strip_prefix(**prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
        .map_or_else(
            || UNMATCHED.to_owned(),
            |prefix| format!("{prefix}/{{*rest}}"),
        )
}

#[cfg(test)]
mod tests {
    use super::route_of;

    #[test]
    fn the_logged_route_is_a_template_never_the_path() {
        assert_eq!(
            route_of(Some("/kie/callback/{secret}"), "/kie/callback/abc"),
            "/kie/callback/{secret}"
        );
        assert_eq!(
            route_of(None, "/dashboard/api/v1/queues/q/tasks"),
            "/dashboard/api/v1/{*rest}"
        );
        assert_eq!(
            route_of(None, "/dashboard/api/v1"),
            "/dashboard/api/v1/{*rest}"
        );
        assert_eq!(route_of(None, "/dashboard/api/v1x"), "unmatched");
        assert_eq!(route_of(None, "/some/secret/path"), "unmatched");
    }
}
