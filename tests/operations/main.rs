//! Running the operator like in production: the kustomize base in `manifests/operator/`
//! installs, its ServiceAccount can do exactly what the operator needs (nothing more, no 403 in
//! a real run), leader election hands over on SIGKILL and SIGTERM, and the probe endpoints
//! answer. The operator runs as its own process here.
//!
//! Every test uses its own namespaces and runs operators restricted to them (`--namespace`), so
//! the tests can share the control plane and run in parallel.

mod manifests;
mod replicas;
mod service_account;

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};
use kube::Api;
use kube::api::PostParams;
use reserve_operator::{crd::OrderState, leader::LEASE_SECONDS};
use reserve_testkit::{
    ControlPlane, FAIL_AFTER, Identity, Launch, OperatorProcess,
    audit::AuditEvent,
    control_plane::text,
    eventually, fixtures, operator_bin,
    rbac::{self, Scope},
    shop::{
        LEASE_ROLE, OPERATOR_NAMESPACE, OPERATOR_ROLE, fresh_namespace, grant_lease,
        operator_identity,
    },
    until,
};
use std::collections::BTreeSet;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const BASE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/operator");
const CRDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/crds");
const SYSTEM_NS: &str = OPERATOR_NAMESPACE;
const SA: &str = "reserve-operator";
const SA_USER: &str = "system:serviceaccount:reserve-system:reserve-operator";
const CLUSTER_ROLE: &str = OPERATOR_ROLE;
/// The Deployment's terminationGracePeriodSeconds: how long a replica has to exit on SIGTERM.
const GRACE: Duration = Duration::from_secs(30);

// What every test here shares.

/// `kubectl apply -k manifests/operator` for real, once per test binary.
fn install() -> &'static ControlPlane {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    let cp = ControlPlane::shared();
    INSTALLED.get_or_init(|| {
        let out = cp.kubectl(&["apply", "-k", BASE]);
        assert!(out.status.success(), "apply -k {BASE}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("PodSecurity"),
            "the Deployment violates the namespace's Pod Security level: {stderr}"
        );
    });
    cp
}

/// Waits until the customer's status shows `score` and `level`.
async fn wait_for_score(
    customers: &Api<reserve_operator::crd::Customer>,
    name: &str,
    score: i64,
    level: &str,
) {
    let what = format!("customer {name} with score {score} and level {level}");
    until(customers, name, FAIL_AFTER, &what, |c| {
        c.status
            .as_ref()
            .is_some_and(|s| s.score == score && s.level.as_deref() == Some(level))
    })
    .await;
}

/// Successful status patches on customers and orders in `namespace`, by `user`.
fn status_patches(audit: &[AuditEvent], user: &str, namespace: &str) -> usize {
    audit
        .iter()
        .filter(|e| {
            e.user() == user
                && e.verb == "patch"
                && e.object_ref.api_group == "reserve.coffeechain.io"
                && e.is_status_write()
                && e.in_namespace(namespace)
        })
        .count()
}

async fn complete(orders: &Api<reserve_operator::crd::Order>, name: &str) {
    orders
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"spec": {"state": "Completed"}})),
        )
        .await
        .unwrap_or_else(|e| panic!("complete order {name}: {e}"));
}
