//! A message's context (mentions, the quoted message) at rest: JSON sealed
//! with the master key like the body, bound to (session, message id), since
//! a quote holds another message's text. NULL when there is none.

use serde::{Deserialize, Serialize};
use wasup_actors::outbound::{MessageContext, QuotedMessage};

use crate::crypto::SecretBox;

fn aad(session_id: &str, id: &str) -> Vec<u8> {
    format!("wasup/message/{session_id}/{id}/context").into_bytes()
}

/// The stored form; field names are part of the on-disk format.
#[derive(Serialize, Deserialize)]
struct Stored {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    mentions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    quoted: Option<StoredQuote>,
}

#[derive(Serialize, Deserialize)]
struct StoredQuote {
    id: String,
    chat_id: String,
    author: Option<String>,
    body: String,
}

pub(super) fn seal(
    boxed: &SecretBox,
    session_id: &str,
    id: &str,
    context: &MessageContext,
) -> Option<Vec<u8>> {
    if context.is_empty() {
        return None;
    }
    let stored = Stored {
        mentions: context.mentions.clone(),
        quoted: context.quoted.as_ref().map(|q| StoredQuote {
            id: q.id.clone(),
            chat_id: q.chat_id.clone(),
            author: q.author.clone(),
            body: q.body.clone(),
        }),
    };
    // Plain strings only: serializing cannot fail.
    let json = serde_json::to_vec(&stored).unwrap_or_default();
    Some(boxed.seal(&aad(session_id, id), &json))
}

pub(super) fn open(
    boxed: &SecretBox,
    session_id: &str,
    id: &str,
    sealed: Option<&[u8]>,
) -> Result<MessageContext, String> {
    let Some(sealed) = sealed else {
        return Ok(MessageContext::default());
    };
    let json = boxed
        .open(&aad(session_id, id), sealed)
        .map_err(|e| e.to_string())?;
    let stored: Stored = serde_json::from_slice(&json).map_err(|e| e.to_string())?;
    Ok(MessageContext {
        mentions: stored.mentions,
        quoted: stored.quoted.map(|q| QuotedMessage {
            id: q.id,
            chat_id: q.chat_id,
            author: q.author,
            body: q.body,
        }),
    })
}
