//! Whether an object was declared in Git: the one fact about an order's origin that both the
//! index (which keeps it per order) and settlement (which never settles such an order) need.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Field manager of every write of the operator (statuses, Ledgers); the operator owns nothing
/// else, and nothing it writes counts as declared.
pub const FIELD_MANAGER: &str = "reserve-operator";

/// Whether an object was declared in Git: applied by kubectl (client- or server-side), by a
/// GitOps tool, or by Helm. The operator's own status writes do not count.
pub fn is_declared(meta: &ObjectMeta) -> bool {
    const ANNOTATIONS: [&str; 3] = [
        "kubectl.kubernetes.io/last-applied-configuration",
        "argocd.argoproj.io/tracking-id",
        "meta.helm.sh/release-name",
    ];
    const LABELS: [&str; 4] = [
        "app.kubernetes.io/instance",
        "app.kubernetes.io/managed-by",
        "kustomize.toolkit.fluxcd.io/name",
        "helm.toolkit.fluxcd.io/name",
    ];
    let has = |map: &Option<BTreeMap<String, String>>, keys: &[&str]| {
        map.as_ref()
            .is_some_and(|m| keys.iter().any(|k| m.contains_key(*k)))
    };
    let applied = meta.managed_fields.iter().flatten().any(|entry| {
        entry.operation.as_deref() == Some("Apply")
            && entry.subresource.as_deref().unwrap_or_default().is_empty()
            && entry.manager.as_deref() != Some(FIELD_MANAGER)
    });
    applied || has(&meta.annotations, &ANNOTATIONS) || has(&meta.labels, &LABELS)
}
