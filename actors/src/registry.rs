//! The in-memory registry of every session: what read routes answer from.
//! The supervisor writes it (after the database accepted the change); the
//! WebActor reads it. Counts per status are kept incrementally so that the
//! overview costs the same at 10 or 10,000 sessions, the list order is kept
//! as an index (a page of 50 clones 50 views, never sorts 10,000), and the
//! sessions each API key created are counted (`WASUP_MAX_SESSIONS_PER_KEY`).

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use parking_lot::RwLock;
use uuid::Uuid;

use crate::model::{ApiKeyId, Caller, Overview, SessionId, SessionStatus, SessionView};

/// The list order: `createdAt` descending, ties by name, then id.
type OrderKey = (Reverse<DateTime<Utc>>, String, SessionId);

fn order_key(view: &SessionView) -> OrderKey {
    let r = &view.record;
    (Reverse(r.created_at), r.name.clone(), r.id)
}

/// Which part of the list to answer (`GET /api/sessions?limit=&offset=&name=`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListPage {
    /// Sessions to skip, in list order.
    pub offset: usize,
    /// At most this many; None: all the rest.
    pub limit: Option<usize>,
    /// Only the session with exactly this name.
    pub name: Option<String>,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<SessionId, SessionView>,
    by_name: HashMap<String, SessionId>,
    by_status: [usize; 7],
    active: usize,
    order: BTreeSet<OrderKey>,
    by_creator: HashMap<ApiKeyId, usize>,
}

fn status_index(status: SessionStatus) -> usize {
    SessionStatus::ALL
        .iter()
        .position(|s| *s == status)
        .unwrap_or(0)
}

impl Inner {
    /// Add (or take out) a view's entries in the order and creator indexes.
    fn index(&mut self, view: &SessionView, add: bool) {
        if add {
            self.order.insert(order_key(view));
        } else {
            self.order.remove(&order_key(view));
        }
        if let Some(key) = view.record.created_by {
            let n = self.by_creator.entry(key).or_default();
            *n = if add { *n + 1 } else { n.saturating_sub(1) };
            if *n == 0 {
                self.by_creator.remove(&key);
            }
        }
    }

    fn count(&mut self, view: &SessionView, delta: isize) {
        let slot = &mut self.by_status[status_index(view.record.status)];
        *slot = slot.saturating_add_signed(delta);
        if view.engine_alive {
            self.active = self.active.saturating_add_signed(delta);
        }
    }
}

#[derive(Default)]
pub struct SessionRegistry {
    inner: RwLock<Inner>,
}

impl SessionRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Insert or replace a session's view.
    pub fn upsert(&self, view: SessionView) {
        let mut inner = self.inner.write();
        if let Some(old) = inner.by_id.remove(&view.record.id) {
            inner.count(&old, -1);
            inner.index(&old, false);
            if old.record.name != view.record.name {
                inner.by_name.remove(&old.record.name);
            }
        }
        inner.count(&view, 1);
        inner.index(&view, true);
        inner
            .by_name
            .insert(view.record.name.clone(), view.record.id);
        inner.by_id.insert(view.record.id, view);
    }

    /// Change a session's view in place; returns the new view, or None when unknown.
    pub fn update<F: FnOnce(&mut SessionView)>(
        &self,
        id: SessionId,
        change: F,
    ) -> Option<SessionView> {
        let mut inner = self.inner.write();
        let mut view = inner.by_id.remove(&id)?;
        inner.count(&view, -1);
        inner.index(&view, false);
        change(&mut view);
        inner.count(&view, 1);
        inner.index(&view, true);
        inner.by_id.insert(id, view.clone());
        Some(view)
    }

    pub fn remove(&self, id: SessionId) -> Option<SessionView> {
        let mut inner = self.inner.write();
        let view = inner.by_id.remove(&id)?;
        inner.count(&view, -1);
        inner.index(&view, false);
        inner.by_name.remove(&view.record.name);
        Some(view)
    }

    pub fn get(&self, id: SessionId) -> Option<SessionView> {
        self.inner.read().by_id.get(&id).cloned()
    }

    /// Find a session by its UUID or, failing that, its name.
    pub fn resolve(&self, id_or_name: &str) -> Option<SessionView> {
        let inner = self.inner.read();
        let id = match Uuid::parse_str(id_or_name) {
            Ok(id) => id,
            Err(_) => *inner.by_name.get(id_or_name)?,
        };
        inner.by_id.get(&id).cloned()
    }

    /// Every session, in no particular order.
    pub fn all(&self) -> Vec<SessionView> {
        self.inner.read().by_id.values().cloned().collect()
    }

    /// Find a session by id or name for `caller`: not found, then not in
    /// the caller's scope, are the two ways to fail.
    pub fn resolve_for(
        &self,
        caller: &Caller,
        id_or_name: &str,
    ) -> Result<SessionView, crate::WebError> {
        let view = self
            .resolve(id_or_name)
            .ok_or_else(|| crate::WebError::unknown_session(id_or_name))?;
        if !caller.may_see(&view.record.id) {
            return Err(crate::WebError::SessionNotInScope(id_or_name.to_string()));
        }
        Ok(view)
    }

    pub fn name_taken(&self, name: &str) -> bool {
        self.inner.read().by_name.contains_key(name)
    }

    pub fn len(&self) -> usize {
        self.inner.read().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The sessions the caller may see, `createdAt` descending, ties by name.
    pub fn list(&self, caller: &Caller) -> Vec<SessionView> {
        self.page(caller, &ListPage::default()).1
    }

    /// One page of the list for `caller`, and how many sessions the whole
    /// list (with the same `name` filter) holds. Only the views on the page
    /// are cloned; an unscoped key walks the kept order, a scoped key sorts
    /// only its own sessions.
    pub fn page(&self, caller: &Caller, page: &ListPage) -> (usize, Vec<SessionView>) {
        let inner = self.inner.read();
        let take = page.limit.unwrap_or(usize::MAX);
        let pick = |keys: &mut dyn Iterator<Item = &SessionId>| -> Vec<SessionView> {
            keys.skip(page.offset)
                .take(take)
                .filter_map(|id| inner.by_id.get(id).cloned())
                .collect()
        };
        if let Some(name) = &page.name {
            let found: Vec<&SessionId> = inner
                .by_name
                .get(name)
                .filter(|id| caller.may_see(id))
                .into_iter()
                .collect();
            return (found.len(), pick(&mut found.into_iter()));
        }
        match &caller.scope {
            None => (
                inner.by_id.len(),
                pick(&mut inner.order.iter().map(|(_, _, id)| id)),
            ),
            Some(ids) => {
                let mut keys: Vec<OrderKey> = ids
                    .iter()
                    .filter_map(|id| inner.by_id.get(id).map(order_key))
                    .collect();
                keys.sort_unstable();
                (keys.len(), pick(&mut keys.iter().map(|(_, _, id)| id)))
            }
        }
    }

    /// Sessions created by the API key `key` (and not deleted).
    pub fn created_by(&self, key: ApiKeyId) -> usize {
        self.inner.read().by_creator.get(&key).copied().unwrap_or(0)
    }

    /// Sessions per status (every status, zeros included) and the number
    /// with an engine alive, from one consistent snapshot. O(1).
    pub fn status_counts(&self) -> ([(SessionStatus, usize); 7], usize) {
        let inner = self.inner.read();
        let mut counts = [(SessionStatus::Created, 0); 7];
        for (slot, status) in counts.iter_mut().zip(SessionStatus::ALL) {
            *slot = (status, inner.by_status[status_index(status)]);
        }
        (counts, inner.active)
    }

    /// Counts for the caller: O(1) for an unscoped key, O(scope) for a scoped one.
    pub fn overview(&self, caller: &Caller) -> Overview {
        let inner = self.inner.read();
        let (total, active, counts) = match &caller.scope {
            None => (inner.by_id.len(), inner.active, inner.by_status),
            Some(ids) => {
                let mut counts = [0usize; 7];
                let (mut total, mut active) = (0, 0);
                for view in ids.iter().filter_map(|id| inner.by_id.get(id)) {
                    total += 1;
                    active += usize::from(view.engine_alive);
                    counts[status_index(view.record.status)] += 1;
                }
                (total, active, counts)
            }
        };
        Overview {
            total,
            active,
            by_status: SessionStatus::ALL
                .into_iter()
                .zip(counts)
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }
}
