//! Order reconciler: mirrors spec.state into status.phase, takes the customer-level snapshot
//! once, and says whether the customer exists. It reads the order from the index (the operator
//! keeps no cache of whole Orders).

use std::sync::Arc;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::runtime::events::EventType;
use tracing::{debug, warn};

use super::{
    conditions::{self, Observation},
    context::Context,
    error::Outcome,
    index::{Index, OrderFacts, OrderKey},
    restore,
    seen::SeenStatus,
};
use crate::{
    crd::{CUSTOMER_FOUND, Order, OrderStatus, READY},
    loyalty::{LevelPolicy, MISSING_CUSTOMER_LEVEL},
    runtime_ext::{Note, regarding},
};

pub const CUSTOMER_NOT_FOUND: &str = "CustomerNotFound";

/// The status the order `key` (with `facts`) should have, given the customers and orders in
/// `index`; `current` is the status it has now, as far as this process knows.
///
/// The snapshot (`customerLevel`) is the first one the index saw for this order, else the one
/// `current` shows (this operator's own write not yet seen by the watch), else, if the customer
/// exists, the level it has without this order (so the result does not depend on whether the
/// order or its customer is reconciled first); Iron until then.
pub fn desired_status(
    key: &OrderKey,
    facts: &OrderFacts,
    current: Option<&SeenStatus>,
    index: &Index,
    policy: &LevelPolicy,
    now: Timestamp,
) -> OrderStatus {
    let customer = &key.customer;
    let generation = facts.seen.generation;
    let state = facts.state;
    let customer_exists = index.has_customer(customer);
    let snapshot = facts.snapshot().or_else(|| {
        current
            .and_then(|s| s.customer_level.as_deref())
            .filter(|level| *level != MISSING_CUSTOMER_LEVEL)
    });
    let customer_level = match snapshot {
        Some(level) => level,
        None if customer_exists => {
            policy.level_for(index.tally_of(customer, Some(&key.name)).score)
        }
        None => MISSING_CUSTOMER_LEVEL,
    };

    let ready = Observation {
        type_: READY,
        is_true: true,
        reason: "Accepted",
        message: if customer_exists {
            format!("{state} order of customer {:?}", customer.name)
        } else {
            format!(
                "{state} order of {:?}, who is not a customer: level {customer_level}, not counted",
                customer.name
            )
        },
    };
    let found = if customer_exists {
        Observation {
            type_: CUSTOMER_FOUND,
            is_true: true,
            reason: "CustomerFound",
            message: format!("customer {:?} exists", customer.name),
        }
    } else {
        Observation {
            type_: CUSTOMER_FOUND,
            is_true: false,
            reason: CUSTOMER_NOT_FOUND,
            message: format!(
                "customer {:?} does not exist in namespace {:?}",
                customer.name, customer.namespace
            ),
        }
    };
    // Kept while the phase stays; whole seconds, as the API server stores it.
    let phase_since = current
        .filter(|s| s.phase == Some(state))
        .and_then(|s| s.phase_since.clone())
        .unwrap_or_else(|| {
            Time(Timestamp::from_second(now.as_second()).unwrap_or(Timestamp::UNIX_EPOCH))
        });
    OrderStatus {
        phase: Some(state),
        phase_since: Some(phase_since),
        customer_level: Some(customer_level.to_owned()),
        observed_generation: generation,
        conditions: [ready, found]
            .map(|observation| conditions::condition(&current, observation, generation, now))
            .into(),
    }
}

/// Whether a status says the order's customer is missing.
fn customer_missing(status: &OrderStatus) -> bool {
    conditions::find(&status.conditions, CUSTOMER_FOUND).is_some_and(|c| c.status == "False")
}

/// A status write an order needs.
struct Write {
    resource_version: String,
    status: OrderStatus,
    /// The status said the customer was missing before.
    was_missing: bool,
    uid: Box<str>,
}

/// Reconciles the order `key` (as the index has it): writes the receipt it should have, if it
/// differs from the one it has as far as this process knows. Ok(Some(wait)) means "look again
/// after `wait`" (a restore may still write its status).
pub async fn reconcile(key: &OrderKey, ctx: &Context) -> Outcome {
    let kind = &ctx.orders;
    let object = key.object_ref();
    let now = Timestamp::now();
    let write = {
        let index = ctx.index();
        let Some(facts) = index.order(key) else {
            debug!("gone before its reconcile");
            return Ok(None);
        };
        let unwritten = facts.seen.status.as_ref().is_none_or(|s| s.phase.is_none());
        if unwritten && let Some(wait) = restore::hold(facts.seen.restored_at, now) {
            debug!(
                ?wait,
                "restored moments ago: its status is the restore's to write first"
            );
            return Ok(Some(wait));
        }
        let (resource_version, current) = match kind
            .writer
            .unseen_write(&object, &facts.seen.resource_version)
        {
            Some((produced, written)) => (
                produced,
                Some(SeenStatus::of(&written, |level| Arc::from(level))),
            ),
            None => (
                facts.seen.resource_version.to_string(),
                facts.seen.status.clone(),
            ),
        };
        let status = desired_status(key, facts, current.as_ref(), &index, &ctx.policy, now);
        match &current {
            Some(current) if current.shows(&status) => None,
            _ => Some(Write {
                resource_version,
                status,
                was_missing: current.and_then(|c| c.condition(CUSTOMER_FOUND)) == Some(false),
                uid: facts.seen.uid.clone(),
            }),
        }
    };
    let Some(write) = write else {
        debug!("status up to date");
        return Ok(None);
    };
    kind.writer
        .write(&object, &write.resource_version, &write.status)
        .await?;
    if customer_missing(&write.status) && !write.was_missing {
        let note = Note {
            type_: EventType::Warning,
            reason: CUSTOMER_NOT_FOUND,
            action: "Attribute".into(),
            note: format!(
                "customer {:?} does not exist; the order counts once it does",
                key.customer.name
            ),
        };
        let regarding = regarding::<Order>(&key.customer.namespace, &key.name, &write.uid);
        if let Err(error) = ctx.events.publish(note, regarding).await {
            warn!(%error, "could not record the CustomerNotFound event");
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{Customer, CustomerSpec, OrderSpec, OrderState};
    use OrderState::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    fn order(name: &str, quantity: i32, state: OrderState) -> Order {
        let mut order = Order::new(
            name,
            OrderSpec {
                customer: "carol".into(),
                product: "Tea".into(),
                quantity,
                state,
            },
        );
        order.metadata.namespace = Some("ns".into());
        order.metadata.uid = Some(format!("uid-{name}"));
        order.metadata.generation = Some(2);
        order
    }

    fn carol() -> Customer {
        let mut customer = Customer::new("carol", CustomerSpec::default());
        customer.metadata.namespace = Some("ns".into());
        customer.metadata.uid = Some("carol-1".into());
        customer
    }

    fn reason<'a>(status: &'a OrderStatus, type_: &str) -> (&'a str, &'a str) {
        let c = conditions::find(&status.conditions, type_).unwrap();
        (c.status.as_str(), c.reason.as_str())
    }

    fn with_status(mut order: Order, status: &OrderStatus) -> Order {
        order.status = Some(status.clone());
        order
    }

    /// The desired status of `order`, as the index holds it, with `current` as its status now.
    fn desired_status(
        order: &Order,
        current: Option<&OrderStatus>,
        index: &Index,
        policy: &LevelPolicy,
        now: Timestamp,
    ) -> OrderStatus {
        let key = OrderKey::of_order(order);
        let facts = index.order(&key).expect("the order is in the index");
        let current = current.map(|s| SeenStatus::of(s, |level| Arc::from(level)));
        super::desired_status(&key, facts, current.as_ref(), index, policy, now)
    }

    #[test]
    fn an_order_of_a_missing_customer_is_accepted_as_iron() {
        let big = order("big", 10, Completed);
        let mut index = Index::default();
        index.apply_order(&big);
        let status = desired_status(&big, None, &index, &LevelPolicy::default(), at(1));
        assert_eq!(status.phase, Some(Completed));
        assert_eq!(status.customer_level.as_deref(), Some("Iron"));
        assert_eq!(reason(&status, READY), ("True", "Accepted"));
        assert_eq!(
            reason(&status, CUSTOMER_FOUND),
            ("False", CUSTOMER_NOT_FOUND)
        );
        assert_eq!(status.observed_generation, Some(2));
        assert!(customer_missing(&status));
    }

    #[test]
    fn the_snapshot_is_the_level_without_the_order_itself() {
        let (big, small) = (order("big", 10, Completed), order("small", 2, Requested));
        let mut index = Index::default();
        index.apply_order(&big);
        index.apply_order(&small);
        index.apply_customer(&carol());
        let policy = LevelPolicy::default();
        let big_status = desired_status(&big, None, &index, &policy, at(1));
        let small_status = desired_status(&small, None, &index, &policy, at(1));
        assert_eq!(big_status.customer_level.as_deref(), Some("Bronze"));
        assert_eq!(small_status.customer_level.as_deref(), Some("Gold"));
        assert_eq!(
            reason(&big_status, CUSTOMER_FOUND),
            ("True", "CustomerFound")
        );
    }

    #[test]
    fn a_snapshot_once_taken_never_changes() {
        let small = order("small", 2, Requested);
        let mut index = Index::default();
        index.apply_order(&order("big", 10, Completed));
        index.apply_order(&small);
        index.apply_customer(&carol());
        let policy = LevelPolicy::default();
        let taken = desired_status(&small, None, &index, &policy, at(1));
        // The operator's own write, not yet seen by the watch: the written snapshot counts.
        index.apply_order(&order("more", 20, Completed));
        let again = desired_status(&small, Some(&taken), &index, &policy, at(2));
        assert_eq!(again.customer_level.as_deref(), Some("Gold"));
        // Seen by the watch: the index keeps it, even against a forged status.
        index.apply_order(&with_status(small.clone(), &taken));
        let mut forged = taken.clone();
        forged.customer_level = Some("Diamond".into());
        index.apply_order(&with_status(small.clone(), &forged));
        let repaired = desired_status(&small, Some(&forged), &index, &policy, at(3));
        assert_eq!(repaired.customer_level.as_deref(), Some("Gold"));
        // The customer is deleted: the order says so and keeps its snapshot.
        index.delete_customer(&carol());
        let orphaned = desired_status(&small, Some(&repaired), &index, &policy, at(4));
        assert_eq!(orphaned.customer_level.as_deref(), Some("Gold"));
        assert_eq!(
            reason(&orphaned, CUSTOMER_FOUND),
            ("False", CUSTOMER_NOT_FOUND)
        );
        assert_eq!(reason(&orphaned, READY), ("True", "Accepted"));
    }

    #[test]
    fn the_phase_mirrors_the_state_whatever_the_status_said() {
        let order = order("o", 1, Requested);
        let mut index = Index::default();
        index.apply_order(&order);
        let forged = OrderStatus {
            phase: Some(Completed),
            ..Default::default()
        };
        let status = desired_status(
            &order,
            Some(&forged),
            &index,
            &LevelPolicy::default(),
            at(1),
        );
        assert_eq!(status.phase, Some(Requested));
    }

    #[test]
    fn the_phase_is_dated_from_when_it_was_first_seen() {
        let mut order = order("o", 1, Requested);
        let mut index = Index::default();
        index.apply_order(&order);
        let policy = LevelPolicy::default();
        let first = desired_status(&order, None, &index, &policy, at(100));
        assert_eq!(first.phase_since.as_ref().unwrap().0, at(100));
        let same = desired_status(&order, Some(&first), &index, &policy, at(200));
        assert_eq!(same.phase_since, first.phase_since);
        order.spec.state = Completed;
        index.apply_order(&order);
        let moved = desired_status(&order, Some(&same), &index, &policy, at(300));
        assert_eq!(moved.phase_since.as_ref().unwrap().0, at(300));
    }

    #[test]
    fn an_unchanged_status_is_equal_to_the_stored_one() {
        let order = order("o", 1, Canceled);
        let mut index = Index::default();
        index.apply_order(&order);
        index.apply_customer(&carol());
        let policy = LevelPolicy::default();
        let first = desired_status(&order, None, &index, &policy, at(1));
        let again = desired_status(&order, Some(&first), &index, &policy, at(500));
        assert_eq!(first, again);
    }
}
