//! Saved with `kubectl get -o json`, lost, and put back with `reserve-operator restore` as the
//! restore identity, the operator stopped meanwhile.

use reserve_operator::{controller::customer::SETTLED_HISTORY_MISSING, loyalty::LevelPolicy};
use reserve_testkit::{ControlPlane, eventually};

use super::{STORE, history::*};

#[tokio::test(flavor = "multi_thread")]
async fn saved_with_kubectl_and_restored_onto_an_empty_namespace_keeps_everything() {
    let _shared = STORE.read().await;
    let cp = ControlPlane::shared();
    install_restore_rbac();
    let (shop, identity) = settling_shop("kubectl").await;
    let mut op = operator(&shop, &identity);
    build(&shop).await;
    let before = state(&shop).await;
    refused("before", &shop.admin, &shop.ns, false).await;
    let backup = save(&shop, "ledgers,customers,orders");

    lose(&shop, &mut op).await;
    let lowest = Lowest::watch(&shop);
    refused("an admin, meanwhile", &shop.admin, &shop.ns, false).await;
    let (report, complete) = restore(&backup);
    println!("{report}");
    assert!(complete, "{report}");
    assert!(report.contains("ledgers: 4 Created"), "{report}");
    assert!(report.contains("order snapshots: 12 Restored"), "{report}");
    let op = operator(&shop, &identity);
    let (left, _) = shop.converge(&LevelPolicy::default(), WAIT).await;
    assert!(left.is_empty(), "{left:#?}");
    let after = state(&shop).await;
    assert_eq!(after, before, "not what was saved");
    assert_eq!(lowest.below(&before), [], "a score went below what it was");

    // Nobody else writes what only the operator writes, the restore identity included, now
    // that everything is back; and the orders applied from Git are still theirs.
    refused("an admin, after", &shop.admin, &shop.ns, false).await;
    let restorer = cp.client_as(&restore_identity()).await;
    refused("the restore identity, after", &restorer, &shop.ns, true).await;
    let git0 = shop.orders().get("git0").await.unwrap();
    let applied = git0.metadata.managed_fields.unwrap_or_default();
    assert!(
        applied
            .iter()
            .any(|m| m.manager.as_deref() == Some("git") && m.operation.as_deref() == Some("Apply")),
        "git0 lost its field manager: {applied:?}"
    );
    drop(op);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_without_the_ledgers_is_reported_and_lowers_no_score() {
    let _shared = STORE.read().await;
    install_restore_rbac();
    let (shop, identity) = settling_shop("noledger").await;
    let mut op = operator(&shop, &identity);
    build(&shop).await;
    let before = state(&shop).await;
    let without_ledgers = save(&shop, "customers,orders");
    let full = save(&shop, "ledgers,customers,orders");

    lose(&shop, &mut op).await;
    let lowest = Lowest::watch(&shop);
    let (report, complete) = restore(&without_ledgers);
    assert!(complete, "{report}");
    let op = operator(&shop, &identity);
    let probe = op.probe().clone();
    // Every customer says its history is missing, and keeps the score it had.
    let missing = eventually(WAIT, "the missing history reported", || async {
        let metric = probe
            .metric("reserve_customers_settled_history_missing", &[])
            .await?;
        (metric == CUSTOMERS as f64).then_some(metric)
    })
    .await;
    assert_eq!(missing, 4.0);
    for (name, customer) in state(&shop).await.customers {
        assert_eq!(customer, before.customers[&name], "{name}");
    }
    for customer in shop.customers().list(&Default::default()).await.unwrap() {
        let ready = customer.status.unwrap_or_default().conditions;
        let ready = ready.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", SETTLED_HISTORY_MISSING)
        );
    }
    let events = shop.events().await;
    let warned = events
        .iter()
        .filter(|(reason, ..)| reason == SETTLED_HISTORY_MISSING)
        .count();
    assert_eq!(warned, CUSTOMERS, "{events:#?}");

    // The Ledgers come back later: exact, Ready again, and nothing went below.
    let (report, complete) = restore(&full);
    assert!(complete, "{report}");
    assert!(report.contains("ledgers: 4 Created"), "{report}");
    let (left, _) = shop.converge(&LevelPolicy::default(), WAIT).await;
    assert!(left.is_empty(), "{left:#?}");
    eventually(WAIT, "every customer Ready again", || async {
        let metric = probe
            .metric("reserve_customers_settled_history_missing", &[])
            .await?;
        (metric == 0.0).then_some(())
    })
    .await;
    assert_eq!(state(&shop).await, before);
    assert_eq!(lowest.below(&before), []);
}
