//! `/healthz`, `/readyz` and `/metrics` on the probe address.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use tokio::net::TcpListener;

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};

use crate::{controller::Readiness, metrics::Metrics};

#[derive(Clone)]
pub struct Probes {
    pub metrics: Arc<Metrics>,
    pub readiness: Readiness,
    /// True while this replica runs the controllers (always, without leader election).
    pub leading: Arc<AtomicBool>,
    /// False once the controllers have stopped for good (shutdown).
    pub alive: Arc<AtomicBool>,
}

impl Probes {
    /// Serves on `listener` until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        tracing::info!(addr = %listener.local_addr()?, "probe server listening");
        let app = Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(self);
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

async fn healthz(State(probes): State<Probes>) -> impl IntoResponse {
    if probes.alive.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "controllers stopped\n")
    }
}

/// The leader is ready once both caches are listed and watching and no write was refused for
/// lack of permission; a standby is ready to take over.
async fn readyz(State(probes): State<Probes>) -> impl IntoResponse {
    if !probes.leading.load(Ordering::Relaxed) {
        return (StatusCode::OK, "ok (standby)\n".to_owned());
    }
    match probes.readiness.problem() {
        None => (StatusCode::OK, "ok\n".to_owned()),
        Some(problem) => (StatusCode::SERVICE_UNAVAILABLE, format!("{problem}\n")),
    }
}

async fn metrics(State(probes): State<Probes>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        probes.metrics.encode(),
    )
}
