//! What the request spans and log lines say, and what they never say.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{Backend, Options, SECRET, TOKEN, TestApp, callback_body};
use tracing_subscriber::fmt::MakeWriter;

/// Collects everything the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn requests_are_logged_by_route_template_without_tokens_secrets_or_bodies() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        // Our server side only: the test's own HTTP client logs its URLs.
        .with_env_filter("kiebot_ops=trace,kiebot_store=trace,kiebot_jobs=trace,axum=trace")
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    // The test runtime has one thread, which also runs the server.
    let _guard = tracing::subscriber::set_default(subscriber);

    let app = TestApp::start(Options::new(Backend::Embedded)).await;
    let body_marker = "body-marker-8c1f";
    let wrong_secret = "wrong-secret-5e2a";
    app.callback(wrong_secret, &callback_body(body_marker, "success"))
        .await;
    app.callback(SECRET, &callback_body(body_marker, "success"))
        .await;
    app.callback(SECRET, &format!("not json {body_marker}"))
        .await;
    app.get(&format!("/dashboard/api/v1/overview?token={TOKEN}"))
        .await;
    app.client
        .get(app.url("/dashboard/summary"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    app.get("/dashboard?token=wrong-token-77d0").await;

    let logs = captured.text();
    assert!(logs.contains("http.request"), "{logs}");
    assert!(logs.contains("/kie/callback/{secret}"), "{logs}");
    assert!(logs.contains("/dashboard/api/v1/{*rest}"), "{logs}");
    assert!(logs.contains("/dashboard/summary"), "{logs}");
    assert!(logs.contains("http.status=404"), "{logs}");
    assert!(logs.contains("http.status=401"), "{logs}");
    assert!(logs.contains("http.status=200"), "{logs}");
    for secret in [SECRET, TOKEN, wrong_secret, "wrong-token-77d0", "not json"] {
        assert!(
            !logs.contains(secret),
            "{secret:?} leaked into the logs:\n{logs}"
        );
    }
    // The task id of a parsed callback may be logged; the raw body never is.
    assert!(!logs.contains("resultUrls"), "{logs}");
}
