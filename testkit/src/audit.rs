//! The API server's audit log (JSON lines, level Metadata): who did what, with which result.

use std::path::{Path, PathBuf};

use k8s_openapi::jiff::Timestamp;
use serde::Deserialize;

/// The audit policy of every local control plane: the metadata of every request.
pub const POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
";

/// One audit event. Watches and other long-running requests log two stages
/// (`ResponseStarted`, `ResponseComplete`); everything else only `ResponseComplete`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    pub stage: String,
    pub verb: String,
    #[serde(rename = "requestURI")]
    pub request_uri: String,
    /// The authenticated user (the admin, when it impersonates someone).
    pub user: UserInfo,
    pub impersonated_user: Option<UserInfo>,
    #[serde(default)]
    pub object_ref: ObjectRef,
    pub response_status: Option<ResponseStatus>,
    pub user_agent: Option<String>,
    pub request_received_timestamp: Timestamp,
    pub stage_timestamp: Timestamp,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct UserInfo {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    #[serde(default)]
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// Empty for the core group.
    #[serde(default)]
    pub api_group: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ResponseStatus {
    pub code: Option<u16>,
}

const WRITE_VERBS: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

impl AuditEvent {
    /// Who acted: the impersonated user if any, else the authenticated one.
    pub fn user(&self) -> &str {
        self.impersonated_user
            .as_ref()
            .map_or(&self.user.username, |u| &u.username)
    }

    pub fn code(&self) -> Option<u16> {
        self.response_status.as_ref().and_then(|s| s.code)
    }

    pub fn succeeded(&self) -> bool {
        self.code().is_some_and(|c| (200..300).contains(&c))
    }

    pub fn is_complete(&self) -> bool {
        self.stage == "ResponseComplete"
    }

    pub fn is_write(&self) -> bool {
        WRITE_VERBS.contains(&self.verb.as_str())
    }

    /// `customers`, `customers/status`, ...
    pub fn resource_path(&self) -> String {
        match &self.object_ref.subresource {
            Some(sub) => format!("{}/{sub}", self.object_ref.resource),
            None => self.object_ref.resource.clone(),
        }
    }

    /// `reserve.coffeechain.io/customers/status:patch`, the form RBAC rules are compared in.
    pub fn group_resource_verb(&self) -> String {
        format!(
            "{}/{}:{}",
            self.object_ref.api_group,
            self.resource_path(),
            self.verb
        )
    }

    /// A successful write of the status subresource.
    pub fn is_status_write(&self) -> bool {
        self.is_complete()
            && self.is_write()
            && self.object_ref.subresource.as_deref() == Some("status")
            && self.succeeded()
    }

    pub fn in_namespace(&self, namespace: &str) -> bool {
        self.object_ref.namespace.as_deref() == Some(namespace)
    }
}

/// Every complete event in the log files, oldest first (a line still being written is skipped).
pub fn read(paths: &[PathBuf]) -> Vec<AuditEvent> {
    let mut events: Vec<AuditEvent> = paths
        .iter()
        .flat_map(|path| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            text.lines()
                .filter_map(|line| serde_json::from_str::<AuditEvent>(line).ok())
                .collect::<Vec<_>>()
        })
        .collect();
    events.sort_by_key(|e| e.stage_timestamp);
    events
}

/// The log file and the files rotated out of it (`audit-<time>.log`), oldest first.
pub fn files(log: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(stem)) = (log.parent(), log.file_stem().and_then(|s| s.to_str())) else {
        return vec![log.to_path_buf()];
    };
    let mut rotated: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{stem}-")) && n.ends_with(".log"))
        })
        .collect();
    rotated.sort();
    rotated.push(log.to_path_buf());
    rotated
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_impersonated_status_patch() {
        let line = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"1","stage":"ResponseComplete","requestURI":"/apis/reserve.coffeechain.io/v1/namespaces/ns/customers/alice/status?fieldManager=reserve-operator","verb":"patch","user":{"username":"admin","groups":["system:masters","system:authenticated"]},"impersonatedUser":{"username":"system:serviceaccount:reserve-system:op","groups":["system:serviceaccounts"]},"sourceIPs":["127.0.0.1"],"userAgent":"reserve-operator","objectRef":{"resource":"customers","namespace":"ns","name":"alice","apiGroup":"reserve.coffeechain.io","apiVersion":"v1","subresource":"status"},"responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":"2026-11-24T14:15:02.123456Z","stageTimestamp":"2026-11-24T14:15:02.130000Z"}"#;
        let event: AuditEvent = serde_json::from_str(line).unwrap();
        assert_eq!(event.user(), "system:serviceaccount:reserve-system:op");
        assert_eq!(event.user.username, "admin");
        assert!(event.is_status_write());
        assert!(event.in_namespace("ns"));
        assert_eq!(
            event.group_resource_verb(),
            "reserve.coffeechain.io/customers/status:patch"
        );
    }
}
