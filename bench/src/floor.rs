//! The API server's floor: the time it needs to accept exactly the final statuses, sent by the
//! bench itself with the operator's kind of write (one JSON merge patch of the status
//! subresource per order and per customer, field validation left to the schema), with the
//! operator stopped.
//! The statuses are the ones the operator's own decisions give for the final orders.

use std::time::Instant;

use futures::{StreamExt, stream};
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Client,
    api::{Patch, PatchParams, ValidationDirective},
};
use reserve_operator::{
    controller::{
        customer,
        index::{CustomerKey, Index, OrderKey},
        order,
    },
    crd::{Customer, Order},
    loyalty::LevelPolicy,
};
use reserve_testkit::{
    fixtures,
    shop::fresh_namespace,
    workload::{Driver, Plan, retry},
};
use serde_json::json;

use crate::{context::say, figures::Floor};

const FIELD_MANAGER: &str = "reserve-bench-floor";

/// Creates the plan's customers and orders (already in their final state) in a fresh namespace
/// as `client`, untimed, then times the final statuses' writes at `concurrency` as `writer`
/// (the operator's identity).
pub async fn measure(
    client: &Client,
    writer: &Client,
    plan: &Plan,
    concurrency: usize,
    converge_lag: f64,
) -> Result<Floor, String> {
    let ns = fresh_namespace(client, "bench-floor").await;
    let driver = Driver::new(client, &ns, concurrency);
    driver.create_customers(plan).await?;
    driver
        .create_orders(&plan.orders, |o| o.fate.final_state())
        .await?;

    // The operator's decisions, on an index of the final orders and customers.
    let policy = LevelPolicy::default();
    let now = Timestamp::now();
    let mut index = Index::default();
    let orders: Vec<Order> = plan
        .orders
        .iter()
        .map(|o| {
            let mut order = o.object(o.fate.final_state());
            order.metadata.namespace = Some(ns.clone());
            order.metadata.uid = Some(o.name.clone());
            order.metadata.generation = Some(1);
            index.apply_order(&order);
            order
        })
        .collect();
    let customers: Vec<Customer> = plan
        .customers
        .iter()
        .map(|name| {
            let mut customer = fixtures::customer(name);
            customer.metadata.namespace = Some(ns.clone());
            customer.metadata.uid = Some(name.clone());
            customer.metadata.generation = Some(1);
            index.apply_customer(&customer);
            customer
        })
        .collect();
    let mut patches: Vec<(bool, String, serde_json::Value)> = Vec::new();
    for o in &orders {
        let key = OrderKey::of_order(o);
        let facts = index.order(&key).ok_or("an order missing from the index")?;
        let status = order::desired_status(&key, facts, None, &index, &policy, now);
        patches.push((true, name(o), json!({ "status": status })));
    }
    for c in &customers {
        let key = CustomerKey::new(ns.as_str(), name(c));
        let status = customer::desired_status(&key, Some(1), None, &index, &policy, now);
        patches.push((false, name(c), json!({ "status": status })));
    }

    let order_api: Api<Order> = Api::namespaced(writer.clone(), &ns);
    let customer_api: Api<Customer> = Api::namespaced(writer.clone(), &ns);
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        field_validation: Some(ValidationDirective::Ignore),
        ..PatchParams::default()
    };
    let count = patches.len();
    let started = Instant::now();
    let mut writes = stream::iter(patches.into_iter().map(|(is_order, name, patch)| {
        let (order_api, customer_api, params) = (&order_api, &customer_api, &params);
        async move {
            let patch = Patch::Merge(patch);
            let what = format!("floor: status of {name}");
            if is_order {
                retry(&what, || order_api.patch_status(&name, params, &patch))
                    .await
                    .map(drop)
            } else {
                retry(&what, || customer_api.patch_status(&name, params, &patch))
                    .await
                    .map(drop)
            }
        }
    }))
    .buffer_unordered(concurrency);
    while let Some(result) = writes.next().await {
        result?;
    }
    let seconds = started.elapsed().as_secs_f64();
    say(format!(
        "  floor: {count} status writes in {seconds:.2}s ({:.0}/s)",
        count as f64 / seconds
    ));
    Ok(Floor {
        namespace: ns,
        status_writes: count,
        seconds,
        writes_per_second: count as f64 / seconds,
        converge_lag_over_floor: converge_lag / seconds,
    })
}

fn name<K: kube::Resource>(obj: &K) -> String {
    obj.meta().name.clone().unwrap_or_default()
}
