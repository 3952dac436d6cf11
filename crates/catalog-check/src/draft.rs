//! `kiebot catalog import`: a catalog entry drafted from KIE's schema, so that
//! adding a model is choosing wizard fields, writing labels and a price table.

use std::fmt::Write as _;

use kiebot_domain::Family;
use serde_json::Value;

use crate::schema::{KieSchema, Prop, PropType};

/// What KIE's listing says about the model, when it lists it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Listing {
    /// KIE's `model` string.
    pub model: String,
    /// The provider (`google`, `kling`...).
    pub provider: Option<String>,
    /// KIE's task types (`text-to-image`...).
    pub task_types: Vec<String>,
    /// KIE's price text.
    pub pricing_desc: Option<String>,
}

/// A TOML `[[model]]` entry for `model` built from its schema: every KIE field
/// with its type, enum, limits and default, required ones as wizard steps and
/// the rest as advanced options; uploads recognised by their names. Labels,
/// descriptions and the price table are left for a human, marked `TODO`.
pub fn draft_entry(
    model: &str,
    family: Family,
    listing: Option<&Listing>,
    schema: &KieSchema,
    recorded: &str,
) -> String {
    let mut out = String::new();
    let types: Vec<&str> = listing
        .map(|l| l.task_types.iter().map(String::as_str).collect())
        .unwrap_or_default();
    let output = guess_output(model, &types, schema);
    let category = match output {
        "image" => "image",
        "video" => "video",
        "text" => "speech-to-text",
        _ => "audio",
    };
    let _ = writeln!(out, "[[model]]");
    let _ = writeln!(out, "id = {}", quoted(model));
    if family != Family::Market {
        let _ = writeln!(out, "family = {}", quoted(family.as_str()));
    }
    let _ = writeln!(out, "category = {}", quoted(category));
    let types_line = if types.is_empty() {
        "[] # TODO: generation types".to_owned()
    } else {
        format!(
            "[{}]",
            types
                .iter()
                .map(|t| quoted(t))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let _ = writeln!(out, "types = {types_line}");
    let _ = writeln!(out, "name = {{ en = \"TODO\", ru = \"TODO\" }}");
    let _ = writeln!(out, "description = {{ en = \"TODO\", ru = \"TODO\" }}");
    let _ = writeln!(out, "output = {}", quoted(output));
    let deadline = if output == "image" { 600 } else { 1800 };
    let _ = writeln!(out, "deadline_secs = {deadline}");
    let price_src = listing
        .and_then(|l| l.pricing_desc.as_deref())
        .map_or_else(|| "TODO".to_owned(), |p| format!("KIE pricingDesc: {p}"));
    let _ = writeln!(
        out,
        "source = {{ schema = {}, price = {} }}",
        quoted(&format!("KIE schema API, {recorded}")),
        quoted(&price_src)
    );
    // Required fields first, in KIE's name order, then the optional ones.
    let mut names: Vec<(&String, &Prop)> =
        schema.props.iter().filter(|(_, p)| !p.deprecated).collect();
    names.sort_by_key(|(n, _)| (!schema.required.contains(*n), n.as_str() != "prompt"));
    for (name, prop) in names {
        out.push('\n');
        field_entry(&mut out, name, prop, schema.required.contains(name));
    }
    out.push('\n');
    if let Some(p) = listing.and_then(|l| l.pricing_desc.as_deref()) {
        let _ = writeln!(out, "# KIE: {}", p.trim());
    }
    let amounts = crate::compare::credit_amounts(
        listing
            .and_then(|l| l.pricing_desc.as_deref())
            .unwrap_or(""),
    );
    let _ = writeln!(out, "[model.price]");
    match amounts.iter().next() {
        Some(m) if amounts.len() == 1 => {
            let _ = writeln!(out, "credits = {}", kiebot_domain::Credits::from_milli(*m));
        }
        _ => {
            let _ = writeln!(
                out,
                "credits = 0 # TODO: the price table (by = [...], table = {{...}})"
            );
        }
    }
    out
}

fn field_entry(out: &mut String, kie: &str, prop: &Prop, required: bool) {
    let upload = upload_media(kie, prop);
    let name = match upload {
        Some((media, list)) => short_upload_name(kie, media, list),
        None => kie.to_ascii_lowercase().replace('-', "_"),
    };
    let _ = writeln!(out, "[[model.fields]]");
    let _ = writeln!(out, "name = {}", quoted(&name));
    if name != kie {
        let _ = writeln!(out, "kie = {}", quoted(kie));
    }
    match (upload, &prop.ty) {
        (Some((media, list)), _) => {
            let _ = writeln!(out, "type = \"upload\"");
            let _ = writeln!(out, "media = {}", quoted(media));
            let _ = writeln!(
                out,
                "shape = {}",
                quoted(if list { "list" } else { "single" })
            );
            if list {
                let _ = writeln!(out, "max_items = {}", prop.max_items.unwrap_or(1));
            }
        }
        (None, _) if prop.enum_values.is_some() => {
            let values = prop.enum_values.clone().unwrap_or_default();
            let _ = writeln!(out, "type = \"enum\"");
            let _ = writeln!(
                out,
                "values = [{}]",
                values
                    .iter()
                    .map(|v| quoted(v))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if matches!(prop.ty, PropType::Integer | PropType::Number) {
                let _ = writeln!(out, "send_as = \"integer\"");
            }
            if let Some(d) = &prop.default {
                let text = match d {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let _ = writeln!(out, "default = {}", quoted(&text));
            }
        }
        (None, PropType::String) => {
            let _ = writeln!(out, "type = \"string\"");
            let _ = writeln!(out, "max_len = {}", prop.max_length.unwrap_or(1000));
            default_line(out, prop);
        }
        (None, PropType::Boolean) => {
            let _ = writeln!(out, "type = \"boolean\"");
            default_line(out, prop);
        }
        (None, PropType::Integer) => {
            let _ = writeln!(out, "type = \"integer\"");
            let _ = writeln!(out, "min = {}", prop.minimum.map_or(0, |x| x as i64));
            let _ = writeln!(
                out,
                "max = {}",
                prop.maximum.map_or(2_147_483_647, |x| x as i64)
            );
            default_line(out, prop);
        }
        (None, PropType::Number) => {
            let _ = writeln!(out, "type = \"number\"");
            let _ = writeln!(out, "min = {}", prop.minimum.unwrap_or(0.0));
            let _ = writeln!(out, "max = {}", prop.maximum.unwrap_or(1.0));
            default_line(out, prop);
        }
        (None, other) => {
            let _ = writeln!(
                out,
                "type = \"string\" # TODO: KIE's type is {}",
                other.name()
            );
            let _ = writeln!(out, "max_len = 1000");
        }
    }
    let _ = writeln!(out, "required = {required}");
    let _ = writeln!(
        out,
        "ask = {}",
        quoted(if required { "wizard" } else { "advanced" })
    );
    let _ = writeln!(
        out,
        "label = {{ en = {}, ru = \"TODO\" }}",
        quoted(&humanise(&name))
    );
}

fn default_line(out: &mut String, prop: &Prop) {
    if let Some(d) = &prop.default {
        let _ = writeln!(out, "default = {d}");
    }
}

/// Whether a property is a file URL (or a list of them), and of what media:
/// KIE names them `image_url`, `image_urls`, `video_url`, `audio_url`,
/// `mask_url`, `input_urls`, `imageUrls`...
fn upload_media(kie: &str, prop: &Prop) -> Option<(&'static str, bool)> {
    let lower = kie.to_ascii_lowercase();
    let is_url = lower.ends_with("url") || lower.ends_with("urls") || lower.ends_with("_input");
    if !is_url || lower.contains("callback") {
        return None;
    }
    let list = matches!(prop.ty, PropType::Array(_));
    if !list && prop.ty != PropType::String {
        return None;
    }
    let media = if lower.contains("video") {
        "video"
    } else if lower.contains("audio") || lower.contains("voice") {
        "audio"
    } else {
        "image"
    };
    Some((media, list))
}

fn short_upload_name(kie: &str, media: &str, list: bool) -> String {
    let lower = kie.to_ascii_lowercase();
    let base = if lower.contains("mask") {
        "mask"
    } else if lower.contains("tail") || lower.contains("end") || lower.contains("last") {
        "end_image"
    } else if lower.contains("reference") {
        "reference"
    } else {
        media
    };
    if list {
        format!("{base}s")
    } else {
        base.to_owned()
    }
}

fn guess_output(model: &str, types: &[&str], schema: &KieSchema) -> &'static str {
    let m = model.to_ascii_lowercase();
    let t = types.join(" ");
    if t.contains("video") || m.contains("video") || schema.props.contains_key("duration") {
        "video"
    } else if t.contains("speech-to-text") || m.contains("speech-to-text") {
        "text"
    } else if t.contains("audio") || t.contains("speech") || t.contains("music") {
        "audio"
    } else {
        "image"
    }
}

fn humanise(name: &str) -> String {
    let s = name.replace('_', " ");
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::input_schema;
    use serde_json::json;

    #[test]
    fn a_draft_parses_after_its_todos_are_filled() {
        let doc = json!({"paths": {"/api/v1/jobs/createTask": {"post": {"requestBody": {"content": {
        "application/json": {"schema": {"properties": {"input": {"required": ["prompt", "image_urls"], "properties": {
            "prompt": {"type": "string", "maxLength": 2500},
            "image_urls": {"type": "array", "items": {"type": "string"}, "maxItems": 1},
            "duration": {"type": "string", "enum": ["5", "10"], "default": "5"},
            "cfg_scale": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5},
            "sound": {"type": "boolean", "default": false},
            "seed": {"type": "integer"}
        }}}}}}}}}}});
        let schema = input_schema(&doc, Family::Market).unwrap();
        let listing = Listing {
            model: "kling/x".into(),
            provider: Some("kling".into()),
            task_types: vec!["image-to-video".into()],
            pricing_desc: Some("5 s: 42 credits; 10 s: 84 credits".into()),
        };
        let text = draft_entry(
            "kling/x",
            Family::Market,
            Some(&listing),
            &schema,
            "2026-12-04",
        );
        assert!(
            text.contains("name = \"images\"\nkie = \"image_urls\"\ntype = \"upload\""),
            "{text}"
        );
        assert!(text.contains("output = \"video\""));
        let filled = text
            .replace(
                "credits = 0 # TODO: the price table (by = [...], table = {...})",
                "credits = 42",
            )
            .replace("TODO", "x");
        let c = kiebot_catalog::parse(&filled).unwrap_or_else(|e| panic!("{e}\n{filled}"));
        let m = &c.models()[0];
        assert_eq!(m.fields[0].name, "prompt");
        assert_eq!(m.fields[1].name, "images");
        assert!(m.fields.iter().any(|f| f.name == "cfg_scale"));
        // What was drafted from the schema is exactly what the schema allows.
        let findings = crate::compare(m, &schema);
        assert!(
            findings
                .iter()
                .all(|f| f.severity != crate::Severity::Error),
            "{findings:?}"
        );
    }
}
