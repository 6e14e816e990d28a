//! `kubectl reserve`: kubectl runs this binary when it is on PATH as `kubectl-reserve`.

use std::process::ExitCode;

use clap::Parser;
use reserve_operator::plugin::{self, PluginCli, PluginError};

fn main() -> ExitCode {
    let cli = PluginCli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("a Tokio runtime starts");
    match runtime.block_on(run(cli)) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("kubectl reserve: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: PluginCli) -> Result<String, String> {
    let options = kube::config::KubeConfigOptions {
        context: cli.context.clone(),
        ..Default::default()
    };
    let config = match &cli.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| e.to_string())
        }
        None if cli.context.is_some() => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| e.to_string()),
        None => kube::Config::infer().await.map_err(|e| e.to_string()),
    }
    .map_err(|e| format!("no Kubernetes configuration: {e}"))?;
    let namespace = config.default_namespace.clone();
    let client = kube::Client::try_from(config)
        .map_err(|e| format!("cannot build a Kubernetes client: {e}"))?;
    plugin::run(cli, client, &namespace)
        .await
        .map_err(|e: PluginError| e.to_string())
}
