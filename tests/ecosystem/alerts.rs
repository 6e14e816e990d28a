//! The alert rules as Prometheus evaluates them: `promtool test rules` plays series through
//! each rule and compares what fires (labels and rendered annotations, the runbook link
//! included) with what each case expects; and every alert has a section in the runbooks.

use serde_json::{Value, json};

use crate::{REPO, run, tool, yaml_as_json};
use reserve_testkit::control_plane::text;

/// One case: series over time, and at `at` the alerts of `alert` expected to fire, each with
/// its labels and the value its texts show.
struct Case {
    alert: &'static str,
    series: Vec<(&'static str, &'static str)>,
    at: &'static str,
    firing: Vec<(Value, &'static str)>,
}

fn cases() -> Vec<Case> {
    let case = |alert, series: &[(&'static str, &'static str)], at, firing| Case {
        alert,
        series: series.to_vec(),
        at,
        firing,
    };
    vec![
        case(
            "ReserveOperatorNoLeader",
            &[
                ("reserve_leader{pod=\"a\"}", "0x10"),
                ("reserve_leader{pod=\"b\"}", "0x10"),
            ],
            "3m",
            vec![(json!({"severity": "critical"}), "0")],
        ),
        case(
            "ReserveOperatorNoLeader",
            &[
                ("reserve_leader{pod=\"a\"}", "1x10"),
                ("reserve_leader{pod=\"b\"}", "0x10"),
            ],
            "9m",
            vec![],
        ),
        case(
            "ReserveOperatorNotReady",
            &[
                ("reserve_ready{pod=\"a\"}", "0x10"),
                ("reserve_ready{pod=\"b\"}", "1x10"),
            ],
            "6m",
            vec![(json!({"severity": "warning", "pod": "a"}), "0")],
        ),
        case(
            "ReserveOperatorReconcileErrors",
            &[
                (
                    "reserve_reconcile_errors_total{controller=\"order\",error=\"forbidden\"}",
                    "0+6x20",
                ),
                (
                    "reserve_reconcile_errors_total{controller=\"customer\",error=\"conflict\"}",
                    "0+60x20",
                ),
            ],
            "16m",
            vec![(
                json!({"severity": "warning", "controller": "order", "error": "forbidden"}),
                "0.1",
            )],
        ),
        case(
            "ReserveOperatorStatusWritesFailing",
            &[
                (
                    "reserve_reconcile_errors_total{controller=\"order\",error=\"write_status\"}",
                    "0+30x20",
                ),
                (
                    "reserve_status_writes_total{controller=\"order\"}",
                    "0+60x20",
                ),
            ],
            "7m",
            vec![(json!({"severity": "critical"}), "0.5")],
        ),
        case(
            "ReserveOperatorStatusWritesFailing",
            &[
                (
                    "reserve_reconcile_errors_total{controller=\"order\",error=\"write_status\"}",
                    "0+1x20",
                ),
                (
                    "reserve_status_writes_total{controller=\"order\"}",
                    "0+60x20",
                ),
            ],
            "15m",
            vec![],
        ),
        case(
            "ReserveOperatorCustomersBehind",
            &[
                (
                    "reserve_queue_oldest_change_seconds{controller=\"customer\",pod=\"a\"}",
                    "0+60x20",
                ),
                (
                    "reserve_queue_oldest_change_seconds{controller=\"order\",pod=\"a\"}",
                    "0+600x20",
                ),
            ],
            "8m",
            vec![(json!({"severity": "warning"}), "480")],
        ),
        // Receipts far behind while customers are current: past the limit, by design.
        case(
            "ReserveOperatorCustomersBehind",
            &[
                (
                    "reserve_queue_oldest_change_seconds{controller=\"customer\",pod=\"a\"}",
                    "0.5x20",
                ),
                (
                    "reserve_queue_oldest_change_seconds{controller=\"order\",pod=\"a\"}",
                    "0+600x20",
                ),
            ],
            "15m",
            vec![],
        ),
        case(
            "ReserveOperatorSettledHistoryMissing",
            &[
                (
                    "reserve_customers_settled_history_missing{pod=\"a\"}",
                    "3x20",
                ),
                (
                    "reserve_customers_settled_history_missing{pod=\"b\"}",
                    "3x20",
                ),
            ],
            "11m",
            vec![(json!({"severity": "warning"}), "3")],
        ),
        // The leader's passes stop; the standby's never ran, and a growing leader is fine.
        case(
            "ReserveOperatorSettlementStalled",
            &[
                ("reserve_leader{pod=\"a\"}", "1x40"),
                ("reserve_leader{pod=\"b\"}", "0x40"),
                ("reserve_settlement_passes_total{pod=\"a\"}", "0+4x5 20x35"),
                ("reserve_settlement_passes_total{pod=\"b\"}", "0x40"),
            ],
            "26m",
            vec![(json!({"severity": "warning", "pod": "a"}), "1")],
        ),
        case(
            "ReserveOperatorSettlementStalled",
            &[
                ("reserve_leader{pod=\"a\"}", "1x40"),
                ("reserve_settlement_passes_total{pod=\"a\"}", "0+4x40"),
            ],
            "30m",
            vec![],
        ),
    ]
}

/// The rule of `alert` in the rules' spec.
fn rule<'a>(spec: &'a Value, alert: &str) -> &'a Value {
    spec["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .find(|r| r["alert"] == alert)
        .unwrap_or_else(|| panic!("no rule {alert}"))
}

/// The annotations of `rule` as Prometheus renders them for an alert with `labels` and
/// `value`: the templates these rules use are `{{ $labels.NAME }}` and `{{ $value }}`.
fn rendered(rule: &Value, labels: &Value, value: &str) -> Value {
    let mut annotations = rule["annotations"].clone();
    for text in annotations.as_object_mut().unwrap().values_mut() {
        let mut s = text.as_str().unwrap().replace("{{ $value }}", value);
        for (name, label) in labels.as_object().unwrap() {
            s = s.replace(
                &format!("{{{{ $labels.{name} }}}}"),
                label.as_str().unwrap(),
            );
        }
        assert!(
            !s.contains("{{"),
            "a template this test does not render: {s}"
        );
        *text = Value::String(s);
    }
    annotations
}

#[test]
fn each_alert_fires_when_it_should_and_links_its_runbook() {
    let rules = yaml_as_json(&format!("{REPO}/manifests/monitoring/prometheusrule.yaml"));
    let spec = &rules["spec"];
    let runbooks = std::fs::read_to_string(format!("{REPO}/docs/runbooks.md")).unwrap();
    let mut alerts: Vec<&str> = Vec::new();
    for group in spec["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let alert = rule["alert"].as_str().unwrap();
            alerts.push(alert);
            let url = rule["annotations"]["runbook_url"]
                .as_str()
                .unwrap_or_default();
            let section = format!("#{}", alert.to_lowercase());
            assert!(
                url.ends_with(&format!("docs/runbooks.md{section}")),
                "{alert}: runbook_url {url:?}"
            );
            assert!(
                runbooks.contains(&format!("\n## {alert}\n")),
                "docs/runbooks.md has no section {alert}"
            );
        }
    }
    let cases = cases();
    for alert in &alerts {
        assert!(
            cases
                .iter()
                .any(|c| c.alert == *alert && !c.firing.is_empty()),
            "no case in which {alert} fires"
        );
    }

    let dir = reserve_testkit::watchdog().unique_path("promtool", "");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("rules.json"), spec.to_string()).unwrap();
    let tests: Vec<Value> = cases
        .iter()
        .map(|case| {
            let rule = rule(spec, case.alert);
            let exp_alerts: Vec<Value> = case
                .firing
                .iter()
                .map(|(labels, value)| {
                    json!({
                        "exp_labels": labels,
                        "exp_annotations": rendered(rule, labels, value),
                    })
                })
                .collect();
            json!({
                "interval": "1m",
                "input_series": case.series.iter()
                    .map(|(series, values)| json!({"series": series, "values": values}))
                    .collect::<Vec<_>>(),
                "alert_rule_test": [{
                    "eval_time": case.at,
                    "alertname": case.alert,
                    "exp_alerts": exp_alerts,
                }],
            })
        })
        .collect();
    let file = dir.join("tests.json");
    std::fs::write(
        &file,
        json!({"rule_files": ["rules.json"], "evaluation_interval": "1m", "tests": tests})
            .to_string(),
    )
    .unwrap();
    let mut test = tool("promtool");
    test.args(["test", "rules"]).arg(&file);
    let out = run(test, None);
    println!("promtool test rules: {}", text(&out).trim());
    assert!(out.status.success(), "promtool test rules:\n{}", text(&out));
}
