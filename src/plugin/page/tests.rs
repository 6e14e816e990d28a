use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use serde_json::json;

use super::*;
use crate::crd::{
    CustomerSpec, CustomerStatus, LedgerSpec, OrderSpec, OrderStatus, SettledHistory,
};

fn at(seconds: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(1_796_680_000 + seconds).unwrap())
}

fn order(name: &str, customer: &str, quantity: i32, state: OrderState, level: &str) -> Order {
    let mut order = Order::new(
        name,
        OrderSpec {
            customer: customer.into(),
            product: "Latte".into(),
            quantity,
            state,
        },
    );
    order.metadata.creation_timestamp = Some(at(quantity.into()));
    order.status = Some(OrderStatus {
        phase: Some(state),
        customer_level: Some(level.into()),
        ..OrderStatus::default()
    });
    order
}

fn alice() -> Customer {
    let mut alice = Customer::new(
        "alice",
        CustomerSpec {
            display_name: Some("Alice Kim".into()),
        },
    );
    alice.status = Some(CustomerStatus {
        score: 12,
        level: Some("Gold".into()),
        next_level: Some("Platinum".into()),
        points_to_next_level: Some(3),
        completed_orders: 3,
        canceled_orders: 1,
        open_orders: 1,
        settled: Some(SettledHistory {
            score: 5,
            completed_orders: 1,
            canceled_orders: 0,
        }),
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: "UpToDate".into(),
            message: String::new(),
            last_transition_time: at(0),
            observed_generation: None,
        }],
        ..CustomerStatus::default()
    });
    alice
}

fn level_changed(seconds: i64, message: &str) -> Event {
    Event {
        metadata: ObjectMeta::default(),
        reason: Some("LevelChanged".into()),
        message: Some(message.into()),
        last_timestamp: Some(at(seconds)),
        ..Event::default()
    }
}

#[test]
fn a_members_page_shows_level_next_level_orders_ledger_and_the_last_level_changes() {
    let orders = [
        order("alice-mocha", "alice", 4, OrderState::Completed, "Silver"),
        order("alice-latte", "alice", 3, OrderState::Requested, "Bronze"),
        order("bob-espresso", "bob", 1, OrderState::Completed, "Bronze"),
    ];
    let ledger = Ledger::new(
        "alice",
        LedgerSpec {
            score: 5,
            completed_orders: 1,
            ..LedgerSpec::default()
        },
    );
    let events: Vec<Event> = (0..7)
        .map(|i| level_changed(100 - i, &format!("change {i}")))
        .collect();
    let page = page(
        "coffee",
        "alice",
        Some(&alice()),
        &orders,
        Some(&ledger),
        &events,
    )
    .unwrap();
    assert!(page.member);
    assert_eq!(
        page.orders
            .iter()
            .map(|o| o.name.as_str())
            .collect::<Vec<_>>(),
        ["alice-latte", "alice-mocha"],
        "her orders only, oldest first"
    );
    assert_eq!(page.level_changes.len(), 5);
    assert_eq!(page.level_changes[4].message, "change 0", "newest last");

    let text = render(&page);
    for line in [
        "Customer alice (namespace coffee): Alice Kim",
        "Level:   Gold (score 12; 3 points to Platinum)",
        "Orders:  1 open, 3 completed, 1 canceled (settled ones included)",
        "Ready:   True (UpToDate)",
        "Settled: 1 completed and 0 canceled orders in the Ledger, score 5",
        "ORDER        PRODUCT  QTY  STATE      PHASE      LEVEL",
        "alice-latte  Latte    3    Requested  Requested  Bronze",
        "Level changes:",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
    let json = serde_json::to_value(&page).unwrap();
    assert_eq!(json["pointsToNextLevel"], json!(3));
    assert_eq!(json["orders"][1]["level"], json!("Silver"));
    assert_eq!(json["settled"]["score"], json!(5));
}

#[test]
fn a_name_only_orders_use_is_a_non_member_and_an_unknown_name_is_not_found() {
    let orders = [order(
        "carol-latte",
        "carol",
        2,
        OrderState::Requested,
        "Iron",
    )];
    let page = page("coffee", "carol", None, &orders, None, &[]).unwrap();
    assert!(!page.member);
    assert_eq!(page.level.as_deref(), Some("Iron"));
    let text = render(&page);
    assert!(
        text.contains("Not a member: no Customer carol exists"),
        "{text}"
    );
    assert!(text.contains("carol-latte"), "{text}");

    let missing = super::page("coffee", "zoe", None, &orders, None, &[]).unwrap_err();
    assert_eq!(
        missing.to_string(),
        "no customer zoe in namespace coffee, and no orders for one"
    );
}

#[test]
fn a_customer_the_operator_has_not_written_says_so() {
    let mut new = alice();
    new.status = None;
    let text = render(&page("coffee", "alice", Some(&new), &[], None, &[]).unwrap());
    assert!(
        text.contains("Ready:   - (the operator has not written this customer yet)"),
        "{text}"
    );
    assert!(text.contains("No orders."), "{text}");
    assert!(text.contains("Settled: nothing (no Ledger)"), "{text}");
}
