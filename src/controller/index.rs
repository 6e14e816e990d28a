//! What the reconcilers need to know about the cluster, fed by the watches: which Customers
//! exist, the facts of every Order that count towards a score, grouped by customer, and each
//! customer's Ledger of settled orders.
//!
//! The index holds no client. Each update says which objects it affects, so a change to one
//! Order wakes only its Customer, and a Customer appearing or disappearing wakes only its
//! Orders. Looking up one customer's orders costs O(its orders).

use std::{
    collections::{HashMap, HashSet, hash_map::Entry},
    fmt,
    hash::{DefaultHasher, Hash, Hasher},
    sync::Arc,
};

use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt, runtime::reflector::ObjectRef};

use super::{
    declared, restore,
    seen::{SeenCustomer, SeenCustomerStatus, SeenOrder, SeenStatus},
};
use crate::{
    crd::{Customer, Ledger, Order, OrderState},
    loyalty::{MISSING_CUSTOMER_LEVEL, Tally},
};

/// What of an Order counts towards its customer's status, the snapshot it took, and the rest
/// of what the reconcilers read of it (the operator keeps no other copy of Orders).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderFacts {
    /// A hash of the uid: an order deleted and created again under its name is a new order.
    uid: u64,
    pub quantity: i64,
    /// What the user declared (`spec.state`); the API server enforces its transitions.
    pub state: OrderState,
    /// The customer level first seen in the order's status, kept whatever later statuses show.
    snapshot: Option<Arc<str>>,
    pub seen: SeenOrder,
}

impl OrderFacts {
    fn counts_the_same(&self, other: &OrderFacts) -> bool {
        (self.quantity, self.state) == (other.quantity, other.state)
    }

    /// The customer level this order's status showed first, if the index has seen one.
    pub fn snapshot(&self) -> Option<&str> {
        self.snapshot.as_deref()
    }
}

/// An order by its customer and its name: where the index keeps it. An order's customer never
/// changes (the API server refuses it), so this names one order for as long as it lives.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OrderKey {
    pub customer: CustomerKey,
    pub name: String,
}

impl OrderKey {
    pub fn of_order(order: &Order) -> Self {
        Self {
            customer: CustomerKey::of_order(order),
            name: order.name_any(),
        }
    }

    pub fn object_ref(&self) -> ObjectRef<Order> {
        self.customer.order_ref(&self.name)
    }
}

impl fmt::Display for OrderKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.customer.namespace, self.name)
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

    pub fn of_ref(customer: &ObjectRef<Customer>) -> Self {
        Self::new(
            customer.namespace.clone().unwrap_or_default(),
            customer.name.clone(),
        )
    }

    pub fn customer_ref(&self) -> ObjectRef<Customer> {
        ObjectRef::new(&self.name).within(&self.namespace)
    }

    fn order_ref(&self, order: &str) -> ObjectRef<Order> {
        ObjectRef::new(order).within(&self.namespace)
    }

    pub fn order_key(&self, order: &str) -> OrderKey {
        OrderKey {
            customer: self.clone(),
            name: order.to_owned(),
        }
    }
}

/// One Order as a (re-)list hands it to the index.
pub struct ListedOrder {
    customer: CustomerKey,
    name: String,
    facts: OrderFacts,
}

/// One Customer as a (re-)list hands it to the index.
pub struct ListedCustomer {
    key: CustomerKey,
    known: KnownCustomer,
}

/// What the index keeps of a Customer (the operator keeps no other copy of Customers).
#[derive(Clone, Debug, PartialEq, Eq)]
struct KnownCustomer {
    /// Its identity and status; a customer deleted and created again under its name (another
    /// uid) is a new one.
    seen: SeenCustomer,
    /// The settled history its status showed last (what its Ledger added), if any: what counts
    /// while the Ledger is missing, so a score never drops because it was not restored.
    settled: Option<Tally>,
}

/// What a customer's Ledger holds: the tally of its settled orders, among them the orders
/// absorbed there whose deletion is not confirmed yet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LedgerFacts {
    pub settled: Tally,
    /// Absorbed orders: name, uid hash, and what the ledger counted for each.
    absorbed: Vec<(String, u64, OrderState, i64)>,
    /// The resourceVersion these facts were read at.
    pub resource_version: String,
}

impl LedgerFacts {
    fn absorbs(&self, uid: u64) -> bool {
        self.absorbed.iter().any(|(_, hash, ..)| *hash == uid)
    }
}

/// One Ledger as a (re-)list hands it to the index.
pub struct ListedLedger {
    key: CustomerKey,
    facts: LedgerFacts,
}

/// One customer's orders by name. The facts are boxed: a hash table keeps a share of its slots
/// empty, and an empty slot then costs a pointer, not a whole `OrderFacts`.
type ByName = HashMap<Box<str>, Box<OrderFacts>>;

#[derive(Debug, Default)]
pub struct Index {
    /// Customers by key.
    customers: HashMap<CustomerKey, KnownCustomer>,
    /// Orders by customer, then by order name.
    orders: HashMap<CustomerKey, ByName>,
    /// Level names seen in snapshots, shared by every order that has them.
    levels: HashSet<Arc<str>>,
    /// Ledgers by customer.
    ledgers: HashMap<CustomerKey, LedgerFacts>,
}

/// When a restore created the object, if one did (it carries the restore's label).
pub fn restored_at(meta: &kube::api::ObjectMeta) -> Option<Timestamp> {
    meta.labels
        .as_ref()
        .filter(|labels| labels.contains_key(restore::RESTORE_LABEL))
        .and(meta.creation_timestamp.as_ref())
        .map(|created| created.0)
}

fn uid_hash(uid: Option<String>) -> u64 {
    let mut hasher = DefaultHasher::new();
    uid.hash(&mut hasher);
    hasher.finish()
}

impl Index {
    /// What the index keeps of an Order.
    pub fn listed_order(&mut self, order: &Order) -> ListedOrder {
        let snapshot = order
            .status
            .as_ref()
            .and_then(|s| s.customer_level.as_deref())
            .filter(|level| *level != MISSING_CUSTOMER_LEVEL)
            .map(|level| self.level(level));
        let status = order
            .status
            .as_ref()
            .map(|status| SeenStatus::of(status, |level| self.level(level)));
        ListedOrder {
            customer: CustomerKey::of_order(order),
            name: order.name_any(),
            facts: OrderFacts {
                uid: uid_hash(order.uid()),
                quantity: i64::from(order.spec.quantity),
                state: order.spec.state,
                snapshot,
                seen: SeenOrder {
                    uid: order.uid().unwrap_or_default().into(),
                    resource_version: order.resource_version().unwrap_or_default().into(),
                    generation: order.metadata.generation,
                    declared: declared::is_declared(order.meta()),
                    deleting: order.metadata.deletion_timestamp.is_some(),
                    restored_at: restored_at(order.meta()),
                    status,
                },
            },
        }
    }

    /// What the index keeps of a Customer.
    pub fn listed_customer(&mut self, customer: &Customer) -> ListedCustomer {
        let settled = customer
            .status
            .as_ref()
            .and_then(|s| s.settled.as_ref())
            .map(|s| Tally {
                score: s.score,
                completed: s.completed_orders,
                canceled: s.canceled_orders,
                open: 0,
            });
        ListedCustomer {
            key: CustomerKey::of_customer(customer),
            known: KnownCustomer {
                seen: SeenCustomer {
                    uid: customer.uid().unwrap_or_default().into(),
                    resource_version: customer.resource_version().unwrap_or_default().into(),
                    generation: customer.metadata.generation,
                    restored_at: restored_at(customer.meta()),
                    status: customer
                        .status
                        .as_ref()
                        .map(|status| SeenCustomerStatus::of(status, |level| self.level(level))),
                },
                settled,
            },
        }
    }

    fn level(&mut self, name: &str) -> Arc<str> {
        if let Some(level) = self.levels.get(name) {
            return level.clone();
        }
        let level: Arc<str> = Arc::from(name);
        self.levels.insert(level.clone());
        level
    }

    /// Records an added or changed Order. Returns its Customer when what counts changed.
    pub fn apply_order(&mut self, order: &Order) -> Option<ObjectRef<Customer>> {
        let listed = self.listed_order(order);
        let orders = self.orders.entry(listed.customer.clone()).or_default();
        let changed = match orders.entry(listed.name.into()) {
            Entry::Occupied(mut entry) => {
                let known = entry.get_mut();
                let changed = !known.counts_the_same(&listed.facts);
                if known.uid == listed.facts.uid {
                    // The first snapshot seen stays: a later, different one is not the operator's.
                    let snapshot = known.snapshot.take().or(listed.facts.snapshot);
                    **known = OrderFacts {
                        snapshot,
                        ..listed.facts
                    };
                } else {
                    **known = listed.facts;
                }
                changed
            }
            Entry::Vacant(entry) => {
                entry.insert(Box::new(listed.facts));
                true
            }
        };
        changed.then(|| listed.customer.customer_ref())
    }

    /// Forgets a deleted Order. Returns its Customer when the order was counted.
    pub fn delete_order(&mut self, order: &Order) -> Option<ObjectRef<Customer>> {
        let key = CustomerKey::of_order(order);
        let Entry::Occupied(mut orders) = self.orders.entry(key.clone()) else {
            return None;
        };
        let removed = orders.get_mut().remove(order.name_any().as_str()).is_some();
        if orders.get().is_empty() {
            orders.remove();
        }
        removed.then(|| key.customer_ref())
    }

    /// Replaces every Order after a (re-)list. Returns the Customers whose orders count
    /// differently from before, so changes missed while the watch was down are not missed.
    pub fn reset_orders(&mut self, listed: Vec<ListedOrder>) -> Vec<ObjectRef<Customer>> {
        let mut orders: HashMap<CustomerKey, ByName> = HashMap::new();
        for order in listed {
            orders
                .entry(order.customer)
                .or_default()
                .insert(order.name.into(), Box::new(order.facts));
        }
        // Snapshots the index already knew for the same orders stay.
        for (key, by_name) in &mut orders {
            for (name, facts) in by_name.iter_mut() {
                if let Some(known) = self.orders.get(key).and_then(|o| o.get(name))
                    && known.uid == facts.uid
                    && known.snapshot.is_some()
                {
                    facts.snapshot.clone_from(&known.snapshot);
                }
            }
        }
        let old = std::mem::replace(&mut self.orders, orders);
        fn counted(orders: Option<&ByName>) -> Vec<(&str, i64, OrderState)> {
            let mut facts: Vec<(&str, i64, OrderState)> = orders
                .into_iter()
                .flatten()
                .map(|(name, f)| (&**name, f.quantity, f.state))
                .collect();
            facts.sort_unstable();
            facts
        }
        let keys: HashSet<&CustomerKey> = old.keys().chain(self.orders.keys()).collect();
        keys.into_iter()
            .filter(|key| counted(old.get(*key)) != counted(self.orders.get(*key)))
            .map(CustomerKey::customer_ref)
            .collect()
    }

    /// Records an added or changed Customer. Returns its Orders when the customer is new.
    pub fn apply_customer(&mut self, customer: &Customer) -> Vec<OrderKey> {
        let ListedCustomer { key, known } = self.listed_customer(customer);
        let is_new = self
            .customers
            .get(&key)
            .is_none_or(|k| k.seen.uid != known.seen.uid);
        let orders = if is_new {
            self.order_refs(&key)
        } else {
            Vec::new()
        };
        self.customers.insert(key, known);
        orders
    }

    /// Forgets a deleted Customer. Returns its Orders, which lose their customer.
    pub fn delete_customer(&mut self, customer: &Customer) -> Vec<OrderKey> {
        let key = CustomerKey::of_customer(customer);
        match self.customers.remove(&key) {
            Some(_) => self.order_refs(&key),
            None => Vec::new(),
        }
    }

    /// Replaces every Customer after a (re-)list. Returns the Orders whose customer appeared,
    /// disappeared or was replaced.
    pub fn reset_customers(&mut self, listed: Vec<ListedCustomer>) -> Vec<OrderKey> {
        let customers: HashMap<CustomerKey, KnownCustomer> =
            listed.into_iter().map(|c| (c.key, c.known)).collect();
        let old = std::mem::replace(&mut self.customers, customers);
        let keys: HashSet<&CustomerKey> = old.keys().chain(self.customers.keys()).collect();
        fn uid<'a>(
            customers: &'a HashMap<CustomerKey, KnownCustomer>,
            key: &CustomerKey,
        ) -> Option<&'a str> {
            customers.get(key).map(|k| &*k.seen.uid)
        }
        keys.into_iter()
            .filter(|key| uid(&old, key) != uid(&self.customers, key))
            .flat_map(|key| self.order_refs(key))
            .collect()
    }

    /// What the index keeps of a Ledger.
    pub fn listed_ledger(ledger: &Ledger) -> ListedLedger {
        ListedLedger {
            key: CustomerKey::new(ledger.namespace().unwrap_or_default(), ledger.name_any()),
            facts: LedgerFacts {
                settled: Tally::settled_in(&ledger.spec),
                absorbed: ledger
                    .spec
                    .absorbed
                    .iter()
                    .map(|a| {
                        let uid = uid_hash(Some(a.uid.clone()));
                        (a.name.clone(), uid, a.state, a.quantity)
                    })
                    .collect(),
                resource_version: ledger.resource_version().unwrap_or_default(),
            },
        }
    }

    /// Records an added or changed Ledger. Returns its Customer when what counts changed.
    pub fn apply_ledger(&mut self, ledger: &Ledger) -> Option<ObjectRef<Customer>> {
        let ListedLedger { key, facts } = Self::listed_ledger(ledger);
        let changed = self.ledgers.get(&key) != Some(&facts);
        self.ledgers.insert(key.clone(), facts);
        changed.then(|| key.customer_ref())
    }

    /// Forgets a deleted Ledger. Returns its Customer.
    pub fn delete_ledger(&mut self, ledger: &Ledger) -> Option<ObjectRef<Customer>> {
        let key = CustomerKey::new(ledger.namespace().unwrap_or_default(), ledger.name_any());
        self.ledgers.remove(&key).map(|_| key.customer_ref())
    }

    /// Replaces every Ledger after a (re-)list. Returns the Customers whose ledger changed.
    pub fn reset_ledgers(&mut self, listed: Vec<ListedLedger>) -> Vec<ObjectRef<Customer>> {
        let ledgers: HashMap<CustomerKey, LedgerFacts> =
            listed.into_iter().map(|l| (l.key, l.facts)).collect();
        let old = std::mem::replace(&mut self.ledgers, ledgers);
        let keys: HashSet<&CustomerKey> = old.keys().chain(self.ledgers.keys()).collect();
        keys.into_iter()
            .filter(|key| old.get(*key) != self.ledgers.get(*key))
            .map(CustomerKey::customer_ref)
            .collect()
    }

    /// The ledger of one customer, if it has one.
    pub fn ledger_of(&self, key: &CustomerKey) -> Option<&LedgerFacts> {
        self.ledgers.get(key)
    }

    /// Whether the index still holds the order `name` with this `uid` for the customer `key`.
    pub fn holds_order(&self, key: &CustomerKey, name: &str, uid: &str) -> bool {
        self.holds(key, name, uid_hash(Some(uid.to_owned())))
    }

    fn holds(&self, key: &CustomerKey, name: &str, uid: u64) -> bool {
        self.orders
            .get(key)
            .and_then(|orders| orders.get(name))
            .is_some_and(|facts| facts.uid == uid)
    }

    /// Whether the order with these `facts` is counted in the ledger of its customer `key`
    /// already (on its way out).
    pub fn is_absorbed(&self, key: &CustomerKey, facts: &OrderFacts) -> bool {
        self.ledgers.get(key).is_some_and(|l| l.absorbs(facts.uid))
    }

    pub fn has_customer(&self, key: &CustomerKey) -> bool {
        self.customers.contains_key(key)
    }

    /// One customer, if the index holds it.
    pub fn customer(&self, key: &CustomerKey) -> Option<&SeenCustomer> {
        self.customers.get(key).map(|known| &known.seen)
    }

    /// Every customer.
    pub fn customers(&self) -> impl Iterator<Item = (&CustomerKey, &SeenCustomer)> {
        self.customers.iter().map(|(key, known)| (key, &known.seen))
    }

    /// The customers that have orders (members or not).
    pub fn customers_with_orders(&self) -> impl Iterator<Item = &CustomerKey> {
        self.orders.keys()
    }

    /// The orders of one customer, by name.
    pub fn orders_of(&self, key: &CustomerKey) -> impl Iterator<Item = (&str, &OrderFacts)> {
        self.orders
            .get(key)
            .into_iter()
            .flat_map(|orders| orders.iter().map(|(name, facts)| (&**name, &**facts)))
    }

    /// The tally of one customer, leaving out the order named `without` if any: the orders its
    /// ledger settled for good, its live orders as they are now, and the orders absorbed in the
    /// ledger that are gone already, as the ledger counted them. An absorbed order that still
    /// exists counts as it is now (had it changed since, its deletion will be refused and the
    /// ledger will give it back), so a settlement never changes a score, at any step.
    pub fn tally_of(&self, key: &CustomerKey, without: Option<&str>) -> Tally {
        let live = Tally::of(
            self.orders_of(key)
                .filter(|(name, _)| Some(*name) != without)
                .map(|(_, facts)| (facts.state, facts.quantity)),
        );
        match self.ledgers.get(key) {
            Some(ledger) => self.ledger_part(key, ledger, without).plus(live),
            None => match self.settled_history_missing(key) {
                Some(last_seen) => live.plus(last_seen),
                None => live,
            },
        }
    }

    /// What the customer's Ledger adds to its tally: its settled orders, less those absorbed
    /// that still exist (they count as they are now). None without a Ledger.
    pub fn settled_of(&self, key: &CustomerKey) -> Option<Tally> {
        let ledger = self.ledgers.get(key)?;
        Some(self.ledger_part(key, ledger, None))
    }

    /// The one accounting rule of a Ledger: what it settled, less every order absorbed in it,
    /// plus those absorbed that are gone already (as the Ledger counted them), leaving out the
    /// order named `without` if any. An absorbed order that still exists counts with the live
    /// orders instead, as it is now.
    fn ledger_part(&self, key: &CustomerKey, ledger: &LedgerFacts, without: Option<&str>) -> Tally {
        let counted =
            |(_, _, state, quantity): &(String, u64, OrderState, i64)| (*state, *quantity);
        let gone = ledger.absorbed.iter().filter(|(name, uid, ..)| {
            Some(name.as_str()) != without && !self.holds(key, name, *uid)
        });
        ledger
            .settled
            .minus(Tally::of(ledger.absorbed.iter().map(counted)))
            .plus(Tally::of(gone.map(counted)))
    }

    /// The settled history the customer's status last showed, when its Ledger is missing: it
    /// counts in the meantime (the Ledger has not been restored, or was deleted by hand).
    pub fn settled_history_missing(&self, key: &CustomerKey) -> Option<Tally> {
        if self.ledgers.contains_key(key) {
            return None;
        }
        self.customers
            .get(key)?
            .settled
            .filter(|settled| *settled != Tally::default())
    }

    /// One order, if the index holds it.
    pub fn order(&self, key: &OrderKey) -> Option<&OrderFacts> {
        self.orders
            .get(&key.customer)?
            .get(key.name.as_str())
            .map(|facts| &**facts)
    }

    /// Every order, with its customer.
    pub fn all_orders(&self) -> impl Iterator<Item = (&CustomerKey, &str, &OrderFacts)> {
        self.orders.iter().flat_map(|(key, orders)| {
            orders
                .iter()
                .map(move |(name, facts)| (key, &**name, &**facts))
        })
    }

    pub fn customer_count(&self) -> usize {
        self.customers.len()
    }

    pub fn order_count(&self) -> usize {
        self.orders.values().map(HashMap::len).sum()
    }

    fn order_refs(&self, key: &CustomerKey) -> Vec<OrderKey> {
        self.orders_of(key)
            .map(|(name, _)| key.order_key(name))
            .collect()
    }
}

#[cfg(test)]
mod tests;
