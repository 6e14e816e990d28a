//! Nobody but the operator writes status: the ValidatingAdmissionPolicy shipped with the CRDs
//! refuses anyone else (cluster admins included) and any change of a snapshot once taken; and a
//! status forged anyway (the policy's binding removed) is repaired, the score never moved.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
    core::object::HasStatus,
    runtime::{WatchStreamExt, watcher},
};
use reserve_operator::{
    crd::{Customer, Ledger, LedgerSpec, Order, OrderState},
    loyalty::LevelPolicy,
};
use reserve_testkit::{
    ControlPlane, FAIL_AFTER, Identity, Shop, control_plane::text, eventually, rbac, shop, until,
};
use serde_json::json;
use tokio::sync::RwLock;

/// Removing the policy's binding affects every test of this binary: that test runs alone.
static POLICY: RwLock<()> = RwLock::const_new(());

const CRDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/crds");
const BINDING: &str = "validatingadmissionpolicybinding/reserve-operator-status";
/// How long a policy binding created or deleted may take to reach the admission plugin.
const POLICY_PROPAGATION: Duration = Duration::from_secs(120);

async fn forge<K>(api: &Api<K>, name: &str, status: serde_json::Value) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .map(drop)
}

fn refusal(result: Result<(), kube::Error>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.message),
        other => panic!("the forged status was accepted: {other:?}"),
    }
}

/// Waits until the policy refuses the admin's status writes (a binding just put back takes a
/// moment to reach the admission plugin).
async fn policy_in_force(shop: &Shop) {
    shop.customer("policy-probe").await;
    let customers = shop.customers();
    eventually(POLICY_PROPAGATION, "the status policy to apply", || async {
        forge(&customers, "policy-probe", json!({ "score": 1 }))
            .await
            .err()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_operator_writes_status_and_a_snapshot_never_changes() {
    let _policy = POLICY.read().await;
    let shop = Shop::new("policy").await;
    policy_in_force(&shop).await;
    let (identity, _operator) = shop.operator(&[]).await;
    shop.customer("alice").await;
    shop.order("o1", "alice", 6, OrderState::Completed).await;
    // The operator's own writes pass.
    shop.expect_customer("alice", 6, "Silver", (1, 0, 0)).await;
    let o1 = shop
        .expect_order("o1", "a snapshot", |s| {
            s.customer_level.as_deref() == Some("Bronze")
        })
        .await;
    assert_eq!(o1.phase, Some(OrderState::Completed));

    // A cluster admin is refused, with the rule named.
    let (code, message) = refusal(
        forge(
            &shop.customers(),
            "alice",
            json!({ "score": 100, "level": "Diamond" }),
        )
        .await,
    );
    println!("customer status by the admin: {code} {message}");
    assert_eq!(code, 403);
    assert!(
        message.contains("only the reserve-operator (a ServiceAccount of namespace reserve-system) writes the status of customers; admin may not"),
        "{message}"
    );
    let (code, message) =
        refusal(forge(&shop.orders(), "o1", json!({ "phase": "Canceled" })).await);
    assert_eq!(code, 403, "{message}");
    assert!(message.contains("status of orders"), "{message}");

    // Not even the operator's identity may change a snapshot.
    let as_operator = ControlPlane::shared().client_as(&identity).await;
    let orders: Api<Order> = Api::namespaced(as_operator, &shop.ns);
    let (code, message) =
        refusal(forge(&orders, "o1", json!({ "customerLevel": "Diamond" })).await);
    println!("snapshot change by the operator's identity: {code} {message}");
    assert_eq!(code, 422);
    assert!(
        message
            .contains("status.customerLevel is a snapshot: once taken (Bronze) it never changes"),
        "{message}"
    );
    let stored = shop.customers().get("alice").await.unwrap().status.unwrap();
    assert_eq!((stored.score, stored.level.as_deref()), (6, Some("Silver")));
}

/// Of the ServiceAccounts of the operator's namespace, only the operator's own writes: another
/// one (a debug pod's, any other workload's), with every RBAC permission the operator has, is
/// refused a status and a Ledger, and the refusal says who may.
#[tokio::test(flavor = "multi_thread")]
async fn another_serviceaccount_of_the_operators_namespace_is_refused() {
    let _shared = POLICY.read().await;
    let shop = Shop::new("identity").await;
    let (_, _operator) = shop.operator(&[]).await;
    shop.customer("alice").await;
    shop.expect_customer("alice", 0, "Bronze", (0, 0, 0)).await;
    // A ServiceAccount of reserve-system, bound to the operator's roles, not among its writers.
    let debug = Identity::service_account(shop::OPERATOR_NAMESPACE, &format!("{}-debug", shop.ns));
    rbac::grant_cluster_role(&shop.admin, &debug, shop::OPERATOR_ROLE).await;
    rbac::grant_cluster_role(&shop.admin, &debug, shop::SETTLEMENT_ROLE).await;
    let as_debug = ControlPlane::shared().client_as(&debug).await;
    let customers: Api<Customer> = Api::namespaced(as_debug.clone(), &shop.ns);
    let (code, message) = refusal(forge(&customers, "alice", json!({ "score": 40 })).await);
    println!("status by another ServiceAccount of reserve-system: {code} {message}");
    assert_eq!(code, 403, "{message}");
    assert!(message.contains("reserve-operator-writers"), "{message}");
    let ledgers: Api<Ledger> = Api::namespaced(as_debug, &shop.ns);
    let forged = Ledger::new(
        "alice",
        LedgerSpec {
            score: 40,
            ..LedgerSpec::default()
        },
    );
    let created = ledgers
        .create(&PostParams::default(), &forged)
        .await
        .map(drop);
    let (code, message) = refusal(created);
    println!("ledger by another ServiceAccount of reserve-system: {code} {message}");
    assert_eq!(code, 403, "{message}");
    assert!(message.contains("reserve-operator-writers"), "{message}");
    // Named a writer, the same account is the operator's equal.
    shop::name_as_writer(&shop.admin, &debug).await;
    eventually(
        POLICY_PROPAGATION,
        "the policy to know the new writer",
        || async { ledgers.create(&PostParams::default(), &forged).await.ok() },
    )
    .await;
}

/// Puts the policy's binding back, even when the test fails.
struct RestoreBinding;

impl Drop for RestoreBinding {
    fn drop(&mut self) {
        let out = ControlPlane::shared().kubectl(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-k",
            CRDS,
        ]);
        assert!(out.status.success(), "{}", text(&out));
    }
}

/// Every (score, level) the statuses of customer `name` show, from a watch.
struct Versions {
    shown: Arc<Mutex<Vec<(i64, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

fn watch_scores(customers: &Api<Customer>, name: &str) -> Versions {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let events = watcher(customers.clone(), config)
        .default_backoff()
        .applied_objects();
    let shown: Arc<Mutex<Vec<(i64, String)>>> = Arc::default();
    let record = shown.clone();
    let task = tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            let Ok(customer) = event else { continue };
            if let Some(status) = customer.status.filter(|s| s.level.is_some()) {
                let level = status.level.unwrap_or_default();
                record.lock().unwrap().push((status.score, level));
            }
        }
    });
    Versions { shown, task }
}

impl Versions {
    fn finish(self) -> Vec<(i64, String)> {
        self.task.abort();
        self.shown.lock().unwrap().clone()
    }
}

/// Watches `name` until its status satisfies `check`; returns how long that took from `since`.
async fn repaired<K>(
    since: Instant,
    api: &Api<K>,
    name: &str,
    what: &str,
    check: impl Fn(&K::Status) -> bool,
) -> Duration
where
    K: kube::Resource + HasStatus + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    K: Send + 'static,
{
    let what = format!("{what} repaired");
    until(api, name, FAIL_AFTER, &what, |object| {
        object.status().is_some_and(&check)
    })
    .await;
    since.elapsed()
}

/// Statuses forged by someone the policy does not stop (its binding removed) are repaired, and
/// no version of the customer ever shows a score the forgeries would give. How long a repair
/// took is printed; the benchmark measures how fast the operator follows a change.
#[tokio::test(flavor = "multi_thread")]
async fn forged_statuses_are_repaired_and_never_move_the_score() {
    let _alone = POLICY.write().await;
    let cp = ControlPlane::shared();
    let shop = Shop::new("forged").await;
    let (_, _operator) = shop.operator(&[]).await;
    shop.customer("bob").await;
    shop.order("done", "bob", 4, OrderState::Completed).await;
    shop.order("waiting", "bob", 3, OrderState::Requested).await;
    shop.expect_customer("bob", 4, "Bronze", (1, 0, 1)).await;
    for order in ["done", "waiting"] {
        shop.expect_order(order, "a snapshot", |s| {
            s.customer_level.as_deref() == Some("Bronze")
        })
        .await;
    }

    // As a privileged user who bypasses the policy: its binding removed.
    let _restore = RestoreBinding;
    let out = cp.kubectl(&["delete", BINDING]);
    assert!(out.status.success(), "{}", text(&out));
    let customers: Api<Customer> = shop.customers();
    let orders: Api<Order> = shop.orders();
    eventually(
        POLICY_PROPAGATION,
        "the policy to stop applying",
        || async {
            forge(
                &customers,
                "bob",
                json!({ "score": 100, "level": "Diamond" }),
            )
            .await
            .ok()
        },
    )
    .await;
    let mut times = Vec::new();
    // Every version of bob from now on: the true standing, or the forgery itself.
    let versions = watch_scores(&customers, "bob");

    // A forged customer status.
    let forged = Instant::now();
    forge(
        &customers,
        "bob",
        json!({ "score": 100, "level": "Diamond" }),
    )
    .await
    .unwrap();
    times.push((
        "customer score and level",
        repaired(forged, &customers, "bob", "the customer's status", |s| {
            s.score == 4 && s.level.as_deref() == Some("Bronze")
        })
        .await,
    ));

    // An order's phase forged forward: the score never follows it, the phase is repaired.
    let forged = Instant::now();
    forge(&orders, "waiting", json!({ "phase": "Completed" }))
        .await
        .unwrap();
    times.push((
        "order phase Requested -> Completed",
        repaired(forged, &orders, "waiting", "the order's phase", |s| {
            s.phase == Some(OrderState::Requested)
        })
        .await,
    ));
    let forged = Instant::now();
    forge(&orders, "done", json!({ "phase": "Canceled" }))
        .await
        .unwrap();
    times.push((
        "order phase Completed -> Canceled",
        repaired(forged, &orders, "done", "the order's phase", |s| {
            s.phase == Some(OrderState::Completed)
        })
        .await,
    ));

    // A forged snapshot.
    let forged = Instant::now();
    forge(&orders, "done", json!({ "customerLevel": "Diamond" }))
        .await
        .unwrap();
    times.push((
        "order customerLevel",
        repaired(forged, &orders, "done", "the order's snapshot", |s| {
            s.customer_level.as_deref() == Some("Bronze")
        })
        .await,
    ));

    for (what, took) in &times {
        println!("forged {what}: repaired after {:.3}s", took.as_secs_f64());
    }
    // The forgeries never moved the score: no version showed anything but the true standing
    // or the customer forgery itself.
    let seen = versions.finish();
    assert!(
        seen.iter()
            .all(|s| *s == (4, "Bronze".into()) || *s == (100, "Diamond".into())),
        "{seen:?}"
    );
    assert!(
        seen.contains(&(4, "Bronze".into())),
        "the watch saw nothing: {seen:?}"
    );
    let (mismatches, _) = shop.mismatches(&LevelPolicy::default()).await;
    assert!(mismatches.is_empty(), "{mismatches:#?}");
}
