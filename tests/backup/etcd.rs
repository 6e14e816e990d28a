//! etcd restored from an earlier snapshot while the operator keeps running, as etcd recommends
//! (`--bump-revision --mark-compacted`: every watch must list again) and without the bump (the
//! store's versions go back: the operator must notice by itself). Either way it lists again,
//! converges on what the snapshot holds without a restart, writes nothing it computed before
//! the restore, and reconciles what changes after it.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
};

use futures::StreamExt;
use kube::{
    ResourceExt,
    runtime::{WatchStreamExt, watcher},
};
use reserve_operator::{crd::OrderState, loyalty::LevelPolicy};
use reserve_testkit::{ControlPlane, eventually, watchdog};

use super::{STORE, history::*};

async fn restore_while_running(bump: Option<u64>) {
    let cp = ControlPlane::shared();
    if cp.skip_unless_local("restoring etcd") {
        return;
    }
    let _alone = STORE.write().await;
    let (shop, identity) = settling_shop(if bump.is_some() { "etcd-bump" } else { "etcd" }).await;
    let op = operator(&shop, &identity);
    build(&shop).await;
    let before = state(&shop).await;
    let snapshot = watchdog().unique_path("etcd", ".snapshot");
    cp.snapshot_etcd(&snapshot).expect("an etcd snapshot");

    // After the snapshot: c0 completes an order (settled soon after), c1 orders again. The
    // restore takes both back.
    shop.set_state("live0-a", OrderState::Completed).await;
    shop.order("late", "c1", 7, OrderState::Completed).await;
    let (left, _) = shop.converge(&LevelPolicy::default(), WAIT).await;
    assert!(left.is_empty(), "{left:#?}");
    let changed = state(&shop).await;
    let lost: BTreeSet<(String, i64)> = changed
        .customers
        .iter()
        .filter(|(name, c)| before.customers[*name].0 != c.0)
        .map(|(name, c)| (name.clone(), c.0))
        .collect();
    assert_eq!(lost.len(), 2, "{changed:#?}");

    cp.restore_etcd(&snapshot, bump).expect("etcd restored");
    // What the customers show from now on: none may show a score only the lost changes gave.
    let shown: Arc<Mutex<BTreeSet<(String, i64)>>> = Arc::default();
    let recorder = {
        let shown = shown.clone();
        let events = watcher(shop.customers(), watcher::Config::default())
            .default_backoff()
            .applied_objects();
        tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            while let Some(Ok(customer)) = events.next().await {
                if let Some(status) = &customer.status {
                    shown
                        .lock()
                        .unwrap()
                        .insert((customer.name_any(), status.score));
                }
            }
        })
    };
    let probe = op.probe().clone();
    eventually(WAIT, "the operator ready again", || async {
        probe.is_ready().await.then_some(())
    })
    .await;
    let (left, _) = shop.converge(&LevelPolicy::default(), WAIT).await;
    assert!(left.is_empty(), "{left:#?}");
    assert_eq!(state(&shop).await, before, "not what the snapshot holds");

    // A change after the restore is reconciled (the watches follow the restored store).
    shop.set_state("live1-a", OrderState::Completed).await;
    let (score, _, (completed, canceled, open), _) = before.customers["c1"].clone();
    shop.expect_customer_status("c1", "live1-a counted", |s| {
        (
            s.score,
            s.completed_orders,
            s.canceled_orders,
            s.open_orders,
        ) == (score + 4, completed + 1, canceled, open - 1)
    })
    .await;
    recorder.abort();
    let stale: Vec<_> = shown.lock().unwrap().intersection(&lost).cloned().collect();
    assert_eq!(
        stale,
        [],
        "statuses computed before the restore were written after it"
    );
    let logs = op.logs();
    assert!(!logs.contains("panicked"), "{logs}");
    if bump.is_none() {
        assert!(
            logs.contains("the store went back in time; listing again"),
            "the operator did not notice the store went back:\n{logs}"
        );
    }
    drop(op);
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_restored_with_a_revision_bump_while_the_operator_runs() {
    restore_while_running(Some(1_000_000_000)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_restored_without_a_revision_bump_is_noticed_and_listed_again() {
    restore_while_running(None).await;
}
