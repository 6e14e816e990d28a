//! `reserve-operator restore FILE`: puts a saved namespace (or cluster) back from what
//! `kubectl get ledgers,customers,orders -o json` wrote, onto a cluster that lost it.
//!
//! Ledgers first, then Customers, then Orders are created as they were saved (less what the API
//! server sets: uid, resourceVersion, timestamps), so no customer is ever counted without the
//! settled history its Ledger holds. Then what only the operator writes, and nothing can
//! reconstruct, is put back: each Order's level snapshot and each Customer's status (its
//! settled history among it, so a Ledger left out of the restore is noticed, not silently
//! lost). An object that exists already is left as it is.
//!
//! It acts as whoever the kubeconfig (with `--as` / `--as-group`) names: a restore identity of
//! the admission policies, which may create Ledgers and write only the first status of an
//! object. Status writes are conditional on the version read.

use std::{collections::BTreeMap, path::Path};

use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams, PostParams},
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::{
    crd::{Customer, CustomerStatus, Ledger, Order, OrderStatus},
    loyalty::{MISSING_CUSTOMER_LEVEL, Standing},
};

/// Field manager of what this command writes.
const FIELD_MANAGER: &str = "reserve-restore";

/// What came of one saved status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Created.
    Created,
    /// Its status written.
    Restored,
    /// The object shows it already (an order's snapshot, a customer's status).
    Already,
    /// Nothing to put back (no status saved, or an order without a snapshot).
    Nothing,
    /// The object does not exist: create it first.
    Missing,
    /// The object has a different snapshot or a status the operator wrote: not changed.
    Refused,
}

/// Counts per kind and outcome, and a line for each object not restored.
#[derive(Debug, Default)]
pub struct Report {
    pub counts: BTreeMap<(&'static str, Outcome), usize>,
    pub problems: Vec<String>,
}

impl Report {
    fn add(&mut self, kind: &'static str, outcome: Outcome, what: impl FnOnce() -> String) {
        *self.counts.entry((kind, outcome)).or_default() += 1;
        if matches!(outcome, Outcome::Missing | Outcome::Refused) {
            self.problems.push(what());
        }
    }

    /// Whether every saved status that mattered was put back (or was there already).
    pub fn is_complete(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The objects in a file `kubectl get -o json` (or `-o yaml`) wrote: a List, or one object.
pub fn read_saved(path: &Path) -> Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let value: Value = match serde_json::from_str(&text) {
        Ok(value) => value,
        Err(_) => serde_saphyr::from_str(&text)
            .map_err(|e| format!("{} is neither JSON nor YAML: {e}", path.display()))?,
    };
    Ok(match value.get("items").and_then(Value::as_array) {
        Some(items) => items.clone(),
        None => vec![value],
    })
}

/// Creates what is missing of `objects` (Ledgers, Customers, Orders; anything else is
/// skipped), then puts back their saved statuses.
pub async fn restore(client: &Client, objects: &[Value]) -> Result<Report, String> {
    let ledgers: Vec<Ledger> = of_kind(objects, "Ledger")?;
    let customers: Vec<Customer> = of_kind(objects, "Customer")?;
    let orders: Vec<Order> = of_kind(objects, "Order")?;
    let mut report = Report::default();
    // A customer never counted without its Ledger; orders last.
    create_all(client, &ledgers, "ledgers", &mut report).await?;
    create_all(client, &customers, "customers", &mut report).await?;
    create_all(client, &orders, "orders", &mut report).await?;
    for saved in &customers {
        let outcome = restore_customer(client, saved).await?;
        report.add("customer statuses", outcome, || describe(saved, outcome));
    }
    for saved in &orders {
        let outcome = restore_order(client, saved).await?;
        report.add("order snapshots", outcome, || describe(saved, outcome));
    }
    Ok(report)
}

/// The objects of `kind` among `objects`, parsed (once).
fn of_kind<K: DeserializeOwned>(objects: &[Value], kind: &str) -> Result<Vec<K>, String> {
    objects
        .iter()
        .filter(|o| o.get("kind").and_then(Value::as_str) == Some(kind))
        .map(parse)
        .collect()
}

/// What `reserve-operator restore` can create: a namespaced object as saved.
trait Saved:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + serde::Serialize
    + DeserializeOwned
    + std::fmt::Debug
{
}

impl<K> Saved for K where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::Serialize
        + DeserializeOwned
        + std::fmt::Debug
{
}

/// Creates each of `saved` that is missing, counting the outcomes under `what`.
async fn create_all<K: Saved>(
    client: &Client,
    saved: &[K],
    what: &'static str,
    report: &mut Report,
) -> Result<(), String> {
    for object in saved {
        let outcome = create(client, object).await?;
        report.add(what, outcome, || describe(object, outcome));
    }
    Ok(())
}

/// Creates `saved` as it was, less what the API server sets, unless it exists.
async fn create<K: Saved>(client: &Client, saved: &K) -> Result<Outcome, String> {
    let mut object = saved.clone();
    let meta = object.meta_mut();
    for cleared in [
        &mut meta.uid,
        &mut meta.resource_version,
        &mut meta.self_link,
    ] {
        *cleared = None;
    }
    meta.creation_timestamp = None;
    meta.deletion_timestamp = None;
    meta.generation = None;
    let managed = meta.managed_fields.take().unwrap_or_default();
    let what = || {
        format!(
            "{} {}/{}",
            K::kind(&()),
            saved.namespace().unwrap_or_default(),
            saved.name_any()
        )
    };
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    let api = namespaced(client, saved);
    let created = match api.create(&params, &object).await {
        Ok(created) => created,
        Err(kube::Error::Api(e)) if e.code == 409 => return Ok(Outcome::Already),
        Err(e) => return Err(format!("creating {}: {e}", what())),
    };
    // Who applied what stays, as Velero restores it: a create records only its own writer,
    // and settlement must still see an order applied from Git as one (it never settles those).
    if !managed.is_empty() && K::kind(&()) != "Ledger" {
        let patch = json!({
            "metadata": {
                "resourceVersion": created.resource_version(),
                "managedFields": managed,
            }
        });
        api.patch(
            &saved.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|e| format!("restoring the field managers of {}: {e}", what()))?;
    }
    Ok(Outcome::Created)
}

fn parse<K: DeserializeOwned>(object: &Value) -> Result<K, String> {
    serde_json::from_value(object.clone()).map_err(|e| format!("a saved object: {e}"))
}

fn describe<K: Resource<DynamicType = ()>>(saved: &K, outcome: Outcome) -> String {
    let what = match outcome {
        Outcome::Missing => "does not exist",
        _ => "shows another status already, left as it is",
    };
    format!(
        "{} {}/{} {what}",
        K::kind(&()),
        saved.namespace().unwrap_or_default(),
        saved.name_any()
    )
}

async fn restore_customer(client: &Client, saved: &Customer) -> Result<Outcome, String> {
    let Some(status) = saved.status.as_ref().filter(|s| s.level.is_some()) else {
        return Ok(Outcome::Nothing);
    };
    let api: Api<Customer> = namespaced(client, saved);
    let Some(live) = get(&api, saved).await? else {
        return Ok(Outcome::Missing);
    };
    match live.status.as_ref().filter(|s| s.level.is_some()) {
        Some(shown) if same_standing(shown, status) => return Ok(Outcome::Already),
        Some(_) => return Ok(Outcome::Refused),
        None => {}
    }
    write(
        &api,
        &live,
        serde_json::to_value(status).map_err(|e| e.to_string())?,
    )
    .await
}

async fn restore_order(client: &Client, saved: &Order) -> Result<Outcome, String> {
    let Some(level) = saved
        .status
        .as_ref()
        .and_then(|s| s.customer_level.as_deref())
        .filter(|level| *level != MISSING_CUSTOMER_LEVEL)
    else {
        return Ok(Outcome::Nothing);
    };
    let api: Api<Order> = namespaced(client, saved);
    let Some(live) = get(&api, saved).await? else {
        return Ok(Outcome::Missing);
    };
    match snapshot(live.status.as_ref()) {
        Some(taken) if taken == level => return Ok(Outcome::Already),
        Some(_) => return Ok(Outcome::Refused),
        None => {}
    }
    write(&api, &live, json!({ "customerLevel": level })).await
}

/// Two customer statuses show the same score, level, counts and settled history.
fn same_standing(a: &CustomerStatus, b: &CustomerStatus) -> bool {
    (Standing::shown_by(a), &a.settled) == (Standing::shown_by(b), &b.settled)
}

fn snapshot(status: Option<&OrderStatus>) -> Option<&str> {
    status
        .and_then(|s| s.customer_level.as_deref())
        .filter(|level| *level != MISSING_CUSTOMER_LEVEL)
}

fn namespaced<K>(client: &Client, saved: &K) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    Api::namespaced(client.clone(), &saved.namespace().unwrap_or_default())
}

async fn get<K>(api: &Api<K>, saved: &K) -> Result<Option<K>, String>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(&saved.name_any())
        .await
        .map_err(|e| format!("reading {} {}: {e}", K::kind(&()), saved.name_any()))
}

/// Merges `status` into the live object's status, if it is still at the version read.
async fn write<K>(api: &Api<K>, live: &K, status: Value) -> Result<Outcome, String>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let patch = json!({
        "metadata": { "resourceVersion": live.resource_version() },
        "status": status,
    });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    match api
        .patch_status(&live.name_any(), &params, &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(Outcome::Restored),
        // The operator (or anyone admitted) wrote it meanwhile: what it shows stays.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(Outcome::Refused),
        Err(e) => Err(format!(
            "writing the status of {} {}: {e}",
            K::kind(&()),
            live.name_any()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_saved_before_v1_restores_as_v1() {
        let saved = [json!({
            "apiVersion": "reserve.coffeechain.io/v1alpha1", "kind": "Customer",
            "metadata": { "name": "alice", "namespace": "shop" },
            "spec": { "displayName": "Alice" },
            "status": { "score": 7, "level": "Silver" },
        })];
        let customers: Vec<Customer> = of_kind(&saved, "Customer").unwrap();
        assert_eq!(customers[0].status.as_ref().unwrap().score, 7);
        let written = serde_json::to_value(&customers[0]).unwrap();
        assert_eq!(written["apiVersion"], "reserve.coffeechain.io/v1");
        assert_eq!(written["spec"]["displayName"], "Alice");
    }
}
