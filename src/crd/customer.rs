use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// A customer of the coffee chain. The operator derives the loyalty level from the customer's
/// Orders and reports it in `status`; the spec (optional as a whole) holds only what people
/// choose.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "reserve.coffeechain.io",
    version = "v1",
    kind = "Customer",
    doc = "A coffee-chain customer; status.level is derived from the customer's Orders.",
    plural = "customers",
    shortname = "cust",
    category = "coffeechain",
    namespaced,
    status = "CustomerStatus",
    printcolumn = r#"{"name":"Display Name","type":"string","jsonPath":".spec.displayName"}"#,
    printcolumn = r#"{"name":"Score","type":"integer","jsonPath":".status.score"}"#,
    printcolumn = r#"{"name":"Level","type":"string","jsonPath":".status.level"}"#,
    printcolumn = r#"{"name":"To Next","type":"integer","jsonPath":".status.pointsToNextLevel"}"#,
    printcolumn = r#"{"name":"Completed","type":"integer","jsonPath":".status.completedOrders"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Next Level","type":"string","priority":1,"jsonPath":".status.nextLevel"}"#,
    printcolumn = r#"{"name":"Open","type":"integer","priority":1,"jsonPath":".status.openOrders"}"#,
    printcolumn = r#"{"name":"Canceled","type":"integer","priority":1,"jsonPath":".status.canceledOrders"}"#,
    printcolumn = r#"{"name":"Settled","type":"integer","priority":1,"jsonPath":".status.settled.score"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct CustomerSpec {
    /// Name shown to staff, at most 128 characters. Orders refer to the customer by
    /// metadata.name, not by this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub display_name: Option<String>,
}

/// What the operator computed from this customer's Orders (same namespace, spec.customer equal
/// to this customer's name). Written only by the operator.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CustomerStatus {
    /// Sum of spec.quantity over this customer's Orders whose spec.state is Completed, plus
    /// the settled score of its Ledger (see settled).
    #[serde(default)]
    pub score: i64,
    /// Loyalty level that the level policy gives for the score (Bronze, Silver, Gold, Platinum,
    /// Diamond by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// The next level of the policy; absent at the top level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_level: Option<String>,
    /// Score still needed to reach nextLevel; absent at the top level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points_to_next_level: Option<i64>,
    /// Orders counted in the score (spec.state Completed), including the settled ones.
    #[serde(default)]
    pub completed_orders: i64,
    /// Orders whose spec.state is Canceled, including the settled ones.
    #[serde(default)]
    pub canceled_orders: i64,
    /// Orders whose spec.state is Requested (never settled).
    #[serde(default)]
    pub open_orders: i64,
    /// What the customer's Ledger (its settled, deleted orders) adds to score and counts;
    /// absent while nothing of the customer has been settled. Kept as last seen if the Ledger
    /// goes missing (Ready is then False, reason SettledHistoryMissing), so a score never drops
    /// because its history has not been restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled: Option<SettledHistory>,
    /// The metadata.generation this status was computed for; 0 until the operator has seen
    /// the customer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions. Ready is True once the status reflects every Order the operator
    /// has seen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// The settled part of a customer's score and counts: what its Ledger holds.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SettledHistory {
    /// Sum of spec.quantity over the settled orders that were Completed.
    #[serde(default)]
    pub score: i64,
    /// Settled orders that were Completed.
    #[serde(default)]
    pub completed_orders: i64,
    /// Settled orders that were Canceled.
    #[serde(default)]
    pub canceled_orders: i64,
}
