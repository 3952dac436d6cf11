//! Keeps the catalog true to KIE: compares every sold model with KIE's own
//! model catalogue, and drafts new entries from KIE's schemas.
//!
//! KIE renames and retires models, drops fields and narrows enums without
//! notice, and it ignores input fields it does not know: a stale entry fails
//! quietly (or charges for a field that no longer does anything). This crate
//! reads KIE's catalogue API and says what no longer matches.
//!
//! # Map
//! - [`schema`]: [`KieSchema`], a model's input schema read out of the
//!   OpenAPI document KIE serves for it.
//! - [`compare`](mod@compare): [`compare()`] one model's fields with its
//!   schema, [`compare_price`] its price table with KIE's price text; each
//!   difference a [`Finding`] with a [`Severity`] and a [`Code`].
//! - [`run`]: [`check`] the whole catalog through a [`KieCatalogue`] (KIE's
//!   HTTP API, paced to one request per second), giving a [`Report`].
//! - [`draft`]: [`draft_entry`] a catalog entry from a schema (`kiebot catalog
//!   import`).
//!
//! # The life of a check
//! 1. The model list is read once; a sold market model KIE does not list is
//!    an error (Veo and Suno have their own APIs, which the list may omit).
//! 2. Each listed model's schema is read (once per KIE model string, however
//!    many entries share it) and compared field by field.
//! 3. The price text (from the list, or the model's price endpoint) is
//!    compared with the table: drift is a warning, never an error.
//! 4. The [`Report`] names the models to take off sale: those with a finding
//!    that fails every request ([`Code::takes_off_sale`]), unless so many are
//!    missing at once that KIE's answer itself is suspect.

pub mod compare;
pub mod draft;
pub mod run;
pub mod schema;

pub use compare::{Code, Finding, Severity, compare, compare_price};
pub use draft::{Listing, draft_entry};
pub use run::{CheckError, CheckOptions, KieCatalogue, Report, check, parse_listing};
pub use schema::{KieSchema, Prop, PropType, SchemaError, input_schema};
