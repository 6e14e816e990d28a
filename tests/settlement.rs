//! Settlement on a real control plane, with the operator as its own process: final orders older
//! than the settlement age move into their customer's Ledger and are deleted, and no score
//! moves, not even for an instant: not after a crash at any step, a restart mid-batch, a refund
//! between two steps, a customer deleted and created again, or a namespace that opts out.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::api::events::v1::Event;
use kube::{
    Api,
    api::PostParams,
    runtime::{WatchStreamExt, watcher},
};
use reserve_operator::{
    controller::settlement::FAULT_INJECTION,
    crd::{Ledger, LedgerSpec, OrderState},
};
use reserve_testkit::{
    ControlPlane, FAIL_AFTER, Identity, Launch, OperatorProcess, Shop, control_plane::text,
    eventually, operator_bin,
};

use OrderState::{Canceled, Completed, Requested};

const SETTLE_AFTER: &str = "2s";
const WAIT: Duration = FAIL_AFTER;

/// A shop whose namespace opted in, and an identity allowed to settle.
async fn settling_shop(prefix: &str) -> (Shop, Identity) {
    let shop = Shop::new(prefix).await;
    shop.settlement_label(Some("enabled")).await;
    let identity = shop.settling_identity("operator").await;
    (shop, identity)
}

fn operator(shop: &Shop, identity: &Identity, fault: Option<&str>) -> OperatorProcess {
    let mut launch = Launch::new(operator_bin!(), &shop.kubeconfig(identity)).args([
        "--namespace",
        &shop.ns,
        "--no-leader-election",
        "--settle-after",
        SETTLE_AFTER,
    ]);
    if let Some(step) = fault {
        launch = launch.env(FAULT_INJECTION, step);
    }
    launch.spawn()
}

/// Records every (score, completed, canceled) a customer's status shows, from a watch (every
/// version the API server has), until dropped.
struct Scores {
    seen: Arc<Mutex<BTreeSet<(i64, i64, i64)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Scores {
    fn watch(shop: &Shop, customer: &str) -> Scores {
        let seen = Arc::new(Mutex::new(BTreeSet::new()));
        let config = watcher::Config::default().fields(&format!("metadata.name={customer}"));
        let stream = watcher(shop.customers(), config)
            .default_backoff()
            .applied_objects();
        let record = seen.clone();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                if let Ok(customer) = event
                    && let Some(s) = customer.status
                    && s.observed_generation.unwrap_or_default() > 0
                {
                    record
                        .lock()
                        .unwrap()
                        .insert((s.score, s.completed_orders, s.canceled_orders));
                }
            }
        });
        Scores { seen, task }
    }

    fn seen(&self) -> BTreeSet<(i64, i64, i64)> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Scores {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn ledger(shop: &Shop, customer: &str) -> Option<LedgerSpec> {
    shop.ledgers()
        .get_opt(customer)
        .await
        .unwrap()
        .map(|l| l.spec)
}

/// Waits until the customer's ledger is settled (nothing absorbed) with this score and counts.
async fn expect_ledger(shop: &Shop, customer: &str, score: i64, completed: i64, canceled: i64) {
    let what =
        format!("ledger {customer}: {score} points, {completed} completed, {canceled} canceled");
    eventually(WAIT, &what, || async {
        ledger(shop, customer).await.filter(|l| {
            (l.score, l.completed_orders, l.canceled_orders) == (score, completed, canceled)
                && l.absorbed.is_empty()
        })
    })
    .await;
}

/// Waits until `op` has completed two more settlement passes than now: at least one whole pass
/// started after this call, so what it would settle, it has.
async fn two_passes(op: &OperatorProcess) {
    let passes = || async {
        op.probe()
            .metric("reserve_settlement_passes_total", &[])
            .await
            .expect("reserve_settlement_passes_total")
    };
    let now = passes().await;
    eventually(WAIT, "two settlement passes", || async {
        (passes().await >= now + 2.0).then_some(())
    })
    .await;
}

async fn expect_orders(shop: &Shop, names: &[&str]) {
    let want: BTreeSet<String> = names.iter().map(|n| n.to_string()).collect();
    eventually(WAIT, &format!("orders {want:?} left"), || async {
        let left = shop.order_names().await;
        (left == want).then_some(())
    })
    .await;
}

/// An Order as a GitOps tool applies it: `kubectl apply`, client-side or server-side.
fn apply_order(shop: &Shop, name: &str, customer: &str, quantity: i32, server_side: bool) {
    let manifest = format!(
        "apiVersion: reserve.coffeechain.io/v1\nkind: Order\nmetadata:\n  name: {name}\n  \
         namespace: {ns}\nspec:\n  customer: {customer}\n  product: Latte\n  quantity: {quantity}\n  \
         state: Completed\n",
        ns = shop.ns
    );
    let mut args = vec!["apply", "-f", "-"];
    if server_side {
        args.push("--server-side");
    }
    let out = ControlPlane::shared().kubectl_stdin(&args, &manifest);
    assert!(out.status.success(), "kubectl apply: {}", text(&out));
}

#[tokio::test]
async fn old_final_orders_move_into_the_ledger_and_no_score_moves() {
    let (shop, identity) = settling_shop("settle").await;
    for customer in ["alice", "bob"] {
        shop.customer(customer).await;
    }
    shop.order("a1", "alice", 3, Completed).await;
    shop.order("a2", "alice", 4, Canceled).await;
    shop.order("a3", "alice", 5, Requested).await;
    shop.order("b1", "bob", 2, Completed).await;
    // Kept in Git: never settled, or the tool would create them again.
    apply_order(&shop, "git-csa", "alice", 1, false);
    apply_order(&shop, "git-ssa", "alice", 1, true);

    let mut op = operator(&shop, &identity, None);
    shop.expect_customer("alice", 5, "Silver", (3, 1, 1)).await;
    let alice = Scores::watch(&shop, "alice");
    expect_orders(&shop, &["a3", "git-csa", "git-ssa"]).await;
    expect_ledger(&shop, "alice", 3, 1, 1).await;
    expect_ledger(&shop, "bob", 2, 1, 0).await;
    shop.expect_customer("bob", 2, "Bronze", (1, 0, 0)).await;

    // Completed later, a3 is settled later, with its contribution unchanged.
    shop.set_state("a3", Completed).await;
    shop.expect_customer("alice", 10, "Gold", (4, 1, 0)).await;
    expect_ledger(&shop, "alice", 8, 2, 1).await;
    expect_orders(&shop, &["git-csa", "git-ssa"]).await;
    let seen = alice.seen();
    assert_eq!(
        seen,
        [(5, 3, 1), (10, 4, 1)].into(),
        "alice's status showed a score or count that no set of orders gave her"
    );
    drop(alice);

    // One Event per batch on the customer, as a series: one object per customer, whose count
    // is the number of batches (alice: a1 and a2, then a3 later); the counter counts orders.
    let settled: Vec<Event> = Api::<Event>::namespaced(shop.admin.clone(), &shop.ns)
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("Settled"))
        .collect();
    let of = |customer: &str| -> Vec<&Event> {
        settled
            .iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(customer))
            .collect()
    };
    let (alice_events, bob_events) = (of("alice"), of("bob"));
    assert_eq!(
        (alice_events.len(), bob_events.len()),
        (1, 1),
        "{settled:#?}"
    );
    let batches = |e: &Event| e.series.as_ref().map_or(1, |s| s.count);
    assert!(batches(alice_events[0]) >= 2, "{:#?}", alice_events[0]);
    assert_eq!(
        alice_events[0].note.as_deref(),
        Some("final orders settled into the ledger, a batch per count; the score is unchanged")
    );
    assert!(batches(bob_events[0]) >= 1);
    let counted = op
        .probe()
        .metric("reserve_orders_settled_total", &[])
        .await
        .unwrap();
    assert_eq!(counted, 4.0);
    assert_eq!(op.probe().metric("reserve_ledgers", &[]).await, Some(2.0));

    // The ledger outlives its customer: created again, alice gets her history back.
    shop.delete_customer("alice").await;
    two_passes(&op).await;
    assert!(ledger(&shop, "alice").await.is_some());
    shop.customer("alice").await;
    shop.expect_customer("alice", 10, "Gold", (4, 1, 0)).await;

    // A new level policy re-levels from ledger and live orders.
    op.sigterm();
    assert!(op.wait_exit(Duration::from_secs(30)).is_some());
    let mut relevel = Launch::new(operator_bin!(), &shop.kubeconfig(&identity))
        .args(["--namespace", &shop.ns, "--no-leader-election"])
        .args(["--levels", "Bronze=0,Silver=3,Gold=9,Platinum=10"])
        .spawn();
    shop.expect_customer("alice", 10, "Platinum", (4, 1, 0))
        .await;
    shop.expect_customer("bob", 2, "Bronze", (1, 0, 0)).await;
    relevel.sigterm();
    relevel.wait_exit(Duration::from_secs(15));
}

#[tokio::test]
async fn an_opted_out_namespace_keeps_its_orders_and_a_name_settled_before_is_a_new_order() {
    let (shop, identity) = settling_shop("settle-out").await;
    shop.customer("carol").await;
    shop.order("c1", "carol", 6, Completed).await;
    let mut op = operator(&shop, &identity, None);
    expect_orders(&shop, &[]).await;
    expect_ledger(&shop, "carol", 6, 1, 0).await;

    // Opted out, nothing is settled any more, and an order created under a settled name is
    // a new order: it counts, once, beside the settled one.
    shop.settlement_label(None).await;
    two_passes(&op).await;
    shop.order("c1", "carol", 6, Completed).await;
    shop.order("c2", "carol", 1, Canceled).await;
    shop.expect_customer("carol", 12, "Gold", (2, 1, 0)).await;
    // Old enough to settle (the age is the condition itself), and looked at since.
    tokio::time::sleep(humantime::parse_duration(SETTLE_AFTER).unwrap()).await;
    two_passes(&op).await;
    expect_orders(&shop, &["c1", "c2"]).await;
    expect_ledger(&shop, "carol", 6, 1, 0).await;
    shop.expect_customer("carol", 12, "Gold", (2, 1, 0)).await;

    // Ledgers are the operator's alone: anyone else is refused at admission.
    let forged = Ledger::new(
        "mallory",
        LedgerSpec {
            score: 1_000,
            ..LedgerSpec::default()
        },
    );
    let err = shop
        .ledgers()
        .create(&PostParams::default(), &forged)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("only the reserve-operator"),
        "{err}"
    );
    op.sigterm();
    op.wait_exit(Duration::from_secs(30));
}

/// Stops the operator right after `step` of a settlement, checks what that step left, then
/// lets a fresh operator finish: every score stays exact throughout.
async fn crash_after(step: &str, refund_between: bool) {
    let (shop, identity) = settling_shop(&format!("crash-{}", &step[13..])).await;
    shop.customer("dave").await;
    for (i, quantity) in [2, 3, 4, 5, 6].iter().enumerate() {
        shop.order(&format!("d{i}"), "dave", *quantity, Completed)
            .await;
    }
    shop.order("open", "dave", 7, Requested).await;
    let mut op = operator(&shop, &identity, Some(step));
    shop.expect_customer("dave", 20, "Diamond", (5, 0, 1)).await;
    let dave = Scores::watch(&shop, "dave");
    let exit = op
        .wait_exit(WAIT)
        .expect("the fault point stops the operator");
    assert!(!exit.success(), "{step}: {exit:?}");
    assert!(op.logs().contains("fault injection"), "{}", op.logs());

    let left = shop.order_names().await;
    let spec = ledger(&shop, "dave")
        .await
        .expect("the ledger was written first");
    let absorbed: BTreeSet<String> = spec.absorbed.iter().map(|a| a.name.clone()).collect();
    let gone: BTreeSet<String> = (0..5)
        .map(|i| format!("d{i}"))
        .filter(|name| !left.contains(name))
        .collect();
    // A pass takes the orders due when it runs: all five, or the first of them when their
    // receipts (from which their age counts) were written across a pass. Each step leaves its
    // mark on the orders it took.
    let settled = match step {
        "settle-after-absorb" => {
            assert!(
                !absorbed.is_empty() && gone.is_empty(),
                "{step}: {absorbed:?} {left:?}"
            );
            &absorbed
        }
        "settle-after-delete" => {
            assert!(
                !absorbed.is_empty() && absorbed == gone,
                "{step}: {absorbed:?} {left:?}"
            );
            &gone
        }
        _ => {
            assert!(
                absorbed.is_empty() && !gone.is_empty(),
                "{step}: {absorbed:?} {left:?}"
            );
            &gone
        }
    };
    assert!(left.contains("open"), "{step}: {left:?}");
    // d0..d4 have quantities 2..6.
    let quantities: i64 = settled
        .iter()
        .map(|name| name[1..].parse::<i64>().unwrap() + 2)
        .sum();
    assert_eq!(
        spec.score, quantities,
        "{step}: the ledger counts {settled:?}"
    );

    let (score, completed, canceled) = if refund_between {
        // A refund of an absorbed order before its deletion: the order must count as refunded,
        // and the ledger gives it back.
        shop.set_state("d4", Canceled).await;
        (14, 4, 1)
    } else {
        (20, 5, 0)
    };
    let mut again = operator(&shop, &identity, None);
    let level = if score == 20 { "Diamond" } else { "Gold" };
    shop.expect_customer("dave", score, level, (completed, canceled, 1))
        .await;
    // A refunded order is given back, then settled on its own once old enough.
    expect_orders(&shop, &["open"]).await;
    expect_ledger(&shop, "dave", score, completed, canceled).await;
    let seen = dave.seen();
    let allowed: BTreeSet<_> = [(20, 5, 0), (score, completed, canceled)].into();
    assert!(seen.is_subset(&allowed), "{step}: dave showed {seen:?}");
    again.sigterm();
    again.wait_exit(Duration::from_secs(15));
}

#[tokio::test]
async fn a_crash_after_any_step_of_a_settlement_leaves_every_score_exact() {
    for step in [
        "settle-after-absorb",
        "settle-after-delete",
        "settle-after-forget",
    ] {
        crash_after(step, false).await;
    }
    crash_after("settle-after-absorb", true).await;
}

#[tokio::test]
async fn killed_mid_batch_and_restarted_the_operator_finishes_exactly() {
    let (shop, identity) = settling_shop("settle-kill").await;
    let customers = ["erin", "frank", "grace"];
    for customer in customers {
        shop.customer(customer).await;
    }
    let per_customer = 120;
    let orders: Vec<_> = customers
        .iter()
        .flat_map(|customer| {
            (0..per_customer).map(move |i| {
                let state = if i % 4 == 0 { Canceled } else { Completed };
                reserve_testkit::fixtures::order(&format!("{customer}-{i}"), customer, 1, state)
            })
        })
        .collect();
    let api = shop.orders();
    futures::future::join_all(orders.iter().map(|order| {
        let api = api.clone();
        async move { api.create(&PostParams::default(), order).await.unwrap() }
    }))
    .await;
    let (score, completed, canceled) = (90, 90, 30);
    let mut op = operator(&shop, &identity, None);
    shop.expect_customer("erin", score, "Diamond", (completed, canceled, 0))
        .await;
    // Kill it while it deletes.
    eventually(WAIT, "settlement under way", || async {
        (shop.order_names().await.len() < customers.len() * per_customer).then_some(())
    })
    .await;
    op.kill();
    let mut again = operator(&shop, &identity, None);
    expect_orders(&shop, &[]).await;
    for customer in customers {
        expect_ledger(&shop, customer, score, completed, canceled).await;
        shop.expect_customer(customer, score, "Diamond", (completed, canceled, 0))
            .await;
    }
    again.sigterm();
    again.wait_exit(Duration::from_secs(15));
}
