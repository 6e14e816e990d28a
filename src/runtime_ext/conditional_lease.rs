//! Lease writes conditional on the Lease as it was read.
//!
//! kube-lease-manager 0.13 renews, takes and releases the Lease with patches that carry no
//! precondition (`LeaseState::lock` and `LeaseState::release` in its `src/state.rs`). A renewal
//! that the network holds up and delivers late is therefore accepted whoever holds the Lease by
//! then: `renewTime` goes back, the Lease looks expired early to every replica, and a replica
//! takes it from a healthy leader. client-go's leader election cannot do this: it updates the
//! Lease with the resourceVersion it read, so a stale write is refused with 409. No upstream
//! issue exists yet (alex-karpenko/kube-lease-manager; the text to file is in
//! `docs/architecture.md#upstream-gaps`); until the manager conditions its own writes, its client
//! goes through this wrapper. Every answer that shows the Lease records its resourceVersion
//! (the manager reads the Lease before each decision and after each write), and every patch of
//! the Lease carries the last one as `metadata.resourceVersion`, which the API server checks as
//! it checks an update's: a patch computed from a Lease someone has written since is refused.
//! The resourceVersion also pins the holder the decision was made with, since a new holder is a
//! new version.

use std::sync::{Arc, Mutex};

use http::{Method, Request, Response};
use http_body_util::BodyExt;
use kube::{Client, client::Body};
use serde::Deserialize;

/// A client like `client` whose patches of the Lease `name` in `namespace` are conditional on
/// the resourceVersion of that Lease in the last answer that showed it.
pub fn conditional_lease_writes(client: Client, namespace: &str, name: &str) -> Client {
    let default_namespace = client.default_namespace().to_owned();
    let lease = Arc::new(LeasePath {
        collection: format!("/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"),
        object: format!("/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"),
        name: name.to_owned(),
        version: Mutex::default(),
    });
    let service = tower::service_fn(move |request: Request<Body>| {
        let (client, lease) = (client.clone(), lease.clone());
        async move { lease.send(&client, request).await }
    });
    Client::new(service, default_namespace)
}

struct LeasePath {
    collection: String,
    object: String,
    name: String,
    /// The resourceVersion of the Lease in the last answer that showed it.
    version: Mutex<Option<String>>,
}

#[derive(Deserialize)]
struct Shown {
    kind: Option<String>,
    metadata: Option<ShownMeta>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ShownMeta {
    name: Option<String>,
    resource_version: Option<String>,
}

impl LeasePath {
    async fn send(
        &self,
        client: &Client,
        request: Request<Body>,
    ) -> Result<Response<Body>, kube::Error> {
        let path = request.uri().path();
        let on_lease = path == self.object;
        let shows_lease = on_lease || (path == self.collection && request.method() == Method::POST);
        let request = if on_lease && request.method() == Method::PATCH {
            self.conditional(request).await?
        } else {
            request
        };
        let response = client.send(request).await?;
        if shows_lease && response.status().is_success() {
            self.remember(response).await
        } else {
            Ok(response)
        }
    }

    /// The patch with `metadata.resourceVersion` set to the version last seen.
    async fn conditional(&self, request: Request<Body>) -> Result<Request<Body>, kube::Error> {
        let Some(version) = self.version() else {
            return Err(kube::Error::Service(
                "refusing an unconditional write of the Lease: it has not been read yet".into(),
            ));
        };
        let (parts, body) = request.into_parts();
        let bytes = collect(body).await?;
        let mut patch: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(kube::Error::SerdeError)?;
        let Some(object) = patch.as_object_mut() else {
            return Err(kube::Error::Service(
                "a Lease patch that is not an object".into(),
            ));
        };
        let metadata = object
            .entry("metadata")
            .or_insert_with(|| serde_json::json!({}));
        if let Some(metadata) = metadata.as_object_mut() {
            metadata.insert("resourceVersion".into(), version.into());
        }
        let body = serde_json::to_vec(&patch).map_err(kube::Error::SerdeError)?;
        Ok(Request::from_parts(parts, Body::from(body)))
    }

    /// Records the resourceVersion of the Lease the answer shows, and hands the answer on.
    async fn remember(&self, response: Response<Body>) -> Result<Response<Body>, kube::Error> {
        let (parts, body) = response.into_parts();
        let bytes = collect(body).await?;
        if let Ok(Shown {
            kind: Some(kind),
            metadata:
                Some(ShownMeta {
                    name: Some(name),
                    resource_version: Some(version),
                }),
        }) = serde_json::from_slice::<Shown>(&bytes)
            && kind == "Lease"
            && name == self.name
        {
            *self.version.lock().unwrap_or_else(|p| p.into_inner()) = Some(version);
        }
        Ok(Response::from_parts(parts, Body::from(bytes)))
    }

    fn version(&self) -> Option<String> {
        self.version
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

async fn collect(body: Body) -> Result<bytes::Bytes, kube::Error> {
    body.collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(|e| kube::Error::Service(e.into()))
}

#[cfg(test)]
mod tests {
    use http::StatusCode;
    use k8s_openapi::api::coordination::v1::Lease;
    use kube::{
        Api,
        api::{Patch, PatchParams},
    };
    use serde_json::{Value, json};

    use super::*;
    use crate::mock_api::{ApiServer, mock_service};

    const PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/ns/leases/reserve-operator";

    fn lease(version: &str, holder: &str) -> Value {
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "reserve-operator", "namespace": "ns", "resourceVersion": version},
            "spec": {"holderIdentity": holder},
        })
    }

    async fn answer(
        server: &mut ApiServer,
        status: StatusCode,
        body: Value,
    ) -> (Method, String, Value) {
        let exchange = server.next().await;
        let (method, path, sent) = (
            exchange.method.clone(),
            exchange.path.clone(),
            exchange.body.clone(),
        );
        exchange.answer(status, body);
        (method, path, sent)
    }

    #[tokio::test]
    async fn a_patch_carries_the_version_last_read_and_a_stale_one_is_refused() {
        let (service, mut handle) = mock_service();
        let client = conditional_lease_writes(Client::new(service, "ns"), "ns", "reserve-operator");
        let leases: Api<Lease> = Api::namespaced(client, "ns");
        let renewal = json!({"spec": {"renewTime": "2026-12-01T00:00:00.000000Z"}});
        let calls = async {
            let read = leases.get("reserve-operator").await.unwrap();
            assert_eq!(read.metadata.resource_version.as_deref(), Some("7"));
            leases
                .patch(
                    "reserve-operator",
                    &PatchParams::default(),
                    &Patch::Strategic(&renewal),
                )
                .await
                .unwrap();
            // Someone else wrote the Lease since: the next renewal, based on version 8, fails.
            leases
                .patch(
                    "reserve-operator",
                    &PatchParams::default(),
                    &Patch::Strategic(&renewal),
                )
                .await
                .unwrap_err()
        };
        let server = async {
            let (method, path, _) = answer(&mut handle, StatusCode::OK, lease("7", "a")).await;
            assert_eq!((method, path.as_str()), (Method::GET, PATH));
            let (method, _, sent) = answer(&mut handle, StatusCode::OK, lease("8", "a")).await;
            assert_eq!(method, Method::PATCH);
            assert_eq!(sent["metadata"]["resourceVersion"], "7", "{sent}");
            assert_eq!(
                sent["spec"], renewal["spec"],
                "the patch is otherwise unchanged"
            );
            let conflict = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "reason": "Conflict", "code": 409, "message": "the object has been modified"});
            let (_, _, sent) = answer(&mut handle, StatusCode::CONFLICT, conflict).await;
            assert_eq!(
                sent["metadata"]["resourceVersion"], "8",
                "from the last answer"
            );
        };
        let (error, ()) = tokio::join!(calls, server);
        assert!(
            matches!(&error, kube::Error::Api(status) if status.code == 409),
            "{error}"
        );
    }

    #[tokio::test]
    async fn nothing_is_written_before_the_lease_was_read_and_other_objects_pass_through() {
        let (service, mut handle) = mock_service();
        let client = conditional_lease_writes(Client::new(service, "ns"), "ns", "reserve-operator");
        let leases: Api<Lease> = Api::namespaced(client, "ns");
        let patch = json!({"spec": {"holderIdentity": "b"}});
        let error = leases
            .patch(
                "reserve-operator",
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("has not been read yet"),
            "{error}"
        );
        // Another Lease is none of this wrapper's business.
        let (params, strategic) = (PatchParams::default(), Patch::Strategic(&patch));
        let calls = leases.patch("other", &params, &strategic);
        let server = answer(&mut handle, StatusCode::OK, lease("3", "b"));
        let (written, (_, path, sent)) = tokio::join!(calls, server);
        written.unwrap();
        assert!(path.ends_with("/leases/other"), "{path}");
        assert_eq!(sent, patch);
    }
}
