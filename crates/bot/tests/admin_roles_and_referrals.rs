//! Who may do what, through the real handlers: every admin command and
//! button for each role (owner, support, finance, broadcast, maintenance,
//! plain user), allowed or refused with a message and no audit row; no
//! admin acts on their own account; finance admins stay within the single
//! cap and the daily budget, and the owner hears of large adjustments. And
//! the referral rules end to end: a bonus only for a qualifying top-up or
//! spend, within the monthly cap, never for a blocked inviter or oneself,
//! and reversed once when the qualifying payment is refunded.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::{App, Options};
use kiebot_bot::{AdminPolicy, ReferralPolicy};
use kiebot_domain::{GenerationStatus, Money, UserId};
use kiebot_store::Permission;
use kiebot_tg::callback::{AdminCb, Cb};

const OWNER: i64 = 1;
const SUPPORT: i64 = 2;
const FINANCE: i64 = 3;
const BROADCAST: i64 = 4;
const MAINTENANCE: i64 = 5;
const PLAIN: i64 = 6;
const TARGET: i64 = 300;

fn m(minor: i64) -> Money {
    Money::from_minor(minor)
}

/// The reply a refused role gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Allowed,
    Lacks(&'static str),
    OwnerOnly,
    NotAdmin,
}

/// An app with one admin per role, granted by the owner through `/grant`.
async fn staffed(limits: AdminPolicy) -> App {
    let mut app = App::with(Options {
        admin_limits: limits,
        ..Options::default()
    })
    .await;
    for u in [
        OWNER,
        SUPPORT,
        FINANCE,
        BROADCAST,
        MAINTENANCE,
        PLAIN,
        TARGET,
    ] {
        app.onboard(u).await;
    }
    for (u, p) in [
        (SUPPORT, "support"),
        (FINANCE, "finance"),
        (BROADCAST, "broadcast"),
        (MAINTENANCE, "maintenance"),
    ] {
        app.send(OWNER, &format!("/grant {u} {p}")).await;
        assert!(
            app.last_text(OWNER).contains("now has"),
            "{}",
            app.last_text(OWNER)
        );
    }
    app
}

async fn audit_rows(app: &App) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM admin_audit")
        .fetch_one(app.store().pool())
        .await
        .unwrap()
}

fn check(app: &App, who: i64, what: &str, expect: Expect) {
    let text = app.last_text(who);
    let refusal = |t: &str| {
        t.contains("permission. Ask the owner")
            || t.contains("Only the owner can do this")
            || t.contains("administrators only")
    };
    match expect {
        Expect::Allowed => assert!(!refusal(&text), "{what} by {who} was refused: {text}"),
        Expect::Lacks(p) => assert!(
            text.contains(&format!("the \"{p}\" permission. Ask the owner")),
            "{what} by {who}: {text}"
        ),
        Expect::OwnerOnly => assert_eq!(text, "Only the owner can do this.", "{what} by {who}"),
        Expect::NotAdmin => assert!(
            text.contains("administrators only"),
            "{what} by {who}: {text}"
        ),
    }
}

/// What each role gets for something needing `need` (`None`: any admin,
/// `Some("owner")`: the owner, else a permission).
fn matrix(need: Option<&'static str>) -> [(i64, Expect); 6] {
    let by = |role: &str| match need {
        None => Expect::Allowed,
        Some("owner") => Expect::OwnerOnly,
        Some(p) if p == role => Expect::Allowed,
        Some(p) => Expect::Lacks(p),
    };
    [
        (OWNER, Expect::Allowed),
        (SUPPORT, by("support")),
        (FINANCE, by("finance")),
        (BROADCAST, by("broadcast")),
        (MAINTENANCE, by("maintenance")),
        (PLAIN, Expect::NotAdmin),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_command_and_button_is_allowed_or_refused_by_role() {
    let mut app = staffed(AdminPolicy::default()).await;
    // (command, what it needs, the command that undoes it when allowed)
    let commands: [(&str, Option<&'static str>, Option<&str>); 17] = [
        ("/admin", None, None),
        ("/stats", Some("support"), None),
        ("/failed", Some("support"), None),
        ("/user 300", Some("support"), None),
        ("/resend 999999", Some("support"), None),
        ("/block 300", Some("support"), Some("/unblock 300")),
        ("/unblock 300", Some("support"), None),
        ("/adjust 300 1 matrix", Some("finance"), None),
        ("/refund no-such-charge", Some("finance"), None),
        ("/broadcast", Some("broadcast"), None),
        ("/maintenance", Some("maintenance"), Some("/maintenance")),
        ("/budget 2 10 matrix", Some("owner"), None),
        ("/grant 300 bogus", Some("owner"), None),
        ("/revoke 300 support", Some("owner"), None),
        ("/admins", Some("owner"), None),
        (
            "/grant 300 support",
            Some("owner"),
            Some("/revoke 300 support"),
        ),
        ("/revoke 300 finance", Some("owner"), None),
    ];
    for (cmd, need, undo) in commands {
        for (who, expect) in matrix(need) {
            let before = audit_rows(&app).await;
            app.send(who, cmd).await;
            check(&app, who, cmd, expect);
            if expect != Expect::Allowed {
                assert_eq!(audit_rows(&app).await, before, "{cmd} by {who} was audited");
            }
            if let (Expect::Allowed, Some(undo)) = (expect, undo) {
                app.send(who, undo).await;
            }
        }
    }
    // Every admin command is in the table above.
    let listed: Vec<&str> = commands
        .iter()
        .map(|(c, _, _)| c.trim_start_matches('/').split(' ').next().unwrap())
        .collect();
    for name in [
        "admin",
        "stats",
        "failed",
        "user",
        "resend",
        "block",
        "unblock",
        "adjust",
        "refund",
        "broadcast",
        "maintenance",
        "budget",
        "grant",
        "revoke",
        "admins",
    ] {
        assert!(listed.contains(&name), "{name}");
    }

    let t = UserId(TARGET);
    let buttons: [(AdminCb, &'static str, Option<AdminCb>); 7] = [
        (AdminCb::Stats, "support", None),
        (AdminCb::Failed, "support", None),
        (AdminCb::User(t), "support", None),
        (AdminCb::Block(t), "support", Some(AdminCb::Unblock(t))),
        (AdminCb::Unblock(t), "support", None),
        (AdminCb::Broadcast, "broadcast", None),
        (
            AdminCb::Maintenance,
            "maintenance",
            Some(AdminCb::Maintenance),
        ),
    ];
    for (button, need, undo) in buttons {
        for (who, expect) in matrix(Some(need)) {
            let before = audit_rows(&app).await;
            let under = app.last(who).message_id;
            app.press_data(who, under, &Cb::Admin(button).encode())
                .await;
            check(&app, who, &format!("{button:?}"), expect);
            if expect != Expect::Allowed {
                assert_eq!(
                    audit_rows(&app).await,
                    before,
                    "{button:?} by {who} was audited"
                );
            }
            if let (Expect::Allowed, Some(undo)) = (expect, undo) {
                let under = app.last(who).message_id;
                app.press_data(who, under, &Cb::Admin(undo).encode()).await;
            }
        }
    }
    // The allowed ones took effect and were audited: two adjustments
    // (owner, finance), blocks and unblocks, maintenance switched back off.
    let adjusted = app.available(TARGET).await;
    assert_eq!(adjusted, m(200));
    assert!(
        !app.store()
            .users()
            .get(UserId(TARGET))
            .await
            .unwrap()
            .unwrap()
            .blocked
    );
    assert!(
        app.store()
            .settings()
            .get(kiebot_bot::MAINTENANCE_KEY)
            .await
            .unwrap()
            .is_none()
    );
    let actions: Vec<(UserId, String)> = app
        .store()
        .audit()
        .recent(1000)
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.actor, a.action))
        .collect();
    for (who, action) in [
        (OWNER, "adjust"),
        (FINANCE, "adjust"),
        (OWNER, "block"),
        (SUPPORT, "block"),
        (SUPPORT, "unblock"),
        (OWNER, "maintenance_on"),
        (MAINTENANCE, "maintenance_on"),
        (MAINTENANCE, "maintenance_off"),
        (OWNER, "grant"),
        (OWNER, "revoke"),
    ] {
        assert!(
            actions.contains(&(UserId(who), action.to_owned())),
            "{action} by {who} not audited: {actions:?}"
        );
    }
    // No refused role left a row.
    for who in [BROADCAST, PLAIN] {
        assert!(
            !actions.iter().any(|(a, _)| *a == UserId(who)),
            "{who}: {actions:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_admin_acts_on_their_own_account() {
    let mut app = staffed(AdminPolicy::default()).await;
    app.tg
        .successful_payment(FINANCE, "v1:3:10:0123456789abcdef", "own-charge", 10);
    app.pump().await;
    let before = audit_rows(&app).await;
    for (who, cmd) in [
        (FINANCE, "/adjust 3 10 me"),
        (FINANCE, "/refund own-charge"),
        (SUPPORT, "/block 2"),
        (OWNER, "/adjust 1 10 me"),
        (OWNER, "/block 1"),
    ] {
        app.send(who, cmd).await;
        assert!(
            app.last_text(who).contains("your own account"),
            "{cmd}: {}",
            app.last_text(who)
        );
    }
    // The owner cannot be blocked by another admin either.
    app.send(SUPPORT, "/block 1").await;
    assert!(app.last_text(SUPPORT).contains("owner cannot be blocked"));
    assert_eq!(audit_rows(&app).await, before);
    assert_eq!(app.available(FINANCE).await, m(1_500));
    assert_eq!(app.available(OWNER).await, Money::ZERO);
    assert!(app.tg.refunds().is_empty());
    for u in [OWNER, SUPPORT] {
        let user = app.store().users().get(UserId(u)).await.unwrap().unwrap();
        assert!(!user.blocked);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finance_stays_within_its_caps_and_the_owner_hears_of_large_adjustments() {
    let mut app = staffed(AdminPolicy {
        max_single: m(10_000),
        daily_budget: m(15_000),
        notify_above: m(5_000),
    })
    .await;
    let notices = |app: &App| {
        app.tg
            .messages_to(OWNER)
            .into_iter()
            .filter(|msg| {
                msg.text
                    .as_deref()
                    .is_some_and(|t| t.contains("Large adjustment"))
            })
            .count()
    };
    let adjusts = |app: &App| {
        let store = app.store().clone();
        async move {
            store
                .audit()
                .recent(1000)
                .await
                .unwrap()
                .into_iter()
                .filter(|a| a.action == "adjust")
                .count()
        }
    };

    app.send(FINANCE, "/adjust 300 100.01 too much").await;
    assert!(
        app.last_text(FINANCE).contains("single-action cap (100.00"),
        "{}",
        app.last_text(FINANCE)
    );
    assert_eq!(adjusts(&app).await, 0);

    app.send(FINANCE, "/adjust 300 60 goodwill").await;
    assert!(app.last_text(FINANCE).contains("adjusted by 60.00"));
    assert_eq!(notices(&app), 1, "above 50.00: the owner is told");
    let notice = app.tg.messages_to(OWNER).pop().unwrap().text.unwrap();
    assert!(
        notice.contains("admin 3") && notice.contains("300") && notice.contains("goodwill"),
        "{notice}"
    );

    app.send(FINANCE, "/adjust 300 -40 correction").await;
    assert!(app.last_text(FINANCE).contains("adjusted by -40.00"));
    assert_eq!(notices(&app), 1, "below the threshold: no notice");

    // 150.00 a day, 100.00 used (both signs count): 50.01 is refused.
    app.send(FINANCE, "/adjust 300 50.01 more").await;
    assert!(
        app.last_text(FINANCE)
            .contains("daily budget: 50.00 ₽ of 150.00 ₽ left"),
        "{}",
        app.last_text(FINANCE)
    );
    // A refund counts against the same budget.
    app.tg
        .successful_payment(TARGET, "v1:300:100:0123456789abcdef", "ch-300", 100);
    app.pump().await;
    app.send(FINANCE, "/refund ch-300").await;
    assert!(
        app.last_text(FINANCE).contains("single-action cap"),
        "{}",
        app.last_text(FINANCE)
    );
    assert!(app.tg.refunds().is_empty());
    assert_eq!(adjusts(&app).await, 2);

    // The owner is not limited and not told of their own.
    app.send(OWNER, "/adjust 300 1000 owner").await;
    assert!(
        app.last_text(OWNER).contains("adjusted by 1000.00"),
        "{}",
        app.last_text(OWNER)
    );
    app.send(OWNER, "/refund ch-300").await;
    assert!(
        app.last_text(OWNER).contains("Refunded 100"),
        "{}",
        app.last_text(OWNER)
    );
    assert_eq!(notices(&app), 1);
    assert_eq!(adjusts(&app).await, 3);
    assert_eq!(app.available(TARGET).await, m(6_000 - 4_000 + 100_000));
    assert!(app.store().ledger().check().await.unwrap().is_empty());
}

/// Pays `stars` as `user` through Telegram's `successful_payment`.
async fn pay(app: &mut App, user: i64, charge: &str, stars: u32) {
    let payload = format!("v1:{user}:{stars}:0123456789abcdef");
    app.tg.successful_payment(user, &payload, charge, stars);
    app.pump().await;
}

fn bonus_notices(app: &App, inviter: i64) -> usize {
    app.tg
        .messages_to(inviter)
        .into_iter()
        .filter(|msg| {
            msg.text
                .as_deref()
                .is_some_and(|t| t.contains("A friend you invited"))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referral_pays_once_for_a_qualifying_top_up_and_is_reversed_once_on_refund() {
    let mut app = App::start().await;
    let (inviter, invitee) = (70, 71);
    app.onboard(inviter).await;
    app.send(invitee, &format!("/start ref_{inviter}")).await;
    app.press(invitee, "English").await;

    pay(&mut app, invitee, "c-1", 1).await;
    pay(&mut app, invitee, "c-2", 99).await;
    assert_eq!(app.available(inviter).await, Money::ZERO);
    assert_eq!(bonus_notices(&app, inviter), 0);

    pay(&mut app, invitee, "c-3", 100).await;
    pay(&mut app, invitee, "c-4", 500).await;
    assert_eq!(
        app.available(inviter).await,
        kiebot_bot::DEFAULT_REFERRAL_BONUS
    );
    assert_eq!(bonus_notices(&app, inviter), 1);

    // Refunding a payment that did not qualify leaves the bonus.
    app.send(OWNER, "/refund c-2").await;
    assert_eq!(
        app.available(inviter).await,
        kiebot_bot::DEFAULT_REFERRAL_BONUS
    );
    // Refunding the qualifying one reverses it, once.
    app.send(OWNER, "/refund c-3").await;
    app.send(OWNER, "/refund c-3").await;
    assert!(app.last_text(OWNER).contains("already refunded"));
    assert_eq!(app.available(inviter).await, Money::ZERO);
    assert_eq!(app.tg.refunds().len(), 2);
    let r = app
        .store()
        .referrals()
        .get(UserId(invitee))
        .await
        .unwrap()
        .unwrap();
    assert!(r.reversed_at.is_some());
    assert_eq!(r.shortfall, Some(Money::ZERO));
    assert!(app.store().ledger().check().await.unwrap().is_empty());

    // Inviting oneself records nothing.
    app.send(72, "/start ref_72").await;
    assert!(
        app.store()
            .referrals()
            .get(UserId(72))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monthly_cap_and_a_blocked_inviter_get_no_bonus() {
    let mut app = App::with(Options {
        referral: ReferralPolicy {
            monthly_cap: 2,
            ..ReferralPolicy::default()
        },
        ..Options::default()
    })
    .await;
    let inviter = 70;
    app.onboard(inviter).await;
    for invitee in [71, 72, 73] {
        app.send(invitee, &format!("/start ref_{inviter}")).await;
        pay(&mut app, invitee, &format!("c-{invitee}"), 100).await;
    }
    assert_eq!(app.available(inviter).await, m(2 * 5_000));
    assert_eq!(bonus_notices(&app, inviter), 2);

    // Blocked by an admin: the next invitee pays nothing to them.
    let blocked = 80;
    app.onboard(blocked).await;
    app.send(81, &format!("/start ref_{blocked}")).await;
    app.send(OWNER, &format!("/block {blocked}")).await;
    pay(&mut app, 81, "c-81", 100).await;
    app.send(OWNER, &format!("/unblock {blocked}")).await;
    pay(&mut app, 81, "c-81b", 100).await;
    assert_eq!(app.available(blocked).await, Money::ZERO);
    assert_eq!(bonus_notices(&app, blocked), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spending_qualifies_a_referral_when_configured() {
    let mut app = App::with(Options {
        referral: ReferralPolicy {
            min_spend: Some(m(1)),
            ..ReferralPolicy::default()
        },
        ..Options::default()
    })
    .await;
    let (inviter, invitee) = (70, 71);
    app.onboard(inviter).await;
    app.send(invitee, &format!("/start ref_{inviter}")).await;
    app.press(invitee, "English").await;
    // A top-up too small to qualify; then a generation paid from it.
    pay(&mut app, invitee, "c-1", 50).await;
    assert_eq!(
        kiebot_bot::settle_referral_spend(&app.deps).await.unwrap(),
        0
    );
    app.flux_confirm(invitee).await;
    app.press(invitee, "Confirm").await;
    let g = app.generations(invitee).await[0].clone();
    assert!(g.price.is_positive());
    // Held is not spent.
    assert_eq!(
        kiebot_bot::settle_referral_spend(&app.deps).await.unwrap(),
        0
    );
    let gens = app.store().generations();
    assert!(gens.mark_submitted(g.id, "t1", 0, i64::MAX).await.unwrap());
    assert!(
        gens.finish_and_claim(
            g.id,
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
    assert_eq!(
        app.store()
            .generations()
            .get(g.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        GenerationStatus::Succeeded
    );
    assert_eq!(
        kiebot_bot::settle_referral_spend(&app.deps).await.unwrap(),
        1
    );
    assert_eq!(
        kiebot_bot::settle_referral_spend(&app.deps).await.unwrap(),
        0
    );
    assert_eq!(
        app.available(inviter).await,
        kiebot_bot::DEFAULT_REFERRAL_BONUS
    );
    assert_eq!(bonus_notices(&app, inviter), 1);
    // A qualifying top-up later pays nothing more.
    pay(&mut app, invitee, "c-2", 100).await;
    assert_eq!(
        app.available(inviter).await,
        kiebot_bot::DEFAULT_REFERRAL_BONUS
    );
    let _ = Permission::ALL;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_is_audited_when_it_starts() {
    let mut app = staffed(AdminPolicy::default()).await;
    app.send(BROADCAST, "/broadcast hello everyone").await;
    assert!(app.last_text(BROADCAST).contains("Broadcast started"));
    let audit = app.store().audit().recent(1).await.unwrap();
    assert_eq!(
        (
            audit[0].actor,
            audit[0].action.as_str(),
            audit[0].reason.as_str()
        ),
        (UserId(BROADCAST), "broadcast", "hello everyone")
    );
    // Let it finish before the app goes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while app.store().broadcasts().running().await.unwrap().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the broadcast did not finish"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    app.deps.broadcasts.stop().await;
}
