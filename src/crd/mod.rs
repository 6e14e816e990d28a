//! The API: `Customer` and `Order` in `reserve.coffeechain.io/v1alpha1`.
//!
//! The schema lives next to the fields it guards, so the API server enforces every rule of the
//! contract (bounds, patterns, immutability, state transitions) before anything is stored.

mod customer;
mod order;

pub use customer::{Customer, CustomerSpec, CustomerStatus};
pub use order::{Order, OrderSpec, OrderState, OrderStatus};

use kube::CustomResourceExt;

/// API group of both kinds.
pub const GROUP: &str = "reserve.coffeechain.io";

/// Type of the condition both kinds report.
pub const READY: &str = "Ready";

/// Both CustomResourceDefinitions as one multi-document YAML stream, as committed in
/// `manifests/crds/crds.yaml`.
pub fn crds_yaml() -> String {
    [Customer::crd(), Order::crd()]
        .iter()
        .map(|crd| serde_norway::to_string(crd).expect("a CRD always serialises"))
        .collect::<Vec<_>>()
        .join("---\n")
}
