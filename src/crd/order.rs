use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An order placed by a customer. The customer's score counts spec.state (whose transitions the
/// API server enforces); the operator mirrors it into status.phase and records the customer's
/// level when the order was first attributed.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "reserve.coffeechain.io",
    version = "v1",
    kind = "Order",
    doc = "An order placed by a customer; the customer's score counts its spec.state.",
    plural = "orders",
    shortname = "ord",
    category = "coffeechain",
    namespaced,
    status = "OrderStatus",
    printcolumn = r#"{"name":"Customer","type":"string","jsonPath":".spec.customer"}"#,
    printcolumn = r#"{"name":"Product","type":"string","jsonPath":".spec.product"}"#,
    printcolumn = r#"{"name":"Qty","type":"integer","jsonPath":".spec.quantity"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".spec.state"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Level","type":"string","jsonPath":".status.customerLevel"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Member","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"CustomerFound\")].status"}"#,
    printcolumn = r#"{"name":"Phase Since","type":"date","priority":1,"jsonPath":".status.phaseSince"}"#,
    selectable = ".spec.customer",
    selectable = ".spec.state"
)]
#[serde(rename_all = "camelCase")]
pub struct OrderSpec {
    /// metadata.name of the Customer in the same namespace who placed the order (a DNS-1123
    /// subdomain). Immutable.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS1123_SUBDOMAIN))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.customer is immutable"))]
    pub customer: String,
    /// What was ordered, 1 to 128 characters. Immutable.
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.product is immutable"))]
    pub product: String,
    /// How many, 1 to 1000. Counts towards the customer's score once the order is Completed.
    /// Immutable.
    #[schemars(range(min = 1, max = 1000))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.quantity is immutable"))]
    pub quantity: i32,
    /// Requested (default), Completed or Canceled. Allowed changes: Requested -> Completed,
    /// Requested -> Canceled, Completed -> Canceled (a refund). Canceled is final.
    #[serde(default)]
    #[x_kube(validation = Rule::new(STATE_TRANSITION_RULE).message(Message::Expression(STATE_TRANSITION_MESSAGE.into())))]
    pub state: OrderState,
}

/// A DNS-1123 subdomain, the form of every Kubernetes object name.
const DNS1123_SUBDOMAIN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// The transitions of `OrderState::can_become`, as the API server checks them.
const STATE_TRANSITION_RULE: &str = "self == oldSelf || (oldSelf == 'Requested' && (self == 'Completed' || self == 'Canceled')) || (oldSelf == 'Completed' && self == 'Canceled')";
const STATE_TRANSITION_MESSAGE: &str = "'spec.state cannot change from ' + oldSelf + ' to ' + self + ' (allowed: Requested -> Completed, Requested -> Canceled, Completed -> Canceled)'";

/// The life of an order.
#[derive(
    Deserialize,
    Serialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    JsonSchema,
)]
pub enum OrderState {
    #[default]
    Requested,
    Completed,
    Canceled,
}

impl OrderState {
    pub const ALL: [OrderState; 3] = [
        OrderState::Requested,
        OrderState::Completed,
        OrderState::Canceled,
    ];

    /// Whether an order in this state may move to `next` (staying put is always allowed).
    pub fn can_become(self, next: OrderState) -> bool {
        use OrderState::*;
        self == next
            || matches!(
                (self, next),
                (Requested, Completed | Canceled) | (Completed, Canceled)
            )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::Requested => "Requested",
            OrderState::Completed => "Completed",
            OrderState::Canceled => "Canceled",
        }
    }
}

impl std::fmt::Display for OrderState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the operator observed. Written only by the operator.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OrderStatus {
    /// spec.state as the operator last saw it (an observation; the score counts spec.state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<OrderState>,
    /// Since when the operator has seen this phase. With settlement, a final order is settled
    /// once this is older than the settlement age.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_since: Option<Time>,
    /// The customer's level when the order was first attributed to an existing customer,
    /// computed without this order; never changes afterwards, not even when the customer is
    /// deleted. Iron until the order is first attributed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_level: Option<String>,
    /// The metadata.generation this status was computed for; 0 until the operator has seen
    /// the order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions. Ready is True once the operator has accepted the order, member or
    /// not; CustomerFound is False (reason CustomerNotFound) while the customer does not exist.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
