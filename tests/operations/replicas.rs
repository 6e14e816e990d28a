//! Two replicas: exactly one leads, and leadership hands over on SIGKILL and SIGTERM.

use super::*;

struct Replica {
    identity: Identity,
    name: String,
    ns: String,
    lease_ns: String,
    process: OperatorProcess,
}

impl Replica {
    fn spawn(identity: &Identity, name: &str, ns: &str, lease_ns: &str) -> Self {
        let process = Launch::replica(operator_bin!(), identity, name, ns, lease_ns).spawn();
        Replica {
            identity: identity.clone(),
            name: name.into(),
            ns: ns.into(),
            lease_ns: lease_ns.into(),
            process,
        }
    }

    fn restart(&self) -> Self {
        Replica::spawn(&self.identity, &self.name, &self.ns, &self.lease_ns)
    }

    fn user(&self) -> &str {
        &self.identity.user
    }

    async fn leading(&self) -> Option<bool> {
        self.process.probe().is_leader().await
    }

    async fn wait_up(&self) {
        let what = format!("{} to serve /metrics", self.name);
        eventually(FAIL_AFTER, &what, || async {
            self.leading().await.map(|_| ())
        })
        .await;
    }

    fn dump(&self) {
        eprintln!(
            "---- log of {} ({}) ----\n{}",
            self.name,
            self.user(),
            self.process.logs()
        );
    }
}

/// Polls every 100ms until `replica` reports `reserve_leader 1`; returns how long that took.
/// A standby is ready (to take over) and says so.
async fn ready_as_standby(standby: &Replica) {
    let (code, body) = standby
        .process
        .probe()
        .get("/readyz")
        .await
        .expect("/readyz");
    assert!(
        code == 200 && body.contains("standby"),
        "standby /readyz: {code} {body}"
    );
}

async fn time_to_lead(replica: &Replica, since: Instant, limit: Duration) -> Duration {
    loop {
        if replica.leading().await == Some(true) {
            return since.elapsed();
        }
        if since.elapsed() > limit {
            replica.dump();
            panic!("{} did not take over within {limit:?}", replica.name);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Exactly one of `replicas` leads, steadily for `steady`; returns its index.
async fn exactly_one_leader(replicas: &[&Replica], steady: Duration) -> usize {
    let deadline = Instant::now() + FAIL_AFTER;
    let mut leader: Option<(usize, Instant)> = None;
    loop {
        let mut states = Vec::new();
        for r in replicas {
            states.push(r.leading().await);
        }
        let leaders: Vec<usize> = (0..states.len())
            .filter(|&i| states[i] == Some(true))
            .collect();
        assert!(
            leaders.len() <= 1,
            "more than one leader at once: {states:?}"
        );
        let all_up = states.iter().all(Option::is_some);
        match (leaders.first(), leader) {
            (Some(&i), Some((j, since))) if i == j && all_up => {
                if since.elapsed() >= steady {
                    return i;
                }
            }
            (Some(&i), _) if all_up => leader = Some((i, Instant::now())),
            _ => leader = None,
        }
        if Instant::now() > deadline {
            for r in replicas {
                r.dump();
            }
            panic!("no single steady leader: {states:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn two_replicas_hand_over_on_sigkill_and_sigterm() {
    let cp = install();
    if cp.skip_unless_local("the audit log") {
        return;
    }
    let admin = cp.client().await;
    let ns = fresh_namespace(&admin, "ops-replicas").await;
    let lease_ns = fresh_namespace(&admin, "ops-lease").await;
    let mut identities = Vec::new();
    for name in ["a", "b"] {
        let identity = operator_identity(&admin, &format!("{ns}-replica-{name}")).await;
        grant_lease(&admin, &lease_ns, &identity).await;
        identities.push(identity);
    }
    let a = Replica::spawn(&identities[0], "replica-a", &ns, &lease_ns);
    let b = Replica::spawn(&identities[1], "replica-b", &ns, &lease_ns);
    a.wait_up().await;
    b.wait_up().await;
    let first = exactly_one_leader(&[&a, &b], Duration::from_secs(2)).await;
    let (mut leader, mut standby) = if first == 0 { (a, b) } else { (b, a) };
    eprintln!("first leader: {}", leader.name);

    ready_as_standby(&standby).await;
    let (code, _) = standby
        .process
        .probe()
        .get("/healthz")
        .await
        .expect("/healthz");
    assert_eq!(code, 200);

    let customers: Api<reserve_operator::crd::Customer> = Api::namespaced(admin.clone(), &ns);
    let orders: Api<reserve_operator::crd::Order> = Api::namespaced(admin.clone(), &ns);
    let pp = PostParams::default();
    customers
        .create(&pp, &fixtures::customer("bob"))
        .await
        .unwrap();
    orders
        .create(&pp, &fixtures::order("b1", "bob", 3, OrderState::Completed))
        .await
        .unwrap();
    orders
        .create(&pp, &fixtures::order("b2", "bob", 2, OrderState::Requested))
        .await
        .unwrap();
    wait_for_score(&customers, "bob", 3, "Bronze").await;
    complete(&orders, "b2").await;
    wait_for_score(&customers, "bob", 5, "Silver").await;
    let audit = cp.audit();
    let (by_leader, by_standby) = (
        status_patches(&audit, leader.user(), &ns),
        status_patches(&audit, standby.user(), &ns),
    );
    assert!(by_leader > 0, "the leader wrote no status");
    assert_eq!(by_standby, 0, "the standby wrote status");
    assert_eq!(standby.leading().await, Some(false));
    // The standby waits for the Lease's release with a watch restricted to it by name, which
    // the Role's resourceNames allows.
    assert!(
        audit.iter().any(|e| e.user() == standby.user()
            && e.verb == "watch"
            && e.object_ref.resource == "leases"
            && e.in_namespace(&lease_ns)
            && e.code() == Some(200)),
        "no watch on the Lease by the standby"
    );

    // SIGKILL the leader: the standby takes over once the Lease expires.
    let killed = Instant::now();
    leader.process.kill();
    let sigkill_handover = time_to_lead(&standby, killed, FAIL_AFTER).await;
    eprintln!(
        "hand-over after SIGKILL of {}: {:.2}s (lease duration {LEASE_SECONDS}s)",
        leader.name,
        sigkill_handover.as_secs_f64()
    );
    let before = status_patches(&cp.audit(), standby.user(), &ns);
    orders
        .create(&pp, &fixtures::order("b3", "bob", 5, OrderState::Completed))
        .await
        .unwrap();
    wait_for_score(&customers, "bob", 10, "Gold").await;
    assert!(
        status_patches(&cp.audit(), standby.user(), &ns) > before,
        "the new leader wrote no status"
    );

    // Restart the killed replica: it becomes the standby.
    let restarted = leader.restart();
    restarted.wait_up().await;
    drop(std::mem::replace(&mut leader, standby));
    standby = restarted;
    let steady = exactly_one_leader(&[&leader, &standby], Duration::from_secs(1)).await;
    assert_eq!(
        steady, 0,
        "the restarted replica took the Lease from a live leader"
    );
    ready_as_standby(&standby).await;

    // SIGTERM the leader: it releases the Lease and the standby takes over, without waiting
    // for the Lease to expire.
    let termed = Instant::now();
    leader.process.sigterm();
    let sigterm_handover = time_to_lead(&standby, termed, FAIL_AFTER).await;
    let status = leader
        .process
        .wait_exit(GRACE)
        .expect("the leader exits within the Deployment's grace period of SIGTERM");
    let exit_after = termed.elapsed();
    eprintln!(
        "hand-over after SIGTERM of {}: {:.2}s; it exited ({status}) after {:.2}s",
        leader.name,
        sigterm_handover.as_secs_f64(),
        exit_after.as_secs_f64()
    );
    if !status.success() {
        leader.dump();
    }
    assert!(status.success(), "SIGTERM exit status {status}");
    assert!(
        leader.process.logs().contains("released the Lease"),
        "the leader did not release the Lease on SIGTERM:\n{}",
        leader.process.logs()
    );
    // Released, not expired: the standby wrote the Lease after the old leader's last write
    // (its release), before the old leader's last renewal could have expired.
    let lease_writes: Vec<AuditEvent> = cp
        .audit()
        .into_iter()
        .filter(|e| {
            e.object_ref.resource == "leases"
                && e.in_namespace(&lease_ns)
                && ["patch", "update"].contains(&e.verb.as_str())
                && e.code() == Some(200)
        })
        .collect();
    let released = lease_writes
        .iter()
        .rfind(|e| e.user() == leader.user())
        .expect("the old leader's last Lease write");
    let taken = lease_writes
        .iter()
        .find(|e| e.user() == standby.user() && e.stage_timestamp > released.stage_timestamp)
        .expect("the standby's Lease write after the release");
    let renewed = lease_writes
        .iter()
        .filter(|e| e.user() == leader.user())
        .rev()
        .nth(1)
        .map_or(released.stage_timestamp, |e| e.stage_timestamp);
    assert!(
        taken.stage_timestamp < renewed + Duration::from_secs(LEASE_SECONDS),
        "the standby took the Lease only once it had expired"
    );

    let before = status_patches(&cp.audit(), standby.user(), &ns);
    orders
        .create(&pp, &fixtures::order("b4", "bob", 5, OrderState::Completed))
        .await
        .unwrap();
    wait_for_score(&customers, "bob", 15, "Platinum").await;
    assert!(
        status_patches(&cp.audit(), standby.user(), &ns) > before,
        "the newest leader wrote no status"
    );

    // Nobody was refused anything.
    let denied: Vec<AuditEvent> = cp
        .audit()
        .into_iter()
        .filter(|e| identities.iter().any(|i| i.user == e.user()) && e.code() == Some(403))
        .collect();
    assert!(denied.is_empty(), "403s: {denied:#?}");

    standby.process.sigterm();
    let status = standby
        .process
        .wait_exit(GRACE)
        .expect("exits after SIGTERM");
    assert!(status.success(), "exit status {status}");
}
