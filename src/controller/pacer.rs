//! How often one customer's status is written: a token bucket per customer, kept in the
//! customer's entry of the per-object table.
//!
//! A change is written at once while the customer's bucket has a token, so a customer whose
//! orders change now and then is fresh within one write's time. A busy customer spends its
//! burst, then gets `RATE` writes per second; the changes in between fold into the next write
//! (its reconcile waits for the next token), so it is never more than `1/RATE` behind and its
//! writes do not grow with its order rate.

use std::time::{Duration, Instant};

/// Writes a customer may have at once.
const BURST: f64 = 3.0;
/// Writes per second a customer gets once its burst is spent.
const RATE: f64 = 3.0;

pub struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Takes a token from `bucket` (a full one if there is none yet) for a write at `now`, or says
/// how long until there is one.
pub fn take(bucket: &mut Option<Bucket>, now: Instant) -> Result<(), Duration> {
    let bucket = bucket.get_or_insert(Bucket {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_written_at_once_then_writes_are_paced() {
        let (mut alice, mut bob) = (None, None);
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(take(&mut alice, start), Ok(()));
        }
        let wait = take(&mut alice, start).unwrap_err();
        assert!(wait <= Duration::from_millis(334) && wait > Duration::from_millis(300));
        assert_eq!(take(&mut alice, start + wait), Ok(()));
        // Other customers are not held back.
        assert_eq!(take(&mut bob, start), Ok(()));
        // A quiet second refills the burst.
        let later = start + Duration::from_secs(2);
        for _ in 0..3 {
            assert_eq!(take(&mut alice, later), Ok(()));
        }
    }
}
