//! A namespace of its own for one test, with helpers to create, move and read Customers and
//! Orders, to run operators as identities of their own, and to check the result against the
//! operator's rules.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    time::Duration,
};

use k8s_openapi::api::{core::v1::Namespace, events::v1::Event};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use reserve_operator::{
    crd::{Customer, CustomerStatus, Order, OrderState, OrderStatus},
    loyalty::{LevelPolicy, Standing},
};
use serde_json::json;

use crate::{
    ControlPlane, FAIL_AFTER, Identity, fixtures,
    operator::{InProcessOperator, Launch, OperatorProcess},
    rbac, until,
    view::{self, View},
};

/// The operator's namespace: its ServiceAccounts are the only identities allowed to write status.
pub const OPERATOR_NAMESPACE: &str = "reserve-system";
/// The operator's ServiceAccount in manifests/operator.
pub const OPERATOR_SERVICE_ACCOUNT: &str = "reserve-operator";
/// The ClusterRole of manifests/operator/rbac.yaml.
pub const OPERATOR_ROLE: &str = "reserve-operator";
/// The ClusterRole of manifests/settlement.
pub const SETTLEMENT_ROLE: &str = "reserve-operator-settlement";
/// The Role of manifests/operator/rbac.yaml for the Lease.
pub const LEASE_ROLE: &str = "reserve-operator-leader-election";

pub struct Shop {
    pub ns: String,
    pub admin: Client,
}

/// Creates a namespace named `<prefix>-<random suffix>` and returns its name. Namespaces are
/// never finalized after deletion (there is no controller-manager), so tests do not delete them.
pub async fn fresh_namespace(client: &Client, prefix: &str) -> String {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            generate_name: Some(format!("{prefix}-")),
            labels: Some([("reserve-test".to_owned(), "true".to_owned())].into()),
            ..Default::default()
        },
        ..Default::default()
    };
    api.create(&PostParams::default(), &ns)
        .await
        .expect("create namespace")
        .name_any()
}

/// An identity for an operator: a ServiceAccount of the operator's namespace, named among the
/// operator's writers (the admission policies let only those write status and Ledgers), bound
/// to the shipped ClusterRole.
pub async fn operator_identity(admin: &Client, name: &str) -> Identity {
    let identity = Identity::service_account(OPERATOR_NAMESPACE, name);
    rbac::grant_cluster_role(admin, &identity, OPERATOR_ROLE).await;
    name_as_writer(admin, &identity).await;
    identity
}

/// The ConfigMap that names the operator's identities to the admission policies.
pub const WRITERS: &str = "reserve-operator-writers";

/// Adds `identity` to the operator's writers: a key of its own in the ConfigMap, applied
/// server-side under a field manager of its own, so tests that add theirs at once never
/// conflict.
pub async fn name_as_writer(admin: &Client, identity: &Identity) {
    use k8s_openapi::api::core::v1::ConfigMap;
    let key = identity.object_name();
    let patch = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": WRITERS, "namespace": OPERATOR_NAMESPACE },
        "data": { key.clone(): identity.user },
    });
    let params = PatchParams::apply(&format!("writer-{key}")).force();
    Api::<ConfigMap>::namespaced(admin.clone(), OPERATOR_NAMESPACE)
        .patch(WRITERS, &params, &Patch::Apply(&patch))
        .await
        .expect("name the identity among the operator's writers");
}

/// Lets `identity` hold the Lease in `namespace`: the shipped Role, copied there.
pub async fn grant_lease(admin: &Client, namespace: &str, identity: &Identity) {
    use k8s_openapi::api::rbac::v1::Role;
    let roles: Api<Role> = Api::namespaced(admin.clone(), namespace);
    if roles.get_opt(LEASE_ROLE).await.ok().flatten().is_none() {
        let shipped = Api::<Role>::namespaced(admin.clone(), OPERATOR_NAMESPACE)
            .get(LEASE_ROLE)
            .await
            .expect("the shipped Lease Role is installed");
        let copy = Role {
            metadata: ObjectMeta {
                name: Some(LEASE_ROLE.into()),
                ..Default::default()
            },
            rules: shipped.rules,
        };
        let _ = roles.create(&PostParams::default(), &copy).await;
    }
    rbac::grant_in_namespace(admin, namespace, identity, "Role", LEASE_ROLE).await;
}

impl Shop {
    /// A fresh namespace on the shared control plane.
    pub async fn new(prefix: &str) -> Shop {
        let admin = ControlPlane::shared().client().await;
        let ns = fresh_namespace(&admin, prefix).await;
        Shop { ns, admin }
    }

    /// The same identity and client, for another namespace.
    pub async fn beside(&self, prefix: &str) -> Shop {
        Shop {
            ns: fresh_namespace(&self.admin, prefix).await,
            admin: self.admin.clone(),
        }
    }

    /// An operator identity of this shop (`<ns>-<name>`), allowed what the shipped RBAC allows.
    pub async fn identity(&self, name: &str) -> Identity {
        operator_identity(&self.admin, &format!("{}-{name}", self.ns)).await
    }

    /// An operator identity that may also settle (manifests/settlement's ClusterRole).
    pub async fn settling_identity(&self, name: &str) -> Identity {
        let identity = self.identity(name).await;
        rbac::grant_cluster_role(&self.admin, &identity, SETTLEMENT_ROLE).await;
        identity
    }

    /// Opts this namespace in to settlement (`value` "enabled"), or out (None).
    pub async fn settlement_label(&self, value: Option<&str>) {
        let patch = json!({ "metadata": { "labels": {
            reserve_operator::controller::settlement::NAMESPACE_LABEL: value
        } } });
        Api::<Namespace>::all(self.admin.clone())
            .patch(&self.ns, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("label the namespace");
    }

    pub fn ledgers(&self) -> Api<reserve_operator::crd::Ledger> {
        Api::namespaced(self.admin.clone(), &self.ns)
    }

    /// Names of the Orders of this namespace.
    pub async fn order_names(&self) -> BTreeSet<String> {
        self.orders()
            .list_metadata(&ListParams::default())
            .await
            .expect("list orders")
            .items
            .into_iter()
            .map(|o| o.name_any())
            .collect()
    }

    /// A kubeconfig acting as `identity`.
    pub fn kubeconfig(&self, identity: &Identity) -> PathBuf {
        ControlPlane::shared().kubeconfig_as(identity)
    }

    /// The operator in this process, watching this namespace, without leader election.
    pub async fn operator(&self, extra_args: &[&str]) -> (Identity, InProcessOperator) {
        let identity = self.identity("operator").await;
        let client = ControlPlane::shared().client_as(&identity).await;
        let mut args = vec!["--no-leader-election", "--namespace", &self.ns];
        args.extend_from_slice(extra_args);
        (
            identity.clone(),
            InProcessOperator::start(client, &args).await,
        )
    }

    /// The operator binary `bin` as its own process, acting as `identity`, watching this
    /// namespace, with `extra_args`.
    pub fn operator_process(
        &self,
        bin: &str,
        identity: &Identity,
        extra_args: &[&str],
    ) -> OperatorProcess {
        Launch::new(bin, &self.kubeconfig(identity))
            .args(["--namespace", &self.ns])
            .args(extra_args.iter().copied())
            .spawn()
    }

    pub fn customers(&self) -> Api<Customer> {
        Api::namespaced(self.admin.clone(), &self.ns)
    }

    pub fn orders(&self) -> Api<Order> {
        Api::namespaced(self.admin.clone(), &self.ns)
    }

    pub async fn customer(&self, name: &str) {
        self.customers()
            .create(&PostParams::default(), &fixtures::customer(name))
            .await
            .unwrap_or_else(|e| panic!("create customer {name}: {e}"));
    }

    pub async fn order(&self, name: &str, customer: &str, quantity: i32, state: OrderState) {
        self.orders()
            .create(
                &PostParams::default(),
                &fixtures::order(name, customer, quantity, state),
            )
            .await
            .unwrap_or_else(|e| panic!("create order {name}: {e}"));
    }

    pub async fn set_state(&self, order: &str, state: OrderState) {
        let patch = json!({ "spec": { "state": state } });
        self.orders()
            .patch(order, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_or_else(|e| panic!("set {order} to {state}: {e}"));
    }

    pub async fn delete_order(&self, order: &str) {
        self.orders()
            .delete(order, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("delete order {order}: {e}"));
    }

    pub async fn delete_customer(&self, customer: &str) {
        self.customers()
            .delete(customer, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("delete customer {customer}: {e}"));
    }

    /// Waits until the customer's status has this score, level and (completed, canceled, open).
    pub async fn expect_customer(
        &self,
        name: &str,
        score: i64,
        level: &str,
        counts: (i64, i64, i64),
    ) -> CustomerStatus {
        self.expect_customer_status(
            name,
            &format!("score {score}, {level}, counts {counts:?}"),
            |s| {
                s.score == score
                    && s.level.as_deref() == Some(level)
                    && (s.completed_orders, s.canceled_orders, s.open_orders) == counts
            },
        )
        .await
    }

    /// Waits until the customer's status satisfies `check`.
    pub async fn expect_customer_status(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&CustomerStatus) -> bool,
    ) -> CustomerStatus {
        let what = format!("customer {name}: {what}");
        let found = until(&self.customers(), name, FAIL_AFTER, &what, |c| {
            c.status.as_ref().is_some_and(&check)
        })
        .await;
        found.status.expect("checked")
    }

    /// Waits until the order's status satisfies `check`.
    pub async fn expect_order(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&OrderStatus) -> bool,
    ) -> OrderStatus {
        let what = format!("order {name}: {what}");
        let found = until(&self.orders(), name, FAIL_AFTER, &what, |o| {
            o.status.as_ref().is_some_and(&check)
        })
        .await;
        found.status.expect("checked")
    }

    /// Events of this namespace as (reason, object name, note, reporting instance), oldest first.
    pub async fn events(&self) -> Vec<(String, String, String, String)> {
        let api: Api<Event> = Api::namespaced(self.admin.clone(), &self.ns);
        let mut events = api
            .list(&ListParams::default())
            .await
            .expect("list events")
            .items;
        events.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
        events
            .into_iter()
            .map(|e| {
                (
                    e.reason.unwrap_or_default(),
                    e.regarding.and_then(|r| r.name).unwrap_or_default(),
                    e.note.unwrap_or_default(),
                    e.reporting_instance.unwrap_or_default(),
                )
            })
            .collect()
    }

    /// What every Customer of the namespace must show, computed by the operator's own rules
    /// from the stored Orders' spec (never from a status).
    pub async fn expected(&self, policy: &LevelPolicy) -> BTreeMap<String, Standing> {
        let (customers, orders, ledgers) = self.listed().await;
        view::expected(&customers, &orders, &ledgers, policy)
    }

    /// Everything that differs now from what the stored Orders say (see [`view::mismatches`]),
    /// and how many customers were checked.
    pub async fn mismatches(&self, policy: &LevelPolicy) -> (Vec<String>, usize) {
        let (customers, orders, ledgers) = self.listed().await;
        view::mismatches(&customers, &orders, &ledgers, policy)
    }

    async fn listed(
        &self,
    ) -> (
        Vec<Customer>,
        Vec<Order>,
        Vec<reserve_operator::crd::Ledger>,
    ) {
        let lp = ListParams::default();
        let customers = self.customers().list(&lp).await.expect("list customers");
        let orders = self.orders().list(&lp).await.expect("list orders");
        let ledgers = self.ledgers().list(&lp).await.expect("list ledgers");
        (customers.items, orders.items, ledgers.items)
    }

    /// Waits up to `timeout` until nothing differs from what the stored Orders say, watching
    /// the namespace; returns what is left and how many customers were checked.
    pub async fn converge(&self, policy: &LevelPolicy, timeout: Duration) -> (Vec<String>, usize) {
        View::start(&self.admin, &self.ns)
            .await
            .until_exact(policy, timeout)
            .await
    }
}
