//! What each kind's queue holds, for the metrics: the queue shows it as it changes, and the
//! collector reads it at each scrape (`reserve_queue_depth`, `reserve_reconciles_in_flight`,
//! `reserve_queue_oldest_change_seconds`). A replica that does not lead shows nothing waiting.

use std::sync::{Arc, Mutex};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, gauge::ConstGauge},
};
use tokio::time::Instant;

use crate::metrics::{CUSTOMER_CONTROLLER, ORDER_CONTROLLER};

/// One queue's contents, as last shown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shown {
    /// Keys waiting to start a reconcile (a sweep's keys count as they are drawn).
    pub waiting: usize,
    pub running: usize,
    /// Since when the oldest waiting change has waited (None: no change waits).
    pub oldest_change: Option<Instant>,
}

/// What one queue shows.
#[derive(Debug, Default)]
pub struct Backlog(Mutex<Shown>);

impl Backlog {
    pub fn show(&self, shown: Shown) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = shown;
    }

    pub fn shown(&self) -> Shown {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The backlogs of both kinds' queues, and the collector of their metrics.
#[derive(Clone, Debug, Default)]
pub struct Backlogs {
    pub customers: Arc<Backlog>,
    pub orders: Arc<Backlog>,
}

impl Collector for Backlogs {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = Instant::now();
        let shown = [
            (CUSTOMER_CONTROLLER, self.customers.shown()),
            (ORDER_CONTROLLER, self.orders.shown()),
        ];
        let mut family = encoder.encode_descriptor(
            "queue_depth",
            "Objects waiting to start a reconcile, per controller (a sweep's are counted as they \
             are drawn, 256 at a time)",
            None,
            MetricType::Gauge,
        )?;
        for (controller, shown) in &shown {
            ConstGauge::new(shown.waiting as i64)
                .encode(family.encode_family(&[("controller", *controller)])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "reconciles_in_flight",
            "Reconciles running, per controller",
            None,
            MetricType::Gauge,
        )?;
        for (controller, shown) in &shown {
            ConstGauge::new(shown.running as i64)
                .encode(family.encode_family(&[("controller", *controller)])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "queue_oldest_change_seconds",
            "How long the oldest waiting change has waited for its reconcile, per controller: how \
             far the statuses of what changed are behind (0 when none waits)",
            None,
            MetricType::Gauge,
        )?;
        for (controller, shown) in &shown {
            let age = shown.oldest_change.map_or(0.0, |since| {
                now.saturating_duration_since(since).as_secs_f64()
            });
            ConstGauge::new(age).encode(family.encode_family(&[("controller", *controller)])?)?;
        }
        Ok(())
    }
}
