//! What the reconcilers need to know about the cluster, fed by the watches: which Customers
//! exist, and the facts of every Order that count towards a score, grouped by customer.
//!
//! The index holds no client. Each update says which objects it affects, so a change to one
//! Order wakes only its Customer, and a Customer appearing or disappearing wakes only its
//! Orders. Looking up one customer's orders costs O(its orders).

use std::collections::{HashMap, HashSet, hash_map::Entry};

use kube::{ResourceExt, runtime::reflector::ObjectRef};

use crate::{
    crd::{Customer, Order, OrderState},
    loyalty::Tally,
};

/// What of an Order counts towards its customer's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderFacts {
    pub quantity: i64,
    /// The accepted phase (`status.phase`); None until the operator has accepted the order.
    pub phase: Option<OrderState>,
}

impl OrderFacts {
    pub fn of(order: &Order) -> Self {
        Self {
            quantity: i64::from(order.spec.quantity),
            phase: order.status.as_ref().and_then(|s| s.phase),
        }
    }
}

/// A customer by namespace and name; orders name their customer this way.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CustomerKey {
    pub namespace: String,
    pub name: String,
}

impl CustomerKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    pub fn of_customer(customer: &Customer) -> Self {
        Self::new(
            customer.namespace().unwrap_or_default(),
            customer.name_any(),
        )
    }

    pub fn of_order(order: &Order) -> Self {
        Self::new(
            order.namespace().unwrap_or_default(),
            order.spec.customer.clone(),
        )
    }

    fn customer_ref(&self) -> ObjectRef<Customer> {
        ObjectRef::new(&self.name).within(&self.namespace)
    }

    fn order_ref(&self, order: &str) -> ObjectRef<Order> {
        ObjectRef::new(order).within(&self.namespace)
    }
}

/// Orders by customer, then by order name.
pub type OrdersByCustomer = HashMap<CustomerKey, HashMap<String, OrderFacts>>;

/// Customers by key, with their uid (a new uid under the same name is a new customer).
pub type CustomerUids = HashMap<CustomerKey, String>;

#[derive(Debug, Default)]
pub struct Index {
    customers: CustomerUids,
    orders: OrdersByCustomer,
}

impl Index {
    /// Records an added or changed Order. Returns its Customer when what counts changed.
    pub fn apply_order(&mut self, order: &Order) -> Option<ObjectRef<Customer>> {
        let key = CustomerKey::of_order(order);
        let facts = OrderFacts::of(order);
        let orders = self.orders.entry(key.clone()).or_default();
        let changed = orders.insert(order.name_any(), facts) != Some(facts);
        changed.then(|| key.customer_ref())
    }

    /// Forgets a deleted Order. Returns its Customer when the order was counted.
    pub fn delete_order(&mut self, order: &Order) -> Option<ObjectRef<Customer>> {
        let key = CustomerKey::of_order(order);
        let Entry::Occupied(mut orders) = self.orders.entry(key.clone()) else {
            return None;
        };
        let removed = orders.get_mut().remove(&order.name_any()).is_some();
        if orders.get().is_empty() {
            orders.remove();
        }
        removed.then(|| key.customer_ref())
    }

    /// Replaces every Order after a (re-)list. Returns the Customers whose orders differ from
    /// before, so deletions missed while the watch was down are not missed by the reconcilers.
    pub fn reset_orders(&mut self, orders: OrdersByCustomer) -> Vec<ObjectRef<Customer>> {
        let old = std::mem::replace(&mut self.orders, orders);
        let keys: HashSet<&CustomerKey> = old.keys().chain(self.orders.keys()).collect();
        keys.into_iter()
            .filter(|key| old.get(*key) != self.orders.get(*key))
            .map(CustomerKey::customer_ref)
            .collect()
    }

    /// Records an added or changed Customer. Returns its Orders when the customer is new.
    pub fn apply_customer(&mut self, customer: &Customer) -> Vec<ObjectRef<Order>> {
        let key = CustomerKey::of_customer(customer);
        let uid = customer.uid().unwrap_or_default();
        if self.customers.get(&key) == Some(&uid) {
            return Vec::new();
        }
        let orders = self.order_refs(&key);
        self.customers.insert(key, uid);
        orders
    }

    /// Forgets a deleted Customer. Returns its Orders, which lose their customer.
    pub fn delete_customer(&mut self, customer: &Customer) -> Vec<ObjectRef<Order>> {
        let key = CustomerKey::of_customer(customer);
        match self.customers.remove(&key) {
            Some(_) => self.order_refs(&key),
            None => Vec::new(),
        }
    }

    /// Replaces every Customer after a (re-)list. Returns the Orders whose customer appeared,
    /// disappeared or was replaced.
    pub fn reset_customers(&mut self, customers: CustomerUids) -> Vec<ObjectRef<Order>> {
        let old = std::mem::replace(&mut self.customers, customers);
        let keys: HashSet<&CustomerKey> = old.keys().chain(self.customers.keys()).collect();
        keys.into_iter()
            .filter(|key| old.get(*key) != self.customers.get(*key))
            .flat_map(|key| self.order_refs(key))
            .collect()
    }

    pub fn has_customer(&self, key: &CustomerKey) -> bool {
        self.customers.contains_key(key)
    }

    /// The orders of one customer, by name.
    pub fn orders_of(&self, key: &CustomerKey) -> impl Iterator<Item = (&str, OrderFacts)> {
        self.orders
            .get(key)
            .into_iter()
            .flat_map(|orders| orders.iter().map(|(name, facts)| (name.as_str(), *facts)))
    }

    /// The tally of one customer's orders, leaving out the order named `without` if any.
    pub fn tally_of(&self, key: &CustomerKey, without: Option<&str>) -> Tally {
        Tally::of(
            self.orders_of(key)
                .filter(|(name, _)| Some(*name) != without)
                .map(|(_, facts)| (facts.phase, facts.quantity)),
        )
    }

    pub fn customer_count(&self) -> usize {
        self.customers.len()
    }

    pub fn order_count(&self) -> usize {
        self.orders.values().map(HashMap::len).sum()
    }

    fn order_refs(&self, key: &CustomerKey) -> Vec<ObjectRef<Order>> {
        self.orders_of(key)
            .map(|(name, _)| key.order_ref(name))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{CustomerSpec, OrderSpec, OrderStatus};

    fn order(
        ns: &str,
        name: &str,
        customer: &str,
        quantity: i32,
        phase: Option<OrderState>,
    ) -> Order {
        let mut order = Order::new(
            name,
            OrderSpec {
                customer: customer.into(),
                product: "Latte".into(),
                quantity,
                state: OrderState::Requested,
            },
        );
        order.metadata.namespace = Some(ns.into());
        order.status = phase.map(|phase| OrderStatus {
            phase: Some(phase),
            ..Default::default()
        });
        order
    }

    fn customer(ns: &str, name: &str, uid: &str) -> Customer {
        let mut customer = Customer::new(name, CustomerSpec::default());
        customer.metadata.namespace = Some(ns.into());
        customer.metadata.uid = Some(uid.into());
        customer
    }

    fn key(ns: &str, name: &str) -> CustomerKey {
        CustomerKey::new(ns, name)
    }

    #[test]
    fn an_order_wakes_its_customer_only_when_what_counts_changes() {
        let mut index = Index::default();
        let a = order("ns", "a", "alice", 2, None);
        assert_eq!(
            index.apply_order(&a),
            Some(ObjectRef::new("alice").within("ns"))
        );
        assert_eq!(
            index.apply_order(&a),
            None,
            "a status write that changes nothing that counts"
        );
        let a = order("ns", "a", "alice", 2, Some(OrderState::Completed));
        assert!(index.apply_order(&a).is_some());
        assert_eq!(
            index.tally_of(&key("ns", "alice"), None),
            Tally {
                score: 2,
                completed: 1,
                canceled: 0,
                open: 0
            }
        );
        assert!(index.delete_order(&a).is_some());
        assert_eq!(index.delete_order(&a), None, "already gone");
        assert_eq!(index.tally_of(&key("ns", "alice"), None), Tally::default());
        assert_eq!(index.order_count(), 0);
    }

    #[test]
    fn customers_are_separate_per_namespace() {
        let mut index = Index::default();
        index.apply_order(&order("one", "a", "alice", 3, Some(OrderState::Completed)));
        index.apply_order(&order("two", "a", "alice", 5, Some(OrderState::Completed)));
        assert_eq!(index.tally_of(&key("one", "alice"), None).score, 3);
        assert_eq!(index.tally_of(&key("two", "alice"), None).score, 5);
    }

    #[test]
    fn tally_can_leave_one_order_out() {
        let mut index = Index::default();
        index.apply_order(&order("ns", "a", "alice", 3, Some(OrderState::Completed)));
        index.apply_order(&order("ns", "b", "alice", 4, Some(OrderState::Completed)));
        assert_eq!(index.tally_of(&key("ns", "alice"), Some("b")).score, 3);
        assert_eq!(index.tally_of(&key("ns", "alice"), Some("nope")).score, 7);
    }

    #[test]
    fn a_customer_appearing_or_leaving_wakes_its_orders() {
        let mut index = Index::default();
        index.apply_order(&order("ns", "a", "alice", 1, None));
        index.apply_order(&order("ns", "b", "alice", 1, None));
        index.apply_order(&order("ns", "c", "bob", 1, None));
        let alice = customer("ns", "alice", "u1");
        let mut woken = index.apply_customer(&alice);
        woken.sort_by_key(|r| r.name.clone());
        assert_eq!(
            woken,
            vec![
                ObjectRef::new("a").within("ns"),
                ObjectRef::new("b").within("ns")
            ]
        );
        assert!(index.has_customer(&key("ns", "alice")));
        assert!(
            index.apply_customer(&alice).is_empty(),
            "a status write of the same customer"
        );
        assert_eq!(
            index.apply_customer(&customer("ns", "alice", "u2")).len(),
            2,
            "re-created"
        );
        assert_eq!(index.delete_customer(&alice).len(), 2);
        assert!(!index.has_customer(&key("ns", "alice")));
        assert!(index.delete_customer(&alice).is_empty());
    }

    #[test]
    fn reset_wakes_what_changed_while_the_watch_was_away() {
        let mut index = Index::default();
        index.apply_order(&order("ns", "a", "alice", 1, None));
        index.apply_order(&order("ns", "b", "bob", 1, None));
        index.apply_order(&order("ns", "c", "carol", 1, None));
        // After a re-list: a unchanged, b deleted, c completed, d new for dana.
        let mut relisted = OrdersByCustomer::new();
        for o in [
            order("ns", "a", "alice", 1, None),
            order("ns", "c", "carol", 1, Some(OrderState::Completed)),
            order("ns", "d", "dana", 1, None),
        ] {
            relisted
                .entry(CustomerKey::of_order(&o))
                .or_default()
                .insert(o.name_any(), OrderFacts::of(&o));
        }
        let mut woken: Vec<_> = index
            .reset_orders(relisted)
            .into_iter()
            .map(|r| r.name)
            .collect();
        woken.sort();
        assert_eq!(woken, ["bob", "carol", "dana"]);
        assert_eq!(index.order_count(), 3);

        index.apply_customer(&customer("ns", "alice", "u1"));
        index.apply_customer(&customer("ns", "carol", "u3"));
        let relisted = CustomerUids::from([
            (key("ns", "alice"), "u1".into()),
            (key("ns", "dana"), "u4".into()),
        ]);
        let mut woken: Vec<_> = index
            .reset_customers(relisted)
            .into_iter()
            .map(|r| r.name)
            .collect();
        woken.sort();
        assert_eq!(
            woken,
            ["c", "d"],
            "carol left, dana arrived; alice is unchanged"
        );
        assert_eq!(index.customer_count(), 2);
    }
}
