//! Every figure the benchmark reports, typed: a figure that is not measured does not compile.

use std::{collections::BTreeMap, time::Duration};

use serde::Serialize;

/// One point of the converge benchmark: a burst of order transitions and how the operator
/// catches up.
#[derive(Clone, Debug, Serialize)]
pub struct ConvergePoint {
    pub operator_binary: String,
    pub customers: usize,
    pub orders: usize,
    pub namespace: String,
    pub concurrency: usize,
    pub seed: u64,
    pub generator: Generator,
    /// The generator's time for the same plan on a namespace no operator watches, just before
    /// (none with --no-alone).
    pub generator_alone_seconds: Option<f64>,
    /// kube-apiserver's CPU over that run (100%: one core): how much room the users' own work
    /// leaves the operator.
    pub generator_alone_apiserver_cpu_percent: Option<f64>,
    /// From the generator's last write to the first moment a watch saw every Customer with its
    /// expected standing.
    pub converge_lag_seconds: f64,
    /// From the generator's last write to the first moment a watch saw every Order's receipt
    /// (phase, observed generation) current: receipts may come after the customers.
    pub receipts_lag_seconds: f64,
    /// From the generator's first write to the moment customers and receipts were both seen.
    pub total_seconds: f64,
    pub still_converged_after_settle: bool,
    pub operator: OperatorFigures,
    pub audit: AuditFigures,
    pub floor: Option<Floor>,
    /// Restarts with paged lists (the default), then streaming lists.
    pub restart: Restart,
    pub restart_streaming: Restart,
}

#[derive(Clone, Debug, Serialize)]
pub struct Generator {
    pub order_creations: usize,
    pub state_changes: usize,
    pub order_transitions: usize,
    pub customers_seconds: f64,
    pub orders_seconds: f64,
    pub state_changes_seconds: f64,
    pub seconds: f64,
    /// kube-apiserver's CPU from the generator's first write to its last (100%: one core).
    pub apiserver_cpu_percent: f64,
}

/// The operator process, from /proc and its /metrics.
#[derive(Clone, Debug, Default, Serialize)]
pub struct OperatorFigures {
    pub idle_rss_kib: u64,
    pub peak_rss_kib: u64,
    pub rss_kib: u64,
    pub cpu_seconds: f64,
    pub reconciles_customer: f64,
    pub reconciles_order: f64,
    pub reconcile_errors: f64,
    pub status_writes_customer: f64,
    pub status_writes_order: f64,
    pub status_writes_after_convergence: f64,
    pub cpu_microseconds_per_reconcile: f64,
}

/// The operator's requests in the point's namespace, from the API server's audit log.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AuditFigures {
    pub requests: u64,
    /// "verb resource[/subresource]" -> requests.
    pub by_request: BTreeMap<String, u64>,
    /// "verb resource[/subresource] code" -> answers other than 2xx.
    pub not_2xx: BTreeMap<String, u64>,
    pub order_status_writes: u64,
    pub customer_status_writes: u64,
    pub status_write_conflicts: u64,
    pub order_status_writes_per_transition: f64,
    pub customer_status_writes_per_transition: f64,
    pub customer_status_writes_per_customer: f64,
    /// Status writes between the generator's last write and convergence (customers and receipts).
    pub status_writes_in_tail: u64,
    pub status_writes_in_tail_per_second: f64,
    /// Any write after convergence and before the operator stopped.
    pub writes_after_convergence: u64,
    pub status_writes_after_convergence: u64,
}

/// The same final statuses written directly by the bench, with the operator stopped.
#[derive(Clone, Debug, Serialize)]
pub struct Floor {
    pub namespace: String,
    pub status_writes: usize,
    pub seconds: f64,
    pub writes_per_second: f64,
    pub converge_lag_over_floor: f64,
}

/// The operator stopped (SIGTERM) and started again once converged.
#[derive(Clone, Debug, Serialize)]
pub struct Restart {
    /// `paged` or `streaming` (`RESERVE_INITIAL_LIST`).
    pub initial_list: String,
    /// From the new process's start to /readyz 200.
    pub seconds_to_ready: f64,
    /// Status writes by the new process within the settle window.
    pub status_writes: f64,
    /// kube-apiserver's RSS before the restart, and how much it rose (at its peak, sampled every
    /// 20 ms) while the new process listed everything and settled.
    pub apiserver_rss_before_mib: f64,
    pub apiserver_peak_rss_growth_mib: f64,
    /// CPU (user + system) from the new process's start to /readyz 200: the operator's, and
    /// kube-apiserver's over the same span (which of them the wait is spent in).
    pub operator_cpu_seconds_to_ready: f64,
    pub apiserver_cpu_seconds_to_ready: f64,
    /// kube-apiserver's watch-cache consistency checks over the same span (each a full list
    /// from etcd; one that falls inside a restart is part of its API server CPU).
    pub apiserver_consistency_checks_to_ready: u64,
}

/// The freshness benchmark: a sustained rate of transitions and how stale statuses get.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Freshness {
    /// The operator binary measured.
    pub operator_binary: String,
    pub customers: usize,
    pub rate_per_second: f64,
    pub seconds: f64,
    pub flowschema: bool,
    /// Extra writers flooding the API server with order creations (0: none).
    pub flood_concurrency: usize,
    pub transitions: usize,
    pub achieved_rate_per_second: f64,
    /// Generator write answered -> a watch shows the customer's status reflecting it.
    pub customer: Latency,
    /// The customer p99 of each minute's transitions.
    pub customer_p99_ms_by_minute: Vec<f64>,
    /// Generator write answered -> a watch shows the order's phase.
    pub order: Latency,
    /// Generator write answered -> a watch shows the write itself (the order's spec): how late
    /// the operator learns of a change, and a status it writes shows, at this load.
    pub users_write_seen: Latency,
    /// The operator's side of the delay: kube-apiserver's answers to its status patches, their
    /// wait in priority and fairness, its customer reconciles.
    pub parts: crate::delay::DelayParts,
    /// From the generator's last write until the watches showed every status current (None:
    /// not within two minutes).
    pub caught_up_seconds: Option<f64>,
    /// Customers and Orders whose status in the store was not current after that.
    pub wrong_at_end: usize,
    pub order_status_writes_per_transition: f64,
    pub customer_status_writes_per_transition: f64,
    pub writes_per_transition: f64,
    /// Flood requests that were throttled (429) or failed.
    pub flood_requests: u64,
    pub flood_rejected: u64,
    /// kube-apiserver's CPU over the run (100: one core).
    pub apiserver_cpu_percent: f64,
    /// etcd's, and the bench's own (the generator and its watches), over the run: with the
    /// operator's, what the machine's cores were spent on.
    pub etcd_cpu_percent: f64,
    pub bench_cpu_percent: f64,
    pub operator: OperatorFigures,
}

/// The highest rate at which customers stay fresh.
pub const KNEE_P99_MS: f64 = 250.0;
pub const KNEE_MAX_MS: f64 = 1_000.0;

/// Per operator binary (and flood, and FlowSchema setting), the knee of a rate sweep: the
/// highest rate whose customer p99 is at most 250 ms and max at most 1 s, with no transition
/// missing (None: not even the lowest rate).
#[derive(Clone, Debug, Serialize)]
pub struct Knee {
    pub operator_binary: String,
    pub flowschema: bool,
    pub flood_concurrency: usize,
    pub rates: Vec<f64>,
    pub knee_per_second: Option<f64>,
}

impl Knee {
    /// The run of this knee's binary and settings at `rate`, if there was one.
    pub fn run_at<'a>(&self, runs: &'a [Freshness], rate: f64) -> Option<&'a Freshness> {
        runs.iter().find(|r| {
            r.operator_binary == self.operator_binary
                && r.flowschema == self.flowschema
                && r.flood_concurrency == self.flood_concurrency
                && (r.rate_per_second - rate).abs() < 1e-6
        })
    }
}

pub fn knees(runs: &[Freshness]) -> Vec<Knee> {
    let mut groups: Vec<(Knee, Vec<(f64, bool)>)> = Vec::new();
    for run in runs {
        let fresh = run.customer.p99_ms <= KNEE_P99_MS
            && run.customer.max_ms <= KNEE_MAX_MS
            && run.customer.missing == 0;
        let key = (
            run.operator_binary.as_str(),
            run.flowschema,
            run.flood_concurrency,
        );
        let at = groups.iter().position(|(k, _)| {
            (
                k.operator_binary.as_str(),
                k.flowschema,
                k.flood_concurrency,
            ) == key
        });
        let at = at.unwrap_or_else(|| {
            groups.push((
                Knee {
                    operator_binary: run.operator_binary.clone(),
                    flowschema: run.flowschema,
                    flood_concurrency: run.flood_concurrency,
                    rates: Vec::new(),
                    knee_per_second: None,
                },
                Vec::new(),
            ));
            groups.len() - 1
        });
        groups[at].1.push((run.rate_per_second, fresh));
    }
    groups
        .into_iter()
        .map(|(mut knee, mut runs)| {
            runs.sort_by(|a, b| a.0.total_cmp(&b.0));
            knee.rates = runs.iter().map(|(rate, _)| *rate).collect();
            // Fresh at every rate up to it: a lucky run past the knee does not count.
            knee.knee_per_second = runs
                .iter()
                .take_while(|(_, fresh)| *fresh)
                .last()
                .map(|(rate, _)| *rate);
            knee
        })
        .collect()
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub samples: usize,
    /// Transitions never seen within the wait.
    pub missing: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(mut millis: Vec<f64>, missing: usize) -> Latency {
        if millis.is_empty() {
            return Latency {
                missing,
                ..Latency::default()
            };
        }
        millis.sort_by(f64::total_cmp);
        let at = |q: f64| millis[((millis.len() - 1) as f64 * q).round() as usize];
        Latency {
            samples: millis.len(),
            missing,
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: millis[millis.len() - 1],
        }
    }
}

/// How one figure compares with its target.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub target: String,
    /// None when this run cannot tell (a slope needs a sweep).
    pub met: Option<bool>,
    pub measured: String,
}

impl Target {
    pub fn new(target: &str, met: impl Into<Option<bool>>, measured: String) -> Self {
        Self {
            target: target.into(),
            met: met.into(),
            measured,
        }
    }
}

/// RSS growth between two sweep points.
#[derive(Clone, Debug, Serialize)]
pub struct Growth {
    pub from_orders: usize,
    pub to_orders: usize,
    pub peak_rss_kib_per_extra_order: f64,
    pub settled_rss_kib_per_extra_order: f64,
}

/// One look at the long settlement run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SettlementSample {
    pub seconds: f64,
    /// Orders in etcd now.
    pub live_orders: u64,
    pub settled_orders: u64,
    /// etcd's database file, and what of it holds live data (compaction frees the rest for reuse).
    pub etcd_db_mib: f64,
    pub etcd_db_in_use_mib: f64,
    pub operator_rss_mib: f64,
}

/// The long settlement run: orders created over time, settled after a short age.
#[derive(Clone, Debug, Serialize)]
pub struct SettlementRun {
    pub customers: usize,
    pub orders: usize,
    pub rate_per_second: f64,
    pub settle_after_seconds: f64,
    pub generator_seconds: f64,
    pub achieved_rate_per_second: f64,
    /// From the first order until none was left and every score was exact.
    pub drained_seconds: f64,
    /// The live window: rate x settlement age (plus a pass), what etcd should hold at most.
    pub expected_window_orders: f64,
    pub peak_live_orders: u64,
    /// When the window was first full, and at the end of the generator.
    pub window_full: SettlementSample,
    pub generator_end: SettlementSample,
    pub peak_operator_rss_mib: f64,
    pub orders_settled: f64,
    pub ledgers: usize,
    /// At the end, against the generator's own ledger.
    pub customers_wrong: usize,
    pub orders_left: u64,
    pub operator: OperatorFigures,
    pub samples: Vec<SettlementSample>,
}

/// What the long settlement run is asked to do.
pub struct SettlementSettings {
    pub customers: usize,
    pub orders: usize,
    pub rate: f64,
    pub settle_after: Duration,
}

/// What the long settlement run measured, before the figures derived from it.
pub struct SettlementEnd {
    pub generated: std::time::Duration,
    pub drained: std::time::Duration,
    pub samples: Vec<SettlementSample>,
    pub settled: f64,
    pub ledgers: usize,
    pub customers_wrong: usize,
    pub orders_left: u64,
    pub operator: OperatorFigures,
}

impl SettlementRun {
    pub fn new(settings: &SettlementSettings, end: SettlementEnd) -> Self {
        let SettlementEnd {
            generated,
            drained,
            samples,
            settled,
            ledgers,
            customers_wrong,
            orders_left,
            operator,
        } = end;
        let window = settings.rate * settings.settle_after.as_secs_f64();
        let at = |seconds: f64| {
            samples
                .iter()
                .find(|s| s.seconds >= seconds)
                .or(samples.last())
                .cloned()
                .unwrap_or_default()
        };
        let full = 2.0 * settings.settle_after.as_secs_f64() + 10.0;
        SettlementRun {
            customers: settings.customers,
            orders: settings.orders,
            rate_per_second: settings.rate,
            settle_after_seconds: settings.settle_after.as_secs_f64(),
            generator_seconds: generated.as_secs_f64(),
            achieved_rate_per_second: settings.orders as f64 / generated.as_secs_f64(),
            drained_seconds: drained.as_secs_f64(),
            expected_window_orders: window,
            peak_live_orders: samples.iter().map(|s| s.live_orders).max().unwrap_or(0),
            window_full: at(full),
            generator_end: at(generated.as_secs_f64()),
            peak_operator_rss_mib: samples
                .iter()
                .map(|s| s.operator_rss_mib)
                .fold(0.0, f64::max),
            orders_settled: settled,
            ledgers,
            customers_wrong,
            orders_left,
            operator,
            samples,
        }
    }
}

/// A hand-over's catch-up: an operator started on a namespace where the whole plan was played
/// with none running; times from its start.
#[derive(Clone, Debug, Serialize)]
pub struct Handover {
    pub operator_binary: String,
    pub customers: usize,
    pub orders: usize,
    pub ready_seconds: f64,
    /// Until a watch saw every customer with its expected standing.
    pub customers_current_seconds: f64,
    /// Until a watch saw every order's receipt current (phase, observed generation).
    pub receipts_current_seconds: f64,
    pub status_writes_customer: f64,
    pub status_writes_order: f64,
    pub operator_cpu_seconds: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub date: String,
    pub machine: String,
    pub wall_seconds: f64,
    pub points: Vec<ConvergePoint>,
    pub rss_growth: Vec<Growth>,
    pub cpu_microseconds_per_reconcile_max_over_min: Option<f64>,
    pub freshness: Vec<Freshness>,
    pub knees: Vec<Knee>,
    /// The floor measured in the same run as the freshness runs, to read the knee against.
    pub freshness_floor: Option<Floor>,
    pub settlement: Option<SettlementRun>,
    pub handovers: Vec<Handover>,
    pub targets: Vec<Target>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(binary: &str, rate: f64, p99_ms: f64, max_ms: f64) -> Freshness {
        Freshness {
            operator_binary: binary.into(),
            rate_per_second: rate,
            customer: Latency {
                samples: 100,
                p99_ms,
                max_ms,
                ..Latency::default()
            },
            ..Freshness::default()
        }
    }

    #[test]
    fn the_knee_is_the_highest_rate_fresh_at_every_rate_below() {
        let runs = [
            run("old", 50.0, 20.0, 90.0),
            run("new", 50.0, 10.0, 50.0),
            run("old", 100.0, 130.0, 1_500.0),
            run("new", 100.0, 90.0, 200.0),
            run("old", 150.0, 100.0, 300.0),
            run("new", 150.0, 5_000.0, 9_000.0),
            run("new", 200.0, 100.0, 300.0),
        ];
        let knees = knees(&runs);
        let of = |binary: &str| {
            knees
                .iter()
                .find(|k| k.operator_binary == binary)
                .unwrap()
                .knee_per_second
        };
        assert_eq!(of("old"), Some(50.0), "a max over 1 s is past the knee");
        assert_eq!(
            of("new"),
            Some(100.0),
            "a lucky run past the knee does not count"
        );
        assert_eq!(knees[1].rates, [50.0, 100.0, 150.0, 200.0]);
        assert_eq!(
            self::knees(&[run("x", 50.0, 300.0, 400.0)])[0].knee_per_second,
            None
        );
    }

    #[test]
    fn percentiles_come_from_the_sorted_samples() {
        let latency = Latency::of((1..=100).rev().map(f64::from).collect(), 2);
        assert_eq!(latency.samples, 100);
        assert_eq!(latency.missing, 2);
        assert_eq!(latency.p50_ms, 51.0);
        assert_eq!(latency.p99_ms, 99.0);
        assert_eq!(latency.max_ms, 100.0);
        assert_eq!(Latency::of(Vec::new(), 3).samples, 0);
    }
}
