//! Who acts: identities for operators and users, and the RBAC bindings that let them.

use std::collections::BTreeSet;

use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding, RoleRef, Subject};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};

/// A user as the API server sees it (through impersonation): its name and extra groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub groups: Vec<String>,
}

impl Identity {
    pub fn user(name: impl Into<String>) -> Self {
        Self {
            user: name.into(),
            groups: Vec::new(),
        }
    }

    /// A ServiceAccount's user name; impersonating it adds its groups
    /// (`system:serviceaccounts`, `system:serviceaccounts:<namespace>`) by itself.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        Self::user(format!("system:serviceaccount:{namespace}:{name}"))
    }

    fn subject(&self) -> Subject {
        Subject {
            kind: "User".into(),
            name: self.user.clone(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            ..Default::default()
        }
    }

    /// A name usable for an object: the user name with every other character a dash.
    pub fn object_name(&self) -> String {
        self.user
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect()
    }
}

fn role_ref(kind: &str, name: &str) -> RoleRef {
    RoleRef {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: kind.into(),
        name: name.into(),
    }
}

/// Binds `identity` to the ClusterRole `role` in every namespace.
pub async fn grant_cluster_role(client: &Client, identity: &Identity, role: &str) {
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(format!("{}-{role}", identity.object_name())),
            ..Default::default()
        },
        role_ref: role_ref("ClusterRole", role),
        subjects: Some(vec![identity.subject()]),
    };
    Api::<ClusterRoleBinding>::all(client.clone())
        .create(&PostParams::default(), &binding)
        .await
        .unwrap_or_else(|e| panic!("bind {} to {role}: {e}", identity.user));
}

/// Binds `identity` to the ClusterRole or Role (`kind`) `role` in `namespace` only.
pub async fn grant_in_namespace(
    client: &Client,
    namespace: &str,
    identity: &Identity,
    kind: &str,
    role: &str,
) {
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some(format!("{}-{role}", identity.object_name())),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        role_ref: role_ref(kind, role),
        subjects: Some(vec![identity.subject()]),
    };
    Api::<RoleBinding>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap_or_else(|e| panic!("bind {} to {role} in {namespace}: {e}", identity.user));
}

/// Where a grant of the operator's RBAC applies: cluster-wide (its ClusterRole, or a Role in the
/// one namespace it watches) or in its own namespace (the Lease's Role).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Cluster,
    OperatorNamespace,
}

/// One rule of the operator's RBAC.
pub struct Grant {
    pub scope: Scope,
    pub group: &'static str,
    pub resource: &'static str,
    /// The one object the rule names, if it names one.
    pub name: Option<&'static str>,
    pub verbs: &'static [&'static str],
    /// Whether it comes only with settlement (`manifests/settlement`, `settlement.enabled`).
    pub settlement: bool,
}

const fn grant(
    scope: Scope,
    group: &'static str,
    resource: &'static str,
    verbs: &'static [&'static str],
) -> Grant {
    Grant {
        scope,
        group,
        resource,
        name: None,
        verbs,
        settlement: false,
    }
}

const GROUP: &str = "reserve.coffeechain.io";

/// The operator's permissions, one table: the manifests test, the chart test and the
/// ServiceAccount test (what the API server enforces, what the operator uses) all read it.
pub const OPERATOR_GRANTS: &[Grant] = &[
    grant(
        Scope::Cluster,
        GROUP,
        "customers",
        &["get", "list", "watch"],
    ),
    grant(Scope::Cluster, GROUP, "orders", &["get", "list", "watch"]),
    grant(Scope::Cluster, GROUP, "ledgers", &["get", "list", "watch"]),
    grant(Scope::Cluster, GROUP, "customers/status", &["patch"]),
    grant(Scope::Cluster, GROUP, "orders/status", &["patch"]),
    grant(Scope::Cluster, "events.k8s.io", "events", &["create"]),
    grant(
        Scope::OperatorNamespace,
        "coordination.k8s.io",
        "leases",
        &["create"],
    ),
    Grant {
        name: Some("reserve-operator"),
        ..grant(
            Scope::OperatorNamespace,
            "coordination.k8s.io",
            "leases",
            &["get", "list", "watch", "patch"],
        )
    },
    Grant {
        settlement: true,
        ..grant(Scope::Cluster, "", "namespaces", &["get", "list"])
    },
    Grant {
        settlement: true,
        ..grant(
            Scope::Cluster,
            GROUP,
            "ledgers",
            &["create", "patch", "update"],
        )
    },
    Grant {
        settlement: true,
        ..grant(Scope::Cluster, GROUP, "orders", &["delete"])
    },
    Grant {
        settlement: true,
        ..grant(Scope::Cluster, "events.k8s.io", "events", &["get", "patch"])
    },
];

/// The grants of `scope` (with settlement's, or only those without), one line per verb as
/// `group/resource[name]:verb`, the form the tests read rules in.
pub fn granted(scope: Scope, settlement: bool) -> BTreeSet<String> {
    OPERATOR_GRANTS
        .iter()
        .filter(|g| g.scope == scope && (settlement || !g.settlement))
        .flat_map(|g| {
            g.verbs.iter().map(move |verb| {
                format!(
                    "{}/{}[{}]:{verb}",
                    g.group,
                    g.resource,
                    g.name.unwrap_or_default()
                )
            })
        })
        .collect()
}

/// Every grant without settlement's as `group/resource:verb`, the form an audit event's
/// request takes.
pub fn granted_requests() -> BTreeSet<String> {
    OPERATOR_GRANTS
        .iter()
        .filter(|g| !g.settlement)
        .flat_map(|g| {
            g.verbs
                .iter()
                .map(move |verb| format!("{}/{}:{verb}", g.group, g.resource))
        })
        .collect()
}
