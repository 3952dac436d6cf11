//! Queue names and fetch settings.
//!
//! Names are `<namespace>:kiebot:<job>:v<version>`. Bump a version when a
//! payload changes incompatibly: old workers drain the old queue, new workers
//! read the new one.

use std::time::Duration;

/// Submit queue, version 1.
pub const SUBMIT: &str = "kiebot:submit:v1";
/// Poll queue, version 1.
pub const POLL: &str = "kiebot:poll:v1";
/// Finalize queue, version 1.
pub const FINALIZE: &str = "kiebot:finalize:v1";
/// Deliver queue, version 1.
pub const DELIVER: &str = "kiebot:deliver:v1";

/// Jobs fetched per round trip by a worker.
pub const FETCH_BATCH: usize = 50;

/// How often a worker proves it is alive. A worker that misses its heartbeats
/// has its in-flight jobs handed back to the queue.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// The queue names of one deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueNames {
    /// Submit jobs.
    pub submit: String,
    /// Poll jobs.
    pub poll: String,
    /// Finalize jobs.
    pub finalize: String,
    /// Deliver jobs.
    pub deliver: String,
}

impl QueueNames {
    /// Names under a namespace (`""` for production; tests use a random one).
    pub fn new(namespace: &str) -> Self {
        let n = |base: &str| {
            if namespace.is_empty() {
                base.to_owned()
            } else {
                format!("{namespace}:{base}")
            }
        };
        QueueNames {
            submit: n(SUBMIT),
            poll: n(POLL),
            finalize: n(FINALIZE),
            deliver: n(DELIVER),
        }
    }

    /// Every name, in pipeline order.
    pub fn all(&self) -> Vec<String> {
        vec![
            self.submit.clone(),
            self.poll.clone(),
            self.finalize.clone(),
            self.deliver.clone(),
        ]
    }
}

impl Default for QueueNames {
    fn default() -> Self {
        Self::new("")
    }
}
