//! RBAC for people: the three kinds in Kubernetes' own view, edit and admin roles (aggregated by
//! kube-controller-manager's clusterrole-aggregation controller, as in any cluster), and the
//! documented shop-staff role, checked with `kubectl auth can-i` as their users.

use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::Api;
use reserve_testkit::{ControlPlane, FAIL_AFTER, control_plane::text, until};

use crate::REPO;

/// Whether `who` (`--as USER [--as-group GROUP]`) may `verb` `resource` (`orders/status`: the
/// subresource) in `namespace`, as `kubectl auth can-i` answers.
fn can_i(cp: &ControlPlane, who: &[&str], verb: &str, resource: &str, namespace: &str) -> bool {
    let (resource, subresource) = match resource.split_once('/') {
        Some((resource, sub)) => (resource, Some(format!("--subresource={sub}"))),
        None => (resource, None),
    };
    let mut args = vec!["auth", "can-i", verb, resource, "-n", namespace];
    args.extend(subresource.as_deref());
    args.extend_from_slice(who);
    let out = cp.kubectl(&args);
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        answer == "yes" || answer == "no",
        "kubectl {args:?}: {}",
        text(&out)
    );
    answer == "yes"
}

/// Whether the aggregated ClusterRole `role` grants `verb` on orders.
fn grants_orders(role: &ClusterRole, verb: &str) -> bool {
    role.rules.iter().flatten().any(|rule| {
        rule.api_groups
            .iter()
            .flatten()
            .any(|g| g == "reserve.coffeechain.io")
            && rule.resources.iter().flatten().any(|r| r == "orders")
            && rule.verbs.iter().any(|v| v == verb)
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_namespace_viewer_reads_an_editor_orders_and_shop_staff_move_orders_but_delete_none() {
    let cp = ControlPlane::shared();
    // A cluster of ours runs the aggregation controller; the test control plane runs it here.
    let mut aggregation = cp.is_local().then(|| {
        cp.controller_manager("clusterrole-aggregation-controller")
            .expect("kube-controller-manager")
    });
    let roles: Api<ClusterRole> = Api::all(cp.client().await);
    for (role, verb) in [("view", "list"), ("edit", "create"), ("admin", "delete")] {
        until(
            &roles,
            role,
            FAIL_AFTER,
            &format!("the {role} role to take in orders"),
            |r| grants_orders(r, verb),
        )
        .await;
    }
    if let Some(manager) = aggregation.as_mut() {
        manager.stop(std::time::Duration::from_secs(10));
    }

    let ns = "rbac-people";
    let _ = cp.kubectl(&["create", "namespace", ns]);
    for (binding, role, user) in [("viewers", "view", "vera"), ("editors", "edit", "ed")] {
        let out = cp.kubectl(&[
            "create",
            "rolebinding",
            binding,
            "-n",
            ns,
            "--clusterrole",
            role,
            "--user",
            user,
        ]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let staff = format!("{REPO}/examples/rbac/shop-staff.yaml");
    let out = cp.kubectl(&["apply", "-n", ns, "-f", &staff]);
    assert!(out.status.success(), "{}", text(&out));
    let out = cp.kubectl(&[
        "create",
        "rolebinding",
        "shop-staff",
        "-n",
        ns,
        "--role",
        "reserve-shop-staff",
        "--group",
        "shop-staff",
    ]);
    assert!(out.status.success(), "{}", text(&out));

    const ORDERS: &str = "orders.reserve.coffeechain.io";
    const CUSTOMERS: &str = "customers.reserve.coffeechain.io";
    const LEDGERS: &str = "ledgers.reserve.coffeechain.io";
    let may =
        |user: &str, verb: &str, resource: &str| can_i(cp, &["--as", user], verb, resource, ns);
    // A viewer reads everything and writes nothing.
    for resource in [ORDERS, CUSTOMERS, LEDGERS] {
        assert!(may("vera", "list", resource), "vera list {resource}");
    }
    assert!(!may("vera", "create", ORDERS));
    // An editor creates and deletes Customers and Orders; status and Ledgers stay the
    // operator's.
    for (verb, resource) in [("create", ORDERS), ("delete", ORDERS), ("patch", CUSTOMERS)] {
        assert!(may("ed", verb, resource), "ed {verb} {resource}");
    }
    for (verb, resource) in [
        ("patch", "orders.reserve.coffeechain.io/status"),
        ("update", "customers.reserve.coffeechain.io/status"),
        ("create", LEDGERS),
        ("delete", LEDGERS),
    ] {
        assert!(!may("ed", verb, resource), "ed may {verb} {resource}");
    }
    // Shop staff take orders and move their state, and delete nothing.
    let staff = |verb: &str, resource: &str| {
        can_i(
            cp,
            &["--as", "sam", "--as-group", "shop-staff"],
            verb,
            resource,
            ns,
        )
    };
    for (verb, resource) in [("create", ORDERS), ("patch", ORDERS), ("list", CUSTOMERS)] {
        assert!(staff(verb, resource), "staff {verb} {resource}");
    }
    for (verb, resource) in [
        ("delete", ORDERS),
        ("create", CUSTOMERS),
        ("patch", "orders.reserve.coffeechain.io/status"),
    ] {
        assert!(!staff(verb, resource), "staff may {verb} {resource}");
    }
    let out = cp.kubectl(&["delete", "namespace", ns, "--wait=false"]);
    assert!(out.status.success(), "{}", text(&out));
}
