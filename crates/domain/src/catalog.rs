//! The model catalog: what each KIE model is, what it asks, what it costs.
//!
//! The serde shape here is the catalog file's shape (see
//! `crates/catalog/models/`). A [`Catalog`] can only be built through
//! [`Catalog::new`], which checks every model and field, so the rest of the
//! program never meets an enum default outside its enum or a price rule that
//! names a missing field.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::ids::ModelId;
use crate::money::{Credits, Money};
use crate::params::ParamValue;

/// What a model makes, for the top-level menu.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    /// Still images.
    Image,
    /// Video clips.
    Video,
    /// Music, speech and sound.
    Audio,
    /// Transcripts of audio.
    SpeechToText,
}

/// What the user wants to do; a model serves one or more of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GenerationType {
    /// Text to image.
    TextToImage,
    /// Image plus text to image.
    ImageToImage,
    /// Edit, upscale, reframe or clean an image.
    ImageEditing,
    /// Text to video.
    TextToVideo,
    /// Image (plus text) to video.
    ImageToVideo,
    /// Edit, upscale or clean a video.
    VideoEditing,
    /// Animate a face or body to a reference.
    LipSync,
    /// Audio plus image to talking video.
    SpeechToVideo,
    /// Audio to text.
    SpeechToText,
    /// Text to spoken audio.
    TextToSpeech,
    /// Text to music.
    TextToMusic,
    /// Audio to audio.
    AudioToAudio,
}

impl GenerationType {
    /// Every type, in menu order.
    pub const ALL: [GenerationType; 12] = [
        GenerationType::TextToImage,
        GenerationType::ImageToImage,
        GenerationType::ImageEditing,
        GenerationType::TextToVideo,
        GenerationType::ImageToVideo,
        GenerationType::VideoEditing,
        GenerationType::LipSync,
        GenerationType::SpeechToVideo,
        GenerationType::SpeechToText,
        GenerationType::TextToSpeech,
        GenerationType::TextToMusic,
        GenerationType::AudioToAudio,
    ];

    /// The kebab-case name used in the catalog file and in callback data.
    pub fn as_str(self) -> &'static str {
        match self {
            GenerationType::TextToImage => "text-to-image",
            GenerationType::ImageToImage => "image-to-image",
            GenerationType::ImageEditing => "image-editing",
            GenerationType::TextToVideo => "text-to-video",
            GenerationType::ImageToVideo => "image-to-video",
            GenerationType::VideoEditing => "video-editing",
            GenerationType::LipSync => "lip-sync",
            GenerationType::SpeechToVideo => "speech-to-video",
            GenerationType::SpeechToText => "speech-to-text",
            GenerationType::TextToSpeech => "text-to-speech",
            GenerationType::TextToMusic => "text-to-music",
            GenerationType::AudioToAudio => "audio-to-audio",
        }
    }
}

/// How a result is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputKind {
    /// Photo, or an album when there are several.
    Image,
    /// Video.
    Video,
    /// Audio.
    Audio,
    /// Text (a transcript).
    Text,
}

/// A text in every language the bot speaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Localized {
    /// English.
    pub en: String,
    /// Russian.
    pub ru: String,
}

impl Localized {
    /// The text for a language code, English for anything unknown.
    pub fn get(&self, lang: &str) -> &str {
        if lang == "ru" { &self.ru } else { &self.en }
    }
}

/// Where a field is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ask {
    /// A wizard step.
    Wizard,
    /// Only under "advanced options"; otherwise the default is sent.
    Advanced,
    /// Never asked: the default is always sent. For values KIE needs that are
    /// fixed by the catalog entry (Veo's `generationType`, Suno's
    /// `customMode`), so one KIE endpoint can back several menu entries.
    Fixed,
}

/// Which KIE API serves a model. Each family has its own create, status and
/// callback shapes; everything after the task id is the same pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// The unified market API: `POST /api/v1/jobs/createTask` with
    /// `{"model", "input": {...}}`, status from `/api/v1/jobs/recordInfo`.
    #[default]
    Market,
    /// Veo 3.1: `POST /api/v1/veo/generate` with the fields at the top level,
    /// status from `/api/v1/veo/record-info` (`successFlag`).
    Veo,
    /// Suno music: `POST /api/v1/generate` with the fields at the top level,
    /// status from `/api/v1/generate/record-info`; one task gives two tracks.
    Suno,
}

impl Family {
    /// The name used in the catalog file.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Market => "market",
            Family::Veo => "veo",
            Family::Suno => "suno",
        }
    }
}

/// Where a model's fields and price were checked, so that every sold entry can
/// be traced back to what KIE published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// The schema page (KIE's docs or its mirror) and its date.
    pub schema: String,
    /// The price list row(s) and their date.
    pub price: String,
}

/// The kind of media an upload field takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Media {
    /// Pictures.
    Image,
    /// Video files.
    Video,
    /// Audio files and voice notes.
    Audio,
}

impl Media {
    /// MIME types accepted when a field lists none.
    pub fn default_mime(self) -> &'static [&'static str] {
        match self {
            Media::Image => &["image/jpeg", "image/png", "image/webp"],
            Media::Video => &["video/mp4", "video/quicktime", "video/webm"],
            Media::Audio => &[
                "audio/mpeg",
                "audio/mp3",
                "audio/wav",
                "audio/x-wav",
                "audio/ogg",
                "audio/mp4",
                "audio/x-m4a",
                "audio/flac",
                "audio/aac",
                "audio/x-ms-wma",
            ],
        }
    }

    /// Size limit when a field sets none. Telegram bots can download at most
    /// 20 MB, so that is the practical ceiling for every upload.
    pub fn default_max_bytes(self) -> u64 {
        20 * 1024 * 1024
    }
}

/// Whether KIE wants one URL or a list of URLs for an upload field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Shape {
    /// A single URL string (the wizard takes exactly one file).
    Single,
    /// A JSON array of URLs.
    List,
}

/// The type and limits of a field.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum FieldKind {
    /// Free text (a prompt, a negative prompt, a language code).
    String {
        /// Maximum length in characters.
        max_len: usize,
    },
    /// A whole number in a range.
    Integer {
        /// Smallest accepted value.
        min: i64,
        /// Largest accepted value.
        max: i64,
    },
    /// A decimal number in a range (generation knobs, never money).
    Number {
        /// Smallest accepted value.
        min: f64,
        /// Largest accepted value.
        max: f64,
        /// Values are rounded to a multiple of this before sending.
        step: Option<f64>,
    },
    /// Yes or no.
    Boolean,
    /// One of a fixed list of strings (numeric-looking ones included).
    Enum {
        /// The accepted values, in button order.
        values: Vec<String>,
        /// Sent to KIE as JSON integers rather than strings (Veo's
        /// `duration` is `8`, where the market's `duration` is `"5"`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        as_integer: bool,
    },
    /// Files the user uploads; KIE receives their URLs.
    Upload {
        /// Image, video or audio.
        media: Media,
        /// One URL or a list.
        shape: Shape,
        /// Fewest files.
        min_items: usize,
        /// Most files (one for a single-URL field).
        max_items: usize,
        /// Accepted MIME types; the media's defaults when empty.
        mime: Vec<String>,
        /// Largest accepted file in bytes; the media's default when absent.
        max_bytes: Option<u64>,
    },
}

/// One input of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawField")]
pub struct Field {
    /// Our name for the field (wizard state, callback data).
    pub name: String,
    /// The name KIE expects in `input`; `name` when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kie: Option<String>,
    /// Type and limits.
    #[serde(flatten)]
    pub kind: FieldKind,
    /// Whether the request is invalid without it (after defaults).
    pub required: bool,
    /// Sent when the user gives nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<serde_json::Value>,
    /// Wizard step or advanced option; wizard when required, advanced otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ask: Option<Ask>,
    /// The question's label; a humanised `name` when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<Localized>,
}

/// A field as written in the file: every attribute of every type, so that an
/// attribute that does not belong to the field's type (a `max_len` on an
/// enum) or an unknown type is reported instead of silently ignored.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    name: String,
    #[serde(default)]
    kie: Option<String>,
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    default: Option<serde_json::Value>,
    #[serde(default)]
    ask: Option<Ask>,
    #[serde(default)]
    label: Option<Localized>,
    #[serde(default)]
    max_len: Option<usize>,
    #[serde(default)]
    min: Option<serde_json::Number>,
    #[serde(default)]
    max: Option<serde_json::Number>,
    #[serde(default)]
    step: Option<f64>,
    #[serde(default)]
    values: Option<Vec<String>>,
    #[serde(default)]
    send_as: Option<String>,
    #[serde(default)]
    media: Option<Media>,
    #[serde(default)]
    shape: Option<Shape>,
    #[serde(default)]
    min_items: Option<usize>,
    #[serde(default)]
    max_items: Option<usize>,
    #[serde(default)]
    mime: Option<Vec<String>>,
    #[serde(default)]
    max_bytes: Option<u64>,
}

impl TryFrom<RawField> for Field {
    type Error = String;

    fn try_from(r: RawField) -> Result<Self, Self::Error> {
        let name = r.name.clone();
        let err = |what: &str| format!("field {name}: {what}");
        let only = |allowed: &[&str]| -> Result<(), String> {
            let present = [
                ("max_len", r.max_len.is_some()),
                ("min", r.min.is_some()),
                ("max", r.max.is_some()),
                ("step", r.step.is_some()),
                ("values", r.values.is_some()),
                ("media", r.media.is_some()),
                ("shape", r.shape.is_some()),
                ("min_items", r.min_items.is_some()),
                ("max_items", r.max_items.is_some()),
                ("mime", r.mime.is_some()),
                ("max_bytes", r.max_bytes.is_some()),
            ];
            match present.iter().find(|(k, set)| *set && !allowed.contains(k)) {
                Some((k, _)) => Err(err(&format!("`{k}` does not apply to a {} field", r.ty))),
                None => Ok(()),
            }
        };
        let int = |n: &Option<serde_json::Number>, what: &str| -> Result<i64, String> {
            n.as_ref()
                .and_then(serde_json::Number::as_i64)
                .ok_or_else(|| err(&format!("integer field needs a whole-number `{what}`")))
        };
        let num = |n: &Option<serde_json::Number>, what: &str| -> Result<f64, String> {
            n.as_ref()
                .and_then(serde_json::Number::as_f64)
                .ok_or_else(|| err(&format!("number field needs `{what}`")))
        };
        if r.send_as.is_some() && r.ty != "enum" {
            return Err(err(&format!(
                "`send_as` does not apply to a {} field",
                r.ty
            )));
        }
        let kind = match r.ty.as_str() {
            "string" => {
                only(&["max_len"])?;
                FieldKind::String {
                    max_len: r
                        .max_len
                        .ok_or_else(|| err("string field needs `max_len`"))?,
                }
            }
            "integer" => {
                only(&["min", "max"])?;
                FieldKind::Integer {
                    min: int(&r.min, "min")?,
                    max: int(&r.max, "max")?,
                }
            }
            "number" => {
                only(&["min", "max", "step"])?;
                FieldKind::Number {
                    min: num(&r.min, "min")?,
                    max: num(&r.max, "max")?,
                    step: r.step,
                }
            }
            "boolean" => {
                only(&[])?;
                FieldKind::Boolean
            }
            "enum" => {
                only(&["values"])?;
                let as_integer = match r.send_as.as_deref() {
                    None | Some("string") => false,
                    Some("integer") => true,
                    Some(other) => {
                        return Err(err(&format!(
                            "send_as {other:?} (expected \"string\" or \"integer\")"
                        )));
                    }
                };
                FieldKind::Enum {
                    values: r
                        .values
                        .clone()
                        .ok_or_else(|| err("enum field needs `values`"))?,
                    as_integer,
                }
            }
            "upload" => {
                only(&[
                    "media",
                    "shape",
                    "min_items",
                    "max_items",
                    "mime",
                    "max_bytes",
                ])?;
                let shape = r
                    .shape
                    .ok_or_else(|| err("upload field needs `shape` (single or list)"))?;
                FieldKind::Upload {
                    media: r.media.ok_or_else(|| err("upload field needs `media`"))?,
                    shape,
                    min_items: r.min_items.unwrap_or(1),
                    max_items: r
                        .max_items
                        .unwrap_or(if shape == Shape::Single { 1 } else { 8 }),
                    mime: r.mime.clone().unwrap_or_default(),
                    max_bytes: r.max_bytes,
                }
            }
            other => {
                return Err(err(&format!(
                    "unknown type {other:?} (expected string, integer, number, boolean, enum or upload)"
                )));
            }
        };
        Ok(Field {
            name: r.name,
            kie: r.kie,
            kind,
            required: r.required,
            default: r.default,
            ask: r.ask,
            label: r.label,
        })
    }
}

impl Field {
    /// The key this field has in KIE's `input` object.
    pub fn kie_name(&self) -> &str {
        self.kie.as_deref().unwrap_or(&self.name)
    }

    /// Where the wizard asks this field (a required field is a wizard step
    /// unless the catalog fixes it).
    pub fn ask(&self) -> Ask {
        self.ask.unwrap_or(if self.required {
            Ask::Wizard
        } else {
            Ask::Advanced
        })
    }

    /// The default as a typed value; `None` when the field has no default.
    /// Only meaningful inside a validated [`Catalog`], where it cannot fail.
    pub fn default_value(&self) -> Option<ParamValue> {
        self.default
            .as_ref()
            .and_then(|d| ParamValue::from_json(&self.kind, d).ok())
    }

    /// Whether this is an upload field.
    pub fn is_upload(&self) -> bool {
        matches!(self.kind, FieldKind::Upload { .. })
    }
}

/// How a model's price follows from its parameters.
///
/// credits = (row of `table` selected by `by`, else `credits`)
///           x product of `multiply_by` values x `units` / product of `divide_by`
///
/// The final amount is rounded up to the minor unit once, at the end, so
/// fractions of credits never round away the operator's margin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceRule {
    /// Credits per unit when `table` has no row for the parameters.
    #[serde(default)]
    pub credits: Option<Credits>,
    /// Fields whose values select a row of `table`, joined with `|`.
    #[serde(default)]
    pub by: Vec<String>,
    /// Credits per unit for each combination of `by` values.
    #[serde(default)]
    pub table: BTreeMap<String, Credits>,
    /// Integer or numeric-enum fields that multiply the credits (count, seconds).
    #[serde(default)]
    pub multiply_by: Vec<String>,
    /// Integer fields that divide the product (frames per second).
    #[serde(default)]
    pub divide_by: Vec<String>,
    /// A constant multiplier, for per-second models whose length follows the
    /// input (an assumed number of seconds).
    #[serde(default = "one_u32")]
    pub units: u32,
    /// Sold at zero (KIE still bills the operator).
    #[serde(default)]
    pub free: bool,
    /// Final prices in minor units that replace the formula, keyed like
    /// `table` (`*` matches any parameters).
    #[serde(default)]
    pub minor_override: BTreeMap<String, i64>,
}

fn one_u32() -> u32 {
    1
}

/// One model as the catalog file describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// Our id of the entry: the KIE `model` string unless `kie_model` says
    /// otherwise (one KIE model can back several entries).
    pub id: ModelId,
    /// The `model` string sent to KIE, when it is not `id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kie_model: Option<String>,
    /// The KIE API that serves it.
    #[serde(default)]
    pub family: Family,
    /// Menu category.
    pub category: Category,
    /// Generation types this model serves.
    pub types: Vec<GenerationType>,
    /// Display name.
    pub name: Localized,
    /// One-paragraph description for the model card.
    pub description: Localized,
    /// How the result is delivered.
    pub output: OutputKind,
    /// Seconds after submission before an unfinished task is expired.
    pub deadline_secs: u32,
    /// Whether it is sold. Inactive models are listed as "coming soon".
    #[serde(default = "yes")]
    pub active: bool,
    /// Start right after the last wizard step, without a confirm screen.
    #[serde(default)]
    pub instant: bool,
    /// Free uses per user per day before the price applies.
    #[serde(default)]
    pub free_daily: u32,
    /// Most result files delivered.
    #[serde(default = "five")]
    pub max_results: u8,
    /// Inputs, in wizard order.
    #[serde(default)]
    pub fields: Vec<Field>,
    /// Price; a model without one is not sold.
    #[serde(default)]
    pub price: Option<PriceRule>,
    /// Typical seconds KIE takes to finish a task, used to plan polls until
    /// the model's own recent run times are known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_secs: Option<u32>,
    /// Where the fields and the price were checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// Combinations of values KIE refuses although each value alone is fine
    /// (a 4K square where 4K needs another ratio), refused before anything
    /// is held.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excludes: Vec<Exclusion>,
}

/// Values that KIE refuses together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exclusion {
    /// Field name to value (an enum value, or `true`/`false`): all must match.
    pub when: BTreeMap<String, String>,
    /// Why, for the user.
    pub reason: Localized,
}

impl Exclusion {
    /// Whether `params` has every value of `when`.
    pub fn matches(&self, params: &BTreeMap<String, ParamValue>) -> bool {
        self.when.iter().all(|(name, want)| match params.get(name) {
            Some(ParamValue::Choice(c)) => c == want,
            Some(ParamValue::Bool(b)) => b.to_string() == *want,
            _ => false,
        })
    }
}

fn yes() -> bool {
    true
}

fn five() -> u8 {
    5
}

impl Model {
    /// The field with this name.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The `model` string KIE expects.
    pub fn kie_model(&self) -> &str {
        self.kie_model.as_deref().unwrap_or(self.id.as_str())
    }

    /// Typical run time at KIE before any has been measured: the catalog's
    /// figure, else a guess by output kind.
    pub fn expected_run(&self) -> std::time::Duration {
        let secs = self.expected_secs.unwrap_or(match self.output {
            OutputKind::Image => 20,
            OutputKind::Video => 120,
            OutputKind::Audio => 90,
            OutputKind::Text => 30,
        });
        std::time::Duration::from_secs(u64::from(secs))
    }

    /// Fields the wizard asks, in order.
    pub fn wizard_fields(&self) -> impl Iterator<Item = &Field> {
        self.fields.iter().filter(|f| f.ask() == Ask::Wizard)
    }

    /// Whether the model can be bought: active and priced.
    pub fn is_sold(&self) -> bool {
        self.active && self.price.is_some()
    }
}

/// Why a catalog was rejected. Every variant names the model and, where it
/// applies, the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CatalogError {
    /// The file is not valid TOML of the catalog's shape.
    #[error("catalog does not parse: {0}")]
    Parse(String),
    /// Two models share an id.
    #[error("model {model}: duplicate model id")]
    DuplicateModel {
        /// The model.
        model: String,
    },
    /// A model-level problem.
    #[error("model {model}: {reason}")]
    Model {
        /// The model.
        model: String,
        /// What is wrong.
        reason: String,
    },
    /// A field-level problem.
    #[error("model {model}, field {field}: {reason}")]
    Field {
        /// The model.
        model: String,
        /// The field.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

/// A validated catalog: every model checked, looked up by id.
#[derive(Debug, Clone)]
pub struct Catalog {
    models: Vec<Model>,
}

impl Catalog {
    /// Checks every model and builds the catalog.
    pub fn new(models: Vec<Model>) -> Result<Self, CatalogError> {
        let mut seen = BTreeSet::new();
        for m in &models {
            if !seen.insert(m.id.as_str().to_owned()) {
                return Err(CatalogError::DuplicateModel {
                    model: m.id.to_string(),
                });
            }
            check_model(m)?;
        }
        Ok(Catalog { models })
    }

    /// Every model, in file order.
    pub fn models(&self) -> &[Model] {
        &self.models
    }

    /// The model with this KIE id.
    pub fn get(&self, id: &str) -> Option<&Model> {
        self.models.iter().find(|m| m.id.as_str() == id)
    }

    /// Sold models of a generation type, in file order.
    pub fn sold_of_type(&self, t: GenerationType) -> impl Iterator<Item = &Model> {
        self.models
            .iter()
            .filter(move |m| m.is_sold() && m.types.contains(&t))
    }
}

fn check_model(m: &Model) -> Result<(), CatalogError> {
    let model_err = |reason: String| CatalogError::Model {
        model: m.id.to_string(),
        reason,
    };
    let field_err = |field: &str, reason: String| CatalogError::Field {
        model: m.id.to_string(),
        field: field.to_owned(),
        reason,
    };
    if m.types.is_empty() {
        return Err(model_err("lists no generation type".into()));
    }
    if m.name.en.trim().is_empty() || m.name.ru.trim().is_empty() {
        return Err(model_err("has an empty name".into()));
    }
    if m.deadline_secs < 30 || m.deadline_secs > 6 * 3600 {
        return Err(model_err(format!(
            "deadline_secs {} is outside 30..=21600",
            m.deadline_secs
        )));
    }
    if m.max_results == 0 || m.max_results > 10 {
        return Err(model_err(
            "max_results must be 1..=10 (a Telegram album holds 10)".into(),
        ));
    }
    if m.active && m.fields.is_empty() {
        return Err(model_err("is active but has no fields".into()));
    }
    if m.kie_model.as_deref().is_some_and(|k| k.trim().is_empty()) {
        return Err(model_err("kie_model is empty".into()));
    }
    if let Some(secs) = m.expected_secs
        && (secs == 0 || secs > m.deadline_secs)
    {
        return Err(model_err(format!(
            "expected_secs {secs} must be positive and within deadline_secs {}",
            m.deadline_secs
        )));
    }
    let mut names = BTreeSet::new();
    let mut kie_names = BTreeSet::new();
    for f in &m.fields {
        if f.name.is_empty()
            || !f
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(field_err(&f.name, "name must be lower_snake_case".into()));
        }
        if !names.insert(f.name.as_str()) {
            return Err(field_err(&f.name, "duplicate field name".into()));
        }
        if !kie_names.insert(f.kie_name()) {
            return Err(field_err(
                &f.name,
                format!("duplicate KIE field {}", f.kie_name()),
            ));
        }
        check_field(f).map_err(|r| field_err(&f.name, r))?;
        if f.ask() == Ask::Fixed && f.default.is_none() {
            return Err(field_err(
                &f.name,
                "a fixed field needs a default (it is never asked)".into(),
            ));
        }
    }
    for x in &m.excludes {
        if x.when.is_empty() {
            return Err(model_err("an exclusion names no field".into()));
        }
        for (name, value) in &x.when {
            let ok = match m.field(name).map(|f| &f.kind) {
                Some(FieldKind::Enum { values, .. }) => values.contains(value),
                Some(FieldKind::Boolean) => value == "true" || value == "false",
                Some(_) => {
                    return Err(field_err(
                        name,
                        "an exclusion may name only enum and boolean fields".into(),
                    ));
                }
                None => {
                    return Err(model_err(format!(
                        "an exclusion names unknown field {name}"
                    )));
                }
            };
            if !ok {
                return Err(field_err(
                    name,
                    format!("the exclusion's value {value:?} is not one of the field's"),
                ));
            }
        }
    }
    if let Some(p) = &m.price {
        check_price(m, p).map_err(model_err)?;
    } else if m.active {
        // An active model without a price is allowed in the file (it is simply
        // not sold), but say so loudly rather than silently hide it.
        return Err(model_err(
            "is active but has no price (set active = false to list it as coming soon)".into(),
        ));
    }
    Ok(())
}

fn check_field(f: &Field) -> Result<(), String> {
    match &f.kind {
        FieldKind::String { max_len } => {
            if *max_len == 0 {
                return Err("max_len must be positive".into());
            }
        }
        FieldKind::Integer { min, max } => {
            if min > max {
                return Err(format!("min {min} is above max {max}"));
            }
        }
        FieldKind::Number { min, max, step } => {
            if !(min.is_finite() && max.is_finite()) || min > max {
                return Err(format!("range {min}..{max} is invalid"));
            }
            if let Some(s) = step
                && !(s.is_finite() && *s > 0.0)
            {
                return Err(format!("step {s} must be positive"));
            }
        }
        FieldKind::Boolean => {}
        FieldKind::Enum { values, as_integer } => {
            if *as_integer && values.iter().any(|v| v.parse::<i64>().is_err()) {
                return Err("an enum sent as integers has a value that is not one".into());
            }
            if values.is_empty() {
                return Err("enum has no values".into());
            }
            let set: BTreeSet<_> = values.iter().collect();
            if set.len() != values.len() {
                return Err("enum has duplicate values".into());
            }
            if values.iter().any(|v| v.is_empty() || v.len() > 32) {
                return Err("enum values must be 1..=32 bytes".into());
            }
        }
        FieldKind::Upload {
            shape,
            min_items,
            max_items,
            mime,
            max_bytes,
            ..
        } => {
            if *min_items > *max_items || *max_items == 0 {
                return Err(format!("items {min_items}..{max_items} is invalid"));
            }
            if *shape == Shape::Single && *max_items != 1 {
                return Err("a single-URL upload takes exactly one file (max_items = 1)".into());
            }
            if mime.iter().any(|m| !m.contains('/')) {
                return Err("mime entries must look like type/subtype".into());
            }
            if max_bytes == &Some(0) {
                return Err("max_bytes must be positive".into());
            }
            if f.default.is_some() {
                return Err("an upload cannot have a default".into());
            }
        }
    }
    if let Some(d) = &f.default {
        let v = ParamValue::from_json(&f.kind, d).map_err(|e| format!("default {d}: {e}"))?;
        crate::params::check_value(f, &v).map_err(|e| format!("default {d}: {e}"))?;
    }
    Ok(())
}

fn check_price(m: &Model, p: &PriceRule) -> Result<(), String> {
    if p.units == 0 {
        return Err("price units must be positive".into());
    }
    for name in p.by.iter() {
        match m.field(name).map(|f| &f.kind) {
            Some(FieldKind::Enum { .. } | FieldKind::Boolean) => {}
            Some(_) => {
                return Err(format!(
                    "price is keyed by {name}, which is not an enum or boolean"
                ));
            }
            None => return Err(format!("price is keyed by unknown field {name}")),
        }
    }
    for name in p.multiply_by.iter().chain(p.divide_by.iter()) {
        match m.field(name) {
            Some(f) if is_integral(&f.kind) => {
                if f.default.is_none() && f.required {
                    // fine: the user must give it
                } else if f.default.is_none() {
                    return Err(format!(
                        "price uses {name}, an optional field without a default"
                    ));
                }
            }
            Some(_) => {
                return Err(format!(
                    "price multiplies by {name}, which is not an integer field"
                ));
            }
            None => return Err(format!("price multiplies by unknown field {name}")),
        }
    }
    for name in &p.divide_by {
        if let Some(FieldKind::Integer { min, .. }) = m.field(name).map(|f| &f.kind)
            && *min <= 0
        {
            return Err(format!(
                "price divides by {name}, whose minimum is not positive"
            ));
        }
    }
    if p.by.is_empty() && !p.table.is_empty() {
        return Err("price has a table but no `by` fields".into());
    }
    if !p.by.is_empty() && p.credits.is_none() {
        // Every combination must have a row.
        for key in combinations(m, &p.by) {
            if !p.table.contains_key(&key) {
                return Err(format!(
                    "price table has no row for {key} and no base credits"
                ));
            }
        }
    }
    if p.by.is_empty() && p.credits.is_none() && !p.free && p.minor_override.is_empty() {
        return Err("price has neither credits nor a table".into());
    }
    let valid_keys: BTreeSet<String> = combinations(m, &p.by).into_iter().collect();
    for key in p.table.keys() {
        if !valid_keys.contains(key) {
            return Err(format!("price table row {key} matches no parameter values"));
        }
    }
    for (key, v) in &p.minor_override {
        if key != "*" && !valid_keys.contains(key) {
            return Err(format!("price override {key} matches no parameter values"));
        }
        if *v < 0 {
            return Err(format!("price override {key} is negative"));
        }
    }
    Ok(())
}

fn is_integral(kind: &FieldKind) -> bool {
    match kind {
        FieldKind::Integer { min, .. } => *min >= 0,
        FieldKind::Enum { values, .. } => values.iter().all(|v| v.parse::<u32>().is_ok()),
        _ => false,
    }
}

/// Every `|`-joined combination of values of the `by` fields.
pub(crate) fn combinations(m: &Model, by: &[String]) -> Vec<String> {
    let mut out = vec![String::new()];
    for (i, name) in by.iter().enumerate() {
        let values: Vec<String> = match m.field(name).map(|f| &f.kind) {
            Some(FieldKind::Enum { values, .. }) => values.clone(),
            Some(FieldKind::Boolean) => vec!["false".into(), "true".into()],
            _ => vec![],
        };
        out = out
            .iter()
            .flat_map(|prefix| {
                values.iter().map(move |v| {
                    if i == 0 {
                        v.clone()
                    } else {
                        format!("{prefix}|{v}")
                    }
                })
            })
            .collect();
    }
    out
}

/// A price-driving combination of parameter values, for tests and the
/// `catalog` listing.
pub fn price_combinations(m: &Model) -> Vec<BTreeMap<String, ParamValue>> {
    let Some(p) = &m.price else { return vec![] };
    combinations(m, &p.by)
        .into_iter()
        .map(|key| {
            let mut map = BTreeMap::new();
            if !p.by.is_empty() {
                for (name, v) in p.by.iter().zip(key.split('|')) {
                    let value = match m.field(name).map(|f| &f.kind) {
                        Some(FieldKind::Boolean) => ParamValue::Bool(v == "true"),
                        _ => ParamValue::Choice(v.to_owned()),
                    };
                    map.insert(name.clone(), value);
                }
            }
            map
        })
        .collect()
}

/// Convenience for pricing: the full price of the model's defaults, with the
/// operator's pricing. `None` if the model is not sold.
pub fn default_price(m: &Model, pricing: &crate::pricing::Pricing) -> Option<Money> {
    let params = crate::params::Params::defaults_for_pricing(m);
    pricing.price(m, &params).ok()
}
