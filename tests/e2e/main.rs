//! The deployable artifact, proven: the image `make image` builds, run as real Pods on a real
//! node (kubelet, containerd, runc, the CNI bridge), deployed with the kustomize base and the
//! Helm chart. Probes, the restricted security context, the in-cluster configuration, SIGTERM
//! from a kubelet, the Lease between pods, a rolling update under load, self-healing and a
//! configuration change all happen for real. The node is torn down at the end and must leave
//! nothing behind.
//!
//! Needs root and Debian's containerd, runc, containernetworking-plugins, iptables and buildah
//! (`.ci/run` installs them). Elsewhere the node test says why it is skipped.

mod cluster;
mod image;

use std::{io::Write, path::PathBuf, time::Instant};

use cluster::Cluster;
use image::{image_archive, prime_archive};
use reserve_testkit::{Lifetime, node::Node, watchdog};

#[test]
fn the_image_and_the_dockerfile_describe_the_same_container() {
    let Some(archive) = image_archive() else {
        return;
    };
    let image = image::image_config(&archive);
    let dockerfile = image::dockerfile_config(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap(),
    );
    assert_eq!(
        image, dockerfile,
        "make image and the Dockerfile describe different containers"
    );
    assert_eq!(image.user, "65532:65532");
}

/// Tears the node down even when a step fails.
struct NodeGuard(Option<PathBuf>);

impl Drop for NodeGuard {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take()
            && let Err(e) = Node::down(&dir)
        {
            eprintln!("tearing the node down: {e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_runs_as_pods_on_a_real_node() {
    if let Some(why) = reserve_testkit::node::unavailable() {
        // Written past the test harness's capture, so the skip is never silent.
        let _ = writeln!(std::io::stderr(), "note: skipping the node tests: {why}");
        return;
    }
    let (Some(image), Some(prime)) = (image_archive(), prime_archive()) else {
        return;
    };
    let dir = watchdog().dir().join("node");
    let mut guard = NodeGuard(Some(dir.clone()));
    let started = Instant::now();
    let node = Node::up(&dir, Lifetime::ThisProcess, &[image, prime]).expect("the node comes up");
    let node_up = started.elapsed();
    let cluster = Cluster::new(node).await;

    let checks = Instant::now();
    cluster.deploy_the_kustomize_base().await;
    cluster.examples_reconcile().await;
    cluster.logs_and_metrics().await;
    let rollout = cluster.a_rolling_update_under_load_loses_nothing().await;
    cluster.a_killed_leader_container_is_restarted().await;
    cluster
        .an_unresponsive_leader_is_restarted_by_its_liveness_probe()
        .await;
    cluster
        .a_new_level_policy_from_the_configmap_relevels_everyone()
        .await;
    cluster.the_helm_chart_runs_too().await;
    let checks = checks.elapsed();

    let torn = Instant::now();
    guard.0 = None;
    Node::down(&dir).expect("the node is torn down and leaves nothing behind");
    println!(
        "node up in {:.1}s, checks {:.1}s, teardown {:.1}s; rollout {:.1}s, Lease hand-over gap {:.2}s, {} samples with more than one leader, worst order latency {:.3}s",
        node_up.as_secs_f64(),
        checks.as_secs_f64(),
        torn.elapsed().as_secs_f64(),
        rollout.rollout.as_secs_f64(),
        rollout.handover_gap.as_secs_f64(),
        rollout.two_leaders,
        rollout.worst_latency.as_secs_f64(),
    );
}
