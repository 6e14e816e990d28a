//! The metrics counted at each scrape from the caches and the index: ledgers, orders absorbed,
//! customers per level and those whose settled history is missing.

use kube::runtime::reflector::Store;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, gauge::ConstGauge},
};

use super::context::SharedIndex;
use crate::crd::Ledger;

/// `reserve_ledgers` and `reserve_orders_absorbed`: ledgers in the cache, and the orders
/// absorbed in them that they have not forgotten yet, counted at each scrape.
#[derive(Debug)]
pub struct LedgerCounts(pub Store<Ledger>);

impl Collector for LedgerCounts {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let ledgers = self.0.state();
        let settling: usize = ledgers.iter().map(|l| l.spec.absorbed.len()).sum();
        for (name, help, value) in [
            (
                "ledgers",
                "Ledgers of settled orders, from the operator's cache",
                ledgers.len(),
            ),
            (
                "orders_absorbed",
                "Orders absorbed in a ledger and not yet forgotten by it (deleted or about to be)",
                settling,
            ),
        ] {
            let family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(value as i64).encode(family)?;
        }
        Ok(())
    }
}

/// `reserve_customers{level}`: customers per level in the index, and
/// `reserve_customers_settled_history_missing`: those whose Ledger is missing, counted at each
/// scrape.
#[derive(Debug)]
pub struct CustomersPerLevel(pub SharedIndex);

impl Collector for CustomersPerLevel {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut counts = std::collections::BTreeMap::<String, i64>::new();
        let mut missing = 0;
        {
            let index = self.0.read().unwrap_or_else(|p| p.into_inner());
            for status in index.customers().filter_map(|(_, c)| c.status.as_ref()) {
                if let Some(level) = &status.level {
                    *counts.entry(level.to_string()).or_default() += 1;
                }
                if status.settled_history_missing {
                    missing += 1;
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "customers",
            "Customers per level, from the operator's cache",
            None,
            MetricType::Gauge,
        )?;
        for (level, count) in counts {
            let labels = [("level", level)];
            ConstGauge::new(count).encode(family.encode_family(&labels)?)?;
        }
        let family = encoder.encode_descriptor(
            "customers_settled_history_missing",
            "Customers whose Ledger is missing: their score counts the settled history last seen",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(missing).encode(family)
    }
}
