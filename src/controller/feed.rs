//! One watch feed for every kind: watch events go into the index, and wake what they affect.
//!
//! An object changed by anyone but this process (a user, a GitOps tool, another replica) wakes
//! its own reconcile, so a status someone else wrote is repaired at once; the watch event of
//! this process's own status write wakes nothing. What the index says a change affects (a
//! customer's score, an order's customer) wakes those objects too. After each (re-)list every
//! object of the kind is woken once, since the list hands over no individual changes.

use std::{fmt::Debug, sync::Arc};

use kube::{
    Resource, ResourceExt,
    runtime::{reflector::ObjectRef, watcher},
};
use serde::de::DeserializeOwned;
use tracing::warn;

use super::{
    context::Context,
    index::{Index, ListedCustomer, ListedLedger, ListedOrder, OrderKey},
    readiness::Watched,
    restore,
    triggers::{Sweeps, Wakes},
};
use crate::crd::{Customer, Ledger, Order};

/// What differs between the watched kinds.
pub trait Watchable:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
    /// What the index keeps of one object of a (re-)list.
    type Listed: Send;
    const KIND: Watched;

    fn listed(index: &mut Index, obj: &Self) -> Self::Listed;
    fn reset(index: &mut Index, listed: Vec<Self::Listed>) -> Wakes;
    fn apply(index: &mut Index, obj: &Self) -> Wakes;
    fn delete(index: &mut Index, obj: &Self) -> Wakes;
    /// `obj` itself, among the objects to wake.
    fn wake(wakes: &mut Wakes, obj: &Self);
    /// Whether the event shows this process's own status write.
    fn is_own_echo(ctx: &Context, obj: &Self) -> bool;
    fn forget(ctx: &Context, obj: &Self);
    /// Forgets what this process wrote to every object of the kind (a list starts).
    fn forget_writes(ctx: &Context);

    /// Drops what nothing reads from a cached object, so cache memory follows the data that
    /// matters.
    fn slim(obj: &mut Self) {
        strip(obj);
    }
}

/// Drops managed fields, annotations, and labels and timestamps but a restore's: no reconcile
/// reads them.
fn strip<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    meta.annotations = None;
    let restored = meta
        .labels
        .take()
        .and_then(|mut labels| labels.remove_entry(restore::RESTORE_LABEL));
    if restored.is_none() {
        meta.creation_timestamp = None;
    }
    meta.labels = restored.map(|(key, value)| [(key, value)].into());
    meta.owner_references = None;
    meta.generate_name = None;
}

impl Watchable for Customer {
    type Listed = ListedCustomer;
    const KIND: Watched = Watched::Customers;

    fn listed(index: &mut Index, customer: &Self) -> ListedCustomer {
        index.listed_customer(customer)
    }

    fn reset(index: &mut Index, listed: Vec<ListedCustomer>) -> Wakes {
        Wakes {
            orders: index.reset_customers(listed),
            ..Wakes::default()
        }
    }

    fn apply(index: &mut Index, customer: &Self) -> Wakes {
        Wakes {
            orders: index.apply_customer(customer),
            ..Wakes::default()
        }
    }

    fn delete(index: &mut Index, customer: &Self) -> Wakes {
        Wakes {
            orders: index.delete_customer(customer),
            ..Wakes::default()
        }
    }

    fn wake(wakes: &mut Wakes, customer: &Self) {
        wakes.customers.push(ObjectRef::from_obj(customer));
    }

    fn is_own_echo(ctx: &Context, customer: &Self) -> bool {
        ctx.customers.writer.is_own_echo(
            &ObjectRef::from_obj(customer),
            &customer.resource_version().unwrap_or_default(),
        )
    }

    fn forget(ctx: &Context, customer: &Self) {
        ctx.customers.forget(&ObjectRef::from_obj(customer));
    }

    fn forget_writes(ctx: &Context) {
        ctx.customers.forget_writes();
    }
}

impl Watchable for Order {
    type Listed = ListedOrder;
    const KIND: Watched = Watched::Orders;

    fn listed(index: &mut Index, order: &Self) -> ListedOrder {
        index.listed_order(order)
    }

    fn reset(index: &mut Index, listed: Vec<ListedOrder>) -> Wakes {
        Wakes {
            customers: index.reset_orders(listed),
            ..Wakes::default()
        }
    }

    fn apply(index: &mut Index, order: &Self) -> Wakes {
        Wakes {
            customers: index.apply_order(order).into_iter().collect(),
            ..Wakes::default()
        }
    }

    fn delete(index: &mut Index, order: &Self) -> Wakes {
        Wakes {
            customers: index.delete_order(order).into_iter().collect(),
            ..Wakes::default()
        }
    }

    fn wake(wakes: &mut Wakes, order: &Self) {
        wakes.orders.push(OrderKey::of_order(order));
    }

    fn is_own_echo(ctx: &Context, order: &Self) -> bool {
        ctx.orders.writer.is_own_echo(
            &ObjectRef::from_obj(order),
            &order.resource_version().unwrap_or_default(),
        )
    }

    fn forget(ctx: &Context, order: &Self) {
        ctx.orders.forget(&ObjectRef::from_obj(order));
    }

    fn forget_writes(ctx: &Context) {
        ctx.orders.forget_writes();
    }

    /// Nothing: no cache keeps Orders; the index takes what it needs from the event.
    fn slim(_: &mut Self) {}
}

impl Watchable for Ledger {
    type Listed = ListedLedger;
    const KIND: Watched = Watched::Ledgers;

    fn listed(_: &mut Index, ledger: &Self) -> ListedLedger {
        Index::listed_ledger(ledger)
    }

    fn reset(index: &mut Index, listed: Vec<ListedLedger>) -> Wakes {
        Wakes {
            customers: index.reset_ledgers(listed),
            ..Wakes::default()
        }
    }

    fn apply(index: &mut Index, ledger: &Self) -> Wakes {
        Wakes {
            customers: index.apply_ledger(ledger).into_iter().collect(),
            ..Wakes::default()
        }
    }

    fn delete(index: &mut Index, ledger: &Self) -> Wakes {
        Wakes {
            customers: index.delete_ledger(ledger).into_iter().collect(),
            ..Wakes::default()
        }
    }

    /// A ledger is its customer's: a change wakes the customer (when what counts changed,
    /// through `apply`), never a ledger reconcile (there is none).
    fn wake(_: &mut Wakes, _: &Self) {}

    fn is_own_echo(_: &Context, _: &Self) -> bool {
        false
    }

    fn forget(_: &Context, _: &Self) {}

    fn forget_writes(_: &Context) {}
}

/// The API server's answer to a failed watch, if it gave one.
fn status_of(error: &watcher::Error) -> Option<&kube::core::Status> {
    match error {
        watcher::Error::WatchError(status) => Some(status),
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => Some(status),
        _ => None,
    }
}

/// Whether a watch error says the watch's version expired (410): it must list again.
fn expired(error: &watcher::Error) -> bool {
    status_of(error).is_some_and(|status| status.code == 410)
}

/// The version a failed watch resumed from, when the API server answered that its store has
/// not reached it (504, "Too large resource version: ASKED, current: NOW"). A watch resumes
/// from the last version it was told of, a bookmark's included, which may be far above any
/// object it has shown: after a restore that took the store's versions back, this is how the
/// watch says how far back they went (it never hears 410, and shows nothing).
fn resumed_beyond_the_store(error: &watcher::Error) -> Option<u64> {
    let status = status_of(error).filter(|status| status.code == 504)?;
    let (_, asked) = status.message.split_once("Too large resource version: ")?;
    let digits = asked
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(asked.len());
    asked[..digits].parse().ok()
}

/// Feeds the events of one watch (after its reflector, if any, has applied them) into the
/// index, readiness and the triggers; after each (re-)list, `everything` says what to wake.
pub fn feed<K: Watchable>(
    ctx: Arc<Context>,
    everything: impl Fn(&Context) -> Sweeps,
) -> impl FnMut(&Result<watcher::Event<K>, watcher::Error>) {
    let mut relisted: Option<Vec<K::Listed>> = None;
    move |event| {
        if let Ok(
            watcher::Event::Apply(obj)
            | watcher::Event::Delete(obj)
            | watcher::Event::InitApply(obj),
        ) = event
        {
            ctx.freshness.saw(
                K::KIND,
                obj.meta().resource_version.as_deref().unwrap_or_default(),
            );
        }
        if let Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) = event {
            ctx.freshness.resumed(K::KIND);
        }
        let wakes = match event {
            Ok(watcher::Event::Apply(obj)) => {
                ctx.readiness.event(K::KIND);
                let own = K::is_own_echo(&ctx, obj);
                let mut wakes = K::apply(&mut ctx.index_mut(), obj);
                if !own {
                    K::wake(&mut wakes, obj);
                }
                wakes
            }
            Ok(watcher::Event::Delete(obj)) => {
                ctx.readiness.event(K::KIND);
                K::forget(&ctx, obj);
                K::delete(&mut ctx.index_mut(), obj)
            }
            Ok(watcher::Event::Init) => {
                if ctx.freshness.list_starts(K::KIND) {
                    warn!(kind = ?K::KIND, "a watch lists again unasked; so does every other");
                    ctx.readiness.relisting(format!(
                        "the watch of {:?} had to list again (its version expired: was the \
                         store restored?): every watch lists again",
                        K::KIND
                    ));
                }
                // What this process wrote before the list is no guide to what the list shows
                // (after an etcd restore, versions may even repeat).
                K::forget_writes(&ctx);
                relisted = Some(Vec::new());
                Wakes::default()
            }
            Ok(watcher::Event::InitApply(obj)) => {
                let listed = K::listed(&mut ctx.index_mut(), obj);
                relisted.get_or_insert_default().push(listed);
                Wakes::default()
            }
            Ok(watcher::Event::InitDone) => {
                // What the list shows changed goes first; then everything, as a sweep.
                let changed = K::reset(&mut ctx.index_mut(), relisted.take().unwrap_or_default());
                ctx.freshness.listed(K::KIND);
                ctx.readiness.listed(K::KIND);
                ctx.triggers.sweep(everything(&ctx));
                changed
            }
            Err(error) => {
                warn!(kind = ?K::KIND, %error, "watch failed; retrying");
                ctx.readiness.watch_failed(K::KIND);
                ctx.freshness.watch_failed(K::KIND);
                if let Some(version) = resumed_beyond_the_store(error) {
                    // The watch had reached this version: the probes compare the store with it.
                    ctx.freshness.reached(K::KIND, version);
                }
                if expired(error) {
                    ctx.freshness.expired(K::KIND);
                    ctx.readiness.relisting(format!(
                        "the watch of {:?} expired (was the store restored?): every watch lists \
                         again",
                        K::KIND
                    ));
                }
                Wakes::default()
            }
        };
        ctx.triggers.wake(wakes);
    }
}
