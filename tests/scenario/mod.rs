//! Shared steps of the controller tests: an operator per test (watching one namespace as its
//! own user), and helpers to create, move and read Customers and Orders.
#![allow(dead_code)]

use std::{collections::BTreeMap, net::TcpListener, time::Duration};

use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use reserve_operator::crd::{
    Customer, CustomerSpec, CustomerStatus, Order, OrderSpec, OrderState, OrderStatus,
};

use crate::support::{AuditEvent, ControlPlane, OperatorProcess, eventually, fresh_namespace};

pub const WAIT: Duration = Duration::from_secs(20);

pub struct Scenario {
    pub ns: String,
    pub admin: Client,
    /// The operator's identity in the audit log.
    pub user: String,
    pub kubeconfig: std::path::PathBuf,
    pub operator: Option<OperatorProcess>,
    pub probe_port: u16,
}

/// Binds `user` to cluster-admin, so tests can run operators as identities of their own that
/// the audit log tells apart.
pub fn grant_cluster_admin(user: &str) {
    let out = ControlPlane::get().kubectl(&[
        "create",
        "clusterrolebinding",
        user,
        "--clusterrole=cluster-admin",
        &format!("--user={user}"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Scenario {
    /// A fresh namespace and an operator watching it, acting as its own user.
    pub async fn start(prefix: &str, extra_args: &[&str]) -> Self {
        let cp = ControlPlane::get();
        let admin = cp.client().await;
        let ns = fresh_namespace(&admin, prefix).await;
        let user = format!("operator-{ns}");
        grant_cluster_admin(&user);
        let kubeconfig = cp.kubeconfig_as(&user, &[]);
        let mut scenario = Scenario {
            ns,
            admin,
            user,
            kubeconfig,
            operator: None,
            probe_port: 0,
        };
        scenario.start_operator(extra_args);
        scenario
    }

    pub fn start_operator(&mut self, extra_args: &[&str]) {
        self.probe_port = free_port();
        let addr = format!("127.0.0.1:{}", self.probe_port);
        let mut args = vec![
            "run",
            "--no-leader-election",
            "--namespace",
            &self.ns,
            "--probe-addr",
            &addr,
        ];
        args.extend_from_slice(extra_args);
        self.operator = Some(OperatorProcess::spawn(&self.kubeconfig, &args));
    }

    /// The same identity and client, for another namespace, with no operator of its own.
    pub fn clone_without_operator(&self) -> Self {
        Scenario {
            ns: self.ns.clone(),
            admin: self.admin.clone(),
            user: self.user.clone(),
            kubeconfig: self.kubeconfig.clone(),
            operator: None,
            probe_port: self.probe_port,
        }
    }

    pub fn operator_logs(&self) -> String {
        self.operator
            .as_ref()
            .map(OperatorProcess::logs)
            .unwrap_or_default()
    }

    pub fn customers(&self) -> Api<Customer> {
        Api::namespaced(self.admin.clone(), &self.ns)
    }

    pub fn orders(&self) -> Api<Order> {
        Api::namespaced(self.admin.clone(), &self.ns)
    }

    pub async fn customer(&self, name: &str) {
        let customer = Customer::new(
            name,
            CustomerSpec {
                display_name: Some(format!("Customer {name}")),
            },
        );
        self.customers()
            .create(&PostParams::default(), &customer)
            .await
            .unwrap();
    }

    pub async fn order(&self, name: &str, customer: &str, quantity: i32, state: OrderState) {
        let order = Order::new(
            name,
            OrderSpec {
                customer: customer.into(),
                product: "Flat White".into(),
                quantity,
                state,
            },
        );
        self.orders()
            .create(&PostParams::default(), &order)
            .await
            .unwrap();
    }

    pub async fn set_state(&self, order: &str, state: OrderState) {
        let patch = serde_json::json!({ "spec": { "state": state } });
        self.orders()
            .patch(order, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    pub async fn delete_order(&self, order: &str) {
        self.orders()
            .delete(order, &DeleteParams::default())
            .await
            .unwrap();
    }

    pub async fn delete_customer(&self, customer: &str) {
        self.customers()
            .delete(customer, &DeleteParams::default())
            .await
            .unwrap();
    }

    /// Waits until the customer's status has this score, level and (completed, canceled, open).
    pub async fn expect_customer(
        &self,
        name: &str,
        score: i64,
        level: &str,
        counts: (i64, i64, i64),
    ) -> CustomerStatus {
        let api = self.customers();
        let what = format!("customer {name} to reach score {score}, {level}, counts {counts:?}");
        let wanted = |status: &CustomerStatus| {
            status.score == score
                && status.level.as_deref() == Some(level)
                && (
                    status.completed_orders,
                    status.canceled_orders,
                    status.open_orders,
                ) == counts
        };
        let result = tokio::time::timeout(
            WAIT,
            eventually(WAIT + Duration::from_secs(1), &what, || {
                let api = api.clone();
                async move { api.get(name).await.ok()?.status.filter(wanted) }
            }),
        )
        .await;
        match result {
            Ok(status) => status,
            Err(_) => {
                let last = api.get(name).await.ok().and_then(|c| c.status);
                panic!(
                    "timed out waiting for {what}; last status {last:?}\noperator log:\n{}",
                    self.operator_logs()
                )
            }
        }
    }

    /// Waits until the order's status satisfies `check`.
    pub async fn expect_order(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&OrderStatus) -> bool,
    ) -> OrderStatus {
        let api = self.orders();
        let what = format!("order {name}: {what}");
        let result = tokio::time::timeout(
            WAIT,
            eventually(WAIT + Duration::from_secs(1), &what, || {
                let api = api.clone();
                let check = &check;
                async move { api.get(name).await.ok()?.status.filter(|s| check(s)) }
            }),
        )
        .await;
        match result {
            Ok(status) => status,
            Err(_) => {
                let last = api.get(name).await.ok().and_then(|o| o.status);
                panic!(
                    "timed out waiting for {what}; last status {last:?}\noperator log:\n{}",
                    self.operator_logs()
                )
            }
        }
    }

    /// Events of this namespace as (reason, object name, message).
    pub fn events(&self) -> Vec<(String, String, String)> {
        let out = ControlPlane::get().kubectl(&[
            "get",
            "events",
            "-n",
            &self.ns,
            "-o",
            "jsonpath={range .items[*]}{.reason}|{.involvedObject.name}|{.message}{\"\\n\"}{end}",
        ]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut parts = l.splitn(3, '|');
                Some((
                    parts.next()?.to_owned(),
                    parts.next()?.to_owned(),
                    parts.next()?.to_owned(),
                ))
            })
            .collect()
    }

    /// The audit events of this operator's identity.
    pub fn operator_requests(&self) -> Vec<AuditEvent> {
        ControlPlane::get()
            .audit()
            .into_iter()
            .filter(|e| e.user == self.user && e.stage == "ResponseComplete")
            .collect()
    }

    /// GET on the operator's probe server: (status code, body).
    pub async fn probe(&self, path: &str) -> Option<(u16, String)> {
        let port = self.probe_port;
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            stream
                .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
                .ok()?;
            let mut response = String::new();
            stream.read_to_string(&mut response).ok()?;
            let code = response.split_whitespace().nth(1)?.parse().ok()?;
            let body = response
                .split_once("\r\n\r\n")
                .map(|(_, b)| b.to_owned())
                .unwrap_or_default();
            Some((code, body))
        })
        .await
        .ok()?
    }

    /// A counter or gauge from the operator's /metrics, by its full sample name with labels.
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        let (_, body) = self.probe("/metrics").await?;
        body.lines().find_map(|l| {
            l.strip_prefix(sample)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    }
}

/// Operator requests counted by "verb resource[/subresource]".
pub fn tally(requests: &[AuditEvent]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in requests {
        let resource = match &r.subresource {
            Some(sub) => format!("{}/{sub}", r.resource),
            None => r.resource.clone(),
        };
        *counts.entry(format!("{} {resource}", r.verb)).or_default() += 1;
    }
    counts
}

pub fn is_write(e: &AuditEvent) -> bool {
    matches!(
        e.verb.as_str(),
        "create" | "update" | "patch" | "delete" | "deletecollection"
    )
}
