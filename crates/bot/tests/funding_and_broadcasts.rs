//! Who pays, through the real handlers: a free use counts only for a
//! generation that did not fail, a limited admin spends the budget the owner
//! set, and a broadcast is sent once per recipient by however many front
//! processes share the database, taken over where a dead one stopped.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{App, Options};
use kiebot_domain::{GenerationId, GenerationStatus, ModelId, Money, UserId};
use kiebot_store::NewBroadcast;

fn z_image() -> ModelId {
    ModelId::parse("z-image").unwrap()
}

async fn free_used(app: &App, user: i64) -> u32 {
    let day = chrono::Local::now().format("%Y-%m-%d").to_string();
    app.store()
        .free_usage()
        .used_today(UserId(user), &z_image(), &day)
        .await
        .unwrap()
}

async fn fail(app: &App, id: GenerationId) -> bool {
    app.store()
        .generations()
        .finish_failure(id, GenerationStatus::Failed, "500", "KIE failed")
        .await
        .unwrap()
}

async fn succeed(app: &App, id: GenerationId) {
    let gens = app.store().generations();
    assert!(
        gens.mark_submitted(id, &format!("t{id}"), 0, i64::MAX)
            .await
            .unwrap()
    );
    assert!(
        gens.finish_and_claim(
            id,
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

async fn budget_of(app: &App, user: i64) -> Option<Money> {
    app.store()
        .users()
        .get(UserId(user))
        .await
        .unwrap()
        .unwrap()
        .admin_budget
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_free_use_counts_only_for_a_generation_that_did_not_fail() {
    let mut app = App::start().await;
    let user = 300;
    app.onboard(user).await;

    let confirm = app.z_image_confirm(user).await.text.unwrap_or_default();
    assert!(confirm.contains("free use of the day"), "{confirm}");
    app.press(user, "Confirm").await;
    assert!(app.last_text(user).contains("has started"));
    let g = app.generations(user).await[0].clone();
    assert_eq!(g.price, Money::ZERO);
    assert!(g.free_day.is_some(), "the row records the free use");
    assert_eq!(free_used(&app, user).await, 1);

    // KIE fails it: the use comes back, once.
    assert!(fail(&app, g.id).await);
    assert_eq!(free_used(&app, user).await, 0);
    assert!(!fail(&app, g.id).await);
    assert_eq!(free_used(&app, user).await, 0);

    // One that succeeds keeps its use.
    app.z_image_confirm(user).await;
    app.press(user, "Confirm").await;
    let ok = app.generations(user).await[0].id;
    succeed(&app, ok).await;
    assert_eq!(free_used(&app, user).await, 1);
    assert_eq!(app.held(user).await, Money::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limited_admin_spends_the_budget_the_owner_sets() {
    let mut app = App::with(Options {
        admin_ids: vec![UserId(1), UserId(2)],
        ..Options::default()
    })
    .await;
    let (owner, admin, user) = (1, 2, 320);
    for u in [owner, admin, user] {
        app.onboard(u).await;
    }
    // Only the owner sets budgets, only for limited admins, with a reason.
    app.send(admin, "/budget 2 100 more please").await;
    assert!(
        app.last_text(admin).contains("Only the owner"),
        "{}",
        app.last_text(admin)
    );
    app.send(owner, "/budget 320 100 staff").await;
    assert!(
        app.last_text(owner).contains("not a limited admin"),
        "{}",
        app.last_text(owner)
    );
    app.send(owner, "/budget 2 100").await;
    assert!(
        app.last_text(owner).contains("Usage"),
        "{}",
        app.last_text(owner)
    );
    assert_eq!(budget_of(&app, admin).await, None);

    app.send(owner, "/budget 2 100 November tests").await;
    assert!(
        app.last_text(owner).contains("100.00"),
        "{}",
        app.last_text(owner)
    );
    assert_eq!(
        budget_of(&app, admin).await,
        Some(Money::from_minor(10_000))
    );
    let audit = app.store().audit().recent(1).await.unwrap();
    assert_eq!(
        (
            audit[0].actor,
            audit[0].action.as_str(),
            audit[0].target,
            audit[0].amount
        ),
        (
            UserId(owner),
            "set_budget",
            Some(UserId(admin)),
            Some(Money::from_minor(10_000))
        )
    );

    // The admin has no money of their own; the budget pays.
    let confirm = app.flux_confirm(admin).await.text.unwrap_or_default();
    assert!(
        confirm.contains("from the admin budget, 100.00"),
        "{confirm}"
    );
    app.press(admin, "Confirm").await;
    assert!(
        app.last_text(admin).contains("has started"),
        "{}",
        app.last_text(admin)
    );
    let g = app.generations(admin).await[0].clone();
    let cost = g.budget_spent.expect("paid by the budget");
    assert!(cost.is_positive());
    assert_eq!(g.price, Money::ZERO);
    assert_eq!(app.held(admin).await, Money::ZERO);
    let left = Money::from_minor(10_000 - cost.minor());
    assert_eq!(budget_of(&app, admin).await, Some(left));

    // Failing gives the budget back, once.
    assert!(fail(&app, g.id).await);
    assert!(!fail(&app, g.id).await);
    assert_eq!(
        budget_of(&app, admin).await,
        Some(Money::from_minor(10_000))
    );

    // A success keeps it spent.
    app.flux_confirm(admin).await;
    app.press(admin, "Confirm").await;
    let ok = app.generations(admin).await[0].id;
    succeed(&app, ok).await;
    assert_eq!(budget_of(&app, admin).await, Some(left));

    // Exhausted: refused with a clear message, and the admin's own balance
    // is not charged instead.
    let short = Money::from_minor(cost.minor() - 1);
    app.send(owner, &format!("/budget 2 {short} almost out"))
        .await;
    app.top_up(admin, 100_000).await;
    app.flux_confirm(admin).await;
    app.press(admin, "Confirm").await;
    let text = app.last_text(admin);
    assert!(text.contains("admin budget does not cover"), "{text}");
    assert!(text.contains("Nothing was charged"), "{text}");
    assert_eq!(
        app.generations(admin).await.len(),
        2,
        "no generation was created"
    );
    assert_eq!(app.held(admin).await, Money::ZERO);
    assert_eq!(budget_of(&app, admin).await, Some(short));

    // The owner is not charged and has no budget to spend.
    app.flux_confirm(owner).await;
    app.press(owner, "Confirm").await;
    let g = app.generations(owner).await[0].clone();
    assert_eq!((g.price, g.budget_spent), (Money::ZERO, None));
    assert_eq!(budget_of(&app, owner).await, None);

    // The user card shows the budget.
    app.send(owner, "/user 2").await;
    assert!(
        app.last_text(owner)
            .contains(&format!("admin budget: {short}")),
        "{}",
        app.last_text(owner)
    );
}

async fn seed_recipients(app: &App, ids: impl IntoIterator<Item = i64>) {
    for id in ids {
        app.store().users().ensure(UserId(id)).await.unwrap();
    }
}

fn received(app: &App, user: i64, text: &str) -> usize {
    app.tg
        .messages_to(user)
        .iter()
        .filter(|m| m.text.as_deref() == Some(text))
        .count()
}

fn reports(app: &App, admin: i64) -> Vec<String> {
    app.tg
        .messages_to(admin)
        .into_iter()
        .filter_map(|m| m.text)
        .filter(|t| t.contains("Broadcast finished"))
        .collect()
}

async fn create_broadcast(app: &App, text: &str) {
    app.store()
        .broadcasts()
        .create(&NewBroadcast {
            text: text.into(),
            admin_chat: 1,
            lang: "en".into(),
            created_by: UserId(1),
        })
        .await
        .unwrap()
        .unwrap();
}

/// An app with users `1..=recipients` and a running broadcast of `text`.
async fn broadcasting(postgres: bool, recipients: i64, text: &str) -> (App, Vec<i64>) {
    let app = App::with(Options {
        postgres,
        ..Options::default()
    })
    .await;
    let recipients: Vec<i64> = (1..=recipients).collect();
    seed_recipients(&app, recipients.iter().copied()).await;
    create_broadcast(&app, text).await;
    (app, recipients)
}

/// How many of `recipients` messages of `text` reached, in all.
fn received_by(app: &App, recipients: &[i64], text: &str) -> usize {
    recipients.iter().map(|&u| received(app, u, text)).sum()
}

async fn racing_fronts(postgres: bool) {
    let (app, recipients) = broadcasting(postgres, 40, "Race").await;
    // Three front processes start (or notice the broadcast) at once.
    let (b, c) = (app.another_process().await, app.another_process().await);
    tokio::join!(
        kiebot_bot::resume_broadcast(&app.deps),
        kiebot_bot::resume_broadcast(&b),
        kiebot_bot::resume_broadcast(&c),
    );
    // Whoever lost the race saw the lease held and left it; once the winner
    // is done, nobody has anything left to send.
    for d in [&app.deps, &b, &c] {
        kiebot_bot::resume_broadcast(d).await;
    }
    let counts: BTreeMap<i64, usize> = recipients
        .iter()
        .map(|&u| (u, received(&app, u, "Race")))
        .collect();
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    assert_eq!(
        reports(&app, 1),
        vec!["Broadcast finished: 40 delivered, 0 failed.".to_owned()]
    );
    assert!(app.store().broadcasts().running().await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_front_processes_send_each_recipient_the_broadcast_once() {
    racing_fronts(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_front_processes_send_each_recipient_the_broadcast_once_on_postgres() {
    racing_fronts(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_whose_front_died_is_taken_over_where_it_stopped() {
    let (app, recipients) = broadcasting(true, 200, "Takeover").await;
    let lease = Duration::from_millis(800);

    // Front A starts sending and dies part-way.
    let a = app.deps.clone();
    let front_a =
        tokio::spawn(async move { kiebot_bot::resume_broadcast_with_lease(&a, lease).await });
    app.tg
        .wait_for(
            |tg| {
                recipients
                    .iter()
                    .filter(|&&u| {
                        tg.messages_to(u)
                            .iter()
                            .any(|m| m.text.as_deref() == Some("Takeover"))
                    })
                    .count()
                    >= 10
            },
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    front_a.abort();
    let _ = front_a.await;
    let sent_by_a = received_by(&app, &recipients, "Takeover");
    assert!(sent_by_a < recipients.len(), "A finished before it died");

    // Front B, while A's lease still runs, leaves it alone...
    let b = app.another_process().await;
    kiebot_bot::resume_broadcast_with_lease(&b, lease).await;
    let now = received_by(&app, &recipients, "Takeover");
    assert_eq!(now, sent_by_a, "nobody sent while the lease was held");
    assert!(app.store().broadcasts().running().await.unwrap().is_some());

    // ...and takes over once it lapses, from where A stopped.
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    kiebot_bot::resume_broadcast_with_lease(&b, lease).await;
    let counts: BTreeMap<i64, usize> = recipients
        .iter()
        .map(|&u| (u, received(&app, u, "Takeover")))
        .collect();
    assert!(counts.values().all(|&n| n <= 1), "sent twice: {counts:?}");
    // A died at an await point: at most the one recipient it had taken but
    // not yet sent to is missed.
    let missed = counts.values().filter(|&&n| n == 0).count();
    assert!(missed <= 1, "{missed} missed: {counts:?}");
    assert_eq!(reports(&app, 1).len(), 1);
    let done = app.store().broadcasts().running().await.unwrap();
    assert!(done.is_none());
}

/// A front that stops gracefully stops its broadcast before the next
/// recipient and gives the lease back: the next process continues at once,
/// not after the lease, and nobody is skipped or sent to twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_front_gives_its_broadcast_back_for_the_next_one_to_continue_at_once() {
    let (app, recipients) = broadcasting(true, 200, "Handover").await;

    // Front A sends under the production lease (30 s) and is told to stop
    // part-way.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let front_a = tokio::spawn(kiebot_bot::watch_broadcasts(app.deps.clone(), async {
        let _ = stopped.await;
    }));
    app.tg
        .wait_for(
            |_| received_by(&app, &recipients, "Handover") >= 10,
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(20), front_a)
        .await
        .expect("front A stops within its wait")
        .unwrap();
    let sent_by_a = received_by(&app, &recipients, "Handover");
    assert!(sent_by_a < recipients.len(), "A finished before it stopped");
    let running = app.store().broadcasts().running().await.unwrap().unwrap();
    assert_eq!(running.claimed_until, None, "A kept its lease");

    // Front B, started right after, takes over without waiting out a lease.
    let b = app.another_process().await;
    tokio::time::timeout(
        kiebot_bot::BROADCAST_LEASE / 2,
        kiebot_bot::resume_broadcast(&b),
    )
    .await
    .expect("B goes on at once");
    let counts: BTreeMap<i64, usize> = recipients
        .iter()
        .map(|&u| (u, received(&app, u, "Handover")))
        .collect();
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    assert_eq!(
        reports(&app, 1),
        vec!["Broadcast finished: 200 delivered, 0 failed.".to_owned()]
    );
    assert!(app.store().broadcasts().running().await.unwrap().is_none());
}
