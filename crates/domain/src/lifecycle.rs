//! A generation's place in its life as one typed value, and the job that
//! moves it on.
//!
//! [`GenerationStatus`] alone does not say what a generation needs next: a
//! submitted generation whose outcome a poll has recorded needs `Finalize`,
//! not another `Poll`, and a finished one needs `Deliver` only while its
//! user has not been told (and delivery was not given up). [`Lifecycle`]
//! holds the status together with the columns that decide this, so that
//! [`Lifecycle::next_job`] is the one place that answers "which job now?".
//! The store builds it from a row, in one place; the reconciler, the
//! handlers and the dashboard match on it.

use crate::generation::GenerationStatus;

/// What KIE said about a finished task, recorded before the generation is
/// finalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskOutcome {
    /// A result (the stored JSON: `resultUrls`, `text`, ...).
    Success {
        /// The result JSON.
        result: String,
    },
    /// A failure.
    Failure {
        /// Machine-readable code (KIE's failCode, an HTTP code, ...).
        code: String,
        /// Human-readable reason.
        reason: String,
    },
}

/// Where a generation is in its life, with what decides its next step.
/// Times are unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lifecycle {
    /// Confirmed and held; KIE has no task yet (`pending`).
    Pending {
        /// createTask calls started so far.
        attempts: u32,
        /// When a submit is due again after a failed or parked attempt;
        /// `None` until the first attempt is given back.
        retry_at: Option<i64>,
    },
    /// KIE has a task (`submitted`).
    Running {
        /// KIE's task id.
        task: String,
        /// When the next poll (or, with an outcome, the next Finalize) is due.
        next_poll: Option<i64>,
        /// What a poll saw KIE end the task with, not yet finalized.
        outcome: Option<TaskOutcome>,
    },
    /// The money has moved; what is left is telling the user.
    Finished {
        /// How it ended.
        end: End,
        /// Where telling the user stands.
        notice: Notice,
    },
}

/// How a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum End {
    /// KIE gave a result; the hold is captured.
    Succeeded,
    /// KIE (or a check before it) failed the task; the hold is released.
    Failed,
    /// No result before the deadline; the hold is released.
    Expired,
    /// Canceled by an operator; the hold is released.
    Canceled,
}

/// Where telling the user about a finished generation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Notice {
    /// A delivery attempt is due at `at`.
    Due {
        /// When.
        at: i64,
    },
    /// A handler claimed the delivery until `until` (a claim past `until`
    /// has lapsed: the next attempt may take it).
    Claimed {
        /// The claim's end.
        until: i64,
    },
    /// The user has been told (or blocked the bot).
    Told,
    /// Delivery attempts stopped; the result stays in the user's history.
    GaveUp,
}

/// The kind of job a generation needs next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NextJob {
    /// Create the KIE task.
    Submit,
    /// Ask KIE where the task is.
    Poll,
    /// Turn the recorded outcome into money and a final state.
    Finalize,
    /// Tell the user.
    Deliver,
    /// Nothing: the generation's life is over.
    Nothing,
}

impl End {
    /// The status a generation that ended this way has while its user has
    /// not been told.
    pub fn status(self) -> GenerationStatus {
        match self {
            End::Succeeded => GenerationStatus::Succeeded,
            End::Failed => GenerationStatus::Failed,
            End::Expired => GenerationStatus::Expired,
            End::Canceled => GenerationStatus::Canceled,
        }
    }
}

impl Lifecycle {
    /// The job that moves the generation on. Whether it is due now is the
    /// schedule's business (`retry_at`, `next_poll`, [`Notice::Due`]), not
    /// this answer's.
    pub fn next_job(&self) -> NextJob {
        match self {
            Lifecycle::Pending { .. } => NextJob::Submit,
            Lifecycle::Running { outcome: None, .. } => NextJob::Poll,
            Lifecycle::Running {
                outcome: Some(_), ..
            } => NextJob::Finalize,
            Lifecycle::Finished {
                notice: Notice::Due { .. } | Notice::Claimed { .. },
                ..
            } => NextJob::Deliver,
            Lifecycle::Finished {
                notice: Notice::Told | Notice::GaveUp,
                ..
            } => NextJob::Nothing,
        }
    }

    /// The stored status this state has: a success the user has been told
    /// about is `delivered`; a told failure keeps its status.
    pub fn status(&self) -> GenerationStatus {
        match self {
            Lifecycle::Pending { .. } => GenerationStatus::Pending,
            Lifecycle::Running { .. } => GenerationStatus::Submitted,
            Lifecycle::Finished {
                end: End::Succeeded,
                notice: Notice::Told,
            } => GenerationStatus::Delivered,
            Lifecycle::Finished { end, .. } => end.status(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_state() -> Vec<Lifecycle> {
        let outcomes = [
            None,
            Some(TaskOutcome::Success {
                result: "{}".into(),
            }),
            Some(TaskOutcome::Failure {
                code: "500".into(),
                reason: "internal error".into(),
            }),
        ];
        let mut states = vec![
            Lifecycle::Pending {
                attempts: 0,
                retry_at: None,
            },
            Lifecycle::Pending {
                attempts: 2,
                retry_at: Some(5),
            },
        ];
        states.extend(outcomes.into_iter().map(|outcome| Lifecycle::Running {
            task: "t".into(),
            next_poll: Some(1),
            outcome,
        }));
        for end in [End::Succeeded, End::Failed, End::Expired, End::Canceled] {
            for notice in [
                Notice::Due { at: 1 },
                Notice::Claimed { until: 2 },
                Notice::Told,
                Notice::GaveUp,
            ] {
                states.push(Lifecycle::Finished { end, notice });
            }
        }
        states
    }

    #[test]
    fn every_state_has_its_job() {
        for state in every_state() {
            let expected = match &state {
                Lifecycle::Pending { .. } => NextJob::Submit,
                Lifecycle::Running { outcome: None, .. } => NextJob::Poll,
                Lifecycle::Running { .. } => NextJob::Finalize,
                Lifecycle::Finished {
                    notice: Notice::Due { .. } | Notice::Claimed { .. },
                    ..
                } => NextJob::Deliver,
                Lifecycle::Finished { .. } => NextJob::Nothing,
            };
            assert_eq!(state.next_job(), expected, "{state:?}");
        }
    }

    #[test]
    fn the_jobs_follow_the_happy_path() {
        let pending = Lifecycle::Pending {
            attempts: 0,
            retry_at: None,
        };
        let polling = Lifecycle::Running {
            task: "t".into(),
            next_poll: Some(10),
            outcome: None,
        };
        let recorded = Lifecycle::Running {
            task: "t".into(),
            next_poll: Some(10),
            outcome: Some(TaskOutcome::Success {
                result: "{}".into(),
            }),
        };
        let untold = Lifecycle::Finished {
            end: End::Succeeded,
            notice: Notice::Due { at: 20 },
        };
        let told = Lifecycle::Finished {
            end: End::Succeeded,
            notice: Notice::Told,
        };
        let jobs: Vec<NextJob> = [pending, polling, recorded, untold, told]
            .iter()
            .map(Lifecycle::next_job)
            .collect();
        assert_eq!(
            jobs,
            [
                NextJob::Submit,
                NextJob::Poll,
                NextJob::Finalize,
                NextJob::Deliver,
                NextJob::Nothing
            ]
        );
    }

    #[test]
    fn a_failure_is_told_too_and_a_given_up_delivery_needs_nothing() {
        for end in [End::Failed, End::Expired, End::Canceled] {
            let due = Lifecycle::Finished {
                end,
                notice: Notice::Due { at: 1 },
            };
            assert_eq!(due.next_job(), NextJob::Deliver);
            let gave_up = Lifecycle::Finished {
                end,
                notice: Notice::GaveUp,
            };
            assert_eq!(gave_up.next_job(), NextJob::Nothing);
        }
    }

    #[test]
    fn statuses_match_the_stored_ones() {
        for state in every_state() {
            let status = state.status();
            match &state {
                Lifecycle::Pending { .. } => assert_eq!(status, GenerationStatus::Pending),
                Lifecycle::Running { .. } => assert_eq!(status, GenerationStatus::Submitted),
                Lifecycle::Finished {
                    end: End::Succeeded,
                    notice: Notice::Told,
                } => assert_eq!(status, GenerationStatus::Delivered),
                Lifecycle::Finished { end, .. } => assert_eq!(status, end.status()),
            }
            // Only what is still active needs KIE; the rest only a notice.
            assert_eq!(
                status.is_active(),
                matches!(
                    state.next_job(),
                    NextJob::Submit | NextJob::Poll | NextJob::Finalize
                ),
                "{state:?}"
            );
        }
    }
}
