//! The wizard of every sold model, walked with defaults, ends in a pending
//! generation with the right price held and a Submit job queued.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::BTreeMap;

use common::{App, MP3, MP4, Options, PNG};
use kiebot_domain::{GenerationStatus, Money, ParamValue, Params, Pricing};

/// Walks the wizard that is open in `user`'s chat with defaults until the
/// generation starts; returns the transcript of step texts.
pub async fn walk_with_defaults(app: &mut App, user: i64) -> Vec<String> {
    let mut seen = vec![];
    for _ in 0..60 {
        let text = app.last_text(user);
        seen.push(text.clone());
        let labels: Vec<String> = app.buttons(user).into_iter().map(|(l, _)| l).collect();
        let has = |s: &str| labels.iter().any(|l| l.contains(s));
        if text.contains("has started") {
            return seen;
        }
        if text.contains("Check the parameters") {
            app.press(user, "Confirm").await;
        } else if has("Done") {
            app.press(user, "Done").await;
        } else if text.contains("Send the text") {
            app.send(user, "a red fox in the snow").await;
        } else if text.contains("Send an image") {
            app.tg.send_document(user, "pic.png", "image/png", PNG);
            app.pump().await;
        } else if text.contains("Send a video") {
            app.tg.send_document(user, "clip.mp4", "video/mp4", MP4);
            app.pump().await;
        } else if text.contains("Send audio") {
            app.tg.send_audio(user, "voice.mp3", "audio/mpeg", MP3);
            app.pump().await;
        } else if has("Keep the default") {
            app.press(user, "Keep the default").await;
        } else if has("⏭ Skip") {
            app.press(user, "⏭ Skip").await;
        } else if text.contains("Choose an option") || text.contains("Yes or no") {
            let first = app.buttons(user)[0].0.clone();
            app.press(user, &first).await;
        } else {
            panic!("stuck at {text:?} with buttons {labels:?}; transcript: {seen:#?}");
        }
    }
    panic!("the wizard did not finish: {seen:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wizard_of_every_sold_model_walked_with_defaults_holds_the_right_price_and_queues_a_submit()
 {
    let mut app = App::with(Options {
        max_active: 1000,
        ..Options::default()
    })
    .await;
    let user = 500;
    app.onboard(user).await;
    app.top_up(user, 10_000_000).await;
    let pricing = Pricing::default();
    let models: Vec<_> = app
        .catalog
        .models()
        .iter()
        .filter(|m| m.is_sold())
        .cloned()
        .collect();
    assert!(
        models.len() >= 50,
        "the catalog sells {} models",
        models.len()
    );
    let mut held = Money::ZERO;
    for (n, model) in models.iter().enumerate() {
        // From the main menu, through the type list, to the card.
        app.send(user, "/menu").await;
        let t = model.types[0];
        let type_data = kiebot_tg::callback::Cb::Type(t).encode();
        let menu = app.last(user);
        app.press_data(user, menu.message_id, &type_data).await;
        let list = app.last(user);
        let model_data = kiebot_tg::callback::Cb::Model(model.id.clone()).encode();
        assert!(
            common::buttons_of(&list)
                .iter()
                .any(|(_, d)| *d == model_data),
            "{} is not listed under {t:?}",
            model.id
        );
        app.press_data(user, list.message_id, &model_data).await;
        assert!(app.last_text(user).contains(model.name.en.as_str()));
        app.press(user, "Start").await;
        walk_with_defaults(&mut app, user).await;

        let gens = app.generations(user).await;
        assert_eq!(gens.len(), n + 1, "{}: one generation per walk", model.id);
        let g = gens
            .iter()
            .find(|g| g.model == model.id)
            .expect("generation of this model");
        assert_eq!(g.status, GenerationStatus::Pending);
        let values: BTreeMap<String, ParamValue> = serde_json::from_str(&g.params_json).unwrap();
        let params = Params::validate(model, &values).expect("stored params validate");
        let expected = if model.free_daily > 0 {
            Money::ZERO
        } else {
            pricing.price(model, &params).unwrap()
        };
        assert_eq!(g.price, expected, "{}", model.id);
        let request: serde_json::Value = serde_json::from_str(&g.request_json).unwrap();
        assert_eq!(request, params.kie_request(model), "{}", model.id);
        held = held.checked_add(expected).unwrap();
        assert_eq!(app.held(user).await, held, "{}: hold", model.id);
        assert_eq!(
            app.submit_depth().await,
            (n + 1) as u64,
            "{}: submit queued",
            model.id
        );
    }
}
