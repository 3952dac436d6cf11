//! Money in, at least once and credited once: invoices checked at
//! pre-checkout, unknown payloads credited and flagged, charges whose update
//! never came found by the Stars reconciler, refunds whose answer was lost
//! settled by Telegram's transaction list, and a webhook payment retried by
//! Telegram while the database is away.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{App, Options};
use kiebot_domain::{Money, UserId};
use kiebot_store::{PaymentStatus, Store, invoices, now_ms};
use kiebot_testkit::telegram::Fault;
use teloxide::payloads::SetWebhookSetters;
use teloxide::prelude::Requester;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(60);

fn answer_to(app: &App, query: i64) -> kiebot_testkit::telegram::PreCheckoutAnswer {
    app.tg
        .pre_checkout_answers()
        .into_iter()
        .find(|a| a.pre_checkout_query_id == query.to_string())
        .expect("the pre-checkout was answered")
}

async fn assert_ledger_clean(app: &App) {
    let drift = app.store().ledger().check().await.unwrap();
    assert!(drift.is_empty(), "ledger drift: {drift:?}");
}

fn credited_notices(app: &App, user: i64) -> usize {
    app.tg
        .sent_of("sendMessage")
        .iter()
        .filter(|c| c.chat_id == Some(user))
        .filter(|c| c.text.as_deref().is_some_and(|t| t.contains("credited")))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_checkout_refuses_expired_forged_and_foreign_invoices_with_a_message() {
    let mut app = App::start().await;
    let store = app.store().clone();
    let amount = Money::from_minor(15_000);
    let good = store
        .invoices()
        .create(UserId(340), 100, amount, 3_600_000, 1)
        .await
        .unwrap();
    let theirs = store
        .invoices()
        .create(UserId(341), 100, amount, 3_600_000, 2)
        .await
        .unwrap();
    let stale = store
        .invoices()
        .create(UserId(340), 100, amount, 1, 3)
        .await
        .unwrap();
    // The clock moves past the stale invoice's expiry.
    while now_ms() <= stale.expires_at {
        tokio::task::yield_now().await;
    }
    let expired = app.tg.pre_checkout(340, &stale.payload, "XTR", 100);
    app.pump().await;
    let a = answer_to(&app, expired);
    assert!(!a.ok);
    assert!(a.error_message.unwrap().contains("expired"));
    for (payload, stars) in [
        (invoices::payload_of(good.id, 0xdead), 100), // forged nonce
        (theirs.payload.clone(), 100),                // someone else's
        (good.payload.clone(), 99),                   // other amount
        ("inv:999999:0000000000000001".to_owned(), 100), // never issued
    ] {
        let q = app.tg.pre_checkout(340, &payload, "XTR", stars);
        app.pump().await;
        let a = answer_to(&app, q);
        assert!(!a.ok, "{payload}");
        assert!(a.error_message.unwrap().contains("not valid"), "{payload}");
    }
    let q = app.tg.pre_checkout(340, &good.payload, "XTR", 100);
    app.pump().await;
    assert!(answer_to(&app, q).ok);
    assert_eq!(app.available(340).await, Money::ZERO, "nothing credited");
}

async fn credit_by_invoice_and_flag_unknown(postgres: bool) {
    let mut app = App::with(Options {
        postgres,
        ..Options::default()
    })
    .await;
    // The invoice's recorded amount is what is credited, whatever the rate
    // is now.
    let inv = app
        .store()
        .invoices()
        .create(UserId(330), 10, Money::from_minor(2_000), 3_600_000, 5)
        .await
        .unwrap();
    app.tg
        .successful_payment(330, &inv.payload, "charge-330a", 10);
    // A payload we never issued: real money, credited at the rate, flagged.
    app.tg
        .successful_payment(330, "from-another-bot", "charge-330b", 20);
    app.pump().await;
    assert_eq!(
        app.available(330).await,
        Money::from_minor(2_000 + 20 * 150)
    );
    let p = app
        .store()
        .payments()
        .get("charge-330a")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p.flag, None);
    let p = app
        .store()
        .payments()
        .get("charge-330b")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p.flag.as_deref(), Some("unknown_invoice"));
    let flagged = app.store().payments().flagged(10).await.unwrap();
    assert_eq!(flagged.len(), 1);
    assert_eq!(flagged[0].charge_id, "charge-330b");
    assert_eq!(credited_notices(&app, 330), 2);
    assert_ledger_clean(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_is_credited_by_its_invoice_and_an_unknown_payload_is_credited_and_flagged() {
    credit_by_invoice_and_flag_unknown(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_is_credited_by_its_invoice_and_an_unknown_payload_is_credited_and_flagged_on_postgres()
 {
    credit_by_invoice_and_flag_unknown(true).await;
}

async fn reconciler(postgres: bool) {
    let mut app = App::with(Options {
        postgres,
        ..Options::default()
    })
    .await;
    let store = app.store().clone();
    let lost = store
        .invoices()
        .create(UserId(310), 100, Money::from_minor(15_000), 3_600_000, 11)
        .await
        .unwrap();
    let seen = store
        .invoices()
        .create(UserId(310), 50, Money::from_minor(7_500), 3_600_000, 12)
        .await
        .unwrap();
    // Paid, but its update never reaches the bot.
    app.tg
        .register_charge(310, &lost.payload, "charge-lost", 100);
    app.tg
        .successful_payment(310, &seen.payload, "charge-seen", 50);
    app.pump().await;
    assert_eq!(app.available(310).await, Money::from_minor(7_500));

    let found = kiebot_bot::reconcile_stars(&app.deps).await.unwrap();
    assert_eq!((found.seen, found.credited), (2, 1));
    assert_eq!(app.available(310).await, Money::from_minor(22_500));
    assert_eq!(credited_notices(&app, 310), 2, "the user is told");
    // Again, and from another front at the same time: nothing more.
    let other = app.another_process().await;
    let (a, b) = tokio::join!(
        kiebot_bot::reconcile_stars(&app.deps),
        kiebot_bot::reconcile_stars(&other)
    );
    assert_eq!(a.unwrap().credited + b.unwrap().credited, 0);
    assert_eq!(app.available(310).await, Money::from_minor(22_500));

    // A refund made from Telegram's own tools is recorded once.
    assert!(app.tg.refund_outside_the_bot("charge-seen"));
    let found = kiebot_bot::reconcile_stars(&app.deps).await.unwrap();
    assert_eq!(found.refunds_recorded, 1);
    let found = kiebot_bot::reconcile_stars(&app.deps).await.unwrap();
    assert_eq!(found.refunds_recorded, 0);
    let p = store.payments().get("charge-seen").await.unwrap().unwrap();
    assert_eq!(p.status, PaymentStatus::Refunded);
    assert_eq!(app.available(310).await, Money::from_minor(15_000));
    assert_ledger_clean(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_whose_update_never_arrives_is_credited_once_by_the_reconciler() {
    reconciler(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_whose_update_never_arrives_is_credited_once_by_the_reconciler_on_postgres() {
    reconciler(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_whose_answer_is_lost_after_telegram_refunded_is_refunded_once() {
    let mut app = App::start().await;
    app.onboard(1).await;
    app.onboard(320).await;
    app.tg
        .successful_payment(320, "v1:320:10:0123456789abcdef", "charge-320", 10);
    app.tg
        .successful_payment(320, "v1:320:20:0123456789abcdef", "charge-321", 20);
    app.pump().await;
    assert_eq!(app.available(320).await, Money::from_minor(30 * 150));

    // Telegram refunds, and the answer is lost on the way back.
    app.tg.drop_reply_next("refundStarPayment", 1);
    app.send(1, "/refund charge-320").await;
    assert!(
        app.last_text(1).contains("Refunded"),
        "{}",
        app.last_text(1)
    );
    assert_eq!(app.tg.refunds().len(), 1, "refunded once at Telegram");
    assert!(
        app.tg.call_count("getStarTransactions") >= 1,
        "the lost answer was settled by Telegram's list"
    );
    assert_eq!(app.available(320).await, Money::from_minor(20 * 150));
    let p = app
        .store()
        .payments()
        .get("charge-320")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p.status, PaymentStatus::Refunded);
    // Asking again changes nothing.
    app.send(1, "/refund charge-320").await;
    assert!(app.last_text(1).contains("already refunded"));
    assert_eq!(app.tg.refunds().len(), 1);

    // A definite refusal undoes the debit.
    app.tg.fail_next(
        "refundStarPayment",
        1,
        Fault::BadRequest("CHARGE_NOT_FOUND".into()),
    );
    app.send(1, "/refund charge-321").await;
    assert!(app.last_text(1).contains("refused"), "{}", app.last_text(1));
    assert_eq!(app.available(320).await, Money::from_minor(20 * 150));
    assert_eq!(app.tg.refunds().len(), 1);
    assert_ledger_clean(&app).await;
}

/// A TCP proxy in front of PostgreSQL that can be taken down: while down it
/// cuts every open connection and closes new ones at once, as a database
/// that went away.
struct Proxy {
    addr: SocketAddr,
    up: Arc<watch::Sender<bool>>,
    /// Connections closed at once because the proxy was down.
    refused: Arc<std::sync::atomic::AtomicUsize>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(watch::channel(true).0);
        let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let state = Arc::clone(&up);
        let counted = Arc::clone(&refused);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !*state.borrow() {
                    counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    drop(client);
                    continue;
                }
                let mut down = state.subscribe();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = down.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Proxy { addr, up, refused }
    }

    fn refused(&self) -> usize {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn set(&self, up: bool) {
        self.up.send_replace(up);
    }
}

/// `url` with its host and port replaced by `addr`; and the host and port.
fn through(url: &str, addr: SocketAddr) -> (String, String) {
    let at = url.find('@').expect("credentials in the test database URL") + 1;
    let end = at + url[at..].find('/').expect("a database name");
    let target = url[at..end].to_owned();
    (format!("{}{addr}{}", &url[..at], &url[end..]), target)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_payment_while_the_database_is_down_is_answered_5xx_retried_and_credited_once() {
    let app = App::with(Options {
        postgres: true,
        ..Options::default()
    })
    .await;
    let (_, target) = through(app.db.url(), "127.0.0.1:1".parse().unwrap());
    let proxy = Proxy::start(target).await;
    let (via_proxy, _) = through(app.db.url(), proxy.addr);
    let mut deps = app.deps.clone();
    deps.store = Store::connect(&via_proxy).await.unwrap();

    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let hook = listener.local_addr().unwrap();
    let router = kiebot_bot::webhook_router(deps.clone(), "hook-secret".into());
    tokio::spawn(async move { axum::serve(listener, router).await });
    deps.bot
        .set_webhook(format!("http://{hook}/telegram/webhook").parse().unwrap())
        .secret_token("hook-secret".to_owned())
        .await
        .unwrap();

    proxy.set(false);
    let down_since = Instant::now();
    let update = app
        .tg
        .successful_payment(350, "v1:350:100:00000000000000aa", "charge-wh", 100);
    let refused = |tg: &kiebot_testkit::telegram::FakeTelegram| {
        tg.webhook_attempts()
            .iter()
            .filter(|(u, s)| *u == update && s.is_some_and(|s| s >= 500))
            .count()
    };
    app.tg.wait_for(|tg| refused(tg) >= 3, WAIT).await.unwrap();
    // The outage lasts 5 s in all (a scenario length, not a wait for
    // anything).
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(down_since.elapsed())).await;
    assert!(refused(&app.tg) >= 3);
    proxy.set(true);

    app.tg
        .wait_for(|tg| tg.pending_updates() == 0, WAIT)
        .await
        .unwrap();
    let last = app
        .tg
        .webhook_attempts()
        .into_iter()
        .rfind(|(u, _)| *u == update)
        .unwrap();
    assert_eq!(last.1, Some(200));
    assert_eq!(app.available(350).await, Money::from_minor(100 * 150));
    assert_eq!(credited_notices(&app, 350), 1);
    // Telegram delivering it once more changes nothing.
    let again: teloxide::types::Update = serde_json::from_value(serde_json::json!({
        "update_id": update,
        "message": {
            "message_id": 77, "date": 1_700_000_000,
            "chat": {"id": 350, "type": "private", "first_name": "U"},
            "from": {"id": 350, "is_bot": false, "first_name": "U"},
            "successful_payment": {
                "currency": "XTR", "total_amount": 100,
                "invoice_payload": "v1:350:100:00000000000000aa",
                "telegram_payment_charge_id": "charge-wh",
                "provider_payment_charge_id": ""
            }
        }
    }))
    .unwrap();
    assert_eq!(
        kiebot_bot::handle_update(&deps, again).await,
        kiebot_bot::Handled::Done
    );
    assert_eq!(app.available(350).await, Money::from_minor(100 * 150));
    assert_ledger_clean(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polled_payment_while_the_database_is_down_is_not_acknowledged_until_credited() {
    let app = App::with(Options {
        postgres: true,
        ..Options::default()
    })
    .await;
    let (_, target) = through(app.db.url(), "127.0.0.1:1".parse().unwrap());
    let proxy = Proxy::start(target).await;
    let (via_proxy, _) = through(app.db.url(), proxy.addr);
    let mut deps = app.deps.clone();
    deps.store = Store::connect(&via_proxy).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let polling = tokio::spawn(kiebot_bot::run_polling(deps, async {
        let _ = stopped.await;
    }));
    app.tg
        .wait_for(|tg| tg.call_count("getUpdates") >= 1, WAIT)
        .await
        .unwrap();

    proxy.set(false);
    let refused_before = proxy.refused();
    app.tg
        .successful_payment(360, "v1:360:100:00000000000000aa", "charge-poll", 100);
    // The bot keeps trying the database...
    let deadline = Instant::now() + WAIT;
    while proxy.refused() < refused_before + 3 {
        assert!(
            Instant::now() < deadline,
            "the bot never tried the database"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...and Telegram still holds the batch.
    assert_eq!(app.tg.pending_updates(), 1);
    proxy.set(true);
    app.tg
        .wait_for(|tg| tg.pending_updates() == 0, WAIT)
        .await
        .expect("acknowledged once credited");
    assert_eq!(app.available(360).await, Money::from_minor(100 * 150));
    stop.send(()).unwrap();
    polling.await.unwrap();
    assert_eq!(credited_notices(&app, 360), 1);
    assert_ledger_clean(&app).await;
}
