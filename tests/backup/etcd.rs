//! etcd restored from an earlier snapshot while the operator keeps running, as etcd recommends
//! (`--bump-revision --mark-compacted`: every watch must list again) and without the bump (the
//! store's versions go back: the operator must notice by itself), and etcd's data directory
//! copied cold and put back with two replicas running. Either way it lists again,
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
use reserve_testkit::{
    ControlPlane, Launch, eventually, operator_bin, shop::grant_lease, watchdog,
};

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
            while let Some(event) = events.next().await {
                // A failed watch backs off and goes on: keep recording.
                let Ok(customer) = event else { continue };
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

/// More customers with open orders beside the settled history of [`build`], so the store moves
/// on by hundreds of versions between a copy and its restore.
const CROWD: usize = 40;
const CROWD_ORDERS: usize = 5;

fn crowd_order(customer: usize, n: usize) -> String {
    format!("o{customer}-{n}")
}

/// etcd's data directory copied cold and put back later (no `etcdutl`, no revision bump), with
/// two replicas running throughout. After the copy the rest of the cluster moves on (another
/// namespace's orders) and the replicas roll, so their watches list again and resume from the
/// store's version then, far above any order or customer of theirs. Put back, the store is
/// below that version: each watch resumes where the store has not been yet, and kube-apiserver
/// answers 504 "Too large resource version", never 410. Each replica must notice, list again,
/// say so on `/readyz` until it has, and converge on the restored store and on what changes
/// after it.
#[tokio::test(flavor = "multi_thread")]
async fn etcd_data_directory_copied_back_with_two_replicas_running() {
    let cp = ControlPlane::shared();
    if cp.skip_unless_local("restoring etcd's data directory") {
        return;
    }
    let _alone = STORE.write().await;
    let (shop, identity) = settling_shop("etcd-copy").await;
    let lease_ns = shop.beside("lease").await.ns;
    let mut identities = vec![(identity, "a")];
    identities.push((shop.settling_identity("b").await, "b"));
    let launch = |(identity, name): &(reserve_testkit::Identity, &str)| {
        Launch::replica(operator_bin!(), identity, name, &shop.ns, &lease_ns)
            .args(["--settle-after", SETTLE_AFTER])
            .spawn()
    };
    for (identity, _) in &identities {
        grant_lease(&shop.admin, &lease_ns, identity).await;
    }
    let mut replicas: Vec<_> = identities.iter().map(launch).collect();
    build(&shop).await;
    for c in 0..CROWD {
        shop.customer(&format!("crowd{c}")).await;
        // Open orders only: a final one would be settled a moment later, on one side or the
        // other of the copy.
        for n in 0..CROWD_ORDERS {
            let (name, customer) = (crowd_order(c, n), format!("crowd{c}"));
            shop.order(&name, &customer, 1 + n as i32, OrderState::Requested)
                .await;
        }
    }
    let (left, _) = shop.converge(&LevelPolicy::default(), WAIT).await;
    assert!(left.is_empty(), "{left:#?}");
    let copy = watchdog().unique_path("etcd-data", ".copy");
    cp.copy_etcd_data(&copy)
        .expect("a cold copy of etcd's data");
    let (left, _) = shop.converge(&LevelPolicy::default(), WAIT).await;
    assert!(left.is_empty(), "after the copy: {left:#?}");
    let before = state(&shop).await;

    // After the copy the cluster moves on: another shop's orders, which these replicas do not
    // watch. Then the replicas roll (a new version, a drained node): their watches list again,
    // at the store's version now.
    let neighbour = shop.beside("neighbour").await;
    let driver = reserve_testkit::workload::Driver::new(&shop.admin, &neighbour.ns, 16);
    let plan = reserve_testkit::workload::Plan::new(10, 600, 5);
    driver
        .create_customers(&plan)
        .await
        .expect("the neighbour's customers");
    driver.play(&plan).await.expect("the neighbour's orders");
    for (replica, identity) in replicas.iter_mut().zip(&identities) {
        replica.sigterm();
        assert!(replica.wait_exit(GRACE).is_some(), "a replica did not stop");
        *replica = launch(identity);
        let probe = replica.probe().clone();
        eventually(RECOVER, "the rolled replica ready", || async {
            probe.is_ready().await.then_some(())
        })
        .await;
    }
    let (left, _) = shop.converge(&LevelPolicy::default(), WAIT).await;
    assert!(left.is_empty(), "after the roll: {left:#?}");

    let readiness = Readiness::sample(&replicas);
    let restored_at = std::time::SystemTime::now();
    cp.restore_etcd_data(&copy)
        .expect("etcd's data directory put back");
    let back_at = std::time::SystemTime::now();
    assert_eq!(state(&shop).await, before, "not what the copy holds");
    // Right after the restore: completions and new orders.
    for c in 0..20 {
        shop.set_state(&crowd_order(c, 2), OrderState::Completed)
            .await;
    }
    for c in 0..10 {
        let customer = format!("crowd{c}");
        shop.order(&format!("after{c}"), &customer, 3, OrderState::Completed)
            .await;
    }
    // A deadline that means failure, not a speed: the replicas must find out by themselves.
    let (left, _) = shop.converge(&LevelPolicy::default(), RECOVER).await;
    if !left.is_empty() {
        for replica in &replicas {
            eprintln!(
                "---- a replica: /readyz {:?}, leader {:?}",
                replica.probe().get("/readyz").await,
                replica.probe().is_leader().await
            );
            let logs = replica.logs();
            let tail: Vec<_> = logs.lines().rev().take(80).collect();
            eprintln!(
                "---- a replica's log, last lines first ----\n{}",
                tail.join("\n")
            );
        }
        panic!("not exact after the restore: {left:#?}");
    }
    for probe in replicas.iter().map(|r| r.probe().clone()) {
        eventually(RECOVER, "both replicas ready again", || async {
            probe.is_ready().await.then_some(())
        })
        .await;
    }
    let samples = readiness.finish();
    for (replica, process) in replicas.iter().enumerate() {
        let logs = process.logs();
        assert!(!logs.contains("panicked"), "{logs}");
        // When it found out, by its own log, after the restore began.
        let noticed = logged_at(&logs, "listing again")
            .into_iter()
            .find(|at| *at > restored_at)
            .unwrap_or_else(|| panic!("replica {replica} did not list again:\n{logs}"));
        // Not ready from the store's return until it had found out.
        let ready_blind: Vec<_> = samples[replica]
            .iter()
            .filter(|(at, ready, _)| *ready && *at > back_at && *at < noticed)
            .collect();
        assert!(
            ready_blind.is_empty(),
            "replica {replica} said it was ready before it noticed the restore: {ready_blind:#?}"
        );
        println!(
            "replica {replica}: noticed the restore {:.2}s after the API server was back",
            noticed
                .duration_since(back_at)
                .unwrap_or_default()
                .as_secs_f64()
        );
    }
}

/// How long a replica may take to notice a restore and converge, at most: a failure, not a
/// speed (a restart of everything takes seconds).
const RECOVER: std::time::Duration = reserve_testkit::FAIL_AFTER;

/// The Deployment's terminationGracePeriodSeconds.
const GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// When each line of an operator's log that contains `needle` was written.
fn logged_at(logs: &str, needle: &str) -> Vec<std::time::SystemTime> {
    logs.lines()
        .filter(|line| line.contains(needle))
        .filter_map(|line| {
            // A line starts with its RFC 3339 time, in colour codes (`ESC [ ... m`).
            let mut plain = String::new();
            let mut chars = line.chars();
            while let Some(c) = chars.next() {
                if c == '\u{1b}' {
                    chars.by_ref().find(|c| *c == 'm');
                } else {
                    plain.push(c);
                }
            }
            let time = plain.split_whitespace().next()?;
            let at: k8s_openapi::jiff::Timestamp = time.parse().ok()?;
            Some(std::time::SystemTime::from(at))
        })
        .collect()
}

/// One answer of `/readyz`: when, whether ready, the reason.
type Sample = (std::time::SystemTime, bool, String);

/// What `/readyz` of each replica said, sampled every 100 ms.
struct Readiness {
    samples: Arc<Mutex<Vec<Vec<Sample>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Readiness {
    fn sample(replicas: &[reserve_testkit::OperatorProcess]) -> Readiness {
        let probes: Vec<_> = replicas.iter().map(|r| r.probe().clone()).collect();
        let samples: Arc<Mutex<Vec<Vec<_>>>> = Arc::new(Mutex::new(vec![Vec::new(); probes.len()]));
        let record = samples.clone();
        let task = tokio::spawn(async move {
            loop {
                for (i, probe) in probes.iter().enumerate() {
                    let answer = probe.get("/readyz").await;
                    let (ready, why) = match answer {
                        Some((code, body)) => (code == 200, body),
                        None => (false, "no answer".into()),
                    };
                    record.lock().unwrap()[i].push((std::time::SystemTime::now(), ready, why));
                }
                // A probe's cadence, as a kubelet's: nothing here waits for a state.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        });
        Readiness { samples, task }
    }

    fn finish(self) -> Vec<Vec<Sample>> {
        self.task.abort();
        self.samples.lock().unwrap().clone()
    }
}
