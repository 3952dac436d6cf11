//! `Deliver`: send a finished generation to its chat.
//!
//! A success goes out as media (by URL first, then uploaded, then as a link;
//! see `kiebot_tg::delivery`); a failure, expiry or cancellation goes out as a
//! short reason with the note that nothing was charged. The row is claimed
//! with a lease first, so two workers never send the same result at once;
//! temporary failures reschedule the attempt in the database with backoff,
//! where the reconciler picks it up again.

use std::sync::Arc;

use apalis::prelude::Data;
use kiebot_domain::{GenerationStatus, OutputKind};
use kiebot_jobs::Deliver;
use kiebot_store::generations::{DeliveryClaim, Generation};
use kiebot_tg::delivery::{DeliveryError, DeliveryKind, DeliveryRequest, TrackMeta, deliver_with};
use kiebot_tg::texts::{self, Lang};
use tracing::{info, warn};

use crate::context::{Ctx, now_ms};
use crate::{JobError, metrics_names};

/// Handles one `Deliver` job.
#[tracing::instrument(name = "job.deliver", skip_all, fields(generation = %job.generation))]
pub async fn handle(job: Deliver, ctx: Data<Arc<Ctx>>) -> Result<(), JobError> {
    run(&ctx, job).await
}

/// The handler's body.
pub async fn run(ctx: &Ctx, job: Deliver) -> Result<(), JobError> {
    let id = job.generation;
    let now = now_ms();
    let Some(claim) = ctx
        .store
        .generations()
        .claim_delivery(id, now, now + Ctx::ms(ctx.config.lease))
        .await?
    else {
        // Delivered already, not finished yet, or another worker is on it.
        return Ok(());
    };
    kiebot_telemetry::link_current_span(claim.generation.traceparent.as_deref());
    send_claimed(ctx, claim).await
}

/// Who the audit names for money the pipeline itself moves.
const SYSTEM_ACTOR: kiebot_domain::UserId = kiebot_domain::UserId(0);

/// Sends a generation whose delivery this worker has claimed, and records
/// the outcome: told, retry later (the claim released with a due time for
/// the reconciler), or given up.
pub(crate) async fn send_claimed(ctx: &Ctx, claim: DeliveryClaim) -> Result<(), JobError> {
    let gens = ctx.store.generations();
    let g = claim.generation;
    let id = g.id;
    let lang = claim.language.map_or(Lang::En, |l| Lang::parse(&l));
    let request = build_request(ctx, &g, lang);
    match deliver_with(
        &ctx.bot,
        ctx.limiter.as_ref(),
        teloxide::types::ChatId(g.chat_id),
        &request,
        &ctx.delivery,
    )
    .await
    {
        Ok(sent) => {
            for refusal in &sent.refusals {
                metrics::counter!(metrics_names::RESULT_REFUSED, "reason" => refusal.reason())
                    .increment(1);
            }
            let file_ids = serde_json::json!(sent.file_ids).to_string();
            if gens.mark_told(id, &file_ids).await? && g.status == GenerationStatus::Succeeded {
                metrics_names::generation_state(GenerationStatus::Delivered.as_str());
            }
            let route = route_name(sent.route);
            metrics::counter!(metrics_names::DELIVERIES, "outcome" => route).increment(1);
            info!(route, "delivered");
        }
        Err(DeliveryError::Blocked(why)) => {
            // The user blocked the bot: nothing will ever get through. The
            // result stays in their history.
            gens.mark_told(id, "[]").await?;
            metrics::counter!(metrics_names::DELIVERIES, "outcome" => "blocked").increment(1);
            info!(why, "chat blocked the bot; delivery abandoned");
        }
        Err(DeliveryError::Refused(refusal)) => {
            // No result URL may be fetched and KIE has no acceptable fresh
            // link: trying again cannot help, and the user would have paid
            // for nothing. The capture is paid back (once, by its key) and
            // the user told; the row leaves the retry loop.
            metrics::counter!(metrics_names::RESULT_REFUSED, "reason" => refusal.reason())
                .increment(1);
            warn!(%refusal, "result URL refused; giving up on delivery");
            let model = ctx.catalog.get(g.model.as_str());
            let model_name = model.map_or(g.model.as_str(), |m| m.name.get(lang.code()));
            if g.status == GenerationStatus::Succeeded {
                ctx.store
                    .ledger()
                    .adjust(
                        g.user,
                        g.price,
                        &format!("undeliverable:{}", id.0),
                        SYSTEM_ACTOR,
                        "result could not be fetched safely; charge paid back",
                    )
                    .await?;
                let notice = DeliveryRequest {
                    kind: DeliveryKind::Text,
                    urls: vec![],
                    text: Some(texts::result_undeliverable(lang, model_name)),
                    caption: String::new(),
                    keyboard: None,
                    tracks: Vec::new(),
                };
                if let Err(e) = deliver_with(
                    &ctx.bot,
                    ctx.limiter.as_ref(),
                    teloxide::types::ChatId(g.chat_id),
                    &notice,
                    &ctx.delivery,
                )
                .await
                {
                    warn!(error = %e, "notice of an undeliverable result not sent");
                }
            }
            gens.give_up_delivery(id, &format!("result URL refused: {refusal}"))
                .await?;
            metrics::counter!(metrics_names::DELIVERIES, "outcome" => "refused").increment(1);
        }
        Err(e) => {
            if i64::from(g.delivery_attempts) >= ctx.config.max_delivery_attempts {
                warn!(error = %e, attempts = g.delivery_attempts, "giving up on delivery");
                gens.give_up_delivery(id, &e.to_string()).await?;
                metrics::counter!(metrics_names::DELIVERIES, "outcome" => "gave_up").increment(1);
            } else {
                let at =
                    now_ms() + Ctx::ms(ctx.config.delivery_delay(i64::from(g.delivery_attempts)));
                warn!(error = %e, retry_at = at, "delivery failed; will retry");
                gens.retry_delivery_at(id, at).await?;
                metrics::counter!(metrics_names::DELIVERIES, "outcome" => "retry").increment(1);
            }
        }
    }
    Ok(())
}

/// What to send for a finished generation.
pub fn build_request(ctx: &Ctx, g: &Generation, lang: Lang) -> DeliveryRequest {
    let model = ctx.catalog.get(g.model.as_str());
    let model_name = model.map_or(g.model.as_str(), |m| m.name.get(lang.code()));
    if g.status != GenerationStatus::Succeeded {
        let reason = match g.status {
            GenerationStatus::Expired => texts::generation_expired(lang, model_name),
            GenerationStatus::Canceled => texts::generation_canceled(lang, model_name),
            _ => texts::generation_failed(
                lang,
                model_name,
                g.fail_reason.as_deref().unwrap_or_default(),
            ),
        };
        return DeliveryRequest {
            kind: DeliveryKind::Text,
            urls: vec![],
            text: Some(reason),
            caption: String::new(),
            keyboard: None,
            tracks: Vec::new(),
        };
    }
    let result: serde_json::Value = g
        .result_json
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or_default();
    let max = model.map_or(5, |m| usize::from(m.max_results));
    let wants_watermark = g.params_flag("remove_watermark") == Some(false);
    let key = if wants_watermark && result.get("resultWaterMarkUrls").is_some() {
        "resultWaterMarkUrls"
    } else {
        "resultUrls"
    };
    let urls: Vec<String> = result
        .get(key)
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|u| u.as_str().map(str::to_owned))
                .take(max)
                .collect()
        })
        .unwrap_or_default();
    let text = result
        .get("text")
        .and_then(|t| t.as_str())
        .map(str::to_owned);
    let kind = match (model.map(|m| m.output), text.is_some() && urls.is_empty()) {
        (_, true) => DeliveryKind::Text,
        (Some(OutputKind::Video), _) => DeliveryKind::Video,
        (Some(OutputKind::Audio), _) => DeliveryKind::Audio,
        (Some(OutputKind::Text), _) => DeliveryKind::Text,
        _ => DeliveryKind::Image,
    };
    // Music: each track's title and cover, in the order of its audio URL.
    let tracks: Vec<TrackMeta> = if kind == DeliveryKind::Audio {
        let stored = result.get("tracks").and_then(|t| t.as_array());
        urls.iter()
            .map(|url| {
                let t = stored.and_then(|list| {
                    list.iter()
                        .find(|t| t.get("audioUrl").and_then(|u| u.as_str()) == Some(url))
                });
                let text = |k: &str| {
                    t.and_then(|t| t.get(k))
                        .and_then(|v| v.as_str())
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                };
                TrackMeta {
                    title: text("title"),
                    cover: text("imageUrl"),
                    performer: Some(model_name.to_owned()),
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    DeliveryRequest {
        kind,
        urls,
        text,
        caption: texts::result_caption(lang, model_name, g.price),
        keyboard: Some(texts::result_keyboard(lang, g.id)),
        tracks,
    }
}

fn route_name(route: kiebot_tg::delivery::Route) -> &'static str {
    use kiebot_tg::delivery::Route;
    match route {
        Route::Text => "text",
        Route::Url => "url",
        Route::Upload => "uploaded",
        Route::Link => "link",
    }
}
