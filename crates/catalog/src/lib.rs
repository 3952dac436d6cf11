//! The kiebot model catalog as data, and the loader that validates it.
//!
//! The catalog is a set of TOML files of `[[model]]` tables in the serde shape
//! of [`kiebot_domain::catalog::Model`], one file per provider family
//! (`models/image-google.toml`, `models/video-kling.toml`, ...; conventions in
//! `models/README.md`). The shipped files are compiled in ([`SHIPPED`]); an
//! operator can replace the whole catalog with their own file or folder
//! (`CATALOG_PATH`) without rebuilding.
//!
//! Loading is all or nothing: [`parse`] reads every model, then
//! [`Catalog::new`] checks the whole set (enum defaults inside their enums,
//! price rules naming real fields, unique ids across files...). Any problem
//! stops start-up with one message that names the file, the model and, where
//! it applies, the field:
//!
//! ```text
//! video-kling.toml: model kling/v2-1-pro, field duration: default "7": duration: "7" is not one of the options
//! ```
//!
//! - [`load`]: the binary's entry point; an override path or the shipped files.
//! - [`load_default`] / [`load_path`]: the two sources on their own.
//! - [`parse`] / [`parse_files`]: TOML text to a validated [`Catalog`].

use std::path::{Path, PathBuf};

use kiebot_domain::catalog::{Catalog, CatalogError, Model};
use serde::Deserialize;

macro_rules! shipped {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../models/", $name)))),*]
    };
}

/// The catalog files shipped with the binary, in menu order: a generation
/// type's models are listed as the files list them.
pub const SHIPPED: &[(&str, &str)] = shipped![
    "image-google.toml",
    "image-openai.toml",
    "image-seedream.toml",
    "image-flux.toml",
    "image-grok.toml",
    "image-other.toml",
    "image-qwen.toml",
    "image-ideogram.toml",
    "image-wan.toml",
    "image-tools.toml",
    "video-veo.toml",
    "video-kling.toml",
    "video-bytedance.toml",
    "video-wan.toml",
    "video-hailuo.toml",
    "video-grok.toml",
    "video-happyhorse.toml",
    "video-other.toml",
    "audio-suno.toml",
    "audio-elevenlabs.toml",
    "coming-soon.toml",
];

/// Why a catalog file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file or folder could not be read.
    #[error("cannot read catalog {}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// A folder holds no `.toml` file.
    #[error("catalog folder {} holds no .toml file", path.display())]
    Empty {
        /// The folder.
        path: PathBuf,
    },
    /// The files were read but are not a valid catalog.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// The shipped catalog, validated.
///
/// It is compiled in and covered by this crate's tests, so an error here means
/// a broken build rather than a broken deployment.
pub fn load_default() -> Result<Catalog, CatalogError> {
    parse_files(SHIPPED.iter().copied())
}

/// A catalog at `path`, validated: one file, or a folder whose `.toml` files
/// are read in name order as one catalog.
pub fn load_path(path: &Path) -> Result<Catalog, LoadError> {
    let io = |source| LoadError::Io {
        path: path.to_owned(),
        source,
    };
    if !path.is_dir() {
        let text = std::fs::read_to_string(path).map_err(io)?;
        return Ok(parse(&text)?);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(LoadError::Empty {
            path: path.to_owned(),
        });
    }
    let mut texts = Vec::with_capacity(files.len());
    for f in &files {
        let text = std::fs::read_to_string(f).map_err(|source| LoadError::Io {
            path: f.clone(),
            source,
        })?;
        let name = f
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        texts.push((name, text));
    }
    Ok(parse_files(
        texts.iter().map(|(n, t)| (n.as_str(), t.as_str())),
    )?)
}

/// The operator's catalog when `path` is given (`CATALOG_PATH`), the shipped
/// one otherwise.
pub fn load(path: Option<&Path>) -> Result<Catalog, LoadError> {
    match path {
        Some(p) => load_path(p),
        None => Ok(load_default()?),
    }
}

/// Parses one catalog text and validates every model.
pub fn parse(text: &str) -> Result<Catalog, CatalogError> {
    let models = models_of(text)?;
    if models.is_empty() {
        return Err(CatalogError::Parse(
            "the catalog has no [[model]] tables".into(),
        ));
    }
    Catalog::new(models)
}

/// Parses several named catalog texts as one catalog (ids are unique across
/// them). A problem is reported with the name of the text it is in. A text
/// may hold no model (a family not sold yet); the whole set may not.
pub fn parse_files<'a>(
    files: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Catalog, CatalogError> {
    let mut all = Vec::new();
    for (name, text) in files {
        let models = models_of(text).map_err(|e| in_file(name, e))?;
        all.extend(models);
    }
    if all.is_empty() {
        return Err(CatalogError::Parse(
            "the catalog has no [[model]] tables".into(),
        ));
    }
    Catalog::new(all)
}

fn in_file(name: &str, e: CatalogError) -> CatalogError {
    match e {
        CatalogError::Parse(m) => CatalogError::Parse(format!("{name}: {m}")),
        CatalogError::Model { model, reason } => CatalogError::Model {
            model: format!("{model} ({name})"),
            reason,
        },
        other => other,
    }
}

/// Reads the `[[model]]` tables of one text.
///
/// Models are deserialized one at a time rather than as one document, so a
/// type error is reported against the model it is in (by id, or by position
/// `#n` counting from 1 when the id itself is missing) instead of as a bare
/// line number.
fn models_of(text: &str) -> Result<Vec<Model>, CatalogError> {
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
        None => return Ok(Vec::new()),
    };
    entries
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
        .collect()
}
