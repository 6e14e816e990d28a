//! The figure users feel: with order transitions arriving at a steady rate, how long from the
//! generator's write (its answer) until a watch shows the customer's status, and the order's,
//! reflecting it. Optionally under a flood of order creations by another writer.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use reserve_operator::{
    crd::{Customer, Order, OrderState},
    loyalty::Tally,
};
use reserve_testkit::{
    fixtures,
    shop::fresh_namespace,
    workload::{Driver, GENERATOR, Plan, Rng, retry},
};
use serde_json::json;

use crate::{
    context::{Context, say},
    delay::{DelayParts, Scrape},
    figures::{Freshness, Latency},
    operator::{empty_namespace, operator_metrics, start_operator, wait_ready},
};

/// How long after the generator's last write the statuses may take to catch up: a transition
/// not shown by then is lost.
const CATCH_UP: Duration = Duration::from_secs(120);

#[derive(Clone, Copy)]
enum Step {
    Create,
    Complete,
    Refund,
}

/// What the generator did to one customer, in order: the tally after each transition, when the
/// write was answered, and when a watch first showed it.
#[derive(Default)]
struct History {
    tallies: Vec<Tally>,
    answered: Vec<Instant>,
    shown: Vec<Option<Instant>>,
    /// Orders by state, for picking the next transition.
    requested: Vec<(String, i64)>,
    completed: Vec<(String, i64)>,
    busy: bool,
    /// The status the watch showed last.
    showing: Option<Tally>,
}

type Histories = Arc<Mutex<HashMap<String, History>>>;

/// Of one order reaching one state: when the generator's write was answered, when a watch
/// first showed the spec in that state (the users' write, as the operator learns of it), and
/// when a watch first showed it as the order's phase.
#[derive(Default)]
struct Times {
    answered: Option<Instant>,
    seen: Option<Instant>,
    shown: Option<Instant>,
}

/// What the watch on the Orders saw: each (order, state)'s times, and the orders whose receipt
/// (phase, observed generation) is behind their spec.
#[derive(Default)]
struct Receipts {
    times: HashMap<(String, OrderState), Times>,
    behind: HashSet<String>,
}

type OrderTimes = Arc<Mutex<Receipts>>;

pub async fn run(ctx: &Context, flood: usize) -> Result<Freshness, String> {
    let customers = ctx.customers;
    let plan = Plan::new(customers, 0, ctx.seed);
    let ns = fresh_namespace(&ctx.generator, "bench-fresh").await;
    let driver = Driver::new(&ctx.generator, &ns, ctx.concurrency);
    driver.create_customers(&plan).await?;
    let mut operator = start_operator(ctx, &ns, &format!("operator-freshness-flood{flood}"));
    wait_ready(operator.probe(), Duration::from_secs(60)).await?;
    // Every customer's first status is written before the measurement starts.
    let before = loop {
        let metrics = operator_metrics(operator.probe()).await?;
        if metrics.status_writes_customer >= customers as f64 {
            break metrics;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let histories: Histories = Arc::new(Mutex::new(
        plan.customers
            .iter()
            .map(|c| (c.clone(), History::default()))
            .collect(),
    ));
    let order_times: OrderTimes = Arc::default();
    let scrape_before = Scrape::take(ctx, operator.probe()).await?;
    let watches = [
        tokio::spawn(watch_customers(
            ctx.client.clone(),
            ns.clone(),
            histories.clone(),
        )),
        tokio::spawn(watch_orders(
            ctx.client.clone(),
            ns.clone(),
            order_times.clone(),
        )),
    ];
    let flooding = (flood > 0).then(|| tokio::spawn(flood_orders(ctx.generator.clone(), flood)));

    // The generator: one transition every 1/rate seconds, each for a customer with none in flight.
    let orders: Api<Order> = Api::namespaced(ctx.generator.clone(), &ns);
    let mut rng = Rng::new(ctx.seed);
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / ctx.rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let apiserver_before = ctx.apiserver_cpu_seconds()?;
    let (etcd_before, bench_before) = ctx.etcd_and_bench_cpu_seconds()?;
    let started = Instant::now();
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let mut transitions = 0usize;
    let mut serial = 0usize;
    while started.elapsed() < Duration::from_secs_f64(ctx.seconds) {
        tokio::select! {
            _ = ticker.tick() => {}
            Some(result) = in_flight.next() => { result?; continue; }
        }
        let Some((customer, step, order)) =
            pick(&histories, &plan.customers, &mut rng, &mut serial)
        else {
            continue;
        };
        transitions += 1;
        let (orders, histories, order_times) =
            (orders.clone(), histories.clone(), order_times.clone());
        in_flight.push(async move {
            transition(&orders, &histories, &order_times, &customer, step, order).await
        });
    }
    while let Some(result) = in_flight.next().await {
        result?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let apiserver_cpu_percent = (ctx.apiserver_cpu_seconds()? - apiserver_before) / seconds * 100.0;
    let (etcd_after, bench_after) = ctx.etcd_and_bench_cpu_seconds()?;
    let etcd_cpu_percent = (etcd_after - etcd_before) / seconds * 100.0;
    let bench_cpu_percent = (bench_after - bench_before) / seconds * 100.0;
    let caught_up_seconds = caught_up(&histories, &order_times).await;
    for watch in watches {
        watch.abort();
    }
    let wrong_at_end = wrong_in_store(&ctx.client, &ns, &histories).await?;
    let parts = DelayParts::between(
        &scrape_before,
        &Scrape::take(ctx, operator.probe()).await?,
        ctx.flowschema,
    );
    let (flood_requests, flood_rejected) = match flooding {
        Some(task) => {
            task.abort();
            let _ = task.await;
            (
                FLOOD.0.load(std::sync::atomic::Ordering::Relaxed),
                FLOOD.1.load(std::sync::atomic::Ordering::Relaxed),
            )
        }
        None => (0, 0),
    };

    let after = operator_metrics(operator.probe()).await?;
    let stats = operator.stats().unwrap_or_default();
    operator.sigterm();
    operator.wait_exit(Duration::from_secs(30));
    // The next run (another rate, another binary) meets a store no larger than this one did.
    empty_namespace(&ctx.client, &ns).await?;
    let (customer, order, users_write_seen) = latencies(&histories, &order_times);
    let customer_p99_ms_by_minute = p99_by_minute(&histories, started);
    let per = |n: f64| n / transitions.max(1) as f64;
    let order_writes = after.status_writes_order - before.status_writes_order;
    let customer_writes = after.status_writes_customer - before.status_writes_customer;
    say(format!(
        "  freshness (flood {flood}): {transitions} transitions in {seconds:.1}s; customer p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; order p99 {:.0} ms; kube-apiserver CPU {apiserver_cpu_percent:.0}%",
        customer.p50_ms, customer.p99_ms, customer.max_ms, order.p99_ms
    ));
    say(format!(
        "  caught up {}; wrong in the store at the end: {wrong_at_end}",
        caught_up_seconds.map_or(format!("not within {CATCH_UP:?}"), |s| format!(
            "{s:.1} s after the last write"
        ))
    ));
    Ok(Freshness {
        operator_binary: ctx.operator_bin.display().to_string(),
        customers,
        rate_per_second: ctx.rate,
        seconds,
        flowschema: ctx.flowschema,
        flood_concurrency: flood,
        transitions,
        achieved_rate_per_second: transitions as f64 / seconds,
        customer,
        customer_p99_ms_by_minute,
        order,
        users_write_seen,
        parts,
        caught_up_seconds,
        wrong_at_end,
        order_status_writes_per_transition: per(order_writes),
        customer_status_writes_per_transition: per(customer_writes),
        writes_per_transition: per(order_writes + customer_writes),
        flood_requests,
        flood_rejected,
        apiserver_cpu_percent,
        etcd_cpu_percent,
        bench_cpu_percent,
        operator: crate::figures::OperatorFigures {
            peak_rss_kib: stats.peak_rss_kib,
            rss_kib: stats.rss_kib,
            cpu_seconds: stats.cpu_seconds,
            ..after
        },
    })
}

/// The next transition: a customer with nothing in flight, and what happens to it.
fn pick(
    histories: &Histories,
    customers: &[String],
    rng: &mut Rng,
    serial: &mut usize,
) -> Option<(String, Step, (String, i64))> {
    let mut histories = histories.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..8 {
        let customer = &customers[rng.below(customers.len() as u64) as usize];
        let history = histories.get_mut(customer)?;
        if history.busy {
            continue;
        }
        history.busy = true;
        let roll = rng.below(100);
        let (step, order) = if roll < 45 && !history.requested.is_empty() {
            let i = rng.below(history.requested.len() as u64) as usize;
            (Step::Complete, history.requested.swap_remove(i))
        } else if roll < 55 && !history.completed.is_empty() {
            let i = rng.below(history.completed.len() as u64) as usize;
            (Step::Refund, history.completed.swap_remove(i))
        } else {
            *serial += 1;
            (
                Step::Create,
                (format!("f-{serial:07}"), 1 + rng.below(5) as i64),
            )
        };
        return Some((customer.clone(), step, order));
    }
    None
}

async fn transition(
    orders: &Api<Order>,
    histories: &Histories,
    order_times: &OrderTimes,
    customer: &str,
    step: Step,
    (name, quantity): (String, i64),
) -> Result<(), String> {
    // The tally after this transition is recorded before the write is sent: the operator may
    // show it before the generator has read its answer (a status seen before the answer counts
    // as shown at once), and a tally recorded only after the answer would miss that status and
    // wait for the customer's next one.
    let at = {
        let mut histories = histories.lock().unwrap_or_else(|p| p.into_inner());
        let history = histories.get_mut(customer).expect("a known customer");
        let mut tally = history.tallies.last().copied().unwrap_or_default();
        match step {
            Step::Create => tally.open += 1,
            Step::Complete => {
                tally.open -= 1;
                tally.completed += 1;
                tally.score += quantity;
            }
            Step::Refund => {
                tally.completed -= 1;
                tally.canceled += 1;
                tally.score -= quantity;
            }
        }
        history.tallies.push(tally);
        history.answered.push(Instant::now());
        history.shown.push(None);
        history.tallies.len() - 1
    };
    let state = match step {
        Step::Create => {
            let object = fixtures::order(&name, customer, quantity as i32, OrderState::Requested);
            let pp = PostParams {
                field_manager: Some(GENERATOR.into()),
                ..Default::default()
            };
            retry(&format!("create {name}"), || orders.create(&pp, &object)).await?;
            OrderState::Requested
        }
        Step::Complete | Step::Refund => {
            let state = if matches!(step, Step::Complete) {
                OrderState::Completed
            } else {
                OrderState::Canceled
            };
            let patch = Patch::Merge(json!({ "spec": { "state": state } }));
            let pp = PatchParams {
                field_manager: Some(GENERATOR.into()),
                ..Default::default()
            };
            retry(&format!("set {name} to {state}"), || {
                orders.patch(&name, &pp, &patch)
            })
            .await?;
            state
        }
    };
    let answered = Instant::now();
    {
        let mut times = order_times.lock().unwrap_or_else(|p| p.into_inner());
        let times = &mut times.times;
        times.entry((name.clone(), state)).or_default().answered = Some(answered);
    }
    let mut histories = histories.lock().unwrap_or_else(|p| p.into_inner());
    let history = histories.get_mut(customer).expect("a known customer");
    history.answered[at] = answered;
    match step {
        Step::Create => history.requested.push((name, quantity)),
        Step::Complete => history.completed.push((name, quantity)),
        Step::Refund => {}
    }
    history.busy = false;
    Ok(())
}

/// Records, for every transition of every customer, when a watch first showed a status that
/// reflects it (the tally after it, or a later one).
async fn watch_customers(client: Client, ns: String, histories: Histories) {
    let api: Api<Customer> = Api::namespaced(client, &ns);
    let mut stream = std::pin::pin!(
        watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects()
    );
    while let Some(event) = stream.next().await {
        let Ok(customer) = event else { continue };
        let now = Instant::now();
        let name = customer.name_any();
        let Some(shown) = shown_tally(&customer) else {
            continue;
        };
        let mut histories = histories.lock().unwrap_or_else(|p| p.into_inner());
        let Some(history) = histories.get_mut(&name) else {
            continue;
        };
        history.showing = Some(shown);
        if let Some(j) = history.tallies.iter().rposition(|t| *t == shown) {
            for seen in history.shown.iter_mut().take(j + 1) {
                seen.get_or_insert(now);
            }
        }
    }
}

async fn watch_orders(client: Client, ns: String, times: OrderTimes) {
    let api: Api<Order> = Api::namespaced(client, &ns);
    let mut stream = std::pin::pin!(
        watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects()
    );
    while let Some(event) = stream.next().await {
        let Ok(order) = event else { continue };
        let now = Instant::now();
        let name = order.name_any();
        let mut receipts = times.lock().unwrap_or_else(|p| p.into_inner());
        let current = order.status.as_ref().is_some_and(|s| {
            s.phase == Some(order.spec.state) && s.observed_generation == order.metadata.generation
        });
        if current {
            receipts.behind.remove(&name);
        } else {
            receipts.behind.insert(name.clone());
        }
        let times = &mut receipts.times;
        times
            .entry((name.clone(), order.spec.state))
            .or_default()
            .seen
            .get_or_insert(now);
        if let Some(phase) = order.status.as_ref().and_then(|s| s.phase) {
            times
                .entry((name, phase))
                .or_default()
                .shown
                .get_or_insert(now);
        }
    }
}

/// Customer and order delays, and how late a watch showed the users' own writes.
fn latencies(histories: &Histories, order_times: &OrderTimes) -> (Latency, Latency, Latency) {
    let millis = |answered: Instant, shown: Instant| {
        shown.saturating_duration_since(answered).as_secs_f64() * 1000.0
    };
    let histories = histories.lock().unwrap_or_else(|p| p.into_inner());
    let (mut customer, mut missing) = (Vec::new(), 0);
    for history in histories.values() {
        for (answered, shown) in history.answered.iter().zip(&history.shown) {
            match shown {
                Some(shown) => customer.push(millis(*answered, *shown)),
                None => missing += 1,
            }
        }
    }
    let receipts = order_times.lock().unwrap_or_else(|p| p.into_inner());
    let times = &receipts.times;
    // A receipt that folds several transitions shows only the last phase: the earlier ones
    // count as shown when a later phase of the same order was.
    let later = |name: &str, state: OrderState| {
        let after: &[OrderState] = match state {
            OrderState::Requested => &[OrderState::Completed, OrderState::Canceled],
            OrderState::Completed => &[OrderState::Canceled],
            OrderState::Canceled => &[],
        };
        after
            .iter()
            .filter_map(|s| times.get(&(name.to_owned(), *s)).and_then(|t| t.shown))
            .min()
    };
    let (mut order, mut order_missing) = (Vec::new(), 0);
    let (mut seen, mut seen_missing) = (Vec::new(), 0);
    for ((name, state), t) in times.iter() {
        let Some(answered) = t.answered else { continue };
        match t.shown.or_else(|| later(name, *state)) {
            Some(shown) => order.push(millis(answered, shown)),
            None => order_missing += 1,
        }
        match t.seen {
            Some(at) => seen.push(millis(answered, at)),
            None => seen_missing += 1,
        }
    }
    (
        Latency::of(customer, missing),
        Latency::of(order, order_missing),
        Latency::of(seen, seen_missing),
    )
}

/// Seconds from now until the watches show every customer's last tally, every order's receipt
/// current and every users' write seen (None: not within [`CATCH_UP`]).
async fn caught_up(histories: &Histories, order_times: &OrderTimes) -> Option<f64> {
    let since = Instant::now();
    let current = || {
        let histories = histories.lock().unwrap_or_else(|p| p.into_inner());
        let receipts = order_times.lock().unwrap_or_else(|p| p.into_inner());
        histories
            .values()
            .all(|h| h.showing == Some(h.tallies.last().copied().unwrap_or_default()))
            && receipts.behind.is_empty()
            && receipts
                .times
                .values()
                .all(|t| t.answered.is_none() || t.seen.is_some())
    };
    while since.elapsed() < CATCH_UP {
        if current() {
            return Some(since.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// The score and counts a customer's status shows, if it has one.
fn shown_tally(customer: &Customer) -> Option<Tally> {
    customer.status.as_ref().map(|s| Tally {
        score: s.score,
        completed: s.completed_orders,
        canceled: s.canceled_orders,
        open: s.open_orders,
    })
}

/// Customers and Orders whose status, as the store holds it now, is not what the generator's
/// writes make it: a customer's counts and score not its last tally, an order's receipt behind
/// its spec.
async fn wrong_in_store(client: &Client, ns: &str, histories: &Histories) -> Result<usize, String> {
    let customers = Api::<Customer>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
        .map_err(|e| format!("list customers: {e}"))?;
    let orders = Api::<Order>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
        .map_err(|e| format!("list orders: {e}"))?;
    let histories = histories.lock().unwrap_or_else(|p| p.into_inner());
    let customers_wrong = customers
        .items
        .iter()
        .filter(|c| {
            let expected = histories
                .get(&c.name_any())
                .and_then(|h| h.tallies.last().copied())
                .unwrap_or_default();
            shown_tally(c) != Some(expected)
        })
        .count();
    let orders_wrong = orders
        .items
        .iter()
        .filter(|o| {
            !o.status.as_ref().is_some_and(|s| {
                s.phase == Some(o.spec.state) && s.observed_generation == o.metadata.generation
            })
        })
        .count();
    Ok(customers_wrong + orders_wrong)
}

/// The customer p99 of the transitions answered in each minute of the run (a transition never
/// shown counts as the slowest of its minute), to tell a backlog that grows from one that holds.
fn p99_by_minute(histories: &Histories, started: Instant) -> Vec<f64> {
    let histories = histories.lock().unwrap_or_else(|p| p.into_inner());
    let mut minutes: Vec<Vec<f64>> = Vec::new();
    for history in histories.values() {
        for (answered, shown) in history.answered.iter().zip(&history.shown) {
            let minute = (answered.saturating_duration_since(started).as_secs() / 60) as usize;
            if minutes.len() <= minute {
                minutes.resize_with(minute + 1, Vec::new);
            }
            minutes[minute].push(shown.map_or(f64::INFINITY, |shown| {
                shown.saturating_duration_since(*answered).as_secs_f64() * 1000.0
            }));
        }
    }
    minutes
        .into_iter()
        .map(|minute| Latency::of(minute, 0).p99_ms)
        .collect()
}

/// Requests sent by the flood, and those refused (throttled or failed).
static FLOOD: (std::sync::atomic::AtomicU64, std::sync::atomic::AtomicU64) = (
    std::sync::atomic::AtomicU64::new(0),
    std::sync::atomic::AtomicU64::new(0),
);

/// Another writer creating orders in a namespace of its own as fast as `concurrency` allows.
async fn flood_orders(client: Client, concurrency: usize) {
    use std::sync::atomic::Ordering;
    let ns = fresh_namespace(&client, "bench-flood").await;
    let api: Api<Order> = Api::namespaced(client, &ns);
    let counter = std::sync::atomic::AtomicUsize::new(0);
    futures::stream::repeat(())
        .for_each_concurrent(concurrency, |()| {
            let (api, counter) = (&api, &counter);
            async move {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let order =
                    fixtures::order(&format!("flood-{n:08}"), "nobody", 1, OrderState::Requested);
                FLOOD.0.fetch_add(1, Ordering::Relaxed);
                if api.create(&PostParams::default(), &order).await.is_err() {
                    FLOOD.1.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .await;
}
