//! One term of leadership, and the one reconcile pipeline every kind runs on.
//!
//! A term opens a [`queue`] per kind, sweeps every object once (then every [`RESYNC`]), and
//! reconciles whatever the watches wake. Every reconcile has one shape: it returns an
//! [`Outcome`], when to look at the object again if it must, or why it failed. What a failure
//! means (its retry, with the object's backoff; its metric, log line and readiness signal, by
//! [`ErrorKind`](super::error::ErrorKind)) is decided in one place, [`settle`].

use std::{future::Future, sync::Arc, time::Duration};

use futures::{FutureExt, future};
use kube::{Resource, runtime::reflector::ObjectRef};
use tracing::{Instrument, info, info_span};

use super::{
    context::{Context, Kind},
    customer,
    error::Outcome,
    index::CustomerKey,
    order, queue, settlement,
    slots::Slots,
    triggers::Sweeps,
    watches::{self, Caches},
};

/// Every object is looked at again this often, as a backstop: changes made by anyone else wake
/// a reconcile at once. One sweep per term, not one timer per object, so memory does not grow
/// with a scheduled entry for every object.
pub const RESYNC: Duration = Duration::from_secs(600);

/// The customers' share of a term's reconcile slots ([`slots`]): a customer's status is what
/// users read, and past the API server's limit each reconcile waits longer for its write's
/// answer, so customers need the slots to keep up.
pub const CUSTOMER_SHARE: usize = 32;

/// The orders' share: a quarter of the customers'. Past the API server's limit every request in
/// flight there slows the watches that tell the operator (and users) what changed (with 64
/// receipts in flight, a watch showed a user's write seconds late and customers followed:
/// docs/architecture.md, "Requests in flight"), so receipts yield to customers. The shares are
/// a priority, not a ceiling: a kind with nothing waiting lends its slots to the other.
pub const ORDER_SHARE: usize = 8;

/// Runs one reconcile of `key` (in a span naming it) and turns its outcome into when to run it
/// again: a success clears the key's backoff; a failure is reported and retried after what its
/// kind asks.
async fn settle<K: Resource<DynamicType = ()>, S>(
    ctx: &Context,
    kind: &Kind<K, S>,
    key: &ObjectRef<K>,
    reconcile: impl Future<Output = Outcome>,
) -> Option<Duration> {
    let controller = kind.controller;
    let span = info_span!(
        "reconcile",
        controller,
        namespace = key.namespace.as_deref().unwrap_or_default(),
        name = %key.name
    );
    let _timer = ctx.metrics.reconcile(controller);
    let outcome = reconcile.instrument(span.clone()).await;
    let _entered = span.enter();
    match outcome {
        Ok(again) => {
            kind.succeeded(key);
            again
        }
        Err(error) => {
            ctx.report_failure(controller, &error);
            Some(error.retry_after(|| kind.failed(key)))
        }
    }
}

/// One term of leadership: reconciles every object once, then what the watches wake, until
/// `stop` resolves; in-flight reconciles finish first.
pub async fn lead(
    ctx: Arc<Context>,
    caches: Caches,
    settle_after: Option<(Duration, Option<String>)>,
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
    let queues = ctx.triggers.open();
    // Everything at the start of the term, then every RESYNC.
    let sweep = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(RESYNC);
            loop {
                every.tick().await;
                ctx.triggers.sweep(Sweeps {
                    customers: Some(watches::every_customer(&ctx)),
                    orders: Some(watches::every_order(&ctx)),
                });
            }
        })
    };
    let settlement = settle_after.map(|(after, namespace)| {
        tokio::spawn(settlement::run(
            ctx.clone(),
            caches.clone(),
            after,
            namespace,
        ))
    });
    info!("reconciling");

    let slots = Slots::new(&[CUSTOMER_SHARE, ORDER_SHARE]);
    let (customers_backlog, orders_backlog) =
        (ctx.customers.backlog.clone(), ctx.orders.backlog.clone());
    let customers = queue::run(
        queues.customers,
        stop.clone(),
        slots.share(0),
        customers_backlog,
        |object| {
            let ctx = ctx.clone();
            async move {
                let key = CustomerKey::of_ref(&object);
                let kind = &ctx.customers;
                settle(&ctx, kind, &object, customer::reconcile(&key, &ctx)).await
            }
        },
    );
    let orders = queue::run(queues.orders, stop, slots.share(1), orders_backlog, |key| {
        let ctx = ctx.clone();
        async move {
            let object = key.object_ref();
            settle(&ctx, &ctx.orders, &object, order::reconcile(&key, &ctx)).await
        }
    });
    future::join(customers, orders).await;
    sweep.abort();
    if let Some(settlement) = settlement {
        settlement.abort();
    }
    ctx.triggers.close();
    info!("stopped reconciling");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::{error::Error, fixtures};

    fn between(delay: Option<Duration>, low: u64, high: u64) -> bool {
        delay.is_some_and(|d| d >= Duration::from_millis(low) && d < Duration::from_millis(high))
    }

    #[tokio::test]
    async fn a_failure_backs_off_a_success_resets_and_a_withheld_write_comes_back_soon() {
        let (client, _server) = fixtures::mock_client();
        let ctx = fixtures::context(client);
        let kind = &ctx.customers;
        let key = ObjectRef::new("alice").within("shop");
        let failing = || async {
            Err(Error::NoNamespace {
                kind: "Customer".into(),
                name: "alice".into(),
            })
        };
        let first = settle(&ctx, kind, &key, failing()).await;
        let second = settle(&ctx, kind, &key, failing()).await;
        assert!(between(first, 187, 313), "{first:?}");
        assert!(between(second, 375, 625), "{second:?}");
        // Withheld (no fresh Lease): soon, and not counted as a failure.
        let withheld = settle(&ctx, kind, &key, async { Err(Error::NotLeading("test")) }).await;
        assert_eq!(withheld, Some(Duration::from_millis(500)));
        let third = settle(&ctx, kind, &key, failing()).await;
        assert!(between(third, 750, 1250), "{third:?}");
        // A success: the wait it asks for, and the next failure starts from the first delay.
        let wait = Some(Duration::from_secs(3));
        assert_eq!(
            settle(&ctx, kind, &key, async move { Ok(wait) }).await,
            wait
        );
        let after = settle(&ctx, kind, &key, failing()).await;
        assert!(between(after, 187, 313), "{after:?}");
        assert_eq!(
            ctx.metrics
                .reconcile_errors(kind.controller, "no_namespace"),
            4,
            "every failure counted by its kind"
        );
    }
}
