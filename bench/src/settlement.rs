//! The long run of settlement: orders created over time (each already Completed or Canceled,
//! as a point of sale records them) across many customers, with a short settlement age. What
//! it shows: the Orders in etcd stay bounded by the live window, etcd's database stops growing
//! once the window is full, the operator's memory follows the live orders, and at the end every
//! score is exact against the generator's own ledger.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use reserve_operator::{
    controller::settlement::{NAMESPACE_LABEL, NAMESPACE_LABEL_VALUE},
    crd::{Customer, Ledger, Order, OrderState},
    loyalty::{LevelPolicy, Standing, Tally},
};
use reserve_testkit::{
    Identity, Launch, Probe, fixtures, rbac,
    shop::{OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT, SETTLEMENT_ROLE, fresh_namespace},
    workload::{Driver, Plan, Rng, customer_name, retry},
};
use serde_json::json;

use crate::{
    context::{Context, say},
    figures::{SettlementEnd, SettlementRun, SettlementSample, SettlementSettings},
    operator::{operator_metrics, wait_ready},
};

/// How often the sampler looks.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

pub async fn run(ctx: &Context, settings: &SettlementSettings) -> Result<SettlementRun, String> {
    let ns = fresh_namespace(&ctx.generator, "bench-settle").await;
    let label = json!({ "metadata": { "labels": { NAMESPACE_LABEL: NAMESPACE_LABEL_VALUE } } });
    Api::<k8s_openapi::api::core::v1::Namespace>::all(ctx.client.clone())
        .patch(&ns, &PatchParams::default(), &Patch::Merge(&label))
        .await
        .map_err(|e| format!("label {ns}: {e}"))?;
    let operator = Identity::service_account(OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT);
    rbac::grant_cluster_role(&ctx.client, &operator, SETTLEMENT_ROLE).await;
    let plan = Plan::new(settings.customers, 0, ctx.seed);
    Driver::new(&ctx.generator, &ns, ctx.concurrency)
        .create_customers(&plan)
        .await?;
    let age = format!("{}s", settings.settle_after.as_secs().max(1));
    let mut process = Launch::new(&ctx.operator_bin, &ctx.operator_kubeconfig)
        .args([
            "--no-leader-election",
            "--namespace",
            &ns,
            "--settle-after",
            &age,
        ])
        .log(ctx.out.join("operator-settlement.log"))
        .spawn();
    wait_ready(process.probe(), Duration::from_secs(120)).await?;
    let etcd: SocketAddr = ctx
        .cp
        .etcd_url()
        .trim_start_matches("http://")
        .parse()
        .map_err(|e| format!("etcd's URL: {e}"))?;
    let etcd = Probe::new(etcd);

    // The sampler: orders in etcd, etcd's database, the operator's memory.
    let samples = Arc::new(Mutex::new(Vec::<SettlementSample>::new()));
    let start = Instant::now();
    let sampler = {
        let (samples, orders, probe) = (
            samples.clone(),
            ctx.generator.clone(),
            process.probe().clone(),
        );
        let (pid, ns, etcd) = (process.pid(), ns.clone(), etcd.clone());
        tokio::spawn(async move {
            let orders: Api<Order> = Api::namespaced(orders, &ns);
            loop {
                let sample = sample(&orders, &etcd, &probe, pid, start).await;
                samples.lock().unwrap().push(sample);
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
        })
    };

    // The generator: one order every 1/rate seconds, spread over the customers.
    say(format!(
        "settlement: {} orders at {}/s over {} customers, settled after {age}",
        settings.orders, settings.rate, settings.customers
    ));
    let tallies = Arc::new(Mutex::new(HashMap::<String, Tally>::new()));
    let api: Api<Order> = Api::namespaced(ctx.generator.clone(), &ns);
    let mut rng = Rng::new(ctx.seed);
    let planned: Vec<(String, OrderState, i32)> = (0..settings.orders)
        .map(|_| {
            let customer = customer_name(rng.below(settings.customers as u64) as usize);
            let state = if rng.below(100) < 85 {
                OrderState::Completed
            } else {
                OrderState::Canceled
            };
            (customer, state, 1 + rng.below(5) as i32)
        })
        .collect();
    let begun = tokio::time::Instant::now();
    stream::iter(planned.into_iter().enumerate())
        .map(|(i, (customer, state, quantity))| {
            let (api, tallies) = (api.clone(), tallies.clone());
            let at = begun + Duration::from_secs_f64(i as f64 / settings.rate);
            async move {
                tokio::time::sleep_until(at).await;
                let order = fixtures::order(&format!("o-{i}"), &customer, quantity, state);
                let params = PostParams::default();
                retry("create order", || api.create(&params, &order)).await?;
                tallies
                    .lock()
                    .unwrap()
                    .entry(customer)
                    .or_default()
                    .count(state, i64::from(quantity));
                Ok::<(), String>(())
            }
        })
        .buffer_unordered(ctx.concurrency * 4)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<(), String>>()?;
    let generated = start.elapsed();
    say(format!(
        "settlement: generator done in {:.0}s; waiting for the last orders to settle",
        generated.as_secs_f64()
    ));

    // The end: no order left, every score exact against the generator's ledger.
    let expected: HashMap<String, Tally> = tallies.lock().unwrap().clone();
    let policy = LevelPolicy::default();
    let customers: Api<Customer> = Api::namespaced(ctx.generator.clone(), &ns);
    let deadline = Instant::now() + settings.settle_after * 3 + Duration::from_secs(120);
    let (wrong, left) = loop {
        let left = api
            .list_metadata(&ListParams::default().limit(1))
            .await
            .map_err(|e| e.to_string())?;
        let left = left.items.len() as u64 + left.metadata.remaining_item_count.unwrap_or(0) as u64;
        let wrong = wrong_customers(&customers, &expected, &policy).await?;
        if (left == 0 && wrong == 0) || Instant::now() > deadline {
            break (wrong, left);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let drained = start.elapsed();
    sampler.abort();
    let mut samples = samples.lock().unwrap().clone();
    samples.push(sample(&api, &etcd, process.probe(), process.pid(), start).await);
    let ledgers: Api<Ledger> = Api::namespaced(ctx.generator.clone(), &ns);
    let ledger_count = ledgers
        .list_metadata(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?
        .items
        .len();
    let settled = process
        .probe()
        .metric("reserve_orders_settled_total", &[])
        .await
        .unwrap_or_default();
    let mut metrics = operator_metrics(process.probe()).await?;
    if let Some(stats) = process.stats() {
        metrics.peak_rss_kib = stats.peak_rss_kib;
        metrics.rss_kib = stats.rss_kib;
        metrics.cpu_seconds = stats.cpu_seconds;
    }
    process.sigterm();
    process.wait_exit(Duration::from_secs(30));
    Ok(SettlementRun::new(
        settings,
        SettlementEnd {
            generated,
            drained,
            samples,
            settled,
            ledgers: ledger_count,
            customers_wrong: wrong,
            orders_left: left,
            operator: metrics,
        },
    ))
}

async fn sample(
    orders: &Api<Order>,
    etcd: &Probe,
    operator: &Probe,
    pid: u32,
    start: Instant,
) -> SettlementSample {
    let live = match orders.list_metadata(&ListParams::default().limit(1)).await {
        Ok(list) => {
            list.items.len() as u64 + list.metadata.remaining_item_count.unwrap_or(0) as u64
        }
        Err(_) => 0,
    };
    let db = etcd.metrics().await;
    let value = |name: &str| {
        db.as_ref()
            .and_then(|m| m.value(name, &[]))
            .unwrap_or_default()
    };
    let settled = operator
        .metric("reserve_orders_settled_total", &[])
        .await
        .unwrap_or_default();
    let stats = reserve_testkit::process::ProcStats::of(pid).unwrap_or_default();
    SettlementSample {
        seconds: start.elapsed().as_secs_f64(),
        live_orders: live,
        settled_orders: settled as u64,
        etcd_db_mib: value("etcd_mvcc_db_total_size_in_bytes") / 1_048_576.0,
        etcd_db_in_use_mib: value("etcd_mvcc_db_total_size_in_use_in_bytes") / 1_048_576.0,
        operator_rss_mib: stats.rss_kib as f64 / 1024.0,
    }
}

/// Customers whose status does not show what the generator's ledger says.
async fn wrong_customers(
    customers: &Api<Customer>,
    expected: &HashMap<String, Tally>,
    policy: &LevelPolicy,
) -> Result<usize, String> {
    let listed = customers
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    Ok(listed
        .items
        .iter()
        .filter(|c| {
            let want = policy.standing(&expected.get(&c.name_any()).copied().unwrap_or_default());
            c.status.as_ref().and_then(Standing::shown_by) != Some(want)
        })
        .count())
}
