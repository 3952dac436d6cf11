//! KIE as the pipeline sees it: one object-safe trait, [`Kie`], with the
//! HTTP client ([`KieClient`]) and a dry run ([`DryRunKie`]) behind it.
//!
//! Handlers hold an `Arc<dyn Kie>` and call it the same way whichever one
//! it is. What a dry run does differently lives in [`DryRunKie`]'s answers;
//! where the pipeline itself must act differently (KIE's limits do not apply
//! to calls that go nowhere, a placeholder result must not be charged), the
//! trait says so through [`Kie::paced`] and [`Kie::generates`] rather than
//! through a mode to match on.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::stream::BoxStream;
use kiebot_domain::{Credits, Family};
use serde_json::Value;

use crate::{KieClient, KieError, TaskId, TaskRecord, TaskResult, TaskState, UploadedFile};

/// The future every [`Kie`] call returns.
pub type KieFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, KieError>> + Send + 'a>>;

/// A file's bytes as they arrive, for [`Kie::upload`].
pub type ByteStream = BoxStream<'static, Result<Bytes, std::io::Error>>;

/// The KIE operations the bot and the pipeline use. See [`KieClient`] for
/// what each call means at KIE.
pub trait Kie: Send + Sync + std::fmt::Debug {
    /// Creates a task with the family's endpoint ([`KieClient::create_task`]).
    fn create_task<'a>(
        &'a self,
        family: Family,
        request: &'a Value,
        callback_url: Option<&'a str>,
    ) -> KieFuture<'a, TaskId>;

    /// Where a task is ([`KieClient::record_info`]).
    fn record_info<'a>(&'a self, family: Family, task: &'a TaskId) -> KieFuture<'a, TaskRecord>;

    /// A fresh direct link for a file KIE hosts ([`KieClient::download_url`]).
    fn download_url<'a>(&'a self, file_url: &'a str) -> KieFuture<'a, String>;

    /// Uploads a file of `len` bytes as they come from `chunks`
    /// ([`KieClient::upload_from_stream`]).
    fn upload<'a>(
        &'a self,
        chunks: ByteStream,
        len: u64,
        file_name: &'a str,
        mime: &'a str,
        upload_path: &'a str,
    ) -> KieFuture<'a, UploadedFile>;

    /// The account's remaining credits ([`KieClient::credits`]).
    fn credits(&self) -> KieFuture<'_, Credits>;

    /// KIE's model catalogue ([`KieClient::list_models`]).
    fn list_models(&self) -> KieFuture<'_, Value>;

    /// One model's schema ([`KieClient::model_schema`]).
    fn model_schema<'a>(&'a self, model: &'a str) -> KieFuture<'a, Value>;

    /// One model's price ([`KieClient::model_price`]).
    fn model_price<'a>(&'a self, model: &'a str) -> KieFuture<'a, Value>;

    /// Whether calls count against KIE's account limits and tasks take time
    /// to run: creates and polls then take the shared gate's slots and
    /// tokens, and the first poll waits for the task's likely finish. False
    /// for a KIE that answers every call at once without going anywhere.
    fn paced(&self) -> bool;

    /// Whether tasks produce real results, and KIE's catalogue is there to
    /// compare with. False for a dry run: its results are placeholders, so a
    /// generation with a price must never be sent to it (it would be charged
    /// for nothing).
    fn generates(&self) -> bool;
}

impl Kie for KieClient {
    fn create_task<'a>(
        &'a self,
        family: Family,
        request: &'a Value,
        callback_url: Option<&'a str>,
    ) -> KieFuture<'a, TaskId> {
        Box::pin(KieClient::create_task(self, family, request, callback_url))
    }

    fn record_info<'a>(&'a self, family: Family, task: &'a TaskId) -> KieFuture<'a, TaskRecord> {
        Box::pin(KieClient::record_info(self, family, task))
    }

    fn download_url<'a>(&'a self, file_url: &'a str) -> KieFuture<'a, String> {
        Box::pin(KieClient::download_url(self, file_url))
    }

    fn upload<'a>(
        &'a self,
        chunks: ByteStream,
        len: u64,
        file_name: &'a str,
        mime: &'a str,
        upload_path: &'a str,
    ) -> KieFuture<'a, UploadedFile> {
        Box::pin(self.upload_from_stream(chunks, len, file_name, mime, upload_path))
    }

    fn credits(&self) -> KieFuture<'_, Credits> {
        Box::pin(KieClient::credits(self))
    }

    fn list_models(&self) -> KieFuture<'_, Value> {
        Box::pin(KieClient::list_models(self))
    }

    fn model_schema<'a>(&'a self, model: &'a str) -> KieFuture<'a, Value> {
        Box::pin(KieClient::model_schema(self, model))
    }

    fn model_price<'a>(&'a self, model: &'a str) -> KieFuture<'a, Value> {
        Box::pin(KieClient::model_price(self, model))
    }

    fn paced(&self) -> bool {
        true
    }

    fn generates(&self) -> bool {
        true
    }
}

/// Requests kept for the status answer; beyond this many unanswered tasks
/// (polls lost to a crash) new ones are answered without the echo.
const DRY_RUN_KEPT: usize = 10_000;

/// `DRY_RUN`: no KIE endpoint is called and nothing is charged. A task
/// "succeeds" at once with a text that says it was a dry run and echoes the
/// request; uploads get a placeholder URL that validates; the account and
/// catalogue calls answer [`KieError::FeatureDisabled`].
///
/// The echo is kept in this process between the create and the status
/// answer: a status asked in another process (a fleet) says the same without
/// the request.
#[derive(Debug, Default)]
pub struct DryRunKie {
    next: AtomicU64,
    requests: Mutex<HashMap<String, String>>,
}

impl DryRunKie {
    /// A dry run with no tasks yet.
    pub fn new() -> DryRunKie {
        DryRunKie::default()
    }

    fn disabled<T>(what: &str) -> KieFuture<'static, T> {
        let e = KieError::FeatureDisabled(format!("dry run: {what} is not read from KIE"));
        Box::pin(async move { Err(e) })
    }
}

impl Kie for DryRunKie {
    fn create_task<'a>(
        &'a self,
        _family: Family,
        request: &'a Value,
        _callback_url: Option<&'a str>,
    ) -> KieFuture<'a, TaskId> {
        // Unique within the process, and across processes by the random
        // start: task ids are looked up by callbacks.
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = format!("dry-run-{:08x}-{n}", rand_u32());
        if let Ok(mut kept) = self.requests.lock()
            && kept.len() < DRY_RUN_KEPT
        {
            kept.insert(id.clone(), request.to_string());
        }
        let task = TaskId::parse(&id).ok_or_else(|| KieError::BadResponse(id));
        Box::pin(async move { task })
    }

    fn record_info<'a>(&'a self, _family: Family, task: &'a TaskId) -> KieFuture<'a, TaskRecord> {
        let request = self
            .requests
            .lock()
            .ok()
            .and_then(|mut kept| kept.remove(task.as_str()));
        let text = match request {
            Some(r) => format!("DRY RUN: no KIE call was made. Request:\n{r}"),
            None => "DRY RUN: no KIE call was made.".to_owned(),
        };
        let mut extra = serde_json::Map::new();
        extra.insert("dryRun".into(), Value::Bool(true));
        let record = TaskRecord {
            task_id: task.clone(),
            model: None,
            state: TaskState::Success(TaskResult {
                text: Some(text),
                extra,
                ..TaskResult::default()
            }),
            run_ms: None,
            credits_consumed: None,
        };
        Box::pin(async move { Ok(record) })
    }

    fn download_url<'a>(&'a self, file_url: &'a str) -> KieFuture<'a, String> {
        // Nothing here came from KIE's hosts; the link is already the file's.
        Box::pin(async move { Ok(file_url.to_owned()) })
    }

    fn upload<'a>(
        &'a self,
        _chunks: ByteStream,
        len: u64,
        file_name: &'a str,
        mime: &'a str,
        _upload_path: &'a str,
    ) -> KieFuture<'a, UploadedFile> {
        // Nothing reaches KIE, but a draft needs a URL that validates.
        let file = UploadedFile {
            download_url: format!("https://dry-run.invalid/{file_name}"),
            file_name: file_name.to_owned(),
            size: len,
            mime: mime.to_owned(),
        };
        Box::pin(async move { Ok(file) })
    }

    fn credits(&self) -> KieFuture<'_, Credits> {
        Self::disabled("the account's credits")
    }

    fn list_models(&self) -> KieFuture<'_, Value> {
        Self::disabled("the catalogue")
    }

    fn model_schema<'a>(&'a self, _model: &'a str) -> KieFuture<'a, Value> {
        Self::disabled("a model's schema")
    }

    fn model_price<'a>(&'a self, _model: &'a str) -> KieFuture<'a, Value> {
        Self::disabled("a model's price")
    }

    fn paced(&self) -> bool {
        false
    }

    fn generates(&self) -> bool {
        false
    }
}

/// A random start for dry-run task ids, without a random-number crate: the
/// standard library's per-process hash seed.
fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::process::id()) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dry_run_task_succeeds_at_once_echoing_its_request() {
        let kie = DryRunKie::new();
        let request = serde_json::json!({"model": "m", "input": {"prompt": "a cat"}});
        let task = Kie::create_task(&kie, Family::Market, &request, None)
            .await
            .expect("dry-run create");
        assert!(task.as_str().starts_with("dry-run-"), "{task}");
        let other = Kie::create_task(&kie, Family::Market, &request, None)
            .await
            .expect("dry-run create");
        assert_ne!(task, other, "task ids are unique");
        let record = Kie::record_info(&kie, Family::Market, &task)
            .await
            .expect("dry-run status");
        let TaskState::Success(result) = record.state else {
            panic!("a dry run succeeds: {:?}", record.state);
        };
        assert!(result.result_urls.is_empty());
        let text = result.text.expect("a text result");
        assert!(text.starts_with("DRY RUN: no KIE call was made."), "{text}");
        assert!(text.contains("a cat"), "{text}");
        assert_eq!(result.extra.get("dryRun"), Some(&Value::Bool(true)));
        assert!(!kie.paced());
        assert!(!kie.generates());
    }

    #[tokio::test]
    async fn a_dry_run_reads_no_account_and_uploads_nowhere() {
        let kie = DryRunKie::new();
        assert!(matches!(
            Kie::credits(&kie).await,
            Err(KieError::FeatureDisabled(_))
        ));
        assert!(Kie::list_models(&kie).await.is_err());
        let up = Kie::upload(
            &kie,
            Box::pin(futures::stream::empty()),
            3,
            "cat.png",
            "image/png",
            "kiebot/1",
        )
        .await
        .expect("dry-run upload");
        assert_eq!(up.download_url, "https://dry-run.invalid/cat.png");
    }
}
