//! The API server restarted and etcd stopped under load.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn api_server_restart_under_load_recovers_without_restarting_the_operator() {
    let cp = ControlPlane::shared();
    if cp.skip_unless_local("restarting the API server") {
        return;
    }
    let _alone = CONTROL_PLANE.write().await;
    let shop = Shop::new("restart").await;
    let identity = shop.identity("operator").await;
    let policy = LevelPolicy::default();
    let invariants = Invariants::watch(shop.customers(), shop.orders(), policy.clone());
    let mut operator = shop.operator_process(operator_bin!(), &identity, &["--no-leader-election"]);
    let plan = Plan::new(30 * scale(), 600 * scale(), 11);
    let driver = prepare(&shop, &plan).await;
    // The first half of the orders before the outage, the rest after.
    let (before, after) = plan.orders.split_at(plan.orders.len() / 2);
    let first = Plan {
        orders: before.to_vec(),
        ..plan.clone()
    };
    let second = Plan {
        orders: after.to_vec(),
        ..plan.clone()
    };
    driver.play(&first).await.expect("the first half");
    let probe = operator.probe().clone();
    eventually(FAIL_AFTER, "the operator to be ready", || async {
        probe.is_ready().await.then_some(())
    })
    .await;

    let outage = Instant::now();
    cp.stop_apiserver();
    // /readyz reflects the outage once the watches notice it.
    let unready = eventually(FAIL_AFTER, "/readyz to report the outage", || async {
        let (code, body) = probe.get("/readyz").await?;
        (code == 503).then_some(body)
    })
    .await;
    println!("during the outage /readyz said: {}", unready.trim());
    tokio::time::sleep(Duration::from_secs(2)).await;
    cp.start_apiserver().expect("kube-apiserver starts again");
    println!("API server was down for {:?}", outage.elapsed());

    driver.play(&second).await.expect("the second half");
    let exact = shop.converge(&policy, converge_deadline()).await;
    eventually(FAIL_AFTER, "/readyz to recover", || async {
        probe.is_ready().await.then_some(())
    })
    .await;
    assert!(
        operator.running(),
        "the operator must survive an API server restart"
    );
    assert!(!operator.logs().contains("panicked"), "{}", operator.logs());
    println!("restarts survived: 1");
    report(
        "API server restart",
        plan.transitions(),
        &exact,
        &invariants.finish().await,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_stopped_under_load_makes_the_operator_unready_until_it_is_back() {
    let cp = ControlPlane::shared();
    if cp.skip_unless_local("stopping etcd") {
        return;
    }
    let _alone = CONTROL_PLANE.write().await;
    let shop = Shop::new("etcd").await;
    let identity = shop.identity("operator").await;
    let policy = LevelPolicy::default();
    let invariants = Invariants::watch(shop.customers(), shop.orders(), policy.clone());
    let operator = shop.operator_process(operator_bin!(), &identity, &["--no-leader-election"]);
    let probe = operator.probe().clone();
    let plan = Plan::new(30 * scale(), 600 * scale(), 13);
    prepare(&shop, &plan).await;
    eventually(FAIL_AFTER, "the operator to be ready", || async {
        probe.is_ready().await.then_some(())
    })
    .await;
    let load = load(&shop, &plan);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let stopped = Instant::now();
    cp.stop_etcd();
    let unready = eventually(FAIL_AFTER, "/readyz to name the failing writes", || async {
        let (code, body) = probe.get("/readyz").await?;
        (code == 503 && body.contains("status writes failing")).then_some(body)
    })
    .await;
    println!(
        "{:.1}s after etcd stopped, /readyz said: {}",
        stopped.elapsed().as_secs_f64(),
        unready.trim()
    );
    tokio::time::sleep(Duration::from_secs(15).saturating_sub(stopped.elapsed())).await;
    cp.start_etcd().expect("etcd starts again");
    let down = stopped.elapsed();
    let restarted = Instant::now();
    eventually(FAIL_AFTER, "/readyz to recover", || async {
        probe.is_ready().await.then_some(())
    })
    .await;
    println!(
        "etcd was down for {:.1}s; /readyz was 200 again {:.1}s after it came back",
        down.as_secs_f64(),
        restarted.elapsed().as_secs_f64()
    );
    let transitions = load.await.unwrap();
    let exact = shop.converge(&policy, converge_deadline()).await;
    report(
        "etcd stopped",
        transitions,
        &exact,
        &invariants.finish().await,
    );
}
