//! The API: `Customer`, `Order` and `Ledger` in `reserve.coffeechain.io/v1`, also served as
//! `v1alpha1` (deprecated; the same schema) for manifests and tools written before v1.
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

/// The version the operator reads and writes, and the API server stores.
pub const VERSION: &str = "v1";

/// The version served before v1: the same schema, deprecated.
pub const DEPRECATED_VERSION: &str = "v1alpha1";

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
    serve_deprecated_version(crd)
}

/// The Order CRD: the derived schema, with `status` defaulted to `observedGeneration: 0`.
pub fn order_crd() -> CustomResourceDefinition {
    let mut crd = Order::crd();
    default_status_unobserved(root_schema(&mut crd));
    serve_deprecated_version(crd)
}

/// The Ledger CRD.
pub fn ledger_crd() -> CustomResourceDefinition {
    serve_deprecated_version(Ledger::crd())
}

/// `crd` (stored as [`VERSION`]) also served as [`DEPRECATED_VERSION`], with the same schema,
/// columns and field selectors: objects written in either version are the same objects, and
/// the API server converts between them by changing `apiVersion` alone. Reading or writing the
/// old version draws a warning that names the new one.
fn serve_deprecated_version(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    let kind = crd.spec.names.kind.clone();
    let mut old = crd.spec.versions[0].clone();
    old.name = DEPRECATED_VERSION.into();
    old.storage = false;
    old.deprecated = Some(true);
    old.deprecation_warning = Some(format!(
        "{GROUP}/{DEPRECATED_VERSION} {kind} is deprecated; use {GROUP}/{VERSION} {kind}"
    ));
    crd.spec.versions.push(old);
    crd
}

/// The CustomResourceDefinitions as one multi-document YAML stream, as committed in
/// `manifests/crds/crds.yaml`.
pub fn crds_yaml() -> String {
    [customer_crd(), order_crd(), ledger_crd()]
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
    fn v1_is_stored_and_v1alpha1_served_beside_it_deprecated_with_the_same_schema() {
        for crd in [customer_crd(), order_crd(), ledger_crd()] {
            let [new, old] = &crd.spec.versions[..] else {
                panic!("two versions: {:?}", crd.spec.versions)
            };
            assert_eq!(
                (new.name.as_str(), new.storage, new.served),
                ("v1", true, true)
            );
            assert_eq!(
                (old.name.as_str(), old.storage, old.served),
                ("v1alpha1", false, true)
            );
            assert_eq!(old.deprecated, Some(true));
            let warning = old.deprecation_warning.as_deref().unwrap_or_default();
            assert!(
                warning.contains("use reserve.coffeechain.io/v1"),
                "{warning}"
            );
            assert_eq!(new.schema, old.schema);
            assert_eq!(
                new.additional_printer_columns,
                old.additional_printer_columns
            );
            assert_eq!(new.selectable_fields, old.selectable_fields);
            assert_eq!(new.subresources, old.subresources);
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
            assert_eq!(crd.spec.versions[0].schema, crd.spec.versions[1].schema);
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
