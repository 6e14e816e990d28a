//! The pure rules of settlement: which orders are due (never one declared in Git, see
//! `controller::declared`), and what a ledger becomes when it absorbs, forgets or gives back
//! orders.

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use crate::{
    controller::index::OrderFacts,
    crd::{AbsorbedOrder, LedgerSpec, OrderState},
    loyalty::Tally,
};

/// Whether `order` is due for settlement at `now`: final, observed so by the operator for at
/// least `after`, and not declared in Git.
pub fn is_due(order: &OrderFacts, now: Timestamp, after: Duration) -> bool {
    let final_state = matches!(order.state, OrderState::Completed | OrderState::Canceled);
    let seen = &order.seen;
    let Some(status) = seen.status.as_ref() else {
        return false;
    };
    let observed =
        status.phase == Some(order.state) && status.observed_generation == seen.generation;
    let old_enough = status.phase_since.as_ref().is_some_and(|Time(since)| {
        now.duration_since(*since)
            .try_into()
            .is_ok_and(|age: Duration| age >= after)
    });
    final_state
        && observed
        && old_enough
        && !seen.uid.is_empty()
        && !seen.resource_version.is_empty()
        && !seen.deleting
        && !seen.declared
}

/// What a ledger records of the order `name` when it absorbs it.
pub fn entry(name: &str, order: &OrderFacts) -> AbsorbedOrder {
    AbsorbedOrder {
        name: name.to_owned(),
        uid: order.seen.uid.to_string(),
        resource_version: order.seen.resource_version.to_string(),
        state: order.state,
        quantity: order.quantity,
    }
}

fn tally(entries: &[AbsorbedOrder]) -> Tally {
    Tally::of(entries.iter().map(|e| (e.state, e.quantity)))
}

fn with_tally(mut spec: LedgerSpec, tally: Tally) -> LedgerSpec {
    spec.score = tally.score;
    spec.completed_orders = tally.completed;
    spec.canceled_orders = tally.canceled;
    spec.absorbed_count = spec.absorbed.len() as i64;
    spec
}

/// The ledger with `orders` absorbed: counted, and listed until their deletion is seen.
pub fn absorb(spec: &LedgerSpec, orders: &[AbsorbedOrder]) -> LedgerSpec {
    let mut next = spec.clone();
    next.absorbed.extend_from_slice(orders);
    with_tally(next, Tally::settled_in(spec).plus(tally(orders)))
}

/// The ledger without the absorbed orders `gone` (deleted: their contribution stays) and
/// `given_back` (changed before their deletion: their contribution goes too).
pub fn release(spec: &LedgerSpec, gone: &[String], given_back: &[String]) -> LedgerSpec {
    let (back, kept): (Vec<_>, Vec<_>) = spec
        .absorbed
        .iter()
        .filter(|a| !gone.contains(&a.uid))
        .cloned()
        .partition(|a| given_back.contains(&a.uid));
    let mut next = spec.clone();
    next.absorbed = kept;
    with_tally(next, Tally::settled_in(spec).minus(tally(&back)))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
    use kube::Resource;

    use super::*;
    use crate::{
        controller::{
            declared::{FIELD_MANAGER, is_declared},
            index::{Index, OrderKey},
        },
        crd::{Order, OrderSpec, OrderStatus},
    };

    /// `order` as the index keeps it.
    fn facts(order: &Order) -> OrderFacts {
        let mut index = Index::default();
        index.apply_order(order);
        index.order(&OrderKey::of_order(order)).unwrap().clone()
    }

    fn is_due(order: &Order, now: Timestamp, after: Duration) -> bool {
        super::is_due(&facts(order), now, after)
    }

    fn absorbed(uid: &str, state: OrderState, quantity: i64) -> AbsorbedOrder {
        AbsorbedOrder {
            name: format!("order-{uid}"),
            uid: uid.into(),
            resource_version: "7".into(),
            state,
            quantity,
        }
    }

    #[test]
    fn absorbing_counts_orders_and_releasing_keeps_or_gives_back_their_contribution() {
        use OrderState::*;
        let start = LedgerSpec {
            score: 10,
            completed_orders: 2,
            canceled_orders: 1,
            ..LedgerSpec::default()
        };
        let orders = [
            absorbed("a", Completed, 3),
            absorbed("b", Canceled, 5),
            absorbed("c", Completed, 4),
        ];
        let with = absorb(&start, &orders);
        assert_eq!(
            (with.score, with.completed_orders, with.canceled_orders),
            (17, 4, 2)
        );
        assert_eq!(with.absorbed_count, 3);
        // a and b are gone; c was refunded before its deletion and goes back to the live orders.
        let after = release(&with, &["a".into(), "b".into()], &["c".into()]);
        assert_eq!(
            (after.score, after.completed_orders, after.canceled_orders),
            (13, 3, 2)
        );
        assert!(after.absorbed.is_empty());
        assert_eq!(after.absorbed_count, 0);
    }

    fn order(state: OrderState, phase_since: i64) -> Order {
        let mut order = Order::new(
            "o",
            OrderSpec {
                customer: "alice".into(),
                product: "Latte".into(),
                quantity: 2,
                state,
            },
        );
        order.metadata.uid = Some("u".into());
        order.metadata.resource_version = Some("9".into());
        order.metadata.generation = Some(1);
        order.status = Some(OrderStatus {
            phase: Some(state),
            phase_since: Some(Time(Timestamp::from_second(phase_since).unwrap())),
            observed_generation: Some(1),
            ..OrderStatus::default()
        });
        order
    }

    #[test]
    fn only_final_orders_observed_long_enough_and_not_declared_are_due() {
        let now = Timestamp::from_second(1_000).unwrap();
        let day = Duration::from_secs(100);
        assert!(is_due(&order(OrderState::Completed, 900), now, day));
        assert!(is_due(&order(OrderState::Canceled, 850), now, day));
        assert!(
            !is_due(&order(OrderState::Completed, 901), now, day),
            "too young"
        );
        assert!(
            !is_due(&order(OrderState::Requested, 0), now, day),
            "not final"
        );
        let mut unobserved = order(OrderState::Completed, 0);
        unobserved.metadata.generation = Some(2);
        assert!(
            !is_due(&unobserved, now, day),
            "spec changed since the status"
        );
        let mut applied = order(OrderState::Completed, 0);
        applied.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some("kustomize-controller".into()),
            operation: Some("Apply".into()),
            ..ManagedFieldsEntry::default()
        }]);
        assert!(!is_due(&applied, now, day), "applied server-side from Git");
        let mut argo = order(OrderState::Completed, 0);
        argo.metadata.annotations = Some(BTreeMap::from([(
            "kubectl.kubernetes.io/last-applied-configuration".into(),
            "{}".into(),
        )]));
        assert!(is_declared(argo.meta()));
        assert!(!is_due(&argo, now, day), "applied client-side");
        let mut deleting = order(OrderState::Completed, 0);
        deleting.metadata.deletion_timestamp = Some(Time(now));
        assert!(!is_due(&deleting, now, day), "on its way out already");
        let mut ours = order(OrderState::Completed, 0);
        ours.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some(FIELD_MANAGER.into()),
            operation: Some("Apply".into()),
            subresource: Some("status".into()),
            ..ManagedFieldsEntry::default()
        }]);
        assert!(
            is_due(&ours, now, day),
            "the operator's own status writes do not count"
        );
    }
}
