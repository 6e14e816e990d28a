//! `kubectl reserve`, as kubectl runs it (the plugin found on PATH by the real kubectl): a
//! customer's page, a non-member's, a name nobody uses, and the operator's status with a
//! replica leading by the Lease.

use std::process::{Command, Output};

use reserve_operator::crd::OrderState;
use reserve_testkit::{
    ControlPlane, FAIL_AFTER, Launch, Shop, control_plane::text, eventually, shop::grant_lease,
    tools,
};
use serde_json::Value;

/// `kubectl reserve ARGS` with the admin kubeconfig, the plugin on PATH.
fn kubectl_reserve(cp: &ControlPlane, args: &[&str]) -> Output {
    let plugin = std::path::Path::new(env!("CARGO_BIN_EXE_kubectl-reserve"))
        .parent()
        .expect("the plugin's directory")
        .to_owned();
    let path = format!(
        "{}:{}",
        plugin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new(tools::bin_dir().expect("kubectl is built").join("kubectl"))
        .arg("reserve")
        .args(args)
        .env("PATH", path)
        .env("KUBECONFIG", cp.kubeconfig())
        .output()
        .expect("kubectl runs")
}

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "{}", text(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_customers_page_and_the_operators_status_in_one_command_each() {
    let cp = ControlPlane::shared();
    let shop = Shop::new("plugin").await;
    let lease_ns = shop.beside("plugin-lease").await.ns;
    let identity = shop.identity("a").await;
    grant_lease(&shop.admin, &lease_ns, &identity).await;
    let replica = Launch::replica(
        env!("CARGO_BIN_EXE_reserve-operator"),
        &identity,
        "replica-a",
        &shop.ns,
        &lease_ns,
    )
    .spawn();
    let probe = replica.probe().clone();
    eventually(FAIL_AFTER, "the replica to lead", || async {
        (probe.is_leader().await == Some(true)).then_some(())
    })
    .await;

    shop.customer("alice").await;
    shop.order("alice-latte", "alice", 3, OrderState::Completed)
        .await;
    shop.order("alice-mocha", "alice", 4, OrderState::Requested)
        .await;
    shop.order("carol-tea", "carol", 2, OrderState::Requested)
        .await;
    shop.expect_customer("alice", 3, "Bronze", (1, 0, 1)).await;
    shop.set_state("alice-mocha", OrderState::Completed).await;
    shop.expect_customer("alice", 7, "Silver", (2, 0, 0)).await;

    let page = stdout(&kubectl_reserve(cp, &["customer", "alice", "-n", &shop.ns]));
    for line in [
        format!("Customer alice (namespace {})", shop.ns),
        "Level:   Silver (score 7; 3 points to Gold)".to_owned(),
        "Orders:  0 open, 2 completed, 0 canceled".to_owned(),
        "Ready:   True".to_owned(),
        "Settled: nothing (no Ledger)".to_owned(),
        "alice-latte".to_owned(),
        "alice-mocha".to_owned(),
        "level Bronze -> Silver (score 7)".to_owned(),
    ] {
        assert!(page.contains(&line), "{line:?} missing:\n{page}");
    }
    assert!(!page.contains("carol-tea"), "only her orders:\n{page}");

    let json: Value = serde_json::from_str(&stdout(&kubectl_reserve(
        cp,
        &["customer", "alice", "-n", &shop.ns, "-o", "json"],
    )))
    .expect("-o json is JSON");
    assert_eq!(json["level"], "Silver");
    assert_eq!(json["pointsToNextLevel"], 3);
    assert_eq!(json["orders"].as_array().map(Vec::len), Some(2));
    let yaml = stdout(&kubectl_reserve(
        cp,
        &["customer", "alice", "-n", &shop.ns, "-o", "yaml"],
    ));
    assert!(yaml.contains("level: Silver"), "{yaml}");

    // A non-member: her order is shown, and she is said not to be a customer.
    let carol = stdout(&kubectl_reserve(cp, &["customer", "carol", "-n", &shop.ns]));
    assert!(
        carol.contains("Not a member: no Customer carol exists") && carol.contains("carol-tea"),
        "{carol}"
    );
    // Nobody: a clear message and a failing exit.
    let zoe = kubectl_reserve(cp, &["customer", "zoe", "-n", &shop.ns]);
    assert!(!zoe.status.success());
    assert!(
        text(&zoe).contains(&format!(
            "no customer zoe in namespace {}, and no orders for one",
            shop.ns
        )),
        "{}",
        text(&zoe)
    );

    // The operator: the Lease's holder (no pods here: the replica is a process).
    let status = stdout(&kubectl_reserve(cp, &["status", "-n", &lease_ns]));
    assert!(status.contains("Leader:   replica-a (renewed "), "{status}");
    assert!(
        status.contains("Replicas: no pod labelled app.kubernetes.io/name=reserve-operator"),
        "{status}"
    );
    let json: Value = serde_json::from_str(&stdout(&kubectl_reserve(
        cp,
        &["status", "-n", &lease_ns, "-o", "json"],
    )))
    .unwrap();
    assert_eq!(json["lease"]["holder"], "replica-a");
    assert_eq!(json["lease"]["held"], true);
    drop(replica);
}
