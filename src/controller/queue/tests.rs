//! The queue on its own: folding, order of lanes, sweeps drawn in batches, slots, the backlog.

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

/// A queue of one slot whose reconciles take a second each, logged in `log`, shown on
/// `backlog`.
fn one_slot(
    wakes: tokio::sync::mpsc::UnboundedReceiver<Wake<&'static str>>,
    log: &Log,
    backlog: Arc<Backlog>,
) -> tokio::task::JoinHandle<()> {
    let log = log.clone();
    tokio::spawn(run(
        wakes,
        std::future::pending(),
        slots(1),
        backlog,
        move |key| takes_a_second(log.clone(), key),
    ))
}

#[tokio::test(start_paused = true)]
async fn wakes_fold_while_waiting_and_rerun_once_while_running() {
    let (wake, wakes) = unbounded_channel();
    let log = Log::default();
    let runner = one_slot(wakes, &log, Arc::default());
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
            Arc::default(),
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
            Arc::default(),
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
    let runner = one_slot(wakes, &log, Arc::default());
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

#[tokio::test(start_paused = true)]
async fn the_backlog_shows_what_waits_and_since_when_the_oldest_change_has() {
    let (wake, wakes) = unbounded_channel();
    let backlog = Arc::<Backlog>::default();
    let log = Log::default();
    let runner = one_slot(wakes, &log, backlog.clone());
    let start = Instant::now();
    for key in ["a", "b", "c"] {
        wake.send(Wake::Changed(key)).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let shown = backlog.shown();
    assert_eq!(
        (shown.waiting, shown.running),
        (2, 1),
        "a runs, b and c wait"
    );
    assert_eq!(shown.oldest_change, Some(start));
    // "a" woken again while it runs waits too, with the age of that wake.
    wake.send(Wake::Changed("a")).unwrap();
    tokio::time::sleep(Duration::from_millis(750)).await;
    let shown = backlog.shown();
    assert_eq!(
        (shown.waiting, shown.running),
        (2, 1),
        "b runs, c and a wait"
    );
    assert_eq!(
        shown.oldest_change,
        Some(start),
        "c has waited since the start"
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(backlog.shown(), Shown::default(), "nothing waits or runs");
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
            Arc::default(),
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
        tokio::spawn(run(
            wakes,
            stopped.map(drop),
            slots(1),
            Arc::default(),
            move |key| takes_a_second(log.clone(), key),
        ))
    };
    wake.send(Wake::Changed("a")).unwrap();
    wake.send(Wake::Changed("b")).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(()).unwrap();
    runner.await.unwrap();
    assert_eq!(log.entries(), ["start a", "end a"]);
}
