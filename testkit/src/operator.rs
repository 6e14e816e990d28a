//! The operator under test: as its own process (signals, probes, leader hand-over: what a
//! kubelet would see), or inside the test process against the same real API server (reconcile
//! behaviour, fast to start and stop).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, ExitStatus},
    time::Duration,
};

use clap::Parser;
use kube::Client;
use reserve_operator::{
    cli::{Cli, Command as OperatorCommand, RunArgs},
    operator,
};
use tokio::{sync::oneshot, task::JoinHandle};

use crate::{
    ports::free_port,
    probe::Probe,
    process::{Lifetime, Proc, watchdog},
};

/// The operator binary of the package under test (integration tests of the root package only).
#[macro_export]
macro_rules! operator_bin {
    () => {
        env!("CARGO_BIN_EXE_reserve-operator")
    };
}

/// `reserve-operator run` as a child process, its output in a log file.
pub struct OperatorProcess {
    proc: Proc,
    log: PathBuf,
    probe: Probe,
}

/// How to start an [`OperatorProcess`].
pub struct Launch {
    bin: PathBuf,
    kubeconfig: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: Option<PathBuf>,
}

impl Launch {
    /// `bin run` with `KUBECONFIG=kubeconfig` and a probe address of its own.
    pub fn new(bin: impl Into<PathBuf>, kubeconfig: &Path) -> Self {
        Self {
            bin: bin.into(),
            kubeconfig: kubeconfig.to_path_buf(),
            args: vec!["run".into()],
            env: Vec::new(),
            log: None,
        }
    }

    /// One replica of a leader-elected pair, acting as `identity` on the shared control plane:
    /// watching `namespace`, its Lease in `lease_namespace`, named `name` in the Lease.
    pub fn replica(
        bin: impl Into<PathBuf>,
        identity: &crate::Identity,
        name: &str,
        namespace: &str,
        lease_namespace: &str,
    ) -> Self {
        Self::new(bin, &crate::ControlPlane::shared().kubeconfig_as(identity)).args([
            "--namespace",
            namespace,
            "--lease-namespace",
            lease_namespace,
            "--identity",
            name,
        ])
    }

    /// Where its output goes (default: a file in the scratch directory).
    pub fn log(mut self, path: PathBuf) -> Self {
        self.log = Some(path);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn spawn(self) -> OperatorProcess {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = self
            .log
            .unwrap_or_else(|| watchdog().unique_path("operator", ".log"));
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.args)
            .arg("--probe-addr")
            .arg(addr.to_string())
            .env("KUBECONFIG", &self.kubeconfig)
            .envs(self.env);
        let proc = Proc::spawn(&mut cmd, &log, Lifetime::ThisProcess)
            .unwrap_or_else(|e| panic!("start {}: {e}", self.bin.display()));
        OperatorProcess {
            proc,
            log,
            probe: Probe::new(addr),
        }
    }
}

/// Which of `replicas` reports that it leads, once one does.
pub async fn leader_of(replicas: &[&OperatorProcess]) -> usize {
    crate::eventually(crate::FAIL_AFTER, "a leader", || async {
        for (i, replica) in replicas.iter().enumerate() {
            if replica.probe().is_leader().await == Some(true) {
                return Some(i);
            }
        }
        None
    })
    .await
}

impl OperatorProcess {
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn probe(&self) -> &Probe {
        &self.probe
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything it printed so far (stdout and stderr interleaved).
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, signal: i32) {
        self.proc.signal(signal);
    }

    /// Asks it to stop (SIGTERM); see [`OperatorProcess::wait_exit`].
    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM);
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.proc.wait_exit(timeout)
    }

    pub fn running(&mut self) -> bool {
        self.proc.running()
    }

    /// Memory and CPU so far.
    pub fn stats(&self) -> Option<crate::process::ProcStats> {
        self.proc.stats()
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- log of the operator (pid {}) ----\n{}",
                self.pid(),
                self.logs()
            );
        }
        self.proc.kill();
    }
}

/// The operator running inside the test process on `client`, stopped (gracefully) when dropped
/// or by [`InProcessOperator::stop`]. Needs a multi-threaded Tokio runtime.
pub struct InProcessOperator {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), String>>>,
    probe: Probe,
}

impl InProcessOperator {
    /// Starts it with the flags of `reserve-operator run` (a probe address is added).
    pub async fn start(client: Client, args: &[&str]) -> Self {
        let mut argv = vec!["reserve-operator", "run"];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["--probe-addr", "127.0.0.1:0"]);
        let args: RunArgs = match Cli::try_parse_from(argv) {
            Ok(Cli {
                command: OperatorCommand::Run(args),
            }) => args,
            Ok(_) => unreachable!("the command is run"),
            Err(e) => panic!("bad operator flags {args:?}: {e}"),
        };
        let listener = operator::bind_probes(args.probe_addr)
            .await
            .expect("bind the probe port");
        let addr = listener.local_addr().expect("a bound address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(operator::run(
            client,
            "default".into(),
            args,
            listener,
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            stop: Some(stop),
            task: Some(task),
            probe: Probe::new(addr),
        }
    }

    pub fn probe(&self) -> &Probe {
        &self.probe
    }

    /// Stops it as SIGTERM would and waits until it has.
    pub async fn stop(mut self) -> Result<(), String> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(|e| e.to_string())?,
            None => Ok(()),
        }
    }
}

impl Drop for InProcessOperator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
