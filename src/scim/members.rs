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

use std::collections::HashSet;

/// The `display` a client sent with a member (RFC 7643 §2.4: a member's `display` is
/// immutable, so it is kept as sent), by member id; a member without one shows its own
/// `displayName` (else `userName`).
pub type MemberDisplays = std::collections::BTreeMap<String, String>;

/// The membership change of one PATCH (or PUT) to a Group.
///
/// Invariants kept by the methods: `add` and `remove` are disjoint and free of
/// duplicates; when `replace_all` is set both are empty (the replacement already
/// accounts for every later add and remove of the same request).
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
    /// Records the `display` sent with members being added.
    pub fn note_displays(&mut self, displays: MemberDisplays) {
        self.displays.extend(displays);
    }

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

    /// Applies a later `add` of `ids` in the same request.
    pub fn add<S: AsRef<str>>(&mut self, ids: &[S]) {
        let ids = ids.iter().map(AsRef::as_ref);
        match &mut self.replace_all {
            Some(all) => DistinctIds::new(all).extend(ids),
            None => {
                let added: HashSet<&str> = ids.clone().collect();
                self.remove.retain(|r| !added.contains(r.as_str()));
                DistinctIds::new(&mut self.add).extend(ids);
            }
        }
    }

    /// Applies a later `remove` of `ids` in the same request.
    pub fn remove<S: AsRef<str>>(&mut self, ids: &[S]) {
        let ids = ids.iter().map(AsRef::as_ref);
        let gone: HashSet<&str> = ids.clone().collect();
        match &mut self.replace_all {
            Some(all) => all.retain(|r| !gone.contains(r.as_str())),
            None => {
                self.add.retain(|a| !gone.contains(a.as_str()));
                DistinctIds::new(&mut self.remove).extend(ids);
            }
        }
    }

    /// Applies a later replacement of the whole membership by `ids`.
    pub fn replace<S: AsRef<str>>(&mut self, ids: &[S]) {
        let mut all = Vec::new();
        DistinctIds::new(&mut all).extend(ids.iter().map(AsRef::as_ref));
        self.replace_all = Some(all);
        self.add.clear();
        self.remove.clear();
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
        let mut d = GroupMembershipDelta::default();
        d.add(&["a", "b"]);
        d.remove(&["a"]);
        assert_eq!(d.add, ids(&["b"]));
        assert_eq!(d.remove, ids(&["a"]));
        assert_eq!(d.apply_to(&ids(&["a", "c"])), ids(&["c", "b"]));
    }

    #[test]
    fn remove_then_add_re_adds() {
        let mut d = GroupMembershipDelta::default();
        d.remove(&["a"]);
        d.add(&["a"]);
        assert!(d.remove.is_empty());
        assert_eq!(d.add, ids(&["a"]));
        assert_eq!(d.apply_to(&ids(&["a"])), ids(&["a"]));
    }

    #[test]
    fn replace_absorbs_later_ops() {
        let mut d = GroupMembershipDelta::default();
        d.add(&["x"]);
        d.replace(&["a", "b", "a"]);
        d.add(&["c"]);
        d.remove(&["b"]);
        assert_eq!(d.replace_all, Some(ids(&["a", "c"])));
        assert!(d.add.is_empty() && d.remove.is_empty());
        assert_eq!(d.apply_to(&ids(&["z"])), ids(&["a", "c"]));
        assert_eq!(d.added_ids().collect::<Vec<_>>(), vec!["a", "c"]);
    }

    #[test]
    fn concurrent_deltas_commute() {
        // Two PATCHes computed from the same stale read, applied in either order.
        let mut p1 = GroupMembershipDelta::default();
        p1.add(&["u1"]);
        let mut p2 = GroupMembershipDelta::default();
        p2.add(&["u2"]);
        p2.remove(&["u0"]);
        let start = ids(&["u0", "u9"]);
        let mut a = p2.apply_to(&p1.apply_to(&start));
        let mut b = p1.apply_to(&p2.apply_to(&start));
        a.sort();
        b.sort();
        assert_eq!(a, ids(&["u1", "u2", "u9"]));
        assert_eq!(a, b);
    }

    #[test]
    fn duplicates_within_one_call() {
        let mut d = GroupMembershipDelta::default();
        d.remove(&["a", "b", "a"]);
        d.add(&["c", "b", "c", "d"]);
        assert_eq!(d.remove, ids(&["a"]));
        assert_eq!(d.add, ids(&["c", "b", "d"]));
        d.remove(&["c", "c"]);
        assert_eq!(d.add, ids(&["b", "d"]));
        assert_eq!(d.remove, ids(&["a", "c"]));
        assert_eq!(
            d.apply_to(&ids(&["d", "a", "e", "e"])),
            ids(&["d", "e", "e", "b"])
        );
    }

    #[test]
    fn empty() {
        let mut d = GroupMembershipDelta::default();
        assert!(d.is_empty());
        d.replace::<&str>(&[]);
        assert!(!d.is_empty(), "replacing with nothing removes every member");
        assert_eq!(d.apply_to(&ids(&["a"])), Vec::<String>::new());
    }
}
