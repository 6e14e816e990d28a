//! An operator watching every namespace counts the same customer name in two namespaces
//! separately. Its own binary: a cluster-wide operator would also act on other tests' objects.

use reserve_operator::crd::OrderState::Completed;
use reserve_testkit::{ControlPlane, InProcessOperator, Shop};

#[tokio::test(flavor = "multi_thread")]
async fn the_same_customer_name_in_two_namespaces_is_counted_separately() {
    let north = Shop::new("north").await;
    let south = north.beside("south").await;
    let identity = north.identity("everywhere").await;
    let client = ControlPlane::shared().client_as(&identity).await;
    let _operator = InProcessOperator::start(client, &["--no-leader-election"]).await;

    north.customer("alice").await;
    south.customer("alice").await;
    north.order("a", "alice", 3, Completed).await;
    south.order("a", "alice", 7, Completed).await;
    south.order("b", "alice", 4, Completed).await;
    north.expect_customer("alice", 3, "Bronze", (1, 0, 0)).await;
    south.expect_customer("alice", 11, "Gold", (2, 0, 0)).await;
}
