//! The API's webhook messages (create, list, get, update, delete, test,
//! deliveries, redrive, and the outbox depth for `/metrics`) and the
//! WebhookActor's handlers for them.

use actix::prelude::*;
use chrono::Utc;
use futures::future::BoxFuture;
use uuid::Uuid;

use super::delivery::{Wake, WebhookActor};
use super::ports::*;
use super::records::*;
use super::validation::*;
use crate::error::WebError;
use crate::model::{Caller, Role, SessionView};
use crate::ports::StoreError;

/// `POST /api/sessions/:id/webhooks`; returns the record and its secret (shown once).
#[derive(Message)]
#[rtype(result = "Result<(WebhookRecord, String), WebError>")]
pub struct CreateWebhook {
    pub caller: Caller,
    pub session: String,
    pub url: String,
    pub events: Option<Vec<String>>,
    pub secret: Option<String>,
    pub headers: Option<Vec<(String, String)>>,
    pub max_attempts: Option<u32>,
}

/// `GET /api/sessions/:id/webhooks` (`session: Some`) or `GET /api/webhooks` (`None`).
#[derive(Message)]
#[rtype(result = "Result<Vec<WebhookRecord>, WebError>")]
pub struct ListWebhooks {
    pub caller: Caller,
    pub session: Option<String>,
}

/// `GET /api/sessions/:id/webhooks/:wid`
#[derive(Message)]
#[rtype(result = "Result<WebhookRecord, WebError>")]
pub struct GetWebhook {
    pub caller: Caller,
    pub session: String,
    pub webhook: String,
}

/// `PATCH /api/sessions/:id/webhooks/:wid`
#[derive(Message)]
#[rtype(result = "Result<WebhookRecord, WebError>")]
pub struct UpdateWebhook {
    pub caller: Caller,
    pub session: String,
    pub webhook: String,
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub headers: Option<Vec<(String, String)>>,
    pub active: Option<bool>,
    pub max_attempts: Option<u32>,
}

/// `DELETE /api/sessions/:id/webhooks/:wid`
#[derive(Message)]
#[rtype(result = "Result<(), WebError>")]
pub struct DeleteWebhook {
    pub caller: Caller,
    pub session: String,
    pub webhook: String,
}

/// Test sends in flight at once, for the whole process (each may hold a
/// connection for up to the sender's timeout).
pub const MAX_TEST_SENDS: usize = 4;

/// The `Retry-After` of a test send refused at the limit: a send usually
/// finishes in well under this.
pub const TEST_SEND_RETRY_AFTER_SECS: u64 = 2;

/// The answer to a test send past [`MAX_TEST_SENDS`].
pub fn too_many_test_sends() -> WebError {
    WebError::TooManyRequests {
        message: format!(
            "At most {MAX_TEST_SENDS} test deliveries may be in flight at once; retry shortly"
        ),
        retry_after_secs: TEST_SEND_RETRY_AFTER_SECS,
    }
}

/// `POST /api/sessions/:id/webhooks/:wid/test`
#[derive(Message)]
#[rtype(result = "Result<SendResult, WebError>")]
pub struct TestWebhook {
    pub caller: Caller,
    pub session: String,
    pub webhook: String,
}

/// `GET /api/sessions/:id/webhooks/:wid/deliveries`
#[derive(Message)]
#[rtype(result = "Result<Vec<AttemptRecord>, WebError>")]
pub struct ListDeliveries {
    pub caller: Caller,
    pub session: String,
    pub webhook: String,
    pub filter: Option<AttemptFilter>,
    pub limit: usize,
}

/// `POST /api/sessions/:id/webhooks/:wid/deliveries/:eventId/redrive`
#[derive(Message)]
#[rtype(result = "Result<(), WebError>")]
pub struct RedriveDelivery {
    pub caller: Caller,
    pub session: String,
    pub webhook: String,
    pub event_id: String,
}

/// `GET /metrics`: the outbox counts, read from the store at scrape time
/// (so they are right after a restart).
#[derive(Message)]
#[rtype(result = "Result<OutboxCounts, StoreError>")]
pub struct OutboxDepth;

/// A webhook found by [`WebhookActor::find`]: its session, and the load of
/// its record (which checks it belongs to that session).
type Found = (
    SessionView,
    BoxFuture<'static, Result<WebhookRecord, WebError>>,
);

fn url_not_allowed(why: UrlRefused) -> WebError {
    WebError::WebhookUrlNotAllowed(why.to_string())
}

fn store_unavailable(err: StoreError) -> WebError {
    log::error!("webhook store: {err}");
    WebError::Unavailable("The database is unavailable; try again later".to_string())
}

impl WebhookActor {
    /// Find a session by id or name, then check the caller may see it.
    fn resolve(&self, caller: &Caller, id: &str) -> Result<SessionView, WebError> {
        self.registry.resolve_for(caller, id)
    }

    /// The webhook `wid` of session `session` (resolved and in scope), for
    /// a caller who is at least `role`.
    fn find(
        &self,
        caller: &Caller,
        role: Role,
        session: &str,
        wid: &str,
    ) -> Result<Found, WebError> {
        caller.require(role)?;
        let view = self.resolve(caller, session)?;
        let wid_owned = wid.to_string();
        let not_found = move || WebError::WebhookNotFound(wid_owned.clone());
        let id = Uuid::parse_str(wid).map_err(|_| WebError::WebhookNotFound(wid.to_string()))?;
        let load = self.store.load_webhook(id);
        let session_id = view.record.id;
        let fut: BoxFuture<'static, Result<WebhookRecord, WebError>> = Box::pin(async move {
            match load.await {
                Ok(w) if w.session_id == session_id => Ok(w),
                Ok(_) | Err(StoreError::NotFound) => Err(not_found()),
                Err(e) => Err(store_unavailable(e)),
            }
        });
        Ok((view, fut))
    }

    /// The record alone of [`find`](Self::find): a failed check is the
    /// future's error.
    fn load(&self, caller: &Caller, role: Role, session: &str, wid: &str) -> Reply<WebhookRecord> {
        match self.find(caller, role, session, wid) {
            Ok((_, load)) => load,
            Err(e) => fail(e),
        }
    }
}

type Reply<T> = ResponseFuture<Result<T, WebError>>;

fn fail<T: 'static>(e: WebError) -> Reply<T> {
    Box::pin(async move { Err(e) })
}

impl Handler<CreateWebhook> for WebhookActor {
    type Result = Reply<(WebhookRecord, String)>;

    fn handle(&mut self, msg: CreateWebhook, _: &mut Context<Self>) -> Self::Result {
        let check = (|| {
            msg.caller.require(Role::Operator)?;
            let view = self.resolve(&msg.caller, &msg.session)?;
            validate_url(&msg.url)?;
            let events = validate_events(msg.events.as_deref().unwrap_or(&["*".to_string()]))?;
            let max_attempts = msg.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
            validate_max_attempts(max_attempts)?;
            let headers = msg.headers.clone().unwrap_or_default();
            validate_headers(&headers)?;
            let secret = match &msg.secret {
                Some(s) => {
                    validate_secret(s)?;
                    s.clone()
                }
                None => generate_secret(),
            };
            let now = Utc::now();
            Ok((
                WebhookRecord {
                    id: Uuid::now_v7(),
                    session_id: view.record.id,
                    url: msg.url.clone(),
                    events,
                    headers,
                    active: true,
                    max_attempts,
                    created_at: now,
                    updated_at: now,
                },
                secret,
            ))
        })();
        let (record, secret) = match check {
            Ok(v) => v,
            Err(e) => return fail(e),
        };
        let guard = self.sender.check_url(record.url.clone());
        let store = self.store.clone();
        Box::pin(async move {
            // Counted from the store: webhooks are not held in memory.
            let existing = store
                .load_webhooks(Some(record.session_id))
                .await
                .map_err(store_unavailable)?;
            crate::limits::get().check_webhooks(existing.len())?;
            guard.await.map_err(url_not_allowed)?;
            store
                .insert_webhook(record.clone(), secret.clone())
                .await
                .map_err(|e| match e {
                    StoreError::NotFound => WebError::unknown_session_id(record.session_id),
                    e => store_unavailable(e),
                })?;
            Ok((record, secret))
        })
    }
}

impl Handler<ListWebhooks> for WebhookActor {
    type Result = Reply<Vec<WebhookRecord>>;

    fn handle(&mut self, msg: ListWebhooks, _: &mut Context<Self>) -> Self::Result {
        let session = match &msg.session {
            Some(s) => match self.resolve(&msg.caller, s) {
                Ok(v) => Some(v.record.id),
                Err(e) => return fail(e),
            },
            None => None,
        };
        let load = self.store.load_webhooks(session);
        let caller = msg.caller;
        Box::pin(async move {
            let all = load.await.map_err(store_unavailable)?;
            Ok(all
                .into_iter()
                .filter(|w| caller.may_see(&w.session_id))
                .collect())
        })
    }
}

impl Handler<GetWebhook> for WebhookActor {
    type Result = Reply<WebhookRecord>;

    fn handle(&mut self, msg: GetWebhook, _: &mut Context<Self>) -> Self::Result {
        self.load(&msg.caller, Role::Viewer, &msg.session, &msg.webhook)
    }
}

impl Handler<UpdateWebhook> for WebhookActor {
    type Result = Reply<WebhookRecord>;

    fn handle(&mut self, msg: UpdateWebhook, ctx: &mut Context<Self>) -> Self::Result {
        let check = (|| {
            msg.caller.require(Role::Operator)?;
            if let Some(url) = &msg.url {
                validate_url(url)?;
            }
            let events = msg.events.as_deref().map(validate_events).transpose()?;
            if let Some(n) = msg.max_attempts {
                validate_max_attempts(n)?;
            }
            if let Some(h) = &msg.headers {
                validate_headers(h)?;
            }
            let (_, load) = self.find(&msg.caller, Role::Operator, &msg.session, &msg.webhook)?;
            Ok((events, load))
        })();
        let (events, load) = match check {
            Ok(v) => v,
            Err(e) => return fail(e),
        };
        let guard = msg.url.clone().map(|u| self.sender.check_url(u));
        let store = self.store.clone();
        let addr = ctx.address();
        // Only the fields sent are written: a concurrent PATCH of other
        // fields is not reverted.
        let patch = WebhookPatch {
            url: msg.url,
            events,
            headers: msg.headers,
            active: msg.active,
            max_attempts: msg.max_attempts,
            updated_at: Utc::now(),
        };
        Box::pin(async move {
            let id = load.await?.id;
            if let Some(guard) = guard {
                guard.await.map_err(url_not_allowed)?;
            }
            let record = store.update_webhook(id, patch).await.map_err(|e| match e {
                StoreError::NotFound => WebError::WebhookNotFound(id.to_string()),
                e => store_unavailable(e),
            })?;
            // Re-activated: its queue may be due.
            addr.do_send(Wake);
            Ok(record)
        })
    }
}

impl Handler<DeleteWebhook> for WebhookActor {
    type Result = Reply<()>;

    fn handle(&mut self, msg: DeleteWebhook, _: &mut Context<Self>) -> Self::Result {
        let load = self.load(&msg.caller, Role::Operator, &msg.session, &msg.webhook);
        let store = self.store.clone();
        Box::pin(async move {
            let record = load.await?;
            match store.delete_webhook(record.id).await {
                Ok(()) | Err(StoreError::NotFound) => Ok(()),
                Err(e) => Err(store_unavailable(e)),
            }
        })
    }
}

impl Handler<TestWebhook> for WebhookActor {
    type Result = Reply<SendResult>;

    fn handle(&mut self, msg: TestWebhook, _: &mut Context<Self>) -> Self::Result {
        let (view, load) = match self.find(&msg.caller, Role::Operator, &msg.session, &msg.webhook)
        {
            Ok(v) => v,
            Err(e) => return fail(e),
        };
        // Taken now, never queued for: past the limit the caller is told to retry.
        let Ok(permit) = self.test_sends.clone().try_acquire_owned() else {
            return fail(too_many_test_sends());
        };
        let store = self.store.clone();
        let sender = self.sender.clone();
        Box::pin(async move {
            let _permit = permit;
            let record = load.await?;
            let secret = store
                .webhook_secret(record.id)
                .await
                .map_err(store_unavailable)?;
            Ok(sender
                .send(WebhookRequest {
                    url: record.url,
                    secret,
                    headers: record.headers,
                    attempt: 1,
                    payload: WebhookPayload::Test {
                        session_id: view.record.id,
                        session_name: view.record.name,
                    },
                })
                .await)
        })
    }
}

impl Handler<ListDeliveries> for WebhookActor {
    type Result = Reply<Vec<AttemptRecord>>;

    fn handle(&mut self, msg: ListDeliveries, _: &mut Context<Self>) -> Self::Result {
        let load = self.load(&msg.caller, Role::Viewer, &msg.session, &msg.webhook);
        let store = self.store.clone();
        Box::pin(async move {
            let record = load.await?;
            store
                .list_attempts(record.id, msg.filter, msg.limit)
                .await
                .map_err(store_unavailable)
        })
    }
}

impl Handler<RedriveDelivery> for WebhookActor {
    type Result = Reply<()>;

    fn handle(&mut self, msg: RedriveDelivery, ctx: &mut Context<Self>) -> Self::Result {
        let load = self.load(&msg.caller, Role::Operator, &msg.session, &msg.webhook);
        let store = self.store.clone();
        let addr = ctx.address();
        Box::pin(async move {
            let record = load.await?;
            let event_id = msg.event_id;
            match store.redrive(record.id, event_id.clone(), Utc::now()).await {
                Ok(()) => {
                    addr.do_send(Wake);
                    Ok(())
                }
                Err(StoreError::NotFound) => Err(WebError::DeliveryNotFound(event_id)),
                Err(StoreError::Conflict(_)) => Err(WebError::DeliveryPending(event_id)),
                Err(e) => Err(store_unavailable(e)),
            }
        })
    }
}

impl Handler<OutboxDepth> for WebhookActor {
    type Result = ResponseFuture<Result<OutboxCounts, StoreError>>;

    fn handle(&mut self, _: OutboxDepth, _: &mut Context<Self>) -> Self::Result {
        self.store.outbox_depth()
    }
}
