//! Watches a namespace while something breaks and records every status that breaks an
//! invariant: a level that disagrees with its score, a negative score, a customer-level
//! snapshot that changed once taken.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use futures::StreamExt;
use kube::{
    Api, Resource, ResourceExt,
    api::ListParams,
    runtime::{WatchStreamExt, watcher},
};
use reserve_operator::{
    crd::{Customer, Order},
    loyalty::{LevelPolicy, MISSING_CUSTOMER_LEVEL},
};

pub struct Invariants {
    violations: Arc<Mutex<Vec<String>>>,
    statuses_seen: Arc<Mutex<usize>>,
    /// The newest version of each object the watches showed, by kind and name.
    versions: Arc<Mutex<HashMap<(&'static str, String), String>>>,
    apis: (Api<Customer>, Api<Order>),
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Invariants {
    pub fn watch(customers: Api<Customer>, orders: Api<Order>, policy: LevelPolicy) -> Self {
        let violations = Arc::new(Mutex::new(Vec::new()));
        let statuses_seen = Arc::new(Mutex::new(0));
        let versions: Arc<Mutex<HashMap<(&'static str, String), String>>> = Arc::default();
        let apis = (customers.clone(), orders.clone());
        let record = |violations: &Arc<Mutex<Vec<String>>>, what: String| {
            violations
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(what)
        };
        let customer_task = {
            let (violations, seen) = (violations.clone(), statuses_seen.clone());
            let versions = versions.clone();
            let stream = watcher(customers, watcher::Config::default())
                .default_backoff()
                .applied_objects();
            tokio::spawn(async move {
                let mut stream = std::pin::pin!(stream);
                // A failed watch (an API server restarted, etcd stopped) backs off and goes on.
                while let Some(event) = stream.next().await {
                    let Ok(customer) = event else { continue };
                    seen_at(&versions, "customer", &customer);
                    let Some(status) = customer.status.as_ref() else {
                        continue;
                    };
                    let Some(level) = status.level.as_deref() else {
                        continue;
                    };
                    *seen.lock().unwrap_or_else(|p| p.into_inner()) += 1;
                    let name = customer.name_any();
                    if status.score < 0 {
                        record(
                            &violations,
                            format!("customer {name}: negative score {}", status.score),
                        );
                    }
                    if level != policy.level_for(status.score) {
                        record(
                            &violations,
                            format!("customer {name}: level {level} with score {}", status.score),
                        );
                    }
                }
            })
        };
        let order_task = {
            let (violations, seen) = (violations.clone(), statuses_seen.clone());
            let versions = versions.clone();
            let stream = watcher(orders, watcher::Config::default())
                .default_backoff()
                .applied_objects();
            tokio::spawn(async move {
                // Keyed by uid: an order deleted and created again is a new order.
                let mut snapshots: HashMap<String, String> = HashMap::new();
                let mut stream = std::pin::pin!(stream);
                while let Some(event) = stream.next().await {
                    let Ok(order) = event else { continue };
                    seen_at(&versions, "order", &order);
                    let Some(level) = order.status.as_ref().and_then(|s| s.customer_level.clone())
                    else {
                        continue;
                    };
                    *seen.lock().unwrap_or_else(|p| p.into_inner()) += 1;
                    let key = order.uid().unwrap_or_default();
                    match snapshots.get(&key) {
                        Some(taken) if level == MISSING_CUSTOMER_LEVEL => record(
                            &violations,
                            format!(
                                "order {}: snapshot {taken} went back to Iron",
                                order.name_any()
                            ),
                        ),
                        Some(taken) if *taken != level => record(
                            &violations,
                            format!(
                                "order {}: snapshot changed {taken} -> {level}",
                                order.name_any()
                            ),
                        ),
                        Some(_) => {}
                        None if level == MISSING_CUSTOMER_LEVEL => {}
                        None => {
                            snapshots.insert(key, level);
                        }
                    }
                }
            })
        };
        Invariants {
            violations,
            statuses_seen,
            versions,
            apis,
            tasks: vec![customer_task, order_task],
        }
    }

    /// Waits until the watches have shown every Customer and Order at the version the store
    /// holds now, so nothing that happened before is left unchecked.
    async fn caught_up(&self) {
        let lp = ListParams::default();
        crate::eventually(
            crate::FAIL_AFTER,
            "the invariants' watches to catch up",
            || async {
                let customers = self.apis.0.list(&lp).await.ok()?.items;
                let orders = self.apis.1.list(&lp).await.ok()?.items;
                let versions = self.versions.lock().unwrap_or_else(|p| p.into_inner());
                let shown = |kind: &'static str, name: String, version: Option<String>| {
                    versions.get(&(kind, name)) == version.as_ref()
                };
                let all = customers
                    .into_iter()
                    .all(|c| shown("customer", c.name_any(), c.metadata.resource_version))
                    && orders
                        .into_iter()
                        .all(|o| shown("order", o.name_any(), o.metadata.resource_version));
                all.then_some(())
            },
        )
        .await;
    }

    /// Once the watches have shown everything the store holds now, stops watching:
    /// (violations, statuses seen).
    pub async fn finish(self) -> (Vec<String>, usize) {
        self.caught_up().await;
        for task in &self.tasks {
            task.abort();
        }
        let violations = self
            .violations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let seen = *self.statuses_seen.lock().unwrap_or_else(|p| p.into_inner());
        (violations, seen)
    }
}

/// Records the version of `object` a watch showed.
fn seen_at<K: Resource>(
    versions: &Mutex<HashMap<(&'static str, String), String>>,
    kind: &'static str,
    object: &K,
) {
    if let Some(version) = object.meta().resource_version.clone() {
        versions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((kind, object.name_any()), version);
    }
}
