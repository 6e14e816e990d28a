//! Order reconciler: accepts spec.state into status.phase and takes the customer-level snapshot.

use std::sync::Arc;

use kube::{
    Resource, ResourceExt,
    runtime::{
        controller::Action,
        events::{Event, EventType},
    },
};
use tracing::{debug, instrument, warn};

use super::{RESYNC, conditions, context::Context, error::Error, index::CustomerKey};
use crate::{
    crd::{Order, OrderStatus},
    loyalty::MISSING_CUSTOMER_LEVEL,
};

pub const CONTROLLER: &str = "order";

pub const CUSTOMER_NOT_FOUND: &str = "CustomerNotFound";

/// The status `order` should have, given its current status and the customers that exist.
pub fn desired_status(order: &Order, current: Option<&OrderStatus>, ctx: &Context) -> OrderStatus {
    let key = CustomerKey::of_order(order);
    let generation = order.metadata.generation;
    let wanted = order.spec.state;
    let accepted = current.and_then(|s| s.phase);
    // The API server refuses forbidden changes of spec.state; this guards against a CRD
    // installed without its rules, so a phase never moves backwards.
    let (phase, transition_refused) = match accepted {
        Some(phase) if !phase.can_become(wanted) => (phase, true),
        _ => (wanted, false),
    };

    let index = ctx.index();
    let customer_exists = index.has_customer(&key);
    let snapshot = current
        .and_then(|s| s.customer_level.as_deref())
        .filter(|level| *level != MISSING_CUSTOMER_LEVEL);
    let customer_level = match snapshot {
        Some(level) => level.to_owned(),
        // Without this order, so the snapshot does not depend on whether the order or the
        // customer status was reconciled first.
        None if customer_exists => ctx
            .policy
            .level_for(index.tally_of(&key, Some(&order.name_any())).score)
            .to_owned(),
        None => MISSING_CUSTOMER_LEVEL.to_owned(),
    };
    drop(index);

    let previous = current.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let ready = if !customer_exists {
        conditions::ready(
            previous,
            false,
            CUSTOMER_NOT_FOUND,
            format!(
                "customer {:?} does not exist in namespace {:?}",
                key.name, key.namespace
            ),
            generation,
        )
    } else if transition_refused {
        conditions::ready(
            previous,
            false,
            "TransitionRefused",
            format!("spec.state cannot change from {phase} to {wanted}; the phase stays {phase}"),
            generation,
        )
    } else {
        conditions::ready(
            previous,
            true,
            "Accepted",
            format!("{phase} order of customer {:?}", key.name),
            generation,
        )
    };

    OrderStatus {
        phase: Some(phase),
        customer_level: Some(customer_level),
        observed_generation: generation,
        conditions: vec![ready],
    }
}

#[instrument(skip_all, fields(controller = CONTROLLER, namespace = order.metadata.namespace.as_deref().unwrap_or_default(), name = %order.name_any()))]
pub async fn reconcile(order: Arc<Order>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let result = apply(order.as_ref(), &ctx).await;
    if result.is_ok() {
        ctx.order_failures.succeeded(&order);
    }
    result
}

async fn apply(order: &Order, ctx: &Context) -> Result<Action, Error> {
    let current = ctx.order_writes.current(order, order.status.as_ref());
    let desired = desired_status(order, current.as_ref(), ctx);
    if current.as_ref() == Some(&desired) {
        debug!("status up to date");
        return Ok(Action::requeue(RESYNC));
    }

    // Conditional on the resourceVersion: if the cache is behind (someone else changed the
    // order), the write is refused and retried with fresh data instead of overwriting a
    // snapshot taken meanwhile.
    ctx.apply_status(CONTROLLER, order, &desired, &ctx.order_writes, true)
        .await?;

    let was_missing = current
        .as_ref()
        .and_then(|s| conditions::ready_reason(&s.conditions))
        == Some(CUSTOMER_NOT_FOUND);
    let is_missing = conditions::ready_reason(&desired.conditions) == Some(CUSTOMER_NOT_FOUND);
    if is_missing && !was_missing {
        let event = Event {
            type_: EventType::Warning,
            reason: CUSTOMER_NOT_FOUND.into(),
            note: Some(format!(
                "customer {:?} does not exist; the order counts once it does",
                order.spec.customer
            )),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(error) = ctx.publish(&event, &order.object_ref(&())).await {
            warn!(%error, "could not record the CustomerNotFound event");
        }
    }
    Ok(Action::requeue(RESYNC))
}

pub fn error_policy(order: Arc<Order>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.report_failure(CONTROLLER, &order.name_any(), error);
    Action::requeue(ctx.order_failures.failed(&order))
}
