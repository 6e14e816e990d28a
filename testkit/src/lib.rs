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
pub mod ports;
pub mod probe;
pub mod process;
pub mod proxy;
pub mod rbac;
pub mod shop;
pub mod tools;
pub mod velero;
pub mod view;
mod wait;
pub mod workload;

pub use control_plane::{AuditMode, ControlPlane, Options};
pub use operator::{InProcessOperator, Launch, OperatorProcess};
pub use ports::free_port;
pub use probe::{Metrics, Probe};
pub use process::{Lifetime, Proc, watchdog};
pub use rbac::Identity;
pub use shop::Shop;
pub use wait::{FAIL_AFTER, eventually, until};
