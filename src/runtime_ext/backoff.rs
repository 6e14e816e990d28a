use std::{
    hash::{BuildHasher, Hash, RandomState},
    time::Duration,
};

/// Exponential backoff per object: one bad object is retried ever more slowly while the others
/// go on. Each delay is spread over ±25% by a hash of the object and its count of failures
/// (seeded anew in every process), so the objects that failed together in an outage do not all
/// retry at the same instant. The count itself is the caller's to keep (with the rest of what
/// it keeps per object).
pub struct Backoff {
    jitter: RandomState,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            jitter: RandomState::new(),
        }
    }
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(30);

    /// How long to wait before the next try of `key` after its `failures`-th failure in a row.
    pub fn delay(&self, key: &impl Hash, failures: u32) -> Duration {
        let failures = failures.max(1);
        let delay = Self::FIRST
            .saturating_mul(1 << (failures - 1).min(16))
            .min(Self::MAX);
        // A factor in [0.75, 1.25), the same for the same object and count in this process.
        let spread = (self.jitter.hash_one((key, failures)) % 1000) as f64 / 2000.0;
        delay.mul_f64(0.75 + spread)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `delay` is `nominal` spread by at most 25%.
    fn near(delay: Duration, nominal: Duration) -> bool {
        delay >= nominal.mul_f64(0.75) && delay < nominal.mul_f64(1.25)
    }

    #[test]
    fn failures_back_off_exponentially_per_object_up_to_a_cap() {
        let backoff = Backoff::default();
        let delays: Vec<Duration> = (1..=12).map(|n| backoff.delay(&"alice", n)).collect();
        assert!(near(delays[0], Duration::from_millis(250)), "{delays:?}");
        assert!(near(delays[1], Duration::from_millis(500)), "{delays:?}");
        assert!(near(delays[2], Duration::from_secs(1)), "{delays:?}");
        assert!(near(delays[11], Duration::from_secs(30)), "{delays:?}");
    }

    #[test]
    fn objects_that_failed_together_retry_spread_out() {
        let backoff = Backoff::default();
        let delays: std::collections::BTreeSet<Duration> = (0..100)
            .map(|i| backoff.delay(&format!("c{i}"), 1))
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
