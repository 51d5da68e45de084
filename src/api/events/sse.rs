//! The Server-Sent Events transport of an `EventStream`: `id:` = the event
//! id, `event:` = its name, `data:` = its envelope; a comment line as the
//! heartbeat; `event: stream.end` (no `id:`, so the resume point stays the
//! last event) as the last message.

use std::convert::Infallible;

use actix_web::web::Bytes;

use super::{EventStream, Item};

/// The response body of a stream.
pub fn body(stream: EventStream) -> impl futures::Stream<Item = Result<Bytes, Infallible>> {
    // The headers and this line go out at once: the client knows it is
    // connected before the first event.
    let hello =
        futures::stream::once(async { Ok(Bytes::from_static(b"retry: 2000\n: connected\n\n")) });
    let items = futures::stream::unfold(stream, |mut s| async move {
        let item = s.next_item().await?;
        Some((Ok(encode(item)), s))
    });
    futures::StreamExt::chain(hello, items)
}

fn encode(item: Item) -> Bytes {
    match item {
        Item::Event { id, name, body } => {
            let mut chunk = Vec::with_capacity(body.len() + 96);
            chunk.extend_from_slice(b"id: ");
            chunk.extend_from_slice(id.as_bytes());
            chunk.extend_from_slice(b"\nevent: ");
            chunk.extend_from_slice(name.as_bytes());
            chunk.extend_from_slice(b"\ndata: ");
            // Compact JSON has no newline, so one `data:` line holds it.
            chunk.extend_from_slice(&body);
            chunk.extend_from_slice(b"\n\n");
            Bytes::from(chunk)
        }
        Item::Heartbeat => Bytes::from_static(b": heartbeat\n\n"),
        Item::End { reason, message } => Bytes::from(format!(
            "event: stream.end\ndata: {}\n\n",
            Item::end_data(reason, &message)
        )),
    }
}
