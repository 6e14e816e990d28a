use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::OrderState;

/// The settled history of one customer: what its settled (deleted) Orders added up to. One per
/// customer, in the customer's namespace and under its name; written only by the operator, and
/// kept when the customer is deleted (a customer created again gets its history back).
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "reserve.coffeechain.io",
    version = "v1",
    kind = "Ledger",
    doc = "The settled history of a customer: settled Orders, summed; written only by the operator.",
    plural = "ledgers",
    shortname = "ldg",
    category = "coffeechain",
    namespaced,
    printcolumn = r#"{"name":"Score","type":"integer","jsonPath":".spec.score"}"#,
    printcolumn = r#"{"name":"Completed","type":"integer","jsonPath":".spec.completedOrders"}"#,
    printcolumn = r#"{"name":"Canceled","type":"integer","jsonPath":".spec.canceledOrders"}"#,
    printcolumn = r#"{"name":"Absorbed","type":"integer","jsonPath":".spec.absorbedCount"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct LedgerSpec {
    /// Sum of spec.quantity over this customer's settled Completed orders.
    #[serde(default)]
    pub score: i64,
    /// Settled orders that were Completed.
    #[serde(default)]
    pub completed_orders: i64,
    /// Settled orders that were Canceled.
    #[serde(default)]
    pub canceled_orders: i64,
    /// Orders already counted here that the operator has not yet seen deleted, or not yet
    /// forgotten. While one of them still exists, it counts as it is now, never twice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub absorbed: Vec<AbsorbedOrder>,
    /// How many orders are in `absorbed` (for the printer column).
    #[serde(default)]
    pub absorbed_count: i64,
}

/// An order counted in a ledger, on its way out.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AbsorbedOrder {
    pub name: String,
    pub uid: String,
    /// The resourceVersion the order had when it was counted: it is deleted only if unchanged.
    pub resource_version: String,
    pub state: OrderState,
    pub quantity: i64,
}
