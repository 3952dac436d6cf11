//! The kiebot model catalog as data, and the loader that validates it.
//!
//! The catalog is a TOML file of `[[model]]` tables in the serde shape of
//! [`kiebot_domain::catalog::Model`]. `models.toml` ships inside this crate
//! ([`DEFAULT_CATALOG`]); an operator can replace it with their own file
//! (`CATALOG_PATH`) without rebuilding.
//!
//! Loading is all or nothing: [`parse`] reads every model, then
//! [`Catalog::new`] checks the whole set (enum defaults inside their enums,
//! price rules naming real fields, unique ids...). Any problem stops start-up
//! with one message that names the model and, where it applies, the field:
//!
//! ```text
//! model kling/v2-1-pro, field duration: default "7": duration: "7" is not one of the options
//! ```
//!
//! - [`load`]: the binary's entry point; an override path or the shipped file.
//! - [`load_default`] / [`load_path`]: the two sources on their own.
//! - [`parse`]: TOML text to a validated [`Catalog`].

use std::path::{Path, PathBuf};

use kiebot_domain::catalog::{Catalog, CatalogError, Model};
use serde::Deserialize;

/// The catalog shipped with the binary.
pub const DEFAULT_CATALOG: &str = include_str!("../models.toml");

/// Why a catalog file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read catalog file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid catalog.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// The shipped catalog, validated.
///
/// It is compiled in and covered by this crate's tests, so an error here means
/// a broken build rather than a broken deployment.
pub fn load_default() -> Result<Catalog, CatalogError> {
    parse(DEFAULT_CATALOG)
}

/// A catalog file at `path`, validated.
pub fn load_path(path: &Path) -> Result<Catalog, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(parse(&text)?)
}

/// The operator's catalog when `path` is given (`CATALOG_PATH`), the shipped
/// one otherwise.
pub fn load(path: Option<&Path>) -> Result<Catalog, LoadError> {
    match path {
        Some(p) => load_path(p),
        None => Ok(load_default()?),
    }
}

/// Parses catalog TOML and validates every model.
///
/// Models are deserialized one at a time rather than as one document, so a
/// type error is reported against the model it is in (by id, or by position
/// `#n` counting from 1 when the id itself is missing) instead of as a bare
/// line number.
pub fn parse(text: &str) -> Result<Catalog, CatalogError> {
    let doc: toml::Table = toml::from_str(text).map_err(|e| CatalogError::Parse(e.to_string()))?;
    if let Some(key) = doc.keys().find(|k| k.as_str() != "model") {
        return Err(CatalogError::Parse(format!(
            "unknown top-level key `{key}`; a catalog holds only [[model]] tables"
        )));
    }
    let entries = match doc.get("model") {
        Some(toml::Value::Array(entries)) => entries,
        Some(_) => {
            return Err(CatalogError::Parse(
                "`model` must be an array of tables, written [[model]]".into(),
            ));
        }
        None => {
            return Err(CatalogError::Parse(
                "the catalog has no [[model]] tables".into(),
            ));
        }
    };
    let models = entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            Model::deserialize(entry.clone()).map_err(|e| CatalogError::Model {
                model: entry
                    .get("id")
                    .and_then(toml::Value::as_str)
                    .map_or_else(|| format!("#{}", i + 1), str::to_owned),
                reason: e.to_string().trim_end().to_owned(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Catalog::new(models)
}
