//! The watches: one per kind, on every replica, leader or not. Each feeds the [`Index`] (and,
//! for Ledgers, a cache of whole objects) through [`feed`], and all list again
//! when the store is seen to have gone back in time ([`freshness`], probed here).

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use kube::{
    Api, Client,
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use tracing::{debug, warn};

use super::{
    context::Context, feed, freshness, index::OrderKey, queue::Sweep, readiness::Watched,
    triggers::Sweeps,
};
use crate::{
    cli::InitialList,
    crd::{Customer, Ledger, Order},
};

/// The caches of whole objects, filled by the watches: Ledgers only (the index keeps what the
/// reconcilers read of Customers and Orders: see [`seen`]).
#[derive(Clone)]
pub struct Caches {
    pub ledgers: Store<Ledger>,
}

/// Where the watches write what the caches hold.
pub struct CacheWriters {
    pub(super) ledgers: reflector::store::Writer<Ledger>,
}

/// Empty caches, and what fills them.
pub fn caches() -> (Caches, CacheWriters) {
    let (ledgers, ledger_writer) = reflector::store();
    (
        Caches { ledgers },
        CacheWriters {
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
    writers: CacheWriters,
) -> Watches {
    let config = match initial_list {
        InitialList::Streaming => watcher::Config::default().streaming_lists(),
        InitialList::Paged | InitialList::Auto => watcher::Config::default().any_semantic(),
    };
    Watches(vec![
        tokio::spawn(run_watch::<Customer>(
            api(client, namespace),
            config.clone(),
            None,
            feed::feed(ctx.clone(), |ctx| Sweeps {
                customers: Some(every_customer(ctx)),
                ..Sweeps::default()
            }),
            ctx.clone(),
        )),
        tokio::spawn(run_watch::<Order>(
            api(client, namespace),
            config.clone(),
            None,
            feed::feed(ctx.clone(), |ctx| Sweeps {
                orders: Some(every_order(ctx)),
                ..Sweeps::default()
            }),
            ctx.clone(),
        )),
        tokio::spawn(run_watch(
            api(client, namespace),
            config,
            Some(writers.ledgers),
            // A ledger wakes its customer when what it counts changed, nothing else.
            feed::feed(ctx.clone(), |_| Sweeps::default()),
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

/// At once, then every [`freshness::PERIOD`] (every second while a watch has failed and not
/// resumed) and whenever a watch has listed: compares each kind's current resourceVersion in
/// the store (a LIST of one item) with the newest its watch has shown and the newest an
/// earlier probe read; then, for a watch that failed, whether the store still holds the
/// version it showed. A failed watch resumes only on a store whose current version was read
/// in the same round and found not behind: a restored store can hold the newest object a watch
/// showed and still be behind (it then said ready for a moment before noticing).
async fn check_freshness(client: Client, namespace: Option<String>, ctx: Arc<Context>) {
    let namespace = namespace.as_deref();
    loop {
        let mut not_behind = [false; 3];
        for kind in Watched::ALL {
            let seen_before = ctx.freshness.seen(kind);
            let version = match kind {
                Watched::Customers => current_version(&api::<Customer>(&client, namespace)).await,
                Watched::Orders => current_version(&api::<Order>(&client, namespace)).await,
                Watched::Ledgers => current_version(&api::<Ledger>(&client, namespace)).await,
            };
            let Some(version) = version else { continue };
            if let Some(seen) = ctx.freshness.check(kind, &version, seen_before) {
                warn!(?kind, %version, seen, "the store's version is below what it was before");
                ctx.readiness.went_back(kind, &version, seen);
            } else {
                not_behind[kind as usize] = true;
            }
        }
        for (kind, seen) in ctx.freshness.unverified() {
            if !not_behind[kind as usize] {
                continue;
            }
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
        let period = if ctx.freshness.consistent() {
            freshness::PERIOD
        } else {
            Duration::from_secs(1)
        };
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            () = ctx.freshness.probe_due() => {}
        }
    }
}

/// How long one probe of the store may take: kube's client retries a 504 (which a read at a
/// version the store has not reached gets) for minutes, and the probe must go on meanwhile.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The store's current resourceVersion for `api`'s kind, if the API server answers.
async fn current_version<K>(api: &Api<K>) -> Option<String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let one = kube::api::ListParams::default().limit(1);
    match tokio::time::timeout(PROBE_TIMEOUT, api.list_metadata(&one)).await {
        Ok(Ok(list)) => list.metadata.resource_version,
        Ok(Err(error)) => {
            debug!(%error, "could not read the store's current version");
            None
        }
        Err(_) => {
            debug!("no answer to a probe of the store's current version");
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
    let Ok(answer) = tokio::time::timeout(PROBE_TIMEOUT, api.list_metadata(&exact)).await else {
        debug!("no answer to whether the store still holds the version seen");
        return None;
    };
    match answer {
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

/// Every Customer the index knows now, as a sweep.
pub(super) fn every_customer(ctx: &Context) -> Sweep<ObjectRef<Customer>> {
    let customers: Vec<_> = ctx
        .index()
        .customers()
        .map(|(key, _)| key.clone())
        .collect();
    Box::new(customers.into_iter().map(|key| key.customer_ref()))
}

/// Every Order, as a sweep: the customers that have orders now, each one's orders read from
/// the index when the queue draws them (a sweep of 100,000 orders holds no list of them).
pub(super) fn every_order(ctx: &Context) -> Sweep<OrderKey> {
    let index = ctx.shared_index();
    let customers: Vec<_> = ctx.index().customers_with_orders().cloned().collect();
    Box::new(customers.into_iter().flat_map(move |customer| {
        let index = index.read().unwrap_or_else(|p| p.into_inner());
        let orders: Vec<_> = index
            .orders_of(&customer)
            .map(|(name, _)| customer.order_key(name))
            .collect();
        orders
    }))
}
