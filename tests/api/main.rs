//! The CRDs against a real kube-apiserver with the real kubectl: the samples apply, every
//! invalid object is refused with a message naming the field and nothing is stored, transitions
//! follow `OrderState::can_become`, and `kubectl get` / `explain` show the contract's columns and
//! descriptions. Nothing here runs the operator: what is checked is the API server's own work.

use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use reserve_operator::crd::{Order, OrderSpec, OrderState};
use reserve_testkit::{ControlPlane, FAIL_AFTER, control_plane::text, shop::fresh_namespace};
use std::process::Output;
use std::time::{Duration, Instant};

mod kubectl;

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A new namespace named `<prefix>-xxxxx`, created with kubectl.
fn namespace(cp: &ControlPlane, prefix: &str) -> String {
    let yaml = format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  generateName: {prefix}-\n");
    let out = cp.kubectl_stdin(
        &["create", "-f", "-", "-o", "jsonpath={.metadata.name}"],
        &yaml,
    );
    assert!(out.status.success(), "create namespace: {}", text(&out));
    stdout(&out)
}

fn indent(lines: &str) -> String {
    lines.lines().map(|l| format!("  {l}\n")).collect()
}

fn order_yaml(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: reserve.coffeechain.io/v1\nkind: Order\nmetadata:\n  name: {name}\nspec:\n{}",
        indent(spec)
    )
}

fn customer_yaml(name: &str, spec: &str) -> String {
    let spec = if spec.is_empty() {
        String::new()
    } else {
        format!("spec:\n{}", indent(spec))
    };
    format!(
        "apiVersion: reserve.coffeechain.io/v1\nkind: Customer\nmetadata:\n  name: {name}\n{spec}"
    )
}

fn apply(cp: &ControlPlane, ns: &str, yaml: &str) -> Output {
    cp.kubectl_stdin(&["apply", "-n", ns, "-f", "-"], yaml)
}

fn assert_refused(out: &Output, case: &str, needles: &[&str]) {
    let msg = text(out);
    assert!(
        !out.status.success(),
        "{case}: accepted, but must be refused:\n{msg}"
    );
    for needle in needles {
        assert!(
            msg.contains(needle),
            "{case}: the refusal does not mention {needle:?}:\n{msg}"
        );
    }
    eprintln!("{case}: {}", msg.trim());
}

fn exists(cp: &ControlPlane, ns: &str, kind: &str, name: &str) -> bool {
    let out = cp.kubectl(&["get", kind, name, "-n", ns, "-o", "name"]);
    if out.status.success() {
        return true;
    }
    assert!(
        text(&out).contains("NotFound"),
        "kubectl get {kind} {name}: {}",
        text(&out)
    );
    false
}

/// The object as stored (spec and resourceVersion), to show a refused update changed nothing.
fn stored(cp: &ControlPlane, ns: &str, kind: &str, name: &str) -> String {
    let out = cp.kubectl(&[
        "get",
        kind,
        name,
        "-n",
        ns,
        "-o",
        "jsonpath={.metadata.resourceVersion} {.spec}",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    stdout(&out)
}

/// Retries a kubectl call (e.g. while the OpenAPI of new CRDs is being published).
fn kubectl_until(cp: &ControlPlane, args: &[&str], ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + FAIL_AFTER;
    loop {
        let out = cp.kubectl(args);
        let t = text(&out);
        if out.status.success() && ok(&t) {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "kubectl {args:?} did not give the expected output in 30s:\n{t}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn header(table: &str) -> String {
    table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn samples_apply_client_side_and_server_side() {
    let cp = ControlPlane::shared();
    for (prefix, extra) in [
        ("samples-csa", None),
        ("samples-ssa", Some("--server-side")),
    ] {
        let ns = namespace(cp, prefix);
        let mut args = vec!["apply", "-n", &ns, "-f", EXAMPLES];
        args.extend(extra);
        let out = cp.kubectl(&args);
        assert!(out.status.success(), "kubectl {args:?}: {}", text(&out));
        let names = stdout(&cp.kubectl(&["get", "customers,orders", "-n", &ns, "-o", "name"]));
        let mut names: Vec<&str> = names.lines().collect();
        names.sort();
        assert_eq!(
            names,
            [
                "customer.reserve.coffeechain.io/alice",
                "customer.reserve.coffeechain.io/bob",
                "customer.reserve.coffeechain.io/dana",
                "order.reserve.coffeechain.io/alice-americano",
                "order.reserve.coffeechain.io/alice-latte",
                "order.reserve.coffeechain.io/alice-mocha",
                "order.reserve.coffeechain.io/bob-cold-brew",
                "order.reserve.coffeechain.io/bob-espresso",
                "order.reserve.coffeechain.io/carol-latte",
            ],
            "{prefix}"
        );
        let states = stdout(&cp.kubectl(&[
            "get",
            "orders",
            "-n",
            &ns,
            "-o",
            "jsonpath={.items[*].spec.state}",
        ]));
        assert_eq!(states, ["Requested"; 6].join(" "));
        let display = stdout(&cp.kubectl(&[
            "get",
            "customer",
            "alice",
            "-n",
            &ns,
            "-o",
            "jsonpath={.spec.displayName}",
        ]));
        assert_eq!(display, "Alice Kim");
        // Applying again changes nothing.
        let out = cp.kubectl(&args);
        assert!(out.status.success(), "second apply: {}", text(&out));
        if extra.is_none() {
            assert_eq!(
                stdout(&out).matches("unchanged").count(),
                9,
                "{}",
                text(&out)
            );
        }
    }
}

#[test]
fn the_state_defaults_to_requested() {
    let cp = ControlPlane::shared();
    let ns = namespace(cp, "default-state");
    let out = apply(
        cp,
        &ns,
        &order_yaml(
            "no-state",
            "customer: alice\nproduct: Americano\nquantity: 1",
        ),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        stdout(&cp.kubectl(&[
            "get",
            "order",
            "no-state",
            "-n",
            &ns,
            "-o",
            "jsonpath={.spec.state}"
        ])),
        "Requested"
    );
}

#[test]
fn invalid_objects_are_refused_and_nothing_is_stored() {
    let cp = ControlPlane::shared();
    let ns = namespace(cp, "invalid");
    let long129 = "x".repeat(129);
    let long_customer = format!(
        "{}.{}.{}.{}",
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(63)
    );
    let ok = "customer: alice\nproduct: Americano\nquantity: 2";
    #[rustfmt::skip]
    let cases: Vec<(&str, &str, String, Vec<&str>)> = vec![
        ("unknown field", "order", order_yaml("unknown-field", &format!("{ok}\nflavor: vanilla")), vec!["unknown field \"spec.flavor\""]),
        ("unknown field in a customer", "customer", customer_yaml("unknown-field", "displayName: Al\nemail: al@example.com"), vec!["unknown field \"spec.email\""]),
        ("quantity of the wrong type", "order", order_yaml("qty-string", "customer: alice\nproduct: Americano\nquantity: two"), vec!["spec.quantity", "must be of type integer"]),
        ("fractional quantity", "order", order_yaml("qty-fraction", "customer: alice\nproduct: Americano\nquantity: 2.5"), vec!["spec.quantity", "must be of type integer"]),
        ("quantity 0", "order", order_yaml("qty-zero", "customer: alice\nproduct: Americano\nquantity: 0"), vec!["spec.quantity", "greater than or equal to 1"]),
        ("quantity 1001", "order", order_yaml("qty-1001", "customer: alice\nproduct: Americano\nquantity: 1001"), vec!["spec.quantity", "less than or equal to 1000"]),
        ("empty product", "order", order_yaml("product-empty", "customer: alice\nproduct: \"\"\nquantity: 2"), vec!["spec.product", "at least 1 chars long"]),
        ("product of 129 characters", "order", order_yaml("product-long", &format!("customer: alice\nproduct: {long129}\nquantity: 2")), vec!["spec.product", "128"]),
        ("missing customer", "order", order_yaml("no-customer", "product: Americano\nquantity: 2"), vec!["spec.customer: Required value"]),
        ("missing product", "order", order_yaml("no-product", "customer: alice\nquantity: 2"), vec!["spec.product: Required value"]),
        ("missing quantity", "order", order_yaml("no-quantity", "customer: alice\nproduct: Americano"), vec!["spec.quantity: Required value"]),
        ("empty customer", "order", order_yaml("customer-empty", "customer: \"\"\nproduct: Americano\nquantity: 2"), vec!["spec.customer", "at least 1 chars long"]),
        ("customer not DNS-1123", "order", order_yaml("customer-underscore", "customer: Alice_Kim\nproduct: Americano\nquantity: 2"), vec!["spec.customer", "should match"]),
        ("customer of 255 characters", "order", order_yaml("customer-long", &format!("customer: {long_customer}\nproduct: Americano\nquantity: 2")), vec!["spec.customer", "253"]),
        ("unknown state", "order", order_yaml("state-shipped", &format!("{ok}\nstate: Shipped")), vec!["spec.state", "Unsupported value: \"Shipped\""]),
        ("displayName of 129 characters", "customer", customer_yaml("display-long", &format!("displayName: {long129}")), vec!["spec.displayName", "128"]),
        ("order without spec", "order", "apiVersion: reserve.coffeechain.io/v1\nkind: Order\nmetadata:\n  name: no-spec\n".into(), vec!["spec: Required value"]),
    ];
    for (case, kind, yaml, needles) in &cases {
        let name = yaml
            .lines()
            .find_map(|l| l.strip_prefix("  name: "))
            .unwrap();
        assert_refused(&apply(cp, &ns, yaml), &format!("{case} (apply)"), needles);
        assert_refused(
            &cp.kubectl_stdin(&["create", "-n", &ns, "-f", "-"], yaml),
            &format!("{case} (create)"),
            needles,
        );
        assert!(
            !exists(cp, &ns, kind, name),
            "{case}: {kind} {name} was stored"
        );
    }
    let left = stdout(&cp.kubectl(&["get", "customers,orders", "-n", &ns, "-o", "name"]));
    assert!(left.trim().is_empty(), "stored after refusals: {left}");
    eprintln!("{} invalid objects refused", cases.len());
}

#[test]
fn forbidden_transitions_and_immutable_fields_leave_the_order_unchanged() {
    let cp = ControlPlane::shared();
    let ns = namespace(cp, "updates");
    let spec = |customer: &str, product: &str, qty: u32, state: &str| {
        format!("customer: {customer}\nproduct: {product}\nquantity: {qty}\nstate: {state}")
    };
    #[rustfmt::skip]
    let cases = [
        ("done", spec("alice", "Americano", 2, "Completed"), spec("alice", "Americano", 2, "Requested"), "spec.state cannot change from Completed to Requested"),
        ("gone", spec("alice", "Americano", 2, "Canceled"), spec("alice", "Americano", 2, "Completed"), "spec.state cannot change from Canceled to Completed"),
        ("gone-again", spec("alice", "Americano", 2, "Canceled"), spec("alice", "Americano", 2, "Requested"), "spec.state cannot change from Canceled to Requested"),
        ("other-customer", spec("alice", "Americano", 2, "Requested"), spec("bob", "Americano", 2, "Requested"), "spec.customer is immutable"),
        ("other-product", spec("alice", "Americano", 2, "Requested"), spec("alice", "Mocha", 2, "Requested"), "spec.product is immutable"),
        ("other-quantity", spec("alice", "Americano", 2, "Requested"), spec("alice", "Americano", 3, "Requested"), "spec.quantity is immutable"),
        // Together with an allowed change, the forbidden part still refuses the whole update.
        ("sneaky", spec("alice", "Americano", 2, "Requested"), spec("alice", "Americano", 20, "Completed"), "spec.quantity is immutable"),
    ];
    for (name, before, after, needle) in &cases {
        let out = apply(cp, &ns, &order_yaml(name, before));
        assert!(out.status.success(), "{name}: {}", text(&out));
        let was = stored(cp, &ns, "order", name);
        assert_refused(&apply(cp, &ns, &order_yaml(name, after)), name, &[needle]);
        assert_refused(
            &cp.kubectl_stdin(&["replace", "-n", &ns, "-f", "-"], &order_yaml(name, after)),
            name,
            &[needle],
        );
        assert_eq!(
            stored(cp, &ns, "order", name),
            was,
            "{name}: the stored order changed"
        );
    }
    // Allowed changes do go through.
    let out = apply(
        cp,
        &ns,
        &order_yaml("sneaky", &spec("alice", "Americano", 2, "Completed")),
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = apply(
        cp,
        &ns,
        &order_yaml("sneaky", &spec("alice", "Americano", 2, "Canceled")),
    );
    assert!(out.status.success(), "{}", text(&out));
}

#[tokio::test]
async fn state_rule_agrees_with_can_become_for_every_pair() {
    let cp = ControlPlane::shared();
    let client = cp.client().await;
    let ns = fresh_namespace(&client, "transitions").await;
    let api: Api<Order> = Api::namespaced(client, &ns);
    for from in OrderState::ALL {
        for to in OrderState::ALL {
            let name = format!(
                "{}-to-{}",
                from.as_str().to_lowercase(),
                to.as_str().to_lowercase()
            );
            let spec = OrderSpec {
                customer: "alice".into(),
                product: "Americano".into(),
                quantity: 1,
                state: from,
            };
            api.create(&PostParams::default(), &Order::new(&name, spec))
                .await
                .unwrap();
            let patch = serde_json::json!({ "spec": { "state": to } });
            let result = api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
            let stored = api.get(&name).await.unwrap().spec.state;
            match result {
                Ok(_) => {
                    assert!(
                        from.can_become(to),
                        "the API server allowed {from} -> {to}, can_become says no"
                    );
                    assert_eq!(stored, to);
                }
                Err(kube::Error::Api(status)) => {
                    assert!(
                        !from.can_become(to),
                        "the API server refused {from} -> {to}: {}",
                        status.message
                    );
                    assert_eq!(status.code, 422, "{status:?}");
                    assert!(
                        status
                            .message
                            .contains(&format!("spec.state cannot change from {from} to {to}")),
                        "{}",
                        status.message
                    );
                    assert_eq!(stored, from);
                }
                Err(e) => panic!("{from} -> {to}: {e}"),
            }
        }
    }
}

#[test]
fn a_customer_needs_no_spec_and_new_objects_read_as_not_yet_observed() {
    let cp = ControlPlane::shared();
    let ns = namespace(cp, "unobserved");
    let out = apply(cp, &ns, &customer_yaml("no-spec", ""));
    assert!(out.status.success(), "{}", text(&out));
    let out = apply(
        cp,
        &ns,
        &order_yaml("fresh", "customer: no-spec\nproduct: Tea\nquantity: 1"),
    );
    assert!(out.status.success(), "{}", text(&out));
    // No operator runs here: the schema's defaults say "not observed yet" (kstatus InProgress).
    for (kind, name) in [("customer", "no-spec"), ("order", "fresh")] {
        let observed = stdout(&cp.kubectl(&[
            "get",
            kind,
            name,
            "-n",
            &ns,
            "-o",
            "jsonpath={.metadata.generation} {.status.observedGeneration}",
        ]));
        assert_eq!(observed, "1 0", "{kind} {name}");
    }
    let spec = stdout(&cp.kubectl(&[
        "get",
        "customer",
        "no-spec",
        "-n",
        &ns,
        "-o",
        "jsonpath={.spec}",
    ]));
    assert_eq!(spec, "{}");
}

/// A manifest written for `v1alpha1` still applies (a Git repository written before v1): the
/// API server warns that the version is deprecated and names v1, and the object is the same
/// object in both versions, columns and field selectors included.
#[test]
fn v1alpha1_still_applies_with_a_warning_naming_v1_and_is_the_same_object() {
    let cp = ControlPlane::shared();
    let ns = namespace(cp, "alpha");
    let old = |yaml: String| {
        yaml.replace(
            "reserve.coffeechain.io/v1\n",
            "reserve.coffeechain.io/v1alpha1\n",
        )
    };
    let out = apply(
        cp,
        &ns,
        &old(customer_yaml("gitops", "displayName: From Git")),
    );
    assert!(out.status.success(), "{}", text(&out));
    let warning = String::from_utf8_lossy(&out.stderr);
    assert!(
        warning.contains("reserve.coffeechain.io/v1alpha1 Customer is deprecated; use reserve.coffeechain.io/v1 Customer"),
        "no deprecation warning naming v1: {warning}"
    );
    let out = apply(
        cp,
        &ns,
        &old(order_yaml(
            "gitops-1",
            "customer: gitops\nproduct: Mocha\nquantity: 2",
        )),
    );
    assert!(out.status.success(), "{}", text(&out));
    for version in ["v1", "v1alpha1"] {
        let resource = format!("customers.{version}.reserve.coffeechain.io");
        let shown = stdout(&cp.kubectl(&[
            "get",
            &resource,
            "gitops",
            "-n",
            &ns,
            "-o",
            "jsonpath={.apiVersion} {.spec.displayName} {.metadata.uid}",
        ]));
        assert!(
            shown.starts_with(&format!("reserve.coffeechain.io/{version} From Git ")),
            "{shown}"
        );
        let resource = format!("orders.{version}.reserve.coffeechain.io");
        let selected = stdout(&cp.kubectl(&[
            "get",
            &resource,
            "-n",
            &ns,
            "--field-selector",
            "spec.customer=gitops",
            "-o",
            "name",
        ]));
        assert_eq!(
            selected.trim(),
            "order.reserve.coffeechain.io/gitops-1",
            "{version}"
        );
    }
}
