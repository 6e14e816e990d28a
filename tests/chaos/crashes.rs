//! The operator killed again and again under load.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn operator_killed_again_and_again_under_load_ends_exact() {
    let _shared = CONTROL_PLANE.read().await;
    let shop = Shop::new("crash").await;
    let identity = shop.identity("operator").await;
    let policy = LevelPolicy::default();
    let invariants = Invariants::watch(shop.customers(), shop.orders(), policy.clone());
    let plan = Plan::new(40 * scale(), 1200 * scale(), 7);
    prepare(&shop, &plan).await;
    shop.order("lonely", "nobody-here", 3, OrderState::Completed)
        .await;

    let args = ["--no-leader-election"];
    let mut operator = shop.operator_process(operator_bin!(), &identity, &args);
    let load = load(&shop, &plan);
    // Meanwhile: kill the operator at random moments and start it again; users edit customers;
    // one customer is deleted and created again.
    let mut rng = reserve_testkit::workload::Rng::new(7);
    let (mut kills, mut edits) = (0, 0);
    while !load.is_finished() || kills < 3 {
        tokio::time::sleep(Duration::from_millis(300 + rng.below(1200))).await;
        operator.kill();
        kills += 1;
        operator = shop.operator_process(operator_bin!(), &identity, &args);
        let victim = &plan.customers[rng.below(plan.customers.len() as u64) as usize];
        let patch = serde_json::json!({
            "metadata": { "labels": { "tier": format!("t{kills}") }, "annotations": { "note": format!("edit {kills}") } },
            "spec": { "displayName": format!("Edited {kills}") },
        });
        shop.customers()
            .patch(victim, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        edits += 1;
        if kills == 2 {
            shop.delete_customer(&plan.customers[0]).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            shop.customer(&plan.customers[0]).await;
        }
    }
    let transitions = load.await.unwrap();
    let exact = shop.converge(&policy, converge_deadline()).await;
    println!("kills survived: {kills}, user edits: {edits}");
    report(
        "crash test",
        transitions,
        &exact,
        &invariants.finish().await,
    );

    // Every user edit is still there: the operator writes only status.
    let edited: Vec<Customer> = shop
        .customers()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|c| {
            c.metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key("note"))
        })
        .collect();
    assert!(!edited.is_empty());
    for customer in edited {
        let note = &customer.metadata.annotations.as_ref().unwrap()["note"];
        let n = note.trim_start_matches("edit ");
        assert_eq!(
            customer.metadata.labels.as_ref().unwrap()["tier"],
            format!("t{n}")
        );
        assert_eq!(
            customer.spec.display_name.as_deref(),
            Some(format!("Edited {n}").as_str())
        );
    }
    // An order whose customer never exists stays Iron, accepted, and says why; it blocked nothing.
    let lonely = shop.orders().get("lonely").await.unwrap().status.unwrap();
    assert_eq!(
        lonely.customer_level.as_deref(),
        Some(MISSING_CUSTOMER_LEVEL)
    );
    assert!(
        lonely
            .conditions
            .iter()
            .any(|c| c.reason == "CustomerNotFound" && c.status == "False"),
        "{lonely:?}"
    );
    let cp = ControlPlane::shared();
    if !cp.is_local() {
        return;
    }
    let writes: Vec<_> = cp
        .audit()
        .into_iter()
        .filter(|e| e.user() == identity.user && e.is_complete() && e.is_write())
        .collect();
    let other = writes.iter().find(|w| {
        w.object_ref.subresource.as_deref() != Some("status") && w.object_ref.resource != "events"
    });
    assert!(
        other.is_none(),
        "the operator wrote something other than a status: {other:?}"
    );
}
