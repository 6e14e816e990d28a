//! The shipped manifests: a server-side dry run, and RBAC that grants exactly the documented rules.

use super::*;

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
        "validatingadmissionpolicy.admissionregistration.k8s.io/reserve-operator-identity",
        "validatingadmissionpolicybinding.admissionregistration.k8s.io/reserve-operator-identity",
        "namespace/reserve-system",
        "configmap/reserve-operator-writers",
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
    let expected = rbac::granted(Scope::Cluster, false);
    assert_eq!(rules(cluster_role.rules), expected);
    let role = Api::<Role>::namespaced(client.clone(), SYSTEM_NS)
        .get(LEASE_ROLE)
        .await
        .unwrap();
    let expected = rbac::granted(Scope::OperatorNamespace, false);
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
    // Every verb of every grant, as kubectl asks: cluster-wide grants in every namespace, the
    // Lease's in the operator's own.
    let yes: Vec<Vec<String>> = rbac::OPERATOR_GRANTS
        .iter()
        .filter(|g| !g.settlement)
        .flat_map(|g| {
            g.verbs.iter().map(move |verb| {
                let (resource, subresource) = g.resource.split_once('/').unzip();
                let resource = resource.unwrap_or(g.resource);
                let mut args = vec![verb.to_string(), format!("{resource}.{}", g.group)];
                if let Some(name) = g.name {
                    args[1] = format!("{}/{name}", args[1]);
                }
                if let Some(sub) = subresource {
                    args.push(format!("--subresource={sub}"));
                }
                match g.scope {
                    Scope::Cluster => args.push("-A".into()),
                    Scope::OperatorNamespace => args.extend(["-n".into(), SYSTEM_NS.into()]),
                }
                args
            })
        })
        .collect();
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
        &["patch", "ledgers.reserve.coffeechain.io", "-n", ns],
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
    for args in &yes {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        if !can_i(&args) {
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
