//! QR payloads in the event log live only as long as the QR.
//!
//! A `session.qr` event carries the raw QR text (the PNG is rendered from it
//! at delivery); anyone holding it while it is valid can link a phone to the
//! session. Choice: the text is blanked, not sealed — once the QR's life is
//! over nobody needs it. Its life ends when
//! - a newer event of the session is written (a newer QR replaces it; any
//!   status change leaves `qr_ready`): blanked in the same transaction that
//!   writes the newer event ([`expire_superseded`]); or
//! - its `expires_at_ms` passes with nothing written after it (the process
//!   stopped while the session waited): blanked by the hourly prune
//!   ([`expire_lapsed`]).
//!
//! A blanked event keeps its id, seq, name and `expires_at_ms`, with `qr`
//! empty and `expired` set, so a webhook delivery still pending and an event
//! stream replaying the log still have a body: `data` says `"expired": true`
//! with `qr` and `qrCode` null (`src/webhooks/render.rs`).
//!
//! Invariant kept by both: only the last event of a session can be a live QR,
//! so checking that one row per write is enough. (QR rows written before
//! this version are not revisited: they age out with the event log.)

use std::borrow::Cow;

use diesel::prelude::*;
use prost::Message;
use wasup_actors::events::{session_event::Data, SessionEvent};
use wasup_actors::model::SessionId;

use super::records::decode_event;
use super::schema::session_events;
use super::{DbConn, DbError};

const QR: &str = "session.qr";

/// The events of a batch as the log stores them: a QR followed by another
/// event of the same batch is already over. Borrowed when nothing changes.
pub(crate) fn as_stored(events: &[SessionEvent]) -> Cow<'_, [SessionEvent]> {
    let superseded = |i: usize, e: &SessionEvent| i + 1 < events.len() && qr_of(e).is_some();
    if !events.iter().enumerate().any(|(i, e)| superseded(i, e)) {
        return Cow::Borrowed(events);
    }
    let mut stored = events.to_vec();
    let last = stored.len() - 1;
    for e in &mut stored[..last] {
        expire(e);
    }
    Cow::Owned(stored)
}

/// Blank the event just before `first_seq` (the first event being written)
/// if it is a live QR: by the invariant no earlier one can be. Call inside
/// the writing transaction. One lookup by the `(session_id, seq)` key.
pub(crate) fn expire_superseded(
    conn: &mut DbConn,
    session_id: SessionId,
    first_seq: i64,
) -> Result<(), DbError> {
    let previous: Option<(String, Vec<u8>)> = session_events::table
        .filter(session_events::session_id.eq(session_id.to_string()))
        .filter(session_events::seq.eq(first_seq - 1))
        .filter(session_events::name.eq(QR))
        .select((session_events::id, session_events::payload))
        .first(conn)
        .optional()?;
    match previous {
        Some((id, payload)) => rewrite_if_live(conn, &id, &payload, |_| true),
        None => Ok(()),
    }
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = diesel::sql_types::Text)]
    id: String,
    #[diesel(sql_type = diesel::sql_types::Binary)]
    payload: Vec<u8>,
}

/// QR events that are the last event of their session (only those can still
/// be live) and were written before `now_ms`.
const LAST_QRS: &str = "\
    SELECT e.id AS id, e.payload AS payload FROM session_events e \
    WHERE e.name = 'session.qr' AND e.created_at < $1 AND NOT EXISTS ( \
        SELECT 1 FROM session_events n WHERE n.session_id = e.session_id AND n.seq > e.seq)";

/// Blank every QR whose `expires_at_ms` is before `now_ms` (the hourly
/// prune). Returns how many were blanked.
pub(crate) fn expire_lapsed(conn: &mut DbConn, now_ms: i64) -> Result<u64, DbError> {
    use diesel::sql_types::BigInt;
    let rows: Vec<Row> = match conn {
        DbConn::Sqlite(c) => diesel::sql_query(LAST_QRS.replace('$', "?"))
            .bind::<BigInt, _>(now_ms)
            .load(c)?,
        DbConn::Postgres(c) => diesel::sql_query(LAST_QRS)
            .bind::<BigInt, _>(now_ms)
            .load(c)?,
    };
    let mut n = 0;
    for row in rows {
        let mut lapsed = false;
        rewrite_if_live(conn, &row.id, &row.payload, |e| {
            lapsed = qr_of(e).is_some_and(|q| q.expires_at_ms < now_ms);
            lapsed
        })?;
        n += u64::from(lapsed);
    }
    Ok(n)
}

fn qr_of(e: &SessionEvent) -> Option<&wasup_actors::events::QrRotated> {
    match &e.data {
        Some(Data::Qr(q)) if !q.expired => Some(q),
        _ => None,
    }
}

fn expire(e: &mut SessionEvent) {
    if let Some(Data::Qr(q)) = &mut e.data {
        q.expire();
    }
}

/// Rewrite one stored QR event blanked, when it is live and `when` agrees.
fn rewrite_if_live(
    conn: &mut DbConn,
    id: &str,
    payload: &[u8],
    when: impl FnOnce(&SessionEvent) -> bool,
) -> Result<(), DbError> {
    let mut event = match decode_event(id, payload) {
        Ok(e) => e,
        // A row that does not decode holds nothing readable; the outbox
        // dead-letters it on its own.
        Err(_) => return Ok(()),
    };
    if qr_of(&event).is_none() || !when(&event) {
        return Ok(());
    }
    expire(&mut event);
    diesel::update(session_events::table.find(id))
        .set(session_events::payload.eq(event.encode_to_vec()))
        .execute(conn)?;
    Ok(())
}
