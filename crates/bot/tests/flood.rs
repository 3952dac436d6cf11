//! Per-user flood control (webhook and polling paths) and the refused-promo
//! limit, against the fake Bot API.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{App, Options};
use kiebot_bot::FloodConfig;
use kiebot_domain::{Money, UserId};
use kiebot_testkit::telegram::FakeTelegram;

/// One update a minute comes back: nothing refills while a test runs, so
/// what passes is exactly the burst.
const BURST: u32 = 5;

fn flood_on() -> FloodConfig {
    FloodConfig {
        rate_per_min: 1,
        burst: BURST,
        promo_failures_per_hour: 3,
        ..FloodConfig::default()
    }
}

const NOTICE: &str = "sending messages too fast";

fn notices(tg: &FakeTelegram, chat: i64) -> usize {
    tg.messages_to(chat)
        .iter()
        .filter(|m| m.text.as_deref().is_some_and(|t| t.contains(NOTICE)))
        .count()
}

async fn recorded(app: &App) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM processed_updates")
        .fetch_one(app.store().pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_dropped_with_one_notice_and_payments_and_admins_pass() {
    let mut app = App::with(Options {
        flood: flood_on(),
        ..Options::default()
    })
    .await;
    let flooder = 500;
    for _ in 0..40 {
        app.tg.send_text(flooder, "/help");
    }
    // Payments in the middle of the flood are never dropped.
    let payload = format!("v1:{flooder}:100:0123456789abcdef");
    let q = app.tg.pre_checkout(flooder, &payload, "XTR", 100);
    app.tg
        .successful_payment(flooder, &payload, "charge-flood", 100);
    for _ in 0..10 {
        app.tg.send_text(flooder, "/help");
    }
    app.pump().await;

    // The burst and the two payments reached the database; nothing else.
    assert_eq!(recorded(&app).await, i64::from(BURST) + 2);
    assert!(
        app.tg
            .pre_checkout_answers()
            .iter()
            .any(|a| a.pre_checkout_query_id == q.to_string()),
        "the pre-checkout query was answered"
    );
    assert_eq!(app.available(flooder).await, Money::from_minor(100 * 150));
    // One notice, sent in the background, for 45 dropped updates.
    app.tg
        .wait_for(|tg| notices(tg, flooder) >= 1, Duration::from_secs(20))
        .await
        .expect("the notice");
    // More dropped updates in the same flood: still one notice.
    for _ in 0..10 {
        app.tg.send_text(flooder, "/help");
    }
    app.pump().await;
    assert_eq!(recorded(&app).await, i64::from(BURST) + 2);
    // The bucket has not refilled, so the flood goes on: no second notice.
    let other = 501;
    app.send(other, "/help").await;
    assert!(
        !app.last_text(other).is_empty(),
        "the other user is answered"
    );
    assert_eq!(notices(&app.tg, flooder), 1);
    assert_eq!(notices(&app.tg, other), 0);

    // An admin (ADMIN_IDS) is never limited.
    let admin = app.admin_ids[0].0;
    let before = recorded(&app).await;
    for _ in 0..30 {
        app.tg.send_text(admin, "/help");
    }
    app.pump().await;
    assert_eq!(recorded(&app).await, before + 30);
    assert_eq!(notices(&app.tg, admin), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_drops_a_flood_before_it_is_recorded_and_answers_everyone_else() {
    let app = App::with(Options {
        flood: flood_on(),
        ..Options::default()
    })
    .await;
    let flooder = 600;
    let others = [601, 602, 603];
    for i in 0..300 {
        app.tg.send_text(flooder, "/help");
        if i == 150 {
            for o in others {
                app.tg.send_text(o, "/help");
            }
        }
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let polling = tokio::spawn(kiebot_bot::run_polling(app.deps.clone(), async {
        let _ = stopped.await;
    }));
    app.tg
        .wait_for(
            |tg| {
                others.iter().all(|o| !tg.messages_to(*o).is_empty())
                    && notices(tg, flooder) >= 1
                    && tg.pending_updates() == 0
            },
            Duration::from_secs(25),
        )
        .await
        .expect("everyone answered and the flood noticed");
    let _ = stop.send(());
    polling.await.unwrap();
    // The flooder's burst and one update of each other user were recorded.
    assert_eq!(recorded(&app).await, i64::from(BURST) + 3);
    assert_eq!(notices(&app.tg, flooder), 1);
    for o in others {
        assert_eq!(notices(&app.tg, o), 0);
    }
}

async fn refused_promo_codes_are_limited_per_hour(postgres: bool) {
    let mut app = App::with(Options {
        postgres,
        // The update flood control off: this test plays fast.
        flood: FloodConfig {
            promo_failures_per_hour: 3,
            ..FloodConfig::off()
        },
        ..Options::default()
    })
    .await;
    let owner = UserId(1);
    app.store()
        .promos()
        .create("GOOD", Money::from_minor(500), None, None, owner)
        .await
        .unwrap();
    let user = 700;
    app.onboard(user).await;
    for code in ["BAD1", "BAD2", "BAD3"] {
        app.send(user, &format!("/promo {code}")).await;
        assert!(
            app.last_text(user).contains("unknown, expired or used up"),
            "{}",
            app.last_text(user)
        );
    }
    // The limit (3 an hour) is reached: even a good code is not looked at.
    app.send(user, "/promo GOOD").await;
    assert!(
        app.last_text(user).contains("Too many wrong promo codes"),
        "{}",
        app.last_text(user)
    );
    assert_eq!(app.available(user).await, Money::ZERO);
    let hour_ago = kiebot_store::now_ms() - 60 * 60 * 1000;
    assert_eq!(
        app.store()
            .promos()
            .failures_since(UserId(user), hour_ago)
            .await
            .unwrap(),
        3,
        "a refusal for the limit is not counted again"
    );

    // Another user is not affected.
    app.onboard(701).await;
    app.send(701, "/promo GOOD").await;
    assert_eq!(app.available(701).await, Money::from_minor(500));

    // Failures older than the hour do not count.
    app.onboard(702).await;
    for _ in 0..5 {
        app.store()
            .promos()
            .record_failure(UserId(702), hour_ago - 1000)
            .await
            .unwrap();
    }
    app.send(702, "/promo GOOD").await;
    assert_eq!(app.available(702).await, Money::from_minor(500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_promo_codes_are_limited_per_hour_on_sqlite() {
    refused_promo_codes_are_limited_per_hour(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_promo_codes_are_limited_per_hour_on_postgres() {
    refused_promo_codes_are_limited_per_hour(true).await;
}
