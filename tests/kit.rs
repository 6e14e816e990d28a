//! The test kit itself (its own control plane): restarts keep data, the audit log names the
//! right user, impersonation is subject to RBAC, metrics are served, the operator binary runs.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, Client};
use reserve_operator::crd::{Customer, CustomerSpec};
use reserve_testkit::{
    ControlPlane, Identity, Launch,
    control_plane::{client_for, text},
    eventually, operator_bin,
    shop::fresh_namespace,
};
use std::time::Duration;
use tokio::sync::RwLock;

/// Restarting the API server would break the other tests of this binary: it takes the write lock.
static APISERVER: RwLock<()> = RwLock::const_new(());

fn customer(name: &str, display: &str) -> Customer {
    let mut c = Customer::new(
        name,
        CustomerSpec {
            display_name: Some(display.into()),
        },
    );
    c.metadata.labels = Some([("test".to_string(), "harness".to_string())].into());
    c
}

#[tokio::test]
async fn control_plane_serves_the_crds_over_tls_with_kubectl_and_kube() {
    let _shared = APISERVER.read().await;
    let cp = ControlPlane::shared();
    eprintln!(
        "control plane start-up (incl. CRDs): {:.1}s",
        cp.startup.as_secs_f64()
    );
    let out = cp.kubectl(&["get", "crd", "-o", "name"]);
    assert!(out.status.success(), "{}", text(&out));
    for crd in [
        "customers.reserve.coffeechain.io",
        "orders.reserve.coffeechain.io",
    ] {
        assert!(text(&out).contains(crd), "{crd} missing: {}", text(&out));
    }
    if cp.is_local() {
        let kubeconfig = std::fs::read_to_string(cp.kubeconfig()).unwrap();
        assert!(kubeconfig.contains(&format!("\"server\": \"{}\"", cp.server())));
        assert!(kubeconfig.contains("\"certificate-authority-data\":"));
    }
    let client = cp.client().await;
    let ns = fresh_namespace(&client, "harness-tls").await;
    let api: Api<Customer> = Api::namespaced(client, &ns);
    assert!(
        api.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn restart_apiserver_keeps_the_data() {
    let cp = ControlPlane::shared();
    if cp.skip_unless_local("restart_apiserver") {
        return;
    }
    let _exclusive = APISERVER.write().await;
    let client = cp.client().await;
    let ns = fresh_namespace(&client, "harness-restart").await;
    let api: Api<Customer> = Api::namespaced(client, &ns);
    api.create(&PostParams::default(), &customer("erin", "Erin Park"))
        .await
        .unwrap();

    cp.stop_apiserver();
    let out = cp.kubectl(&["get", "--raw", "/readyz", "--request-timeout=2s"]);
    assert!(
        !out.status.success(),
        "the API server still answers after stop_apiserver"
    );
    cp.start_apiserver().expect("kube-apiserver starts again");

    let api: Api<Customer> = Api::namespaced(cp.client().await, &ns);
    let erin = eventually(
        Duration::from_secs(20),
        "customer erin after the restart",
        || {
            let api = api.clone();
            async move { api.get("erin").await.ok() }
        },
    )
    .await;
    assert_eq!(erin.spec.display_name.as_deref(), Some("Erin Park"));

    cp.restart_apiserver();
    let out = cp.kubectl(&[
        "get",
        "customer",
        "erin",
        "-n",
        &ns,
        "-o",
        "jsonpath={.spec.displayName}",
    ]);
    assert_eq!(text(&out), "Erin Park");
}

#[tokio::test]
async fn audit_log_names_the_impersonated_user() {
    let _shared = APISERVER.read().await;
    let cp = ControlPlane::shared();
    if cp.skip_unless_local("audit") {
        return;
    }
    let admin = cp.client().await;
    let ns = fresh_namespace(&admin, "harness-audit").await;
    let as_writer = cp.kubeconfig_as(&Identity {
        user: "audit-writer".into(),
        groups: vec!["system:masters".into()],
    });
    let writer: Api<Customer> = Api::namespaced(client_for(&as_writer).await, &ns);
    writer
        .create(&PostParams::default(), &customer("frank", "Frank Oh"))
        .await
        .unwrap();
    let out = cp.kubectl_with(
        &as_writer,
        &["delete", "customer", "frank", "-n", &ns],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));

    let events = eventually(Duration::from_secs(10), "the audit events of frank", || {
        let ns = ns.clone();
        async move {
            let evs: Vec<_> = cp
                .audit()
                .into_iter()
                .filter(|e| e.in_namespace(&ns) && e.object_ref.name.as_deref() == Some("frank"))
                .collect();
            (evs.iter().any(|e| e.verb == "create") && evs.iter().any(|e| e.verb == "delete"))
                .then_some(evs)
        }
    })
    .await;
    let create = events.iter().find(|e| e.verb == "create").unwrap();
    assert_eq!(create.user(), "audit-writer");
    assert_eq!(create.user.username, "admin");
    assert_eq!(create.object_ref.resource, "customers");
    assert_eq!(create.object_ref.api_group, "reserve.coffeechain.io");
    assert_eq!(create.object_ref.subresource, None);
    assert_eq!(create.code(), Some(201));
    let delete = events.iter().find(|e| e.verb == "delete").unwrap();
    assert_eq!(delete.user(), "audit-writer");
    assert_eq!(delete.code(), Some(200));
    assert!(
        delete
            .user_agent
            .as_deref()
            .unwrap_or_default()
            .starts_with("kubectl"),
        "{delete:?}"
    );

    // fresh_namespace (generateName, so no name in the log) ran as the admin itself.
    let by_admin = cp.audit().into_iter().any(|e| {
        e.object_ref.resource == "namespaces"
            && e.verb == "create"
            && e.code() == Some(201)
            && e.user() == "admin"
            && e.object_ref.api_group.is_empty()
    });
    assert!(by_admin, "no namespace create by admin in the audit log");
}

#[tokio::test]
async fn impersonated_identity_needs_rbac() {
    let _shared = APISERVER.read().await;
    let cp = ControlPlane::shared();
    let admin = cp.client().await;
    let ns = fresh_namespace(&admin, "harness-rbac").await;
    let someone = cp.kubeconfig_as(&Identity::user("someone"));
    let api: Api<Customer> = Api::namespaced(client_for(&someone).await, &ns);
    match api.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("someone listed customers without RBAC: {other:?}"),
    }
    let out = cp.kubectl_with(&someone, &["get", "customers", "-n", &ns], None);
    assert!(
        !out.status.success() && text(&out).contains("forbidden"),
        "{}",
        text(&out)
    );

    grant_customer_reader(&admin, &ns, "someone").await;
    eventually(
        Duration::from_secs(10),
        "someone may list customers after the RoleBinding",
        || {
            let api = api.clone();
            async move { api.list(&ListParams::default()).await.ok() }
        },
    )
    .await;
    let out = cp.kubectl_with(&someone, &["get", "customers", "-n", &ns], None);
    assert!(out.status.success(), "{}", text(&out));
    // ...and only that.
    let out = cp.kubectl_with(
        &someone,
        &["auth", "can-i", "create", "customers", "-n", &ns],
        None,
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");

    if !cp.skip_unless_local("audit of the 403") {
        let denied = cp.audit().into_iter().find(|e| {
            e.user() == "someone"
                && e.in_namespace(&ns)
                && e.verb == "list"
                && e.code() == Some(403)
        });
        assert!(denied.is_some(), "no 403 list by someone in the audit log");
    }
}

async fn grant_customer_reader(admin: &Client, ns: &str, user: &str) {
    let role = Role {
        metadata: ObjectMeta {
            name: Some("customer-reader".into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["reserve.coffeechain.io".into()]),
            resources: Some(vec!["customers".into()]),
            verbs: vec!["get".into(), "list".into(), "watch".into()],
            ..Default::default()
        }]),
    };
    Api::<Role>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("customer-reader".into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: "customer-reader".into(),
        },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "User".into(),
            name: user.into(),
            ..Default::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
}

#[tokio::test]
async fn service_account_tokens_are_issued() {
    let _shared = APISERVER.read().await;
    let cp = ControlPlane::shared();
    let admin = cp.client().await;
    let ns = fresh_namespace(&admin, "harness-sa").await;
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("robot".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(admin, &ns)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    let out = cp.kubectl(&["create", "token", "robot", "-n", &ns]);
    assert!(out.status.success(), "{}", text(&out));
    let token = String::from_utf8(out.stdout).unwrap();
    let out = cp.kubectl(&[
        "auth",
        "whoami",
        "--token",
        token.trim(),
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert_eq!(text(&out), format!("system:serviceaccount:{ns}:robot"));
}

#[tokio::test]
async fn apiserver_metrics_are_served() {
    let _shared = APISERVER.read().await;
    let metrics = ControlPlane::shared().apiserver_metrics();
    assert!(
        metrics.contains("apiserver_request_total"),
        "no apiserver_request_total in /metrics"
    );
}

#[test]
fn operator_process_runs_the_binary() {
    let cp = ControlPlane::shared();
    let mut op = Launch::new(operator_bin!(), cp.kubeconfig())
        .args(["--help"])
        .spawn();
    assert!(op.pid() > 0);
    let status = op
        .wait_exit(Duration::from_secs(30))
        .expect("reserve-operator run --help exits");
    assert!(status.success(), "{}", op.logs());
    assert!(op.logs().contains("--levels"), "{}", op.logs());
    assert!(!op.running());
    // Harmless once it has exited.
    op.sigterm();
    op.kill();
}
