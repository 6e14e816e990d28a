//! The work queue every kind's reconciles run on. It holds keys, not objects: the reconcile
//! reads what it needs when it runs (a Customer from its cache, an Order from the index, which
//! keeps no whole Orders), so what it reads is never older than the wake.
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

use std::{
    collections::{HashMap, HashSet, VecDeque},
    future::Future,
    hash::Hash,
    sync::Arc,
    time::Duration,
};

use futures::{StreamExt, stream::FuturesUnordered};
use tokio::sync::mpsc::{UnboundedReceiver, error::TryRecvError};
use tokio_util::time::DelayQueue;

use super::slots::Share;

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
/// `wakes` closes or `stop` resolves. `reconcile` returns when to run the key again, if it must.
pub async fn run<T, F, Fut>(
    mut wakes: UnboundedReceiver<Wake<T>>,
    stop: impl Future<Output = ()>,
    mut slots: Share,
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
        if stopping && in_flight.is_empty() {
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
    /// Every waiting key and the lane it waits in. A key promoted from the sweep lane to the
    /// change lane leaves a stale entry behind in `sweeps`, skipped when it comes up.
    waiting: HashMap<Arc<T>, Lane>,
    running: HashSet<T>,
    again: HashMap<T, Lane>,
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
        if self.running.contains(&key) {
            let again = self.again.entry(key).or_insert(lane);
            if lane == Lane::Change {
                *again = Lane::Change;
            }
            return;
        }
        if let Some((shared, waits)) = self.waiting.get_key_value(&key) {
            if (*waits, lane) == (Lane::Sweep, Lane::Change) {
                let shared = shared.clone();
                self.waiting.insert(shared.clone(), Lane::Change);
                self.changes.push_back(shared);
            }
            return;
        }
        let shared = Arc::new(key);
        self.waiting.insert(shared.clone(), lane);
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
            if self.waiting.get(&key) == Some(&lane) {
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

    fn finished(&mut self, key: &T) {
        self.running.remove(key);
        if let Some(lane) = self.again.remove(key) {
            self.wake(key.clone(), lane);
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
mod tests {
    use std::{
        collections::HashMap,
        sync::{Arc, Mutex},
        time::Duration,
    };

    use futures::FutureExt;
    use tokio::sync::{mpsc::unbounded_channel, oneshot};

    use super::*;
    use crate::controller::slots::Slots;

    /// The slots of a queue alone.
    fn slots(concurrency: usize) -> Share {
        Slots::new(&[concurrency]).share(0)
    }

    /// What the reconciles saw: each start and end, in order.
    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Vec<String>>>);

    impl Log {
        fn push(&self, entry: String) {
            self.0.lock().unwrap().push(entry);
        }
        fn entries(&self) -> Vec<String> {
            self.0.lock().unwrap().clone()
        }
    }

    /// A reconcile that logs its start, takes a second, and logs its end.
    async fn takes_a_second(log: Log, key: &'static str) -> Option<Duration> {
        log.push(format!("start {key}"));
        tokio::time::sleep(Duration::from_secs(1)).await;
        log.push(format!("end {key}"));
        None
    }

    #[tokio::test(start_paused = true)]
    async fn wakes_fold_while_waiting_and_rerun_once_while_running() {
        let (wake, wakes) = unbounded_channel();
        let log = Log::default();
        let runner = {
            let log = log.clone();
            tokio::spawn(run(wakes, std::future::pending(), slots(1), move |key| {
                takes_a_second(log.clone(), key)
            }))
        };
        for key in ["a", "a", "b", "b", "a"] {
            wake.send(Wake::Changed(key)).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        // "a" runs; woken twice more while it runs: once more after, not twice.
        wake.send(Wake::Changed("a")).unwrap();
        wake.send(Wake::Changed("a")).unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(
            log.entries(),
            ["start a", "end a", "start b", "end b", "start a", "end a"]
        );
        drop(wake);
        runner.await.unwrap();
    }

    type Runs = HashMap<u32, (usize, usize, usize)>;

    /// Runs a queue of `concurrency` over `wakes` (each woken, then a pause) with reconciles of
    /// 100 ms; returns, per key, the most reconciles that ran at once and how many ran, and the
    /// most that ran at once in all.
    async fn overlaps(
        concurrency: usize,
        wakes: Vec<(Vec<u32>, Duration)>,
    ) -> (HashMap<u32, (usize, usize)>, usize) {
        let (wake, woken) = unbounded_channel();
        // Per key: running now, the most at once, how many ran; and the same in all.
        let runs: Arc<Mutex<Runs>> = Arc::default();
        let total = Arc::new(Mutex::new((0usize, 0usize)));
        let runner = {
            let (runs, total) = (runs.clone(), total.clone());
            tokio::spawn(run(
                woken,
                std::future::pending(),
                slots(concurrency),
                move |key: u32| {
                    let (runs, total) = (runs.clone(), total.clone());
                    async move {
                        {
                            let mut runs = runs.lock().unwrap();
                            let run = runs.entry(key).or_default();
                            run.0 += 1;
                            run.1 = run.1.max(run.0);
                            run.2 += 1;
                            let mut total = total.lock().unwrap();
                            total.0 += 1;
                            total.1 = total.1.max(total.0);
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        runs.lock().unwrap().get_mut(&key).unwrap().0 -= 1;
                        total.lock().unwrap().0 -= 1;
                        None
                    }
                },
            ))
        };
        for (keys, pause) in wakes {
            for key in keys {
                wake.send(Wake::Changed(key)).unwrap();
            }
            tokio::time::sleep(pause).await;
        }
        drop(wake);
        runner.await.unwrap();
        let per_key = runs
            .lock()
            .unwrap()
            .iter()
            .map(|(key, (_, most, ran))| (*key, (*most, *ran)))
            .collect();
        (per_key, total.lock().unwrap().1)
    }

    #[tokio::test(start_paused = true)]
    async fn one_reconcile_per_key_at_once_even_with_free_slots() {
        // Two keys woken again and again while they run, with slots to spare.
        let rounds = (0..20)
            .map(|round| (vec![0, 1], Duration::from_millis(30 + round % 3 * 20)))
            .collect();
        let (per_key, _) = overlaps(4, rounds).await;
        for (key, (most, ran)) in per_key {
            assert_eq!(most, 1, "key {key} ran {most} reconciles at once");
            assert!(ran >= 5, "key {key} ran only {ran} times");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn no_more_reconciles_at_once_than_the_concurrency() {
        let (per_key, most) = overlaps(3, vec![((0..10).collect(), Duration::from_secs(2))]).await;
        assert_eq!(most, 3);
        assert_eq!(per_key.len(), 10, "every key ran");
    }

    /// Two queues on one set of slots (3 for customers, 1 for orders), with reconciles of
    /// 100 ms that count how many of each kind run.
    #[tokio::test(start_paused = true)]
    async fn queues_lend_idle_slots_and_get_them_back_first() {
        let slots = Slots::new(&[3, 1]);
        let running: Arc<Mutex<[usize; 2]>> = Arc::default();
        let queue = |kind: usize| {
            let (wake, wakes) = unbounded_channel::<Wake<u32>>();
            let running = running.clone();
            let runner = tokio::spawn(run(
                wakes,
                std::future::pending(),
                slots.share(kind),
                move |_| {
                    let running = running.clone();
                    async move {
                        running.lock().unwrap()[kind] += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        running.lock().unwrap()[kind] -= 1;
                        None
                    }
                },
            ));
            (wake, runner)
        };
        let (customers, customer_queue) = queue(0);
        let (orders, order_queue) = queue(1);
        for key in 0..100 {
            orders.send(Wake::Changed(key)).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            *running.lock().unwrap(),
            [0, 4],
            "no customer waits: orders borrow"
        );
        for key in 0..30 {
            customers.send(Wake::Changed(key)).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            *running.lock().unwrap(),
            [3, 1],
            "the borrowed slots went back to the customers as the orders ended"
        );
        drop((customers, orders));
        customer_queue.await.unwrap();
        order_queue.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_runs_before_a_sweeps_backlog() {
        let (wake, wakes) = unbounded_channel();
        let log = Log::default();
        let runner = {
            let log = log.clone();
            tokio::spawn(run(wakes, std::future::pending(), slots(1), move |key| {
                takes_a_second(log.clone(), key)
            }))
        };
        // A sweep of four keys; while the first runs, "d" and then "x" change.
        wake.send(sweep(["a", "b", "c", "d"])).unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        wake.send(Wake::Changed("x")).unwrap();
        wake.send(Wake::Changed("d")).unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        let started: Vec<String> = log
            .entries()
            .into_iter()
            .filter_map(|e| e.strip_prefix("start ").map(str::to_owned))
            .collect();
        assert_eq!(started, ["a", "x", "d", "b", "c"]);
        drop(wake);
        runner.await.unwrap();
    }

    fn sweep<T: Send + 'static>(
        keys: impl IntoIterator<Item = T, IntoIter: Send + 'static>,
    ) -> Wake<T> {
        Wake::Sweep(Box::new(keys.into_iter()))
    }

    /// Runs `queue` with reconciles that end at once: the keys in the order they ran, and the
    /// most keys that waited at once.
    fn run_through(queue: &mut Queue<u32>) -> (Vec<u32>, usize) {
        let (mut ran, mut most) = (Vec::new(), 0);
        while let Some(key) = queue.start() {
            most = most.max(queue.waiting.len() + queue.sweeps.len());
            ran.push(key);
            queue.finished(&key);
        }
        (ran, most)
    }

    #[test]
    fn a_sweep_is_drawn_a_batch_at_a_time() {
        let mut queue = Queue::default();
        queue.told(sweep(0..10_000));
        let (ran, most) = run_through(&mut queue);
        assert_eq!(
            ran,
            (0..10_000).collect::<Vec<_>>(),
            "every key, once, in order"
        );
        assert!(
            most <= 2 * SWEEP_BATCH,
            "{most} keys waited at once for a sweep of 10,000"
        );
    }

    #[test]
    fn a_newer_sweep_replaces_what_is_left_of_the_one_being_drawn() {
        let mut queue = Queue::default();
        queue.told(sweep(0..10_000));
        let first = queue.start().unwrap();
        queue.finished(&first);
        queue.told(sweep([20_000, 20_001]));
        queue.told(Wake::Changed(30_000));
        let (ran, _) = run_through(&mut queue);
        let drawn = SWEEP_BATCH as u32;
        let expected: Vec<u32> = [30_000]
            .into_iter()
            .chain(1..drawn)
            .chain([20_000, 20_001])
            .collect();
        assert_eq!(
            ran, expected,
            "the change, the rest of the batch already drawn, then the newer sweep"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_reconcile_that_asks_runs_again_after_its_delay() {
        let (wake, wakes) = unbounded_channel();
        let log = Log::default();
        let started = tokio::time::Instant::now();
        let (stop, stopped) = oneshot::channel::<()>();
        let runner = {
            let log = log.clone();
            tokio::spawn(run(
                wakes,
                stopped.map(drop),
                slots(4),
                move |key: &'static str| {
                    let log = log.clone();
                    let at = started.elapsed().as_secs();
                    async move {
                        log.push(format!("{key} at {at}"));
                        (at < 5).then_some(Duration::from_secs(5))
                    }
                },
            ))
        };
        wake.send(Wake::Changed("x")).unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(log.entries(), ["x at 0", "x at 5"]);
        stop.send(()).unwrap();
        runner.await.unwrap();
        drop(wake);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_lets_what_runs_finish_and_starts_nothing_new() {
        let (wake, wakes) = unbounded_channel();
        let log = Log::default();
        let (stop, stopped) = oneshot::channel::<()>();
        let runner = {
            let log = log.clone();
            tokio::spawn(run(wakes, stopped.map(drop), slots(1), move |key| {
                takes_a_second(log.clone(), key)
            }))
        };
        wake.send(Wake::Changed("a")).unwrap();
        wake.send(Wake::Changed("b")).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.send(()).unwrap();
        runner.await.unwrap();
        assert_eq!(log.entries(), ["start a", "end a"]);
    }
}
