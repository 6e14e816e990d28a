//! What the libraries this operator builds on do not offer (yet), each kept small, with the
//! reason and the upstream issue it waits for. Two more live beside their use, for the same
//! reason: read-your-writes of status writes (`controller::status`) and the Lease renewal fence
//! (`leader`).

mod backoff;
mod conditional_lease;
mod events;

pub use backoff::Backoff;
pub use conditional_lease::conditional_lease_writes;
pub use events::{EventPublisher, Note, regarding};
