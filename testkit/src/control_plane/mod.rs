//! One local control plane (etcd + kube-apiserver on loopback, no nodes) for the tests, the
//! benchmark, the demo and `make dev`, with one set of API server flags: RBAC, ServiceAccount
//! tokens, priority and fairness on (as in any real cluster), and an audit log of every request.

mod access;
mod kubeconfig;
mod processes;

use kubeconfig::{admin_kubeconfig, write_kubeconfig};

use std::{
    io::Write,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};
use serde::{Deserialize, Serialize};

use crate::{
    audit::{self, AuditEvent},
    certs,
    ports::free_port,
    process::{Lifetime, Proc, tail, watchdog},
    rbac::Identity,
    tools,
};

/// How long the API server may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// How the audit log is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditMode {
    /// Each request waits for its audit line: the log is complete when a request returns
    /// (tests count requests right after making them).
    Blocking,
    /// Lines are written in batches within a second, off the request path (the benchmark).
    Batch,
}

/// What to start.
#[derive(Clone, Debug)]
pub struct Options {
    /// Certificates, data, logs, kubeconfig.
    pub dir: PathBuf,
    pub lifetime: Lifetime,
    pub audit: AuditMode,
    /// A node joins: its kubelet gets a token (as `system:node:<name>`), and the API server a
    /// client certificate towards it (for `kubectl logs`).
    pub node: Option<String>,
    /// kube-apiserver serves `/debug/pprof` (to the admin), for profiling a benchmark.
    pub profiling: bool,
}

/// The bearer token of the node's kubelet, in the control plane's directory.
pub const NODE_TOKEN: &str = "node.token";

/// What a detached control plane leaves in its directory, so `down` and `env` find it again.
#[derive(Serialize, Deserialize)]
struct State {
    port: u16,
    etcd_pid: u32,
    apiserver_pid: u32,
}

pub struct ControlPlane {
    bin: PathBuf,
    kubeconfig: PathBuf,
    kubectl_cache: PathBuf,
    local: Option<Local>,
    /// How long the start took (both servers and the CRDs).
    pub startup: Duration,
}

/// What only a control plane started here has.
struct Local {
    dir: PathBuf,
    port: u16,
    lifetime: Lifetime,
    etcd_args: Vec<String>,
    apiserver_args: Vec<String>,
    etcd: Mutex<Option<Proc>>,
    apiserver: Mutex<Option<Proc>>,
}

impl ControlPlane {
    /// The control plane of this test binary, started on first use and killed when the binary
    /// exits. `RESERVE_TEST_KUBECONFIG=<path>` uses that cluster instead.
    pub fn shared() -> &'static ControlPlane {
        static CELL: OnceLock<Result<ControlPlane, String>> = OnceLock::new();
        let started = CELL.get_or_init(|| match std::env::var_os("RESERVE_TEST_KUBECONFIG") {
            Some(path) => {
                eprintln!(
                    "testkit: using the cluster of RESERVE_TEST_KUBECONFIG={}",
                    path.to_string_lossy()
                );
                ControlPlane::external(PathBuf::from(path))
            }
            None => ControlPlane::start(Options {
                dir: watchdog().dir().join("control-plane"),
                lifetime: Lifetime::ThisProcess,
                audit: AuditMode::Blocking,
                node: None,
                profiling: false,
            }),
        });
        match started {
            Ok(cp) => cp,
            Err(e) => panic!("the test control plane failed to start: {e}"),
        }
    }

    /// An existing cluster: no audit log, no restarts.
    pub fn external(kubeconfig: PathBuf) -> Result<ControlPlane, String> {
        let cp = ControlPlane {
            bin: tools::bin_dir()?.to_path_buf(),
            kubectl_cache: watchdog().dir().join("kubectl-cache"),
            kubeconfig,
            local: None,
            startup: Duration::ZERO,
        };
        cp.install()?;
        Ok(cp)
    }

    /// Starts etcd and kube-apiserver on free loopback ports and installs the CRDs.
    pub fn start(options: Options) -> Result<ControlPlane, String> {
        let began = Instant::now();
        let cp = Self::start_empty(options)?;
        cp.install()?;
        Ok(ControlPlane {
            startup: began.elapsed(),
            ..cp
        })
    }

    /// Starts etcd and kube-apiserver on free loopback ports, with nothing installed (an
    /// upgrade test installs an earlier release's API first).
    pub fn start_empty(options: Options) -> Result<ControlPlane, String> {
        let began = Instant::now();
        let bin = tools::bin_dir()?.to_path_buf();
        let dir = options.dir;
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let io = |what: &Path| {
            let what = what.display().to_string();
            move |e: std::io::Error| format!("{what}: {e}")
        };

        // The serving certificate also names the in-cluster address of the API server, so a
        // pod could reach it as https://kubernetes.default.svc.
        let ca = certs::write(
            &dir,
            &[
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1)),
            ],
            &[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
        )?;
        let token = random_token();
        let tokens = dir.join("tokens.csv");
        let mut users = format!("{token},admin,admin-uid,\"system:masters\"\n");
        if let Some(node) = &options.node {
            let node_token = random_token();
            users.push_str(&format!(
                "{node_token},system:node:{node},node-{node},\"system:nodes\"\n"
            ));
            std::fs::write(dir.join(NODE_TOKEN), &node_token).map_err(io(&dir))?;
        }
        std::fs::write(&tokens, users).map_err(io(&tokens))?;
        let policy = dir.join("audit-policy.yaml");
        std::fs::write(&policy, audit::POLICY).map_err(io(&policy))?;

        let [etcd_port, peer_port, port] = [free_port(), free_port(), free_port()];
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let p = |name: &str| dir.join(name).display().to_string();
        let etcd_args = vec![
            "--name=default".into(),
            format!("--data-dir={}", p("etcd")),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=default={peer_url}"),
            "--unsafe-no-fsync".into(),
            "--log-level=warn".into(),
        ];
        let mut apiserver_args = vec![
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={port}"),
            format!("--cert-dir={}", p("apiserver-certs")),
            format!("--tls-cert-file={}", p(certs::SERVING_CERT)),
            format!("--tls-private-key-file={}", p(certs::SERVING_KEY)),
            format!("--client-ca-file={}", p(certs::CA_CERT)),
            format!("--token-auth-file={}", p("tokens.csv")),
            "--authorization-mode=RBAC".into(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!(
                "--service-account-key-file={}",
                p(certs::SERVICE_ACCOUNT_PUBLIC_KEY)
            ),
            format!(
                "--service-account-signing-key-file={}",
                p(certs::SERVICE_ACCOUNT_KEY)
            ),
            "--service-cluster-ip-range=10.96.0.0/16".into(),
            format!("--audit-policy-file={}", p("audit-policy.yaml")),
            format!("--audit-log-path={}", p("audit.log")),
            "--audit-log-maxsize=0".into(),
            "--endpoint-reconciler-type=none".into(),
            "--shutdown-delay-duration=0s".into(),
            format!("--profiling={}", options.profiling),
            "--v=1".into(),
        ];
        if options.node.is_some() {
            apiserver_args.extend([
                format!(
                    "--kubelet-client-certificate={}",
                    p(certs::KUBELET_CLIENT_CERT)
                ),
                format!("--kubelet-client-key={}", p(certs::KUBELET_CLIENT_KEY)),
                "--kubelet-preferred-address-types=InternalIP".to_owned(),
            ]);
        }
        apiserver_args.extend(match options.audit {
            AuditMode::Blocking => vec!["--audit-log-mode=blocking".to_owned()],
            AuditMode::Batch => vec![
                "--audit-log-mode=batch".to_owned(),
                "--audit-log-batch-max-wait=1s".to_owned(),
            ],
        });

        let kubeconfig = dir.join("kubeconfig");
        write_kubeconfig(
            &kubeconfig,
            &admin_kubeconfig(&format!("https://127.0.0.1:{port}"), &ca, &token),
        )?;
        let cp = ControlPlane {
            bin,
            kubectl_cache: dir.join("kubectl-cache"),
            kubeconfig,
            local: Some(Local {
                dir,
                port,
                lifetime: options.lifetime,
                etcd_args,
                apiserver_args,
                etcd: Mutex::new(None),
                apiserver: Mutex::new(None),
            }),
            startup: Duration::ZERO,
        };
        cp.start_etcd()?;
        cp.start_apiserver()?;
        cp.save_state()?;
        Ok(ControlPlane {
            startup: began.elapsed(),
            ..cp
        })
    }

    /// A detached control plane started earlier in `dir`, if it still runs.
    pub fn attach(dir: &Path) -> Option<ControlPlane> {
        let state: State =
            serde_json::from_slice(&std::fs::read(dir.join("state.json")).ok()?).ok()?;
        let marker = dir.display().to_string();
        let apiserver = Proc::find(state.apiserver_pid, "kube-apiserver", &marker)?;
        let etcd = Proc::find(state.etcd_pid, "etcd", &marker);
        Some(ControlPlane {
            bin: tools::bin_dir().ok()?.to_path_buf(),
            kubeconfig: dir.join("kubeconfig"),
            kubectl_cache: dir.join("kubectl-cache"),
            local: Some(Local {
                dir: dir.to_path_buf(),
                port: state.port,
                lifetime: Lifetime::Detached,
                etcd_args: Vec::new(),
                apiserver_args: Vec::new(),
                etcd: Mutex::new(etcd),
                apiserver: Mutex::new(Some(apiserver)),
            }),
            startup: Duration::ZERO,
        })
    }

    fn save_state(&self) -> Result<(), String> {
        let local = self.local("save_state()");
        let pid = |slot: &Mutex<Option<Proc>>| {
            slot.lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map_or(0, Proc::pid)
        };
        let state = State {
            port: local.port,
            etcd_pid: pid(&local.etcd),
            apiserver_pid: pid(&local.apiserver),
        };
        let path = local.dir.join("state.json");
        std::fs::write(&path, serde_json::to_vec(&state).expect("state serialises"))
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Installs the API (`manifests/crds`: the CRDs and their status policy) and the
    /// operator's ServiceAccount and RBAC from `manifests/operator` with the real kubectl, and
    /// waits until the CRDs serve.
    pub fn install(&self) -> Result<(), String> {
        self.install_from(tools::repo_root())
    }

    /// [`install`](Self::install) from the tree at `root` (an earlier release's, for the
    /// upgrade tests), as an upgrade applies it: over whatever is installed.
    pub fn install_from(&self, root: &Path) -> Result<(), String> {
        let crds = root.join("manifests/crds").display().to_string();
        let out = self.kubectl(&["apply", "--server-side", "--force-conflicts", "-k", &crds]);
        if !out.status.success() {
            return Err(format!("kubectl apply -k {crds}: {}", text(&out)));
        }
        let operator = root.join("manifests/operator");
        // Settlement's ClusterRole too (unbound: tests bind it to the identities that settle).
        let files: Vec<String> = ["namespace.yaml", "serviceaccount.yaml", "rbac.yaml"]
            .iter()
            .map(|f| operator.join(f))
            .chain([root.join("manifests/settlement/clusterrole.yaml")])
            .map(|f| f.display().to_string())
            .collect();
        let mut args = vec!["apply", "--server-side", "--force-conflicts"];
        for file in &files {
            args.extend(["-f", file.as_str()]);
        }
        let out = self.kubectl(&args);
        if !out.status.success() {
            return Err(format!("installing the operator's RBAC: {}", text(&out)));
        }
        let out = self.kubectl(&[
            "wait",
            "--for=condition=established",
            "--timeout=60s",
            "crd/customers.reserve.coffeechain.io",
            "crd/orders.reserve.coffeechain.io",
            "crd/ledgers.reserve.coffeechain.io",
        ]);
        if !out.status.success() {
            return Err(format!("CRDs not established: {}", text(&out)));
        }
        Ok(())
    }

    /// Whether etcd and kube-apiserver are processes started here (not an external cluster).
    pub fn is_local(&self) -> bool {
        self.local.is_some()
    }

    /// True (after printing a note) when `what` needs a local control plane and there is none;
    /// tests `return` early on true.
    pub fn skip_unless_local(&self, what: &str) -> bool {
        if self.local.is_none() {
            eprintln!(
                "note: skipping {what}: needs a control plane started by the test (RESERVE_TEST_KUBECONFIG is set)"
            );
        }
        self.local.is_none()
    }

    fn local(&self, what: &str) -> &Local {
        self.local.as_ref().unwrap_or_else(|| {
            panic!("{what} is unavailable against an external cluster (RESERVE_TEST_KUBECONFIG)")
        })
    }

    /// Admin kubeconfig (group system:masters; the CA inline).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Where kubectl, kube-apiserver and etcd live.
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// The API server's URL, e.g. `https://127.0.0.1:41234` (local control plane only).
    pub fn server(&self) -> String {
        format!("https://127.0.0.1:{}", self.port())
    }

    /// The API server's port on 127.0.0.1 (local control plane only).
    pub fn port(&self) -> u16 {
        self.local("port()").port
    }

    /// etcd's client URL, e.g. `http://127.0.0.1:41235`, which also serves its `/metrics`
    /// (local control plane only).
    pub fn etcd_url(&self) -> String {
        self.local("etcd_url()")
            .etcd_args
            .iter()
            .find_map(|a| a.strip_prefix("--listen-client-urls="))
            .unwrap_or_default()
            .to_owned()
    }

    /// Scratch directory of the local control plane (certificates, logs, etcd data).
    pub fn dir(&self) -> &Path {
        &self.local("dir()").dir
    }
    /// The audit log so far (local control plane only).
    pub fn audit(&self) -> Vec<AuditEvent> {
        audit::read(&self.audit_files())
    }

    /// The audit log with everything the API server has answered until now (local control
    /// plane only). The log is written in batches; a marker request sent now shows when every
    /// event before it is in the file.
    pub async fn audit_until_now(&self) -> Vec<AuditEvent> {
        let marker = format!("audit-marker-{}", random_token());
        let request = http::Request::get(format!("/api/v1/namespaces/{marker}"))
            .body(Vec::new())
            .expect("a marker request");
        let _ = self.client().await.request_text(request).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let events = self.audit();
            if events.iter().any(|e| e.request_uri.contains(&marker)) {
                return events;
            }
            assert!(
                Instant::now() < deadline,
                "the audit log did not show the marker request within 10 s"
            );
            // A local file written by the API server's batch writer: nothing to watch.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The audit log and its rotated files (local control plane only).
    pub fn audit_files(&self) -> Vec<PathBuf> {
        audit::files(&self.local("audit()").dir.join("audit.log"))
    }

    /// `GET /metrics` of the API server (Prometheus text).
    pub fn apiserver_metrics(&self) -> String {
        let out = self.kubectl(&["get", "--raw", "/metrics"]);
        assert!(out.status.success(), "GET /metrics: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// kube-apiserver's own log so far (local control plane only).
    pub fn apiserver_logs(&self) -> String {
        std::fs::read_to_string(
            self.local("apiserver_logs()")
                .dir
                .join("kube-apiserver.log"),
        )
        .unwrap_or_default()
    }
}

/// A client from a kubeconfig file.
pub async fn client_for(kubeconfig: &Path) -> Client {
    let config = Kubeconfig::read_from(kubeconfig)
        .unwrap_or_else(|e| panic!("read {}: {e}", kubeconfig.display()));
    let config = Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("kubeconfig {}: {e}", kubeconfig.display()));
    Client::try_from(config).expect("build a client")
}

/// kubectl's stdout and stderr, for messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn random_token() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
