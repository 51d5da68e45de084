//! The Signal sessions, identities and trusted-contact tokens of one client,
//! kept in memory in front of the database (write-through).
//!
//! A send reads each device's session and identity about twice (is there a
//! session, load it, is the identity trusted, load it) and the chat's token
//! once: measured, 9 of the 14 database calls an outbound text cost, each a
//! hop to the blocking pool, a query and an unsealing. One `DeviceDb` serves one client run, and only
//! that client writes these rows (in a cluster, only the lease holder), so
//! what this holds is what the database holds.
//!
//! Coherence: every write or delete of a cached kind bumps a generation
//! before it starts and again once it ends (stored or not); a read that
//! missed fills the cache only if no write began or ended since it read, so
//! an old value read beside a write is never kept; a write keeps its value
//! only if no other write began or ended while it ran. Bounded: at most
//! [`CAPACITY`] entries per client (an idle session holds none).

use std::collections::HashMap;

use parking_lot::Mutex;
use whatsapp_rust::bytes::Bytes;

use super::{IDENTITY, SESSION, TC_TOKEN};

/// Entries kept per client: a few conversations' devices.
pub(super) const CAPACITY: usize = 32;

/// What the cache knows of one key: its plaintext, or that it has no row.
pub(super) type Known = Option<Bytes>;

#[derive(Default)]
pub(super) struct HotRows {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    generation: u64,
    entries: HashMap<(&'static str, String), Known>,
}

impl HotRows {
    /// Kinds kept here: only their one-part keys (`k`) are used.
    pub(super) fn keeps(kind: &str) -> bool {
        kind == SESSION || kind == IDENTITY || kind == TC_TOKEN
    }

    /// `Some(known)` on a hit; `Err(generation)` on a miss, to hand back to
    /// [`HotRows::fill`] with what the database said.
    pub(super) fn get(&self, kind: &'static str, k: &str) -> Result<Known, u64> {
        let state = self.state.lock();
        match state.entries.get(&(kind, k.to_string())) {
            Some(known) => Ok(known.clone()),
            None => Err(state.generation),
        }
    }

    /// Keep what a read found, unless a write began or ended since
    /// `generation` (the value may be older than the row).
    pub(super) fn fill(&self, generation: u64, kind: &'static str, k: &str, known: Known) {
        let mut state = self.state.lock();
        if state.generation == generation {
            state.insert(kind, k, known);
        }
    }

    /// Before a write of these keys: forget them. The answer goes to
    /// [`HotRows::written`].
    pub(super) fn writing(&self, kind: &'static str, keys: &[&str]) -> u64 {
        let mut state = self.state.lock();
        state.generation += 1;
        for k in keys {
            state.entries.remove(&(kind, k.to_string()));
        }
        state.generation
    }

    /// After a write that began at `began` (from `writing`): keep what was
    /// stored. Forget the keys instead when it was not stored (the row is
    /// whatever the database says), or when another write or delete began
    /// or ended meanwhile (which of the two the database kept is not known
    /// here).
    pub(super) fn written(
        &self,
        began: u64,
        kind: &'static str,
        items: Vec<(&str, Bytes)>,
        stored: bool,
    ) {
        let mut state = self.state.lock();
        let alone = state.generation == began;
        state.generation += 1;
        for (k, value) in items {
            if stored && alone {
                state.insert(kind, k, Some(value));
            } else {
                state.entries.remove(&(kind, k.to_string()));
            }
        }
    }

    /// Before and after a delete of rows of `kind`: forget the whole kind.
    pub(super) fn forget_kind(&self, kind: &str) {
        let mut state = self.state.lock();
        state.generation += 1;
        state.entries.retain(|(kept, _), _| *kept != kind);
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.state.lock().entries.len()
    }
}

impl State {
    fn insert(&mut self, kind: &'static str, k: &str, known: Known) {
        let key = (kind, k.to_string());
        if self.entries.len() >= CAPACITY && !self.entries.contains_key(&key) {
            // Any one goes: a miss costs one read.
            if let Some(old) = self.entries.keys().next().cloned() {
                self.entries.remove(&old);
            }
        }
        self.entries.insert(key, known);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(hot: &HotRows, k: &str) -> Option<Known> {
        hot.get(SESSION, k).ok()
    }

    /// A whole write of session `k`: begun, then `stored` or not.
    fn write(hot: &HotRows, k: &str, value: &'static [u8], stored: bool) {
        let began = hot.writing(SESSION, &[k]);
        hot.written(began, SESSION, vec![(k, Bytes::from_static(value))], stored);
    }

    #[test]
    fn a_read_beside_a_write_is_not_kept() {
        let hot = HotRows::default();
        // A read misses and goes to the database...
        let generation = hot.get(SESSION, "a").unwrap_err();
        // ...while a write of the same key begins and ends.
        write(&hot, "a", b"new", true);
        // The read's (older) value is dropped; the written one stays.
        hot.fill(generation, SESSION, "a", Some(Bytes::from_static(b"old")));
        assert_eq!(hit(&hot, "a"), Some(Some(Bytes::from_static(b"new"))));
    }

    #[test]
    fn a_failed_write_forgets_its_keys() {
        let hot = HotRows::default();
        let generation = hot.get(SESSION, "a").unwrap_err();
        hot.fill(generation, SESSION, "a", Some(Bytes::from_static(b"v1")));
        write(&hot, "a", b"v2", false);
        assert_eq!(
            hit(&hot, "a"),
            None,
            "the database decides on the next read"
        );
    }

    #[test]
    fn overlapping_writes_of_a_key_keep_neither() {
        let hot = HotRows::default();
        // Two writes of one key at once: which one the database kept last
        // depends on their commits, so the cache keeps neither.
        let first = hot.writing(SESSION, &["a"]);
        let second = hot.writing(SESSION, &["a"]);
        hot.written(second, SESSION, vec![("a", Bytes::from_static(b"2"))], true);
        hot.written(first, SESSION, vec![("a", Bytes::from_static(b"1"))], true);
        assert_eq!(hit(&hot, "a"), None);
        // A write alone is kept.
        write(&hot, "a", b"3", true);
        assert_eq!(hit(&hot, "a"), Some(Some(Bytes::from_static(b"3"))));
    }

    #[test]
    fn absence_is_kept_and_deletes_forget_the_kind() {
        let hot = HotRows::default();
        let generation = hot.get(SESSION, "a").unwrap_err();
        hot.fill(generation, SESSION, "a", None);
        assert_eq!(hit(&hot, "a"), Some(None), "known to have no row");
        let generation = hot.get(IDENTITY, "a").unwrap_err();
        hot.fill(generation, IDENTITY, "a", Some(Bytes::from_static(b"k")));
        hot.forget_kind(SESSION);
        assert_eq!(hit(&hot, "a"), None);
        assert!(hot.get(IDENTITY, "a").is_ok(), "other kinds stay");
    }

    #[test]
    fn it_holds_at_most_capacity_entries() {
        let hot = HotRows::default();
        for i in 0..CAPACITY * 3 {
            let generation = hot.get(SESSION, &i.to_string()).unwrap_err();
            hot.fill(generation, SESSION, &i.to_string(), None);
        }
        assert_eq!(hot.len(), CAPACITY);
    }
}
