//! wacore's storage traits over our database, one `DeviceDb` per session.
//!
//! Every item lives in one generic table, `device_state`, keyed by
//! `(session_id, kind, k, k2, k3)`. `value` is always sealed with the master
//! key (`SecretBox`, bound to the row's key as associated data, so a row
//! copied elsewhere does not open); `n1`/`n2` hold the few numbers a trait
//! filters or sorts on (ids, timestamps, flags). Behaviour follows wacore's
//! `InMemoryBackend` method by method.
//!
//! One module per wacore storage trait (`signal`, `app_sync`, `protocol`,
//! `msg_secret`, `device`), over the row helpers in `rows`.

use std::sync::Arc;

use diesel::prelude::*;

use crate::crypto::SecretBox;
use crate::db::{Db, DbConn, DbError};

use crate::db::schema::device_state;
use device_state::dsl as ds;

/// Run the same diesel code on whichever backend the connection is.
macro_rules! each_backend {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            DbConn::Sqlite($c) => $body,
            DbConn::Postgres($c) => $body,
        }
    };
}

mod app_sync;
mod device;
mod hot;
mod msg_secret;
mod protocol;
mod rows;
mod signal;
#[cfg(test)]
pub(crate) mod tests;

// Kinds of items.
const DEVICE: &str = "device";
const IDENTITY: &str = "identity";
const SESSION: &str = "session";
const PREKEY: &str = "prekey";
const SIGNED_PREKEY: &str = "signed_prekey";
const SENDER_KEY: &str = "sender_key";
const SYNC_KEY: &str = "sync_key";
const LATEST_SYNC_KEY: &str = "latest_sync_key";
const APP_VERSION: &str = "app_state_version";
const MUTATION_MAC: &str = "mutation_mac";
const SKD: &str = "sender_key_device";
const LID: &str = "lid_mapping";
const BASE_KEY: &str = "base_key";
const DEVICE_LIST: &str = "device_list";
const GROUP_META: &str = "group_metadata";
const TC_TOKEN: &str = "tc_token";
const SENT_MSG: &str = "sent_message";
const PENDING_IN: &str = "pending_inbound";
const MSG_SECRET: &str = "msg_secret";

/// Delete every device row of a session (logout, delete).
pub async fn forget_session(db: &Db, session_id: &str) -> std::result::Result<usize, DbError> {
    let sid = session_id.to_string();
    db.run(move |conn| {
        each_backend!(conn, c => diesel::delete(ds::device_state.filter(ds::session_id.eq(&sid)))
            .execute(c)
            .map_err(DbError::from))
    })
    .await
}

/// The device store of one session.
pub struct DeviceDb {
    db: Db,
    secrets: Arc<SecretBox>,
    sid: String,
    /// Serializes read-modify-write operations the traits require to be
    /// atomic (tc tokens; message secrets merge inside their write). One
    /// store serves one client.
    rmw: tokio::sync::Mutex<()>,
    /// Signal sessions, identities and tc tokens in memory, written through.
    hot: hot::HotRows,
}

impl DeviceDb {
    pub fn new(db: Db, secrets: Arc<SecretBox>, session_id: impl Into<String>) -> DeviceDb {
        DeviceDb {
            db,
            secrets,
            sid: session_id.into(),
            rmw: tokio::sync::Mutex::new(()),
            hot: hot::HotRows::default(),
        }
    }

    #[cfg(test)]
    pub(crate) fn hot_len(&self) -> usize {
        self.hot.len()
    }
}
