//! Objects a restore brings back while the operator runs.
//!
//! Velero labels every object it restores with the name of the restore, creates it, and right
//! after writes the status the backup holds (when the backup has statuses), conditional on the
//! resourceVersion it just created. An operator that wrote first would make that write fail,
//! and for an Order take a new level snapshot in place of the one the backup holds: the one
//! thing about an order nothing can reconstruct. So an object restored moments ago whose status
//! nobody has written yet is left alone for a while; and a restored Customer's score is not
//! lowered while the rest of the restore (its orders, its Ledger) may still be on its way.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

/// The label Velero puts on every object it restores.
pub const RESTORE_LABEL: &str = "velero.io/restore-name";

/// How long after a restore created an object the operator waits for the restore to write its
/// status, and holds back a lower score of a restored Customer.
pub const GRACE: Duration = Duration::from_secs(60);

/// How long to leave alone an object a restore created at `restored_at`, at `now`: None once
/// the grace is over, or for an object no restore created.
pub fn hold(restored_at: Option<Timestamp>, now: Timestamp) -> Option<Duration> {
    let created = restored_at?;
    let age: Duration = now
        .duration_since(created)
        .try_into()
        .unwrap_or(Duration::ZERO);
    GRACE.checked_sub(age).filter(|left| !left.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    #[test]
    fn a_restored_object_is_held_for_the_grace_after_its_creation() {
        assert_eq!(hold(Some(at(100)), at(100)), Some(GRACE));
        assert_eq!(
            hold(Some(at(100)), at(130)),
            Some(GRACE - Duration::from_secs(30))
        );
        assert_eq!(hold(Some(at(100)), at(160)), None, "the grace is over");
        assert_eq!(hold(None, at(100)), None, "no restore created it");
    }
}
