//! A namespace restored object by object while the operator runs, the way Velero restores it
//! (a small client of its own, so it runs without Velero's build): as a member of
//! `system:serviceaccounts:velero`, metadata stripped and Velero's labels added, the Ledgers
//! first, then each Customer and each Order created and its saved status written right after its
//! create. A watch of every version of every customer: none may show a score below the backup's.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use futures::StreamExt;
use kube::{
    Api, Resource, ResourceExt,
    api::{DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use reserve_operator::{
    crd::{Customer, Order, OrderState},
    loyalty::LevelPolicy,
};
use reserve_testkit::{ControlPlane, Identity, Shop, eventually, rbac};
use serde_json::json;

use super::{STORE, history::*};

/// Customers of the restored shop, each with a Ledger of settled orders and a live order.
const RESTORED: usize = 30;

#[tokio::test(flavor = "multi_thread")]
async fn restored_object_by_object_while_the_operator_runs_never_shows_a_lower_score() {
    let _shared = STORE.read().await;
    let (shop, identity) = settling_shop("objects").await;
    let mut op = operator(&shop, &identity);
    for i in 0..RESTORED {
        let name = format!("r{i}");
        shop.customer(&name).await;
        for n in 0..3 {
            shop.order(
                &format!("{name}-s{n}"),
                &name,
                1 + (i + n) as i32 % 4,
                OrderState::Completed,
            )
            .await;
        }
    }
    eventually(WAIT, "every final order settled", || async {
        let settled = shop
            .ledgers()
            .list(&ListParams::default())
            .await
            .ok()?
            .items;
        let done = settled.len() == RESTORED && settled.iter().all(|l| l.spec.absorbed.is_empty());
        (done && shop.order_names().await.is_empty()).then_some(())
    })
    .await;
    // Live orders: an open one, and a completed one kept in Git (never settled), which the
    // score counts: a customer restored before it must not show a score without it.
    for i in 0..RESTORED {
        let customer = format!("r{i}");
        shop.order(
            &format!("{customer}-live"),
            &customer,
            2,
            OrderState::Requested,
        )
        .await;
        apply_from_git(
            &shop,
            &format!("{customer}-git"),
            &customer,
            1 + i as i32 % 3,
        );
    }
    let (left, _) = shop.converge(&LevelPolicy::default(), WAIT).await;
    assert!(left.is_empty(), "{left:#?}");
    let before = state(&shop).await;
    let lp = ListParams::default();
    let ledgers = shop.ledgers().list(&lp).await.unwrap().items;
    let customers = shop.customers().list(&lp).await.unwrap().items;
    let orders = shop.orders().list(&lp).await.unwrap().items;

    lose(&shop, &mut op).await;
    let scores = Scores::watch(&shop);
    let op = operator(&shop, &identity);
    let velero = velero(&shop).await;
    for ledger in &ledgers {
        velero.create(&shop, ledger).await;
    }
    for customer in &customers {
        velero.create_with_status(&shop, customer).await;
    }
    for order in &orders {
        velero.create_with_status(&shop, order).await;
    }
    let (left, _) = shop.converge(&LevelPolicy::default(), WAIT).await;
    assert!(left.is_empty(), "{left:#?}");
    assert_eq!(state(&shop).await, before, "not what was backed up");
    let lower = scores.below(&before);
    println!("{} versions of customers watched", scores.count());
    assert_eq!(lower, [], "versions showing a score below the backup's");
    drop(op);
}

/// A client acting as Velero's ServiceAccount (cluster-admin, as `velero install` binds it).
struct Velero {
    client: kube::Client,
}

async fn velero(shop: &Shop) -> Velero {
    let identity = Identity::service_account("velero", "velero");
    rbac::grant_cluster_role(&shop.admin, &identity, "cluster-admin").await;
    Velero {
        client: ControlPlane::shared().client_as(&identity).await,
    }
}

impl Velero {
    /// `object` as Velero restores it: what the server set stripped, its labels added.
    fn restored<K: Resource + Clone>(object: &K) -> K {
        let mut restored = object.clone();
        let meta = restored.meta_mut();
        let mut labels = meta.labels.clone().unwrap_or_default();
        labels.insert("velero.io/backup-name".into(), "shop".into());
        labels.insert("velero.io/restore-name".into(), "shop-restore".into());
        *meta = ObjectMeta {
            name: meta.name.clone(),
            namespace: meta.namespace.clone(),
            annotations: meta.annotations.clone(),
            labels: Some(labels),
            ..ObjectMeta::default()
        };
        restored
    }

    async fn create<K>(&self, shop: &Shop, object: &K) -> K
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::Serialize
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), &shop.ns);
        api.create(&PostParams::default(), &Self::restored(object))
            .await
            .unwrap_or_else(|e| panic!("create {}: {e}", object.name_any()))
    }

    /// Creates `object`, then writes its saved status on what the create returned (an update of
    /// `/status`, conditional on the version created), as Velero does with
    /// `--status-include-resources`.
    async fn create_with_status<K>(&self, shop: &Shop, object: &K)
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::Serialize
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + HasStatus,
    {
        let mut created = self.create(shop, object).await;
        // Velero puts back who applied what (an order's field managers keep it out of
        // settlement), then the status.
        let managers = json!({ "metadata": { "managedFields": object.meta().managed_fields } });
        let api: Api<K> = Api::namespaced(self.client.clone(), &shop.ns);
        created = api
            .patch(
                &created.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&managers),
            )
            .await
            .unwrap_or_else(|e| panic!("the field managers of {}: {e}", object.name_any()));
        created.set_status_of(object);
        api.replace_status(&created.name_any(), &PostParams::default(), &created)
            .await
            .unwrap_or_else(|e| panic!("the saved status of {}: {e}", object.name_any()));
    }
}

trait HasStatus {
    fn set_status_of(&mut self, saved: &Self);
}

impl HasStatus for Customer {
    fn set_status_of(&mut self, saved: &Self) {
        self.status = saved.status.clone();
    }
}

impl HasStatus for Order {
    fn set_status_of(&mut self, saved: &Self) {
        self.status = saved.status.clone();
    }
}

/// Every score any version of a customer shows, from a watch (a status without a score shows
/// none).
/// Per customer: each score shown, with the version that showed it.
type Shown = Arc<Mutex<BTreeMap<String, Vec<(i64, String)>>>>;

struct Scores {
    seen: Shown,
    task: tokio::task::JoinHandle<()>,
}

impl Scores {
    fn watch(shop: &Shop) -> Scores {
        let resource = kube::api::ApiResource::erase::<Customer>(&());
        let api: Api<DynamicObject> = Api::namespaced_with(shop.admin.clone(), &shop.ns, &resource);
        let events = watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects();
        let seen: Shown = Arc::default();
        let record = seen.clone();
        let task = tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                let Ok(customer) = event else { continue };
                let Some(score) = customer.data["status"]["score"].as_i64() else {
                    continue;
                };
                let version = customer.resource_version().unwrap_or_default();
                record
                    .lock()
                    .unwrap()
                    .entry(customer.name_any())
                    .or_default()
                    .push((score, version));
            }
        });
        Scores { seen, task }
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().values().map(Vec::len).sum()
    }

    /// (customer, score shown, at version, the backup's score) for each version below it.
    fn below(&self, before: &State) -> Vec<(String, i64, String, i64)> {
        let seen = self.seen.lock().unwrap();
        before
            .customers
            .iter()
            .flat_map(|(name, (score, ..))| {
                seen.get(name)
                    .into_iter()
                    .flatten()
                    .filter(|(shown, _)| shown < score)
                    .map(|(shown, version)| (name.clone(), *shown, version.clone(), *score))
            })
            .collect()
    }
}

impl Drop for Scores {
    fn drop(&mut self) {
        self.task.abort();
    }
}
