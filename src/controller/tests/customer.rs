//! One customer's reconcile, request by request: what it writes (and on what precondition),
//! the Event of a level change, what it sends when nothing changed (nothing), a conflict, a
//! fenced-off leader, a busy customer's pace and a restored customer's hold.

use std::{sync::Arc, time::Duration};

use http::{Method, StatusCode};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use serde_json::json;

use super::super::{
    Context, customer,
    error::{ErrorKind, Outcome},
    fixtures::{self, ApiServer, Exchange, written_customer},
    index::CustomerKey,
    restore,
};
use crate::{
    crd::{Customer, CustomerSpec, Order, OrderSpec, OrderState},
    leader::Fence,
};

const STATUS_PATH: &str = "/apis/reserve.coffeechain.io/v1/namespaces/shop/customers/alice/status";

/// Alice as cached at `version`, with the status the operator writes for no orders (Bronze).
fn alice(ctx: &Context, version: &str) -> Arc<Customer> {
    let mut alice = Customer::new("alice", CustomerSpec::default());
    alice.metadata.namespace = Some("shop".into());
    alice.metadata.uid = Some("alice-1".into());
    alice.metadata.generation = Some(1);
    alice.metadata.resource_version = Some(version.into());
    ctx.index_mut().apply_customer(&alice);
    let key = CustomerKey::of_customer(&alice);
    let bronze = customer::desired_status(
        &key,
        Some(1),
        None,
        &ctx.index(),
        &ctx.policy,
        Timestamp::now(),
    );
    alice.status = Some(bronze);
    Arc::new(alice)
}

/// A completed order of alice's for `quantity` points.
fn completed(ctx: &Context, name: &str, quantity: i32) {
    let mut order = Order::new(
        name,
        OrderSpec {
            customer: "alice".into(),
            product: "Mocha".into(),
            quantity,
            state: OrderState::Completed,
        },
    );
    order.metadata.namespace = Some("shop".into());
    order.metadata.uid = Some(format!("uid-{name}"));
    order.metadata.resource_version = Some("1".into());
    ctx.index_mut().apply_order(&order);
}

/// Reconciles alice as the watch last showed her: `alice`.
fn reconcile(ctx: &Arc<Context>, alice: &Customer) -> tokio::task::JoinHandle<Outcome> {
    ctx.index_mut().apply_customer(alice);
    let (ctx, key) = (ctx.clone(), CustomerKey::of_customer(alice));
    tokio::spawn(async move { customer::reconcile(&key, &ctx).await })
}

/// The next request, which must be alice's status write conditional on `version`.
async fn status_write(server: &mut ApiServer, version: &str) -> Exchange {
    let write = server.next().await;
    assert_eq!(
        (write.method.clone(), write.path.as_str()),
        (Method::PATCH, STATUS_PATH)
    );
    assert_eq!(write.content_type, "application/json-patch+json");
    assert!(
        write.query.contains("fieldManager=reserve-operator")
            && write.query.contains("fieldValidation=Ignore"),
        "a JSON patch as the operator: {}",
        write.query
    );
    assert_eq!(
        write.body["metadata"]["resourceVersion"], version,
        "conditional on the version it was computed from"
    );
    write
}

#[tokio::test]
async fn a_changed_score_is_written_once_and_its_level_change_recorded() {
    let (client, mut server) = fixtures::mock_client();
    let ctx = fixtures::context(client);
    let cached = alice(&ctx, "7");
    completed(&ctx, "a", 4);
    completed(&ctx, "b", 3);
    let run = reconcile(&ctx, &cached);

    let write = status_write(&mut server, "7").await;
    assert_eq!(
        (
            &write.body["status"]["score"],
            &write.body["status"]["level"]
        ),
        (&json!(7), &json!("Silver"))
    );
    assert_eq!(write.body["status"]["completedOrders"], 2);
    let body = written_customer(&write, 8);
    write.ok(body);
    let event = server.next().await;
    assert_eq!(
        (event.method.clone(), event.path.as_str()),
        (
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/shop/events"
        )
    );
    assert_eq!(
        (
            &event.body["reason"],
            &event.body["action"],
            &event.body["type"],
            &event.body["regarding"]["name"],
            &event.body["regarding"]["uid"],
        ),
        (
            &json!("LevelChanged"),
            &json!("BronzeToSilver"),
            &json!("Normal"),
            &json!("alice"),
            &json!("alice-1")
        )
    );
    let body = event.body.clone();
    event.ok(body);
    assert_eq!(
        run.await.unwrap().unwrap(),
        None,
        "done until something changes"
    );

    // The watch has not shown the write yet: what was written counts, so nothing is sent again.
    let again = reconcile(&ctx, &cached).await.unwrap();
    assert_eq!(again.unwrap(), None);
    assert!(server.idle(), "an unchanged status is never written");
}

#[tokio::test]
async fn an_up_to_date_customer_sends_nothing() {
    let (client, mut server) = fixtures::mock_client();
    let ctx = fixtures::context(client);
    let cached = alice(&ctx, "3");
    assert_eq!(reconcile(&ctx, &cached).await.unwrap().unwrap(), None);
    assert!(server.idle());
}

#[tokio::test]
async fn a_conflict_fails_and_the_next_reconcile_starts_from_the_cache() {
    let (client, mut server) = fixtures::mock_client();
    let ctx = fixtures::context(client);
    let cached = alice(&ctx, "7");
    completed(&ctx, "a", 12);
    let run = reconcile(&ctx, &cached);
    status_write(&mut server, "7")
        .await
        .fail(StatusCode::CONFLICT);
    let error = run.await.unwrap().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Conflict);
    assert!(server.idle(), "no Event for a change that was not written");
    // The next reconcile (from a newer cache) is conditional on that version.
    let newer = {
        let mut newer = (*cached).clone();
        newer.metadata.resource_version = Some("9".into());
        Arc::new(newer)
    };
    let run = reconcile(&ctx, &newer);
    let write = status_write(&mut server, "9").await;
    assert_eq!(write.body["status"]["level"], "Gold");
    let body = written_customer(&write, 10);
    write.ok(body);
    let event = server.next().await;
    assert_eq!(event.body["action"], "BronzeToGold");
    let body = event.body.clone();
    event.ok(body);
    assert_eq!(run.await.unwrap().unwrap(), None);
}

#[tokio::test]
async fn a_replica_without_a_fresh_lease_sends_nothing() {
    let (client, mut server) = fixtures::mock_client();
    let ctx = fixtures::context_fenced(client, Fence::closed());
    let cached = alice(&ctx, "7");
    completed(&ctx, "a", 12);
    let error = reconcile(&ctx, &cached).await.unwrap().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::NotLeading);
    assert!(server.idle(), "a fenced-off leader writes nothing");
}

#[tokio::test]
async fn a_busy_customer_spends_its_burst_then_waits_for_its_pace() {
    let (client, mut server) = fixtures::mock_client();
    let ctx = fixtures::context(client);
    let mut cached = alice(&ctx, "1");
    // Three changes in a row are written at once, each on top of the last.
    for (i, version) in ["1", "2", "3"].into_iter().enumerate() {
        completed(&ctx, &format!("o{i}"), 1);
        let run = reconcile(&ctx, &cached);
        let write = status_write(&mut server, version).await;
        assert_eq!(write.body["status"]["score"], i + 1);
        let body = written_customer(&write, version.parse::<u64>().unwrap() + 1);
        write.ok(body.clone());
        assert_eq!(run.await.unwrap().unwrap(), None);
        // The watch shows the write.
        cached = Arc::new(serde_json::from_value(body).unwrap());
    }
    // The fourth waits for a token: the changes until then fold into one write.
    completed(&ctx, "o3", 1);
    let wait = reconcile(&ctx, &cached).await.unwrap().unwrap();
    let wait = wait.expect("asked to run again");
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_millis(334),
        "{wait:?}"
    );
    assert!(server.idle(), "nothing written while paced");
}

#[tokio::test]
async fn a_restored_customers_score_is_not_lowered_during_the_restore() {
    let (client, mut server) = fixtures::mock_client();
    let ctx = fixtures::context(client);
    completed(&ctx, "a", 12);
    let gold = alice(&ctx, "1");
    // Restored moments ago with its Gold status; its orders are not back yet.
    let mut restored = (*gold).clone();
    restored.metadata.resource_version = Some("20".into());
    restored.metadata.labels = Some([(restore::RESTORE_LABEL.into(), "r1".into())].into());
    restored.metadata.creation_timestamp = Some(Time(Timestamp::now()));
    let emptied = ctx.index_mut().delete_order(&{
        let mut order = Order::new(
            "a",
            OrderSpec {
                customer: "alice".into(),
                product: "Mocha".into(),
                quantity: 12,
                state: OrderState::Completed,
            },
        );
        order.metadata.namespace = Some("shop".into());
        order
    });
    assert!(emptied.is_some(), "the order was counted");
    let wait = reconcile(&ctx, &restored).await.unwrap().unwrap();
    let wait = wait.expect("looked at again once the hold is over");
    assert!(wait > restore::GRACE - Duration::from_secs(5), "{wait:?}");
    assert!(
        server.idle(),
        "a lower score waits for the rest of the restore"
    );
}
