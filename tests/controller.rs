//! The controllers against a real API server: countScore and checkLevel, level-triggered and
//! exact. Each test runs its own operator process on its own namespace.

mod scenario;
mod support;

use std::time::Duration;

use reserve_operator::crd::OrderState::{Canceled, Completed, Requested};
use scenario::{Scenario, WAIT, is_write, tally};
use support::{ControlPlane, eventually};

#[tokio::test]
async fn score_follows_orders_across_every_level_boundary() {
    let s = Scenario::start("lifecycle", &[]).await;
    s.customer("alice").await;
    s.expect_customer("alice", 0, "Bronze", (0, 0, 0)).await;
    let out = ControlPlane::get().kubectl(&[
        "wait",
        "-n",
        &s.ns,
        "customer/alice",
        "--for=condition=Ready",
        "--timeout=20s",
    ]);
    assert!(
        out.status.success(),
        "kubectl wait --for=condition=Ready: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    for (name, qty) in [("a", 4), ("b", 1), ("c", 5), ("d", 5), ("e", 5), ("f", 3)] {
        s.order(name, "alice", qty, Requested).await;
    }
    s.expect_customer("alice", 0, "Bronze", (0, 0, 6)).await;

    s.set_state("a", Completed).await;
    s.expect_customer("alice", 4, "Bronze", (1, 0, 5)).await;
    s.set_state("b", Completed).await;
    s.expect_customer("alice", 5, "Silver", (2, 0, 4)).await;
    s.set_state("c", Completed).await;
    s.expect_customer("alice", 10, "Gold", (3, 0, 3)).await;
    s.set_state("d", Completed).await;
    s.expect_customer("alice", 15, "Platinum", (4, 0, 2)).await;
    s.set_state("e", Completed).await;
    s.expect_customer("alice", 20, "Diamond", (5, 0, 1)).await;

    // A refund takes the order's quantity back.
    s.set_state("e", Canceled).await;
    s.expect_customer("alice", 15, "Platinum", (4, 1, 1)).await;
    // Canceling a requested order changes no score.
    s.set_state("f", Canceled).await;
    s.expect_customer("alice", 15, "Platinum", (4, 2, 0)).await;
    // Deleting a completed order removes it from the score.
    s.delete_order("d").await;
    s.expect_customer("alice", 10, "Gold", (3, 2, 0)).await;

    let order = s
        .expect_order("a", "phase Completed", |st| st.phase == Some(Completed))
        .await;
    assert_eq!(order.customer_level.as_deref(), Some("Bronze"));
    assert_eq!(order.conditions[0].reason, "Accepted");

    // Events are published right after the status write they describe.
    let expected = [
        "level Bronze -> Silver (score 5)",
        "level Silver -> Gold (score 10)",
        "level Gold -> Platinum (score 15)",
        "level Platinum -> Diamond (score 20)",
        "level Diamond -> Platinum (score 15)",
        "level Platinum -> Gold (score 10)",
    ];
    let level_changes = || -> Vec<String> {
        s.events()
            .into_iter()
            .filter(|(reason, obj, _)| reason == "LevelChanged" && obj == "alice")
            .map(|(_, _, m)| m)
            .collect()
    };
    let all_there = || {
        expected
            .iter()
            .all(|e| level_changes().iter().any(|m| m == e))
    };
    for _ in 0..50 {
        if all_there() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        all_there(),
        "LevelChanged events {:?} lack some of {expected:?}",
        level_changes()
    );
}

#[tokio::test]
async fn orders_before_their_customer_are_iron_until_it_appears_and_keep_their_snapshot() {
    let s = Scenario::start("snapshot", &[]).await;
    s.order("big", "carol", 10, Completed).await;
    s.order("small", "carol", 2, Requested).await;
    for order in ["big", "small"] {
        let status = s
            .expect_order(order, "Iron and CustomerNotFound", |st| {
                st.customer_level.as_deref() == Some("Iron")
                    && st
                        .conditions
                        .first()
                        .is_some_and(|c| c.status == "False" && c.reason == "CustomerNotFound")
            })
            .await;
        assert!(
            status.conditions[0].message.contains("carol"),
            "{:?}",
            status.conditions
        );
    }
    let warnings = s
        .events()
        .into_iter()
        .filter(|(reason, _, _)| reason == "CustomerNotFound")
        .count();
    assert_eq!(
        warnings,
        2,
        "one CustomerNotFound event per order: {:?}",
        s.events()
    );

    // The snapshot is the level the customer has without the order itself, whichever of
    // customer and order is reconciled first.
    s.customer("carol").await;
    s.expect_customer("carol", 10, "Gold", (1, 0, 1)).await;
    let big = s
        .expect_order("big", "attributed", |st| {
            st.conditions.first().is_some_and(|c| c.status == "True")
        })
        .await;
    let small = s
        .expect_order("small", "attributed", |st| {
            st.conditions.first().is_some_and(|c| c.status == "True")
        })
        .await;
    assert_eq!(big.customer_level.as_deref(), Some("Bronze"));
    assert_eq!(small.customer_level.as_deref(), Some("Gold"));

    // Later level changes do not move the snapshot.
    s.order("more", "carol", 6, Completed).await;
    s.set_state("small", Completed).await;
    s.expect_customer("carol", 18, "Platinum", (3, 0, 0)).await;
    s.delete_order("big").await;
    s.expect_customer("carol", 8, "Silver", (2, 0, 0)).await;
    let small = s
        .expect_order("small", "completed", |st| st.phase == Some(Completed))
        .await;
    assert_eq!(small.customer_level.as_deref(), Some("Gold"));

    // Deleting the customer leaves its orders alone but for their Ready condition; the snapshot stays.
    s.delete_customer("carol").await;
    let small = s
        .expect_order("small", "CustomerNotFound again", |st| {
            st.conditions
                .first()
                .is_some_and(|c| c.reason == "CustomerNotFound")
        })
        .await;
    assert_eq!(small.customer_level.as_deref(), Some("Gold"));
    assert_eq!(small.phase, Some(Completed));
    assert!(s.orders().get("small").await.is_ok());
}

#[tokio::test]
async fn a_custom_level_policy_is_used() {
    let s = Scenario::start("levels", &["--levels", "Regular=0,Friend=3,VIP=8"]).await;
    s.customer("erin").await;
    s.expect_customer("erin", 0, "Regular", (0, 0, 0)).await;
    s.order("o1", "erin", 3, Completed).await;
    s.expect_customer("erin", 3, "Friend", (1, 0, 0)).await;
    s.order("o2", "erin", 5, Completed).await;
    s.expect_customer("erin", 8, "VIP", (2, 0, 0)).await;
}

/// 10 customers and 100 orders; afterwards a restart of the operator writes nothing, and every
/// write the operator ever made is to a status subresource (or an Event).
#[tokio::test]
async fn restart_after_convergence_writes_nothing_and_only_status_is_ever_written() {
    let cp = ControlPlane::get();
    if cp.skip_unless_local("counting requests in the audit log") {
        return;
    }
    let mut s = Scenario::start("idempotent", &[]).await;
    for c in 0..10 {
        s.customer(&format!("c{c}")).await;
    }
    for o in 0..100 {
        s.order(
            &format!("o{o}"),
            &format!("c{}", o % 10),
            1 + o % 3,
            Requested,
        )
        .await;
    }
    for o in 0..100 {
        match o % 10 {
            0..=6 => s.set_state(&format!("o{o}"), Completed).await,
            7 => {
                s.set_state(&format!("o{o}"), Completed).await;
                s.set_state(&format!("o{o}"), Canceled).await;
            }
            8 => s.set_state(&format!("o{o}"), Canceled).await,
            _ => {}
        }
    }
    // Expected, per customer c (orders o with o % 10 == c, all in the same state class).
    for c in 0..10i32 {
        let (mut score, mut counts) = (0, (0, 0, 0));
        for o in (c..100).step_by(10) {
            match o % 10 {
                0..=6 => {
                    score += i64::from(1 + o % 3);
                    counts.0 += 1;
                }
                7 | 8 => counts.1 += 1,
                _ => counts.2 += 1,
            }
        }
        let level = reserve_operator::loyalty::LevelPolicy::default()
            .level_for(score)
            .to_owned();
        s.expect_customer(&format!("c{c}"), score, &level, counts)
            .await;
    }
    for o in 0..100 {
        s.expect_order(&format!("o{o}"), "accepted", |st| {
            st.observed_generation.is_some() && st.phase.is_some()
        })
        .await;
    }
    // Let trailing debounced reconciles finish before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = s.operator_requests();
    let writes: Vec<_> = before.iter().filter(|e| is_write(e)).collect();
    println!(
        "operator requests for 10 customers / 100 orders (200 order transitions): {} in all, {} writes",
        before.len(),
        writes.len()
    );
    for (what, n) in tally(&before) {
        println!("  {n:5}  {what}");
    }
    for write in &writes {
        let ok = match write.resource.as_str() {
            "customers" | "orders" => {
                write.subresource.as_deref() == Some("status") && write.verb == "patch"
            }
            "events" => true,
            _ => false,
        };
        assert!(
            ok,
            "the operator wrote something other than a status or an Event: {write:?}"
        );
    }
    let order_writes = writes.iter().filter(|e| e.resource == "orders").count();
    // One per accepted transition plus the first attribution: 100 creations + 80 completions
    // + 20 cancellations... transitions the operator saw may be folded when faster than it.
    assert!(
        order_writes <= 230,
        "order status writes {order_writes} exceed one per transition"
    );

    // Restart: SIGTERM, then a new process with the same identity.
    let mut operator = s.operator.take().unwrap();
    operator.sigterm();
    let status = operator
        .wait_exit(Duration::from_secs(20))
        .expect("the operator exits on SIGTERM");
    assert!(
        status.success(),
        "exit status {status:?}\n{}",
        operator.logs()
    );
    let seen = cp.audit().len();
    s.start_operator(&[]);
    eventually(
        WAIT,
        "the restarted operator to reconcile every object",
        || {
            let s = &s;
            async move {
                let customers = s
                    .metric("reserve_reconciles_total{controller=\"customer\"}")
                    .await?;
                let orders = s
                    .metric("reserve_reconciles_total{controller=\"order\"}")
                    .await?;
                (customers >= 10.0 && orders >= 100.0).then_some(())
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after: Vec<_> = cp
        .audit()
        .into_iter()
        .skip(seen)
        .filter(|e| e.user == s.user && e.stage == "ResponseComplete")
        .collect();
    println!(
        "after a restart: {} requests: {:?}",
        after.len(),
        tally(&after)
    );
    let rewrites: Vec<_> = after.iter().filter(|e| is_write(e)).collect();
    assert!(
        rewrites.is_empty(),
        "a restart after convergence wrote: {rewrites:?}"
    );
    let lists = after.iter().filter(|e| e.verb == "list").count();
    assert_eq!(
        lists,
        2,
        "one LIST per kind at start-up: {:?}",
        tally(&after)
    );
}
