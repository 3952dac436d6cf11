//! Generations: one per confirmation, limits enforced, and the money follows
//! the state exactly once.

// Test helpers are plain functions (the cases run through a macro); a failed
// unwrap in them is a failed test, as in a #[test] body.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use common::{
    assert_books_balance, confirmation, entries_with_prefix, funded_user, succeed_with, wallet,
};
use kiebot_domain::{End, GenerationId, GenerationStatus as S, Lifecycle, Money, NextJob, Notice};
use std::time::Duration;

use kiebot_store::{Creation, Funding, Store, StoreError};

on_both_engines!(
    confirming_a_draft_twice_creates_one_generation_and_one_hold,
    a_sixth_active_generation_is_refused,
    a_blocked_user_cannot_confirm,
    confirming_without_enough_money_changes_nothing,
    finishing_successfully_twice_captures_once,
    a_failed_generation_releases_once_and_cannot_succeed_later,
    racing_finishers_move_the_money_once,
    a_free_generation_places_no_hold,
    finishing_refuses_illegal_steps_and_carries_its_money_step,
    the_lifecycle_queries_find_due_work,
    the_confirmations_traceparent_is_kept_with_the_generation,
    finishing_with_a_delivery_claim_moves_money_once_and_holds_the_claim,
    a_recent_setting_is_reread_after_a_change,
    a_confirmation_leaves_its_dialogue_only_with_a_new_generation,
    a_burst_of_confirmations_gets_each_its_own_outcome,
    many_users_are_read_with_their_live_dialogues,
    a_batch_claim_never_takes_more_than_its_limit,
);

/// The reconciler's batch claims take at most `limit` rows, each once: the
/// poll budget and the queue's room are counted in rows.
async fn a_batch_claim_never_takes_more_than_its_limit(store: Store) {
    let mut ids = std::collections::BTreeSet::new();
    for u in 1..=6 {
        let user = funded_user(&store, u, 10_000).await;
        for n in 0..5 {
            ids.insert(submitted(&store, user, &format!("{u}-{n}"), 100).await);
        }
    }
    let gens = store.generations();
    let mut claimed = std::collections::BTreeSet::new();
    for limit in (1..=4).cycle() {
        let got = gens.claim_due_polls(1, i64::MAX / 2, limit).await.unwrap();
        if got.is_empty() {
            break;
        }
        assert!(
            got.len() <= usize::try_from(limit).unwrap(),
            "{} rows claimed with a limit of {limit}",
            got.len()
        );
        for (id, _) in got {
            assert!(claimed.insert(id), "{id:?} claimed twice");
        }
    }
    assert_eq!(claimed, ids, "every due poll claimed once");
}

/// The senders of a getUpdates batch read at once: each user that exists,
/// with the dialogue the single read would give, more than a batch holds.
async fn many_users_are_read_with_their_live_dialogues(store: Store) {
    use kiebot_domain::UserId;
    let now = 1_000_000;
    let ttl = Duration::from_secs(60);
    for u in 1..=150 {
        store.users().ensure(UserId(u)).await.unwrap();
    }
    for u in (1..=150).step_by(3) {
        let state = format!(r#"{{"at":{u}}}"#);
        store
            .dialogues()
            .save(UserId(u), &state, now, ttl)
            .await
            .unwrap();
    }
    // Expired by the time of the read.
    store
        .dialogues()
        .save(UserId(2), r#"{"old":true}"#, now - 120_000, ttl)
        .await
        .unwrap();
    store.users().set_blocked(UserId(5), true).await.unwrap();
    let asked: Vec<UserId> = (1..=160).map(UserId).collect();
    let read = store
        .users()
        .get_with_dialogue_many(&asked, now)
        .await
        .unwrap();
    assert_eq!(read.len(), 150, "users 151..=160 do not exist");
    for u in asked {
        let single = store.users().get_with_dialogue(u, now).await.unwrap();
        let many = read.get(&u).cloned();
        assert_eq!(
            many.map(|(user, d)| (user.id, user.blocked, d)),
            single.map(|(user, d)| (user.id, user.blocked, d)),
            "user {u}"
        );
    }
    assert_eq!(read[&UserId(4)].1.as_deref(), Some(r#"{"at":4}"#));
    assert_eq!(read[&UserId(2)].1, None);
    assert!(read[&UserId(5)].0.blocked);
    assert!(
        store
            .users()
            .get_with_dialogue_many(&[], now)
            .await
            .unwrap()
            .is_empty()
    );
}

/// The active limit is counted on every confirmation, so its plan must not
/// depend on statistics: with none yet (a young table) and thousands of
/// active generations of other users, the count reads only the user's own
/// active rows, in the generic plan a session keeps for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_active_limit_reads_only_the_users_active_generations() {
    let db = kiebot_testkit::TestDb::postgres().await;
    let store = common::store(&db).await;
    let plan = db
        .generic_plan(
            "INSERT INTO users (id, role, blocked, created_at, last_seen_at) \
             SELECT g, 'user', FALSE, 0, 0 FROM generate_series(1, 2000) g; \
             INSERT INTO generations (user_id, draft_key, model, params, request, price, status, \
                 chat_id, deadline_at, created_at, updated_at, submit_attempts, poll_attempts, \
                 delivery_attempts) \
             SELECT 1 + g % 2000, 'k' || g, 'm', '{}', '{}', 100, \
                 CASE WHEN g % 2 = 0 THEN 'pending' ELSE 'submitted' END, \
                 g, 0, 0, 0, 0, 0, 0 FROM generate_series(1, 6000) g",
            "SELECT COUNT(*) FROM generations \
             WHERE user_id = $1 AND status IN ('pending', 'submitted') AND id <> $2",
            "BIGINT, BIGINT",
            "777, 0",
        )
        .await;
    assert!(
        plan.contains("Index Scan using generations_active_by_user") && !plan.contains("Bitmap"),
        "the active count scans more than the user's active rows:\n{plan}"
    );
    store.close().await;
}

/// A KIE callback or poll finds its generation by task id. Only submitted
/// generations have one, so the unique index holds only those; the lookup
/// must still use it, in the generic plan, among thousands of generations
/// not yet submitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_id_is_looked_up_by_its_index_though_most_generations_have_none() {
    let db = kiebot_testkit::TestDb::postgres().await;
    let store = common::store(&db).await;
    let plan = db
        .generic_plan(
            "INSERT INTO users (id, role, blocked, created_at, last_seen_at) \
             VALUES (1, 'user', FALSE, 0, 0); \
             INSERT INTO generations (user_id, draft_key, model, params, request, price, status, \
                 kie_task_id, chat_id, deadline_at, created_at, updated_at, submit_attempts, \
                 poll_attempts, delivery_attempts) \
             SELECT 1, 'k' || g, 'm', '{}', '{}', 100, \
                 CASE WHEN g % 10 = 0 THEN 'submitted' ELSE 'pending' END, \
                 CASE WHEN g % 10 = 0 THEN 'task-' || g END, \
                 1, 0, 0, 0, 0, 0, 0 FROM generate_series(1, 5000) g",
            "SELECT id FROM generations WHERE kie_task_id = $1",
            "TEXT",
            "'task-70'",
        )
        .await;
    assert!(
        plan.contains("Index Scan using generations_kie_task_id"),
        "the lookup by task id does not use the task id index:\n{plan}"
    );
    store.close().await;
}

/// The batch confirmation runs in PL/pgSQL, whose statements keep the
/// generic plans a connection made on its first calls: on a fresh
/// deployment, when every table is nearly empty. Those plans must reach
/// rows by key, since a table scanned in them is scanned whole on every
/// batch as it grows. The batch holds plain elements (one statement for
/// all) and a user's two drafts (the single function, each alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batch_confirmation_scans_no_table_in_plans_made_on_empty_tables() {
    let db = kiebot_testkit::TestDb::postgres().await;
    let store = common::store(&db).await;
    let element = |idx: u32, user: u32, key: &str| {
        format!(
            r#"{{"idx":{idx},"user_id":{user},"draft_key":"{key}","model":"m","params":"{{}}","request":"{{}}","price":100,"chat_id":{user},"deadline_at":9,"max_active":5,"dialogue":"{{}}","dialogue_field":"generation","dialogue_expires":9}}"#
        )
    };
    let batch = [
        element(0, 1, "1:a"),
        element(1, 2, "2:a"),
        element(2, 3, "3:a"),
        element(3, 3, "3:b"),
    ]
    .join(",");
    let scans = db
        .seq_scans(
            "INSERT INTO users (id, role, blocked, created_at, last_seen_at) \
             SELECT g, 'user', FALSE, 0, 0 FROM generate_series(1, 3) g; \
             INSERT INTO wallets (user_id, balance, held) \
             SELECT g, 1000, 0 FROM generate_series(1, 3) g",
            &format!(
                "DO $$ BEGIN \
                 IF (SELECT COUNT(*) FROM kiebot_create_generations('[{batch}]', 1) \
                     WHERE out_created) <> 4 THEN RAISE 'not every draft was created'; \
                 END IF; END $$"
            ),
        )
        .await;
    assert!(
        scans.is_empty(),
        "the batch confirmation scanned tables (table, scans): {scans:?}"
    );
    store.close().await;
}

/// Enough confirmations at once that PostgreSQL writes most of them in
/// batches: every one still gets the outcome it would get alone.
async fn a_burst_of_confirmations_gets_each_its_own_outcome(store: Store) {
    const USERS: i64 = 60;
    for u in 1..=USERS {
        // Every third user can afford one generation only.
        let money = if u % 3 == 0 { 100 } else { 1_000 };
        funded_user(&store, u, money).await;
    }
    store
        .users()
        .set_blocked(kiebot_domain::UserId(7), true)
        .await
        .unwrap();
    let press = |u: i64, draft: &'static str| {
        let store = store.clone();
        tokio::spawn(async move {
            let new = confirmation(kiebot_domain::UserId(u), &format!("{u}:{draft}"), 100);
            store.generations().create_pending(&new).await
        })
    };
    // Per user: a draft, a double tap on it, and a second draft.
    let mut presses = Vec::new();
    for u in 1..=USERS {
        presses.push((u, "a", press(u, "a")));
        presses.push((u, "a", press(u, "a")));
        presses.push((u, "b", press(u, "b")));
    }
    let mut created = std::collections::HashMap::new();
    let mut refused_for_money = std::collections::HashSet::new();
    for (u, draft, p) in presses {
        match p.await.unwrap() {
            Ok(c) => {
                // Both taps on one draft name the same generation.
                let id = *created.entry((u, draft)).or_insert(c.id());
                assert_eq!(id, c.id(), "user {u} draft {draft}");
                assert_ne!(u, 7, "a blocked user confirmed");
            }
            Err(StoreError::Blocked { .. }) => assert_eq!(u, 7),
            Err(StoreError::InsufficientFunds { available, .. }) => {
                assert_eq!(u % 3, 0, "user {u} had money");
                assert_eq!(available, Money::ZERO);
                refused_for_money.insert((u, draft));
            }
            Err(e) => panic!("user {u} draft {draft}: {e:?}"),
        }
    }
    // Users 3, 6, .. afford one of their two drafts; user 7 none.
    let poor = USERS / 3;
    assert_eq!(
        refused_for_money.len() as i64,
        poor,
        "one draft refused per poor user"
    );
    assert_eq!(created.len() as i64, 2 * (USERS - 1) - poor);
    for u in 1..=USERS {
        let held = wallet(&store, kiebot_domain::UserId(u)).await.1;
        let expected = match u {
            7 => 0,
            u if u % 3 == 0 => 100,
            _ => 200,
        };
        assert_eq!(held, expected, "user {u}");
    }
    assert_books_balance(&store).await;
}

async fn a_confirmation_leaves_its_dialogue_only_with_a_new_generation(store: Store) {
    use kiebot_store::DialogueAfter;
    let user = funded_user(&store, 1, 150).await;
    let dialogues = store.dialogues();
    let now = kiebot_store::now_ms();
    dialogues
        .save(user, r#"{"s":"wizard"}"#, now, Duration::from_secs(60))
        .await
        .unwrap();
    let then = DialogueAfter {
        state_json: r#"{"s":"confirmed","draft":7,"generation":0}"#,
        id_field: "generation",
        ttl: Duration::from_secs(60),
    };
    let state = || async {
        let raw = dialogues.load(user, kiebot_store::now_ms()).await.unwrap();
        serde_json::from_str::<serde_json::Value>(&raw.expect("a dialogue")).unwrap()
    };

    // Refused (not enough money): neither the generation nor the dialogue.
    let costly = confirmation(user, "costly", 200);
    let refused = store
        .generations()
        .confirm(&costly, &Funding::Wallet, &then)
        .await;
    assert!(
        matches!(refused, Err(StoreError::InsufficientFunds { .. })),
        "{refused:?}"
    );
    assert_eq!(state().await["s"], "wizard");

    // Created: the dialogue carries the new id, the rest as given.
    let new = confirmation(user, "d", 100);
    let Creation::Created(id) = store
        .generations()
        .confirm(&new, &Funding::Wallet, &then)
        .await
        .unwrap()
    else {
        panic!("created");
    };
    let after = state().await;
    assert_eq!(after["s"], "confirmed");
    assert_eq!(after["draft"], 7);
    assert_eq!(after["generation"], id.0);
    assert_eq!(wallet(&store, user).await, (150, 100));

    // A second tap finds the generation and leaves the dialogue alone.
    dialogues
        .save(user, r#"{"s":"idle_again"}"#, now, Duration::from_secs(60))
        .await
        .unwrap();
    let again = store
        .generations()
        .confirm(&new, &Funding::Wallet, &then)
        .await
        .unwrap();
    assert_eq!(again, Creation::AlreadyExists(id));
    assert_eq!(state().await["s"], "idle_again");
    assert_eq!(wallet(&store, user).await, (150, 100));
    assert_books_balance(&store).await;
}

async fn finishing_with_a_delivery_claim_moves_money_once_and_holds_the_claim(store: Store) {
    use kiebot_domain::TaskOutcome as Outcome;
    let user = funded_user(&store, 1, 1000).await;
    store.users().set_language(user, "ru").await.unwrap();
    let gens = store.generations();
    let now = kiebot_store::now_ms();
    let lease = now + 60_000;

    let ok = submitted(&store, user, "ok", 300).await;
    let result = Outcome::Success {
        result: r#"{"resultUrls":["https://example.com/a.png"]}"#.into(),
    };
    let claim = gens
        .finish_and_claim(ok, S::Succeeded, &result, lease)
        .await
        .unwrap()
        .expect("the first finish moves the row");
    assert_eq!(claim.generation.status, S::Succeeded);
    assert_eq!(claim.generation.claimed_until, Some(lease));
    assert_eq!(claim.generation.delivery_attempts, 1);
    assert_eq!(claim.language.as_deref(), Some("ru"));
    assert_eq!(wallet(&store, user).await, (700, 0));
    // Repeated: nothing moves, and the claim keeps others from delivering.
    assert!(
        gens.finish_and_claim(ok, S::Succeeded, &result, lease)
            .await
            .unwrap()
            .is_none()
    );
    assert!(gens.claim_delivery(ok, now, lease).await.unwrap().is_none());
    // A failure cannot follow a success, nor a success be recorded as failed.
    let late = Outcome::Failure {
        code: "500".into(),
        reason: "late".into(),
    };
    assert!(matches!(
        gens.finish_and_claim(ok, S::Failed, &late, lease).await,
        Err(StoreError::IllegalTransition(_))
    ));
    assert!(matches!(
        gens.finish_and_claim(ok, S::Failed, &result, lease).await,
        Err(StoreError::IllegalTransition(_))
    ));
    assert_eq!(entries_with_prefix(&store, "capture:").await, 1);

    let bad = submitted(&store, user, "bad", 200).await;
    let claim = gens
        .finish_and_claim(bad, S::Expired, &late, lease)
        .await
        .unwrap()
        .expect("the first finish moves the row");
    assert_eq!(claim.generation.status, S::Expired);
    assert_eq!(claim.generation.fail_code.as_deref(), Some("500"));
    assert!(
        gens.finish_and_claim(bad, S::Failed, &late, lease)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(entries_with_prefix(&store, "release:").await, 1);
    assert_eq!(wallet(&store, user).await, (700, 0));
    // Once the lease has run out, the ordinary claim takes over.
    let retaken = gens.claim_delivery(bad, lease, lease + 1).await.unwrap();
    assert_eq!(retaken.map(|c| c.generation.delivery_attempts), Some(2));
    let lifecycle = |id| async move { gens.get(id).await.unwrap().unwrap().lifecycle };
    assert_eq!(
        lifecycle(bad).await,
        Lifecycle::Finished {
            end: End::Expired,
            notice: Notice::Claimed { until: lease + 1 }
        }
    );
    // Given up, it needs nothing more; an operator's nudge makes it due.
    assert!(gens.give_up_delivery(bad, "chat gone").await.unwrap());
    assert_eq!(lifecycle(bad).await.next_job(), NextJob::Nothing);
    let nudged = gens.nudge(bad, lease + 2).await.unwrap().unwrap();
    assert_eq!(
        nudged.lifecycle,
        Lifecycle::Finished {
            end: End::Expired,
            notice: Notice::Due { at: lease + 2 }
        }
    );
    assert_eq!(nudged.lifecycle.next_job(), NextJob::Deliver);
    assert!(gens.nudge(GenerationId(404), 0).await.unwrap().is_none());
    assert_books_balance(&store).await;
}

async fn a_recent_setting_is_reread_after_a_change(store: Store) {
    use std::time::Duration;
    let settings = store.settings();
    let hour = Duration::from_secs(3600);
    assert_eq!(settings.get_recent("switch", hour).await.unwrap(), None);
    // Changed through this store: seen at once.
    settings.set("switch", "1").await.unwrap();
    assert_eq!(
        settings
            .get_recent("switch", hour)
            .await
            .unwrap()
            .as_deref(),
        Some("1")
    );
    // Changed by another process: the kept value stands for its max age...
    sqlx::query("UPDATE settings SET value = '0' WHERE key = 'switch'")
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(
        settings
            .get_recent("switch", hour)
            .await
            .unwrap()
            .as_deref(),
        Some("1")
    );
    // ...and no longer.
    assert_eq!(
        settings
            .get_recent("switch", Duration::ZERO)
            .await
            .unwrap()
            .as_deref(),
        Some("0")
    );
    settings.delete("switch").await.unwrap();
    assert_eq!(settings.get_recent("switch", hour).await.unwrap(), None);
}

async fn the_confirmations_traceparent_is_kept_with_the_generation(store: Store) {
    let user = funded_user(&store, 1, 1000).await;
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut new = confirmation(user, "traced", 100);
    new.traceparent = Some(tp.to_owned());
    let id = store.generations().create_pending(&new).await.unwrap().id();
    let untraced = store
        .generations()
        .create_pending(&confirmation(user, "untraced", 100))
        .await
        .unwrap()
        .id();
    let gens = store.generations();
    assert_eq!(
        gens.get(id).await.unwrap().unwrap().traceparent.as_deref(),
        Some(tp)
    );
    assert_eq!(gens.get(untraced).await.unwrap().unwrap().traceparent, None);
}

async fn submitted(
    store: &Store,
    user: kiebot_domain::UserId,
    draft: &str,
    price: i64,
) -> GenerationId {
    let id = store
        .generations()
        .create_pending(&confirmation(user, draft, price))
        .await
        .unwrap()
        .id();
    let task = format!("task-{draft}");
    assert!(
        store
            .generations()
            .mark_submitted(id, &task, 0, i64::MAX)
            .await
            .unwrap()
    );
    id
}

async fn confirming_a_draft_twice_creates_one_generation_and_one_hold(store: Store) {
    let user = funded_user(&store, 1, 1000).await;
    let new = confirmation(user, "draft-1", 100);
    let first = store.generations().create_pending(&new).await.unwrap();
    let again = store.generations().create_pending(&new).await.unwrap();
    assert!(matches!(first, Creation::Created(_)));
    assert_eq!(again, Creation::AlreadyExists(first.id()));

    // A double tap: two confirmations of one draft at the same time.
    let taps: Vec<_> = (0..2)
        .map(|_| {
            let store = store.clone();
            let new = confirmation(user, "draft-2", 100);
            tokio::spawn(async move { store.generations().create_pending(&new).await })
        })
        .collect();
    let mut outcomes = vec![];
    for tap in taps {
        outcomes.push(tap.await.unwrap().unwrap());
    }
    let created = outcomes
        .iter()
        .filter(|c| matches!(c, Creation::Created(_)))
        .count();
    assert_eq!(created, 1, "{outcomes:?}");
    assert_eq!(outcomes[0].id(), outcomes[1].id());

    assert_eq!(
        store
            .generations()
            .list_for_user(user, 0, 10)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(entries_with_prefix(&store, "hold:").await, 2);
    assert_eq!(wallet(&store, user).await, (1000, 200));
    let generation = store.generations().get(first.id()).await.unwrap().unwrap();
    assert_eq!(
        (generation.status, generation.price),
        (S::Pending, Money::from_minor(100))
    );
    assert_eq!(generation.request_json, new.request_json);

    // The same draft id from another user is not theirs to reuse.
    let other = funded_user(&store, 2, 1000).await;
    let stolen = store
        .generations()
        .create_pending(&confirmation(other, "draft-1", 100))
        .await;
    assert!(
        matches!(stolen, Err(StoreError::KeyConflict { .. })),
        "{stolen:?}"
    );
    assert_books_balance(&store).await;
}

async fn a_sixth_active_generation_is_refused(store: Store) {
    let user = funded_user(&store, 1, 1000).await;
    let mut ids = vec![];
    for i in 0..5 {
        let new = confirmation(user, &format!("d{i}"), 10);
        ids.push(store.generations().create_pending(&new).await.unwrap().id());
    }
    let sixth = store
        .generations()
        .create_pending(&confirmation(user, "d5", 10))
        .await;
    assert!(
        matches!(sixth, Err(StoreError::TooManyActive { limit: 5 })),
        "{sixth:?}"
    );
    assert_eq!(wallet(&store, user).await, (1000, 50));
    assert!(store.ledger().entry("hold:6").await.unwrap().is_none());

    // Submitted ones count too; a finished one frees a slot.
    store
        .generations()
        .mark_submitted(ids[0], "t0", 0, i64::MAX)
        .await
        .unwrap();
    let still = store
        .generations()
        .create_pending(&confirmation(user, "d5", 10))
        .await;
    assert!(
        matches!(still, Err(StoreError::TooManyActive { .. })),
        "{still:?}"
    );
    store
        .generations()
        .finish_failure(ids[1], S::Canceled, "user", "canceled")
        .await
        .unwrap();
    let created = store
        .generations()
        .create_pending(&confirmation(user, "d5", 10))
        .await
        .unwrap();
    assert!(matches!(created, Creation::Created(_)));
    assert_eq!(wallet(&store, user).await, (1000, 50));
    assert_books_balance(&store).await;
}

async fn a_blocked_user_cannot_confirm(store: Store) {
    let user = funded_user(&store, 1, 1000).await;
    store.users().set_blocked(user, true).await.unwrap();
    let outcome = store
        .generations()
        .create_pending(&confirmation(user, "d", 100))
        .await;
    assert!(
        matches!(outcome, Err(StoreError::Blocked { user: u }) if u == user),
        "{outcome:?}"
    );
    assert!(
        store
            .generations()
            .list_for_user(user, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(wallet(&store, user).await, (1000, 0));

    store.users().set_blocked(user, false).await.unwrap();
    let created = store
        .generations()
        .create_pending(&confirmation(user, "d", 100))
        .await
        .unwrap();
    assert!(matches!(created, Creation::Created(_)));
    assert_books_balance(&store).await;
}

async fn confirming_without_enough_money_changes_nothing(store: Store) {
    let user = funded_user(&store, 1, 50).await;
    let new = confirmation(user, "d", 100);
    let outcome = store.generations().create_pending(&new).await;
    assert!(
        matches!(
            outcome,
            Err(StoreError::InsufficientFunds { available, requested })
                if available == Money::from_minor(50) && requested == Money::from_minor(100)
        ),
        "{outcome:?}"
    );
    assert!(
        store
            .generations()
            .list_for_user(user, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(wallet(&store, user).await, (50, 0));

    // The same confirm button works after a top-up.
    store
        .ledger()
        .topup(user, Money::from_minor(50), "topup:x", None)
        .await
        .unwrap();
    let created = store.generations().create_pending(&new).await.unwrap();
    assert!(matches!(created, Creation::Created(_)));
    assert_eq!(wallet(&store, user).await, (100, 100));

    let unknown = confirmation(kiebot_domain::UserId(404), "d404", 0);
    let outcome = store.generations().create_pending(&unknown).await;
    assert!(
        matches!(outcome, Err(StoreError::NotFound { what: "user", .. })),
        "{outcome:?}"
    );
    assert_books_balance(&store).await;
}

async fn finishing_successfully_twice_captures_once(store: Store) {
    let user = funded_user(&store, 1, 1000).await;
    let id = submitted(&store, user, "d", 300).await;
    let result = r#"{"resultUrls":["https://example.com/a.png"]}"#;
    assert!(succeed_with(&store, id, result).await.unwrap());
    assert!(!succeed_with(&store, id, result).await.unwrap());
    assert_eq!(entries_with_prefix(&store, "capture:").await, 1);
    assert_eq!(wallet(&store, user).await, (700, 0));

    let generation = store.generations().get(id).await.unwrap().unwrap();
    assert_eq!(generation.status, S::Succeeded);
    assert_eq!(generation.result_json.as_deref(), Some(result));
    assert!(generation.finished_at.is_some());

    assert!(store.generations().mark_told(id, "[]").await.unwrap());
    assert!(!store.generations().mark_told(id, "[]").await.unwrap());
    let delivered = store.generations().get(id).await.unwrap().unwrap();
    assert_eq!(delivered.status, S::Delivered);
    assert_eq!(
        delivered.lifecycle,
        Lifecycle::Finished {
            end: End::Succeeded,
            notice: Notice::Told
        }
    );
    // Still "already done" after delivery, and still one capture.
    assert!(!succeed_with(&store, id, result).await.unwrap());
    let late_failure = store
        .generations()
        .finish_failure(id, S::Failed, "x", "late")
        .await;
    assert!(
        matches!(late_failure, Err(StoreError::IllegalTransition(_))),
        "{late_failure:?}"
    );
    assert_eq!(entries_with_prefix(&store, "capture:").await, 1);
    assert_eq!(wallet(&store, user).await, (700, 0));
    assert_books_balance(&store).await;
}

async fn a_failed_generation_releases_once_and_cannot_succeed_later(store: Store) {
    let user = funded_user(&store, 1, 1000).await;
    let id = submitted(&store, user, "d", 300).await;
    assert_eq!(wallet(&store, user).await, (1000, 300));

    assert!(
        store
            .generations()
            .finish_failure(id, S::Failed, "500", "KIE failed")
            .await
            .unwrap()
    );
    assert!(
        !store
            .generations()
            .finish_failure(id, S::Failed, "500", "KIE failed")
            .await
            .unwrap()
    );
    assert!(
        !store
            .generations()
            .finish_failure(id, S::Expired, "deadline", "late")
            .await
            .unwrap()
    );
    assert_eq!(entries_with_prefix(&store, "release:").await, 1);
    assert_eq!(wallet(&store, user).await, (1000, 0));

    let outcome = succeed_with(&store, id, "{}").await;
    match outcome {
        Err(StoreError::IllegalTransition(e)) => {
            assert_eq!((e.from, e.to), (S::Failed, S::Succeeded))
        }
        other => panic!("expected IllegalTransition, got {other:?}"),
    }
    let generation = store.generations().get(id).await.unwrap().unwrap();
    assert_eq!(generation.status, S::Failed);
    assert_eq!(generation.fail_code.as_deref(), Some("500"));
    assert_eq!(generation.result_json, None);
    assert_eq!(entries_with_prefix(&store, "capture:").await, 0);
    let not_a_failure = store
        .generations()
        .finish_failure(id, S::Delivered, "x", "y")
        .await;
    assert!(
        matches!(not_a_failure, Err(StoreError::IllegalTransition(_))),
        "{not_a_failure:?}"
    );
    assert_books_balance(&store).await;
}

async fn racing_finishers_move_the_money_once(store: Store) {
    let user = funded_user(&store, 1, 100_000).await;
    let mut succeeded = 0;
    for i in 0..10 {
        let id = submitted(&store, user, &format!("d{i}"), 100).await;
        let (s1, s2) = (store.clone(), store.clone());
        let success = tokio::spawn(async move { succeed_with(&s1, id, "{}").await });
        let failure = tokio::spawn(async move {
            s2.generations()
                .finish_failure(id, S::Expired, "deadline", "late")
                .await
        });
        let (success, failure) = (success.await.unwrap(), failure.await.unwrap());
        match (&success, &failure) {
            (Ok(true), Err(StoreError::IllegalTransition(_))) => succeeded += 1,
            (Err(StoreError::IllegalTransition(_)), Ok(true)) => {}
            other => panic!("not exactly one winner: {other:?}"),
        }
    }
    assert_eq!(wallet(&store, user).await, (100_000 - succeeded * 100, 0));
    assert_books_balance(&store).await;
}

async fn a_free_generation_places_no_hold(store: Store) {
    let user = funded_user(&store, 1, 0).await;
    let id = submitted(&store, user, "d", 0).await;
    assert!(store.ledger().hold_of(id).await.unwrap().is_none());
    assert!(succeed_with(&store, id, "{}").await.unwrap());
    assert_eq!(wallet(&store, user).await, (0, 0));
    assert!(store.ledger().entries(user, 10).await.unwrap().is_empty());
    assert_books_balance(&store).await;
}

async fn finishing_refuses_illegal_steps_and_carries_its_money_step(store: Store) {
    let user = funded_user(&store, 1, 1000).await;
    let created = store
        .generations()
        .create_pending(&confirmation(user, "d", 100))
        .await
        .unwrap();
    let id = created.id();
    let gens = store.generations();

    // A pending generation cannot succeed, and a failure cannot end as a
    // success.
    let illegal = succeed_with(&store, id, "{}").await;
    assert!(
        matches!(illegal, Err(StoreError::IllegalTransition(e)) if e.from == S::Pending),
        "{illegal:?}"
    );
    let not_a_failure = gens.finish_failure(id, S::Succeeded, "x", "y").await;
    assert!(
        matches!(not_a_failure, Err(StoreError::IllegalTransition(_))),
        "{not_a_failure:?}"
    );
    // A step of another state (a poll of a pending row): nothing happens.
    assert!(!gens.schedule_poll(id, 0).await.unwrap());
    assert_eq!(wallet(&store, user).await, (1000, 100));
    // Canceling releases the hold in the same transaction.
    assert!(
        gens.finish_failure(id, S::Canceled, "x", "y")
            .await
            .unwrap()
    );
    assert_eq!(wallet(&store, user).await, (1000, 0));
    assert!(
        !gens
            .finish_failure(id, S::Canceled, "x", "y")
            .await
            .unwrap()
    );
    assert_eq!(entries_with_prefix(&store, "release:").await, 1);

    let missing = gens
        .finish_failure(GenerationId(404), S::Canceled, "x", "y")
        .await;
    assert!(
        matches!(missing, Err(StoreError::NotFound { .. })),
        "{missing:?}"
    );
    assert_books_balance(&store).await;
}

async fn the_lifecycle_queries_find_due_work(store: Store) {
    use kiebot_domain::TaskOutcome;
    let user = funded_user(&store, 1, 10_000).await;
    let gens = store.generations();
    let a = gens
        .create_pending(&confirmation(user, "a", 10))
        .await
        .unwrap()
        .id();
    let b = gens
        .create_pending(&confirmation(user, "b", 10))
        .await
        .unwrap()
        .id();
    let c = gens
        .create_pending(&confirmation(user, "c", 10))
        .await
        .unwrap()
        .id();
    // The claimed rows with their next job, by id (a claim returns them in
    // no particular order).
    let jobs = |claimed: Vec<(GenerationId, Lifecycle)>| {
        let mut jobs: Vec<_> = claimed
            .into_iter()
            .map(|(id, l)| (id, l.next_job()))
            .collect();
        jobs.sort_by_key(|(id, _)| id.0);
        jobs
    };

    // Each submit attempt is claimed and counted before KIE is called.
    let claimed = gens.claim_submit(a, 0, 10).await.unwrap().unwrap();
    assert_eq!(claimed.submit_attempts, 1);
    assert!(gens.claim_submit(a, 5, 10).await.unwrap().is_none());
    assert!(gens.retry_submit_at(a, 10).await.unwrap());
    let again = gens.claim_submit(a, 10, 20).await.unwrap().unwrap();
    assert_eq!(
        again.lifecycle,
        Lifecycle::Pending {
            attempts: 2,
            retry_at: Some(10)
        }
    );
    assert!(
        gens.mark_submitted(a, "task-a", 1_000, 50_000)
            .await
            .unwrap()
    );
    assert!(
        !gens
            .mark_submitted(a, "task-a", 1_000, 50_000)
            .await
            .unwrap()
    );
    assert!(gens.claim_submit(a, 30, 40).await.unwrap().is_none());
    assert!(
        gens.mark_submitted(b, "task-b", 2_000, 60_000)
            .await
            .unwrap()
    );
    assert_eq!(
        gens.get(a).await.unwrap().unwrap().lifecycle,
        Lifecycle::Running {
            task: "task-a".into(),
            next_poll: Some(1_000),
            outcome: None
        }
    );

    // Polls as they fall due, each claimed once.
    assert!(
        gens.claim_due_polls(999, 3_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        jobs(gens.claim_due_polls(1_500, 3_000, 10).await.unwrap()),
        vec![(a, NextJob::Poll)]
    );
    assert_eq!(
        jobs(gens.claim_due_polls(2_000, 3_000, 10).await.unwrap()),
        vec![(b, NextJob::Poll)]
    );
    assert!(gens.schedule_poll(a, 5_000).await.unwrap());
    assert_eq!(
        jobs(gens.claim_due_polls(4_000, 4_500, 10).await.unwrap()),
        vec![(b, NextJob::Poll)]
    );
    assert_eq!(gens.get(a).await.unwrap().unwrap().poll_attempts, 1);

    assert_eq!(gens.by_task_id("task-b").await.unwrap().unwrap().id, b);
    assert!(gens.by_task_id("task-z").await.unwrap().is_none());

    assert_eq!(gens.overdue(55_000, 0, 10).await.unwrap(), vec![a]);
    // A submitted task gets its grace after the deadline for a last poll.
    assert!(gens.overdue(55_000, 10_000, 10).await.unwrap().is_empty());
    assert_eq!(gens.overdue(60_000, 10_000, 10).await.unwrap(), vec![a]);

    // An untried pending row is due for a submit after the grace.
    let c_row = gens.get(c).await.unwrap().unwrap();
    let grace = 1_000;
    assert!(
        gens.claim_due_submits(c_row.created_at + grace - 1, grace, 0, 10, 0)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        gens.claim_due_submits(c_row.created_at + grace, grace, 9, 10, 0)
            .await
            .unwrap(),
        vec![c]
    );

    // A recorded outcome makes the row due for Finalize, not a poll.
    let result = TaskOutcome::Success {
        result: "{}".into(),
    };
    assert!(gens.record_outcome(b, &result, 7_000).await.unwrap());
    assert!(!gens.record_outcome(b, &result, 7_000).await.unwrap());
    assert_eq!(
        jobs(gens.claim_due_polls(7_000, 8_000, 10).await.unwrap()),
        vec![(a, NextJob::Poll), (b, NextJob::Finalize)]
    );

    assert!(succeed_with(&store, b, "{}").await.unwrap());
    let finished = gens.get(b).await.unwrap().unwrap().finished_at.unwrap();
    assert_eq!(
        gens.claim_due_deliveries(finished, finished + 1, 10)
            .await
            .unwrap(),
        vec![b]
    );
    assert!(gens.retry_delivery_at(b, finished + 10_000).await.unwrap());
    assert!(
        gens.claim_due_deliveries(finished + 9_999, finished + 20_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let claim = gens
        .claim_delivery(b, finished, finished + 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claim.generation.delivery_attempts, 2);
    assert!(gens.mark_told(b, "[]").await.unwrap());
    assert!(!gens.retry_delivery_at(b, 0).await.unwrap());
    assert_eq!(
        gens.get(b).await.unwrap().unwrap().lifecycle.next_job(),
        NextJob::Nothing
    );

    let history = gens.list_for_user(user, 0, 10).await.unwrap();
    assert_eq!(
        history.iter().map(|g| g.id).collect::<Vec<_>>(),
        vec![c, b, a]
    );
    assert_eq!(gens.list_for_user(user, 1, 1).await.unwrap()[0].id, b);

    let counts = gens.count_by_status().await.unwrap();
    let count = |s| counts.iter().find(|(st, _)| *st == s).map(|(_, n)| *n);
    assert_eq!(count(S::Pending), Some(1));
    assert_eq!(count(S::Submitted), Some(1));
    assert_eq!(count(S::Delivered), Some(1));
    assert_eq!(count(S::Failed), Some(0));
    assert_books_balance(&store).await;
}
