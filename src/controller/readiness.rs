//! Whether the operator can do its work, and if not, why: `/readyz` says so.
//!
//! Not ready while a cache has not been listed in full, while a watch keeps failing, for a
//! while after a write was refused for lack of an RBAC permission, and while status writes keep
//! failing on the server's side (errors, timeouts). Each of these clears by itself once the
//! cause is gone.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::gauge::ConstGauge,
};
use tokio::sync::watch;

/// A failing watch is retried with a backoff of up to about 30 s; without an event since its
/// last error, it counts as failing for this long.
const WATCH_ERROR_HOLD: Duration = Duration::from_secs(40);
/// A refused write (missing RBAC permission) keeps the operator unready this long.
const DENIED_HOLD: Duration = Duration::from_secs(60);
/// Status writes count as failing after this many failures in a row with no success between,
/// until a write succeeds or none has failed for `WRITE_ERROR_HOLD`.
const FAILED_WRITES: u32 = 3;
const WRITE_ERROR_HOLD: Duration = Duration::from_secs(40);

/// The kinds the operator watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Watched {
    Customers,
    Orders,
    Ledgers,
}

impl Watched {
    pub const ALL: [Watched; 3] = [Watched::Customers, Watched::Orders, Watched::Ledgers];

    fn name(self) -> &'static str {
        match self {
            Watched::Customers => "customers",
            Watched::Orders => "orders",
            Watched::Ledgers => "ledgers",
        }
    }
}

#[derive(Clone)]
pub struct Readiness {
    inner: Arc<Inner>,
}

struct Inner {
    /// Per watched kind: whether its cache holds a full list.
    synced: watch::Sender<[bool; 3]>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Per watched kind: when its watch last failed, unless an event came since.
    watch_failed: [Option<Instant>; 3],
    /// Per watched kind: why it lists everything again (the store went back), until it has.
    relisting: [Option<String>; 3],
    denied: Option<(Instant, String)>,
    failed_writes: u32,
    last_failed_write: Option<(Instant, String)>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                synced: watch::Sender::new([false; 3]),
                state: Mutex::default(),
            }),
        }
    }
}

impl Readiness {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why the operator is not ready, if it is not.
    pub fn problem(&self) -> Option<String> {
        self.problem_at(Instant::now())
    }

    fn problem_at(&self, now: Instant) -> Option<String> {
        if !self.is_synced() {
            return Some("caches not synced yet".into());
        }
        let state = self.state();
        for kind in Watched::ALL {
            if let Some(why) = &state.relisting[kind as usize] {
                return Some(why.clone());
            }
            if state.watch_failed[kind as usize]
                .is_some_and(|at| now.duration_since(at) < WATCH_ERROR_HOLD)
            {
                return Some(format!("watch of {} failing", kind.name()));
            }
        }
        if let Some((at, what)) = &state.denied
            && now.duration_since(*at) < DENIED_HOLD
        {
            return Some(format!("permission denied: {what}"));
        }
        if let Some((at, error)) = &state.last_failed_write
            && state.failed_writes >= FAILED_WRITES
            && now.duration_since(*at) < WRITE_ERROR_HOLD
        {
            return Some(format!(
                "status writes failing ({} in a row): {error}",
                state.failed_writes
            ));
        }
        None
    }

    /// Every cache has been listed in full (they may be failing to watch right now).
    pub fn is_synced(&self) -> bool {
        self.inner.synced.borrow().iter().all(|listed| *listed)
    }

    /// Resolves once every cache has been listed in full.
    pub async fn synced(&self) {
        let mut rx = self.inner.synced.subscribe();
        let _ = rx.wait_for(|s| s.iter().all(|listed| *listed)).await;
    }

    /// A cache holds a full list.
    pub fn listed(&self, kind: Watched) {
        self.inner.synced.send_modify(|s| s[kind as usize] = true);
        self.state().relisting[kind as usize] = None;
        self.event(kind);
    }

    /// The store went back in time (from `seen` to `current` for `kind`): every watch lists
    /// everything again, and what the operator knows is out of date until they have.
    pub fn went_back(&self, kind: Watched, current: &str, seen: u64) {
        self.relisting(format!(
            "the store of {} went back in time (resourceVersion {current}, after {seen} was \
             seen; etcd restored?): listing again",
            kind.name()
        ));
    }

    /// Every watch lists everything again, for `why`; not ready until each has.
    pub fn relisting(&self, why: String) {
        self.state().relisting = [Some(why.clone()), Some(why.clone()), Some(why)];
    }

    /// A watch delivered an event: it works (again).
    pub fn event(&self, kind: Watched) {
        let mut state = self.state();
        if state.watch_failed[kind as usize].is_some() {
            state.watch_failed[kind as usize] = None;
        }
    }

    pub fn watch_failed(&self, kind: Watched) {
        self.state().watch_failed[kind as usize] = Some(Instant::now());
    }

    /// Records a write the API server refused for lack of permission.
    pub fn permission_denied(&self, what: String) {
        self.state().denied = Some((Instant::now(), what));
    }

    pub fn write_succeeded(&self) {
        let mut state = self.state();
        if state.failed_writes > 0 {
            state.failed_writes = 0;
            state.last_failed_write = None;
        }
    }

    /// Status writes failed on the server's side in a row.
    #[cfg(test)]
    pub fn failed_writes(&self) -> u32 {
        self.state().failed_writes
    }

    /// Records a status write that failed on the server's side (not a refusal or a conflict).
    pub fn write_failed(&self, error: String) {
        let mut state = self.state();
        state.failed_writes = state.failed_writes.saturating_add(1);
        state.last_failed_write = Some((Instant::now(), error));
    }
}

/// `reserve_ready`: 1 while `/readyz` answers 200, computed at each scrape.
#[derive(Clone)]
pub struct ReadyCollector(pub Readiness);

impl std::fmt::Debug for ReadyCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadyCollector")
    }
}

impl Collector for ReadyCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let ready = ConstGauge::new(i64::from(self.0.problem().is_none()));
        let metric = encoder.encode_descriptor(
            "ready",
            "1 while /readyz answers 200 (see /readyz for the reason when 0)",
            None,
            ready.metric_type(),
        )?;
        ready.encode(metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synced() -> Readiness {
        let readiness = Readiness::default();
        for kind in Watched::ALL {
            readiness.listed(kind);
        }
        readiness
    }

    #[test]
    fn ready_once_every_cache_is_listed_and_while_watches_work() {
        let readiness = Readiness::default();
        assert_eq!(
            readiness.problem().as_deref(),
            Some("caches not synced yet")
        );
        readiness.listed(Watched::Customers);
        assert!(readiness.problem().is_some());
        readiness.listed(Watched::Orders);
        assert!(
            readiness.problem().is_some(),
            "a score needs the ledgers too"
        );
        readiness.listed(Watched::Ledgers);
        assert_eq!(readiness.problem(), None);
        readiness.watch_failed(Watched::Orders);
        assert_eq!(
            readiness.problem().as_deref(),
            Some("watch of orders failing")
        );
        readiness.event(Watched::Orders);
        assert_eq!(
            readiness.problem(),
            None,
            "an event after the error means the watch is back"
        );
        readiness.permission_denied("patch orders/status in ns".into());
        assert_eq!(
            readiness.problem().as_deref(),
            Some("permission denied: patch orders/status in ns")
        );
    }

    #[test]
    fn a_store_gone_back_makes_it_unready_until_every_kind_is_listed_again() {
        let readiness = synced();
        readiness.went_back(Watched::Orders, "1943", 4057);
        let problem = readiness.problem().unwrap();
        assert!(problem.contains("orders went back in time"), "{problem}");
        assert!(
            problem.contains("1943") && problem.contains("4057"),
            "{problem}"
        );
        readiness.event(Watched::Orders);
        assert!(readiness.problem().is_some(), "an event is not the list");
        readiness.listed(Watched::Orders);
        assert!(readiness.problem().is_some(), "every kind lists again");
        readiness.listed(Watched::Customers);
        readiness.listed(Watched::Ledgers);
        assert_eq!(readiness.problem(), None);
    }

    #[test]
    fn writes_failing_in_a_row_make_it_unready_until_one_succeeds() {
        let readiness = synced();
        readiness.write_failed("etcd unavailable (500)".into());
        readiness.write_failed("etcd unavailable (500)".into());
        assert_eq!(readiness.problem(), None, "two failures may be bad luck");
        readiness.write_failed("timed out".into());
        assert_eq!(
            readiness.problem().as_deref(),
            Some("status writes failing (3 in a row): timed out")
        );
        readiness.write_succeeded();
        assert_eq!(readiness.problem(), None);
    }

    #[test]
    fn failing_writes_stop_counting_when_none_has_failed_for_a_while() {
        let readiness = synced();
        for _ in 0..3 {
            readiness.write_failed("timed out".into());
        }
        let later = Instant::now() + WRITE_ERROR_HOLD;
        assert_eq!(readiness.problem_at(later), None);
    }
}
