//! Prometheus metrics, served on `/metrics` in the format the scraper asks for.

use std::time::{Duration, Instant};

use prometheus_client::{
    collector::Collector,
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
struct RequestLabels {
    verb: &'static str,
    resource: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestTimeLabels {
    verb: &'static str,
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

/// The two formats a scraper may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `application/openmetrics-text; version=1.0.0`
    OpenMetrics,
    /// `text/plain; version=0.0.4`, the classic Prometheus text format.
    Text,
}

impl Format {
    /// OpenMetrics when the `Accept` header names it (as Prometheus does, first), else the
    /// classic text format every scraper understands.
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Text,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

pub struct Metrics {
    registry: Registry,
    reconciles: Family<ControllerLabel, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: Family<ControllerLabel, Histogram>,
    status_writes: Family<ControllerLabel, Counter>,
    withheld: Family<ControllerLabel, Counter>,
    leader: Gauge,
    settled: Counter,
    passes: Counter,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<RequestTimeLabels, Histogram>,
}

/// The controllers' names: the `controller` label of metrics, logs and Events.
pub const CUSTOMER_CONTROLLER: &str = "customer";
pub const ORDER_CONTROLLER: &str = "order";
const CONTROLLERS: [&str; 2] = [CUSTOMER_CONTROLLER, ORDER_CONTROLLER];

impl Metrics {
    /// The operator's metrics, plus what `collectors` report at each scrape.
    pub fn new(error_labels: &[&str], collectors: Vec<Box<dyn Collector>>) -> Self {
        let mut registry = Registry::with_prefix("reserve");
        let build = Family::<BuildLabels, Gauge>::default();
        registry.register(
            "build_info",
            "The operator's version (always 1)",
            build.clone(),
        );
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
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
        let withheld = Family::<ControllerLabel, Counter>::default();
        registry.register(
            "status_writes_withheld",
            "Status writes not sent because this replica did not hold a freshly renewed Lease",
            withheld.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the Lease and reconciles",
            leader.clone(),
        );
        let settled = Counter::default();
        registry.register(
            "orders_settled",
            "Orders settled into their customer's ledger and deleted",
            settled.clone(),
        );
        let passes = Counter::default();
        registry.register(
            "settlement_passes",
            "Settlement passes completed: every customer with orders due looked at once",
            passes.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "api_requests",
            "Requests of the operator to the API server, per verb, resource and answer code \
             (\"error\": no answer)",
            requests.clone(),
        );
        let request_duration = Family::<RequestTimeLabels, Histogram>::new_with_constructor(
            request_buckets as fn() -> Histogram,
        );
        registry.register(
            "api_request_duration_seconds",
            "Time until the API server's answer (a watch: until it is established), per verb and \
             resource",
            request_duration.clone(),
        );
        for collector in collectors {
            registry.register_collector(collector);
        }
        // Present at zero from the start, so alerts and rates on them work before the first event.
        for controller in CONTROLLERS {
            let label = ControllerLabel {
                controller: controller.into(),
            };
            reconciles.get_or_create(&label).inc_by(0);
            status_writes.get_or_create(&label).inc_by(0);
            withheld.get_or_create(&label).inc_by(0);
            for error in error_labels {
                errors
                    .get_or_create(&ErrorLabels {
                        controller: controller.into(),
                        error: (*error).into(),
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
            withheld,
            leader,
            settled,
            passes,
            requests,
            request_duration,
        }
    }

    /// Counts one request to the API server and its time.
    pub fn api_request(&self, verb: &'static str, resource: &str, code: &str, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                verb,
                resource: resource.to_owned(),
                code: code.to_owned(),
            })
            .inc();
        self.request_duration
            .get_or_create(&RequestTimeLabels {
                verb,
                resource: resource.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

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

    /// Failed reconciles of `controller` counted with `error`.
    #[cfg(test)]
    pub fn reconcile_errors(&self, controller: &str, error: &str) -> u64 {
        self.errors
            .get_or_create(&ErrorLabels {
                controller: controller.into(),
                error: error.into(),
            })
            .get()
    }

    pub fn status_write(&self, controller: &str) {
        self.status_writes
            .get_or_create(&ControllerLabel {
                controller: controller.into(),
            })
            .inc();
    }

    pub fn write_withheld(&self, controller: &str) {
        self.withheld
            .get_or_create(&ControllerLabel {
                controller: controller.into(),
            })
            .inc();
    }

    pub fn orders_settled(&self, count: u64) {
        self.settled.inc_by(count);
    }

    pub fn settlement_pass(&self) {
        self.passes.inc();
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Every metric in `format`.
    pub fn encode(&self, format: Format) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        match format {
            Format::OpenMetrics => text,
            Format::Text => openmetrics_to_text(&text),
        }
    }
}

fn request_buckets() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

fn reconcile_buckets() -> Histogram {
    Histogram::new([0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0])
}

/// The classic text format (0.0.4) of an OpenMetrics exposition.
///
/// prometheus-client encodes OpenMetrics only (prometheus/client_rust#51). The two differ, for
/// what this operator exposes, in three ways: a counter's HELP and TYPE name its family while
/// its samples carry `_total` (the text format names the samples), `# UNIT` lines, and the
/// closing `# EOF`.
pub fn openmetrics_to_text(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(line) => text.push_str(&line),
            None => text.push_str(line),
        }
        text.push('\n');
    }
    text
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
    use prometheus_client::{
        encoding::{DescriptorEncoder, EncodeMetric},
        metrics::{MetricType, gauge::ConstGauge},
    };

    #[derive(Debug)]
    struct Gold;

    impl Collector for Gold {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            let mut family = encoder.encode_descriptor(
                "customers",
                "Customers per level",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(3).encode(family.encode_family(&[("level", "Gold")])?)
        }
    }

    fn metrics() -> Metrics {
        let metrics = Metrics::new(&["conflict"], vec![Box::new(Gold)]);
        drop(metrics.reconcile("customer"));
        metrics.reconcile_error("order", "conflict");
        metrics.status_write("order");
        metrics.set_leader(true);
        metrics
    }

    #[test]
    fn exposes_the_documented_families() {
        let text = metrics().encode(Format::OpenMetrics);
        for needle in [
            "reserve_reconciles_total{controller=\"customer\"} 1",
            "reserve_reconcile_errors_total{controller=\"order\",error=\"conflict\"} 1",
            "reserve_reconcile_errors_total{controller=\"customer\",error=\"conflict\"} 0",
            "reserve_reconcile_duration_seconds_count{controller=\"customer\"} 1",
            "reserve_status_writes_total{controller=\"order\"} 1",
            "reserve_status_writes_withheld_total{controller=\"order\"} 0",
            "reserve_customers{level=\"Gold\"} 3",
            "reserve_leader 1",
            "reserve_build_info{version=\"",
            "# EOF",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
    }

    #[test]
    fn the_text_format_names_counter_samples_in_help_and_type() {
        let text = metrics().encode(Format::Text);
        assert!(text.contains("# HELP reserve_reconciles_total Reconciles run, per controller.\n"));
        assert!(text.contains("# TYPE reserve_reconciles_total counter\n"));
        assert!(text.contains("# TYPE reserve_leader gauge\n"));
        assert!(text.contains("# TYPE reserve_reconcile_duration_seconds histogram\n"));
        assert!(!text.contains("# EOF"));
        assert!(!text.contains("# UNIT"));
        // Every sample belongs to a family that has HELP and TYPE.
        let documented: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# HELP "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        for sample in text.lines().filter(|l| !l.starts_with('#')) {
            let name = sample.split(['{', ' ']).next().unwrap();
            assert!(
                documented.iter().any(|family| name == *family
                    || ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|suffix| name == format!("{family}{suffix}"))),
                "{name} has no HELP"
            );
        }
    }

    #[test]
    fn the_format_follows_the_accept_header() {
        assert_eq!(
            Format::from_accept(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
            )),
            Format::OpenMetrics
        );
        assert_eq!(Format::from_accept(Some("text/plain")), Format::Text);
        assert_eq!(Format::from_accept(None), Format::Text);
    }
}
