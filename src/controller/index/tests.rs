//! The index on its own: what each update counts and whom it wakes.
use super::*;
use crate::crd::{CustomerSpec, OrderSpec, OrderStatus};

fn order(ns: &str, name: &str, customer: &str, quantity: i32, state: OrderState) -> Order {
    let mut order = Order::new(
        name,
        OrderSpec {
            customer: customer.into(),
            product: "Latte".into(),
            quantity,
            state,
        },
    );
    order.metadata.namespace = Some(ns.into());
    order.metadata.uid = Some(format!("uid-{name}"));
    order
}

fn with_snapshot(mut order: Order, level: &str) -> Order {
    order.status = Some(OrderStatus {
        customer_level: Some(level.into()),
        ..Default::default()
    });
    order
}

fn customer(ns: &str, name: &str, uid: &str) -> Customer {
    let mut customer = Customer::new(name, CustomerSpec::default());
    customer.metadata.namespace = Some(ns.into());
    customer.metadata.uid = Some(uid.into());
    customer
}

fn key(ns: &str, name: &str) -> CustomerKey {
    CustomerKey::new(ns, name)
}

fn snapshot<'a>(index: &'a Index, order: &Order) -> Option<&'a str> {
    index
        .order(&OrderKey::of_order(order))
        .filter(|facts| facts.seen.uid.as_ref() == order.uid().unwrap_or_default())
        .and_then(OrderFacts::snapshot)
}

fn absorbed(index: &Index, order: &Order) -> bool {
    let facts = index.order(&OrderKey::of_order(order)).unwrap();
    index.is_absorbed(&CustomerKey::of_order(order), facts)
}

use OrderState::*;

#[test]
fn an_order_wakes_its_customer_only_when_what_counts_changes() {
    let mut index = Index::default();
    let a = order("ns", "a", "alice", 2, Requested);
    assert_eq!(
        index.apply_order(&a),
        Some(ObjectRef::new("alice").within("ns"))
    );
    assert_eq!(
        index.apply_order(&with_snapshot(a.clone(), "Bronze")),
        None,
        "a status write changes nothing that counts"
    );
    let a = order("ns", "a", "alice", 2, Completed);
    assert!(index.apply_order(&a).is_some());
    assert_eq!(
        index.tally_of(&key("ns", "alice"), None),
        Tally {
            score: 2,
            completed: 1,
            canceled: 0,
            open: 0
        }
    );
    assert!(index.delete_order(&a).is_some());
    assert_eq!(index.delete_order(&a), None, "already gone");
    assert_eq!(index.tally_of(&key("ns", "alice"), None), Tally::default());
    assert_eq!(index.order_count(), 0);
}

#[test]
fn the_score_counts_what_users_declared_not_what_a_status_says() {
    let mut index = Index::default();
    let mut forged = order("ns", "a", "alice", 5, Requested);
    forged.status = Some(OrderStatus {
        phase: Some(Completed),
        ..Default::default()
    });
    index.apply_order(&forged);
    assert_eq!(index.tally_of(&key("ns", "alice"), None).score, 0);
}

#[test]
fn the_first_snapshot_seen_stays_whatever_later_statuses_show() {
    let mut index = Index::default();
    let a = order("ns", "a", "alice", 1, Completed);
    index.apply_order(&a);
    assert_eq!(snapshot(&index, &a), None);
    index.apply_order(&with_snapshot(a.clone(), "Iron"));
    assert_eq!(snapshot(&index, &a), None, "Iron is no snapshot");
    index.apply_order(&with_snapshot(a.clone(), "Silver"));
    index.apply_order(&with_snapshot(a.clone(), "Diamond"));
    assert_eq!(snapshot(&index, &a), Some("Silver"));
    // A re-list keeps it too.
    let listed = vec![index.listed_order(&with_snapshot(a.clone(), "Gold"))];
    index.reset_orders(listed);
    assert_eq!(snapshot(&index, &a), Some("Silver"));
    // The same name, created again: a new order with no snapshot yet.
    let mut again = order("ns", "a", "alice", 1, Completed);
    again.metadata.uid = Some("other".into());
    index.apply_order(&again);
    assert_eq!(snapshot(&index, &again), None);
}

fn ledger(ns: &str, customer: &str, score: i64, completed: i64, absorbed: &[&Order]) -> Ledger {
    use crate::crd::{AbsorbedOrder, LedgerSpec};
    let mut ledger = Ledger::new(
        customer,
        LedgerSpec {
            score,
            completed_orders: completed,
            absorbed: absorbed
                .iter()
                .map(|o| AbsorbedOrder {
                    name: o.name_any(),
                    uid: o.uid().unwrap(),
                    resource_version: "1".into(),
                    state: o.spec.state,
                    quantity: i64::from(o.spec.quantity),
                })
                .collect(),
            ..LedgerSpec::default()
        },
    );
    ledger.metadata.namespace = Some(ns.into());
    ledger
}

#[test]
fn a_ledger_counts_settled_orders_and_the_orders_it_absorbed_count_only_there() {
    let mut index = Index::default();
    let live = order("ns", "live", "alice", 2, Completed);
    let going = order("ns", "going", "alice", 5, Completed);
    index.apply_order(&live);
    index.apply_order(&going);
    assert_eq!(index.tally_of(&key("ns", "alice"), None).score, 7);
    // The ledger records 10 settled points, among them `going`, which still exists.
    let woken = index.apply_ledger(&ledger("ns", "alice", 10, 3, &[&going]));
    assert_eq!(woken, Some(ObjectRef::new("alice").within("ns")));
    assert!(absorbed(&index, &going) && !absorbed(&index, &live));
    let tally = index.tally_of(&key("ns", "alice"), None);
    assert_eq!((tally.score, tally.completed), (12, 4));
    // Without it, the customer has what the ledger settled before it, and `live`.
    assert_eq!(index.tally_of(&key("ns", "alice"), Some("going")).score, 7);
    // Its deletion changes nothing, nor does forgetting it afterwards.
    index.delete_order(&going);
    assert_eq!(index.tally_of(&key("ns", "alice"), None).score, 12);
    index.apply_ledger(&ledger("ns", "alice", 10, 3, &[]));
    assert_eq!(index.tally_of(&key("ns", "alice"), None).score, 12);
    assert_eq!(index.tally_of(&key("ns", "alice"), Some("live")).score, 10);
    // A refund of an absorbed order before its deletion counts at once.
    let refunded = order("ns", "refunded", "alice", 4, Completed);
    index.apply_order(&refunded);
    index.apply_ledger(&ledger("ns", "alice", 14, 4, &[&refunded]));
    assert_eq!(index.tally_of(&key("ns", "alice"), None).score, 16);
    index.apply_order(&order("ns", "refunded", "alice", 4, Canceled));
    let tally = index.tally_of(&key("ns", "alice"), None);
    assert_eq!((tally.score, tally.completed, tally.canceled), (12, 4, 1));
    index.delete_order(&refunded);
    index.apply_ledger(&ledger("ns", "alice", 10, 3, &[]));
    // The ledger outlives its customer and counts again for one of the same name.
    index.apply_customer(&customer("ns", "alice", "u2"));
    assert_eq!(index.tally_of(&key("ns", "alice"), None).score, 12);
}

#[test]
fn customers_are_separate_per_namespace() {
    let mut index = Index::default();
    index.apply_order(&order("one", "a", "alice", 3, Completed));
    index.apply_order(&order("two", "a", "alice", 5, Completed));
    assert_eq!(index.tally_of(&key("one", "alice"), None).score, 3);
    assert_eq!(index.tally_of(&key("two", "alice"), None).score, 5);
}

#[test]
fn tally_can_leave_one_order_out() {
    let mut index = Index::default();
    index.apply_order(&order("ns", "a", "alice", 3, Completed));
    index.apply_order(&order("ns", "b", "alice", 4, Completed));
    assert_eq!(index.tally_of(&key("ns", "alice"), Some("b")).score, 3);
    assert_eq!(index.tally_of(&key("ns", "alice"), Some("nope")).score, 7);
}

#[test]
fn a_customer_appearing_or_leaving_wakes_its_orders() {
    let mut index = Index::default();
    index.apply_order(&order("ns", "a", "alice", 1, Requested));
    index.apply_order(&order("ns", "b", "alice", 1, Requested));
    index.apply_order(&order("ns", "c", "bob", 1, Requested));
    let alice = customer("ns", "alice", "u1");
    let mut woken = index.apply_customer(&alice);
    woken.sort_by_key(|r| r.name.clone());
    assert_eq!(
        woken,
        vec![
            key("ns", "alice").order_key("a"),
            key("ns", "alice").order_key("b")
        ]
    );
    assert!(index.has_customer(&key("ns", "alice")));
    assert!(
        index.apply_customer(&alice).is_empty(),
        "a status write of the same customer"
    );
    assert_eq!(
        index.apply_customer(&customer("ns", "alice", "u2")).len(),
        2,
        "re-created"
    );
    assert_eq!(index.delete_customer(&alice).len(), 2);
    assert!(!index.has_customer(&key("ns", "alice")));
    assert!(index.delete_customer(&alice).is_empty());
}

#[test]
fn reset_wakes_what_changed_while_the_watch_was_away() {
    let mut index = Index::default();
    index.apply_order(&order("ns", "a", "alice", 1, Requested));
    index.apply_order(&order("ns", "b", "bob", 1, Requested));
    index.apply_order(&order("ns", "c", "carol", 1, Requested));
    // After a re-list: a unchanged, b deleted, c completed, d new for dana.
    let relisted = [
        order("ns", "a", "alice", 1, Requested),
        order("ns", "c", "carol", 1, Completed),
        order("ns", "d", "dana", 1, Requested),
    ]
    .iter()
    .map(|o| index.listed_order(o))
    .collect();
    let mut woken: Vec<_> = index
        .reset_orders(relisted)
        .into_iter()
        .map(|r| r.name)
        .collect();
    woken.sort();
    assert_eq!(woken, ["bob", "carol", "dana"]);
    assert_eq!(index.order_count(), 3);

    index.apply_customer(&customer("ns", "alice", "u1"));
    index.apply_customer(&customer("ns", "carol", "u3"));
    let relisted = [customer("ns", "alice", "u1"), customer("ns", "dana", "u4")]
        .iter()
        .map(|c| index.listed_customer(c))
        .collect();
    let mut woken: Vec<_> = index
        .reset_customers(relisted)
        .into_iter()
        .map(|r| r.name)
        .collect();
    woken.sort();
    assert_eq!(
        woken,
        ["c", "d"],
        "carol left, dana arrived; alice is unchanged"
    );
    assert_eq!(index.customer_count(), 2);
}
