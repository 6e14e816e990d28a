//! Whether what the index holds is one moment of the store, and whether the store went back in
//! time.
//!
//! Three watches (customers, orders, ledgers) feed the index. When one of them is told its
//! version expired (410), or lists everything again unasked, the store may have moved to another
//! timeline (after an etcd restore with `--bump-revision --mark-compacted`, as etcd recommends,
//! every version expires), and what the index holds, of that kind and the others, may no longer
//! be the store: a decision on it (a Ledger absorbing an order the store no longer has, say)
//! would be wrong even though every write is conditional on the version of the object it
//! writes. So every watch lists again, and nothing is written (no status, no Ledger, no
//! deletion) until all have.
//!
//! Restored without the bump, the store's versions go back, and a watch that resumes at the
//! version it had reached waits for a store that has not reached it yet: it sees nothing, and
//! hears no 410 (kube-apiserver answers 504, "Too large resource version", again and again). So
//! the operator looks: every few seconds one LIST of one item per kind returns the store's
//! current resourceVersion, and a version lower than the newest the watch has reached means the
//! store went back; then every watch lists again. What the watch has reached is the newest
//! object it showed, or, once it fails so, the version it asked to resume from: a bookmark or
//! a list may have taken it far beyond any object of its kind. (Kubernetes 1.35 and
//! later make resourceVersions of one resource comparable, KEP-5504; where a version is not a
//! number, nothing is compared.)

use std::{
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::Notify;

use super::readiness::Watched;

/// How often the store's current version is read.
pub const PERIOD: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct Freshness {
    /// Per watched kind: the newest resourceVersion its watch has shown (0: none yet).
    seen: [AtomicU64; 3],
    /// Per watched kind: the newest current version a probe of the store has read. Each probe
    /// is a consistent read sent after the one before was answered, so the store's answers can
    /// only grow; one below an earlier one is a store that went back, even when no watch has
    /// shown anything newer (a watch resumes from a bookmark's version, above every object).
    probed: [AtomicU64; 3],
    /// Per watched kind: tells its watch to list everything again.
    relist: [Notify; 3],
    /// Tells the probe a watch has listed: its version then is the one to hold the store to.
    probe: Notify,
    /// Counts the times the store was found to have moved to another timeline, for the watches
    /// outside the index (the Lease's), which must start again too.
    moved: tokio::sync::watch::Sender<u64>,
    lists: Mutex<Lists>,
}

#[derive(Default)]
struct Lists {
    /// Per watched kind: it has listed once.
    listed: [bool; 3],
    /// Per watched kind: it must list again before the index shows one moment of the store.
    pending: [bool; 3],
    /// Per watched kind: its watch failed, and nothing has shown since that the store it comes
    /// back to is the one it left.
    unverified: [bool; 3],
}

impl Freshness {
    /// The watch of `kind` showed an object at `version`.
    pub fn saw(&self, kind: Watched, version: &str) {
        if let Ok(version) = version.parse::<u64>() {
            self.seen[kind as usize].fetch_max(version, Ordering::Relaxed);
        }
    }

    /// The watch of `kind` had reached `version`, though it showed no object at it (a bookmark,
    /// or the end of a list, told it).
    pub fn reached(&self, kind: Watched, version: u64) {
        self.seen[kind as usize].fetch_max(version, Ordering::Relaxed);
    }

    /// The newest version the watch of `kind` has shown: what a probe of the store's current
    /// version, sent now, must not answer below.
    pub fn seen(&self, kind: Watched) -> u64 {
        self.seen[kind as usize].load(Ordering::Relaxed)
    }

    /// The store's current version for `kind` is `current`, as read by a request sent when the
    /// watch had shown `seen_before` ([`seen`](Self::seen)): if that is newer, or an earlier probe
    /// read a newer one, the store went back; returns the version it went back from and has
    /// every watch list again. Only what was seen before the request counts: under load the
    /// answer can arrive after watch events newer than it (the store moved on meanwhile, it did
    /// not go back).
    pub fn check(&self, kind: Watched, current: &str, seen_before: u64) -> Option<u64> {
        let current = current.parse::<u64>().ok()?;
        // A list started meanwhile counts from what it shows.
        let seen = seen_before.min(self.seen(kind));
        let probed = self.probed[kind as usize].fetch_max(current, Ordering::Relaxed);
        let reached = seen.max(probed);
        if current >= reached {
            return None;
        }
        self.relist_all(None);
        Some(reached)
    }

    /// The watch of `kind` starts a list. A list nobody asked for (after a watch's version
    /// expired: the store may have been restored with its versions bumped) has every other
    /// watch list again too: until all have, the index may mix two moments of the store.
    /// Returns whether it did.
    pub fn list_starts(&self, kind: Watched) -> bool {
        let lists = self.lists();
        let unexpected = lists.listed[kind as usize] && !lists.pending[kind as usize];
        drop(lists);
        if unexpected {
            self.relist_all(Some(kind));
        }
        unexpected
    }

    /// The watch of `kind` was told its version expired (410): it will list everything again,
    /// and from now on what the index holds of it may be from another moment of the store than
    /// the rest (after an etcd restore with bumped versions, the store has moved on). Every
    /// other watch lists again too, and nothing is written until all have.
    pub fn expired(&self, kind: Watched) {
        self.relist_all(Some(kind));
    }

    /// The watch of `kind` failed: until it shows an event, lists again, or the store is seen
    /// to still hold the version it had reached, nothing is written (the store it comes back to
    /// may have been restored meanwhile).
    pub fn watch_failed(&self, kind: Watched) {
        self.lists().unverified[kind as usize] = true;
    }

    /// The watch of `kind` delivers again, or the store still holds the version it had
    /// reached: it follows the same store as before.
    pub fn resumed(&self, kind: Watched) {
        self.lists().unverified[kind as usize] = false;
    }

    /// The kinds whose watch failed and has not resumed, with the newest version each showed.
    pub fn unverified(&self) -> Vec<(Watched, u64)> {
        let lists = self.lists();
        Watched::ALL
            .into_iter()
            .filter(|kind| lists.unverified[*kind as usize])
            .map(|kind| (kind, self.seen[kind as usize].load(Ordering::Relaxed)))
            .collect()
    }

    /// The watch of `kind` has listed everything (and resumes from the list's version, above
    /// every object it showed): the store is probed at once, so a restore that takes it below
    /// that version is noticed however soon it comes.
    pub fn listed(&self, kind: Watched) {
        let mut lists = self.lists();
        lists.listed[kind as usize] = true;
        lists.pending[kind as usize] = false;
        lists.unverified[kind as usize] = false;
        self.probe.notify_one();
    }

    /// Changes whenever the store is found to have moved to another timeline: every watch of
    /// it, the index's and any other, must start again from a list.
    pub fn store_moved(&self) -> tokio::sync::watch::Receiver<u64> {
        self.moved.subscribe()
    }

    /// Resolves when a watch has listed since the last probe.
    pub async fn probe_due(&self) {
        self.probe.notified().await;
    }

    /// Whether every watch has listed since the last time one had to list again, and none has
    /// failed without resuming since: what the index holds is then one moment of the store, and
    /// may be acted on.
    pub fn consistent(&self) -> bool {
        let lists = self.lists();
        !lists
            .pending
            .iter()
            .chain(&lists.unverified)
            .any(|flag| *flag)
    }

    /// The store no longer holds the version the watch of `kind` had reached (compacted away
    /// after a restore with bumped versions, or never reached after one without): every watch
    /// lists again.
    pub fn lost_history(&self, kind: Watched) {
        self.relist_all(None);
        self.resumed(kind);
    }

    /// Resolves when the watch of `kind` must list everything again.
    pub async fn relist(&self, kind: Watched) {
        self.relist[kind as usize].notified().await;
    }

    /// Every watch lists again (but `listing`, which does already).
    fn relist_all(&self, listing: Option<Watched>) {
        let mut lists = self.lists();
        for kind in Watched::ALL {
            lists.pending[kind as usize] = true;
            self.seen[kind as usize].store(0, Ordering::Relaxed);
            self.probed[kind as usize].store(0, Ordering::Relaxed);
            if Some(kind) != listing {
                self.relist[kind as usize].notify_one();
            }
        }
        drop(lists);
        self.moved.send_modify(|times| *times += 1);
    }

    fn lists(&self) -> std::sync::MutexGuard<'_, Lists> {
        self.lists.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    fn listed_once() -> Freshness {
        let freshness = Freshness::default();
        for kind in Watched::ALL {
            freshness.list_starts(kind);
            freshness.listed(kind);
        }
        freshness
    }

    fn asked_to_relist(freshness: &Freshness) -> Vec<Watched> {
        Watched::ALL
            .into_iter()
            .filter(|kind| freshness.relist(*kind).now_or_never().is_some())
            .collect()
    }

    #[test]
    fn a_store_behind_what_the_watch_showed_went_back_and_every_watch_lists_again() {
        let freshness = listed_once();
        assert!(freshness.consistent());
        freshness.saw(Watched::Orders, "4057");
        freshness.saw(Watched::Orders, "3999");
        let seen = freshness.seen(Watched::Orders);
        assert_eq!(freshness.check(Watched::Orders, "4057", seen), None);
        // Sent at 4057, answered at 4100 after the watch showed 4200: the store moved on.
        let before = freshness.seen(Watched::Orders);
        freshness.saw(Watched::Orders, "4200");
        assert_eq!(freshness.check(Watched::Orders, "4100", before), None);
        assert_eq!(
            asked_to_relist(&freshness),
            [],
            "an answer overtaken is no going back"
        );
        let seen = freshness.seen(Watched::Orders);
        assert_eq!(
            freshness.check(Watched::Orders, "5000", seen),
            None,
            "moved on"
        );
        assert_eq!(freshness.check(Watched::Orders, "1943", seen), Some(5000));
        assert_eq!(asked_to_relist(&freshness), Watched::ALL);
        assert!(!freshness.consistent());
        // Forgotten: what the new lists show counts from here.
        let seen = freshness.seen(Watched::Orders);
        assert_eq!(freshness.check(Watched::Orders, "1943", seen), None);
        for kind in Watched::ALL {
            freshness.list_starts(kind);
            assert_eq!(
                asked_to_relist(&freshness),
                [],
                "an expected list asks nothing"
            );
            freshness.listed(kind);
        }
        assert!(freshness.consistent());
        // Versions that are not numbers are not compared.
        freshness.saw(Watched::Ledgers, "abc");
        assert_eq!(freshness.check(Watched::Ledgers, "xyz", 0), None);
    }

    #[test]
    fn a_store_behind_an_earlier_probe_went_back_though_no_watch_showed_anything_newer() {
        let freshness = listed_once();
        // The watch showed objects up to 1850, and then resumed from a bookmark at 3861.
        freshness.saw(Watched::Orders, "1850");
        let seen = freshness.seen(Watched::Orders);
        assert_eq!(freshness.check(Watched::Orders, "3861", seen), None);
        assert_eq!(freshness.check(Watched::Orders, "3870", seen), None);
        // Put back to 1907, and changed since: still below what the store said before.
        assert_eq!(freshness.check(Watched::Orders, "1950", seen), Some(3870));
        assert_eq!(asked_to_relist(&freshness), Watched::ALL);
        assert!(!freshness.consistent());
        // What the probes read before the restore no longer counts.
        assert_eq!(freshness.check(Watched::Orders, "1951", 0), None);
    }

    #[test]
    fn a_failed_watch_holds_writes_until_it_resumes_or_the_store_is_found_changed() {
        let freshness = listed_once();
        freshness.saw(Watched::Ledgers, "90");
        freshness.watch_failed(Watched::Ledgers);
        assert!(!freshness.consistent());
        assert_eq!(freshness.unverified(), [(Watched::Ledgers, 90)]);
        freshness.resumed(Watched::Ledgers);
        assert!(freshness.consistent());
        assert_eq!(asked_to_relist(&freshness), []);
        // The store does not hold version 90 any more: every watch lists again.
        freshness.watch_failed(Watched::Ledgers);
        freshness.lost_history(Watched::Ledgers);
        assert_eq!(freshness.unverified(), []);
        assert!(!freshness.consistent());
        assert_eq!(asked_to_relist(&freshness), Watched::ALL);
    }

    #[test]
    fn an_expired_watch_has_every_watch_list_again_before_anything_is_written() {
        let freshness = listed_once();
        freshness.expired(Watched::Orders);
        assert!(!freshness.consistent());
        assert_eq!(
            asked_to_relist(&freshness),
            [Watched::Customers, Watched::Ledgers],
            "the expired watch lists again by itself"
        );
        for kind in Watched::ALL {
            assert!(!freshness.list_starts(kind), "every list is expected now");
            freshness.listed(kind);
        }
        assert!(freshness.consistent());
    }

    #[test]
    fn a_list_nobody_asked_for_has_the_other_watches_list_again() {
        let freshness = Freshness::default();
        freshness.list_starts(Watched::Orders);
        assert_eq!(
            asked_to_relist(&freshness),
            [],
            "the first list is expected"
        );
        freshness.listed(Watched::Orders);
        let freshness = listed_once();
        freshness.list_starts(Watched::Ledgers);
        assert_eq!(
            asked_to_relist(&freshness),
            [Watched::Customers, Watched::Orders]
        );
        assert!(!freshness.consistent());
        freshness.listed(Watched::Ledgers);
        assert!(!freshness.consistent(), "the others have not listed yet");
        for kind in [Watched::Customers, Watched::Orders] {
            freshness.list_starts(kind);
            freshness.listed(kind);
        }
        assert!(freshness.consistent());
        assert_eq!(asked_to_relist(&freshness), []);
    }
}
