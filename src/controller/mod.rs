//! The two controllers and how watch events reach them.
//!
//! One watch per kind feeds the shared [`Index`] on every replica, leader or not, so a standby
//! that takes over has everything at hand and needs no re-list. Ledgers are also kept whole in a
//! reflector cache; Customers and Orders are not: the index keeps what their reconcilers read
//! ([`seen`]), a quarter of the memory or less. Only the Lease holder reconciles: each term
//! starts one queue per kind ([`queue`]) on one set of reconcile slots ([`slots`]), reconciles
//! every object once, then whatever the watches wake ([`feed`]). A queue runs at most one
//! reconcile per object at a time and folds the wakes that arrive meanwhile into one more, so a
//! busy object is written as fast as the API server accepts, never held back by a debounce;
//! every kind's reconcile has one shape and one mapping of its failures to retries ([`term`]).
//!
//! Where each job lives: [`watches`] (the watches, the caches, the freshness probe), [`feed`]
//! (watch events into the index and wakes), [`triggers`] (wakes into the term's queues),
//! [`term`] (a term: the queues, the sweep, settlement), [`customer`] and [`order`] (the
//! reconcilers), [`status`] (the only write), [`collectors`] (metrics counted at scrape).
//!
//! Neither controller acts before every cache holds a full list: a customer reconciled against
//! half of its orders, or without its ledger, would publish a wrong score. With `--settle-after`,
//! the term also runs [`settlement`].

mod backlog;
mod collectors;
pub mod conditions;
mod context;
pub mod customer;
pub mod declared;
mod error;
mod feed;
#[cfg(test)]
mod fixtures;
mod freshness;
pub mod index;
mod objects;
pub mod order;
mod pacer;
mod queue;
mod readiness;
pub mod restore;
pub mod seen;
pub mod settlement;
mod slots;
pub mod status;
mod term;
#[cfg(test)]
mod tests;
mod triggers;
mod watches;

pub use backlog::Backlogs;
pub use collectors::{CustomersPerLevel, LedgerCounts};
pub use context::{Context, Observed, SharedIndex};
pub use declared::FIELD_MANAGER;
pub use error::{Error, METRIC_LABELS};
pub use index::{Index, OrderKey};
pub use readiness::{Readiness, ReadyCollector};
pub use term::{CUSTOMER_SHARE, ORDER_SHARE, RESYNC, lead};
pub use triggers::{Triggers, Wakes};
pub use watches::{CacheWriters, Caches, Watches, caches, watch};
