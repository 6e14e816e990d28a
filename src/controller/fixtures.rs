//! The reconcile tier's test bench: a [`Context`] around the scripted API server of
//! [`mock_api`](crate::mock_api), so a test sees every request a reconcile makes (verb, path,
//! body) and decides each answer, in milliseconds and without a cluster; and the objects the
//! API server answers status writes with.

use std::sync::Arc;

use kube::Client;
use serde_json::{Value, json};

use super::{
    context::{Context, Observed},
    error::METRIC_LABELS,
    readiness::{Readiness, Watched},
};
pub use crate::mock_api::{ApiServer, Exchange, mock_client};
use crate::{leader::Fence, loyalty::LevelPolicy, metrics::Metrics};

/// A Context on a mock client: every cache listed, writing allowed (no leader election).
pub fn context(client: Client) -> Arc<Context> {
    context_fenced(client, Fence::always_open())
}

/// A Context on a mock client behind `fence`, every cache listed.
pub fn context_fenced(client: Client, fence: Fence) -> Arc<Context> {
    let readiness = Readiness::default();
    for kind in Watched::ALL {
        readiness.listed(kind);
    }
    Arc::new(Context::new(
        client,
        LevelPolicy::default(),
        "test",
        fence,
        Arc::new(Metrics::new(&METRIC_LABELS, Vec::new())),
        Observed {
            readiness,
            ..Observed::default()
        },
    ))
}

/// The status a merge patch in `exchange` leaves, as the API server stores it: a null removes
/// the field.
fn patched_status(exchange: &Exchange) -> Value {
    let mut status = exchange.body["status"].clone();
    if let Some(fields) = status.as_object_mut() {
        fields.retain(|_, value| !value.is_null());
    }
    status
}

/// What the API server answers to a status write of an Order: the order at `version`.
pub fn written_order(exchange: &Exchange, version: u64) -> Value {
    json!({
        "apiVersion": "reserve.coffeechain.io/v1", "kind": "Order",
        "metadata": { "name": exchange.name(), "namespace": namespace(exchange),
                      "resourceVersion": version.to_string() },
        "spec": { "customer": "-", "product": "-", "quantity": 1 },
        "status": patched_status(exchange),
    })
}

/// What the API server answers to a status write of a Customer: the customer at `version`.
pub fn written_customer(exchange: &Exchange, version: u64) -> Value {
    json!({
        "apiVersion": "reserve.coffeechain.io/v1", "kind": "Customer",
        "metadata": { "name": exchange.name(), "namespace": namespace(exchange),
                      "resourceVersion": version.to_string() },
        "spec": {},
        "status": patched_status(exchange),
    })
}

fn namespace(exchange: &Exchange) -> &str {
    exchange
        .path
        .split('/')
        .skip_while(|segment| *segment != "namespaces")
        .nth(1)
        .unwrap_or_default()
}
