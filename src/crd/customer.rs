use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// A customer of the coffee chain. The operator derives the loyalty level from the customer's
/// Orders and reports it in `status`; the spec holds only what people choose.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "reserve.coffeechain.io",
    version = "v1alpha1",
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
    printcolumn = r#"{"name":"Completed","type":"integer","jsonPath":".status.completedOrders"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
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
    /// Sum of spec.quantity over this customer's Orders whose status.phase is Completed.
    #[serde(default)]
    pub score: i64,
    /// Loyalty level that the level policy gives for the score (Bronze, Silver, Gold, Platinum,
    /// Diamond by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// Orders counted in the score (phase Completed).
    #[serde(default)]
    pub completed_orders: i64,
    /// Orders in phase Canceled.
    #[serde(default)]
    pub canceled_orders: i64,
    /// Orders in phase Requested, or not yet accepted by the operator.
    #[serde(default)]
    pub open_orders: i64,
    /// The metadata.generation this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions. Ready is True once the status reflects every Order the operator
    /// has seen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
