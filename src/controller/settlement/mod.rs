//! Settlement: an Order final (Completed or Canceled) for longer than the settlement age moves
//! into its customer's [`Ledger`] and is deleted, so etcd holds the live window of orders, not
//! every order ever made, while every score stays exact.
//!
//! A settlement takes three steps, each safe to stop after:
//! 1. **absorb**: the ledger adds the orders' contributions and lists them (uid,
//!    resourceVersion, what it counted) as absorbed. The index counts an absorbed order that
//!    still exists as it is now, and one that is gone as the ledger counted it, so the score does
//!    not move ([`Index::tally_of`](super::index::Index::tally_of)).
//! 2. **delete** each order, on condition that its uid and resourceVersion are those absorbed.
//!    If the order changed meanwhile (a refund), it is given back: the ledger takes its
//!    contribution out again and it stays a live order.
//! 3. **forget**: once the watch has shown an absorbed order gone, the ledger drops it from the
//!    absorbed list (its contribution stays in the settled totals).
//!
//! Each pass gives every customer with work at most one ledger write: it forgets what earlier
//! passes deleted, gives back what changed, and absorbs what is due now; then it deletes what it
//! absorbed (and retries the deletion of anything absorbed earlier that still exists). Forgetting
//! alone waits until the ledger has been quiet for four settlement ages (10 s to 1 h), so a
//! customer who orders often pays one ledger write per batch, not two. Writes are fenced by the
//! Lease and conditional on the ledger's resourceVersion; the one writer of a ledger is the Lease
//! holder, and each write is seen by the watch before any order it absorbed is deleted.
//!
//! Only namespaces labelled `reserve.coffeechain.io/settlement=enabled` are settled, and never
//! an order declared in Git (applied with kubectl or server-side apply, or carrying Argo CD,
//! Flux or Helm marks): deleted, a GitOps tool would create it again as a new order.

mod rules;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use k8s_openapi::{api::core::v1::Namespace, jiff::Timestamp};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions},
    runtime::{events::EventType, reflector::ObjectRef},
};
use tracing::{error, info, warn};

use rules::entry;
pub use rules::{absorb, is_due, release};

use super::{context::Context, declared::FIELD_MANAGER, index::CustomerKey, watches::Caches};
use crate::{
    crd::{AbsorbedOrder, Customer, Ledger, LedgerSpec, Order, OrderState},
    runtime_ext::{Note, regarding},
};

/// The label that opts a namespace in.
pub const NAMESPACE_LABEL: &str = "reserve.coffeechain.io/settlement";
pub const NAMESPACE_LABEL_VALUE: &str = "enabled";
/// Environment variable naming a step after which the process aborts (tests of crash safety):
/// `settle-after-absorb`, `settle-after-delete` or `settle-after-forget`.
pub const FAULT_INJECTION: &str = "RESERVE_FAULT_INJECTION";

/// Orders absorbed per ledger write, and settled per pass at most.
const BATCH: usize = 200;
const PER_PASS: usize = 5_000;
/// Customers settled at once, and deletions at once per customer.
const CONCURRENCY: usize = 32;
const DELETES_AT_ONCE: usize = 8;
/// How long to wait for the watches to show a settlement step.
const ECHO_TIMEOUT: Duration = Duration::from_secs(10);

/// What came of deleting an absorbed order.
#[derive(Debug, PartialEq, Eq)]
enum Deleted {
    /// Deleted now, or being deleted (it has finalizers).
    Now,
    /// Gone already: no order of that uid exists.
    Before,
    /// It changed since it was absorbed: it must be given back.
    Changed,
}

#[derive(Debug, thiserror::Error)]
enum SettleError {
    #[error("not written: {0}")]
    Withheld(&'static str),
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("the watch did not show {0} within {secs}s", secs = ECHO_TIMEOUT.as_secs())]
    NotSeen(String),
}

fn api_error(what: impl Into<String>) -> impl FnOnce(kube::Error) -> SettleError {
    let what = what.into();
    move |source| SettleError::Api { what, source }
}

fn code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// Settles orders older than `after` while this replica leads; runs until dropped.
pub async fn run(ctx: Arc<Context>, caches: Caches, after: Duration, namespace: Option<String>) {
    let settler = Settler {
        ctx,
        caches,
        after,
        namespace,
        fault: std::env::var(FAULT_INJECTION).ok(),
        written: std::sync::Mutex::default(),
    };
    let every = (after / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    info!(after = %humantime::format_duration(after), "settling final orders");
    loop {
        match settler.pass().await {
            Ok(()) => settler.ctx.metrics.settlement_pass(),
            Err(error) => warn!(%error, "settlement pass failed; trying again"),
        }
        tokio::time::sleep(every).await;
    }
}

struct Settler {
    ctx: Arc<Context>,
    caches: Caches,
    after: Duration,
    namespace: Option<String>,
    fault: Option<String>,
    /// When each ledger with absorbed orders was last written by this process.
    written: std::sync::Mutex<HashMap<CustomerKey, Instant>>,
}

impl Settler {
    /// One pass: every customer with unfinished absorbed orders or orders due gets one ledger
    /// write (forget what is gone, give back what changed, absorb what is due), then the
    /// deletion of what it absorbed.
    async fn pass(&self) -> Result<(), SettleError> {
        let opted_in = self.opted_in().await?;
        let mut work = self.plan(&opted_in);
        for ledger in self.caches.ledgers.state() {
            if !ledger.spec.absorbed.is_empty() {
                let key =
                    CustomerKey::new(ledger.namespace().unwrap_or_default(), ledger.name_any());
                work.entry(key).or_default();
            }
        }
        stream::iter(work)
            .for_each_concurrent(CONCURRENCY, |(key, due)| async move {
                if let Err(error) = self.settle(&key, due).await {
                    warn!(customer = %key.customer_ref(), %error, "settlement stopped; the next pass finishes it");
                }
            })
            .await;
        Ok(())
    }

    /// The namespaces whose orders may be settled.
    async fn opted_in(&self) -> Result<Vec<String>, SettleError> {
        let client = self.ctx.client().clone();
        let selector = format!("{NAMESPACE_LABEL}={NAMESPACE_LABEL_VALUE}");
        match &self.namespace {
            Some(ns) => {
                let namespace = Api::<Namespace>::all(client)
                    .get_opt(ns)
                    .await
                    .map_err(api_error(format!("reading namespace {ns}")))?;
                let enabled = namespace.is_some_and(|n| {
                    n.labels().get(NAMESPACE_LABEL).map(String::as_str)
                        == Some(NAMESPACE_LABEL_VALUE)
                });
                Ok(enabled.then(|| ns.clone()).into_iter().collect())
            }
            None => Ok(Api::<Namespace>::all(client)
                .list_metadata(&ListParams::default().labels(&selector))
                .await
                .map_err(api_error("listing namespaces"))?
                .items
                .into_iter()
                .map(|n| n.name_any())
                .collect()),
        }
    }

    /// The orders due now, per customer, at most `BATCH` per customer and `PER_PASS` in all.
    fn plan(&self, opted_in: &[String]) -> BTreeMap<CustomerKey, Vec<AbsorbedOrder>> {
        let mut due = BTreeMap::<CustomerKey, Vec<AbsorbedOrder>>::new();
        if opted_in.is_empty() {
            return due;
        }
        let now = Timestamp::now();
        let index = self.ctx.index();
        let mut count = 0;
        for (customer, name, order) in index.all_orders() {
            if count == PER_PASS {
                break;
            }
            // A customer whose Ledger is missing (not restored yet?) is not settled: a new
            // Ledger would take the place of the one the restore brings back.
            if opted_in.contains(&customer.namespace)
                && is_due(order, now, self.after)
                && !index.is_absorbed(customer, order)
                && index.settled_history_missing(customer).is_none()
            {
                let batch = due.entry(customer.clone()).or_default();
                if batch.len() < BATCH {
                    batch.push(entry(name, order));
                    count += 1;
                }
            }
        }
        due
    }

    /// One customer's step: finishes what its ledger absorbed before, absorbs `due`, and
    /// deletes it.
    async fn settle(&self, key: &CustomerKey, due: Vec<AbsorbedOrder>) -> Result<(), SettleError> {
        let current = self.ledger(key);
        let absorbed = current
            .as_ref()
            .map(|l| l.spec.absorbed.clone())
            .unwrap_or_default();
        // Absorbed before and still there: a crash, a lost Lease or a refused deletion stopped
        // an earlier step, or the watch has not shown the deletion yet.
        let given_back = self.delete_absorbed(key, &absorbed).await?;
        let gone: Vec<String> = {
            let index = self.ctx.index();
            absorbed
                .iter()
                .filter(|a| !index.holds_order(key, &a.name, &a.uid))
                .map(|a| a.uid.clone())
                .collect()
        };
        // Forgetting alone is worth a write only once the ledger has been quiet for a while;
        // otherwise the next absorb takes it along.
        let quiet = self
            .lock_written()
            .get(key)
            .is_none_or(|at| at.elapsed() >= self.forget_after());
        if given_back.is_empty() && due.is_empty() && (gone.is_empty() || !quiet) {
            return Ok(());
        }
        let base = current.as_ref().map(|l| l.spec.clone()).unwrap_or_default();
        let next = absorb(&release(&base, &gone, &given_back), &due);
        let still_absorbed = !next.absorbed.is_empty();
        self.write(key, current.as_ref(), next).await?;
        if still_absorbed {
            self.lock_written().insert(key.clone(), Instant::now());
        } else {
            self.lock_written().remove(key);
        }
        if !gone.is_empty() {
            self.fault_point("settle-after-forget");
        }
        if due.is_empty() {
            return Ok(());
        }
        self.fault_point("settle-after-absorb");
        let changed = self.delete_absorbed(key, &due).await?;
        self.fault_point("settle-after-delete");
        let deleted: Vec<&AbsorbedOrder> =
            due.iter().filter(|a| !changed.contains(&a.uid)).collect();
        self.announce(key, &deleted).await;
        Ok(())
    }

    fn lock_written(&self) -> std::sync::MutexGuard<'_, HashMap<CustomerKey, Instant>> {
        self.written.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long a ledger with nothing but deleted orders to forget waits for another write to
    /// take them along.
    fn forget_after(&self) -> Duration {
        (self.after * 4).clamp(Duration::from_secs(10), Duration::from_secs(3600))
    }

    /// Deletes the absorbed orders the index still holds; returns the uids of those that
    /// changed since (to give back).
    async fn delete_absorbed(
        &self,
        key: &CustomerKey,
        absorbed: &[AbsorbedOrder],
    ) -> Result<Vec<String>, SettleError> {
        let held: Vec<&AbsorbedOrder> = {
            let index = self.ctx.index();
            absorbed
                .iter()
                .filter(|a| index.holds_order(key, &a.name, &a.uid))
                .collect()
        };
        // The futures are made before they go into the stream: a closure in the stream that
        // borrows `key` would not be provably Send for the spawned task.
        let deletions: Vec<_> = held
            .into_iter()
            .map(|order| async move { Ok((order.uid.clone(), self.delete(key, order).await?)) })
            .collect();
        let outcomes: Vec<Result<(String, Deleted), SettleError>> = stream::iter(deletions)
            .buffer_unordered(DELETES_AT_ONCE)
            .collect()
            .await;
        let mut changed = Vec::new();
        for outcome in outcomes {
            match outcome? {
                (uid, Deleted::Changed) => changed.push(uid),
                (_, Deleted::Now) => self.ctx.metrics.orders_settled(1),
                (_, Deleted::Before) => {}
            }
        }
        Ok(changed)
    }

    /// Deletes one absorbed order if it is still what was absorbed.
    async fn delete(
        &self,
        key: &CustomerKey,
        absorbed: &AbsorbedOrder,
    ) -> Result<Deleted, SettleError> {
        let api: Api<Order> = Api::namespaced(self.ctx.client().clone(), &key.namespace);
        let what = || format!("deleting order {}/{}", key.namespace, absorbed.name);
        let mut resource_version = absorbed.resource_version.clone();
        // At most twice: a precondition that failed only because the status changed is retried
        // with the new resourceVersion.
        for _ in 0..2 {
            self.may_write()?;
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(absorbed.uid.clone()),
                    resource_version: Some(resource_version.clone()),
                }),
                ..DeleteParams::default()
            };
            match api.delete(&absorbed.name, &params).await {
                Ok(_) => return Ok(Deleted::Now),
                Err(e) if code(&e) == Some(404) => return Ok(Deleted::Before),
                Err(e) if code(&e) == Some(409) => {}
                Err(e) => return Err(api_error(what())(e)),
            }
            let now = api
                .get_opt(&absorbed.name)
                .await
                .map_err(api_error(what()))?;
            let Some(now) = now.filter(|o| o.uid().as_deref() == Some(&absorbed.uid)) else {
                return Ok(Deleted::Before);
            };
            if (now.spec.state, i64::from(now.spec.quantity)) != (absorbed.state, absorbed.quantity)
            {
                return Ok(Deleted::Changed);
            }
            if now.meta().deletion_timestamp.is_some() {
                return Ok(Deleted::Now);
            }
            resource_version = now.resource_version().unwrap_or_default();
        }
        Err(SettleError::NotSeen(format!(
            "{} unchanged long enough to delete it",
            what()
        )))
    }

    async fn wait(&self, what: String, done: impl Fn() -> bool) -> Result<(), SettleError> {
        let deadline = tokio::time::Instant::now() + ECHO_TIMEOUT;
        while !done() {
            if tokio::time::Instant::now() > deadline {
                return Err(SettleError::NotSeen(what));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    fn ledger(&self, key: &CustomerKey) -> Option<Ledger> {
        self.caches
            .ledgers
            .get(&ObjectRef::new(&key.name).within(&key.namespace))
            .map(|l| l.as_ref().clone())
    }

    /// Creates the ledger of `key`, or patches (conditionally) its spec, then waits until the
    /// watch has shown the write to the index, so that no later step runs ahead of it.
    async fn write(
        &self,
        key: &CustomerKey,
        current: Option<&Ledger>,
        spec: LedgerSpec,
    ) -> Result<(), SettleError> {
        self.may_write()?;
        let api: Api<Ledger> = Api::namespaced(self.ctx.client().clone(), &key.namespace);
        let what = format!("writing ledger {}/{}", key.namespace, key.name);
        let written = match current {
            Some(current) => {
                let patch = ledger_patch(&spec, &current.resource_version().unwrap_or_default());
                let params = PatchParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..PatchParams::default()
                };
                api.patch(&key.name, &params, &Patch::Merge(&patch)).await
            }
            None => {
                let mut ledger = Ledger::new(&key.name, spec);
                ledger.metadata.namespace = Some(key.namespace.clone());
                let params = PostParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..PostParams::default()
                };
                api.create(&params, &ledger).await
            }
        }
        .map_err(api_error(what))?;
        let version = written.resource_version().unwrap_or_default();
        self.wait(
            format!("ledger {}/{} at {version}", key.namespace, key.name),
            || {
                self.ctx
                    .index()
                    .ledger_of(key)
                    .is_some_and(|l| l.resource_version == version)
            },
        )
        .await
    }

    /// One Event on the customer per batch: the next of the customer's `Settled` series, so that
    /// etcd holds one such Event per customer, not one per batch.
    async fn announce(&self, key: &CustomerKey, batch: &[&AbsorbedOrder]) {
        let Some(uid) = self.ctx.index().customer(key).map(|c| c.uid.clone()) else {
            return;
        };
        let points: i64 = batch
            .iter()
            .filter(|a| a.state == OrderState::Completed)
            .map(|a| a.quantity)
            .sum();
        info!(customer = %key.customer_ref(), orders = batch.len(), points, "settled");
        // The same note for every batch: the series counts them (the log has each batch).
        let note = Note {
            type_: EventType::Normal,
            reason: "Settled",
            action: "Settle".into(),
            note: "final orders settled into the ledger, a batch per count; the score is unchanged"
                .into(),
        };
        if let Err(error) = self
            .ctx
            .events
            .publish_series(
                "settled",
                note,
                regarding::<Customer>(&key.namespace, &key.name, &uid),
            )
            .await
        {
            warn!(%error, "could not record the Settled event");
        }
    }

    /// Whether this replica may write now: it holds a fresh Lease, and its index is one moment
    /// of the store (not mid-way through lists again).
    fn may_write(&self) -> Result<(), SettleError> {
        self.ctx.fence.check().map_err(SettleError::Withheld)?;
        if !self.ctx.freshness.consistent() {
            return Err(SettleError::Withheld("the watches are listing again"));
        }
        Ok(())
    }

    fn fault_point(&self, step: &str) {
        if self.fault.as_deref() == Some(step) {
            error!(step, "fault injection: aborting");
            std::process::abort();
        }
    }
}

/// The merge patch that makes a Ledger's spec `spec`, if the Ledger is still at
/// `resource_version` (a stale one is refused with 409). Every field of the spec this version
/// knows is named (null for one `spec` leaves out), and nothing else: what it does not know is
/// kept, a newer version's fields (the Ledger is the only record of the settled orders: an
/// older replica during a rollout, or after a downgrade, must not drop them) and the Ledger's
/// labels and annotations (a backup tool's, a user's).
fn ledger_patch(spec: &LedgerSpec, resource_version: &str) -> serde_json::Value {
    let mut fields = serde_json::to_value(spec).unwrap_or_else(|_| serde_json::json!({}));
    let schema = schemars::schema_for!(LedgerSpec);
    let known = schema
        .get("properties")
        .and_then(serde_json::Value::as_object);
    if let (Some(set), Some(known)) = (fields.as_object_mut(), known) {
        for field in known.keys() {
            set.entry(field.clone()).or_insert(serde_json::Value::Null);
        }
    }
    serde_json::json!({
        "metadata": { "resourceVersion": resource_version },
        "spec": fields,
    })
}
