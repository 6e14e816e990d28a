//! Whether the caches hold a full, current picture: `/readyz`, and the gate that keeps the
//! controllers from acting on a partial one.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use tokio::sync::watch;

#[derive(Clone)]
pub struct Readiness {
    inner: Arc<Inner>,
}

struct Inner {
    /// (customers listed, orders listed)
    synced: watch::Sender<(bool, bool)>,
    customers_watch_ok: AtomicBool,
    orders_watch_ok: AtomicBool,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                synced: watch::Sender::new((false, false)),
                customers_watch_ok: AtomicBool::new(true),
                orders_watch_ok: AtomicBool::new(true),
            }),
        }
    }
}

impl Readiness {
    /// Both caches hold a full list and neither watch is failing right now.
    pub fn is_ready(&self) -> bool {
        *self.inner.synced.borrow() == (true, true)
            && self.inner.customers_watch_ok.load(Ordering::Relaxed)
            && self.inner.orders_watch_ok.load(Ordering::Relaxed)
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

    pub(crate) fn reset(&self) {
        self.inner.synced.send_replace((false, false));
        self.inner.customers_watch_ok.store(true, Ordering::Relaxed);
        self.inner.orders_watch_ok.store(true, Ordering::Relaxed);
    }

    pub(crate) fn customers_synced(&self) {
        self.inner.synced.send_modify(|s| s.0 = true);
        self.customers_watch_ok();
    }

    pub(crate) fn orders_synced(&self) {
        self.inner.synced.send_modify(|s| s.1 = true);
        self.orders_watch_ok();
    }

    pub(crate) fn customers_watch_ok(&self) {
        self.inner.customers_watch_ok.store(true, Ordering::Relaxed);
    }

    pub(crate) fn orders_watch_ok(&self) {
        self.inner.orders_watch_ok.store(true, Ordering::Relaxed);
    }

    pub(crate) fn customers_watch_failed(&self) {
        self.inner
            .customers_watch_ok
            .store(false, Ordering::Relaxed);
    }

    pub(crate) fn orders_watch_failed(&self) {
        self.inner.orders_watch_ok.store(false, Ordering::Relaxed);
    }
}
