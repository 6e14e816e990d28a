//! The controllers against a real API server, running in this process (as kubebuilder's envtest
//! does): countScore and checkLevel, level-triggered and exact. Each test has its own namespace
//! and its own operator, acting as its own ServiceAccount identity with the shipped RBAC.

use std::time::Duration;

use futures::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};
use reserve_operator::{
    crd::{
        CUSTOMER_FOUND, Customer,
        OrderState::{Canceled, Completed, Requested},
        READY,
    },
    loyalty::LevelPolicy,
};
use reserve_testkit::{ControlPlane, FAIL_AFTER as WAIT, Shop, eventually};

fn condition<'a>(
    conditions: &'a [k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
) -> (&'a str, &'a str) {
    let c = conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {conditions:?}"));
    (c.status.as_str(), c.reason.as_str())
}

#[tokio::test(flavor = "multi_thread")]
async fn score_follows_orders_across_every_level_boundary() {
    let shop = Shop::new("lifecycle").await;
    let (_, _operator) = shop.operator(&[]).await;
    shop.customer("alice").await;
    let status = shop.expect_customer("alice", 0, "Bronze", (0, 0, 0)).await;
    assert_eq!(
        (status.next_level.as_deref(), status.points_to_next_level),
        (Some("Silver"), Some(5))
    );
    let out = ControlPlane::shared().kubectl(&[
        "wait",
        "-n",
        &shop.ns,
        "customer/alice",
        "--for=condition=Ready",
        "--timeout=180s",
    ]);
    assert!(
        out.status.success(),
        "kubectl wait --for=condition=Ready: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    for (name, qty) in [("a", 4), ("b", 1), ("c", 5), ("d", 5), ("e", 5), ("f", 3)] {
        shop.order(name, "alice", qty, Requested).await;
    }
    shop.expect_customer("alice", 0, "Bronze", (0, 0, 6)).await;

    shop.set_state("a", Completed).await;
    let status = shop.expect_customer("alice", 4, "Bronze", (1, 0, 5)).await;
    assert_eq!(status.points_to_next_level, Some(1));
    shop.set_state("b", Completed).await;
    shop.expect_customer("alice", 5, "Silver", (2, 0, 4)).await;
    shop.set_state("c", Completed).await;
    shop.expect_customer("alice", 10, "Gold", (3, 0, 3)).await;
    shop.set_state("d", Completed).await;
    shop.expect_customer("alice", 15, "Platinum", (4, 0, 2))
        .await;
    shop.set_state("e", Completed).await;
    let top = shop
        .expect_customer("alice", 20, "Diamond", (5, 0, 1))
        .await;
    assert_eq!((top.next_level, top.points_to_next_level), (None, None));

    // A refund takes the order's quantity back.
    shop.set_state("e", Canceled).await;
    shop.expect_customer("alice", 15, "Platinum", (4, 1, 1))
        .await;
    // Canceling a requested order changes no score.
    shop.set_state("f", Canceled).await;
    shop.expect_customer("alice", 15, "Platinum", (4, 2, 0))
        .await;
    // Deleting a completed order removes it from the score.
    shop.delete_order("d").await;
    shop.expect_customer("alice", 10, "Gold", (3, 2, 0)).await;

    let order = shop
        .expect_order("a", "phase Completed", |st| st.phase == Some(Completed))
        .await;
    assert_eq!(order.customer_level.as_deref(), Some("Bronze"));
    assert_eq!(condition(&order.conditions, READY), ("True", "Accepted"));
    assert_eq!(
        condition(&order.conditions, CUSTOMER_FOUND),
        ("True", "CustomerFound")
    );

    // Events are published right after the status write they describe.
    let expected = [
        "level Bronze -> Silver (score 5)",
        "level Silver -> Gold (score 10)",
        "level Gold -> Platinum (score 15)",
        "level Platinum -> Diamond (score 20)",
        "level Diamond -> Platinum (score 15)",
        "level Platinum -> Gold (score 10)",
    ];
    let level_changes = eventually(WAIT, "every LevelChanged event", || async {
        let notes: Vec<String> = shop
            .events()
            .await
            .into_iter()
            .filter(|(reason, obj, _, _)| reason == "LevelChanged" && obj == "alice")
            .map(|(_, _, note, _)| note)
            .collect();
        (notes.len() >= expected.len()).then_some(notes)
    })
    .await;
    assert_eq!(level_changes, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_before_their_customer_are_iron_until_it_appears_and_keep_their_snapshot() {
    let shop = Shop::new("snapshot").await;
    let (_, _operator) = shop.operator(&[]).await;
    shop.order("big", "carol", 10, Completed).await;
    shop.order("small", "carol", 2, Requested).await;
    for order in ["big", "small"] {
        let status = shop
            .expect_order(order, "Iron, accepted, customer not found", |st| {
                st.customer_level.as_deref() == Some("Iron")
                    && st
                        .conditions
                        .iter()
                        .any(|c| c.type_ == CUSTOMER_FOUND && c.status == "False")
            })
            .await;
        // A non-member's order is a normal order: healthy, not blocking a GitOps sync.
        assert_eq!(condition(&status.conditions, READY), ("True", "Accepted"));
        assert_eq!(
            condition(&status.conditions, CUSTOMER_FOUND),
            ("False", "CustomerNotFound")
        );
        let found = status
            .conditions
            .iter()
            .find(|c| c.type_ == CUSTOMER_FOUND)
            .unwrap();
        assert!(found.message.contains("carol"), "{found:?}");
    }
    let warnings = eventually(WAIT, "one CustomerNotFound event per order", || async {
        let warnings = shop
            .events()
            .await
            .into_iter()
            .filter(|(reason, _, _, _)| reason == "CustomerNotFound")
            .count();
        (warnings >= 2).then_some(warnings)
    })
    .await;
    assert_eq!(warnings, 2, "{:?}", shop.events().await);

    // The snapshot is the level the customer has without the order itself, whichever of
    // customer and order is reconciled first.
    shop.customer("carol").await;
    shop.expect_customer("carol", 10, "Gold", (1, 0, 1)).await;
    let found = |st: &reserve_operator::crd::OrderStatus| {
        st.conditions
            .iter()
            .any(|c| c.type_ == CUSTOMER_FOUND && c.status == "True")
    };
    let big = shop.expect_order("big", "attributed", found).await;
    let small = shop.expect_order("small", "attributed", found).await;
    assert_eq!(big.customer_level.as_deref(), Some("Bronze"));
    assert_eq!(small.customer_level.as_deref(), Some("Gold"));

    // Later level changes do not move the snapshot.
    shop.order("more", "carol", 6, Completed).await;
    shop.set_state("small", Completed).await;
    shop.expect_customer("carol", 18, "Platinum", (3, 0, 0))
        .await;
    shop.delete_order("big").await;
    shop.expect_customer("carol", 8, "Silver", (2, 0, 0)).await;
    let small = shop
        .expect_order("small", "completed", |st| st.phase == Some(Completed))
        .await;
    assert_eq!(small.customer_level.as_deref(), Some("Gold"));

    // Deleting the customer leaves its orders alone but for CustomerFound; the snapshot stays.
    shop.delete_customer("carol").await;
    let small = shop
        .expect_order("small", "customer not found again", |st| !found(st))
        .await;
    assert_eq!(small.customer_level.as_deref(), Some("Gold"));
    assert_eq!(small.phase, Some(Completed));
    assert_eq!(condition(&small.conditions, READY), ("True", "Accepted"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_custom_level_policy_is_used() {
    let shop = Shop::new("levels").await;
    let (_, _operator) = shop
        .operator(&["--levels", "Regular=0,Friend=3,VIP=8"])
        .await;
    shop.customer("erin").await;
    shop.expect_customer("erin", 0, "Regular", (0, 0, 0)).await;
    shop.order("o1", "erin", 3, Completed).await;
    shop.expect_customer("erin", 3, "Friend", (1, 0, 0)).await;
    shop.order("o2", "erin", 5, Completed).await;
    let vip = shop.expect_customer("erin", 8, "VIP", (2, 0, 0)).await;
    assert_eq!(vip.next_level, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_customer_may_have_no_spec() {
    let shop = Shop::new("nospec").await;
    let (_, _operator) = shop.operator(&[]).await;
    let out = ControlPlane::shared().kubectl_stdin(
        &["apply", "-n", &shop.ns, "-f", "-"],
        "apiVersion: reserve.coffeechain.io/v1\nkind: Customer\nmetadata:\n  name: dana\n",
    );
    assert!(
        out.status.success(),
        "a Customer without spec: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    shop.order("o1", "dana", 6, Completed).await;
    shop.expect_customer("dana", 6, "Silver", (1, 0, 0)).await;
    let dana = shop.customers().get("dana").await.unwrap();
    assert_eq!(dana.spec.display_name, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_level_change_is_recorded_for_the_longest_names() {
    let shop = Shop::new("longname").await;
    let (_, _operator) = shop.operator(&[]).await;
    // 250 characters: a valid name (a DNS-1123 subdomain of labels of at most 63).
    let name = format!(
        "{}.{}.{}.{}",
        "a".repeat(62),
        "b".repeat(62),
        "c".repeat(62),
        "d".repeat(61)
    );
    assert_eq!(name.len(), 250);
    shop.customer(&name).await;
    shop.expect_customer(&name, 0, "Bronze", (0, 0, 0)).await;
    shop.order("o1", &name, 5, Completed).await;
    shop.expect_customer(&name, 5, "Silver", (1, 0, 0)).await;
    let note = eventually(WAIT, "the LevelChanged event", || async {
        shop.events()
            .await
            .into_iter()
            .find(|(reason, obj, _, _)| reason == "LevelChanged" && *obj == name)
            .map(|(_, _, note, _)| note)
    })
    .await;
    assert_eq!(note, "level Bronze -> Silver (score 5)");
}

/// A customer with a new order every 0.15 s for 30 s, twice as often as its status may be
/// written: its status keeps following its orders while they come (it is not held back until
/// they stop), every version a watch sees counts orders that exist, and its writes are paced (a
/// burst of 3, then 3 a second), fewer than one per order. How far behind it is, is printed;
/// the benchmark measures it.
#[tokio::test(flavor = "multi_thread")]
async fn a_busy_customer_keeps_following_its_orders_and_its_writes_are_paced() {
    let shop = Shop::new("busy").await;
    let (_, operator) = shop.operator(&[]).await;
    shop.customer("busy").await;
    shop.expect_customer("busy", 0, "Bronze", (0, 0, 0)).await;

    // The watch records when each score first shows.
    let watch = watcher(
        shop.customers(),
        watcher::Config::default().fields("metadata.name=busy"),
    )
    .default_backoff()
    .applied_objects();
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<(i64, tokio::time::Instant)>();
    let watching = tokio::spawn(async move {
        let mut watch = std::pin::pin!(watch);
        while let Some(event) = watch.next().await {
            // A failed watch backs off and goes on: keep recording.
            let Ok(customer) = event else { continue };
            let customer: Customer = customer;
            if let Some(status) = customer.status {
                let _ = seen_tx.send((status.score, tokio::time::Instant::now()));
            }
        }
    });

    let customer_writes = || async {
        operator
            .probe()
            .metric("reserve_status_writes_total", &[("controller", "customer")])
            .await
            .expect("reserve_status_writes_total{controller=\"customer\"}")
    };
    let writes_before = customer_writes().await;
    let start = tokio::time::Instant::now();
    let mut created = Vec::new();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(30) {
        n += 1;
        // When it was sent: a watch may show the status counting it before the create returns.
        created.push((n, tokio::time::Instant::now()));
        shop.order(&format!("o{n:03}"), "busy", 1, Completed).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    shop.expect_customer("busy", n, "Diamond", (n, 0, 0)).await;
    let end = tokio::time::Instant::now();
    watching.abort();
    let mut shown: Vec<(i64, tokio::time::Instant)> = Vec::new();
    while let Ok(seen) = seen.try_recv() {
        shown.push(seen);
    }
    // For every order, when the status first showed a score that counts it.
    let mut worst = Duration::ZERO;
    for (score, at) in &created {
        let shown_at = shown
            .iter()
            .find(|(s, t)| s >= score && t >= at)
            .map_or(end, |(_, t)| *t);
        worst = worst.max(shown_at - *at);
    }
    let writes = customer_writes().await - writes_before;
    let seconds = (end - start).as_secs_f64();
    println!(
        "busy customer: {n} orders in {seconds:.1} s, worst staleness {:.3}s, {writes} customer status writes",
        worst.as_secs_f64()
    );
    // Orders are only completed: a score that goes back, or counts more than exist, is wrong.
    let created_by = |at: tokio::time::Instant| created.iter().filter(|(_, c)| *c <= at).count();
    for pair in shown.windows(2) {
        assert!(pair[0].0 <= pair[1].0, "the score went back: {pair:?}");
    }
    for (score, at) in &shown {
        assert!(
            *score as usize <= created_by(*at),
            "score {score} shown before its orders existed"
        );
    }
    // While the orders kept coming, the status showed one made in the load's second half.
    let (loaded, half) = (
        created.last().map_or(start, |(_, at)| *at),
        created.len() as i64 / 2,
    );
    assert!(
        shown
            .iter()
            .any(|(score, at)| *score > half && *at <= loaded),
        "the status did not follow the orders while they came: {shown:?}"
    );
    assert!(
        writes <= 3.0 + 3.0 * seconds.ceil(),
        "{writes} customer writes in {seconds:.1}s for {n} order changes: not paced"
    );
    assert!(
        writes < n as f64,
        "{writes} customer writes for {n} orders: none folded"
    );
}

/// 10 customers and 100 orders; afterwards a restart of the operator writes nothing, and every
/// write the operator ever made is to a status subresource (or an Event).
#[tokio::test(flavor = "multi_thread")]
async fn restart_after_convergence_writes_nothing_and_only_status_is_ever_written() {
    let cp = ControlPlane::shared();
    if cp.skip_unless_local("counting requests in the audit log") {
        return;
    }
    let shop = Shop::new("idempotent").await;
    let (identity, operator) = shop.operator(&[]).await;
    for c in 0..10 {
        shop.customer(&format!("c{c}")).await;
    }
    for o in 0..100 {
        shop.order(
            &format!("o{o}"),
            &format!("c{}", o % 10),
            1 + o % 3,
            Requested,
        )
        .await;
    }
    for o in 0..100 {
        match o % 10 {
            0..=6 => shop.set_state(&format!("o{o}"), Completed).await,
            7 => {
                shop.set_state(&format!("o{o}"), Completed).await;
                shop.set_state(&format!("o{o}"), Canceled).await;
            }
            8 => shop.set_state(&format!("o{o}"), Canceled).await,
            _ => {}
        }
    }
    let policy = LevelPolicy::default();
    let (mismatches, checked) = shop.converge(&policy, WAIT).await;
    assert!(mismatches.is_empty(), "{mismatches:#?}");
    assert_eq!(checked, 10);
    // Stopped as SIGTERM would; then everything it sent is in the audit log.
    operator.stop().await.expect("a clean stop");
    let by_operator = |events: Vec<reserve_testkit::audit::AuditEvent>| {
        events
            .into_iter()
            .filter(|e| e.user() == identity.user)
            .collect::<Vec<_>>()
    };
    let before: Vec<_> = by_operator(cp.audit_until_now().await)
        .into_iter()
        .filter(|e| e.is_complete())
        .collect();
    let restarted_at = k8s_openapi::jiff::Timestamp::now();
    let writes: Vec<_> = before.iter().filter(|e| e.is_write()).collect();
    println!(
        "operator requests for 10 customers / 100 orders (200 order transitions): {} in all, {} writes",
        before.len(),
        writes.len()
    );
    for write in &writes {
        let status_patch =
            write.object_ref.subresource.as_deref() == Some("status") && write.verb == "patch";
        let event = write.object_ref.resource == "events" && write.verb == "create";
        assert!(
            status_patch || event,
            "the operator wrote something other than a status or an Event: {write:?}"
        );
    }
    let order_writes = writes
        .iter()
        .filter(|e| e.object_ref.resource == "orders")
        .count();
    // At most one per order transition (100 creations, 80 completions, 20 cancellations).
    assert!(
        order_writes <= 200,
        "order status writes {order_writes} exceed one per transition"
    );

    // Restart: a new operator with the same identity. Once it has finished a reconcile of
    // every object, and the audit log holds everything until then, it has written nothing.
    let client = cp.client_as(&identity).await;
    let restarted = reserve_testkit::InProcessOperator::start(
        client,
        &["--no-leader-election", "--namespace", &shop.ns],
    )
    .await;
    eventually(
        WAIT,
        "the restarted operator to finish a reconcile of every object",
        || async {
            let metrics = restarted.probe().metrics().await?;
            let finished = |controller| {
                metrics.value(
                    "reserve_reconcile_duration_seconds",
                    &[("controller", controller)],
                )
            };
            (finished("customer")? >= 10.0 && finished("order")? >= 100.0).then_some(())
        },
    )
    .await;
    // The restarted operator's requests: complete ones, and the watches it holds open; read
    // once the freshness probe (every 5 s) has probed each kind's store three times, so the
    // window covers its periodic rounds and not only its first.
    let is_probe = |e: &reserve_testkit::audit::AuditEvent| {
        e.verb == "list" && e.request_uri.split(['?', '&']).any(|p| p == "limit=1")
    };
    let after: Vec<_> = eventually(WAIT, "three rounds of the freshness probe", || async {
        let after: Vec<_> = by_operator(cp.audit_until_now().await)
            .into_iter()
            .filter(|e| e.request_received_timestamp >= restarted_at)
            .collect();
        (after.iter().filter(|e| is_probe(e)).count() >= 9).then_some(after)
    })
    .await;
    let rewrites: Vec<_> = after.iter().filter(|e| e.is_write()).collect();
    assert!(
        rewrites.is_empty(),
        "a restart after convergence wrote: {rewrites:?}"
    );
    // This API server (1.34 or later) streams the initial lists: one watch per kind that
    // sends the objects first, and no LIST of the objects at all (the only LISTs are the
    // probes of the store's current version, one object each).
    let lists: Vec<&str> = after
        .iter()
        .filter(|e| e.verb == "list")
        .map(|e| e.request_uri.as_str())
        .collect();
    let (probes, lists): (Vec<&str>, Vec<&str>) = lists
        .into_iter()
        .partition(|uri| uri.split(['?', '&']).any(|p| p == "limit=1"));
    assert!(lists.is_empty(), "LISTs on a restart: {lists:?}");
    assert!(
        !probes.is_empty(),
        "no probe of the store's version: {after:#?}"
    );
    let mut streamed: Vec<String> = after
        .iter()
        .filter(|e| e.verb == "watch" && e.request_uri.contains("sendInitialEvents=true"))
        .map(|e| e.object_ref.resource.clone())
        .collect();
    streamed.sort();
    streamed.dedup();
    assert_eq!(
        streamed,
        ["customers", "ledgers", "orders"],
        "one streaming watch per kind at start-up"
    );
}
