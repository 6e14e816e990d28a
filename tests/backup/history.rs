//! A shop with a history: settled orders in every customer's Ledger, live orders whose level
//! snapshots differ (taken at different levels), and what all of it shows, to compare after a
//! restore.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use reserve_operator::{
    crd::{Ledger, LedgerSpec, Order, OrderState, SettledHistory},
    loyalty::LevelPolicy,
};
use reserve_testkit::{
    ControlPlane, Identity, Launch, OperatorProcess, Shop, control_plane::text, eventually,
    operator_bin, watchdog,
};
use serde_json::json;

use OrderState::{Canceled, Completed, Requested};

pub const SETTLE_AFTER: &str = "2s";
pub const WAIT: Duration = Duration::from_secs(60);
pub const CUSTOMERS: usize = 4;

/// The restore identity of the admission policies, as an administrator acts in it.
pub const RESTORE_USER: &str = "reserve-restore";
pub const RESTORE_GROUP: &str = "reserve.coffeechain.io:restore";

/// A namespace that opted in to settlement, and an identity allowed to settle.
pub async fn settling_shop(prefix: &str) -> (Shop, Identity) {
    let shop = Shop::new(prefix).await;
    shop.settlement_label(Some("enabled")).await;
    let identity = shop.settling_identity("operator").await;
    (shop, identity)
}

/// The operator as its own process, settling after [`SETTLE_AFTER`].
pub fn operator(shop: &Shop, identity: &Identity) -> OperatorProcess {
    Launch::new(operator_bin!(), &shop.kubeconfig(identity))
        .args(["--namespace", &shop.ns, "--no-leader-election"])
        .args(["--settle-after", SETTLE_AFTER])
        .spawn()
}

pub fn customer(i: usize) -> String {
    format!("c{i}")
}

/// Customer `i` gets `3 (i + 1)` orders of 2 coffees and one canceled order, all settled into
/// its Ledger; then two live orders, with a Completed order kept in Git (server-side applied:
/// never settled) between them, so their snapshots differ; customer 0 also has an order whose
/// customer is not a member. Returns once every live order has its snapshot and all is exact.
pub async fn build(shop: &Shop) {
    for i in 0..CUSTOMERS {
        shop.customer(&customer(i)).await;
        for n in 0..3 * (i + 1) {
            shop.order(&format!("s{i}-{n}"), &customer(i), 2, Completed)
                .await;
        }
        shop.order(&format!("s{i}-x"), &customer(i), 9, Canceled)
            .await;
    }
    eventually(WAIT, "every final order settled", || async {
        let live = shop.order_names().await;
        let settled = shop
            .ledgers()
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .iter()
            .filter(|l| l.spec.absorbed.is_empty())
            .count();
        (live.is_empty() && settled == CUSTOMERS).then_some(())
    })
    .await;
    for i in 0..CUSTOMERS {
        shop.order(&format!("live{i}-a"), &customer(i), 4, Requested)
            .await;
    }
    expect_snapshots(shop).await;
    for i in 0..CUSTOMERS {
        apply_from_git(shop, &format!("git{i}"), &customer(i), 5);
        shop.order(&format!("live{i}-b"), &customer(i), 1, Requested)
            .await;
    }
    // Requested: a final order would be settled, at a moment a snapshot of the store may or
    // may not have caught.
    shop.order("guest", "not-a-member", 3, Requested).await;
    expect_snapshots(shop).await;
    let (left, _) = shop.converge(&LevelPolicy::default(), WAIT).await;
    assert!(left.is_empty(), "{left:#?}");
}

/// An Order applied as a GitOps tool does (server-side apply, its own field manager).
pub fn apply_from_git(shop: &Shop, name: &str, customer: &str, quantity: i32) {
    let manifest = format!(
        "apiVersion: reserve.coffeechain.io/v1\nkind: Order\nmetadata:\n  name: {name}\n  \
         namespace: {ns}\nspec:\n  customer: {customer}\n  product: Latte\n  quantity: {quantity}\n  \
         state: Completed\n",
        ns = shop.ns
    );
    apply_as_git(&manifest);
}

/// `manifests` applied as a GitOps tool does: server-side, as the field manager `git`.
pub fn apply_as_git(manifests: &str) {
    let args = [
        "apply",
        "--server-side",
        "--field-manager",
        "git",
        "-f",
        "-",
    ];
    let out = ControlPlane::shared().kubectl_stdin(&args, manifests);
    assert!(out.status.success(), "kubectl apply: {}", text(&out));
}

/// Waits until every order of a customer that exists shows a snapshot.
async fn expect_snapshots(shop: &Shop) {
    eventually(
        WAIT,
        "every member's order to have its snapshot",
        || async {
            let orders = shop.orders().list(&ListParams::default()).await.ok()?;
            orders
                .items
                .iter()
                .filter(|o| o.spec.customer != "not-a-member")
                .all(|o| {
                    o.status
                        .as_ref()
                        .and_then(|s| s.customer_level.as_deref())
                        .is_some_and(|l| l != "Iron")
                })
                .then_some(())
        },
    )
    .await;
}

/// What a customer's status shows: score, level, (completed, canceled, open), settled history.
pub type Shown = (i64, Option<String>, (i64, i64, i64), Option<SettledHistory>);

/// Everything a restore must bring back, as the API server shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct State {
    pub customers: BTreeMap<String, Shown>,
    /// Per ledger: score, completed, canceled, absorbed.
    pub ledgers: BTreeMap<String, (i64, i64, i64, usize)>,
    /// Per order: its snapshot.
    pub snapshots: BTreeMap<String, Option<String>>,
}

pub async fn state(shop: &Shop) -> State {
    let lp = ListParams::default();
    let customers = shop.customers().list(&lp).await.expect("customers");
    let ledgers = shop.ledgers().list(&lp).await.expect("ledgers");
    let orders = shop.orders().list(&lp).await.expect("orders");
    State {
        customers: customers
            .items
            .iter()
            .map(|c| {
                let s = c.status.clone().unwrap_or_default();
                let counts = (s.completed_orders, s.canceled_orders, s.open_orders);
                (c.name_any(), (s.score, s.level, counts, s.settled))
            })
            .collect(),
        ledgers: ledgers
            .items
            .iter()
            .map(|l| {
                let s = &l.spec;
                let absorbed = s.absorbed.len();
                (
                    l.name_any(),
                    (s.score, s.completed_orders, s.canceled_orders, absorbed),
                )
            })
            .collect(),
        snapshots: orders
            .items
            .iter()
            .map(|o| {
                let level = o.status.as_ref().and_then(|s| s.customer_level.clone());
                (o.name_any(), level)
            })
            .collect(),
    }
}

/// Saves `kinds` of the shop's namespace as the backup procedure does: `kubectl get -o json
/// --show-managed-fields` (who applied an order from Git matters to settlement).
pub fn save(shop: &Shop, kinds: &str) -> PathBuf {
    let args = [
        "get",
        kinds,
        "-n",
        &shop.ns,
        "-o",
        "json",
        "--show-managed-fields",
    ];
    let out = ControlPlane::shared().kubectl(&args);
    assert!(out.status.success(), "kubectl get: {}", text(&out));
    let path = watchdog().unique_path("backup", ".json");
    std::fs::write(&path, &out.stdout).expect("write the backup");
    path
}

/// The cluster is lost: the operator stopped, every Ledger, Customer and Order deleted.
pub async fn lose(shop: &Shop, operator: &mut OperatorProcess) {
    operator.sigterm();
    assert!(operator.wait_exit(Duration::from_secs(20)).is_some());
    let out = ControlPlane::shared().kubectl(&[
        "delete",
        "orders,customers,ledgers",
        "--all",
        "-n",
        &shop.ns,
    ]);
    assert!(out.status.success(), "kubectl delete: {}", text(&out));
    eventually(WAIT, "an empty namespace", || async {
        let (empty, _) = (state(shop).await, ());
        (empty.customers.is_empty() && empty.ledgers.is_empty() && empty.snapshots.is_empty())
            .then_some(())
    })
    .await;
}

/// `reserve-operator restore FILE` as the restore identity; returns its report and whether it
/// says nothing was left out.
pub fn restore(file: &Path) -> (String, bool) {
    let out = std::process::Command::new(operator_bin!())
        .arg("restore")
        .arg(file)
        .args(["--as", RESTORE_USER, "--as-group", RESTORE_GROUP])
        .env("KUBECONFIG", ControlPlane::shared().kubeconfig())
        .output()
        .expect("run reserve-operator restore");
    (text(&out), out.status.success())
}

/// The restore identity's RBAC (manifests/restore), for restores by hand: applied once for
/// every test of this binary (applied by several at once, all but one would fail to create it).
pub fn install_restore_rbac() {
    static APPLIED: std::sync::Once = std::sync::Once::new();
    APPLIED.call_once(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/restore");
        let out = ControlPlane::shared().kubectl(&["apply", "-k", dir]);
        assert!(out.status.success(), "kubectl apply -k: {}", text(&out));
    });
}

/// Records the lowest score each customer's status shows from now on (a watch sees every
/// version), to prove none went below what it was.
pub struct Lowest {
    seen: Arc<Mutex<BTreeMap<String, i64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Lowest {
    pub fn watch(shop: &Shop) -> Lowest {
        let seen: Arc<Mutex<BTreeMap<String, i64>>> = Arc::default();
        let events = watcher(shop.customers(), watcher::Config::default())
            .default_backoff()
            .applied_objects();
        let record = seen.clone();
        let task = tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                // A failed watch backs off and goes on: keep recording.
                let Ok(customer) = event else { continue };
                let Some(status) = customer.status.as_ref().filter(|s| s.level.is_some()) else {
                    continue;
                };
                let mut seen = record.lock().unwrap();
                let lowest = seen.entry(customer.name_any()).or_insert(status.score);
                *lowest = (*lowest).min(status.score);
            }
        });
        Lowest { seen, task }
    }

    /// Customers whose status went below what `before` shows: (name, lowest, before).
    pub fn below(&self, before: &State) -> Vec<(String, i64, i64)> {
        let seen = self.seen.lock().unwrap();
        before
            .customers
            .iter()
            .filter_map(|(name, (score, ..))| {
                let lowest = *seen.get(name)?;
                (lowest < *score).then(|| (name.clone(), lowest, *score))
            })
            .collect()
    }
}

impl Drop for Lowest {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Anyone but the operator is refused what only the operator writes: a new Ledger (unless
/// `restorer`, whose power that is), a change to a Ledger, a change to a snapshot.
pub async fn refused(what: &str, client: &Client, ns: &str, restorer: bool) {
    let ledgers: Api<Ledger> = Api::namespaced(client.clone(), ns);
    let mut attempts = Vec::new();
    if !restorer {
        let forged = Ledger::new(
            "mallory",
            LedgerSpec {
                score: 1_000,
                ..LedgerSpec::default()
            },
        );
        let created = ledgers.create(&PostParams::default(), &forged).await;
        attempts.push(("a new ledger", created.map(drop)));
    }
    let more = json!({ "spec": { "score": 1_000 } });
    let changed = ledgers
        .patch("c0", &PatchParams::default(), &Patch::Merge(&more))
        .await;
    attempts.push(("a changed ledger", changed.map(drop)));
    let diamond = json!({ "status": { "customerLevel": "Diamond" } });
    let orders: Api<Order> = Api::namespaced(client.clone(), ns);
    let snapshot = orders
        .patch_status("live0-a", &PatchParams::default(), &Patch::Merge(&diamond))
        .await;
    attempts.push(("a changed snapshot", snapshot.map(drop)));
    for (attempt, result) in attempts {
        let error = result
            .err()
            .unwrap_or_else(|| panic!("{what}: {attempt} was accepted"));
        // Refused at admission, or nothing there to change (the cluster is lost meanwhile).
        assert!(
            matches!(&error, kube::Error::Api(s) if [403, 404, 422].contains(&s.code)),
            "{what}: {attempt}: {error}"
        );
    }
}

pub fn restore_identity() -> Identity {
    Identity {
        user: RESTORE_USER.into(),
        groups: vec![RESTORE_GROUP.into()],
    }
}
