//! KIE's published input schema of one model, read out of the OpenAPI
//! document its schema endpoint returns.
//!
//! Only what the comparison needs is kept: each property's type, enum, default
//! and limits, and the list of required properties. `$ref`s into
//! `#/components/schemas` are followed; anything else that does not fit is a
//! [`SchemaError`], reported against the model instead of guessed at.

use std::collections::{BTreeMap, BTreeSet};

use kiebot_domain::Family;
use serde_json::Value;

/// A JSON-schema type as KIE writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropType {
    /// `string` (URLs, enums, text).
    String,
    /// `integer`.
    Integer,
    /// `number`.
    Number,
    /// `boolean`.
    Boolean,
    /// `array`, with the type of its items when given.
    Array(Option<Box<PropType>>),
    /// `object`.
    Object,
    /// No type given, or one this reader does not know (kept for messages).
    Other(String),
}

impl PropType {
    fn parse(v: &Value) -> PropType {
        let name = match v.get("type") {
            Some(Value::String(s)) => s.as_str(),
            // `type: [string, "null"]`: the first non-null entry.
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .find(|t| *t != "null")
                .unwrap_or(""),
            _ => "",
        };
        match name {
            "string" => PropType::String,
            "integer" => PropType::Integer,
            "number" => PropType::Number,
            "boolean" => PropType::Boolean,
            "object" => PropType::Object,
            "array" => PropType::Array(
                v.get("items")
                    .map(|i| Box::new(PropType::parse(i)))
                    .filter(|t| !matches!(**t, PropType::Other(_))),
            ),
            // An enum without a type is an enum of its values' type.
            "" if v.get("enum").is_some_and(Value::is_array) => {
                match v["enum"].as_array().and_then(|a| a.first()) {
                    Some(Value::Number(n)) if n.is_i64() || n.is_u64() => PropType::Integer,
                    Some(Value::Number(_)) => PropType::Number,
                    Some(Value::Bool(_)) => PropType::Boolean,
                    _ => PropType::String,
                }
            }
            other => PropType::Other(other.to_owned()),
        }
    }

    /// The name as KIE writes it (`array<string>` for typed arrays).
    pub fn name(&self) -> String {
        match self {
            PropType::String => "string".into(),
            PropType::Integer => "integer".into(),
            PropType::Number => "number".into(),
            PropType::Boolean => "boolean".into(),
            PropType::Object => "object".into(),
            PropType::Array(Some(t)) => format!("array<{}>", t.name()),
            PropType::Array(None) => "array".into(),
            PropType::Other(t) if t.is_empty() => "untyped".into(),
            PropType::Other(t) => t.clone(),
        }
    }
}

/// One input property.
#[derive(Debug, Clone, PartialEq)]
pub struct Prop {
    /// Its type.
    pub ty: PropType,
    /// Accepted values, as text (`"5"` for the integer 5), when it is an enum.
    pub enum_values: Option<Vec<String>>,
    /// KIE's default, when it names one.
    pub default: Option<Value>,
    /// Longest accepted text.
    pub max_length: Option<u64>,
    /// Smallest accepted number.
    pub minimum: Option<f64>,
    /// Largest accepted number.
    pub maximum: Option<f64>,
    /// Fewest accepted items.
    pub min_items: Option<u64>,
    /// Most accepted items.
    pub max_items: Option<u64>,
    /// Marked deprecated.
    pub deprecated: bool,
}

impl Prop {
    fn parse(v: &Value) -> Prop {
        let items = v.get("items");
        let enum_values = v
            .get("enum")
            .or_else(|| items.and_then(|i| i.get("enum")))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| match x {
                        Value::String(s) => Some(s.clone()),
                        Value::Number(n) => Some(n.to_string()),
                        Value::Bool(b) => Some(b.to_string()),
                        // Some pages list `{value: ...}` objects after the plain values.
                        _ => None,
                    })
                    .collect::<Vec<_>>()
            })
            .filter(|a| !a.is_empty());
        Prop {
            ty: PropType::parse(v),
            enum_values,
            default: v.get("default").cloned(),
            max_length: v.get("maxLength").and_then(Value::as_u64),
            minimum: v.get("minimum").and_then(Value::as_f64),
            maximum: v.get("maximum").and_then(Value::as_f64),
            min_items: v.get("minItems").and_then(Value::as_u64),
            max_items: v.get("maxItems").and_then(Value::as_u64),
            deprecated: v.get("deprecated").and_then(Value::as_bool) == Some(true),
        }
    }
}

/// The input schema of one model.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KieSchema {
    /// Properties by KIE name, in name order.
    pub props: BTreeMap<String, Prop>,
    /// Names KIE requires.
    pub required: BTreeSet<String>,
    /// The `model` values the endpoint accepts, when it says (the dedicated
    /// families list their models in the body schema).
    pub models: Option<Vec<String>>,
}

/// Why a document could not be read as a model's schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// No POST operation with a JSON request body.
    #[error("the OpenAPI document has no POST operation with a JSON request body")]
    NoOperation,
    /// A market body without an `input` object.
    #[error("the request body has no `input` object")]
    NoInput,
    /// A `$ref` that points nowhere.
    #[error("unresolved reference {0}")]
    BadRef(String),
}

/// Properties that belong to the request envelope, not to the model's input.
const ENVELOPE: [&str; 2] = ["model", "callBackUrl"];

/// Reads the model's input schema out of an OpenAPI document: `input`'s
/// properties for the market, the body's own properties (less `model` and
/// `callBackUrl`) for the dedicated families.
pub fn input_schema(openapi: &Value, family: Family) -> Result<KieSchema, SchemaError> {
    let body = request_body(openapi).ok_or(SchemaError::NoOperation)?;
    let body = resolve(openapi, body)?;
    let props_of = |v: &Value| -> Result<(BTreeMap<String, Prop>, BTreeSet<String>), SchemaError> {
        let mut props = BTreeMap::new();
        if let Some(p) = v.get("properties").and_then(Value::as_object) {
            for (name, prop) in p {
                props.insert(name.clone(), Prop::parse(resolve(openapi, prop)?));
            }
        }
        let required = v
            .get("required")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        Ok((props, required))
    };
    let (body_props, body_required) = props_of(body)?;
    let models = body_props.get("model").and_then(|m| m.enum_values.clone());
    match family {
        Family::Market => {
            let input = body
                .get("properties")
                .and_then(|p| p.get("input"))
                .ok_or(SchemaError::NoInput)?;
            let (props, required) = props_of(resolve(openapi, input)?)?;
            Ok(KieSchema {
                props,
                required,
                models,
            })
        }
        Family::Veo | Family::Suno => {
            let props = body_props
                .into_iter()
                .filter(|(k, _)| !ENVELOPE.contains(&k.as_str()))
                .collect();
            let required = body_required
                .into_iter()
                .filter(|k| !ENVELOPE.contains(&k.as_str()))
                .collect();
            Ok(KieSchema {
                props,
                required,
                models,
            })
        }
    }
}

/// The JSON request body schema of the document's first POST operation.
fn request_body(openapi: &Value) -> Option<&Value> {
    openapi
        .get("paths")?
        .as_object()?
        .values()
        .filter_map(|p| p.get("post"))
        .find_map(|op| {
            op.get("requestBody")?
                .get("content")?
                .get("application/json")?
                .get("schema")
        })
}

fn resolve<'a>(doc: &'a Value, v: &'a Value) -> Result<&'a Value, SchemaError> {
    let mut v = v;
    // A short chain at most; a loop of references is a broken document.
    for _ in 0..8 {
        let Some(r) = v.get("$ref").and_then(Value::as_str) else {
            return Ok(v);
        };
        let path = r
            .strip_prefix("#/")
            .ok_or_else(|| SchemaError::BadRef(r.to_owned()))?;
        let mut at = doc;
        for part in path.split('/') {
            at = at
                .get(part)
                .ok_or_else(|| SchemaError::BadRef(r.to_owned()))?;
        }
        v = at;
    }
    Err(SchemaError::BadRef("a reference loop".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn market(input: Value) -> Value {
        json!({"paths": {"/api/v1/jobs/createTask": {"post": {"requestBody": {"content": {
            "application/json": {"schema": {"type": "object", "required": ["model"], "properties": {
                "model": {"type": "string", "enum": ["m"]},
                "callBackUrl": {"type": "string"},
                "input": input}}}}}}}}})
    }

    #[test]
    fn a_market_input_is_read_with_its_limits() {
        let doc = market(
            json!({"type": "object", "required": ["prompt"], "properties": {
                "prompt": {"type": "string", "maxLength": 5000},
                "duration": {"type": "string", "enum": ["5", "10"], "default": "5"},
                "image_urls": {"type": "array", "items": {"type": "string", "format": "uri"}, "maxItems": 1},
                "seed": {"type": "integer", "minimum": 0, "maximum": 100}
            }}),
        );
        let s = input_schema(&doc, Family::Market).unwrap();
        assert_eq!(s.required, BTreeSet::from(["prompt".to_owned()]));
        assert_eq!(s.props["prompt"].max_length, Some(5000));
        assert_eq!(
            s.props["duration"].enum_values.as_deref(),
            Some(&["5".to_owned(), "10".to_owned()][..])
        );
        assert_eq!(
            s.props["image_urls"].ty,
            PropType::Array(Some(Box::new(PropType::String)))
        );
        assert_eq!(s.props["image_urls"].max_items, Some(1));
        assert_eq!(s.props["seed"].maximum, Some(100.0));
        assert_eq!(s.models, Some(vec!["m".to_owned()]));
    }

    #[test]
    fn references_are_followed_and_broken_ones_reported() {
        let mut doc = market(json!({"$ref": "#/components/schemas/In"}));
        doc["components"] =
            json!({"schemas": {"In": {"properties": {"prompt": {"type": "string"}}}}});
        let s = input_schema(&doc, Family::Market).unwrap();
        assert!(s.props.contains_key("prompt"));
        let broken = market(json!({"$ref": "#/components/schemas/Nope"}));
        assert!(matches!(
            input_schema(&broken, Family::Market),
            Err(SchemaError::BadRef(_))
        ));
    }

    #[test]
    fn a_dedicated_family_reads_the_body_less_its_envelope() {
        let doc = json!({"paths": {"/api/v1/veo/generate": {"post": {"requestBody": {"content": {
        "application/json": {"schema": {"required": ["prompt", "model", "callBackUrl"], "properties": {
            "prompt": {"type": "string"},
            "model": {"type": "string", "enum": ["veo3", "veo3_fast"]},
            "callBackUrl": {"type": "string"},
            "duration": {"type": "integer", "enum": [4, 6, 8]}
        }}}}}}}}});
        let s = input_schema(&doc, Family::Veo).unwrap();
        assert_eq!(s.props.keys().collect::<Vec<_>>(), ["duration", "prompt"]);
        assert_eq!(s.required, BTreeSet::from(["prompt".to_owned()]));
        assert_eq!(s.props["duration"].ty, PropType::Integer);
        assert_eq!(s.props["duration"].enum_values.as_ref().unwrap()[1], "6");
        assert_eq!(s.models.unwrap(), ["veo3", "veo3_fast"]);
    }

    #[test]
    fn documents_without_a_body_or_input_are_errors() {
        assert_eq!(
            input_schema(&json!({"paths": {}}), Family::Market),
            Err(SchemaError::NoOperation)
        );
        let no_input = json!({"paths": {"/x": {"post": {"requestBody": {"content": {
            "application/json": {"schema": {"properties": {"model": {"type": "string"}}}}}}}}}});
        assert_eq!(
            input_schema(&no_input, Family::Market),
            Err(SchemaError::NoInput)
        );
    }
}
