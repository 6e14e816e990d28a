//! The Lease under a network that holds a replica's bytes and delivers them late: the deposed
//! leader's renewal, computed before the hand-over, reaches the API server after another replica
//! holds the Lease. It must be refused (its resourceVersion is stale), so `renewTime` never goes
//! back and leadership never moves on a stale message.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api,
    runtime::{WatchStreamExt, watcher},
};
use reserve_operator::leader::{LEASE_NAME, LEASE_SECONDS};
use reserve_testkit::{
    ControlPlane, FAIL_AFTER, Launch, OperatorProcess, Shop, eventually, operator_bin,
    proxy::HoldingProxy, shop::grant_lease,
};

/// One version of the Lease as a watch showed it: holder and renewTime.
type Seen = (Option<String>, Option<SystemTime>);

#[tokio::test(flavor = "multi_thread")]
async fn a_renewal_held_in_the_network_and_delivered_late_is_refused() {
    let cp = ControlPlane::shared();
    if cp.skip_unless_local("a proxy in front of the API server and its audit log") {
        return;
    }
    let shop = Shop::new("held").await;
    let lease_ns = shop.beside("lease").await.ns;
    let (a, b) = (shop.identity("a").await, shop.identity("b").await);
    for identity in [&a, &b] {
        grant_lease(&shop.admin, &lease_ns, identity).await;
    }
    let upstream: SocketAddr = ([127, 0, 0, 1], cp.port()).into();
    let proxy = HoldingProxy::start(upstream).await;
    let replica = |kubeconfig: &std::path::Path, name: &str| -> OperatorProcess {
        Launch::new(operator_bin!(), kubeconfig)
            .args(["--namespace", &shop.ns, "--lease-namespace", &lease_ns])
            .args(["--identity", name])
            .spawn()
    };
    // "a" (behind the proxy) leads first; "b" stands by.
    let first = replica(&cp.kubeconfig_via(&a, &proxy.server()), "a");
    let a_probe = first.probe().clone();
    eventually(FAIL_AFTER, "a to lead", || async {
        (a_probe.is_leader().await == Some(true)).then_some(())
    })
    .await;
    let second = replica(&cp.kubeconfig_as(&b), "b");
    let b_probe = second.probe().clone();

    let versions: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let lease_watch = {
        let versions = versions.clone();
        let leases: Api<Lease> = Api::namespaced(shop.admin.clone(), &lease_ns);
        let config = watcher::Config::default().fields(&format!("metadata.name={LEASE_NAME}"));
        tokio::spawn(async move {
            let mut events = std::pin::pin!(watcher(leases, config).applied_objects());
            while let Some(event) = events.next().await {
                // A failed watch backs off and goes on: keep recording.
                let Ok(lease) = event else { continue };
                let spec = lease.spec.unwrap_or_default();
                let renewed = spec.renew_time.map(|t| SystemTime::from(t.0));
                versions
                    .lock()
                    .unwrap()
                    .push((spec.holder_identity, renewed));
            }
        })
    };

    // The network holds what "a" sends: its next renewal waits in the proxy while its Lease
    // runs out and "b" takes over, then renews once itself.
    proxy.hold();
    let held_at = Instant::now();
    eventually(FAIL_AFTER, "b to take over", || async {
        (b_probe.is_leader().await == Some(true)).then_some(())
    })
    .await;
    let renewed_by_b = |versions: &[Seen]| {
        versions
            .iter()
            .filter(|(holder, _)| holder.as_deref() == Some("b"))
            .filter_map(|(_, renewed)| *renewed)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    eventually(FAIL_AFTER, "b to renew the Lease", || async {
        (renewed_by_b(&versions.lock().unwrap()) >= 2).then_some(())
    })
    .await;
    let before_release = versions.lock().unwrap().len();
    proxy.release();
    println!(
        "held a's traffic for {:.1}s; b leads and has renewed",
        held_at.elapsed().as_secs_f64()
    );

    // A Lease duration and more: long enough for a renewal accepted late to make the Lease
    // look expired and change hands (it did, 15 s after the stale renewTime, before the fix).
    let observe = Duration::from_secs(LEASE_SECONDS + 5);
    let released_at = Instant::now();
    tokio::time::sleep(observe).await;
    let seen = versions.lock().unwrap().clone();
    lease_watch.abort();
    let after: &[Seen] = &seen[before_release - 1..];
    assert!(
        after
            .iter()
            .all(|(holder, _)| holder.as_deref() == Some("b")),
        "the Lease changed hands after a's late renewal: {after:?}"
    );
    let times: Vec<SystemTime> = after.iter().filter_map(|(_, t)| *t).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "renewTime went back while b held the Lease: {times:?}"
    );
    assert_eq!(b_probe.is_leader().await, Some(true), "b still leads");
    assert_eq!(
        a_probe.is_leader().await,
        Some(false),
        "a knows it does not"
    );

    // The late renewal did arrive, and the API server refused it.
    let refused = cp
        .audit()
        .into_iter()
        .filter(|e| e.user() == a.user && e.object_ref.resource == "leases")
        .filter(|e| e.is_complete() && e.verb == "patch" && e.code() == Some(409))
        .count();
    println!(
        "observed {:.0}s after the release: {} versions, holder b throughout; {refused} of a's Lease writes refused (409)",
        released_at.elapsed().as_secs_f64(),
        after.len()
    );
    assert!(
        refused >= 1,
        "a's held renewal never reached the API server"
    );
    drop((first, second));
}
