//! A hand-over's catch-up: what a new leader finds undone when it takes over. The whole plan is
//! played while no operator runs (every customer a score behind, every order a receipt behind),
//! then an operator starts: how soon it is ready, and how soon a watch sees every customer and
//! every receipt current.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use reserve_operator::loyalty::LevelPolicy;
use reserve_testkit::{
    shop::fresh_namespace,
    workload::{Driver, Plan},
};

use crate::{
    context::{Context, say},
    converge::{all_match, drive, watch_customers, watch_receipts},
    figures::Handover,
    operator::{empty_namespace, operator_metrics, start_operator, wait_ready},
};

pub async fn run(ctx: &Context, orders: usize) -> Result<Handover, String> {
    let plan = Plan::new(ctx.customers, orders, ctx.seed);
    let expected = Arc::new(plan.expected(&LevelPolicy::default()));
    let ns = fresh_namespace(&ctx.client, &format!("bench-handover-o{orders}")).await;
    say(format!(
        "hand-over: {} customers, {orders} orders played with no operator, then {}",
        ctx.customers,
        ctx.operator_bin.display()
    ));
    let driver = Driver::new(&ctx.client, &ns, ctx.concurrency);
    drive(ctx, &driver, &plan, "handover").await?;
    let (mut customers, customers_task) = watch_customers(&ctx.client, &ns, expected);
    let (mut receipts, receipts_task) = watch_receipts(&ctx.client, &ns, orders);

    let start = Instant::now();
    let mut operator = start_operator(ctx, &ns, &format!("operator-handover-{orders}"));
    let ready = wait_ready(operator.probe(), Duration::from_secs(120)).await?;
    let deadline = start + Duration::from_secs(ctx.converge_timeout);
    let customers_at = all_match(&mut customers, deadline, ctx.customers, "customers").await?;
    let receipts_at = all_match(&mut receipts, deadline, orders, "order receipts").await?;
    let figures = operator_metrics(operator.probe()).await?;
    let cpu_seconds = operator.stats().map_or(0.0, |s| s.cpu_seconds);
    operator.sigterm();
    operator.wait_exit(Duration::from_secs(30));
    customers_task.abort();
    receipts_task.abort();
    empty_namespace(&ctx.client, &ns).await?;

    let since_start = |at: Instant| at.saturating_duration_since(start).as_secs_f64();
    let handover = Handover {
        operator_binary: ctx.operator_bin.display().to_string(),
        customers: ctx.customers,
        orders,
        ready_seconds: ready.as_secs_f64(),
        customers_current_seconds: since_start(customers_at),
        receipts_current_seconds: since_start(receipts_at),
        status_writes_customer: figures.status_writes_customer,
        status_writes_order: figures.status_writes_order,
        operator_cpu_seconds: cpu_seconds,
    };
    say(format!(
        "  ready after {:.2}s, every customer current after {:.2}s, every receipt after {:.2}s \
         ({:.0} order and {:.0} customer status writes)",
        handover.ready_seconds,
        handover.customers_current_seconds,
        handover.receipts_current_seconds,
        handover.status_writes_order,
        handover.status_writes_customer
    ));
    Ok(handover)
}
