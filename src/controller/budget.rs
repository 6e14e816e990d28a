//! How many reconciles run at once, across both queues, and who goes first.
//!
//! Every reconcile may end in a status write, and at the API server's limit more writes in
//! flight do not mean more writes done: they wait in the server, users' own writes wait behind
//! them, and whatever changes meanwhile is written again. So the budget follows how fast writes
//! are answered (additive increase, multiplicative decrease, as TCP does):
//!
//! - an answer within [`SLOW`] adds one slot, up to the most the operator was started with;
//! - a slower answer, a 429, a 5xx or no answer at all cuts the budget by a quarter, once per
//!   round trip (answers to writes sent before the last cut do not cut again), down to [`MIN`].
//!
//! What does not start waits in its queue as a key, so the changes that arrive meanwhile fold
//! into one write carrying the latest state: past the knee, the operator writes less, not later.
//!
//! Customers go first: their statuses are what users read. While customers wait, receipts keep
//! at most [`ORDER_SHARE`] of the budget (at least one slot), and the other way round, so
//! neither starves.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{sync::watch, time::Instant};

/// A write answered later than this counts as a sign that the API server is busy.
pub const SLOW: Duration = Duration::from_millis(100);
/// The budget never falls below this many reconciles at once.
pub const MIN: usize = 4;
/// The share of the budget receipts keep while customers wait.
const ORDER_SHARE: f64 = 0.25;
/// What a cut leaves of the budget.
const CUT: f64 = 0.75;

/// The two kinds of reconcile that share the budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Customer,
    Order,
}

impl Class {
    fn index(self) -> usize {
        match self {
            Class::Customer => 0,
            Class::Order => 1,
        }
    }

    fn other(self) -> Class {
        match self {
            Class::Customer => Class::Order,
            Class::Order => Class::Customer,
        }
    }
}

struct State {
    limit: f64,
    /// Slots held, per class.
    held: [usize; 2],
    /// Keys waiting for a slot, per class (as each queue last said).
    waiting: [usize; 2],
    /// When the budget was last cut: slow answers to writes sent before then are the same
    /// congestion, already answered for.
    cut_at: Option<Instant>,
}

pub struct Budget {
    max: usize,
    floor: usize,
    state: Mutex<State>,
    /// Bumped whenever a slot may have become free for a class that waits.
    changed: watch::Sender<u64>,
}

impl Budget {
    /// A budget of `max` reconciles at once, which it starts with (and never cut below
    /// [`MIN`], or `max` if that is less).
    pub fn new(max: usize) -> Arc<Budget> {
        let max = max.max(1);
        Arc::new(Budget {
            max,
            floor: MIN.min(max),
            state: Mutex::new(State {
                limit: max as f64,
                held: [0; 2],
                waiting: [0; 2],
                cut_at: None,
            }),
            changed: watch::Sender::new(0),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn notify(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Reconciles allowed at once now.
    pub fn limit(&self) -> usize {
        self.state().limit as usize
    }

    /// A write sent at `sent` was answered at `now`; `busy` if the answer says the API server
    /// is overloaded (429, 5xx, no answer).
    pub fn answered(&self, sent: Instant, now: Instant, busy: bool) {
        let grew = {
            let mut state = self.state();
            if busy || now.saturating_duration_since(sent) > SLOW {
                if state.cut_at.is_none_or(|cut| sent >= cut) {
                    state.limit = (state.limit * CUT).max(self.floor as f64);
                    state.cut_at = Some(now);
                }
                false
            } else {
                let before = state.limit as usize;
                state.limit = (state.limit + 1.0).min(self.max as f64);
                state.limit as usize > before
            }
        };
        if grew {
            self.notify();
        }
    }

    /// The slots of one class, for its queue.
    pub fn slots(self: &Arc<Self>, class: Class) -> Slots {
        Slots {
            budget: self.clone(),
            class,
            changed: self.changed.subscribe(),
        }
    }
}

/// One queue's view of the budget.
pub struct Slots {
    budget: Arc<Budget>,
    class: Class,
    changed: watch::Receiver<u64>,
}

impl Slots {
    /// Takes a slot for one of the `waiting` keys of this class, if the budget allows one now.
    /// Also tells the budget how many wait, so the other class knows.
    pub fn take(&mut self, waiting: usize) -> bool {
        self.changed.borrow_and_update();
        let (own, other) = (self.class.index(), self.class.other().index());
        let (taken, others_may_go) = {
            let mut state = self.budget.state();
            let was_waiting = state.waiting[own] > 0;
            state.waiting[own] = waiting;
            let limit = state.limit as usize;
            let held = state.held[0] + state.held[1];
            // What this class may hold while the other waits: all but the other's share.
            let share = ((state.limit * ORDER_SHARE).ceil() as usize).max(1);
            let cap = match self.class {
                Class::Order => share,
                Class::Customer => limit.saturating_sub(share).max(1),
            };
            let taken =
                waiting > 0 && held < limit && (state.waiting[other] == 0 || state.held[own] < cap);
            if taken {
                state.held[own] += 1;
                state.waiting[own] -= 1;
            }
            (
                taken,
                was_waiting && state.waiting[own] == 0 && held < limit,
            )
        };
        if others_may_go {
            self.budget.notify();
        }
        taken
    }

    /// Gives a slot back.
    pub fn release(&self) {
        {
            let mut state = self.budget.state();
            let own = self.class.index();
            state.held[own] = state.held[own].saturating_sub(1);
        }
        self.budget.notify();
    }

    /// Resolves when a slot may have become free (some may have been taken again by then).
    pub async fn changed(&mut self) {
        if self.changed.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Slots {
    /// A queue that ends (its term is over) no longer waits for anything.
    fn drop(&mut self) {
        self.budget.state().waiting[self.class.index()] = 0;
        self.budget.notify();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast(budget: &Budget, sent: Instant) {
        budget.answered(sent, sent + Duration::from_millis(5), false);
    }

    #[test]
    fn customers_go_first_and_receipts_keep_their_share() {
        let budget = Budget::new(8);
        let (mut customers, mut orders) =
            (budget.slots(Class::Customer), budget.slots(Class::Order));
        // Receipts alone may use the whole budget.
        for _ in 0..8 {
            assert!(orders.take(100));
        }
        assert!(!orders.take(92));
        // Customers wait: receipts give back what they hold beyond their share (2 of 8).
        assert!(!customers.take(10));
        for _ in 0..6 {
            orders.release();
            assert!(
                !orders.take(92),
                "receipts beyond their share while customers wait"
            );
            assert!(customers.take(10));
        }
        // Receipts keep their share: customers may not take the last two slots.
        orders.release();
        orders.release();
        assert!(orders.take(92) && orders.take(91));
        customers.release();
        assert!(
            !orders.take(90),
            "receipts beyond their share while customers wait"
        );
        assert!(customers.take(4));
        // No customer waits any more: receipts take what is free.
        assert!(!customers.take(0));
        customers.release();
        assert!(orders.take(90));
    }

    #[test]
    fn slow_answers_cut_the_budget_once_per_round_trip_and_fast_ones_restore_it() {
        let budget = Budget::new(64);
        let start = Instant::now();
        let late = start + Duration::from_millis(300);
        // Many writes sent together come back slow: one cut, not one per answer.
        for _ in 0..10 {
            budget.answered(start, late, false);
        }
        assert_eq!(budget.limit(), 48);
        // A write sent after that cut, still slow: the next cut.
        budget.answered(late, late + Duration::from_millis(200), false);
        assert_eq!(budget.limit(), 36);
        // A 429 cuts however fast it came.
        let then = late + Duration::from_secs(1);
        budget.answered(then, then, true);
        assert_eq!(budget.limit(), 27);
        // Never below the floor.
        for round in 1..100 {
            let at = then + Duration::from_secs(round);
            budget.answered(at, at, true);
        }
        assert_eq!(budget.limit(), MIN);
        // Fast answers bring it back, one slot each, up to the start.
        for _ in 0..10 {
            fast(&budget, then);
        }
        assert_eq!(budget.limit(), MIN + 10);
        for _ in 0..100 {
            fast(&budget, then);
        }
        assert_eq!(budget.limit(), 64);
    }

    #[tokio::test]
    async fn a_freed_slot_wakes_the_queue_that_waits() {
        let budget = Budget::new(MIN);
        let (mut customers, mut orders) =
            (budget.slots(Class::Customer), budget.slots(Class::Order));
        for _ in 0..MIN {
            assert!(orders.take(10));
        }
        assert!(!customers.take(1));
        let woken = tokio::spawn(async move {
            customers.changed().await;
            customers.take(1)
        });
        tokio::task::yield_now().await;
        assert!(!woken.is_finished());
        orders.release();
        assert!(woken.await.unwrap(), "the freed slot went to the customer");
    }
}
