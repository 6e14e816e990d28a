//! A work queue for reconciles of objects the operator keeps no cache of (Orders: the index
//! holds what their reconciler reads). kube-runtime's `applier` gives the same guarantees, but
//! it looks every object up in a reflector store of whole objects.
//!
//! - A key woken several times while it waits runs once.
//! - At most one reconcile runs per key; a wake that arrives meanwhile runs it once more after.
//! - At most `concurrency` reconciles run at once, in the order their keys were woken.
//! - A reconcile may ask to run again after a delay (a retry).
//! - When `stop` resolves, nothing new starts; the reconciles in flight finish first.

use std::{
    collections::{HashSet, VecDeque},
    future::Future,
    hash::Hash,
    time::Duration,
};

use futures::{StreamExt, stream::FuturesUnordered};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::time::DelayQueue;

/// Runs `reconcile` for the keys that arrive on `wakes`, until `wakes` closes or `stop`
/// resolves. `reconcile` returns when to run the key again, if it must.
pub async fn run<T, F, Fut>(
    mut wakes: UnboundedReceiver<T>,
    stop: impl Future<Output = ()>,
    concurrency: usize,
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
        while !stopping
            && in_flight.len() < concurrency.max(1)
            && let Some(key) = queue.start()
        {
            let run = reconcile(key.clone());
            in_flight.push(async move { (key, run.await) });
        }
        if stopping && in_flight.is_empty() {
            return;
        }
        tokio::select! {
            woken = wakes.recv(), if !stopping => match woken {
                Some(key) => queue.wake(key),
                None => stopping = true,
            },
            Some(retry) = retries.next(), if !stopping && !retries.is_empty() => {
                queue.wake(retry.into_inner());
            }
            Some((key, again)) = in_flight.next(), if !in_flight.is_empty() => {
                queue.finished(&key);
                if let Some(after) = again {
                    retries.insert(key, after);
                }
            }
            () = &mut stop, if !stopping => stopping = true,
        }
    }
}

/// Which keys wait, run, and must run once more.
struct Queue<T> {
    waiting: VecDeque<T>,
    waiting_set: HashSet<T>,
    running: HashSet<T>,
    again: HashSet<T>,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Self {
            waiting: VecDeque::new(),
            waiting_set: HashSet::new(),
            running: HashSet::new(),
            again: HashSet::new(),
        }
    }
}

impl<T: Clone + Eq + Hash> Queue<T> {
    fn wake(&mut self, key: T) {
        if self.running.contains(&key) {
            self.again.insert(key);
        } else if self.waiting_set.insert(key.clone()) {
            self.waiting.push_back(key);
        }
    }

    fn start(&mut self) -> Option<T> {
        let key = self.waiting.pop_front()?;
        self.waiting_set.remove(&key);
        self.running.insert(key.clone());
        Some(key)
    }

    fn finished(&mut self, key: &T) {
        self.running.remove(key);
        if self.again.remove(key) {
            self.wake(key.clone());
        }
        // A burst leaves big, empty tables behind; give the memory back.
        if self.waiting.is_empty() && self.running.is_empty() {
            self.waiting.shrink_to(64);
            self.waiting_set.shrink_to(64);
            self.running.shrink_to(64);
            self.again.shrink_to(64);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{Arc, Mutex},
        time::Duration,
    };

    use futures::FutureExt;
    use tokio::sync::{mpsc::unbounded_channel, oneshot};

    use super::*;

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
            tokio::spawn(run(wakes, std::future::pending(), 1, move |key| {
                takes_a_second(log.clone(), key)
            }))
        };
        for key in ["a", "a", "b", "b", "a"] {
            wake.send(key).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        // "a" runs; woken twice more while it runs: once more after, not twice.
        wake.send("a").unwrap();
        wake.send("a").unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(
            log.entries(),
            ["start a", "end a", "start b", "end b", "start a", "end a"]
        );
        drop(wake);
        runner.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn one_reconcile_per_key_at_once_and_no_more_than_the_concurrency() {
        let (wake, wakes) = unbounded_channel();
        let running = Arc::new(Mutex::new((0usize, 0usize)));
        let runner = {
            let running = running.clone();
            tokio::spawn(run(wakes, std::future::pending(), 3, move |_key: u32| {
                let running = running.clone();
                async move {
                    {
                        let mut r = running.lock().unwrap();
                        r.0 += 1;
                        r.1 = r.1.max(r.0);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    running.lock().unwrap().0 -= 1;
                    None
                }
            }))
        };
        for key in 0..10 {
            wake.send(key).unwrap();
        }
        drop(wake);
        runner.await.unwrap();
        assert_eq!(running.lock().unwrap().1, 3);
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
                4,
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
        wake.send("x").unwrap();
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
            tokio::spawn(run(wakes, stopped.map(drop), 1, move |key| {
                takes_a_second(log.clone(), key)
            }))
        };
        wake.send("a").unwrap();
        wake.send("b").unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.send(()).unwrap();
        runner.await.unwrap();
        assert_eq!(log.entries(), ["start a", "end a"]);
    }
}
