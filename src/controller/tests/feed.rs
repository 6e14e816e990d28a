//! The feed: watch events pushed in one by one, and what each wakes, in which lane.

use std::sync::Arc;

use kube::runtime::{reflector::ObjectRef, watcher};
use tokio::sync::mpsc::UnboundedReceiver;

use super::super::{
    Context, feed,
    fixtures::{self, written_order},
    index::OrderKey,
    queue::{Lane, Wake},
    readiness::Watched,
    triggers::Sweeps,
    watches,
};
use crate::crd::{Customer, CustomerSpec, Order, OrderSpec, OrderState, OrderStatus};

fn alice() -> Customer {
    let mut alice = Customer::new("alice", CustomerSpec::default());
    alice.metadata.namespace = Some("shop".into());
    alice.metadata.resource_version = Some("1".into());
    alice
}

fn order(name: &str, state: OrderState, version: &str) -> Order {
    let mut order = Order::new(
        name,
        OrderSpec {
            customer: "alice".into(),
            product: "Tea".into(),
            quantity: 2,
            state,
        },
    );
    order.metadata.namespace = Some("shop".into());
    order.metadata.uid = Some(format!("uid-{name}"));
    order.metadata.resource_version = Some(version.into());
    order
}

/// What a queue was told: each key with its lane (a sweep's keys drawn to the end).
fn drain<T>(queue: &mut UnboundedReceiver<Wake<T>>) -> Vec<(T, Lane)> {
    std::iter::from_fn(|| queue.try_recv().ok())
        .flat_map(|wake| -> Vec<(T, Lane)> {
            match wake {
                Wake::Changed(key) => vec![(key, Lane::Change)],
                Wake::Sweep(keys) => keys.map(|key| (key, Lane::Sweep)).collect(),
            }
        })
        .collect()
}

fn key(name: &str) -> OrderKey {
    OrderKey::of_order(&order(name, OrderState::Requested, "1"))
}

fn alice_ref() -> ObjectRef<Customer> {
    ObjectRef::from_obj(&alice())
}

type WatchEvent = Result<watcher::Event<Order>, watcher::Error>;

/// A context whose index holds alice, and an order feed into it.
fn setup() -> (Arc<Context>, impl FnMut(&WatchEvent), fixtures::ApiServer) {
    let (client, server) = fixtures::mock_client();
    let ctx = fixtures::context(client);
    ctx.index_mut().apply_customer(&alice());
    let feed = feed::feed::<Order>(ctx.clone(), |ctx| Sweeps {
        orders: Some(watches::every_order(ctx)),
        ..Sweeps::default()
    });
    (ctx, feed, server)
}

#[tokio::test]
async fn someone_elses_change_wakes_the_object_and_the_customer_it_counts_for() {
    let (ctx, mut feed, _server) = setup();
    let mut queues = ctx.triggers.open();
    feed(&Ok(watcher::Event::Apply(order(
        "a",
        OrderState::Completed,
        "5",
    ))));
    assert_eq!(drain(&mut queues.orders), [(key("a"), Lane::Change)]);
    assert_eq!(drain(&mut queues.customers), [(alice_ref(), Lane::Change)]);
    // A change that does not change the customer's tally wakes only the order.
    let mut relabelled = order("a", OrderState::Completed, "6");
    relabelled.metadata.generation = Some(2);
    feed(&Ok(watcher::Event::Apply(relabelled)));
    assert_eq!(drain(&mut queues.orders), [(key("a"), Lane::Change)]);
    assert_eq!(drain(&mut queues.customers), []);
}

#[tokio::test]
async fn the_echo_of_the_operators_own_write_wakes_nothing_and_a_later_change_does() {
    let (ctx, mut feed, mut server) = setup();
    let mut queues = ctx.triggers.open();
    let requested = order("a", OrderState::Requested, "5");
    feed(&Ok(watcher::Event::Apply(requested.clone())));
    drain(&mut queues.orders);
    drain(&mut queues.customers);
    // The operator writes a receipt: version 5 becomes 6.
    let receipt = OrderStatus {
        phase: Some(OrderState::Requested),
        ..OrderStatus::default()
    };
    let writing = {
        let (ctx, receipt) = (ctx.clone(), receipt.clone());
        let key = ObjectRef::from_obj(&requested);
        tokio::spawn(async move { ctx.orders.writer.write(&key, "5", &receipt).await })
    };
    let write = server.next().await;
    let body = written_order(&write, 6);
    write.ok(body);
    writing.await.unwrap().expect("written");
    let mut echo = order("a", OrderState::Requested, "6");
    echo.status = Some(receipt.clone());
    feed(&Ok(watcher::Event::Apply(echo)));
    assert_eq!(drain(&mut queues.orders), [], "its own write is no news");
    // Someone else writes the status: that is news, and gets repaired.
    let mut forged = order("a", OrderState::Requested, "7");
    forged.status = Some(OrderStatus {
        phase: Some(OrderState::Completed),
        ..receipt
    });
    feed(&Ok(watcher::Event::Apply(forged)));
    assert_eq!(drain(&mut queues.orders), [(key("a"), Lane::Change)]);
}

#[tokio::test]
async fn a_relist_wakes_what_changed_first_and_sweeps_the_rest() {
    let (ctx, mut feed, _server) = setup();
    feed(&Ok(watcher::Event::Apply(order(
        "a",
        OrderState::Requested,
        "5",
    ))));
    feed(&Ok(watcher::Event::Apply(order(
        "b",
        OrderState::Requested,
        "6",
    ))));
    let mut queues = ctx.triggers.open();
    // The list shows "a" completed meanwhile and "b" as it was.
    feed(&Ok(watcher::Event::Init));
    feed(&Ok(watcher::Event::InitApply(order(
        "a",
        OrderState::Completed,
        "9",
    ))));
    feed(&Ok(watcher::Event::InitApply(order(
        "b",
        OrderState::Requested,
        "6",
    ))));
    assert_eq!(
        drain(&mut queues.orders),
        [],
        "nothing before the list is whole"
    );
    feed(&Ok(watcher::Event::InitDone));
    let mut swept: Vec<_> = drain(&mut queues.orders);
    swept.sort_by(|x, y| x.0.name.cmp(&y.0.name));
    assert_eq!(swept, [(key("a"), Lane::Sweep), (key("b"), Lane::Sweep)]);
    assert_eq!(
        drain(&mut queues.customers),
        [(alice_ref(), Lane::Change)],
        "the customer whose tally the list changed, first"
    );
}

#[tokio::test]
async fn a_deleted_object_is_forgotten_whole() {
    let (ctx, _feed, _server) = setup();
    let mut feed_customers = feed::feed::<Customer>(ctx.clone(), |_| Sweeps::default());
    let key = alice_ref();
    let first = ctx.customers.failed(&key);
    feed_customers(&Ok(watcher::Event::Delete(alice())));
    // A customer of the same name, later: its backoff starts again.
    let again = ctx.customers.failed(&key);
    assert!(
        first.as_millis() < 320 && again.as_millis() < 320,
        "{first:?}, then {again:?}: the deleted customer's failures were kept"
    );
}

/// The answer kube-apiserver gives a watch that resumes beyond its store's version.
fn too_large(asked: u64, current: u64) -> kube::core::Status {
    serde_json::from_value(serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 504,
        "reason": "Timeout",
        "message": format!("Timeout: Too large resource version: {asked}, current: {current}"),
        "details": { "causes": [{ "reason": "ResourceVersionTooLarge",
                                  "message": "Too large resource version" }],
                     "retryAfterSeconds": 1 },
    }))
    .expect("a Status")
}

#[tokio::test]
async fn a_watch_resumed_beyond_the_store_tells_how_far_the_store_went_back() {
    let (ctx, mut feed, _server) = setup();
    feed(&Ok(watcher::Event::Apply(order(
        "a",
        OrderState::Requested,
        "1850",
    ))));
    assert_eq!(ctx.freshness.seen(Watched::Orders), 1850);
    // The watch resumes from 3861 (a bookmark told it), which the store no longer reaches:
    // in a stream, or when it starts.
    feed(&Err(watcher::Error::WatchError(Box::new(too_large(
        3861, 1907,
    )))));
    assert_eq!(ctx.freshness.seen(Watched::Orders), 3861);
    feed(&Err(watcher::Error::WatchStartFailed(kube::Error::Api(
        Box::new(too_large(3900, 1907)),
    ))));
    assert_eq!(ctx.freshness.seen(Watched::Orders), 3900);
    // The store, now at 1950, is behind what the watch reached: every watch lists again.
    let seen = ctx.freshness.seen(Watched::Orders);
    assert_eq!(
        ctx.freshness.check(Watched::Orders, "1950", seen),
        Some(3900)
    );
    assert!(!ctx.freshness.consistent());
    // Any other failure says nothing of the store's versions.
    let (ctx, mut feed, _server) = setup();
    feed(&Ok(watcher::Event::Apply(order(
        "a",
        OrderState::Requested,
        "1850",
    ))));
    let mut gone = too_large(3861, 1907);
    gone.code = 503;
    feed(&Err(watcher::Error::WatchError(Box::new(gone))));
    assert_eq!(ctx.freshness.seen(Watched::Orders), 1850);
}
