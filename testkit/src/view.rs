//! The Customers, Orders and Ledgers of a namespace as a watch shows them, kept current: what a test
//! waits on. A wait is a watch with a deadline, re-checked at every event, never a poll that
//! lists the namespace again and again (a list of every order several times a second costs the
//! API server as much as the work the test waits for).

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use futures::StreamExt;
use kube::{
    Api, Client, ResourceExt,
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher,
    },
};
use reserve_operator::{
    crd::{Customer, Ledger, Order},
    loyalty::{LevelPolicy, Standing, Tally},
};
use tokio::sync::watch;

/// What a watch shows of one namespace's Customers, Orders and Ledgers.
pub struct View {
    customers: Store<Customer>,
    orders: Store<Order>,
    ledgers: Store<Ledger>,
    changed: watch::Receiver<u64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl View {
    /// Starts watching `namespace`; returns once every kind is listed.
    pub async fn start(client: &Client, namespace: &str) -> View {
        let changes = watch::Sender::new(0u64);
        let (customers, customer_writer) = reflector::store();
        let (orders, order_writer) = reflector::store();
        let (ledgers, ledger_writer) = reflector::store();
        let tasks = vec![
            tokio::spawn(follow(
                Api::namespaced(client.clone(), namespace),
                ledger_writer,
                changes.clone(),
            )),
            tokio::spawn(follow(
                Api::namespaced(client.clone(), namespace),
                customer_writer,
                changes.clone(),
            )),
            tokio::spawn(follow(
                Api::namespaced(client.clone(), namespace),
                order_writer,
                changes.clone(),
            )),
        ];
        let view = View {
            customers,
            orders,
            ledgers,
            changed: changes.subscribe(),
            tasks,
        };
        for ready in [
            view.customers.wait_until_ready().await,
            view.orders.wait_until_ready().await,
            view.ledgers.wait_until_ready().await,
        ] {
            ready.expect("the watches of the view list the namespace");
        }
        view
    }

    /// Everything that differs from what the stored Orders say (see [`mismatches`]), and how
    /// many customers were checked.
    pub fn mismatches(&self, policy: &LevelPolicy) -> (Vec<String>, usize) {
        fn all<K: kube::Resource + Clone>(store: &Store<K>) -> Vec<K>
        where
            K::DynamicType: std::hash::Hash + Eq + Clone,
        {
            store.state().iter().map(|o| (**o).clone()).collect()
        }
        let (customers, orders, ledgers) =
            (all(&self.customers), all(&self.orders), all(&self.ledgers));
        mismatches(&customers, &orders, &ledgers, policy)
    }

    /// Waits until nothing differs, re-checking at each watch event, for at most `timeout`;
    /// returns what differs then (empty once exact) and how many customers were checked.
    pub async fn until_exact(
        &mut self,
        policy: &LevelPolicy,
        timeout: Duration,
    ) -> (Vec<String>, usize) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.changed.mark_unchanged();
            let result = self.mismatches(policy);
            if result.0.is_empty() {
                return result;
            }
            match tokio::time::timeout_at(deadline, self.changed.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return self.mismatches(policy),
            }
        }
    }
}

impl Drop for View {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn follow<K>(api: Api<K>, writer: reflector::store::Writer<K>, changes: watch::Sender<u64>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let events = watcher(api, watcher::Config::default()).default_backoff();
    let mut events = std::pin::pin!(events.reflect(writer));
    while events.next().await.is_some() {
        changes.send_modify(|n| *n += 1);
    }
}

/// What each customer's standing must be, from the orders that exist and its Ledger (the
/// operator's rules): the live orders as they are, and what the Ledger settled, less the orders
/// it absorbed that still exist (they count as they are now).
pub fn expected(
    customers: &[Customer],
    orders: &[Order],
    ledgers: &[Ledger],
    policy: &LevelPolicy,
) -> BTreeMap<String, Standing> {
    let mut tallies: BTreeMap<String, Tally> = customers
        .iter()
        .map(|c| (c.name_any(), Tally::default()))
        .collect();
    for order in orders {
        if let Some(tally) = tallies.get_mut(&order.spec.customer) {
            tally.count(order.spec.state, i64::from(order.spec.quantity));
        }
    }
    let live: BTreeSet<(String, String)> = orders
        .iter()
        .map(|o| (o.name_any(), o.uid().unwrap_or_default()))
        .collect();
    for ledger in ledgers {
        let Some(tally) = tallies.get_mut(&ledger.name_any()) else {
            continue;
        };
        let spec = &ledger.spec;
        let settled = Tally {
            score: spec.score,
            completed: spec.completed_orders,
            canceled: spec.canceled_orders,
            open: 0,
        };
        let still_live = Tally::of(
            spec.absorbed
                .iter()
                .filter(|a| live.contains(&(a.name.clone(), a.uid.clone())))
                .map(|a| (a.state, a.quantity)),
        );
        *tally = tally.plus(settled.minus(still_live));
    }
    tallies
        .into_iter()
        .map(|(name, tally)| (name, policy.standing(&tally)))
        .collect()
}

/// Customers whose status does not show their expected standing, and orders whose phase is not
/// their state; empty when the operator is exact. Also returns how many customers were checked.
pub fn mismatches(
    customers: &[Customer],
    orders: &[Order],
    ledgers: &[Ledger],
    policy: &LevelPolicy,
) -> (Vec<String>, usize) {
    let expected = expected(customers, orders, ledgers, policy);
    let mut problems = Vec::new();
    let mut orders: Vec<&Order> = orders.iter().collect();
    orders.sort_by_key(|o| o.name_any());
    for order in orders {
        let phase = order.status.as_ref().and_then(|s| s.phase);
        if phase != Some(order.spec.state) {
            problems.push(format!(
                "order {}: phase {phase:?}, state {}",
                order.name_any(),
                order.spec.state
            ));
        }
    }
    for customer in customers {
        let name = customer.name_any();
        let got = customer.status.as_ref().and_then(Standing::shown_by);
        if got.as_ref() != expected.get(&name) {
            problems.push(format!(
                "customer {name}: {got:?}, expected {:?}",
                expected.get(&name)
            ));
        }
    }
    (problems, expected.len())
}
