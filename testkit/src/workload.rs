//! One workload for the chaos tests and the benchmark: customers, orders and what happens to
//! each order, seeded so a run can be repeated, with the statuses it must end in computed by the
//! operator's own rules.

use std::{collections::BTreeMap, future::Future, time::Duration};

use futures::{StreamExt, stream};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use reserve_operator::{
    crd::{Customer, Order, OrderState},
    loyalty::{LevelPolicy, Standing, Tally},
};
use serde_json::json;

use crate::fixtures;

/// Field manager of the generator's writes.
pub const GENERATOR: &str = "reserve-generator";

/// What happens to an order after it is created (`Requested`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Stays Requested (10%).
    Open,
    /// Requested -> Completed (70%).
    Completed,
    /// Requested -> Completed -> Canceled, a refund (10%).
    Refunded,
    /// Requested -> Canceled (10%).
    Canceled,
}

impl Fate {
    /// The states the order moves through after its creation.
    pub fn steps(self) -> &'static [OrderState] {
        use OrderState::*;
        match self {
            Fate::Open => &[],
            Fate::Completed => &[Completed],
            Fate::Refunded => &[Completed, Canceled],
            Fate::Canceled => &[Canceled],
        }
    }

    pub fn final_state(self) -> OrderState {
        self.steps()
            .last()
            .copied()
            .unwrap_or(OrderState::Requested)
    }
}

#[derive(Clone, Debug)]
pub struct PlannedOrder {
    pub name: String,
    pub customer: String,
    pub quantity: i32,
    pub fate: Fate,
}

impl PlannedOrder {
    pub fn object(&self, state: OrderState) -> Order {
        fixtures::order(&self.name, &self.customer, self.quantity, state)
    }
}

/// splitmix64: small, seeded, good enough to spread orders.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Customers, orders and their fates.
#[derive(Clone, Debug)]
pub struct Plan {
    pub customers: Vec<String>,
    pub orders: Vec<PlannedOrder>,
    pub seed: u64,
}

impl Plan {
    /// `customers` customers (`cust-00000`, ...) and `orders` orders (`ord-000000`, ...), each
    /// for a random customer, of 1-5 coffees, with a random fate.
    pub fn new(customers: usize, orders: usize, seed: u64) -> Plan {
        Self::named(customers, orders, seed, "")
    }

    /// Like [`Plan::new`], with order names `ord-<prefix>NNNNNN` so several plans can share a
    /// namespace.
    pub fn named(customers: usize, orders: usize, seed: u64, prefix: &str) -> Plan {
        let mut rng = Rng::new(seed);
        let customer_names: Vec<String> = (0..customers).map(customer_name).collect();
        let orders = (0..orders)
            .map(|i| PlannedOrder {
                name: format!("ord-{prefix}{i:06}"),
                customer: customer_name(rng.below(customers as u64) as usize),
                quantity: 1 + rng.below(5) as i32,
                fate: match rng.below(100) {
                    0..70 => Fate::Completed,
                    70..80 => Fate::Refunded,
                    80..90 => Fate::Canceled,
                    _ => Fate::Open,
                },
            })
            .collect();
        Plan {
            customers: customer_names,
            orders,
            seed,
        }
    }

    /// The state changes after creation, as waves: every order's first step (shuffled), then
    /// every second step (shuffled), so no step overtakes an earlier one of the same order.
    pub fn waves(&self) -> Vec<Vec<(&str, OrderState)>> {
        let mut rng = Rng::new(self.seed ^ 0x5eed);
        let mut waves: Vec<Vec<(&str, OrderState)>> = Vec::new();
        for order in &self.orders {
            for (i, state) in order.fate.steps().iter().enumerate() {
                if waves.len() <= i {
                    waves.push(Vec::new());
                }
                waves[i].push((order.name.as_str(), *state));
            }
        }
        for wave in &mut waves {
            for i in (1..wave.len()).rev() {
                wave.swap(i, rng.below(i as u64 + 1) as usize);
            }
        }
        waves
    }

    /// Order transitions the plan makes: creations plus state changes.
    pub fn transitions(&self) -> usize {
        self.orders.len()
            + self
                .orders
                .iter()
                .map(|o| o.fate.steps().len())
                .sum::<usize>()
    }

    /// What every customer must end with, by the operator's own rules.
    pub fn expected(&self, policy: &LevelPolicy) -> BTreeMap<String, Standing> {
        let mut tallies: BTreeMap<&str, Tally> = self
            .customers
            .iter()
            .map(|c| (c.as_str(), Tally::default()))
            .collect();
        for order in &self.orders {
            if let Some(tally) = tallies.get_mut(order.customer.as_str()) {
                tally.count(order.fate.final_state(), i64::from(order.quantity));
            }
        }
        tallies
            .into_iter()
            .map(|(name, tally)| (name.to_owned(), policy.standing(&tally)))
            .collect()
    }
}

pub fn customer_name(i: usize) -> String {
    format!("cust-{i:05}")
}

/// Plays a plan into a namespace, `concurrency` requests at a time, retrying what a busy API
/// server refuses for the moment.
pub struct Driver {
    customers: Api<Customer>,
    orders: Api<Order>,
    pub concurrency: usize,
    /// Writes started per second at most (none: as fast as the API server answers).
    pace: Option<f64>,
}

impl Driver {
    pub fn new(client: &Client, namespace: &str, concurrency: usize) -> Self {
        Self {
            customers: Api::namespaced(client.clone(), namespace),
            orders: Api::namespaced(client.clone(), namespace),
            concurrency: concurrency.max(1),
            pace: None,
        }
    }

    /// Starts at most `per_second` writes a second, so a plan takes the same time on any
    /// machine fast enough to keep up, and the work it leaves at any moment is known.
    pub fn paced(mut self, per_second: f64) -> Self {
        self.pace = Some(per_second);
        self
    }

    pub async fn create_customers(&self, plan: &Plan) -> Result<Duration, String> {
        let pp = post_params();
        let jobs = plan.customers.iter().map(|name| {
            let customer = fixtures::customer(name);
            let (api, pp) = (&self.customers, &pp);
            async move { create(&format!("customer {name}"), || api.create(pp, &customer)).await }
        });
        self.run_all(jobs.collect()).await
    }

    /// Creates the orders in `state` (`Requested` when the plan plays out step by step).
    pub async fn create_orders(
        &self,
        orders: &[PlannedOrder],
        state: impl Fn(&PlannedOrder) -> OrderState,
    ) -> Result<Duration, String> {
        let pp = post_params();
        let jobs = orders.iter().map(|order| {
            let object = order.object(state(order));
            let (api, pp) = (&self.orders, &pp);
            async move { create(&format!("order {}", order.name), || api.create(pp, &object)).await }
        });
        self.run_all(jobs.collect()).await
    }

    /// Merge-patches `spec.state` of each order.
    pub async fn set_states(&self, changes: &[(&str, OrderState)]) -> Result<Duration, String> {
        let pp = PatchParams {
            field_manager: Some(GENERATOR.into()),
            ..Default::default()
        };
        let jobs = changes.iter().map(|(name, state)| {
            let (api, pp) = (&self.orders, &pp);
            let patch = Patch::Merge(json!({ "spec": { "state": state } }));
            async move {
                retry(&format!("set {name} to {state}"), || {
                    api.patch(name, pp, &patch)
                })
                .await
                .map(drop)
            }
        });
        self.run_all(jobs.collect()).await
    }

    /// Creates every order (`Requested`) and plays every wave of state changes.
    pub async fn play(&self, plan: &Plan) -> Result<(), String> {
        self.create_orders(&plan.orders, |_| OrderState::Requested)
            .await?;
        for wave in plan.waves() {
            self.set_states(&wave).await?;
        }
        Ok(())
    }

    async fn run_all<Fut>(&self, jobs: Vec<Fut>) -> Result<Duration, String>
    where
        Fut: Future<Output = Result<(), String>>,
    {
        let start = std::time::Instant::now();
        let pace = self.pace;
        let at = tokio::time::Instant::now();
        // Each job starts no earlier than its turn at the pace (and no more than `concurrency`
        // run at once).
        let paced = jobs.into_iter().enumerate().map(|(i, job)| async move {
            if let Some(per_second) = pace {
                tokio::time::sleep_until(at + Duration::from_secs_f64(i as f64 / per_second)).await;
            }
            job.await
        });
        let mut results = stream::iter(paced).buffer_unordered(self.concurrency);
        while let Some(result) = results.next().await {
            result?;
        }
        Ok(start.elapsed())
    }
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(GENERATOR.into()),
        ..Default::default()
    }
}

/// Whether a failed request may succeed if sent again: throttled, server errors, timeouts, a
/// connection that broke.
pub fn retriable(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => status.code == 429 || status.code >= 500,
        kube::Error::SerdeError(_) | kube::Error::BuildRequest(_) => false,
        _ => true,
    }
}

/// Sends a request until it succeeds or fails for good, backing off between attempts (up to
/// 5 s apart), for as long as any outage the chaos tests make may last on a slow machine
/// ([`FAIL_AFTER`](crate::FAIL_AFTER)).
pub async fn retry<T, Fut>(what: &str, mut send: impl FnMut() -> Fut) -> Result<T, String>
where
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let deadline = tokio::time::Instant::now() + crate::FAIL_AFTER;
    let mut delay = Duration::from_millis(100);
    loop {
        match send().await {
            Ok(value) => return Ok(value),
            Err(error) if tokio::time::Instant::now() < deadline && retriable(&error) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(error) => return Err(format!("{what}: {error}")),
        }
    }
}

/// Creates an object; an `AlreadyExists` after a retried attempt means the first one landed.
async fn create<T, Fut>(what: &str, mut send: impl FnMut() -> Fut) -> Result<(), String>
where
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut retried = false;
    retry(what, || {
        let attempt = send();
        let was_retried = retried;
        retried = true;
        async move {
            match attempt.await {
                Err(kube::Error::Api(status)) if status.code == 409 && was_retried => Ok(()),
                other => other.map(drop),
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_is_repeatable_and_waves_keep_each_orders_steps_in_order() {
        let plan = Plan::new(20, 500, 7);
        let again = Plan::new(20, 500, 7);
        assert_eq!(
            plan.orders
                .iter()
                .map(|o| (&o.customer, o.quantity))
                .collect::<Vec<_>>(),
            again
                .orders
                .iter()
                .map(|o| (&o.customer, o.quantity))
                .collect::<Vec<_>>()
        );
        let waves = plan.waves();
        assert_eq!(waves.len(), 2);
        let refunded = plan
            .orders
            .iter()
            .filter(|o| o.fate == Fate::Refunded)
            .count();
        assert!(refunded > 0);
        assert_eq!(waves[1].len(), refunded);
        assert!(waves[1].iter().all(|(_, s)| *s == OrderState::Canceled));
        assert_eq!(
            plan.transitions(),
            500 + waves.iter().map(Vec::len).sum::<usize>()
        );
    }

    #[test]
    fn expected_statuses_follow_the_final_states() {
        let plan = Plan {
            customers: vec!["a".into(), "b".into()],
            orders: vec![
                PlannedOrder {
                    name: "1".into(),
                    customer: "a".into(),
                    quantity: 3,
                    fate: Fate::Completed,
                },
                PlannedOrder {
                    name: "2".into(),
                    customer: "a".into(),
                    quantity: 4,
                    fate: Fate::Refunded,
                },
                PlannedOrder {
                    name: "3".into(),
                    customer: "a".into(),
                    quantity: 2,
                    fate: Fate::Completed,
                },
                PlannedOrder {
                    name: "4".into(),
                    customer: "b".into(),
                    quantity: 1,
                    fate: Fate::Open,
                },
            ],
            seed: 0,
        };
        let expected = plan.expected(&LevelPolicy::default());
        assert_eq!(expected["a"].score, 5);
        assert_eq!(expected["a"].level, "Silver");
        assert_eq!(
            (
                expected["a"].completed,
                expected["a"].canceled,
                expected["a"].open
            ),
            (2, 1, 0)
        );
        assert_eq!((expected["b"].score, expected["b"].open), (0, 1));
    }
}
