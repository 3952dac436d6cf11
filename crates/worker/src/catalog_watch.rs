//! The fleet's periodic catalog check (`CATALOG_CHECK_HOURS`).
//!
//! KIE renames, retires and reshapes models without notice. Every so often
//! one worker process (whoever takes the turn kept in the database) compares
//! the catalog with KIE's catalogue, as `kiebot catalog check` does: a model
//! KIE no longer lists, or whose schema lost a field we send (every request
//! would fail), is taken off sale until an operator puts it back; narrowed
//! limits and price drift only alert (logs and metrics). Nothing is taken off
//! sale when KIE's list looks incomplete.

use std::sync::Arc;

use kiebot_catalog_check::{CheckOptions, Severity, check};
use kiebot_store::model_holds::HoldSource;
use tracing::{error, info, warn};

use crate::context::{Ctx, now_ms};
use crate::metrics_names;

/// The settings key of the next check's turn.
const TURN_KEY: &str = "catalog_check_next_at";

/// Starts a check in the background if one is due and this process takes the
/// turn. Called from the reconciler's tick.
pub async fn maybe_start(ctx: &Arc<Ctx>) {
    let Some(every) = ctx.config.catalog_check_every else {
        return;
    };
    if !ctx.kie.generates() {
        // A dry run has no catalogue to compare with.
        return;
    }
    let now = now_ms();
    match ctx
        .store
        .settings()
        .take_turn(TURN_KEY, now, now + Ctx::ms(every))
        .await
    {
        Ok(true) => {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                if let Err(e) = run(&ctx, &CheckOptions::default()).await {
                    warn!(error = %e, "catalog check failed; the next turn tries again");
                }
            });
        }
        Ok(false) => {}
        Err(e) => warn!(error = %e, "catalog check turn not read"),
    }
}

/// Runs one check and takes broken models off sale.
#[tracing::instrument(name = "job.catalog_check", skip_all)]
pub async fn run(
    ctx: &Ctx,
    options: &CheckOptions,
) -> anyhow::Result<kiebot_catalog_check::Report> {
    let report = check(&ctx.catalog, &ctx.kie, options).await?;
    for severity in [Severity::Error, Severity::Warning, Severity::Info] {
        metrics::counter!(metrics_names::CATALOG_FINDINGS, "severity" => severity.as_str())
            .increment(report.count(severity) as u64);
    }
    for f in report
        .findings
        .iter()
        .filter(|f| f.severity != Severity::Info)
    {
        warn!(
            model = %f.model,
            field = f.field.as_deref().unwrap_or("-"),
            severity = f.severity.as_str(),
            "catalog check: {}",
            f.message
        );
    }
    if report.suspect {
        error!(
            listed = report.listed,
            "KIE's model list looks incomplete; no model taken off sale on its word"
        );
    }
    let holds = ctx.store.model_holds();
    for (model, reason) in report.off_sale() {
        if holds.hold(&model, &reason, HoldSource::Check).await? {
            error!(
                model,
                reason, "model taken off sale until an operator releases it"
            );
        }
    }
    let held = holds.all().await?.len();
    metrics::gauge!(metrics_names::MODELS_OFF_SALE).set(held as f64);
    info!(
        models = report.models_checked,
        errors = report.count(Severity::Error),
        warnings = report.count(Severity::Warning),
        off_sale = held,
        "catalog checked against KIE"
    );
    Ok(report)
}
