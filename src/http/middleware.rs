//! The request log (one line per request on stderr) and Prometheus metrics.

use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

use crate::error::LoggedError;

/// Log method, path, status and latency, with the cause of any error; count and time requests.
pub async fn log_and_measure(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status();
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    match response.extensions().get::<LoggedError>() {
        Some(err) if status.is_server_error() => {
            tracing::error!(%method, %path, status = status.as_u16(), latency_ms, error = %err.message, "request");
        }
        Some(err) => {
            tracing::warn!(%method, %path, status = status.as_u16(), latency_ms, error = %err.message, "request");
        }
        None => tracing::info!(%method, %path, status = status.as_u16(), latency_ms, "request"),
    }
    let labels = [
        ("method", method.to_string()),
        ("status", status.as_u16().to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(elapsed.as_secs_f64());
    response
}
