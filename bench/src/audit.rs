//! The operator's requests in one namespace, counted from the API server's audit log.

use k8s_openapi::jiff::Timestamp;
use reserve_testkit::audit::AuditEvent;

use crate::figures::AuditFigures;

/// When things happened, by the wall clock the audit log uses.
pub struct Windows {
    pub last_write: Timestamp,
    pub converged: Timestamp,
    pub stopped: Timestamp,
}

/// Counts the requests of `user` in `namespace`.
pub fn figures(
    events: &[AuditEvent],
    user: &str,
    namespace: &str,
    windows: &Windows,
    transitions: usize,
    customers: usize,
) -> AuditFigures {
    let mut figures = AuditFigures::default();
    for event in events {
        // Watches end (ResponseComplete) only when the operator stops: count them when they
        // start instead.
        let counted_stage = if event.verb == "watch" {
            "ResponseStarted"
        } else {
            "ResponseComplete"
        };
        if event.user() != user || !event.in_namespace(namespace) || event.stage != counted_stage {
            continue;
        }
        let key = format!("{} {}", event.verb, event.resource_path());
        *figures.by_request.entry(key.clone()).or_default() += 1;
        let ok = event.succeeded();
        if !ok && event.verb != "watch" {
            let code = event.code().unwrap_or_default();
            *figures.not_2xx.entry(format!("{key} {code}")).or_default() += 1;
        }
        let status_write =
            event.is_write() && event.object_ref.subresource.as_deref() == Some("status");
        if status_write {
            match (event.object_ref.resource.as_str(), ok) {
                ("orders", true) => figures.order_status_writes += 1,
                ("customers", true) => figures.customer_status_writes += 1,
                (_, false) if event.code() == Some(409) => figures.status_write_conflicts += 1,
                _ => {}
            }
        }
        let received = event.request_received_timestamp;
        if status_write && ok && received > windows.last_write && received <= windows.converged {
            figures.status_writes_in_tail += 1;
        }
        if event.is_write() && received > windows.converged && received < windows.stopped {
            figures.writes_after_convergence += 1;
            if status_write {
                figures.status_writes_after_convergence += 1;
            }
        }
    }
    figures.requests = figures.by_request.values().sum();
    let per = |n: u64, of: usize| n as f64 / of.max(1) as f64;
    figures.order_status_writes_per_transition = per(figures.order_status_writes, transitions);
    figures.customer_status_writes_per_transition =
        per(figures.customer_status_writes, transitions);
    figures.customer_status_writes_per_customer = per(figures.customer_status_writes, customers);
    let tail = (windows.converged - windows.last_write)
        .total(k8s_openapi::jiff::Unit::Second)
        .unwrap_or_default();
    figures.status_writes_in_tail_per_second =
        figures.status_writes_in_tail as f64 / tail.max(1e-3);
    figures
}
