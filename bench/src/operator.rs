//! The operator under measurement: started as its own process, ready, its own figures; and an
//! emptied namespace for the next measurement.

use std::time::{Duration, Instant};

use kube::{
    Api, Client,
    api::{DeleteParams, ListParams},
};
use reserve_operator::crd::{Customer, Order};
use reserve_testkit::{Launch, OperatorProcess, Probe};

use crate::{context::Context, figures::OperatorFigures};

/// The operator under measurement, on `namespace`, logging to `<out>/<log_name>.log`.
pub fn start_operator(ctx: &Context, namespace: &str, log_name: &str) -> OperatorProcess {
    launch(ctx, namespace, log_name).spawn()
}

/// The operator under measurement, not started yet.
pub fn launch(ctx: &Context, namespace: &str, log_name: &str) -> Launch {
    Launch::new(&ctx.operator_bin, &ctx.operator_kubeconfig)
        .args(["--no-leader-election", "--namespace", namespace])
        .log(ctx.out.join(format!("{log_name}.log")))
}

pub async fn wait_ready(probe: &Probe, timeout: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if probe.is_ready().await {
            return Ok(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!("the operator was not ready within {timeout:?}"))
}

/// What /metrics says of the operator's work.
pub async fn operator_metrics(probe: &Probe) -> Result<OperatorFigures, String> {
    let metrics = probe
        .metrics()
        .await
        .ok_or("the operator's /metrics does not answer")?;
    let by = |name: &str, controller: &str| metrics.sum(name, &[("controller", controller)]);
    Ok(OperatorFigures {
        reconciles_customer: by("reserve_reconciles_total", "customer"),
        reconciles_order: by("reserve_reconciles_total", "order"),
        reconcile_errors: metrics.sum("reserve_reconcile_errors_total", &[]),
        status_writes_customer: by("reserve_status_writes_total", "customer"),
        status_writes_order: by("reserve_status_writes_total", "order"),
        ..OperatorFigures::default()
    })
}

/// Deletes every Order and Customer of `ns` (two deletecollection requests), so what comes
/// next meets a store no larger than before.
pub async fn empty_namespace(client: &Client, ns: &str) -> Result<(), String> {
    let params = DeleteParams::default();
    let list = ListParams::default();
    let orders: Api<Order> = Api::namespaced(client.clone(), ns);
    let customers: Api<Customer> = Api::namespaced(client.clone(), ns);
    orders
        .delete_collection(&params, &list)
        .await
        .map_err(|e| format!("deleting the orders of {ns}: {e}"))?;
    customers
        .delete_collection(&params, &list)
        .await
        .map_err(|e| format!("deleting the customers of {ns}: {e}"))?;
    Ok(())
}
