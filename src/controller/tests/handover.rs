//! A hand-over: a new leader with a warm index and a backlog of receipts nobody wrote while no
//! replica led. It writes each stale receipt once, nothing that is up to date, and a change
//! made meanwhile goes before the rest of the backlog. With no customer to write, receipts use
//! every slot of the term; customers that change get their slots back first.

use std::{collections::BTreeMap, time::Duration};

use futures::FutureExt;
use http::Method;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::watcher;
use tokio::sync::oneshot;

use super::super::{
    CUSTOMER_SHARE, Context, ORDER_SHARE, caches, customer, feed,
    fixtures::{self, Exchange, written_customer, written_order},
    index::{CustomerKey, OrderKey},
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
            "/apis/reserve.coffeechain.io/v1/namespaces/{NS}/orders/"
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
    // The term's sweep fills every slot with a stale receipt's write, the customers' idle ones
    // too; they stay unanswered.
    let mut held = Vec::new();
    while held.len() < CUSTOMER_SHARE + ORDER_SHARE {
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

fn customer(name: &str, version: u64) -> Customer {
    let mut customer = Customer::new(name, CustomerSpec::default());
    customer.metadata.namespace = Some(NS.into());
    customer.metadata.uid = Some(format!("{name}-1"));
    customer.metadata.generation = Some(1);
    customer.metadata.resource_version = Some(version.to_string());
    customer
}

/// `customer` as the index holds it with the status the operator would write now.
fn up_to_date(ctx: &Context, mut customer: Customer) -> Customer {
    let key = CustomerKey::of_customer(&customer);
    let mut index = ctx.index_mut();
    index.apply_customer(&customer);
    let status =
        customer::desired_status(&key, Some(1), None, &index, &ctx.policy, Timestamp::now());
    customer.status = Some(status);
    index.apply_customer(&customer);
    customer
}

/// The next request, within a second (the reconciles send theirs at once).
async fn next(server: &mut fixtures::ApiServer) -> Exchange {
    tokio::time::timeout(Duration::from_secs(1), server.next())
        .await
        .expect("a request within a second")
}

#[tokio::test]
async fn receipts_borrow_the_idle_customer_slots_and_give_them_back_first() {
    let (client, mut server) = fixtures::mock_client();
    let ctx = fixtures::context(client);
    let (caches, _writers) = caches();
    // 100 receipts nobody wrote, and 40 customers whose statuses are up to date.
    {
        let mut index = ctx.index_mut();
        for i in 0..100 {
            index.apply_order(&order(i, OrderState::Requested, 10 + i as u64));
        }
    }
    let customers: Vec<Customer> = std::iter::once("alice".to_owned())
        .chain((1..40).map(|i| format!("c{i:02}")))
        .map(|name| up_to_date(&ctx, customer(&name, 1)))
        .collect();

    let (stop, stopped) = oneshot::channel::<()>();
    let term = tokio::spawn(lead(ctx.clone(), caches, None, stopped.map(drop)));
    let mut version = 1_000;
    // No customer waits: the receipts take every slot.
    let mut orders = Vec::new();
    while orders.len() < CUSTOMER_SHARE + ORDER_SHARE {
        let exchange = next(&mut server).await;
        assert!(
            order_write(&exchange),
            "{} {}",
            exchange.method,
            exchange.path
        );
        orders.push(exchange);
    }
    // Someone else writes every customer's status: each must be repaired.
    let mut feed_customers = feed::feed::<Customer>(ctx.clone(), |_| Sweeps::default());
    for (i, customer) in customers.iter().enumerate() {
        let mut forged = customer.clone();
        forged.metadata.resource_version = Some((2_000 + i).to_string());
        forged.status.as_mut().unwrap().score = 99;
        feed_customers(&Ok(watcher::Event::Apply(forged)));
    }
    // Each receipt that ends gives its slot to a customer, until the customers have their share.
    let mut repairs = Vec::new();
    while repairs.len() < CUSTOMER_SHARE {
        version += 1;
        let receipt = orders.pop().unwrap();
        let answer = written_order(&receipt, version);
        receipt.ok(answer);
        let exchange = next(&mut server).await;
        assert!(
            !order_write(&exchange),
            "a receipt took a slot while {} customers waited for theirs: {}",
            CUSTOMER_SHARE - repairs.len(),
            exchange.path
        );
        assert_eq!(exchange.body["status"]["score"], 0, "{}", exchange.path);
        repairs.push(exchange);
    }
    assert_eq!(orders.len(), ORDER_SHARE);
    // Receipts keep their own share, whatever waits.
    version += 1;
    let receipt = orders.pop().unwrap();
    let answer = written_order(&receipt, version);
    receipt.ok(answer);
    let exchange = next(&mut server).await;
    assert!(order_write(&exchange), "{}", exchange.path);
    orders.push(exchange);

    // The term ends; everything is answered until it has.
    stop.send(()).unwrap();
    let mut waiting = orders.into_iter().chain(repairs).collect::<Vec<_>>();
    let mut term = std::pin::pin!(term);
    loop {
        for exchange in waiting.drain(..) {
            version += 1;
            let answer = if order_write(&exchange) {
                written_order(&exchange, version)
            } else {
                written_customer(&exchange, version)
            };
            exchange.ok(answer);
        }
        tokio::select! {
            ended = &mut term => break ended.unwrap(),
            exchange = server.next() => waiting.push(exchange),
        }
    }
}
