use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::Mutex,
    time::Duration,
};

/// Consecutive failed reconciles per object, for exponential backoff: one bad object is retried
/// ever more slowly while the others go on. Each delay is spread over ±25% by a hash of the
/// object and its count of failures (seeded anew in every process), so the objects that failed
/// together in an outage do not all retry at the same instant.
///
/// kube-runtime's `error_policy` is not told about successes, so it cannot keep per-object
/// backoff state by itself (kube-rs/kube#1916); the reconcilers call `succeeded`.
pub struct Backoff<T> {
    failures: Mutex<HashMap<T, u32>>,
    jitter: RandomState,
}

impl<T> Default for Backoff<T> {
    fn default() -> Self {
        Self {
            failures: Mutex::default(),
            jitter: RandomState::new(),
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
        let delay = Self::FIRST
            .saturating_mul(1 << (*count - 1).min(16))
            .min(Self::MAX);
        // A factor in [0.75, 1.25), the same for the same object and count in this process.
        let spread = (self.jitter.hash_one((key, *count)) % 1000) as f64 / 2000.0;
        delay.mul_f64(0.75 + spread)
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

    fn customer(name: &str) -> kube::runtime::reflector::ObjectRef<Customer> {
        let mut customer = Customer::new(name, CustomerSpec::default());
        customer.metadata.namespace = Some("ns".into());
        kube::runtime::reflector::ObjectRef::from_obj(&customer)
    }

    /// Whether `delay` is `nominal` spread by at most 25%.
    fn near(delay: Duration, nominal: Duration) -> bool {
        delay >= nominal.mul_f64(0.75) && delay < nominal.mul_f64(1.25)
    }

    #[test]
    fn failures_back_off_exponentially_per_object_up_to_a_cap() {
        let backoff = Backoff::default();
        let alice = customer("alice");
        let delays: Vec<Duration> = (0..12).map(|_| backoff.failed(&alice)).collect();
        assert!(near(delays[0], Duration::from_millis(250)), "{delays:?}");
        assert!(near(delays[1], Duration::from_millis(500)), "{delays:?}");
        assert!(near(delays[2], Duration::from_secs(1)), "{delays:?}");
        assert!(near(delays[11], Duration::from_secs(30)), "{delays:?}");
        backoff.succeeded(&alice);
        let again = backoff.failed(&alice);
        assert!(near(again, Duration::from_millis(250)), "{again:?}");
    }

    #[test]
    fn objects_that_failed_together_retry_spread_out() {
        let backoff = Backoff::default();
        let delays: std::collections::BTreeSet<Duration> = (0..100)
            .map(|i| backoff.failed(&customer(&format!("c{i}"))))
            .collect();
        // 100 objects failing at once, over 250 ms ± 25%: far from one instant.
        assert!(delays.len() > 50, "{} distinct delays", delays.len());
        let (first, last) = (delays.first().unwrap(), delays.last().unwrap());
        assert!(
            *last - *first > Duration::from_millis(100),
            "{first:?}..{last:?}"
        );
    }
}
