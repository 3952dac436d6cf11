//! Callbacks: posting finished tasks to their `callBackUrl`, signed as KIE's
//! "webhook verification" does when a key is set, in order for Suno's stages.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::CallbackMode;
use super::state::{Family, PendingCallback, RecordView, Shared, State, suno_stage, view_of};
use super::{market, suno, veo};

/// The header carrying the unix time (seconds) a callback was signed at.
pub const TIMESTAMP_HEADER: &str = "X-Webhook-Timestamp";
/// The header carrying the callback's signature.
pub const SIGNATURE_HEADER: &str = "X-Webhook-Signature";

/// KIE's webhook signature: standard base64 of HMAC-SHA256 keyed with the
/// account's webhook HMAC key over `taskId + "." + timestamp`.
pub fn webhook_signature(key: &str, task_id: &str, timestamp: u64) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(format!("{task_id}.{timestamp}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

pub(super) fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Whether the URL's host can never resolve (RFC 2606 `.invalid`, which the
/// client uses when it wants no callback but Suno insists on one).
fn never_resolves(url: &str) -> bool {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
        .is_some_and(|h| h == "invalid" || h.ends_with(".invalid"))
}

fn times_of(mode: CallbackMode) -> Option<u32> {
    match mode {
        CallbackMode::Off => None,
        CallbackMode::Once => Some(1),
        CallbackMode::Twice => Some(2),
    }
}

impl Shared {
    /// Posts one callback body and counts the outcome. Signed when a webhook
    /// key is set.
    pub(super) async fn post_callback(&self, url: &str, task_id: &str, body: &Value) {
        let ok = if never_resolves(url) {
            false
        } else {
            let key = self.lock().webhook_key.clone();
            let mut request = self.http.post(url).json(body);
            if let Some(key) = key {
                let timestamp = unix_secs();
                request = request
                    .header(TIMESTAMP_HEADER, timestamp.to_string())
                    .header(
                        SIGNATURE_HEADER,
                        webhook_signature(&key, task_id, timestamp),
                    );
            }
            request.send().await.is_ok_and(|r| r.status().is_success())
        };
        let counter = if ok {
            &self.callbacks_delivered
        } else {
            &self.callbacks_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Posts a finished market or Veo task to its callback URL, as scripted.
    /// (Suno's callbacks go through [`Shared::queue_suno`].)
    pub(super) fn spawn_callback(self: &Arc<Self>, view: RecordView) {
        if view.family == Family::Suno {
            return;
        }
        let Some(url) = view.callback_url.clone() else {
            return;
        };
        let Some(times) = times_of(self.lock().callbacks) else {
            return;
        };
        let shared = self.clone();
        tokio::spawn(async move {
            let body = match view.family {
                Family::Veo => veo::callback_json(&shared.base_url, &view),
                _ => market::callback_json(&view),
            };
            for _ in 0..times {
                shared.post_callback(&url, &view.id, &body).await;
            }
        });
    }

    /// Queues the callbacks of the Suno stages task `id` passed since the
    /// last call (`text`, `first`, then `complete`; or `error`). Call under
    /// the lock; returns whether a sender must be started
    /// ([`Shared::spawn_sender`]).
    pub(super) fn queue_suno(&self, state: &mut State, id: &str, now: Instant) -> bool {
        let mode = state.callbacks;
        let Some(task) = state.tasks.get_mut(id) else {
            return false;
        };
        let target = suno_stage(task, now);
        let from = task.stage_sent;
        if target <= from {
            return false;
        }
        task.stage_sent = target;
        let (Some(url), Some(times)) = (task.callback_url.clone(), times_of(mode)) else {
            return false;
        };
        let stages: Vec<u8> = if target == super::state::SUNO_FAILED {
            vec![target]
        } else {
            (from + 1..=target).collect()
        };
        let view = view_of(id, task, now);
        let bodies: Vec<Value> = stages
            .into_iter()
            .map(|stage| suno::callback_json(&self.base_url, &view, stage))
            .collect();
        let mut start = false;
        for body in bodies {
            let pending = PendingCallback {
                url: url.clone(),
                body,
                times,
            };
            match state.outbox.get_mut(id) {
                Some(queue) => queue.push_back(pending),
                None => {
                    state
                        .outbox
                        .insert(id.to_owned(), VecDeque::from([pending]));
                    start = true;
                }
            }
        }
        start
    }

    /// Posts task `id`'s queued callbacks one after another until none is
    /// left.
    pub(super) fn spawn_sender(self: &Arc<Self>, id: String) {
        let shared = self.clone();
        tokio::spawn(async move {
            loop {
                let next = {
                    let mut state = shared.lock();
                    match state.outbox.get_mut(&id).and_then(VecDeque::pop_front) {
                        Some(next) => next,
                        None => {
                            state.outbox.remove(&id);
                            return;
                        }
                    }
                };
                for _ in 0..next.times {
                    shared.post_callback(&next.url, &id, &next.body).await;
                }
            }
        });
    }

    /// Brings a task up to date at `now` outside a poll (a timer): finishes
    /// it if due and posts what that calls for.
    fn touch(self: &Arc<Self>, id: &str, now: Instant) {
        let (view, start) = {
            let mut state = self.lock();
            let Some(task) = state.tasks.get_mut(id) else {
                return;
            };
            let family = task.family;
            let finished = self.settle(id, task, now);
            let view = (finished && family != Family::Suno).then(|| view_of(id, task, now));
            let start = family == Family::Suno && self.queue_suno(&mut state, id, now);
            (view, start)
        };
        if start {
            self.spawn_sender(id.to_owned());
        }
        if let Some(view) = view {
            self.spawn_callback(view);
        }
    }

    /// Finishes a time-based task when its time comes, so that its callback
    /// goes out without anyone polling (Suno's also at a third and two thirds
    /// of the run, for the `text` and `first` callbacks). Polls notice the
    /// time by themselves.
    pub(super) fn spawn_timer(
        self: &Arc<Self>,
        id: String,
        family: Family,
        created_at: Instant,
        run: Duration,
    ) {
        let shared = self.clone();
        tokio::spawn(async move {
            let marks: &[u32] = if family == Family::Suno {
                &[1, 2, 3]
            } else {
                &[3]
            };
            for &k in marks {
                // Rounded up, so that the stage has surely begun.
                let nanos = (run.as_nanos() * u128::from(k)).div_ceil(3);
                let Some(at) = u64::try_from(nanos)
                    .ok()
                    .and_then(|n| created_at.checked_add(Duration::from_nanos(n)))
                else {
                    return;
                };
                tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
                shared.touch(&id, Instant::now().max(at));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_base64_hmac_sha256_of_id_dot_timestamp() {
        // Computed independently (Python's hmac) for key "k" and the message
        // "task_7.1700000000".
        assert_eq!(
            webhook_signature("k", "task_7", 1_700_000_000),
            "IV7R5AeTzTmWQH4B4LCfd+nk/hjBGtQGfBCPeyvJ9m8="
        );
    }

    #[test]
    fn invalid_hosts_are_never_posted_to() {
        assert!(never_resolves("https://callback.invalid/kiebot"));
        assert!(!never_resolves("http://127.0.0.1:8080/cb"));
    }
}
