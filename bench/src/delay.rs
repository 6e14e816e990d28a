//! Where a transition's delay goes: the parts a customer's delay is made of, read from
//! kube-apiserver's and the operator's /metrics before and after a freshness run.
//!
//! A customer shows a transition after (1) a watch delivers the users' write to the operator,
//! (2) the operator reconciles the customer, whose status patch (3) kube-apiserver answers, part
//! of that time waiting in priority and fairness, and (4) a watch delivers the new status. The
//! run measures (1) and (4) on its own watches (`Freshness::users_write_seen`); this module reads
//! (2) and (3) from the histograms both sides keep.

use reserve_testkit::{Metrics, Probe};
use serde::Serialize;

use crate::context::Context;

/// kube-apiserver's latency of a request, priority and fairness's wait included.
const REQUEST_DURATION: &str = "apiserver_request_duration_seconds";
/// How long a request waited in its priority level's queue before it ran.
const QUEUE_WAIT: &str = "apiserver_flowcontrol_request_wait_duration_seconds";
const RECONCILE_DURATION: &str = "reserve_reconcile_duration_seconds";

/// Both sides' histograms at one moment.
pub struct Scrape {
    apiserver: Metrics,
    operator: Metrics,
}

impl Scrape {
    pub async fn take(ctx: &Context, operator: &Probe) -> Result<Scrape, String> {
        let apiserver = Metrics::parse(&ctx.cp.apiserver_metrics())
            .ok_or("kube-apiserver's /metrics does not parse")?;
        let operator = operator
            .metrics()
            .await
            .ok_or("the operator's /metrics does not answer")?;
        Ok(Scrape {
            apiserver,
            operator,
        })
    }
}

/// The operator's side of a run's delays, from two scrapes.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DelayParts {
    /// kube-apiserver's answer to the operator's customer status patches.
    pub customer_patch: Spread,
    /// The same for order receipts.
    pub order_patch: Spread,
    /// What every request of the operator's priority level waited in its queue.
    pub queue_wait: Spread,
    /// The operator's customer reconciles, their status patch included.
    pub customer_reconcile: Spread,
}

impl DelayParts {
    /// `flowschema`: whether the operator's requests have their own priority level.
    pub fn between(before: &Scrape, after: &Scrape, flowschema: bool) -> DelayParts {
        let patch = |resource: &str| {
            let labels = [
                ("verb", "PATCH"),
                ("resource", resource),
                ("subresource", "status"),
            ];
            Spread::between(
                &before.apiserver.histogram(REQUEST_DURATION, &labels),
                &after.apiserver.histogram(REQUEST_DURATION, &labels),
            )
        };
        // Without the FlowSchema a ServiceAccount's requests share workload-low.
        let level = [
            (
                "priority_level",
                if flowschema {
                    "reserve-operator"
                } else {
                    "workload-low"
                },
            ),
            ("execute", "true"),
        ];
        let reconcile = [("controller", "customer")];
        DelayParts {
            customer_patch: patch("customers"),
            order_patch: patch("orders"),
            queue_wait: Spread::between(
                &before.apiserver.histogram(QUEUE_WAIT, &level),
                &after.apiserver.histogram(QUEUE_WAIT, &level),
            ),
            customer_reconcile: Spread::between(
                &before.operator.histogram(RECONCILE_DURATION, &reconcile),
                &after.operator.histogram(RECONCILE_DURATION, &reconcile),
            ),
        }
    }
}

/// How many observations a histogram gained between two scrapes, and the bucket bounds under
/// which half of them and 99% of them fall (None: past the last finite bound). Bounds, not
/// estimates within a bucket: the operator's buckets are wide (1 s to 5 s).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Spread {
    pub count: f64,
    pub p50_le_ms: Option<f64>,
    pub p99_le_ms: Option<f64>,
}

impl Spread {
    pub fn between(before: &[(f64, f64)], after: &[(f64, f64)]) -> Spread {
        let gained: Vec<(f64, f64)> = after
            .iter()
            .map(|&(le, count)| {
                let earlier = before
                    .iter()
                    .find(|(b, _)| *b == le)
                    .map_or(0.0, |(_, c)| *c);
                (le, count - earlier)
            })
            .collect();
        let count = gained.last().map_or(0.0, |(_, c)| *c);
        let bound = |q: f64| {
            gained
                .iter()
                .find(|(_, cumulative)| *cumulative >= q * count)
                .map(|(le, _)| *le)
                .filter(|le| le.is_finite())
                .map(|le| le * 1000.0)
        };
        if count <= 0.0 {
            return Spread::default();
        }
        Spread {
            count,
            p50_le_ms: bound(0.5),
            p99_le_ms: bound(0.99),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spread_counts_what_was_added_between_the_scrapes() {
        let inf = f64::INFINITY;
        let before = [(0.1, 10.0), (1.0, 10.0), (inf, 10.0)];
        // 100 more: 50 under 0.1 s, 49 between 0.1 and 1 s, one past 1 s.
        let after = [(0.1, 60.0), (1.0, 109.0), (inf, 110.0)];
        let spread = Spread::between(&before, &after);
        assert_eq!(spread.count, 100.0);
        assert_eq!(spread.p50_le_ms, Some(100.0));
        assert_eq!(spread.p99_le_ms, Some(1000.0));
        // Half of them past the last finite bound.
        let late = [(0.1, 10.0), (1.0, 60.0), (inf, 110.0)];
        let spread = Spread::between(&before, &late);
        assert_eq!((spread.p50_le_ms, spread.p99_le_ms), (Some(1000.0), None));
        // Nothing added: no figures, not zeros that look measured.
        assert_eq!(Spread::between(&before, &before), Spread::default());
        assert_eq!(Spread::between(&[], &[]), Spread::default());
    }
}
