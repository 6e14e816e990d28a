//! Settlement's delete of an absorbed order, request by request: preconditions on uid and
//! resourceVersion, a 404, a 409 that was only the status moving on, a 409 because the order
//! changed (given back), and a replica without a fresh Lease (nothing sent).

use std::{sync::Arc, time::Duration};

use http::{Method, StatusCode};
use serde_json::json;

use super::{Deleted, Settler};
use crate::{
    controller::{
        Context, caches,
        fixtures::{self, ApiServer},
        index::CustomerKey,
    },
    crd::{AbsorbedOrder, OrderState},
    leader::Fence,
};

const ORDER_PATH: &str = "/apis/reserve.coffeechain.io/v1/namespaces/shop/orders/o1";

fn settler(ctx: Arc<Context>) -> Arc<Settler> {
    Arc::new(Settler {
        ctx,
        caches: caches().0,
        after: Duration::from_secs(2),
        namespace: Some("shop".into()),
        fault: None,
        written: std::sync::Mutex::default(),
    })
}

fn absorbed() -> AbsorbedOrder {
    AbsorbedOrder {
        name: "o1".into(),
        uid: "uid-o1".into(),
        resource_version: "7".into(),
        state: OrderState::Completed,
        quantity: 3,
    }
}

/// The order as the API server has it: `state` at `version`.
fn stored(state: &str, version: &str) -> serde_json::Value {
    json!({
        "apiVersion": "reserve.coffeechain.io/v1", "kind": "Order",
        "metadata": { "name": "o1", "namespace": "shop", "uid": "uid-o1",
                      "resourceVersion": version },
        "spec": { "customer": "alice", "product": "Tea", "quantity": 3, "state": state },
    })
}

fn delete(settler: &Arc<Settler>) -> tokio::task::JoinHandle<Result<Deleted, super::SettleError>> {
    let settler = settler.clone();
    tokio::spawn(async move {
        let key = CustomerKey::new("shop", "alice");
        settler.delete(&key, &absorbed()).await
    })
}

/// What the delete came to; it must not wait on a request nobody answers.
async fn outcome(
    deleting: tokio::task::JoinHandle<Result<Deleted, super::SettleError>>,
) -> Result<Deleted, super::SettleError> {
    tokio::time::timeout(Duration::from_secs(5), deleting)
        .await
        .expect("the delete came to an end without another request")
        .unwrap()
}

/// The next request must be the order's DELETE, conditional on its uid and `version`.
async fn expect_delete(server: &mut ApiServer, version: &str) -> fixtures::Exchange {
    let exchange = server.next().await;
    assert_eq!(
        (exchange.method.clone(), exchange.path.as_str()),
        (Method::DELETE, ORDER_PATH)
    );
    assert_eq!(
        exchange.body["preconditions"],
        json!({ "uid": "uid-o1", "resourceVersion": version })
    );
    exchange
}

#[tokio::test]
async fn an_absorbed_order_is_deleted_only_as_it_was_absorbed() {
    let (client, mut server) = fixtures::mock_client();
    let settler = settler(fixtures::context(client));
    let deleting = delete(&settler);
    expect_delete(&mut server, "7")
        .await
        .ok(stored("Completed", "8"));
    assert_eq!(outcome(deleting).await.unwrap(), Deleted::Now);

    let deleting = delete(&settler);
    expect_delete(&mut server, "7")
        .await
        .fail(StatusCode::NOT_FOUND);
    assert_eq!(outcome(deleting).await.unwrap(), Deleted::Before);
}

#[tokio::test]
async fn a_conflict_is_looked_into_the_status_moving_on_is_retried_a_change_given_back() {
    let (client, mut server) = fixtures::mock_client();
    let settler = settler(fixtures::context(client));
    // Only the status moved on: deleted on the version read.
    let deleting = delete(&settler);
    expect_delete(&mut server, "7")
        .await
        .fail(StatusCode::CONFLICT);
    let read = server.next().await;
    assert_eq!(
        (read.method.clone(), read.path.as_str()),
        (Method::GET, ORDER_PATH)
    );
    read.ok(stored("Completed", "9"));
    expect_delete(&mut server, "9")
        .await
        .ok(stored("Completed", "10"));
    assert_eq!(outcome(deleting).await.unwrap(), Deleted::Now);

    // Refunded since it was absorbed: not deleted, given back.
    let deleting = delete(&settler);
    expect_delete(&mut server, "7")
        .await
        .fail(StatusCode::CONFLICT);
    server.next().await.ok(stored("Canceled", "11"));
    assert_eq!(outcome(deleting).await.unwrap(), Deleted::Changed);
    assert!(server.idle(), "a changed order is never deleted");
}

#[tokio::test]
async fn a_replica_without_a_fresh_lease_deletes_nothing() {
    let (client, mut server) = fixtures::mock_client();
    let settler = settler(fixtures::context_fenced(client, Fence::closed()));
    let failed = outcome(delete(&settler)).await;
    assert!(failed.is_err(), "{failed:?}");
    assert!(server.idle());
}
