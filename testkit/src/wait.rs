//! The tests' waits. [`until`] watches one object, so every version the API server has counts
//! and a wait ends the moment the condition holds; [`eventually`] polls what cannot be watched
//! (metrics, the audit log, files, processes).

use std::{fmt::Debug, future::Future, time::Duration};

use futures::StreamExt;
use kube::{
    Api, Resource,
    runtime::{WatchStreamExt, watcher},
};
use serde::de::DeserializeOwned;

/// How long a test waits for work the operator must do on a cluster before it fails: a deadline
/// that means failure, never a speed. Machines of this kind differ by 2x from day to day, and
/// the tests run on one core on a slow day; how fast anything is, the benchmark measures.
pub const FAIL_AFTER: Duration = Duration::from_secs(180);

/// Watches the object `name` until `check` holds for a version of it, and returns that version;
/// panics naming `what` (and the last version seen) after `timeout`. The watch goes on through
/// failures (an API server restarted, etcd stopped), as a client's would.
pub async fn until<K>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    what: &str,
    check: impl Fn(&K) -> bool,
) -> K
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let events = watcher(api.clone(), config)
        .default_backoff()
        .applied_objects();
    let mut last = None;
    let found = tokio::time::timeout(timeout, async {
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            let Ok(object) = event else { continue };
            if check(&object) {
                return Some(object);
            }
            last = Some(object);
        }
        None
    })
    .await;
    match found {
        Ok(Some(object)) => object,
        _ => panic!("timed out after {timeout:?} waiting for {what}; last seen: {last:#?}"),
    }
}

/// Polls `f` every 100 ms until it returns `Some`, and returns that; panics naming `what` after
/// `timeout`.
pub async fn eventually<F, Fut, T>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
