//! Pure domain types and rules of kiebot.
//!
//! Nothing here performs I/O. Everything that crosses a boundary (a user's
//! text, a catalog file, a database row) is parsed into one of these types once,
//! at the edge, and the rest of the program relies on the type's guarantees:
//!
//! - [`ids`]: typed identifiers (users, generations, models).
//! - [`money`]: [`Money`] in integer minor units, KIE [`Credits`] in
//!   thousandths, and exact fixed-point [`Rate`]s. No floats touch a balance.
//! - [`prompt`]: a validated user prompt.
//! - [`catalog`]: the model schema (fields, uploads, price rules) and the
//!   validated [`Catalog`] built from it.
//! - [`params`]: parameter values, their validation against a model schema, and
//!   the exact KIE request body built from them.
//! - [`pricing`]: the operator's price formula (credits x USD per credit x FX x
//!   markup, rounded up to the minor unit).
//! - [`generation`]: the generation lifecycle with only legal transitions.
//! - [`funding`]: who pays for a generation (wallet, free use, admin budget,
//!   nobody), decided without I/O.
//! - [`lifecycle`]: a generation's state with what decides its next job
//!   ([`Lifecycle::next_job`]).

pub mod catalog;
pub mod funding;
pub mod generation;
pub mod ids;
pub mod lifecycle;
pub mod money;
pub mod params;
pub mod pricing;
pub mod prompt;

pub use catalog::{
    Catalog, CatalogError, Category, Family, Field, FieldKind, GenerationType, Model, OutputKind,
};
pub use generation::{GenerationStatus, TransitionError};
pub use ids::{GenerationId, ModelId, UserId};
pub use lifecycle::{End, Lifecycle, NextJob, Notice, TaskOutcome};
pub use money::{Credits, Money, MoneyError, Rate};
pub use params::{ParamError, ParamValue, Params};
pub use pricing::{PriceError, Pricing};
pub use prompt::{Prompt, PromptError};
