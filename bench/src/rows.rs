//! The rows of the converge points' table: one figure of every point per row.

use crate::figures::{ConvergePoint, Restart};

/// A row: its label, and how a point shows its figure.
pub type Row = (String, Box<dyn Fn(&ConvergePoint) -> String>);

/// A figure of a `T`: its label, and how it is shown.
type Figure<T> = (&'static str, fn(&T) -> String);

/// Which of a point's restarts.
type RestartOf = fn(&ConvergePoint) -> &Restart;

/// What each restart shows, under its own prefix.
const RESTART: [Figure<Restart>; 6] = [
    ("ready after (s)", |r| f(r.seconds_to_ready, 2)),
    ("status writes", |r| f(r.status_writes, 0)),
    ("API server RSS +MiB", |r| {
        f(r.apiserver_peak_rss_growth_mib, 1)
    }),
    ("CPU to ready, operator (s)", |r| {
        f(r.operator_cpu_seconds_to_ready, 2)
    }),
    ("CPU to ready, API server (s)", |r| {
        f(r.apiserver_cpu_seconds_to_ready, 2)
    }),
    ("API server consistency checks", |r| {
        r.apiserver_consistency_checks_to_ready.to_string()
    }),
];

/// `v` with `decimals` decimals.
pub fn f(v: f64, decimals: usize) -> String {
    format!("{v:.decimals$}")
}

/// Every row, in the order printed.
pub fn converge() -> Vec<Row> {
    let before: [Figure<ConvergePoint>; 21] = [
        ("operator", |p| {
            std::path::Path::new(&p.operator_binary)
                .file_name()
                .map_or(p.operator_binary.clone(), |n| {
                    n.to_string_lossy().into_owned()
                })
        }),
        ("customers", |p| p.customers.to_string()),
        ("orders", |p| p.orders.to_string()),
        ("order transitions", |p| {
            p.generator.order_transitions.to_string()
        }),
        ("generator time (s)", |p| f(p.generator.seconds, 1)),
        ("  with no operator (s)", |p| {
            p.generator_alone_seconds.map_or("-".into(), |s| f(s, 1))
        }),
        ("  kube-apiserver CPU (%)", |p| {
            f(p.generator.apiserver_cpu_percent, 0)
        }),
        ("  with no operator: kube-apiserver CPU (%)", |p| {
            p.generator_alone_apiserver_cpu_percent
                .map_or("-".into(), |c| f(c, 0))
        }),
        ("converge lag (s)", |p| f(p.converge_lag_seconds, 3)),
        ("  every receipt current (s)", |p| {
            f(p.receipts_lag_seconds, 3)
        }),
        ("floor: final status writes", |p| {
            p.floor
                .as_ref()
                .map_or("-".into(), |f| f.status_writes.to_string())
        }),
        ("floor: time (s)", |p| {
            p.floor.as_ref().map_or("-".into(), |fl| f(fl.seconds, 2))
        }),
        ("lag / floor", |p| {
            p.floor
                .as_ref()
                .map_or("-".into(), |fl| f(fl.converge_lag_over_floor, 3))
        }),
        ("tail: status writes", |p| {
            p.audit.status_writes_in_tail.to_string()
        }),
        ("operator API requests", |p| p.audit.requests.to_string()),
        ("order status writes", |p| {
            p.audit.order_status_writes.to_string()
        }),
        ("  per order transition", |p| {
            f(p.audit.order_status_writes_per_transition, 3)
        }),
        ("customer status writes", |p| {
            p.audit.customer_status_writes.to_string()
        }),
        ("  per order transition", |p| {
            f(p.audit.customer_status_writes_per_transition, 3)
        }),
        ("status write conflicts (409)", |p| {
            p.audit.status_write_conflicts.to_string()
        }),
        ("writes after convergence", |p| {
            p.audit.writes_after_convergence.to_string()
        }),
    ];
    let after: [Figure<ConvergePoint>; 5] = [
        ("peak RSS (MiB)", |p| {
            f(p.operator.peak_rss_kib as f64 / 1024.0, 1)
        }),
        ("CPU (s)", |p| f(p.operator.cpu_seconds, 1)),
        ("reconciles customer", |p| {
            f(p.operator.reconciles_customer, 0)
        }),
        ("reconciles order", |p| f(p.operator.reconciles_order, 0)),
        ("CPU per reconcile (us)", |p| {
            f(p.operator.cpu_microseconds_per_reconcile, 1)
        }),
    ];
    let restarts: [(&str, RestartOf); 2] = [
        ("restart", |p| &p.restart),
        ("restart, streaming", |p| &p.restart_streaming),
    ];
    let point = |(label, value): Figure<ConvergePoint>| -> Row { (label.into(), Box::new(value)) };
    let restart_rows = restarts.into_iter().flat_map(|(prefix, of)| {
        RESTART.into_iter().map(move |(label, value)| -> Row {
            (
                format!("{prefix}: {label}"),
                Box::new(move |p| value(of(p))),
            )
        })
    });
    before
        .into_iter()
        .map(point)
        .chain(restart_rows)
        .chain(after.into_iter().map(point))
        .collect()
}
