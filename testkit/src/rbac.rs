//! Who acts: identities for operators and users, and the RBAC bindings that let them.

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
