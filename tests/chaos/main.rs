//! Breaking things on purpose, with the operator as its own process: crashes, an API server
//! restart, etcd stopped, a leader killed or paused under load, users editing and deleting
//! objects, a missing permission. Whatever happens, every Customer ends exactly as the
//! operator's rules say from the stored Orders, no status ever shows a level that disagrees with
//! its score, and no customer-level snapshot changes once taken.
//!
//! Sizes scale with RESERVE_CHAOS_SCALE (default 1); `RESERVE_CHAOS_SCALE=5 cargo test --test
//! chaos -- --nocapture` is the heavy variant.

mod crashes;
mod leaders;
mod scope;
mod store;

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
    ControlPlane, FAIL_AFTER, Identity, Launch, OperatorProcess, Shop,
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

/// Every status exact after a load: a deadline that means failure, for the heavy variant too.
fn converge_deadline() -> Duration {
    FAIL_AFTER * scale() as u32
}
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
    assert!(*seen > 0, "{what}: the invariants watched no status at all");
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
    reserve_testkit::operator::leader_of(&replicas.iter().collect::<Vec<_>>()).await
}
