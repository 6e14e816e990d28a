//! reserve-operator: derives coffee-chain loyalty levels for `Customer` resources from their
//! `Order` resources.

pub mod api_metrics;
pub mod backup;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod leader;
pub mod loyalty;
pub mod metrics;
pub mod migrate;
#[cfg(test)]
mod mock_api;
pub mod operator;
pub mod plugin;
pub mod probe;
pub mod runtime_ext;
