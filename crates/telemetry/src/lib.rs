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

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// The default filter: our crates at info, everything else at warn.
pub const DEFAULT_FILTER: &str = "warn,kiebot=info,kiebot_worker=info,kiebot_store=info,kiebot_kie=info,kiebot_tg=info,kiebot_ops=info,kiebot_bot=info";

/// Log output format (`LOG_FORMAT`). Defined here, below the settings, so
/// crates that only trace (the worker) need not know the settings;
/// `kiebot_config` re-exports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable, for a terminal.
    Pretty,
    /// One JSON object per line, for log shippers.
    Json,
}

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

/// The W3C `traceparent` of the current span (`None` when spans are not
/// exported). Stored with a generation at confirmation, so the jobs that run
/// it later, in other processes, can link their spans back to the request.
pub fn current_traceparent() -> Option<String> {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// Links the current span to the operation a stored `traceparent` names.
/// A link, not a parent: the job is a later, separate operation (OpenTelemetry's
/// convention for queue consumers), and its own trace stays small. A missing
/// or malformed value is ignored: tracing never fails a job.
pub fn link_current_span(traceparent: Option<&str>) {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    if let Some(sc) = traceparent.and_then(parse_traceparent) {
        tracing::Span::current().add_link(sc);
    }
}

/// Parses a version-00 W3C `traceparent` into a remote span context.
pub fn parse_traceparent(value: &str) -> Option<opentelemetry::trace::SpanContext> {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    let mut parts = value.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00"
        || parts.next().is_some()
        || trace.len() != 32
        || span.len() != 16
        || flags.len() != 2
    {
        return None;
    }
    let sc = SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()?),
        true,
        TraceState::default(),
    );
    sc.is_valid().then_some(sc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_exported_over_otel_has_a_traceparent_that_parses_back() {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = Registry::default()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("confirm");
            let _g = span.enter();
            let tp = current_traceparent().expect("a traceparent inside an exported span");
            let sc = parse_traceparent(&tp).expect("it parses");
            assert_eq!(tp, format!("00-{}-{}-01", sc.trace_id(), sc.span_id()));
            // Linking to it inside another span does not disturb that span.
            let job = tracing::info_span!("job");
            let _j = job.enter();
            link_current_span(Some(&tp));
            assert_ne!(current_traceparent(), Some(tp));
        });
    }

    #[test]
    fn without_otel_there_is_no_traceparent() {
        let span = tracing::info_span!("confirm");
        let _g = span.enter();
        assert_eq!(current_traceparent(), None);
    }

    #[test]
    fn malformed_traceparents_are_refused() {
        for bad in [
            "",
            "00-abc-def-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
        assert!(
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_some()
        );
    }
}
