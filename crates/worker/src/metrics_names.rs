//! Metric names, in one place so dashboards and alerts can rely on them.
//!
//! Units are in the names. Labels: `queue`, `outcome`, `endpoint`, `state`.

/// Counter: KIE calls, by `endpoint` and `outcome` (ok, or the error class).
pub const KIE_CALLS: &str = "kiebot_kie_calls_total";
/// Histogram: KIE call latency in seconds, by `endpoint`.
pub const KIE_SECONDS: &str = "kiebot_kie_call_duration_seconds";
/// Counter: generations entering a state, by `state`.
pub const GENERATIONS: &str = "kiebot_generations_total";
/// Counter: money captured, in minor units.
pub const MONEY_CAPTURED: &str = "kiebot_money_captured_minor_total";
/// Counter: money released, in minor units.
pub const MONEY_RELEASED: &str = "kiebot_money_released_minor_total";
/// Counter: Telegram 429 answers seen during delivery.
pub const TELEGRAM_429: &str = "kiebot_telegram_429_total";
/// Counter: deliveries, by `outcome` (sent, uploaded, link, blocked, retry, gave_up).
pub const DELIVERIES: &str = "kiebot_deliveries_total";
/// Counter: result URLs or downloads refused during delivery, by `reason`
/// (scheme, host, address, redirects, too_big; see `kiebot_tg::egress`).
pub const RESULT_REFUSED: &str = "kiebot_result_refused_total";
/// Counter: jobs enqueued by the reconciler, by `queue`.
pub const RECONCILED: &str = "kiebot_reconciled_jobs_total";
/// Gauge: jobs waiting in a queue, by `queue`.
pub const QUEUE_DEPTH: &str = "kiebot_queue_depth";
/// Counter: KIE answered 429, by `endpoint`.
pub const KIE_RATE_LIMITED: &str = "kiebot_kie_rate_limited_total";
/// Counter: creates that waited for a slot (KIE's window, the in-flight cap,
/// or the line).
pub const KIE_CREATES_WAITED: &str = "kiebot_kie_creates_waited_total";
/// Counter: polls that waited for the status budget.
pub const KIE_POLLS_WAITED: &str = "kiebot_kie_polls_waited_total";
/// Counter: KIE refusals the operator must act on (401, 402, 433), by `code`.
pub const KIE_OPERATOR_ERRORS: &str = "kiebot_kie_operator_errors_total";
/// Gauge: generations waiting for a KIE create slot (as the reconciler last
/// saw them).
pub const KIE_CREATE_LINE: &str = "kiebot_kie_create_line";
/// Gauge: models off sale.
pub const MODELS_OFF_SALE: &str = "kiebot_models_off_sale";
/// Counter: catalog check findings, by `severity`.
pub const CATALOG_FINDINGS: &str = "kiebot_catalog_findings_total";

/// Records one KIE call.
pub fn kie_call(endpoint: &'static str, outcome: &'static str, seconds: f64) {
    metrics::counter!(KIE_CALLS, "endpoint" => endpoint, "outcome" => outcome).increment(1);
    metrics::histogram!(KIE_SECONDS, "endpoint" => endpoint).record(seconds);
}

/// Records a generation entering a state.
pub fn generation_state(state: &'static str) {
    metrics::counter!(GENERATIONS, "state" => state).increment(1);
}
