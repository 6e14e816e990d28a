//! The two controllers and how watch events reach them.
//!
//! One watch per kind feeds the shared [`Index`] on every replica, leader or not, so a standby
//! that takes over has everything at hand and needs no re-list. Customers and Ledgers are also
//! kept whole in reflector caches; Orders are not: the index keeps what their reconciler reads
//! ([`seen`]), a quarter of the memory. Only the Lease holder reconciles: each term starts one
//! queue per kind, reconciles every object once, then whatever the watches wake ([`feed`]). A
//! queue runs at most one reconcile per object at a time and folds the wakes that arrive
//! meanwhile into one more, so a busy customer is written as fast as the API server accepts,
//! never held back by a debounce.
//!
//! Neither controller acts before every cache holds a full list: a customer reconciled against
//! half of its orders, or without its ledger, would publish a wrong score. With `--settle-after`,
//! the term also runs [`settlement`].

pub mod conditions;
mod context;
pub mod customer;
pub mod declared;
mod error;
mod feed;
#[cfg(test)]
mod fixtures;
mod freshness;
pub mod index;
pub mod order;
mod pacer;
mod queue;
mod readiness;
pub mod restore;
pub mod seen;
pub mod settlement;
pub mod status;
#[cfg(test)]
mod tests;

use std::{
    convert::Infallible,
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{FutureExt, StreamExt, future};
use kube::{
    Api, Client,
    runtime::{
        WatchStreamExt, controller,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, gauge::ConstGauge},
};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tracing::{debug, info, warn};

pub use context::Context;
pub use error::{Error, METRIC_LABELS};
pub use feed::Wakes;
pub use index::{Index, OrderKey};
pub use readiness::{Readiness, ReadyCollector};

use readiness::Watched;
pub use status::FIELD_MANAGER;

use queue::Lane;

use crate::{
    cli::InitialList,
    crd::{Customer, Ledger, Order},
};

/// Every object is looked at again this often, as a backstop: changes made by anyone else wake
/// a reconcile at once. One sweep per term, not one timer per object, so memory does not grow
/// with a scheduled entry for every object.
pub const RESYNC: Duration = Duration::from_secs(600);

/// Reconciles at once, per controller.
pub const CONCURRENCY: u16 = 64;

/// The caches of whole objects, filled by the watches (Orders have none: see [`seen`]).
#[derive(Clone)]
pub struct Caches {
    pub customers: Store<Customer>,
    pub ledgers: Store<Ledger>,
}

/// Where watch events send what they wake: the queues of the current term, if any.
#[derive(Default)]
pub struct Triggers {
    queues: Mutex<Option<Queues>>,
}

struct Queues {
    customers: UnboundedSender<ObjectRef<Customer>>,
    orders: UnboundedSender<(OrderKey, Lane)>,
}

impl Triggers {
    /// Wakes what changed: it runs before anything a sweep woke.
    pub fn wake(&self, wakes: Wakes) {
        self.send(wakes, Lane::Change);
    }

    /// Wakes everything a sweep looks at: it runs once no change waits.
    pub fn sweep(&self, wakes: Wakes) {
        self.send(wakes, Lane::Sweep);
    }

    fn send(&self, wakes: Wakes, lane: Lane) {
        if wakes == Wakes::default() {
            return;
        }
        let queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(queues) = queues.as_ref() {
            for customer in wakes.customers {
                let _ = queues.customers.send(customer);
            }
            for order in wakes.orders {
                let _ = queues.orders.send((order, lane));
            }
        }
    }

    fn open(
        &self,
    ) -> (
        UnboundedReceiver<ObjectRef<Customer>>,
        UnboundedReceiver<(OrderKey, Lane)>,
    ) {
        let (customers, customer_queue) = unbounded_channel();
        let (orders, order_queue) = unbounded_channel();
        *self.queues.lock().unwrap_or_else(|p| p.into_inner()) = Some(Queues { customers, orders });
        (customer_queue, order_queue)
    }

    fn close(&self) {
        self.queues.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// Where the watches write what the caches hold.
pub struct CacheWriters {
    customers: reflector::store::Writer<Customer>,
    ledgers: reflector::store::Writer<Ledger>,
}

/// Empty caches, and what fills them.
pub fn caches() -> (Caches, CacheWriters) {
    let (customers, customer_writer) = reflector::store();
    let (ledgers, ledger_writer) = reflector::store();
    (
        Caches { customers, ledgers },
        CacheWriters {
            customers: customer_writer,
            ledgers: ledger_writer,
        },
    )
}

/// Starts the watches of every kind (on `namespace`, or all) into the caches; they run until
/// the returned handle is dropped.
pub fn watch(
    client: &Client,
    namespace: Option<&str>,
    initial_list: InitialList,
    ctx: &Arc<Context>,
    caches: &Caches,
    writers: CacheWriters,
) -> Watches {
    let customers = caches.customers.clone();
    let config = match initial_list {
        InitialList::Streaming => watcher::Config::default().streaming_lists(),
        InitialList::Paged | InitialList::Auto => watcher::Config::default().any_semantic(),
    };
    Watches(vec![
        tokio::spawn(run_watch(
            api(client, namespace),
            config.clone(),
            Some(writers.customers),
            feed::feed(ctx.clone(), move |_| Wakes {
                customers: every_customer(&customers),
                ..Wakes::default()
            }),
            ctx.clone(),
        )),
        tokio::spawn(run_watch::<Order>(
            api(client, namespace),
            config.clone(),
            None,
            feed::feed(ctx.clone(), |index| Wakes {
                orders: every_order(index),
                ..Wakes::default()
            }),
            ctx.clone(),
        )),
        tokio::spawn(run_watch(
            api(client, namespace),
            config,
            Some(writers.ledgers),
            // A ledger wakes its customer when what it counts changed, nothing else.
            feed::feed(ctx.clone(), |_| Wakes::default()),
            ctx.clone(),
        )),
        tokio::spawn(check_freshness(
            client.clone(),
            namespace.map(str::to_owned),
            ctx.clone(),
        )),
    ])
}

/// The watch tasks; dropping this stops them.
pub struct Watches(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Watches {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Follows `api` into the cache (if any) and the feed, and lists everything again whenever
/// the store is seen to have gone back in time.
async fn run_watch<K: feed::Watchable>(
    api: Api<K>,
    config: watcher::Config,
    mut cache: Option<reflector::store::Writer<K>>,
    mut feed: impl FnMut(&Result<watcher::Event<K>, watcher::Error>),
    ctx: Arc<Context>,
) {
    loop {
        let events = watcher::watcher(api.clone(), config.clone())
            .default_backoff()
            .modify(K::slim);
        let mut events = std::pin::pin!(events);
        loop {
            tokio::select! {
                event = events.next() => {
                    let Some(event) = event else { return };
                    if let (Some(cache), Ok(event)) = (cache.as_mut(), &event) {
                        cache.apply_watcher_event(event);
                    }
                    feed(&event);
                }
                () = ctx.freshness.relist(K::KIND) => {
                    warn!(kind = ?K::KIND, "the store went back in time; listing again");
                    break;
                }
            }
        }
    }
}

/// Every [`freshness::PERIOD`] (every second while a watch has failed and not resumed):
/// compares each kind's current resourceVersion in the store (a LIST of one item) with the
/// newest its watch has shown, and, for a watch that failed, whether the store still holds that
/// version.
async fn check_freshness(client: Client, namespace: Option<String>, ctx: Arc<Context>) {
    let namespace = namespace.as_deref();
    loop {
        let unsure = !ctx.freshness.consistent();
        tokio::time::sleep(if unsure {
            Duration::from_secs(1)
        } else {
            freshness::PERIOD
        })
        .await;
        for (kind, seen) in ctx.freshness.unverified() {
            let held = match kind {
                Watched::Customers => holds(&api::<Customer>(&client, namespace), seen).await,
                Watched::Orders => holds(&api::<Order>(&client, namespace), seen).await,
                Watched::Ledgers => holds(&api::<Ledger>(&client, namespace), seen).await,
            };
            match held {
                Some(true) => {
                    ctx.freshness.resumed(kind);
                    ctx.readiness.event(kind);
                }
                Some(false) => {
                    warn!(
                        ?kind,
                        seen, "the store no longer holds what the watch had seen"
                    );
                    ctx.freshness.lost_history(kind);
                    ctx.readiness.relisting(format!(
                        "the store no longer holds version {seen} of {kind:?} (was it \
                         restored?): every watch lists again"
                    ));
                }
                None => {}
            }
        }
        let current = [
            (
                Watched::Customers,
                current_version(&api::<Customer>(&client, namespace)).await,
            ),
            (
                Watched::Orders,
                current_version(&api::<Order>(&client, namespace)).await,
            ),
            (
                Watched::Ledgers,
                current_version(&api::<Ledger>(&client, namespace)).await,
            ),
        ];
        for (kind, version) in current {
            let Some(version) = version else { continue };
            if let Some(seen) = ctx.freshness.check(kind, &version) {
                ctx.readiness.went_back(kind, &version, seen);
            }
        }
    }
}

/// The store's current resourceVersion for `api`'s kind, if the API server answers.
async fn current_version<K>(api: &Api<K>) -> Option<String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let one = kube::api::ListParams::default().limit(1);
    match api.list_metadata(&one).await {
        Ok(list) => list.metadata.resource_version,
        Err(error) => {
            debug!(%error, "could not read the store's current version");
            None
        }
    }
}

/// Whether the store still holds version `seen` of `api`'s kind (a LIST at exactly that
/// version): Some(false) when it answers it does not (compacted away, or not reached), None when
/// it cannot tell (it does not answer, or refuses for another reason).
async fn holds<K>(api: &Api<K>, seen: u64) -> Option<bool>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if seen == 0 {
        return current_version(api).await.map(|_| true);
    }
    let exact = kube::api::ListParams::default()
        .limit(1)
        .at(&seen.to_string())
        .matching(kube::api::VersionMatch::Exact);
    match api.list_metadata(&exact).await {
        Ok(_) => Some(true),
        // Gone (compacted), or too large (the store has not reached it).
        Err(kube::Error::Api(status))
            if status.code == 410 || status.message.contains("Too large resource version") =>
        {
            Some(false)
        }
        Err(error) => {
            debug!(%error, "could not tell whether the store still holds the version seen");
            None
        }
    }
}

/// One term of leadership: reconciles every object once, then what the watches wake, until
/// `stop` resolves; in-flight reconciles finish first.
pub async fn lead(
    ctx: Arc<Context>,
    caches: Caches,
    settle: Option<(Duration, Option<String>)>,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let stop = stop.shared();
    let ready = async {
        ctx.readiness.synced().await;
        ctx.fence.opened().await;
    };
    tokio::select! {
        _ = ready => {}
        _ = stop.clone() => return,
    }
    let (customer_queue, order_queue) = ctx.triggers.open();
    // Everything at the start of the term, then every RESYNC.
    let sweep = {
        let (ctx, customers) = (ctx.clone(), caches.customers.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(RESYNC);
            loop {
                every.tick().await;
                let orders = every_order(&ctx.index());
                ctx.triggers.sweep(Wakes {
                    customers: every_customer(&customers),
                    orders,
                });
            }
        })
    };
    let settlement = settle.map(|(after, namespace)| {
        tokio::spawn(settlement::run(
            ctx.clone(),
            caches.clone(),
            after,
            namespace,
        ))
    });
    info!("reconciling");

    let config = controller::Config::default().concurrency(CONCURRENCY);
    let customers = controller::applier(
        |obj, ctx| Box::pin(customer::reconcile(obj, ctx)),
        customer::error_policy,
        ctx.clone(),
        caches.customers,
        applier_queue(customer_queue, stop.clone()),
        config,
    )
    .for_each(|result| {
        log_result(customer::CONTROLLER, result);
        future::ready(())
    });
    let orders = queue::run(order_queue, stop, CONCURRENCY.into(), |key| {
        order::reconcile(key, ctx.clone())
    });
    future::join(customers, orders).await;
    sweep.abort();
    if let Some(settlement) = settlement {
        settlement.abort();
    }
    ctx.triggers.close();
    info!("stopped reconciling");
}

fn every_customer(customers: &Store<Customer>) -> Vec<ObjectRef<Customer>> {
    customers
        .state()
        .iter()
        .map(|c| ObjectRef::from_obj(c.as_ref()))
        .collect()
}

fn every_order(index: &Index) -> Vec<OrderKey> {
    index
        .all_orders()
        .map(|(customer, name, _)| OrderKey {
            customer: customer.clone(),
            name: name.to_owned(),
        })
        .collect()
}

/// The wakes of a term as the applier's queue, ending (gracefully) when `stop` resolves.
fn applier_queue<K: kube::Resource>(
    wakes: UnboundedReceiver<ObjectRef<K>>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> impl futures::Stream<Item = Result<ObjectRef<K>, Infallible>> {
    UnboundedReceiverStream::new(wakes).map(Ok).take_until(stop)
}

fn log_result<K, E1, E2>(
    controller: &str,
    result: Result<(ObjectRef<K>, controller::Action), controller::Error<E1, E2>>,
) where
    K: kube::Resource,
    K::DynamicType: std::fmt::Debug + Eq + std::hash::Hash + Clone,
    E1: std::error::Error + 'static,
    E2: std::error::Error + 'static,
{
    match result {
        Ok((obj, _)) => debug!(controller, object = %obj, "reconciled"),
        // Deleted objects still queued, and reconcile errors (already logged by the error policy).
        Err(controller::Error::ObjectNotFound(obj)) => {
            debug!(controller, object = %obj, "gone before its reconcile")
        }
        Err(controller::Error::ReconcilerFailed(..)) => {}
        Err(error) => warn!(controller, %error, "controller error"),
    }
}

/// `reserve_ledgers` and `reserve_orders_absorbed`: ledgers in the cache, and the orders
/// absorbed in them that they have not forgotten yet, counted at each scrape.
#[derive(Debug)]
pub struct LedgerCounts(pub Store<Ledger>);

impl Collector for LedgerCounts {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let ledgers = self.0.state();
        let settling: usize = ledgers.iter().map(|l| l.spec.absorbed.len()).sum();
        for (name, help, value) in [
            (
                "ledgers",
                "Ledgers of settled orders, from the operator's cache",
                ledgers.len(),
            ),
            (
                "orders_absorbed",
                "Orders absorbed in a ledger and not yet forgotten by it (deleted or about to be)",
                settling,
            ),
        ] {
            let family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(value as i64).encode(family)?;
        }
        Ok(())
    }
}

/// `reserve_customers{level}`: customers per level in the cache, and
/// `reserve_customers_settled_history_missing`: those whose Ledger is missing, counted at each
/// scrape.
#[derive(Debug)]
pub struct CustomersPerLevel(pub Store<Customer>);

impl Collector for CustomersPerLevel {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut counts = std::collections::BTreeMap::<String, i64>::new();
        let mut missing = 0;
        for customer in self.0.state() {
            let Some(status) = customer.status.as_ref() else {
                continue;
            };
            if let Some(level) = status.level.clone() {
                *counts.entry(level).or_default() += 1;
            }
            if customer::settled_history_missing(status) {
                missing += 1;
            }
        }
        let mut family = encoder.encode_descriptor(
            "customers",
            "Customers per level, from the operator's cache",
            None,
            MetricType::Gauge,
        )?;
        for (level, count) in counts {
            let labels = [("level", level)];
            ConstGauge::new(count).encode(family.encode_family(&labels)?)?;
        }
        let family = encoder.encode_descriptor(
            "customers_settled_history_missing",
            "Customers whose Ledger is missing: their score counts the settled history last seen",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(missing).encode(family)
    }
}
