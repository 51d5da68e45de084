//! The in-memory registry of every session: what read routes answer from.
//! The supervisor writes it (after the database accepted the change); the
//! WebActor reads it. Counts per status are kept incrementally so that the
//! overview costs the same at 10 or 10,000 sessions.

use std::collections::HashMap;

use parking_lot::RwLock;
use uuid::Uuid;

use crate::model::{Caller, Overview, SessionId, SessionStatus, SessionView};

#[derive(Default)]
struct Inner {
    by_id: HashMap<SessionId, SessionView>,
    by_name: HashMap<String, SessionId>,
    by_status: [usize; 7],
    active: usize,
}

fn status_index(status: SessionStatus) -> usize {
    SessionStatus::ALL
        .iter()
        .position(|s| *s == status)
        .unwrap_or(0)
}

impl Inner {
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
            if old.record.name != view.record.name {
                inner.by_name.remove(&old.record.name);
            }
        }
        inner.count(&view, 1);
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
        change(&mut view);
        inner.count(&view, 1);
        inner.by_id.insert(id, view.clone());
        Some(view)
    }

    pub fn remove(&self, id: SessionId) -> Option<SessionView> {
        let mut inner = self.inner.write();
        let view = inner.by_id.remove(&id)?;
        inner.count(&view, -1);
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
        let inner = self.inner.read();
        let mut views: Vec<SessionView> = match &caller.scope {
            None => inner.by_id.values().cloned().collect(),
            Some(ids) => ids
                .iter()
                .filter_map(|id| inner.by_id.get(id).cloned())
                .collect(),
        };
        views.sort_by(|a, b| {
            b.record
                .created_at
                .cmp(&a.record.created_at)
                .then_with(|| a.record.name.cmp(&b.record.name))
        });
        views
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
