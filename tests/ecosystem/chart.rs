//! The Helm chart (helm lint, a server-side dry run, the same RBAC as the kustomize base, the
//! values it refuses) and the kustomize bases with their versioned image.

use std::collections::BTreeSet;
use std::process::Output;

use reserve_testkit::{
    ControlPlane,
    control_plane::text,
    rbac::{self, Scope},
};
use serde_json::Value;

use crate::{REPO, objects, run, tool};

pub fn helm(args: &[&str]) -> Output {
    let mut command = tool("helm");
    command.args(args).env(
        "HELM_CACHE_HOME",
        reserve_testkit::watchdog().dir().join("helm"),
    );
    run(command, None)
}

/// Whether `object` is one of the roles aggregated into Kubernetes' view, edit and admin.
fn aggregated(object: &Value) -> bool {
    object["metadata"]["labels"]
        .as_object()
        .is_some_and(|labels| {
            labels
                .keys()
                .any(|k| k.starts_with("rbac.authorization.k8s.io/aggregate-to-"))
        })
}

/// `group/resource[names]:verb` of every rule of the objects of `kind` in a YAML stream that
/// grant the operator (not the roles aggregated for people).
fn rules_of(stream: &str, kind: &str) -> BTreeSet<String> {
    rules_where(stream, kind, |o| !aggregated(o))
}

fn rules_where(stream: &str, kind: &str, which: impl Fn(&Value) -> bool) -> BTreeSet<String> {
    let mut rules = BTreeSet::new();
    for item in objects(stream)
        .iter()
        .filter(|i| i["kind"] == kind && which(i))
    {
        for rule in item["rules"].as_array().into_iter().flatten() {
            let names: Vec<&str> = rule["resourceNames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            for group in rule["apiGroups"].as_array().into_iter().flatten() {
                for resource in rule["resources"].as_array().into_iter().flatten() {
                    for verb in rule["verbs"].as_array().into_iter().flatten() {
                        rules.insert(format!(
                            "{}/{}[{}]:{}",
                            group.as_str().unwrap(),
                            resource.as_str().unwrap(),
                            names.join(","),
                            verb.as_str().unwrap()
                        ));
                    }
                }
            }
        }
    }
    rules
}

#[test]
fn the_helm_chart_lints_applies_and_grants_what_the_kustomize_base_grants() {
    let cp = ControlPlane::shared();
    let chart = format!("{REPO}/charts/reserve-operator");
    let out = helm(&["lint", "--strict", &chart]);
    assert!(out.status.success(), "helm lint:\n{}", text(&out));

    let chart_default = rendered("reserve-system", &[]);
    let out = cp.kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], &chart_default);
    assert!(
        out.status.success(),
        "the chart does not apply:\n{}",
        text(&out)
    );
    assert!(
        chart_default.contains("helm.sh/resource-policy: keep"),
        "the CRDs must outlive the release"
    );

    let out = cp.kubectl(&["kustomize", &format!("{REPO}/manifests/operator")]);
    assert!(out.status.success(), "{}", text(&out));
    let base = String::from_utf8(out.stdout).unwrap();
    for (kind, scope) in [
        ("ClusterRole", Scope::Cluster),
        ("Role", Scope::OperatorNamespace),
    ] {
        let (chart, kustomize) = (rules_of(&chart_default, kind), rules_of(&base, kind));
        let table = rbac::granted(scope, false);
        assert_eq!(
            chart, table,
            "{kind} rules of the chart and the test kit's table differ"
        );
        assert_eq!(
            kustomize, table,
            "{kind} rules of manifests/operator and the test kit's table differ"
        );
    }
    // The roles for people: the chart's are manifests/crds'.
    let out = cp.kubectl(&["kustomize", &format!("{REPO}/manifests/crds")]);
    assert!(out.status.success(), "{}", text(&out));
    let api = String::from_utf8(out.stdout).unwrap();
    let people = rules_where(&api, "ClusterRole", aggregated);
    assert!(
        people.contains("reserve.coffeechain.io/orders[]:create"),
        "{people:?}"
    );
    assert_eq!(
        rules_where(&chart_default, "ClusterRole", aggregated),
        people
    );

    // Settlement: off by default; switched on, the chart grants what manifests/settlement
    // grants, and sets the same configuration.
    assert!(
        !chart_default.contains("reserve-operator-settlement")
            && !chart_default.contains("RESERVE_SETTLE_AFTER")
    );
    let settling = rendered(
        "reserve-system",
        &[
            "--set",
            "settlement.enabled=true,settlement.settleAfter=14d",
        ],
    );
    let out = cp.kubectl(&["kustomize", &format!("{REPO}/examples/kustomize/settled")]);
    assert!(out.status.success(), "{}", text(&out));
    let settled_base = String::from_utf8(out.stdout).unwrap();
    let table = rbac::granted(Scope::Cluster, true);
    assert_eq!(
        rules_of(&settling, "ClusterRole"),
        table,
        "settlement rules of the chart and the test kit's table differ"
    );
    assert_eq!(
        rules_of(&settled_base, "ClusterRole"),
        table,
        "settlement rules of manifests/settlement and the test kit's table differ"
    );
    for config in [&settling, &settled_base] {
        assert!(
            config.contains("RESERVE_SETTLE_AFTER: 14d")
                || config.contains("RESERVE_SETTLE_AFTER: \"14d\""),
            "{config}"
        );
    }
    let out = cp.kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], &settling);
    assert!(out.status.success(), "{}", text(&out));

    // Installed elsewhere, the status policy and the FlowSchema follow the namespace.
    let elsewhere = rendered(
        "loyalty",
        &[
            "--set",
            "watchNamespace=shops,monitoring.prometheusRule.enabled=true",
        ],
    );
    assert!(
        elsewhere.contains("'system:serviceaccounts:loyalty' in request.userInfo.groups"),
        "{elsewhere}"
    );
    assert!(elsewhere.contains("namespace: loyalty"));
    assert!(elsewhere.contains("RESERVE_NAMESPACE: \"shops\""));
    assert!(
        objects(&elsewhere)
            .iter()
            .all(|o| o["kind"] != "ClusterRole" || aggregated(o)),
        "watching one namespace needs no ClusterRole"
    );
    assert!(
        !elsewhere.contains("reserve-system"),
        "the release's namespace is loyalty"
    );

    // Monitoring, when switched on, linking the runbooks where they are served.
    let monitored = rendered(
        "reserve-system",
        &[
            "--set",
            "monitoring.serviceMonitor.enabled=true,monitoring.prometheusRule.enabled=true,monitoring.dashboard.enabled=true",
            "--set",
            "monitoring.prometheusRule.runbookUrl=https://docs.shop.example/reserve/runbooks.md",
        ],
    );
    for kind in [
        "kind: ServiceMonitor",
        "kind: PrometheusRule",
        "grafana_dashboard: \"1\"",
        "alert: ReserveOperatorNoLeader",
        "runbook_url: https://docs.shop.example/reserve/runbooks.md#reserveoperatornoleader",
    ] {
        assert!(monitored.contains(kind), "{kind} missing");
    }
}

#[test]
fn the_kustomize_bases_pin_the_image_and_render_with_monitoring() {
    let cp = ControlPlane::shared();
    let version = env!("CARGO_PKG_VERSION");
    let out = cp.kubectl(&["kustomize", &format!("{REPO}/manifests/operator")]);
    assert!(out.status.success(), "{}", text(&out));
    let base = String::from_utf8(out.stdout).unwrap();
    assert!(
        base.contains(&format!("image: reserve-operator:{version}")),
        "the image is not pinned to {version}"
    );
    assert!(!base.contains(":latest"));
    let objects = objects(&base);
    for kind in [
        "PodDisruptionBudget",
        "NetworkPolicy",
        "FlowSchema",
        "PriorityLevelConfiguration",
    ] {
        assert!(
            objects.iter().any(|o| o["kind"] == kind),
            "{kind} missing from the base"
        );
    }
    // Every fieldRef names its apiVersion, as server-side apply wants.
    let deployment = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
    for env in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
    {
        if let Some(field) = env["valueFrom"].get("fieldRef") {
            assert_eq!(field["apiVersion"], "v1", "{env}");
        }
    }
    let chart =
        std::fs::read_to_string(format!("{REPO}/charts/reserve-operator/Chart.yaml")).unwrap();
    assert!(
        chart.contains(&format!("version: {version}\n"))
            && chart.contains(&format!("appVersion: \"{version}\"")),
        "{chart}"
    );

    // The example overlay: the base plus the monitoring component and a registry's image.
    let out = cp.kubectl(&["kustomize", &format!("{REPO}/examples/kustomize/monitored")]);
    assert!(out.status.success(), "{}", text(&out));
    let monitored = String::from_utf8(out.stdout).unwrap();
    for kind in [
        "kind: ServiceMonitor",
        "kind: PrometheusRule",
        "name: reserve-operator-dashboard",
    ] {
        assert!(monitored.contains(kind), "{kind} missing");
    }
    assert!(monitored.contains(&format!(
        "image: registry.example.com/coffeechain/reserve-operator:{version}"
    )));
}

/// `helm template` of the chart released in `namespace`, with `args` added.
fn template(namespace: &str, args: &[&str]) -> Output {
    let chart = format!("{REPO}/charts/reserve-operator");
    let mut all = vec![
        "template",
        "reserve",
        chart.as_str(),
        "--namespace",
        namespace,
    ];
    all.extend_from_slice(args);
    helm(&all)
}

/// What [`template`] renders; it must render.
fn rendered(namespace: &str, args: &[&str]) -> String {
    let out = template(namespace, args);
    assert!(
        out.status.success(),
        "helm template {args:?}:\n{}",
        text(&out)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// What the operator would refuse at start-up, the chart refuses at install, naming the value;
/// and two replicas without a Lease (two writers at once) are refused too.
#[test]
fn the_chart_refuses_values_the_operator_would_refuse() {
    for (set, names) in [
        ("levels=Bronze=1", "/levels"),
        ("levels=Bronze=0\\,Iron=5", "/levels"),
        ("logFormat=xml", "/logFormat"),
        ("logLevel=verbose", "/logLevel"),
        ("replicas=3", "'replicas' not allowed"),
        ("settlement.settleAfter=soon", "/settlement/settleAfter"),
        ("settlement.settleAfter=0d", "/settlement/settleAfter"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("watchNamespace=Shops", "/watchNamespace"),
        (
            "leaderElection=false",
            "leaderElection: false with replicaCount: 2",
        ),
    ] {
        let out = template("loyalty", &["--set", set]);
        assert!(!out.status.success(), "{set} was accepted");
        assert!(text(&out).contains(names), "{set}: {}", text(&out));
    }
    // Each of those values has a good form that renders.
    rendered(
        "loyalty",
        &[
            "--set",
            "levels=Bronze=0\\,Gold=12,logFormat=text,logLevel=debug,settlement.settleAfter=12h",
            "--set",
            "leaderElection=false,replicaCount=1,watchNamespace=shops",
        ],
    );
}

/// The pod's options a platform team sets; a PodDisruptionBudget only where it cannot block a
/// node drain; NOTES that say what to do next.
#[test]
fn the_chart_renders_the_pod_options_and_a_budget_only_with_two_replicas() {
    let two = objects(&rendered("loyalty", &[]));
    assert!(two.iter().any(|o| o["kind"] == "PodDisruptionBudget"));
    let deployment = two.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(
        env.as_array().unwrap().contains(
            &serde_json::json!({"name": "RUST_LOG", "value": "info,kube_lease_manager=warn"})
        ),
        "{env}"
    );

    let one = objects(&rendered(
        "loyalty",
        &[
            "--set",
            "replicaCount=1,logLevel=debug,priorityClassName=shop-critical",
            "--set",
            "imagePullSecrets[0].name=regcred,podAnnotations.team=loyalty",
            "--set",
            "extraEnv[0].name=TZ,extraEnv[0].value=UTC",
        ],
    ));
    assert!(
        !one.iter().any(|o| o["kind"] == "PodDisruptionBudget"),
        "minAvailable 1 of 1 replica blocks every drain"
    );
    let pod = &one.iter().find(|o| o["kind"] == "Deployment").unwrap()["spec"]["template"];
    assert_eq!(pod["spec"]["priorityClassName"], "shop-critical");
    assert_eq!(pod["spec"]["imagePullSecrets"][0]["name"], "regcred");
    assert_eq!(pod["metadata"]["annotations"]["team"], "loyalty");
    let env = pod["spec"]["containers"][0]["env"].as_array().unwrap();
    for wanted in [
        serde_json::json!({"name": "RUST_LOG", "value": "debug,kube_lease_manager=warn"}),
        serde_json::json!({"name": "TZ", "value": "UTC"}),
    ] {
        assert!(env.contains(&wanted), "{wanted} missing: {env:?}");
    }

    let chart = format!("{REPO}/charts/reserve-operator");
    let out = helm(&[
        "install",
        "reserve",
        &chart,
        "--dry-run=client",
        "-n",
        "loyalty",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let notes = String::from_utf8(out.stdout).unwrap();
    for next in [
        "kubectl -n loyalty rollout status deployment/reserve-operator",
        "get customers,orders",
        "/readyz",
    ] {
        assert!(notes.contains(next), "NOTES lack {next:?}:\n{notes}");
    }
}
