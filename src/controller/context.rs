//! What every reconcile gets: the client, the caches, the policy, the event recorder and the
//! metrics.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        events::{Event, Recorder, Reporter},
        reflector::ObjectRef,
    },
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;

use super::{Readiness, index::Index};
use crate::{
    crd::{Customer, CustomerStatus, Order, OrderStatus},
    loyalty::LevelPolicy,
    metrics::Metrics,
};

/// Field manager of every status write; the operator owns nothing else.
pub const FIELD_MANAGER: &str = "reserve-operator";

pub struct Context {
    pub client: Client,
    pub policy: LevelPolicy,
    pub index: Arc<RwLock<Index>>,
    reporter: Reporter,
    pub metrics: Arc<Metrics>,
    pub readiness: Readiness,
    pub customer_writes: WrittenStatus<Customer, CustomerStatus>,
    pub order_writes: WrittenStatus<Order, OrderStatus>,
    pub customer_failures: Failures<Customer>,
    pub order_failures: Failures<Order>,
}

impl Context {
    pub fn new(
        client: Client,
        policy: LevelPolicy,
        index: Arc<RwLock<Index>>,
        metrics: Arc<Metrics>,
        readiness: Readiness,
        instance: Option<String>,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance,
        };
        Self {
            reporter,
            client,
            policy,
            index,
            metrics,
            readiness,
            customer_writes: WrittenStatus::default(),
            order_writes: WrittenStatus::default(),
            customer_failures: Failures::default(),
            order_failures: Failures::default(),
        }
    }

    /// Server-side applies `status` to the status subresource of `obj` as the operator's field
    /// manager, and remembers it until the watch shows the write. With `conditional`, the write
    /// carries the resourceVersion it was computed from and fails (409) if the object changed.
    pub async fn apply_status<K, S>(
        &self,
        controller: &str,
        obj: &K,
        status: &S,
        written: &WrittenStatus<K, S>,
        conditional: bool,
    ) -> Result<(), super::Error>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
        S: Clone + Serialize,
    {
        let name = obj.name_any();
        let namespace = obj.namespace().ok_or_else(|| super::Error::NoNamespace {
            kind: K::kind(&()).into(),
            name: name.clone(),
        })?;
        let mut patch = json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "status": status,
        });
        if conditional {
            patch["metadata"] = json!({ "resourceVersion": obj.resource_version() });
        }
        self.metrics.status_write(controller);
        let api: Api<K> = Api::namespaced(self.client.clone(), &namespace);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match api
            .patch_status(&name, &params, &Patch::Apply(&patch))
            .await
        {
            Ok(_) => {
                written.wrote(obj, status.clone());
                Ok(())
            }
            Err(source) => {
                written.forget(obj);
                Err(super::Error::WriteStatus {
                    kind: K::kind(&()).into(),
                    namespace,
                    name,
                    source,
                })
            }
        }
    }

    /// Publishes an Event about `reference`.
    ///
    /// A recorder per Event: kube's recorder keeps every Event it published for six minutes to
    /// fold repeats into a series, and the operator's Events are each worth their own entry.
    pub async fn publish(
        &self,
        event: &Event,
        reference: &ObjectReference,
    ) -> Result<(), kube::Error> {
        Recorder::new(self.client.clone(), self.reporter.clone())
            .publish(event, reference)
            .await
    }

    pub fn index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The statuses this process wrote whose watch events have not reached the cache yet.
///
/// A reconcile that runs between a status write and its watch event would otherwise compare
/// against the old status and write again (a wasted call), or, for an Order, recompute the
/// customer-level snapshot that was already taken.
pub struct WrittenStatus<K: Resource, S> {
    by_object: Mutex<HashMap<ObjectRef<K>, (String, S)>>,
}

impl<K: Resource, S> Default for WrittenStatus<K, S> {
    fn default() -> Self {
        Self {
            by_object: Mutex::default(),
        }
    }
}

impl<K, S> WrittenStatus<K, S>
where
    K: Resource<DynamicType = ()>,
    S: Clone,
{
    /// The status `obj` has now: the one this process wrote on top of `obj`'s resourceVersion
    /// if the cache still shows that version, else the cached one.
    pub fn current(&self, obj: &K, cached: Option<&S>) -> Option<S> {
        let key = ObjectRef::from_obj(obj);
        let mut by_object = self.by_object.lock().unwrap_or_else(|p| p.into_inner());
        match by_object.get(&key) {
            Some((based_on, written)) if Some(based_on) == obj.resource_version().as_ref() => {
                Some(written.clone())
            }
            Some(_) => {
                by_object.remove(&key);
                cached.cloned()
            }
            None => cached.cloned(),
        }
    }

    /// Records a successful write of `status` made on top of `obj`.
    pub fn wrote(&self, obj: &K, status: S) {
        let based_on = obj.resource_version().unwrap_or_default();
        let mut by_object = self.by_object.lock().unwrap_or_else(|p| p.into_inner());
        by_object.insert(ObjectRef::from_obj(obj), (based_on, status));
    }

    /// The watch delivered `obj`: once it shows a version other than the one a write was made
    /// on top of, the cache has caught up with that write and the entry can go.
    pub fn observed(&self, obj: &K) {
        let mut by_object = self.by_object.lock().unwrap_or_else(|p| p.into_inner());
        if by_object.is_empty() {
            return;
        }
        let key = ObjectRef::from_obj(obj);
        if by_object
            .get(&key)
            .is_some_and(|(based_on, _)| Some(based_on) != obj.resource_version().as_ref())
        {
            by_object.remove(&key);
        }
    }

    #[cfg(test)]
    fn pending(&self) -> usize {
        self.by_object
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Forgets what was written for an object (after a failed write, or when it is deleted).
    pub fn forget(&self, obj: &K) {
        let mut by_object = self.by_object.lock().unwrap_or_else(|p| p.into_inner());
        by_object.remove(&ObjectRef::from_obj(obj));
    }
}

/// Consecutive failed reconciles per object, for exponential backoff: one bad object is retried
/// ever more slowly while the others go on.
pub struct Failures<K: Resource> {
    by_object: Mutex<HashMap<ObjectRef<K>, u32>>,
}

impl<K: Resource> Default for Failures<K> {
    fn default() -> Self {
        Self {
            by_object: Mutex::default(),
        }
    }
}

impl<K: Resource<DynamicType = ()>> Failures<K> {
    const FIRST: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(120);

    /// Records a failure and returns how long to wait before the next try.
    pub fn failed(&self, obj: &K) -> Duration {
        let mut by_object = self.by_object.lock().unwrap_or_else(|p| p.into_inner());
        let count = by_object.entry(ObjectRef::from_obj(obj)).or_default();
        *count = count.saturating_add(1);
        Self::FIRST
            .saturating_mul(1 << (*count - 1).min(16))
            .min(Self::MAX)
    }

    pub fn succeeded(&self, obj: &K) {
        let mut by_object = self.by_object.lock().unwrap_or_else(|p| p.into_inner());
        if !by_object.is_empty() {
            by_object.remove(&ObjectRef::from_obj(obj));
        }
    }
}

impl Context {
    /// Logs a failed reconcile and, for a refused permission, says so where operators look:
    /// the log (once per failure, with what to grant) and `/readyz`.
    pub fn report_failure(&self, controller: &str, object: &str, error: &super::Error) {
        self.metrics
            .reconcile_error(controller, error.metric_label());
        if error.metric_label() == "forbidden" {
            tracing::error!(
                %error,
                "permission denied: the operator's identity lacks an RBAC permission it needs \
                 (see manifests/operator/rbac.yaml); retrying with backoff"
            );
            self.readiness.permission_denied(error.to_string());
        } else {
            tracing::warn!(object, %error, "reconcile failed; will retry");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::CustomerSpec;

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

    #[test]
    fn a_write_counts_until_the_watch_shows_a_newer_version() {
        let written = WrittenStatus::<Customer, CustomerStatus>::default();
        let cached = customer("1", 1);
        written.wrote(
            &cached,
            CustomerStatus {
                score: 2,
                ..Default::default()
            },
        );
        // The cache still shows version 1: what was written is the current status.
        assert_eq!(
            written
                .current(&cached, cached.status.as_ref())
                .unwrap()
                .score,
            2
        );
        written.observed(&cached);
        assert_eq!(written.pending(), 1, "the same version is not news");
        // The watch delivers version 2 (our write): the entry goes, the cache is current.
        let caught_up = customer("2", 2);
        written.observed(&caught_up);
        assert_eq!(written.pending(), 0);
        assert_eq!(
            written
                .current(&caught_up, caught_up.status.as_ref())
                .unwrap()
                .score,
            2
        );
    }

    #[test]
    fn failures_back_off_exponentially_per_object_up_to_a_cap() {
        let failures = Failures::<Customer>::default();
        let alice = customer("1", 0);
        let delays: Vec<Duration> = (0..12).map(|_| failures.failed(&alice)).collect();
        assert_eq!(delays[0], Duration::from_millis(250));
        assert_eq!(delays[1], Duration::from_millis(500));
        assert_eq!(delays[2], Duration::from_secs(1));
        assert_eq!(delays[11], Duration::from_secs(120));
        failures.succeeded(&alice);
        assert_eq!(failures.failed(&alice), Duration::from_millis(250));
    }
}
