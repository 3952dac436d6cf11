//! The generation pipeline end to end, on both deployments: real SQLite or
//! PostgreSQL, the real SQLite or Redis queue, and the fake KIE and Bot API
//! servers over real HTTP.
//!
//! Every scenario ends with the same invariants: every generation terminal
//! and its user told, the ledger recomputing to every wallet, nothing held,
//! and the captured total equal to the prices of the generations that
//! succeeded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use kiebot_app::harness::{Flavor, Harness};
use kiebot_domain::{GenerationStatus, Money};
use kiebot_testkit::kie::{BadReply, Endpoint, Outcome};

const SETTLE: Duration = Duration::from_secs(60);

macro_rules! on_both {
    ($name:ident, $body:ident) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                $body(Flavor::Embedded).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn fleet() {
                $body(Flavor::Fleet).await;
            }
        }
    };
}

async fn finish(h: Harness) {
    h.wait_settled(SETTLE)
        .await
        .expect("every generation settles");
    h.assert_money_consistent().await;
    h.cleanup().await;
}

fn price() -> Money {
    Money::from_minor(1_000)
}

async fn a_successful_generation_is_charged_once_and_delivered(flavor: Flavor) {
    let mut h = Harness::start(flavor).await;
    let user = h.funded_user(Money::from_minor(5_000)).await;
    h.start_workers(4);
    let id = h.confirm(user, "google/nano-banana", price()).await;
    h.wait_settled(SETTLE).await.unwrap();
    assert_eq!(h.statuses(&[id]).await, vec![GenerationStatus::Delivered]);
    let wallet = h.ctx.store.ledger().wallet(user).await.unwrap();
    assert_eq!(wallet.balance, Money::from_minor(4_000));
    assert_eq!(wallet.held, Money::ZERO);
    let photos = h.telegram.sent_of("sendPhoto");
    assert_eq!(photos.len(), 1, "one photo delivered");
    assert_eq!(photos[0].chat_id, Some(user.0));
    assert_eq!(h.kie.created_count(), 1);
    finish(h).await;
}
on_both!(
    success,
    a_successful_generation_is_charged_once_and_delivered
);

async fn kie_429_and_500_bursts_are_ridden_out(flavor: Flavor) {
    let mut h = Harness::start(flavor).await;
    let user = h.funded_user(Money::from_minor(10_000)).await;
    h.kie.fail_next_creates(2, 429);
    h.kie.fail_next_polls(2, 500);
    h.start_workers(4);
    let ids = vec![
        h.confirm(user, "google/nano-banana", price()).await,
        h.confirm(user, "z-image", price()).await,
    ];
    h.wait_settled(SETTLE).await.unwrap();
    assert_eq!(h.statuses(&ids).await, vec![GenerationStatus::Delivered; 2]);
    assert!(
        h.kie.calls(Endpoint::CreateTask) >= 4,
        "the failed creates were retried"
    );
    finish(h).await;
}
on_both!(bursts, kie_429_and_500_bursts_are_ridden_out);

async fn a_422_fails_the_generation_releases_the_hold_and_tells_the_user(flavor: Flavor) {
    let mut h = Harness::start(flavor).await;
    let user = h.funded_user(Money::from_minor(5_000)).await;
    h.kie
        .reject_creates_with(422, "prompt: contains forbidden words");
    h.start_workers(2);
    let id = h.confirm(user, "google/nano-banana", price()).await;
    h.wait_settled(SETTLE).await.unwrap();
    assert_eq!(h.statuses(&[id]).await, vec![GenerationStatus::Failed]);
    let wallet = h.ctx.store.ledger().wallet(user).await.unwrap();
    assert_eq!(wallet.balance, Money::from_minor(5_000), "not charged");
    assert_eq!(wallet.held, Money::ZERO);
    assert_eq!(h.kie.calls(Endpoint::CreateTask), 1, "a 422 is not retried");
    let notice = h.telegram.sent_of("sendMessage");
    assert_eq!(notice.len(), 1);
    let text = notice[0].text.clone().unwrap_or_default();
    assert!(
        text.contains("not charged") || text.contains("не списаны"),
        "{text}"
    );
    finish(h).await;
}
on_both!(
    rejected,
    a_422_fails_the_generation_releases_the_hold_and_tells_the_user
);

async fn a_task_that_never_finishes_expires_at_its_deadline(flavor: Flavor) {
    let mut h = Harness::start(flavor).await;
    let user = h.funded_user(Money::from_minor(5_000)).await;
    h.kie.set_default_outcome(Outcome::Never);
    h.start_workers(2);
    let id = h.confirm(user, "google/nano-banana", price()).await;
    // Pull the deadline in: the catalog's ten minutes would make a slow test.
    tokio::time::sleep(Duration::from_millis(500)).await;
    sqlx::query("UPDATE generations SET deadline_at = $1 WHERE id = $2")
        .bind(kiebot_worker::now_ms() + 1_500)
        .bind(id.0)
        .execute(h.ctx.store.pool())
        .await
        .unwrap();
    h.wait_settled(SETTLE).await.unwrap();
    assert_eq!(h.statuses(&[id]).await, vec![GenerationStatus::Expired]);
    assert_eq!(
        h.ctx.store.ledger().wallet(user).await.unwrap().balance,
        Money::from_minor(5_000)
    );
    finish(h).await;
}
on_both!(
    never_finishes,
    a_task_that_never_finishes_expires_at_its_deadline
);

async fn a_task_finished_in_time_but_polled_late_is_delivered_not_expired(flavor: Flavor) {
    // No poll for a long while after submission: the poll is set by hand.
    let cfg = kiebot_worker::PipelineConfig {
        poll_first: Duration::from_secs(30),
        ..kiebot_app::harness::quick_pipeline()
    };
    let mut h = Harness::with_config(flavor, cfg).await;
    let user = h.funded_user(Money::from_minor(5_000)).await;
    h.kie
        .set_default_outcome(Outcome::succeed_after(Duration::from_millis(800), 1));
    h.start_workers(2);
    let id = h.confirm(user, "google/nano-banana", price()).await;
    let gens = h.ctx.store.generations();
    let submitted = async {
        loop {
            if h.statuses(&[id]).await == vec![GenerationStatus::Submitted] {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), submitted)
        .await
        .expect("submitted");
    // KIE finishes at 0.8 s, the deadline is at 1 s, but the poll (as under
    // load) only runs at 2.5 s: the task made it, so it must be delivered.
    let now = kiebot_worker::now_ms();
    sqlx::query("UPDATE generations SET deadline_at = $1, next_poll_at = $2 WHERE id = $3")
        .bind(now + 1_000)
        .bind(now + 2_500)
        .bind(id.0)
        .execute(h.ctx.store.pool())
        .await
        .unwrap();
    h.wait_settled(SETTLE).await.unwrap();
    assert_eq!(h.statuses(&[id]).await, vec![GenerationStatus::Delivered]);
    let g = gens.get(id).await.unwrap().unwrap();
    assert!(g.fail_code.is_none(), "{:?}", g.fail_code);
    assert_eq!(
        h.ctx.store.ledger().wallet(user).await.unwrap().balance,
        Money::from_minor(5_000 - price().minor())
    );
    finish(h).await;
}
on_both!(
    polled_late,
    a_task_finished_in_time_but_polled_late_is_delivered_not_expired
);

async fn a_lost_create_reply_is_retried_and_charged_once(flavor: Flavor) {
    let mut cfg = kiebot_app::harness::quick_pipeline();
    cfg.lease = Duration::from_secs(2);
    let mut h = Harness::with_config(flavor, cfg).await;
    let user = h.funded_user(Money::from_minor(5_000)).await;
    h.kie.drop_next_create_replies(1);
    h.start_workers(2);
    let id = h.confirm(user, "google/nano-banana", price()).await;
    h.wait_settled(SETTLE).await.unwrap();
    assert_eq!(h.statuses(&[id]).await, vec![GenerationStatus::Delivered]);
    // The lost reply created a task we never heard of; the retry made a
    // second one. The operator pays KIE twice, the user once.
    assert_eq!(h.kie.created_count(), 2);
    let g = h.ctx.store.generations().get(id).await.unwrap().unwrap();
    assert_eq!(g.submit_attempts, 2);
    assert_eq!(
        h.ctx.store.ledger().wallet(user).await.unwrap().balance,
        Money::from_minor(4_000)
    );
    finish(h).await;
}
on_both!(lost_reply, a_lost_create_reply_is_retried_and_charged_once);

async fn bad_kie_replies_fail_cleanly(flavor: Flavor) {
    for bad in [
        BadReply::HtmlPage,
        BadReply::TruncatedJson,
        BadReply::UnknownState,
        BadReply::MissingTaskId,
        BadReply::ResultJsonNotJson,
    ] {
        let mut h = Harness::start(flavor).await;
        let user = h.funded_user(Money::from_minor(5_000)).await;
        h.kie.bad_replies(bad);
        h.start_workers(2);
        let id = h.confirm(user, "google/nano-banana", price()).await;
        h.wait_settled(SETTLE)
            .await
            .unwrap_or_else(|e| panic!("{bad:?}: {e}"));
        assert_eq!(
            h.statuses(&[id]).await,
            vec![GenerationStatus::Failed],
            "{bad:?}"
        );
        assert_eq!(
            h.ctx.store.ledger().wallet(user).await.unwrap().balance,
            Money::from_minor(5_000),
            "{bad:?}"
        );
        finish(h).await;
    }
}
on_both!(bad_replies, bad_kie_replies_fail_cleanly);

async fn many_generations_settle_with_consistent_money(flavor: Flavor) {
    let mut h = Harness::start(flavor).await;
    let mut users = vec![];
    for _ in 0..10 {
        users.push(h.funded_user(Money::from_minor(100_000)).await);
    }
    // A mix of outcomes: most succeed, some fail at KIE.
    h.kie
        .set_model_outcome("z-image", Outcome::fail("500", "internal error"));
    h.start_workers(8);
    let mut ids = vec![];
    for i in 0..60 {
        let model = if i % 5 == 0 {
            "z-image"
        } else {
            "google/nano-banana"
        };
        ids.push(
            h.confirm(
                users[i % users.len()],
                model,
                Money::from_minor(100 + i as i64),
            )
            .await,
        );
    }
    h.wait_settled(SETTLE).await.unwrap();
    let statuses = h.statuses(&ids).await;
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == GenerationStatus::Failed)
            .count(),
        12
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == GenerationStatus::Delivered)
            .count(),
        48
    );
    finish(h).await;
}
on_both!(many, many_generations_settle_with_consistent_money);

async fn duplicate_and_forged_callbacks_change_nothing(flavor: Flavor) {
    let mut h = Harness::start(flavor).await;
    let user = h.funded_user(Money::from_minor(5_000)).await;
    h.start_workers(2);
    let id = h.confirm(user, "google/nano-banana", price()).await;
    h.wait_settled(SETTLE).await.unwrap();
    // Replaying finalization, as duplicate callbacks or job deliveries would:
    let g = h.ctx.store.generations().get(id).await.unwrap().unwrap();
    kiebot_worker::finalize::run(&h.ctx, kiebot_jobs::Finalize { generation: id })
        .await
        .unwrap();
    kiebot_worker::poll::run(&h.ctx, kiebot_jobs::Poll { generation: id })
        .await
        .unwrap();
    kiebot_worker::deliver::run(&h.ctx, kiebot_jobs::Deliver { generation: id })
        .await
        .unwrap();
    let again = h.ctx.store.generations().get(id).await.unwrap().unwrap();
    assert_eq!(again.status, g.status);
    assert_eq!(h.telegram.sent_of("sendPhoto").len(), 1, "delivered once");
    assert_eq!(
        h.ctx.store.ledger().wallet(user).await.unwrap().balance,
        Money::from_minor(4_000)
    );
    finish(h).await;
}
on_both!(duplicates, duplicate_and_forged_callbacks_change_nothing);

async fn telegram_429_on_delivery_is_waited_out(flavor: Flavor) {
    let mut h = Harness::start(flavor).await;
    let user = h.funded_user(Money::from_minor(5_000)).await;
    h.telegram.fail_next(
        "sendPhoto",
        1,
        kiebot_testkit::telegram::Fault::TooManyRequests { retry_after: 1 },
    );
    h.start_workers(2);
    let id = h.confirm(user, "google/nano-banana", price()).await;
    h.wait_settled(SETTLE).await.unwrap();
    assert_eq!(h.statuses(&[id]).await, vec![GenerationStatus::Delivered]);
    assert_eq!(
        h.telegram.sent_of("sendPhoto").len(),
        1,
        "delivered exactly once"
    );
    finish(h).await;
}
on_both!(telegram_429, telegram_429_on_delivery_is_waited_out);

async fn lost_jobs_are_found_again_by_the_reconciler(flavor: Flavor) {
    let mut h = Harness::start(flavor).await;
    let user = h.funded_user(Money::from_minor(50_000)).await;
    // Generations confirmed while their Submit jobs were lost (a crash
    // between commit and enqueue, or a queue that forgot them).
    let mut ids = vec![];
    for i in 0..5 {
        ids.push(
            h.create(user, "google/nano-banana", price(), &format!("lost-{i}"))
                .await,
        );
    }
    h.start_workers(2);
    h.wait_settled(SETTLE).await.unwrap();
    assert_eq!(h.statuses(&ids).await, vec![GenerationStatus::Delivered; 5]);
    finish(h).await;
}
on_both!(lost_jobs, lost_jobs_are_found_again_by_the_reconciler);

async fn dry_run_calls_no_kie_endpoint_and_charges_nothing(flavor: Flavor) {
    let mut h = Harness::start(flavor).await;
    let user = h.funded_user(Money::from_minor(5_000)).await;
    let mut ctx = (*h.ctx).clone_for_test();
    ctx.kie = std::sync::Arc::new(kiebot_kie::DryRunKie::new());
    h.ctx = std::sync::Arc::new(ctx);
    h.start_workers(2);
    let paid = h.confirm(user, "google/nano-banana", price()).await;
    let free = h.confirm(user, "google/nano-banana", Money::ZERO).await;
    h.wait_settled(SETTLE).await.unwrap();
    assert_eq!(h.kie.created_count(), 0);
    assert_eq!(h.kie.calls(Endpoint::RecordInfo), 0);
    assert_eq!(
        h.statuses(&[paid, free]).await,
        vec![GenerationStatus::Failed, GenerationStatus::Delivered]
    );
    assert_eq!(
        h.ctx.store.ledger().wallet(user).await.unwrap().balance,
        Money::from_minor(5_000)
    );
    finish(h).await;
}
on_both!(dry_run, dry_run_calls_no_kie_endpoint_and_charges_nothing);

async fn finished_jobs_are_vacuumed_from_the_queue(flavor: Flavor) {
    let mut h = Harness::start(flavor).await;
    let user = h.funded_user(Money::from_minor(5_000)).await;
    h.start_workers(2);
    h.confirm(user, "google/nano-banana", price()).await;
    h.wait_settled(SETTLE).await.unwrap();
    h.stop_workers().await;
    // Jobs finished just now are within any retention (the reconciler's own
    // vacuum, with the production retention, must not take them either).
    assert_eq!(
        h.ctx
            .queues
            .vacuum(kiebot_worker::reconcile::QUEUE_RETENTION)
            .await
            .unwrap(),
        0,
        "recent jobs are kept"
    );
    // Submit and poll left bookkeeping behind (the poll finalized and
    // delivered in the same job).
    let removed = h.ctx.queues.vacuum(Duration::ZERO).await.unwrap();
    assert!(removed >= 2, "removed {removed}");
    assert_eq!(
        h.ctx.queues.vacuum(Duration::ZERO).await.unwrap(),
        0,
        "nothing left"
    );
    finish(h).await;
}
on_both!(vacuum, finished_jobs_are_vacuumed_from_the_queue);

/// Redis only (the SQLite queue has no bound): a Submit the full queue
/// leaves out is enqueued by the reconciler as soon as the queue has
/// drained, not after the grace a fresh row gives its own job (here far
/// longer than the test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_left_out_of_a_full_queue_runs_once_the_queue_drains() {
    use kiebot_domain::GenerationId;
    use kiebot_jobs::{Job, REDIS_BACKLOG};
    let config = kiebot_worker::PipelineConfig {
        pending_grace: Duration::from_secs(600),
        ..kiebot_app::harness::quick_pipeline()
    };
    let mut h = Harness::with_config(Flavor::Fleet, config).await;
    let user = h.funded_user(Money::from_minor(5_000)).await;
    // Jobs of generations that do not exist: no-ops for the workers.
    let filler: Vec<Job> = (0..REDIS_BACKLOG)
        .map(|i| Job::Submit(GenerationId(1_000_000_000 + i as i64)))
        .collect();
    assert!(h.ctx.queues.push_many(&filler).await.unwrap().is_empty());
    let id = h
        .create(user, "google/nano-banana", price(), "left-out")
        .await;
    assert!(
        !h.ctx.queues.push(Job::Submit(id)).await.unwrap(),
        "the full queue leaves the job out"
    );
    h.start_workers(4);
    h.wait_settled(SETTLE).await.unwrap();
    assert_eq!(h.statuses(&[id]).await, vec![GenerationStatus::Delivered]);
    finish(h).await;
}

/// Redis only: the vacuum walks the job hash in chunks (several here) and
/// removes every finished job, then finds nothing left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_vacuum_removes_every_finished_job_chunk_by_chunk() {
    use kiebot_domain::GenerationId;
    use kiebot_jobs::Job;
    let mut h = Harness::start(Flavor::Fleet).await;
    // Jobs of generations that do not exist: each ends at once as done.
    let jobs: Vec<Job> = (0..1_600)
        .map(|i| Job::Submit(GenerationId(2_000_000_000 + i)))
        .collect();
    assert!(h.ctx.queues.push_many(&jobs).await.unwrap().is_empty());
    h.start_workers(8);
    let deadline = std::time::Instant::now() + SETTLE;
    let mut removed = 0;
    while removed < jobs.len() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        removed += h.ctx.queues.vacuum(Duration::ZERO).await.unwrap();
    }
    h.stop_workers().await;
    assert_eq!(removed, jobs.len(), "every finished job removed once");
    assert_eq!(h.ctx.queues.vacuum(Duration::ZERO).await.unwrap(), 0);
    let depths = h.ctx.queues.depths().await.unwrap();
    assert!(depths.iter().all(|(_, d)| *d == 0), "{depths:?}");
    finish(h).await;
}
