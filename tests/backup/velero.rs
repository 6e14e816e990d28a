//! Velero: the namespace backed up to an object store, lost, and restored with the statuses of
//! Customers and Orders (`--status-include-resources`) while the operator runs. Velero acts as
//! its own ServiceAccount, a restore identity of the shipped policies by default.
//!
//! Velero, its AWS plugin and an S3 on loopback take about 7 minutes to build the first time
//! (`hack/velero-tools.sh`), so this runs with `make test-velero`, not `make test`.

use reserve_operator::loyalty::LevelPolicy;
use reserve_testkit::velero::Velero;

use super::{STORE, history::*};

const STATUS_OF: &str = "customers.reserve.coffeechain.io,orders.reserve.coffeechain.io";

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Velero (built by hack/velero-tools.sh): make test-velero"]
async fn restored_by_velero_while_the_operator_runs_keeps_everything() {
    let _shared = STORE.read().await;
    let mut velero = Velero::start().await;
    let (shop, identity) = settling_shop("velero").await;
    let mut op = operator(&shop, &identity);
    build(&shop).await;
    let before = state(&shop).await;
    refused("before", &shop.admin, &shop.ns, false).await;
    velero.backup("shop", &shop.ns).await;

    lose(&shop, &mut op).await;
    let lowest = Lowest::watch(&shop);
    refused("an admin, meanwhile", &shop.admin, &shop.ns, false).await;
    // The operator runs through the restore: it must neither take a new snapshot of an order
    // Velero is about to give its saved status, nor lower a score while a Ledger is not back.
    let op = operator(&shop, &identity);
    let (phase, details) = velero.restore("shop", "shop", STATUS_OF).await;
    println!("{details}");
    assert_eq!(phase, "Completed", "{details}");
    let (left, _) = shop.converge(&LevelPolicy::default(), WAIT).await;
    assert!(left.is_empty(), "{left:#?}");
    let after = state(&shop).await;
    assert_eq!(after, before, "not what was backed up");
    assert_eq!(lowest.below(&before), [], "a score went below what it was");
    refused("an admin, after", &shop.admin, &shop.ns, false).await;
    drop(op);
}
