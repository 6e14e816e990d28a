//! The committed CRDs are exactly what the Rust types generate, and the chart carries the same
//! files as manifests/ (`make generate` writes them all).

use std::process::Command;

#[test]
fn committed_crds_match_the_rust_types() {
    let printed = Command::new(env!("CARGO_BIN_EXE_reserve-operator"))
        .arg("crds")
        .output()
        .unwrap();
    assert!(printed.status.success());
    let committed = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/manifests/crds/crds.yaml"
    ))
    .unwrap();
    assert!(
        printed.stdout == committed,
        "manifests/crds/crds.yaml is out of date with src/crd/: run `make generate` and commit the result"
    );
    assert_eq!(
        String::from_utf8(printed.stdout).unwrap(),
        reserve_operator::crd::crds_yaml()
    );
}

#[test]
fn crds_carry_every_validation_rule() {
    let yaml = reserve_operator::crd::crds_yaml();
    for needle in [
        "maxLength: 128",
        "minLength: 1",
        "minimum: 1.0",
        "maximum: 1000.0",
        "pattern: ^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        "default: Requested",
        "- Requested\n                - Completed\n                - Canceled",
        "message: spec.customer is immutable",
        "message: spec.product is immutable",
        "message: spec.quantity is immutable",
        "spec.state cannot change from",
        "subresources:\n      status: {}",
        "- coffeechain",
        "- cust",
        "- ord",
        "scope: Namespaced",
        "selectableFields:\n    - jsonPath: .spec.customer\n    - jsonPath: .spec.state",
        "default:\n              observedGeneration: 0",
        "jsonPath: .status.pointsToNextLevel",
    ] {
        assert!(yaml.contains(needle), "CRDs lack {needle:?}");
    }
}

#[test]
fn the_chart_carries_the_same_files_as_manifests() {
    let root = env!("CARGO_MANIFEST_DIR");
    for (chart, manifest) in [
        ("crds.yaml", "manifests/crds/crds.yaml"),
        ("roles.yaml", "manifests/crds/roles.yaml"),
        (
            "prometheusrule.yaml",
            "manifests/monitoring/prometheusrule.yaml",
        ),
        ("dashboard.json", "manifests/monitoring/dashboard.json"),
    ] {
        let copy = std::fs::read(format!("{root}/charts/reserve-operator/files/{chart}")).unwrap();
        let original = std::fs::read(format!("{root}/{manifest}")).unwrap();
        assert!(
            copy == original,
            "charts/reserve-operator/files/{chart} differs from {manifest}: run `make generate`"
        );
    }
}

/// The versions a user reads in the chart are the code's: the chart's version and appVersion
/// are the crate's, and its kubeVersion is the oldest Kubernetes the operator runs on.
#[test]
fn the_chart_states_the_versions_the_code_has() {
    let chart = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/charts/reserve-operator/Chart.yaml"
    ))
    .unwrap();
    let field = |name: &str| {
        chart
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .map(|v| v.trim_matches('"').to_owned())
            .unwrap_or_else(|| panic!("Chart.yaml has no {name}"))
    };
    assert_eq!(field("version"), env!("CARGO_PKG_VERSION"));
    assert_eq!(field("appVersion"), env!("CARGO_PKG_VERSION"));
    let (major, minor) = reserve_operator::operator::MIN_KUBERNETES;
    assert_eq!(field("kubeVersion"), format!(">={major}.{minor}.0-0"));
}
