//! Customers and Orders kept in Git, applied again (server-side) to a lost namespace. Git holds
//! every order, and an order applied from Git is never settled, so every score, level and count
//! comes back from Git alone. Level snapshots are not in Git: applied again, orders take new
//! ones (the level each customer has now without the order), unless the saved statuses are put
//! back (`reserve-operator restore`) before the operator sees the orders.

use reserve_operator::loyalty::LevelPolicy;
use reserve_testkit::Shop;

use super::{STORE, history::*};

/// The shop's Git repository: customers, and orders in two commits (the second applied once
/// the first counts, so their snapshots differ). Written before v1 and never changed: a
/// repository that still applies `v1alpha1` keeps working.
fn repository(shop: &Shop) -> [String; 2] {
    let customer = |name: &str| {
        format!(
            "apiVersion: reserve.coffeechain.io/v1alpha1\nkind: Customer\nmetadata:\n  name: {name}\n  namespace: {ns}\n",
            ns = shop.ns
        )
    };
    let order = |name: &str, customer: &str, quantity: u32, state: &str| {
        format!(
            "apiVersion: reserve.coffeechain.io/v1alpha1\nkind: Order\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  customer: {customer}\n  product: Latte\n  quantity: {quantity}\n  state: {state}\n",
            ns = shop.ns
        )
    };
    let mut first = vec![customer("ana"), customer("ben")];
    first.push(order("ana-1", "ana", 6, "Completed"));
    first.push(order("ana-2", "ana", 2, "Canceled"));
    first.push(order("ben-1", "ben", 12, "Completed"));
    let second = [
        order("ana-3", "ana", 5, "Completed"),
        order("ben-2", "ben", 6, "Completed"),
        order("ben-3", "ben", 1, "Requested"),
    ];
    [first.join("---\n"), second.join("---\n")]
}

async fn exact(shop: &Shop) {
    let (left, _) = shop.converge(&LevelPolicy::default(), WAIT).await;
    assert!(left.is_empty(), "{left:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn applied_again_from_git_every_score_level_and_count_is_back() {
    let _shared = STORE.read().await;
    install_restore_rbac();
    let (shop, identity) = settling_shop("gitops").await;
    let mut op = operator(&shop, &identity);
    let commits = repository(&shop);
    apply_as_git(&commits[0]);
    exact(&shop).await;
    apply_as_git(&commits[1]);
    exact(&shop).await;
    let before = state(&shop).await;
    assert!(
        before.ledgers.is_empty(),
        "orders from Git are never settled"
    );
    let statuses = save(&shop, "customers,orders");

    // Applied again, with the saved statuses put back before the operator runs: all of it.
    lose(&shop, &mut op).await;
    for commit in &commits {
        apply_as_git(commit);
    }
    let (report, complete) = restore(&statuses);
    assert!(complete, "{report}");
    assert!(report.contains("orders: 6 Already"), "{report}");
    let mut op = operator(&shop, &identity);
    exact(&shop).await;
    assert_eq!(state(&shop).await, before);

    // Applied again from Git alone: scores, levels and counts; the snapshots are new ones.
    lose(&shop, &mut op).await;
    for commit in &commits {
        apply_as_git(commit);
    }
    let op = operator(&shop, &identity);
    exact(&shop).await;
    let again = state(&shop).await;
    assert_eq!(again.customers, before.customers);
    assert_eq!(again.ledgers, before.ledgers);
    let retaken: Vec<&String> = before
        .snapshots
        .iter()
        .filter(|(name, level)| again.snapshots[*name] != **level)
        .map(|(name, _)| name)
        .collect();
    println!("snapshots taken anew that differ from the saved ones: {retaken:?}");
    assert!(
        !retaken.is_empty(),
        "the first commit's snapshots were taken before the second commit counted"
    );
    drop(op);
}
