//! `kubectl reserve status`: who leads and how every replica is, from the Lease, the pods and
//! each pod's own /readyz (through the API server's pod proxy, so no port-forward).

use std::fmt::Write as _;

use k8s_openapi::api::{coordination::v1::Lease, core::v1::Pod};
use kube::{Api, Client, ResourceExt, api::ListParams};
use serde::Serialize;

use super::PluginError;
use crate::leader::LEASE_NAME;

/// The label every operator pod carries (the Deployment's selector, kustomize and chart).
const POD_SELECTOR: &str = "app.kubernetes.io/name=reserve-operator";
/// The port of /healthz, /readyz and /metrics.
const PROBE_PORT: u16 = 8080;

#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OperatorStatus {
    pub namespace: String,
    /// The Lease: who holds it and how long ago it was renewed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseState>,
    pub replicas: Vec<Replica>,
    /// What waits in the leader's queues, from its /metrics (None without a leader to ask).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub work: Option<Work>,
}

#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Work {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<Queue>,
    /// Why the leader's /metrics could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
}

/// One controller's queue on the leader.
#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Queue {
    pub controller: String,
    pub waiting: f64,
    pub running: f64,
    /// How long the oldest waiting change has waited.
    pub oldest_change_seconds: f64,
}

#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LeaseState {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    /// Seconds since the last renewal, when it was renewed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renewed_seconds_ago: Option<i64>,
    pub duration_seconds: i64,
    /// The holder renewed it within its duration.
    pub held: bool,
}

#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Replica {
    pub pod: String,
    pub phase: String,
    pub ready: bool,
    pub leads: bool,
    pub restarts: i32,
    /// What its /readyz says (`ok`, `ok (standby)` or why not), or why it could not be read.
    pub readyz: String,
}

/// Reads the operator's state in `namespace`.
pub async fn read(client: &Client, namespace: &str) -> Result<OperatorStatus, PluginError> {
    let lease = Api::<Lease>::namespaced(client.clone(), namespace)
        .get_opt(LEASE_NAME)
        .await
        .map_err(PluginError::read(format!(
            "the Lease {namespace}/{LEASE_NAME}"
        )))?;
    let now = k8s_openapi::jiff::Timestamp::now();
    let lease = lease.and_then(|l| l.spec).map(|spec| {
        let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
        let ago = spec
            .renew_time
            .as_ref()
            .map(|t| now.duration_since(t.0).as_secs());
        LeaseState {
            held: spec.holder_identity.is_some() && ago.is_some_and(|ago| ago <= duration),
            holder: spec.holder_identity,
            renewed_seconds_ago: ago,
            duration_seconds: duration,
        }
    });
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(POD_SELECTOR))
        .await
        .map_err(PluginError::read(format!(
            "the operator's pods in {namespace}"
        )))?;
    let mut replicas = Vec::new();
    for pod in pods.items {
        let name = pod.name_any();
        let status = pod.status.clone().unwrap_or_default();
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        let restarts = status
            .container_statuses
            .iter()
            .flatten()
            .map(|c| c.restart_count)
            .sum();
        let readyz = if status.phase.as_deref() == Some("Running") {
            readyz(client, namespace, &name).await
        } else {
            "not running".to_owned()
        };
        replicas.push(Replica {
            leads: lease
                .as_ref()
                .is_some_and(|l| l.held && l.holder.as_deref() == Some(name.as_str())),
            phase: status.phase.unwrap_or_default(),
            pod: name,
            ready,
            restarts,
            readyz,
        });
    }
    replicas.sort_by(|a, b| a.pod.cmp(&b.pod));
    let work = match replicas.iter().find(|r| r.leads) {
        Some(leader) => Some(
            match proxied(client, namespace, &leader.pod, "metrics").await {
                Ok(text) => Work {
                    queues: queues(&text),
                    unreadable: None,
                },
                Err(why) => Work {
                    queues: Vec::new(),
                    unreadable: Some(why),
                },
            },
        ),
        None => None,
    };
    Ok(OperatorStatus {
        namespace: namespace.to_owned(),
        lease,
        replicas,
        work,
    })
}

/// The queues in a /metrics text: depth, reconciles in flight and the oldest change's wait,
/// per controller.
fn queues(metrics: &str) -> Vec<Queue> {
    let value = |family: &str, controller: &str| {
        let prefix = format!("{family}{{controller=\"{controller}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix)?.trim().parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    ["customer", "order"]
        .into_iter()
        .map(|controller| Queue {
            controller: controller.to_owned(),
            waiting: value("reserve_queue_depth", controller),
            running: value("reserve_reconciles_in_flight", controller),
            oldest_change_seconds: value("reserve_queue_oldest_change_seconds", controller),
        })
        .collect()
}

/// What the pod's /readyz answers, through the API server's proxy.
async fn readyz(client: &Client, namespace: &str, pod: &str) -> String {
    proxied(client, namespace, pod, "readyz")
        .await
        .unwrap_or_else(|why| why)
}

/// What the pod answers at `/path` through the API server's proxy; a refusal's reason (a 503
/// of /readyz carries it as its body), or why it could not be read.
async fn proxied(
    client: &Client,
    namespace: &str,
    pod: &str,
    path: &str,
) -> Result<String, String> {
    let path = format!("/api/v1/namespaces/{namespace}/pods/{pod}:{PROBE_PORT}/proxy/{path}");
    let request = http::Request::get(path)
        .body(Vec::new())
        .expect("a GET request builds");
    match client.request_text(request).await {
        Ok(text) => Ok(text.trim().to_owned()),
        Err(kube::Error::Api(status)) => Err(status.message.trim().to_owned()),
        Err(error) => Err(format!("unreadable: {error}")),
    }
}

/// The status as a person reads it.
pub fn render(status: &OperatorStatus) -> String {
    let mut out = String::new();
    match &status.lease {
        Some(LeaseState {
            holder: Some(holder),
            renewed_seconds_ago: Some(ago),
            held: true,
            ..
        }) => {
            let _ = writeln!(out, "Leader:   {holder} (renewed {ago}s ago)");
        }
        Some(lease) => {
            let _ = writeln!(
                out,
                "Leader:   none: the Lease {LEASE_NAME} was last held by {} and not renewed for \
                 {}s (duration {}s)",
                lease.holder.as_deref().unwrap_or("nobody"),
                lease
                    .renewed_seconds_ago
                    .map_or("-".to_owned(), |s| s.to_string()),
                lease.duration_seconds
            );
        }
        None => {
            let _ = writeln!(
                out,
                "Leader:   none: no Lease {LEASE_NAME} in {} (not installed here, or never started)",
                status.namespace
            );
        }
    }
    if status.replicas.is_empty() {
        let _ = writeln!(
            out,
            "Replicas: no pod labelled {POD_SELECTOR} in {}",
            status.namespace
        );
        return out;
    }
    let ready = status.replicas.iter().filter(|r| r.ready).count();
    let _ = writeln!(
        out,
        "Replicas: {ready} of {} ready\n",
        status.replicas.len()
    );
    let width = status
        .replicas
        .iter()
        .map(|r| r.pod.len())
        .max()
        .unwrap_or(0)
        .max(3);
    let _ = writeln!(
        out,
        "{:<width$}  {:<7}  {:<5}  {:<5}  {:<8}  READYZ",
        "POD", "PHASE", "READY", "LEADS", "RESTARTS"
    );
    for r in &status.replicas {
        let _ = writeln!(
            out,
            "{:<width$}  {:<7}  {:<5}  {:<5}  {:<8}  {}",
            r.pod,
            r.phase,
            r.ready,
            r.leads,
            r.restarts,
            r.readyz.replace('\n', " ")
        );
    }
    match &status.work {
        Some(Work {
            unreadable: Some(why),
            ..
        }) => {
            let _ = writeln!(
                out,
                "\nWork on the leader: its /metrics could not be read: {why}"
            );
        }
        Some(Work { queues, .. }) => {
            let _ = writeln!(out, "\nWork on the leader:");
            for q in queues {
                let _ = writeln!(
                    out,
                    "  {:<8}  {} waiting, {} running, the oldest change waiting for {:.1}s",
                    q.controller, q.waiting, q.running, q.oldest_change_seconds
                );
            }
        }
        None => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_who_leads_and_why_a_replica_is_not_ready() {
        let status = OperatorStatus {
            namespace: "reserve-system".into(),
            lease: Some(LeaseState {
                holder: Some("reserve-operator-a".into()),
                renewed_seconds_ago: Some(2),
                duration_seconds: 15,
                held: true,
            }),
            replicas: vec![
                Replica {
                    pod: "reserve-operator-a".into(),
                    phase: "Running".into(),
                    ready: true,
                    leads: true,
                    restarts: 0,
                    readyz: "ok".into(),
                },
                Replica {
                    pod: "reserve-operator-b".into(),
                    phase: "Running".into(),
                    ready: false,
                    leads: false,
                    restarts: 3,
                    readyz: "watch of orders failing".into(),
                },
            ],
            work: Some(Work {
                queues: queues(concat!(
                    "reserve_queue_depth{controller=\"customer\"} 0\n",
                    "reserve_queue_depth{controller=\"order\"} 1204\n",
                    "reserve_reconciles_in_flight{controller=\"customer\"} 0\n",
                    "reserve_reconciles_in_flight{controller=\"order\"} 40\n",
                    "reserve_queue_oldest_change_seconds{controller=\"customer\"} 0.0\n",
                    "reserve_queue_oldest_change_seconds{controller=\"order\"} 12.34\n",
                )),
                unreadable: None,
            }),
        };
        let text = render(&status);
        assert!(
            text.contains("Leader:   reserve-operator-a (renewed 2s ago)"),
            "{text}"
        );
        assert!(text.contains("Replicas: 1 of 2 ready"), "{text}");
        assert!(
            text.contains(
                "  order     1204 waiting, 40 running, the oldest change waiting for 12.3s"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "reserve-operator-b  Running  false  false  3         watch of orders failing"
            ),
            "{text}"
        );
    }

    #[test]
    fn an_expired_or_missing_lease_is_no_leader() {
        let mut status = OperatorStatus {
            namespace: "loyalty".into(),
            lease: Some(LeaseState {
                holder: Some("reserve-operator-a".into()),
                renewed_seconds_ago: Some(40),
                duration_seconds: 15,
                held: false,
            }),
            replicas: vec![],
            work: None,
        };
        let text = render(&status);
        assert!(
            text.contains("Leader:   none: the Lease reserve-operator was last held by reserve-operator-a and not renewed for 40s"),
            "{text}"
        );
        assert!(text.contains("Replicas: no pod labelled"), "{text}");
        status.lease = None;
        assert!(render(&status).contains("no Lease reserve-operator in loyalty"));
    }
}
