//! The generation lifecycle.
//!
//! ```text
//! pending --submit--> submitted --result--> succeeded --deliver--> delivered
//!    |                    |
//!    +--------------------+--> failed | expired | canceled   (hold released)
//! ```
//!
//! Money follows the state: the hold is placed with `pending`, captured in the
//! same transaction that records `succeeded`, and released in the one that
//! records `failed`, `expired` or `canceled`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a generation is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GenerationStatus {
    /// Confirmed and held; the submit job has not created the KIE task yet.
    Pending,
    /// KIE has a task; waiting for its result.
    Submitted,
    /// KIE finished; the hold is captured; delivery outstanding.
    Succeeded,
    /// The result reached the user.
    Delivered,
    /// KIE refused or failed the task; the hold is released.
    Failed,
    /// No result before the model's deadline; the hold is released.
    Expired,
    /// Canceled by the user or an operator before a result; the hold is released.
    Canceled,
}

/// A transition the lifecycle does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a generation cannot go from {from} to {to}")]
pub struct TransitionError {
    /// Current state.
    pub from: GenerationStatus,
    /// Requested state.
    pub to: GenerationStatus,
}

impl GenerationStatus {
    /// Every state.
    pub const ALL: [GenerationStatus; 7] = [
        GenerationStatus::Pending,
        GenerationStatus::Submitted,
        GenerationStatus::Succeeded,
        GenerationStatus::Delivered,
        GenerationStatus::Failed,
        GenerationStatus::Expired,
        GenerationStatus::Canceled,
    ];

    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            GenerationStatus::Pending => "pending",
            GenerationStatus::Submitted => "submitted",
            GenerationStatus::Succeeded => "succeeded",
            GenerationStatus::Delivered => "delivered",
            GenerationStatus::Failed => "failed",
            GenerationStatus::Expired => "expired",
            GenerationStatus::Canceled => "canceled",
        }
    }

    /// No further transition is possible.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            GenerationStatus::Delivered
                | GenerationStatus::Failed
                | GenerationStatus::Expired
                | GenerationStatus::Canceled
        )
    }

    /// Still holding the user's money and counting towards their limit of
    /// concurrent generations.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            GenerationStatus::Pending | GenerationStatus::Submitted
        )
    }

    /// The hold is released when entering this state.
    pub fn releases_hold(self) -> bool {
        matches!(
            self,
            GenerationStatus::Failed | GenerationStatus::Expired | GenerationStatus::Canceled
        )
    }

    /// Whether `self -> to` is a legal step.
    pub fn can_become(self, to: GenerationStatus) -> bool {
        use GenerationStatus::*;
        matches!(
            (self, to),
            (Pending, Submitted)
                | (Pending, Failed)
                | (Pending, Expired)
                | (Pending, Canceled)
                | (Submitted, Succeeded)
                | (Submitted, Failed)
                | (Submitted, Expired)
                | (Submitted, Canceled)
                | (Succeeded, Delivered)
        )
    }

    /// `to` if the step is legal.
    pub fn transition(self, to: GenerationStatus) -> Result<GenerationStatus, TransitionError> {
        if self.can_become(to) {
            Ok(to)
        } else {
            Err(TransitionError { from: self, to })
        }
    }

    /// The states from which `to` can be reached in one step, for conditional
    /// updates (`UPDATE ... WHERE status IN (...)`).
    pub fn sources_of(to: GenerationStatus) -> Vec<GenerationStatus> {
        Self::ALL.into_iter().filter(|s| s.can_become(to)).collect()
    }
}

impl fmt::Display for GenerationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored status name that is not a state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown generation status {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for GenerationStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::GenerationStatus::*;
    use super::*;

    #[test]
    fn the_happy_path_is_legal() {
        let s = Pending.transition(Submitted).unwrap();
        let s = s.transition(Succeeded).unwrap();
        assert_eq!(s.transition(Delivered).unwrap(), Delivered);
    }

    #[test]
    fn terminal_states_go_nowhere() {
        for from in GenerationStatus::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
        {
            for to in GenerationStatus::ALL {
                assert!(from.transition(to).is_err(), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn success_cannot_be_undone_and_failure_cannot_succeed() {
        assert!(Succeeded.transition(Failed).is_err());
        assert!(Succeeded.transition(Canceled).is_err());
        assert!(Failed.transition(Succeeded).is_err());
        assert!(Pending.transition(Succeeded).is_err());
        assert!(Pending.transition(Delivered).is_err());
    }

    #[test]
    fn names_round_trip() {
        for s in GenerationStatus::ALL {
            assert_eq!(s.as_str().parse::<GenerationStatus>().unwrap(), s);
        }
        assert!("done".parse::<GenerationStatus>().is_err());
    }

    #[test]
    fn every_state_is_reachable_and_every_path_ends() {
        // Walk the graph from pending: everything is reachable, and each path
        // reaches a terminal state (the graph has no cycles).
        fn walk(s: GenerationStatus, depth: usize, seen: &mut Vec<GenerationStatus>) {
            assert!(depth < 10, "cycle through {s}");
            if !seen.contains(&s) {
                seen.push(s);
            }
            for to in GenerationStatus::ALL
                .into_iter()
                .filter(|t| s.can_become(*t))
            {
                walk(to, depth + 1, seen);
            }
        }
        let mut seen = vec![];
        walk(Pending, 0, &mut seen);
        assert_eq!(seen.len(), GenerationStatus::ALL.len());
    }
}
