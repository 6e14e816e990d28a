use std::{
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use clap::Parser;
use futures::FutureExt;
use reserve_operator::{
    cli::{Cli, Command, LogFormat, RunArgs},
    controller::{self, Readiness, Settings},
    leader::{self, Election},
    metrics::Metrics,
    probe::Probes,
};
use tracing::{error, info};

// Many small, short-lived allocations from watch events fragment glibc's per-thread arenas;
// jemalloc keeps the resident set close to what is live.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds => {
            print!("{}", reserve_operator::crd::crds_yaml());
            ExitCode::SUCCESS
        }
        Command::Run(args) => {
            init_logging(args.log_format);
            let runtime = tokio::runtime::Runtime::new().expect("a Tokio runtime starts");
            match runtime.block_on(run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => {
                    error!("{message}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube_lease_manager=warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
        LogFormat::Text => logs.init(),
    }
}

async fn run(args: RunArgs) -> Result<(), String> {
    let config = kube::Config::infer()
        .await
        .map_err(|e| format!("no Kubernetes configuration: {e}"))?;
    let default_namespace = config.default_namespace.clone();
    let client = kube::Client::try_from(config)
        .map_err(|e| format!("cannot build a Kubernetes client: {e}"))?;
    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("reserve-operator-{}", std::process::id()));

    let metrics = Arc::new(Metrics::default());
    let readiness = Readiness::default();
    let leading = Arc::new(AtomicBool::new(false));
    let alive = Arc::new(AtomicBool::new(true));
    let shutdown = shutdown_signal().shared();

    let probes = Probes {
        metrics: metrics.clone(),
        readiness: readiness.clone(),
        leading: leading.clone(),
        alive: alive.clone(),
    };
    let listener = tokio::net::TcpListener::bind(args.probe_addr)
        .await
        .map_err(|e| format!("cannot serve probes on {}: {e}", args.probe_addr))?;
    let probe_server = tokio::spawn(probes.serve(listener, shutdown.clone()));

    let settings = Settings::new(
        args.namespace.clone(),
        args.levels.clone(),
        Some(identity.clone()),
    );
    let lead = |stop| {
        controller::run(
            client.clone(),
            settings.clone(),
            metrics.clone(),
            readiness.clone(),
            stop,
        )
    };
    let on_change = |is_leading: bool| {
        leading.store(is_leading, Ordering::Relaxed);
        metrics.set_leader(is_leading);
    };
    if args.leader_election() {
        let namespace = args.lease_namespace.clone().unwrap_or(default_namespace);
        info!(%identity, lease = leader::LEASE_NAME, %namespace, "waiting for the Lease");
        let election = Election {
            client: client.clone(),
            namespace,
            identity,
        };
        leader::run_while_leading(election, shutdown.clone(), on_change, lead).await;
    } else {
        on_change(true);
        lead(shutdown.clone().boxed().shared()).await;
        on_change(false);
    }
    alive.store(false, Ordering::Relaxed);
    info!("shut down");
    match probe_server.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("probe server on {}: {e}", args.probe_addr)),
        Err(e) => Err(format!("probe server: {e}")),
    }
}

/// Resolves on SIGTERM (what Kubernetes sends) or Ctrl-C.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: finishing in-flight work"),
        _ = tokio::signal::ctrl_c() => info!("interrupted: finishing in-flight work"),
    }
}
