//! User journeys through the real handlers, against the fake Bot API, the
//! fake KIE, a fresh SQLite database (Postgres for one money path) and the
//! embedded queue.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::{BTreeSet, VecDeque};

use common::{App, Options, PNG, buttons_of};
use kiebot_domain::{GenerationId, Money, UserId};
use kiebot_testkit::telegram::{FakeUser, FileContent};
use kiebot_tg::callback::{Cb, DraftId, MAX_LEN};
use teloxide::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_contact_offers_the_languages_and_a_referral_link_records_the_inviter() {
    let mut app = App::start().await;
    app.onboard(10).await;
    app.send(11, "/start ref_10").await;
    assert!(app.last_text(11).contains("Choose your language"));
    app.press(11, "Русский").await;
    assert!(app.last_text(11).contains("Главное меню"));
    assert_eq!(
        app.store()
            .referrals()
            .inviter_of(UserId(11))
            .await
            .unwrap(),
        Some(UserId(10))
    );
    // The menu lists types with their model counts.
    assert!(
        app.buttons(11)
            .iter()
            .any(|(l, _)| l.contains("Текст → изображение ("))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_button_the_bot_shows_can_be_pressed_and_gets_an_answer() {
    let mut app = App::start().await;
    let user = 20;
    app.onboard(user).await;
    app.top_up(user, 100_000).await;
    let start = app.last(user);
    let mut queue: VecDeque<(i32, String)> = buttons_of(&start)
        .into_iter()
        .map(|(_, d)| (start.message_id, d))
        .collect();
    let mut seen: BTreeSet<String> = queue.iter().map(|(_, d)| d.clone()).collect();
    let mut dead_ends = vec![];
    let mut presses = 0;
    while let Some((mid, data)) = queue.pop_front() {
        assert!(data.len() <= MAX_LEN, "{data}");
        // Confirming would spend; pressed separately below.
        if data.starts_with("1:ok:") {
            continue;
        }
        presses += 1;
        if presses > 400 {
            break;
        }
        app.press_data(user, mid, &data).await;
        let last = app.last(user);
        let buttons = buttons_of(&last);
        let invoice = app
            .tg
            .sent()
            .last()
            .is_some_and(|c| c.method == "sendInvoice");
        if buttons.is_empty() && !invoice {
            dead_ends.push((data.clone(), last.text.clone()));
        }
        for (_, d) in buttons {
            if seen.insert(d.clone()) {
                queue.push_back((last.message_id, d));
            }
        }
    }
    assert!(
        dead_ends.is_empty(),
        "screens without a way on: {dead_ends:#?}"
    );
    assert!(
        seen.len() > 60,
        "only {} distinct buttons reached",
        seen.len()
    );
    // Every press was answered (press_data checks), including stale ones.
    let answered = app.tg.answered_callbacks().len();
    assert!(
        answered >= presses.min(400),
        "{answered} answers for {presses} presses"
    );
}

#[test]
fn callback_data_fits_64_bytes_for_every_model_field_and_value() {
    let catalog = kiebot_catalog::load_default().unwrap();
    let d = DraftId(u64::MAX);
    for m in catalog.models() {
        for cb in [Cb::Model(m.id.clone()), Cb::Start(m.id.clone())] {
            assert!(cb.encode().len() <= MAX_LEN, "{}", cb.encode());
        }
        for (fi, f) in m.fields.iter().enumerate() {
            let n = match &f.kind {
                kiebot_domain::FieldKind::Enum { values, .. } => values.len(),
                _ => 2,
            };
            for vi in 0..n {
                let cb = Cb::Pick {
                    draft: d,
                    field: u8::try_from(fi).unwrap(),
                    value: u8::try_from(vi).unwrap(),
                };
                assert!(cb.encode().len() <= MAX_LEN);
                assert_eq!(Cb::parse(&cb.encode()), Some(cb));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insufficient_balance_shows_a_top_up_button_and_holds_nothing() {
    let mut app = App::start().await;
    let user = 30;
    app.onboard(user).await;
    app.flux_confirm(user).await;
    app.press(user, "Confirm").await;
    assert!(
        app.last_text(user).contains("Not enough balance"),
        "{}",
        app.last_text(user)
    );
    assert!(
        app.buttons(user)
            .iter()
            .any(|(l, d)| l.contains("Top up") && d == "1:top")
    );
    assert_eq!(app.held(user).await, Money::ZERO);
    assert!(app.generations(user).await.is_empty());
    assert_eq!(app.submit_depth().await, 0);
    // After a top-up the same confirm button works.
    app.top_up(user, 100_000).await;
    let confirm = app
        .tg
        .messages_to(user)
        .into_iter()
        .rev()
        .find(|m| {
            m.text
                .as_deref()
                .is_some_and(|t| t.contains("Check the parameters"))
        })
        .unwrap();
    let data = buttons_of(&confirm)
        .into_iter()
        .find(|(l, _)| l.contains("Confirm"))
        .unwrap()
        .1;
    app.press_data(user, confirm.message_id, &data).await;
    assert_eq!(app.generations(user).await.len(), 1);
}

async fn double_tap(app: &mut App) {
    let user = 40;
    app.onboard(user).await;
    app.top_up(user, 100_000).await;
    app.flux_confirm(user).await;
    let msg = app.last(user);
    let data = buttons_of(&msg)
        .into_iter()
        .find(|(l, _)| l.contains("Confirm"))
        .unwrap()
        .1;
    // Two taps arrive together and are handled concurrently.
    app.tg.press_button(user, msg.message_id, &data);
    app.tg.press_button(user, msg.message_id, &data);
    let updates = app.deps.bot.get_updates().timeout(0).await.unwrap();
    assert_eq!(updates.len(), 2);
    let (a, b) = (updates[0].clone(), updates[1].clone());
    tokio::join!(
        kiebot_bot::handle_update(&app.deps, a),
        kiebot_bot::handle_update(&app.deps, b)
    );
    // And a third, later.
    app.pump().await;
    app.press_data(user, msg.message_id, &data).await;
    let gens = app.generations(user).await;
    assert_eq!(gens.len(), 1, "one generation for one draft");
    assert_eq!(app.held(user).await, gens[0].price);
    assert!(gens[0].price.is_positive());
    assert!(
        app.last_text(user).contains("already started"),
        "{}",
        app.last_text(user)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_tap_on_confirm_creates_one_generation_and_one_hold() {
    let mut app = App::start().await;
    double_tap(&mut app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_tap_on_confirm_creates_one_generation_and_one_hold_on_postgres() {
    let mut app = App::with(Options {
        postgres: true,
        ..Options::default()
    })
    .await;
    double_tap(&mut app).await;
    // The payment path on Postgres too.
    let user = FakeUser::new(41);
    app.onboard(41).await;
    app.tg
        .successful_payment(&user, "v1:41:100:00000000000000aa", "charge-pg", 100);
    app.tg
        .successful_payment(&user, "v1:41:100:00000000000000aa", "charge-pg", 100);
    app.pump().await;
    assert_eq!(app.available(41).await, Money::from_minor(15_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sixth_concurrent_generation_is_refused() {
    let mut app = App::start().await;
    let user = 50;
    app.onboard(user).await;
    app.top_up(user, 1_000_000).await;
    for _ in 0..5 {
        app.flux_confirm(user).await;
        app.press(user, "Confirm").await;
        assert!(app.last_text(user).contains("has started"));
    }
    app.flux_confirm(user).await;
    app.press(user, "Confirm").await;
    assert!(
        app.last_text(user)
            .contains("already have 5 generations running"),
        "{}",
        app.last_text(user)
    );
    assert_eq!(app.active(user).await, 5);
    assert_eq!(app.submit_depth().await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_successful_payment_is_credited_once() {
    let mut app = App::start().await;
    let user = FakeUser::new(60);
    app.onboard(60).await;
    app.tg
        .successful_payment(&user, "v1:60:100:0123456789abcdef", "charge-1", 100);
    app.tg
        .successful_payment(&user, "v1:60:100:0123456789abcdef", "charge-1", 100);
    // The same update delivered twice (a webhook retry) too.
    let updates = app.deps.bot.get_updates().timeout(0).await.unwrap();
    for u in &updates {
        kiebot_bot::handle_update(&app.deps, u.clone()).await;
        kiebot_bot::handle_update(&app.deps, u.clone()).await;
    }
    assert_eq!(app.available(60).await, Money::from_minor(100 * 150));
    let credited = app
        .tg
        .sent_of("sendMessage")
        .iter()
        .filter(|c| c.text.as_deref().is_some_and(|t| t.contains("credited")))
        .count();
    assert_eq!(credited, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stars_top_up_goes_from_preset_to_invoice_to_credit_and_pays_the_referral_bonus_once() {
    let mut app = App::start().await;
    app.onboard(70).await;
    app.send(71, "/start ref_70").await;
    app.press(71, "English").await;
    app.press(71, "Top up").await;
    app.press(71, "100 ⭐").await;
    let invoice = app.tg.sent_of("sendInvoice").pop().expect("an invoice");
    assert_eq!(invoice.params["currency"], "XTR");
    let payload = invoice.params["payload"].as_str().unwrap().to_owned();
    let q = app.tg.pre_checkout(71, &payload, "XTR", 100);
    app.pump().await;
    let answer = app
        .tg
        .pre_checkout_answers()
        .into_iter()
        .find(|a| a.pre_checkout_query_id == q.to_string())
        .unwrap();
    assert!(answer.ok);
    app.tg.successful_payment(71, &payload, "charge-71a", 100);
    app.tg.successful_payment(71, &payload, "charge-71b", 100);
    app.pump().await;
    assert_eq!(app.available(71).await, Money::from_minor(2 * 100 * 150));
    assert_eq!(app.available(70).await, kiebot_bot::DEFAULT_REFERRAL_BONUS);
    // A custom amount.
    app.press(71, "Menu").await;
    app.press(71, "Top up").await;
    app.press(71, "Custom").await;
    app.send(71, "0").await;
    assert!(app.last_text(71).contains("whole number"));
    app.send(71, "7").await;
    let invoice = app.tg.sent_of("sendInvoice").pop().unwrap();
    assert_eq!(invoice.params["prices"][0]["amount"], 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_pre_checkout_payload_is_refused_with_a_message() {
    let mut app = App::start().await;
    app.onboard(80).await;
    for (payload, amount) in [
        ("v1:81:100:0123456789abcdef", 100), // someone else's invoice
        ("v1:80:100:0123456789abcdef", 1),   // amount does not match
        ("free money", 100),
        ("v1:80:100:zz", 100),
    ] {
        let q = app.tg.pre_checkout(80, payload, "XTR", amount);
        app.pump().await;
        let a = app
            .tg
            .pre_checkout_answers()
            .into_iter()
            .find(|a| a.pre_checkout_query_id == q.to_string())
            .unwrap();
        assert!(!a.ok, "{payload}");
        assert!(a.error_message.unwrap().contains("not valid"));
    }
    assert_eq!(app.available(80).await, Money::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_wizard_lets_the_user_continue_where_they_were() {
    let mut app = App::start().await;
    let user = 90;
    app.onboard(user).await;
    app.top_up(user, 100_000).await;
    app.open_wizard(user, "flux-2/pro-text-to-image").await;
    app.send(user, "a quiet harbour").await;
    let step = app.last_text(user);
    assert!(step.contains("Step 2"), "{step}");
    app.restart().await;
    app.press(user, "16:9").await;
    app.press(user, "Back").await;
    assert!(app.last_text(user).contains("Step 2"));
    assert!(
        app.buttons(user).iter().any(|(l, _)| l == "✓ 16:9"),
        "Back shows the chosen value"
    );
    app.press(user, "16:9").await;
    app.press(user, "Keep the default").await;
    let confirm = app.last_text(user);
    assert!(
        confirm.contains("a quiet harbour") && confirm.contains("16:9"),
        "{confirm}"
    );
    app.press(user, "Confirm").await;
    let gens = app.generations(user).await;
    assert_eq!(gens.len(), 1);
    assert!(gens[0].request_json.contains("16:9"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_user_is_told_and_nothing_happens() {
    let mut app = App::start().await;
    let user = 100;
    app.onboard(user).await;
    let menu = app.last(user);
    app.store()
        .users()
        .set_blocked(UserId(user), true)
        .await
        .unwrap();
    app.send(user, "/start").await;
    assert!(app.last_text(user).contains("restricted"));
    let answer = app.press_data(user, menu.message_id, "1:bal").await;
    assert!(answer.unwrap().contains("restricted"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_admins_sending_admin_commands_are_refused() {
    let mut app = App::start().await;
    let user = 110;
    app.onboard(user).await;
    for cmd in [
        "/admin",
        "/stats",
        "/user 1",
        "/adjust 110 100 gift",
        "/block 1",
        "/refund x",
        "/maintenance",
    ] {
        app.send(user, cmd).await;
        assert!(app.last_text(user).contains("administrators only"), "{cmd}");
    }
    let msg = app.last(user);
    app.press_data(user, msg.message_id, "1:a:stats").await;
    assert!(app.last_text(user).contains("administrators only"));
    assert_eq!(app.available(user).await, Money::ZERO);
    assert!(
        app.store()
            .settings()
            .get(kiebot_bot::MAINTENANCE_KEY)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_each_get_a_clear_message_and_change_nothing() {
    let mut app = App::start().await;
    let user = 120;
    app.onboard(user).await;
    app.top_up(user, 100_000).await;

    // Uploads: seedream 4.5 edit asks for a prompt, then images.
    app.open_wizard(user, "seedream/4.5-edit").await;
    app.send(user, "make it blue").await;
    assert!(
        app.last_text(user).contains("Send an image"),
        "{}",
        app.last_text(user)
    );
    let dialogue = |app: &App| {
        let store = app.store().clone();
        async move {
            store
                .dialogues()
                .load(UserId(user), kiebot_store::now_ms())
                .await
                .unwrap()
        }
    };
    let before = dialogue(&app).await;
    let uploads = app.kie.calls(kiebot_testkit::kie::Endpoint::StreamUpload);
    app.tg.send_document(
        user,
        "huge.png",
        "image/png",
        FileContent::Zeros(60 * 1024 * 1024),
    );
    app.pump().await;
    assert!(
        app.last_text(user).contains("too large"),
        "{}",
        app.last_text(user)
    );
    app.tg
        .send_document(user, "doc.pdf", "application/pdf", PNG);
    app.pump().await;
    assert!(
        app.last_text(user).contains("not accepted"),
        "{}",
        app.last_text(user)
    );
    app.send(user, "just text").await;
    assert!(
        app.last_text(user).contains("file is expected"),
        "{}",
        app.last_text(user)
    );
    assert_eq!(dialogue(&app).await, before);
    assert_eq!(
        app.kie.calls(kiebot_testkit::kie::Endpoint::StreamUpload),
        uploads
    );
    // A good file is uploaded to KIE and counted.
    app.tg.send_photo(user, PNG);
    app.pump().await;
    assert!(
        app.last_text(user).contains("File received (1 of"),
        "{}",
        app.last_text(user)
    );
    assert_eq!(
        app.kie.calls(kiebot_testkit::kie::Endpoint::StreamUpload),
        uploads + 1
    );

    // A prompt over the limit (z-image takes 1000 characters).
    app.open_wizard(user, "z-image").await;
    let before = dialogue(&app).await;
    app.send(user, &"x".repeat(1001)).await;
    assert!(
        app.last_text(user)
            .contains("too long: 1001 characters, the limit is 1000"),
        "{}",
        app.last_text(user)
    );
    assert_eq!(dialogue(&app).await, before);

    // A forged enum option in callback data.
    app.send(user, "a cat").await;
    let step = app.last(user);
    let data = buttons_of(&step)
        .into_iter()
        .find(|(l, _)| l.contains("16:9"))
        .unwrap()
        .1;
    let forged = format!("{}:200", data.rsplit_once(':').unwrap().0);
    let before = dialogue(&app).await;
    app.press_data(user, step.message_id, &forged).await;
    assert!(
        app.last_text(user).contains("not one of the options"),
        "{}",
        app.last_text(user)
    );
    assert_eq!(dialogue(&app).await, before);
    // Garbage data gets a friendly answer and changes nothing.
    let answer = app.press_data(user, step.message_id, "1:v:zz:0:0").await;
    assert!(answer.unwrap().contains("out of date"));
    assert_eq!(dialogue(&app).await, before);

    // A number out of range (cfg_scale is 0..1, an advanced option).
    app.open_wizard(user, "kling/v2-5-turbo-text-to-video-pro")
        .await;
    app.send(user, "a storm").await;
    while !app.last_text(user).contains("Check the parameters") {
        app.press(user, "Keep the default").await;
    }
    app.press(user, "Advanced").await;
    while !app.last_text(user).contains("from 0 to 1") {
        app.press(user, "Keep the default").await;
    }
    let before = dialogue(&app).await;
    app.send(user, "99").await;
    assert!(
        app.last_text(user).contains("out of range"),
        "{}",
        app.last_text(user)
    );
    app.send(user, "lots").await;
    assert!(
        app.last_text(user).contains("not a number"),
        "{}",
        app.last_text(user)
    );
    assert_eq!(dialogue(&app).await, before);
    assert!(app.generations(user).await.is_empty());
    assert_eq!(app.held(user).await, Money::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_creates_the_generation_at_price_zero_and_says_so() {
    let mut app = App::with(Options {
        dry_run: true,
        ..Options::default()
    })
    .await;
    let user = 130;
    app.onboard(user).await;
    app.flux_confirm(user).await;
    assert!(app.last_text(user).contains("test mode"));
    app.press(user, "Confirm").await;
    assert!(app.last_text(user).contains("Test mode: price 0"));
    let gens = app.generations(user).await;
    assert_eq!(gens[0].price, Money::ZERO);
    assert_eq!(app.submit_depth().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_is_not_charged_and_z_image_is_free_five_times_a_day() {
    let mut app = App::start().await;
    app.onboard(1).await;
    app.flux_confirm(1).await;
    app.press(1, "Confirm").await;
    assert_eq!(app.generations(1).await[0].price, Money::ZERO);

    let user = 140;
    app.onboard(user).await;
    app.top_up(user, 100_000).await;
    for i in 0..6 {
        app.open_wizard(user, "z-image").await;
        app.send(user, "a cat").await;
        app.press(user, "Keep the default").await;
        let confirm = app.last_text(user);
        assert_eq!(
            confirm.contains("free use of the day"),
            i < 5,
            "{i}: {confirm}"
        );
        app.press(user, "Confirm").await;
        // Finish it (successfully: a failed one would give its free use
        // back) so the active limit does not interfere.
        let g = app.generations(user).await[0].id;
        let gens = app.store().generations();
        assert!(
            gens.mark_submitted(g, &format!("t{g}"), 0, i64::MAX)
                .await
                .unwrap()
        );
        assert!(
            gens.finish_and_claim(
                g,
                kiebot_domain::GenerationStatus::Succeeded,
                &kiebot_domain::TaskOutcome::Success {
                    result: "{}".into()
                },
                0
            )
            .await
            .unwrap()
            .is_some()
        );
    }
    let prices: Vec<Money> = app
        .generations(user)
        .await
        .iter()
        .map(|g| g.price)
        .collect();
    assert_eq!(prices.iter().filter(|p| **p == Money::ZERO).count(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_lists_generations_and_repeat_prefills_the_wizard() {
    let mut app = App::start().await;
    let user = 150;
    app.onboard(user).await;
    app.top_up(user, 100_000).await;
    app.open_wizard(user, "flux-2/pro-text-to-image").await;
    app.send(user, "an owl").await;
    app.press(user, "3:4").await;
    app.press(user, "2K").await;
    app.press(user, "Confirm").await;
    app.send(user, "/history").await;
    let text = app.last_text(user);
    assert!(
        text.contains("Flux 2 Pro") && text.contains("queued"),
        "{text}"
    );
    app.press(user, "Repeat").await;
    let confirm = app.last_text(user);
    assert!(
        confirm.contains("an owl") && confirm.contains("3:4") && confirm.contains("2K"),
        "{confirm}"
    );
    app.press(user, "Confirm").await;
    let gens = app.generations(user).await;
    assert_eq!(gens.len(), 2);
    assert_eq!(gens[0].request_json, gens[1].request_json);
    // Someone else's generation cannot be repeated or re-sent.
    app.onboard(151).await;
    let msg = app.last(151);
    let other = GenerationId(gens[0].id.0);
    let answer = app
        .press_data(151, msg.message_id, &Cb::Repeat(other).encode())
        .await;
    assert!(answer.unwrap().contains("out of date"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promo_codes_are_redeemed_once_per_user() {
    let mut app = App::start().await;
    app.onboard(160).await;
    app.store()
        .promos()
        .create(
            "SPRING",
            Money::from_minor(2_500),
            Some(10),
            None,
            UserId(160),
        )
        .await
        .unwrap();
    app.send(160, "/promo SPRING").await;
    assert!(app.last_text(160).contains("+25.00"));
    app.send(160, "/promo SPRING").await;
    assert!(app.last_text(160).contains("already redeemed"));
    app.send(160, "/promo NOPE").await;
    assert!(app.last_text(160).contains("unknown"));
    assert_eq!(app.available(160).await, Money::from_minor(2_500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_adjust_balances_block_users_toggle_maintenance_and_refund_stars() {
    let mut app = App::start().await;
    app.onboard(1).await;
    app.onboard(170).await;
    app.send(1, "/adjust 170 12.50 goodwill").await;
    assert_eq!(app.available(170).await, Money::from_minor(1_250));
    assert_eq!(
        app.store().audit().recent(10).await.unwrap()[0].action,
        "adjust"
    );
    app.send(1, "/stats").await;
    assert!(app.last_text(1).contains("Users:"), "{}", app.last_text(1));
    app.send(1, "/user 170").await;
    app.press(1, "Block").await;
    app.send(170, "/balance").await;
    assert!(app.last_text(170).contains("restricted"));
    app.send(1, "/unblock 170").await;
    app.send(1, "/maintenance").await;
    app.send(170, "/balance").await;
    assert!(app.last_text(170).contains("maintenance"));
    app.send(1, "/maintenance").await;
    // A Stars payment refunded once.
    app.tg
        .successful_payment(170, "v1:170:10:0123456789abcdef", "charge-170", 10);
    app.pump().await;
    assert_eq!(app.available(170).await, Money::from_minor(1_250 + 1_500));
    app.send(1, "/refund charge-170").await;
    app.send(1, "/refund charge-170").await;
    assert!(
        app.last_text(1).contains("already refunded"),
        "{}",
        app.last_text(1)
    );
    assert_eq!(app.tg.refunds().len(), 1);
    assert_eq!(app.available(170).await, Money::from_minor(1_250));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_refuses_requests_without_the_secret_and_handles_updates_with_it() {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    let app = App::start().await;
    let router = kiebot_bot::webhook_router(app.deps.clone(), "s3cret".into());
    let update = serde_json::json!({
        "update_id": 9001,
        "message": {
            "message_id": 1, "date": 1_700_000_000,
            "chat": {"id": 180, "type": "private", "first_name": "U"},
            "from": {"id": 180, "is_bot": false, "first_name": "U", "language_code": "en"},
            "text": "/start",
            "entities": [{"type": "bot_command", "offset": 0, "length": 6}]
        }
    });
    let req = |secret: Option<&str>| {
        let mut r = Request::post("/telegram/webhook").header("content-type", "application/json");
        if let Some(s) = secret {
            r = r.header("X-Telegram-Bot-Api-Secret-Token", s);
        }
        r.body(Body::from(update.to_string())).unwrap()
    };
    assert_eq!(
        router.clone().oneshot(req(None)).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        router
            .clone()
            .oneshot(req(Some("wrong")))
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        router
            .clone()
            .oneshot(req(Some("s3cret")))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert!(app.last_text(180).contains("Choose your language"));
    // Redelivered: handled once.
    assert_eq!(
        router.oneshot(req(Some("s3cret"))).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(app.tg.messages_to(180).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_commands_registers_russian_and_english() {
    let app = App::start().await;
    kiebot_bot::set_commands(&app.deps.bot).await.unwrap();
    let calls = app.tg.my_commands();
    assert_eq!(calls.len(), 2);
    assert!(calls.iter().any(|c| c["language_code"] == "ru"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_reaches_every_unblocked_user_reports_and_resumes_after_a_restart() {
    let mut app = App::start().await;
    app.onboard(1).await;
    for u in [201, 202, 203] {
        app.onboard(u).await;
    }
    app.store()
        .users()
        .set_blocked(UserId(203), true)
        .await
        .unwrap();
    app.send(202, "/broadcast hi").await;
    assert!(app.last_text(202).contains("administrators only"));
    app.send(1, "/broadcast Big news").await;
    app.tg
        .wait_for(
            |tg| {
                tg.messages_to(1).iter().any(|m| {
                    m.text
                        .as_deref()
                        .is_some_and(|t| t.contains("Broadcast finished"))
                })
            },
            std::time::Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert!(
        app.last_text(1).contains("3 delivered, 0 failed"),
        "{}",
        app.last_text(1)
    );
    assert_eq!(app.last_text(201), "Big news");
    assert_ne!(app.last_text(203), "Big news");
    assert!(app.store().broadcasts().running().await.unwrap().is_none());

    // Interrupted after user 201 by a process that died (its lease lapsed
    // long ago): a restart sends only to the rest.
    let b = app.store().broadcasts();
    let id = b
        .create(&kiebot_store::NewBroadcast {
            text: "Second".into(),
            admin_chat: 1,
            lang: "en".into(),
            created_by: UserId(1),
        })
        .await
        .unwrap()
        .unwrap();
    let long_ago = 1_000;
    assert!(matches!(
        b.claim("dead", long_ago, 1).await.unwrap(),
        kiebot_store::Claim::Claimed(_)
    ));
    let mut cursor = i64::MIN;
    for u in [1, 201] {
        assert!(
            b.advance(id, "dead", cursor, UserId(u), long_ago, 1)
                .await
                .unwrap()
        );
        b.record(id, true).await.unwrap();
        cursor = u;
    }
    app.restart().await;
    kiebot_bot::resume_broadcast(&app.deps).await;
    assert_eq!(app.last_text(202), "Second");
    assert_eq!(app.last_text(201), "Big news");
    assert!(
        app.last_text(1).contains("3 delivered"),
        "{}",
        app.last_text(1)
    );
}

/// A generation of `user` that the worker would have submitted, finished
/// and delivered as one photo; the photo's Telegram file id.
async fn delivered_photo(app: &mut App, user: i64) -> String {
    app.onboard(user).await;
    app.top_up(user, 100_000).await;
    app.flux_confirm(user).await;
    app.press(user, "Confirm").await;
    let g = app.generations(user).await[0].id;
    // What the worker would have done: submit, succeed, deliver.
    let gens = app.store().generations();
    let now = kiebot_store::now_ms();
    assert!(
        gens.mark_submitted(g, "task-1", now, now + 600_000)
            .await
            .unwrap()
    );
    assert!(
        gens.finish_and_claim(
            g,
            kiebot_domain::GenerationStatus::Succeeded,
            &kiebot_domain::TaskOutcome::Success {
                result: r#"{"resultUrls":["https://example.com/a.png"]}"#.into()
            },
            0
        )
        .await
        .unwrap()
        .is_some()
    );
    let sent = app
        .deps
        .bot
        .send_photo(
            ChatId(user),
            teloxide::types::InputFile::url("https://example.com/a.png".parse().unwrap()),
        )
        .await
        .unwrap();
    let file_id = sent.photo().unwrap().last().unwrap().file.id.0.clone();
    assert!(
        gens.mark_told(g, &serde_json::json!([file_id]).to_string())
            .await
            .unwrap()
    );
    file_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivered_result_is_sent_again_from_the_history_by_its_file_id() {
    let mut app = App::start().await;
    let user = 210;
    let file_id = delivered_photo(&mut app, user).await;
    app.send(user, "/history").await;
    assert!(app.last_text(user).contains("delivered"));
    app.press(user, "Resend").await;
    let resent = app.tg.sent_of("sendPhoto").pop().unwrap();
    assert_eq!(
        resent.media[0].source,
        kiebot_testkit::telegram::MediaSource::FileId(file_id)
    );
    // Under it: Repeat, History, Menu.
    let labels: Vec<String> = app.buttons(user).into_iter().map(|(l, _)| l).collect();
    assert!(labels.iter().any(|l| l.contains("Repeat")), "{labels:?}");
    // Repeat from under the result opens the confirm screen (a new message).
    app.press(user, "Repeat").await;
    assert!(
        app.last_text(user).contains("Check the parameters"),
        "{}",
        app.last_text(user)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_goes_through_the_delivery_path_and_arrives_once_per_press() {
    let mut app = App::start().await;
    let user = 211;
    let file_id = delivered_photo(&mut app, user).await;
    let before = app.tg.sent_of("sendPhoto").len();
    app.send(user, "/history").await;
    // Telegram says the bot is over its budget: like a first delivery, the
    // resend reports it to the shared limiter, waits it out and sends.
    app.tg.fail_next(
        "sendPhoto",
        1,
        kiebot_testkit::telegram::Fault::TooManyRequests { retry_after: 1 },
    );
    app.press(user, "Resend").await;
    let photos = app.tg.sent_of("sendPhoto");
    assert_eq!(photos.len(), before + 1, "one press, one result");
    assert_eq!(
        photos.last().unwrap().media[0].source,
        kiebot_testkit::telegram::MediaSource::FileId(file_id.clone())
    );
    assert_eq!(
        app.tg
            .rejected()
            .iter()
            .filter(|r| r.method == "sendPhoto")
            .count(),
        1
    );
    let labels: Vec<String> = app.buttons(user).into_iter().map(|(l, _)| l).collect();
    assert!(labels.iter().any(|l| l.contains("Repeat")), "{labels:?}");
    // Another press: the result once more.
    app.send(user, "/history").await;
    app.press(user, "Resend").await;
    let photos = app.tg.sent_of("sendPhoto");
    assert_eq!(photos.len(), before + 2);
    assert_eq!(
        photos.last().unwrap().media[0].source,
        kiebot_testkit::telegram::MediaSource::FileId(file_id)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_answers_updates_until_shutdown() {
    let app = App::start().await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let deps = app.deps.clone();
    let task = tokio::spawn(kiebot_bot::run_polling(deps, async {
        let _ = stopped.await;
    }));
    app.tg.send_text(220, "/start");
    app.tg
        .wait_for(
            |tg| !tg.messages_to(220).is_empty(),
            std::time::Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert!(app.last_text(220).contains("Choose your language"));
    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_keeps_each_chats_order_while_chats_run_concurrently() {
    polling_keeps_order(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_keeps_each_chats_order_on_postgres() {
    polling_keeps_order(true).await;
}

async fn polling_keeps_order(postgres: bool) {
    let mut app = App::with(Options {
        postgres,
        ..Options::default()
    })
    .await;
    let users = [230_i64, 231, 232];
    for u in users {
        app.onboard(u).await;
    }
    let before: Vec<usize> = users.iter().map(|u| app.tg.messages_to(*u).len()).collect();
    // Queued before polling starts, so they arrive in shared getUpdates
    // batches, interleaved across chats.
    let per_user = 24;
    for i in 0..per_user {
        for u in users {
            app.tg
                .send_text(u, if i % 2 == 0 { "/help" } else { "/balance" });
        }
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(kiebot_bot::run_polling(app.deps.clone(), async {
        let _ = stopped.await;
    }));
    let wanted = before.clone();
    app.tg
        .wait_for(
            move |tg| {
                users
                    .iter()
                    .zip(&wanted)
                    .all(|(u, b)| tg.messages_to(*u).len() >= b + per_user)
            },
            std::time::Duration::from_secs(30),
        )
        .await
        .unwrap();
    for (u, b) in users.iter().zip(&before) {
        let replies: Vec<String> = app.tg.messages_to(*u)[*b..]
            .iter()
            .map(|m| m.text.clone().unwrap_or_default())
            .collect();
        assert_eq!(replies.len(), per_user, "one reply per update for {u}");
        for (i, r) in replies.iter().enumerate() {
            let expected = if i % 2 == 0 {
                "How it works"
            } else {
                "Balance:"
            };
            assert!(
                r.starts_with(expected),
                "chat {u}, reply {i} out of order: {r}"
            );
        }
    }
    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap();
}

/// A batch is acknowledged to Telegram by the fetch of the next one, while
/// its update ids are still being recorded. A record that fails is tried
/// again until it succeeds, and only then are the updates handled: each
/// exactly once, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_whose_record_fails_are_handled_once_the_record_succeeds() {
    use sqlx::{Connection, Executor};
    let app = App::with(Options {
        postgres: true,
        ..Options::default()
    })
    .await;
    let mut admin = sqlx::PgConnection::connect(app.db.url()).await.unwrap();
    admin
        .execute("ALTER TABLE processed_updates RENAME TO processed_updates_away")
        .await
        .unwrap();
    // Both queued before the bot polls, so they come in one batch: sent
    // while a long poll waits, the first would wake it alone, and the
    // second batch would wait for the first one's record.
    app.tg.send_text(240, "/start");
    app.tg.send_text(241, "/start");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(kiebot_bot::run_polling(app.deps.clone(), async {
        let _ = stopped.await;
    }));
    // Fetched (and acknowledged by the next getUpdates) but not recordable:
    // nothing may be handled yet.
    // The acknowledging getUpdates is still open (long polling), so no call
    // ends to wake `wait_for`: look again every few milliseconds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while app.tg.pending_updates() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "updates never fetched"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(app.tg.messages_to(240).is_empty() && app.tg.messages_to(241).is_empty());
    admin
        .execute("ALTER TABLE processed_updates_away RENAME TO processed_updates")
        .await
        .unwrap();
    app.tg
        .wait_for(
            |tg| !tg.messages_to(240).is_empty() && !tg.messages_to(241).is_empty(),
            std::time::Duration::from_secs(10),
        )
        .await
        .unwrap();
    // A moment for a second (wrong) handling to show.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for u in [240, 241] {
        assert_eq!(
            app.tg.messages_to(u).len(),
            1,
            "one language picker for {u}"
        );
        assert!(app.last_text(u).contains("Choose your language"));
    }
    let recorded: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM processed_updates")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(recorded, 2);
    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    admin.close().await.unwrap();
}
