//! The WebSocket transport of an `EventStream` (actix-ws): each event is one
//! text frame holding its envelope, the heartbeat is a ping frame, and the
//! end is a text frame `{"event": "stream.end", "data": {…}}` followed by a
//! close frame whose reason is the end's `reason`. Frames are written
//! through actix-ws's bounded queue: a reader that does not drain its
//! socket stalls its pump, the hub's buffer for it fills, and it is cut off
//! as `slow_consumer` like an SSE reader.

use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{CloseCode, CloseReason, Message};
use futures::StreamExt;

use super::{EventStream, Item};
use crate::api::error::ApiError;

/// Answer the upgrade and pump `stream` into the socket.
pub fn upgrade(
    req: &HttpRequest,
    payload: web::Payload,
    stream: EventStream,
) -> Result<HttpResponse, ApiError> {
    let (res, session, incoming) = actix_ws::handle(req, payload).map_err(|_| {
        ApiError::validation(
            "GET /api/events/ws expects a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket, Sec-WebSocket-Key, Sec-WebSocket-Version: 13); use GET /api/events for Server-Sent Events",
        )
    })?;
    actix_web::rt::spawn(pump(stream, session, incoming));
    Ok(res)
}

fn close_code(reason: &str) -> CloseCode {
    match reason {
        "slow_consumer" => CloseCode::Policy,
        "shutting_down" => CloseCode::Away,
        "caught_up" => CloseCode::Normal,
        _ => CloseCode::Error,
    }
}

async fn pump(
    mut stream: EventStream,
    mut session: actix_ws::Session,
    mut incoming: actix_ws::MessageStream,
) {
    loop {
        tokio::select! {
            item = stream.next_item() => match item {
                Some(Item::Event { body, .. }) => {
                    // An envelope is JSON, so UTF-8.
                    let text = String::from_utf8_lossy(&body).into_owned();
                    if session.text(text).await.is_err() {
                        return;
                    }
                }
                Some(Item::Heartbeat) => {
                    if session.ping(b"").await.is_err() {
                        return;
                    }
                }
                Some(Item::End { reason, message }) => {
                    let end = serde_json::json!({
                        "event": "stream.end",
                        "data": Item::end_data(reason, &message),
                    });
                    let _ = session.text(end.to_string()).await;
                    let _ = session
                        .close(Some(CloseReason {
                            code: close_code(reason),
                            description: Some(reason.to_string()),
                        }))
                        .await;
                    return;
                }
                None => {
                    let _ = session.close(None).await;
                    return;
                }
            },
            frame = incoming.next() => match frame {
                Some(Ok(Message::Ping(bytes))) => {
                    if session.pong(&bytes).await.is_err() {
                        return;
                    }
                }
                // The client closed, the socket broke, or it spoke out of turn.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    let _ = session.close(None).await;
                    return;
                }
                // Text, binary and pongs from the client are ignored.
                Some(Ok(_)) => {}
            },
        }
    }
}
