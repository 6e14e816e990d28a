//! `/healthz`, `/readyz` and `/metrics` on the probe address.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use tokio::net::TcpListener;

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
    routing::get,
};

use crate::{
    controller::Readiness,
    metrics::{Format, Metrics},
};

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

/// Ready once both caches are listed and watching, no write was refused for lack of
/// permission and status writes are not failing; a standby (whose caches are as warm) says so.
async fn readyz(State(probes): State<Probes>) -> impl IntoResponse {
    let role = if probes.leading.load(Ordering::Relaxed) {
        ""
    } else {
        " (standby)"
    };
    match probes.readiness.problem() {
        None => (StatusCode::OK, format!("ok{role}\n")),
        Some(problem) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{problem}{role}\n"),
        ),
    }
}

async fn metrics(State(probes): State<Probes>, headers: HeaderMap) -> impl IntoResponse {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::from_accept(accept);
    (
        [(header::CONTENT_TYPE, format.content_type())],
        probes.metrics.encode(format),
    )
}
