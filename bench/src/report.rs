//! The figures as a table for people, and the targets they are held to.

use std::fmt::Write as _;

use crate::{
    figures::{ConvergePoint, Freshness, Growth, SettlementRun, Summary, Target},
    rows,
};

/// Targets, checked on the largest converge point and on the freshness runs.
pub fn targets(
    points: &[ConvergePoint],
    growth: &[Growth],
    spread: Option<f64>,
    freshness: &[Freshness],
    settlement: Option<&SettlementRun>,
) -> Vec<Target> {
    let mut targets = Vec::new();
    if let Some(run) = settlement {
        targets.extend(settlement_targets(run));
    }
    if let Some(big) = points.last() {
        let transitions = big.generator.order_transitions as f64;
        targets.push(Target::new(
            "burst: converge lag <= 0.5 s after the last write",
            big.converge_lag_seconds <= 0.5,
            format!("{:.3} s at {} orders", big.converge_lag_seconds, big.orders),
        ));
        targets.push(Target::new(
            "order status writes <= 1 per order transition",
            big.audit.order_status_writes as f64 <= transitions,
            format!(
                "{:.3}/transition",
                big.audit.order_status_writes_per_transition
            ),
        ));
        // Each customer's first status is not an order transition's.
        let writes = big.audit.order_status_writes + big.audit.customer_status_writes;
        let per_transition = (writes.saturating_sub(big.customers as u64)) as f64 / transitions;
        targets.push(Target::new(
            "status writes <= 2 per order transition (one order, at most one customer)",
            per_transition <= 2.0,
            format!(
                "{per_transition:.3}/transition, not counting each customer's first status ({:.3} customer writes/transition)",
                big.audit.customer_status_writes_per_transition
            ),
        ));
        if let Some(alone) = big.generator_alone_seconds {
            // The least the operator must write is the floor's: each status once.
            let least = big.floor.as_ref().map_or(String::new(), |floor| {
                format!(
                    "; the operator's least work, each final status written once (the floor), \
                     takes the API server {:.1} s alone, {:.0}% of the generator's time",
                    floor.seconds,
                    floor.seconds / alone * 100.0
                )
            });
            targets.push(Target::new(
                "users first: the generator within 10% of its time with no operator",
                big.generator.seconds <= 1.1 * alone,
                format!(
                    "{:.1} s against {alone:.1} s ({:+.0}%){least}",
                    big.generator.seconds,
                    (big.generator.seconds / alone - 1.0) * 100.0
                ),
            ));
        }
        // Writes that carry two transitions each leave about half the customers with an
        // unwritten change at any moment, so also when the burst ends.
        let fold_tail = big.floor.as_ref().map_or(String::new(), |floor| {
            let unwritten = big.customers as f64 / 2.0;
            format!(
                "; at 0.5 about {unwritten:.0} customers would hold an unwritten change when the \
                 burst ends: {:.2} s at the floor's {:.0} writes/s",
                unwritten / floor.writes_per_second,
                floor.writes_per_second
            )
        });
        let folded = big
            .audit
            .customer_status_writes
            .saturating_sub(big.customers as u64) as f64
            / transitions;
        targets.push(Target::new(
            "burst: customer status writes <= 0.5 per order transition (they fold)",
            folded <= 0.5,
            format!(
                "{folded:.3}/transition beyond each customer's first status ({:.3} with \
                 them){fold_tail}",
                big.audit.customer_status_writes_per_transition
            ),
        ));
        targets.push(Target::new(
            "zero status writes after convergence",
            big.audit.status_writes_after_convergence == 0
                && big.operator.status_writes_after_convergence == 0.0,
            format!(
                "{} in the audit log, {} by /metrics",
                big.audit.status_writes_after_convergence,
                big.operator.status_writes_after_convergence
            ),
        ));
        targets.push(Target::new(
            "restart once converged: zero writes",
            big.restart.status_writes == 0.0 && big.restart_streaming.status_writes == 0.0,
            format!(
                "{} writes, ready after {:.2} s (streaming lists: {} writes, {:.2} s)",
                big.restart.status_writes,
                big.restart.seconds_to_ready,
                big.restart_streaming.status_writes,
                big.restart_streaming.seconds_to_ready
            ),
        ));
        // The default point (20,000 orders, 1,000 customers) has a memory target of its own;
        // a point with more of either is a large one, held to the restart target.
        let large = big.orders > 20_000 || big.customers > 1_000;
        if !large {
            targets.push(Target::new(
                "peak RSS <= 40 MiB at 20,000 orders",
                big.operator.peak_rss_kib as f64 <= 40.0 * 1024.0,
                format!("{:.1} MiB", big.operator.peak_rss_kib as f64 / 1024.0),
            ));
        }
        if big.orders > 20_000 {
            targets.push(Target::new(
                "peak RSS <= 96 MiB at 100,000 orders (10,000 customers)",
                big.operator.peak_rss_kib as f64 <= 96.0 * 1024.0,
                format!(
                    "{:.1} MiB at {} orders",
                    big.operator.peak_rss_kib as f64 / 1024.0,
                    big.orders
                ),
            ));
            targets.push(Target::new(
                "converge lag <= 2 s at 100,000 orders",
                big.converge_lag_seconds <= 2.0,
                format!("{:.3} s at {} orders", big.converge_lag_seconds, big.orders),
            ));
        }
        if large {
            // Streaming lists are the default (`auto`) on this API server.
            targets.push(Target::new(
                "restart to ready <= 15 s",
                big.restart_streaming.seconds_to_ready <= 15.0,
                format!(
                    "{:.2} s with streaming lists (the default here); {:.2} s with paged lists; \
                     API server consistency checks meanwhile: {}, {}",
                    big.restart_streaming.seconds_to_ready,
                    big.restart.seconds_to_ready,
                    big.restart_streaming.apiserver_consistency_checks_to_ready,
                    big.restart.apiserver_consistency_checks_to_ready
                ),
            ));
        }
    }
    let slope = growth
        .iter()
        .map(|g| g.peak_rss_kib_per_extra_order)
        .fold(f64::NAN, f64::max);
    targets.push(Target::new(
        "peak RSS growth <= 1 KiB per extra order",
        (!growth.is_empty()).then_some(slope <= 1.0),
        if growth.is_empty() {
            "needs a sweep".into()
        } else {
            format!("{slope:.2} KiB/order")
        },
    ));
    targets.push(Target::new(
        "CPU per reconcile flat across the sweep (max/min <= 1.5)",
        spread.map(|s| s <= 1.5),
        spread.map_or("needs a sweep".into(), |s| format!("max/min {s:.2}")),
    ));
    for run in freshness {
        let what = format!(
            "freshness at {}/s{}{}",
            run.rate_per_second,
            if run.flood_concurrency > 0 {
                format!(", flood {}", run.flood_concurrency)
            } else {
                String::new()
            },
            if run.flowschema {
                ""
            } else {
                ", no FlowSchema"
            }
        );
        let limit = if run.flood_concurrency > 0 {
            1000.0
        } else {
            250.0
        };
        targets.push(Target::new(
            &format!("{what}: customer p99 <= {limit:.0} ms"),
            run.customer.p99_ms <= limit && run.customer.missing == 0,
            format!(
                "p99 {:.0} ms, max {:.0} ms, {} never shown",
                run.customer.p99_ms, run.customer.max_ms, run.customer.missing
            ),
        ));
        if run.flood_concurrency == 0 {
            targets.push(Target::new(
                &format!("{what}: customer max <= 1 s"),
                run.customer.max_ms <= 1000.0,
                format!("{:.0} ms", run.customer.max_ms),
            ));
        }
        targets.push(Target::new(
            &format!("{what}: writes <= 2 per transition"),
            run.writes_per_transition <= 2.0,
            format!("{:.2}", run.writes_per_transition),
        ));
    }
    targets.extend(overload_targets(freshness));
    targets
}

/// Past the knee, per binary: at 1.5 x its knee customers within 2 s (p99) and every receipt
/// within 30 s; at 2 x, a backlog that stops growing after the first minute and nothing lost.
fn overload_targets(freshness: &[Freshness]) -> Vec<Target> {
    let mut targets = Vec::new();
    for knee in crate::figures::knees(freshness) {
        let Some(at) = knee.knee_per_second else {
            continue;
        };
        let run = |times: f64| knee.run_at(freshness, times * at);
        let binary = &knee.operator_binary;
        if let Some(r) = run(1.5) {
            targets.push(Target::new(
                &format!(
                    "{binary}: at 1.5 x the knee ({}/s), customer p99 <= 2 s and every receipt within 30 s",
                    r.rate_per_second
                ),
                r.customer.p99_ms <= 2_000.0
                    && r.customer.missing == 0
                    && r.order.max_ms <= 30_000.0
                    && r.order.missing == 0,
                format!(
                    "customer p99 {:.0} ms ({} never shown); receipt max {:.0} ms ({} never shown)",
                    r.customer.p99_ms, r.customer.missing, r.order.max_ms, r.order.missing
                ),
            ));
        }
        if let Some(r) = run(2.0) {
            let minutes = &r.customer_p99_ms_by_minute;
            // After the first minute, no minute's p99 above the second's by more than a
            // quarter (or 250 ms): a backlog that holds, not one that grows.
            let holds = minutes.len() >= 3
                && minutes[1..]
                    .iter()
                    .all(|m| *m <= (minutes[1] * 1.25).max(minutes[1] + 250.0));
            targets.push(Target::new(
                &format!(
                    "{binary}: at 2 x the knee ({}/s), p99 stops growing after the first minute (needs --seconds 180) and nothing is lost",
                    r.rate_per_second
                ),
                holds && r.customer.missing == 0 && r.order.missing == 0 && r.wrong_at_end == 0,
                format!(
                    "customer p99 per minute {:?} ms; never shown: {} customer, {} receipt; wrong in the store at the end: {}",
                    minutes.iter().map(|m| m.round()).collect::<Vec<_>>(),
                    r.customer.missing,
                    r.order.missing,
                    r.wrong_at_end
                ),
            ));
        }
    }
    targets
}

/// A histogram's figures, or `-` when it gained nothing.
fn spread(s: &crate::delay::Spread) -> String {
    if s.count == 0.0 {
        return "-".into();
    }
    let bound =
        |le: Option<f64>| le.map_or("past the last bucket".into(), |ms| format!("<= {ms:.0} ms"));
    format!(
        "{} / {} ({:.0})",
        bound(s.p50_le_ms),
        bound(s.p99_le_ms),
        s.count
    )
}

fn settlement_targets(run: &SettlementRun) -> Vec<Target> {
    let window = run.achieved_rate_per_second.min(run.rate_per_second)
        * (run.settle_after_seconds + (run.settle_after_seconds / 4.0).clamp(1.0, 60.0));
    let end = &run.generator_end;
    let full = &run.window_full;
    vec![
        Target::new(
            "settlement: orders in etcd bounded by the live window (peak <= 1.5 x rate x (age + one pass))",
            run.peak_live_orders as f64 <= 1.5 * window,
            format!(
                "peak {} live orders of {} made; window {window:.0}",
                run.peak_live_orders, run.orders
            ),
        ),
        Target::new(
            "settlement: etcd's data in use flat once the window is full (<= +25%)",
            end.etcd_db_in_use_mib <= 1.25 * full.etcd_db_in_use_mib.max(1.0),
            format!(
                "{:.1} MiB in use at {:.0} s (window full), {:.1} MiB at {:.0} s (end of the orders); file {:.1} -> {:.1} MiB",
                full.etcd_db_in_use_mib,
                full.seconds,
                end.etcd_db_in_use_mib,
                end.seconds,
                full.etcd_db_mib,
                end.etcd_db_mib
            ),
        ),
        Target::new(
            "settlement: operator memory follows the live orders (<= +25% after the window is full)",
            end.operator_rss_mib <= 1.25 * full.operator_rss_mib.max(1.0),
            format!(
                "RSS {:.1} MiB at window full, {:.1} MiB at the end of the orders, peak {:.1} MiB",
                full.operator_rss_mib, end.operator_rss_mib, run.peak_operator_rss_mib
            ),
        ),
        Target::new(
            "settlement: every score exact at the end, every order settled",
            run.customers_wrong == 0 && run.orders_left == 0,
            format!(
                "{} customers wrong, {} orders left, {:.0} settled, {} ledgers",
                run.customers_wrong, run.orders_left, run.orders_settled, run.ledgers
            ),
        ),
    ]
}

pub fn render(summary: &Summary) -> String {
    let rows = rows::converge();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "reserve-operator benchmark, {} on {}",
        summary.date, summary.machine
    );
    if !summary.points.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<32}{}",
            "figure",
            summary
                .points
                .iter()
                .map(|p| format!("{:>14}", format!("{} orders", p.orders)))
                .collect::<String>()
        );
        for (label, value) in rows {
            let _ = writeln!(
                out,
                "{label:<32}{}",
                summary
                    .points
                    .iter()
                    .map(|p| format!("{:>14}", value(p)))
                    .collect::<String>()
            );
        }
    }
    for g in &summary.rss_growth {
        let _ = writeln!(
            out,
            "peak RSS growth {} -> {} orders: {:.2} KiB per extra order (settled: {:.2})",
            g.from_orders,
            g.to_orders,
            g.peak_rss_kib_per_extra_order,
            g.settled_rss_kib_per_extra_order
        );
    }
    for p in &summary.points {
        let _ = writeln!(
            out,
            "\noperator requests at {} orders (audit log):",
            p.orders
        );
        for (request, count) in &p.audit.by_request {
            let _ = writeln!(out, "  {request:<40}{count:>10}");
        }
        for (request, count) in &p.audit.not_2xx {
            let _ = writeln!(out, "  not 2xx: {request:<31}{count:>10}");
        }
    }
    if !summary.handovers.is_empty() {
        let _ = writeln!(
            out,
            "\nhand-over catch-up (from the operator's start; the whole plan played with none running):"
        );
        for h in &summary.handovers {
            let _ = writeln!(
                out,
                "  {} ({} customers, {} orders): ready {:.2}s, every customer {:.2}s, every receipt {:.2}s; status writes {:.0} order, {:.0} customer; operator CPU {:.1}s",
                h.operator_binary,
                h.customers,
                h.orders,
                h.ready_seconds,
                h.customers_current_seconds,
                h.receipts_current_seconds,
                h.status_writes_order,
                h.status_writes_customer,
                h.operator_cpu_seconds
            );
        }
    }
    for run in &summary.freshness {
        let _ = writeln!(
            out,
            "\nfreshness ({}): {} transitions/s for {:.0} s over {} customers (achieved {:.1}/s), FlowSchema {}, flood {}:\n  customer status: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} samples, {} never shown)\n  order status:    p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms\n  writes per transition: {:.2} ({:.2} order, {:.2} customer); flood requests {} ({} refused); operator CPU {:.1} s, peak RSS {:.1} MiB; kube-apiserver CPU {:.0}%, etcd {:.0}%, the bench {:.0}%",
            run.operator_binary,
            run.rate_per_second,
            run.seconds,
            run.customers,
            run.achieved_rate_per_second,
            if run.flowschema { "on" } else { "off" },
            run.flood_concurrency,
            run.customer.p50_ms,
            run.customer.p99_ms,
            run.customer.max_ms,
            run.customer.samples,
            run.customer.missing,
            run.order.p50_ms,
            run.order.p99_ms,
            run.order.max_ms,
            run.writes_per_transition,
            run.order_status_writes_per_transition,
            run.customer_status_writes_per_transition,
            run.flood_requests,
            run.flood_rejected,
            run.operator.cpu_seconds,
            run.operator.peak_rss_kib as f64 / 1024.0,
            run.apiserver_cpu_percent,
            run.etcd_cpu_percent,
            run.bench_cpu_percent,
        );
        let _ = writeln!(
            out,
            "  customer p99 per minute: {:?} ms",
            run.customer_p99_ms_by_minute
                .iter()
                .map(|m| m.round())
                .collect::<Vec<_>>()
        );
        let seen = &run.users_write_seen;
        let parts = &run.parts;
        let _ = writeln!(
            out,
            "  where a customer's delay goes: a watch shows the users' writes after p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (the operator learns of a change, and users see its status, no sooner)\n  kube-apiserver's answer to the operator's status patches, p50 / p99 as bucket bounds (count): customers {}, receipts {}; of which waiting in priority and fairness {}; customer reconciles {}\n  caught up {} after the last write; wrong in the store at the end: {}",
            seen.p50_ms,
            seen.p99_ms,
            seen.max_ms,
            spread(&parts.customer_patch),
            spread(&parts.order_patch),
            spread(&parts.queue_wait),
            spread(&parts.customer_reconcile),
            run.caught_up_seconds
                .map_or("not within 120 s".into(), |s| format!("{s:.1} s")),
            run.wrong_at_end,
        );
    }
    for knee in &summary.knees {
        let _ = writeln!(
            out,
            "\nknee ({}, FlowSchema {}, flood {}): {} (the highest rate of {:?}/s up to which customer p99 <= {} ms and max <= {} ms)",
            knee.operator_binary,
            if knee.flowschema { "on" } else { "off" },
            knee.flood_concurrency,
            knee.knee_per_second
                .map_or("below every rate tried".into(), |k| format!("{k}/s")),
            knee.rates,
            crate::figures::KNEE_P99_MS,
            crate::figures::KNEE_MAX_MS,
        );
    }
    if let Some(floor) = &summary.freshness_floor {
        let _ = writeln!(
            out,
            "\nfloor in this run: {:.0} status writes/s (the operator's kind of write, {} of them, nothing else running)",
            floor.writes_per_second, floor.status_writes
        );
        for knee in &summary.knees {
            let Some(at) = knee.knee_per_second else {
                continue;
            };
            let Some(run) = knee.run_at(&summary.freshness, at) else {
                continue;
            };
            let writes = run.writes_per_transition * at;
            let _ = writeln!(
                out,
                "  {}: the knee's {at}/s took {writes:.0} status writes/s ({:.0}% of the floor) besides the generator's {at}/s",
                knee.operator_binary,
                writes / floor.writes_per_second * 100.0
            );
        }
    }
    if let Some(run) = &summary.settlement {
        let _ = writeln!(
            out,
            "\nsettlement: {} orders at {}/s (achieved {:.1}/s) over {} customers, settled after {:.0} s:\n  generator {:.0} s, all settled and exact after {:.0} s; peak {} live orders (window {:.0})\n  etcd file {:.1} MiB, in use {:.1} MiB at window full ({:.0} s); file {:.1} MiB, in use {:.1} MiB at the end of the orders\n  operator RSS {:.1} MiB at window full, {:.1} at the end, peak {:.1}; CPU {:.1} s; {:.0} orders settled into {} ledgers\n  status writes: {:.0} order, {:.0} customer",
            run.orders,
            run.rate_per_second,
            run.achieved_rate_per_second,
            run.customers,
            run.settle_after_seconds,
            run.generator_seconds,
            run.drained_seconds,
            run.peak_live_orders,
            run.expected_window_orders,
            run.window_full.etcd_db_mib,
            run.window_full.etcd_db_in_use_mib,
            run.window_full.seconds,
            run.generator_end.etcd_db_mib,
            run.generator_end.etcd_db_in_use_mib,
            run.window_full.operator_rss_mib,
            run.generator_end.operator_rss_mib,
            run.peak_operator_rss_mib,
            run.operator.cpu_seconds,
            run.orders_settled,
            run.ledgers,
            run.operator.status_writes_order,
            run.operator.status_writes_customer,
        );
    }
    let _ = writeln!(out, "\ntargets:");
    for t in &summary.targets {
        let mark = match t.met {
            Some(true) => "met",
            Some(false) => "NOT MET",
            None => "n/a",
        };
        let _ = writeln!(out, "  [{mark}] {}: {}", t.target, t.measured);
    }
    let _ = writeln!(out, "\n{NOTES}");
    out
}

const NOTES: &str = "\
Converge lag: from the generator's last write (its answer) to the first moment a watch on the \
Customers saw every one with its expected standing (score, level, next level, counts). Order \
transitions: creations plus spec.state changes. Status writes: the operator's successful \
status patches in the audit log. Floor: the time the API server needs to accept exactly the \
final statuses, written by the bench at the same concurrency with the operator stopped. \
Restart: the operator stopped once converged and started again; time to /readyz 200, and its \
status writes (none expected), and how far kube-apiserver's RSS rose meanwhile (sampled every \
20 ms). RSS: VmHWM and VmRSS; CPU: utime+stime of the operator. \
Freshness: for every transition, from the generator's answer to the first watch event showing \
the customer's status (or the order's phase) reflecting it; never shown: not shown by the time \
every status was current again (at most 2 minutes after the last write). A watch shows the \
users' writes: from the generator's answer to the event carrying its write. Status patches: \
kube-apiserver's apiserver_request_duration_seconds, priority and fairness's wait included.";
