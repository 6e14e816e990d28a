use std::time::Duration;

use thiserror::Error;

/// How soon an object is looked at again when its write was withheld (fresh data or a fresh
/// Lease is on its way).
const WITHHELD_RETRY: Duration = Duration::from_millis(500);

/// What one reconcile comes to: Ok(None) when it is done until something changes, Ok(Some(wait))
/// to look again after `wait` (a restore's hold, a customer's pace), or the error it failed with.
pub type Outcome = Result<Option<Duration>, Error>;

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

/// What kind of failure an [`Error`] is: what decides its retry, its log line, what readiness
/// is told, and the `error` label of `reserve_reconcile_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// 409: someone else wrote first; the next reconcile starts from what they wrote.
    Conflict,
    /// 403: the operator's identity lacks a permission (or admission refused it).
    Forbidden,
    /// 422: the API server refused the status as invalid.
    Invalid,
    /// Any other failed write: the server failed or could not be reached.
    WriteStatus,
    NoNamespace,
    NotLeading,
    Relisting,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::Conflict,
        ErrorKind::Forbidden,
        ErrorKind::Invalid,
        ErrorKind::WriteStatus,
        ErrorKind::NoNamespace,
        ErrorKind::NotLeading,
        ErrorKind::Relisting,
    ];

    pub const fn label(self) -> &'static str {
        match self {
            ErrorKind::Conflict => "conflict",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::Invalid => "invalid",
            ErrorKind::WriteStatus => "write_status",
            ErrorKind::NoNamespace => "no_namespace",
            ErrorKind::NotLeading => "not_leading",
            ErrorKind::Relisting => "relisting",
        }
    }
}

/// Every value of the `error` label, so the series exist at zero before the first failure.
pub const METRIC_LABELS: [&str; 7] = {
    let mut labels = [""; 7];
    let mut i = 0;
    while i < ErrorKind::ALL.len() {
        labels[i] = ErrorKind::ALL[i].label();
        i += 1;
    }
    labels
};

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

    pub fn kind(&self) -> ErrorKind {
        match (self, self.api_code()) {
            (_, Some(409)) => ErrorKind::Conflict,
            (_, Some(403)) => ErrorKind::Forbidden,
            (_, Some(422)) => ErrorKind::Invalid,
            (Error::WriteStatus { .. }, _) => ErrorKind::WriteStatus,
            (Error::NoNamespace { .. }, _) => ErrorKind::NoNamespace,
            (Error::NotLeading(_), _) => ErrorKind::NotLeading,
            (Error::Relisting, _) => ErrorKind::Relisting,
        }
    }

    /// How long to wait before reconciling the object again after this failure, for every
    /// kind: a withheld write soon, without counting a failure; anything else after what
    /// `backoff` says (which counts it).
    pub fn retry_after(&self, backoff: impl FnOnce() -> Duration) -> Duration {
        match self.kind() {
            ErrorKind::NotLeading | ErrorKind::Relisting => WITHHELD_RETRY,
            _ => backoff(),
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
