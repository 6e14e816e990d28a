//! reserve-operator: derives coffee-chain loyalty levels for `Customer` resources from their
//! `Order` resources.

pub mod cli;
pub mod crd;
pub mod loyalty;
