//! The API: `Customer` and `Order` in `reserve.coffeechain.io/v1alpha1`.
//!
//! The schema lives next to the fields it guards, so the API server enforces every rule of the
//! contract (bounds, patterns, immutability, state transitions) before anything is stored.

mod customer;
mod ledger;
mod order;

pub use customer::{Customer, CustomerSpec, CustomerStatus, SettledHistory};
pub use ledger::{AbsorbedOrder, Ledger, LedgerSpec};
pub use order::{Order, OrderSpec, OrderState, OrderStatus};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSON, JSONSchemaProps, JSONSchemaPropsOrArray,
};
use kube::CustomResourceExt;
use serde_json::json;

/// API group of both kinds.
pub const GROUP: &str = "reserve.coffeechain.io";

/// Condition types.
pub const READY: &str = "Ready";
pub const CUSTOMER_FOUND: &str = "CustomerFound";

/// The Customer CRD: the derived schema, with `spec` optional (defaulted to `{}`) and `status`
/// defaulted to `observedGeneration: 0`.
pub fn customer_crd() -> CustomResourceDefinition {
    let mut crd = Customer::crd();
    let schema = root_schema(&mut crd);
    if let Some(required) = schema.required.as_mut() {
        required.retain(|field| field != "spec");
    }
    if let Some(spec) = property(schema, "spec") {
        spec.default = Some(JSON(json!({})));
    }
    default_status_unobserved(schema);
    crd
}

/// The Order CRD: the derived schema, with `status` defaulted to `observedGeneration: 0`.
pub fn order_crd() -> CustomResourceDefinition {
    let mut crd = Order::crd();
    default_status_unobserved(root_schema(&mut crd));
    crd
}

/// The CustomResourceDefinitions as one multi-document YAML stream, as committed in
/// `manifests/crds/crds.yaml`.
pub fn crds_yaml() -> String {
    [customer_crd(), order_crd(), Ledger::crd()]
        .iter()
        .map(|crd| serde_saphyr::to_string(crd).expect("a CRD always serialises"))
        .collect::<Vec<_>>()
        .join("---\n")
}

fn root_schema(crd: &mut CustomResourceDefinition) -> &mut JSONSchemaProps {
    crd.spec.versions[0]
        .schema
        .as_mut()
        .and_then(|s| s.open_api_v3_schema.as_mut())
        .expect("a derived CRD has a schema")
}

fn property<'a>(schema: &'a mut JSONSchemaProps, name: &str) -> Option<&'a mut JSONSchemaProps> {
    schema.properties.as_mut()?.get_mut(name)
}

/// A new object reads as not yet observed (kstatus `InProgress`) until the operator's first
/// status write sets `observedGeneration` to the object's generation. Nothing else of the
/// status has a default: the API server applies the defaults inside a defaulted object too, and
/// a new Customer would show a score of 0 that nobody computed (a restored one, for the moment
/// between its creation and the restore's status write, a score below its own).
fn default_status_unobserved(schema: &mut JSONSchemaProps) {
    if let Some(status) = property(schema, "status") {
        for field in status.properties.iter_mut().flat_map(|p| p.values_mut()) {
            without_defaults(field);
        }
        status.default = Some(JSON(json!({ "observedGeneration": 0 })));
    }
}

/// `schema` and everything in it, without defaults.
fn without_defaults(schema: &mut JSONSchemaProps) {
    schema.default = None;
    for field in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        without_defaults(field);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = schema.items.as_mut() {
        without_defaults(items);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The paths of `schema` (at `path`) that have a default.
    fn defaulted(schema: &JSONSchemaProps, path: &str, found: &mut Vec<String>) {
        if schema.default.is_some() {
            found.push(path.to_owned());
        }
        for (name, field) in schema.properties.iter().flatten() {
            defaulted(field, &format!("{path}.{name}"), found);
        }
    }

    #[test]
    fn customer_spec_is_optional_and_statuses_start_unobserved() {
        let mut customer = customer_crd();
        let schema = root_schema(&mut customer);
        assert!(
            !schema
                .required
                .clone()
                .unwrap_or_default()
                .contains(&"spec".to_owned())
        );
        assert_eq!(
            property(schema, "spec").unwrap().default,
            Some(JSON(json!({})))
        );
        for mut crd in [customer_crd(), order_crd()] {
            let status = property(root_schema(&mut crd), "status").unwrap();
            assert_eq!(
                status.default,
                Some(JSON(json!({ "observedGeneration": 0 })))
            );
            let mut defaults = Vec::new();
            defaulted(status, "status", &mut defaults);
            assert_eq!(
                defaults,
                ["status"],
                "a new status shows no score nobody computed"
            );
        }
    }
}
