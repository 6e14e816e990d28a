//! One point of the converge benchmark: customers and a burst of orders driven through their
//! states, with the operator running as its own process, then the figures.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Client, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};
use reserve_operator::{
    crd::{Customer, Order, OrderState},
    loyalty::{LevelPolicy, Standing},
};
use reserve_testkit::{
    Metrics,
    process::ProcStats,
    shop::fresh_namespace,
    workload::{Driver, Plan},
};
use tokio::sync::watch;

use crate::{
    audit,
    context::{Context, say},
    figures::{ConvergePoint, Generator, OperatorFigures, Restart},
    floor,
    operator::{self, empty_namespace, operator_metrics, start_operator, wait_ready},
    profile,
};

/// Progress of objects towards what they should show, as a watch sees it.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    matching: usize,
    /// Since when every object has matched (None while some do not).
    all_since: Option<Instant>,
    events: u64,
}

/// Watches `api` until `count` objects have matched; each event's object matches or not.
fn watch_matching<K>(
    api: Api<K>,
    count: usize,
    matches: impl Fn(&K) -> bool + Send + 'static,
) -> (watch::Receiver<Progress>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + 'static,
    K: serde::de::DeserializeOwned,
{
    let (tx, rx) = watch::channel(Progress::default());
    let task = tokio::spawn(async move {
        let mut matching = HashSet::<String>::new();
        let mut events = 0u64;
        let mut stream = std::pin::pin!(
            watcher(api, watcher::Config::default().any_semantic())
                .default_backoff()
                .applied_objects()
        );
        while let Some(event) = stream.next().await {
            let Ok(object) = event else { continue };
            events += 1;
            if matches(&object) {
                matching.insert(object.name_any());
            } else {
                matching.remove(&object.name_any());
            }
            let all = matching.len() == count;
            tx.send_modify(|p| {
                p.matching = matching.len();
                p.events = events;
                p.all_since = match (all, p.all_since) {
                    (true, Some(since)) => Some(since),
                    (true, None) => Some(Instant::now()),
                    (false, _) => None,
                };
            });
        }
    });
    (rx, task)
}

/// Every customer's standing against what the plan gives.
pub fn watch_customers(
    client: &Client,
    ns: &str,
    expected: Arc<BTreeMap<String, Standing>>,
) -> (watch::Receiver<Progress>, tokio::task::JoinHandle<()>) {
    let count = expected.len();
    watch_matching(
        Api::namespaced(client.clone(), ns),
        count,
        move |c: &Customer| {
            let shown = c.status.as_ref().and_then(Standing::shown_by);
            shown.as_ref() == expected.get(&c.name_any())
        },
    )
}

/// Every order's receipt: its phase and observed generation are those of its spec.
pub fn watch_receipts(
    client: &Client,
    ns: &str,
    orders: usize,
) -> (watch::Receiver<Progress>, tokio::task::JoinHandle<()>) {
    watch_matching(Api::namespaced(client.clone(), ns), orders, |o: &Order| {
        o.status.as_ref().is_some_and(|s| {
            s.phase == Some(o.spec.state) && s.observed_generation == o.metadata.generation
        })
    })
}

/// Waits until every one of `count` objects matches, saying how far it is every 10 s; when
/// that began.
pub async fn all_match(
    progress: &mut watch::Receiver<Progress>,
    deadline: Instant,
    count: usize,
    what: &str,
) -> Result<Instant, String> {
    loop {
        let waited = tokio::time::timeout(
            Duration::from_secs(10),
            progress.wait_for(|p| p.all_since.is_some()),
        )
        .await
        .map(|r| r.map(|p| p.all_since));
        match waited {
            Ok(Ok(since)) => return Ok(since.expect("waited for it")),
            Ok(Err(_)) => return Err(format!("the watch of {what} ended")),
            Err(_) => {
                let p = progress.borrow().clone();
                if Instant::now() > deadline {
                    return Err(format!(
                        "not converged by the deadline: {}/{count} {what} match",
                        p.matching
                    ));
                }
                say(format!(
                    "  waiting: {}/{count} {what} match ({} watch events)",
                    p.matching, p.events
                ));
            }
        }
    }
}

/// The wall-clock time of a monotonic instant in the past.
fn wall(at: Instant) -> Timestamp {
    Timestamp::now() - Instant::now().saturating_duration_since(at)
}

pub async fn run_point(
    ctx: &Context,
    customers: usize,
    orders: usize,
) -> Result<ConvergePoint, String> {
    let c = ctx.concurrency;
    let plan = Plan::new(customers, orders, ctx.seed);
    let expected = Arc::new(plan.expected(&LevelPolicy::default()));
    let generator_alone = if ctx.alone {
        Some(generator_alone(ctx, &plan).await?)
    } else {
        None
    };
    let ns = fresh_namespace(&ctx.client, &format!("bench-o{orders}")).await;
    let mut operator = start_operator(ctx, &ns, &format!("operator-{orders}"));
    wait_ready(operator.probe(), Duration::from_secs(60)).await?;
    let idle = operator.stats().unwrap_or_default();
    let (mut progress, watch_task) = watch_customers(&ctx.client, &ns, expected.clone());
    let (mut receipts, receipts_task) = watch_receipts(&ctx.client, &ns, orders);

    // The generator.
    let driver = Driver::new(&ctx.client, &ns, c);
    let (generator, start, last_write) = drive(ctx, &driver, &plan, "operator").await?;
    say(format!(
        "  generator done after {:.1}s, kube-apiserver at {:.0}% CPU ({} with no operator)",
        generator.seconds,
        generator.apiserver_cpu_percent,
        generator_alone
            .as_ref()
            .map_or("not timed".into(), |g| format!(
                "{:.1}s at {:.0}%",
                g.seconds, g.apiserver_cpu_percent
            ))
    ));

    // Convergence, as the watches see it: the customers (what users read), then the receipts.
    let deadline = last_write + Duration::from_secs(ctx.converge_timeout);
    let converged_at = all_match(&mut progress, deadline, customers, "customers").await?;
    let receipts_at = all_match(&mut receipts, deadline, orders, "order receipts").await?;
    let lag = converged_at
        .saturating_duration_since(last_write)
        .as_secs_f64();
    let receipts_lag = receipts_at
        .saturating_duration_since(last_write)
        .as_secs_f64();
    say(format!(
        "  converged {lag:.3}s after the last write (every receipt current after {receipts_lag:.3}s)"
    ));
    let converged_at = converged_at.max(receipts_at);

    // Quiet after convergence?
    let at_convergence = operator_metrics(operator.probe()).await?;
    tokio::time::sleep(Duration::from_secs(ctx.settle)).await;
    let mut figures = operator_metrics(operator.probe()).await?;
    let stats = operator.stats().unwrap_or_default();
    let still_converged =
        progress.borrow().all_since.is_some() && receipts.borrow().all_since.is_some();
    let writes = |f: &OperatorFigures| f.status_writes_customer + f.status_writes_order;
    figures.status_writes_after_convergence = writes(&figures) - writes(&at_convergence);
    figures.idle_rss_kib = idle.rss_kib;
    figures.peak_rss_kib = stats.peak_rss_kib;
    figures.rss_kib = stats.rss_kib;
    figures.cpu_seconds = stats.cpu_seconds;
    figures.cpu_microseconds_per_reconcile =
        stats.cpu_seconds * 1e6 / (figures.reconciles_customer + figures.reconciles_order).max(1.0);
    operator.sigterm();
    operator.wait_exit(Duration::from_secs(30));
    let stopped = Timestamp::now();

    // Restart once converged: how fast it is ready again, that it writes nothing, and what
    // its lists cost the API server in memory; with streaming lists, then paged ones (the default).
    let restart_streaming = restart_with(ctx, &ns, orders, "streaming").await?;
    let restart = restart_with(ctx, &ns, orders, "paged").await?;
    watch_task.abort();
    receipts_task.abort();

    let floor = if ctx.floor {
        Some(floor::measure(&ctx.generator, &ctx.as_operator, &plan, c, lag).await?)
    } else {
        None
    };

    // Let the audit batch (max wait 1 s) reach the file.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let windows = audit::Windows {
        last_write: wall(last_write),
        converged: wall(converged_at),
        stopped,
    };
    let transitions = generator.order_transitions;
    let audit = audit::figures(
        &ctx.cp.audit(),
        &ctx.operator_user,
        &ns,
        &windows,
        transitions,
        customers,
    );
    Ok(ConvergePoint {
        operator_binary: ctx.operator_bin.display().to_string(),
        customers,
        orders,
        namespace: ns,
        concurrency: c,
        seed: ctx.seed,
        generator,
        generator_alone_seconds: generator_alone.as_ref().map(|g| g.seconds),
        generator_alone_apiserver_cpu_percent: generator_alone.map(|g| g.apiserver_cpu_percent),
        converge_lag_seconds: lag,
        receipts_lag_seconds: receipts_lag,
        total_seconds: (converged_at - start).as_secs_f64(),
        still_converged_after_settle: still_converged,
        operator: figures,
        audit,
        floor,
        restart,
        restart_streaming,
    })
}

/// The generator's work on `plan`: its customers, its orders, then every wave of state changes;
/// the figures, when it started and when its last write was answered. `run` names the run in
/// the profile's file (`alone`, `operator`).
pub async fn drive(
    ctx: &Context,
    driver: &Driver,
    plan: &Plan,
    run: &str,
) -> Result<(Generator, Instant, Instant), String> {
    let cpu_before = ctx.apiserver_cpu_seconds()?;
    let profile = ctx.profile_generator.map(|window| {
        let orders = plan.orders.len();
        let path = ctx
            .out
            .join(format!("apiserver-{orders}-generator-{run}.pprof"));
        profile::record(&ctx.cp, window, path)
    });
    let start = Instant::now();
    let t_customers = driver.create_customers(plan).await?;
    say(format!(
        "  {} customers created in {:.1}s",
        plan.customers.len(),
        t_customers.as_secs_f64()
    ));
    let orders = plan.orders.len();
    let t_orders = driver
        .create_orders(&plan.orders, |_| OrderState::Requested)
        .await?;
    say(format!(
        "  {orders} orders created in {:.1}s ({:.0}/s)",
        t_orders.as_secs_f64(),
        orders as f64 / t_orders.as_secs_f64()
    ));
    let mut t_changes = Duration::ZERO;
    let mut state_changes = 0;
    for wave in plan.waves() {
        state_changes += wave.len();
        t_changes += driver.set_states(&wave).await?;
    }
    let last_write = Instant::now();
    let seconds = (last_write - start).as_secs_f64();
    let apiserver_cpu_percent = (ctx.apiserver_cpu_seconds()? - cpu_before) * 100.0 / seconds;
    if let Some(profile) = profile {
        profile.finish()?;
    }
    say(format!(
        "  {state_changes} state changes in {:.1}s",
        t_changes.as_secs_f64()
    ));
    let generator = Generator {
        order_creations: orders,
        state_changes,
        order_transitions: plan.transitions(),
        customers_seconds: t_customers.as_secs_f64(),
        orders_seconds: t_orders.as_secs_f64(),
        state_changes_seconds: t_changes.as_secs_f64(),
        seconds,
        apiserver_cpu_percent,
    };
    Ok((generator, start, last_write))
}

/// The same work on a namespace no operator watches: what the generator takes on its own on
/// this machine now, the time it is held to with the operator running. The objects are deleted
/// after (two deletecollection requests), so the point's namespace starts on an unloaded store.
async fn generator_alone(ctx: &Context, plan: &Plan) -> Result<Generator, String> {
    let ns = fresh_namespace(&ctx.client, &format!("bench-alone-o{}", plan.orders.len())).await;
    say(format!("  with no operator, on {ns}:"));
    let driver = Driver::new(&ctx.client, &ns, ctx.concurrency);
    let (generator, _, _) = drive(ctx, &driver, plan, "alone").await?;
    empty_namespace(&ctx.client, &ns).await?;
    Ok(generator)
}

/// Starts the operator again on a converged namespace, with `initial_list`: time to ready, its
/// status writes within the settle window, and how far kube-apiserver's RSS rose meanwhile.
async fn restart_with(
    ctx: &Context,
    ns: &str,
    orders: usize,
    initial_list: &str,
) -> Result<Restart, String> {
    let apiserver = ctx.cp.pids().1;
    let apiserver_rss = move || apiserver.and_then(ProcStats::of).map_or(0, |s| s.rss_kib);
    let before = apiserver_rss();
    let apiserver_cpu_before = ctx.apiserver_cpu_seconds()?;
    let checks_before = consistency_checks(ctx)?;
    let peak = Arc::new(AtomicU64::new(before));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(apiserver_rss(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let name = format!("operator-{orders}-restart-{initial_list}");
    let profile = ctx.profile_restarts.map(|window| {
        let path = ctx
            .out
            .join(format!("apiserver-{orders}-restart-{initial_list}.pprof"));
        profile::record(&ctx.cp, window, path)
    });
    let mut restarted = operator::launch(ctx, ns, &name)
        .env("RESERVE_INITIAL_LIST", initial_list)
        .spawn();
    let seconds_to_ready = wait_ready(restarted.probe(), Duration::from_secs(120))
        .await?
        .as_secs_f64();
    let operator_cpu_seconds_to_ready = restarted
        .stats()
        .ok_or("the restarted operator's /proc stats are not readable")?
        .cpu_seconds;
    let apiserver_cpu_seconds_to_ready = ctx.apiserver_cpu_seconds()? - apiserver_cpu_before;
    let apiserver_consistency_checks_to_ready = consistency_checks(ctx)? - checks_before;
    tokio::time::sleep(Duration::from_secs(ctx.settle)).await;
    let after = operator_metrics(restarted.probe()).await?;
    sampler.abort();
    restarted.sigterm();
    restarted.wait_exit(Duration::from_secs(30));
    if let Some(profile) = profile {
        profile.finish()?;
    }
    let restart = Restart {
        initial_list: initial_list.into(),
        seconds_to_ready,
        status_writes: after.status_writes_customer + after.status_writes_order,
        apiserver_rss_before_mib: before as f64 / 1024.0,
        apiserver_peak_rss_growth_mib: peak.load(Ordering::Relaxed).saturating_sub(before) as f64
            / 1024.0,
        operator_cpu_seconds_to_ready,
        apiserver_cpu_seconds_to_ready,
        apiserver_consistency_checks_to_ready,
    };
    say(format!(
        "  restart ({initial_list} lists): ready after {seconds_to_ready:.2}s (CPU to ready: \
         operator {operator_cpu_seconds_to_ready:.2}s, kube-apiserver \
         {apiserver_cpu_seconds_to_ready:.2}s; watch-cache consistency checks meanwhile: \
         {apiserver_consistency_checks_to_ready}), {} status writes, kube-apiserver RSS +{:.1} MiB",
        restart.status_writes, restart.apiserver_peak_rss_growth_mib
    ));
    Ok(restart)
}

/// How many watch-cache consistency checks kube-apiserver has run so far, over every resource
/// (`DetectCacheInconsistency`: each lists and decodes a whole resource from etcd, so one that
/// falls inside a restart costs the restart its CPU).
fn consistency_checks(ctx: &Context) -> Result<u64, String> {
    const FAMILY: &str = "apiserver_storage_consistency_checks_total";
    let text = ctx.cp.apiserver_metrics();
    if !text.contains(FAMILY) {
        return Err(format!("kube-apiserver's /metrics has no {FAMILY}"));
    }
    let metrics = Metrics::parse(&text).ok_or("kube-apiserver's /metrics does not parse")?;
    Ok(metrics.sum(FAMILY, &[]) as u64)
}
