//! Uninstalling keeps what protects the records nobody can reconstruct: after `helm uninstall`,
//! the CRDs, every Customer, Order and Ledger and the admission policies are still there and
//! still refuse a forged snapshot or Ledger (the operator's own ServiceAccount included, its
//! RBAC gone with the release), and `helm install` again adopts them. The
//! kustomize base of the operator carries none of them, so `kubectl delete -k
//! manifests/operator` leaves them too.

use std::process::{Command, Output};

use kube::api::{Patch, PatchParams, PostParams};
use reserve_operator::crd::{Ledger, LedgerSpec, Order, OrderState};
use reserve_testkit::{FAIL_AFTER, eventually, shop::OPERATOR_NAMESPACE, tools};
use serde_json::json;

use super::*;

fn helm(cp: &ControlPlane, args: &[&str]) -> Output {
    let bin = tools::ecosystem_bin_dir().expect("helm is built");
    Command::new(bin.join("helm"))
        .args(args)
        .arg("--kubeconfig")
        .arg(cp.kubeconfig())
        .env("HELM_CACHE_HOME", watchdog().dir().join("helm-cache"))
        .env("HELM_CONFIG_HOME", watchdog().dir().join("helm-config"))
        .output()
        .expect("run helm")
}

/// Refused at admission (403 Forbidden, 422 Invalid).
fn refused<T: std::fmt::Debug>(what: &str, result: Result<T, kube::Error>) {
    match result {
        Err(kube::Error::Api(status)) if [403, 422].contains(&status.code) => {
            println!("{what}: refused, {}", status.message);
        }
        other => panic!("{what}: not refused: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn helm_uninstall_keeps_the_records_and_the_policies_and_a_reinstall_adopts_them() {
    let _alone = ALONE.lock().await;
    let cp = ControlPlane::start_empty(Options {
        dir: watchdog().dir().join("uninstall"),
        lifetime: Lifetime::ThisProcess,
        audit: AuditMode::Blocking,
        node: None,
        profiling: false,
    })
    .expect("a control plane");
    let chart = repo_root()
        .join("charts/reserve-operator")
        .display()
        .to_string();
    let install = [
        "install",
        "reserve",
        &chart,
        "--namespace",
        OPERATOR_NAMESPACE,
        "--create-namespace",
        "--set",
        "settlement.enabled=true,settlement.settleAfter=2s",
    ];
    let out = helm(&cp, &install);
    assert!(out.status.success(), "helm install: {}", text(&out));

    // A shop the chart's operator identity settles (the operator as a process: no node here).
    let (shop, _) = settling_shop(&cp, "uninstall").await;
    let operator = Identity::service_account(OPERATOR_NAMESPACE, "reserve-operator");
    let process = Launch::new(current_bin(), &cp.kubeconfig_as(&operator))
        .args([
            "--namespace",
            &shop.ns,
            "--no-leader-election",
            "--settle-after",
            "2s",
        ])
        .spawn();
    shop.customer("alice").await;
    shop.order("settled", "alice", 3, OrderState::Completed)
        .await;
    shop.order("open", "alice", 2, OrderState::Requested).await;
    eventually(FAIL_AFTER, "a Ledger and a snapshot", || async {
        let ledgers = ledgers(&shop.admin, &shop.ns).await;
        let open = shop.orders().get("open").await.ok()?;
        let snapshot = open.status?.customer_level.filter(|l| l != "Iron");
        (ledgers.get("alice") == Some(&(3, 1, 0)) && snapshot.is_some()).then_some(())
    })
    .await;
    drop(process);

    let out = helm(
        &cp,
        &["uninstall", "reserve", "--namespace", OPERATOR_NAMESPACE],
    );
    assert!(out.status.success(), "helm uninstall: {}", text(&out));
    for kept in [
        "crd/customers.reserve.coffeechain.io",
        "crd/orders.reserve.coffeechain.io",
        "crd/ledgers.reserve.coffeechain.io",
        "validatingadmissionpolicy/reserve-operator-status",
        "validatingadmissionpolicy/reserve-operator-ledgers",
        "validatingadmissionpolicy/reserve-operator-identity",
        "validatingadmissionpolicybinding/reserve-operator-status",
        "validatingadmissionpolicybinding/reserve-operator-ledgers",
        "validatingadmissionpolicybinding/reserve-operator-identity",
        "configmap/reserve-operator-writers",
    ] {
        let out = cp.kubectl(&["get", kept, "-n", OPERATOR_NAMESPACE, "-o", "name"]);
        assert!(
            out.status.success(),
            "{kept} gone with the release: {}",
            text(&out)
        );
    }
    assert_eq!(ledgers(&shop.admin, &shop.ns).await["alice"], (3, 1, 0));
    assert!(shop.orders().get("open").await.is_ok());

    // Still refused: a forged Ledger, a changed Ledger, a changed snapshot; by an admin, and by
    // the operator's own ServiceAccount, which lost its RBAC with the release.
    let as_operator = cp.client_as(&operator).await;
    for (who, client) in [
        ("an admin", shop.admin.clone()),
        ("the operator's account", as_operator),
    ] {
        let ledgers: Api<Ledger> = Api::namespaced(client.clone(), &shop.ns);
        let forged = Ledger::new(
            "mallory",
            LedgerSpec {
                score: 100,
                ..LedgerSpec::default()
            },
        );
        refused(
            &format!("a new Ledger by {who}"),
            ledgers.create(&PostParams::default(), &forged).await,
        );
        let more = json!({ "spec": { "score": 100 } });
        refused(
            &format!("a changed Ledger by {who}"),
            ledgers
                .patch("alice", &PatchParams::default(), &Patch::Merge(&more))
                .await,
        );
        let orders: Api<Order> = Api::namespaced(client, &shop.ns);
        let diamond = json!({ "status": { "customerLevel": "Diamond" } });
        refused(
            &format!("a changed snapshot by {who}"),
            orders
                .patch_status("open", &PatchParams::default(), &Patch::Merge(&diamond))
                .await,
        );
    }

    // Installed again: the kept objects are adopted.
    let out = helm(&cp, &install);
    assert!(out.status.success(), "helm install again: {}", text(&out));
    let owner = cp.kubectl(&[
        "get",
        "validatingadmissionpolicy/reserve-operator-identity",
        "-o",
        "jsonpath={.metadata.annotations.meta\\.helm\\.sh/release-name}",
    ]);
    assert_eq!(String::from_utf8_lossy(&owner.stdout), "reserve");

    // The kustomize base of the operator carries none of what protects the records.
    let base = repo_root().join("manifests/operator").display().to_string();
    let out = cp.kubectl(&["kustomize", &base]);
    assert!(out.status.success(), "{}", text(&out));
    let rendered = String::from_utf8_lossy(&out.stdout);
    for absent in [
        "kind: CustomResourceDefinition",
        "kind: ValidatingAdmissionPolicy",
        "name: reserve-operator-writers",
    ] {
        assert!(
            !rendered.contains(absent),
            "manifests/operator carries {absent}"
        );
    }
}
