use std::process::ExitCode;

use clap::Parser;
use reserve_operator::{
    backup,
    cli::{Cli, Command, LogFormat, RestoreArgs, RunArgs},
    migrate, operator,
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
        Command::Restore(args) => {
            init_logging(LogFormat::Text);
            let runtime = tokio::runtime::Runtime::new().expect("a Tokio runtime starts");
            match runtime.block_on(restore(args)) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(message) => {
                    error!("{message}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::MigrateStorage => {
            init_logging(LogFormat::Text);
            let runtime = tokio::runtime::Runtime::new().expect("a Tokio runtime starts");
            match runtime.block_on(migrate_storage()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => {
                    error!("{message}");
                    ExitCode::FAILURE
                }
            }
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
    let probes = operator::bind_probes(args.probe_addr).await?;
    operator::run(client, default_namespace, args, probes, shutdown_signal()).await
}

/// Puts back what the file saved; true when nothing was left out.
async fn restore(args: RestoreArgs) -> Result<bool, String> {
    let saved = backup::read_saved(&args.file)?;
    let mut config = kube::Config::infer()
        .await
        .map_err(|e| format!("no Kubernetes configuration: {e}"))?;
    if args.as_user.is_some() {
        config.auth_info.impersonate = args.as_user;
    }
    if !args.as_groups.is_empty() {
        config.auth_info.impersonate_groups = Some(args.as_groups);
    }
    let client = kube::Client::try_from(config)
        .map_err(|e| format!("cannot build a Kubernetes client: {e}"))?;
    let report = backup::restore(&client, &saved).await?;
    for ((kind, outcome), count) in &report.counts {
        println!("{kind}: {count} {outcome:?}");
    }
    for problem in &report.problems {
        println!("not restored: {problem}");
    }
    Ok(report.is_complete())
}

/// Writes every object again in the stored version; prints what it did per kind.
async fn migrate_storage() -> Result<(), String> {
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("cannot build a Kubernetes client: {e}"))?;
    for kind in migrate::migrate(&client).await? {
        println!(
            "{}: {} objects, {} written again, {} written by someone else meanwhile, {} gone; \
             stored versions {:?} ({:.1}s)",
            kind.plural,
            kind.objects,
            kind.rewritten,
            kind.changed_meanwhile,
            kind.gone,
            kind.stored_versions,
            kind.seconds
        );
    }
    Ok(())
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
