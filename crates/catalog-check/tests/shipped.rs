//! The shipped catalog against KIE's catalogue as recorded in
//! `crates/testkit/fixtures/kie-catalog`: nothing is sold that was not checked
//! against a source.

use kiebot_catalog::load_default;
use kiebot_catalog_check::{Code, Severity, compare, compare_price, input_schema};
use kiebot_domain::{Family, Model};
use kiebot_testkit::kie_catalog::{RecordedModel, recorded};

/// Models whose price is derived from KIE's by a rule the price text cannot
/// show (so the text is compared by a human), with the rule.
const DERIVED_PRICES: &[(&str, &str)] = &[
    (
        "qwen/text-to-image",
        "4 credits per megapixel, one row per image_size preset",
    ),
    (
        "qwen/image-edit",
        "6 credits per megapixel, one row per image_size preset",
    ),
];

fn endpoint(family: Family) -> &'static str {
    match family {
        Family::Market => "/api/v1/jobs/createTask",
        Family::Veo => "/api/v1/veo/generate",
        Family::Suno => "/api/v1/generate",
    }
}

fn fixture<'a>(all: &'a [RecordedModel], m: &Model) -> Option<&'a RecordedModel> {
    all.iter()
        .find(|r| r.model == m.kie_model() && r.endpoint == endpoint(m.family))
}

fn sold() -> Vec<Model> {
    load_default()
        .expect("the shipped catalog loads")
        .models()
        .iter()
        .filter(|m| m.is_sold())
        .cloned()
        .collect()
}

#[test]
fn every_sold_model_matches_its_recorded_kie_schema() {
    let all = recorded();
    let mut problems = Vec::new();
    for m in sold() {
        let Some(r) = fixture(&all, &m) else {
            problems.push(format!(
                "{}: no recorded KIE schema for {:?}",
                m.id,
                m.kie_model()
            ));
            continue;
        };
        let schema = match input_schema(&r.openapi(), m.family) {
            Ok(s) => s,
            Err(e) => {
                problems.push(format!("{}: recorded schema unreadable: {e}", m.id));
                continue;
            }
        };
        for f in compare(&m, &schema) {
            if f.severity != Severity::Info {
                problems.push(f.to_string());
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_sold_price_agrees_with_kie_s_price_text() {
    let all = recorded();
    let mut problems = Vec::new();
    for m in sold() {
        let Some(r) = fixture(&all, &m) else { continue };
        let f = compare_price(&m, &r.pricing_desc);
        let derived = DERIVED_PRICES.iter().any(|(id, _)| *id == m.id.as_str());
        if f.code != Code::PriceAgrees && !derived {
            problems.push(f.to_string());
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_sold_model_names_the_source_of_its_fields_and_price() {
    for m in sold() {
        let source = m
            .source
            .as_ref()
            .unwrap_or_else(|| panic!("{} names no source", m.id));
        assert!(
            !source.schema.trim().is_empty(),
            "{}: no schema source",
            m.id
        );
        assert!(!source.price.trim().is_empty(), "{}: no price source", m.id);
    }
}

#[test]
fn every_recorded_model_is_sold_or_said_why_not() {
    // A fixture nobody sells is dead weight that hides a missing entry.
    let sold = sold();
    for r in recorded() {
        assert!(
            sold.iter()
                .any(|m| m.kie_model() == r.model && endpoint(m.family) == r.endpoint),
            "{} is recorded but not sold",
            r.model
        );
    }
}
