//! The scripted API server of every test that checks exact requests: a tower-test mock behind
//! a real kube `Client` (or under a layer, as a raw service). The test takes each request the
//! code sends ([`ApiServer::next`]: verb, path, query, body) and answers it. A request that
//! does not come fails the test after [`DEADLINE`] of real time, whether tokio's clock runs or
//! is paused, so a test never hangs.

use std::{future::Future, time::Duration};

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::{Client, client::Body};
use serde_json::{Value, json};
use tower_test::mock;

/// How long, in real time, a test waits for a request it expects. The code under test sends
/// its next request in microseconds; this is far beyond that on the slowest machine, and short
/// enough that a missing request fails the run at once.
pub const DEADLINE: Duration = Duration::from_secs(2);

/// The mock as a service, for tests that put a layer of their own around it.
pub type Service = mock::Mock<Request<Body>, Response<Body>>;

/// The API server side of a mock client.
pub struct ApiServer(mock::Handle<Request<Body>, Response<Body>>);

/// A service whose requests reach the returned [`ApiServer`].
pub fn mock_service() -> (Service, ApiServer) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (service, ApiServer(handle))
}

/// A client whose requests reach the returned [`ApiServer`].
pub fn mock_client() -> (Client, ApiServer) {
    let (service, server) = mock_service();
    (Client::new(service, "default"), server)
}

/// `future`, or a failed test after [`DEADLINE`] of real time. The deadline is a thread's
/// sleep, not a tokio timer: with tokio's clock paused (a test of backoffs), a tokio timer
/// would fire as soon as nothing else runs.
async fn within_deadline<F: Future>(future: F) -> F::Output {
    let (expired, deadline) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        std::thread::sleep(DEADLINE);
        let _ = expired.send(());
    });
    tokio::select! {
        output = future => output,
        _ = deadline => panic!(
            "no request within {DEADLINE:?}: the code under test stopped sending where the \
             test expects one more"
        ),
    }
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
    /// The next request the code under test sends; fails the test if none comes within
    /// [`DEADLINE`].
    pub async fn next(&mut self) -> Exchange {
        let (request, respond) = within_deadline(self.0.next_request())
            .await
            .expect("the client is gone: it sends no more requests");
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

    /// Answers `code` with `body`.
    pub fn answer(self, code: StatusCode, body: Value) {
        let body = Body::from(serde_json::to_vec(&body).expect("JSON"));
        self.respond.send_response(
            Response::builder()
                .status(code)
                .body(body)
                .expect("a response"),
        );
    }
}
