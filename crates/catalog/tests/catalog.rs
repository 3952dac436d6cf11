//! The shipped catalog against the facts in kie-models.md, and the loader's
//! refusal of broken catalogs.

use std::collections::{BTreeMap, BTreeSet};

use kiebot_catalog::{LoadError, load, load_default, load_path, parse};
use kiebot_domain::catalog::{Ask, FieldKind, Model, Shape};
use kiebot_domain::pricing::{Pricing, price_list};
use kiebot_domain::{Catalog, Family, Money, ParamValue, Params};
use serde_json::Value;

/// At least this many models are sold (issue: KIE's market list, ~90).
const MIN_SOLD: usize = 90;

/// Listed as "coming soon" and never sold: families with an API of their own
/// that the pipeline does not speak yet.
const COMING_SOON_IDS: [&str; 4] = [
    "openai/4o-image",
    "flux/kontext",
    "runway/gen-4",
    "midjourney/api",
];

/// Sold at zero; every other sold model must cost something.
const FREE_TOOLS: [&str; 2] = ["recraft/remove-background", "recraft/crisp-upscale"];

/// The original's internal upload names, which KIE does not know.
const INTERNAL_NAMES: [&str; 5] = [
    "image_input",
    "video_input",
    "audio_input",
    "mask_input",
    "reference_image_input",
];

/// KIE's own Nano Banana Pro and 2 schemas call their image list
/// `image_input`: where an internal name is also the KIE name.
const KIE_NAMES_THAT_LOOK_INTERNAL: [(&str, &str); 2] = [
    ("nano-banana-pro", "image_input"),
    ("nano-banana-2", "image_input"),
];

const SAMPLE_PROMPT: &str = "a red fox in fresh snow at dawn";

fn catalog() -> Catalog {
    load_default().expect("the shipped catalog loads")
}

fn active(c: &Catalog) -> impl Iterator<Item = &Model> {
    c.models().iter().filter(|m| m.active)
}

/// Defaults plus what the user must supply: a prompt for required text without
/// a default and sample URLs for every upload (optional ones too, so their KIE
/// names show up in the request).
fn sample_inputs(m: &Model) -> BTreeMap<String, ParamValue> {
    let mut given = BTreeMap::new();
    for f in &m.fields {
        match &f.kind {
            FieldKind::Upload { min_items, .. } => {
                let urls = (0..(*min_items).max(1))
                    .map(|i| format!("https://files.example.com/{}/{i}", f.name))
                    .collect();
                given.insert(f.name.clone(), ParamValue::Files(urls));
            }
            FieldKind::String { .. } if f.required && f.default.is_none() => {
                given.insert(f.name.clone(), ParamValue::Text(SAMPLE_PROMPT.into()));
            }
            _ => {}
        }
    }
    given
}

/// The model's fields as KIE receives them: under `input` for the market,
/// beside `model` at the top level for Veo and Suno.
fn request_input(m: &Model) -> serde_json::Map<String, Value> {
    let params = Params::validate(m, &sample_inputs(m))
        .unwrap_or_else(|e| panic!("{}: sample inputs rejected: {e}", m.id));
    let body = params.kie_request(m);
    assert_eq!(body["model"], Value::String(m.kie_model().to_owned()));
    match m.family {
        Family::Market => body["input"]
            .as_object()
            .unwrap_or_else(|| panic!("{}: input is not an object", m.id))
            .clone(),
        Family::Veo | Family::Suno => {
            let mut top = body
                .as_object()
                .unwrap_or_else(|| panic!("{}: the body is not an object", m.id))
                .clone();
            top.remove("model");
            top
        }
    }
}

#[test]
fn at_least_ninety_models_are_sold_and_the_rest_are_coming_soon() {
    let c = catalog();
    let sold = c.models().iter().filter(|m| m.is_sold()).count();
    assert!(sold >= MIN_SOLD, "{sold} sold");
    assert!(active(&c).all(Model::is_sold));
    let soon: Vec<&Model> = c.models().iter().filter(|m| !m.active).collect();
    let soon_ids: Vec<&str> = soon.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(soon_ids, COMING_SOON_IDS);
    for m in soon {
        assert!(!m.is_sold(), "{} is coming soon but sold", m.id);
        assert!(m.price.is_none(), "{} is coming soon but priced", m.id);
    }
}

#[test]
fn the_default_catalog_is_what_load_returns_without_a_path() {
    let a = load(None).expect("loads");
    let b = catalog();
    let ids = |c: &Catalog| {
        c.models()
            .iter()
            .map(|m| m.id.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&a), ids(&b));
}

#[test]
fn every_default_with_a_prompt_and_uploads_is_a_valid_request() {
    let c = catalog();
    for m in active(&c) {
        let params = Params::validate(m, &sample_inputs(m))
            .unwrap_or_else(|e| panic!("{}: defaults rejected: {e}", m.id));
        // Every field with a default ends up in the request.
        for f in m.fields.iter().filter(|f| f.default.is_some()) {
            assert!(params.get(&f.name).is_some(), "{}: {} lost", m.id, f.name);
        }
    }
}

#[test]
fn every_sold_model_costs_something_for_its_defaults_and_every_price_combination() {
    let c = catalog();
    let pricing = Pricing::default();
    for m in active(&c) {
        let free = FREE_TOOLS.contains(&m.id.as_str());
        let default = pricing
            .price(m, &Params::defaults_for_pricing(m))
            .unwrap_or_else(|e| panic!("{}: defaults not priced: {e}", m.id));
        // The price shown on the menu is the price of what is submitted.
        let submitted = Params::validate(m, &sample_inputs(m)).expect("valid");
        assert_eq!(pricing.price(m, &submitted), Ok(default), "{}", m.id);
        let list = price_list(&pricing, m);
        assert!(!list.is_empty(), "{}: empty price list", m.id);
        for (key, price) in &list {
            let price = price
                .as_ref()
                .unwrap_or_else(|e| panic!("{} [{key}]: not priced: {e}", m.id));
            if free {
                assert_eq!(*price, Money::ZERO, "{} [{key}]", m.id);
            } else {
                assert!(price.minor() > 0, "{} [{key}] is free", m.id);
            }
        }
        if free {
            assert_eq!(default, Money::ZERO, "{}", m.id);
        } else {
            assert!(default.minor() > 0, "{} is free by default", m.id);
        }
        // A table covers exactly the combinations the listing prices.
        let rule = m.price.as_ref().expect("sold models are priced");
        if !rule.table.is_empty() {
            let table: BTreeSet<&String> = rule.table.keys().collect();
            let listed: BTreeSet<&String> = list.keys().collect();
            assert_eq!(table, listed, "{}", m.id);
        }
    }
}

#[test]
fn worked_price_examples_match_the_original_rounded_up_to_the_kopeck() {
    let c = catalog();
    let pricing = Pricing::default();
    let price = |id: &str, pairs: &[(&str, ParamValue)]| {
        let m = c.get(id).unwrap_or_else(|| panic!("{id} missing"));
        let overrides = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        pricing
            .price(m, &Params::for_pricing(m, &overrides))
            .expect("priced")
            .minor()
    };
    let choice = |v: &str| ParamValue::Choice(v.into());
    // 0.8 credits -> 0.62856 RUB
    assert_eq!(price("z-image", &[]), 63);
    // 18 credits -> 14.1426; 24 -> 18.8568
    assert_eq!(price("nano-banana-pro", &[]), 1415);
    assert_eq!(
        price("nano-banana-pro", &[("resolution", choice("4K"))]),
        1886
    );
    // 6.5 credits -> 5.10705
    assert_eq!(price("seedream/4.5-text-to-image", &[]), 511);
    assert_eq!(price("seedream/4.5-edit", &[]), 511);
    // 55 credits -> 43.2135; 110 -> 86.427; 220 -> 172.854
    assert_eq!(price("kling-2.6/text-to-video", &[]), 4322);
    assert_eq!(
        price("kling-2.6/text-to-video", &[("duration", choice("10"))]),
        8643
    );
    assert_eq!(
        price(
            "kling-2.6/text-to-video",
            &[
                ("duration", choice("10")),
                ("sound", ParamValue::Bool(true))
            ]
        ),
        17286
    );
}

#[test]
fn per_second_per_image_and_per_megapixel_prices_follow_their_drivers() {
    let c = catalog();
    let credits = |id: &str, pairs: &[(&str, ParamValue)]| {
        let m = c.get(id).unwrap_or_else(|| panic!("{id} missing"));
        let overrides = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        Pricing::default()
            .credits(m, &Params::for_pricing(m, &overrides))
            .expect("priced")
            .milli_ceil()
    };
    let choice = |v: &str| ParamValue::Choice(v.into());
    // 12/s x 5 s at 720p; 20/s x 10 s at 1080p.
    assert_eq!(credits("wan/2-5-text-to-video", &[]), 60_000);
    assert_eq!(
        credits(
            "wan/2-5-text-to-video",
            &[("resolution", choice("1080p")), ("duration", choice("10"))]
        ),
        200_000
    );
    // 12/s x 80 frames / 16 fps.
    assert_eq!(credits("wan/2-2-a14b-speech-to-video-turbo", &[]), 60_000);
    assert_eq!(
        credits(
            "wan/2-2-a14b-speech-to-video-turbo",
            &[
                ("resolution", choice("720p")),
                ("num_frames", ParamValue::Int(120))
            ]
        ),
        180_000
    );
    // Per-second models without a duration assume 5 s: Topaz video at 8/s
    // (factors 1 and 2) or 14/s (4).
    assert_eq!(credits("topaz/video-upscale", &[]), 40_000);
    assert_eq!(
        credits("topaz/video-upscale", &[("upscale_factor", choice("4"))]),
        70_000
    );
    assert_eq!(credits("kling/ai-avatar-standard", &[]), 40_000);
    assert_eq!(
        credits("wan/2-2-animate-move", &[("resolution", choice("580p"))]),
        47_500
    );
    // Hailuo: 57 flat for Pro, 5/s x 10 s at 768P for Standard.
    assert_eq!(credits("hailuo/02-image-to-video-pro", &[]), 57_000);
    assert_eq!(credits("hailuo/02-image-to-video-standard", &[]), 50_000);
    // Per image, where the model has a count; billed per request where KIE
    // dropped it.
    assert_eq!(
        credits("ideogram/v3-remix", &[("num_images", choice("4"))]),
        28_000
    );
    assert_eq!(credits("ideogram/v3-text-to-image", &[]), 7_000);
    assert!(
        c.get("google/imagen4")
            .unwrap()
            .field("num_images")
            .is_none()
    );
    assert_eq!(
        credits(
            "bytedance/seedream-v4-text-to-image",
            &[("max_images", ParamValue::Int(6))]
        ),
        30_000
    );
    // Per megapixel: 1024x1024 = 1.048576 MP.
    assert_eq!(credits("qwen/text-to-image", &[]), 4_195);
    assert_eq!(credits("qwen/image-edit", &[]), 4_719);
    assert_eq!(
        credits(
            "qwen/image-edit",
            &[
                ("image_size", choice("square_hd")),
                ("num_images", choice("2"))
            ]
        ),
        12_584
    );
    // Topaz image by output size.
    assert_eq!(
        credits("topaz/image-upscale", &[("upscale_factor", choice("8"))]),
        40_000
    );
}

#[test]
fn no_request_uses_the_originals_internal_upload_names() {
    let c = catalog();
    for m in active(&c) {
        for key in request_input(m).keys() {
            let allowed = KIE_NAMES_THAT_LOOK_INTERNAL.contains(&(m.id.as_str(), key.as_str()));
            assert!(
                allowed || !INTERNAL_NAMES.contains(&key.as_str()),
                "{}: sends internal name {key}",
                m.id
            );
        }
    }
}

#[test]
fn single_uploads_are_sent_as_one_url_and_list_uploads_as_arrays() {
    let c = catalog();
    for m in active(&c) {
        let input = request_input(m);
        for f in m.fields.iter() {
            let FieldKind::Upload { shape, .. } = &f.kind else {
                continue;
            };
            let sent = &input[f.kie_name()];
            match shape {
                Shape::Single => assert!(sent.is_string(), "{} {}: {sent}", m.id, f.name),
                Shape::List => assert!(sent.is_array(), "{} {}: {sent}", m.id, f.name),
            }
        }
    }
}

#[test]
fn the_wizard_asks_the_prompt_or_the_upload_first() {
    let c = catalog();
    for m in active(&c) {
        let first = m.wizard_fields().next().expect("something to ask");
        if m.field("prompt").is_none() {
            assert!(first.is_upload(), "{} starts with {}", m.id, first.name);
        } else {
            assert!(
                first.name == "prompt" || first.is_upload(),
                "{} starts with {}",
                m.id,
                first.name
            );
        }
        for f in &m.fields {
            if f.required {
                assert_eq!(f.ask(), Ask::Wizard, "{} {} is required", m.id, f.name);
            }
            if matches!(f.kind, FieldKind::Enum { .. } | FieldKind::Boolean) {
                assert!(f.label.is_some(), "{} {} has no label", m.id, f.name);
            }
        }
    }
}

#[test]
fn instant_tools_and_the_free_quota_are_the_originals() {
    let c = catalog();
    let instant: BTreeSet<&str> = active(&c)
        .filter(|m| m.instant)
        .map(|m| m.id.as_str())
        .collect();
    assert_eq!(
        instant,
        BTreeSet::from([
            "recraft/remove-background",
            "recraft/crisp-upscale",
            "topaz/image-upscale",
            "ideogram/v3-reframe",
        ])
    );
    let quota: Vec<(&str, u32)> = c
        .models()
        .iter()
        .filter(|m| m.free_daily > 0)
        .map(|m| (m.id.as_str(), m.free_daily))
        .collect();
    assert_eq!(quota, [("z-image", 5)]);
}

// ---------------------------------------------------------------------------
// Broken catalogs.
// ---------------------------------------------------------------------------

const GOOD: &str = r#"
[[model]]
id = "test/broken"
category = "image"
types = ["text-to-image"]
name = { en = "Test", ru = "Тест" }
description = { en = "A test model.", ru = "Тестовая модель." }
output = "image"
deadline_secs = 600

[[model.fields]]
name = "prompt"
type = "string"
max_len = 100
required = true

[[model.fields]]
name = "aspect_ratio"
type = "enum"
values = ["1:1", "16:9"]
default = "1:1"

[model.price]
credits = 1
"#;

fn rejected(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn edited(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "{from:?} not in the sample");
    GOOD.replacen(from, to, 1)
}

fn assert_names(err: &str, parts: &[&str]) {
    for p in parts {
        assert!(err.contains(p), "{err:?} does not mention {p:?}");
    }
}

#[test]
fn the_sample_catalog_is_accepted() {
    assert_eq!(parse(GOOD).expect("valid").models().len(), 1);
}

#[test]
fn an_unknown_field_type_is_rejected_naming_the_model_and_field() {
    let err = rejected(&edited(r#"type = "enum""#, r#"type = "colour""#));
    assert_names(&err, &["test/broken", "aspect_ratio", "colour"]);
}

#[test]
fn an_enum_default_outside_its_enum_is_rejected_naming_the_model_and_field() {
    let err = rejected(&edited(r#"default = "1:1""#, r#"default = "4:3""#));
    assert_names(&err, &["test/broken", "aspect_ratio", "4:3"]);
}

#[test]
fn a_negative_price_is_rejected_naming_the_model_and_field() {
    let err = rejected(&edited("credits = 1", "credits = -1"));
    assert_names(&err, &["test/broken", "credits", "negative"]);
}

#[test]
fn a_price_keyed_by_an_unknown_field_is_rejected_naming_the_model_and_field() {
    let err = rejected(&edited("credits = 1", "credits = 1\nby = [\"resolution\"]"));
    assert_names(&err, &["test/broken", "resolution", "unknown field"]);
}

#[test]
fn a_duplicate_model_id_is_rejected_naming_the_model() {
    let err = rejected(&format!("{GOOD}\n{GOOD}"));
    assert_names(&err, &["test/broken", "duplicate"]);
}

#[test]
fn a_max_len_on_an_enum_is_rejected_naming_the_model_and_field() {
    let err = rejected(&edited(
        r#"values = ["1:1", "16:9"]"#,
        "values = [\"1:1\", \"16:9\"]\nmax_len = 10",
    ));
    assert_names(&err, &["test/broken", "aspect_ratio", "max_len"]);
}

#[test]
fn a_model_without_an_id_is_named_by_its_position() {
    let text = format!("{GOOD}\n{}", GOOD.replace("id = \"test/broken\"\n", ""));
    let err = rejected(&text);
    assert_names(&err, &["#2", "id"]);
}

#[test]
fn text_that_is_not_a_catalog_is_rejected() {
    assert_names(&rejected("[[model]\n"), &["does not parse"]);
    assert_names(&rejected("title = \"x\"\n"), &["title"]);
    assert_names(&rejected("model = 1\n"), &["[[model]]"]);
}

#[test]
fn an_override_file_is_loaded_and_a_missing_one_names_its_path() {
    let dir = std::env::temp_dir().join(format!("kiebot-catalog-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let good = dir.join("models.toml");
    std::fs::write(&good, GOOD).expect("write");
    let c = load(Some(&good)).expect("override loads");
    assert_eq!(c.models().len(), 1);
    assert!(c.get("test/broken").is_some());

    let missing = dir.join("missing.toml");
    let err = load_path(&missing).expect_err("missing file");
    assert!(matches!(err, LoadError::Io { .. }));
    assert_names(&err.to_string(), &["missing.toml"]);

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, GOOD.replace("credits = 1", "credits = -1")).expect("write");
    assert!(matches!(load_path(&bad), Err(LoadError::Catalog(_))));
    std::fs::remove_dir_all(&dir).ok();
}
