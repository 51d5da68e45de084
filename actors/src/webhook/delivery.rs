//! The WebhookActor and its delivery loop: poll the outbox, send each
//! webhook's head row, retry with backoff, commit finished attempts in
//! batches, prune old rows.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use rand::Rng;

use super::management::MAX_TEST_SENDS;
use super::ports::*;
use super::records::*;
use crate::ports::StoreError;
use crate::registry::SessionRegistry;

/// Delay before attempt `attempt + 1` after attempt `attempt` failed:
/// full jitter over `base · 2^(attempt-1)`, capped; `Retry-After` (capped)
/// replaces it when the receiver sent one.
pub fn retry_delay(
    attempt: u32,
    retry_after: Option<Duration>,
    base: Duration,
    cap: Duration,
    rng: &mut impl Rng,
) -> Duration {
    if let Some(after) = retry_after {
        return after.min(cap);
    }
    let exp = base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(cap);
    let ms = exp.as_millis() as u64;
    Duration::from_millis(rng.random_range(0..=ms))
}

/// New work may be due: poll the outbox now.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Wake;

/// The longest a freed slot waits for the next poll (see `refill`).
const REFILL_DELAY: Duration = Duration::from_millis(25);

#[derive(Clone, Debug)]
pub struct WebhookOptions {
    /// Deliveries in flight at once, over all webhooks (each webhook has at most one).
    pub max_concurrency: usize,
    /// How often the outbox is polled besides the wake-ups.
    pub poll_interval: Duration,
    /// Delivered rows and attempt logs older than this are pruned.
    pub retention: Duration,
    /// Dead letters untouched for this long are pruned with their attempts.
    pub dead_letter_retention: Duration,
    pub prune_interval: Duration,
    pub retry_base: Duration,
    pub retry_cap: Duration,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        WebhookOptions {
            max_concurrency: 128,
            poll_interval: Duration::from_millis(500),
            retention: Duration::from_secs(7 * 24 * 3600),
            dead_letter_retention: Duration::from_secs(30 * 24 * 3600),
            prune_interval: Duration::from_secs(3600),
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(600),
        }
    }
}

pub struct WebhookActor {
    pub(super) store: Arc<dyn WebhookStore>,
    pub(super) sender: Arc<dyn WebhookSender>,
    pub(super) registry: Arc<SessionRegistry>,
    signal: Option<Arc<WorkSignal>>,
    options: WebhookOptions,
    /// Webhooks with a delivery in flight (one each).
    busy: HashSet<WebhookId>,
    /// Attempts that finished and wait for the next commit.
    finished: Vec<AttemptDone>,
    flushing: bool,
    polling: bool,
    /// A delayed refill poll is scheduled.
    refill_due: bool,
    poll_again: bool,
    /// Permits for `POST …/test` sends, which run beside the outbox loop's
    /// `max_concurrency`: without a bound, callers could hold any number of
    /// connections and buffers open at once.
    pub(super) test_sends: Arc<tokio::sync::Semaphore>,
}

impl WebhookActor {
    /// After a commit freed some webhooks: poll only once half the slots
    /// are free. A poll costs one index probe per webhook however few rows
    /// it returns, so refilling one slot at a time would spend the database
    /// on polls (the interval and new events still poll at once).
    /// Otherwise the next poll comes within `REFILL_DELAY`, so a webhook
    /// with a backlog is not held up by slow receivers filling the slots.
    fn refill(&mut self, ctx: &mut Context<Self>) {
        if self.busy.len() <= self.options.max_concurrency / 2 {
            self.poll(ctx);
        } else if !self.refill_due {
            self.refill_due = true;
            ctx.run_later(REFILL_DELAY, |act, ctx| {
                act.refill_due = false;
                act.poll(ctx);
            });
        }
    }

    fn poll(&mut self, ctx: &mut Context<Self>) {
        if self.polling {
            self.poll_again = true;
            return;
        }
        let room = self.options.max_concurrency.saturating_sub(self.busy.len());
        if room == 0 {
            return;
        }
        self.polling = true;
        let busy: Vec<WebhookId> = self.busy.iter().copied().collect();
        let due = self.store.due_deliveries(Utc::now(), busy, room);
        ctx.spawn(due.into_actor(self).map(|res, act, ctx| {
            act.polling = false;
            match res {
                Ok(jobs) => {
                    for job in jobs {
                        if act.busy.len() >= act.options.max_concurrency {
                            break;
                        }
                        if act.busy.insert(job.webhook_id) {
                            act.deliver(job, ctx);
                        }
                    }
                }
                Err(e) => log::warn!("webhooks: reading the outbox failed: {e}"),
            }
            if std::mem::take(&mut act.poll_again) {
                act.poll(ctx);
            }
        }));
    }

    fn deliver(&mut self, job: DeliveryJob, ctx: &mut Context<Self>) {
        let sender = self.sender.clone();
        let options = self.options.clone();
        let webhook_id = job.webhook_id;
        let work = async move {
            let event_id = job.event.id.clone();
            let event_name = job.event.name().to_string();
            let result = sender
                .send(WebhookRequest {
                    url: job.url,
                    secret: job.secret,
                    headers: job.headers,
                    attempt: job.attempt,
                    payload: WebhookPayload::Event(job.event),
                })
                .await;
            let now = Utc::now();
            let (outcome, next) = if result.delivered() {
                (AttemptOutcome::Delivered, AfterAttempt::Delivered)
            } else if job.attempt >= job.max_attempts {
                (AttemptOutcome::Dead, AfterAttempt::Dead)
            } else {
                let delay = retry_delay(
                    job.attempt,
                    result.retry_after,
                    options.retry_base,
                    options.retry_cap,
                    &mut rand::rng(),
                );
                let at = now + chrono::Duration::from_std(delay).unwrap_or_default();
                (AttemptOutcome::Failed, AfterAttempt::RetryAt(at))
            };
            crate::metrics::METRICS.webhook_attempt(outcome, result.latency_ms);
            match outcome {
                AttemptOutcome::Delivered => {}
                AttemptOutcome::Failed => log::info!(
                    "webhook {webhook_id}: event {event_id} attempt {} failed: {}",
                    job.attempt,
                    result.error.as_deref().unwrap_or("-")
                ),
                AttemptOutcome::Dead => log::warn!(
                    "webhook {webhook_id}: event {event_id} dead-lettered after {} attempts: {}",
                    job.attempt,
                    result.error.as_deref().unwrap_or("-")
                ),
            }
            AttemptDone {
                delivery_id: job.delivery_id,
                webhook_id,
                attempt: AttemptRecord {
                    event_id,
                    event_name,
                    attempt: job.attempt,
                    outcome,
                    status_code: result.status_code,
                    error: result.error,
                    latency_ms: result.latency_ms,
                    at: now,
                },
                next,
            }
        };
        ctx.spawn(work.into_actor(self).map(|done, act, ctx| {
            act.finished.push(done);
            act.flush(ctx);
        }));
    }

    /// Commit what finished, in one transaction. The webhooks stay busy
    /// until then, so a row is never sent again while its outcome is being
    /// written; whatever finishes meanwhile goes in the next commit.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.flushing || self.finished.is_empty() {
            return;
        }
        self.flushing = true;
        let done = std::mem::take(&mut self.finished);
        let hooks: Vec<WebhookId> = done.iter().map(|d| d.webhook_id).collect();
        let record = self.store.record_attempts(done);
        ctx.spawn(record.into_actor(self).map(move |res, act, ctx| {
            act.flushing = false;
            match res {
                Ok(()) | Err(StoreError::NotFound) => {
                    for hook in &hooks {
                        act.busy.remove(hook);
                    }
                    act.flush(ctx);
                    act.refill(ctx);
                }
                Err(e) => {
                    // The rows stay pending and are sent again: at least once.
                    log::error!("webhooks: recording {} attempts failed: {e}", hooks.len());
                    ctx.run_later(Duration::from_secs(5), move |act, ctx| {
                        for hook in &hooks {
                            act.busy.remove(hook);
                        }
                        act.flush(ctx);
                        act.poll(ctx);
                    });
                }
            }
        }));
    }

    fn prune(&mut self, ctx: &mut Context<Self>) {
        let retention = chrono::Duration::from_std(self.options.retention)
            .unwrap_or_else(|_| chrono::Duration::days(7));
        let dead_retention = chrono::Duration::from_std(self.options.dead_letter_retention)
            .unwrap_or_else(|_| chrono::Duration::days(30));
        // Dead letters first, so the events they held go in the same round.
        let prune_dead = self.store.prune_dead_letters(Utc::now() - dead_retention);
        let store = self.store.clone();
        ctx.spawn(
            async move {
                match prune_dead.await {
                    Ok(0) => {}
                    Ok(n) => log::info!("webhooks: pruned {n} old dead letters"),
                    Err(e) => log::warn!("webhooks: pruning dead letters failed: {e}"),
                }
                match store.prune(Utc::now() - retention).await {
                    Ok(0) => {}
                    Ok(n) => log::info!("webhooks: pruned {n} old delivery rows"),
                    Err(e) => log::warn!("webhooks: pruning failed: {e}"),
                }
            }
            .into_actor(self),
        );
    }
}

impl Actor for WebhookActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.options.poll_interval, |act, ctx| act.poll(ctx));
        ctx.run_interval(self.options.prune_interval, |act, ctx| act.prune(ctx));
        self.prune(ctx);
        self.poll(ctx);
        if let Some(signal) = self.signal.clone() {
            let addr = ctx.address();
            actix::spawn(async move {
                loop {
                    signal.notified().await;
                    if addr.try_send(Wake).is_err() && !addr.connected() {
                        break;
                    }
                }
            });
        }
    }
}

impl Handler<Wake> for WebhookActor {
    type Result = ();
    fn handle(&mut self, _: Wake, ctx: &mut Context<Self>) {
        self.poll(ctx);
    }
}

/// Start the WebhookActor (inside an actix System).
pub fn start_webhooks(
    store: Arc<dyn WebhookStore>,
    sender: Arc<dyn WebhookSender>,
    registry: Arc<SessionRegistry>,
    signal: Option<Arc<WorkSignal>>,
    options: WebhookOptions,
) -> Addr<WebhookActor> {
    WebhookActor {
        store,
        sender,
        registry,
        signal,
        options,
        busy: HashSet::new(),
        finished: Vec::new(),
        flushing: false,
        polling: false,
        refill_due: false,
        poll_again: false,
        test_sends: Arc::new(tokio::sync::Semaphore::new(MAX_TEST_SENDS)),
    }
    .start()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_full_jitter_capped_and_honours_retry_after() {
        let mut rng = rand::rng();
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(600);
        for attempt in 1..=20 {
            let d = retry_delay(attempt, None, base, cap, &mut rng);
            let bound = base.saturating_mul(1 << (attempt - 1).min(20)).min(cap);
            assert!(d <= bound, "{attempt}: {d:?} > {bound:?}");
        }
        assert_eq!(
            retry_delay(3, Some(Duration::from_secs(7)), base, cap, &mut rng),
            Duration::from_secs(7)
        );
        assert_eq!(
            retry_delay(3, Some(Duration::from_secs(7200)), base, cap, &mut rng),
            cap
        );
    }
}
