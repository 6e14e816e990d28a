//! The API server's audit log (JSON lines, level Metadata).

use serde_json::Value;
use std::path::Path;

/// One audit event. Watches and other long-running requests log two stages
/// (`ResponseStarted`, `ResponseComplete`); everything else only `ResponseComplete`.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEvent {
    /// The impersonated user if any, else the authenticated user.
    pub user: String,
    /// The authenticated user (the admin when impersonating).
    pub authenticated_user: String,
    pub verb: String,
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// HTTP status of the response (`None` if the log has none).
    pub code: Option<i32>,
    /// API group; empty for the core group.
    pub api_group: String,
    pub stage: String,
    pub request_uri: String,
    pub user_agent: Option<String>,
}

impl AuditEvent {
    fn from_json(v: &Value) -> Option<AuditEvent> {
        let s = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
        let authenticated_user = s("/user/username")?;
        Some(AuditEvent {
            user: s("/impersonatedUser/username").unwrap_or_else(|| authenticated_user.clone()),
            authenticated_user,
            verb: s("/verb")?,
            resource: s("/objectRef/resource").unwrap_or_default(),
            subresource: s("/objectRef/subresource"),
            namespace: s("/objectRef/namespace"),
            name: s("/objectRef/name"),
            code: v
                .pointer("/responseStatus/code")
                .and_then(Value::as_i64)
                .map(|c| c as i32),
            api_group: s("/objectRef/apiGroup").unwrap_or_default(),
            stage: s("/stage").unwrap_or_default(),
            request_uri: s("/requestURI").unwrap_or_default(),
            user_agent: s("/userAgent"),
        })
    }
}

/// Every complete event in the log (a line still being written is skipped).
pub fn parse_log(path: &Path) -> Vec<AuditEvent> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|v| AuditEvent::from_json(&v))
        .collect()
}

pub const POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
";
