//! Upgrades and downgrades between the previous release and this tree, against real
//! components: each test starts a control plane of its own with the previous release's API
//! (its CRDs, admission policies and RBAC, from its own manifests), and runs the previous
//! release's binary, built from this repository's history by `hack/previous-release.sh`
//! (`make test` builds it first), beside or before this tree's.
//!
//! - `rolling`: under a steady load with settlement on, the API of this release first, then the
//!   replicas one by one (old and new side by side), then the storage migration, then back to
//!   the previous release (a downgrade);
//! - `migration`: 10,000 orders stored as v1alpha1, migrated to v1 by the in-tree storage version
//!   migrator while the operator runs;
//! - `uninstall`: `helm uninstall` and `kubectl delete -k manifests/operator` keep the admission
//!   policies, which go on refusing forged snapshots and Ledgers, and a re-install adopts them.

mod migration;
mod rolling;
mod uninstall;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use futures::{StreamExt, stream};
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DynamicObject, ListParams, PostParams},
};
use reserve_testkit::{
    AuditMode, ControlPlane, Identity, Launch, Lifetime, OperatorProcess, Options, Shop,
    control_plane::text,
    shop::{fresh_namespace, grant_lease},
    tools::repo_root,
    watchdog,
};

/// Each test runs a control plane, operators and a load of its own: one at a time.
static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The Deployment's terminationGracePeriodSeconds.
const GRACE: Duration = Duration::from_secs(30);

/// The previous release: its version, binary and source (manifests included).
struct Previous {
    version: String,
    bin: PathBuf,
    dir: PathBuf,
}

fn previous() -> Previous {
    let script = repo_root().join("hack/previous-release.sh");
    let out = std::process::Command::new(&script)
        .arg("--version")
        .output()
        .expect("hack/previous-release.sh --version");
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_absolute() {
                p
            } else {
                repo_root().join(p)
            }
        })
        .unwrap_or_else(|| repo_root().join("target"));
    let previous = Previous {
        bin: target.join("debug/reserve-operator-previous"),
        dir: target.join("previous").join(&version),
        version,
    };
    assert!(
        previous.bin.is_file() && previous.dir.is_dir(),
        "the previous release ({}) is not built: run hack/previous-release.sh (make test does)",
        previous.version
    );
    previous
}

/// This tree's operator binary.
fn current_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_reserve-operator"))
}

/// A control plane of its own, with the previous release's API, the operator's namespace,
/// ServiceAccount and RBAC, and settlement's ClusterRole.
fn with_previous_api(name: &str, previous: &Previous) -> ControlPlane {
    let cp = ControlPlane::start_empty(Options {
        dir: watchdog().dir().join(name),
        lifetime: Lifetime::ThisProcess,
        audit: AuditMode::Blocking,
        node: None,
        profiling: false,
    })
    .expect("a control plane");
    install_api(&cp, &previous.dir);
    cp
}

/// The API and the operator's RBAC from the tree at `root`, applied as an upgrade applies them.
fn install_api(cp: &ControlPlane, root: &Path) {
    cp.install_from(root)
        .unwrap_or_else(|e| panic!("installing {}: {e}", root.display()));
}

/// A namespace that settles on this control plane, and a place for the Lease.
async fn settling_shop(cp: &ControlPlane, prefix: &str) -> (Shop, String) {
    let admin = cp.client().await;
    let shop = Shop {
        ns: fresh_namespace(&admin, prefix).await,
        admin: admin.clone(),
    };
    shop.settlement_label(Some("enabled")).await;
    let lease_ns = fresh_namespace(&admin, &format!("{prefix}-lease")).await;
    (shop, lease_ns)
}

/// An operator identity of the shop that may settle and hold the Lease.
async fn replica_identity(shop: &Shop, lease_ns: &str, name: &str) -> Identity {
    let identity = shop.settling_identity(name).await;
    grant_lease(&shop.admin, lease_ns, &identity).await;
    identity
}

/// One replica of `bin`, as `identity`, on `cp`: the shop's namespace, settling after 2 s.
fn replica(
    cp: &ControlPlane,
    bin: &Path,
    identity: &Identity,
    name: &str,
    shop: &Shop,
    lease_ns: &str,
) -> OperatorProcess {
    Launch::new(bin, &cp.kubeconfig_as(identity))
        .args(["--namespace", &shop.ns, "--lease-namespace", lease_ns])
        .args(["--identity", name, "--settle-after", "2s"])
        .spawn()
}

/// Every Ledger of the shop, by name: (score, completed, canceled); read as v1alpha1, which
/// both releases serve.
async fn ledgers(client: &Client, ns: &str) -> std::collections::BTreeMap<String, (i64, i64, i64)> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &v1alpha1("Ledger", "ledgers"));
    api.list(&ListParams::default())
        .await
        .expect("list ledgers")
        .items
        .iter()
        .map(|l| {
            let count = |field: &str| l.data["spec"][field].as_i64().unwrap_or_default();
            let counts = (
                count("score"),
                count("completedOrders"),
                count("canceledOrders"),
            );
            (l.name_any(), counts)
        })
        .collect()
}

pub fn v1alpha1(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "reserve.coffeechain.io".into(),
        version: "v1alpha1".into(),
        api_version: "reserve.coffeechain.io/v1alpha1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// Creates `count` objects through the previous release's version, 16 at a time.
pub async fn create_v1alpha1(shop: &Shop, resource: &ApiResource, objects: Vec<serde_json::Value>) {
    let api: Api<DynamicObject> = Api::namespaced_with(shop.admin.clone(), &shop.ns, resource);
    let created: Vec<_> = stream::iter(objects)
        .map(|object| {
            let api = api.clone();
            async move {
                let object: DynamicObject = serde_json::from_value(object).expect("an object");
                let params = PostParams::default();
                reserve_testkit::workload::retry("create", || api.create(&params, &object)).await
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for result in created {
        result.expect("created");
    }
}
