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
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::WriteStatus {
                source: kube::Error::Api(status),
                ..
            } if status.code == 409 => "conflict",
            Error::WriteStatus {
                source: kube::Error::Api(status),
                ..
            } if status.code == 403 => "forbidden",
            Error::WriteStatus { .. } => "write_status",
            Error::NoNamespace { .. } => "no_namespace",
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
