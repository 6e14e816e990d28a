//! The operator under its own ServiceAccount token: it reconciles without a single 403.

use super::*;

#[tokio::test]
async fn operator_with_the_service_account_token_reconciles_without_a_403() {
    let cp = install();
    if cp.skip_unless_local("the audit log") {
        return;
    }
    let out = cp.kubectl(&["create", "token", SA, "-n", SYSTEM_NS, "--duration", "1h"]);
    assert!(out.status.success(), "create token: {}", text(&out));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let kubeconfig = cp.kubeconfig_with_token(&token, SYSTEM_NS);

    let admin = cp.client().await;
    let ns = fresh_namespace(&admin, "ops-sa").await;
    let mut operator = Launch::new(operator_bin!(), &kubeconfig)
        .args([
            "--namespace",
            &ns,
            "--leader-election",
            "--lease-namespace",
            SYSTEM_NS,
            "--identity",
            "sa-test",
            "--log-format",
            "json",
        ])
        .spawn();
    let probe = operator.probe().clone();

    // It leads, and is ready once its caches are synced.
    eventually(FAIL_AFTER, "the SA operator to lead", || async {
        (probe.is_leader().await == Some(true)).then_some(())
    })
    .await;
    eventually(FAIL_AFTER, "/readyz 200 on the leader", || async {
        let (code, body) = probe.get("/readyz").await?;
        (code == 200 && body.trim() == "ok").then_some(())
    })
    .await;
    let (code, body) = probe.get("/healthz").await.expect("/healthz answers");
    assert_eq!((code, body.trim()), (200, "ok"));

    let customers: Api<reserve_operator::crd::Customer> = Api::namespaced(admin.clone(), &ns);
    let orders: Api<reserve_operator::crd::Order> = Api::namespaced(admin.clone(), &ns);
    let pp = PostParams::default();
    customers
        .create(&pp, &fixtures::customer("alice"))
        .await
        .unwrap();
    for (name, qty) in [("o1", 2), ("o2", 3), ("o3", 4), ("o4", 1)] {
        orders
            .create(
                &pp,
                &fixtures::order(name, "alice", qty, OrderState::Requested),
            )
            .await
            .unwrap();
    }
    // An order of a customer that does not exist: an Event (Warning, CustomerNotFound).
    orders
        .create(
            &pp,
            &fixtures::order("lost", "nobody", 1, OrderState::Requested),
        )
        .await
        .unwrap();
    wait_for_score(&customers, "alice", 0, "Bronze").await;
    for name in ["o1", "o2", "o3"] {
        complete(&orders, name).await;
    }
    wait_for_score(&customers, "alice", 9, "Silver").await;
    complete(&orders, "o4").await;
    wait_for_score(&customers, "alice", 10, "Gold").await;
    let alice = customers.get("alice").await.unwrap().status.unwrap();
    assert_eq!(
        (
            alice.completed_orders,
            alice.open_orders,
            alice.canceled_orders
        ),
        (4, 0, 0)
    );
    let o1 = orders.get("o1").await.unwrap().status.expect("o1 status");
    assert_eq!(o1.phase, Some(OrderState::Completed));
    let lost = eventually(FAIL_AFTER, "order lost to be Iron", || {
        let orders = orders.clone();
        async move {
            let s = orders.get("lost").await.ok()?.status?;
            (s.customer_level.as_deref() == Some("Iron")).then_some(s)
        }
    })
    .await;
    assert!(
        lost.conditions.iter().any(|c| c.type_ == "CustomerFound"
            && c.status == "False"
            && c.reason == "CustomerNotFound"),
        "{lost:?}"
    );

    // The metrics of a leader that has reconciled.
    let metrics = probe.metrics().await.expect("/metrics answers");
    for (family, labels) in [
        ("reserve_reconciles_total", [("controller", "customer")]),
        (
            "reserve_reconcile_duration_seconds",
            [("controller", "order")],
        ),
        ("reserve_status_writes_total", [("controller", "order")]),
        ("reserve_reconcile_errors_total", [("controller", "order")]),
    ] {
        assert!(
            metrics.value(family, &labels).is_some(),
            "{family} {labels:?} missing"
        );
    }
    assert_eq!(
        metrics.value("reserve_customers", &[("level", "Gold")]),
        Some(1.0)
    );
    assert_eq!(metrics.value("reserve_leader", &[]), Some(1.0));

    // SIGTERM: a clean exit that releases the Lease.
    operator.sigterm();
    let status = operator
        .wait_exit(GRACE)
        .expect("the operator exits within 10s of SIGTERM");
    assert!(status.success(), "exit status {status}");
    let holder = cp.kubectl(&[
        "get",
        "lease/reserve-operator",
        "-n",
        SYSTEM_NS,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    assert!(holder.status.success(), "{}", text(&holder));
    assert_eq!(
        String::from_utf8_lossy(&holder.stdout),
        "",
        "lease released"
    );

    // What it did, per the API server: everything allowed, and nothing outside the RBAC.
    let audit: Vec<AuditEvent> = cp
        .audit()
        .into_iter()
        // Authenticated by the token (`kubectl auth can-i --as=...` of another test shows up
        // with the SA as the impersonated user, but authenticated as the admin).
        .filter(|e| e.user.username == SA_USER && e.is_complete())
        .collect();
    let denied: Vec<&AuditEvent> = audit.iter().filter(|e| e.code() == Some(403)).collect();
    assert!(denied.is_empty(), "403 for the operator: {denied:#?}");
    let used: BTreeSet<String> = audit.iter().map(AuditEvent::group_resource_verb).collect();
    eprintln!("the operator's requests (group/resource:verb): {used:#?}");
    // No LIST: this API server streams the initial lists (`--initial-list auto`). The role
    // grants list for older API servers, which page them.
    for needed in [
        "reserve.coffeechain.io/customers:watch",
        "reserve.coffeechain.io/orders:watch",
        "reserve.coffeechain.io/ledgers:watch",
        "reserve.coffeechain.io/customers/status:patch",
        "reserve.coffeechain.io/orders/status:patch",
        "events.k8s.io/events:create",
        "coordination.k8s.io/leases:get",
        "coordination.k8s.io/leases:patch",
    ] {
        assert!(used.contains(needed), "{needed} not used: {used:?}");
    }
    let mut granted = rbac::granted_requests();
    // GET /version, to choose how to list (every authenticated user may read it).
    granted.insert("/:get".into());
    let outside: Vec<&String> = used.iter().filter(|u| !granted.contains(*u)).collect();
    assert!(outside.is_empty(), "requests outside the RBAC: {outside:?}");
    // Leases only in its own namespace.
    assert!(
        audit
            .iter()
            .filter(|e| e.object_ref.resource == "leases")
            .all(|e| e.in_namespace(SYSTEM_NS)
                && e.object_ref
                    .name
                    .as_deref()
                    .is_none_or(|n| n == "reserve-operator")),
        "lease requests outside reserve-system/reserve-operator"
    );
    assert!(status_patches(&audit, SA_USER, &ns) >= 2);
}
