//! The whole operator for one client: probes and metrics, the watches (on every replica), and
//! the controllers while this replica leads. `main` runs it for the binary; tests run it in
//! their own process against a real API server.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use futures::{
    FutureExt,
    future::{BoxFuture, Shared},
};
use kube::Client;
use tokio::net::TcpListener;
use tracing::info;

use crate::{
    api_metrics,
    cli::RunArgs,
    controller::{
        self, Context, CustomersPerLevel, LedgerCounts, METRIC_LABELS, Observed, Readiness,
        ReadyCollector,
    },
    leader::{self, Election, Fence},
    metrics::Metrics,
    probe::Probes,
};

/// The oldest Kubernetes this release runs on: the Orders' field selectors (CRD
/// `selectableFields`) are GA from 1.32. (Streaming lists, from 1.34, and comparable
/// resourceVersions, from 1.35, are used where the server has them.)
pub const MIN_KUBERNETES: (u32, u32) = (1, 32);

/// Refuses to run where this release cannot: a Kubernetes older than [`MIN_KUBERNETES`], or an
/// API that does not serve the version this release reads and writes (CRDs of an older
/// release: apply this release's first). A server that does not answer yet is not refused: the
/// watches wait for it.
async fn supported(client: &Client, server: Option<(u32, u32)>) -> Result<(), String> {
    if let Some((major, minor)) = server.filter(|version| *version < MIN_KUBERNETES) {
        let (min_major, min_minor) = MIN_KUBERNETES;
        return Err(format!(
            "Kubernetes {major}.{minor} is older than {min_major}.{min_minor}, the oldest this \
             release runs on"
        ));
    }
    let version = format!("{}/{}", crate::crd::GROUP, crate::crd::VERSION);
    match client.list_api_group_resources(&version).await {
        Err(kube::Error::Api(status)) if status.code == 404 => Err(format!(
            "the cluster does not serve {version}, which this release reads and writes: apply \
             its CustomResourceDefinitions first (kubectl apply --server-side -k \
             manifests/crds, or the chart with crds.install)"
        )),
        _ => Ok(()),
    }
}

/// A probe listener bound before the operator runs (so a caller can learn the port).
pub async fn bind_probes(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot serve probes on {addr}: {e}"))
}

/// Runs until `shutdown` resolves, then finishes in-flight writes and releases the Lease.
/// `default_namespace` is where the Lease lives unless `--lease-namespace` says otherwise.
pub async fn run(
    client: Client,
    default_namespace: String,
    args: RunArgs,
    probes: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let shutdown: Shared<BoxFuture<'static, ()>> = shutdown.boxed().shared();
    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("reserve-operator-{}", std::process::id()));
    let fence = if args.leader_election() {
        Fence::closed()
    } else {
        Fence::always_open()
    };
    let readiness = Readiness::default();
    let leading = Arc::new(AtomicBool::new(false));
    let alive = Arc::new(AtomicBool::new(true));

    let (caches, writers) = controller::caches();
    let observed = Observed {
        readiness: readiness.clone(),
        ..Observed::default()
    };
    let metrics = Arc::new(Metrics::new(
        &METRIC_LABELS,
        vec![
            Box::new(CustomersPerLevel(observed.index.clone())),
            Box::new(observed.backlogs.clone()),
            Box::new(LedgerCounts(caches.ledgers.clone())),
            Box::new(ReadyCollector(readiness.clone())),
        ],
    ));
    let client = api_metrics::metered(client, metrics.clone());
    let ctx = Arc::new(Context::new(
        client.clone(),
        args.levels.clone(),
        &identity,
        fence.clone(),
        metrics,
        observed,
    ));
    let server = client.apiserver_version().await.ok().and_then(|info| {
        let number = |s: &str| s.trim_end_matches('+').parse::<u32>().ok();
        Some((number(&info.major)?, number(&info.minor)?))
    });
    supported(&client, server).await?;
    let initial_list = args.initial_list.resolve(server);
    info!(?initial_list, ?server, "initial lists");
    let watches = controller::watch(
        &client,
        args.namespace.as_deref(),
        initial_list,
        &ctx,
        writers,
    );

    let probe_addr = probes.local_addr().ok();
    let probe_server = tokio::spawn(
        Probes {
            metrics: ctx.metrics.clone(),
            readiness: readiness.clone(),
            leading: leading.clone(),
            alive: alive.clone(),
        }
        .serve(probes, shutdown.clone()),
    );

    info!(
        namespace = args.namespace.as_deref().unwrap_or("(all)"),
        policy = %args.levels,
        %identity,
        "watching"
    );
    // `reserve_leader` says 1 only while this replica leads and its fence is open: a leader
    // that has seen another holder stops saying it leads at once, not when its term ends.
    let report_leader = {
        let (leading, metrics, mut open) =
            (leading.clone(), ctx.metrics.clone(), fence.subscribe());
        tokio::spawn(async move {
            loop {
                let is = leading.load(Ordering::Relaxed) && *open.borrow_and_update();
                metrics.set_leader(is);
                if open.changed().await.is_err() {
                    break;
                }
            }
        })
    };
    let on_change = {
        let (leading, metrics, fence) = (leading.clone(), ctx.metrics.clone(), fence.clone());
        move |is_leading: bool| {
            leading.store(is_leading, Ordering::Relaxed);
            metrics.set_leader(is_leading && fence.check().is_ok());
        }
    };
    let lead = {
        let ctx = ctx.clone();
        let settle = args
            .settle_after
            .map(|after| (after, args.namespace.clone()));
        move |stop: Shared<BoxFuture<'static, ()>>| {
            controller::lead(ctx.clone(), caches.clone(), settle.clone(), stop)
        }
    };
    if args.leader_election() {
        let namespace = args.lease_namespace.clone().unwrap_or(default_namespace);
        info!(lease = leader::LEASE_NAME, %namespace, "waiting for the Lease");
        let election = Election {
            client,
            namespace,
            identity,
            store_moved: ctx.freshness.store_moved(),
        };
        leader::run_while_leading(election, fence, shutdown.clone(), on_change, lead).await;
    } else {
        on_change(true);
        lead(shutdown.clone()).await;
        on_change(false);
    }
    drop(watches);
    report_leader.abort();
    alive.store(false, Ordering::Relaxed);
    info!("shut down");
    match probe_server.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("probe server on {probe_addr:?}: {e}")),
        Err(e) => Err(format!("probe server: {e}")),
    }
}
