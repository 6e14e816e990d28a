//! The operator as the ecosystem's own tools see it: kstatus (cli-utils, as Flux uses it) and
//! Argo CD's health checks on live objects, Prometheus (promtool on /metrics and on the alert
//! rules, and each alert played through `promtool test rules`: `alerts`); the Helm chart and the kustomize bases (`chart`); Kubernetes' own roles for people
//! (`roles`).

use std::process::{Command, Output, Stdio};

use kube::{
    Api,
    api::{Patch, PatchParams},
};
use reserve_operator::crd::{Customer, Order, OrderState};
use reserve_testkit::{ControlPlane, Shop, control_plane::text, tools::ecosystem_bin_dir};
use serde_json::{Value, json};

mod alerts;
mod chart;
mod roles;

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
        text(&out).contains("SUCCESS: 7 rules found"),
        "{}",
        text(&out)
    );
}
