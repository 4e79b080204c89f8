//! The collector's HTTP endpoint: `/metrics` (Prometheus text) and `/health`.
//!
//! It runs on the async runtime, apart from the receive workers, so it keeps answering while
//! they are busy. It stops when the shutdown token is cancelled.

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;
use tracing::error;

use crate::metrics::Metrics;

/// The endpoint's routes.
pub fn router(metrics: Metrics) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/health", get(|| async { "ok\n" }))
        .with_state(metrics)
}

async fn render_metrics(State(metrics): State<Metrics>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        metrics.render(),
    )
}

/// Binds the metrics endpoint's address (a bad one stops the start before anything runs);
/// [`serve`] answers on it later.
pub async fn bind(address: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address).await.map_err(|e| {
        anyhow::anyhow!("cannot listen for metrics on {address} (key: collector.metrics_listen): {e}")
    })
}

/// Serves [`router`] on `listener` in the background until `shutdown`.
pub fn serve(listener: tokio::net::TcpListener, metrics: Metrics, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let server =
            axum::serve(listener, router(metrics)).with_graceful_shutdown(shutdown.cancelled_owned());
        if let Err(e) = server.await {
            error!(error = %e, "metrics endpoint stopped");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    #[tokio::test]
    async fn metrics_route_serves_prometheus_text() {
        let metrics = Metrics::new();
        metrics.records_written.inc_by(5);
        let response = router(metrics)
            .oneshot(Request::get("/metrics").body(Body::empty()).expect("request"))
            .await
            .expect("response");
        assert_eq!(response.status(), 200);
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        let text = String::from_utf8(body.to_vec()).expect("utf-8");
        assert!(text.contains("egress_records_written_total 5"), "{text}");
    }
}
