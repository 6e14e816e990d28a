//! What the operator keeps of each Order and each Customer in place of a cache of whole
//! objects: its identity, and of its status only what the reconcilers and settlement read. A
//! whole Order in a reflector store (metadata, spec, a status with two conditions, and the
//! store's key) costs about 1.7 KiB; this, about a quarter of that, so memory stays lean at
//! 100,000 orders (and a whole Customer about 1.3 KiB, against a few hundred bytes).
//!
//! The reconcilers never need the stored status itself: they compare the status they compute
//! with a digest of the stored one, and carry over the phase's and the conditions' times.

use std::{
    hash::{DefaultHasher, Hasher},
    sync::Arc,
};

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

use serde::Serialize;

use super::conditions::{self, Transitions};
use crate::crd::{CUSTOMER_FOUND, CustomerStatus, OrderState, OrderStatus, READY};

/// The Ready reason of a customer whose Ledger is missing while its status shows settled
/// history: the score counts that history as last seen, not lowered, until the Ledger is back.
pub const SETTLED_HISTORY_MISSING: &str = "SettledHistoryMissing";

/// An Order's identity and status as the watch last showed them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenOrder {
    pub uid: Box<str>,
    pub resource_version: Box<str>,
    pub generation: Option<i64>,
    /// Declared in Git (applied with kubectl, Argo CD, Flux or Helm): never settled.
    pub declared: bool,
    /// Deleted, held by someone's finalizer.
    pub deleting: bool,
    /// When a restore created it (Velero's label), if one did.
    pub restored_at: Option<Timestamp>,
    pub status: Option<SeenStatus>,
}

/// What the reconcilers read of an Order's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenStatus {
    pub phase: Option<OrderState>,
    pub phase_since: Option<Time>,
    pub observed_generation: Option<i64>,
    pub customer_level: Option<Arc<str>>,
    /// The Ready and the CustomerFound condition: true or false (another status counts as
    /// none), and since when.
    conditions: [Option<(bool, Time)>; 2],
    digest: u64,
}

const TYPES: [&str; 2] = [READY, CUSTOMER_FOUND];

impl SeenStatus {
    /// Keeps what counts of `status`; `intern` shares level names between orders.
    pub fn of(status: &OrderStatus, intern: impl FnOnce(&str) -> Arc<str>) -> Self {
        let condition = |type_: &str| truth(conditions::find(&status.conditions, type_)?);
        Self {
            phase: status.phase,
            phase_since: status.phase_since.clone(),
            observed_generation: status.observed_generation,
            customer_level: status.customer_level.as_deref().map(intern),
            conditions: TYPES.map(condition),
            digest: digest(status),
        }
    }

    /// Whether this is `status`, field for field (as far as a 64-bit digest tells).
    pub fn shows(&self, status: &OrderStatus) -> bool {
        self.digest == digest(status)
    }

    /// Whether the condition of `type_` is true, if the status has it.
    pub fn condition(&self, type_: &str) -> Option<bool> {
        let at = TYPES.iter().position(|t| *t == type_)?;
        self.conditions[at].as_ref().map(|(is_true, _)| *is_true)
    }
}

impl Transitions for SeenStatus {
    fn since(&self, type_: &str, is_true: bool) -> Option<Time> {
        let at = TYPES.iter().position(|t| *t == type_)?;
        match &self.conditions[at] {
            Some((was, since)) if *was == is_true => Some(since.clone()),
            _ => None,
        }
    }
}

/// A Customer's identity and status as the watch last showed them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenCustomer {
    pub uid: Box<str>,
    pub resource_version: Box<str>,
    pub generation: Option<i64>,
    /// When a restore created it (Velero's label), if one did.
    pub restored_at: Option<Timestamp>,
    pub status: Option<SeenCustomerStatus>,
}

/// What the customer reconciler and the metrics read of a Customer's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenCustomerStatus {
    pub score: i64,
    /// The level it shows, if the operator wrote one.
    pub level: Option<Arc<str>>,
    /// Its Ready condition says the customer's Ledger is missing.
    pub settled_history_missing: bool,
    /// The Ready condition: true or false (another status counts as none), and since when.
    ready: Option<(bool, Time)>,
    digest: u64,
}

impl SeenCustomerStatus {
    /// Keeps what counts of `status`; `intern` shares level names between customers.
    pub fn of(status: &CustomerStatus, intern: impl FnOnce(&str) -> Arc<str>) -> Self {
        let ready = conditions::find(&status.conditions, READY);
        Self {
            score: status.score,
            level: status.level.as_deref().map(intern),
            settled_history_missing: ready.is_some_and(|c| c.reason == SETTLED_HISTORY_MISSING),
            ready: ready.and_then(truth),
            digest: digest(status),
        }
    }

    /// Whether this is `status`, field for field (as far as a 64-bit digest tells).
    pub fn shows(&self, status: &CustomerStatus) -> bool {
        self.digest == digest(status)
    }
}

impl Transitions for SeenCustomerStatus {
    fn since(&self, type_: &str, is_true: bool) -> Option<Time> {
        match &self.ready {
            Some((was, since)) if type_ == READY && *was == is_true => Some(since.clone()),
            _ => None,
        }
    }
}

/// Whether `condition` is true or false (another status counts as neither), and since when.
fn truth(condition: &Condition) -> Option<(bool, Time)> {
    let is_true = match condition.status.as_str() {
        "True" => true,
        "False" => false,
        _ => return None,
    };
    Some((is_true, condition.last_transition_time.clone()))
}

/// A digest of every field of `status` (those the operator does not know are dropped when it
/// is read, as in a comparison of the typed objects).
fn digest(status: &impl Serialize) -> u64 {
    let mut hasher = DefaultHasher::new();
    // Serialising a typed status cannot fail.
    hasher.write(&serde_json::to_vec(status).unwrap_or_default());
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Condition, jiff::Timestamp};

    use super::*;

    fn time(second: i64) -> Time {
        Time(Timestamp::from_second(second).unwrap())
    }

    fn condition(type_: &str, status: &str, since: i64) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: "R".into(),
            message: "m".into(),
            observed_generation: Some(1),
            last_transition_time: time(since),
        }
    }

    fn status() -> OrderStatus {
        OrderStatus {
            phase: Some(OrderState::Completed),
            phase_since: Some(time(5)),
            customer_level: Some("Gold".into()),
            observed_generation: Some(1),
            conditions: vec![
                condition(READY, "True", 10),
                condition(CUSTOMER_FOUND, "False", 20),
            ],
        }
    }

    #[test]
    fn it_keeps_what_the_reconcilers_read() {
        let seen = SeenStatus::of(&status(), |level| Arc::from(level));
        assert_eq!(seen.phase, Some(OrderState::Completed));
        assert_eq!(seen.customer_level.as_deref(), Some("Gold"));
        assert_eq!(seen.condition(READY), Some(true));
        assert_eq!(seen.condition(CUSTOMER_FOUND), Some(false));
        assert_eq!(seen.since(READY, true), Some(time(10)));
        assert_eq!(seen.since(READY, false), None, "a new status starts anew");
        assert_eq!(seen.since(CUSTOMER_FOUND, false), Some(time(20)));
        assert_eq!(seen.since("Other", true), None);
    }

    #[test]
    fn any_changed_field_shows_as_a_different_status() {
        let seen = SeenStatus::of(&status(), |level| Arc::from(level));
        assert!(seen.shows(&status()));
        let mut forged = status();
        forged.conditions[1].message = "forged".into();
        assert!(!seen.shows(&forged));
        let mut forged = status();
        forged.conditions.reverse();
        assert!(!seen.shows(&forged));
        let mut forged = status();
        forged.customer_level = Some("Diamond".into());
        assert!(!seen.shows(&forged));
    }

    fn customer_status() -> CustomerStatus {
        CustomerStatus {
            score: 14,
            level: Some("Gold".into()),
            completed_orders: 5,
            conditions: vec![Condition {
                reason: SETTLED_HISTORY_MISSING.into(),
                ..condition(READY, "False", 30)
            }],
            ..CustomerStatus::default()
        }
    }

    #[test]
    fn a_customer_keeps_what_its_reconciler_and_the_metrics_read() {
        let seen = SeenCustomerStatus::of(&customer_status(), |level| Arc::from(level));
        assert_eq!(seen.score, 14);
        assert_eq!(seen.level.as_deref(), Some("Gold"));
        assert!(seen.settled_history_missing);
        assert_eq!(seen.since(READY, false), Some(time(30)));
        assert_eq!(seen.since(READY, true), None, "a new status starts anew");
        assert_eq!(seen.since(CUSTOMER_FOUND, false), None);
        let mut reconciled = customer_status();
        reconciled.conditions[0].reason = "Reconciled".into();
        let seen = SeenCustomerStatus::of(&reconciled, |level| Arc::from(level));
        assert!(!seen.settled_history_missing);
    }

    #[test]
    fn any_changed_field_of_a_customer_shows_as_a_different_status() {
        let seen = SeenCustomerStatus::of(&customer_status(), |level| Arc::from(level));
        assert!(seen.shows(&customer_status()));
        let mut forged = customer_status();
        forged.conditions[0].message = "forged".into();
        assert!(!seen.shows(&forged));
        let mut forged = customer_status();
        forged.completed_orders = 6;
        assert!(!seen.shows(&forged));
        let mut forged = customer_status();
        forged.points_to_next_level = Some(1);
        assert!(!seen.shows(&forged));
    }

    #[test]
    fn an_unknown_condition_status_counts_as_none() {
        let mut odd = status();
        odd.conditions[0].status = "Unknown".into();
        let seen = SeenStatus::of(&odd, |level| Arc::from(level));
        assert_eq!(seen.condition(READY), None);
        assert_eq!(seen.since(READY, true), None);
    }
}
