//! Group membership changes as set operations, so that concurrent PATCHes to one group
//! lose no member (issue 3).
//!
//! A PATCH never yields a new member *list* computed from a list the handler read
//! earlier (two such read-modify-writes racing would drop one side's members). It yields
//! a [`GroupMembershipDelta`] that the storage applies inside one transaction:
//!
//! ```text
//! if let Some(ids) = replace_all { DELETE all memberships of the group; INSERT ids }
//! DELETE memberships WHERE member_id IN remove
//! INSERT add ON CONFLICT DO NOTHING
//! bump the group's version / lastModified
//! ```
//!
//! Adds and removes of different ids commute, so two concurrent PATCHes each adding a
//! member both land whatever the interleaving; only `replace_all` (a PUT, or a PATCH
//! `replace`/`remove` of the whole `members` attribute) is last-writer-wins, which is
//! what replacing a whole attribute means.

use std::collections::{HashMap, HashSet};

/// The `display` a client sent with a member (RFC 7643 §2.4: a member's `display` is
/// immutable, so it is kept as sent), by member id; a member without one shows its own
/// `displayName` (else `userName`).
pub type MemberDisplays = std::collections::BTreeMap<String, String>;

/// The membership change of one PATCH (or PUT) to a Group: a PATCH's is made by
/// [`MembershipEdits`], a PUT's by `replacing`.
///
/// Invariants: `add` and `remove` are disjoint and free of duplicates; when `replace_all`
/// is set both are empty (the replacement already accounts for every later add and remove
/// of the same request).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupMembershipDelta {
    /// Set the membership to exactly these ids (first).
    pub replace_all: Option<Vec<String>>,
    /// Then delete these memberships (absent ones are ignored).
    pub remove: Vec<String>,
    /// The `display` sent with added members (those of `replace_all` and `add`).
    pub displays: MemberDisplays,
    /// Then insert these (present ones are ignored).
    pub add: Vec<String>,
}

impl GroupMembershipDelta {
    /// No membership change.
    pub fn is_empty(&self) -> bool {
        self.replace_all.is_none() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Every id that will be a member afterwards because of this delta: the caller
    /// checks each exists in the workspace (400 `invalidValue` otherwise).
    pub fn added_ids(&self) -> impl Iterator<Item = &str> {
        self.replace_all
            .iter()
            .flatten()
            .chain(self.add.iter())
            .map(String::as_str)
    }

    /// A PUT's membership: exactly `ids` (each once, first occurrence kept), with the
    /// `display`s sent.
    pub fn replacing<S: AsRef<str>>(ids: &[S], displays: MemberDisplays) -> Self {
        let mut all = Vec::new();
        DistinctIds::new(&mut all).extend(ids.iter().map(AsRef::as_ref));
        GroupMembershipDelta {
            replace_all: Some(all),
            displays,
            ..Default::default()
        }
    }

    /// The membership after applying the delta to `current` (what the storage's
    /// transaction computes; also a test oracle).
    pub fn apply_to(&self, current: &[String]) -> Vec<String> {
        let mut out: Vec<String> = match &self.replace_all {
            Some(all) => all.clone(),
            None => current.to_vec(),
        };
        let gone: HashSet<&str> = self.remove.iter().map(String::as_str).collect();
        out.retain(|m| !gone.contains(m.as_str()));
        DistinctIds::new(&mut out).extend(self.add.iter().map(String::as_str));
        out
    }
}

/// The membership operations of one PATCH, as they come, made into a
/// [`GroupMembershipDelta`] at the end (`delta`). Each id an operation names costs O(1),
/// whatever came before: a client that sends one operation per member (16,000 of them fit
/// in the 1 MiB body) made the lists be rescanned per operation, 13 s for one PATCH.
#[derive(Debug, Default)]
pub struct MembershipEdits {
    /// Set by a replacement of the whole membership; later adds and removes edit it.
    replace_all: Option<OrderedIds>,
    remove: OrderedIds,
    add: OrderedIds,
    displays: MemberDisplays,
}

impl MembershipEdits {
    /// Records the `display` sent with members being added.
    pub fn note_displays(&mut self, displays: MemberDisplays) {
        self.displays.extend(displays);
    }

    /// Applies a later `add` of `ids` in the same request.
    pub fn add<S: AsRef<str>>(&mut self, ids: &[S]) {
        for id in ids.iter().map(AsRef::as_ref) {
            match &mut self.replace_all {
                Some(all) => all.insert(id),
                None => {
                    self.remove.take(id);
                    self.add.insert(id);
                }
            }
        }
    }

    /// Applies a later `remove` of `ids` in the same request.
    pub fn remove<S: AsRef<str>>(&mut self, ids: &[S]) {
        for id in ids.iter().map(AsRef::as_ref) {
            match &mut self.replace_all {
                Some(all) => all.take(id),
                None => {
                    self.add.take(id);
                    self.remove.insert(id);
                }
            }
        }
    }

    /// Applies a later replacement of the whole membership by `ids`.
    pub fn replace<S: AsRef<str>>(&mut self, ids: &[S]) {
        let mut all = OrderedIds::default();
        for id in ids {
            all.insert(id.as_ref());
        }
        self.replace_all = Some(all);
        self.add = OrderedIds::default();
        self.remove = OrderedIds::default();
    }

    /// The change so far. Invariants: `add` and `remove` are disjoint and free of duplicates;
    /// when `replace_all` is set both are empty (the replacement already accounts for every
    /// later add and remove of the same request).
    pub fn delta(&self) -> GroupMembershipDelta {
        GroupMembershipDelta {
            replace_all: self.replace_all.as_ref().map(OrderedIds::to_vec),
            remove: self.remove.to_vec(),
            displays: self.displays.clone(),
            add: self.add.to_vec(),
        }
    }
}

/// Ids in the order they joined, each once; one that leaves and joins again is last. A join,
/// a leave and a lookup are each O(1): a leave leaves a hole in `list`, skipped at the end.
#[derive(Debug, Default)]
struct OrderedIds {
    list: Vec<Option<String>>,
    at: HashMap<String, usize>,
}

impl OrderedIds {
    fn insert(&mut self, id: &str) {
        if !self.at.contains_key(id) {
            self.at.insert(id.to_owned(), self.list.len());
            self.list.push(Some(id.to_owned()));
        }
    }

    fn take(&mut self, id: &str) {
        if let Some(i) = self.at.remove(id) {
            self.list[i] = None;
        }
    }

    fn to_vec(&self) -> Vec<String> {
        self.list.iter().flatten().cloned().collect()
    }
}

/// A list of member ids that an id joins only once, first occurrence kept, in order.
///
/// The set beside the list makes each push O(1): a PUT or PATCH may carry ~20,000 members
/// (the 1 MiB body cap), and a scan of the list per member would cost ~2×10^8
/// comparisons, partly while the single SQLite writer is held. Ids compare exactly, as
/// the stored `member_id` does.
pub(super) struct DistinctIds<'l> {
    list: &'l mut Vec<String>,
    seen: HashSet<String>,
}

impl<'l> DistinctIds<'l> {
    /// Starts from `list` as it is (its ids count as seen).
    pub(super) fn new(list: &'l mut Vec<String>) -> Self {
        let seen = list.iter().cloned().collect();
        DistinctIds { list, seen }
    }

    /// Appends `id` unless the list already holds it.
    pub(super) fn push(&mut self, id: &str) {
        if !self.seen.contains(id) {
            self.seen.insert(id.to_owned());
            self.list.push(id.to_owned());
        }
    }

    fn extend<'i>(mut self, ids: impl Iterator<Item = &'i str>) {
        for id in ids {
            self.push(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn add_then_remove_cancels() {
        let mut d = MembershipEdits::default();
        d.add(&["a", "b"]);
        d.remove(&["a"]);
        assert_eq!(d.delta().add, ids(&["b"]));
        assert_eq!(d.delta().remove, ids(&["a"]));
        assert_eq!(d.delta().apply_to(&ids(&["a", "c"])), ids(&["c", "b"]));
    }

    #[test]
    fn remove_then_add_re_adds() {
        let mut d = MembershipEdits::default();
        d.remove(&["a"]);
        d.add(&["a"]);
        assert!(d.delta().remove.is_empty());
        assert_eq!(d.delta().add, ids(&["a"]));
        assert_eq!(d.delta().apply_to(&ids(&["a"])), ids(&["a"]));
    }

    #[test]
    fn replace_absorbs_later_ops() {
        let mut d = MembershipEdits::default();
        d.add(&["x"]);
        d.replace(&["a", "b", "a"]);
        d.add(&["c"]);
        d.remove(&["b"]);
        assert_eq!(d.delta().replace_all, Some(ids(&["a", "c"])));
        assert!(d.delta().add.is_empty() && d.delta().remove.is_empty());
        assert_eq!(d.delta().apply_to(&ids(&["z"])), ids(&["a", "c"]));
        assert_eq!(d.delta().added_ids().collect::<Vec<_>>(), vec!["a", "c"]);
    }

    #[test]
    fn concurrent_deltas_commute() {
        // Two PATCHes computed from the same stale read, applied in either order.
        let mut p1 = MembershipEdits::default();
        p1.add(&["u1"]);
        let mut p2 = MembershipEdits::default();
        p2.add(&["u2"]);
        p2.remove(&["u0"]);
        let start = ids(&["u0", "u9"]);
        let mut a = p2.delta().apply_to(&p1.delta().apply_to(&start));
        let mut b = p1.delta().apply_to(&p2.delta().apply_to(&start));
        a.sort();
        b.sort();
        assert_eq!(a, ids(&["u1", "u2", "u9"]));
        assert_eq!(a, b);
    }

    #[test]
    fn duplicates_within_one_call() {
        let mut d = MembershipEdits::default();
        d.remove(&["a", "b", "a"]);
        d.add(&["c", "b", "c", "d"]);
        assert_eq!(d.delta().remove, ids(&["a"]));
        assert_eq!(d.delta().add, ids(&["c", "b", "d"]));
        d.remove(&["c", "c"]);
        assert_eq!(d.delta().add, ids(&["b", "d"]));
        assert_eq!(d.delta().remove, ids(&["a", "c"]));
        assert_eq!(
            d.delta().apply_to(&ids(&["d", "a", "e", "e"])),
            ids(&["d", "e", "e", "b"])
        );
    }

    #[test]
    fn empty() {
        let mut d = MembershipEdits::default();
        assert!(d.delta().is_empty());
        d.replace::<&str>(&[]);
        assert!(
            !d.delta().is_empty(),
            "replacing with nothing removes every member"
        );
        assert_eq!(d.delta().apply_to(&ids(&["a"])), Vec::<String>::new());
    }
}
