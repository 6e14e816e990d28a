//! Customer reconciler: the status is a function of the customer's orders in the index.

use std::sync::Arc;

use kube::{
    Resource, ResourceExt,
    runtime::{
        controller::Action,
        events::{Event, EventType},
    },
};
use tracing::{debug, info, instrument, warn};

use super::{RESYNC, conditions, context::Context, error::Error, index::CustomerKey};
use crate::crd::{Customer, CustomerStatus};

pub const CONTROLLER: &str = "customer";

/// The status `customer` should have, given its orders.
pub fn desired_status(
    customer: &Customer,
    current: Option<&CustomerStatus>,
    ctx: &Context,
) -> CustomerStatus {
    let key = CustomerKey::of_customer(customer);
    let tally = ctx.index().tally_of(&key, None);
    let level = ctx.policy.level_for(tally.score).to_owned();
    let generation = customer.metadata.generation;
    let previous = current.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let message = format!(
        "score {} from {} completed, {} canceled and {} open orders",
        tally.score, tally.completed, tally.canceled, tally.open
    );
    CustomerStatus {
        score: tally.score,
        level: Some(level),
        completed_orders: tally.completed,
        canceled_orders: tally.canceled,
        open_orders: tally.open,
        observed_generation: generation,
        conditions: vec![conditions::ready(
            previous,
            true,
            "Reconciled",
            message,
            generation,
        )],
    }
}

#[instrument(skip_all, fields(controller = CONTROLLER, namespace = customer.metadata.namespace.as_deref().unwrap_or_default(), name = %customer.name_any()))]
pub async fn reconcile(customer: Arc<Customer>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let result = apply(customer.as_ref(), &ctx).await;
    if result.is_ok() {
        ctx.customer_failures.succeeded(&customer);
    }
    result
}

async fn apply(customer: &Customer, ctx: &Context) -> Result<Action, Error> {
    let current = ctx
        .customer_writes
        .current(customer, customer.status.as_ref());
    let desired = desired_status(customer, current.as_ref(), ctx);
    if current.as_ref() == Some(&desired) {
        debug!("status up to date");
        return Ok(Action::requeue(RESYNC));
    }

    ctx.apply_status(CONTROLLER, customer, &desired, &ctx.customer_writes, false)
        .await?;

    let old_level = current.as_ref().and_then(|s| s.level.as_deref());
    let new_level = desired.level.as_deref().unwrap_or_default();
    if let Some(old_level) = old_level.filter(|old| *old != new_level) {
        info!(
            from = old_level,
            to = new_level,
            score = desired.score,
            "level changed"
        );
        let event = Event {
            type_: EventType::Normal,
            reason: "LevelChanged".into(),
            note: Some(format!(
                "level {old_level} -> {new_level} (score {})",
                desired.score
            )),
            // Naming both levels keeps distinct changes apart in tools that group Events by
            // reason and action.
            action: format!("{old_level}To{new_level}"),
            secondary: None,
        };
        if let Err(error) = ctx.publish(&event, &customer.object_ref(&())).await {
            warn!(%error, "could not record the LevelChanged event");
        }
    }
    Ok(Action::requeue(RESYNC))
}

pub fn error_policy(customer: Arc<Customer>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.report_failure(CONTROLLER, &customer.name_any(), error);
    Action::requeue(ctx.customer_failures.failed(&customer))
}
