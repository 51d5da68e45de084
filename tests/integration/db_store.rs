//! The database adapter seen from outside the crate, as the server wires it:
//! a `DbStore` behind `Arc<dyn Store>`, on every configured backend. Also
//! shows how integration tests get a fresh database: `TestDatabase::all`
//! (SQLite always; PostgreSQL when WASUP_TEST_DATABASE_URL is set).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;
use wasup::db::records::DbStore;
use wasup::db::testing::TestDatabase;
use wasup_actors::model::{SessionRecord, SessionStatus};
use wasup_actors::ports::{Store, StoreError};

#[tokio::test]
async fn store_port_over_every_backend() {
    for t in TestDatabase::all("db_store::store_port_over_every_backend") {
        let store: Arc<dyn Store> = Arc::new(DbStore::new(t.open()));
        store.ping().await.unwrap();

        let now = DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap();
        let mut record = SessionRecord::new(Uuid::new_v4(), "outside".into(), now);
        store.insert_session(record.clone()).await.unwrap();
        record.status = SessionStatus::Initializing;
        store.save_session(record.clone(), vec![]).await.unwrap();
        assert_eq!(store.load_sessions().await.unwrap(), vec![record.clone()]);
        assert!(matches!(
            store
                .insert_session(SessionRecord::new(Uuid::new_v4(), "outside".into(), now))
                .await,
            Err(StoreError::Conflict(_))
        ));
        store.delete_session(record.id).await.unwrap();
        assert!(store.load_sessions().await.unwrap().is_empty());
    }
}
