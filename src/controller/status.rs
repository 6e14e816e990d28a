//! The only way the operator writes: the status subresource of one object, as a JSON patch that
//! puts the whole status in place, by the operator's field manager, fenced by the Lease and
//! conditional on the resourceVersion the status was computed from (the patch sets it, so the
//! API server refuses it with 409 if the object moved on). A patch costs the API server far less
//! than a server-side apply (no YAML parsing, no structured merge, no field-set comparison per
//! manager) and keeps every guarantee: the same `patch` verb, status only, and managedFields
//! still name `reserve-operator` as the writer of the status. The status is replaced, not
//! merged: a field this version does not know (a newer version's, after a downgrade or while
//! an older replica still leads in a rollout) is not left behind as a stale observation.
//!
//! The writer also remembers what it wrote until the watch shows it (read-your-writes, which
//! kube-runtime's reflector does not offer): a reconcile that runs between a write and its
//! watch event sees the written status and resourceVersion instead of the cached ones, so it
//! neither writes again nor fails its precondition; and the watch event of the operator's own
//! write is recognised as such, so it wakes nothing, while any other change (a user's, another
//! writer's) wakes a reconcile that repairs it.

use std::{sync::Arc, time::Duration};

use k8s_openapi::NamespaceResourceScope;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams, ValidationDirective},
    runtime::reflector::ObjectRef,
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;

use super::{
    declared::FIELD_MANAGER,
    error::Error,
    freshness::Freshness,
    objects::{Objects, Written},
    readiness::Readiness,
};
use crate::{leader::Fence, metrics::Metrics};

/// How many of its own writes in a row the writer remembers while the watch has shown none of
/// them; a cache further behind than that is taken at its word (a write from it is refused with
/// 409 and recomputed once the watch catches up).
const UNSEEN_CHAIN: usize = 8;

/// A status write that has not been answered by then counts as failed (the API server may be
/// waiting for its storage); the object is looked at again, and a write that landed after all
/// shows up in the watch like anyone else's.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every write needs besides its object: whether this replica may write now (it holds a
/// fresh Lease, and its index is one moment of the store), and where it reports.
#[derive(Clone)]
pub struct Guards {
    pub fence: Fence,
    pub freshness: Arc<Freshness>,
    pub metrics: Arc<Metrics>,
    pub readiness: Readiness,
}

pub struct StatusWriter<K: Resource, S> {
    client: Client,
    controller: &'static str,
    guards: Guards,
    /// Where the writes whose watch event has not arrived are kept, per object.
    objects: Arc<Objects<K, S>>,
}

/// The patch that makes an object's status exactly `status`, if the object is still at
/// `resource_version`: the resourceVersion set (a stale one is refused with 409), then the
/// status put in place whole, whatever it held before.
fn status_patch<S: Serialize>(status: &S, resource_version: &str) -> json_patch::Patch {
    let status = serde_json::to_value(status).unwrap_or_else(|_| json!({}));
    serde_json::from_value(json!([
        { "op": "replace", "path": "/metadata/resourceVersion", "value": resource_version },
        { "op": "add", "path": "/status", "value": status },
    ]))
    .expect("a JSON patch of two operations")
}

impl<K, S> StatusWriter<K, S>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    S: Clone + Serialize,
{
    pub fn new(
        client: Client,
        controller: &'static str,
        guards: Guards,
        objects: Arc<Objects<K, S>>,
    ) -> Self {
        Self {
            client,
            controller,
            guards,
            objects,
        }
    }

    /// This process's own last write to `key`, if the cache (at `cached_version`) has not
    /// caught up with it, or with the writes before it: the resourceVersion it produced, and
    /// the status written.
    pub fn unseen_write(&self, key: &ObjectRef<K>, cached_version: &str) -> Option<(String, S)> {
        self.objects
            .with_existing(key, |entry| match &entry.written {
                Some(written) if written.since.iter().any(|v| v == cached_version) => {
                    Some((written.produced.clone(), written.status.clone()))
                }
                Some(_) => {
                    entry.written = None;
                    None
                }
                None => None,
            })
            .flatten()
    }

    /// The watch delivered `key` at `version`. True when it is the echo of one of this
    /// process's own unseen writes (nothing new to react to); any other version means someone
    /// else changed the object.
    pub fn is_own_echo(&self, key: &ObjectRef<K>, version: &str) -> bool {
        self.objects
            .with_existing(key, |entry| {
                let Some(written) = entry.written.as_mut() else {
                    return false;
                };
                if written.produced == version {
                    entry.written = None;
                    return true;
                }
                match written.since.iter().position(|v| v == version) {
                    // The version the first unseen write was conditional on: no news.
                    Some(0) => false,
                    // An earlier write of the chain: the cache is at it now.
                    Some(at) => {
                        written.since.drain(..at);
                        true
                    }
                    None => {
                        entry.written = None;
                        false
                    }
                }
            })
            .unwrap_or(false)
    }

    /// Writes `status` to the status subresource of `key`, if this replica may write (it holds
    /// a freshly renewed Lease) and the object is still at `resource_version`.
    pub async fn write(
        &self,
        key: &ObjectRef<K>,
        resource_version: &str,
        status: &S,
    ) -> Result<(), Error> {
        let Guards {
            fence,
            freshness,
            metrics,
            readiness,
        } = &self.guards;
        let name = key.name.clone();
        let namespace = key.namespace.clone().ok_or_else(|| Error::NoNamespace {
            kind: K::kind(&()).into(),
            name: name.clone(),
        })?;
        if let Err(reason) = fence.check() {
            metrics.write_withheld(self.controller);
            return Err(Error::NotLeading(reason));
        }
        if !freshness.consistent() {
            metrics.write_withheld(self.controller);
            return Err(Error::Relisting);
        }
        let patch = status_patch(status, resource_version);
        metrics.status_write(self.controller);
        let api: Api<K> = Api::namespaced(self.client.clone(), &namespace);
        // The body is the operator's own, typed: the server need not check it for unknown or
        // duplicate fields (the schema still validates every value).
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            field_validation: Some(ValidationDirective::Ignore),
            ..PatchParams::default()
        };
        let sent = tokio::time::timeout(
            WRITE_TIMEOUT,
            api.patch_status(&name, &params, &Patch::Json::<()>(patch)),
        )
        .await
        .unwrap_or_else(|_| {
            Err(kube::Error::Service(
                format!("no answer within {}s", WRITE_TIMEOUT.as_secs()).into(),
            ))
        });
        match sent {
            Ok(written) => {
                readiness.write_succeeded();
                let produced = written.resource_version().unwrap_or_default();
                self.objects.with(key, |entry| {
                    // Written on top of an unseen write: the cache may still be at any version
                    // of the chain.
                    let mut since = match entry.written.take() {
                        Some(before) if before.produced == resource_version => before.since,
                        _ => Vec::new(),
                    };
                    since.push(resource_version.to_owned());
                    if since.len() > UNSEEN_CHAIN {
                        since.drain(..since.len() - UNSEEN_CHAIN);
                    }
                    entry.written = Some(Box::new(Written {
                        since,
                        produced,
                        status: status.clone(),
                    }));
                });
                Ok(())
            }
            Err(source) => {
                self.objects
                    .with_existing(key, |entry| entry.written = None);
                let error = Error::WriteStatus {
                    kind: K::kind(&()).into(),
                    namespace,
                    name,
                    source,
                };
                if error.is_server_failure() {
                    readiness.write_failed(error.to_string());
                }
                Err(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        controller::{
            error::ErrorKind,
            fixtures::{ApiServer, mock_client, written_customer},
        },
        crd::{Customer, CustomerSpec, CustomerStatus},
    };
    use http::{Method, StatusCode};

    fn customer(resource_version: &str, score: i64) -> Customer {
        let mut customer = Customer::new("alice", CustomerSpec::default());
        customer.metadata.namespace = Some("ns".into());
        customer.metadata.resource_version = Some(resource_version.into());
        customer.status = Some(CustomerStatus {
            score,
            ..Default::default()
        });
        customer
    }

    type Writer = Arc<StatusWriter<Customer, CustomerStatus>>;

    fn writer() -> (Writer, ApiServer) {
        let (client, server) = mock_client();
        let guards = Guards {
            fence: Fence::always_open(),
            freshness: Arc::default(),
            metrics: Arc::new(Metrics::new(&[], Vec::new())),
            readiness: Readiness::default(),
        };
        let objects = Arc::default();
        (
            Arc::new(StatusWriter::new(client, "customer", guards, objects)),
            server,
        )
    }

    /// What `cached` has now as far as `writer` knows (as the reconcilers read it): its
    /// resourceVersion and score.
    fn current(writer: &Writer, cached: &Customer) -> (String, i64) {
        let version = cached.resource_version().unwrap();
        match writer.unseen_write(&ObjectRef::from_obj(cached), &version) {
            Some((produced, status)) => (produced, status.score),
            None => (version, cached.status.as_ref().unwrap().score),
        }
    }

    fn echo(writer: &Writer, seen: &Customer) -> bool {
        writer.is_own_echo(
            &ObjectRef::from_obj(seen),
            &seen.resource_version().unwrap(),
        )
    }

    /// `writer` writes score `score` to `on`; the server checks the request and answers with
    /// `code` (200: the customer at version `produced`).
    async fn write(
        writer: &Writer,
        server: &mut ApiServer,
        on: &Customer,
        score: i64,
        answer: Option<(StatusCode, u64)>,
    ) -> Result<(), Error> {
        let (key, version) = (ObjectRef::from_obj(on), on.resource_version().unwrap());
        let status = CustomerStatus {
            score,
            ..Default::default()
        };
        let sending = writer.clone();
        let sent = tokio::spawn(async move { sending.write(&key, &version, &status).await });
        let exchange = server.next().await;
        assert_eq!(exchange.method, Method::PATCH);
        assert_eq!(
            exchange.path,
            "/apis/reserve.coffeechain.io/v1/namespaces/ns/customers/alice/status"
        );
        assert_eq!(
            exchange.body["metadata"]["resourceVersion"].as_str(),
            on.resource_version().as_deref(),
            "conditional on the version it was computed from"
        );
        assert_eq!(exchange.body["status"]["score"], score);
        match answer {
            Some((StatusCode::OK, produced)) => {
                let body = written_customer(&exchange, produced);
                exchange.ok(body);
            }
            Some((code, _)) => exchange.fail(code),
            // Never answered: the write times out.
            None => std::mem::forget(exchange),
        }
        sent.await.unwrap()
    }

    /// A writer that has written score 2 on the cached customer at version 1 (producing
    /// version 2), the server, and that cached customer.
    async fn written_once() -> (Writer, ApiServer, Customer) {
        let (writer, mut server) = writer();
        let cached = customer("1", 1);
        write(&writer, &mut server, &cached, 2, Some((StatusCode::OK, 2)))
            .await
            .expect("written");
        (writer, server, cached)
    }

    #[tokio::test]
    async fn a_write_counts_until_its_echo_arrives() {
        let (writer, _server, cached) = written_once().await;
        // The cache still shows version 1: what was written is current, at version 2.
        assert_eq!(current(&writer, &cached), ("2".into(), 2));
        assert!(!echo(&writer, &cached), "the old version is not news");
        // The watch delivers version 2: the operator's own write, which wakes nothing.
        let echo_2 = customer("2", 2);
        assert!(echo(&writer, &echo_2));
        assert_eq!(writer.objects.len(), 0, "nothing left pending");
        assert_eq!(current(&writer, &echo_2), ("2".into(), 2));
    }

    #[tokio::test]
    async fn writes_in_a_row_count_until_the_watch_catches_up_with_any_of_them() {
        let (writer, mut server, cached) = written_once().await;
        // Computed from the first write, which the cache does not show yet.
        let after_first = customer("2", 2);
        write(
            &writer,
            &mut server,
            &after_first,
            3,
            Some((StatusCode::OK, 3)),
        )
        .await
        .expect("written");
        // The cache is two writes behind: the last one is what the object has.
        assert_eq!(current(&writer, &cached), ("3".into(), 3));
        // The first write's echo: the operator's own, and the second is still unseen.
        assert!(echo(&writer, &after_first));
        assert_eq!(current(&writer, &after_first), ("3".into(), 3));
        assert!(echo(&writer, &customer("3", 3)));
        assert_eq!(writer.objects.len(), 0, "nothing left pending");
    }

    #[test]
    fn the_patch_puts_the_whole_status_in_place_so_nothing_stale_is_kept() {
        // A customer back at the top level has no next level, and no settled history.
        let diamond = CustomerStatus {
            score: 25,
            level: Some("Diamond".into()),
            ..Default::default()
        };
        let patch = serde_json::to_value(status_patch(&diamond, "41")).unwrap();
        assert_eq!(
            patch,
            json!([
                { "op": "replace", "path": "/metadata/resourceVersion", "value": "41" },
                { "op": "add", "path": "/status", "value": serde_json::to_value(&diamond).unwrap() },
            ])
        );
        // Applied to a status with fields this version writes no more, or never knew (a newer
        // version's), it leaves none of them.
        let mut stored = json!({
            "metadata": { "name": "alice", "resourceVersion": "41" },
            "status": { "score": 20, "level": "Diamond", "nextLevel": "Gold",
                        "settled": { "score": 3 }, "fromANewerVersion": { "x": 1 } },
        });
        json_patch::patch(&mut stored, &status_patch(&diamond, "41")).unwrap();
        assert_eq!(stored["status"], serde_json::to_value(&diamond).unwrap());
    }

    #[tokio::test]
    async fn someone_elses_version_is_news() {
        let (writer, _server, _) = written_once().await;
        let forged = customer("3", 99);
        assert!(!echo(&writer, &forged));
        assert_eq!(current(&writer, &forged), ("3".into(), 99));
    }

    #[tokio::test]
    async fn a_conflict_forgets_the_write_before_it() {
        let (writer, mut server, cached) = written_once().await;
        let failed = write(
            &writer,
            &mut server,
            &cached,
            3,
            Some((StatusCode::CONFLICT, 0)),
        )
        .await;
        assert_eq!(failed.unwrap_err().kind(), ErrorKind::Conflict);
        // Someone else wrote meanwhile: the cache, not the last write, is what the object has.
        assert_eq!(current(&writer, &cached), ("1".into(), 1));
        assert_eq!(
            writer.guards.readiness.failed_writes(),
            0,
            "a conflict is no server failure"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_without_an_answer_fails_after_the_timeout() {
        let (writer, mut server) = writer();
        let cached = customer("1", 1);
        let failed = write(&writer, &mut server, &cached, 2, None).await;
        let error = failed.unwrap_err();
        assert!(
            error.to_string().contains("no answer within 10s"),
            "{error}"
        );
        assert!(error.is_server_failure());
        assert_eq!(
            writer.guards.readiness.failed_writes(),
            1,
            "readiness is told"
        );
        assert_eq!(writer.objects.len(), 0, "nothing left pending");
    }
}
