//! The JSON body of a delivery, rendered from the stored `SessionEvent`:
//! `{"id","event","timestamp","sessionId","sessionName","seq","data"}`.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use wasup_actors::events::{session_event::Data, SessionEvent};
use wasup_actors::webhook::WebhookPayload;

#[derive(Clone)]
pub struct Envelope {
    /// The event id: `webhook-id`, stable across retries.
    pub id: String,
    pub event: String,
    pub body: Vec<u8>,
}

fn iso_ms(ms: i64) -> Value {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| Value::String(t.to_rfc3339_opts(SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

/// The `data` object of an event.
pub fn data(event: &SessionEvent) -> Result<Value, crate::qr::QrError> {
    Ok(match &event.data {
        Some(Data::Status(s)) => json!({
            "status": s.status,
            "previousStatus": s.previous_status,
            "lastError": s.last_error,
        }),
        // A QR past its life has no text left in the log (db::qr_log): a
        // late delivery or a replay says so instead.
        Some(Data::Qr(q)) if q.expired || q.qr.is_empty() => json!({
            "qr": null,
            "qrCode": null,
            "expiresAt": iso_ms(q.expires_at_ms),
            "expired": true,
        }),
        Some(Data::Qr(q)) => json!({
            "qr": q.qr,
            "qrCode": crate::qr::data_url(&q.qr)?,
            "expiresAt": iso_ms(q.expires_at_ms),
            "expired": false,
        }),
        Some(Data::Authenticated(a)) => json!({
            "phone": a.phone,
            "pushName": a.push_name,
        }),
        Some(Data::Disconnected(d)) => json!({
            "reason": d.reason,
            "willRetry": d.will_retry,
            "nextRetryAt": d.next_retry_at_ms.map(iso_ms).unwrap_or(Value::Null),
        }),
        // Message events (issue 11); `body` is opened from the sealed copy
        // by the store before delivery, never stored in the clear.
        Some(Data::MessageReceived(m)) | Some(Data::MessageSent(m)) => json!({
            "id": m.id,
            "from": m.from,
            "to": m.to,
            "chatId": m.chat_id,
            "body": m.body,
            "type": m.r#type,
            "timestamp": m.timestamp,
            "fromMe": m.from_me,
            "isGroup": m.is_group,
            "author": m.author,
            "pushName": m.push_name,
            "mentionedIds": m.mentioned_ids,
            "quotedMessageId": m.quoted_message_id,
        }),
        Some(Data::MessageAck(a)) => json!({
            "messageId": a.message_id,
            "chatId": a.chat_id,
            "status": a.status,
            "at": iso_ms(a.at_ms),
        }),
        Some(Data::MessageFailed(f)) => json!({
            "messageId": f.message_id,
            "chatId": f.chat_id,
            "error": f.error,
            "at": iso_ms(f.at_ms),
        }),
        None => json!({}),
    })
}

pub fn envelope(payload: &WebhookPayload) -> Result<Envelope, crate::qr::QrError> {
    let (id, event, value) = match payload {
        WebhookPayload::Event(e) => {
            let value = json!({
                "id": e.id,
                "event": e.name(),
                "timestamp": iso_ms(e.timestamp_ms),
                "sessionId": e.session_id,
                "sessionName": e.session_name,
                "seq": e.seq,
                "data": data(e)?,
            });
            (e.id.clone(), e.name().to_string(), value)
        }
        WebhookPayload::Test {
            session_id,
            session_name,
        } => {
            let id = format!("evt_{}", uuid::Uuid::now_v7().simple());
            let value = json!({
                "id": id,
                "event": "webhook.test",
                "timestamp": iso_ms(Utc::now().timestamp_millis()),
                "sessionId": session_id.to_string(),
                "sessionName": session_name,
                "seq": 0,
                "data": {"test": true},
            });
            (id, "webhook.test".to_string(), value)
        }
    };
    Ok(Envelope {
        id,
        event,
        body: serde_json::to_vec(&value).expect("a JSON value serializes"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasup_actors::events::{QrRotated, StatusChanged};

    fn event(data: Data) -> SessionEvent {
        SessionEvent {
            id: "evt_1".into(),
            session_id: "s-1".into(),
            session_name: "bot".into(),
            seq: 17,
            timestamp_ms: 1_750_842_000_000,
            data: Some(data),
        }
    }

    #[test]
    fn status_envelope() {
        let e = envelope(&WebhookPayload::Event(event(Data::Status(StatusChanged {
            status: "ready".into(),
            previous_status: "authenticating".into(),
            last_error: None,
        }))))
        .unwrap();
        let v: Value = serde_json::from_slice(&e.body).unwrap();
        assert_eq!(
            v,
            json!({"id":"evt_1","event":"session.status","timestamp":"2025-06-25T09:00:00.000Z",
                   "sessionId":"s-1","sessionName":"bot","seq":17,
                   "data":{"status":"ready","previousStatus":"authenticating","lastError":null}})
        );
        assert_eq!(
            (e.id.as_str(), e.event.as_str()),
            ("evt_1", "session.status")
        );
    }

    #[test]
    fn qr_envelope_carries_a_png_data_url() {
        let e = envelope(&WebhookPayload::Event(event(Data::Qr(QrRotated {
            qr: "2@abc".into(),
            expires_at_ms: 1_750_842_060_000,
            expired: false,
        }))))
        .unwrap();
        let v: Value = serde_json::from_slice(&e.body).unwrap();
        assert_eq!(v["data"]["qr"], "2@abc");
        assert_eq!(v["data"]["expiresAt"], "2025-06-25T09:01:00.000Z");
        assert!(v["data"]["qrCode"]
            .as_str()
            .unwrap()
            .starts_with("data:image/png;base64,"));
        assert_eq!(v["data"]["expired"], false);
    }

    #[test]
    fn an_expired_qr_renders_without_its_payload() {
        let mut qr = QrRotated {
            qr: "2@abc".into(),
            expires_at_ms: 1_750_842_060_000,
            expired: false,
        };
        qr.expire();
        let e = envelope(&WebhookPayload::Event(event(Data::Qr(qr)))).unwrap();
        let v: Value = serde_json::from_slice(&e.body).unwrap();
        assert_eq!(
            v["data"],
            json!({"qr": null, "qrCode": null, "expiresAt": "2025-06-25T09:01:00.000Z", "expired": true})
        );
    }
}
