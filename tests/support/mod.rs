//! Test harness: a real etcd + kube-apiserver per test binary, the real kubectl, the audit log,
//! and the operator binary as a child process.
//!
//! Use it from any `tests/*.rs` with `mod support;`. See `ControlPlane::get`.
//!
//! Notes:
//! - There is no kube-controller-manager: deleted namespaces stay `Terminating` forever, there
//!   is no `default` ServiceAccount in new namespaces, and nothing garbage-collects. Use
//!   `fresh_namespace` per test instead of cleaning up.
//! - `restart_apiserver` / `stop_apiserver` affect every test of the binary that shares the
//!   control plane: keep them in tests that run alone (their own binary, or a lock).
//! - `RESERVE_TEST_KUBECONFIG=<path>` runs against that cluster instead; `is_local()` is then
//!   false and `audit()`, restarts and stops are unavailable (`skip_unless_local` prints a note).
//! - `RESERVE_TEST_KEEP=1` keeps the scratch directory (logs, certs, audit log) after exit.
#![allow(dead_code)]

mod audit;
mod process;

pub use audit::AuditEvent;
#[allow(unused_imports)]
pub use process::{OperatorProcess, watchdog};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use std::future::Future;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Custom resource definitions the harness installs and waits for.
pub const CRDS: [&str; 2] = [
    "customers.reserve.coffeechain.io",
    "orders.reserve.coffeechain.io",
];

/// How long to wait for the API server to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

pub struct ControlPlane {
    bin_dir: PathBuf,
    kubeconfig: PathBuf,
    kubectl_cache: PathBuf,
    local: Option<Local>,
    /// How long `get()` took on first use (start-up + CRD installation).
    pub startup: Duration,
}

/// What only a control plane started by this process has.
struct Local {
    dir: PathBuf,
    port: u16,
    apiserver_bin: PathBuf,
    apiserver_args: Vec<String>,
    apiserver_log: PathBuf,
    audit_log: PathBuf,
    apiserver: Mutex<Option<Child>>,
    _etcd: Child,
}

impl ControlPlane {
    /// The control plane of this test binary, started on first use. Blocking; safe to call from
    /// many tests and threads at once and from inside `#[tokio::test]`.
    pub fn get() -> &'static ControlPlane {
        static CELL: OnceLock<Result<ControlPlane, String>> = OnceLock::new();
        match CELL.get_or_init(|| {
            std::panic::catch_unwind(ControlPlane::start).map_err(|e| {
                e.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            })
        }) {
            Ok(cp) => cp,
            Err(e) => panic!("the test control plane failed to start: {e}"),
        }
    }

    fn start() -> ControlPlane {
        let began = Instant::now();
        let bin_dir = tools_bin_dir();
        let wd = watchdog();
        let kubectl_cache = wd.dir().join("kubectl-cache");
        let mut cp = match std::env::var_os("RESERVE_TEST_KUBECONFIG") {
            Some(path) => {
                eprintln!(
                    "support: using the cluster of RESERVE_TEST_KUBECONFIG={}",
                    path.to_string_lossy()
                );
                ControlPlane {
                    bin_dir,
                    kubeconfig: PathBuf::from(path),
                    kubectl_cache,
                    local: None,
                    startup: Duration::ZERO,
                }
            }
            None => start_local(bin_dir, kubectl_cache),
        };
        cp.install_crds();
        cp.startup = began.elapsed();
        eprintln!(
            "support: control plane ready in {:.1}s",
            cp.startup.as_secs_f64()
        );
        cp
    }

    fn install_crds(&self) {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/crds");
        let out = self.kubectl(&["apply", "-k", dir]);
        assert!(
            out.status.success(),
            "kubectl apply -k {dir} failed: {}",
            stderr(&out)
        );
        let mut args = vec!["wait", "--for", "condition=established", "--timeout=60s"];
        let names: Vec<String> = CRDS.iter().map(|c| format!("crd/{c}")).collect();
        args.extend(names.iter().map(String::as_str));
        let out = self.kubectl(&args);
        assert!(
            out.status.success(),
            "CRDs not established: {}",
            stderr(&out)
        );
    }

    /// Whether etcd and kube-apiserver are processes of this test binary (not an external cluster).
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

    /// Admin kubeconfig (group system:masters; server over TLS with the CA inline).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Where kubectl, kube-apiserver and etcd live.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    pub fn kubectl_path(&self) -> PathBuf {
        self.bin_dir.join("kubectl")
    }

    /// The API server's URL, e.g. `https://127.0.0.1:41234` (local control plane only).
    pub fn server(&self) -> String {
        format!("https://127.0.0.1:{}", self.local("server()").port)
    }

    /// A kubeconfig that acts as `user` in `groups` (plus `system:authenticated`): the admin
    /// credentials with `as:` / `as-groups:` (impersonation), honoured by kubectl and kube-rs.
    /// The audit log reports `user` as [`AuditEvent::user`].
    pub fn kubeconfig_as(&self, user: &str, groups: &[&str]) -> PathBuf {
        let mut kc = Kubeconfig::read_from(&self.kubeconfig).expect("read admin kubeconfig");
        let ctx_name = kc
            .current_context
            .clone()
            .expect("kubeconfig has a current-context");
        let ctx = kc
            .contexts
            .iter()
            .find(|c| c.name == ctx_name)
            .and_then(|c| c.context.clone())
            .expect("current context");
        let user_name = ctx.user.clone().expect("context has a user");
        let auth = kc
            .auth_infos
            .iter_mut()
            .find(|a| a.name == user_name)
            .and_then(|a| a.auth_info.as_mut())
            .expect("kubeconfig user");
        auth.impersonate = Some(user.to_string());
        auth.impersonate_groups =
            (!groups.is_empty()).then(|| groups.iter().map(|g| g.to_string()).collect());
        let safe: String = user
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = watchdog().unique_path(&format!("kubeconfig-as-{safe}"), ".yaml");
        std::fs::write(
            &path,
            serde_norway::to_string(&kc).expect("serialise kubeconfig"),
        )
        .expect("write kubeconfig");
        path
    }

    /// Admin client.
    pub async fn client(&self) -> Client {
        self.client_for(&self.kubeconfig).await
    }

    /// A client from any kubeconfig file (e.g. one from `kubeconfig_as`).
    pub async fn client_for(&self, kubeconfig: &Path) -> Client {
        let kc = Kubeconfig::read_from(kubeconfig)
            .unwrap_or_else(|e| panic!("read {}: {e}", kubeconfig.display()));
        let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .unwrap_or_else(|e| panic!("kubeconfig {}: {e}", kubeconfig.display()));
        Client::try_from(config).expect("build client")
    }

    /// The real kubectl with the admin kubeconfig.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with(&self.kubeconfig, args, None)
    }

    /// The real kubectl with the admin kubeconfig and `stdin` (e.g. `apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        self.kubectl_with(&self.kubeconfig, args, Some(stdin))
    }

    /// The real kubectl with any kubeconfig.
    pub fn kubectl_with(&self, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(self.kubectl_path());
        cmd.arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--cache-dir")
            .arg(&self.kubectl_cache)
            .args(args)
            .env_remove("KUBECONFIG")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run kubectl");
        let writer = stdin.map(|text| {
            let mut pipe = child.stdin.take().unwrap();
            let text = text.to_string();
            std::thread::spawn(move || {
                let _ = pipe.write_all(text.as_bytes());
            })
        });
        let out = child.wait_with_output().expect("wait for kubectl");
        if let Some(w) = writer {
            let _ = w.join();
        }
        out
    }

    /// The audit log so far, parsed (local control plane only).
    pub fn audit(&self) -> Vec<AuditEvent> {
        audit::parse_log(&self.local("audit()").audit_log)
    }

    /// `GET /metrics` of the API server (Prometheus text), via kubectl as admin.
    pub fn apiserver_metrics(&self) -> String {
        let out = self.kubectl(&["get", "--raw", "/metrics"]);
        assert!(
            out.status.success(),
            "GET /metrics failed: {}",
            stderr(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// kube-apiserver's own log so far (local control plane only).
    pub fn apiserver_logs(&self) -> String {
        std::fs::read_to_string(&self.local("apiserver_logs()").apiserver_log).unwrap_or_default()
    }

    /// Scratch directory of the local control plane (certs, logs, etcd data).
    pub fn dir(&self) -> &Path {
        &self.local("dir()").dir
    }

    /// Stops kube-apiserver (SIGTERM, SIGKILL after 15s); etcd keeps running with the data.
    pub fn stop_apiserver(&self) {
        let local = self.local("stop_apiserver()");
        let mut slot = local.apiserver.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mut child) = slot.take() {
            process::signal(child.id(), libc::SIGTERM);
            if process::wait_timeout(&mut child, Duration::from_secs(15)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Starts kube-apiserver again with the same flags and port and waits until it is ready.
    /// No-op if it is running.
    pub fn start_apiserver(&self) {
        let local = self.local("start_apiserver()");
        let mut slot = local.apiserver.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(spawn_apiserver(local));
            drop(slot);
            self.wait_ready();
        }
    }

    /// Stop, then start: etcd keeps the data.
    pub fn restart_apiserver(&self) {
        self.stop_apiserver();
        self.start_apiserver();
    }

    fn wait_ready(&self) {
        let local = self.local("wait_ready()");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let out = self.kubectl(&["get", "--raw", "/readyz", "--request-timeout=5s"]);
            if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok" {
                return;
            }
            let exited = local
                .apiserver
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                panic!(
                    "kube-apiserver exited ({status}):\n{}",
                    process::tail(&local.apiserver_log, 40)
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "kube-apiserver not ready after {READY_TIMEOUT:?}: {}\n{}",
                    stderr(&out),
                    process::tail(&local.apiserver_log, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The pinned control-plane binaries (built by `hack/control-plane-tools.sh` if missing).
fn tools_bin_dir() -> PathBuf {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/hack/control-plane-tools.sh");
    let out = Command::new(script)
        .stderr(Stdio::inherit())
        .output()
        .expect("run hack/control-plane-tools.sh");
    assert!(out.status.success(), "hack/control-plane-tools.sh failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        stderr(&out)
    );
}

fn start_local(bin_dir: PathBuf, kubectl_cache: PathBuf) -> ControlPlane {
    let wd = watchdog();
    let dir = wd.dir().join("control-plane");
    std::fs::create_dir_all(&dir).unwrap();

    // A CA, a serving certificate for 127.0.0.1/localhost, and the service-account signing key.
    openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "3650",
            "-subj",
            "/CN=reserve-test-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    openssl(
        &dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "apiserver.key",
            "-out",
            "apiserver.csr",
            "-subj",
            "/CN=kube-apiserver",
        ],
    );
    std::fs::write(
        dir.join("apiserver.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "apiserver.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "apiserver.crt",
            "-days",
            "3650",
            "-extfile",
            "apiserver.ext",
        ],
    );
    openssl(&dir, &["genrsa", "-out", "sa.key", "2048"]);

    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let token = format!("admin-{:x}-{nanos:x}", std::process::id());
    std::fs::write(
        dir.join("tokens.csv"),
        format!("{token},admin,admin-uid,\"system:masters\"\n"),
    )
    .unwrap();
    std::fs::write(dir.join("audit-policy.yaml"), audit::POLICY).unwrap();

    let [etcd_port, peer_port, port] = free_ports::<3>();
    let etcd_log = dir.join("etcd.log");
    let etcd_url = format!("http://127.0.0.1:{etcd_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let log = std::fs::File::create(&etcd_log).unwrap();
    let etcd = wd
        .spawn(
            Command::new(bin_dir.join("etcd"))
                .args(["--name", "default", "--data-dir"])
                .arg(dir.join("etcd"))
                .args([
                    "--listen-client-urls",
                    &etcd_url,
                    "--advertise-client-urls",
                    &etcd_url,
                ])
                .args([
                    "--listen-peer-urls",
                    &peer_url,
                    "--initial-advertise-peer-urls",
                    &peer_url,
                ])
                .args(["--initial-cluster", &format!("default={peer_url}")])
                .args(["--unsafe-no-fsync", "--log-level", "warn"])
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        )
        .expect("start etcd");

    let p = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let audit_log = dir.join("audit.log");
    let apiserver_args = vec![
        format!("--etcd-servers={etcd_url}"),
        "--bind-address=127.0.0.1".into(),
        "--advertise-address=127.0.0.1".into(),
        format!("--secure-port={port}"),
        format!("--cert-dir={}", p("apiserver-certs")),
        format!("--tls-cert-file={}", p("apiserver.crt")),
        format!("--tls-private-key-file={}", p("apiserver.key")),
        format!("--token-auth-file={}", p("tokens.csv")),
        "--authorization-mode=RBAC".into(),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
        format!("--service-account-key-file={}", p("sa.key")),
        format!("--service-account-signing-key-file={}", p("sa.key")),
        "--service-cluster-ip-range=10.0.0.0/24".into(),
        format!("--audit-policy-file={}", p("audit-policy.yaml")),
        format!("--audit-log-path={}", audit_log.display()),
        "--audit-log-mode=blocking".into(),
        "--audit-log-maxsize=0".into(),
        "--enable-priority-and-fairness=false".into(),
        "--endpoint-reconciler-type=none".into(),
        "--shutdown-delay-duration=0s".into(),
        "--profiling=false".into(),
        "--v=1".into(),
    ];
    let kubeconfig = dir.join("admin.kubeconfig");
    let ca = std::fs::read(dir.join("ca.crt")).unwrap();
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: reserve-test\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority-data: {}\ncontexts:\n- name: reserve-test\n  context:\n    cluster: reserve-test\n    user: admin\ncurrent-context: reserve-test\nusers:\n- name: admin\n  user:\n    token: {token}\n",
            base64(&ca)
        ),
    )
    .unwrap();

    let local = Local {
        dir: dir.clone(),
        port,
        apiserver_bin: bin_dir.join("kube-apiserver"),
        apiserver_args,
        apiserver_log: dir.join("kube-apiserver.log"),
        audit_log,
        apiserver: Mutex::new(None),
        _etcd: etcd,
    };
    let cp = ControlPlane {
        bin_dir,
        kubeconfig,
        kubectl_cache,
        local: Some(local),
        startup: Duration::ZERO,
    };
    cp.start_apiserver();
    cp
}

fn spawn_apiserver(local: &Local) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&local.apiserver_log)
        .unwrap();
    watchdog()
        .spawn(
            Command::new(&local.apiserver_bin)
                .args(&local.apiserver_args)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        )
        .expect("start kube-apiserver")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// Creates a namespace named `<prefix>-<random suffix>` and returns its name. Namespaces are
/// never finalized after deletion (no controller-manager), so tests do not delete them.
pub async fn fresh_namespace(client: &Client, prefix: &str) -> String {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            generate_name: Some(format!("{prefix}-")),
            labels: Some([("reserve-test".to_string(), "true".to_string())].into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let created = api
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    created.metadata.name.expect("created namespace has a name")
}

/// Polls `f` every 100ms until it returns `Some`, and returns that; panics naming `what` after
/// `timeout`.
pub async fn eventually<F, Fut, T>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
