//! Conditions in the metav1.Condition shape, so `kubectl wait --for=condition=...`, kstatus and
//! GitOps health checks understand them.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

/// What a condition says, before it gets its transition time.
pub struct Observation<'a> {
    pub type_: &'a str,
    pub is_true: bool,
    pub reason: &'a str,
    pub message: String,
}

/// Since when the previous conditions said what a condition says now, if they did.
pub trait Transitions {
    fn since(&self, type_: &str, is_true: bool) -> Option<Time>;
}

impl Transitions for [Condition] {
    fn since(&self, type_: &str, is_true: bool) -> Option<Time> {
        let status = if is_true { "True" } else { "False" };
        self.iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
    }
}

impl<T: Transitions + ?Sized> Transitions for Option<&T> {
    fn since(&self, type_: &str, is_true: bool) -> Option<Time> {
        self.and_then(|previous| previous.since(type_, is_true))
    }
}

/// The condition for `observation`. It keeps the previous lastTransitionTime while its status
/// stays the same, so an unchanged status compares equal to the stored one and is not written
/// again; a new status gets `now`.
pub fn condition(
    previous: &(impl Transitions + ?Sized),
    observation: Observation<'_>,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if observation.is_true { "True" } else { "False" };
    let last_transition_time = previous
        .since(observation.type_, observation.is_true)
        // Stored times have whole seconds; a fresh one must too, or it would never compare equal.
        .unwrap_or_else(|| {
            Time(Timestamp::from_second(now.as_second()).unwrap_or(Timestamp::UNIX_EPOCH))
        });
    Condition {
        type_: observation.type_.into(),
        status: status.into(),
        reason: observation.reason.into(),
        message: observation.message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// The condition of `type_` in `conditions`, if any.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(previous: &[Condition], is_true: bool, message: &str, now: i64) -> Condition {
        condition(
            previous,
            Observation {
                type_: "Ready",
                is_true,
                reason: "Reconciled",
                message: message.into(),
            },
            Some(1),
            Timestamp::from_millisecond(now).unwrap(),
        )
    }

    #[test]
    fn transition_time_is_kept_while_the_status_stays() {
        let first = ready(&[], true, "score 1", 1_700_000_000_500);
        assert_eq!(first.last_transition_time.0.as_second(), 1_700_000_000);
        assert_eq!(first.last_transition_time.0.subsec_nanosecond(), 0);
        let again = ready(
            std::slice::from_ref(&first),
            true,
            "score 2",
            1_700_000_100_000,
        );
        assert_eq!(first.last_transition_time, again.last_transition_time);
        let flipped = ready(
            std::slice::from_ref(&again),
            false,
            "gone",
            1_700_000_200_000,
        );
        assert_eq!(flipped.last_transition_time.0.as_second(), 1_700_000_200);
        assert_eq!(find(&[flipped], "Ready").unwrap().status, "False");
    }
}
