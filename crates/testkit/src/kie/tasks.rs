//! Creating and polling tasks: what the three families (market, Veo, Suno)
//! share. Each family's module parses and checks its own request and shapes
//! its own replies.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::state::{Due, Family, RecordView, Shared, Task, in_window, view_of};
use super::util::{now_ms, success};
use super::{BadReply, CallbackMode, Endpoint};

/// A create request that passed its family's checks.
pub(super) struct NewTask {
    pub(super) family: Family,
    pub(super) model: String,
    /// What [`super::TaskSnapshot::input`] shows.
    pub(super) input: Value,
    pub(super) callback_url: Option<String>,
    /// The request as KIE echoes it in the record.
    pub(super) param: Arc<str>,
}

enum CreateDecision {
    Fail(i64),
    Reject(i64, String),
    RateLimited,
    Created {
        id: String,
        dropped: bool,
        /// Finish this task after a delay (someone waits for its callback).
        timer: Option<(Instant, Duration)>,
        /// The finished record (finished at creation; market and Veo).
        view: Option<Box<RecordView>>,
        /// Suno callbacks were queued and need a sender.
        send: bool,
    },
}

impl Shared {
    /// Creates a task (or fails as scripted) and answers with its id.
    pub(super) async fn create(self: &Arc<Self>, new: NewTask) -> Response {
        let NewTask {
            family,
            model,
            input,
            callback_url,
            param,
        } = new;
        let number = self.next_id.fetch_add(1, Ordering::Relaxed);
        let id = format!("task_{number}");
        let decision = {
            let mut state = self.lock();
            let now = Instant::now();
            if let Some((code, msg)) = state.reject_creates.clone() {
                CreateDecision::Reject(code, msg)
            } else if let Some((n, code)) = state.fail_creates {
                state.fail_creates = (n > 1).then_some((n - 1, code));
                CreateDecision::Fail(code)
            } else if let Some((n, window)) = state.create_limit
                && in_window(&state.accepted_creates, now, window) >= n as usize
            {
                CreateDecision::RateLimited
            } else {
                state.accepted_creates.push(now);
                let dropped = state.drop_create_replies > 0;
                if dropped {
                    state.drop_create_replies -= 1;
                }
                let outcome = state
                    .model_outcomes
                    .get(&model)
                    .unwrap_or(&state.default_outcome)
                    .clone();
                let credits = state.credits_consumed.get(&model).copied().unwrap_or(1.0);
                let mut task = Task {
                    family,
                    model,
                    input: Arc::new(input),
                    callback_url,
                    param,
                    due: Due::of(&outcome),
                    outcome,
                    credits,
                    created_at: now,
                    create_time_ms: now_ms(),
                    polls: 0,
                    finished: None,
                    finished_at: None,
                    stage_sent: 0,
                };
                let finished = self.settle(&id, &mut task, now);
                let timer = match task.due {
                    Due::After(run)
                        if !finished
                            && task.callback_url.is_some()
                            && state.callbacks != CallbackMode::Off =>
                    {
                        Some((now, run))
                    }
                    _ => None,
                };
                let view = (finished && family != Family::Suno)
                    .then(|| Box::new(view_of(&id, &task, now)));
                state.tasks.insert(id.clone(), task);
                let send = family == Family::Suno && self.queue_suno(&mut state, &id, now);
                self.created.fetch_add(1, Ordering::Relaxed);
                CreateDecision::Created {
                    id,
                    dropped,
                    timer,
                    view,
                    send,
                }
            }
        };
        match decision {
            CreateDecision::Reject(code, msg) => self.error(StatusCode::OK, code, &msg),
            CreateDecision::Fail(code) => self.fault(code),
            CreateDecision::RateLimited => {
                self.rate_limited_creates.fetch_add(1, Ordering::Relaxed);
                self.fault(429)
            }
            CreateDecision::Created {
                id,
                dropped,
                timer,
                view,
                send,
            } => {
                if send {
                    self.spawn_sender(id.clone());
                }
                if let Some(view) = view {
                    self.spawn_callback(*view);
                } else if let Some((created_at, run)) = timer {
                    self.spawn_timer(id.clone(), family, created_at, run);
                }
                if dropped {
                    self.hang().await;
                }
                success(json!({ "taskId": id }))
            }
        }
    }

    /// The shared part of every status endpoint: admission, the poll limit,
    /// scripted poll failures, the lookup (a task is found only through its
    /// own family's endpoint), counting the poll and finishing a task whose
    /// time has come. Returns the task's record and the scripted malformed
    /// reply to bend it with; a market or Veo task that just finished is
    /// posted to its callback URL, a Suno task's passed stages are.
    pub(super) async fn poll(
        self: &Arc<Self>,
        family: Family,
        endpoint: Endpoint,
        headers: &HeaderMap,
        query: &HashMap<String, String>,
    ) -> Result<(RecordView, Option<BadReply>), Response> {
        let bad = self.admit_api(endpoint, headers).await?;
        if !self.admit_poll() {
            return Err(self.fault(429));
        }
        let Some(id) = query.get("taskId").filter(|t| !t.is_empty()) else {
            return Err(self.error(StatusCode::OK, 422, "taskId is required"));
        };
        let now = Instant::now();
        let (view, just_finished, send) = {
            let mut state = self.lock();
            if let Some((n, code)) = state.fail_polls {
                state.fail_polls = (n > 1).then_some((n - 1, code));
                drop(state);
                return Err(self.fault(code));
            }
            let Some(task) = state
                .tasks
                .get_mut(id.as_str())
                .filter(|t| t.family == family)
            else {
                drop(state);
                return Err(self.error(StatusCode::OK, 404, "Task not found"));
            };
            task.polls = task.polls.saturating_add(1);
            let just_finished = self.settle(id, task, now);
            let view = view_of(id, task, now);
            let send = family == Family::Suno && self.queue_suno(&mut state, id, now);
            (view, just_finished, send)
        };
        if send {
            self.spawn_sender(id.clone());
        }
        if just_finished && family != Family::Suno {
            self.spawn_callback(view.clone());
        }
        Ok((view, bad))
    }
}
