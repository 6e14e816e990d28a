use thiserror::Error;

/// Why a reconcile failed. The controller retries with backoff; the variant names the
/// `error` label of the `reserve_reconcile_errors_total` metric.
#[derive(Debug, Error)]
pub enum Error {
    #[error("writing status of {kind} {namespace}/{name}: {}", brief(source))]
    WriteStatus {
        kind: String,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("{kind} {name} has no namespace")]
    NoNamespace { kind: String, name: String },
    /// The write was withheld: this replica may not write now.
    #[error("status write withheld: {0}")]
    NotLeading(&'static str),
    /// The write was withheld: the watches are listing again, and until they all have, the
    /// index may mix two moments of the store.
    #[error("status write withheld: the watches are listing again")]
    Relisting,
}

/// Every value of the `error` label, so the series exist at zero before the first failure.
pub const METRIC_LABELS: [&str; 7] = [
    "conflict",
    "forbidden",
    "invalid",
    "write_status",
    "no_namespace",
    "not_leading",
    "relisting",
];

impl Error {
    fn api_code(&self) -> Option<u16> {
        match self {
            Error::WriteStatus {
                source: kube::Error::Api(status),
                ..
            } => Some(status.code),
            _ => None,
        }
    }

    pub fn metric_label(&self) -> &'static str {
        match (self, self.api_code()) {
            (_, Some(409)) => "conflict",
            (_, Some(403)) => "forbidden",
            (_, Some(422)) => "invalid",
            (Error::WriteStatus { .. }, _) => "write_status",
            (Error::NoNamespace { .. }, _) => "no_namespace",
            (Error::NotLeading(_), _) => "not_leading",
            (Error::Relisting, _) => "relisting",
        }
    }

    /// A failure on the server's side or on the way to it (5xx, 429, timeouts, broken
    /// connections), as opposed to a refusal or a conflict the operator resolves itself.
    pub fn is_server_failure(&self) -> bool {
        match self {
            Error::WriteStatus {
                source: kube::Error::Api(status),
                ..
            } => status.code >= 500 || status.code == 429,
            Error::WriteStatus { .. } => true,
            Error::NoNamespace { .. } | Error::NotLeading(_) | Error::Relisting => false,
        }
    }
}

/// The API server's own message for API errors (the full error is in `source()`).
fn brief(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!("{} ({})", status.message, status.code),
        other => other.to_string(),
    }
}
