//! What every reconcile gets: the policy, the index, the status writers, the fence, the Event
//! publisher, the metrics and where to report trouble.

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use kube::{Client, Resource, runtime::reflector::ObjectRef};

use super::{
    Error, Triggers,
    error::ErrorKind,
    freshness::Freshness,
    index::Index,
    pacer::Pacer,
    readiness::Readiness,
    status::{FIELD_MANAGER, Guards, StatusWriter},
};
use crate::{
    crd::{Customer, CustomerStatus, Order, OrderStatus},
    leader::Fence,
    loyalty::LevelPolicy,
    metrics::Metrics,
    runtime_ext::{Backoff, EventPublisher},
};

/// The controllers' names: the `controller` label of metrics, logs and Events.
pub const CUSTOMER_CONTROLLER: &str = "customer";
pub const ORDER_CONTROLLER: &str = "order";

/// What the operator keeps per reconciled kind.
pub struct Kind<K: Resource, S> {
    pub writer: StatusWriter<K, S>,
    pub backoff: Backoff<ObjectRef<K>>,
}

pub struct Context {
    client: Client,
    pub policy: LevelPolicy,
    index: RwLock<Index>,
    pub customers: Kind<Customer, CustomerStatus>,
    pub orders: Kind<Order, OrderStatus>,
    /// How often each customer's status may be written.
    pub customer_pace: Pacer<Customer>,
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

impl Context {
    pub fn new(
        client: Client,
        policy: LevelPolicy,
        identity: &str,
        fence: Fence,
        metrics: Arc<Metrics>,
        readiness: Readiness,
    ) -> Self {
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
            index: RwLock::default(),
            customers: Kind {
                writer: StatusWriter::new(client.clone(), CUSTOMER_CONTROLLER, guards.clone()),
                backoff: Backoff::default(),
            },
            orders: Kind {
                writer: StatusWriter::new(client.clone(), ORDER_CONTROLLER, guards),
                backoff: Backoff::default(),
            },
            customer_pace: Pacer::default(),
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

    pub fn index_mut(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Logs a failed reconcile and, for a refused permission, says so where operators look:
    /// the log (with what to grant) and `/readyz`.
    pub fn report_failure(&self, controller: &str, object: &str, error: &Error) {
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
                tracing::debug!(object, %error, "status not written; will look again")
            }
            ErrorKind::Invalid | ErrorKind::WriteStatus | ErrorKind::NoNamespace => {
                tracing::warn!(object, %error, "reconcile failed; will retry")
            }
        }
    }
}
