//! KIE's model catalogue as recorded for the tests: each sold model's input
//! schema and price text, as KIE's per-model OpenAPI pages published them.
//!
//! The fixtures live in `fixtures/kie-catalog/*.json`, one file per catalog
//! family (the same split as the catalog's own files). Each holds:
//!
//! ```json
//! {"recorded": "2026-06-30",
//!  "models": [{
//!    "model": "nano-banana-2",            // KIE's model string
//!    "provider": "google",
//!    "taskType": ["text-to-image", "image-to-image"],
//!    "endpoint": "/api/v1/jobs/createTask", // or /api/v1/veo/generate, /api/v1/generate
//!    "doc": "Image Models/Google/011-...md", // the page the schema was taken from
//!    "pricingDesc": "1K: 8 credits per image; 2K: 12 credits per image",
//!    "input": {"prompt": {"type": "string", "maxLength": 20000}, ...},
//!    "required": ["prompt"]}]}
//! ```
//!
//! `input` holds JSON-schema properties with only what a check reads (type,
//! enum, default, maxLength, minimum, maximum, minItems, maxItems, items,
//! deprecated). [`RecordedModel::openapi`] wraps them into the OpenAPI
//! document KIE's schema endpoint serves: under `input` for the market, at the
//! top level of the body for the dedicated families. The fake KIE
//! ([`crate::kie::FakeKie`]) serves them; the catalog's own tests compare the
//! shipped catalog with them offline.

use serde_json::{Map, Value, json};

macro_rules! fixtures {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../fixtures/kie-catalog/", $name)))),*]
    };
}

/// The fixture files, by name.
pub const FILES: &[(&str, &str)] = fixtures![
    "image-google.json",
    "image-openai.json",
    "image-seedream.json",
    "image-flux.json",
    "image-grok.json",
    "image-other.json",
    "image-qwen.json",
    "image-ideogram.json",
    "image-wan.json",
    "image-tools.json",
    "video-veo.json",
    "video-kling.json",
    "video-bytedance.json",
    "video-wan.json",
    "video-hailuo.json",
    "video-grok.json",
    "video-happyhorse.json",
    "video-other.json",
    "audio-suno.json",
    "audio-elevenlabs.json",
];

/// The market's create endpoint, the default of a fixture.
pub const MARKET_ENDPOINT: &str = "/api/v1/jobs/createTask";

/// One model as KIE's catalogue describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedModel {
    /// KIE's model string.
    pub model: String,
    /// The provider.
    pub provider: String,
    /// KIE's task types.
    pub task_types: Vec<String>,
    /// The create endpoint that takes it.
    pub endpoint: String,
    /// The documentation page the schema was recorded from.
    pub doc: String,
    /// KIE's price text.
    pub pricing_desc: String,
    /// Input properties (JSON schema).
    pub input: Map<String, Value>,
    /// Required input properties.
    pub required: Vec<String>,
}

impl RecordedModel {
    /// Whether the model is served by the market endpoint.
    pub fn is_market(&self) -> bool {
        self.endpoint == MARKET_ENDPOINT
    }

    /// The OpenAPI document KIE's schema endpoint serves for the model.
    pub fn openapi(&self) -> Value {
        let input = json!({
            "type": "object",
            "properties": self.input,
            "required": self.required,
        });
        let body = if self.is_market() {
            json!({
                "type": "object",
                "required": ["model", "input"],
                "properties": {
                    "model": {"type": "string", "enum": [self.model]},
                    "callBackUrl": {"type": "string", "format": "uri"},
                    "input": input,
                }
            })
        } else {
            let mut props = self.input.clone();
            props
                .entry("model".to_owned())
                .or_insert_with(|| json!({"type": "string", "enum": [self.model]}));
            props.insert(
                "callBackUrl".into(),
                json!({"type": "string", "format": "uri"}),
            );
            let mut required = self.required.clone();
            required.push("model".into());
            json!({"type": "object", "required": required, "properties": props})
        };
        json!({
            "openapi": "3.0.1",
            "info": {"title": self.model, "version": "1.0.0"},
            "paths": {
                self.endpoint.clone(): {
                    "post": {
                        "operationId": self.model,
                        "requestBody": {"content": {"application/json": {"schema": body}}}
                    }
                }
            }
        })
    }

    /// The model's entry in `GET /api/v1/models`.
    pub fn listing(&self) -> Value {
        json!({
            "model": self.model,
            "provider": self.provider,
            "taskType": self.task_types,
            "pricingDesc": self.pricing_desc,
        })
    }
}

/// Every recorded model, in file order.
///
/// # Panics
/// If a fixture file is malformed: they are part of the build.
pub fn recorded() -> Vec<RecordedModel> {
    let mut out = Vec::new();
    for (name, text) in FILES {
        let doc: Value = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("fixture {name} is not JSON: {e}"));
        let models = doc
            .get("models")
            .and_then(Value::as_array)
            .unwrap_or_else(|| panic!("fixture {name} has no models array"));
        for m in models {
            out.push(parse_model(name, m));
        }
    }
    out
}

fn parse_model(file: &str, m: &Value) -> RecordedModel {
    let text = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned);
    let model = text("model").unwrap_or_else(|| panic!("fixture {file}: a model has no id"));
    let list = |k: &str| {
        m.get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    RecordedModel {
        provider: text("provider").unwrap_or_default(),
        task_types: list("taskType"),
        endpoint: text("endpoint").unwrap_or_else(|| MARKET_ENDPOINT.to_owned()),
        doc: text("doc").unwrap_or_default(),
        pricing_desc: text("pricingDesc").unwrap_or_default(),
        input: m
            .get("input")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_else(|| panic!("fixture {file}: {model} has no input")),
        required: list("required"),
        model,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fixture_parses_and_names_its_source() {
        let all = recorded();
        let mut seen = std::collections::BTreeSet::new();
        for m in &all {
            assert!(
                seen.insert((m.model.clone(), m.endpoint.clone())),
                "{} twice",
                m.model
            );
            assert!(!m.doc.is_empty(), "{} names no source page", m.model);
            for r in &m.required {
                assert!(
                    m.input.contains_key(r),
                    "{}: required {r} is not a property",
                    m.model
                );
            }
        }
    }
}
