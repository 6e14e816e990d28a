//! Leaders killed and paused under load: the next one takes over, the old one writes nothing.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn leader_killed_under_load_hands_over_and_ends_exact() {
    let _shared = CONTROL_PLANE.read().await;
    let cp = ControlPlane::shared();
    let shop = Shop::new("leaders").await;
    let lease_ns = shop.beside("lease").await.ns;
    let mut identities = Vec::new();
    for name in ["a", "b"] {
        let identity = shop.identity(name).await;
        grant_lease(&shop.admin, &lease_ns, &identity).await;
        identities.push(identity);
    }
    let mut replicas: Vec<OperatorProcess> = identities
        .iter()
        .zip(["a", "b"])
        .map(|(identity, name)| replica(identity, name, &shop.ns, &lease_ns))
        .collect();
    let policy = LevelPolicy::default();
    let invariants = Invariants::watch(shop.customers(), shop.orders(), policy.clone());
    let plan = Plan::new(30 * scale(), 800 * scale(), 23);
    prepare(&shop, &plan).await;
    let load = load(&shop, &plan);
    let leader = leader_of(&replicas).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    replicas[leader].kill();
    let killed_at = Instant::now();
    let survivor = replicas[1 - leader].probe().clone();
    eventually(FAIL_AFTER, "the standby to take over", || async {
        (survivor.is_leader().await == Some(true)).then_some(())
    })
    .await;
    println!("SIGKILLed leader replaced after {:?}", killed_at.elapsed());

    let transitions = load.await.unwrap();
    let exact = shop.converge(&policy, converge_deadline()).await;
    report(
        "leader killed",
        transitions,
        &exact,
        &invariants.finish().await,
    );
    if !cp.is_local() {
        return;
    }
    // Status writes come from one identity at a time: the writer changes at most once.
    let writers: Vec<String> = cp
        .audit()
        .into_iter()
        .filter(|e| identities.iter().any(|i| i.user == e.user()) && e.is_status_write())
        .map(|e| e.user().to_owned())
        .collect();
    let switches = writers.windows(2).filter(|w| w[0] != w[1]).count();
    println!(
        "status writes: {} ({switches} writer switches)",
        writers.len()
    );
    assert!(
        switches <= 1,
        "status writes alternated between replicas {switches} times"
    );
}

/// The leader is paused (SIGSTOP) for longer than its Lease under load; the standby takes over;
/// the old leader is resumed (SIGCONT) and believes for a moment that it still leads, while a
/// second load starts. The API server accepts no status write from it after the new leader's
/// first, it publishes no Event, nothing the watches show ever breaks an invariant, and every
/// status ends exact. How long the catch-up took is printed; the benchmark measures it.
///
/// The first load is paced, so that what the new leader finds undone (every order changed while
/// no replica led) is about the same everywhere; the second starts when the old leader wakes,
/// so it wakes under load on any machine, fast or slow.
#[tokio::test(flavor = "multi_thread")]
async fn a_paused_leader_resumed_after_a_hand_over_writes_nothing() {
    let cp = ControlPlane::shared();
    if cp.skip_unless_local("reading the audit log") {
        return;
    }
    let _shared = CONTROL_PLANE.read().await;
    let shop = Shop::new("paused").await;
    let lease_ns = shop.beside("lease").await.ns;
    let names = ["first", "second"];
    let mut identities = Vec::new();
    for name in names {
        let identity = shop.identity(name).await;
        grant_lease(&shop.admin, &lease_ns, &identity).await;
        identities.push(identity);
    }
    let replicas: Vec<OperatorProcess> = identities
        .iter()
        .zip(names)
        .map(|(identity, name)| replica(identity, name, &shop.ns, &lease_ns))
        .collect();
    let policy = LevelPolicy::default();
    let invariants = Invariants::watch(shop.customers(), shop.orders(), policy.clone());
    // At this pace the first load lasts about 25 s (times the scale): through the pause (until
    // the standby takes over, 11 to 16 s on a fast day) and beyond.
    const PACE: f64 = 50.0;
    let plan = Plan::new(20, 600 * scale(), 29);
    let later = Plan::named(20, 200 * scale(), 31, "later-");
    let driver = prepare(&shop, &plan).await;
    let leader = leader_of(&replicas).await;
    let (old, new) = (&replicas[leader], &replicas[1 - leader]);
    let (old_user, new_user) = (&identities[leader].user, &identities[1 - leader].user);
    let load = paced_load(&shop, &plan, PACE);
    tokio::time::sleep(Duration::from_secs(2)).await;

    old.signal(libc::SIGSTOP);
    let paused = Instant::now();
    let new_probe = new.probe().clone();
    eventually(FAIL_AFTER, "the standby to take over", || async {
        (new_probe.is_leader().await == Some(true)).then_some(())
    })
    .await;
    let took_over = paused.elapsed();
    // The load goes on under the new leader, then the old one wakes up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second = paced_load(&shop, &later, PACE);
    old.signal(libc::SIGCONT);
    let resumed = paused.elapsed();
    let old_probe = old.probe().clone();
    eventually(FAIL_AFTER, "the old leader to step down", || async {
        (old_probe.is_leader().await == Some(false)).then_some(())
    })
    .await;
    let transitions = load.await.unwrap() + second.await.unwrap();
    let last_write = Instant::now();
    // More changes after the hand-over, while the old leader is awake again.
    let refunds: Vec<(&str, OrderState)> = plan
        .orders
        .iter()
        .filter(|o| o.fate.final_state() == OrderState::Completed)
        .take(20)
        .map(|o| (o.name.as_str(), OrderState::Canceled))
        .collect();
    driver.set_states(&refunds).await.expect("refunds");
    let exact = shop.converge(&policy, converge_deadline()).await;
    println!(
        "paused leader: standby took over {:.1}s after the pause, old leader resumed after {:.1}s, exact {:.1}s after the last load write",
        took_over.as_secs_f64(),
        resumed.as_secs_f64(),
        last_write.elapsed().as_secs_f64()
    );
    report(
        "paused leader",
        transitions + refunds.len(),
        &exact,
        &invariants.finish().await,
    );

    // From the audit log: once the new leader has written, nothing from the old one lands.
    let audit = cp.audit();
    let in_shop = |e: &&reserve_testkit::audit::AuditEvent| e.in_namespace(&shop.ns);
    let first_new = audit
        .iter()
        .filter(in_shop)
        .find(|e| e.user() == *new_user && e.is_status_write())
        .map(|e| e.stage_timestamp)
        .expect("the new leader wrote statuses");
    let late: Vec<_> = audit
        .iter()
        .filter(in_shop)
        .filter(|e| e.user() == *old_user && e.is_status_write() && e.stage_timestamp > first_new)
        .collect();
    let refused = audit
        .iter()
        .filter(in_shop)
        .filter(|e| {
            e.user() == *old_user
                && e.is_complete()
                && e.object_ref.subresource.as_deref() == Some("status")
                && e.stage_timestamp > first_new
                && !e.succeeded()
        })
        .count();
    let withheld = old_probe
        .metrics()
        .await
        .expect("the old leader's metrics")
        .sum("reserve_status_writes_withheld_total", &[]);
    println!(
        "old leader after the hand-over: {} status writes accepted, {refused} refused by the API server, {withheld} withheld by its fence",
        late.len()
    );
    assert!(
        late.is_empty(),
        "status writes by the deposed leader landed: {late:#?}"
    );
    // Its own fence stopped it (the API server's preconditions are the second line).
    assert!(
        withheld >= 1.0,
        "the resumed leader withheld no write: its fence did not close"
    );
    // No LevelChanged Event from the old leader after the new one started writing.
    let events: Api<Event> = Api::namespaced(shop.admin.clone(), &shop.ns);
    let stale_events: Vec<_> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reporting_instance.as_deref() == Some(names[leader]))
        .filter(|e| e.event_time.as_ref().is_some_and(|t| t.0 > first_new))
        .collect();
    assert!(
        stale_events.is_empty(),
        "Events from the deposed leader: {stale_events:#?}"
    );
}
