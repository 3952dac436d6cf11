//! Parameter values, their validation against a model's schema, and the KIE
//! request body built from them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::catalog::{Family, Field, FieldKind, Media, Model, Shape};
use crate::prompt::{Prompt, PromptError};

/// A value the user gave (or a default) for one field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", content = "v", rename_all = "snake_case")]
pub enum ParamValue {
    /// Free text.
    Text(String),
    /// A whole number.
    Int(i64),
    /// A decimal knob.
    Num(f64),
    /// Yes or no.
    Bool(bool),
    /// One enum value.
    Choice(String),
    /// URLs of uploaded files.
    Files(Vec<String>),
}

/// Why a value is not acceptable for a field. Messages are for the user (the
/// bot localises them by variant) and for the operator's logs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamError {
    /// The model has no such field.
    #[error("unknown field {0}")]
    UnknownField(String),
    /// A required field has no value and no default.
    #[error("{0} is required")]
    Missing(String),
    /// A value of the wrong type (text for a number, a list for a boolean).
    #[error("{field}: expected {expected}")]
    WrongType {
        /// The field.
        field: String,
        /// What it takes.
        expected: &'static str,
    },
    /// An enum value outside the list.
    #[error("{field}: {value:?} is not one of the options")]
    NotInEnum {
        /// The field.
        field: String,
        /// The rejected value.
        value: String,
    },
    /// Bad text (empty, too long, control characters).
    #[error("{field}: {source}")]
    Text {
        /// The field.
        field: String,
        /// Why.
        source: PromptError,
    },
    /// A number outside the field's range.
    #[error("{field}: {value} is outside {min}..={max}")]
    OutOfRange {
        /// The field.
        field: String,
        /// The rejected value.
        value: String,
        /// Smallest accepted.
        min: String,
        /// Largest accepted.
        max: String,
    },
    /// Too few or too many files.
    #[error("{field}: {count} files; between {min} and {max} are accepted")]
    ItemCount {
        /// The field.
        field: String,
        /// Files given.
        count: usize,
        /// Fewest accepted.
        min: usize,
        /// Most accepted.
        max: usize,
    },
    /// A file type the field does not take.
    #[error("{field}: files of type {mime} are not accepted")]
    Mime {
        /// The field.
        field: String,
        /// The rejected type.
        mime: String,
    },
    /// A file over the field's size limit.
    #[error("{field}: the file is {size} bytes; the limit is {max} bytes")]
    TooLarge {
        /// The field.
        field: String,
        /// The file's size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// Values KIE refuses together (see [`crate::catalog::Exclusion`]).
    #[error("this combination is not available: {reason}")]
    Excluded {
        /// Why, in English (the bot shows the user's language).
        reason: String,
        /// Why, in Russian.
        reason_ru: String,
    },
    /// A file URL that is not http(s).
    #[error("{field}: {url:?} is not an http(s) URL")]
    BadUrl {
        /// The field.
        field: String,
        /// The rejected URL.
        url: String,
    },
}

impl ParamValue {
    /// Reads a catalog default (or a stored value) as JSON for a field kind.
    pub fn from_json(kind: &FieldKind, v: &Value) -> Result<ParamValue, String> {
        match (kind, v) {
            (FieldKind::String { .. }, Value::String(s)) => Ok(ParamValue::Text(s.clone())),
            (FieldKind::Integer { .. }, Value::Number(n)) => n
                .as_i64()
                .map(ParamValue::Int)
                .ok_or_else(|| "expected an integer".to_owned()),
            (FieldKind::Number { .. }, Value::Number(n)) => n
                .as_f64()
                .map(ParamValue::Num)
                .ok_or_else(|| "expected a number".to_owned()),
            (FieldKind::Boolean, Value::Bool(b)) => Ok(ParamValue::Bool(*b)),
            (FieldKind::Enum { .. }, Value::String(s)) => Ok(ParamValue::Choice(s.clone())),
            (FieldKind::Upload { .. }, Value::Array(items)) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| "expected URLs".to_owned())
                })
                .collect::<Result<_, _>>()
                .map(ParamValue::Files),
            (k, v) => Err(format!("{v} does not fit a {} field", kind_name(k))),
        }
    }

    /// Parses text a user typed for a field (a prompt, a number). Enum and
    /// boolean fields are answered with buttons, but a typed value is accepted
    /// when it matches exactly.
    pub fn parse_text(field: &Field, text: &str) -> Result<ParamValue, ParamError> {
        let t = text.trim();
        let wrong = |expected| ParamError::WrongType {
            field: field.name.clone(),
            expected,
        };
        let value = match &field.kind {
            FieldKind::String { .. } => ParamValue::Text(t.to_owned()),
            FieldKind::Integer { .. } => {
                ParamValue::Int(t.parse().map_err(|_| wrong("a whole number"))?)
            }
            FieldKind::Number { .. } => {
                let x: f64 = t.replace(',', ".").parse().map_err(|_| wrong("a number"))?;
                if !x.is_finite() {
                    return Err(wrong("a number"));
                }
                ParamValue::Num(x)
            }
            FieldKind::Boolean => match t.to_lowercase().as_str() {
                "yes" | "true" | "да" | "1" => ParamValue::Bool(true),
                "no" | "false" | "нет" | "0" => ParamValue::Bool(false),
                _ => return Err(wrong("yes or no")),
            },
            FieldKind::Enum { .. } => ParamValue::Choice(t.to_owned()),
            FieldKind::Upload { .. } => return Err(wrong("a file")),
        };
        check_value(field, &value).map(|()| value)
    }
}

fn kind_name(k: &FieldKind) -> &'static str {
    match k {
        FieldKind::String { .. } => "string",
        FieldKind::Integer { .. } => "integer",
        FieldKind::Number { .. } => "number",
        FieldKind::Boolean => "boolean",
        FieldKind::Enum { .. } => "enum",
        FieldKind::Upload { .. } => "upload",
    }
}

/// Checks one value against its field's limits.
pub fn check_value(field: &Field, value: &ParamValue) -> Result<(), ParamError> {
    let name = || field.name.clone();
    let wrong = |expected| ParamError::WrongType {
        field: field.name.clone(),
        expected,
    };
    match (&field.kind, value) {
        (FieldKind::String { max_len }, ParamValue::Text(s)) => {
            // An explicit empty or blank default (" " for some negative
            // prompts) is KIE's own convention and passes through unchanged;
            // user text must be a real prompt.
            let is_default = field.default.as_ref().and_then(Value::as_str) == Some(s.as_str());
            if !is_default {
                Prompt::parse(s, *max_len).map_err(|source| ParamError::Text {
                    field: name(),
                    source,
                })?;
            }
            Ok(())
        }
        (FieldKind::Integer { min, max }, ParamValue::Int(v)) => {
            if v < min || v > max {
                return Err(ParamError::OutOfRange {
                    field: name(),
                    value: v.to_string(),
                    min: min.to_string(),
                    max: max.to_string(),
                });
            }
            Ok(())
        }
        (FieldKind::Number { min, max, .. }, ParamValue::Num(v)) => {
            if !v.is_finite() || v < min || v > max {
                return Err(ParamError::OutOfRange {
                    field: name(),
                    value: v.to_string(),
                    min: min.to_string(),
                    max: max.to_string(),
                });
            }
            Ok(())
        }
        // Integers are numbers too (a catalog default of `1` for a number field).
        (FieldKind::Number { .. }, ParamValue::Int(v)) => {
            check_value(field, &ParamValue::Num(*v as f64))
        }
        (FieldKind::Boolean, ParamValue::Bool(_)) => Ok(()),
        (FieldKind::Enum { values, .. }, ParamValue::Choice(c)) => {
            if values.iter().any(|v| v == c) {
                Ok(())
            } else {
                Err(ParamError::NotInEnum {
                    field: name(),
                    value: c.clone(),
                })
            }
        }
        (
            FieldKind::Upload {
                min_items,
                max_items,
                ..
            },
            ParamValue::Files(urls),
        ) => {
            if urls.len() < *min_items || urls.len() > *max_items {
                return Err(ParamError::ItemCount {
                    field: name(),
                    count: urls.len(),
                    min: *min_items,
                    max: *max_items,
                });
            }
            for u in urls {
                let ok = (u.starts_with("https://") || u.starts_with("http://"))
                    && u.len() <= 2048
                    && !u.chars().any(char::is_whitespace);
                if !ok {
                    return Err(ParamError::BadUrl {
                        field: name(),
                        url: u.clone(),
                    });
                }
            }
            Ok(())
        }
        (FieldKind::String { .. }, _) => Err(wrong("text")),
        (FieldKind::Integer { .. }, _) => Err(wrong("a whole number")),
        (FieldKind::Number { .. }, _) => Err(wrong("a number")),
        (FieldKind::Boolean, _) => Err(wrong("yes or no")),
        (FieldKind::Enum { .. }, _) => Err(wrong("one of the options")),
        (FieldKind::Upload { .. }, _) => Err(wrong("files")),
    }
}

/// Checks an upload's type and size before it is sent anywhere.
pub fn check_upload(field: &Field, mime: &str, size: u64) -> Result<(), ParamError> {
    let FieldKind::Upload {
        media,
        mime: accepted,
        max_bytes,
        ..
    } = &field.kind
    else {
        return Err(ParamError::WrongType {
            field: field.name.clone(),
            expected: "text",
        });
    };
    let mime_l = mime.trim().to_ascii_lowercase();
    let ok = if accepted.is_empty() {
        media.default_mime().iter().any(|m| *m == mime_l)
    } else {
        accepted.iter().any(|m| m.eq_ignore_ascii_case(&mime_l))
    };
    if !ok {
        return Err(ParamError::Mime {
            field: field.name.clone(),
            mime: mime_l,
        });
    }
    let max = max_bytes.unwrap_or_else(|| media_max(*media));
    if size > max {
        return Err(ParamError::TooLarge {
            field: field.name.clone(),
            size,
            max,
        });
    }
    Ok(())
}

fn media_max(m: Media) -> u64 {
    m.default_max_bytes()
}

/// A complete, validated set of parameters for one model: every field either
/// has a checked value or is optional without a default (and is then omitted
/// from the request).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Params(BTreeMap<String, ParamValue>);

impl Params {
    /// Validates user values against the model and fills in defaults.
    pub fn validate(
        model: &Model,
        given: &BTreeMap<String, ParamValue>,
    ) -> Result<Params, ParamError> {
        for name in given.keys() {
            if model.field(name).is_none() {
                return Err(ParamError::UnknownField(name.clone()));
            }
        }
        let mut out = BTreeMap::new();
        for f in &model.fields {
            let value = match given.get(&f.name) {
                Some(v) => Some(normalise(f, v.clone())),
                None => f.default_value(),
            };
            match value {
                Some(v) => {
                    check_value(f, &v)?;
                    out.insert(f.name.clone(), v);
                }
                None if f.required => return Err(ParamError::Missing(f.name.clone())),
                None => {}
            }
        }
        if let Some(x) = model.excludes.iter().find(|x| x.matches(&out)) {
            return Err(ParamError::Excluded {
                reason: x.reason.en.clone(),
                reason_ru: x.reason.ru.clone(),
            });
        }
        Ok(Params(out))
    }

    /// Defaults only, skipping required fields without one (prompts, uploads).
    /// Enough to price a model, never to submit it.
    pub fn defaults_for_pricing(model: &Model) -> Params {
        Params(
            model
                .fields
                .iter()
                .filter_map(|f| f.default_value().map(|v| (f.name.clone(), v)))
                .collect(),
        )
    }

    /// Defaults plus the given price-driving values, for listing prices.
    pub fn for_pricing(model: &Model, overrides: &BTreeMap<String, ParamValue>) -> Params {
        let mut p = Self::defaults_for_pricing(model);
        p.0.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
        p
    }

    /// The value of a field, if set.
    pub fn get(&self, name: &str) -> Option<&ParamValue> {
        self.0.get(name)
    }

    /// Every value by field name.
    pub fn values(&self) -> &BTreeMap<String, ParamValue> {
        &self.0
    }

    /// The KIE `input` object: KIE field names, enums as strings, single-URL
    /// uploads as one string and list uploads as arrays.
    pub fn kie_input(&self, model: &Model) -> Map<String, Value> {
        let mut input = Map::new();
        for f in &model.fields {
            let Some(v) = self.0.get(&f.name) else {
                continue;
            };
            let json = match (v, &f.kind) {
                (ParamValue::Text(s), _) => Value::String(s.clone()),
                (ParamValue::Int(i), FieldKind::Number { .. }) => Value::from(*i as f64),
                (ParamValue::Int(i), _) => Value::from(*i),
                (ParamValue::Num(x), _) => {
                    serde_json::Number::from_f64(*x).map_or(Value::Null, Value::Number)
                }
                (ParamValue::Bool(b), _) => Value::Bool(*b),
                (
                    ParamValue::Choice(c),
                    FieldKind::Enum {
                        as_integer: true, ..
                    },
                ) => c
                    .parse::<i64>()
                    .map_or_else(|_| Value::String(c.clone()), Value::from),
                (ParamValue::Choice(c), _) => Value::String(c.clone()),
                (
                    ParamValue::Files(urls),
                    FieldKind::Upload {
                        shape: Shape::Single,
                        ..
                    },
                ) => urls.first().cloned().map_or(Value::Null, Value::String),
                (ParamValue::Files(urls), _) => {
                    Value::Array(urls.iter().cloned().map(Value::String).collect())
                }
            };
            input.insert(f.kie_name().to_owned(), json);
        }
        input
    }

    /// The full create body without a callback URL, in the model's family's
    /// shape: the market nests the fields under `input`; Veo and Suno take
    /// them at the top level beside `model`.
    pub fn kie_request(&self, model: &Model) -> Value {
        let input = self.kie_input(model);
        match model.family {
            Family::Market => {
                serde_json::json!({ "model": model.kie_model(), "input": input })
            }
            Family::Veo | Family::Suno => {
                let mut body = input;
                body.insert("model".into(), Value::String(model.kie_model().to_owned()));
                Value::Object(body)
            }
        }
    }
}

/// Rounds numbers to the field's step, so what is priced and what is sent are
/// the same value the user saw.
fn normalise(f: &Field, v: ParamValue) -> ParamValue {
    match (&f.kind, v) {
        (
            FieldKind::Number {
                step: Some(step), ..
            },
            ParamValue::Num(x),
        ) => {
            let r = (x / step).round() * step;
            // Keep the decimal representation short (0.3, not 0.30000000000000004).
            let decimals = (-step.log10()).ceil().max(0.0) as i32;
            let p = 10f64.powi(decimals);
            ParamValue::Num((r * p).round() / p)
        }
        (_, v) => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;

    pub(crate) fn sample_model() -> Model {
        let m: Model = serde_json::from_value(serde_json::json!({
            "id": "test/model", "category": "image", "types": ["text-to-image"],
            "name": {"en": "Test", "ru": "Тест"}, "description": {"en": "d", "ru": "д"},
            "output": "image", "deadline_secs": 600,
            "fields": [
                {"name": "prompt", "type": "string", "max_len": 10, "required": true},
                {"name": "image_input", "kie": "image_url", "type": "upload", "media": "image",
                 "shape": "single", "max_items": 1, "required": true},
                {"name": "ratio", "type": "enum", "values": ["1:1", "16:9"], "default": "1:1"},
                {"name": "num_images", "type": "enum", "values": ["1", "2"], "default": "1"},
                {"name": "guidance_scale", "type": "number", "min": 0.0, "max": 10.0, "step": 0.1, "default": 2.5},
                {"name": "seed", "type": "integer", "min": 0, "max": 100},
                {"name": "sound", "type": "boolean", "default": false}
            ],
            "price": {"credits": 4, "multiply_by": ["num_images"]}
        }))
        .unwrap();
        Catalog::new(vec![m.clone()]).unwrap();
        m
    }

    fn given(pairs: &[(&str, ParamValue)]) -> BTreeMap<String, ParamValue> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn defaults_fill_in_and_request_uses_kie_names() {
        let m = sample_model();
        let p = Params::validate(
            &m,
            &given(&[
                ("prompt", ParamValue::Text("a cat".into())),
                (
                    "image_input",
                    ParamValue::Files(vec!["https://x/1.png".into()]),
                ),
            ]),
        )
        .unwrap();
        let body = p.kie_request(&m);
        assert_eq!(
            body,
            serde_json::json!({"model": "test/model", "input": {
                "prompt": "a cat", "image_url": "https://x/1.png", "ratio": "1:1",
                "num_images": "1", "guidance_scale": 2.5, "sound": false
            }})
        );
    }

    #[test]
    fn every_kind_of_bad_value_is_refused() {
        let m = sample_model();
        let base = || {
            given(&[
                ("prompt", ParamValue::Text("a cat".into())),
                (
                    "image_input",
                    ParamValue::Files(vec!["https://x/1.png".into()]),
                ),
            ])
        };
        let cases: Vec<(&str, ParamValue)> = vec![
            ("ratio", ParamValue::Choice("2:1".into())),
            ("prompt", ParamValue::Text("x".repeat(11))),
            ("prompt", ParamValue::Text("  ".into())),
            ("seed", ParamValue::Int(101)),
            ("guidance_scale", ParamValue::Num(11.0)),
            ("sound", ParamValue::Text("yes".into())),
            ("image_input", ParamValue::Files(vec![])),
            (
                "image_input",
                ParamValue::Files(vec!["https://a".into(), "https://b".into()]),
            ),
            (
                "image_input",
                ParamValue::Files(vec!["file:///etc/passwd".into()]),
            ),
            ("nope", ParamValue::Bool(true)),
        ];
        for (k, v) in cases {
            let mut g = base();
            g.insert(k.to_owned(), v.clone());
            assert!(Params::validate(&m, &g).is_err(), "{k}={v:?} accepted");
        }
        let mut g = base();
        g.remove("prompt");
        assert_eq!(
            Params::validate(&m, &g),
            Err(ParamError::Missing("prompt".into()))
        );
    }

    #[test]
    fn numbers_are_rounded_to_their_step() {
        let m = sample_model();
        let mut g = given(&[
            ("prompt", ParamValue::Text("a".into())),
            (
                "image_input",
                ParamValue::Files(vec!["https://x/1.png".into()]),
            ),
        ]);
        g.insert("guidance_scale".into(), ParamValue::Num(3.16159));
        let p = Params::validate(&m, &g).unwrap();
        assert_eq!(p.get("guidance_scale"), Some(&ParamValue::Num(3.2)));
    }

    #[test]
    fn typed_text_is_parsed_per_field() {
        let m = sample_model();
        let seed = m.field("seed").unwrap();
        assert_eq!(
            ParamValue::parse_text(seed, " 42 ").unwrap(),
            ParamValue::Int(42)
        );
        assert!(ParamValue::parse_text(seed, "4x").is_err());
        assert!(ParamValue::parse_text(seed, "1000").is_err());
        let g = m.field("guidance_scale").unwrap();
        assert_eq!(
            ParamValue::parse_text(g, "2,5").unwrap(),
            ParamValue::Num(2.5)
        );
        let s = m.field("sound").unwrap();
        assert_eq!(
            ParamValue::parse_text(s, "да").unwrap(),
            ParamValue::Bool(true)
        );
    }

    fn any_value() -> impl proptest::strategy::Strategy<Value = ParamValue> {
        use proptest::prelude::*;
        prop_oneof![
            "\\PC{0,20}".prop_map(ParamValue::Text),
            any::<i64>().prop_map(ParamValue::Int),
            (-1e6f64..1e6).prop_map(ParamValue::Num),
            any::<bool>().prop_map(ParamValue::Bool),
            prop_oneof![
                Just("1:1".to_owned()),
                Just("16:9".to_owned()),
                "[a-z0-9:]{0,5}"
            ]
            .prop_map(ParamValue::Choice),
            proptest::collection::vec(
                prop_oneof![Just("https://x/a.png".to_owned()), "\\PC{0,12}"],
                0..3
            )
            .prop_map(ParamValue::Files),
        ]
    }

    proptest::proptest! {
        // Whatever a user or a forged callback supplies, validation either
        // refuses it or yields parameters that every field accepts, and the
        // request never carries a name KIE does not know.
        #[test]
        fn validation_accepts_only_what_every_field_allows(
            values in proptest::collection::btree_map(
                proptest::prop_oneof![
                    proptest::strategy::Just("prompt".to_owned()),
                    proptest::strategy::Just("image_input".to_owned()),
                    proptest::strategy::Just("ratio".to_owned()),
                    proptest::strategy::Just("num_images".to_owned()),
                    proptest::strategy::Just("guidance_scale".to_owned()),
                    proptest::strategy::Just("seed".to_owned()),
                    proptest::strategy::Just("sound".to_owned()),
                    "[a-z]{1,6}",
                ],
                any_value(),
                0..8,
            )
        ) {
            let m = sample_model();
            if let Ok(p) = Params::validate(&m, &values) {
                for (name, v) in p.values() {
                    let f = m.field(name).expect("only known fields survive");
                    proptest::prop_assert!(check_value(f, v).is_ok(), "{name}={v:?}");
                }
                let input = p.kie_input(&m);
                for key in input.keys() {
                    proptest::prop_assert!(m.fields.iter().any(|f| f.kie_name() == key), "{key}");
                }
                proptest::prop_assert!(crate::pricing::Pricing::default().price(&m, &p).is_ok());
            }
        }
    }

    #[test]
    fn values_refused_together_are_refused_before_anything_is_sent() {
        let mut m = sample_model();
        m.excludes = vec![crate::catalog::Exclusion {
            when: [("ratio", "16:9"), ("sound", "true")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            reason: crate::catalog::Localized {
                en: "wide videos are silent".into(),
                ru: "широкие видео без звука".into(),
            },
        }];
        Catalog::new(vec![m.clone()]).unwrap();
        let base = [
            ("prompt", ParamValue::Text("a cat".into())),
            (
                "image_input",
                ParamValue::Files(vec!["https://x/a.png".into()]),
            ),
        ];
        let mut both = given(&base);
        both.insert("ratio".into(), ParamValue::Choice("16:9".into()));
        both.insert("sound".into(), ParamValue::Bool(true));
        assert!(matches!(
            Params::validate(&m, &both),
            Err(ParamError::Excluded { .. })
        ));
        // Either value alone is fine.
        both.insert("sound".into(), ParamValue::Bool(false));
        assert!(Params::validate(&m, &both).is_ok());
        // An exclusion naming a value the field does not have is a broken catalog.
        let mut broken = m.clone();
        broken.excludes[0].when.insert("ratio".into(), "4:3".into());
        assert!(Catalog::new(vec![broken]).is_err());
    }

    #[test]
    fn uploads_are_checked_for_type_and_size() {
        let m = sample_model();
        let f = m.field("image_input").unwrap();
        assert!(check_upload(f, "image/png", 1000).is_ok());
        assert!(matches!(
            check_upload(f, "application/pdf", 10),
            Err(ParamError::Mime { .. })
        ));
        assert!(matches!(
            check_upload(f, "image/png", 60 * 1024 * 1024),
            Err(ParamError::TooLarge { .. })
        ));
    }
}
