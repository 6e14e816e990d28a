//! Leader election on the `coordination.k8s.io` Lease `reserve-operator`: only the holder runs
//! the controllers. A standby takes over when the leader releases the Lease (at once) or stops
//! renewing it (after the lease duration).

use std::{future::Future, time::Duration};

use futures::{FutureExt, future::Shared};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client, runtime::wait::await_condition};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;
use tracing::{info, warn};

pub const LEASE_NAME: &str = "reserve-operator";
/// A killed leader is replaced this long after its last renewal at the latest.
pub const LEASE_SECONDS: u64 = 15;
/// The holder renews this long before expiry.
const RENEW_BEFORE_SECONDS: u64 = 5;

pub struct Election {
    pub client: Client,
    pub namespace: String,
    pub identity: String,
}

/// Runs `lead(stop)` in every term this replica holds the Lease, until `shutdown` resolves.
/// `stop` resolves when the term ends (Lease lost, or shutdown); `lead` must then return.
/// `on_change(true/false)` is told when a term starts and ends.
pub async fn run_while_leading<S, L, F>(
    election: Election,
    shutdown: Shared<S>,
    on_change: impl Fn(bool),
    lead: L,
) where
    S: Future<Output = ()>,
    L: Fn(Shared<futures::future::BoxFuture<'static, ()>>) -> F,
    F: Future<Output = ()>,
{
    let leases: Api<Lease> = Api::namespaced(election.client.clone(), &election.namespace);
    loop {
        let manager = match build(&election).await {
            Ok(manager) => manager,
            Err(error) => {
                warn!(%error, namespace = %election.namespace, "cannot use the Lease; retrying");
                tokio::select! {
                    _ = shutdown.clone() => return,
                    _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
                }
            }
        };

        // Standby: wait for the Lease, or for its release (then re-read it at once).
        let leading = tokio::select! {
            _ = shutdown.clone() => return,
            changed = manager.changed() => changed,
            _ = released(&leases) => continue,
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
                    // The Lease could not be renewed (API server unreachable?); the manager
                    // notices expiry on its next call, so keep trying.
                    Err(error) => {
                        warn!(%error, "could not renew the Lease");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                },
            }
        };
        let _ = end_term.send(true);
        work.await;
        on_change(false);
        if shutting_down {
            if let Err(error) = manager.release().await {
                warn!(%error, "could not release the Lease; a standby takes over when it expires");
            } else {
                info!("released the Lease");
            }
            return;
        }
    }
}

async fn build(election: &Election) -> Result<LeaseManager, kube_lease_manager::LeaseManagerError> {
    LeaseManagerBuilder::new(election.client.clone(), LEASE_NAME)
        .with_namespace(&election.namespace)
        .with_identity(&election.identity)
        .with_duration(LEASE_SECONDS)
        .with_grace(RENEW_BEFORE_SECONDS)
        .with_field_manager("reserve-operator")
        .build()
        .await
}

/// Resolves when the Lease has no holder (released) or is gone.
async fn released(leases: &Api<Lease>) {
    let free = |lease: Option<&Lease>| {
        lease
            .and_then(|l| l.spec.as_ref())
            .and_then(|s| s.holder_identity.as_ref())
            .is_none()
    };
    if let Err(error) = await_condition(leases.clone(), LEASE_NAME, free).await {
        warn!(%error, "watching the Lease failed");
        futures::future::pending::<()>().await;
    }
}
