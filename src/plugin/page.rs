//! One customer's page, from what the API holds: the Customer, its Orders, its Ledger and the
//! Events of its level changes. Pure: the plugin reads, this puts together and prints.

use std::fmt::Write as _;

use k8s_openapi::api::core::v1::Event;
use serde::Serialize;

use crate::crd::{Customer, Ledger, Order, OrderState};
use crate::loyalty::MISSING_CUSTOMER_LEVEL;

/// How many level changes the page shows, newest last.
const LEVEL_CHANGES: usize = 5;

#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Page {
    pub namespace: String,
    pub name: String,
    /// False for a name that only non-member orders use (no Customer of that name).
    pub member: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    pub score: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub points_to_next_level: Option<i64>,
    pub open_orders: i64,
    pub completed_orders: i64,
    pub canceled_orders: i64,
    pub orders: Vec<OrderLine>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settled: Option<Settled>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<Ready>,
    pub level_changes: Vec<LevelChange>,
}

#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OrderLine {
    pub name: String,
    pub product: String,
    pub quantity: i32,
    pub state: OrderState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<OrderState>,
    /// The level snapshot: the customer's level when the order was first attributed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
}

/// What the customer's Ledger holds: its settled (deleted) orders, summed.
#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Settled {
    pub score: i64,
    pub completed_orders: i64,
    pub canceled_orders: i64,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct Ready {
    pub status: String,
    pub reason: String,
    pub message: String,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct LevelChange {
    pub time: String,
    pub message: String,
}

/// Neither a Customer nor an Order of that name's customer exists.
#[derive(Debug, PartialEq, thiserror::Error)]
#[error("no customer {name} in namespace {namespace}, and no orders for one")]
pub struct NotFound {
    pub namespace: String,
    pub name: String,
}

/// The page of `name` in `namespace`: `customer` if it exists, its `orders` (any order), its
/// `ledger` and the Events about it.
pub fn page(
    namespace: &str,
    name: &str,
    customer: Option<&Customer>,
    orders: &[Order],
    ledger: Option<&Ledger>,
    events: &[Event],
) -> Result<Page, NotFound> {
    let mut orders: Vec<&Order> = orders.iter().filter(|o| o.spec.customer == name).collect();
    if customer.is_none() && orders.is_empty() {
        return Err(NotFound {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        });
    }
    orders.sort_by_key(|o| {
        (
            o.metadata.creation_timestamp.clone(),
            o.metadata.name.clone(),
        )
    });
    let lines: Vec<OrderLine> = orders
        .iter()
        .map(|o| OrderLine {
            name: o.metadata.name.clone().unwrap_or_default(),
            product: o.spec.product.clone(),
            quantity: o.spec.quantity,
            state: o.spec.state,
            phase: o.status.as_ref().and_then(|s| s.phase),
            level: o.status.as_ref().and_then(|s| s.customer_level.clone()),
        })
        .collect();
    let count = |state| lines.iter().filter(|l| l.state == state).count() as i64;
    let settled = ledger.map(|l| Settled {
        score: l.spec.score,
        completed_orders: l.spec.completed_orders,
        canceled_orders: l.spec.canceled_orders,
    });
    let mut level_changes: Vec<LevelChange> = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("LevelChanged"))
        .map(|e| LevelChange {
            time: event_time(e),
            message: e.message.clone().unwrap_or_default(),
        })
        .collect();
    level_changes.sort_by(|a, b| a.time.cmp(&b.time));
    let skip = level_changes.len().saturating_sub(LEVEL_CHANGES);
    level_changes.drain(..skip);

    let Some(customer) = customer else {
        // Orders of a name that is not a customer: Iron, counted for nobody.
        return Ok(Page {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            member: false,
            display_name: None,
            level: Some(MISSING_CUSTOMER_LEVEL.to_owned()),
            score: 0,
            next_level: None,
            points_to_next_level: None,
            open_orders: count(OrderState::Requested),
            completed_orders: count(OrderState::Completed),
            canceled_orders: count(OrderState::Canceled),
            orders: lines,
            settled,
            ready: None,
            level_changes,
        });
    };
    let status = customer.status.clone().unwrap_or_default();
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| Ready {
            status: c.status.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
        });
    Ok(Page {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        member: true,
        display_name: customer.spec.display_name.clone(),
        level: status.level,
        score: status.score,
        next_level: status.next_level,
        points_to_next_level: status.points_to_next_level,
        open_orders: status.open_orders,
        completed_orders: status.completed_orders,
        canceled_orders: status.canceled_orders,
        orders: lines,
        settled,
        ready,
        level_changes,
    })
}

/// When an Event last happened, as RFC 3339.
fn event_time(event: &Event) -> String {
    let series = event
        .series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref())
        .map(|t| t.0.to_string());
    series
        .or_else(|| event.last_timestamp.as_ref().map(|t| t.0.to_string()))
        .or_else(|| event.event_time.as_ref().map(|t| t.0.to_string()))
        .or_else(|| event.first_timestamp.as_ref().map(|t| t.0.to_string()))
        .or_else(|| {
            event
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
        })
        .unwrap_or_default()
}

/// The page as a person reads it.
pub fn render(page: &Page) -> String {
    let mut out = String::new();
    let dash = |v: Option<&str>| v.unwrap_or("-").to_owned();
    let _ = write!(out, "Customer {} (namespace {})", page.name, page.namespace);
    if let Some(display) = &page.display_name {
        let _ = write!(out, ": {display}");
    }
    out.push('\n');
    if !page.member {
        let _ = writeln!(
            out,
            "Not a member: no Customer {} exists. Its orders count for nobody and get level {}; \
             they are attributed (and keep the level of that moment) once the customer is created.",
            page.name, MISSING_CUSTOMER_LEVEL
        );
    } else {
        let next = match (&page.next_level, page.points_to_next_level) {
            (Some(next), Some(points)) => format!("{points} points to {next}"),
            _ => "the top level".to_owned(),
        };
        let _ = writeln!(
            out,
            "Level:   {} (score {}; {next})",
            dash(page.level.as_deref()),
            page.score
        );
        let _ = writeln!(
            out,
            "Orders:  {} open, {} completed, {} canceled (settled ones included)",
            page.open_orders, page.completed_orders, page.canceled_orders
        );
        match &page.ready {
            Some(r) if r.message.is_empty() => {
                let _ = writeln!(out, "Ready:   {} ({})", r.status, r.reason);
            }
            Some(r) => {
                let _ = writeln!(out, "Ready:   {} ({}): {}", r.status, r.reason, r.message);
            }
            None => {
                let _ = writeln!(
                    out,
                    "Ready:   - (the operator has not written this customer yet)"
                );
            }
        }
    }
    match &page.settled {
        Some(s) => {
            let _ = writeln!(
                out,
                "Settled: {} completed and {} canceled orders in the Ledger, score {}",
                s.completed_orders, s.canceled_orders, s.score
            );
        }
        None => {
            let _ = writeln!(out, "Settled: nothing (no Ledger)");
        }
    }
    out.push('\n');
    if page.orders.is_empty() {
        out.push_str("No orders.\n");
    } else {
        let rows: Vec<[String; 6]> = page
            .orders
            .iter()
            .map(|o| {
                [
                    o.name.clone(),
                    o.product.clone(),
                    o.quantity.to_string(),
                    o.state.to_string(),
                    dash(o.phase.map(|p| p.as_str())),
                    dash(o.level.as_deref()),
                ]
            })
            .collect();
        table(
            &mut out,
            ["ORDER", "PRODUCT", "QTY", "STATE", "PHASE", "LEVEL"],
            &rows,
        );
    }
    if !page.level_changes.is_empty() {
        out.push_str("\nLevel changes:\n");
        for change in &page.level_changes {
            let _ = writeln!(out, "  {}  {}", change.time, change.message);
        }
    }
    out
}

/// Columns padded to their widest cell, two spaces apart.
fn table<const N: usize>(out: &mut String, header: [&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == N {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<width$}  ", width = widths[i]);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

#[cfg(test)]
mod tests;
