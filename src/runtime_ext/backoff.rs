use std::{collections::HashMap, sync::Mutex, time::Duration};

/// Consecutive failed reconciles per object, for exponential backoff: one bad object is retried
/// ever more slowly while the others go on.
///
/// kube-runtime's `error_policy` is not told about successes, so it cannot keep per-object
/// backoff state by itself (kube-rs/kube#1916); the reconcilers call `succeeded`.
pub struct Backoff<T> {
    failures: Mutex<HashMap<T, u32>>,
}

impl<T> Default for Backoff<T> {
    fn default() -> Self {
        Self {
            failures: Mutex::default(),
        }
    }
}

impl<T: Clone + Eq + std::hash::Hash> Backoff<T> {
    const FIRST: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(30);

    /// Records a failure and returns how long to wait before the next try.
    pub fn failed(&self, key: &T) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let count = failures.entry(key.clone()).or_default();
        *count = count.saturating_add(1);
        Self::FIRST
            .saturating_mul(1 << (*count - 1).min(16))
            .min(Self::MAX)
    }

    pub fn succeeded(&self, key: &T) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if !failures.is_empty() {
            failures.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{Customer, CustomerSpec};

    #[test]
    fn failures_back_off_exponentially_per_object_up_to_a_cap() {
        let backoff = Backoff::<kube::runtime::reflector::ObjectRef<Customer>>::default();
        let mut alice = Customer::new("alice", CustomerSpec::default());
        alice.metadata.namespace = Some("ns".into());
        let alice = kube::runtime::reflector::ObjectRef::from_obj(&alice);
        let delays: Vec<Duration> = (0..12).map(|_| backoff.failed(&alice)).collect();
        assert_eq!(delays[0], Duration::from_millis(250));
        assert_eq!(delays[1], Duration::from_millis(500));
        assert_eq!(delays[2], Duration::from_secs(1));
        assert_eq!(delays[11], Duration::from_secs(30));
        backoff.succeeded(&alice);
        assert_eq!(backoff.failed(&alice), Duration::from_millis(250));
    }
}
