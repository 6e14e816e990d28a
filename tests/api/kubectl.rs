//! What `kubectl get` and `kubectl explain` show: the contract's columns, categories, short
//! names and field descriptions; orders selected by customer and state.

use super::*;

#[test]
fn kubectl_shows_the_contract_columns_categories_and_short_names() {
    let cp = ControlPlane::shared();
    let ns = namespace(cp, "columns");
    let out = cp.kubectl(&["apply", "-n", &ns, "-f", EXAMPLES]);
    assert!(out.status.success(), "{}", text(&out));

    let customers = stdout(&cp.kubectl(&["get", "customers", "-n", &ns]));
    assert_eq!(
        header(&customers),
        "NAME DISPLAY NAME SCORE LEVEL TO NEXT COMPLETED READY AGE",
        "{customers}"
    );
    assert!(
        customers
            .lines()
            .any(|l| l.starts_with("alice") && l.contains("Alice Kim")),
        "{customers}"
    );
    let orders = stdout(&cp.kubectl(&["get", "orders", "-n", &ns]));
    assert_eq!(
        header(&orders),
        "NAME CUSTOMER PRODUCT QTY STATE PHASE LEVEL AGE",
        "{orders}"
    );
    // -o wide adds what a shop looks for.
    let wide = |kind| {
        header(&stdout(
            &cp.kubectl(&["get", kind, "-n", &ns, "-o", "wide"]),
        ))
    };
    assert_eq!(
        wide("customers"),
        "NAME DISPLAY NAME SCORE LEVEL TO NEXT COMPLETED READY AGE NEXT LEVEL OPEN CANCELED SETTLED"
    );
    assert_eq!(
        wide("orders"),
        "NAME CUSTOMER PRODUCT QTY STATE PHASE LEVEL AGE MEMBER PHASE SINCE"
    );
    let row = orders
        .lines()
        .find(|l| l.starts_with("alice-mocha"))
        .expect("alice-mocha row");
    assert_eq!(
        row.split_whitespace().take(5).collect::<Vec<_>>(),
        ["alice-mocha", "alice", "Mocha", "4", "Requested"]
    );

    let both = stdout(&cp.kubectl(&["get", "coffeechain", "-n", &ns, "-o", "name"]));
    assert!(
        both.contains("customer.reserve.coffeechain.io/alice"),
        "{both}"
    );
    assert!(
        both.contains("order.reserve.coffeechain.io/carol-latte"),
        "{both}"
    );
    assert_eq!(both.lines().count(), 9, "{both}");
    let table = stdout(&cp.kubectl(&["get", "coffeechain", "-n", &ns]));
    assert!(
        table.contains("DISPLAY NAME") && table.contains("PRODUCT"),
        "{table}"
    );

    // Same table by short name (AGE may tick between the two calls, so compare without it).
    let without_age = |t: &str| {
        t.lines()
            .map(|l| l.rsplit_once(' ').map_or(l, |(rest, _)| rest).to_string())
            .collect::<Vec<_>>()
    };
    let cust = stdout(&cp.kubectl(&["get", "cust", "-n", &ns]));
    assert_eq!(without_age(&cust), without_age(&customers), "{cust}");
    let ord = stdout(&cp.kubectl(&["get", "ord", "-n", &ns, "-o", "name"]));
    assert_eq!(ord.lines().count(), 6, "{ord}");
    let resources =
        stdout(&cp.kubectl(&["api-resources", "--api-group", "reserve.coffeechain.io"]));
    for line in [
        "customers cust reserve.coffeechain.io/v1 true Customer",
        "orders ord reserve.coffeechain.io/v1 true Order",
    ] {
        assert!(
            resources
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") == line),
            "{line}: {resources}"
        );
    }
}

#[test]
fn kubectl_explain_shows_the_field_descriptions() {
    let cp = ControlPlane::shared();
    let spec = kubectl_until(cp, &["explain", "customer.spec"], |t| {
        t.contains("displayName")
    });
    assert!(
        spec.contains("Name shown to staff, at most 128 characters"),
        "{spec}"
    );
    let qty = kubectl_until(cp, &["explain", "order.spec.quantity"], |t| {
        t.contains("quantity")
    });
    assert!(qty.contains("How many, 1 to 1000"), "{qty}");
    assert!(qty.contains("integer"), "{qty}");
    let state = kubectl_until(cp, &["explain", "order.spec.state"], |t| {
        t.contains("state")
    });
    assert!(state.contains("Canceled is final"), "{state}");
}

#[test]
fn orders_can_be_selected_by_customer_and_state() {
    let cp = ControlPlane::shared();
    let ns = namespace(cp, "selectors");
    let out = cp.kubectl(&["apply", "-n", &ns, "-f", EXAMPLES]);
    assert!(out.status.success(), "{}", text(&out));
    let names = |selector: &str| {
        let out = cp.kubectl(&[
            "get",
            "orders",
            "-n",
            &ns,
            "--field-selector",
            selector,
            "-o",
            "name",
        ]);
        assert!(out.status.success(), "{selector}: {}", text(&out));
        let mut names: Vec<String> = stdout(&out)
            .lines()
            .map(|l| {
                l.trim_start_matches("order.reserve.coffeechain.io/")
                    .to_owned()
            })
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        names("spec.customer=alice"),
        ["alice-americano", "alice-latte", "alice-mocha"]
    );
    assert_eq!(names("spec.customer=bob,spec.state=Requested").len(), 2);
    assert!(names("spec.state=Completed").is_empty());
}
