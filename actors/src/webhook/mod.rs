//! Webhooks: the records, the two ports they need (`WebhookStore` for the
//! outbox and the attempt log, `WebhookSender` for signed HTTP POSTs and the
//! address checks), the API's webhook messages, and the WebhookActor that
//! delivers from the outbox.
//!
//! Delivery reads from the database only. The outbox rows are written by
//! `Store::save_session` in the same transaction as the state change that
//! caused the event; the actor is woken by a [`WorkSignal`] after such a
//! commit and also polls, so rows left pending by a crash are picked up at
//! start. Each webhook delivers one event at a time, lowest `seq` first (a
//! receiver sees a session's events in order); different webhooks deliver in
//! parallel up to `max_concurrency`, so a slow receiver only delays itself.
//! Finished attempts are committed together (one transaction for whatever
//! finished while the previous commit ran), and a webhook stays busy until
//! its attempt is committed, so a row is never in flight twice.
//! A row is marked delivered only after a 2xx; other outcomes retry with
//! exponential backoff and full jitter (1 s … 10 min, `Retry-After`
//! honoured) until `max_attempts`, then the row is dead-lettered.
//!
//! - `records`: the stored webhook and its attempts; `ports`: `WebhookStore`
//!   and `WebhookSender`; `validation`: what the API may give;
//!   `management`: the API's messages and their handlers; `delivery`: the
//!   actor and its delivery loop.

mod delivery;
mod management;
mod ports;
mod records;
mod validation;

pub use delivery::*;
pub use management::*;
pub use ports::*;
pub use records::*;
pub use validation::*;
