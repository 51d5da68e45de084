//! The WebActor: it enforces roles and scopes, validates the domain rules,
//! reads the registry and talks to the store and the supervisor. It never
//! blocks: database work and engine calls run as futures.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use chrono::Utc;
use uuid::Uuid;

use super::messages::*;
use super::proxy_guard::check_proxy_url;
use super::settings::validate_sending;
use super::validation::*;
use crate::error::WebError;
use crate::keys::{self, KeyRing};
use crate::model::*;
use crate::ports::{Store, StoreError};
use crate::registry::SessionRegistry;
use crate::state::{pairing_allowed, shown_qr};
use crate::supervisor::{Command, GetStats, RequestPairing, SessionSupervisor};

pub(super) fn store_unavailable(err: StoreError) -> WebError {
    log::error!("store: {err}");
    WebError::Unavailable("The database is unavailable; try again later".to_string())
}

pub(super) fn actors_unavailable(_: MailboxError) -> WebError {
    WebError::Unavailable("The session supervisor is not available; try again later".to_string())
}

/// May `caller` see and revoke `key`? An unscoped caller: every key. A
/// scoped one: only keys limited to sessions inside its own scope, never an
/// unscoped key. Keys outside answer 404 like unknown ones, so a scoped admin
/// cannot even learn that they exist.
fn within_scope(caller: &Caller, key: &ApiKeyRecord) -> bool {
    match (&caller.scope, &key.allowed_sessions) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(_), Some(ids)) if ids.is_empty() => false,
        (Some(_), Some(ids)) => ids.iter().all(|id| caller.may_see(id)),
    }
}

pub(super) type Reply<T> = ResponseActFuture<WebActor, Result<T, WebError>>;

pub(super) fn done<T: 'static>(res: Result<T, WebError>) -> Reply<T> {
    Box::pin(fut::ready(res))
}

pub struct WebActor {
    store: Arc<dyn Store>,
    pub(super) registry: Arc<SessionRegistry>,
    keys: Arc<KeyRing>,
    pub(super) supervisor: Addr<SessionSupervisor>,
    /// Names of sessions being created (the store has not answered yet),
    /// with the key creating each.
    pending_names: HashMap<String, ApiKeyId>,
}

impl Actor for WebActor {
    type Context = Context<Self>;
}

impl WebActor {
    pub fn new(
        store: Arc<dyn Store>,
        registry: Arc<SessionRegistry>,
        keys: Arc<KeyRing>,
        supervisor: Addr<SessionSupervisor>,
    ) -> Self {
        WebActor {
            store,
            registry,
            keys,
            supervisor,
            pending_names: HashMap::new(),
        }
    }

    /// Find a session by id or name, then check the caller may see it.
    pub(super) fn resolve(&self, caller: &Caller, id: &str) -> Result<SessionView, WebError> {
        self.registry.resolve_for(caller, id)
    }

    /// The session an operator acts on: the role first, then `resolve`.
    pub(super) fn resolve_as_operator(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<SessionView, WebError> {
        caller.require(Role::Operator)?;
        self.resolve(caller, id)
    }

    /// Send `command` for the session `id`/name the caller names, as an operator.
    fn command(
        &self,
        caller: &Caller,
        id: &str,
        command: SessionCommand,
    ) -> ResponseFuture<Result<SessionView, WebError>> {
        let id = match self.resolve_as_operator(caller, id) {
            Ok(view) => view.record.id,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let send = self.supervisor.send(Command { id, command });
        Box::pin(async move { send.await.map_err(actors_unavailable)? })
    }
}

impl Handler<CreateSession> for WebActor {
    type Result = Reply<SessionRecord>;

    fn handle(&mut self, msg: CreateSession, _: &mut Context<Self>) -> Self::Result {
        let key = msg.caller.key_id;
        let check = (|| {
            msg.caller.require(Role::Operator)?;
            if msg.caller.scope.is_some() {
                return Err(WebError::ScopeForbidden(
                    "An API key limited to specific sessions cannot create sessions".to_string(),
                ));
            }
            validate_session_name(&msg.name)?;
            let proxy_type = validate_proxy(msg.proxy_url.as_deref(), msg.proxy_type)?;
            validate_sending(msg.config.sending.as_ref())?;
            if self.registry.name_taken(&msg.name) || self.pending_names.contains_key(&msg.name) {
                return Err(WebError::SessionNameTaken(msg.name.clone()));
            }
            let limits = crate::limits::get();
            limits.check_metadata(msg.config.metadata.as_ref())?;
            limits.check_sessions(self.registry.len() + self.pending_names.len())?;
            let pending_by_key = self.pending_names.values().filter(|k| **k == key).count();
            limits.check_sessions_per_key(self.registry.created_by(key) + pending_by_key)?;
            Ok(proxy_type)
        })();
        let proxy_type = match check {
            Ok(t) => t,
            Err(e) => return done(Err(e)),
        };
        let now = Utc::now();
        let mut record = SessionRecord::new(Uuid::new_v4(), msg.name.clone(), now);
        record.config = Arc::new(msg.config);
        record.proxy_url = msg.proxy_url;
        record.proxy_type = proxy_type;
        record.created_by = Some(key);
        self.pending_names.insert(record.name.clone(), key);
        let guard = check_proxy_url(record.proxy_url.clone());
        let store = self.store.clone();
        let insert = {
            let record = record.clone();
            async move {
                guard.await?;
                store.insert_session(record).await.map_err(|e| match e {
                    StoreError::Conflict(_) => WebError::SessionNameTaken(String::new()),
                    e => store_unavailable(e),
                })
            }
        };
        Box::pin(insert.into_actor(self).map(move |res, act, _| {
            act.pending_names.remove(&record.name);
            match res {
                Ok(()) => {
                    act.registry.upsert(SessionView {
                        record: record.clone(),
                        next_retry_at: None,
                        restarts: 0,
                        engine_alive: false,
                        qr: None,
                    });
                    Ok(record)
                }
                Err(WebError::SessionNameTaken(_)) => Err(WebError::SessionNameTaken(record.name)),
                Err(e) => Err(e),
            }
        }))
    }
}

impl Handler<ListSessions> for WebActor {
    type Result = Result<Vec<SessionView>, WebError>;

    fn handle(&mut self, msg: ListSessions, _: &mut Context<Self>) -> Self::Result {
        Ok(self.registry.list(&msg.caller))
    }
}

impl Handler<GetSession> for WebActor {
    type Result = Result<SessionView, WebError>;

    fn handle(&mut self, msg: GetSession, _: &mut Context<Self>) -> Self::Result {
        self.resolve(&msg.caller, &msg.id)
    }
}

impl Handler<DeleteSession> for WebActor {
    type Result = ResponseFuture<Result<(), WebError>>;

    fn handle(&mut self, msg: DeleteSession, _: &mut Context<Self>) -> Self::Result {
        let fut = self.command(&msg.caller, &msg.id, SessionCommand::Delete);
        Box::pin(async move { fut.await.map(|_| ()) })
    }
}

impl Handler<RunCommand> for WebActor {
    type Result = ResponseFuture<Result<SessionView, WebError>>;

    fn handle(&mut self, msg: RunCommand, _: &mut Context<Self>) -> Self::Result {
        self.command(&msg.caller, &msg.id, msg.command)
    }
}

impl Handler<GetQr> for WebActor {
    type Result = Result<(QrCode, SessionStatus), WebError>;

    fn handle(&mut self, msg: GetQr, _: &mut Context<Self>) -> Self::Result {
        let view = self.resolve_as_operator(&msg.caller, &msg.id)?;
        let qr = shown_qr(&view)?.clone();
        Ok((qr, SessionStatus::QrReady))
    }
}

impl Handler<RequestPairingCode> for WebActor {
    type Result = ResponseFuture<Result<PairingCode, WebError>>;

    fn handle(&mut self, msg: RequestPairingCode, _: &mut Context<Self>) -> Self::Result {
        let check = self
            .resolve_as_operator(&msg.caller, &msg.id)
            .and_then(|view| {
                pairing_allowed(&view.record.name, view.record.status)?;
                Ok(view)
            });
        let view = match check {
            Ok(v) => v,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let send = self.supervisor.send(RequestPairing {
            id: view.record.id,
            phone: msg.phone,
        });
        Box::pin(async move {
            let code = send.await.map_err(actors_unavailable)??;
            Ok(PairingCode {
                code,
                status: SessionStatus::QrReady,
            })
        })
    }
}

impl Handler<GetMe> for WebActor {
    type Result = Result<Option<Me>, WebError>;

    fn handle(&mut self, msg: GetMe, _: &mut Context<Self>) -> Self::Result {
        let view = self.resolve(&msg.caller, &msg.id)?;
        Ok(view.record.phone.map(|phone| Me {
            phone,
            push_name: view.record.push_name,
        }))
    }
}

impl Handler<GetOverview> for WebActor {
    type Result = Result<Overview, WebError>;

    fn handle(&mut self, msg: GetOverview, _: &mut Context<Self>) -> Self::Result {
        Ok(self.registry.overview(&msg.caller))
    }
}

impl Handler<CreateApiKey> for WebActor {
    type Result = ResponseFuture<Result<(ApiKeyRecord, String), WebError>>;

    fn handle(&mut self, msg: CreateApiKey, _: &mut Context<Self>) -> Self::Result {
        let now = Utc::now();
        let check = (|| {
            msg.caller.require(Role::Admin)?;
            let len = msg.name.trim().chars().count();
            if len == 0 || msg.name.chars().count() > API_KEY_NAME_MAX {
                return Err(WebError::Validation(format!(
                    "name must be 1–{API_KEY_NAME_MAX} characters"
                )));
            }
            let allowed = msg.allowed_sessions.as_deref().unwrap_or_default();
            for id in allowed {
                if self.registry.get(*id).is_none() {
                    return Err(WebError::Validation(format!(
                        "allowedSessions: session '{id}' does not exist"
                    )));
                }
                if !msg.caller.may_see(id) {
                    return Err(WebError::SessionNotInScope(id.to_string()));
                }
            }
            if allowed.is_empty() && msg.caller.scope.is_some() {
                return Err(WebError::ScopeForbidden(
                    "An API key limited to specific sessions can only create keys limited to those sessions".to_string(),
                ));
            }
            if msg.expires_at.is_some_and(|at| at <= now) {
                return Err(WebError::Validation(
                    "expiresAt must be in the future".to_string(),
                ));
            }
            Ok(())
        })();
        if let Err(e) = check {
            return Box::pin(async move { Err(e) });
        }
        let secret = keys::generate_key();
        let record = ApiKeyRecord {
            id: Uuid::new_v4(),
            name: msg.name,
            key_prefix: keys::key_prefix(&secret),
            key_hash: keys::hash_key(&secret),
            role: msg.role,
            allowed_sessions: msg.allowed_sessions,
            expires_at: msg.expires_at,
            created_at: now,
            revoked_at: None,
        };
        let insert = self.store.insert_api_key(record.clone());
        let ring = self.keys.clone();
        Box::pin(async move {
            insert.await.map_err(store_unavailable)?;
            ring.insert(record.clone());
            Ok((record, secret))
        })
    }
}

impl Handler<ListApiKeys> for WebActor {
    type Result = Result<Vec<ApiKeyRecord>, WebError>;

    fn handle(&mut self, msg: ListApiKeys, _: &mut Context<Self>) -> Self::Result {
        msg.caller.require(Role::Admin)?;
        let mut keys = self.keys.list();
        keys.retain(|k| within_scope(&msg.caller, k));
        Ok(keys)
    }
}

impl Handler<GetApiKey> for WebActor {
    type Result = Result<ApiKeyRecord, WebError>;

    fn handle(&mut self, msg: GetApiKey, _: &mut Context<Self>) -> Self::Result {
        msg.caller.require(Role::Admin)?;
        self.keys
            .get(msg.id)
            .filter(|k| within_scope(&msg.caller, k))
            .ok_or_else(|| WebError::ApiKeyNotFound(msg.id.to_string()))
    }
}

impl Handler<RevokeApiKey> for WebActor {
    type Result = ResponseFuture<Result<(), WebError>>;

    fn handle(&mut self, msg: RevokeApiKey, _: &mut Context<Self>) -> Self::Result {
        let check = msg.caller.require(Role::Admin).and_then(|()| {
            self.keys
                .get(msg.id)
                .filter(|k| within_scope(&msg.caller, k))
                .ok_or_else(|| WebError::ApiKeyNotFound(msg.id.to_string()))
        });
        let key = match check {
            Ok(k) => k,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        if key.revoked_at.is_some() {
            return Box::pin(async { Ok(()) });
        }
        let now = Utc::now();
        let revoke = self.store.revoke_api_key(msg.id, now);
        let ring = self.keys.clone();
        Box::pin(async move {
            match revoke.await {
                Ok(()) => {
                    ring.revoke(msg.id, now);
                    Ok(())
                }
                Err(StoreError::NotFound) => Err(WebError::ApiKeyNotFound(msg.id.to_string())),
                Err(e) => Err(store_unavailable(e)),
            }
        })
    }
}

impl Handler<BootstrapAdminKey> for WebActor {
    type Result = ResponseFuture<Result<Option<String>, WebError>>;

    fn handle(&mut self, msg: BootstrapAdminKey, _: &mut Context<Self>) -> Self::Result {
        if !self.keys.is_empty() {
            return Box::pin(async { Ok(None) });
        }
        let secret = match msg.preset.map(|p| p.trim().to_string()) {
            Some(p) if p.chars().count() >= keys::MIN_PRESET_KEY_LEN => p,
            Some(_) => {
                return Box::pin(async {
                    Err(WebError::Validation(format!(
                        "WASUP_ADMIN_KEY must be at least {} characters",
                        keys::MIN_PRESET_KEY_LEN
                    )))
                })
            }
            None => keys::generate_key(),
        };
        let record = ApiKeyRecord {
            id: Uuid::new_v4(),
            name: "admin".to_string(),
            key_prefix: keys::key_prefix(&secret),
            key_hash: keys::hash_key(&secret),
            role: Role::Admin,
            allowed_sessions: None,
            expires_at: None,
            created_at: Utc::now(),
            revoked_at: None,
        };
        let insert = self.store.insert_api_key(record.clone());
        let ring = self.keys.clone();
        Box::pin(async move {
            insert.await.map_err(store_unavailable)?;
            ring.insert(record);
            Ok(Some(secret))
        })
    }
}

impl Handler<CheckReady> for WebActor {
    type Result = ResponseFuture<Result<RestoreProgress, WebError>>;

    fn handle(&mut self, _: CheckReady, _: &mut Context<Self>) -> Self::Result {
        let ping = self.store.ping();
        let stats = self.supervisor.send(GetStats);
        Box::pin(async move {
            ping.await.map_err(|e| {
                log::warn!("readiness: {e}");
                WebError::Unavailable("The database is not answering".to_string())
            })?;
            // The actor system must answer too (the watchdog relies on it).
            let stats = stats.await.map_err(|_| {
                WebError::Unavailable("The session supervisor is not answering".to_string())
            })?;
            Ok(RestoreProgress {
                total: stats.restore_total,
                queued: stats.restore_queued,
                in_progress: stats.restoring,
            })
        })
    }
}
