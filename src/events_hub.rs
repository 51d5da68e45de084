//! The live event hub: every event committed to the session log is
//! published here once, right after its transaction commits, and fanned out
//! to the open event streams (`GET /api/events`). A bounded broadcast: a
//! stream that falls `buffer` events behind is cut off (it resumes from the
//! log with `Last-Event-ID`), so a slow reader never makes the gateway buffer
//! without bound. The hub also counts open streams per API key and tells
//! every stream when the server shuts down.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use tokio::sync::{broadcast, watch};
use wasup_actors::events::SessionEvent;
use wasup_actors::model::ApiKeyId;
use wasup_actors::webhook::WebhookPayload;

use crate::webhooks::render::{self, Envelope};

/// An event as the hub fans it out: its webhook envelope is rendered once,
/// by the first stream that shows it (a QR event renders an image), and
/// shared by every other stream.
pub struct LiveEvent {
    pub event: SessionEvent,
    envelope: OnceLock<Option<Envelope>>,
}

impl LiveEvent {
    pub fn new(event: SessionEvent) -> LiveEvent {
        LiveEvent {
            event,
            envelope: OnceLock::new(),
        }
    }

    /// The envelope, or None (logged once) when it cannot be rendered.
    pub fn envelope(&self) -> Option<&Envelope> {
        self.envelope
            .get_or_init(|| {
                render::envelope(&WebhookPayload::Event(self.event.clone()))
                    .map_err(|err| {
                        log::warn!("event stream: event {} not rendered: {err}", self.event.id)
                    })
                    .ok()
            })
            .as_ref()
    }
}

pub struct EventHub {
    tx: broadcast::Sender<Arc<LiveEvent>>,
    open: Mutex<HashMap<ApiKeyId, usize>>,
    max_per_key: usize,
    closing: watch::Sender<bool>,
}

/// One open stream: its place in the broadcast and in its key's count
/// (given back on drop).
pub struct StreamPermit {
    hub: Arc<EventHub>,
    key: ApiKeyId,
    pub live: broadcast::Receiver<Arc<LiveEvent>>,
    pub closing: watch::Receiver<bool>,
}

/// The key already has `max` streams open.
#[derive(Debug)]
pub struct StreamLimit {
    pub max: usize,
}

impl EventHub {
    /// `buffer`: events a stream may fall behind before it is cut off;
    /// `max_per_key`: concurrent streams per API key.
    pub fn new(buffer: usize, max_per_key: usize) -> Arc<EventHub> {
        let (tx, _) = broadcast::channel(buffer.max(1));
        let (closing, _) = watch::channel(false);
        Arc::new(EventHub {
            tx,
            open: Mutex::new(HashMap::new()),
            max_per_key,
            closing,
        })
    }

    /// Called after a commit that appended `events` to the log.
    pub fn publish(&self, events: &[SessionEvent]) {
        for event in events {
            // No receiver is not an error: nobody is watching.
            let _ = self.tx.send(Arc::new(LiveEvent::new(event.clone())));
        }
    }

    /// Open a stream for `key`: subscribed to the live events from now on
    /// (so a catch-up from the log that follows misses nothing).
    pub fn open(self: &Arc<Self>, key: ApiKeyId) -> Result<StreamPermit, StreamLimit> {
        let mut open = self.open.lock();
        let n = open.entry(key).or_insert(0);
        if *n >= self.max_per_key {
            return Err(StreamLimit {
                max: self.max_per_key,
            });
        }
        *n += 1;
        Ok(StreamPermit {
            hub: self.clone(),
            key,
            live: self.tx.subscribe(),
            closing: self.closing.subscribe(),
        })
    }

    /// Streams open now, all keys together (metrics, tests).
    pub fn open_streams(&self) -> usize {
        self.open.lock().values().sum()
    }

    /// Shutdown: every stream sends its last message and ends.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut open = self.hub.open.lock();
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ApiKeyId {
        uuid::Uuid::new_v4()
    }

    #[test]
    fn streams_per_key_are_limited_and_given_back() {
        let hub = EventHub::new(4, 2);
        let (a, b) = (key(), key());
        let one = hub.open(a).unwrap();
        let _two = hub.open(a).unwrap();
        assert_eq!(hub.open(a).err().unwrap().max, 2);
        let _other = hub.open(b).unwrap();
        drop(one);
        assert!(hub.open(a).is_ok());
        // The permit opened by `is_ok()` was dropped at once.
        assert_eq!(hub.open_streams(), 2);
    }

    #[tokio::test]
    async fn a_reader_too_far_behind_lags() {
        let hub = EventHub::new(2, 1);
        let mut permit = hub.open(key()).unwrap();
        let event = SessionEvent::default();
        hub.publish(&[event.clone(), event.clone(), event]);
        assert!(matches!(
            permit.live.recv().await,
            Err(broadcast::error::RecvError::Lagged(1))
        ));
    }
}
