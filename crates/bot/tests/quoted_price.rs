//! A confirm button charges only the price its screen showed: when the
//! price or who pays it changed in between (free uses spent elsewhere, an
//! admin budget removed, prices raised by a restart), nothing is created or
//! held, and the screen comes back with the new price under a new button.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::{App, Options, buttons_of};
use kiebot_domain::{ModelId, Money, Rate, UserId};
use kiebot_testkit::telegram::BotMessage;
use kiebot_tg::callback::MAX_LEN;

fn text(msg: &BotMessage) -> String {
    msg.text.clone().unwrap_or_default()
}

fn confirm_data(msg: &BotMessage) -> String {
    let data = buttons_of(msg)
        .into_iter()
        .find(|(l, _)| l.contains("Confirm"))
        .unwrap_or_else(|| panic!("no Confirm under {:?}", msg.text))
        .1;
    assert!(data.len() <= MAX_LEN, "{data}");
    data
}

/// The amount on the screen's "Price:" line (a paid price).
fn shown_price(text: &str) -> Money {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("Price: "))
        .unwrap_or_else(|| panic!("no price line in {text}"));
    line.split_whitespace().next().unwrap().parse().unwrap()
}

fn today() -> String {
    chrono::Local::now().format("%Y-%m-%d").to_string()
}

/// Presses Confirm under `msg`: the price changed, so the screen is back
/// with the new price and a new button, and nothing was created, held or
/// charged. Returns the new screen.
async fn confirm_sees_new_price(app: &mut App, user: i64, msg: &BotMessage) -> BotMessage {
    let before = app.available(user).await;
    let old = confirm_data(msg);
    assert!(app.press_data(user, msg.message_id, &old).await.is_none());
    let again = app.last(user);
    let t = text(&again);
    assert!(t.contains("The price has changed"), "{t}");
    assert!(t.contains("nothing was charged"), "{t}");
    assert!(t.contains("Check the parameters"), "{t}");
    assert!(app.generations(user).await.is_empty(), "nothing created");
    assert_eq!(app.held(user).await, Money::ZERO);
    assert_eq!(app.available(user).await, before);
    assert_eq!(app.submit_depth().await, 0);
    assert_ne!(confirm_data(&again), old, "the old button is stale");

    // The old button no longer confirms anything.
    let answer = app.press_data(user, msg.message_id, &old).await;
    assert!(answer.unwrap_or_default().contains("out of date"));
    assert!(app.generations(user).await.is_empty());
    again
}

/// Presses the new Confirm twice: one generation, charged the price shown.
async fn confirm_goes_through(app: &mut App, user: i64, msg: &BotMessage, price: Money) {
    let before = app.available(user).await;
    let data = confirm_data(msg);
    app.press_data(user, msg.message_id, &data).await;
    assert!(
        app.last_text(user).contains("has started"),
        "{}",
        app.last_text(user)
    );
    app.press_data(user, msg.message_id, &data).await;
    assert!(
        app.last_text(user).contains("already started"),
        "{}",
        app.last_text(user)
    );
    let gens = app.generations(user).await;
    assert_eq!(gens.len(), 1, "one generation for one draft");
    assert_eq!(gens[0].price, price);
    assert_eq!(app.held(user).await, price);
    assert_eq!(
        app.available(user).await,
        before.checked_sub(price).unwrap()
    );
    assert_eq!(app.submit_depth().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_uses_spent_elsewhere_are_not_charged_unseen() {
    let mut app = App::start().await;
    let user = 400;
    app.onboard(user).await;
    app.top_up(user, 100_000).await;
    let screen = app.z_image_confirm(user).await;
    assert!(text(&screen).contains("free use of the day"));

    // Another chat or device takes every free use of the day meanwhile.
    let z_image = ModelId::parse("z-image").unwrap();
    let free = app.catalog.get("z-image").unwrap().free_daily;
    for _ in 0..free {
        assert!(
            app.store()
                .free_usage()
                .consume(UserId(user), &z_image, &today(), free)
                .await
                .unwrap()
        );
    }

    let again = confirm_sees_new_price(&mut app, user, &screen).await;
    let t = text(&again);
    assert!(!t.contains("free use of the day"), "{t}");
    let price = shown_price(&t);
    assert!(price.is_positive(), "{t}");

    confirm_goes_through(&mut app, user, &again, price).await;
    let g = &app.generations(user).await[0];
    assert_eq!(g.free_day, None, "no free use was left to take");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_budget_removed_meanwhile_does_not_fall_back_to_the_balance_unseen() {
    let mut app = App::with(Options {
        admin_ids: vec![UserId(1), UserId(2)],
        ..Options::default()
    })
    .await;
    let admin = 2;
    app.onboard(admin).await;
    app.top_up(admin, 100_000).await;
    app.store()
        .users()
        .set_admin_budget(UserId(admin), Some(Money::from_minor(10_000)))
        .await
        .unwrap();
    let screen = app.flux_confirm(admin).await;
    assert!(text(&screen).contains("from the admin budget"));
    let budget_price = shown_price(&text(&screen));

    // The same amount, now from the admin's own balance: still not what
    // the screen said.
    app.store()
        .users()
        .set_admin_budget(UserId(admin), None)
        .await
        .unwrap();
    let again = confirm_sees_new_price(&mut app, admin, &screen).await;
    let t = text(&again);
    assert!(!t.contains("admin budget"), "{t}");
    assert_eq!(shown_price(&t), budget_price);

    confirm_goes_through(&mut app, admin, &again, budget_price).await;
    let g = &app.generations(admin).await[0];
    assert_eq!(g.budget_spent, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prices_raised_by_a_restart_are_shown_before_they_are_charged() {
    let mut app = App::start().await;
    let user = 410;
    app.onboard(user).await;
    app.top_up(user, 1_000_000).await;
    let screen = app.flux_confirm(user).await;
    let old_price = shown_price(&text(&screen));

    app.restart().await;
    app.deps.pricing.markup = Rate::from_micros(3_000_000);
    let again = confirm_sees_new_price(&mut app, user, &screen).await;
    let price = shown_price(&text(&again));
    assert!(price > old_price, "{price} after {old_price}");

    confirm_goes_through(&mut app, user, &again, price).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_price_goes_straight_through_after_a_restart() {
    let mut app = App::start().await;
    let user = 420;
    app.onboard(user).await;
    app.top_up(user, 1_000_000).await;
    let screen = app.flux_confirm(user).await;
    let price = shown_price(&text(&screen));

    app.restart().await;
    confirm_goes_through(&mut app, user, &screen, price).await;
}
