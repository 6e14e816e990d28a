//! Whether the caches hold a full, current picture and the operator can do its work: `/readyz`,
//! and the gate that keeps the controllers from acting on a partial picture.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::watch;

/// A failing watch is retried with a backoff of up to about 30 s; without an event since its
/// last error, it counts as failing for this long.
const WATCH_ERROR_HOLD: Duration = Duration::from_secs(40);
/// A refused write (missing RBAC permission) keeps the operator unready this long.
const DENIED_HOLD: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct Readiness {
    inner: Arc<Inner>,
}

struct Inner {
    /// (customers listed, orders listed)
    synced: watch::Sender<(bool, bool)>,
    epoch: Instant,
    seq: AtomicU64,
    customers: WatchHealth,
    orders: WatchHealth,
    denied: Mutex<Option<(Instant, String)>>,
}

/// When the watch last failed and last delivered an event: a sequence number each (0: never),
/// to tell which came last, and the milliseconds since `epoch` of the error.
#[derive(Default)]
struct WatchHealth {
    error_seq: AtomicU64,
    error_at: AtomicU64,
    event_seq: AtomicU64,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                synced: watch::Sender::new((false, false)),
                epoch: Instant::now(),
                seq: AtomicU64::new(0),
                customers: WatchHealth::default(),
                orders: WatchHealth::default(),
                denied: Mutex::new(None),
            }),
        }
    }
}

impl Readiness {
    /// Why the operator is not ready, if it is not.
    pub fn problem(&self) -> Option<String> {
        let (customers, orders) = *self.inner.synced.borrow();
        if !(customers && orders) {
            return Some("caches not synced yet".into());
        }
        for (kind, health) in [
            ("customers", &self.inner.customers),
            ("orders", &self.inner.orders),
        ] {
            if self.failing(health) {
                return Some(format!("watch of {kind} failing"));
            }
        }
        let denied = self.inner.denied.lock().unwrap_or_else(|p| p.into_inner());
        match &*denied {
            Some((at, what)) if at.elapsed() < DENIED_HOLD => {
                Some(format!("permission denied: {what}"))
            }
            _ => None,
        }
    }

    pub fn is_ready(&self) -> bool {
        self.problem().is_none()
    }

    /// Both caches have been listed in full (they may be failing to watch right now).
    pub fn is_synced(&self) -> bool {
        *self.inner.synced.borrow() == (true, true)
    }

    /// Resolves once both caches have been listed in full.
    pub async fn synced(&self) {
        let mut rx = self.inner.synced.subscribe();
        let _ = rx.wait_for(|s| *s == (true, true)).await;
    }

    /// Records a write the API server refused for lack of permission.
    pub fn permission_denied(&self, what: String) {
        *self.inner.denied.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), what));
    }

    pub(crate) fn reset(&self) {
        self.inner.synced.send_replace((false, false));
        for health in [&self.inner.customers, &self.inner.orders] {
            health.error_seq.store(0, Ordering::Relaxed);
            health.event_seq.store(0, Ordering::Relaxed);
        }
    }

    pub(crate) fn customers_synced(&self) {
        self.inner.synced.send_modify(|s| s.0 = true);
        self.customers_event();
    }

    pub(crate) fn orders_synced(&self) {
        self.inner.synced.send_modify(|s| s.1 = true);
        self.orders_event();
    }

    pub(crate) fn customers_event(&self) {
        self.event(&self.inner.customers);
    }

    pub(crate) fn orders_event(&self) {
        self.event(&self.inner.orders);
    }

    pub(crate) fn customers_watch_failed(&self) {
        self.failed(&self.inner.customers);
    }

    pub(crate) fn orders_watch_failed(&self) {
        self.failed(&self.inner.orders);
    }

    fn next_seq(&self) -> u64 {
        self.inner.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn event(&self, health: &WatchHealth) {
        health.event_seq.store(self.next_seq(), Ordering::Relaxed);
    }

    fn failed(&self, health: &WatchHealth) {
        health.error_at.store(self.millis(), Ordering::Relaxed);
        health.error_seq.store(self.next_seq(), Ordering::Relaxed);
    }

    fn millis(&self) -> u64 {
        u64::try_from(self.inner.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn failing(&self, health: &WatchHealth) -> bool {
        let hold = u64::try_from(WATCH_ERROR_HOLD.as_millis()).unwrap_or(u64::MAX);
        let since_error = self
            .millis()
            .saturating_sub(health.error_at.load(Ordering::Relaxed));
        health.error_seq.load(Ordering::Relaxed) > health.event_seq.load(Ordering::Relaxed)
            && since_error < hold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_both_caches_are_listed_and_while_watches_work() {
        let readiness = Readiness::default();
        assert_eq!(
            readiness.problem().as_deref(),
            Some("caches not synced yet")
        );
        readiness.customers_synced();
        assert!(!readiness.is_ready());
        readiness.orders_synced();
        assert!(readiness.is_ready());
        readiness.orders_watch_failed();
        assert_eq!(
            readiness.problem().as_deref(),
            Some("watch of orders failing")
        );
        readiness.orders_event();
        assert!(
            readiness.is_ready(),
            "an event after the error means the watch is back"
        );
        readiness.permission_denied("patch orders/status in ns".into());
        assert_eq!(
            readiness.problem().as_deref(),
            Some("permission denied: patch orders/status in ns")
        );
        readiness.reset();
        assert!(!readiness.is_synced());
    }
}
