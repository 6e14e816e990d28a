//! Prometheus metrics, served as text on `/metrics`.

use std::{sync::Mutex, time::Instant};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    pub controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: String,
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LevelLabel {
    pub level: String,
}

/// Counts customers per level when asked: (level, customers).
pub type LevelCounts = Box<dyn Fn() -> Vec<(String, i64)> + Send + Sync>;

pub struct Metrics {
    registry: Registry,
    reconciles: Family<ControllerLabel, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: Family<ControllerLabel, Histogram>,
    status_writes: Family<ControllerLabel, Counter>,
    customers_per_level: Family<LevelLabel, Gauge>,
    leader: Gauge,
    levels_source: Mutex<Option<LevelCounts>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("reserve");
        let reconciles = Family::<ControllerLabel, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles run, per controller",
            reconciles.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, per controller and error",
            errors.clone(),
        );
        let duration = Family::<ControllerLabel, Histogram>::new_with_constructor(
            reconcile_buckets as fn() -> Histogram,
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took",
            duration.clone(),
        );
        let status_writes = Family::<ControllerLabel, Counter>::default();
        registry.register(
            "status_writes",
            "Status writes sent to the API server, per controller",
            status_writes.clone(),
        );
        let customers_per_level = Family::<LevelLabel, Gauge>::default();
        registry.register(
            "customers",
            "Customers per level, from the operator's cache",
            customers_per_level.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the Lease and reconciles",
            leader.clone(),
        );
        // Present at zero from the start, so alerts on them work before the first failure.
        for controller in ["customer", "order"] {
            reconciles
                .get_or_create(&ControllerLabel {
                    controller: controller.into(),
                })
                .inc_by(0);
            for error in ["conflict", "forbidden", "write_status"] {
                errors
                    .get_or_create(&ErrorLabels {
                        controller: controller.into(),
                        error: error.into(),
                    })
                    .inc_by(0);
            }
        }
        Self {
            registry,
            reconciles,
            errors,
            duration,
            status_writes,
            customers_per_level,
            leader,
            levels_source: Mutex::new(None),
        }
    }
}

fn reconcile_buckets() -> Histogram {
    Histogram::new([0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0])
}

impl Metrics {
    /// Counts a reconcile and times it until the guard is dropped.
    pub fn reconcile(&self, controller: &str) -> ReconcileTimer<'_> {
        let label = ControllerLabel {
            controller: controller.into(),
        };
        self.reconciles.get_or_create(&label).inc();
        ReconcileTimer {
            metrics: self,
            label,
            start: Instant::now(),
        }
    }

    pub fn reconcile_error(&self, controller: &str, error: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                controller: controller.into(),
                error: error.into(),
            })
            .inc();
    }

    pub fn status_write(&self, controller: &str) {
        self.status_writes
            .get_or_create(&ControllerLabel {
                controller: controller.into(),
            })
            .inc();
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Where `customers{level=...}` is read from at each scrape (the current customer cache).
    pub fn set_levels_source(&self, source: Option<LevelCounts>) {
        *self.levels_source.lock().unwrap_or_else(|p| p.into_inner()) = source;
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        self.customers_per_level.clear();
        if let Some(source) = &*self.levels_source.lock().unwrap_or_else(|p| p.into_inner()) {
            for (level, count) in source() {
                self.customers_per_level
                    .get_or_create(&LevelLabel { level })
                    .set(count);
            }
        }
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }

    /// Total reconciles of one controller (for logs and tests).
    pub fn reconciles_of(&self, controller: &str) -> u64 {
        self.reconciles
            .get_or_create(&ControllerLabel {
                controller: controller.into(),
            })
            .get()
    }
}

pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    label: ControllerLabel,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .duration
            .get_or_create(&self.label)
            .observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_the_documented_families() {
        let metrics = Metrics::default();
        drop(metrics.reconcile("customer"));
        metrics.reconcile_error("order", "conflict");
        metrics.status_write("order");
        metrics.set_leader(true);
        metrics.set_levels_source(Some(Box::new(|| vec![("Gold".into(), 3)])));
        let text = metrics.encode();
        for needle in [
            "reserve_reconciles_total{controller=\"customer\"} 1",
            "reserve_reconcile_errors_total{controller=\"order\",error=\"conflict\"} 1",
            "reserve_reconcile_duration_seconds_count{controller=\"customer\"} 1",
            "reserve_status_writes_total{controller=\"order\"} 1",
            "reserve_customers{level=\"Gold\"} 3",
            "reserve_leader 1",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
        assert_eq!(metrics.reconciles_of("customer"), 1);
    }
}
