//! What every reconcile gets: the policy, the index, the status writers, the fence, the Event
//! publisher, the metrics and where to report trouble.

use std::{
    sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard},
    time::{Duration, Instant},
};

use kube::{Client, Resource, runtime::reflector::ObjectRef};

use super::{
    backlog::{Backlog, Backlogs},
    declared::FIELD_MANAGER,
    error::{Error, ErrorKind},
    freshness::Freshness,
    index::Index,
    objects::Objects,
    pacer,
    readiness::Readiness,
    status::{Guards, StatusWriter},
    triggers::Triggers,
};
use crate::{
    crd::{Customer, CustomerStatus, Order, OrderStatus},
    leader::Fence,
    loyalty::LevelPolicy,
    metrics::{CUSTOMER_CONTROLLER, Metrics, ORDER_CONTROLLER},
    runtime_ext::{Backoff, EventPublisher},
};

/// What the operator keeps per reconciled kind: its status writer and, in one table, what it
/// knows of each object ([`Objects`]): its unseen write, its failures, its pace.
pub struct Kind<K: Resource, S> {
    /// The `controller` label of its metrics, logs and Events.
    pub controller: &'static str,
    pub writer: StatusWriter<K, S>,
    objects: Arc<Objects<K, S>>,
    backoff: Backoff,
    /// What its queue holds, for the metrics.
    pub backlog: Arc<Backlog>,
}

impl<K, S> Kind<K, S>
where
    K: Resource<DynamicType = ()>,
{
    fn new(client: Client, controller: &'static str, guards: Guards, backlog: Arc<Backlog>) -> Self
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        S: Clone + serde::Serialize,
    {
        let objects = Arc::<Objects<K, S>>::default();
        Self {
            controller,
            writer: StatusWriter::new(client, controller, guards, objects.clone()),
            objects,
            backoff: Backoff::default(),
            backlog,
        }
    }

    /// Counts a failed reconcile of `key`; returns how long to wait before the next.
    pub fn failed(&self, key: &ObjectRef<K>) -> Duration {
        self.objects.with(key, |entry| {
            entry.failures = entry.failures.saturating_add(1);
            self.backoff.delay(key, entry.failures)
        })
    }

    /// A reconcile of `key` succeeded: its next failure backs off from the start.
    pub fn succeeded(&self, key: &ObjectRef<K>) {
        self.objects.with_existing(key, |entry| entry.failures = 0);
    }

    /// Takes one of `key`'s status writes, or says how long until it may write again.
    pub fn pace(&self, key: &ObjectRef<K>) -> Result<(), Duration> {
        self.objects
            .with(key, |entry| pacer::take(&mut entry.bucket, Instant::now()))
    }

    /// Forgets everything about a deleted object.
    pub fn forget(&self, key: &ObjectRef<K>) {
        self.objects.forget(key);
    }

    /// Forgets every write whose watch event has not arrived (a list starts: it shows what is).
    pub fn forget_writes(&self) {
        self.objects.forget_writes();
    }
}

/// The index, shared by the reconcilers, the watches and the metrics counted at scrape.
pub type SharedIndex = Arc<RwLock<Index>>;

pub struct Context {
    client: Client,
    pub policy: LevelPolicy,
    index: SharedIndex,
    pub customers: Kind<Customer, CustomerStatus>,
    pub orders: Kind<Order, OrderStatus>,
    pub fence: Fence,
    pub events: EventPublisher,
    pub metrics: Arc<Metrics>,
    pub readiness: Readiness,
    /// Where watch events send the objects they wake: to the reconcilers while this replica
    /// leads, nowhere while it stands by.
    pub triggers: Triggers,
    /// Whether the index is one moment of the store.
    pub freshness: Arc<Freshness>,
}

/// What a Context shares with what reads it from outside: the probes and the metrics counted
/// at each scrape.
#[derive(Clone, Default)]
pub struct Observed {
    pub readiness: Readiness,
    pub index: SharedIndex,
    pub backlogs: Backlogs,
}

impl Context {
    pub fn new(
        client: Client,
        policy: LevelPolicy,
        identity: &str,
        fence: Fence,
        metrics: Arc<Metrics>,
        observed: Observed,
    ) -> Self {
        let Observed {
            readiness,
            index,
            backlogs,
        } = observed;
        let freshness = Arc::<Freshness>::default();
        let guards = Guards {
            fence: fence.clone(),
            freshness: freshness.clone(),
            metrics: metrics.clone(),
            readiness: readiness.clone(),
        };
        Self {
            client: client.clone(),
            policy,
            index,
            customers: Kind::new(
                client.clone(),
                CUSTOMER_CONTROLLER,
                guards.clone(),
                backlogs.customers.clone(),
            ),
            orders: Kind::new(
                client.clone(),
                ORDER_CONTROLLER,
                guards,
                backlogs.orders.clone(),
            ),
            fence,
            events: EventPublisher::new(client, FIELD_MANAGER, identity),
            metrics,
            readiness,
            triggers: Triggers::default(),
            freshness,
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn index(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The index itself, for what reads it later, a little at a time (a sweep).
    pub fn shared_index(&self) -> SharedIndex {
        self.index.clone()
    }

    pub fn index_mut(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts and logs a failed reconcile (in the reconcile's span, which names the object)
    /// and, for a refused permission, says so where operators look: the log (with what to
    /// grant) and `/readyz`.
    pub fn report_failure(&self, controller: &str, error: &Error) {
        let kind = error.kind();
        self.metrics.reconcile_error(controller, kind.label());
        match kind {
            ErrorKind::Forbidden => {
                tracing::error!(
                    %error,
                    "permission denied: the operator's identity lacks an RBAC permission it needs \
                     (see manifests/operator/rbac.yaml); retrying with backoff"
                );
                self.readiness.permission_denied(error.to_string());
            }
            ErrorKind::Conflict | ErrorKind::NotLeading | ErrorKind::Relisting => {
                tracing::debug!(%error, "status not written; will look again")
            }
            ErrorKind::Invalid | ErrorKind::WriteStatus | ErrorKind::NoNamespace => {
                tracing::warn!(%error, "reconcile failed; will retry")
            }
        }
    }
}
