//! The operator as the ecosystem's own tools see it: kstatus (cli-utils, as Flux uses it) and
//! Argo CD's health checks on live objects, the Helm chart (helm lint, server-side dry run, the
//! same RBAC as the kustomize base), Prometheus (promtool on /metrics and on the alert rules),
//! and the kustomize bases with their versioned image.

use std::{
    collections::BTreeSet,
    process::{Command, Output, Stdio},
};

use kube::{
    Api,
    api::{Patch, PatchParams},
};
use reserve_operator::crd::{Customer, Order, OrderState};
use reserve_testkit::{ControlPlane, Shop, control_plane::text, tools::ecosystem_bin_dir};
use serde_json::{Value, json};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn tool(name: &str) -> Command {
    Command::new(
        ecosystem_bin_dir()
            .expect("the ecosystem tools build")
            .join(name),
    )
}

fn run(mut command: Command, stdin: Option<&str>) -> Output {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("the tool runs");
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

/// (status, message) of an object, by a health check of the `health` helper.
fn health(check: &[&str], object: &Value) -> (String, String) {
    let mut command = tool("health");
    command.args(check);
    let out = run(command, Some(&object.to_string()));
    assert!(out.status.success(), "health {check:?}: {}", text(&out));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        result["status"].as_str().unwrap_or_default().to_owned(),
        result["message"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Argo CD's health script for `kind`, from manifests/argocd/argocd-cm.yaml.
fn argocd_script(kind: &str) -> std::path::PathBuf {
    let cm: Value = yaml_as_json(&format!("{REPO}/manifests/argocd/argocd-cm.yaml"));
    let key = format!("resource.customizations.health.reserve.coffeechain.io_{kind}");
    let script = cm["data"][&key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing"));
    let path = reserve_testkit::watchdog().unique_path(&format!("health-{kind}"), ".lua");
    std::fs::write(&path, script).unwrap();
    path
}

/// A YAML file as JSON.
fn yaml_as_json(path: &str) -> Value {
    let yaml = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_str(&yaml).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every object of a YAML stream.
fn objects(stream: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(stream)
        .expect("a YAML stream")
        .into_iter()
        .filter(|o| !o.is_null())
        .collect()
}

async fn json_of<
    K: kube::Resource + serde::Serialize + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
>(
    api: &Api<K>,
    name: &str,
) -> Value {
    serde_json::to_value(api.get(name).await.unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn kstatus_and_argocd_agree_on_the_health_of_live_objects() {
    let customer_lua = argocd_script("Customer");
    let order_lua = argocd_script("Order");
    let lua = |kind: &str| {
        if kind == "Customer" {
            customer_lua.display().to_string()
        } else {
            order_lua.display().to_string()
        }
    };
    let check = |kind: &str, object: &Value| {
        (
            health(&["kstatus"], object),
            health(&["argocd", &lua(kind)], object),
        )
    };

    // Not yet observed: no operator runs in this namespace.
    let idle = Shop::new("health-new").await;
    idle.customer("alice").await;
    idle.order("o1", "alice", 2, OrderState::Requested).await;
    for (kind, object) in [
        ("Customer", json_of(&idle.customers(), "alice").await),
        ("Order", json_of(&idle.orders(), "o1").await),
    ] {
        let ((kstatus, _), (argocd, message)) = check(kind, &object);
        assert_eq!(
            (kstatus.as_str(), argocd.as_str()),
            ("InProgress", "Progressing"),
            "new {kind}: {message}"
        );
    }

    // Observed by the operator: healthy, a non-member's order included.
    let shop = Shop::new("health").await;
    let (identity, _operator) = shop.operator(&[]).await;
    shop.customer("bob").await;
    shop.order("b1", "bob", 5, OrderState::Completed).await;
    shop.order("lonely", "nobody", 1, OrderState::Requested)
        .await;
    shop.expect_customer("bob", 5, "Silver", (1, 0, 0)).await;
    for order in ["b1", "lonely"] {
        shop.expect_order(order, "observed", |s| s.observed_generation == Some(1))
            .await;
    }
    for (kind, name) in [("Customer", "bob"), ("Order", "b1"), ("Order", "lonely")] {
        let object = if kind == "Customer" {
            json_of(&shop.customers(), name).await
        } else {
            json_of(&shop.orders(), name).await
        };
        let ((kstatus, _), (argocd, message)) = check(kind, &object);
        assert_eq!(
            (kstatus.as_str(), argocd.as_str()),
            ("Current", "Healthy"),
            "{kind} {name}: {message}"
        );
        if name == "lonely" {
            assert!(
                message.starts_with("Accepted as a non-member (level Iron)"),
                "{message}"
            );
        }
    }
    // kubectl wait agrees.
    let out = ControlPlane::shared().kubectl(&[
        "wait",
        "-n",
        &shop.ns,
        "order/lonely",
        "customer/bob",
        "--for=condition=Ready",
        "--timeout=10s",
    ]);
    assert!(out.status.success(), "{}", text(&out));

    // Ready False (what a failed reconcile would report), written as an operator identity in a
    // namespace no operator watches: Degraded for Argo CD; kstatus calls it InProgress (it has no
    // "degraded" for a Ready condition, so Flux would wait).
    let writer = ControlPlane::shared().client_as(&identity).await;
    let status = json!({ "status": {
        "observedGeneration": 1,
        "conditions": [{ "type": "Ready", "status": "False", "reason": "Failed", "message": "could not tally", "lastTransitionTime": "2026-01-01T00:00:00Z" }],
    }});
    let params = PatchParams::default();
    Api::<Customer>::namespaced(writer.clone(), &idle.ns)
        .patch_status("alice", &params, &Patch::Merge(&status))
        .await
        .expect("an operator identity may write status");
    Api::<Order>::namespaced(writer, &idle.ns)
        .patch_status("o1", &params, &Patch::Merge(&status))
        .await
        .expect("an operator identity may write status");
    for (kind, object) in [
        ("Customer", json_of(&idle.customers(), "alice").await),
        ("Order", json_of(&idle.orders(), "o1").await),
    ] {
        let ((kstatus, _), (argocd, message)) = check(kind, &object);
        assert_eq!(
            (kstatus.as_str(), argocd.as_str(), message.as_str()),
            ("InProgress", "Degraded", "could not tally"),
            "{kind}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn promtool_finds_nothing_to_say_about_the_metrics_or_the_alert_rules() {
    let shop = Shop::new("metrics").await;
    let (_, operator) = shop.operator(&[]).await;
    shop.customer("carol").await;
    shop.expect_customer("carol", 0, "Bronze", (0, 0, 0)).await;
    let (code, text_format) = operator
        .probe()
        .get("/metrics")
        .await
        .expect("/metrics answers");
    assert_eq!(code, 200);
    let mut check = tool("promtool");
    check.args(["check", "metrics"]);
    let out = run(check, Some(&text_format));
    println!("promtool check metrics: {}", text(&out).trim());
    assert!(
        out.status.success() && text(&out).trim().is_empty(),
        "promtool check metrics:\n{}",
        text(&out)
    );
    for family in [
        "reserve_build_info",
        "reserve_ready",
        "reserve_customers",
        "reserve_leader",
    ] {
        assert!(
            text_format.contains(&format!("# HELP {family} ")),
            "{family} has no HELP"
        );
    }

    // The alert rules, as promtool reads them (the spec of the PrometheusRule).
    let rule = yaml_as_json(&format!("{REPO}/manifests/monitoring/prometheusrule.yaml"));
    let rules = reserve_testkit::watchdog().unique_path("rules", ".json");
    std::fs::write(&rules, rule["spec"].to_string()).unwrap();
    let mut check = tool("promtool");
    check.args(["check", "rules"]).arg(&rules);
    let out = run(check, None);
    println!("promtool check rules: {}", text(&out).trim());
    assert!(
        out.status.success(),
        "promtool check rules:\n{}",
        text(&out)
    );
    assert!(
        text(&out).contains("SUCCESS: 4 rules found"),
        "{}",
        text(&out)
    );
}

fn helm(args: &[&str]) -> Output {
    let mut command = tool("helm");
    command.args(args).env(
        "HELM_CACHE_HOME",
        reserve_testkit::watchdog().dir().join("helm"),
    );
    run(command, None)
}

/// `group/resource[names]:verb` of every rule of the objects of `kind` in a YAML stream.
fn rules_of(stream: &str, kind: &str) -> BTreeSet<String> {
    let mut rules = BTreeSet::new();
    for item in objects(stream).iter().filter(|i| i["kind"] == kind) {
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

    let out = helm(&[
        "template",
        "reserve",
        &chart,
        "--namespace",
        "reserve-system",
    ]);
    assert!(out.status.success(), "helm template:\n{}", text(&out));
    let rendered = String::from_utf8(out.stdout).unwrap();
    let out = cp.kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], &rendered);
    assert!(
        out.status.success(),
        "the chart does not apply:\n{}",
        text(&out)
    );
    assert!(
        rendered.contains("helm.sh/resource-policy: keep"),
        "the CRDs must outlive the release"
    );

    let out = cp.kubectl(&["kustomize", &format!("{REPO}/manifests/operator")]);
    assert!(out.status.success(), "{}", text(&out));
    let base = String::from_utf8(out.stdout).unwrap();
    for kind in ["ClusterRole", "Role"] {
        let (chart, kustomize) = (rules_of(&rendered, kind), rules_of(&base, kind));
        assert!(!chart.is_empty());
        assert_eq!(
            chart, kustomize,
            "{kind} rules of the chart and of manifests/operator differ"
        );
    }

    // Settlement: off by default; switched on, the chart grants what manifests/settlement
    // grants, and sets the same configuration.
    assert!(
        !rendered.contains("reserve-operator-settlement")
            && !rendered.contains("RESERVE_SETTLE_AFTER")
    );
    let out = helm(&[
        "template",
        "reserve",
        &chart,
        "--namespace",
        "reserve-system",
        "--set",
        "settlement.enabled=true,settlement.settleAfter=14d",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let settling = String::from_utf8(out.stdout).unwrap();
    let out = cp.kubectl(&["kustomize", &format!("{REPO}/examples/kustomize/settled")]);
    assert!(out.status.success(), "{}", text(&out));
    let settled_base = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        rules_of(&settling, "ClusterRole"),
        rules_of(&settled_base, "ClusterRole"),
        "settlement rules of the chart and of manifests/settlement differ"
    );
    assert!(
        rules_of(&settled_base, "ClusterRole").contains("reserve.coffeechain.io/orders[]:delete")
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
    let out = helm(&[
        "template",
        "reserve",
        &chart,
        "--namespace",
        "loyalty",
        "--set",
        "watchNamespace=shops",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let elsewhere = String::from_utf8(out.stdout).unwrap();
    assert!(
        elsewhere.contains("'system:serviceaccounts:loyalty' in request.userInfo.groups"),
        "{elsewhere}"
    );
    assert!(elsewhere.contains("namespace: loyalty"));
    assert!(elsewhere.contains("RESERVE_NAMESPACE: \"shops\""));
    assert!(
        !elsewhere.contains("kind: ClusterRole\n"),
        "watching one namespace needs no ClusterRole"
    );

    // Monitoring, when switched on.
    let out = helm(&[
        "template",
        "reserve",
        &chart,
        "--set",
        "monitoring.serviceMonitor.enabled=true,monitoring.prometheusRule.enabled=true,monitoring.dashboard.enabled=true",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let monitored = String::from_utf8(out.stdout).unwrap();
    for kind in [
        "kind: ServiceMonitor",
        "kind: PrometheusRule",
        "grafana_dashboard: \"1\"",
        "alert: ReserveOperatorNoLeader",
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
