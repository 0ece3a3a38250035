//! Telemetry: Prometheus metrics and the HTTP endpoint that serves them.

pub mod http;
pub mod metrics;

pub use metrics::Metrics;
