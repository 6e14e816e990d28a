//! How often one customer's status is written: a token bucket per customer.
//!
//! A change is written at once while the customer's bucket has a token, so a customer whose
//! orders change now and then is fresh within one write's time. A busy customer spends its
//! burst, then gets `RATE` writes per second; the changes in between fold into the next write
//! (its reconcile waits for the next token), so it is never more than `1/RATE` behind and its
//! writes do not grow with its order rate.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use kube::{Resource, runtime::reflector::ObjectRef};

/// Writes a customer may have at once.
const BURST: f64 = 3.0;
/// Writes per second a customer gets once its burst is spent.
const RATE: f64 = 3.0;

pub struct Pacer<K: Resource> {
    buckets: Mutex<HashMap<ObjectRef<K>, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl<K: Resource> Default for Pacer<K> {
    fn default() -> Self {
        Self {
            buckets: Mutex::default(),
        }
    }
}

impl<K: Resource<DynamicType = ()>> Pacer<K> {
    /// Takes a token for a write to `obj`, or says how long until there is one.
    pub fn take(&self, obj: &K) -> Result<(), Duration> {
        self.take_at(ObjectRef::from_obj(obj), Instant::now())
    }

    fn take_at(&self, key: ObjectRef<K>, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: BURST,
            at: now,
        });
        let refilled = now.saturating_duration_since(bucket.at).as_secs_f64() * RATE;
        bucket.tokens = (bucket.tokens + refilled).min(BURST);
        bucket.at = now;
        // A whole token, give or take the rounding of the refill (else a wait of "0 s" follows).
        if bucket.tokens >= 1.0 - 1e-6 {
            bucket.tokens = (bucket.tokens - 1.0).max(0.0);
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / RATE))
        }
    }

    /// Forgets a deleted object.
    pub fn forget(&self, obj: &K) {
        self.buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ObjectRef::from_obj(obj));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Customer;

    #[test]
    fn a_burst_is_written_at_once_then_writes_are_paced() {
        let pacer = Pacer::<Customer>::default();
        let key = || ObjectRef::new("alice").within("ns");
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(pacer.take_at(key(), start), Ok(()));
        }
        let wait = pacer.take_at(key(), start).unwrap_err();
        assert!(wait <= Duration::from_millis(334) && wait > Duration::from_millis(300));
        assert_eq!(pacer.take_at(key(), start + wait), Ok(()));
        // Other customers are not held back.
        assert_eq!(
            pacer.take_at(ObjectRef::new("bob").within("ns"), start),
            Ok(())
        );
        // A quiet second refills the burst.
        let later = start + Duration::from_secs(2);
        for _ in 0..3 {
            assert_eq!(pacer.take_at(key(), later), Ok(()));
        }
    }
}
