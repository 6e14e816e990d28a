//! The scenarios of the node test, and what they need: the pods of the Deployment, who leads,
//! their processes on the host.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::api::{coordination::v1::Lease, core::v1::Pod};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use reserve_operator::{
    crd::{Order, OrderState},
    loyalty::LevelPolicy,
};
use reserve_testkit::{
    Probe, Shop, control_plane::text, eventually, fixtures, node::Node, tools::repo_root,
};
use serde_json::Value;

mod rollout;

const SYSTEM: &str = "reserve-system";
const SELECTOR: &str = "app.kubernetes.io/name=reserve-operator";
const WAIT: Duration = reserve_testkit::FAIL_AFTER;

pub struct Cluster {
    pub node: Node,
    pub admin: Client,
    pub shop: Shop,
}

impl Cluster {
    pub async fn new(node: Node) -> Cluster {
        let admin = node.cp.client().await;
        let ns = reserve_testkit::shop::fresh_namespace(&admin, "coffee").await;
        Cluster {
            shop: Shop {
                ns,
                admin: admin.clone(),
            },
            node,
            admin,
        }
    }

    fn kubectl(&self, args: &[&str]) -> String {
        let out = self.node.cp.kubectl(args);
        assert!(out.status.success(), "kubectl {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn rollout_status(&self) -> Duration {
        let start = Instant::now();
        self.kubectl(&[
            "rollout",
            "status",
            "deployment/reserve-operator",
            "-n",
            SYSTEM,
            "--timeout=180s",
        ]);
        start.elapsed()
    }

    async fn pods(&self) -> Vec<Pod> {
        let pods: Api<Pod> = Api::namespaced(self.admin.clone(), SYSTEM);
        pods.list(&ListParams::default().labels(SELECTOR))
            .await
            .unwrap()
            .items
    }

    /// The pod holding the Lease (its holder identity is the pod's name).
    async fn leader(&self) -> Pod {
        let leases: Api<Lease> = Api::namespaced(self.admin.clone(), SYSTEM);
        let pods: Api<Pod> = Api::namespaced(self.admin.clone(), SYSTEM);
        let deadline = Instant::now() + WAIT;
        loop {
            let holder = leases
                .get("reserve-operator")
                .await
                .ok()
                .and_then(|l| l.spec?.holder_identity);
            if let Some(holder) = &holder
                && let Ok(pod) = pods.get(holder).await
            {
                return pod;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {WAIT:?} waiting for a pod holding the Lease (holder {holder:?})\n{}",
                self.node.describe()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn probe(pod: &Pod) -> Option<Probe> {
        let ip = pod.status.as_ref()?.pod_ip.as_ref()?;
        Some(Probe::new(SocketAddr::new(ip.parse().ok()?, 8080)))
    }

    fn restarts(pod: &Pod) -> i32 {
        pod.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first())
            .map_or(0, |c| c.restart_count)
    }

    /// The host pid of the operator process in `pod`.
    fn process_of(&self, pod: &Pod) -> u32 {
        let uid = pod.uid().unwrap();
        *self
            .node
            .container_processes("reserve-operator")
            .iter()
            .find(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                    .is_ok_and(|c| c.contains(&uid.replace('-', "_")) || c.contains(&uid))
            })
            .unwrap_or_else(|| panic!("no operator process of pod {}", pod.name_any()))
    }

    pub async fn deploy_the_kustomize_base(&self) {
        let overlay = repo_root().join("tests/e2e");
        let out = self.node.cp.kubectl(&[
            "apply",
            "--server-side",
            "-k",
            &overlay.display().to_string(),
        ]);
        assert!(out.status.success(), "{}", text(&out));
        assert!(!text(&out).contains("PodSecurity"), "{}", text(&out));
        self.rollout_status();
        let pods = self.pods().await;
        assert_eq!(pods.len(), 2, "two replicas");
        for pod in &pods {
            let ready = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            assert!(ready, "{} not ready", pod.name_any());
            // The restricted security context, as the kernel applies it.
            let status =
                std::fs::read_to_string(format!("/proc/{}/status", self.process_of(pod))).unwrap();
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .unwrap_or_default()
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            };
            assert_eq!(field("Uid:"), "65532", "runs as 65532");
            assert_eq!(field("CapEff:"), "0000000000000000", "no capabilities");
            assert_eq!(field("NoNewPrivs:"), "1");
            assert_eq!(field("Seccomp:"), "2", "a seccomp filter");
        }
        // The namespace enforces Pod Security "restricted": a root pod is refused.
        let out = self.node.cp.kubectl(&[
            "run",
            "as-root",
            "-n",
            SYSTEM,
            &format!("--image=reserve-operator:{}", env!("CARGO_PKG_VERSION")),
            "--image-pull-policy=Never",
            "--overrides",
            r#"{"spec":{"securityContext":{"runAsUser":0}}}"#,
        ]);
        assert!(
            !out.status.success() && text(&out).contains("violates PodSecurity"),
            "{}",
            text(&out)
        );
    }

    pub async fn examples_reconcile(&self) {
        let examples = repo_root().join("examples");
        self.kubectl(&[
            "apply",
            "-n",
            &self.shop.ns,
            "-f",
            &examples.display().to_string(),
        ]);
        self.shop
            .expect_customer("alice", 0, "Bronze", (0, 0, 3))
            .await;
        self.shop
            .expect_order("carol-latte", "accepted as a non-member", |s| {
                s.customer_level.as_deref() == Some("Iron")
            })
            .await;
        for order in ["alice-americano", "alice-latte", "alice-mocha"] {
            self.shop.set_state(order, OrderState::Completed).await;
        }
        self.shop
            .expect_customer("alice", 9, "Silver", (3, 0, 0))
            .await;
    }

    pub async fn logs_and_metrics(&self) {
        let leader = self.leader().await;
        let logs = self.kubectl(&["logs", "-n", SYSTEM, &leader.name_any()]);
        let lines: Vec<Value> = logs
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        assert!(
            !lines.is_empty() && lines.len() == logs.lines().count(),
            "every log line is JSON:\n{logs}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l["message"] == "acquired the Lease; reconciling"),
            "{logs}"
        );
        // Scraped through the pod IPs, from the node.
        for pod in self.pods().await {
            let metrics = Self::probe(&pod)
                .unwrap()
                .metrics()
                .await
                .expect("/metrics through the pod IP");
            let leads = pod.name_any() == leader.name_any();
            assert_eq!(
                metrics.value("reserve_leader", &[]),
                Some(f64::from(u8::from(leads)))
            );
            assert_eq!(metrics.value("reserve_ready", &[]), Some(1.0));
        }
    }

    /// Waits until `pod` has restarted its container and is ready again, and some pod leads.
    async fn recovers(&self, pod: &Pod, restarts_before: i32, what: &str) -> Duration {
        let start = Instant::now();
        let pods: Api<Pod> = Api::namespaced(self.admin.clone(), SYSTEM);
        let name = pod.name_any();
        eventually(WAIT, what, || {
            let (pods, name) = (pods.clone(), name.clone());
            async move {
                let pod = pods.get(&name).await.ok()?;
                let ready = pod
                    .status
                    .as_ref()?
                    .conditions
                    .as_ref()?
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                (Self::restarts(&pod) > restarts_before && ready).then_some(())
            }
        })
        .await;
        self.leader().await;
        start.elapsed()
    }

    pub async fn a_killed_leader_container_is_restarted(&self) {
        let leader = self.leader().await;
        let before = Self::restarts(&leader);
        let pid = self.process_of(&leader);
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        let took = self
            .recovers(&leader, before, "the killed container to restart")
            .await;
        println!(
            "a killed leader container was restarted and ready after {:.1}s",
            took.as_secs_f64()
        );
        self.still_exact("after a killed leader").await;
    }

    pub async fn an_unresponsive_leader_is_restarted_by_its_liveness_probe(&self) {
        let leader = self.leader().await;
        let before = Self::restarts(&leader);
        let pid = self.process_of(&leader);
        // SAFETY: as above; SIGSTOP freezes it: no probe is answered, no Lease renewed.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) };
        let frozen = Instant::now();
        // The standby takes the Lease once it expires, long before the frozen one is replaced.
        let standby = eventually(WAIT, "the standby to lead", || async {
            let now = self.leader().await;
            (now.name_any() != leader.name_any()).then_some(now)
        })
        .await;
        println!(
            "the standby {} led {:.1}s after the leader froze",
            standby.name_any(),
            frozen.elapsed().as_secs_f64()
        );
        let took = self
            .recovers(
                &leader,
                before,
                "the liveness probe to restart the frozen container",
            )
            .await;
        println!(
            "a frozen leader was restarted by its liveness probe after {:.1}s",
            took.as_secs_f64()
        );
        self.still_exact("after a frozen leader").await;
    }

    /// Orders keep being reconciled, and every status is exact.
    async fn still_exact(&self, when: &str) {
        let name = format!(
            "after-{}",
            when.len()
                + self
                    .shop
                    .orders()
                    .list(&ListParams::default())
                    .await
                    .unwrap()
                    .items
                    .len()
        );
        self.shop
            .order(&name, "bob", 2, OrderState::Completed)
            .await;
        self.shop
            .expect_order(&name, "accepted", |s| {
                s.phase == Some(OrderState::Completed)
            })
            .await;
        let (mismatches, _) = self.shop.converge(&LevelPolicy::default(), WAIT).await;
        assert!(mismatches.is_empty(), "{when}: {mismatches:#?}");
    }

    pub async fn a_new_level_policy_from_the_configmap_relevels_everyone(&self) {
        let levels = "Bronze=0,Silver=3,Gold=6,Platinum=9,Diamond=12";
        self.kubectl(&[
            "patch",
            "configmap",
            "reserve-operator-config",
            "-n",
            SYSTEM,
            "--type",
            "merge",
            "-p",
            &format!(r#"{{"data":{{"RESERVE_LEVELS":"{levels}"}}}}"#),
        ]);
        self.kubectl(&[
            "rollout",
            "restart",
            "deployment/reserve-operator",
            "-n",
            SYSTEM,
        ]);
        self.rollout_status();
        let policy: LevelPolicy = levels.parse().unwrap();
        let (mismatches, checked) = self.shop.converge(&policy, WAIT).await;
        assert!(mismatches.is_empty(), "not re-leveled: {mismatches:#?}");
        println!("a new level policy re-leveled {checked} customers");
    }

    pub async fn the_helm_chart_runs_too(&self) {
        self.kubectl(&[
            "delete",
            "deployment/reserve-operator",
            "-n",
            SYSTEM,
            "--wait=true",
        ]);
        let chart = repo_root().join("charts/reserve-operator");
        let bin = reserve_testkit::tools::ecosystem_bin_dir().unwrap();
        let out = Command::new(bin.join("helm"))
            .args([
                "template",
                "reserve",
                &chart.display().to_string(),
                "--namespace",
                SYSTEM,
            ])
            .args([
                "--set",
                "image.pullPolicy=Never,crds.install=false,statusPolicy.install=false",
            ])
            .env(
                "HELM_CACHE_HOME",
                reserve_testkit::watchdog().dir().join("helm"),
            )
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let out = self
            .node
            .cp
            .kubectl_stdin(&["apply", "-f", "-"], &String::from_utf8_lossy(&out.stdout));
        assert!(
            out.status.success(),
            "the chart does not apply: {}",
            text(&out)
        );
        self.rollout_status();
        self.leader().await;
        self.still_exact("under the chart").await;
        println!("the Helm chart's Deployment runs and reconciles");
    }
}
