//! A hand-over: a new leader with a warm index and a backlog of receipts nobody wrote while no
//! replica led. It writes each stale receipt once, nothing that is up to date, and a change
//! made meanwhile goes before the rest of the backlog.

use std::collections::BTreeMap;

use futures::FutureExt;
use http::Method;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::watcher;
use tokio::sync::oneshot;

use super::super::{
    ORDER_CONCURRENCY, caches, feed,
    fixtures::{self, Exchange, written_customer, written_order},
    index::OrderKey,
    lead, order,
    triggers::Sweeps,
};
use crate::crd::{Customer, CustomerSpec, Order, OrderSpec, OrderState};

const NS: &str = "shop";

fn order(i: usize, state: OrderState, version: u64) -> Order {
    let mut order = Order::new(
        &format!("ord-{i:03}"),
        OrderSpec {
            customer: "alice".into(),
            product: "Tea".into(),
            quantity: 1,
            state,
        },
    );
    order.metadata.namespace = Some(NS.into());
    order.metadata.uid = Some(format!("uid-{i}"));
    order.metadata.generation = Some(1);
    order.metadata.resource_version = Some(version.to_string());
    order
}

/// Whether `exchange` is the status write of an Order.
fn order_write(exchange: &Exchange) -> bool {
    exchange.method == Method::PATCH
        && exchange.path.starts_with(&format!(
            "/apis/reserve.coffeechain.io/v1alpha1/namespaces/{NS}/orders/"
        ))
        && exchange.path.ends_with("/status")
}

/// Answers what is not an Order's status write (the customer's, an Event) at once; returns
/// the next Order status write.
async fn next_order_write(server: &mut fixtures::ApiServer, version: &mut u64) -> Exchange {
    loop {
        let exchange = server.next().await;
        if order_write(&exchange) {
            return exchange;
        }
        *version += 1;
        let answer = match exchange.method {
            Method::POST => exchange.body.clone(),
            _ => written_customer(&exchange, *version),
        };
        exchange.ok(answer);
    }
}

#[tokio::test]
async fn a_new_leader_writes_each_stale_receipt_once_and_a_change_first() {
    let (client, mut server) = fixtures::mock_client();
    let ctx = fixtures::context(client);
    let (caches, _writers) = caches();
    let mut alice = Customer::new("alice", CustomerSpec::default());
    alice.metadata.namespace = Some(NS.into());
    alice.metadata.uid = Some("alice-1".into());
    alice.metadata.resource_version = Some("1".into());
    // 150 orders while nobody led: 100 have no receipt; 50 (Completed) have the one the
    // operator would write.
    let (stale, current) = (100, 50);
    {
        let mut index = ctx.index_mut();
        index.apply_customer(&alice);
        for i in 0..stale + current {
            let state = if i < stale {
                OrderState::Requested
            } else {
                OrderState::Completed
            };
            index.apply_order(&order(i, state, 10 + i as u64));
        }
        for i in stale..stale + current {
            let mut written = order(i, OrderState::Completed, 10 + i as u64);
            let key = OrderKey::of_order(&written);
            let facts = index.order(&key).unwrap();
            let status =
                order::desired_status(&key, facts, None, &index, &ctx.policy, Timestamp::now());
            written.status = Some(status);
            index.apply_order(&written);
        }
    }

    let (stop, stopped) = oneshot::channel::<()>();
    let term = tokio::spawn(lead(ctx.clone(), caches, None, stopped.map(drop)));
    let mut version = 1_000;
    // The term's sweep fills every slot with a stale receipt's write; they stay unanswered.
    let mut held = Vec::new();
    while held.len() < ORDER_CONCURRENCY {
        held.push(next_order_write(&mut server, &mut version).await);
    }
    // Meanwhile a customer refunds an order whose receipt was up to date.
    let refunded = order(stale + 7, OrderState::Canceled, 5_000);
    let mut feed_orders = feed::feed::<Order>(ctx.clone(), |_| Sweeps::default());
    feed_orders(&Ok(watcher::Event::Apply(refunded)));
    // One slot frees: the refund goes first, before the stale receipts still waiting.
    let first = held.remove(0);
    let first_written = (
        first.name().to_owned(),
        first.body["metadata"]["resourceVersion"].clone(),
    );
    version += 1;
    let answer = written_order(&first, version);
    first.ok(answer);
    let next = next_order_write(&mut server, &mut version).await;
    assert_eq!(
        next.name(),
        "ord-107",
        "the refund waited behind the backlog"
    );
    assert_eq!(next.body["status"]["phase"], "Canceled");
    assert_eq!(next.body["metadata"]["resourceVersion"], "5000");
    held.push(next);

    // The rest: every stale receipt exactly once, conditional on the version it was computed
    // from, and nothing for the receipts that were up to date.
    let mut writes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    writes.insert(
        first_written.0,
        vec![first_written.1.as_str().unwrap_or_default().to_owned()],
    );
    let mut record = |exchange: &Exchange| {
        writes.entry(exchange.name().to_owned()).or_default().push(
            exchange.body["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    };
    for exchange in &held {
        record(exchange);
    }
    let mut answered = 1;
    while answered < stale + 1 {
        let exchange = match held.pop() {
            Some(exchange) => exchange,
            None => {
                let exchange = next_order_write(&mut server, &mut version).await;
                record(&exchange);
                exchange
            }
        };
        version += 1;
        let answer = written_order(&exchange, version);
        exchange.ok(answer);
        answered += 1;
    }
    // The term ends; whatever else it sends until then is answered (and counted).
    stop.send(()).unwrap();
    let mut term = std::pin::pin!(term);
    loop {
        tokio::select! {
            ended = &mut term => break ended.unwrap(),
            exchange = next_order_write(&mut server, &mut version) => {
                record(&exchange);
                version += 1;
                let answer = written_order(&exchange, version);
                exchange.ok(answer);
            }
        }
    }

    let mut expected: BTreeMap<String, Vec<String>> = (0..stale)
        .map(|i| (format!("ord-{i:03}"), vec![(10 + i).to_string()]))
        .collect();
    expected.insert("ord-107".into(), vec!["5000".into()]);
    assert_eq!(writes, expected);
}
