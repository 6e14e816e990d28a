//! The operator's own requests to the API server, counted and timed by verb, resource and
//! answer (`reserve_api_requests_total`, `reserve_api_request_duration_seconds`): the API
//! server is where this operator's limits are, so its requests are what to look at first.
//!
//! A client like any other, whose requests pass through [`metered`] on their way out. A
//! request's time runs until the answer's headers (a watch: until it is established).

use std::{sync::Arc, time::Instant};

use http::{Method, Request};
use kube::{Client, client::Body};

use crate::metrics::Metrics;

/// A client like `client` whose every request is counted and timed in `metrics`.
pub fn metered(client: Client, metrics: Arc<Metrics>) -> Client {
    let default_namespace = client.default_namespace().to_owned();
    let service = tower::service_fn(move |request: Request<Body>| {
        let (client, metrics) = (client.clone(), metrics.clone());
        async move {
            let (verb, resource) = describe(
                request.method(),
                request.uri().path(),
                request.uri().query().unwrap_or_default(),
            );
            let start = Instant::now();
            let answer = client.send(request).await;
            let code = match &answer {
                Ok(response) => response.status().as_u16().to_string(),
                Err(kube::Error::Api(status)) => status.code.to_string(),
                Err(_) => "error".to_owned(),
            };
            metrics.api_request(verb, &resource, &code, start.elapsed());
            answer
        }
    });
    Client::new(service, default_namespace)
}

/// The verb (as RBAC and the audit log name it) and the resource (`group/resource`, with
/// `/subresource`; the path itself for what is not a resource) of a request.
pub fn describe(method: &Method, path: &str, query: &str) -> (&'static str, String) {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] if !rest.is_empty() => ("", rest),
        ["apis", group, _version, rest @ ..] if !rest.is_empty() => (*group, rest),
        _ => return ("get", path.to_owned()),
    };
    let rest = match rest {
        ["namespaces", _namespace, rest @ ..] if !rest.is_empty() => rest,
        rest => rest,
    };
    let (resource, name, subresource) = (rest[0], rest.get(1), rest.get(2));
    let watch = query
        .split('&')
        .any(|p| p == "watch=true" || p == "watch=1");
    let verb = match *method {
        Method::GET if watch => "watch",
        Method::GET if name.is_some() => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if name.is_some() => "delete",
        Method::DELETE => "deletecollection",
        _ => "other",
    };
    let resource = match subresource {
        Some(sub) => format!("{group}/{resource}/{sub}"),
        None => format!("{group}/{resource}"),
    };
    (verb, resource)
}

#[cfg(test)]
mod tests {
    use http::StatusCode;
    use k8s_openapi::api::coordination::v1::Lease;
    use kube::Api;

    use super::*;
    use crate::{metrics::Format, mock_api::mock_client};

    #[test]
    fn a_request_is_named_as_rbac_names_it() {
        let orders = "/apis/reserve.coffeechain.io/v1/namespaces/shop/orders";
        for (method, path, query, verb, resource) in [
            (
                Method::GET,
                orders,
                "watch=true&resourceVersion=1",
                "watch",
                "reserve.coffeechain.io/orders",
            ),
            (
                Method::GET,
                orders,
                "limit=1",
                "list",
                "reserve.coffeechain.io/orders",
            ),
            (
                Method::GET,
                "/apis/reserve.coffeechain.io/v1/orders",
                "",
                "list",
                "reserve.coffeechain.io/orders",
            ),
            (
                Method::PATCH,
                &format!("{orders}/o1/status"),
                "",
                "patch",
                "reserve.coffeechain.io/orders/status",
            ),
            (
                Method::DELETE,
                &format!("{orders}/o1"),
                "",
                "delete",
                "reserve.coffeechain.io/orders",
            ),
            (
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/shop/events",
                "",
                "create",
                "events.k8s.io/events",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/shop",
                "",
                "get",
                "/namespaces",
            ),
            (
                Method::GET,
                "/api/v1/namespaces",
                "labelSelector=a",
                "list",
                "/namespaces",
            ),
            (Method::GET, "/version", "", "get", "/version"),
        ] {
            assert_eq!(
                describe(&method, path, query),
                (verb, resource.to_owned()),
                "{method} {path}?{query}"
            );
        }
    }

    #[tokio::test]
    async fn every_request_is_counted_with_its_answer() {
        let (client, mut server) = mock_client();
        let metrics = Arc::new(Metrics::new(&[], Vec::new()));
        let leases: Api<Lease> = Api::namespaced(metered(client, metrics.clone()), "ns");
        let (got, ()) = tokio::join!(leases.get("reserve-operator"), async {
            server.next().await.fail(StatusCode::FORBIDDEN);
        });
        assert!(got.is_err());
        let text = metrics.encode(Format::OpenMetrics);
        for needle in [
            "reserve_api_requests_total{verb=\"get\",resource=\"coordination.k8s.io/leases\",code=\"403\"} 1",
            "reserve_api_request_duration_seconds_count{verb=\"get\",resource=\"coordination.k8s.io/leases\"} 1",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
    }
}
