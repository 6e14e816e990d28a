//! An operator watching every namespace counts the same customer name in two namespaces
//! separately. Its own binary: a cluster-wide operator would also act on other tests' objects.

mod scenario;
mod support;

use reserve_operator::crd::OrderState::Completed;
use scenario::Scenario;
use support::{ControlPlane, OperatorProcess, fresh_namespace};

#[tokio::test]
async fn the_same_customer_name_in_two_namespaces_is_counted_separately() {
    let cp = ControlPlane::get();
    let mut one = Scenario::start("north", &[]).await;
    // Replace the per-namespace operator with one that watches all namespaces.
    one.operator.take();
    let kubeconfig = one.kubeconfig.clone();
    let port = scenario::free_port().to_string();
    let operator = OperatorProcess::spawn(
        &kubeconfig,
        &[
            "run",
            "--no-leader-election",
            "--probe-addr",
            &format!("127.0.0.1:{port}"),
        ],
    );
    let two_ns = fresh_namespace(&cp.client().await, "south").await;
    let two = Scenario {
        ns: two_ns,
        operator: Some(operator),
        ..one.clone_without_operator()
    };

    one.customer("alice").await;
    two.customer("alice").await;
    one.order("a", "alice", 3, Completed).await;
    two.order("a", "alice", 7, Completed).await;
    two.order("b", "alice", 4, Completed).await;
    one.expect_customer("alice", 3, "Bronze", (1, 0, 0)).await;
    two.expect_customer("alice", 11, "Gold", (2, 0, 0)).await;
}
