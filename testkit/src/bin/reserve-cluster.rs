//! A local control plane (etcd + kube-apiserver on loopback, no nodes) that outlives this
//! command, for the demo and for exploring: the same one the tests and the benchmark start.
//!
//! ```sh
//! reserve-cluster up     # start it (or reuse the running one), install the API; prints the kubeconfig path
//!                        # (the operator's own, as its ServiceAccount, is operator.kubeconfig beside it)
//! reserve-cluster env    # prints `export KUBECONFIG=... PATH=...`
//! reserve-cluster down   # stop it (by its recorded pids) and delete its data
//!
//! reserve-cluster up --node --image target/image/reserve-operator-0.2.0.oci.tar
//!                        # a control plane able to host pods plus one node (root); `down` tears
//!                        # everything down and says what, if anything, was left behind
//! ```

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use reserve_testkit::{
    AuditMode, ControlPlane, Identity, Lifetime, Options,
    node::Node,
    shop::{OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT},
    tools,
};

#[derive(Parser)]
#[command(
    name = "reserve-cluster",
    about = "A local control plane for the demo and for exploring"
)]
struct Args {
    /// State directory (certificates, etcd data, logs, kubeconfig).
    #[arg(long, env = "RESERVE_CLUSTER_DIR")]
    dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Action,
}

#[derive(Subcommand)]
enum Action {
    /// Start it, or reuse the one running in the directory; prints the kubeconfig path.
    Up {
        /// Also a node (kubelet, containerd, CNI bridge, controllers), so pods run.
        #[arg(long)]
        node: bool,
        /// OCI archives to import into the node's containerd.
        #[arg(long = "image", requires = "node")]
        images: Vec<PathBuf>,
    },
    /// Print the line that points kubectl at it.
    Env,
    /// Stop it and delete its directory.
    Down,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let dir = args.dir.unwrap_or_else(default_dir);
    match args.command {
        Action::Up { node: true, images } => {
            if dir.join("node.json").exists() {
                eprintln!(
                    "reserve-cluster: a node already runs in {} (down first)",
                    dir.display()
                );
                return ExitCode::FAILURE;
            }
            match Node::up(&dir, Lifetime::Detached, &images) {
                Ok(node) => {
                    println!("{}", node.cp.kubeconfig().display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("reserve-cluster: {e}");
                    if let Err(e) = Node::down(&dir) {
                        eprintln!("reserve-cluster: cleaning up: {e}");
                    }
                    ExitCode::FAILURE
                }
            }
        }
        Action::Up { node: false, .. } => {
            if let Some(running) = ControlPlane::attach(&dir) {
                eprintln!("reserve-cluster: already running ({})", dir.display());
                println!("{}", running.kubeconfig().display());
                return ExitCode::SUCCESS;
            }
            let _ = std::fs::remove_dir_all(&dir);
            eprintln!(
                "reserve-cluster: starting etcd and kube-apiserver in {}",
                dir.display()
            );
            match ControlPlane::start(Options {
                dir,
                lifetime: Lifetime::Detached,
                audit: AuditMode::Batch,
                node: None,
                profiling: false,
            }) {
                Ok(cp) => {
                    // The operator runs as its ServiceAccount: the status policy admits no one else.
                    let operator =
                        Identity::service_account(OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT);
                    let path = cp.dir().join("operator.kubeconfig");
                    if let Err(e) = cp.write_kubeconfig_as(&operator, &path) {
                        eprintln!("reserve-cluster: {e}");
                        cp.stop();
                        return ExitCode::FAILURE;
                    }
                    eprintln!(
                        "reserve-cluster: ready in {:.1}s at {}",
                        cp.startup.as_secs_f64(),
                        cp.server()
                    );
                    println!("{}", cp.kubeconfig().display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("reserve-cluster: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Action::Env => {
            let bin = tools::bin_dir()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            let kubeconfig = if dir.join("node.json").exists() {
                dir.join("control-plane/kubeconfig")
            } else {
                dir.join("kubeconfig")
            };
            println!(
                "export KUBECONFIG={} PATH={bin}:$PATH",
                kubeconfig.display()
            );
            ExitCode::SUCCESS
        }
        Action::Down if dir.join("node.json").exists() => match Node::down(&dir) {
            Ok(()) => {
                eprintln!("reserve-cluster: the node is down; nothing left behind");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("reserve-cluster: {e}");
                ExitCode::FAILURE
            }
        },
        Action::Down => {
            match ControlPlane::attach(&dir) {
                Some(cp) => {
                    cp.stop();
                    eprintln!("reserve-cluster: stopped");
                }
                None => {
                    let _ = std::fs::remove_dir_all(&dir);
                    eprintln!("reserve-cluster: nothing running in {}", dir.display());
                }
            }
            ExitCode::SUCCESS
        }
    }
}

fn default_dir() -> PathBuf {
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".local/state")
        });
    state.join("reserve-operator/cluster")
}
