//! Customer reconciler: the status is a function of the customer's orders in the index.

use std::{sync::Arc, time::Duration};

use k8s_openapi::jiff::Timestamp;
use kube::{
    Resource, ResourceExt,
    runtime::{controller::Action, events::EventType, reflector::ObjectRef},
};
use tracing::{debug, info, instrument, warn};

use super::{
    conditions::{self, Observation},
    context::Context,
    error::Error,
    index::{CustomerKey, Index},
};
use crate::{
    crd::{Customer, CustomerStatus, READY},
    loyalty::LevelPolicy,
    runtime_ext::Note,
};

pub const CONTROLLER: &str = "customer";

/// The status `customer` should have: its orders' tally under `policy`, computed for its
/// generation. `current` keeps the Ready condition's transition time; `now` is when a new one
/// starts.
pub fn desired_status(
    customer: &Customer,
    current: Option<&CustomerStatus>,
    index: &Index,
    policy: &LevelPolicy,
    now: Timestamp,
) -> CustomerStatus {
    let tally = index.tally_of(&CustomerKey::of_customer(customer), None);
    let generation = customer.metadata.generation;
    let previous = current.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let ready = conditions::condition(
        previous,
        Observation {
            type_: READY,
            is_true: true,
            reason: "Reconciled",
            message: format!(
                "score {} from {} completed, {} canceled and {} open orders",
                tally.score, tally.completed, tally.canceled, tally.open
            ),
        },
        generation,
        now,
    );
    CustomerStatus::new(policy.standing(&tally), generation, vec![ready])
}

#[instrument(skip_all, fields(controller = CONTROLLER, namespace = customer.metadata.namespace.as_deref().unwrap_or_default(), name = %customer.name_any()))]
pub async fn reconcile(customer: Arc<Customer>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let kind = &ctx.customers;
    let current = kind.writer.current(&customer, customer.status.as_ref());
    let desired = desired_status(
        &customer,
        current.status.as_ref(),
        &ctx.index(),
        &ctx.policy,
        Timestamp::now(),
    );
    if current.status.as_ref() != Some(&desired) {
        if let Err(wait) = ctx.customer_pace.take(&customer) {
            debug!(
                ?wait,
                "written often lately; the next write folds this change in"
            );
            return Ok(Action::requeue(wait));
        }
        kind.writer
            .write(
                &ObjectRef::from_obj(&*customer),
                &current.resource_version,
                &desired,
                &ctx.fence,
                &ctx.metrics,
                &ctx.readiness,
            )
            .await?;
        publish_level_change(&customer, current.status.as_ref(), &desired, &ctx).await;
    } else {
        debug!("status up to date");
    }
    kind.backoff.succeeded(&ObjectRef::from_obj(&*customer));
    Ok(Action::await_change())
}

async fn publish_level_change(
    customer: &Customer,
    before: Option<&CustomerStatus>,
    after: &CustomerStatus,
    ctx: &Context,
) {
    let new_level = after.level.as_deref().unwrap_or_default();
    let Some(old_level) = before
        .and_then(|s| s.level.as_deref())
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
    if let Err(error) = ctx.events.publish(note, customer.object_ref(&())).await {
        warn!(%error, "could not record the LevelChanged event");
    }
}

pub fn error_policy(customer: Arc<Customer>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.report_failure(CONTROLLER, &customer.name_any(), error);
    match error {
        // Fresh data or a fresh Lease is on its way; look again soon, without counting a failure.
        Error::NotLeading(_) => Action::requeue(Duration::from_millis(500)),
        _ => Action::requeue(
            ctx.customers
                .backoff
                .failed(&ObjectRef::from_obj(&*customer)),
        ),
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
