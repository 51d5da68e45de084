//! The session event log read across sessions, in cursor order, for the
//! event stream (`GET /api/events`): event ids are `evt_` + a UUIDv7 in
//! hex, so their text order is their time order.

use diesel::prelude::*;
use wasup_actors::events::SessionEvent;

use super::records::decode_event;
use super::schema::session_events;
use super::{Db, DbConn, DbError};

/// At most `limit` events of every session with an id after `after`, by id.
pub(crate) fn events_after_id(
    conn: &mut DbConn,
    after: &str,
    limit: usize,
) -> Result<Vec<SessionEvent>, DbError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows: Vec<(String, Vec<u8>)> = session_events::table
        .filter(session_events::id.gt(after))
        .order(session_events::id.asc())
        .limit(limit)
        .select((session_events::id, session_events::payload))
        .load(conn)?;
    rows.into_iter()
        .map(|(id, bytes)| decode_event(&id, &bytes))
        .collect()
}

/// The event log as the event stream reads it. Cheap to clone.
#[derive(Clone)]
pub struct EventLog {
    db: Db,
    /// Opens the sealed bodies of message events (none: they stay empty).
    secrets: Option<std::sync::Arc<crate::crypto::SecretBox>>,
}

impl EventLog {
    pub fn new(db: Db) -> EventLog {
        EventLog { db, secrets: None }
    }

    pub fn with_secrets(mut self, secrets: std::sync::Arc<crate::crypto::SecretBox>) -> EventLog {
        self.secrets = Some(secrets);
        self
    }

    /// One page of events after the cursor `after` (an event id), by id.
    pub async fn after(&self, after: String, limit: usize) -> Result<Vec<SessionEvent>, DbError> {
        let secrets = self.secrets.clone();
        self.db
            .run(move |c| {
                let mut events = events_after_id(c, &after, limit)?;
                if let Some(boxed) = &secrets {
                    for e in &mut events {
                        super::messages::open_event(e, boxed);
                    }
                }
                Ok(events)
            })
            .await
    }
}
