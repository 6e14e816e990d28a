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
//! at most [`ORDER_SHARE`] of the budget (at least one slot), and the other way round; and a
//! change of either class that has waited [`OVERDUE`] goes before the other's, so a receipt is
//! late by seconds, never by minutes, while customers are busy.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{sync::watch, time::Instant};

/// A write answered later than this counts as a sign that the API server is drowning. Not
/// sooner: at the API server's limit every answer is slow because of every writer's load, and
/// a budget that shrank then would only cut the operator's share of what the server does.
pub const SLOW: Duration = Duration::from_secs(1);
/// The budget never falls below this many reconciles at once.
pub const MIN: usize = 16;
/// A change that has waited this long goes before the other class's, whatever the shares.
pub const OVERDUE: Duration = Duration::from_secs(5);
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
    /// Whether a class's oldest waiting change is overdue (as each queue last said).
    overdue: [bool; 2],
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
                overdue: [false; 2],
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
    /// Takes a slot for one of the `waiting` keys of this class (the oldest change woken at
    /// `oldest`), if the budget allows one now. Also tells the budget how many wait and whether
    /// one is overdue, so the other class knows.
    pub fn take(&mut self, waiting: usize, oldest: Option<Instant>) -> bool {
        let overdue = oldest.is_some_and(|at| at.elapsed() >= OVERDUE);
        self.changed.borrow_and_update();
        let (own, other) = (self.class.index(), self.class.other().index());
        let (taken, others_may_go) = {
            let mut state = self.budget.state();
            let was_waiting = state.waiting[own] > 0;
            state.waiting[own] = waiting;
            state.overdue[own] = overdue;
            let limit = state.limit as usize;
            let held = state.held[0] + state.held[1];
            // What this class may hold while the other waits: all but the other's share.
            let share = ((state.limit * ORDER_SHARE).ceil() as usize).max(1);
            let cap = match self.class {
                Class::Order => share,
                Class::Customer => limit.saturating_sub(share).max(1),
            };
            // Within its cap, a class goes unless the other's wait is overdue; overdue, it goes.
            let taken = waiting > 0
                && held < limit
                && (state.waiting[other] == 0
                    || overdue
                    || (state.held[own] < cap && !state.overdue[other]));
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
        let mut state = self.budget.state();
        state.waiting[self.class.index()] = 0;
        state.overdue[self.class.index()] = false;
        drop(state);
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
            assert!(orders.take(100, None));
        }
        assert!(!orders.take(92, None));
        // Customers wait: receipts give back what they hold beyond their share (2 of 8).
        assert!(!customers.take(10, None));
        for _ in 0..6 {
            orders.release();
            assert!(
                !orders.take(92, None),
                "receipts beyond their share while customers wait"
            );
            assert!(customers.take(10, None));
        }
        // Receipts keep their share: customers may not take the last two slots.
        orders.release();
        orders.release();
        assert!(orders.take(92, None) && orders.take(91, None));
        customers.release();
        assert!(
            !orders.take(90, None),
            "receipts beyond their share while customers wait"
        );
        assert!(customers.take(4, None));
        // No customer waits any more: receipts take what is free.
        assert!(!customers.take(0, None));
        customers.release();
        assert!(orders.take(90, None));
    }

    #[test]
    fn slow_answers_cut_the_budget_once_per_round_trip_and_fast_ones_restore_it() {
        let budget = Budget::new(64);
        let start = Instant::now();
        let late = start + Duration::from_millis(1_500);
        // Many writes sent together come back slow: one cut, not one per answer.
        for _ in 0..10 {
            budget.answered(start, late, false);
        }
        assert_eq!(budget.limit(), 48);
        // Slow, but within SLOW: every writer's load at the API server's limit, no cut.
        budget.answered(late, late + SLOW, false);
        assert_eq!(budget.limit(), 49);
        // A write sent after that cut, still slow: the next cut.
        budget.answered(late, late + Duration::from_millis(1_200), false);
        assert_eq!(budget.limit(), 36);
        // A 429 cuts however fast it came.
        let then = late + Duration::from_secs(2);
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

    #[test]
    fn an_overdue_receipt_goes_before_customers() {
        let budget = Budget::new(8);
        let (mut customers, mut orders) =
            (budget.slots(Class::Customer), budget.slots(Class::Order));
        // Receipts hold their share (2), customers the rest; both have more waiting.
        assert!(orders.take(50, None) && orders.take(49, None));
        for waiting in (45..51).rev() {
            assert!(customers.take(waiting, None));
        }
        assert!(!orders.take(48, None));
        // A customer's slot frees: while no receipt is overdue, it is the customers'.
        customers.release();
        assert!(!orders.take(48, None));
        assert!(customers.take(44, None));
        // The oldest receipt has waited too long: the next free slot is its.
        let long_ago = Instant::now().checked_sub(OVERDUE * 2);
        assert!(!orders.take(48, long_ago), "no slot free yet");
        customers.release();
        assert!(!customers.take(43, None), "an overdue receipt goes first");
        assert!(orders.take(48, long_ago));
        // And so does an overdue customer.
        orders.release();
        assert!(customers.take(43, long_ago));
    }

    #[tokio::test]
    async fn a_freed_slot_wakes_the_queue_that_waits() {
        let budget = Budget::new(MIN);
        let (mut customers, mut orders) =
            (budget.slots(Class::Customer), budget.slots(Class::Order));
        for _ in 0..MIN {
            assert!(orders.take(10, None));
        }
        assert!(!customers.take(1, None));
        let woken = tokio::spawn(async move {
            customers.changed().await;
            customers.take(1, None)
        });
        tokio::task::yield_now().await;
        assert!(!woken.is_finished());
        orders.release();
        assert!(woken.await.unwrap(), "the freed slot went to the customer");
    }
}
