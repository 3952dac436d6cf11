//! When to ask KIE about a running task.
//!
//! KIE answers at most 10 status requests per second per key, so polls are a
//! budget to spend where they pay: around the moment the task is likely to
//! finish. Each model's recent run times (KIE's own clock, kept on finished
//! generations) give that moment as a spread, p10 to p90. A task is polled
//! once early (to catch early failures), then every `hot_gap` through its
//! likely window, then less and less often if it runs late. A model with too
//! few measured runs uses its catalog estimate with a wide spread.
//!
//! With KIE callbacks on, a finished task is usually reported within a second
//! by its callback, so the hot gap widens: polls are then the safety net.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Finished runs needed before a model's own times replace its estimate.
pub const MIN_SAMPLES: usize = 5;
/// Finished runs a model's estimate is made of.
pub const SAMPLES: u32 = 50;
/// How long a model's estimate is kept before it is read again.
pub const ESTIMATE_TTL: Duration = Duration::from_secs(60);

/// How long a model's tasks take at KIE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunEstimate {
    /// One run in ten is shorter.
    pub p10: Duration,
    /// The median.
    pub p50: Duration,
    /// One run in ten is longer.
    pub p90: Duration,
    /// From measured runs (not the catalog's guess).
    pub measured: bool,
}

impl RunEstimate {
    /// From run times in milliseconds; `None` below [`MIN_SAMPLES`].
    pub fn from_samples(samples_ms: &[i64]) -> Option<RunEstimate> {
        let mut v: Vec<u64> = samples_ms
            .iter()
            .filter_map(|ms| u64::try_from(*ms).ok())
            .collect();
        if v.len() < MIN_SAMPLES {
            return None;
        }
        v.sort_unstable();
        let at = |q: f64| {
            let i = ((v.len() - 1) as f64 * q).round() as usize;
            Duration::from_millis(v[i.min(v.len() - 1)])
        };
        Some(RunEstimate {
            p10: at(0.1),
            p50: at(0.5),
            p90: at(0.9),
            measured: true,
        })
    }

    /// The catalog's typical run time, spread from half to twice it.
    pub fn prior(expected: Duration) -> RunEstimate {
        RunEstimate {
            p10: expected / 2,
            p50: expected,
            p90: expected * 2,
            measured: false,
        }
    }
}

/// The shape of a poll schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollPlan {
    /// The earliest poll after creation.
    pub first: Duration,
    /// Between polls while the task is likely to finish.
    pub hot_gap: Duration,
    /// The longest wait between polls.
    pub max_gap: Duration,
    /// Callbacks report finished tasks: polls are the safety net.
    pub callbacks: bool,
}

impl Default for PollPlan {
    fn default() -> Self {
        PollPlan {
            first: Duration::from_secs(3),
            hot_gap: Duration::from_secs(2),
            max_gap: Duration::from_secs(30),
            callbacks: false,
        }
    }
}

impl PollPlan {
    fn gap(&self, est: &RunEstimate) -> Duration {
        // Without measured runs the window is wide: poll it less densely.
        let base = if est.measured {
            self.hot_gap
        } else {
            (est.p50 / 10).clamp(self.hot_gap, self.max_gap.max(self.hot_gap))
        };
        if self.callbacks {
            (base * 4).min(self.max_gap.max(base))
        } else {
            base
        }
    }

    /// How long after now to poll a task that has run for `elapsed` and is
    /// not finished.
    pub fn next(&self, est: &RunEstimate, elapsed: Duration) -> Duration {
        let gap = self.gap(est);
        // The likely window opens a little before p10, so a run at p10 is
        // seen within half a gap.
        let opens = est.p10.saturating_sub(gap / 2).max(self.first);
        let closes = est.p90 + gap;
        let delay = if elapsed < opens {
            let to_window = opens - elapsed;
            // One early look at a long task (KIE fails some at once), then
            // the window; a very long wait is broken into max-gap steps.
            let early = (opens / 4).max(self.first);
            if elapsed < early && opens > 4 * self.first {
                early - elapsed
            } else {
                to_window.min(self.max_gap)
            }
        } else if elapsed <= closes {
            gap
        } else {
            // Late: back off with how late it is.
            ((elapsed - est.p90) / 2).clamp(gap, self.max_gap.max(gap))
        };
        delay.max(Duration::from_millis(200))
    }
}

/// Each model's estimate, read from the database at most once per
/// [`ESTIMATE_TTL`] per process.
#[derive(Debug, Default)]
pub struct RunTimes {
    known: Mutex<HashMap<String, (Instant, Option<RunEstimate>)>>,
}

impl RunTimes {
    /// The estimate of `model` if it was read recently: `Some(None)` means
    /// "read, too few runs".
    pub fn cached(&self, model: &str) -> Option<Option<RunEstimate>> {
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        known
            .get(model)
            .filter(|(at, _)| at.elapsed() < ESTIMATE_TTL)
            .map(|(_, e)| *e)
    }

    /// Keeps what was read.
    pub fn keep(&self, model: &str, estimate: Option<RunEstimate>) {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        known.insert(model.to_owned(), (Instant::now(), estimate));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: u64) -> Duration {
        Duration::from_secs(x)
    }

    fn measured(p10: u64, p50: u64, p90: u64) -> RunEstimate {
        RunEstimate {
            p10: s(p10),
            p50: s(p50),
            p90: s(p90),
            measured: true,
        }
    }

    /// The times (from creation) the plan polls a task that never finishes,
    /// up to `until`.
    fn schedule(plan: &PollPlan, est: &RunEstimate, until: Duration) -> Vec<Duration> {
        let mut t = plan.first.min(plan.next(est, Duration::ZERO));
        let mut out = vec![];
        while t < until {
            out.push(t);
            t += plan.next(est, t);
        }
        out
    }

    #[test]
    fn estimates_need_enough_runs_and_read_their_percentiles() {
        assert_eq!(RunEstimate::from_samples(&[1000, 2000]), None);
        let e =
            RunEstimate::from_samples(&[10_000, 11_000, 12_000, 13_000, 14_000, 30_000]).unwrap();
        assert_eq!(e.p50, Duration::from_millis(13_000));
        assert_eq!(e.p90, Duration::from_millis(30_000));
        assert!(e.measured);
    }

    #[test]
    fn a_long_task_is_looked_at_once_early_then_densely_in_its_window() {
        let plan = PollPlan::default();
        let est = measured(114, 120, 126);
        let times = schedule(&plan, &est, s(140));
        let before: Vec<_> = times.iter().filter(|t| **t < s(112)).collect();
        let inside = times
            .iter()
            .filter(|t| **t >= s(112) && **t <= s(128))
            .count();
        assert!(before.len() <= 5, "{times:?}");
        assert!(inside >= 6, "{times:?}");
        // In the window no two polls are further apart than the hot gap.
        let window: Vec<_> = times
            .iter()
            .filter(|t| **t >= s(113) && **t <= s(126))
            .collect();
        for w in window.windows(2) {
            assert!(*w[1] - *w[0] <= plan.hot_gap, "{times:?}");
        }
    }

    #[test]
    fn a_short_task_is_polled_soon_and_often() {
        let plan = PollPlan::default();
        let est = measured(5, 5, 6);
        let times = schedule(&plan, &est, s(12));
        assert!(times[0] <= s(4), "{times:?}");
        assert!(times.len() >= 4, "{times:?}");
    }

    #[test]
    fn a_late_task_is_polled_less_and_less_often_up_to_the_max_gap() {
        let plan = PollPlan::default();
        let est = measured(20, 22, 24);
        assert!(plan.next(&est, s(40)) > plan.hot_gap);
        assert_eq!(plan.next(&est, s(600)), plan.max_gap);
    }

    #[test]
    fn callbacks_widen_the_window_s_gap_and_unmeasured_models_spread_wider() {
        let est = measured(20, 22, 24);
        let plain = PollPlan::default();
        let with_callbacks = PollPlan {
            callbacks: true,
            ..plain
        };
        assert!(with_callbacks.next(&est, s(21)) > plain.next(&est, s(21)));
        let prior = RunEstimate::prior(s(120));
        assert_eq!(prior.p10, s(60));
        assert_eq!(plain.next(&prior, s(70)), s(12));
    }
}
