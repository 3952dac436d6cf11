//! Generations: the rows behind the lifecycle in [`GenerationStatus`].
//!
//! Every status change is a conditional `UPDATE .. WHERE status IN (legal
//! sources)`, so two workers racing on one generation cannot both move it,
//! and a change that moves money does it in the same transaction through the
//! ledger: entering `succeeded` captures the hold, entering `failed`,
//! `expired` or `canceled` releases it. There is no way to change the status
//! without its money step.
//!
//! The `finish_*`, `mark_*` and `schedule_*` calls are safe to repeat: "it is
//! already done" is success (`Ok(false)`), never a second charge.
//!
//! Not every generation is paid from the wallet ([`Funding`]): a daily free
//! use or a limited admin's budget is taken in the confirm transaction and
//! recorded on the row (`free_day`, `budget_spent`), and given back in the
//! transaction that ends the generation as failed, expired or canceled,
//! exactly once (`funding_returned_at`). A use or a budget is thus spent only
//! on a generation that succeeded.
//!
//! Every read of a row decodes it in one place ([`row`]), which also builds
//! its [`Lifecycle`](kiebot_domain::Lifecycle): the status together with
//! what decides the job it needs next.
//!
//! # Files
//!
//! - [`row`]: the column list, the row types ([`Generation`],
//!   [`DeliveryClaim`]) and their decoding; the leaf every other file uses.
//! - [`new`]: what a confirmation carries ([`NewGeneration`], [`Funding`],
//!   [`DialogueAfter`]) and answers ([`Creation`]).
//! - `confirm`: the confirmation, statement by statement on SQLite.
//! - `batch`: the confirmation on PostgreSQL, one call or group commit.
//! - [`claims`]: the worker side: claims, leases, schedules and the
//!   reconciler's batch claims.
//! - `finish`: the status changes that move money (capture, release) and
//!   give back a free use or a budget.
//! - `reads`: lookups and counts.
//!
//! The files depend on each other in one direction only: `row` and `new`
//! import no sibling, `batch` imports them, `confirm` imports `batch`, and
//! `claims`, `finish` and `reads` import `row` alone.

pub(crate) mod batch;
pub mod claims;
mod confirm;
mod finish;
pub mod new;
mod reads;
pub mod row;

pub use claims::FAIR_WINDOW;
pub use kiebot_domain::TaskOutcome;
pub use new::{Creation, DialogueAfter, Funding, NewGeneration};
pub use row::{DeliveryClaim, Generation, Generations};
