//! Wake routing: where watch events send the objects they wake. While this replica leads, to
//! the queues of its term; while it stands by, nowhere (the index is kept warm all the same).

use std::sync::Mutex;

use kube::runtime::reflector::ObjectRef;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::{
    index::OrderKey,
    queue::{Sweep, Wake},
};
use crate::crd::Customer;

/// The objects a watch event wakes.
#[derive(Debug, Default, PartialEq)]
pub struct Wakes {
    pub customers: Vec<ObjectRef<Customer>>,
    pub orders: Vec<OrderKey>,
}

/// Where watch events send what they wake: the queues of the current term, if any.
#[derive(Default)]
pub struct Triggers {
    queues: Mutex<Option<Queues>>,
}

struct Queues {
    customers: UnboundedSender<Wake<ObjectRef<Customer>>>,
    orders: UnboundedSender<Wake<OrderKey>>,
}

/// The receiving ends of a term's queues.
pub struct Opened {
    pub customers: UnboundedReceiver<Wake<ObjectRef<Customer>>>,
    pub orders: UnboundedReceiver<Wake<OrderKey>>,
}

/// What a sweep looks at, per kind: keys the queues draw as they have room.
#[derive(Default)]
pub struct Sweeps {
    pub customers: Option<Sweep<ObjectRef<Customer>>>,
    pub orders: Option<Sweep<OrderKey>>,
}

impl Triggers {
    /// Wakes what changed: it runs before anything a sweep woke.
    pub fn wake(&self, wakes: Wakes) {
        if wakes == Wakes::default() {
            return;
        }
        self.send(
            wakes.customers.into_iter().map(Wake::Changed),
            wakes.orders.into_iter().map(Wake::Changed),
        );
    }

    /// Wakes everything a sweep looks at: it runs once no change waits.
    pub fn sweep(&self, sweeps: Sweeps) {
        self.send(
            sweeps.customers.map(Wake::Sweep),
            sweeps.orders.map(Wake::Sweep),
        );
    }

    fn send(
        &self,
        customers: impl IntoIterator<Item = Wake<ObjectRef<Customer>>>,
        orders: impl IntoIterator<Item = Wake<OrderKey>>,
    ) {
        let queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(queues) = queues.as_ref() {
            for customer in customers {
                let _ = queues.customers.send(customer);
            }
            for order in orders {
                let _ = queues.orders.send(order);
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
