//! The whole check: KIE's list, each sold model's schema and price, one
//! report.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use kiebot_domain::{Catalog, Family, Model};
use kiebot_kie::{Kie, KieClient, KieError};
use serde_json::Value;
use tokio::time::Instant;

use crate::compare::{Code, Finding, Severity, compare, compare_price, finding};
use crate::draft::Listing;
use crate::schema::input_schema;

/// What the check reads: KIE's catalogue API, or anything that answers like
/// it. Each method returns the envelope's `data`.
pub trait KieCatalogue: Sync {
    /// `GET /api/v1/models`.
    fn list(&self) -> impl Future<Output = Result<Value, KieError>> + Send;
    /// `GET /api/v1/models/<model>/schema`.
    fn schema(&self, model: &str) -> impl Future<Output = Result<Value, KieError>> + Send;
    /// `GET /api/v1/models/<model>/price`.
    fn price(&self, model: &str) -> impl Future<Output = Result<Value, KieError>> + Send;
}

impl KieCatalogue for KieClient {
    fn list(&self) -> impl Future<Output = Result<Value, KieError>> + Send {
        self.list_models()
    }

    fn schema(&self, model: &str) -> impl Future<Output = Result<Value, KieError>> + Send {
        self.model_schema(model)
    }

    fn price(&self, model: &str) -> impl Future<Output = Result<Value, KieError>> + Send {
        self.model_price(model)
    }
}

/// KIE behind the pipeline's trait (the HTTP client, or a dry run whose
/// catalogue calls fail).
impl KieCatalogue for std::sync::Arc<dyn Kie + '_> {
    async fn list(&self) -> Result<Value, KieError> {
        self.list_models().await
    }

    async fn schema(&self, model: &str) -> Result<Value, KieError> {
        self.model_schema(model).await
    }

    async fn price(&self, model: &str) -> Result<Value, KieError> {
        self.model_price(model).await
    }
}

/// How the check runs.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Least time between two requests. KIE allows one catalogue request per
    /// second; the default keeps a small margin.
    pub pace: Duration,
    /// Compare prices too (fetching a price when the list gives none).
    pub prices: bool,
    /// Above this share of sold market models missing from KIE's list, the
    /// list itself is suspect (a partial page, an outage), and nothing is
    /// taken off sale on its word.
    pub max_missing_share: f64,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            pace: Duration::from_millis(1100),
            prices: true,
            max_missing_share: 0.25,
        }
    }
}

/// Why no report could be made.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// KIE's model list could not be read.
    #[error("KIE's model list could not be read: {0}")]
    List(#[source] KieError),
    /// The list came back in a shape this check does not know, or empty.
    #[error("KIE's model list is unusable: {0}")]
    Listing(String),
}

/// What a check found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Every finding, by model then severity.
    pub findings: Vec<Finding>,
    /// Sold models compared.
    pub models_checked: usize,
    /// Models in KIE's list.
    pub listed: usize,
    /// Requests made to KIE.
    pub requests: usize,
    /// Whether KIE's list looked incomplete (see
    /// [`CheckOptions::max_missing_share`]).
    pub suspect: bool,
}

impl Report {
    /// Error-level findings.
    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
    }

    /// Whether any finding is an error (the command exits 1).
    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }

    /// Models to take off sale, with the first reason for each: every
    /// request of theirs would fail. Empty when the list was suspect.
    pub fn off_sale(&self) -> BTreeMap<String, String> {
        if self.suspect {
            return BTreeMap::new();
        }
        let mut out = BTreeMap::new();
        for f in self.findings.iter().filter(|f| f.code.takes_off_sale()) {
            out.entry(f.model.clone())
                .or_insert_with(|| match &f.field {
                    Some(field) => format!("{field}: {}", f.message),
                    None => f.message.clone(),
                });
        }
        out
    }

    /// Models whose price text disagrees with the table.
    pub fn price_drift(&self) -> BTreeSet<String> {
        self.findings
            .iter()
            .filter(|f| f.code == Code::PriceDrift)
            .map(|f| f.model.clone())
            .collect()
    }

    /// Count of findings of a severity.
    pub fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == severity)
            .count()
    }
}

/// Reads KIE's list reply: `{"total", "models": [...]}` as documented (a bare
/// array, `list` or `records` are accepted too).
pub fn parse_listing(data: &Value) -> Result<Vec<Listing>, CheckError> {
    let items = data
        .as_array()
        .or_else(|| {
            ["models", "list", "records", "items"]
                .iter()
                .find_map(|k| data.get(*k).and_then(Value::as_array))
        })
        .ok_or_else(|| CheckError::Listing("no list of models in the reply".into()))?;
    let listings: Vec<Listing> = items
        .iter()
        .filter_map(|m| {
            let model = m
                .get("model")
                .or_else(|| m.get("id"))
                .and_then(Value::as_str)?
                .to_owned();
            let text = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned);
            let task_types = match m.get("taskType") {
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
                Some(Value::String(s)) => vec![s.clone()],
                _ => Vec::new(),
            };
            Some(Listing {
                model,
                provider: text("provider"),
                task_types,
                pricing_desc: text("pricingDesc"),
            })
        })
        .collect();
    if listings.is_empty() {
        return Err(CheckError::Listing("the list holds no model".into()));
    }
    Ok(listings)
}

/// A price reply's text: a string, or an object with `pricingDesc`.
fn price_text(data: &Value) -> Option<String> {
    data.as_str()
        .or_else(|| data.get("pricingDesc").and_then(Value::as_str))
        .map(str::to_owned)
        .filter(|s| !s.trim().is_empty())
}

/// Spaces requests at least `pace` apart.
struct Pacer {
    pace: Duration,
    last: Option<Instant>,
    requests: usize,
}

/// How often a catalogue request KIE refused for its rate is asked again.
const RATE_RETRIES: u32 = 3;

impl Pacer {
    async fn wait(&mut self) {
        if let Some(last) = self.last {
            tokio::time::sleep_until(last + self.pace).await;
        }
        self.last = Some(Instant::now());
        self.requests += 1;
    }

    /// One paced request, asked again (a pace later each time) while KIE
    /// refuses it for its rate: requests sent a pace apart can still arrive
    /// closer, and a refusal for pace says nothing about the model.
    async fn call<T, F>(&mut self, mut request: impl FnMut() -> F) -> Result<T, KieError>
    where
        F: Future<Output = Result<T, KieError>>,
    {
        let mut refused = 0;
        loop {
            self.wait().await;
            match request().await {
                Err(e) if e.is_rate_limited() && refused < RATE_RETRIES => {
                    refused += 1;
                    tracing::debug!(
                        refused,
                        "KIE's catalogue refused a request for its rate; asking again"
                    );
                    // Leave a whole extra pace before the next try.
                    self.last = Some(Instant::now() + self.pace);
                }
                other => return other,
            }
        }
    }
}

/// Checks every sold model of `catalog` against KIE. A model that cannot be
/// read is a finding, not a failure; only an unusable list stops the check.
pub async fn check(
    catalog: &Catalog,
    kie: &impl KieCatalogue,
    options: &CheckOptions,
) -> Result<Report, CheckError> {
    let mut pacer = Pacer {
        pace: options.pace,
        last: None,
        requests: 0,
    };
    let listings = parse_listing(&pacer.call(|| kie.list()).await.map_err(CheckError::List)?)?;
    let by_model: BTreeMap<&str, &Listing> =
        listings.iter().map(|l| (l.model.as_str(), l)).collect();
    let sold: Vec<&Model> = catalog.models().iter().filter(|m| m.is_sold()).collect();
    let mut report = Report {
        listed: listings.len(),
        models_checked: sold.len(),
        ..Report::default()
    };
    // Several entries may share one KIE model (Veo's three modes): one read each.
    let mut schemas: BTreeMap<String, Result<Value, String>> = BTreeMap::new();
    let mut prices: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut missing_market = 0usize;
    let market_sold = sold.iter().filter(|m| m.family == Family::Market).count();
    for model in &sold {
        let kie_model = model.kie_model();
        let Some(listing) = by_model.get(kie_model) else {
            if model.family == Family::Market {
                missing_market += 1;
                report.findings.push(finding(
                    Severity::Error,
                    model,
                    None,
                    Code::NotListed,
                    format!("KIE's model list does not have {kie_model:?} any more"),
                ));
            } else {
                report.findings.push(finding(
                    Severity::Info,
                    model,
                    None,
                    Code::NotListed,
                    format!(
                        "{kie_model:?} is served by KIE's {} API, which the model list does not cover; checked against its recorded schema in the tests",
                        model.family.as_str()
                    ),
                ));
            }
            continue;
        };
        if !schemas.contains_key(kie_model) {
            let got = pacer
                .call(|| kie.schema(kie_model))
                .await
                .map_err(|e| e.to_string())
                .and_then(|data| {
                    data.get("openapi")
                        .cloned()
                        .filter(|v| v.is_object())
                        .or_else(|| data.get("paths").map(|_| data.clone()))
                        .ok_or_else(|| "the reply has no OpenAPI document".to_owned())
                });
            schemas.insert(kie_model.to_owned(), got);
        }
        match &schemas[kie_model] {
            Ok(doc) => match input_schema(doc, model.family) {
                Ok(schema) => report.findings.extend(compare(model, &schema)),
                Err(e) => report.findings.push(finding(
                    Severity::Error,
                    model,
                    None,
                    Code::SchemaUnavailable,
                    format!("KIE's schema cannot be read: {e}"),
                )),
            },
            Err(e) => report.findings.push(finding(
                Severity::Error,
                model,
                None,
                Code::SchemaUnavailable,
                format!("KIE's schema could not be fetched: {e}"),
            )),
        }
        if options.prices {
            let text = match &listing.pricing_desc {
                Some(p) => Some(p.clone()),
                None => {
                    if !prices.contains_key(kie_model) {
                        let p = pacer
                            .call(|| kie.price(kie_model))
                            .await
                            .ok()
                            .and_then(|d| price_text(&d));
                        prices.insert(kie_model.to_owned(), p);
                    }
                    prices[kie_model].clone()
                }
            };
            match text {
                Some(t) => report.findings.push(compare_price(model, &t)),
                None => report.findings.push(finding(
                    Severity::Info,
                    model,
                    None,
                    Code::PriceUnparsed,
                    "KIE gives no price text for it".into(),
                )),
            }
        }
    }
    report.requests = pacer.requests;
    report.suspect = market_sold > 0
        && (missing_market as f64) / (market_sold as f64) > options.max_missing_share;
    report
        .findings
        .sort_by(|a, b| (&a.model, a.severity).cmp(&(&b.model, b.severity)));
    Ok(report)
}
