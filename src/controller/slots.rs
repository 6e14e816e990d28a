//! The reconcile slots of a term, shared by its queues: a priority, not a ceiling.
//!
//! A term runs at most as many reconciles at once as the kinds' shares add up to, whatever their kind: past the API
//! server's limit every request kube-apiserver holds takes CPU from the watches that tell the
//! operator (and users) what changed, so what counts is how few are in flight in all. Each kind
//! has a share of them it may always fill. A kind that has used its share may borrow the slots
//! another kind leaves idle, as long as nothing of that kind waits for them: after a hand-over
//! with every customer up to date, receipts run in every slot. Nothing is taken back from a
//! reconcile that runs; once a kind below its share waits, a borrower starts nothing new, so
//! the slots come back as its reconciles end (within one reconcile's time).

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// The slots of one term, and what each kind uses and waits for.
pub struct Slots {
    state: Mutex<State>,
    /// Bumped whenever a slot is given back or a kind starts or stops waiting: a queue that
    /// could not start may be able to now.
    changed: watch::Sender<()>,
}

struct State {
    shares: Vec<usize>,
    running: Vec<usize>,
    waiting: Vec<bool>,
}

impl Slots {
    /// Slots for kinds with these shares; the capacity is their sum.
    pub fn new(shares: &[usize]) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                shares: shares.iter().map(|share| (*share).max(1)).collect(),
                running: vec![0; shares.len()],
                waiting: vec![false; shares.len()],
            }),
            changed: watch::Sender::new(()),
        })
    }

    /// What kind `kind` (its index in the shares) draws its slots through.
    pub fn share(self: &Arc<Self>, kind: usize) -> Share {
        assert!(kind < self.state().shares.len(), "no share for kind {kind}");
        Share {
            slots: self.clone(),
            kind,
            changes: self.changed.subscribe(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    /// Whether `kind` may start one more reconcile now.
    fn may_start(&self, kind: usize) -> bool {
        let capacity: usize = self.shares.iter().sum();
        let running: usize = self.running.iter().sum();
        if running >= capacity {
            return false;
        }
        if self.running[kind] < self.shares[kind] {
            return true;
        }
        // Beyond its share: only slots no waiting kind below its share needs.
        let owed: usize = (0..self.shares.len())
            .filter(|other| *other != kind && self.waiting[*other])
            .map(|other| self.shares[other].saturating_sub(self.running[other]))
            .sum();
        running + owed < capacity
    }
}

/// One kind's way to its slots.
pub struct Share {
    slots: Arc<Slots>,
    kind: usize,
    changes: watch::Receiver<()>,
}

impl Share {
    /// A slot for one reconcile, if this kind may start one now; it is given back when the
    /// permit is dropped.
    pub fn try_take(&mut self) -> Option<Permit> {
        self.changes.mark_unchanged();
        let mut state = self.slots.state();
        if !state.may_start(self.kind) {
            return None;
        }
        state.running[self.kind] += 1;
        Some(Permit {
            slots: self.slots.clone(),
            kind: self.kind,
        })
    }

    /// Says whether this kind has work waiting for a slot.
    pub fn waiting(&self, waits: bool) {
        let mut state = self.slots.state();
        if state.waiting[self.kind] != waits {
            state.waiting[self.kind] = waits;
            drop(state);
            self.slots.changed.send_replace(());
        }
    }

    /// Resolves when a slot may have come free, or another kind's wait changed, since the last
    /// [`try_take`](Self::try_take).
    pub async fn changed(&mut self) {
        if self.changes.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Share {
    /// A kind that stops asks for nothing any more.
    fn drop(&mut self) {
        self.waiting(false);
    }
}

/// One slot, held while a reconcile runs.
pub struct Permit {
    slots: Arc<Slots>,
    kind: usize,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.slots.state().running[self.kind] -= 1;
        self.slots.changed.send_replace(());
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    const CUSTOMERS: usize = 0;
    const ORDERS: usize = 1;

    fn take(share: &mut Share, most: usize) -> Vec<Permit> {
        std::iter::from_fn(|| share.try_take()).take(most).collect()
    }

    #[test]
    fn a_kind_fills_its_share_and_borrows_what_no_other_kind_waits_for() {
        let slots = Slots::new(&[32, 8]);
        let (mut customers, mut orders) = (slots.share(CUSTOMERS), slots.share(ORDERS));
        // Receipts wait, no customer does: every slot.
        orders.waiting(true);
        let held = take(&mut orders, 100);
        assert_eq!(held.len(), 40, "receipts borrow the customers' idle slots");
        customers.waiting(true);
        assert!(customers.try_take().is_none(), "every slot is in use");
        drop(held);
        // And the other way round.
        orders.waiting(false);
        assert_eq!(take(&mut customers, 100).len(), 40);
    }

    #[test]
    fn a_borrower_starts_nothing_new_while_a_kind_below_its_share_waits() {
        let slots = Slots::new(&[32, 8]);
        let (mut customers, mut orders) = (slots.share(CUSTOMERS), slots.share(ORDERS));
        orders.waiting(true);
        let mut borrowed = take(&mut orders, 100);
        assert_eq!(borrowed.len(), 40);
        // Customers change: a receipt that ends gives its slot to a customer, not a receipt.
        customers.waiting(true);
        borrowed.truncate(30);
        assert!(
            orders.try_take().is_none(),
            "the customers' slots come back"
        );
        let customer_slots = take(&mut customers, 100);
        assert_eq!(customer_slots.len(), 10);
        // Receipts keep their own share whatever waits.
        borrowed.truncate(8);
        assert!(orders.try_take().is_none(), "8 receipts run: their share");
        let more = take(&mut customers, 100);
        assert_eq!(more.len(), 22, "the customers' share: 32 in all");
        assert!(customers.try_take().is_none());
        // Both wait: each has exactly its share.
        drop(borrowed);
        assert_eq!(take(&mut orders, 100).len(), 8);
    }

    #[test]
    fn a_kind_that_stops_waiting_lends_again() {
        let slots = Slots::new(&[32, 8]);
        let (customers, mut orders) = (slots.share(CUSTOMERS), slots.share(ORDERS));
        customers.waiting(true);
        orders.waiting(true);
        let held = take(&mut orders, 100);
        assert_eq!(held.len(), 8);
        let mut more = orders.try_take();
        assert!(more.is_none());
        customers.waiting(false);
        more = orders.try_take();
        assert!(more.is_some(), "nothing waits for the customers' slots");
        drop(customers);
        assert_eq!(
            take(&mut orders, 100).len(),
            31,
            "a lane dropped waits for nothing"
        );
    }

    #[test]
    fn a_slot_given_back_or_a_wait_that_ends_wakes_the_other_kind() {
        let slots = Slots::new(&[1, 1]);
        let (mut customers, mut orders) = (slots.share(CUSTOMERS), slots.share(ORDERS));
        let held = customers.try_take().unwrap();
        let _running = orders.try_take().unwrap();
        assert!(orders.try_take().is_none(), "both slots in use");
        assert!(orders.changed().now_or_never().is_none(), "nothing changed");
        drop(held);
        assert!(
            orders.changed().now_or_never().is_some(),
            "a slot came back"
        );
        customers.waiting(true);
        assert!(
            orders.try_take().is_none(),
            "the customers' share is theirs"
        );
        customers.waiting(false);
        assert!(orders.changed().now_or_never().is_some(), "a wait ended");
    }
}
