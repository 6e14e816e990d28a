//! Backup and restore: what only the operator writes (Ledgers, order snapshots) survives the
//! ways a cluster is recovered, and no score goes below what it was meanwhile.
//!
//! - `kubectl`: saved with `kubectl get -o json`, the namespace lost, put back with
//!   `reserve-operator restore` as the restore identity.
//! - `etcd`: etcd restored from a snapshot, or its data directory from a cold copy, while the
//!   operator runs.
//! - `gitops`: customers and orders kept in Git, applied again to a lost namespace.
//! - `objects`: restored object by object as Velero does, by a small client of its own.
//!
//! Velero itself, the fourth way, has a target of its own (`make test-velero`).

mod etcd;
mod gitops;
mod history;
mod kubectl;
mod objects;
mod velero;

use tokio::sync::RwLock;

/// An etcd restore takes the whole control plane back in time: it runs alone.
static STORE: RwLock<()> = RwLock::const_new(());
