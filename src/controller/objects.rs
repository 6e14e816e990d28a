//! What the operator keeps per object of a reconciled kind, in one table: the status write
//! whose watch event has not arrived yet (see the status writer), the failures in a row (the
//! backoff) and the write budget (the pacer's bucket). An entry that holds
//! nothing is dropped; a deleted object's entry is forgotten in one call.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard},
};

use kube::{Resource, runtime::reflector::ObjectRef};

use super::pacer::Bucket;

/// A status write whose watch event has not arrived yet, with the writes before it whose
/// events have not arrived either.
pub struct Written<S> {
    /// The versions the object went through since the one the cache may still show, oldest
    /// first: the version the first of these writes was conditional on, then the version each
    /// later one was conditional on (each produced by the write before it). A cache at any of
    /// them is only behind this process's own writes.
    pub since: Vec<String>,
    /// The resourceVersion the last write produced.
    pub produced: String,
    pub status: S,
}

/// One object's entry.
pub struct Entry<S> {
    pub written: Option<Box<Written<S>>>,
    /// Reconciles that failed in a row.
    pub failures: u32,
    pub bucket: Option<Bucket>,
}

impl<S> Default for Entry<S> {
    fn default() -> Self {
        Self {
            written: None,
            failures: 0,
            bucket: None,
        }
    }
}

impl<S> Entry<S> {
    fn is_empty(&self) -> bool {
        self.written.is_none() && self.failures == 0 && self.bucket.is_none()
    }
}

pub struct Objects<K: Resource, S> {
    table: Mutex<HashMap<ObjectRef<K>, Entry<S>>>,
}

impl<K: Resource, S> Default for Objects<K, S> {
    fn default() -> Self {
        Self {
            table: Mutex::default(),
        }
    }
}

impl<K: Resource<DynamicType = ()>, S> Objects<K, S> {
    fn table(&self) -> MutexGuard<'_, HashMap<ObjectRef<K>, Entry<S>>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `change` on `key`'s entry (an empty one if it has none); an entry left empty is
    /// dropped.
    pub fn with<R>(&self, key: &ObjectRef<K>, change: impl FnOnce(&mut Entry<S>) -> R) -> R {
        let mut table = self.table();
        if let Some(entry) = table.get_mut(key) {
            let result = change(entry);
            if entry.is_empty() {
                table.remove(key);
                shrink_if_empty(&mut table);
            }
            return result;
        }
        let mut entry = Entry::default();
        let result = change(&mut entry);
        if !entry.is_empty() {
            table.insert(key.clone(), entry);
        }
        result
    }

    /// Runs `change` on `key`'s entry if it has one; an entry left empty is dropped.
    pub fn with_existing<R>(
        &self,
        key: &ObjectRef<K>,
        change: impl FnOnce(&mut Entry<S>) -> R,
    ) -> Option<R> {
        let mut table = self.table();
        let entry = table.get_mut(key)?;
        let result = change(entry);
        if entry.is_empty() {
            table.remove(key);
            shrink_if_empty(&mut table);
        }
        Some(result)
    }

    /// Forgets everything about a deleted object.
    pub fn forget(&self, key: &ObjectRef<K>) {
        let mut table = self.table();
        if table.remove(key).is_some() {
            shrink_if_empty(&mut table);
        }
    }

    /// Forgets every write whose watch event has not arrived (a list starts: it shows what is).
    pub fn forget_writes(&self) {
        let mut table = self.table();
        table.retain(|_, entry| {
            entry.written = None;
            !entry.is_empty()
        });
        shrink_if_empty(&mut table);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.table().len()
    }
}

/// A burst leaves a big, empty table behind; give the memory back.
fn shrink_if_empty<T: Eq + std::hash::Hash, V>(table: &mut HashMap<T, V>) {
    if table.is_empty() {
        table.shrink_to(64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{Customer, CustomerStatus};

    fn key(name: &str) -> ObjectRef<Customer> {
        ObjectRef::new(name).within("ns")
    }

    #[test]
    fn an_entry_lives_while_it_holds_something_and_one_forget_drops_it_all() {
        let objects = Objects::<Customer, CustomerStatus>::default();
        objects.with(&key("a"), |_| ());
        assert_eq!(objects.len(), 0, "an empty entry is not kept");
        objects.with(&key("a"), |e| e.failures = 2);
        objects.with(&key("a"), |e| {
            e.written = Some(Box::new(Written {
                since: vec!["1".into()],
                produced: "2".into(),
                status: CustomerStatus::default(),
            }))
        });
        objects.with(&key("b"), |e| e.failures = 1);
        assert_eq!(objects.len(), 2);
        objects.forget_writes();
        assert_eq!(objects.with_existing(&key("a"), |e| e.failures), Some(2));
        objects.with_existing(&key("b"), |e| e.failures = 0);
        assert_eq!(objects.len(), 1, "b holds nothing now");
        objects.forget(&key("a"));
        assert_eq!(objects.len(), 0);
        assert_eq!(objects.with_existing(&key("a"), |e| e.failures), None);
    }
}
