//! Breaking things on purpose, with the operator as its own process: crashes, an API server
//! restart, etcd stopped, a leader killed or paused under load, users editing and deleting
//! objects, a missing permission. Whatever happens, every Customer ends exactly as the
//! operator's rules say from the stored Orders, no status ever shows a level that disagrees with
//! its score, and no customer-level snapshot changes once taken.
//!
//! Sizes scale with RESERVE_CHAOS_SCALE (default 1); `RESERVE_CHAOS_SCALE=5 cargo test --test
//! chaos -- --nocapture` is the heavy variant.

use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use k8s_openapi::api::events::v1::Event;
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams},
};
use reserve_operator::{
    crd::{Customer, OrderState},
    loyalty::{LevelPolicy, MISSING_CUSTOMER_LEVEL},
};
use reserve_testkit::{
    ControlPlane, Identity, Launch, OperatorProcess, Shop,
    control_plane::text,
    eventually, fixtures,
    invariants::Invariants,
    operator_bin, rbac,
    shop::grant_lease,
    workload::{Driver, Plan},
};
use tokio::sync::RwLock;

/// Restarting the API server or stopping etcd affects every test of this binary: those run alone.
static CONTROL_PLANE: RwLock<()> = RwLock::const_new(());

const CONVERGE: Duration = Duration::from_secs(90);
const CONCURRENCY: usize = 16;

fn scale() -> usize {
    std::env::var("RESERVE_CHAOS_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1)
}

/// Customers of the plan first; returns a driver for the rest.
async fn prepare(shop: &Shop, plan: &Plan) -> Driver {
    let driver = Driver::new(&shop.admin, &shop.ns, CONCURRENCY);
    driver
        .create_customers(plan)
        .await
        .expect("create the customers");
    driver
}

/// Plays the plan's orders in the background; resolves to the number of order transitions.
fn load(shop: &Shop, plan: &Plan) -> tokio::task::JoinHandle<usize> {
    play(Driver::new(&shop.admin, &shop.ns, CONCURRENCY), plan)
}

/// Plays the plan's orders in the background at `per_second` writes; resolves to the number
/// of order transitions.
fn paced_load(shop: &Shop, plan: &Plan, per_second: f64) -> tokio::task::JoinHandle<usize> {
    play(
        Driver::new(&shop.admin, &shop.ns, CONCURRENCY).paced(per_second),
        plan,
    )
}

fn play(driver: Driver, plan: &Plan) -> tokio::task::JoinHandle<usize> {
    let plan = plan.clone();
    tokio::spawn(async move {
        driver.play(&plan).await.expect("the load runs");
        plan.transitions()
    })
}

fn report(
    what: &str,
    transitions: usize,
    (mismatches, checked): &(Vec<String>, usize),
    (violations, seen): &(Vec<String>, usize),
) {
    println!(
        "{what}: {transitions} order transitions, {checked} customers checked, {seen} statuses watched, {} invariant violations, {} mismatches",
        violations.len(),
        mismatches.len()
    );
    assert!(
        violations.is_empty(),
        "{what}: invariants broken: {violations:#?}"
    );
    assert!(
        mismatches.is_empty(),
        "{what}: not exact after convergence: {mismatches:#?}"
    );
}

fn replica(identity: &Identity, name: &str, ns: &str, lease_ns: &str) -> OperatorProcess {
    Launch::replica(operator_bin!(), identity, name, ns, lease_ns).spawn()
}

/// Which of `replicas` reports that it leads, once one does.
async fn leader_of(replicas: &[OperatorProcess]) -> usize {
    eventually(Duration::from_secs(40), "a leader", || async {
        for (i, replica) in replicas.iter().enumerate() {
            if replica.probe().is_leader().await == Some(true) {
                return Some(i);
            }
        }
        None
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_killed_again_and_again_under_load_ends_exact() {
    let _shared = CONTROL_PLANE.read().await;
    let shop = Shop::new("crash").await;
    let identity = shop.identity("operator").await;
    let policy = LevelPolicy::default();
    let invariants = Invariants::watch(shop.customers(), shop.orders(), policy.clone());
    let plan = Plan::new(40 * scale(), 1200 * scale(), 7);
    prepare(&shop, &plan).await;
    shop.order("lonely", "nobody-here", 3, OrderState::Completed)
        .await;

    let args = ["--no-leader-election"];
    let mut operator = shop.operator_process(operator_bin!(), &identity, &args);
    let load = load(&shop, &plan);
    // Meanwhile: kill the operator at random moments and start it again; users edit customers;
    // one customer is deleted and created again.
    let mut rng = reserve_testkit::workload::Rng::new(7);
    let (mut kills, mut edits) = (0, 0);
    while !load.is_finished() || kills < 3 {
        tokio::time::sleep(Duration::from_millis(300 + rng.below(1200))).await;
        operator.kill();
        kills += 1;
        operator = shop.operator_process(operator_bin!(), &identity, &args);
        let victim = &plan.customers[rng.below(plan.customers.len() as u64) as usize];
        let patch = serde_json::json!({
            "metadata": { "labels": { "tier": format!("t{kills}") }, "annotations": { "note": format!("edit {kills}") } },
            "spec": { "displayName": format!("Edited {kills}") },
        });
        shop.customers()
            .patch(victim, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        edits += 1;
        if kills == 2 {
            shop.delete_customer(&plan.customers[0]).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            shop.customer(&plan.customers[0]).await;
        }
    }
    let transitions = load.await.unwrap();
    let exact = shop.converge(&policy, CONVERGE).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!("kills survived: {kills}, user edits: {edits}");
    report("crash test", transitions, &exact, &invariants.finish());

    // Every user edit is still there: the operator writes only status.
    let edited: Vec<Customer> = shop
        .customers()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|c| {
            c.metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key("note"))
        })
        .collect();
    assert!(!edited.is_empty());
    for customer in edited {
        let note = &customer.metadata.annotations.as_ref().unwrap()["note"];
        let n = note.trim_start_matches("edit ");
        assert_eq!(
            customer.metadata.labels.as_ref().unwrap()["tier"],
            format!("t{n}")
        );
        assert_eq!(
            customer.spec.display_name.as_deref(),
            Some(format!("Edited {n}").as_str())
        );
    }
    // An order whose customer never exists stays Iron, accepted, and says why; it blocked nothing.
    let lonely = shop.orders().get("lonely").await.unwrap().status.unwrap();
    assert_eq!(
        lonely.customer_level.as_deref(),
        Some(MISSING_CUSTOMER_LEVEL)
    );
    assert!(
        lonely
            .conditions
            .iter()
            .any(|c| c.reason == "CustomerNotFound" && c.status == "False"),
        "{lonely:?}"
    );
    let cp = ControlPlane::shared();
    if !cp.is_local() {
        return;
    }
    let writes: Vec<_> = cp
        .audit()
        .into_iter()
        .filter(|e| e.user() == identity.user && e.is_complete() && e.is_write())
        .collect();
    let other = writes.iter().find(|w| {
        w.object_ref.subresource.as_deref() != Some("status") && w.object_ref.resource != "events"
    });
    assert!(
        other.is_none(),
        "the operator wrote something other than a status: {other:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn api_server_restart_under_load_recovers_without_restarting_the_operator() {
    let cp = ControlPlane::shared();
    if cp.skip_unless_local("restarting the API server") {
        return;
    }
    let _alone = CONTROL_PLANE.write().await;
    let shop = Shop::new("restart").await;
    let identity = shop.identity("operator").await;
    let policy = LevelPolicy::default();
    let mut operator = shop.operator_process(operator_bin!(), &identity, &["--no-leader-election"]);
    let plan = Plan::new(30 * scale(), 600 * scale(), 11);
    let driver = prepare(&shop, &plan).await;
    // The first half of the orders before the outage, the rest after.
    let (before, after) = plan.orders.split_at(plan.orders.len() / 2);
    let first = Plan {
        orders: before.to_vec(),
        ..plan.clone()
    };
    let second = Plan {
        orders: after.to_vec(),
        ..plan.clone()
    };
    driver.play(&first).await.expect("the first half");
    let probe = operator.probe().clone();
    eventually(
        Duration::from_secs(30),
        "the operator to be ready",
        || async { probe.is_ready().await.then_some(()) },
    )
    .await;

    let outage = Instant::now();
    cp.stop_apiserver();
    // /readyz reflects the outage once the watches notice it.
    let unready = eventually(
        Duration::from_secs(30),
        "/readyz to report the outage",
        || async {
            let (code, body) = probe.get("/readyz").await?;
            (code == 503).then_some(body)
        },
    )
    .await;
    println!("during the outage /readyz said: {}", unready.trim());
    tokio::time::sleep(Duration::from_secs(2)).await;
    cp.start_apiserver().expect("kube-apiserver starts again");
    println!("API server was down for {:?}", outage.elapsed());

    driver.play(&second).await.expect("the second half");
    let exact = shop.converge(&policy, CONVERGE).await;
    eventually(Duration::from_secs(60), "/readyz to recover", || async {
        probe.is_ready().await.then_some(())
    })
    .await;
    assert!(
        operator.running(),
        "the operator must survive an API server restart"
    );
    assert!(!operator.logs().contains("panicked"), "{}", operator.logs());
    println!("restarts survived: 1");
    report(
        "API server restart",
        plan.transitions(),
        &exact,
        &(Vec::new(), 0),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_stopped_under_load_makes_the_operator_unready_until_it_is_back() {
    let cp = ControlPlane::shared();
    if cp.skip_unless_local("stopping etcd") {
        return;
    }
    let _alone = CONTROL_PLANE.write().await;
    let shop = Shop::new("etcd").await;
    let identity = shop.identity("operator").await;
    let policy = LevelPolicy::default();
    let operator = shop.operator_process(operator_bin!(), &identity, &["--no-leader-election"]);
    let probe = operator.probe().clone();
    let plan = Plan::new(30 * scale(), 600 * scale(), 13);
    prepare(&shop, &plan).await;
    eventually(
        Duration::from_secs(30),
        "the operator to be ready",
        || async { probe.is_ready().await.then_some(()) },
    )
    .await;
    let load = load(&shop, &plan);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let stopped = Instant::now();
    cp.stop_etcd();
    let unready = eventually(
        Duration::from_secs(30),
        "/readyz to name the failing writes",
        || async {
            let (code, body) = probe.get("/readyz").await?;
            (code == 503 && body.contains("status writes failing")).then_some(body)
        },
    )
    .await;
    println!(
        "{:.1}s after etcd stopped, /readyz said: {}",
        stopped.elapsed().as_secs_f64(),
        unready.trim()
    );
    tokio::time::sleep(Duration::from_secs(15).saturating_sub(stopped.elapsed())).await;
    cp.start_etcd().expect("etcd starts again");
    let down = stopped.elapsed();
    let restarted = Instant::now();
    eventually(Duration::from_secs(90), "/readyz to recover", || async {
        probe.is_ready().await.then_some(())
    })
    .await;
    println!(
        "etcd was down for {:.1}s; /readyz was 200 again {:.1}s after it came back",
        down.as_secs_f64(),
        restarted.elapsed().as_secs_f64()
    );
    let transitions = load.await.unwrap();
    let exact = shop.converge(&policy, CONVERGE).await;
    report("etcd stopped", transitions, &exact, &(Vec::new(), 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn leader_killed_under_load_hands_over_and_ends_exact() {
    let _shared = CONTROL_PLANE.read().await;
    let cp = ControlPlane::shared();
    let shop = Shop::new("leaders").await;
    let lease_ns = shop.beside("lease").await.ns;
    let mut identities = Vec::new();
    for name in ["a", "b"] {
        let identity = shop.identity(name).await;
        grant_lease(&shop.admin, &lease_ns, &identity).await;
        identities.push(identity);
    }
    let mut replicas: Vec<OperatorProcess> = identities
        .iter()
        .zip(["a", "b"])
        .map(|(identity, name)| replica(identity, name, &shop.ns, &lease_ns))
        .collect();
    let policy = LevelPolicy::default();
    let invariants = Invariants::watch(shop.customers(), shop.orders(), policy.clone());
    let plan = Plan::new(30 * scale(), 800 * scale(), 23);
    prepare(&shop, &plan).await;
    let load = load(&shop, &plan);
    let leader = leader_of(&replicas).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    replicas[leader].kill();
    let killed_at = Instant::now();
    let survivor = replicas[1 - leader].probe().clone();
    eventually(
        Duration::from_secs(40),
        "the standby to take over",
        || async { (survivor.is_leader().await == Some(true)).then_some(()) },
    )
    .await;
    println!("SIGKILLed leader replaced after {:?}", killed_at.elapsed());

    let transitions = load.await.unwrap();
    let exact = shop.converge(&policy, CONVERGE).await;
    report("leader killed", transitions, &exact, &invariants.finish());
    if !cp.is_local() {
        return;
    }
    // Status writes come from one identity at a time: the writer changes at most once.
    let writers: Vec<String> = cp
        .audit()
        .into_iter()
        .filter(|e| identities.iter().any(|i| i.user == e.user()) && e.is_status_write())
        .map(|e| e.user().to_owned())
        .collect();
    let switches = writers.windows(2).filter(|w| w[0] != w[1]).count();
    println!(
        "status writes: {} ({switches} writer switches)",
        writers.len()
    );
    assert!(
        switches <= 1,
        "status writes alternated between replicas {switches} times"
    );
}

/// The leader is paused (SIGSTOP) for longer than its Lease under load; the standby takes over;
/// the old leader is resumed (SIGCONT) and believes for a moment that it still leads. The API
/// server accepts no status write from it after the new leader's first, it publishes no Event,
/// and every status is exact soon after the load ends.
///
/// The load is paced, so that it goes on through the pause, the hand-over and the resume on any
/// machine, and what the new leader finds undone (every order changed while no replica led,
/// about `PACE` × 11 s writes' worth) is the same everywhere. Played as fast as the generator
/// could go, the whole plan ran during the pause on a fast machine and the new leader had to
/// catch up on all of it at once, at the API server's rate for status writes, which the machine's
/// speed and whatever else runs on it decide: the window closed first on slower machines.
#[tokio::test(flavor = "multi_thread")]
async fn a_paused_leader_resumed_after_a_hand_over_writes_nothing() {
    let cp = ControlPlane::shared();
    if cp.skip_unless_local("reading the audit log") {
        return;
    }
    let _shared = CONTROL_PLANE.read().await;
    let shop = Shop::new("paused").await;
    let lease_ns = shop.beside("lease").await.ns;
    let names = ["first", "second"];
    let mut identities = Vec::new();
    for name in names {
        let identity = shop.identity(name).await;
        grant_lease(&shop.admin, &lease_ns, &identity).await;
        identities.push(identity);
    }
    let replicas: Vec<OperatorProcess> = identities
        .iter()
        .zip(names)
        .map(|(identity, name)| replica(identity, name, &shop.ns, &lease_ns))
        .collect();
    let policy = LevelPolicy::default();
    let invariants = Invariants::watch(shop.customers(), shop.orders(), policy.clone());
    // At this pace the load lasts about 25 s (times the scale): through the pause (until the
    // standby takes over, 11 to 16 s), the resume 3 s later, and some more.
    const PACE: f64 = 50.0;
    let plan = Plan::new(20, 600 * scale(), 29);
    let driver = prepare(&shop, &plan).await;
    let leader = leader_of(&replicas).await;
    let (old, new) = (&replicas[leader], &replicas[1 - leader]);
    let (old_user, new_user) = (&identities[leader].user, &identities[1 - leader].user);
    let load = paced_load(&shop, &plan, PACE);
    tokio::time::sleep(Duration::from_secs(2)).await;

    old.signal(libc::SIGSTOP);
    let paused = Instant::now();
    let new_probe = new.probe().clone();
    eventually(
        Duration::from_secs(60),
        "the standby to take over",
        || async { (new_probe.is_leader().await == Some(true)).then_some(()) },
    )
    .await;
    let took_over = paused.elapsed();
    // The load goes on under the new leader, then the old one wakes up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    old.signal(libc::SIGCONT);
    let resumed = paused.elapsed();
    let old_probe = old.probe().clone();
    eventually(
        Duration::from_secs(30),
        "the old leader to step down",
        || async { (old_probe.is_leader().await == Some(false)).then_some(()) },
    )
    .await;
    assert!(
        !load.is_finished(),
        "the load was over before the old leader woke up"
    );
    let transitions = load.await.unwrap();
    let last_write = Instant::now();
    // More changes after the hand-over, while the old leader is awake again.
    let refunds: Vec<(&str, OrderState)> = plan
        .orders
        .iter()
        .filter(|o| o.fate.final_state() == OrderState::Completed)
        .take(20)
        .map(|o| (o.name.as_str(), OrderState::Canceled))
        .collect();
    driver.set_states(&refunds).await.expect("refunds");
    let exact = shop.converge(&policy, Duration::from_secs(5)).await;
    println!(
        "paused leader: standby took over {:.1}s after the pause, old leader resumed after {:.1}s, exact {:.1}s after the last load write",
        took_over.as_secs_f64(),
        resumed.as_secs_f64(),
        last_write.elapsed().as_secs_f64()
    );
    report(
        "paused leader",
        transitions + refunds.len(),
        &exact,
        &invariants.finish(),
    );

    // From the audit log: once the new leader has written, nothing from the old one lands.
    let audit = cp.audit();
    let in_shop = |e: &&reserve_testkit::audit::AuditEvent| e.in_namespace(&shop.ns);
    let first_new = audit
        .iter()
        .filter(in_shop)
        .find(|e| e.user() == *new_user && e.is_status_write())
        .map(|e| e.stage_timestamp)
        .expect("the new leader wrote statuses");
    let late: Vec<_> = audit
        .iter()
        .filter(in_shop)
        .filter(|e| e.user() == *old_user && e.is_status_write() && e.stage_timestamp > first_new)
        .collect();
    let refused = audit
        .iter()
        .filter(in_shop)
        .filter(|e| {
            e.user() == *old_user
                && e.is_complete()
                && e.object_ref.subresource.as_deref() == Some("status")
                && e.stage_timestamp > first_new
                && !e.succeeded()
        })
        .count();
    let withheld = old_probe
        .metrics()
        .await
        .expect("the old leader's metrics")
        .sum("reserve_status_writes_withheld_total", &[]);
    println!(
        "old leader after the hand-over: {} status writes accepted, {refused} refused by the API server, {withheld} withheld by its fence",
        late.len()
    );
    assert!(
        late.is_empty(),
        "status writes by the deposed leader landed: {late:#?}"
    );
    // Its own fence stopped it (the API server's preconditions are the second line).
    assert!(
        withheld >= 1.0,
        "the resumed leader withheld no write: its fence did not close"
    );
    // No LevelChanged Event from the old leader after the new one started writing.
    let events: Api<Event> = Api::namespaced(shop.admin.clone(), &shop.ns);
    let stale_events: Vec<_> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reporting_instance.as_deref() == Some(names[leader]))
        .filter(|e| e.event_time.as_ref().is_some_and(|t| t.0 > first_new))
        .collect();
    assert!(
        stale_events.is_empty(),
        "Events from the deposed leader: {stale_events:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_permission_is_reported_not_crashed_on() {
    let _shared = CONTROL_PLANE.read().await;
    let cp = ControlPlane::shared();
    let shop = Shop::new("denied").await;
    let identity = Identity::service_account(
        reserve_testkit::shop::OPERATOR_NAMESPACE,
        &format!("{}-limited", shop.ns),
    );
    // Everything the operator needs but the permission to write Order status.
    let role = format!(
        r#"{{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole","metadata":{{"name":"{0}"}},"rules":[
          {{"apiGroups":["reserve.coffeechain.io"],"resources":["customers","orders","ledgers"],"verbs":["get","list","watch"]}},
          {{"apiGroups":["reserve.coffeechain.io"],"resources":["customers/status"],"verbs":["patch"]}},
          {{"apiGroups":["events.k8s.io"],"resources":["events"],"verbs":["create"]}}]}}"#,
        identity.object_name()
    );
    let out = cp.kubectl_stdin(&["apply", "-f", "-"], &role);
    assert!(out.status.success(), "{}", text(&out));
    rbac::grant_cluster_role(&shop.admin, &identity, &identity.object_name()).await;
    let mut operator = shop.operator_process(operator_bin!(), &identity, &["--no-leader-election"]);
    let probe = operator.probe().clone();
    shop.customer("dora").await;
    shop.order("o1", "dora", 2, OrderState::Completed).await;
    let (code, body) = eventually(
        Duration::from_secs(30),
        "/readyz to report the refused permission",
        || async {
            let (code, body) = probe.get("/readyz").await?;
            body.contains("permission denied").then_some((code, body))
        },
    )
    .await;
    assert_eq!(code, 503);
    println!("/readyz: {}", body.trim());
    assert!(body.contains("orders"), "{body}");
    // The customer is still reconciled: its score counts the order's spec.state.
    shop.expect_customer("dora", 2, "Bronze", (1, 0, 0)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(operator.running(), "no crash loop:\n{}", operator.logs());
    let logs = operator.logs();
    assert!(
        logs.contains("permission denied: the operator's identity lacks an RBAC permission"),
        "{logs}"
    );
    assert!(logs.contains("forbidden"), "{logs}");
    // Backoff: a handful of attempts in a few seconds, not a hot loop.
    let attempts = logs.matches("permission denied: the operator").count();
    assert!(attempts < 20, "{attempts} attempts in a few seconds");
    let errors = probe
        .metric(
            "reserve_reconcile_errors_total",
            &[("controller", "order"), ("error", "forbidden")],
        )
        .await
        .unwrap_or_default();
    assert!(errors >= 1.0);
    println!("missing permission: {attempts} refused attempts logged, operator still running");
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_everything_in_a_namespace_under_load_disturbs_no_other_namespace() {
    let _shared = CONTROL_PLANE.read().await;
    let cp = ControlPlane::shared();
    let doomed = Shop::new("doomed").await;
    let kept = doomed.beside("kept").await;
    // One operator per namespace, under one identity with rights in these two namespaces only.
    let identity = Identity::service_account(
        reserve_testkit::shop::OPERATOR_NAMESPACE,
        &format!("{}-ns", doomed.ns),
    );
    for shop in [&doomed, &kept] {
        rbac::grant_in_namespace(
            &shop.admin,
            &shop.ns,
            &identity,
            "ClusterRole",
            "reserve-operator",
        )
        .await;
    }
    let mut operators: Vec<OperatorProcess> = [&doomed, &kept]
        .iter()
        .map(|shop| shop.operator_process(operator_bin!(), &identity, &["--no-leader-election"]))
        .collect();
    let policy = LevelPolicy::default();
    let plan = Plan::new(10, 300, 31);
    prepare(&doomed, &plan).await;
    let kept_driver = prepare(&kept, &plan).await;
    // Creations in the doomed namespace start failing once it is being deleted; that is expected.
    let doomed_load = async {
        let created = stream::iter(&plan.orders)
            .map(|order| {
                let object = fixtures::order(
                    &order.name,
                    &order.customer,
                    order.quantity,
                    OrderState::Completed,
                );
                let api = doomed.orders();
                async move { api.create(&Default::default(), &object).await.is_ok() }
            })
            .buffer_unordered(CONCURRENCY)
            .filter(|ok| std::future::ready(*ok))
            .count()
            .await;
        println!("orders created in the doomed namespace before it went: {created}");
    };
    let (_, ()) = tokio::join!(doomed_load, async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let out = cp.kubectl(&[
            "delete",
            "orders,customers",
            "--all",
            "-n",
            &doomed.ns,
            "--wait=false",
        ]);
        assert!(out.status.success(), "{}", text(&out));
        let out = cp.kubectl(&["delete", "namespace", &doomed.ns, "--wait=false"]);
        assert!(out.status.success(), "{}", text(&out));
        kept_driver
            .play(&plan)
            .await
            .expect("the load of the kept namespace");
    });
    let exact = kept.converge(&policy, CONVERGE).await;
    report(
        "namespace deleted under load",
        plan.transitions(),
        &exact,
        &(Vec::new(), 0),
    );
    for operator in &mut operators {
        assert!(operator.running(), "{}", operator.logs());
    }
    assert_eq!(
        kept.orders()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        300
    );
}
