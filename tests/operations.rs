//! Running the operator like in production: the kustomize base in `manifests/operator/`
//! installs, its ServiceAccount can do exactly what the operator needs (nothing more, no 403 in
//! a real run), leader election hands over on SIGKILL and SIGTERM, and the probe endpoints
//! answer. The operator runs as its own process here.
//!
//! Every test uses its own namespaces and runs operators restricted to them (`--namespace`), so
//! the tests can share the control plane and run in parallel.

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};
use kube::Api;
use kube::api::PostParams;
use reserve_operator::{crd::OrderState, leader::LEASE_SECONDS};
use reserve_testkit::{
    ControlPlane, Identity, Launch, OperatorProcess,
    audit::AuditEvent,
    control_plane::text,
    eventually, fixtures, operator_bin,
    shop::{
        LEASE_ROLE, OPERATOR_NAMESPACE, OPERATOR_ROLE, fresh_namespace, grant_lease,
        operator_identity,
    },
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

// ---------------------------------------------------------------------------------------------
// helpers

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
    eventually(Duration::from_secs(30), &what, || {
        let customers = customers.clone();
        async move {
            let c = customers.get(name).await.ok()?;
            let s = c.status?;
            (s.score == score && s.level.as_deref() == Some(level)).then_some(())
        }
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

// ---------------------------------------------------------------------------------------------
// the manifests

#[tokio::test]
async fn manifests_pass_server_side_dry_run_and_grant_exactly_the_documented_rules() {
    let cp = install();
    let out = cp.kubectl(&["apply", "--dry-run=server", "-k", CRDS]);
    assert!(out.status.success(), "dry run: {}", text(&out));
    let listed = String::from_utf8_lossy(&out.stdout);
    for object in [
        "customresourcedefinition.apiextensions.k8s.io/customers.reserve.coffeechain.io",
        "customresourcedefinition.apiextensions.k8s.io/orders.reserve.coffeechain.io",
        "validatingadmissionpolicy.admissionregistration.k8s.io/reserve-operator-status",
        "validatingadmissionpolicybinding.admissionregistration.k8s.io/reserve-operator-status",
        "customresourcedefinition.apiextensions.k8s.io/ledgers.reserve.coffeechain.io",
        "validatingadmissionpolicy.admissionregistration.k8s.io/reserve-operator-ledgers",
        "validatingadmissionpolicybinding.admissionregistration.k8s.io/reserve-operator-ledgers",
    ] {
        assert!(listed.contains(object), "{object} missing from\n{listed}");
    }
    let out = cp.kubectl(&["apply", "--dry-run=server", "-k", BASE]);
    assert!(out.status.success(), "dry run: {}", text(&out));
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        !listed.contains("customresourcedefinition"),
        "the operator's base must not carry the CRDs (a prune would delete every object): {listed}"
    );
    for object in [
        "namespace/reserve-system",
        "serviceaccount/reserve-operator",
        "role.rbac.authorization.k8s.io/reserve-operator-leader-election",
        "clusterrole.rbac.authorization.k8s.io/reserve-operator",
        "rolebinding.rbac.authorization.k8s.io/reserve-operator-leader-election",
        "clusterrolebinding.rbac.authorization.k8s.io/reserve-operator",
        "configmap/reserve-operator-config",
        "service/reserve-operator-metrics",
        "deployment.apps/reserve-operator",
    ] {
        assert!(listed.contains(object), "{object} missing from\n{listed}");
    }

    // The namespace enforces the "restricted" Pod Security level, which the Deployment meets
    // (install() saw no warning); a pod template without the securityContext draws one.
    let out = cp.kubectl(&[
        "create",
        "deployment",
        "unhardened",
        "--image=reserve-operator:latest",
        "-n",
        SYSTEM_NS,
        "--dry-run=server",
    ]);
    assert!(
        text(&out).contains("would violate PodSecurity \"restricted:latest\""),
        "{}",
        text(&out)
    );

    let client = cp.client().await;
    let rules = |rules: Option<Vec<PolicyRule>>| -> BTreeSet<String> {
        let mut set = BTreeSet::new();
        for r in rules.unwrap_or_default() {
            for g in r.api_groups.unwrap_or_default() {
                for res in r.resources.clone().unwrap_or_default() {
                    for v in &r.verbs {
                        let names = r.resource_names.clone().unwrap_or_default().join(",");
                        set.insert(format!("{g}/{res}[{names}]:{v}"));
                    }
                }
            }
        }
        set
    };
    let cluster_role = Api::<ClusterRole>::all(client.clone())
        .get(CLUSTER_ROLE)
        .await
        .unwrap();
    let expected: BTreeSet<String> = [
        "reserve.coffeechain.io/customers[]:get",
        "reserve.coffeechain.io/customers[]:list",
        "reserve.coffeechain.io/customers[]:watch",
        "reserve.coffeechain.io/orders[]:get",
        "reserve.coffeechain.io/orders[]:list",
        "reserve.coffeechain.io/orders[]:watch",
        "reserve.coffeechain.io/ledgers[]:get",
        "reserve.coffeechain.io/ledgers[]:list",
        "reserve.coffeechain.io/ledgers[]:watch",
        "reserve.coffeechain.io/customers/status[]:patch",
        "reserve.coffeechain.io/orders/status[]:patch",
        "events.k8s.io/events[]:create",
    ]
    .map(String::from)
    .into();
    assert_eq!(rules(cluster_role.rules), expected);
    let role = Api::<Role>::namespaced(client.clone(), SYSTEM_NS)
        .get(LEASE_ROLE)
        .await
        .unwrap();
    let expected: BTreeSet<String> = [
        "coordination.k8s.io/leases[]:create",
        "coordination.k8s.io/leases[reserve-operator]:get",
        "coordination.k8s.io/leases[reserve-operator]:list",
        "coordination.k8s.io/leases[reserve-operator]:watch",
        "coordination.k8s.io/leases[reserve-operator]:patch",
    ]
    .map(String::from)
    .into();
    assert_eq!(rules(role.rules), expected);

    // The Deployment as the API server stored it.
    let out = cp.kubectl(&[
        "get",
        "deployment/reserve-operator",
        "-n",
        SYSTEM_NS,
        "-o",
        "json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(d["spec"]["replicas"], 2);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], SA);
    let c = &pod["containers"][0];
    assert_eq!(
        c["args"],
        serde_json::json!(["run", "--log-format", "json"])
    );
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["runAsUser"], 65532);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    let env = c["env"].as_array().unwrap();
    let field = |name: &str| {
        env.iter()
            .find(|e| e["name"] == name)
            .map(|e| e["valueFrom"]["fieldRef"]["fieldPath"].clone())
    };
    assert_eq!(field("RESERVE_IDENTITY"), Some("metadata.name".into()));
    assert_eq!(
        field("RESERVE_LEASE_NAMESPACE"),
        Some("metadata.namespace".into())
    );
    assert_eq!(
        c["envFrom"][0]["configMapRef"]["name"],
        "reserve-operator-config"
    );
    let out = cp.kubectl(&[
        "get",
        "configmap/reserve-operator-config",
        "-n",
        SYSTEM_NS,
        "-o",
        "jsonpath={.data.RESERVE_LEVELS}",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        reserve_operator::loyalty::DEFAULT_LEVELS
    );
}

#[tokio::test]
async fn service_account_can_do_what_the_operator_needs_and_nothing_else() {
    let cp = install();
    let other_ns = fresh_namespace(&cp.client().await, "ops-cani").await;
    let as_sa = format!("--as={SA_USER}");
    let can_i = |args: &[&str]| -> bool {
        let mut all = vec!["auth", "can-i", as_sa.as_str()];
        all.extend_from_slice(args);
        let out = cp.kubectl(&all);
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            answer == "yes" || answer == "no",
            "kubectl {all:?}: {}",
            text(&out)
        );
        answer == "yes"
    };
    let ns = other_ns.as_str();
    let yes: &[&[&str]] = &[
        &["list", "customers.reserve.coffeechain.io", "-A"],
        &["watch", "customers.reserve.coffeechain.io", "-A"],
        &["list", "orders.reserve.coffeechain.io", "-A"],
        &["watch", "orders.reserve.coffeechain.io", "-A"],
        &["get", "orders.reserve.coffeechain.io", "-n", ns],
        &["list", "ledgers.reserve.coffeechain.io", "-A"],
        &["watch", "ledgers.reserve.coffeechain.io", "-A"],
        &[
            "patch",
            "customers.reserve.coffeechain.io",
            "--subresource=status",
            "-n",
            ns,
        ],
        &[
            "patch",
            "orders.reserve.coffeechain.io",
            "--subresource=status",
            "-n",
            ns,
        ],
        &["create", "events.events.k8s.io", "-n", ns],
        &["create", "leases.coordination.k8s.io", "-n", SYSTEM_NS],
        &[
            "get",
            "leases.coordination.k8s.io/reserve-operator",
            "-n",
            SYSTEM_NS,
        ],
        &[
            "patch",
            "leases.coordination.k8s.io/reserve-operator",
            "-n",
            SYSTEM_NS,
        ],
    ];
    let no: &[&[&str]] = &[
        &["*", "*", "-A"],
        &["*", "*", "-n", SYSTEM_NS],
        &["get", "secrets", "-n", ns],
        &["list", "secrets", "-A"],
        &["get", "secrets", "-n", SYSTEM_NS],
        &["list", "pods", "-A"],
        &["list", "pods", "-n", SYSTEM_NS],
        &["update", "customers.reserve.coffeechain.io", "-n", ns],
        &["patch", "customers.reserve.coffeechain.io", "-n", ns],
        &["update", "orders.reserve.coffeechain.io", "-n", ns],
        &["patch", "orders.reserve.coffeechain.io", "-n", ns],
        &[
            "update",
            "customers.reserve.coffeechain.io",
            "--subresource=status",
            "-n",
            ns,
        ],
        &["delete", "customers.reserve.coffeechain.io", "-n", ns],
        &["delete", "orders.reserve.coffeechain.io", "-n", ns],
        &[
            "deletecollection",
            "orders.reserve.coffeechain.io",
            "-n",
            ns,
        ],
        &["create", "customers.reserve.coffeechain.io", "-n", ns],
        &["create", "orders.reserve.coffeechain.io", "-n", ns],
        // Settlement's rules come only with manifests/settlement.
        &["create", "ledgers.reserve.coffeechain.io", "-n", ns],
        &["update", "ledgers.reserve.coffeechain.io", "-n", ns],
        &["delete", "ledgers.reserve.coffeechain.io", "-n", ns],
        &["create", "events", "-n", ns],
        &["patch", "events.events.k8s.io", "-n", ns],
        &["delete", "events.events.k8s.io", "-n", ns],
        &["list", "events.events.k8s.io", "-n", ns],
        &["get", "leases.coordination.k8s.io", "-n", ns],
        &["create", "leases.coordination.k8s.io", "-n", ns],
        &[
            "patch",
            "leases.coordination.k8s.io/reserve-operator",
            "-n",
            ns,
        ],
        &["update", "leases.coordination.k8s.io", "-n", ns],
        &["list", "leases.coordination.k8s.io", "-A"],
        &[
            "update",
            "leases.coordination.k8s.io/reserve-operator",
            "-n",
            SYSTEM_NS,
        ],
        &[
            "delete",
            "leases.coordination.k8s.io/reserve-operator",
            "-n",
            SYSTEM_NS,
        ],
        &[
            "patch",
            "leases.coordination.k8s.io/someone-else",
            "-n",
            SYSTEM_NS,
        ],
        &[
            "get",
            "leases.coordination.k8s.io/someone-else",
            "-n",
            SYSTEM_NS,
        ],
        &["create", "customresourcedefinitions.apiextensions.k8s.io"],
        &["list", "namespaces"],
        &["list", "configmaps", "-n", SYSTEM_NS],
        &["create", "clusterrolebindings"],
        &["escalate", "clusterroles"],
        &["impersonate", "users"],
    ];
    let mut wrong = Vec::new();
    for args in yes {
        if !can_i(args) {
            wrong.push(format!("expected yes: {args:?}"));
        }
    }
    for args in no {
        if can_i(args) {
            wrong.push(format!("expected no: {args:?}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

// ---------------------------------------------------------------------------------------------
// the operator under its own ServiceAccount

#[tokio::test]
async fn operator_with_the_service_account_token_reconciles_without_a_403() {
    let cp = install();
    if cp.skip_unless_local("the audit log") {
        return;
    }
    let out = cp.kubectl(&["create", "token", SA, "-n", SYSTEM_NS, "--duration", "1h"]);
    assert!(out.status.success(), "create token: {}", text(&out));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let kubeconfig = cp.kubeconfig_with_token(&token, SYSTEM_NS);

    let admin = cp.client().await;
    let ns = fresh_namespace(&admin, "ops-sa").await;
    let mut operator = Launch::new(operator_bin!(), &kubeconfig)
        .args([
            "--namespace",
            &ns,
            "--leader-election",
            "--lease-namespace",
            SYSTEM_NS,
            "--identity",
            "sa-test",
            "--log-format",
            "json",
        ])
        .spawn();
    let probe = operator.probe().clone();

    // It leads, and is ready once its caches are synced.
    eventually(
        Duration::from_secs(30),
        "the SA operator to lead",
        || async { (probe.is_leader().await == Some(true)).then_some(()) },
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "/readyz 200 on the leader",
        || async {
            let (code, body) = probe.get("/readyz").await?;
            (code == 200 && body.trim() == "ok").then_some(())
        },
    )
    .await;
    let (code, body) = probe.get("/healthz").await.expect("/healthz answers");
    assert_eq!((code, body.trim()), (200, "ok"));

    let customers: Api<reserve_operator::crd::Customer> = Api::namespaced(admin.clone(), &ns);
    let orders: Api<reserve_operator::crd::Order> = Api::namespaced(admin.clone(), &ns);
    let pp = PostParams::default();
    customers
        .create(&pp, &fixtures::customer("alice"))
        .await
        .unwrap();
    for (name, qty) in [("o1", 2), ("o2", 3), ("o3", 4), ("o4", 1)] {
        orders
            .create(
                &pp,
                &fixtures::order(name, "alice", qty, OrderState::Requested),
            )
            .await
            .unwrap();
    }
    // An order of a customer that does not exist: an Event (Warning, CustomerNotFound).
    orders
        .create(
            &pp,
            &fixtures::order("lost", "nobody", 1, OrderState::Requested),
        )
        .await
        .unwrap();
    wait_for_score(&customers, "alice", 0, "Bronze").await;
    for name in ["o1", "o2", "o3"] {
        complete(&orders, name).await;
    }
    wait_for_score(&customers, "alice", 9, "Silver").await;
    complete(&orders, "o4").await;
    wait_for_score(&customers, "alice", 10, "Gold").await;
    let alice = customers.get("alice").await.unwrap().status.unwrap();
    assert_eq!(
        (
            alice.completed_orders,
            alice.open_orders,
            alice.canceled_orders
        ),
        (4, 0, 0)
    );
    let o1 = orders.get("o1").await.unwrap().status.expect("o1 status");
    assert_eq!(o1.phase, Some(OrderState::Completed));
    let lost = eventually(Duration::from_secs(30), "order lost to be Iron", || {
        let orders = orders.clone();
        async move {
            let s = orders.get("lost").await.ok()?.status?;
            (s.customer_level.as_deref() == Some("Iron")).then_some(s)
        }
    })
    .await;
    assert!(
        lost.conditions.iter().any(|c| c.type_ == "CustomerFound"
            && c.status == "False"
            && c.reason == "CustomerNotFound"),
        "{lost:?}"
    );

    // The metrics of a leader that has reconciled.
    let metrics = probe.metrics().await.expect("/metrics answers");
    for (family, labels) in [
        ("reserve_reconciles_total", [("controller", "customer")]),
        (
            "reserve_reconcile_duration_seconds",
            [("controller", "order")],
        ),
        ("reserve_status_writes_total", [("controller", "order")]),
        ("reserve_reconcile_errors_total", [("controller", "order")]),
    ] {
        assert!(
            metrics.value(family, &labels).is_some(),
            "{family} {labels:?} missing"
        );
    }
    assert_eq!(
        metrics.value("reserve_customers", &[("level", "Gold")]),
        Some(1.0)
    );
    assert_eq!(metrics.value("reserve_leader", &[]), Some(1.0));

    // SIGTERM: a clean exit that releases the Lease.
    operator.sigterm();
    let status = operator
        .wait_exit(Duration::from_secs(10))
        .expect("the operator exits within 10s of SIGTERM");
    assert!(status.success(), "exit status {status}");
    let holder = cp.kubectl(&[
        "get",
        "lease/reserve-operator",
        "-n",
        SYSTEM_NS,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    assert!(holder.status.success(), "{}", text(&holder));
    assert_eq!(
        String::from_utf8_lossy(&holder.stdout),
        "",
        "lease released"
    );

    // What it did, per the API server: everything allowed, and nothing outside the RBAC.
    let audit: Vec<AuditEvent> = cp
        .audit()
        .into_iter()
        // Authenticated by the token (`kubectl auth can-i --as=...` of another test shows up
        // with the SA as the impersonated user, but authenticated as the admin).
        .filter(|e| e.user.username == SA_USER && e.is_complete())
        .collect();
    let denied: Vec<&AuditEvent> = audit.iter().filter(|e| e.code() == Some(403)).collect();
    assert!(denied.is_empty(), "403 for the operator: {denied:#?}");
    let used: BTreeSet<String> = audit.iter().map(AuditEvent::group_resource_verb).collect();
    eprintln!("the operator's requests (group/resource:verb): {used:#?}");
    // No LIST: this API server streams the initial lists (`--initial-list auto`). The role
    // grants list for older API servers, which page them.
    for needed in [
        "reserve.coffeechain.io/customers:watch",
        "reserve.coffeechain.io/orders:watch",
        "reserve.coffeechain.io/ledgers:watch",
        "reserve.coffeechain.io/customers/status:patch",
        "reserve.coffeechain.io/orders/status:patch",
        "events.k8s.io/events:create",
        "coordination.k8s.io/leases:get",
        "coordination.k8s.io/leases:patch",
    ] {
        assert!(used.contains(needed), "{needed} not used: {used:?}");
    }
    let granted: BTreeSet<&str> = [
        "reserve.coffeechain.io/customers:get",
        "reserve.coffeechain.io/customers:list",
        "reserve.coffeechain.io/customers:watch",
        "reserve.coffeechain.io/orders:get",
        "reserve.coffeechain.io/orders:list",
        "reserve.coffeechain.io/orders:watch",
        "reserve.coffeechain.io/ledgers:get",
        "reserve.coffeechain.io/ledgers:list",
        "reserve.coffeechain.io/ledgers:watch",
        "reserve.coffeechain.io/customers/status:patch",
        "reserve.coffeechain.io/orders/status:patch",
        "events.k8s.io/events:create",
        "coordination.k8s.io/leases:create",
        "coordination.k8s.io/leases:get",
        "coordination.k8s.io/leases:list",
        "coordination.k8s.io/leases:watch",
        "coordination.k8s.io/leases:patch",
        // GET /version, to choose how to list (every authenticated user may read it).
        "/:get",
    ]
    .into();
    let outside: Vec<&String> = used
        .iter()
        .filter(|u| !granted.contains(u.as_str()))
        .collect();
    assert!(outside.is_empty(), "requests outside the RBAC: {outside:?}");
    // Leases only in its own namespace.
    assert!(
        audit
            .iter()
            .filter(|e| e.object_ref.resource == "leases")
            .all(|e| e.in_namespace(SYSTEM_NS)
                && e.object_ref
                    .name
                    .as_deref()
                    .is_none_or(|n| n == "reserve-operator")),
        "lease requests outside reserve-system/reserve-operator"
    );
    assert!(status_patches(&audit, SA_USER, &ns) >= 2);
}

// ---------------------------------------------------------------------------------------------
// two replicas

struct Replica {
    identity: Identity,
    name: String,
    ns: String,
    lease_ns: String,
    process: OperatorProcess,
}

impl Replica {
    fn spawn(identity: &Identity, name: &str, ns: &str, lease_ns: &str) -> Self {
        let process = Launch::replica(operator_bin!(), identity, name, ns, lease_ns).spawn();
        Replica {
            identity: identity.clone(),
            name: name.into(),
            ns: ns.into(),
            lease_ns: lease_ns.into(),
            process,
        }
    }

    fn restart(&self) -> Self {
        Replica::spawn(&self.identity, &self.name, &self.ns, &self.lease_ns)
    }

    fn user(&self) -> &str {
        &self.identity.user
    }

    async fn leading(&self) -> Option<bool> {
        self.process.probe().is_leader().await
    }

    async fn wait_up(&self) {
        let what = format!("{} to serve /metrics", self.name);
        eventually(Duration::from_secs(30), &what, || async {
            self.leading().await.map(|_| ())
        })
        .await;
    }

    fn dump(&self) {
        eprintln!(
            "---- log of {} ({}) ----\n{}",
            self.name,
            self.user(),
            self.process.logs()
        );
    }
}

/// Polls every 100ms until `replica` reports `reserve_leader 1`; returns how long that took.
async fn time_to_lead(replica: &Replica, since: Instant, limit: Duration) -> Duration {
    loop {
        if replica.leading().await == Some(true) {
            return since.elapsed();
        }
        if since.elapsed() > limit {
            replica.dump();
            panic!("{} did not take over within {limit:?}", replica.name);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Exactly one of `replicas` leads, steadily for `steady`; returns its index.
async fn exactly_one_leader(replicas: &[&Replica], steady: Duration) -> usize {
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut leader: Option<(usize, Instant)> = None;
    loop {
        let mut states = Vec::new();
        for r in replicas {
            states.push(r.leading().await);
        }
        let leaders: Vec<usize> = (0..states.len())
            .filter(|&i| states[i] == Some(true))
            .collect();
        assert!(
            leaders.len() <= 1,
            "more than one leader at once: {states:?}"
        );
        let all_up = states.iter().all(Option::is_some);
        match (leaders.first(), leader) {
            (Some(&i), Some((j, since))) if i == j && all_up => {
                if since.elapsed() >= steady {
                    return i;
                }
            }
            (Some(&i), _) if all_up => leader = Some((i, Instant::now())),
            _ => leader = None,
        }
        if Instant::now() > deadline {
            for r in replicas {
                r.dump();
            }
            panic!("no single steady leader: {states:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn two_replicas_hand_over_on_sigkill_and_sigterm() {
    let cp = install();
    if cp.skip_unless_local("the audit log") {
        return;
    }
    let admin = cp.client().await;
    let ns = fresh_namespace(&admin, "ops-replicas").await;
    let lease_ns = fresh_namespace(&admin, "ops-lease").await;
    let mut identities = Vec::new();
    for name in ["a", "b"] {
        let identity = operator_identity(&admin, &format!("{ns}-replica-{name}")).await;
        grant_lease(&admin, &lease_ns, &identity).await;
        identities.push(identity);
    }
    let a = Replica::spawn(&identities[0], "replica-a", &ns, &lease_ns);
    let b = Replica::spawn(&identities[1], "replica-b", &ns, &lease_ns);
    a.wait_up().await;
    b.wait_up().await;
    let first = exactly_one_leader(&[&a, &b], Duration::from_secs(2)).await;
    let (mut leader, mut standby) = if first == 0 { (a, b) } else { (b, a) };
    eprintln!("first leader: {}", leader.name);

    // The standby is ready (to take over) and says so.
    let (code, body) = standby
        .process
        .probe()
        .get("/readyz")
        .await
        .expect("/readyz");
    assert!(
        code == 200 && body.contains("standby"),
        "standby /readyz: {code} {body}"
    );
    let (code, _) = standby
        .process
        .probe()
        .get("/healthz")
        .await
        .expect("/healthz");
    assert_eq!(code, 200);

    let customers: Api<reserve_operator::crd::Customer> = Api::namespaced(admin.clone(), &ns);
    let orders: Api<reserve_operator::crd::Order> = Api::namespaced(admin.clone(), &ns);
    let pp = PostParams::default();
    customers
        .create(&pp, &fixtures::customer("bob"))
        .await
        .unwrap();
    orders
        .create(&pp, &fixtures::order("b1", "bob", 3, OrderState::Completed))
        .await
        .unwrap();
    orders
        .create(&pp, &fixtures::order("b2", "bob", 2, OrderState::Requested))
        .await
        .unwrap();
    wait_for_score(&customers, "bob", 3, "Bronze").await;
    complete(&orders, "b2").await;
    wait_for_score(&customers, "bob", 5, "Silver").await;
    let audit = cp.audit();
    let (by_leader, by_standby) = (
        status_patches(&audit, leader.user(), &ns),
        status_patches(&audit, standby.user(), &ns),
    );
    assert!(by_leader > 0, "the leader wrote no status");
    assert_eq!(by_standby, 0, "the standby wrote status");
    assert_eq!(standby.leading().await, Some(false));
    // The standby waits for the Lease's release with a watch restricted to it by name, which
    // the Role's resourceNames allows.
    assert!(
        audit.iter().any(|e| e.user() == standby.user()
            && e.verb == "watch"
            && e.object_ref.resource == "leases"
            && e.in_namespace(&lease_ns)
            && e.code() == Some(200)),
        "no watch on the Lease by the standby"
    );

    // SIGKILL the leader: the standby takes over once the Lease expires.
    let killed = Instant::now();
    leader.process.kill();
    let sigkill_handover =
        time_to_lead(&standby, killed, Duration::from_secs(LEASE_SECONDS + 10)).await;
    eprintln!(
        "hand-over after SIGKILL of {}: {:.2}s (lease duration {LEASE_SECONDS}s)",
        leader.name,
        sigkill_handover.as_secs_f64()
    );
    let before = status_patches(&cp.audit(), standby.user(), &ns);
    orders
        .create(&pp, &fixtures::order("b3", "bob", 5, OrderState::Completed))
        .await
        .unwrap();
    wait_for_score(&customers, "bob", 10, "Gold").await;
    assert!(
        status_patches(&cp.audit(), standby.user(), &ns) > before,
        "the new leader wrote no status"
    );

    // Restart the killed replica: it becomes the standby.
    let restarted = leader.restart();
    restarted.wait_up().await;
    drop(std::mem::replace(&mut leader, standby));
    standby = restarted;
    let steady = exactly_one_leader(&[&leader, &standby], Duration::from_secs(1)).await;
    assert_eq!(
        steady, 0,
        "the restarted replica took the Lease from a live leader"
    );
    let (code, body) = standby
        .process
        .probe()
        .get("/readyz")
        .await
        .expect("/readyz");
    assert!(
        code == 200 && body.contains("standby"),
        "standby /readyz: {code} {body}"
    );

    // SIGTERM the leader: it releases the Lease and the standby takes over at once.
    let termed = Instant::now();
    leader.process.sigterm();
    let sigterm_handover = time_to_lead(&standby, termed, Duration::from_secs(5)).await;
    let status = leader
        .process
        .wait_exit(Duration::from_secs(10))
        .expect("the leader exits within 10s of SIGTERM");
    let exit_after = termed.elapsed();
    eprintln!(
        "hand-over after SIGTERM of {}: {:.2}s; it exited ({status}) after {:.2}s",
        leader.name,
        sigterm_handover.as_secs_f64(),
        exit_after.as_secs_f64()
    );
    if !status.success() {
        leader.dump();
    }
    assert!(status.success(), "SIGTERM exit status {status}");
    assert!(
        sigterm_handover < Duration::from_secs(3),
        "SIGTERM hand-over took {sigterm_handover:?}"
    );

    let before = status_patches(&cp.audit(), standby.user(), &ns);
    orders
        .create(&pp, &fixtures::order("b4", "bob", 5, OrderState::Completed))
        .await
        .unwrap();
    wait_for_score(&customers, "bob", 15, "Platinum").await;
    assert!(
        status_patches(&cp.audit(), standby.user(), &ns) > before,
        "the newest leader wrote no status"
    );

    // Nobody was refused anything.
    let denied: Vec<AuditEvent> = cp
        .audit()
        .into_iter()
        .filter(|e| identities.iter().any(|i| i.user == e.user()) && e.code() == Some(403))
        .collect();
    assert!(denied.is_empty(), "403s: {denied:#?}");

    standby.process.sigterm();
    let status = standby
        .process
        .wait_exit(Duration::from_secs(10))
        .expect("exits after SIGTERM");
    assert!(status.success(), "exit status {status}");
}
