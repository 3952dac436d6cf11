//! What the buyer sees of KIE's own rules: models off sale, uploads KIE no
//! longer keeps, values KIE refuses together.

mod common;

use common::{App, PNG};
use kiebot_domain::{Money, UserId};
use kiebot_store::model_holds::HoldSource;
use kiebot_testkit::kie::Endpoint;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_off_sale_is_hidden_and_its_confirmation_refused_with_a_message() {
    let mut app = App::start().await;
    let user = 70;
    app.onboard(user).await;
    app.top_up(user, 100_000).await;
    // The user reaches the confirm screen while the model is sold...
    app.flux_confirm(user).await;
    // ...then the catalog check takes it off sale.
    app.store()
        .model_holds()
        .hold(
            "flux-2/pro-text-to-image",
            "KIE's schema has no field \"prompt\"",
            HoldSource::Check,
        )
        .await
        .unwrap();
    app.press(user, "Confirm").await;
    let told = app.last_text(user);
    assert!(told.contains("temporarily unavailable"), "{told}");
    assert!(told.contains("Nothing was charged"), "{told}");
    assert!(app.generations(user).await.is_empty());
    assert_eq!(app.held(user).await, Money::ZERO);
    // Its card and its wizard say the same; it is gone from the list.
    app.open_wizard(user, "flux-2/pro-text-to-image").await;
    assert!(app.last_text(user).contains("temporarily unavailable"));
    app.send(user, "/menu").await;
    let text_to_image = app
        .buttons(user)
        .into_iter()
        .find(|(l, _)| l.contains("Text to image"))
        .unwrap()
        .1;
    let menu = app.last(user).message_id;
    app.press_data(user, menu, &text_to_image).await;
    let listed: Vec<String> = app.buttons(user).into_iter().map(|(l, _)| l).collect();
    assert!(
        !listed.iter().any(|l| l.contains("Flux 2 Pro Text")),
        "{listed:?}"
    );
    assert!(listed.iter().any(|l| l.contains("Flux")), "{listed:?}");
    // Back on sale: confirmed as usual.
    app.store()
        .model_holds()
        .release("flux-2/pro-text-to-image")
        .await
        .unwrap();
    app.flux_confirm(user).await;
    app.press(user, "Confirm").await;
    assert_eq!(app.generations(user).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_older_than_kie_keeps_it_is_uploaded_again_before_confirming() {
    let mut app = App::start().await;
    let user = 71;
    app.onboard(user).await;
    app.top_up(user, 100_000).await;
    app.open_wizard(user, "google/nano-banana-edit").await;
    app.send(user, "make it blue").await;
    app.tg.send_photo(user, PNG);
    app.pump().await;
    for _ in 0..6 {
        if app.last_text(user).contains("Check the parameters") {
            break;
        }
        let labels: Vec<String> = app.buttons(user).into_iter().map(|(l, _)| l).collect();
        let next = if labels.iter().any(|l| l.contains("Done")) {
            "Done"
        } else {
            "Keep the default"
        };
        app.press(user, next).await;
    }
    assert!(app.last_text(user).contains("Check the parameters"));
    let uploads = app.kie.calls(Endpoint::StreamUpload);
    // A day passes (as the stored draft sees it).
    let store = app.store().clone();
    let now = kiebot_store::now_ms();
    let raw = store
        .dialogues()
        .load(UserId(user), now)
        .await
        .unwrap()
        .unwrap();
    let mut state: serde_json::Value = serde_json::from_str(&raw).unwrap();
    // The wizard's draft, tagged in place (`{"s": "wizard", ...}`).
    let draft = &mut state;
    let old_url = {
        let uploads = draft["uploads"].as_object_mut().unwrap();
        assert_eq!(uploads.len(), 1);
        let (url, up) = uploads.iter_mut().next().unwrap();
        up["at"] = serde_json::json!(now - 25 * 3600 * 1000);
        url.clone()
    };
    store
        .dialogues()
        .save(
            UserId(user),
            &state.to_string(),
            now,
            std::time::Duration::from_secs(3600),
        )
        .await
        .unwrap();
    app.press(user, "Confirm").await;
    let gens = app.generations(user).await;
    assert_eq!(gens.len(), 1, "{}", app.last_text(user));
    assert_eq!(app.kie.calls(Endpoint::StreamUpload), uploads + 1);
    let request: serde_json::Value = serde_json::from_str(&gens[0].request_json).unwrap();
    let sent = request["input"]["image_urls"][0].as_str().unwrap();
    assert_ne!(sent, old_url, "the fresh upload is what KIE gets");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_photos_with_the_same_name_stay_two_files_at_kie() {
    let mut app = App::start().await;
    let user = 72;
    app.onboard(user).await;
    app.open_wizard(user, "google/nano-banana-edit").await;
    app.send(user, "merge these").await;
    // Phones name photos alike; KIE overwrites a same-named upload.
    app.tg.send_document(user, "image.png", "image/png", PNG);
    app.pump().await;
    app.tg.send_document(
        user,
        "image.png",
        "image/png",
        &b"\x89PNG\r\n\x1a\nanother"[..],
    );
    app.pump().await;
    let files: Vec<String> = app.kie.tasks().iter().map(|t| t.id.clone()).collect();
    assert!(files.is_empty(), "nothing created yet");
    assert_eq!(app.kie.calls(Endpoint::StreamUpload), 2);
    let raw = app
        .store()
        .dialogues()
        .load(UserId(user), kiebot_store::now_ms())
        .await
        .unwrap()
        .unwrap();
    let state: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let draft = &state;
    let urls: Vec<&String> = draft["uploads"].as_object().unwrap().keys().collect();
    assert_eq!(urls.len(), 2, "two distinct files at KIE: {urls:?}");
}
