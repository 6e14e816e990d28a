//! Convergence benchmark (issue 7): N customers and M orders driven through their states
//! against a local control plane, with the operator running as its own process.
//!
//! ```sh
//! hack/bench.sh                                   # 1,000 customers, 20,000 orders
//! hack/bench.sh --sweep                           # 1,000 customers, 1,000/5,000/20,000 orders
//! hack/bench.sh --orders 100000 --customers 1000  # any size
//! ```
//!
//! For every point (one number of orders) the bench:
//! 1. starts `target/release/reserve-operator run --namespace <ns>` with a kubeconfig that
//!    impersonates the user `reserve-operator`, so the API server's audit log tells its
//!    requests apart;
//! 2. creates the customers, then the orders (all `Requested`), then moves orders to
//!    `Completed` or `Canceled`, then refunds some `Completed` ones (`Canceled`), at
//!    `--concurrency` requests at once, with merge patches of `spec.state` under its own
//!    field manager;
//! 3. watches the customers and records when every status equals the expected one;
//! 4. waits `--settle` seconds and checks that the operator wrote nothing more;
//! 5. reads the operator's /metrics and /proc figures, stops it, and measures the floor: the
//!    same final statuses applied directly by the bench, in a fresh namespace, at the same
//!    concurrency;
//! 6. counts the operator's requests in the audit log.
//!
//! Figures are printed as a table and written to `target/bench/`.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt::Write as _,
    future::Future,
    io::{BufRead, BufReader, Read, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use clap::Parser;
use futures::{StreamExt, stream};
use k8s_openapi::{
    api::{
        core::v1::Namespace,
        rbac::v1::{ClusterRoleBinding, RoleRef, Subject},
    },
    jiff::Timestamp,
};
use kube::{
    Api, Client, ResourceExt,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{WatchStreamExt, watcher},
};
use reserve_operator::{
    controller::conditions,
    crd::{Customer, CustomerSpec, CustomerStatus, Order, OrderSpec, OrderState, OrderStatus},
    loyalty::{LevelPolicy, Tally},
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;

type Result<T, E = String> = std::result::Result<T, E>;

/// The user the operator's kubeconfig impersonates.
const OPERATOR_USER: &str = "reserve-operator";
/// Field manager of the generator's writes.
const GENERATOR: &str = "bench-generator";
/// Field manager of the floor measurement's status writes.
const FLOOR: &str = "bench-floor";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const ATTEMPTS: u32 = 6;
const SWEEP: [usize; 3] = [1_000, 5_000, 20_000];

#[derive(Parser, Debug)]
#[command(
    name = "converge",
    about = "Converge benchmark: customers and orders against a local control plane"
)]
struct Args {
    /// Customers per point (fixed across a sweep).
    #[arg(long, default_value_t = 1_000)]
    customers: usize,
    /// Orders per point; several comma-separated values make a sweep.
    #[arg(long, value_delimiter = ',')]
    orders: Vec<usize>,
    /// Shorthand for --orders 1000,5000,20000.
    #[arg(long)]
    sweep: bool,
    /// Requests in flight at once, for the generator and the floor measurement.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seed of the quantities, customers and fates of the orders.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Give up when the customers have not converged this many seconds after the last write.
    #[arg(long, default_value_t = 600)]
    converge_timeout: u64,
    /// How long to watch for further writes after convergence, in seconds.
    #[arg(long, default_value_t = 5)]
    settle: u64,
    /// State directory of the control plane (default: <target>/bench/cluster, not the
    /// developer's cluster).
    #[arg(long, env = "RESERVE_BENCH_CLUSTER_DIR")]
    cluster_dir: Option<PathBuf>,
    /// Leave the control plane running at the end (it is stopped by default).
    #[arg(long)]
    keep_cluster: bool,
    /// Skip the floor measurement.
    #[arg(long)]
    no_floor: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new().expect("a Tokio runtime starts");
    let result = runtime.block_on(async {
        tokio::select! {
            result = run(args) => result,
            _ = tokio::signal::ctrl_c() => Err("interrupted".to_owned()),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("bench: error: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_absolute() { p } else { repo().join(p) })
        .unwrap_or_else(|| repo().join("target"))
}

fn say(message: impl AsRef<str>) {
    eprintln!("bench: {}", message.as_ref());
}

async fn run(args: Args) -> Result<()> {
    let points = match (&args.orders[..], args.sweep) {
        ([], true) => SWEEP.to_vec(),
        ([], false) => vec![20_000],
        (orders, _) => orders.to_vec(),
    };
    if args.customers == 0 || args.concurrency == 0 || points.contains(&0) {
        return Err("--customers, --orders and --concurrency must be positive".into());
    }
    let operator_bin = target_dir().join("release/reserve-operator");
    if !operator_bin.is_file() {
        return Err(format!(
            "{} is missing; build it first: cargo build --release --bin reserve-operator (hack/bench.sh does)",
            operator_bin.display()
        ));
    }
    let out = target_dir().join("bench");
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let cluster_dir = args
        .cluster_dir
        .clone()
        .unwrap_or_else(|| out.join("cluster"));

    let wall = Instant::now();
    let cluster = Cluster::up(&cluster_dir, args.keep_cluster)?;
    let client = client_for(&cluster.kubeconfig).await?;
    let operator_kubeconfig = cluster.impersonating_kubeconfig(OPERATOR_USER)?;
    bind_cluster_admin(&client, OPERATOR_USER).await?;
    let run_id = Timestamp::now().as_second() % 100_000;

    let mut results = Vec::new();
    for (i, &orders) in points.iter().enumerate() {
        let point = Point {
            customers: args.customers,
            orders,
            namespace: format!("bench-{run_id}-{i}-o{orders}"),
            seed: args.seed,
        };
        say(format!(
            "point {}/{}: {} customers, {} orders in namespace {}",
            i + 1,
            points.len(),
            point.customers,
            point.orders,
            point.namespace
        ));
        let figures = run_point(
            &args,
            &point,
            &client,
            &cluster,
            &operator_bin,
            &operator_kubeconfig,
            &out,
        )
        .await?;
        let path = out.join(format!("converge-{orders}.json"));
        write_json(&path, &figures)?;
        say(format!("wrote {}", path.display()));
        results.push(figures);
    }

    let summary = summarize(&args, &results, wall.elapsed());
    let table = render(&summary);
    println!("{table}");
    let name = if results.len() > 1 {
        "summary-sweep"
    } else {
        "summary"
    };
    write_json(&out.join(format!("{name}.json")), &summary)?;
    std::fs::write(out.join(format!("{name}.txt")), &table)
        .map_err(|e| format!("writing the table: {e}"))?;
    say(format!(
        "wrote {0}/{name}.json and {0}/{name}.txt",
        out.display()
    ));
    drop(cluster);
    Ok(())
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("JSON values serialise");
    std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// Control plane and operator process

/// The local control plane of `hack/local-cluster.sh`; stopped when dropped.
struct Cluster {
    dir: PathBuf,
    kubeconfig: PathBuf,
    keep: bool,
}

impl Cluster {
    fn up(dir: &Path, keep: bool) -> Result<Self> {
        say(format!("starting the control plane in {}", dir.display()));
        // Stopped on drop from here on, even if `up` fails half-way.
        let mut cluster = Self {
            dir: dir.to_owned(),
            kubeconfig: PathBuf::new(),
            keep,
        };
        let output = Command::new(repo().join("hack/local-cluster.sh"))
            .arg("up")
            .env("RESERVE_CLUSTER_DIR", dir)
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("hack/local-cluster.sh up: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "hack/local-cluster.sh up failed ({})",
                output.status
            ));
        }
        let path = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        cluster.kubeconfig = PathBuf::from(path);
        Ok(cluster)
    }

    /// The audit log and its rotated parts (the API server rotates it every 100 MB into
    /// `audit-<time>.log`), oldest first.
    fn audit_logs(&self) -> Result<Vec<PathBuf>> {
        let mut logs: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map_err(|e| format!("{}: {e}", self.dir.display()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| {
                path.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("audit") && n.ends_with(".log"))
            })
            .collect();
        // "audit-<time>.log" sorts before "audit.log".
        logs.sort();
        Ok(logs)
    }

    /// A copy of the admin kubeconfig whose user impersonates `user` (`as: user`).
    fn impersonating_kubeconfig(&self, user: &str) -> Result<PathBuf> {
        let text = std::fs::read_to_string(&self.kubeconfig)
            .map_err(|e| format!("{}: {e}", self.kubeconfig.display()))?;
        let mut out = String::new();
        let mut added = false;
        for line in text.lines() {
            out.push_str(line);
            out.push('\n');
            if line == "  user:" && !added {
                let _ = writeln!(out, "    as: {user}");
                added = true;
            }
        }
        if !added {
            return Err(format!(
                "{}: no `  user:` entry to add `as: {user}` to",
                self.kubeconfig.display()
            ));
        }
        let path = self.dir.join(format!("kubeconfig-{user}"));
        std::fs::write(&path, out).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.keep {
            say(format!(
                "leaving the control plane running: RESERVE_CLUSTER_DIR={} hack/local-cluster.sh down",
                self.dir.display()
            ));
            return;
        }
        say("stopping the control plane");
        let status = Command::new(repo().join("hack/local-cluster.sh"))
            .arg("down")
            .env("RESERVE_CLUSTER_DIR", &self.dir)
            .stdout(Stdio::null())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            say(format!("hack/local-cluster.sh down failed: {status:?}"));
        }
    }
}

/// The operator as its own process; stopped (SIGTERM, then SIGKILL) when dropped.
struct Operator {
    child: Child,
    probe: SocketAddr,
    log: PathBuf,
}

impl Operator {
    fn start(bin: &Path, kubeconfig: &Path, namespace: &str, log: PathBuf) -> Result<Self> {
        let probe = free_port()?;
        let log_file =
            std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let child = Command::new(bin)
            .args(["run", "--no-leader-election", "--namespace", namespace])
            .arg("--probe-addr")
            .arg(probe.to_string())
            .env("KUBECONFIG", kubeconfig)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        Ok(Self { child, probe, log })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until /readyz answers 200 (both caches listed).
    async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "the operator exited ({status}) before it was ready; see {}",
                    self.log.display()
                ));
            }
            if let Ok((200, _)) = http_get(self.probe, "/readyz") {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(format!(
                    "the operator was not ready after {timeout:?}; see {}",
                    self.log.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn metrics(&self) -> Result<OperatorMetrics> {
        match http_get(self.probe, "/metrics")? {
            (200, body) => Ok(OperatorMetrics::parse(&body)),
            (code, _) => Err(format!("/metrics answered {code}")),
        }
    }

    fn process(&self) -> Result<ProcessStats> {
        ProcessStats::of(self.pid())
    }

    /// SIGTERM, then SIGKILL after 15 s.
    fn stop(&mut self) -> Result<()> {
        if self.child.try_wait().map_err(|e| e.to_string())?.is_some() {
            return Ok(());
        }
        // SAFETY: kill(2) on the pid of a child we have not reaped yet.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if self.child.try_wait().map_err(|e| e.to_string())?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        say("the operator did not stop within 15 s of SIGTERM; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
        Ok(())
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            say(format!("stopping the operator: {error}"));
            let _ = self.child.kill();
        }
    }
}

fn free_port() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("free port: {e}"))?;
    listener.local_addr().map_err(|e| e.to_string())
}

/// A minimal HTTP/1.1 GET (the probe server is local and plain HTTP).
fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("{addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("GET {path}: {e}"))?;
    let code = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("GET {path}: not an HTTP response"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

#[derive(Clone, Copy, Debug, Default)]
struct OperatorMetrics {
    customer_reconciles: u64,
    order_reconciles: u64,
    customer_status_writes: u64,
    order_status_writes: u64,
    reconcile_errors: u64,
}

impl OperatorMetrics {
    fn parse(text: &str) -> Self {
        let mut m = Self::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let value = value.parse::<f64>().unwrap_or(0.0) as u64;
            match series {
                r#"reserve_reconciles_total{controller="customer"}"# => {
                    m.customer_reconciles = value
                }
                r#"reserve_reconciles_total{controller="order"}"# => m.order_reconciles = value,
                r#"reserve_status_writes_total{controller="customer"}"# => {
                    m.customer_status_writes = value
                }
                r#"reserve_status_writes_total{controller="order"}"# => {
                    m.order_status_writes = value
                }
                s if s.starts_with("reserve_reconcile_errors_total") => m.reconcile_errors += value,
                _ => {}
            }
        }
        m
    }

    fn status_writes(&self) -> u64 {
        self.customer_status_writes + self.order_status_writes
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct ProcessStats {
    /// VmHWM, KiB.
    peak_rss_kib: u64,
    /// VmRSS, KiB.
    rss_kib: u64,
    /// utime + stime, seconds.
    cpu_seconds: f64,
}

impl ProcessStats {
    fn of(pid: u32) -> Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
        // Fields after the command name (which may hold spaces): state is field 3, utime 14,
        // stime 15.
        let rest: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| rest.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Ok(Self {
            peak_rss_kib: kib("VmHWM:"),
            rss_kib: kib("VmRSS:"),
            cpu_seconds: (ticks(11) + ticks(12)) as f64 / hz,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Client helpers

async fn client_for(kubeconfig: &Path) -> Result<Client> {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).map_err(|e| e.to_string())?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    Client::try_from(config).map_err(|e| e.to_string())
}

async fn bind_cluster_admin(client: &Client, user: &str) -> Result<()> {
    let api: Api<ClusterRoleBinding> = Api::all(client.clone());
    let name = format!("{user}-bench");
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: "cluster-admin".into(),
        },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "User".into(),
            name: user.into(),
            namespace: None,
        }]),
    };
    let pp = PatchParams::apply(GENERATOR).force();
    let patch = Patch::Apply(&binding);
    retry("bind cluster-admin", || api.patch(&name, &pp, &patch))
        .await
        .map(drop)
}

async fn create_namespace(client: &Client, name: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let pp = PostParams::default();
    create_idempotent(&format!("namespace {name}"), || api.create(&pp, &ns)).await
}

fn retriable(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => status.code == 429 || status.code >= 500 || status.code == 409,
        _ => true,
    }
}

/// Runs `f` until it succeeds, at most `ATTEMPTS` times, each bounded by `REQUEST_TIMEOUT`.
async fn retry<T, Fut>(what: &str, mut f: impl FnMut() -> Fut) -> Result<T>
where
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(100 << attempt.min(6))).await;
        }
        match tokio::time::timeout(REQUEST_TIMEOUT, f()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) if retriable(&error) => last = error.to_string(),
            Ok(Err(error)) => return Err(format!("{what}: {error}")),
            Err(_) => last = format!("no answer within {REQUEST_TIMEOUT:?}"),
        }
    }
    Err(format!("{what}: failed {ATTEMPTS} times; last: {last}"))
}

/// A create that counts "already exists" as done (a retry after a lost answer).
async fn create_idempotent<T, Fut>(what: &str, mut f: impl FnMut() -> Fut) -> Result<()>
where
    Fut: Future<Output = Result<T, kube::Error>>,
{
    retry(what, || {
        let fut = f();
        async move {
            match fut.await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 && s.reason == "AlreadyExists" => Ok(()),
                Err(e) => Err(e),
            }
        }
    })
    .await
}

/// Runs every job, `concurrency` at once; stops at the first error. Returns the wall time.
async fn run_all<T, F, Fut>(jobs: Vec<T>, concurrency: usize, f: F) -> Result<Duration>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let start = Instant::now();
    let mut results = stream::iter(jobs.into_iter().map(f)).buffer_unordered(concurrency);
    while let Some(result) = results.next().await {
        result?;
    }
    Ok(start.elapsed())
}

// ---------------------------------------------------------------------------------------------
// The workload

struct Point {
    customers: usize,
    orders: usize,
    namespace: String,
    seed: u64,
}

/// What the generator does with one order after creating it (`Requested`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// Stays Requested (10%).
    Open,
    /// Requested -> Completed (70%).
    Completed,
    /// Requested -> Completed -> Canceled, a refund (10%).
    Refunded,
    /// Requested -> Canceled (10%).
    CanceledWhileRequested,
}

impl Fate {
    fn final_state(self) -> OrderState {
        match self {
            Fate::Open => OrderState::Requested,
            Fate::Completed => OrderState::Completed,
            Fate::Refunded | Fate::CanceledWhileRequested => OrderState::Canceled,
        }
    }
}

struct PlannedOrder {
    name: String,
    customer: usize,
    quantity: i32,
    fate: Fate,
}

/// splitmix64: small, seeded, good enough to spread orders.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn customer_name(i: usize) -> String {
    format!("cust-{i:05}")
}

fn plan(point: &Point) -> Vec<PlannedOrder> {
    let mut rng = Rng(point.seed);
    (0..point.orders)
        .map(|i| {
            let customer = rng.below(point.customers as u64) as usize;
            let quantity = 1 + rng.below(5) as i32;
            let fate = match rng.below(100) {
                0..70 => Fate::Completed,
                70..80 => Fate::Refunded,
                80..90 => Fate::CanceledWhileRequested,
                _ => Fate::Open,
            };
            PlannedOrder {
                name: format!("ord-{i:06}"),
                customer,
                quantity,
                fate,
            }
        })
        .collect()
}

/// The status every customer must end with, by the generator's own bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Expected {
    score: i64,
    level: String,
    completed: i64,
    canceled: i64,
    open: i64,
}

impl Expected {
    fn matches(&self, status: Option<&CustomerStatus>) -> bool {
        status.is_some_and(|s| {
            s.score == self.score
                && s.level.as_deref() == Some(self.level.as_str())
                && s.completed_orders == self.completed
                && s.canceled_orders == self.canceled
                && s.open_orders == self.open
        })
    }
}

fn expected(point: &Point, orders: &[PlannedOrder]) -> HashMap<String, Expected> {
    let policy = LevelPolicy::default();
    let mut tallies = vec![Tally::default(); point.customers];
    for order in orders {
        tallies[order.customer].count(Some(order.fate.final_state()), i64::from(order.quantity));
    }
    tallies
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            (
                customer_name(i),
                Expected {
                    score: t.score,
                    level: policy.level_for(t.score).to_owned(),
                    completed: t.completed,
                    canceled: t.canceled,
                    open: t.open,
                },
            )
        })
        .collect()
}

fn order_object(order: &PlannedOrder, state: OrderState) -> Order {
    Order::new(
        &order.name,
        OrderSpec {
            customer: customer_name(order.customer),
            product: ["Americano", "Latte", "Flat White", "Mocha"][order.quantity as usize % 4]
                .into(),
            quantity: order.quantity,
            state,
        },
    )
}

fn customer_object(i: usize) -> Customer {
    Customer::new(
        &customer_name(i),
        CustomerSpec {
            display_name: Some(format!("Customer {i}")),
        },
    )
}

async fn create_customers(client: &Client, ns: &str, n: usize, c: usize) -> Result<Duration> {
    let api: Api<Customer> = Api::namespaced(client.clone(), ns);
    let pp = PostParams {
        field_manager: Some(GENERATOR.into()),
        ..Default::default()
    };
    run_all((0..n).collect(), c, |i| {
        let (api, pp) = (&api, &pp);
        async move {
            let customer = customer_object(i);
            create_idempotent(&format!("create customer {i}"), || {
                api.create(pp, &customer)
            })
            .await
        }
    })
    .await
}

async fn create_orders(
    client: &Client,
    ns: &str,
    orders: &[PlannedOrder],
    state: impl Fn(&PlannedOrder) -> OrderState,
    c: usize,
) -> Result<Duration> {
    let api: Api<Order> = Api::namespaced(client.clone(), ns);
    let pp = PostParams {
        field_manager: Some(GENERATOR.into()),
        ..Default::default()
    };
    run_all(orders.iter().collect(), c, |order| {
        let (api, pp) = (&api, &pp);
        let object = order_object(order, state(order));
        async move {
            create_idempotent(&format!("create order {}", order.name), || {
                api.create(pp, &object)
            })
            .await
        }
    })
    .await
}

/// Merge-patches spec.state of each order.
async fn set_states(
    client: &Client,
    ns: &str,
    changes: Vec<(&str, OrderState)>,
    c: usize,
) -> Result<Duration> {
    let api: Api<Order> = Api::namespaced(client.clone(), ns);
    let pp = PatchParams {
        field_manager: Some(GENERATOR.into()),
        ..Default::default()
    };
    run_all(changes, c, |(name, state)| {
        let (api, pp) = (&api, &pp);
        async move {
            let patch = Patch::Merge(json!({ "spec": { "state": state } }));
            retry(&format!("set {name} to {state}"), || {
                api.patch(name, pp, &patch)
            })
            .await
            .map(drop)
        }
    })
    .await
}

/// Progress of the customers towards their expected statuses, as seen by a watch.
#[derive(Clone, Debug, Default)]
struct Progress {
    matching: usize,
    /// Since when every customer has matched (None while some do not).
    all_since: Option<Instant>,
    events: u64,
}

/// Watches the customers of `ns` and publishes how many have their expected status.
fn watch_customers(
    client: &Client,
    ns: &str,
    expected: Arc<HashMap<String, Expected>>,
) -> (watch::Receiver<Progress>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(Progress::default());
    let api: Api<Customer> = Api::namespaced(client.clone(), ns);
    let task = tokio::spawn(async move {
        let mut matching = HashSet::<String>::new();
        let mut events = 0u64;
        let mut stream = std::pin::pin!(
            watcher::watcher(api, watcher::Config::default().any_semantic()).default_backoff()
        );
        while let Some(event) = stream.next().await {
            let customer = match event {
                Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c)) => c,
                Ok(watcher::Event::Delete(c)) => {
                    matching.remove(&c.name_any());
                    continue;
                }
                Ok(_) => continue,
                Err(error) => {
                    say(format!("customer watch: {error}; retrying"));
                    continue;
                }
            };
            events += 1;
            let name = customer.name_any();
            let ok = expected
                .get(&name)
                .is_some_and(|e| e.matches(customer.status.as_ref()));
            if ok {
                matching.insert(name);
            } else {
                matching.remove(&name);
            }
            let now_all = matching.len() == expected.len();
            tx.send_modify(|p| {
                p.matching = matching.len();
                p.events = events;
                p.all_since = match (now_all, p.all_since) {
                    (true, Some(since)) => Some(since),
                    (true, None) => Some(Instant::now()),
                    (false, _) => None,
                };
            });
        }
    });
    (rx, task)
}

// ---------------------------------------------------------------------------------------------
// One point

#[allow(clippy::too_many_arguments)]
async fn run_point(
    args: &Args,
    point: &Point,
    client: &Client,
    cluster: &Cluster,
    operator_bin: &Path,
    operator_kubeconfig: &Path,
    out: &Path,
) -> Result<Value> {
    let c = args.concurrency;
    let ns = point.namespace.as_str();
    let orders = plan(point);
    let expected = Arc::new(expected(point, &orders));

    create_namespace(client, ns).await?;
    let log = out.join(format!("operator-{}.log", point.orders));
    let mut operator = Operator::start(operator_bin, operator_kubeconfig, ns, log)?;
    operator.wait_ready(Duration::from_secs(60)).await?;
    let idle = operator.process()?;
    let (mut progress, watch_task) = watch_customers(client, ns, expected.clone());

    // The generator.
    let start = Instant::now();
    let t_customers = create_customers(client, ns, point.customers, c).await?;
    say(format!(
        "  {} customers created in {:.1}s",
        point.customers,
        t_customers.as_secs_f64()
    ));
    let t_orders = create_orders(client, ns, &orders, |_| OrderState::Requested, c).await?;
    say(format!(
        "  {} orders created in {:.1}s ({:.0}/s)",
        orders.len(),
        t_orders.as_secs_f64(),
        orders.len() as f64 / t_orders.as_secs_f64()
    ));
    let first: Vec<(&str, OrderState)> = orders
        .iter()
        .filter_map(|o| match o.fate {
            Fate::Open => None,
            Fate::Completed | Fate::Refunded => Some((o.name.as_str(), OrderState::Completed)),
            Fate::CanceledWhileRequested => Some((o.name.as_str(), OrderState::Canceled)),
        })
        .collect();
    let refunds: Vec<(&str, OrderState)> = orders
        .iter()
        .filter(|o| o.fate == Fate::Refunded)
        .map(|o| (o.name.as_str(), OrderState::Canceled))
        .collect();
    let state_changes = first.len() + refunds.len();
    let t_first = set_states(client, ns, first, c).await?;
    let t_refunds = set_states(client, ns, refunds, c).await?;
    let last_write = Instant::now();
    let generator_time = last_write - start;
    say(format!(
        "  {state_changes} state changes in {:.1}s; generator done after {:.1}s",
        (t_first + t_refunds).as_secs_f64(),
        generator_time.as_secs_f64()
    ));

    // Convergence, as seen by the watch.
    let deadline = last_write + Duration::from_secs(args.converge_timeout);
    let converged_at = loop {
        let waited = tokio::time::timeout(
            Duration::from_secs(10),
            progress.wait_for(|p| p.all_since.is_some()),
        )
        .await
        .map(|r| r.map(|p| p.all_since));
        match waited {
            Ok(Ok(since)) => break since.expect("waited for it"),
            Ok(Err(_)) => return Err("the customer watch ended".into()),
            Err(_) => {
                let p = progress.borrow().clone();
                if Instant::now() > deadline {
                    return Err(format!(
                        "not converged {}s after the last write: {}/{} customers match",
                        args.converge_timeout, p.matching, point.customers
                    ));
                }
                say(format!(
                    "  waiting: {}/{} customers match ({} watch events)",
                    p.matching, point.customers, p.events
                ));
            }
        }
    };
    let converged_wall = Timestamp::now() - (Instant::now() - converged_at);
    let last_write_wall = Timestamp::now() - (Instant::now() - last_write);
    let lag = converged_at.saturating_duration_since(last_write);
    let total = converged_at - start;
    say(format!(
        "  converged {:.3}s after the last write ({:.1}s in all)",
        lag.as_secs_f64(),
        total.as_secs_f64()
    ));

    // Quiet after convergence?
    let at_convergence = operator.metrics()?;
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let settled = operator.metrics()?;
    let proc_stats = operator.process()?;
    let still_matching = progress.borrow().all_since.is_some();
    operator.stop()?;
    watch_task.abort();
    let stopped_wall = Timestamp::now();

    // The floor: the same final statuses written directly, in a fresh namespace.
    let floor = if args.no_floor {
        None
    } else {
        Some(measure_floor(client, point, &orders, &expected, c).await?)
    };

    // Let the audit batch (max wait 1 s) reach the file.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let windows = Windows {
        last_write: last_write_wall,
        converged: converged_wall,
        stopped: stopped_wall,
    };
    let audit = Audit::read(&cluster.audit_logs()?, ns, &windows)?;

    let transitions = point.orders + state_changes;
    let figures = json!({
        "customers": point.customers,
        "orders": point.orders,
        "namespace": ns,
        "concurrency": c,
        "seed": point.seed,
        "generator": {
            "order_creations": point.orders,
            "state_changes": state_changes,
            "order_transitions": transitions,
            "customers_seconds": t_customers.as_secs_f64(),
            "orders_seconds": t_orders.as_secs_f64(),
            "state_changes_seconds": (t_first + t_refunds).as_secs_f64(),
            "seconds": generator_time.as_secs_f64(),
        },
        "converge_lag_seconds": lag.as_secs_f64(),
        "total_seconds": total.as_secs_f64(),
        "still_converged_after_settle": still_matching,
        "operator": {
            "idle_rss_kib": idle.rss_kib,
            "peak_rss_kib": proc_stats.peak_rss_kib,
            "rss_kib": proc_stats.rss_kib,
            "cpu_seconds": proc_stats.cpu_seconds,
            "reconciles_customer": settled.customer_reconciles,
            "reconciles_order": settled.order_reconciles,
            "reconcile_errors": settled.reconcile_errors,
            "status_writes_customer_metric": settled.customer_status_writes,
            "status_writes_order_metric": settled.order_status_writes,
            "status_writes_after_convergence_metric":
                settled.status_writes() - at_convergence.status_writes(),
            "cpu_microseconds_per_reconcile": proc_stats.cpu_seconds * 1e6
                / (settled.customer_reconciles + settled.order_reconciles).max(1) as f64,
        },
        "audit": audit.to_json(transitions, point.customers),
        "floor": floor.map(|f| f.to_json(lag)),
        "tail": {
            "status_writes": audit.status_writes_in_tail,
            "status_writes_per_second": audit.status_writes_in_tail as f64 / lag.as_secs_f64().max(1e-3),
        },
    });
    Ok(figures)
}

struct Floor {
    namespace: String,
    writes: usize,
    seconds: f64,
}

impl Floor {
    fn to_json(&self, lag: Duration) -> Value {
        json!({
            "namespace": self.namespace,
            "status_writes": self.writes,
            "seconds": self.seconds,
            "writes_per_second": self.writes as f64 / self.seconds,
            "converge_lag_over_floor": lag.as_secs_f64() / self.seconds,
        })
    }
}

/// Creates the same customers and orders (already in their final spec.state) in a fresh
/// namespace, untimed, then times server-side applies of exactly the final statuses: one per
/// order and one per customer, at the generator's concurrency. The operator is stopped by then.
async fn measure_floor(
    client: &Client,
    point: &Point,
    orders: &[PlannedOrder],
    expected: &HashMap<String, Expected>,
    c: usize,
) -> Result<Floor> {
    let ns = format!("{}-floor", point.namespace);
    create_namespace(client, &ns).await?;
    create_customers(client, &ns, point.customers, c).await?;
    create_orders(client, &ns, orders, |o| o.fate.final_state(), c).await?;

    let policy = LevelPolicy::default();
    let order_api: Api<Order> = Api::namespaced(client.clone(), &ns);
    let customer_api: Api<Customer> = Api::namespaced(client.clone(), &ns);
    let pp = PatchParams::apply(FLOOR).force();
    enum Write<'a> {
        Order(&'a PlannedOrder),
        Customer(String),
    }
    let mut writes: Vec<Write> = orders.iter().map(Write::Order).collect();
    writes.extend((0..point.customers).map(|i| Write::Customer(customer_name(i))));
    let count = writes.len();
    let seconds = run_all(writes, c, |write| {
        let (order_api, customer_api, pp, policy) = (&order_api, &customer_api, &pp, &policy);
        async move {
            match write {
                Write::Order(order) => {
                    let phase = order.fate.final_state();
                    let customer = customer_name(order.customer);
                    let status = OrderStatus {
                        phase: Some(phase),
                        customer_level: Some(policy.level_for(0).to_owned()),
                        observed_generation: Some(1),
                        conditions: vec![conditions::ready(
                            &[],
                            true,
                            "Accepted",
                            format!("{phase} order of customer {customer:?}"),
                            Some(1),
                        )],
                    };
                    let patch = Patch::Apply(json!({
                        "apiVersion": "reserve.coffeechain.io/v1alpha1",
                        "kind": "Order",
                        "status": status,
                    }));
                    retry(&format!("floor: status of {}", order.name), || {
                        order_api.patch_status(&order.name, pp, &patch)
                    })
                    .await
                    .map(drop)
                }
                Write::Customer(name) => {
                    let e = &expected[&name];
                    let status = CustomerStatus {
                        score: e.score,
                        level: Some(e.level.clone()),
                        completed_orders: e.completed,
                        canceled_orders: e.canceled,
                        open_orders: e.open,
                        observed_generation: Some(1),
                        conditions: vec![conditions::ready(
                            &[],
                            true,
                            "Reconciled",
                            format!(
                                "score {} from {} completed, {} canceled and {} open orders",
                                e.score, e.completed, e.canceled, e.open
                            ),
                            Some(1),
                        )],
                    };
                    let patch = Patch::Apply(json!({
                        "apiVersion": "reserve.coffeechain.io/v1alpha1",
                        "kind": "Customer",
                        "status": status,
                    }));
                    retry(&format!("floor: status of {name}"), || {
                        customer_api.patch_status(&name, pp, &patch)
                    })
                    .await
                    .map(drop)
                }
            }
        }
    })
    .await?
    .as_secs_f64();
    say(format!(
        "  floor: {count} status writes in {seconds:.2}s ({:.0}/s)",
        count as f64 / seconds
    ));
    Ok(Floor {
        namespace: ns,
        writes: count,
        seconds,
    })
}

// ---------------------------------------------------------------------------------------------
// Audit log

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuditEvent {
    stage: String,
    verb: String,
    #[serde(default)]
    impersonated_user: Option<AuditUser>,
    #[serde(default)]
    object_ref: Option<AuditObject>,
    #[serde(default)]
    response_status: Option<AuditStatus>,
    request_received_timestamp: String,
}

#[derive(Deserialize)]
struct AuditUser {
    username: String,
}

#[derive(Deserialize)]
struct AuditObject {
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    subresource: Option<String>,
}

#[derive(Deserialize)]
struct AuditStatus {
    #[serde(default)]
    code: u16,
}

/// When things happened, by the wall clock the audit log uses.
struct Windows {
    last_write: Timestamp,
    converged: Timestamp,
    stopped: Timestamp,
}

/// The operator's requests in one namespace, from the API server's audit log.
#[derive(Default)]
struct Audit {
    /// "verb resource[/subresource]" -> requests.
    by_request: BTreeMap<String, u64>,
    /// Same key, answers other than 2xx, with the code.
    failed: BTreeMap<String, u64>,
    order_status_writes: u64,
    customer_status_writes: u64,
    status_write_conflicts: u64,
    writes_after_convergence: u64,
    status_writes_after_convergence: u64,
    unparsed_lines: u64,
    /// Status writes between the generator's last write and convergence.
    status_writes_in_tail: u64,
    /// Writes after convergence by "verb resource[/subresource]".
    after_convergence: BTreeMap<String, u64>,
}

const WRITE_VERBS: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

impl Audit {
    /// Reads every part of the log (each point has its own namespace).
    fn read(paths: &[PathBuf], namespace: &str, windows: &Windows) -> Result<Self> {
        let mut audit = Self::default();
        for path in paths {
            let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
            for line in BufReader::new(file).lines() {
                let line = line.map_err(|e| format!("{}: {e}", path.display()))?;
                // Cheap filters before parsing.
                if line.contains(OPERATOR_USER) && line.contains(namespace) {
                    audit.count(&line, namespace, windows)?;
                }
            }
        }
        Ok(audit)
    }

    fn count(&mut self, line: &str, namespace: &str, windows: &Windows) -> Result<()> {
        let Ok(event) = serde_json::from_str::<AuditEvent>(line) else {
            // A line cut short at the end of a rotated part, say.
            self.unparsed_lines += 1;
            return Ok(());
        };
        let by_operator = event
            .impersonated_user
            .as_ref()
            .is_some_and(|u| u.username == OPERATOR_USER);
        let Some(object) = event.object_ref.as_ref() else {
            return Ok(());
        };
        // Watches end (ResponseComplete) only when the operator stops; count them when they
        // start instead.
        let counted_stage = if event.verb == "watch" {
            "ResponseStarted"
        } else {
            "ResponseComplete"
        };
        if !by_operator
            || object.namespace.as_deref() != Some(namespace)
            || event.stage != counted_stage
        {
            return Ok(());
        }
        let resource = object.resource.as_deref().unwrap_or("?");
        let key = match &object.subresource {
            Some(sub) => format!("{} {resource}/{sub}", event.verb),
            None => format!("{} {resource}", event.verb),
        };
        let code = event.response_status.as_ref().map_or(0, |s| s.code);
        *self.by_request.entry(key.clone()).or_default() += 1;
        let ok = (200..300).contains(&code);
        if !ok && event.verb != "watch" {
            *self.failed.entry(format!("{key} {code}")).or_default() += 1;
        }
        let is_write = WRITE_VERBS.contains(&event.verb.as_str());
        let is_status_write = is_write && object.subresource.as_deref() == Some("status");
        if is_status_write {
            match (resource, ok) {
                ("orders", true) => self.order_status_writes += 1,
                ("customers", true) => self.customer_status_writes += 1,
                (_, false) if code == 409 => self.status_write_conflicts += 1,
                _ => {}
            }
        }
        let received: Timestamp = event
            .request_received_timestamp
            .parse()
            .map_err(|e| format!("audit timestamp: {e}"))?;
        if is_status_write && ok && received > windows.last_write && received <= windows.converged {
            self.status_writes_in_tail += 1;
        }
        if is_write && received > windows.converged && received < windows.stopped {
            self.writes_after_convergence += 1;
            *self.after_convergence.entry(key).or_default() += 1;
            if is_status_write {
                self.status_writes_after_convergence += 1;
            }
        }
        Ok(())
    }

    fn to_json(&self, transitions: usize, customers: usize) -> Value {
        json!({
            "requests": self.by_request.values().sum::<u64>(),
            "by_request": self.by_request,
            "not_2xx": self.failed,
            "order_status_writes": self.order_status_writes,
            "customer_status_writes": self.customer_status_writes,
            "status_write_conflicts": self.status_write_conflicts,
            "order_status_writes_per_transition":
                self.order_status_writes as f64 / transitions as f64,
            "customer_status_writes_per_transition":
                self.customer_status_writes as f64 / transitions as f64,
            "customer_status_writes_per_customer":
                self.customer_status_writes as f64 / customers as f64,
            "writes_after_convergence": self.writes_after_convergence,
            "status_writes_after_convergence": self.status_writes_after_convergence,
            "writes_after_convergence_by_request": self.after_convergence,
            "unparsed_lines": self.unparsed_lines,
            "status_writes_between_last_write_and_convergence": self.status_writes_in_tail,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Summary and table

fn num(v: &Value, path: &str) -> f64 {
    path.split('.')
        .try_fold(v, |v, key| v.get(key))
        .and_then(Value::as_f64)
        .unwrap_or(f64::NAN)
}

fn summarize(args: &Args, points: &[Value], wall: Duration) -> Value {
    let growth: Vec<Value> = points
        .windows(2)
        .map(|w| {
            let extra = num(&w[1], "orders") - num(&w[0], "orders");
            json!({
                "from_orders": w[0]["orders"],
                "to_orders": w[1]["orders"],
                "peak_rss_kib_per_extra_order":
                    (num(&w[1], "operator.peak_rss_kib") - num(&w[0], "operator.peak_rss_kib")) / extra,
                "settled_rss_kib_per_extra_order":
                    (num(&w[1], "operator.rss_kib") - num(&w[0], "operator.rss_kib")) / extra,
            })
        })
        .collect();
    let per_reconcile: Vec<f64> = points
        .iter()
        .map(|p| num(p, "operator.cpu_microseconds_per_reconcile"))
        .collect();
    let spread = per_reconcile.iter().cloned().fold(f64::MIN, f64::max)
        / per_reconcile.iter().cloned().fold(f64::MAX, f64::min);

    // Targets, checked on the largest point.
    let big = points.last().cloned().unwrap_or(Value::Null);
    let transitions = num(&big, "generator.order_transitions");
    let rss_per_order = growth
        .iter()
        .map(|g| num(g, "peak_rss_kib_per_extra_order"))
        .fold(f64::NAN, f64::max);
    let rss_per_order_single = (num(&big, "operator.peak_rss_kib")
        - num(&big, "operator.idle_rss_kib"))
        / num(&big, "orders");
    let targets = json!([
        target(
            "converge lag <= 2 s",
            num(&big, "converge_lag_seconds") <= 2.0,
            format!("{:.3} s", num(&big, "converge_lag_seconds"))
        ),
        target(
            "order status writes <= 1 per order transition (creation = first attribution)",
            num(&big, "audit.order_status_writes") <= transitions,
            format!(
                "{} for {} transitions ({:.3}/transition)",
                num(&big, "audit.order_status_writes"),
                transitions,
                num(&big, "audit.order_status_writes_per_transition")
            )
        ),
        target(
            "customer status writes <= 0.5 per order transition",
            num(&big, "audit.customer_status_writes_per_transition") <= 0.5,
            format!(
                "{} ({:.3}/transition, {:.1}/customer)",
                num(&big, "audit.customer_status_writes"),
                num(&big, "audit.customer_status_writes_per_transition"),
                num(&big, "audit.customer_status_writes_per_customer")
            )
        ),
        target(
            "zero status writes after convergence",
            num(&big, "audit.status_writes_after_convergence") == 0.0
                && num(&big, "operator.status_writes_after_convergence_metric") == 0.0,
            format!(
                "{} status writes in the audit log over {} s after convergence, {} by /metrics; all writes: {}",
                num(&big, "audit.status_writes_after_convergence"),
                args.settle,
                num(&big, "operator.status_writes_after_convergence_metric"),
                big["audit"]["writes_after_convergence_by_request"]
            )
        ),
        target(
            "operator peak RSS <= 80 MiB",
            num(&big, "operator.peak_rss_kib") <= 80.0 * 1024.0,
            format!("{:.1} MiB", num(&big, "operator.peak_rss_kib") / 1024.0)
        ),
        target(
            "peak RSS growth <= 2 KiB per extra order",
            if growth.is_empty() {
                // (peak - idle) / orders bounds the slope from above; above 2 it tells nothing.
                (rss_per_order_single <= 2.0).then_some(true)
            } else {
                Some(rss_per_order <= 2.0)
            },
            if growth.is_empty() {
                format!(
                    "{rss_per_order_single:.2} KiB/order as (peak - idle RSS) / orders, an upper bound; run --sweep for the slope"
                )
            } else {
                format!("{rss_per_order:.2} KiB/order (largest slope between sweep points)")
            }
        ),
        target(
            "per-reconcile CPU independent of the number of orders",
            (points.len() > 1).then_some(spread <= 1.5),
            if points.len() > 1 {
                format!(
                    "{:?} us/reconcile; max/min {spread:.2} (<= 1.5 passes)",
                    per_reconcile
                        .iter()
                        .map(|v| (v * 10.0).round() / 10.0)
                        .collect::<Vec<_>>()
                )
            } else {
                format!("{:.1} us/reconcile; needs --sweep", per_reconcile[0])
            }
        ),
    ]);
    json!({
        "customers": args.customers,
        "customers_fixed_across_points": true,
        "concurrency": args.concurrency,
        "seed": args.seed,
        "wall_seconds": wall.as_secs_f64(),
        "points": points,
        "rss_growth": growth,
        "cpu_microseconds_per_reconcile_max_over_min": spread,
        "targets": targets,
        "notes": NOTES,
    })
}

/// `met`: None when this run cannot tell (e.g. a slope needs a sweep).
fn target(name: &str, met: impl Into<Option<bool>>, measured: String) -> Value {
    let met: Option<bool> = met.into();
    json!({ "target": name, "met": met, "measured": measured })
}

const NOTES: &str = "\
converge lag: from the generator's last write (its answer) to the first moment a watch on the \
customers saw every Customer with the expected score, level, completed/canceled/open counts. \
total: from the first generator write to that moment. \
order transitions: order creations (each needs one first-attribution status write) plus \
spec.state changes made by the generator. \
status writes: the operator's successful PATCH/PUT on orders/status and customers/status in the \
audit log (impersonated user reserve-operator, stage ResponseComplete). \
writes after convergence: any operator write received after the convergence moment and before \
the operator was stopped (settle window). \
floor: wall time for the API server to accept exactly the final statuses (one server-side apply \
per order and per customer) sent by the bench at the same concurrency into a fresh namespace \
holding the same objects, with the operator stopped; lag/floor compares the operator's tail \
after the last write with the time the API server needs to take every final status at once. \
tail: the operator's successful status writes received between the generator's last write and \
convergence, and their rate; a rate close to the floor's writes/s means the lag is a backlog \
of writes drained at the API server's pace. \
RSS: VmHWM (peak) and VmRSS of the operator process; CPU: utime+stime; reconciles and status \
writes: the operator's /metrics. Customers are fixed across a sweep; only orders grow.";

/// A table row: label, JSON path in a point, format.
type Row = (&'static str, &'static str, fn(f64) -> String);

fn render(summary: &Value) -> String {
    let points = summary["points"].as_array().cloned().unwrap_or_default();
    let rows: [Row; 28] = [
        ("customers", "customers", int),
        ("orders", "orders", int),
        ("order transitions", "generator.order_transitions", int),
        ("generator time (s)", "generator.seconds", f1),
        ("  create orders (s)", "generator.orders_seconds", f1),
        ("  state changes (s)", "generator.state_changes_seconds", f1),
        ("converge lag (s)", "converge_lag_seconds", f3),
        ("total wall (s)", "total_seconds", f1),
        ("floor: final status writes", "floor.status_writes", int),
        ("floor: time (s)", "floor.seconds", f2),
        ("lag / floor", "converge_lag_over_floor_placeholder", f2),
        ("tail: operator status writes", "tail.status_writes", int),
        (
            "tail: status writes/s",
            "tail.status_writes_per_second",
            int,
        ),
        ("operator API requests", "audit.requests", int),
        ("order status writes", "audit.order_status_writes", int),
        (
            "  per order transition",
            "audit.order_status_writes_per_transition",
            f3,
        ),
        ("  by /metrics", "operator.status_writes_order_metric", int),
        (
            "customer status writes",
            "audit.customer_status_writes",
            int,
        ),
        (
            "  per order transition",
            "audit.customer_status_writes_per_transition",
            f3,
        ),
        (
            "  per customer",
            "audit.customer_status_writes_per_customer",
            f1,
        ),
        (
            "  by /metrics",
            "operator.status_writes_customer_metric",
            int,
        ),
        (
            "status write conflicts (409)",
            "audit.status_write_conflicts",
            int,
        ),
        (
            "writes after convergence",
            "audit.writes_after_convergence",
            int,
        ),
        ("peak RSS (MiB)", "operator.peak_rss_kib", mib),
        ("CPU (s)", "operator.cpu_seconds", f1),
        ("reconciles customer", "operator.reconciles_customer", int),
        ("reconciles order", "operator.reconciles_order", int),
        (
            "CPU per reconcile (us)",
            "operator.cpu_microseconds_per_reconcile",
            f1,
        ),
    ];
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{:<32}{}",
        "figure",
        points
            .iter()
            .map(|p| format!("{:>14}", format!("{} orders", p["orders"])))
            .collect::<String>()
    );
    for (label, path, fmt) in rows {
        let _ = write!(out, "{label:<32}");
        for p in &points {
            let v = if path == "converge_lag_over_floor_placeholder" {
                num(p, "floor.converge_lag_over_floor")
            } else {
                num(p, path)
            };
            let _ = write!(out, "{:>14}", if v.is_nan() { "-".into() } else { fmt(v) });
        }
        out.push('\n');
    }
    for g in summary["rss_growth"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "peak RSS growth {} -> {} orders: {:.2} KiB per extra order (settled RSS: {:.2})",
            g["from_orders"],
            g["to_orders"],
            num(g, "peak_rss_kib_per_extra_order"),
            num(g, "settled_rss_kib_per_extra_order")
        );
    }
    let _ = writeln!(out, "\noperator requests by verb and resource (audit log):");
    let mut keys = BTreeMap::<String, Vec<String>>::new();
    for (i, p) in points.iter().enumerate() {
        for (k, v) in p["audit"]["by_request"].as_object().into_iter().flatten() {
            keys.entry(k.clone())
                .or_insert_with(|| vec!["-".into(); points.len()])[i] = v.to_string();
        }
    }
    for (k, vs) in keys {
        let _ = writeln!(
            out,
            "  {k:<30}{}",
            vs.iter().map(|v| format!("{v:>14}")).collect::<String>()
        );
    }
    for p in &points {
        if let Some(failed) = p["audit"]["not_2xx"].as_object().filter(|f| !f.is_empty()) {
            let _ = writeln!(
                out,
                "  not 2xx at {} orders: {}",
                p["orders"],
                Value::Object(failed.clone())
            );
        }
    }
    let _ = writeln!(out, "\ntargets (checked on the largest point):");
    for t in summary["targets"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  [{}] {}: {}",
            match t["met"].as_bool() {
                Some(true) => "met",
                Some(false) => "NOT MET",
                None => "n/a",
            },
            t["target"].as_str().unwrap_or_default(),
            t["measured"].as_str().unwrap_or_default()
        );
    }
    let _ = writeln!(out, "\nnotes: {NOTES}");
    out
}

fn int(v: f64) -> String {
    format!("{v:.0}")
}
fn f1(v: f64) -> String {
    format!("{v:.1}")
}
fn f2(v: f64) -> String {
    format!("{v:.2}")
}
fn f3(v: f64) -> String {
    format!("{v:.3}")
}
fn mib(v: f64) -> String {
    format!("{:.1}", v / 1024.0)
}
