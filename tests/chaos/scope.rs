//! A missing permission, and a namespace deleted under load, disturb nothing else.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_permission_is_reported_not_crashed_on() {
    let _shared = CONTROL_PLANE.read().await;
    let cp = ControlPlane::shared();
    let shop = Shop::new("denied").await;
    let identity = Identity::service_account(
        reserve_testkit::shop::OPERATOR_NAMESPACE,
        &format!("{}-limited", shop.ns),
    );
    reserve_testkit::shop::name_as_writer(&shop.admin, &identity).await;
    // Everything the operator needs but the permission to write Order status.
    let role = format!(
        r#"{{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole","metadata":{{"name":"{0}"}},"rules":[
          {{"apiGroups":["reserve.coffeechain.io"],"resources":["customers","orders","ledgers"],"verbs":["get","list","watch"]}},
          {{"apiGroups":["reserve.coffeechain.io"],"resources":["customers/status"],"verbs":["patch"]}},
          {{"apiGroups":["events.k8s.io"],"resources":["events"],"verbs":["create"]}}]}}"#,
        identity.object_name()
    );
    let out = cp.kubectl_stdin(&["apply", "-f", "-"], &role);
    assert!(out.status.success(), "{}", text(&out));
    rbac::grant_cluster_role(&shop.admin, &identity, &identity.object_name()).await;
    let mut operator = shop.operator_process(operator_bin!(), &identity, &["--no-leader-election"]);
    let started = Instant::now();
    let probe = operator.probe().clone();
    shop.customer("dora").await;
    shop.order("o1", "dora", 2, OrderState::Completed).await;
    let (code, body) = eventually(
        FAIL_AFTER,
        "/readyz to report the refused permission",
        || async {
            let (code, body) = probe.get("/readyz").await?;
            body.contains("permission denied").then_some((code, body))
        },
    )
    .await;
    assert_eq!(code, 503);
    println!("/readyz: {}", body.trim());
    assert!(body.contains("orders"), "{body}");
    // The customer is still reconciled: its score counts the order's spec.state.
    shop.expect_customer("dora", 2, "Bronze", (1, 0, 0)).await;
    assert!(operator.running(), "no crash loop:\n{}", operator.logs());
    let logs = operator.logs();
    assert!(
        logs.contains("permission denied: the operator's identity lacks an RBAC permission"),
        "{logs}"
    );
    assert!(logs.contains("forbidden"), "{logs}");
    // Backoff, not a hot loop: each retry waits at least 0.75 times twice the one before,
    // from 250 ms, so k attempts take at least 0.1875 s (2^k - 1), however slow the machine.
    let attempts = logs.matches("permission denied: the operator").count();
    let elapsed = started.elapsed().as_secs_f64();
    let most = 2.0 + (elapsed / 0.1875 + 1.0).log2();
    assert!(
        attempts as f64 <= most,
        "{attempts} attempts in {elapsed:.1} s: more than a backoff allows ({most:.1})"
    );
    let errors = probe
        .metric(
            "reserve_reconcile_errors_total",
            &[("controller", "order"), ("error", "forbidden")],
        )
        .await
        .unwrap_or_default();
    assert!(errors >= 1.0);
    println!("missing permission: {attempts} refused attempts logged, operator still running");
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_everything_in_a_namespace_under_load_disturbs_no_other_namespace() {
    let _shared = CONTROL_PLANE.read().await;
    let cp = ControlPlane::shared();
    let doomed = Shop::new("doomed").await;
    let kept = doomed.beside("kept").await;
    // One operator per namespace, under one identity with rights in these two namespaces only.
    let identity = Identity::service_account(
        reserve_testkit::shop::OPERATOR_NAMESPACE,
        &format!("{}-ns", doomed.ns),
    );
    reserve_testkit::shop::name_as_writer(&doomed.admin, &identity).await;
    for shop in [&doomed, &kept] {
        rbac::grant_in_namespace(
            &shop.admin,
            &shop.ns,
            &identity,
            "ClusterRole",
            "reserve-operator",
        )
        .await;
    }
    let mut operators: Vec<OperatorProcess> = [&doomed, &kept]
        .iter()
        .map(|shop| shop.operator_process(operator_bin!(), &identity, &["--no-leader-election"]))
        .collect();
    let policy = LevelPolicy::default();
    let invariants = Invariants::watch(kept.customers(), kept.orders(), policy.clone());
    let plan = Plan::new(10, 300, 31);
    prepare(&doomed, &plan).await;
    let kept_driver = prepare(&kept, &plan).await;
    // Creations in the doomed namespace start failing once it is being deleted; that is expected.
    let doomed_load = async {
        let created = stream::iter(&plan.orders)
            .map(|order| {
                let object = fixtures::order(
                    &order.name,
                    &order.customer,
                    order.quantity,
                    OrderState::Completed,
                );
                let api = doomed.orders();
                async move { api.create(&Default::default(), &object).await.is_ok() }
            })
            .buffer_unordered(CONCURRENCY)
            .filter(|ok| std::future::ready(*ok))
            .count()
            .await;
        println!("orders created in the doomed namespace before it went: {created}");
    };
    let (_, ()) = tokio::join!(doomed_load, async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let out = cp.kubectl(&[
            "delete",
            "orders,customers",
            "--all",
            "-n",
            &doomed.ns,
            "--wait=false",
        ]);
        assert!(out.status.success(), "{}", text(&out));
        let out = cp.kubectl(&["delete", "namespace", &doomed.ns, "--wait=false"]);
        assert!(out.status.success(), "{}", text(&out));
        kept_driver
            .play(&plan)
            .await
            .expect("the load of the kept namespace");
    });
    let exact = kept.converge(&policy, converge_deadline()).await;
    report(
        "namespace deleted under load",
        plan.transitions(),
        &exact,
        &invariants.finish().await,
    );
    for operator in &mut operators {
        assert!(operator.running(), "{}", operator.logs());
    }
    assert_eq!(
        kept.orders()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        300
    );
}
