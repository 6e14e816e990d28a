//! The two controllers and how watch events reach them.
//!
//! One watch per kind feeds a reflector cache and the shared [`Index`]. The Customer
//! controller is driven by Customer changes (spec generation) and by the index when one of the
//! customer's orders changes what counts. The Order controller is driven by Order changes
//! (spec generation) and by the index when the order's customer appears or disappears. Status
//! writes of the operator itself change no generation and nothing the index counts for the
//! object written, so they do not wake the writer again.
//!
//! Neither controller acts before both caches hold a full list: a customer reconciled against
//! half of its orders would publish a wrong score. After each (re-)list of a kind, every object
//! of that kind is reconciled once, and the index wakes what changed while the watch was away.

pub mod conditions;
mod context;
pub mod customer;
mod error;
pub mod index;
pub mod order;
mod readiness;

use std::{
    future::Future,
    sync::{Arc, RwLock},
    time::Duration,
};

use futures::{FutureExt, StreamExt, future, stream};
use kube::{
    Api, Client, ResourceExt,
    runtime::{
        Controller, WatchStreamExt, controller, predicates, reflector,
        reflector::ObjectRef,
        watcher::{self, Event},
    },
};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tracing::{debug, info, warn};

pub use context::{Context, FIELD_MANAGER};
pub use error::Error;
use index::{CustomerKey, CustomerUids, Index, OrderFacts, OrdersByCustomer};
pub use readiness::Readiness;

use crate::{
    crd::{Customer, Order},
    loyalty::LevelPolicy,
    metrics::Metrics,
};

/// Every object is looked at again this long after its last reconcile, in case something
/// outside the watches changed (e.g. someone edited a status by hand).
pub const RESYNC: Duration = Duration::from_secs(600);

/// How the controllers run.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Watch one namespace, or all.
    pub namespace: Option<String>,
    pub policy: LevelPolicy,
    /// Written into Events as the reporting instance.
    pub identity: Option<String>,
    /// A customer is reconciled once its orders have been quiet this long, so a burst of order
    /// changes makes one status write.
    pub customer_debounce: Duration,
    /// Reconciles at once, per controller.
    pub concurrency: u16,
}

impl Settings {
    pub fn new(namespace: Option<String>, policy: LevelPolicy, identity: Option<String>) -> Self {
        Self {
            namespace,
            policy,
            identity,
            customer_debounce: Duration::from_millis(1000),
            concurrency: 64,
        }
    }
}

/// Runs both controllers until `stop` resolves, then lets in-flight reconciles finish.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let (customer_api, order_api): (Api<Customer>, Api<Order>) = match &settings.namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let (customers, customer_writer) = reflector::store();
    let (orders, order_writer) = reflector::store();
    let index = Arc::new(RwLock::new(Index::default()));
    let ctx = Arc::new(Context::new(
        client,
        settings.policy.clone(),
        index.clone(),
        metrics.clone(),
        readiness.clone(),
        settings.identity.clone(),
    ));
    readiness.reset();
    metrics.set_levels_source(Some(Box::new({
        let customers = customers.clone();
        move || levels_in(&customers)
    })));

    let (wake_customers, customer_wakes) = unbounded_channel::<ObjectRef<Customer>>();
    let (wake_orders, order_wakes) = unbounded_channel::<ObjectRef<Order>>();
    let (customers_listed, customer_lists) = unbounded_channel::<()>();
    let (orders_listed, order_lists) = unbounded_channel::<()>();
    // Triggers that arrive before both caches are listed are dropped: the reconcile of
    // everything that follows the first full list covers them.
    let synced = {
        let readiness = readiness.clone();
        move || {
            let readiness = readiness.clone();
            async move { readiness.synced().await }
        }
    };

    let customer_events = watcher(customer_api)
        .modify(|c: &mut Customer| strip(c))
        .reflect(customer_writer)
        .inspect(customer_feed(
            index.clone(),
            ctx.clone(),
            wake_orders,
            customers_listed,
            readiness.clone(),
        ))
        .filter_map(live_objects)
        .predicate_filter(predicates::generation, Default::default())
        .filter(after_sync(&readiness));
    let order_events = watcher(order_api)
        .modify(|o: &mut Order| strip(o))
        .reflect(order_writer)
        .inspect(order_feed(
            index,
            ctx.clone(),
            wake_customers,
            orders_listed,
            readiness.clone(),
        ))
        .filter_map(live_objects)
        .predicate_filter(predicates::generation, Default::default())
        .filter(after_sync(&readiness));

    let stop = stop.shared();
    let customer_controller = Controller::for_stream(customer_events, customers)
        .with_config(
            controller::Config::default()
                .debounce(settings.customer_debounce)
                .concurrency(settings.concurrency),
        )
        .reconcile_on(UnboundedReceiverStream::new(customer_wakes).filter(after_sync(&readiness)))
        .reconcile_all_on(stream::select(
            stream::once(synced()),
            UnboundedReceiverStream::new(customer_lists).filter(after_sync(&readiness)),
        ))
        .graceful_shutdown_on(stop.clone())
        .run(customer::reconcile, customer::error_policy, ctx.clone())
        .for_each(|result| log_result(customer::CONTROLLER, result));
    let order_controller = Controller::for_stream(order_events, orders)
        .with_config(controller::Config::default().concurrency(settings.concurrency))
        .reconcile_on(UnboundedReceiverStream::new(order_wakes).filter(after_sync(&readiness)))
        .reconcile_all_on(stream::select(
            stream::once(synced()),
            UnboundedReceiverStream::new(order_lists).filter(after_sync(&readiness)),
        ))
        .graceful_shutdown_on(stop)
        .run(order::reconcile, order::error_policy, ctx.clone())
        .for_each(|result| log_result(order::CONTROLLER, result));

    info!(namespace = settings.namespace.as_deref().unwrap_or("(all)"), policy = %settings.policy, "controllers starting");
    future::join(customer_controller, order_controller).await;
    metrics.set_levels_source(None);
    readiness.reset();
    info!("controllers stopped");
}

fn watcher<K>(api: Api<K>) -> impl futures::Stream<Item = Result<Event<K>, watcher::Error>> + Send
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher::watcher(api, watcher::Config::default().any_semantic()).default_backoff()
}

/// Drops what no reconcile reads, so cache memory follows the data that matters.
fn strip<K: kube::Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// Feeds Customer watch events into the index; a customer appearing or leaving wakes its orders.
fn customer_feed(
    index: Arc<RwLock<Index>>,
    ctx: Arc<Context>,
    wake_orders: UnboundedSender<ObjectRef<Order>>,
    listed: UnboundedSender<()>,
    readiness: Readiness,
) -> impl FnMut(&Result<Event<Customer>, watcher::Error>) {
    let mut relisted: Option<CustomerUids> = None;
    move |event| {
        let woken = match event {
            Ok(Event::Apply(customer)) => {
                readiness.customers_event();
                ctx.customer_writes.observed(customer);
                write(&index).apply_customer(customer)
            }
            Ok(Event::Delete(customer)) => {
                readiness.customers_event();
                ctx.customer_writes.forget(customer);
                write(&index).delete_customer(customer)
            }
            Ok(Event::Init) => {
                relisted = Some(CustomerUids::new());
                Vec::new()
            }
            Ok(Event::InitApply(customer)) => {
                relisted.get_or_insert_default().insert(
                    CustomerKey::of_customer(customer),
                    customer.uid().unwrap_or_default(),
                );
                Vec::new()
            }
            Ok(Event::InitDone) => {
                let woken = write(&index).reset_customers(relisted.take().unwrap_or_default());
                readiness.customers_synced();
                let _ = listed.send(());
                woken
            }
            Err(error) => {
                warn!(%error, "customer watch failed; retrying");
                readiness.customers_watch_failed();
                Vec::new()
            }
        };
        for order in woken {
            let _ = wake_orders.send(order);
        }
    }
}

/// Feeds Order watch events into the index; a change to what counts wakes the order's customer.
fn order_feed(
    index: Arc<RwLock<Index>>,
    ctx: Arc<Context>,
    wake_customers: UnboundedSender<ObjectRef<Customer>>,
    listed: UnboundedSender<()>,
    readiness: Readiness,
) -> impl FnMut(&Result<Event<Order>, watcher::Error>) {
    let mut relisted: Option<OrdersByCustomer> = None;
    move |event| {
        let woken = match event {
            Ok(Event::Apply(order)) => {
                readiness.orders_event();
                ctx.order_writes.observed(order);
                write(&index).apply_order(order).into_iter().collect()
            }
            Ok(Event::Delete(order)) => {
                readiness.orders_event();
                ctx.order_writes.forget(order);
                write(&index).delete_order(order).into_iter().collect()
            }
            Ok(Event::Init) => {
                relisted = Some(OrdersByCustomer::new());
                Vec::new()
            }
            Ok(Event::InitApply(order)) => {
                relisted
                    .get_or_insert_default()
                    .entry(CustomerKey::of_order(order))
                    .or_default()
                    .insert(order.name_any(), OrderFacts::of(order));
                Vec::new()
            }
            Ok(Event::InitDone) => {
                let woken = write(&index).reset_orders(relisted.take().unwrap_or_default());
                readiness.orders_synced();
                let _ = listed.send(());
                woken
            }
            Err(error) => {
                warn!(%error, "order watch failed; retrying");
                readiness.orders_watch_failed();
                Vec::new()
            }
        };
        for customer in woken {
            let _ = wake_customers.send(customer);
        }
    }
}

/// Objects of live watch events (and watch errors) only. Objects of a (re-)list reach the cache
/// only when the list is complete, so a reconcile triggered by one would not find it; every
/// object is reconciled once its list is done instead (`reconcile_all_on`).
fn live_objects<K>(
    event: Result<Event<K>, watcher::Error>,
) -> future::Ready<Option<Result<K, watcher::Error>>> {
    future::ready(match event {
        Ok(Event::Apply(obj)) => Some(Ok(obj)),
        Ok(_) => None,
        Err(error) => Some(Err(error)),
    })
}

/// A stream filter that passes items only once both caches are listed.
fn after_sync<T>(readiness: &Readiness) -> impl FnMut(&T) -> future::Ready<bool> + use<T> {
    let readiness = readiness.clone();
    move |_| future::ready(readiness.is_synced())
}

fn write(index: &RwLock<Index>) -> std::sync::RwLockWriteGuard<'_, Index> {
    index
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn levels_in(customers: &reflector::Store<Customer>) -> Vec<(String, i64)> {
    let mut counts = std::collections::BTreeMap::<String, i64>::new();
    for customer in customers.state() {
        if let Some(level) = customer.status.as_ref().and_then(|s| s.level.clone()) {
            *counts.entry(level).or_default() += 1;
        }
    }
    counts.into_iter().collect()
}

async fn log_result<K, E1, E2>(
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
