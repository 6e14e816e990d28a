//! Wake routing: where watch events send the objects they wake. While this replica leads, to
//! the queues of its term; while it stands by, nowhere (the index is kept warm all the same).

use std::sync::Mutex;

use kube::runtime::reflector::ObjectRef;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::{feed::Wakes, index::OrderKey, queue::Lane};
use crate::crd::Customer;

/// Where watch events send what they wake: the queues of the current term, if any.
#[derive(Default)]
pub struct Triggers {
    queues: Mutex<Option<Queues>>,
}

struct Queues {
    customers: UnboundedSender<(ObjectRef<Customer>, Lane)>,
    orders: UnboundedSender<(OrderKey, Lane)>,
}

/// The receiving ends of a term's queues.
pub struct Opened {
    pub customers: UnboundedReceiver<(ObjectRef<Customer>, Lane)>,
    pub orders: UnboundedReceiver<(OrderKey, Lane)>,
}

impl Triggers {
    /// Wakes what changed: it runs before anything a sweep woke.
    pub fn wake(&self, wakes: Wakes) {
        self.send(wakes, Lane::Change);
    }

    /// Wakes everything a sweep looks at: it runs once no change waits.
    pub fn sweep(&self, wakes: Wakes) {
        self.send(wakes, Lane::Sweep);
    }

    fn send(&self, wakes: Wakes, lane: Lane) {
        if wakes == Wakes::default() {
            return;
        }
        let queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(queues) = queues.as_ref() {
            for customer in wakes.customers {
                let _ = queues.customers.send((customer, lane));
            }
            for order in wakes.orders {
                let _ = queues.orders.send((order, lane));
            }
        }
    }

    /// A term starts: from now on wakes go to the queues returned.
    pub fn open(&self) -> Opened {
        let (customers, customer_queue) = unbounded_channel();
        let (orders, order_queue) = unbounded_channel();
        *self.queues.lock().unwrap_or_else(|p| p.into_inner()) = Some(Queues { customers, orders });
        Opened {
            customers: customer_queue,
            orders: order_queue,
        }
    }

    /// The term ends: wakes go nowhere (the queues close once their receivers see it).
    pub fn close(&self) {
        self.queues.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}
