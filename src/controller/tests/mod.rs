//! The reconcile tier: the controllers' wiring, reconcilers and writer against a scripted API
//! server (see [`fixtures`](super::fixtures)), with every request checked.

mod customer;
mod feed;
mod handover;
