//! The live event stream (issue 12): `GET /api/events` as Server-Sent
//! Events, the webhook envelope per event (`src/webhooks/render.rs`),
//! filtered by the key's scope, `?sessions=` and `?events=`.
//!
//! Cursor: the SSE `id:` of each event is its event id (`evt_…`, time
//! ordered). A client that reconnects with `Last-Event-ID` (or `?after=`)
//! first gets every event after it that the log still holds, then the live
//! ones; an event is never sent twice for the same session and `seq` (the
//! live feed is joined before the log is read, and anything at or below a
//! session's last sent `seq` is dropped).
//!
//! Browsers cannot set headers on an `EventSource`, and a key in a URL ends
//! up in logs: they trade their key (header or dashboard cookie) for a
//! single-use ticket valid 30 s (`POST /api/events/ticket`) and open
//! `GET /api/events?ticket=…`.
//!
//! The stream ends with a last `event: stream.end` message (no `id:`, so
//! the resume point stays the last event) when the reader fell too far
//! behind (`slow_consumer`), the server shuts down (`shutting_down`) or the
//! log cannot be read (`unavailable`).

mod sse;
mod ws;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use utoipa::{IntoParams, ToSchema};
use wasup_actors::events::SessionEvent;
use wasup_actors::webhook::{validate_events, wants};
use wasup_actors::{Caller, ErrorCode, WebError};

use super::auth::{caller_of, Auth};
use super::error::ApiError;
use super::AppState;
use crate::db::event_log::EventLog;
use crate::events_hub::{EventHub, LiveEvent, StreamPermit};
use crate::webhooks::render::Envelope;

/// How often an idle stream sends a comment line, so proxies keep it open.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// Events read from the log per query while catching up.
const PAGE: usize = 500;
/// How long a stream ticket can be redeemed.
const TICKET_TTL: Duration = Duration::from_secs(30);
/// Tickets outstanding at once (a bound on memory; old ones go first).
const MAX_TICKETS: usize = 10_000;

/// What the event routes need besides `AppState`.
pub struct EventsState {
    pub hub: Arc<EventHub>,
    pub log: EventLog,
    pub tickets: Tickets,
}

impl EventsState {
    pub fn new(hub: Arc<EventHub>, log: EventLog) -> EventsState {
        EventsState {
            hub,
            log,
            tickets: Tickets::default(),
        }
    }
}

/// Single-use stream tickets, in memory: a restart forgets them, which only
/// costs a browser one more `POST /api/events/ticket`.
#[derive(Default)]
pub struct Tickets {
    issued: Mutex<HashMap<String, (Caller, Instant)>>,
}

impl Tickets {
    fn issue(&self, caller: Caller) -> String {
        let ticket = format!("est_{}", hex::encode(rand::random::<[u8; 32]>()));
        let mut issued = self.issued.lock();
        let now = Instant::now();
        issued.retain(|_, (_, at)| now.duration_since(*at) < TICKET_TTL);
        if issued.len() >= MAX_TICKETS {
            if let Some(oldest) = issued
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone())
            {
                issued.remove(&oldest);
            }
        }
        issued.insert(ticket.clone(), (caller, now));
        ticket
    }

    fn redeem(&self, ticket: &str) -> Option<Caller> {
        let (caller, at) = self.issued.lock().remove(ticket)?;
        (at.elapsed() < TICKET_TTL).then_some(caller)
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Comma-separated session ids or names (default: every session the key may see).
    #[param(example = "my-bot")]
    sessions: Option<String>,
    /// Comma-separated webhook event names, or `*` (the default).
    #[param(example = "session.status,session.qr")]
    events: Option<String>,
    /// Resume after this event id (the `Last-Event-ID` header wins when both are sent).
    #[param(example = "evt_0197a4f2c1b27e3c9d4a5b6c7d8e9f01")]
    after: Option<String>,
    /// A ticket from `POST /api/events/ticket`, for clients that cannot send headers.
    ticket: Option<String>,
    /// `false`: send the stored events after the cursor, then end
    /// (`stream.end`, reason `caught_up`) instead of following live ones.
    follow: Option<bool>,
}

/// Which events a stream shows.
struct Filter {
    caller: Caller,
    /// Ids or names; None = all the key may see.
    sessions: Option<Vec<String>>,
    events: Vec<String>,
}

impl Filter {
    fn parse(caller: Caller, query: &StreamQuery) -> Result<Filter, ApiError> {
        let list = |s: &str| -> Vec<String> {
            s.split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(String::from)
                .collect()
        };
        let events = match query.events.as_deref() {
            None => vec!["*".to_string()],
            Some(s) => validate_events(&list(s)).map_err(ApiError::from)?,
        };
        let sessions = match query.sessions.as_deref() {
            None => None,
            Some(s) => {
                let names = list(s);
                if names.is_empty() {
                    return Err(ApiError::validation(
                        "Query parameter 'sessions' must name at least one session id or name",
                    ));
                }
                for name in &names {
                    if let Ok(id) = uuid::Uuid::parse_str(name) {
                        if !caller.may_see(&id) {
                            return Err(WebError::SessionNotInScope(name.clone()).into());
                        }
                    }
                }
                Some(names)
            }
        };
        Ok(Filter {
            caller,
            sessions,
            events,
        })
    }

    fn matches(&self, event: &SessionEvent) -> bool {
        let visible = uuid::Uuid::parse_str(&event.session_id)
            .map(|id| self.caller.may_see(&id))
            .unwrap_or(false);
        visible
            && self.sessions.as_ref().is_none_or(|s| {
                s.iter()
                    .any(|x| *x == event.session_id || *x == event.session_name)
            })
            && wants(&self.events, event.name())
    }
}

/// An event id as the stream writes it: `evt_` and 32 hex digits.
fn parse_cursor(raw: &str) -> Result<String, ApiError> {
    let ok = raw
        .strip_prefix("evt_")
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(raw.to_ascii_lowercase())
    } else {
        Err(ApiError::validation(
            "Last-Event-ID (or 'after') must be an event id from this stream, like evt_0197a4f2c1b27e3c9d4a5b6c7d8e9f01",
        ))
    }
}

/// The caller of a stream: a ticket, or the key/cookie as on every route.
fn stream_caller(
    req: &HttpRequest,
    events: &EventsState,
    query: &StreamQuery,
) -> Result<Caller, ApiError> {
    match &query.ticket {
        Some(ticket) => events.tickets.redeem(ticket).ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidStreamTicket,
                "The stream ticket is unknown, used or expired; get a new one from POST /api/events/ticket",
            )
        }),
        None => caller_of(req),
    }
}

/// Stream events
///
/// Any role. Server-Sent Events (`text/event-stream`): one message per event,
/// `id:` = the event id (the resume cursor), `event:` = the event name,
/// `data:` = the webhook envelope (`id, event, timestamp, sessionId,
/// sessionName, seq, data`). Reconnect with `Last-Event-ID` (or `?after=`) to
/// get every event since that the log still holds, then the live ones
/// (`?follow=false`: only those, then the end, reason `caught_up`). A
/// comment line every 15 s keeps an idle stream open. The stream ends with
/// `event: stream.end`, `data: {"reason": "slow_consumer" | "shutting_down" |
/// "unavailable" | "caught_up", "message": …}`. Authenticate with the key headers, the
/// dashboard cookie or `?ticket=` (see `POST /api/events/ticket`). Streams
/// per key are limited (`WASUP_EVENT_STREAMS_PER_KEY`, 429 past it).
#[utoipa::path(get, path = "/api/events", tag = "events", operation_id = "streamEvents",
    params(StreamQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id")),
    responses(
        (status = 200, description = "The event stream", content_type = "text/event-stream", body = String),
    )
)]
pub async fn stream(
    req: HttpRequest,
    events: web::Data<EventsState>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let stream = open_stream(&req, &events, &state)?;
    let body = sse::body(stream);
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(body))
}

/// Stream events over a WebSocket
///
/// Any role. The WebSocket twin of `GET /api/events`: the same query, auth
/// (key headers, the dashboard cookie from the same origin, or `?ticket=`),
/// resume (`?after=` or `Last-Event-ID`) and per-key limit. Each event is
/// one text frame holding its webhook envelope; a ping frame every 15 s
/// keeps an idle socket open. The stream ends with a text frame
/// `{"event": "stream.end", "data": {"reason", "message"}}`, then a close
/// frame whose reason is that `reason` (1008 `slow_consumer`, 1001
/// `shutting_down`, 1011 `unavailable`, 1000 `caught_up`). Without a WebSocket upgrade the
/// answer is 400.
#[utoipa::path(get, path = "/api/events/ws", tag = "events", operation_id = "streamEventsWebSocket",
    params(StreamQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id")),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
    )
)]
pub async fn websocket(
    req: HttpRequest,
    payload: web::Payload,
    events: web::Data<EventsState>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let stream = open_stream(&req, &events, &state)?;
    ws::upgrade(&req, payload, stream)
}

/// Everything both transports check before a stream opens: the query, the
/// caller, the cursor and the per-key limit. Errors answer in the contract's
/// shape, before any stream byte.
fn open_stream(
    req: &HttpRequest,
    events: &EventsState,
    state: &AppState,
) -> Result<EventStream, ApiError> {
    let query = web::Query::<StreamQuery>::from_query(req.query_string())
        .map_err(|_| {
            ApiError::validation(
                "Query parameters: only 'sessions', 'events', 'after', 'ticket' and 'follow' (true or false) are accepted",
            )
        })?
        .into_inner();
    let caller = stream_caller(req, events, &query)?;
    if state.is_draining() {
        return Err(WebError::ShuttingDown.into());
    }
    let last_event_id = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(String::from);
    let cursor = last_event_id
        .or(query.after.clone())
        .map(|c| parse_cursor(&c))
        .transpose()?;
    let filter = Filter::parse(caller.clone(), &query)?;
    let permit = events.hub.open(caller.key_id).map_err(|limit| {
        ApiError::from(WebError::TooManyRequests {
            message: format!(
                "This API key already has {} event streams open, the limit set by WASUP_EVENT_STREAMS_PER_KEY; close one first",
                limit.max
            ),
            retry_after_secs: 5,
        })
    })?;
    let mut stream = EventStream::new(permit, events.log.clone(), filter, cursor);
    stream.follow = query.follow.unwrap_or(true);
    Ok(stream)
}

/// A single-use stream ticket.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TicketBody {
    /// Pass as `GET /api/events?ticket=…` within `expiresAt`; works once.
    #[schema(example = "est_9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")]
    ticket: String,
    #[schema(format = DateTime, example = "2026-06-25T09:00:30.000Z")]
    expires_at: String,
}

/// Get a stream ticket
///
/// Any role. A ticket opens one `GET /api/events?ticket=…` within 30 s, with
/// this key's role and scope: for browsers, whose `EventSource` cannot send
/// the key header, and so that the key never appears in a URL.
#[utoipa::path(post, path = "/api/events/ticket", tag = "events", operation_id = "createEventTicket",
    responses(
        (status = 201, description = "The ticket", body = TicketBody),
    )
)]
pub async fn ticket(
    Auth(caller): Auth,
    events: web::Data<EventsState>,
) -> Result<HttpResponse, ApiError> {
    let ticket = events.tickets.issue(caller);
    let expires = Utc::now() + TICKET_TTL;
    Ok(HttpResponse::Created().json(TicketBody {
        ticket,
        expires_at: super::time::iso(expires),
    }))
}

/// What a stream hands its transport, in order.
pub enum Item {
    /// One event: its id (the resume cursor), name and webhook envelope (compact JSON).
    Event {
        id: String,
        name: String,
        body: Vec<u8>,
    },
    /// Nothing happened for `HEARTBEAT`.
    Heartbeat,
    /// The last item: why the stream ends.
    End {
        reason: &'static str,
        message: String,
    },
}

impl Item {
    fn end(reason: &'static str, message: &str) -> Item {
        Item::End {
            reason,
            message: message.to_string(),
        }
    }

    /// The `stream.end` message's data.
    pub fn end_data(reason: &str, message: &str) -> serde_json::Value {
        serde_json::json!({"reason": reason, "message": message})
    }
}

const SHUTTING_DOWN: &str = "The server is shutting down; reconnect with Last-Event-ID to resume";

/// One stream's state, shared by both transports (`sse`, `ws`): catching
/// up from the log (while `cursor` is set), then following the hub.
/// `next_item` is cancel-safe (the WebSocket pump selects on it): nothing
/// is taken from the state before an await completes.
pub struct EventStream {
    permit: StreamPermit,
    log: EventLog,
    filter: Filter,
    cursor: Option<String>,
    /// Per session id, the highest `seq` sent.
    sent: HashMap<String, u64>,
    out: VecDeque<Item>,
    heartbeat: tokio::time::Interval,
    ended: bool,
    /// false: end once the log is replayed (`?follow=false`).
    follow: bool,
}

impl EventStream {
    fn new(
        permit: StreamPermit,
        log: EventLog,
        filter: Filter,
        cursor: Option<String>,
    ) -> EventStream {
        let mut heartbeat =
            tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        EventStream {
            permit,
            log,
            filter,
            cursor,
            sent: HashMap::new(),
            out: VecDeque::new(),
            heartbeat,
            ended: false,
            follow: true,
        }
    }

    /// The next item; None after the `End` item.
    pub async fn next_item(&mut self) -> Option<Item> {
        loop {
            if let Some(item) = self.out.pop_front() {
                return Some(item);
            }
            if self.ended {
                return None;
            }
            if *self.permit.closing.borrow() {
                self.end(Item::end("shutting_down", SHUTTING_DOWN));
                continue;
            }
            if let Some(cursor) = self.cursor.clone() {
                self.catch_up(cursor).await;
                continue;
            }
            if !self.follow {
                self.end(Item::end(
                    "caught_up",
                    "Every stored event after the cursor was sent (follow=false)",
                ));
                continue;
            }
            tokio::select! {
                received = self.permit.live.recv() => match received {
                    Ok(live) => self.offer_live(&live),
                    Err(RecvError::Lagged(missed)) => self.end(Item::end(
                        "slow_consumer",
                        &format!("This stream fell {missed} events behind and was cut off; reconnect with Last-Event-ID to resume from the log"),
                    )),
                    Err(RecvError::Closed) => self.end(Item::end("shutting_down", SHUTTING_DOWN)),
                },
                _ = self.permit.closing.changed() => self.end(Item::end("shutting_down", SHUTTING_DOWN)),
                _ = self.heartbeat.tick() => self.out.push_back(Item::Heartbeat),
            }
        }
    }

    /// One page of the log after `cursor`; the next cursor while pages are full.
    async fn catch_up(&mut self, cursor: String) {
        match self.log.after(cursor, PAGE).await {
            Ok(page) => {
                self.cursor = if page.len() == PAGE {
                    page.last().map(|e| e.id.clone())
                } else {
                    None
                };
                for event in &page {
                    self.offer(event);
                }
            }
            Err(err) => {
                log::warn!("event stream: cannot read the event log: {err}");
                self.cursor = None;
                self.end(Item::end(
                    "unavailable",
                    "The event log cannot be read right now; reconnect with Last-Event-ID shortly",
                ));
            }
        }
    }

    /// A live event: rendered once for every stream (`LiveEvent`).
    fn offer_live(&mut self, live: &LiveEvent) {
        if self.wants(&live.event) {
            if let Some(envelope) = live.envelope() {
                self.push(envelope.clone());
            }
        }
    }

    /// An event read from the log (catching up): rendered for this stream.
    fn offer(&mut self, event: &SessionEvent) {
        self.offer_live(&LiveEvent::new(event.clone()));
    }

    /// Whether this stream shows `event`: its filter, and never a session's
    /// `seq` twice (marks it sent).
    fn wants(&mut self, event: &SessionEvent) -> bool {
        if !self.filter.matches(event) {
            return false;
        }
        let last = self.sent.entry(event.session_id.clone()).or_insert(0);
        if event.seq <= *last {
            return false;
        }
        *last = event.seq;
        true
    }

    fn push(&mut self, envelope: Envelope) {
        self.out.push_back(Item::Event {
            id: envelope.id,
            name: envelope.event,
            body: envelope.body,
        });
    }

    fn end(&mut self, item: Item) {
        self.out.push_back(item);
        self.ended = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_event_ids() {
        assert!(parse_cursor("evt_0197a4f2c1b27e3c9d4a5b6c7d8e9f01").is_ok());
        for bad in [
            "",
            "evt_",
            "42",
            "evt_0197a4f2c1b27e3c9d4a5b6c7d8e9f0z",
            "x:1",
        ] {
            assert!(parse_cursor(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tickets_work_once() {
        let tickets = Tickets::default();
        let caller = Caller {
            key_id: uuid::Uuid::new_v4(),
            role: wasup_actors::model::Role::Viewer,
            scope: None,
        };
        let t = tickets.issue(caller.clone());
        assert_eq!(tickets.redeem(&t), Some(caller));
        assert_eq!(tickets.redeem(&t), None);
        assert_eq!(tickets.redeem("est_nope"), None);
    }
}
