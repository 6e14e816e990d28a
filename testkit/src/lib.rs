//! What the tests, the chaos suite, the benchmark and the demo share, written once: a real
//! control plane, the operator as a process or in this process, its probes, the audit log, RBAC
//! identities, fixtures and one seeded workload whose expected statuses come from the
//! operator's own rules.

pub mod audit;
mod certs;
pub mod control_plane;
pub mod fixtures;
pub mod invariants;
pub mod node;
pub mod operator;
pub mod probe;
pub mod process;
pub mod proxy;
pub mod rbac;
pub mod shop;
pub mod tools;
pub mod velero;
pub mod view;
pub mod workload;

pub use control_plane::{AuditMode, ControlPlane, Options};
pub use operator::{InProcessOperator, Launch, OperatorProcess};
pub use probe::{Metrics, Probe};
pub use process::{Lifetime, Proc, free_port, watchdog};
pub use rbac::Identity;
pub use shop::Shop;

use std::{future::Future, time::Duration};

/// Polls `f` every 100 ms until it returns `Some`, and returns that; panics naming `what` after
/// `timeout`.
pub async fn eventually<F, Fut, T>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
