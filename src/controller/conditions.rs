//! The `Ready` condition in the metav1.Condition shape, so `kubectl wait --for=condition=Ready`
//! and GitOps health checks understand it.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

use crate::crd::READY;

/// A Ready condition that keeps the previous lastTransitionTime while its status stays the
/// same, so an unchanged status compares equal to the stored one and is not written again.
pub fn ready(
    previous: &[Condition],
    is_ready: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> Condition {
    let status = if is_ready { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == READY && c.status == status)
        .map(|c| c.last_transition_time.clone())
        // Stored times have whole seconds; a fresh one must too, or it would never compare equal.
        .unwrap_or_else(|| {
            Time(
                Timestamp::from_second(Timestamp::now().as_second())
                    .unwrap_or(Timestamp::UNIX_EPOCH),
            )
        });
    Condition {
        type_: READY.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// The reason of the Ready condition in `conditions`, if any.
pub fn ready_reason(conditions: &[Condition]) -> Option<&str> {
    conditions
        .iter()
        .find(|c| c.type_ == READY)
        .map(|c| c.reason.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_is_kept_while_the_status_stays() {
        let first = ready(&[], true, "Reconciled", "score 1".into(), Some(1));
        let again = ready(
            std::slice::from_ref(&first),
            true,
            "Reconciled",
            "score 2".into(),
            Some(1),
        );
        assert_eq!(first.last_transition_time, again.last_transition_time);
        assert_eq!(ready_reason(&[again]), Some("Reconciled"));
        assert_eq!(first.last_transition_time.0.subsec_nanosecond(), 0);
    }
}
