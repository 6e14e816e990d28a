//! 10,000 orders stored as v1alpha1 by the previous release's API, migrated to v1 by
//! Kubernetes' own storage version migrator (kube-controller-manager, `StorageVersionMigration`
//! objects from `manifests/migration`) while the operator runs. Afterwards every CRD stores v1
//! alone (`status.storedVersions`), etcd holds no object in v1alpha1, and the migration's
//! rewrites made the operator write no status: its time and requests are printed.

use std::time::Instant;

use kube::api::DynamicObject;
use reserve_operator::loyalty::LevelPolicy;
use reserve_testkit::{FAIL_AFTER, eventually};
use serde_json::json;

use super::*;

const ORDERS: usize = 10_000;
const CUSTOMERS: usize = 200;

/// The objects of `plural` in etcd still encoded as v1alpha1.
fn stored_as_v1alpha1(cp: &ControlPlane, plural: &str) -> usize {
    let out = std::process::Command::new(cp.bin_dir().join("etcdctl"))
        .args(["--endpoints", &cp.etcd_url(), "get", "--prefix"])
        .arg(format!("/registry/reserve.coffeechain.io/{plural}/"))
        .output()
        .expect("etcdctl get");
    assert!(out.status.success(), "etcdctl: {}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        // The object's own apiVersion comes first (its field managers name the versions they
        // wrote in, whatever the object is stored as).
        .filter(|line| line.starts_with(r#"{"apiVersion":"reserve.coffeechain.io/v1alpha1""#))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_orders_migrate_to_v1_while_the_operator_runs_and_it_writes_nothing_for_them()
{
    let _alone = ALONE.lock().await;
    let previous = previous();
    let cp = with_previous_api("migration", &previous);
    let (shop, lease_ns) = settling_shop(&cp, "migration").await;
    // Not settled: this test moves data, not history.
    shop.settlement_label(None).await;
    let customers = (0..CUSTOMERS)
        .map(|c| {
            json!({ "apiVersion": "reserve.coffeechain.io/v1alpha1", "kind": "Customer",
                          "metadata": { "name": format!("c{c}") } })
        })
        .collect();
    create_v1alpha1(&shop, &v1alpha1("Customer", "customers"), customers).await;
    let orders = (0..ORDERS)
        .map(|o| {
            let state = ["Requested", "Completed", "Canceled"][o % 3];
            json!({ "apiVersion": "reserve.coffeechain.io/v1alpha1", "kind": "Order",
                    "metadata": { "name": format!("o{o}") },
                    "spec": { "customer": format!("c{}", o % CUSTOMERS), "product": "Latte",
                              "quantity": 1 + o % 4, "state": state } })
        })
        .collect();
    let created = Instant::now();
    create_v1alpha1(&shop, &v1alpha1("Order", "orders"), orders).await;
    println!(
        "{ORDERS} orders created as v1alpha1 in {:.1}s",
        created.elapsed().as_secs_f64()
    );
    assert_eq!(stored_as_v1alpha1(&cp, "orders"), ORDERS);

    // The previous release's operator writes every status (each object stays stored as
    // v1alpha1: any write stores an object in the storage version of the moment).
    let identity = replica_identity(&shop, &lease_ns, "operator").await;
    let mut old = replica(&cp, &previous.bin, &identity, "operator", &shop, &lease_ns);
    eventually(
        FAIL_AFTER,
        "every receipt written by the previous release",
        || async {
            let api: Api<DynamicObject> =
                Api::namespaced_with(shop.admin.clone(), &shop.ns, &v1alpha1("Order", "orders"));
            let orders = api.list(&Default::default()).await.ok()?.items;
            let current = orders.iter().filter(|o| {
                let status = &o.data["status"];
                status["phase"] == o.data["spec"]["state"]
                    && status["observedGeneration"].as_i64() == o.metadata.generation
            });
            (current.count() == ORDERS).then_some(())
        },
    )
    .await;
    old.sigterm();
    assert!(old.wait_exit(GRACE).is_some(), "the previous release stops");

    // This release's API and operator: every status current, it writes nothing (or little).
    install_api(&cp, repo_root());
    let operator = replica(&cp, current_bin(), &identity, "operator", &shop, &lease_ns);
    let policy = LevelPolicy::default();
    let (left, _) = shop.converge(&policy, FAIL_AFTER).await;
    assert!(left.is_empty(), "{left:#?}");
    let probe = operator.probe().clone();
    let writes = || async {
        let metrics = probe.metrics().await.expect("metrics");
        metrics.sum("reserve_status_writes_total", &[])
    };
    let reconciled = || async {
        let metrics = probe.metrics().await.expect("metrics");
        metrics.sum("reserve_reconciles_total", &[("controller", "order")])
    };
    let settled = writes().await;
    let reconciles_before = reconciled().await;
    let waiting = stored_as_v1alpha1(&cp, "orders");
    println!(
        "{waiting} of {ORDERS} orders still stored as v1alpha1 ({settled} status writes by this release)"
    );
    assert!(waiting > 0, "nothing left to migrate");

    // The migration: Kubernetes' own migrator, one StorageVersionMigration per resource.
    let mut migrator = cp
        .controller_manager("storage-version-migrator-controller,garbage-collector-controller")
        .expect("kube-controller-manager");
    let began = Instant::now();
    let audit_before = cp.audit().len();
    let manifests = repo_root()
        .join("manifests/migration")
        .display()
        .to_string();
    let out = cp.kubectl(&["apply", "-k", &manifests]);
    assert!(out.status.success(), "{}", text(&out));
    // The migrator starts a resource once its garbage collector's cache of it has caught up
    // with the store, which for a resource nobody writes takes a watch bookmark (a minute or
    // so); then it patches every object.
    let stored_v1 = |kind: &str| {
        let crd = format!("crd/{kind}.reserve.coffeechain.io");
        let out = cp.kubectl(&["get", &crd, "-o", "jsonpath={.status.storedVersions}"]);
        String::from_utf8_lossy(&out.stdout) == r#"["v1"]"#
    };
    let done = tokio::time::timeout(2 * FAIL_AFTER, async {
        while !["customers", "orders", "ledgers"]
            .iter()
            .all(|k| stored_v1(k))
        {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    })
    .await;
    if done.is_err() {
        let log = std::fs::read_to_string(cp.dir().join("kube-controller-manager.log"))
            .unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        panic!("the migration did not finish:\n{}", tail.join("\n"));
    }
    let seconds = began.elapsed().as_secs_f64();
    migrator.stop(GRACE);
    let requests: Vec<_> = cp.audit()[audit_before..]
        .iter()
        .filter(|e| {
            e.user_agent
                .as_deref()
                .is_some_and(|a| a.contains("kube-controller-manager"))
        })
        .filter(|e| e.object_ref.api_group == "reserve.coffeechain.io")
        .map(|e| format!("{} {}", e.verb, e.code().unwrap_or_default()))
        .collect();
    let mut answers = std::collections::BTreeMap::<&str, usize>::new();
    for request in &requests {
        *answers.entry(request.as_str()).or_default() += 1;
    }
    println!("the migrator's requests: {answers:?}");
    let patches = requests.iter().filter(|v| v.starts_with("patch")).count();
    println!(
        "migrated {ORDERS} orders and {CUSTOMERS} customers to v1 in {seconds:.1}s: {} requests of the migrator ({patches} patches)",
        requests.len()
    );
    assert_eq!(
        stored_as_v1alpha1(&cp, "orders"),
        0,
        "orders still stored as v1alpha1"
    );
    assert_eq!(stored_as_v1alpha1(&cp, "customers"), 0);
    // Every rewrite reached the operator's watch and woke its order (someone else's change is
    // looked at); it wrote nothing for them.
    eventually(
        FAIL_AFTER,
        "the operator to look at every rewritten order",
        || async { (reconciled().await >= reconciles_before + waiting as f64).then_some(()) },
    )
    .await;
    let (left, _) = shop.converge(&policy, FAIL_AFTER).await;
    assert!(left.is_empty(), "{left:#?}");
    assert_eq!(
        writes().await,
        settled,
        "the migration's rewrites made the operator write"
    );
    assert!(!operator.logs().contains("panicked"), "{}", operator.logs());
}
