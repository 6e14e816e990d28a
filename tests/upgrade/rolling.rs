//! The previous release to this one and back, the way a platform team upgrades: under a steady
//! load with settlement on, the API of this release first (the previous operator keeps
//! running), then the replicas one by one, a new one up before an old one stops, so both
//! versions run side by side; then the storage migration; then the previous release again.
//! Throughout, a watch sees every Ledger only grow and none go, the invariants hold on every
//! status version (a level that agrees with its score, a snapshot that never changes), every
//! status ends exact, and the audit log shows no write by an old replica after a new one wrote.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use futures::StreamExt;
use kube::{
    Api, ResourceExt,
    api::{ApiResource, DynamicObject},
    runtime::{WatchStreamExt, watcher},
};
use reserve_operator::{crd::OrderState, loyalty::LevelPolicy};
use reserve_testkit::{
    FAIL_AFTER, eventually,
    invariants::Invariants,
    workload::{Driver, Plan},
};

use super::*;

/// The Ledgers' history as a watch of `v1alpha1` sees it (served before, during and after the
/// upgrade): a Ledger that shrank or went is a settled history lost.
struct LedgerHistory {
    lost: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl LedgerHistory {
    fn watch(shop: &Shop) -> LedgerHistory {
        let resource = ApiResource {
            group: "reserve.coffeechain.io".into(),
            version: "v1alpha1".into(),
            api_version: "reserve.coffeechain.io/v1alpha1".into(),
            kind: "Ledger".into(),
            plural: "ledgers".into(),
        };
        let api: Api<DynamicObject> = Api::namespaced_with(shop.admin.clone(), &shop.ns, &resource);
        let lost: Arc<Mutex<Vec<String>>> = Arc::default();
        let record = lost.clone();
        let task = tokio::spawn(async move {
            let mut last: BTreeMap<String, [i64; 3]> = BTreeMap::new();
            let events = watcher(api, watcher::Config::default()).default_backoff();
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                let (ledger, gone) = match event {
                    Ok(watcher::Event::Apply(l) | watcher::Event::InitApply(l)) => (l, false),
                    Ok(watcher::Event::Delete(l)) => (l, true),
                    _ => continue,
                };
                let name = ledger.name_any();
                if gone {
                    record
                        .lock()
                        .unwrap()
                        .push(format!("ledger {name} deleted"));
                    continue;
                }
                let spec = &ledger.data["spec"];
                let now = ["score", "completedOrders", "canceledOrders"]
                    .map(|field| spec[field].as_i64().unwrap_or_default());
                if let Some(before) = last.insert(name.clone(), now)
                    && before.iter().zip(&now).any(|(b, n)| n < b)
                {
                    record
                        .lock()
                        .unwrap()
                        .push(format!("ledger {name} shrank: {before:?} -> {now:?}"));
                }
            }
        });
        LedgerHistory { lost, task }
    }

    fn finish(self) -> Vec<String> {
        self.task.abort();
        self.lost.lock().unwrap().clone()
    }
}

/// Orders created as v1alpha1 (each completed: settled soon after), one every 100 ms until told
/// to stop; resolves to how many. The customers they are for are the load's (`cust-NNNNN`),
/// created first.
fn v1alpha1_load(
    shop: &Shop,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<usize>,
) {
    let (stop, mut stopped) = tokio::sync::oneshot::channel();
    let shop = Shop {
        ns: shop.ns.clone(),
        admin: shop.admin.clone(),
    };
    let task = tokio::spawn(async move {
        let customers: Vec<_> = (0..20)
            .map(|c| {
                serde_json::json!({
                "apiVersion": "reserve.coffeechain.io/v1alpha1", "kind": "Customer",
                "metadata": { "name": reserve_testkit::workload::customer_name(c) } })
            })
            .collect();
        create_v1alpha1(&shop, &v1alpha1("Customer", "customers"), customers).await;
        let mut n = 0;
        let mut every = tokio::time::interval(std::time::Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = &mut stopped => return n,
            }
            let order = serde_json::json!({
                "apiVersion": "reserve.coffeechain.io/v1alpha1", "kind": "Order",
                "metadata": { "name": format!("early-{n:04}") },
                "spec": { "customer": reserve_testkit::workload::customer_name(n % 20),
                          "product": "Mocha", "quantity": 1 + n % 3, "state": "Completed" } });
            create_v1alpha1(&shop, &v1alpha1("Order", "orders"), vec![order]).await;
            n += 1;
        }
    });
    (stop, task)
}

/// The plan's orders created, then each one's first step (Completed or Canceled; a refund
/// would race the order's settlement); resolves to the transitions made.
async fn first_steps(driver: &Driver, plan: &Plan) -> Result<usize, String> {
    driver
        .create_orders(&plan.orders, |_| OrderState::Requested)
        .await?;
    let first = plan.waves().into_iter().next().unwrap_or_default();
    driver.set_states(&first).await?;
    Ok(plan.orders.len() + first.len())
}

async fn ready(replica: &OperatorProcess) {
    let probe = replica.probe().clone();
    eventually(FAIL_AFTER, "a replica ready", || async {
        probe.is_ready().await.then_some(())
    })
    .await;
}

/// Writes of what only the operator writes (statuses, Ledgers) in the shop, by user, in the
/// order the API server answered them.
fn operator_writes(
    cp: &ControlPlane,
    ns: &str,
) -> Vec<(String, reserve_testkit::audit::AuditEvent)> {
    cp.audit()
        .into_iter()
        .filter(|e| e.in_namespace(ns) && e.succeeded())
        .filter(|e| {
            e.is_status_write()
                || (e.object_ref.resource == "ledgers"
                    && ["create", "update", "patch"].contains(&e.verb.as_str()))
        })
        .map(|e| (e.user().to_owned(), e))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn previous_to_this_release_api_first_then_replica_by_replica_under_load_and_back() {
    let _alone = ALONE.lock().await;
    let previous = previous();
    let cp = with_previous_api("rolling", &previous);
    let (shop, lease_ns) = settling_shop(&cp, "rolling").await;
    let mut identities = Vec::new();
    for name in ["old-a", "old-b", "new-a", "new-b"] {
        identities.push(replica_identity(&shop, &lease_ns, name).await);
    }
    let launch = |bin: &Path, i: usize, name: &str| {
        replica(&cp, bin, &identities[i], name, &shop, &lease_ns)
    };

    // This release refuses the previous release's API, and says what to do.
    let mut early = launch(current_bin(), 2, "too-early");
    let exited = early.wait_exit(FAIL_AFTER).expect("it stops");
    assert!(!exited.success());
    let logs = early.logs();
    assert!(
        logs.contains("does not serve reserve.coffeechain.io/v1")
            && logs.contains("manifests/crds"),
        "{logs}"
    );

    let old = [
        launch(&previous.bin, 0, "old-a"),
        launch(&previous.bin, 1, "old-b"),
    ];
    let first = reserve_testkit::operator::leader_of(&[&old[0], &old[1]]).await;
    println!(
        "previous release {}: old-{} leads",
        previous.version,
        ["a", "b"][first]
    );
    let history = LedgerHistory::watch(&shop);
    // Orders written as clients of the previous release write them (v1alpha1), completed and
    // settled, through the API upgrade: the previous operator goes on (v1alpha1 is served beside
    // v1, and its identity is among the writers).
    let (stop_early, early_load) = v1alpha1_load(&shop);
    eventually(FAIL_AFTER, "settlement under way", || async {
        (ledgers(&shop.admin, &shop.ns).await.len() >= 3).then_some(())
    })
    .await;
    install_api(&cp, repo_root());
    let policy = LevelPolicy::default();
    let invariants = Invariants::watch(shop.customers(), shop.orders(), policy.clone());
    // A steady load through the rollout, paced so that it runs through it on any machine:
    // orders created, then each one's first step (a refund would race its settlement).
    let plan = Plan::new(20, 600, 41);
    let driver = Driver::new(&shop.admin, &shop.ns, 8).paced(30.0);
    let load = tokio::spawn(async move { first_steps(&driver, &plan).await });
    stop_early.send(()).expect("the early load runs");
    let early = early_load.await.expect("the early load");
    println!("{early} orders written as v1alpha1 through the API upgrade");
    // Replica by replica: a new one up (a standby, or the leader if the Lease is free), then an
    // old one stopped.
    let mut new = Vec::new();
    for (i, name) in [(2, "new-a"), (3, "new-b")] {
        let replica = launch(current_bin(), i, name);
        ready(&replica).await;
        new.push(replica);
        old[i - 2].sigterm();
    }
    let rolled = Instant::now();
    let transitions = load.await.unwrap().expect("the load runs");
    let (left, checked) = shop.converge(&policy, FAIL_AFTER).await;
    println!(
        "rolled to this release: {transitions} order transitions, exact {:.1}s after the rollout ({checked} customers)",
        rolled.elapsed().as_secs_f64()
    );
    assert!(left.is_empty(), "not exact after the upgrade: {left:#?}");
    let (violations, seen) = invariants.finish().await;
    assert!(seen > 0, "the invariants watched no status");
    assert!(violations.is_empty(), "{violations:#?}");

    // No write by an old replica after a new one wrote.
    let old_users = [&identities[0].user, &identities[1].user];
    let new_users = [&identities[2].user, &identities[3].user];
    let writes = operator_writes(&cp, &shop.ns);
    let first_new = writes
        .iter()
        .position(|(user, _)| new_users.contains(&user))
        .expect("the new replicas wrote");
    let late: Vec<_> = writes[first_new..]
        .iter()
        .filter(|(user, _)| old_users.contains(&user))
        .map(|(user, e)| format!("{user} {} {}", e.verb, e.request_uri))
        .collect();
    println!(
        "writes: {} by the previous release, then {} by this one",
        first_new,
        writes.len() - first_new
    );
    assert!(
        late.is_empty(),
        "writes by the previous release after this one wrote: {late:#?}"
    );

    // The storage migration, with this release running: every object written again as v1,
    // no status written for it. (Most are v1 already: any write stores an object in the
    // storage version.) First every final order settled, so no other work goes on.
    eventually(FAIL_AFTER, "every final order settled", || async {
        let orders = shop.orders().list(&Default::default()).await.ok()?.items;
        orders
            .iter()
            .all(|o| o.spec.state == OrderState::Requested)
            .then_some(())
    })
    .await;
    let (left, _) = shop.converge(&policy, FAIL_AFTER).await;
    assert!(left.is_empty(), "{left:#?}");
    let statuses_before = status_writes(&new).await;
    let out = std::process::Command::new(current_bin())
        .arg("migrate-storage")
        .env("KUBECONFIG", cp.kubeconfig())
        .output()
        .expect("reserve-operator migrate-storage");
    println!("{}", text(&out));
    assert!(out.status.success(), "{}", text(&out));
    for kind in ["customers", "orders", "ledgers"] {
        let stored = cp.kubectl(&[
            "get",
            "crd",
            &format!("{kind}.reserve.coffeechain.io"),
            "-o",
            "jsonpath={.status.storedVersions}",
        ]);
        assert_eq!(
            String::from_utf8_lossy(&stored.stdout),
            r#"["v1"]"#,
            "{kind}"
        );
    }
    let (left, _) = shop.converge(&policy, FAIL_AFTER).await;
    assert!(left.is_empty(), "{left:#?}");
    assert_eq!(
        status_writes(&new).await,
        statuses_before,
        "the migration's rewrites made the operator write"
    );

    // Back to the previous release, replica by replica, and more orders meanwhile: it keeps
    // everything this release wrote, and ends exact.
    let snapshots = snapshots(&shop).await;
    let kept_ledgers = ledgers(&shop.admin, &shop.ns).await;
    let mut back = Vec::new();
    for (i, name) in [(0, "old-a-again"), (1, "old-b-again")] {
        let replica = launch(&previous.bin, i, name);
        ready(&replica).await;
        back.push(replica);
        new[i].sigterm();
    }
    let after = Plan::named(20, 60, 43, "after-");
    first_steps(&Driver::new(&shop.admin, &shop.ns, 8), &after)
        .await
        .expect("orders after the downgrade");
    let (left, _) = shop.converge(&policy, FAIL_AFTER).await;
    assert!(left.is_empty(), "not exact after the downgrade: {left:#?}");
    let now = every_snapshot(&shop).await;
    let changed: Vec<_> = snapshots
        .iter()
        .filter(|(name, level)| {
            now.get(*name)
                .is_some_and(|shown| shown.as_ref() != Some(*level))
        })
        .collect();
    assert!(
        changed.is_empty(),
        "snapshots changed across the downgrade: {changed:?} {now:?}"
    );
    let grown = ledgers(&shop.admin, &shop.ns).await;
    for (name, kept) in &kept_ledgers {
        let now = grown.get(name).copied().unwrap_or_default();
        assert!(
            now.0 >= kept.0 && now.1 >= kept.1 && now.2 >= kept.2,
            "ledger {name} went from {kept:?} to {now:?}"
        );
    }
    let lost = history.finish();
    assert!(lost.is_empty(), "{lost:#?}");
    for replica in back.iter().chain(&new).chain(&old) {
        assert!(!replica.logs().contains("panicked"), "{}", replica.logs());
    }
}

/// Status writes the replicas have counted (`reserve_status_writes_total`), in all.
async fn status_writes(replicas: &[OperatorProcess]) -> f64 {
    let mut total = 0.0;
    for replica in replicas {
        let metrics = replica
            .probe()
            .metrics()
            .await
            .expect("the replica's metrics");
        total += metrics.sum("reserve_status_writes_total", &[]);
    }
    total
}

/// Every order's snapshot, taken ones only.
async fn snapshots(shop: &Shop) -> BTreeMap<String, String> {
    every_snapshot(shop)
        .await
        .into_iter()
        .filter_map(|(name, level)| Some((name, level.filter(|l| l != "Iron")?)))
        .collect()
}

/// Every order, and the snapshot it shows if any.
async fn every_snapshot(shop: &Shop) -> BTreeMap<String, Option<String>> {
    let orders = shop
        .orders()
        .list(&kube::api::ListParams::default())
        .await
        .expect("list orders");
    orders
        .items
        .iter()
        .map(|o| {
            let level = o.status.as_ref().and_then(|s| s.customer_level.clone());
            (o.name_any(), level)
        })
        .collect()
}
