//! The reconcile tier's test bench: a scripted API server (tower-test) behind a real kube
//! `Client`, and a `Context` around it, so a test sees every request a reconcile makes (verb,
//! path, body) and decides each answer, in milliseconds and without a cluster.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::{Client, client::Body};
use serde_json::{Value, json};
use tower_test::mock;

use super::{
    context::Context,
    error::METRIC_LABELS,
    readiness::{Readiness, Watched},
};
use crate::{leader::Fence, loyalty::LevelPolicy, metrics::Metrics};

/// The API server side of a mock client.
pub struct ApiServer(mock::Handle<Request<Body>, Response<Body>>);

/// A client whose requests reach the returned [`ApiServer`].
pub fn mock_client() -> (Client, ApiServer) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), ApiServer(handle))
}

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
        readiness,
        Arc::default(),
    ))
}

/// One request, waiting for its answer.
pub struct Exchange {
    pub method: Method,
    pub path: String,
    /// The query string, without `?` (empty if none).
    pub query: String,
    pub content_type: String,
    pub body: Value,
    respond: mock::SendResponse<Response<Body>>,
}

impl ApiServer {
    /// The next request a reconcile sends.
    pub async fn next(&mut self) -> Exchange {
        let (request, respond) = self
            .0
            .next_request()
            .await
            .expect("the client sends a request");
        let (parts, body) = request.into_parts();
        let bytes = body.collect().await.expect("a request body").to_bytes();
        Exchange {
            method: parts.method,
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().unwrap_or_default().to_owned(),
            content_type: parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
            body: as_object(serde_json::from_slice(&bytes).unwrap_or(Value::Null)),
            respond,
        }
    }
}

/// A JSON patch's operations as the object they set (`/metadata/resourceVersion`, `/status`),
/// so a test reads every write's body alike; any other body as it is.
fn as_object(body: Value) -> Value {
    let Value::Array(operations) = body else {
        return body;
    };
    let mut object = json!({});
    for operation in operations {
        let path = operation["path"].as_str().unwrap_or_default();
        let mut at = &mut object;
        for segment in path.split('/').skip(1) {
            at = &mut at[segment];
        }
        *at = operation["value"].clone();
    }
    object
}

impl ApiServer {
    /// Whether nothing has been sent that was not taken with [`next`](Self::next) yet.
    pub fn idle(&mut self) -> bool {
        use futures::FutureExt;
        self.0.next_request().now_or_never().is_none()
    }
}

impl Exchange {
    /// The object's name: the last path segment (before `/status`).
    pub fn name(&self) -> &str {
        let path = self.path.trim_end_matches("/status");
        path.rsplit('/').next().unwrap_or_default()
    }

    /// Answers 200 with `body`.
    pub fn ok(self, body: Value) {
        self.answer(StatusCode::OK, body);
    }

    /// Answers `code` with a Status, as the API server refuses or fails a request.
    pub fn fail(self, code: StatusCode) {
        let body = json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": code.canonical_reason().unwrap_or("failed"), "code": code.as_u16(),
        });
        self.answer(code, body);
    }

    fn answer(self, code: StatusCode, body: Value) {
        let body = Body::from(serde_json::to_vec(&body).expect("JSON"));
        self.respond.send_response(
            Response::builder()
                .status(code)
                .body(body)
                .expect("a response"),
        );
    }
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
