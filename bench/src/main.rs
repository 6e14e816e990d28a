//! `make bench`: the operator against a real control plane (the one the tests use, priority and
//! fairness on), as its own release process and its own ServiceAccount.
//!
//! ```sh
//! reserve-bench                                  # converge: 1,000 customers, 20,000 orders
//! reserve-bench --sweep                          # 1,000 / 5,000 / 20,000 orders
//! reserve-bench --customers 10000 --orders 100000
//! reserve-bench --skip-converge --freshness --rate 200 --seconds 60 --flood 0,256 --flowschema both
//! reserve-bench --skip-converge --freshness --rate 50,100,150,200 --operator old,new   # the knee
//! reserve-bench --skip-converge --settlement     # 200,000 orders over 10,000 customers, settled
//! reserve-bench --skip-converge --handover 5000 --operator old,new  # a hand-over's catch-up
//! ```
//!
//! Figures are printed as a table and written to `target/bench/` as JSON and text.

mod audit;
mod context;
mod converge;
mod delay;
mod figures;
mod floor;
mod freshness;
mod handover;
mod operator;
mod profile;
mod report;
mod rows;
mod settlement;

use std::{
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use clap::{Parser, ValueEnum};
use k8s_openapi::jiff::Timestamp;
use reserve_testkit::{
    AuditMode, ControlPlane, Identity, Lifetime, Options,
    control_plane::text,
    rbac,
    shop::{OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT},
    tools::repo_root,
};

use context::{Context, say};
use figures::{ConvergePoint, Growth, Summary};

const SWEEP: [usize; 3] = [1_000, 5_000, 20_000];
const FLOWCONTROL: &str = "manifests/operator/flowcontrol.yaml";

#[derive(Parser, Debug)]
#[command(
    name = "reserve-bench",
    about = "Benchmarks the operator against a real control plane"
)]
struct Args {
    /// Customers (fixed across a sweep).
    #[arg(long, default_value_t = 1_000)]
    customers: usize,
    /// Orders per converge point; several comma-separated values make a sweep.
    #[arg(long, value_delimiter = ',')]
    orders: Vec<usize>,
    /// Shorthand for --orders 1000,5000,20000.
    #[arg(long)]
    sweep: bool,
    /// Requests in flight at once, for the generator and the floor.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Give up when the customers have not converged this many seconds after the last write.
    #[arg(long, default_value_t = 600)]
    converge_timeout: u64,
    /// How long to watch for further writes after convergence (and after a restart), in seconds.
    #[arg(long, default_value_t = 5)]
    settle: u64,
    /// Skip the floor measurement.
    #[arg(long)]
    no_floor: bool,
    /// Skip the generator's run with no operator (e.g. for a point that measures only memory).
    #[arg(long)]
    no_alone: bool,
    /// Record kube-apiserver's CPU profile for this many seconds from each restart's start,
    /// into `target/bench/apiserver-<point>-restart-<lists>.pprof` (read with `go tool pprof`).
    #[arg(long)]
    profile_restarts: Option<u64>,
    /// Record kube-apiserver's CPU profile for this many seconds from the start of each run of
    /// the generator (with no operator, then with it), into
    /// `target/bench/apiserver-<point>-generator-{alone,operator}.pprof`.
    #[arg(long)]
    profile_generator: Option<u64>,
    /// Skip the converge points (e.g. to run only --freshness).
    #[arg(long)]
    skip_converge: bool,
    /// Also run the freshness benchmark.
    #[arg(long)]
    freshness: bool,
    /// Freshness: order transitions per second; several comma-separated values make a sweep
    /// (one control plane), which reports the knee.
    #[arg(long, value_delimiter = ',', default_value = "200")]
    rate: Vec<f64>,
    /// The operator binaries to measure, alternately at each converge point and each
    /// freshness rate (default: this tree's release build).
    #[arg(long, value_delimiter = ',')]
    operator: Vec<PathBuf>,
    /// Freshness: how long, in seconds.
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// Freshness: concurrency of another writer flooding the API server with order creations;
    /// several comma-separated values make several runs (0: no flood).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    flood: Vec<usize>,
    /// Also run the long settlement run (its own sizes: --settle-*).
    #[arg(long)]
    settlement: bool,
    /// Settlement run: customers.
    #[arg(long, default_value_t = 10_000)]
    settle_customers: usize,
    /// Settlement run: orders, created over time, each Completed (85%) or Canceled.
    #[arg(long, default_value_t = 200_000)]
    settle_orders: usize,
    /// Settlement run: orders created per second (80/s is what 2 cores sustain with settlement).
    #[arg(long, default_value_t = 80.0)]
    settle_rate: f64,
    /// Settlement run: the settlement age, in seconds.
    #[arg(long, default_value_t = 30)]
    settle_after: u64,
    /// A hand-over's catch-up: this many orders played with no operator running, then an
    /// operator started (each of --operator, alternately; several comma-separated values make
    /// several points).
    #[arg(long, value_delimiter = ',')]
    handover: Vec<usize>,
    /// Whether the operator's FlowSchema (manifests/operator/flowcontrol.yaml) is installed.
    #[arg(long, value_enum, default_value_t = FlowSchema::On)]
    flowschema: FlowSchema,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum FlowSchema {
    On,
    Off,
    Both,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new().expect("a Tokio runtime starts");
    let result = runtime.block_on(async {
        tokio::select! {
            result = run(args) => result,
            _ = tokio::signal::ctrl_c() => Err("interrupted".to_owned()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("bench: error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_absolute() {
                p
            } else {
                repo_root().join(p)
            }
        })
        .unwrap_or_else(|| repo_root().join("target"))
}

async fn run(args: Args) -> Result<(), String> {
    let points = match (&args.orders[..], args.sweep, args.skip_converge) {
        (_, _, true) => Vec::new(),
        ([], true, _) => SWEEP.to_vec(),
        ([], false, _) => vec![20_000],
        (orders, _, _) => orders.to_vec(),
    };
    if args.customers == 0
        || args.concurrency == 0
        || points.contains(&0)
        || args.handover.contains(&0)
        || args.rate.iter().any(|r| *r <= 0.0)
    {
        return Err("--customers, --orders, --concurrency and --rate must be positive".into());
    }
    let operator_bin = target_dir().join("release/reserve-operator");
    let binaries = match &args.operator[..] {
        [] => vec![operator_bin.clone()],
        given => given.to_vec(),
    };
    for binary in binaries.iter().chain([&operator_bin]) {
        if !binary.is_file() {
            return Err(format!(
                "{} is missing: cargo build --release --bin reserve-operator (make bench does)",
                binary.display()
            ));
        }
    }
    let out = target_dir().join("bench");
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let wall = Instant::now();

    let cluster = out.join("cluster");
    let _ = std::fs::remove_dir_all(&cluster);
    let cp = ControlPlane::start(Options {
        dir: cluster,
        lifetime: Lifetime::ThisProcess,
        audit: AuditMode::Batch,
        node: None,
        profiling: args.profile_restarts.is_some() || args.profile_generator.is_some(),
    })?;
    say(format!(
        "control plane ready in {:.1}s",
        cp.startup.as_secs_f64()
    ));
    let client = cp.client().await;
    let operator = Identity::service_account(OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT);
    let generator = Identity::user("reserve-bench");
    rbac::grant_cluster_role(&client, &generator, "cluster-admin").await;
    let mut ctx = Context {
        generator: cp.client_as(&generator).await,
        as_operator: cp.client_as(&operator).await,
        operator_kubeconfig: cp.kubeconfig_as(&operator),
        operator_user: operator.user,
        client,
        operator_bin: operator_bin.clone(),
        out: out.clone(),
        customers: args.customers,
        concurrency: args.concurrency,
        seed: args.seed,
        converge_timeout: args.converge_timeout,
        settle: args.settle,
        floor: !args.no_floor,
        alone: !args.no_alone,
        profile_restarts: args.profile_restarts.map(Duration::from_secs),
        profile_generator: args.profile_generator.map(Duration::from_secs),
        rate: args.rate[0],
        seconds: args.seconds,
        flowschema: args.flowschema != FlowSchema::Off,
        cp,
    };
    flowschema(&ctx, ctx.flowschema)?;

    let mut results = Vec::new();
    for (i, &orders) in points.iter().enumerate() {
        say(format!(
            "point {}/{}: {} customers, {orders} orders",
            i + 1,
            points.len(),
            args.customers
        ));
        for binary in &binaries {
            ctx.operator_bin = binary.clone();
            results.push(converge::run_point(&ctx, args.customers, orders).await?);
        }
    }
    ctx.operator_bin = operator_bin.clone();
    let mut fresh = Vec::new();
    if args.freshness {
        let settings: &[bool] = match args.flowschema {
            FlowSchema::On => &[true],
            FlowSchema::Off => &[false],
            FlowSchema::Both => &[true, false],
        };
        for &with in settings {
            flowschema(&ctx, with)?;
            ctx.flowschema = with;
            for &flood in &args.flood {
                for &rate in &args.rate {
                    for binary in &binaries {
                        ctx.rate = rate;
                        ctx.operator_bin = binary.clone();
                        say(format!(
                            "freshness: {rate}/s for {}s, FlowSchema {}, flood {flood}, {}",
                            args.seconds,
                            if with { "on" } else { "off" },
                            binary.display()
                        ));
                        fresh.push(freshness::run(&ctx, flood).await?);
                    }
                }
            }
        }
        ctx.operator_bin = operator_bin.clone();
    }
    let knees = figures::knees(&fresh);
    // What the API server allows for the operator's kind of write, in the same run.
    let freshness_floor = if args.freshness && ctx.floor {
        let plan = reserve_testkit::workload::Plan::new(ctx.customers, 5_000, ctx.seed);
        Some(
            floor::measure(
                &ctx.generator,
                &ctx.as_operator,
                &plan,
                ctx.concurrency,
                0.0,
            )
            .await?,
        )
    } else {
        None
    };

    let mut handovers = Vec::new();
    for &orders in &args.handover {
        for binary in &binaries {
            ctx.operator_bin = binary.clone();
            handovers.push(handover::run(&ctx, orders).await?);
        }
    }
    ctx.operator_bin = operator_bin.clone();

    let settled = if args.settlement {
        let settings = figures::SettlementSettings {
            customers: args.settle_customers,
            orders: args.settle_orders,
            rate: args.settle_rate,
            settle_after: Duration::from_secs(args.settle_after.max(1)),
        };
        Some(settlement::run(&ctx, &settings).await?)
    } else {
        None
    };

    // Between one binary's points, each larger than the one before.
    let growth: Vec<Growth> = binaries
        .iter()
        .flat_map(|binary| {
            let binary = binary.display().to_string();
            let theirs: Vec<_> = results
                .iter()
                .filter(|p| p.operator_binary == binary)
                .collect();
            theirs
                .windows(2)
                .filter(|w| w[1].orders > w[0].orders)
                .map(|w| {
                    let extra = (w[1].orders - w[0].orders) as f64;
                    let rise = |kib: fn(&ConvergePoint) -> u64| {
                        (kib(w[1]) as f64 - kib(w[0]) as f64) / extra
                    };
                    Growth {
                        from_orders: w[0].orders,
                        to_orders: w[1].orders,
                        peak_rss_kib_per_extra_order: rise(|p| p.operator.peak_rss_kib),
                        settled_rss_kib_per_extra_order: rise(|p| p.operator.rss_kib),
                    }
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let per_reconcile: Vec<f64> = results
        .iter()
        .map(|p| p.operator.cpu_microseconds_per_reconcile)
        .collect();
    let spread = (per_reconcile.len() > 1).then(|| {
        per_reconcile.iter().copied().fold(f64::MIN, f64::max)
            / per_reconcile.iter().copied().fold(f64::MAX, f64::min)
    });
    let targets = report::targets(&results, &growth, spread, &fresh, settled.as_ref());
    let summary = Summary {
        date: Timestamp::now().strftime("%Y-%m-%d").to_string(),
        machine: machine(),
        wall_seconds: wall.elapsed().as_secs_f64(),
        points: results,
        rss_growth: growth,
        cpu_microseconds_per_reconcile_max_over_min: spread,
        freshness: fresh,
        knees,
        freshness_floor,
        settlement: settled,
        handovers,
        targets,
    };
    let table = report::render(&summary);
    println!("{table}");
    let json = serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?;
    for (name, text) in [("summary.json", json), ("summary.txt", table)] {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    say(format!(
        "wrote {0}/summary.json and {0}/summary.txt",
        out.display()
    ));
    ctx.cp.stop();
    Ok(())
}

/// Installs or removes the operator's FlowSchema and PriorityLevelConfiguration.
fn flowschema(ctx: &Context, on: bool) -> Result<(), String> {
    let file = repo_root().join(FLOWCONTROL).display().to_string();
    let args: &[&str] = if on {
        &["apply", "--server-side", "-f", &file]
    } else {
        &["delete", "--ignore-not-found", "-f", &file]
    };
    let out = ctx.cp.kubectl(args);
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("kubectl {args:?}: {}", text(&out)))
    }
}

/// "2 cores (<model>), 24 GiB".
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024 / 1024);
    format!("{cores} cores ({model}), {memory} GiB")
}
