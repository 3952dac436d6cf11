//! Logging and tracing for every kiebot process.
//!
//! [`init`] installs one `tracing` subscriber: an `EnvFilter` (`RUST_LOG`,
//! default `info` for our crates and `warn` for the rest), a formatter
//! (readable or one JSON object per line, per `LOG_FORMAT`), and, when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, an OpenTelemetry layer that exports
//! every span (jobs, KIE calls, Bot API calls, HTTP requests) over OTLP/HTTP in
//! batches. Secrets never reach a span: the crates that hold them record only
//! what is safe (see `kiebot_config::Secret` and `kiebot_kie::ApiKey`).
//!
//! Keep the returned [`Telemetry`] alive for the life of the process; dropping
//! it flushes spans still buffered.

use kiebot_config::LogFormat;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// The default filter: our crates at info, everything else at warn.
pub const DEFAULT_FILTER: &str = "warn,kiebot=info,kiebot_worker=info,kiebot_store=info,kiebot_kie=info,kiebot_tg=info,kiebot_ops=info,kiebot_bot=info";

/// Set-up failed (a bad OTLP endpoint, a subscriber already installed).
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built.
    #[error("OTEL_EXPORTER_OTLP_ENDPOINT: {0}")]
    Exporter(String),
    /// Another global subscriber is installed.
    #[error("a tracing subscriber is already installed: {0}")]
    AlreadyInstalled(String),
}

/// Keeps the exporter alive; flushes on drop.
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

/// Installs the global subscriber for a service (`kiebot`, `kiebot-bot`,
/// `kiebot-worker`).
pub fn init(
    service: &'static str,
    format: LogFormat,
    otlp_endpoint: Option<&str>,
) -> Result<Telemetry, TelemetryError> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Json => Box::new(
            tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_writer(std::io::stderr),
        ),
        LogFormat::Pretty => {
            Box::new(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        }
    };
    let (otel, provider): (Option<Box<dyn Layer<Registry> + Send + Sync>>, _) = match otlp_endpoint
    {
        None => (None, None),
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
                .build()
                .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .build();
            let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource)
                .build();
            let tracer = provider.tracer(service);
            (
                Some(Box::new(tracing_opentelemetry::layer().with_tracer(tracer))),
                Some(provider),
            )
        }
    };
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = vec![fmt];
    if let Some(o) = otel {
        layers.push(o);
    }
    tracing_subscriber::registry()
        .with(layers)
        .with(filter)
        .try_init()
        .map_err(|e| TelemetryError::AlreadyInstalled(e.to_string()))?;
    Ok(Telemetry { provider })
}
