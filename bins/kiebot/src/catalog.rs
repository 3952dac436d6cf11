//! `kiebot catalog ...`: list the catalog, check it against KIE's own
//! catalogue, draft entries from KIE's schemas, and take models off sale or
//! put them back.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use kiebot_catalog_check::{
    CheckOptions, Severity, check, draft_entry, input_schema, parse_listing,
};
use kiebot_config::Settings;
use kiebot_domain::pricing::price_list;
use kiebot_domain::{Family, Money, Params};
use kiebot_kie::{ApiKey, KieClient, KieConfig};
use kiebot_store::model_holds::HoldSource;

use crate::out::Out;

/// `kiebot catalog [--all]`: one JSON object per model and line.
pub fn list(settings: &Settings, all: bool) -> anyhow::Result<ExitCode> {
    let catalog = kiebot_catalog::load(settings.catalog_path.as_deref())?;
    let mut out = Out::stdout();
    for model in catalog.models() {
        if !all && !model.is_sold() {
            continue;
        }
        let price = settings
            .pricing
            .price(model, &Params::defaults_for_pricing(model))
            .ok();
        let prices: serde_json::Map<String, serde_json::Value> =
            price_list(&settings.pricing, model)
                .into_iter()
                .filter_map(|(k, v)| v.ok().map(|m| (k, serde_json::Value::from(m.minor()))))
                .collect();
        let line = serde_json::json!({
            "id": model.id.as_str(),
            "kie_model": model.kie_model(),
            "family": model.family.as_str(),
            "name": model.name.en,
            "category": model.category,
            "types": model.types,
            "output": model.output,
            "active": model.is_sold(),
            "free": model.price.as_ref().is_some_and(|p| p.free),
            "price": price.map(Money::minor),
            "prices": prices,
        });
        if !out.line(line)? {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The KIE client the catalogue commands use.
fn client(settings: &Settings) -> anyhow::Result<KieClient> {
    let key = settings
        .require_kie_key()?
        .context("KIE_API_KEY: required to read KIE's catalogue")?;
    let mut cfg = KieConfig::new(ApiKey::new(key.expose()));
    cfg.api_base = settings.kie_api_url.parse().context("KIE_API_URL")?;
    cfg.upload_base = settings.kie_upload_url.parse().context("KIE_UPLOAD_URL")?;
    Ok(KieClient::new(cfg)?)
}

/// `kiebot catalog check`: compares every sold model with KIE's catalogue;
/// exit 1 on any error-level finding. With `hold`, models whose every request
/// would fail are taken off sale in `DATABASE_URL` too.
pub async fn run_check(
    settings: &Settings,
    json: bool,
    pace: Duration,
    hold: bool,
) -> anyhow::Result<ExitCode> {
    let catalog = kiebot_catalog::load(settings.catalog_path.as_deref())?;
    let kie = client(settings)?;
    let options = CheckOptions {
        pace,
        ..CheckOptions::default()
    };
    let report = check(&catalog, &kie, &options)
        .await
        .context("checking the catalog against KIE")?;
    let mut out = Out::stdout();
    if json {
        let doc = serde_json::json!({
            "models_checked": report.models_checked,
            "listed": report.listed,
            "requests": report.requests,
            "suspect": report.suspect,
            "errors": report.count(Severity::Error),
            "warnings": report.count(Severity::Warning),
            "off_sale": report.off_sale(),
            "findings": report.findings,
        });
        out.line(serde_json::to_string_pretty(&doc)?)?;
    } else {
        for f in &report.findings {
            if !out.line(f)? {
                break;
            }
        }
        out.line(format!(
            "catalog check: {} models against {} listed by KIE ({} requests): {} errors, {} warnings, {} to take off sale{}",
            report.models_checked,
            report.listed,
            report.requests,
            report.count(Severity::Error),
            report.count(Severity::Warning),
            report.off_sale().len(),
            if report.suspect {
                " (KIE's list looks incomplete: nothing is taken off sale on its word)"
            } else {
                ""
            }
        ))?;
    }
    if hold {
        let store = crate::admin::open_store(settings).await?;
        store.migrate().await.context("applying migrations")?;
        for (model, reason) in report.off_sale() {
            let fresh = store
                .model_holds()
                .hold(&model, &reason, HoldSource::Check)
                .await?;
            if fresh {
                out.line(format!("held {model}: {reason}"))?;
            }
        }
    }
    Ok(if report.has_errors() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `kiebot catalog import <kie-model>`: a catalog entry drafted from KIE's
/// schema, on stdout.
pub async fn import(settings: &Settings, model: &str, family: Family) -> anyhow::Result<ExitCode> {
    let kie = client(settings)?;
    let listing = match kie.list_models().await {
        Ok(data) => parse_listing(&data)?.into_iter().find(|l| l.model == model),
        Err(e) => {
            eprintln!("kiebot: KIE's model list could not be read ({e}); drafting without it");
            None
        }
    };
    // KIE allows one catalogue request per second.
    tokio::time::sleep(CheckOptions::default().pace).await;
    let data = kie
        .model_schema(model)
        .await
        .with_context(|| format!("reading KIE's schema of {model}"))?;
    let doc = data.get("openapi").cloned().unwrap_or(data);
    let schema = input_schema(&doc, family).with_context(|| format!("KIE's schema of {model}"))?;
    let text = draft_entry(model, family, listing.as_ref(), &schema, &today());
    let mut out = Out::stdout();
    out.line(text.trim_end())?;
    Ok(ExitCode::SUCCESS)
}

/// Today's date (UTC) as `YYYY-MM-DD`, for the source line of a draft.
fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

/// `kiebot catalog hold <model> --reason R`.
pub async fn hold(settings: &Settings, model: &str, reason: &str) -> anyhow::Result<ExitCode> {
    let catalog = kiebot_catalog::load(settings.catalog_path.as_deref())?;
    anyhow::ensure!(
        catalog.get(model).is_some(),
        "{model} is not in the catalog"
    );
    let store = crate::admin::open_store(settings).await?;
    store.migrate().await.context("applying migrations")?;
    let fresh = store
        .model_holds()
        .hold(model, reason, HoldSource::Operator)
        .await?;
    let mut out = Out::stdout();
    out.line(if fresh {
        format!("{model} is off sale: {reason}")
    } else {
        format!("{model} was already off sale")
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `kiebot catalog release <model>`.
pub async fn release(settings: &Settings, model: &str) -> anyhow::Result<ExitCode> {
    let store = crate::admin::open_store(settings).await?;
    store.migrate().await.context("applying migrations")?;
    let was = store.model_holds().release(model).await?;
    let mut out = Out::stdout();
    out.line(if was {
        format!("{model} is on sale again")
    } else {
        format!("{model} was not off sale")
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `kiebot catalog held`: the models off sale.
pub async fn held(settings: &Settings) -> anyhow::Result<ExitCode> {
    let store = crate::admin::open_store(settings).await?;
    store.migrate().await.context("applying migrations")?;
    let holds = store.model_holds().all().await?;
    let mut out = Out::stdout();
    if holds.is_empty() {
        out.line("no model is off sale")?;
    }
    for h in holds.values() {
        if !out.line(format!(
            "{} ({}, since {}): {}",
            h.model, h.source, h.held_at, h.reason
        ))? {
            break;
        }
    }
    let _ = std::io::stdout().flush();
    Ok(ExitCode::SUCCESS)
}
