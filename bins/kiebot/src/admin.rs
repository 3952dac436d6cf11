//! Operator commands run from the shell.

use std::process::ExitCode;

use anyhow::Context;
use kiebot_config::Settings;
use kiebot_domain::{Money, UserId};
use kiebot_store::Store;

/// The actor recorded in the audit log for shell commands: no Telegram user
/// has id 0.
const SHELL_ACTOR: UserId = UserId(0);

/// Connects to `DATABASE_URL` and applies pending migrations, so operator
/// commands work on a fresh database too.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    Store::connect(&settings.database_url)
        .await
        .context("connecting to DATABASE_URL")
}

async fn migrated_store(settings: &Settings) -> anyhow::Result<Store> {
    let store = open_store(settings).await?;
    store.migrate().await.context("applying migrations")?;
    Ok(store)
}

/// `kiebot admin ledger-check`.
pub async fn ledger_check(settings: &Settings) -> anyhow::Result<ExitCode> {
    let store = migrated_store(settings).await?;
    let drift = store
        .ledger()
        .check()
        .await
        .context("recomputing wallets")?;
    if drift.is_empty() {
        crate::out::say(format_args!(
            "ledger-check: ok, every wallet matches its entries"
        ));
        return Ok(ExitCode::SUCCESS);
    }
    crate::out::say(format_args!(
        "ledger-check: {} wallet(s) drifted",
        drift.len()
    ));
    for d in &drift {
        let stored = d.stored.map_or_else(
            || "no wallet".to_owned(),
            |w| format!("balance {} held {}", w.balance, w.held),
        );
        crate::out::say(format_args!(
            "user {}: stored {stored}; entries say balance {} held {}",
            d.user, d.expected.balance, d.expected.held
        ));
    }
    Ok(ExitCode::from(1))
}

/// `kiebot admin grant`.
pub async fn grant(
    settings: &Settings,
    user: UserId,
    amount: Money,
    reason: &str,
    key: Option<String>,
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        user.0 > 0,
        "telegram_id must be a positive Telegram user id"
    );
    anyhow::ensure!(amount.is_positive(), "amount must be positive");
    let store = migrated_store(settings).await?;
    store
        .users()
        .ensure(user)
        .await
        .context("creating the user")?;
    let key = key.unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        format!("grant:{user}:{nanos}:{}", std::process::id())
    });
    let applied = store
        .ledger()
        .adjust(user, amount, &format!("adjust:{key}"), SHELL_ACTOR, reason)
        .await
        .context("crediting the wallet")?;
    let wallet = store.ledger().wallet(user).await?;
    if applied.fresh {
        crate::out::say(format_args!(
            "granted {amount} to {user}; balance {} (held {})",
            wallet.balance, wallet.held
        ));
    } else {
        crate::out::say(format_args!(
            "already granted with this key; balance {} (held {})",
            wallet.balance, wallet.held
        ));
    }
    Ok(ExitCode::SUCCESS)
}
