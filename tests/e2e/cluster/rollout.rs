//! A rolling update under load, to the same code in a new image: the Lease handed over, never
//! two leaders, no order lost.

use super::*;

/// When the Lease's watch showed which holder (None: released).
type Holder = (Instant, Option<String>);

/// When the pods' own view was read, and which pods said they lead.
type Sample = (Instant, Vec<String>);

/// What a rolling update under load showed.
pub struct Rollout {
    pub rollout: Duration,
    pub handover_gap: Duration,
    pub two_leaders: usize,
    pub worst_latency: Duration,
}

impl Cluster {
    /// Rolls the Deployment to the same code in a new image (`<version>-prime`: another tag and
    /// digest, as a new build of one release) while orders keep coming, and watches the Lease
    /// holders, the pods' own view of who leads, and each order's wait for its status.
    pub async fn a_rolling_update_under_load_loses_nothing(&self) -> Rollout {
        let start = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        // Who says it leads, every 100 ms, through the pods' metrics: the pods that say so, in
        // each sample whose pod list was read (a failed list is no sample, not "no leader").
        // Every pod is asked at once and given half a second: a pod going away may leave its
        // address silent, and one slow answer must not blind the sampler to a hand-over.
        let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
        let sampler = {
            let (stop, samples, admin) = (stop.clone(), samples.clone(), self.admin.clone());
            tokio::spawn(async move {
                let pods: Api<Pod> = Api::namespaced(admin, SYSTEM);
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(list) = pods.list(&ListParams::default().labels(SELECTOR)).await {
                        let asked = list.items.iter().filter_map(|pod| {
                            let probe = Self::probe(pod)?;
                            Some(async move {
                                let leads = tokio::time::timeout(
                                    Duration::from_millis(500),
                                    probe.is_leader(),
                                )
                                .await;
                                (leads == Ok(Some(true))).then(|| pod.name_any())
                            })
                        });
                        let leaders: Vec<String> = futures::future::join_all(asked)
                            .await
                            .into_iter()
                            .flatten()
                            .collect();
                        samples.lock().unwrap().push((Instant::now(), leaders));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        // Who holds the Lease, as its watch tells.
        let holders: Arc<Mutex<Vec<Holder>>> = Arc::default();
        let lease_watch = {
            let (holders, leases) = (
                holders.clone(),
                Api::<Lease>::namespaced(self.admin.clone(), SYSTEM),
            );
            tokio::spawn(async move {
                let config = watcher::Config::default().fields("metadata.name=reserve-operator");
                let mut events =
                    std::pin::pin!(watcher(leases, config).default_backoff().applied_objects());
                while let Some(event) = events.next().await {
                    // A failed watch backs off and goes on: keep recording.
                    let Ok(lease) = event else { continue };
                    let lease: Lease = lease;
                    let holder = lease.spec.and_then(|s| s.holder_identity);
                    holders.lock().unwrap().push((Instant::now(), holder));
                }
            })
        };
        // Orders, one every 0.3 s, each created Completed; a watch notes when its status shows it.
        let shown: Arc<Mutex<BTreeMap<String, Instant>>> = Arc::default();
        let watch = {
            let (shown, api) = (shown.clone(), self.shop.orders());
            tokio::spawn(async move {
                let mut events = std::pin::pin!(
                    watcher(api, watcher::Config::default())
                        .default_backoff()
                        .applied_objects()
                );
                while let Some(event) = events.next().await {
                    let Ok(order): Result<Order, _> = event else {
                        continue;
                    };
                    if order.status.as_ref().and_then(|s| s.phase) == Some(OrderState::Completed) {
                        shown
                            .lock()
                            .unwrap()
                            .entry(order.name_any())
                            .or_insert_with(Instant::now);
                    }
                }
            })
        };
        let load = {
            let (stop, api) = (stop.clone(), self.shop.orders());
            tokio::spawn(async move {
                let mut created = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let name = format!("roll-{n:04}");
                    let order = fixtures::order(&name, "alice", 1, OrderState::Completed);
                    if api.create(&PostParams::default(), &order).await.is_ok() {
                        created.push((name, Instant::now()));
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                created
            })
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        self.kubectl(&[
            "set",
            "image",
            "deployment/reserve-operator",
            "-n",
            SYSTEM,
            &format!(
                "operator=reserve-operator:{}-prime",
                env!("CARGO_PKG_VERSION")
            ),
        ]);
        let rollout = self.rollout_status();
        let prime = format!("reserve-operator:{}-prime", env!("CARGO_PKG_VERSION"));
        let pods = self.pods().await;
        for pod in pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
        {
            let spec = pod.spec.as_ref().unwrap();
            assert_eq!(spec.containers[0].image.as_deref(), Some(prime.as_str()));
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.store(true, Ordering::Relaxed);
        let created = load.await.unwrap();
        sampler.await.unwrap();
        // Every order's status, then the customer, exact.
        let (mismatches, _) = self.shop.converge(&LevelPolicy::default(), WAIT).await;
        assert!(mismatches.is_empty(), "{mismatches:#?}");
        // No order of the rollout is lost: the watch shows each one's status.
        eventually(
            WAIT,
            "every order of the rollout shown with its status",
            || async {
                let shown = shown.lock().unwrap();
                created
                    .iter()
                    .all(|(name, _)| shown.contains_key(name))
                    .then_some(())
            },
        )
        .await;
        watch.abort();
        let shown = shown.lock().unwrap().clone();
        let worst = created
            .iter()
            .map(|(name, at)| {
                shown
                    .get(name)
                    .map_or(Duration::MAX, |s| s.saturating_duration_since(*at))
            })
            .max()
            .unwrap_or_default();
        lease_watch.abort();
        let samples = samples.lock().unwrap().clone();
        let two_leaders = samples
            .iter()
            .filter(|(_, leaders)| leaders.len() > 1)
            .count();
        // The sampler saw the old leader and a new one: it watched through the hand-over.
        let seen_leading: BTreeSet<&String> = samples
            .iter()
            .filter(|(_, leaders)| leaders.len() == 1)
            .flat_map(|(_, leaders)| leaders)
            .collect();
        // The Lease's hand-over gap: from the moment it had no holder (released) or the
        // previous holder's last event, to the next holder's first.
        let holders = holders.lock().unwrap().clone();
        let mut gap = Duration::ZERO;
        for pair in holders.windows(2) {
            let ((before, was), (after, is)) = (&pair[0], &pair[1]);
            if is.is_some() && is != was {
                gap = gap.max(*after - *before);
            }
        }
        let handovers = holders
            .windows(2)
            .filter(|p| p[1].1.is_some() && p[1].1 != p[0].1)
            .count();
        println!(
            "rolling update: {:.1}s, {} orders during it, worst wait for a status {:.3}s, {handovers} Lease hand-overs, the longest {:.3}s, {two_leaders} of {} samples of the pods' own view with two leaders",
            rollout.as_secs_f64(),
            created.len(),
            worst.as_secs_f64(),
            gap.as_secs_f64(),
            samples.len()
        );
        assert_eq!(two_leaders, 0, "two pods led at once");
        assert!(
            seen_leading.len() >= 2,
            "the pods' own view showed {seen_leading:?} leading: it did not see the hand-over; \
             samples {:?}, the Lease's holders {holders:?}",
            samples
                .iter()
                .map(|(at, leaders)| (at.duration_since(start), leaders))
                .collect::<Vec<_>>()
        );
        assert!(
            handovers >= 1,
            "the rolling update moved no Lease: {holders:?}"
        );
        Rollout {
            rollout,
            handover_gap: gap,
            two_leaders,
            worst_latency: worst,
        }
    }
}
