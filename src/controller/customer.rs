//! Customer reconciler: the status is a function of the customer's orders in the index. It
//! reads the customer from the index too (the operator keeps no cache of whole Customers).

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::EventType;
use tracing::{debug, info, warn};

pub use super::seen::SETTLED_HISTORY_MISSING;
use super::{
    conditions::{self, Observation},
    context::Context,
    error::Outcome,
    index::{CustomerKey, Index},
    restore,
    seen::SeenCustomerStatus,
};
use crate::{
    crd::{Customer, CustomerStatus, READY, SettledHistory},
    loyalty::LevelPolicy,
    runtime_ext::{Note, regarding},
};

/// The status the customer `key` (at `generation`) should have: its orders' tally (and its
/// Ledger's) under `policy`. `current` keeps the Ready condition's transition time; `now` is
/// when a new one starts.
pub fn desired_status(
    key: &CustomerKey,
    generation: Option<i64>,
    current: Option<&SeenCustomerStatus>,
    index: &Index,
    policy: &LevelPolicy,
    now: Timestamp,
) -> CustomerStatus {
    let tally = index.tally_of(key, None);
    let missing = index.settled_history_missing(key);
    let observation = match missing {
        None => Observation {
            type_: READY,
            is_true: true,
            reason: "Reconciled",
            message: format!(
                "score {} from {} completed, {} canceled and {} open orders",
                tally.score, tally.completed, tally.canceled, tally.open
            ),
        },
        Some(last_seen) => Observation {
            type_: READY,
            is_true: false,
            reason: SETTLED_HISTORY_MISSING,
            message: format!(
                "the Ledger {}/{} is missing: score {} counts the settled history last seen \
                 ({} points from {} completed and {} canceled orders) until it is restored",
                key.namespace,
                key.name,
                tally.score,
                last_seen.score,
                last_seen.completed,
                last_seen.canceled
            ),
        },
    };
    let ready = conditions::condition(&current, observation, generation, now);
    let mut status = policy.standing(&tally).status(generation, vec![ready]);
    status.settled = index
        .settled_of(key)
        .or(missing)
        .map(|settled| SettledHistory {
            score: settled.score,
            completed_orders: settled.completed,
            canceled_orders: settled.canceled,
        });
    status
}

/// Whether `status` says the customer's settled history is missing.
pub fn settled_history_missing(status: &CustomerStatus) -> bool {
    conditions::find(&status.conditions, READY).is_some_and(|c| c.reason == SETTLED_HISTORY_MISSING)
}

/// A status write a customer needs.
struct Write {
    resource_version: String,
    status: CustomerStatus,
    /// The level it showed before, and whether it said its settled history was missing.
    level_before: Option<Arc<str>>,
    was_missing: bool,
    uid: Box<str>,
}

/// Reconciles the customer `key` (as the index has it): writes the status it should have, if
/// it differs from the one it has as far as this process knows. Ok(Some(wait)) means "look
/// again after `wait`".
pub async fn reconcile(key: &CustomerKey, ctx: &Context) -> Outcome {
    let kind = &ctx.customers;
    let object = key.customer_ref();
    let now = Timestamp::now();
    let write = {
        let index = ctx.index();
        let Some(seen) = index.customer(key) else {
            debug!("gone before its reconcile");
            return Ok(None);
        };
        let (resource_version, current) =
            match kind.writer.unseen_write(&object, &seen.resource_version) {
                Some((produced, written)) => (
                    produced,
                    Some(SeenCustomerStatus::of(&written, |level| Arc::from(level))),
                ),
                None => (seen.resource_version.to_string(), seen.status.clone()),
            };
        let desired = desired_status(
            key,
            seen.generation,
            current.as_ref(),
            &index,
            &ctx.policy,
            now,
        );
        if current.as_ref().is_some_and(|c| c.shows(&desired)) {
            debug!("status up to date");
            return Ok(None);
        }
        if let Some(wait) = restore::hold(seen.restored_at, now) {
            let shown = current.as_ref().filter(|s| s.level.is_some());
            if shown.is_none_or(|s| desired.score < s.score) {
                debug!(
                    ?wait,
                    "restored moments ago: its status is the restore's, and its score is not \
                     lowered while the rest of the restore may be on its way"
                );
                return Ok(Some(wait));
            }
        }
        Write {
            resource_version,
            status: desired,
            level_before: current.as_ref().and_then(|c| c.level.clone()),
            was_missing: current.is_some_and(|c| c.settled_history_missing),
            uid: seen.uid.clone(),
        }
    };
    if let Err(wait) = kind.pace(&object) {
        debug!(
            ?wait,
            "written often lately; the next write folds this change in"
        );
        return Ok(Some(wait));
    }
    kind.writer
        .write(&object, &write.resource_version, &write.status)
        .await?;
    publish_level_change(key, &write, ctx).await;
    publish_missing_history(key, &write, ctx).await;
    Ok(None)
}

async fn publish_level_change(key: &CustomerKey, write: &Write, ctx: &Context) {
    let after = &write.status;
    let new_level = after.level.as_deref().unwrap_or_default();
    let Some(old_level) = write
        .level_before
        .as_deref()
        .filter(|old| *old != new_level)
    else {
        return;
    };
    info!(
        from = old_level,
        to = new_level,
        score = after.score,
        "level changed"
    );
    let note = Note {
        type_: EventType::Normal,
        reason: "LevelChanged",
        // Naming both levels keeps distinct changes apart in tools that group Events by
        // reason and action.
        action: format!("{old_level}To{new_level}"),
        note: format!("level {old_level} -> {new_level} (score {})", after.score),
    };
    let regarding = regarding::<Customer>(&key.namespace, &key.name, &write.uid);
    if let Err(error) = ctx.events.publish(note, regarding).await {
        warn!(%error, "could not record the LevelChanged event");
    }
}

/// One Warning Event when a customer's settled history goes missing.
async fn publish_missing_history(key: &CustomerKey, write: &Write, ctx: &Context) {
    if !settled_history_missing(&write.status) || write.was_missing {
        return;
    }
    warn!("the customer's Ledger is missing; its settled history counts as last seen");
    let message = conditions::find(&write.status.conditions, READY)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    let note = Note {
        type_: EventType::Warning,
        reason: SETTLED_HISTORY_MISSING,
        action: "Count".into(),
        note: message,
    };
    let regarding = regarding::<Customer>(&key.namespace, &key.name, &write.uid);
    if let Err(error) = ctx.events.publish(note, regarding).await {
        warn!(%error, "could not record the SettledHistoryMissing event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        crd::{CustomerSpec, Order, OrderSpec, OrderState},
        loyalty::LevelPolicy,
    };

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    fn alice(generation: i64) -> Customer {
        let mut customer = Customer::new("alice", CustomerSpec::default());
        customer.metadata.namespace = Some("ns".into());
        customer.metadata.generation = Some(generation);
        customer
    }

    fn order(name: &str, quantity: i32, state: OrderState) -> Order {
        let mut order = Order::new(
            name,
            OrderSpec {
                customer: "alice".into(),
                product: "Mocha".into(),
                quantity,
                state,
            },
        );
        order.metadata.namespace = Some("ns".into());
        order
    }

    /// The desired status of `customer`, with `current` as its status now.
    fn desired_status(
        customer: &Customer,
        current: Option<&CustomerStatus>,
        index: &Index,
        policy: &LevelPolicy,
        now: Timestamp,
    ) -> CustomerStatus {
        let key = CustomerKey::of_customer(customer);
        let current = current.map(|s| SeenCustomerStatus::of(s, |level| Arc::from(level)));
        let generation = customer.metadata.generation;
        super::desired_status(&key, generation, current.as_ref(), index, policy, now)
    }

    fn index_of(orders: &[Order]) -> Index {
        let mut index = Index::default();
        for order in orders {
            index.apply_order(order);
        }
        index
    }

    #[test]
    fn the_status_shows_the_tally_of_the_customers_orders() {
        use OrderState::*;
        let index = index_of(&[
            order("a", 4, Completed),
            order("b", 3, Completed),
            order("c", 5, Canceled),
            order("d", 2, Requested),
        ]);
        let status = desired_status(&alice(3), None, &index, &LevelPolicy::default(), at(100));
        assert_eq!(status.score, 7);
        assert_eq!(status.level.as_deref(), Some("Silver"));
        assert_eq!(status.next_level.as_deref(), Some("Gold"));
        assert_eq!(status.points_to_next_level, Some(3));
        assert_eq!(
            (
                status.completed_orders,
                status.canceled_orders,
                status.open_orders
            ),
            (2, 1, 1)
        );
        assert_eq!(status.observed_generation, Some(3));
        let ready = conditions::find(&status.conditions, READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "Reconciled")
        );
        assert_eq!(
            ready.message,
            "score 7 from 2 completed, 1 canceled and 1 open orders"
        );
        assert_eq!(ready.last_transition_time.0, at(100));
    }

    #[test]
    fn an_unchanged_status_is_equal_to_the_stored_one_whatever_the_time() {
        let index = index_of(&[order("a", 20, OrderState::Completed)]);
        let policy = LevelPolicy::default();
        let first = desired_status(&alice(1), None, &index, &policy, at(100));
        assert_eq!(first.next_level, None, "Diamond is the top");
        let again = desired_status(&alice(1), Some(&first), &index, &policy, at(900));
        assert_eq!(first, again);
    }

    fn ledger(score: i64, completed: i64, canceled: i64) -> crate::crd::Ledger {
        let mut ledger = crate::crd::Ledger::new(
            "alice",
            crate::crd::LedgerSpec {
                score,
                completed_orders: completed,
                canceled_orders: canceled,
                ..Default::default()
            },
        );
        ledger.metadata.namespace = Some("ns".into());
        ledger
    }

    #[test]
    fn a_missing_ledger_keeps_the_settled_history_last_seen_and_says_so() {
        let policy = LevelPolicy::default();
        let mut index = index_of(&[order("a", 2, OrderState::Completed)]);
        index.apply_ledger(&ledger(12, 4, 1));
        let mut customer = alice(1);
        index.apply_customer(&customer);
        let exact = desired_status(&customer, None, &index, &policy, at(100));
        assert_eq!(
            (exact.score, exact.completed_orders, exact.canceled_orders),
            (14, 5, 1)
        );
        assert_eq!(
            exact.settled,
            Some(SettledHistory {
                score: 12,
                completed_orders: 4,
                canceled_orders: 1
            })
        );
        assert!(!settled_history_missing(&exact));
        // The operator's status is seen; then the Ledger goes (not restored, or deleted).
        customer.status = Some(exact.clone());
        index.apply_customer(&customer);
        index.delete_ledger(&ledger(12, 4, 1));
        let held = desired_status(&customer, Some(&exact), &index, &policy, at(200));
        assert_eq!(
            (held.score, held.level.as_deref()),
            (14, Some("Gold")),
            "not lowered"
        );
        assert_eq!(held.settled, exact.settled, "the history last seen");
        assert!(settled_history_missing(&held));
        let ready = conditions::find(&held.conditions, READY).unwrap();
        assert_eq!(ready.status, "False");
        assert!(
            ready.message.contains("ns/alice is missing"),
            "{}",
            ready.message
        );
        assert_eq!(ready.last_transition_time.0, at(200));
        // Back: exact again, from the Ledger.
        index.apply_ledger(&ledger(12, 4, 1));
        let back = desired_status(&customer, Some(&held), &index, &policy, at(300));
        assert_eq!(back.score, 14);
        assert!(!settled_history_missing(&back));
    }

    #[test]
    fn a_customer_without_ledger_or_settled_history_is_not_missing_anything() {
        let index = index_of(&[order("a", 2, OrderState::Completed)]);
        let status = desired_status(&alice(1), None, &index, &LevelPolicy::default(), at(1));
        assert_eq!(status.settled, None);
        assert!(!settled_history_missing(&status));
    }

    #[test]
    fn a_customer_without_orders_is_at_the_first_level() {
        let status = desired_status(
            &alice(1),
            None,
            &Index::default(),
            &"Regular=0,VIP=8".parse().unwrap(),
            at(1),
        );
        assert_eq!(status.level.as_deref(), Some("Regular"));
        assert_eq!(status.points_to_next_level, Some(8));
    }
}
