//! Breaking things on purpose: operator crashes, an API server restart, a leader killed under
//! load, users editing and deleting objects, a missing permission. Whatever happens, every
//! Customer ends exactly as an independent computation from the stored Orders says, no status
//! ever shows a level that disagrees with its score, and no customer-level snapshot changes
//! once taken.
//!
//! Sizes scale with RESERVE_CHAOS_SCALE (default 1: about 2,300 order transitions per load);
//! `RESERVE_CHAOS_SCALE=5 cargo test --test chaos -- --nocapture` is the heavy variant.

mod scenario;
mod support;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{StreamExt, TryStreamExt, stream};
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use reserve_operator::{
    crd::{Customer, Order, OrderState},
    loyalty::{LevelPolicy, MISSING_CUSTOMER_LEVEL, Tally},
};
use scenario::{Scenario, free_port, grant_cluster_admin, is_write};
use support::{ControlPlane, OperatorProcess, eventually, fresh_namespace};
use tokio::sync::RwLock;

/// The API server restart affects every test of this binary: it runs alone.
static APISERVER: RwLock<()> = RwLock::const_new(());

const CONVERGE: Duration = Duration::from_secs(90);
const CONCURRENCY: usize = 16;

fn scale() -> usize {
    std::env::var("RESERVE_CHAOS_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1)
}

/// A small deterministic generator, so a failing run can be repeated with its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the load does to each order: the states it is moved through after creation.
fn plan(orders: usize, customers: usize, seed: u64) -> Vec<(String, String, i32, Vec<OrderState>)> {
    use OrderState::*;
    let mut rng = Rng(seed);
    (0..orders)
        .map(|i| {
            let steps = match rng.below(20) {
                0..=11 => vec![Completed],
                12..=14 => vec![Completed, Canceled],
                15..=17 => vec![Canceled],
                _ => vec![],
            };
            let customer = format!("c{}", rng.below(customers as u64));
            (format!("o{i}"), customer, 1 + rng.below(5) as i32, steps)
        })
        .collect()
}

/// Creates the orders, then applies their state changes in a shuffled order, `CONCURRENCY` at a
/// time. Returns the number of order transitions (creations + state changes).
async fn drive(s: &Scenario, plan: &[(String, String, i32, Vec<OrderState>)], seed: u64) -> usize {
    stream::iter(plan)
        .for_each_concurrent(CONCURRENCY, |(name, customer, qty, _)| {
            s.order(name, customer, *qty, OrderState::Requested)
        })
        .await;
    // Each order's steps stay in order; orders interleave.
    let mut rng = Rng(seed ^ 0x5eed);
    let mut queues: Vec<(usize, usize)> = plan
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.3.is_empty())
        .map(|(i, _)| (i, 0))
        .collect();
    let mut sequence = Vec::new();
    while !queues.is_empty() {
        let pick = rng.below(queues.len() as u64) as usize;
        let (order, step) = queues[pick];
        sequence.push((order, plan[order].3[step]));
        if step + 1 == plan[order].3.len() {
            queues.swap_remove(pick);
        } else {
            queues[pick].1 += 1;
        }
    }
    // Steps of one order must not overtake each other: run each wave of "first steps", then
    // "second steps".
    let waves: Vec<Vec<(usize, OrderState)>> = {
        let mut seen: HashMap<usize, usize> = HashMap::new();
        let mut waves: Vec<Vec<_>> = vec![Vec::new(), Vec::new()];
        for (order, state) in &sequence {
            let n = seen.entry(*order).or_default();
            waves[*n].push((*order, *state));
            *n += 1;
        }
        waves
    };
    for wave in &waves {
        stream::iter(wave)
            .for_each_concurrent(CONCURRENCY, |(order, state)| {
                s.set_state(&plan[*order].0, *state)
            })
            .await;
    }
    plan.len() + sequence.len()
}

/// Watches Customers and Orders of a namespace and records every status that breaks an
/// invariant: a level that disagrees with its score, a negative score, a snapshot that changed.
struct Invariants {
    violations: Arc<Mutex<Vec<String>>>,
    statuses_seen: Arc<Mutex<usize>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Invariants {
    fn watch(s: &Scenario, policy: LevelPolicy) -> Self {
        let violations = Arc::new(Mutex::new(Vec::new()));
        let statuses_seen = Arc::new(Mutex::new(0));
        let customers = {
            let (violations, seen) = (violations.clone(), statuses_seen.clone());
            let stream = watcher(s.customers(), watcher::Config::default())
                .default_backoff()
                .applied_objects();
            tokio::spawn(async move {
                let mut stream = std::pin::pin!(stream);
                while let Ok(Some(customer)) = stream.try_next().await {
                    let Some(status) = customer.status.as_ref() else {
                        continue;
                    };
                    *seen.lock().unwrap() += 1;
                    let name = customer.metadata.name.clone().unwrap_or_default();
                    if status.score < 0 {
                        violations
                            .lock()
                            .unwrap()
                            .push(format!("customer {name}: negative score {}", status.score));
                    }
                    if status
                        .level
                        .as_deref()
                        .is_some_and(|level| level != policy.level_for(status.score))
                    {
                        violations.lock().unwrap().push(format!(
                            "customer {name}: level {:?} with score {}",
                            status.level, status.score
                        ));
                    }
                }
            })
        };
        let orders = {
            let (violations, seen) = (violations.clone(), statuses_seen.clone());
            let stream = watcher(s.orders(), watcher::Config::default())
                .default_backoff()
                .applied_objects();
            tokio::spawn(async move {
                let mut snapshots: HashMap<String, String> = HashMap::new();
                let mut stream = std::pin::pin!(stream);
                while let Ok(Some(order)) = stream.try_next().await {
                    let Some(level) = order.status.as_ref().and_then(|s| s.customer_level.clone())
                    else {
                        continue;
                    };
                    *seen.lock().unwrap() += 1;
                    // Keyed by uid: an order deleted and created again is a new order.
                    let key = order.metadata.uid.clone().unwrap_or_default();
                    if level == MISSING_CUSTOMER_LEVEL {
                        if let Some(taken) = snapshots.get(&key) {
                            violations
                                .lock()
                                .unwrap()
                                .push(format!("order {key}: snapshot {taken} went back to Iron"));
                        }
                        continue;
                    }
                    match snapshots.get(&key) {
                        Some(taken) if *taken != level => violations
                            .lock()
                            .unwrap()
                            .push(format!("order {key}: snapshot changed {taken} -> {level}")),
                        Some(_) => {}
                        None => {
                            snapshots.insert(key, level);
                        }
                    }
                }
            })
        };
        Invariants {
            violations,
            statuses_seen,
            tasks: vec![customers, orders],
        }
    }

    fn finish(self) -> (Vec<String>, usize) {
        for task in &self.tasks {
            task.abort();
        }
        let violations = self.violations.lock().unwrap().clone();
        let seen = *self.statuses_seen.lock().unwrap();
        (violations, seen)
    }
}

/// Waits until every Customer of the namespace has the status an independent computation from
/// the stored Orders gives, and every Order's phase is its spec.state. Returns the mismatches
/// left at the deadline (none on success) and the number of customers checked.
async fn converge_exactly(s: &Scenario, policy: &LevelPolicy) -> (Vec<String>, usize) {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let mismatches = mismatches(s, policy).await;
        if mismatches.0.is_empty() || Instant::now() > deadline {
            return mismatches;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn mismatches(s: &Scenario, policy: &LevelPolicy) -> (Vec<String>, usize) {
    let orders = s.orders().list(&ListParams::default()).await.unwrap().items;
    let customers = s
        .customers()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let mut by_customer: BTreeMap<String, Vec<(Option<OrderState>, i64)>> = BTreeMap::new();
    let mut problems = Vec::new();
    for order in &orders {
        let name = order.metadata.name.clone().unwrap_or_default();
        let phase = order.status.as_ref().and_then(|s| s.phase);
        if phase != Some(order.spec.state) {
            problems.push(format!(
                "order {name}: phase {phase:?}, state {:?}",
                order.spec.state
            ));
        }
        // The truth is what users asked for: spec.state.
        by_customer
            .entry(order.spec.customer.clone())
            .or_default()
            .push((Some(order.spec.state), i64::from(order.spec.quantity)));
    }
    for customer in &customers {
        let name = customer.metadata.name.clone().unwrap_or_default();
        let tally = Tally::of(by_customer.get(&name).cloned().unwrap_or_default());
        let status = customer.status.clone().unwrap_or_default();
        let got = (
            status.score,
            status.level.clone(),
            status.completed_orders,
            status.canceled_orders,
            status.open_orders,
        );
        let want = (
            tally.score,
            Some(policy.level_for(tally.score).to_owned()),
            tally.completed,
            tally.canceled,
            tally.open,
        );
        if got != want {
            problems.push(format!(
                "customer {name}: status {got:?}, expected {want:?}"
            ));
        }
    }
    (problems, customers.len())
}

fn report(
    what: &str,
    transitions: usize,
    checked: usize,
    violations: &[String],
    mismatches: &[String],
    seen: usize,
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

#[tokio::test]
async fn operator_killed_again_and_again_under_load_ends_exact() {
    let _shared = APISERVER.read().await;
    let (customers, orders) = (40 * scale(), 1200 * scale());
    let seed = 7;
    let mut s = Scenario::start("crash", &[]).await;
    let policy = LevelPolicy::default();
    let invariants = Invariants::watch(&s, policy.clone());
    for c in 0..customers {
        s.customer(&format!("c{c}")).await;
    }
    s.order("lonely", "nobody-here", 3, OrderState::Completed)
        .await;

    let plan = plan(orders, customers, seed);
    let load = {
        let s2 = s.clone_without_operator();
        let plan = plan.clone();
        tokio::spawn(async move { drive(&s2, &plan, seed).await })
    };
    // Meanwhile: kill the operator at random moments and start it again; users edit customers;
    // one customer is deleted and created again.
    let mut rng = Rng(seed);
    let mut kills = 0;
    let mut edits = 0;
    while !load.is_finished() || kills < 3 {
        tokio::time::sleep(Duration::from_millis(300 + rng.below(1200))).await;
        let mut operator = s.operator.take().expect("operator running");
        operator.kill();
        kills += 1;
        s.start_operator(&[]);
        let victim = format!("c{}", rng.below(customers as u64));
        let patch = serde_json::json!({
            "metadata": { "labels": { "tier": format!("t{kills}") }, "annotations": { "note": format!("edit {kills}") } },
            "spec": { "displayName": format!("Edited {kills}") },
        });
        s.customers()
            .patch(&victim, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        edits += 1;
        if kills == 2 {
            s.delete_customer("c0").await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            s.customer("c0").await;
        }
    }
    let transitions = load.await.unwrap();
    let (mismatches, checked) = converge_exactly(&s, &policy).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (violations, seen) = invariants.finish();
    println!("kills survived: {kills}, user edits: {edits}");
    report(
        "crash test",
        transitions,
        checked,
        &violations,
        &mismatches,
        seen,
    );

    // Every user edit is still there: the operator writes only status.
    let edited: Vec<Customer> = s
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
    // An order whose customer never exists stays Iron and says so; it blocked nothing.
    let lonely = s.orders().get("lonely").await.unwrap().status.unwrap();
    assert_eq!(
        lonely.customer_level.as_deref(),
        Some(MISSING_CUSTOMER_LEVEL)
    );
    assert_eq!(lonely.conditions[0].reason, "CustomerNotFound");
    let writes: Vec<_> = s.operator_requests().into_iter().filter(is_write).collect();
    assert!(
        writes
            .iter()
            .all(|w| w.subresource.as_deref() == Some("status") || w.resource == "events"),
        "the operator wrote something other than a status: {:?}",
        writes
            .iter()
            .find(|w| w.subresource.as_deref() != Some("status") && w.resource != "events")
    );
}

#[tokio::test]
async fn api_server_restart_under_load_recovers_without_restarting_the_operator() {
    let cp = ControlPlane::get();
    if cp.skip_unless_local("restarting the API server") {
        return;
    }
    let _alone = APISERVER.write().await;
    let (customers, orders) = (30 * scale(), 600 * scale());
    let mut s = Scenario::start("restart", &[]).await;
    let policy = LevelPolicy::default();
    for c in 0..customers {
        s.customer(&format!("c{c}")).await;
    }
    let plan = plan(orders, customers, 11);
    // The first half of the orders before the outage, the rest after.
    let (before, after) = plan.split_at(orders / 2);
    let mut transitions = drive(&s, before, 11).await;
    eventually(
        Duration::from_secs(30),
        "the operator to be ready",
        || async { (s.probe("/readyz").await?.0 == 200).then_some(()) },
    )
    .await;

    let outage = Instant::now();
    cp.stop_apiserver();
    // /readyz reflects the outage once the watches notice it.
    let unready = eventually(
        Duration::from_secs(30),
        "/readyz to report the outage",
        || async {
            let (code, body) = s.probe("/readyz").await?;
            (code == 503).then_some(body)
        },
    )
    .await;
    println!("during the outage /readyz said: {}", unready.trim());
    tokio::time::sleep(Duration::from_secs(2)).await;
    cp.start_apiserver();
    println!("API server was down for {:?}", outage.elapsed());

    transitions += drive(&s, after, 12).await;
    let (mismatches, checked) = converge_exactly(&s, &policy).await;
    eventually(Duration::from_secs(60), "/readyz to recover", || async {
        (s.probe("/readyz").await?.0 == 200).then_some(())
    })
    .await;
    let operator = s.operator.as_mut().unwrap();
    assert!(
        operator.running(),
        "the operator must survive an API server restart:\n{}",
        operator.logs()
    );
    assert!(!operator.logs().contains("panicked"), "{}", operator.logs());
    println!("restarts survived: 1");
    report(
        "API server restart",
        transitions,
        checked,
        &[],
        &mismatches,
        0,
    );
}

#[tokio::test]
async fn leader_killed_under_load_hands_over_and_ends_exact() {
    let _shared = APISERVER.read().await;
    let cp = ControlPlane::get();
    let (customers, orders) = (30 * scale(), 800 * scale());
    // Two replicas, each with its own identity so the audit log tells them apart.
    let mut s = Scenario::start("leaders", &[]).await;
    s.operator.take();
    let lease_ns = fresh_namespace(&s.admin, "lease").await;
    let mut replicas = Vec::new();
    for name in ["a", "b"] {
        let user = format!("{}-{name}", s.user);
        grant_cluster_admin(&user);
        let port = free_port();
        let process = OperatorProcess::spawn(
            &cp.kubeconfig_as(&user, &[]),
            &[
                "run",
                "--namespace",
                &s.ns,
                "--lease-namespace",
                &lease_ns,
                "--identity",
                name,
                "--probe-addr",
                &format!("127.0.0.1:{port}"),
            ],
        );
        replicas.push((user, port, process));
    }
    let policy = LevelPolicy::default();
    let invariants = Invariants::watch(&s, policy.clone());
    for c in 0..customers {
        s.customer(&format!("c{c}")).await;
    }
    let plan = plan(orders, customers, 23);
    let load = {
        let s2 = s.clone_without_operator();
        let plan = plan.clone();
        tokio::spawn(async move { drive(&s2, &plan, 23).await })
    };
    // Find the leader, then kill it mid-load.
    let probes: Vec<Scenario> = replicas
        .iter()
        .map(|r| Scenario {
            probe_port: r.1,
            ..s.clone_without_operator()
        })
        .collect();
    let leader = eventually(Duration::from_secs(30), "a leader", || {
        let probes = &probes;
        async move {
            for (i, probe) in probes.iter().enumerate() {
                if probe.metric("reserve_leader").await == Some(1.0) {
                    return Some(i);
                }
            }
            None
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    replicas[leader].2.kill();
    let killed_at = Instant::now();
    let survivor = 1 - leader;
    let probe = &probes[survivor];
    eventually(
        Duration::from_secs(40),
        "the standby to take over",
        || async { (probe.metric("reserve_leader").await == Some(1.0)).then_some(()) },
    )
    .await;
    println!("SIGKILLed leader replaced after {:?}", killed_at.elapsed());

    let transitions = load.await.unwrap();
    let (mismatches, checked) = converge_exactly(&s, &policy).await;
    let (violations, seen) = invariants.finish();
    report(
        "leader killed",
        transitions,
        checked,
        &violations,
        &mismatches,
        seen,
    );

    // Status writes come from one identity at a time: the writer changes at most once.
    let users: Vec<String> = replicas.iter().map(|r| r.0.clone()).collect();
    let writers: Vec<String> = cp
        .audit()
        .into_iter()
        .filter(|e| {
            users.contains(&e.user)
                && e.subresource.as_deref() == Some("status")
                && e.verb == "patch"
                && e.stage == "ResponseComplete"
        })
        .map(|e| e.user)
        .collect();
    let switches = writers.windows(2).filter(|w| w[0] != w[1]).count();
    println!(
        "status writes: {} ({} writer switches)",
        writers.len(),
        switches
    );
    assert!(
        switches <= 1,
        "status writes alternated between replicas {switches} times"
    );
}

#[tokio::test]
async fn a_missing_permission_is_reported_not_crashed_on() {
    let _shared = APISERVER.read().await;
    let cp = ControlPlane::get();
    let admin = cp.client().await;
    let ns = fresh_namespace(&admin, "denied").await;
    let user = format!("limited-{ns}");
    // Everything the operator needs but the permission to write Order status.
    let role = format!(
        r#"{{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole","metadata":{{"name":"{user}"}},"rules":[
          {{"apiGroups":["reserve.coffeechain.io"],"resources":["customers","orders"],"verbs":["get","list","watch"]}},
          {{"apiGroups":["reserve.coffeechain.io"],"resources":["customers/status"],"verbs":["patch"]}},
          {{"apiGroups":["events.k8s.io"],"resources":["events"],"verbs":["create"]}}]}}"#
    );
    assert!(
        cp.kubectl_stdin(&["apply", "-f", "-"], &role)
            .status
            .success()
    );
    assert!(
        cp.kubectl(&[
            "create",
            "clusterrolebinding",
            &user,
            &format!("--clusterrole={user}"),
            &format!("--user={user}")
        ])
        .status
        .success()
    );
    let port = free_port();
    let mut operator = OperatorProcess::spawn(
        &cp.kubeconfig_as(&user, &[]),
        &[
            "run",
            "--no-leader-election",
            "--namespace",
            &ns,
            "--probe-addr",
            &format!("127.0.0.1:{port}"),
        ],
    );
    let s = Scenario {
        ns: ns.clone(),
        admin: admin.clone(),
        user,
        kubeconfig: cp.kubeconfig().to_path_buf(),
        operator: None,
        probe_port: port,
    };
    s.customer("dora").await;
    s.order("o1", "dora", 2, OrderState::Completed).await;
    let (code, body) = eventually(
        Duration::from_secs(30),
        "/readyz to report the refused permission",
        || async {
            let (code, body) = s.probe("/readyz").await?;
            body.contains("permission denied").then_some((code, body))
        },
    )
    .await;
    assert_eq!(code, 503);
    println!("/readyz: {}", body.trim());
    assert!(body.contains("orders"), "{body}");
    // The customer is still reconciled; its order is not accepted, so it counts as open.
    s.expect_customer("dora", 0, "Bronze", (0, 0, 1)).await;
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
    let errors = s
        .metric("reserve_reconcile_errors_total{controller=\"order\",error=\"forbidden\"}")
        .await
        .unwrap_or_default();
    assert!(errors >= 1.0);
    println!("missing permission: {attempts} refused attempts logged, operator still running");
}

#[tokio::test]
async fn deleting_everything_in_a_namespace_under_load_disturbs_no_other_namespace() {
    let _shared = APISERVER.read().await;
    let cp = ControlPlane::get();
    let mut doomed = Scenario::start("doomed", &[]).await;
    doomed.operator.take();
    let kept_ns = fresh_namespace(&doomed.admin, "kept").await;
    let kept = Scenario {
        ns: kept_ns.clone(),
        ..doomed.clone_without_operator()
    };
    // One operator per namespace, under one identity with rights in these two namespaces only.
    let user = format!("{}-ns", doomed.user);
    for ns in [&doomed.ns, &kept_ns] {
        let out = cp.kubectl(&[
            "create",
            "rolebinding",
            &user,
            "--clusterrole=cluster-admin",
            &format!("--user={user}"),
            "-n",
            ns,
        ]);
        assert!(out.status.success());
    }
    let port = free_port();
    let mut operators = Vec::new();
    for ns in [&doomed.ns, &kept_ns] {
        operators.push(OperatorProcess::spawn(
            &cp.kubeconfig_as(&user, &[]),
            &[
                "run",
                "--no-leader-election",
                "--namespace",
                ns,
                "--probe-addr",
                &format!(
                    "127.0.0.1:{}",
                    if operators.is_empty() {
                        port
                    } else {
                        free_port()
                    }
                ),
            ],
        ));
    }
    let policy = LevelPolicy::default();
    for s in [&doomed, &kept] {
        for c in 0..10 {
            s.customer(&format!("c{c}")).await;
        }
    }
    let plan = plan(300, 10, 31);
    // Creations in the doomed namespace start failing once it is being deleted; that is expected.
    let doomed_load = async {
        let created = stream::iter(&plan)
            .map(|(name, customer, qty, _)| {
                let order = Order::new(
                    name,
                    reserve_operator::crd::OrderSpec {
                        customer: customer.clone(),
                        product: "Tea".into(),
                        quantity: *qty,
                        state: OrderState::Completed,
                    },
                );
                let api = doomed.orders();
                async move { api.create(&Default::default(), &order).await.is_ok() }
            })
            .buffer_unordered(CONCURRENCY)
            .filter(|ok| std::future::ready(*ok))
            .count()
            .await;
        println!("orders created in the doomed namespace before it went: {created}");
    };
    let (_, b) = tokio::join!(doomed_load, async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let out = cp.kubectl(&[
            "delete",
            "orders,customers",
            "--all",
            "-n",
            &doomed.ns,
            "--wait=false",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = cp.kubectl(&["delete", "namespace", &doomed.ns, "--wait=false"]);
        assert!(out.status.success());
        drive(&kept, &plan, 32).await
    });
    let (mismatches, checked) = converge_exactly(&kept, &policy).await;
    report(
        "namespace deleted under load",
        b,
        checked,
        &[],
        &mismatches,
        0,
    );
    for operator in &mut operators {
        assert!(operator.running(), "{}", operator.logs());
    }
    let orders: Api<Order> = Api::namespaced(kept.admin.clone(), &kept.ns);
    assert_eq!(
        orders
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        300
    );
}
