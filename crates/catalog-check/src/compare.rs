//! One model of our catalog against KIE's schema and price text.

use std::collections::BTreeSet;
use std::fmt;

use kiebot_domain::catalog::{Ask, Field, FieldKind, Shape};
use kiebot_domain::{Credits, Model};
use serde::Serialize;

use crate::schema::{KieSchema, Prop, PropType};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Some or all requests of the model would fail or be wrong.
    Error,
    /// Worth a look (price drift, a deprecated field).
    Warning,
    /// For the record (fields KIE offers that we do not, prices for a human).
    Info,
}

impl Severity {
    /// The word printed in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// What a finding is about, for machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    /// KIE's catalogue does not list the model.
    NotListed,
    /// The model's schema could not be fetched or read.
    SchemaUnavailable,
    /// The endpoint no longer accepts our `model` string.
    ModelNotAccepted,
    /// A field we send is not in KIE's schema.
    FieldMissing,
    /// A field we send has another type at KIE.
    TypeMismatch,
    /// An upload is one URL at one side and a list at the other.
    ShapeMismatch,
    /// A value we offer is not among KIE's.
    EnumValueRemoved,
    /// A limit of ours is wider than KIE's.
    LimitExceeded,
    /// KIE requires a field we neither ask nor default.
    RequiredNotSent,
    /// KIE marks a field we send as deprecated.
    Deprecated,
    /// KIE accepts fields we do not offer.
    NotOffered,
    /// The price text gives other amounts than our table.
    PriceDrift,
    /// The price text gives no amount we can read.
    PriceUnparsed,
    /// The price text agrees with our table.
    PriceAgrees,
}

impl Code {
    /// Whether a finding of this code makes every request of the model fail,
    /// so that a model with one is taken off sale until an operator acts. A
    /// narrowed limit or a removed enum value fails only the requests that use
    /// it (KIE answers 422 and the hold is released): those alert instead.
    pub fn takes_off_sale(self) -> bool {
        matches!(
            self,
            Code::NotListed
                | Code::ModelNotAccepted
                | Code::FieldMissing
                | Code::TypeMismatch
                | Code::ShapeMismatch
                | Code::RequiredNotSent
        )
    }
}

/// One difference between our catalog and KIE's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// How bad it is.
    pub severity: Severity,
    /// Our model id.
    pub model: String,
    /// Our field name (KIE's name for fields we do not have), when it is about
    /// one field.
    pub field: Option<String>,
    /// What it is about.
    pub code: Code,
    /// A sentence for the operator.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<7} {} {}: {}",
            self.severity.as_str(),
            self.model,
            self.field.as_deref().unwrap_or("-"),
            self.message
        )
    }
}

pub(crate) fn finding(
    severity: Severity,
    model: &Model,
    field: Option<&str>,
    code: Code,
    message: String,
) -> Finding {
    Finding {
        severity,
        model: model.id.to_string(),
        field: field.map(str::to_owned),
        code,
        message,
    }
}

/// Compares a model's fields with KIE's schema: every field we send exists
/// with the same type and single/list shape, our enums and limits are within
/// KIE's, and every field KIE requires is asked or defaulted.
pub fn compare(model: &Model, schema: &KieSchema) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Some(accepted) = &schema.models
        && !accepted.iter().any(|m| m == model.kie_model())
    {
        out.push(finding(
            Severity::Error,
            model,
            None,
            Code::ModelNotAccepted,
            format!(
                "KIE's endpoint accepts model {} but not {:?}",
                accepted.join(", "),
                model.kie_model()
            ),
        ));
    }
    for field in &model.fields {
        let Some(prop) = schema.props.get(field.kie_name()) else {
            out.push(finding(
                Severity::Error,
                model,
                Some(&field.name),
                Code::FieldMissing,
                format!(
                    "KIE's schema has no field {:?}; it is sent and ignored, or rejected",
                    field.kie_name()
                ),
            ));
            continue;
        };
        compare_field(model, field, prop, &mut out);
    }
    for name in &schema.required {
        let ours = model.fields.iter().find(|f| f.kie_name() == name);
        let sent = ours.is_some_and(|f| f.required || f.default.is_some());
        if !sent {
            out.push(finding(
                Severity::Error,
                model,
                Some(ours.map_or(name.as_str(), |f| f.name.as_str())),
                Code::RequiredNotSent,
                format!("KIE requires {name:?}, which is neither asked nor defaulted"),
            ));
        }
    }
    let sent: BTreeSet<&str> = model.fields.iter().map(Field::kie_name).collect();
    let others: Vec<&str> = schema
        .props
        .iter()
        .filter(|(name, p)| !p.deprecated && !sent.contains(name.as_str()))
        .map(|(name, _)| name.as_str())
        .collect();
    if !others.is_empty() {
        out.push(finding(
            Severity::Info,
            model,
            None,
            Code::NotOffered,
            format!("KIE also accepts {} (not offered)", others.join(", ")),
        ));
    }
    out
}

fn compare_field(model: &Model, field: &Field, prop: &Prop, out: &mut Vec<Finding>) {
    let name = Some(field.name.as_str());
    let mut push = |severity, code, message: String| {
        out.push(finding(severity, model, name, code, message));
    };
    if prop.deprecated {
        push(
            Severity::Warning,
            Code::Deprecated,
            format!("KIE marks {:?} deprecated", field.kie_name()),
        );
    }
    let mismatch = |ours: &str| {
        format!(
            "we send {ours}, KIE's {:?} is {}",
            field.kie_name(),
            prop.ty.name()
        )
    };
    match &field.kind {
        FieldKind::String { max_len } => {
            if prop.ty != PropType::String {
                return push(Severity::Error, Code::TypeMismatch, mismatch("text"));
            }
            if let Some(max) = prop.max_length
                && (*max_len as u64) > max
            {
                push(
                    Severity::Error,
                    Code::LimitExceeded,
                    format!("we accept {max_len} characters, KIE at most {max}"),
                );
            }
        }
        FieldKind::Integer { min, max } => {
            if !matches!(prop.ty, PropType::Integer | PropType::Number) {
                return push(Severity::Error, Code::TypeMismatch, mismatch("an integer"));
            }
            check_range(*min as f64, *max as f64, prop, &mut push);
        }
        FieldKind::Number { min, max, .. } => {
            if prop.ty != PropType::Number {
                return push(Severity::Error, Code::TypeMismatch, mismatch("a number"));
            }
            check_range(*min, *max, prop, &mut push);
        }
        FieldKind::Boolean => {
            if prop.ty != PropType::Boolean {
                return push(Severity::Error, Code::TypeMismatch, mismatch("a boolean"));
            }
        }
        FieldKind::Enum { values, as_integer } => {
            let ok = if *as_integer {
                matches!(prop.ty, PropType::Integer | PropType::Number)
            } else {
                prop.ty == PropType::String
            };
            if !ok {
                let ours = if *as_integer { "integers" } else { "text" };
                return push(Severity::Error, Code::TypeMismatch, mismatch(ours));
            }
            if let Some(theirs) = &prop.enum_values {
                for v in values.iter().filter(|v| !theirs.contains(v)) {
                    push(
                        Severity::Error,
                        Code::EnumValueRemoved,
                        format!("we offer {v:?}, KIE accepts only {}", theirs.join(", ")),
                    );
                }
            } else if *as_integer {
                let nums: Vec<f64> = values.iter().filter_map(|v| v.parse().ok()).collect();
                let lo = nums.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = nums.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                check_range(lo, hi, prop, &mut push);
            }
        }
        FieldKind::Upload {
            shape,
            min_items,
            max_items,
            ..
        } => {
            let theirs_list = matches!(prop.ty, PropType::Array(_));
            match (shape, theirs_list) {
                (Shape::Single, true) => {
                    return push(
                        Severity::Error,
                        Code::ShapeMismatch,
                        format!("we send one URL, KIE's {:?} is a list", field.kie_name()),
                    );
                }
                (Shape::List, false) if prop.ty == PropType::String => {
                    return push(
                        Severity::Error,
                        Code::ShapeMismatch,
                        format!("we send a list, KIE's {:?} is one URL", field.kie_name()),
                    );
                }
                (_, false) if prop.ty != PropType::String => {
                    return push(Severity::Error, Code::TypeMismatch, mismatch("file URLs"));
                }
                _ => {}
            }
            if let PropType::Array(Some(items)) = &prop.ty
                && **items != PropType::String
            {
                return push(Severity::Error, Code::TypeMismatch, mismatch("file URLs"));
            }
            if *shape == Shape::List {
                if let Some(max) = prop.max_items
                    && (*max_items as u64) > max
                {
                    push(
                        Severity::Error,
                        Code::LimitExceeded,
                        format!("we accept {max_items} files, KIE at most {max}"),
                    );
                }
                if let Some(min) = prop.min_items
                    && (*min_items as u64) < min
                {
                    push(
                        Severity::Error,
                        Code::LimitExceeded,
                        format!("we accept {min_items} files, KIE at least {min}"),
                    );
                }
            }
        }
    }
    if field.ask() == Ask::Fixed
        && let (Some(theirs), Some(default)) = (&prop.enum_values, &field.default)
    {
        let text = match default {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if !theirs.contains(&text) {
            out.push(finding(
                Severity::Error,
                model,
                name,
                Code::EnumValueRemoved,
                format!(
                    "the fixed value {text:?} is not among KIE's {}",
                    theirs.join(", ")
                ),
            ));
        }
    }
}

fn check_range(min: f64, max: f64, prop: &Prop, push: &mut impl FnMut(Severity, Code, String)) {
    if let Some(lo) = prop.minimum
        && min < lo
    {
        push(
            Severity::Error,
            Code::LimitExceeded,
            format!("we accept from {min}, KIE from {lo}"),
        );
    }
    if let Some(hi) = prop.maximum
        && max > hi
    {
        push(
            Severity::Error,
            Code::LimitExceeded,
            format!("we accept up to {max}, KIE up to {hi}"),
        );
    }
}

/// Compares our price table with KIE's `pricingDesc`.
///
/// KIE's text is prose ("A 5-second video costs 160 credits (0.80 USD)"), so
/// only the credit amounts in it are read: when they are exactly the per-unit
/// amounts of our table, the price agrees; when they differ, the drift is a
/// warning (it alerts; it never takes a model off sale, because a price that
/// changed is ours to decide); when none can be read, the text is printed for
/// a human.
pub fn compare_price(model: &Model, pricing_desc: &str) -> Finding {
    let theirs = credit_amounts(pricing_desc);
    let ours = our_amounts(model);
    let shown = |set: &BTreeSet<i64>| {
        set.iter()
            .map(|m| Credits::from_milli(*m).to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if theirs.is_empty() {
        return finding(
            Severity::Info,
            model,
            None,
            Code::PriceUnparsed,
            format!(
                "KIE's price reads {:?}; ours is {} credits per unit: check by hand",
                pricing_desc.trim(),
                shown(&ours)
            ),
        );
    }
    if model.price.as_ref().is_some_and(|p| p.free) {
        return finding(
            Severity::Info,
            model,
            None,
            Code::PriceAgrees,
            format!("sold free; KIE bills {} credits per unit", shown(&theirs)),
        );
    }
    if theirs == ours {
        finding(
            Severity::Info,
            model,
            None,
            Code::PriceAgrees,
            format!("KIE's price {} credits agrees", shown(&theirs)),
        )
    } else {
        finding(
            Severity::Warning,
            model,
            None,
            Code::PriceDrift,
            format!(
                "KIE's price text gives {} credits, our table {}: {:?}",
                shown(&theirs),
                shown(&ours),
                pricing_desc.trim()
            ),
        )
    }
}

/// The per-unit credit amounts of our price rule, in thousandths.
fn our_amounts(model: &Model) -> BTreeSet<i64> {
    let Some(p) = &model.price else {
        return BTreeSet::new();
    };
    let mut set: BTreeSet<i64> = p.table.values().map(|c| c.milli()).collect();
    // The base amount counts only when some combination falls back to it.
    if let Some(c) = p.credits
        && p.table.len() < kiebot_domain::catalog::price_combinations(model).len()
    {
        set.insert(c.milli());
    }
    set
}

/// Every "N credits" amount in a text, in thousandths of a credit.
pub fn credit_amounts(text: &str) -> BTreeSet<i64> {
    let lower = text.to_ascii_lowercase();
    let mut out = BTreeSet::new();
    let bytes = lower.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
                i += 1;
            }
            let number = lower[start..i].trim_end_matches('.');
            let rest = lower[i..].trim_start();
            if rest.starts_with("credit")
                && let Ok(x) = number.parse::<f64>()
                && x.is_finite()
            {
                out.insert((x * 1000.0).round() as i64);
            }
        } else {
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::input_schema;
    use kiebot_domain::Family;
    use serde_json::json;

    fn model(toml_fields: &str, price: &str) -> Model {
        let text = format!(
            r#"
[[model]]
id = "m/one"
category = "video"
types = ["image-to-video"]
name = {{ en = "M", ru = "M" }}
description = {{ en = "M", ru = "M" }}
output = "video"
deadline_secs = 600
{toml_fields}
{price}
"#
        );
        kiebot_catalog::parse(&text).expect("test catalog").models()[0].clone()
    }

    const FIELDS: &str = r#"
[[model.fields]]
name = "prompt"
type = "string"
max_len = 1000
required = true

[[model.fields]]
name = "images"
kie = "image_urls"
type = "upload"
media = "image"
shape = "list"
max_items = 1
required = true

[[model.fields]]
name = "duration"
type = "enum"
values = ["5", "10"]
default = "5"
"#;

    fn schema(input: serde_json::Value, required: &[&str]) -> KieSchema {
        let doc = json!({"paths": {"/api/v1/jobs/createTask": {"post": {"requestBody": {"content": {
            "application/json": {"schema": {"properties": {"input": {
                "properties": input, "required": required}}}}}}}}}});
        input_schema(&doc, Family::Market).unwrap()
    }

    fn good() -> serde_json::Value {
        json!({
            "prompt": {"type": "string", "maxLength": 1000},
            "image_urls": {"type": "array", "items": {"type": "string"}, "maxItems": 1},
            "duration": {"type": "string", "enum": ["5", "10"]},
            "negative_prompt": {"type": "string"}
        })
    }

    fn codes(f: &[Finding]) -> Vec<(Severity, Code, Option<String>)> {
        f.iter()
            .map(|f| (f.severity, f.code, f.field.clone()))
            .collect()
    }

    #[test]
    fn a_matching_schema_gives_only_what_is_not_offered() {
        let m = model(FIELDS, "[model.price]\ncredits = 10");
        let f = compare(&m, &schema(good(), &["prompt", "image_urls"]));
        assert_eq!(codes(&f), [(Severity::Info, Code::NotOffered, None)]);
        assert!(f[0].message.contains("negative_prompt"));
    }

    #[test]
    fn each_kind_of_drift_names_the_field() {
        let m = model(FIELDS, "[model.price]\ncredits = 10");
        let mut s = good();
        s["prompt"]["maxLength"] = json!(500);
        s["image_urls"] = json!({"type": "string"});
        s["duration"]["enum"] = json!(["5"]);
        let f = compare(&m, &schema(s, &["prompt", "seed"]));
        let c = codes(&f);
        assert!(c.contains(&(Severity::Error, Code::LimitExceeded, Some("prompt".into()))));
        assert!(c.contains(&(Severity::Error, Code::ShapeMismatch, Some("images".into()))));
        assert!(c.contains(&(
            Severity::Error,
            Code::EnumValueRemoved,
            Some("duration".into())
        )));
        assert!(c.contains(&(Severity::Error, Code::RequiredNotSent, Some("seed".into()))));

        let mut renamed = good();
        let moved = renamed["image_urls"].clone();
        renamed.as_object_mut().unwrap().remove("image_urls");
        renamed["input_urls"] = moved;
        let f = compare(&m, &schema(renamed, &[]));
        assert!(codes(&f).contains(&(Severity::Error, Code::FieldMissing, Some("images".into()))));
        assert!(
            f.iter()
                .any(|f| f.code == Code::FieldMissing && f.code.takes_off_sale())
        );
    }

    #[test]
    fn an_integer_enum_must_be_sent_as_integers() {
        let fields = r#"
[[model.fields]]
name = "duration"
type = "enum"
values = ["4", "8"]
default = "8"
"#;
        let m = model(fields, "[model.price]\ncredits = 10");
        let s = schema(
            json!({"duration": {"type": "integer", "enum": [4, 6, 8]}}),
            &[],
        );
        assert!(codes(&compare(&m, &s)).contains(&(
            Severity::Error,
            Code::TypeMismatch,
            Some("duration".into())
        )));
        let m = model(
            &fields.replace("default = \"8\"", "default = \"8\"\nsend_as = \"integer\""),
            "[model.price]\ncredits = 10",
        );
        assert!(compare(&m, &s).is_empty());
    }

    #[test]
    fn credit_amounts_are_read_from_prose() {
        assert_eq!(
            credit_amounts("A 5-second video costs 160 credits (0.80 USD)"),
            BTreeSet::from([160_000])
        );
        assert_eq!(
            credit_amounts("1K: 8 credits per image; 2K: 12 credits; 4K: 18 Credits."),
            BTreeSet::from([8_000, 12_000, 18_000])
        );
        assert!(credit_amounts("$0.04 per image").is_empty());
    }

    #[test]
    fn prices_agree_drift_or_go_to_a_human() {
        let m = model(
            FIELDS,
            "[model.price]\nby = [\"duration\"]\ntable = { \"5\" = 42, \"10\" = 84 }",
        );
        assert_eq!(
            compare_price(&m, "5 s: 42 credits; 10 s: 84 credits").code,
            Code::PriceAgrees
        );
        let drift = compare_price(&m, "5 s: 45 credits; 10 s: 90 credits");
        assert_eq!(
            (drift.severity, drift.code),
            (Severity::Warning, Code::PriceDrift)
        );
        assert!(!drift.code.takes_off_sale());
        assert_eq!(
            compare_price(&m, "$0.21 per video").code,
            Code::PriceUnparsed
        );
    }
}
