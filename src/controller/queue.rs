//! The work queue every kind's reconciles run on. It holds keys, not objects: the reconcile
//! reads what it needs when it runs (a Customer's or an Order's facts from the index, which
//! keeps no whole objects), so what it reads is never older than the wake.
//!
//! - A key woken several times while it waits runs once.
//! - At most one reconcile runs per key; a wake that arrives meanwhile runs it once more after.
//! - A reconcile starts only with a slot of the term's [`Slots`](super::slots::Slots), shared by
//!   every kind's queue: a kind fills its share, and borrows what the others leave idle.
//! - Changes go first: a key woken because it changed runs before every key that waits only
//!   for a sweep (a term's first look at everything, a resync, a re-list), each lane in the
//!   order its keys were woken. A sweep of thousands of objects after a hand-over must not hold
//!   back what a user changes meanwhile: the sweep's keys are looked at once nothing newer waits.
//! - A sweep arrives as a source of keys, not as the keys: the queue draws a batch of
//!   [`SWEEP_BATCH`] when its lanes are empty, so a sweep of every order holds a batch of keys,
//!   not all of them at once. A newer sweep replaces what is left of one still being drawn (it
//!   covers everything again, as things are now). A key that changes while a sweep is being
//!   drawn may be looked at once more when the sweep reaches it.
//! - A reconcile may ask to run again after a delay (a retry, which counts as a change).
//! - When `stop` resolves, nothing new starts; the reconciles in flight finish first.
//! - What waits and runs is shown on a [`Backlog`] for the metrics, with since when the oldest
//!   waiting change has waited.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    future::Future,
    hash::Hash,
    sync::Arc,
    time::Duration,
};

use futures::{StreamExt, stream::FuturesUnordered};
use tokio::{
    sync::mpsc::{UnboundedReceiver, error::TryRecvError},
    time::Instant,
};
use tokio_util::time::DelayQueue;

use super::{
    backlog::{Backlog, Shown},
    slots::Share,
};

/// How many keys a queue draws from a sweep at a time.
pub const SWEEP_BATCH: usize = 256;

/// A sweep's keys, drawn as the queue has room for them.
pub type Sweep<T> = Box<dyn Iterator<Item = T> + Send>;

/// What a queue is told.
pub enum Wake<T> {
    /// The object, or what its status depends on, changed.
    Changed(T),
    /// Look at everything: these keys, once no change waits.
    Sweep(Sweep<T>),
}

/// Why a key is woken, which decides when it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// The object, or what its status depends on, changed.
    Change,
    /// Everything is looked at (a term's start, a resync, a re-list).
    Sweep,
}

/// Runs `reconcile` for the keys that arrive on `wakes`, each in a slot of `slots`, until
/// `wakes` closes or `stop` resolves, showing what waits and runs on `backlog`. `reconcile`
/// returns when to run the key again, if it must.
pub async fn run<T, F, Fut>(
    mut wakes: UnboundedReceiver<Wake<T>>,
    stop: impl Future<Output = ()>,
    mut slots: Share,
    backlog: Arc<Backlog>,
    reconcile: F,
) where
    T: Clone + Eq + Hash,
    F: Fn(T) -> Fut,
    Fut: Future<Output = Option<Duration>>,
{
    let mut queue: Queue<T> = Queue::default();
    let mut retries = DelayQueue::new();
    let mut in_flight = FuturesUnordered::new();
    let mut stopping = false;
    tokio::pin!(stop);
    loop {
        // Every wake that has arrived counts before the next key is chosen, so a change is
        // never passed over for a sweep's key just because it was not read yet.
        while !stopping {
            match wakes.try_recv() {
                Ok(wake) => queue.told(wake),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => stopping = true,
            }
        }
        while !stopping
            && queue.waits()
            && let Some(slot) = slots.try_take()
            && let Some(key) = queue.start()
        {
            let run = reconcile(key.clone());
            in_flight.push(async move {
                let again = run.await;
                drop(slot);
                (key, again)
            });
        }
        slots.waiting(!stopping && queue.waits());
        backlog.show(queue.shown());
        if stopping && in_flight.is_empty() {
            backlog.show(Shown::default());
            return;
        }
        tokio::select! {
            woken = wakes.recv(), if !stopping => match woken {
                Some(wake) => queue.told(wake),
                None => stopping = true,
            },
            Some(retry) = retries.next(), if !stopping && !retries.is_empty() => {
                queue.wake(retry.into_inner(), Lane::Change);
            }
            Some((key, again)) = in_flight.next(), if !in_flight.is_empty() => {
                queue.finished(&key);
                if let Some(after) = again {
                    retries.insert(key, after);
                }
            }
            () = &mut stop, if !stopping => stopping = true,
            () = slots.changed(), if !stopping && queue.waits() => {}
        }
    }
}

/// Which keys wait (and in which lane), run, and must run once more. A waiting key is stored
/// once and shared by its lane and `waiting`: past the API server's limit every object may
/// wait at once, and a key (an order's namespace, customer and name) costs more than a pointer.
struct Queue<T> {
    changes: VecDeque<Arc<T>>,
    sweeps: VecDeque<Arc<T>>,
    /// Every waiting key, the lane it waits in and since when. A key promoted from the sweep
    /// lane to the change lane leaves a stale entry behind in `sweeps`, skipped when it comes up.
    waiting: HashMap<Arc<T>, (Lane, Instant)>,
    running: HashSet<T>,
    again: HashMap<T, (Lane, Instant)>,
    /// The sweep still being drawn, if any.
    sweep: Option<Sweep<T>>,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Self {
            changes: VecDeque::new(),
            sweeps: VecDeque::new(),
            waiting: HashMap::new(),
            running: HashSet::new(),
            again: HashMap::new(),
            sweep: None,
        }
    }
}

impl<T: Clone + Eq + Hash> Queue<T> {
    fn told(&mut self, wake: Wake<T>) {
        match wake {
            Wake::Changed(key) => self.wake(key, Lane::Change),
            Wake::Sweep(sweep) => self.sweep = Some(sweep),
        }
    }

    /// Whether a key waits to start (or a sweep to be drawn).
    fn waits(&self) -> bool {
        !self.waiting.is_empty() || self.sweep.is_some()
    }

    fn wake(&mut self, key: T, lane: Lane) {
        self.wake_since(key, lane, Instant::now());
    }

    /// Wakes `key` in `lane`, as a wake at `since` (a change that waited while its key ran
    /// keeps its age).
    fn wake_since(&mut self, key: T, lane: Lane, since: Instant) {
        if self.running.contains(&key) {
            let again = self.again.entry(key).or_insert((lane, since));
            if (again.0, lane) == (Lane::Sweep, Lane::Change) {
                *again = (Lane::Change, since);
            }
            return;
        }
        if let Some((shared, (waits, _))) = self.waiting.get_key_value(&key) {
            if (*waits, lane) == (Lane::Sweep, Lane::Change) {
                let shared = shared.clone();
                self.waiting.insert(shared.clone(), (Lane::Change, since));
                self.changes.push_back(shared);
            }
            return;
        }
        let shared = Arc::new(key);
        self.waiting.insert(shared.clone(), (lane, since));
        match lane {
            Lane::Change => self.changes.push_back(shared),
            Lane::Sweep => self.sweeps.push_back(shared),
        }
    }

    fn start(&mut self) -> Option<T> {
        let key = loop {
            if self.changes.is_empty() && self.sweeps.is_empty() {
                self.draw();
            }
            let (key, lane) = match self.changes.pop_front() {
                Some(key) => (key, Lane::Change),
                None => (self.sweeps.pop_front()?, Lane::Sweep),
            };
            if self.waiting.get(&key).map(|(waits, _)| *waits) == Some(lane) {
                break key;
            }
        };
        self.waiting.remove(&key);
        // The last copy unless a stale sweep entry still holds it.
        let key = Arc::unwrap_or_clone(key);
        self.running.insert(key.clone());
        Some(key)
    }

    /// Moves the sweep's next keys into the sweep lane, until one waits there or the sweep
    /// is drawn to its end (keys already waiting or running are not woken twice).
    fn draw(&mut self) {
        while self.sweeps.is_empty()
            && let Some(sweep) = self.sweep.as_mut()
        {
            let batch: Vec<T> = sweep.by_ref().take(SWEEP_BATCH).collect();
            if batch.len() < SWEEP_BATCH {
                self.sweep = None;
            }
            for key in batch {
                self.wake(key, Lane::Sweep);
            }
        }
    }

    /// What waits and runs, and since when the oldest waiting change has waited (the change
    /// lane is in the order of its wakes; a key woken again while it runs waits as well).
    fn shown(&self) -> Shown {
        let front = self.changes.front().and_then(|key| self.waiting.get(key));
        let again = self.again.values();
        Shown {
            waiting: self.waiting.len() + self.again.len(),
            running: self.running.len(),
            oldest_change: front
                .into_iter()
                .chain(again)
                .filter(|(lane, _)| *lane == Lane::Change)
                .map(|(_, since)| *since)
                .min(),
        }
    }

    fn finished(&mut self, key: &T) {
        self.running.remove(key);
        if let Some((lane, since)) = self.again.remove(key) {
            self.wake_since(key.clone(), lane, since);
        }
        // A burst leaves big, empty tables behind; give the memory back.
        if self.waiting.is_empty() && self.running.is_empty() {
            self.changes.clear();
            self.sweeps.clear();
            self.changes.shrink_to(64);
            self.sweeps.shrink_to(64);
            self.waiting.shrink_to(64);
            self.running.shrink_to(64);
            self.again.shrink_to(64);
        }
    }
}

#[cfg(test)]
mod tests;
