//! Leader election on the `coordination.k8s.io` Lease `reserve-operator`, and the fence that
//! keeps every replica but a freshly renewed holder from writing.
//!
//! kube-lease-manager acquires, renews and releases the Lease, but reports only changes of
//! leadership, not each renewal. A paused or partitioned leader would therefore go on believing
//! it leads until its manager next runs. The fence closes that gap: a watch on the Lease records
//! each renewal this replica made, at the moment (by this process's monotonic clock) the renewal
//! was sent, and writes are allowed only until the Lease duration minus a safety margin has
//! passed since then. A replica resumed after a pause longer than that writes nothing, whatever
//! it still believes; the resourceVersion preconditions on every write do the rest.

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use futures::{FutureExt, StreamExt, future::Shared};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, watcher},
};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::runtime_ext::conditional_lease_writes;

pub const LEASE_NAME: &str = "reserve-operator";
/// A killed leader is replaced this long after its last renewal at the latest.
pub const LEASE_SECONDS: u64 = 15;
/// The holder renews this long before expiry.
const RENEW_BEFORE_SECONDS: u64 = 5;
/// The holder stops writing this long before its Lease could expire for the other replicas.
const SAFETY_MARGIN: Duration = Duration::from_secs(3);

/// Whether this replica may write now.
#[derive(Clone)]
pub struct Fence {
    state: Arc<Mutex<FenceState>>,
    opened: watch::Sender<bool>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum FenceState {
    /// No leader election: the only replica always writes.
    Always,
    /// Not the holder (or not confirmed yet).
    Closed,
    /// The holder, with a renewal fresh until then.
    Until(Instant),
}

impl Fence {
    /// A fence for a replica that runs without leader election.
    pub fn always_open() -> Self {
        Self::with(FenceState::Always)
    }

    /// A fence that opens once this replica's renewal of the Lease is confirmed.
    pub fn closed() -> Self {
        Self::with(FenceState::Closed)
    }

    fn with(state: FenceState) -> Self {
        Self {
            state: Arc::new(Mutex::new(state)),
            opened: watch::Sender::new(state != FenceState::Closed),
        }
    }

    fn state(&self) -> FenceState {
        *self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ok when this replica may write now; otherwise why not.
    pub fn check(&self) -> Result<(), &'static str> {
        self.check_at(Instant::now())
    }

    fn check_at(&self, now: Instant) -> Result<(), &'static str> {
        match self.state() {
            FenceState::Always => Ok(()),
            FenceState::Closed => Err("this replica does not hold the Lease"),
            FenceState::Until(until) if now < until => Ok(()),
            FenceState::Until(_) => Err("the Lease was not renewed in time"),
        }
    }

    /// This replica's renewal, sent at `sent`, was accepted.
    fn renewed(&self, sent: Instant) {
        let until = sent + Duration::from_secs(LEASE_SECONDS) - SAFETY_MARGIN;
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = FenceState::Until(until);
        self.opened.send_replace(true);
    }

    fn close(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if *state != FenceState::Always {
            *state = FenceState::Closed;
            self.opened.send_replace(false);
        }
    }

    /// Follows the fence opening (a renewal) and closing (a term's end, or another holder).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.opened.subscribe()
    }

    /// Resolves once the fence has opened (at once without leader election).
    pub async fn opened(&self) {
        let mut opened = self.opened.subscribe();
        let _ = opened.wait_for(|open| *open).await;
    }
}

/// When a renewal whose `renewTime` says `renewed` (the wall clock of the replica that sent it)
/// was sent, by this process's monotonic clock. Measured now, so a pause between the renewal
/// and the moment its watch event is read counts against it.
fn sent_at(renewed: SystemTime) -> Instant {
    let age = SystemTime::now()
        .duration_since(renewed)
        .unwrap_or(Duration::ZERO);
    let now = Instant::now();
    now.checked_sub(age).unwrap_or(now)
}

pub struct Election {
    pub client: Client,
    pub namespace: String,
    pub identity: String,
    /// Changes when the store has moved to another timeline (an etcd restore): the Lease's
    /// watch, which may be resuming from a version the store no longer reaches, starts again.
    pub store_moved: watch::Receiver<u64>,
}

/// Runs `lead(stop)` in every term this replica holds the Lease, until `shutdown` resolves.
/// `stop` resolves when the term ends (Lease lost, or shutdown); `lead` must then return.
/// `on_change(true/false)` is told when a term starts and ends; `fence` follows the renewals.
pub async fn run_while_leading<S, L, F>(
    election: Election,
    fence: Fence,
    shutdown: Shared<S>,
    on_change: impl Fn(bool),
    lead: L,
) where
    S: Future<Output = ()>,
    L: Fn(Shared<futures::future::BoxFuture<'static, ()>>) -> F,
    F: Future<Output = ()>,
{
    let (released_tx, mut released) = watch::channel(());
    let lease_watch = tokio::spawn(watch_lease(
        Api::namespaced(election.client.clone(), &election.namespace),
        election.identity.clone(),
        fence.clone(),
        released_tx,
        election.store_moved.clone(),
    ));
    loop {
        let manager = match build(&election).await {
            Ok(manager) => manager,
            Err(error) => {
                warn!(%error, namespace = %election.namespace, "cannot use the Lease; retrying");
                tokio::select! {
                    _ = shutdown.clone() => break,
                    _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
                }
            }
        };

        // Standby: wait for the Lease, or for its release (then try again at once).
        released.mark_unchanged();
        let leading = tokio::select! {
            _ = shutdown.clone() => break,
            changed = manager.changed() => changed,
            _ = released.changed() => continue,
        };
        match leading {
            Ok(true) => {}
            Ok(false) => continue,
            Err(error) => {
                warn!(%error, "leader election failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }

        info!(identity = %election.identity, "acquired the Lease; reconciling");
        on_change(true);
        let (end_term, term_ended) = watch::channel(false);
        let stop = async move {
            let mut term_ended = term_ended;
            let _ = term_ended.wait_for(|ended| *ended).await;
        }
        .boxed()
        .shared();
        let work = lead(stop);
        tokio::pin!(work);
        let shutting_down = loop {
            tokio::select! {
                _ = &mut work => break false,
                _ = shutdown.clone() => break true,
                changed = manager.changed() => match changed {
                    Ok(true) => {}
                    Ok(false) => {
                        warn!("lost the Lease; stopping the controllers");
                        break false;
                    }
                    // The Lease could not be renewed (API server unreachable?); the fence stops
                    // writes once the last renewal is too old, and the manager notices expiry
                    // on its next call.
                    Err(error) => {
                        warn!(%error, "could not renew the Lease");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                },
            }
        };
        fence.close();
        let _ = end_term.send(true);
        work.await;
        on_change(false);
        if shutting_down {
            if let Err(error) = manager.release().await {
                warn!(%error, "could not release the Lease; a standby takes over when it expires");
            } else {
                info!("released the Lease");
            }
            break;
        }
    }
    fence.close();
    lease_watch.abort();
}

/// A Lease manager whose every write is conditional on the Lease as it last read it, so a
/// renewal delivered late cannot move leadership ([`conditional_lease_writes`]).
async fn build(election: &Election) -> Result<LeaseManager, kube_lease_manager::LeaseManagerError> {
    let client = conditional_lease_writes(election.client.clone(), &election.namespace, LEASE_NAME);
    LeaseManagerBuilder::new(client, LEASE_NAME)
        .with_namespace(&election.namespace)
        .with_identity(&election.identity)
        .with_duration(LEASE_SECONDS)
        .with_grace(RENEW_BEFORE_SECONDS)
        .with_field_manager("reserve-operator")
        .build()
        .await
}

/// Follows the Lease: opens the fence at each renewal by `identity`, closes it when someone
/// else holds the Lease, and signals `released` when nobody does (a standby then takes it at
/// once instead of waiting for it to expire). Starts again from a list when the store moved to
/// another timeline: a watch resumed beyond a restored store shows nothing, not even the
/// renewals that would keep the fence open.
async fn watch_lease(
    leases: Api<Lease>,
    identity: String,
    fence: Fence,
    released: watch::Sender<()>,
    mut store_moved: watch::Receiver<u64>,
) {
    let config = watcher::Config::default().fields(&format!("metadata.name={LEASE_NAME}"));
    loop {
        let events = watcher(leases.clone(), config.clone())
            .default_backoff()
            .touched_objects();
        let mut events = std::pin::pin!(events);
        store_moved.mark_unchanged();
        loop {
            let event = tokio::select! {
                event = events.next() => match event {
                    Some(event) => event,
                    None => return,
                },
                moved = store_moved.changed() => {
                    if moved.is_err() {
                        // Nobody says any more: follow this watch to its end.
                        std::future::pending::<()>().await;
                    }
                    warn!("the store went back in time; watching the Lease from a new list");
                    break;
                }
            };
            let lease = match event {
                Ok(lease) => lease,
                Err(error) => {
                    warn!(%error, "watching the Lease failed; retrying");
                    continue;
                }
            };
            let spec = lease.spec.unwrap_or_default();
            match (spec.holder_identity.as_deref(), spec.renew_time) {
                (Some(holder), Some(renewed)) if holder == identity => {
                    fence.renewed(sent_at(SystemTime::from(renewed.0)));
                }
                (None, _) => {
                    fence.close();
                    released.send_replace(());
                }
                _ => fence.close(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fence_opens_for_a_fresh_renewal_and_closes_before_the_lease_can_expire() {
        let fence = Fence::closed();
        assert!(fence.check().is_err());
        let sent = Instant::now();
        fence.renewed(sent);
        assert_eq!(fence.check_at(sent + Duration::from_secs(1)), Ok(()));
        let stale = sent + Duration::from_secs(LEASE_SECONDS) - SAFETY_MARGIN;
        assert_eq!(
            fence.check_at(stale),
            Err("the Lease was not renewed in time")
        );
        fence.close();
        assert_eq!(
            fence.check_at(sent),
            Err("this replica does not hold the Lease")
        );
        assert_eq!(Fence::always_open().check(), Ok(()));
    }

    #[test]
    fn a_renewal_read_late_counts_from_when_it_was_sent() {
        // A renewal stamped 20 s ago (the process was paused meanwhile) is no longer fresh.
        let sent = sent_at(SystemTime::now() - Duration::from_secs(20));
        let fence = Fence::closed();
        fence.renewed(sent);
        assert!(fence.check().is_err());
        let recent = sent_at(SystemTime::now() - Duration::from_millis(5));
        fence.renewed(recent);
        assert!(fence.check().is_ok());
    }
}
