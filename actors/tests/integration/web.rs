//! The WebActor: roles, scopes, validation and API keys.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::common::*;
use actix::prelude::*;
use chrono::Utc;
use uuid::Uuid;
use wasup_actors::keys::{hash_key, AuthError};
use wasup_actors::ports::EngineEvent;
use wasup_actors::web::*;
use wasup_actors::*;

fn create(caller: Caller, name: &str) -> CreateSession {
    CreateSession {
        caller,
        name: name.into(),
        config: SessionConfig::default(),
        proxy_url: None,
        proxy_type: None,
    }
}

fn key(caller: Caller, name: &str, allowed: Option<Vec<SessionId>>) -> CreateApiKey {
    CreateApiKey {
        caller,
        name: name.into(),
        role: Role::Operator,
        allowed_sessions: allowed,
        expires_at: None,
    }
}

/// The error the WebActor answers `msg` with (it must refuse it).
async fn refused<M, T>(web: &Addr<WebActor>, msg: M) -> WebError
where
    M: Message<Result = Result<T, WebError>> + Send + 'static,
    T: std::fmt::Debug + Send + 'static,
    WebActor: Handler<M>,
{
    web.send(msg).await.expect("web actor").unwrap_err()
}

async fn two_sessions() -> (Harness, SessionId, SessionId) {
    let mut a = record("alpha", 1, 5);
    let mut b = record("beta", 1, 5);
    a.created_at = Utc::now() - chrono::Duration::seconds(10);
    b.created_at = Utc::now();
    let (ida, idb) = (a.id, b.id);
    (
        boot(vec![a, b], FakeEngine::default(), fast_options()).await,
        ida,
        idb,
    )
}

#[actix::test]
async fn roles_are_enforced() {
    let (h, ida, _) = two_sessions().await;
    let web = &h.gw.web;
    let viewer = caller(Role::Viewer);
    // Reads: any role.
    assert_eq!(
        web.send(ListSessions {
            caller: viewer.clone()
        })
        .await
        .unwrap()
        .unwrap()
        .len(),
        2
    );
    assert_eq!(
        web.send(GetSession {
            caller: viewer.clone(),
            id: "alpha".into()
        })
        .await
        .unwrap()
        .unwrap()
        .record
        .id,
        ida
    );
    assert_eq!(
        web.send(GetMe {
            caller: viewer.clone(),
            id: "alpha".into()
        })
        .await
        .unwrap(),
        Ok(None)
    );
    assert_eq!(
        web.send(GetOverview {
            caller: viewer.clone()
        })
        .await
        .unwrap()
        .unwrap()
        .total,
        2
    );
    // Session writes, QR and pairing: operator.
    let need_op = Err(WebError::InsufficientRole(Role::Operator));
    assert_eq!(
        refused(web, create(viewer.clone(), "new-one")).await,
        WebError::InsufficientRole(Role::Operator)
    );
    for command in [
        SessionCommand::Start,
        SessionCommand::Stop,
        SessionCommand::ForceKill,
        SessionCommand::Restart,
        SessionCommand::Logout,
    ] {
        let res = web
            .send(RunCommand {
                caller: viewer.clone(),
                id: "alpha".into(),
                command,
            })
            .await
            .unwrap();
        assert_eq!(
            res.unwrap_err(),
            WebError::InsufficientRole(Role::Operator),
            "{command:?}"
        );
    }
    assert_eq!(
        web.send(DeleteSession {
            caller: viewer.clone(),
            id: "alpha".into()
        })
        .await
        .unwrap(),
        need_op.clone()
    );
    assert_eq!(
        refused(
            web,
            GetQr {
                caller: viewer.clone(),
                id: "alpha".into()
            }
        )
        .await,
        WebError::InsufficientRole(Role::Operator)
    );
    let pairing = RequestPairingCode {
        caller: viewer.clone(),
        id: "alpha".into(),
        phone: "628123".into(),
    };
    assert_eq!(
        refused(web, pairing).await,
        WebError::InsufficientRole(Role::Operator)
    );
    // Key management: admin.
    let op = caller(Role::Operator);
    let need_admin = WebError::InsufficientRole(Role::Admin);
    assert_eq!(refused(web, key(op.clone(), "k", None)).await, need_admin);
    assert_eq!(
        refused(web, ListApiKeys { caller: op.clone() }).await,
        need_admin
    );
    assert_eq!(
        refused(
            web,
            GetApiKey {
                caller: op.clone(),
                id: Uuid::new_v4()
            }
        )
        .await,
        need_admin
    );
    assert_eq!(
        refused(
            web,
            RevokeApiKey {
                caller: op.clone(),
                id: Uuid::new_v4()
            }
        )
        .await,
        need_admin
    );
    // Nothing was written by the refused calls.
    assert_eq!(h.store.sessions.lock().len(), 2);
    assert_eq!(h.engine.0.starts.lock().len(), 0);
    assert!(h.store.keys.lock().is_empty());
}

#[actix::test]
async fn scopes_limit_what_a_key_sees() {
    let (h, ida, idb) = two_sessions().await;
    let web = &h.gw.web;
    let only_a = scoped(Role::Operator, &[ida]);
    let get = |id: &str| GetSession {
        caller: only_a.clone(),
        id: id.into(),
    };
    assert_eq!(
        web.send(get("alpha")).await.unwrap().unwrap().record.id,
        ida
    );
    assert_eq!(
        web.send(get(&ida.to_string()))
            .await
            .unwrap()
            .unwrap()
            .record
            .id,
        ida
    );
    assert_eq!(
        refused(web, get("beta")).await,
        WebError::SessionNotInScope("beta".into())
    );
    assert_eq!(
        refused(web, get(&idb.to_string())).await,
        WebError::SessionNotInScope(idb.to_string())
    );
    // Nothing matches: 404 before any scope question.
    assert_eq!(
        refused(web, get("gamma")).await,
        WebError::unknown_session("gamma")
    );
    let unknown = Uuid::new_v4().to_string();
    assert_eq!(
        refused(web, get(&unknown)).await,
        WebError::unknown_session(&unknown)
    );
    // Commands on other sessions are refused before reaching the supervisor.
    let cmd = RunCommand {
        caller: only_a.clone(),
        id: "beta".into(),
        command: SessionCommand::Start,
    };
    assert_eq!(
        refused(web, cmd).await,
        WebError::SessionNotInScope("beta".into())
    );
    assert_eq!(h.engine.starts_of(idb), 0);
    // Lists and stats only show its sessions.
    let list = web
        .send(ListSessions {
            caller: only_a.clone(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        list.iter().map(|v| v.record.id).collect::<Vec<_>>(),
        vec![ida]
    );
    let overview = web
        .send(GetOverview {
            caller: only_a.clone(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (overview.total, overview.active, overview.by_status),
        (1, 0, vec![(SessionStatus::Created, 1)])
    );
    // An unscoped list is createdAt descending.
    let all = web
        .send(ListSessions {
            caller: caller(Role::Viewer),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        all.iter()
            .map(|v| v.record.name.as_str())
            .collect::<Vec<_>>(),
        vec!["beta", "alpha"]
    );
    // A scoped key may not create sessions, even as admin.
    let res = web
        .send(create(scoped(Role::Admin, &[ida]), "new-one"))
        .await
        .unwrap();
    assert!(matches!(res, Err(WebError::ScopeForbidden(_))), "{res:?}");
}

#[actix::test]
async fn create_session_validates_and_refuses_taken_names() {
    let (h, _, _) = two_sessions().await;
    let web = &h.gw.web;
    let op = caller(Role::Operator);
    let mut msg = create(op.clone(), "fresh-bot");
    msg.config.reconnect_base_delay = Some(2_000);
    msg.proxy_url = Some("socks5://user:pw@proxy.example:1080".into());
    let rec = web.send(msg).await.unwrap().unwrap();
    assert_eq!(
        (rec.name.as_str(), rec.status, rec.desired),
        ("fresh-bot", SessionStatus::Created, DesiredState::Stopped)
    );
    assert_eq!(rec.proxy_type, Some(ProxyType::Socks5));
    assert_eq!(rec.config.reconnect_base_delay, Some(2_000));
    assert_eq!(h.store.record(rec.id).unwrap(), rec);
    assert_eq!(h.gw.registry.resolve("fresh-bot").unwrap().record, rec);

    assert_eq!(
        refused(web, create(op.clone(), "alpha")).await,
        WebError::SessionNameTaken("alpha".into())
    );
    for bad in ["ab", "has space", "under_score", &"x".repeat(51)] {
        let err = refused(web, create(op.clone(), bad)).await;
        assert_eq!(
            err,
            WebError::Validation("name must be 3–50 characters of letters, digits and '-'".into()),
            "{bad}"
        );
    }
    let err = refused(web, create(op.clone(), &Uuid::new_v4().to_string())).await;
    assert_eq!(err, WebError::Validation("name must not be a UUID".into()));
    let mut msg = create(op.clone(), "proxied");
    msg.proxy_url = Some("ftp://proxy.example".into());
    let err = refused(web, msg).await;
    assert!(
        matches!(&err, WebError::Validation(m) if m.starts_with("proxyUrl must be")),
        "{err:?}"
    );
    assert_eq!(h.store.sessions.lock().len(), 3);

    // The store's unique constraint is honoured too (a name taken behind the registry's back).
    let mut ghost = record("ghost", 1, 5);
    ghost.id = Uuid::new_v4();
    h.store.sessions.lock().insert(ghost.id, ghost);
    assert_eq!(
        refused(web, create(op.clone(), "ghost")).await,
        WebError::SessionNameTaken("ghost".into())
    );
    // A store failure is a safe 503-ish error, never the store's text.
    h.store.down.store(true, Ordering::SeqCst);
    let err = refused(web, create(op.clone(), "later")).await;
    assert_eq!(
        err,
        WebError::Unavailable("The database is unavailable; try again later".into())
    );
    assert!(h.gw.registry.resolve("later").is_none());
    assert_eq!(
        web.send(CheckReady).await.unwrap(),
        Err(WebError::Unavailable(
            "The database is not answering".into()
        ))
    );
    h.store.down.store(false, Ordering::SeqCst);
    assert!(web.send(CheckReady).await.unwrap().is_ok());
}

#[actix::test]
async fn qr_and_pairing_code_follow_the_status() {
    let engine = FakeEngine::default();
    let rec = record("linkme", 1, 5);
    let id = rec.id;
    engine.script(
        id,
        vec![Script::Events(vec![
            (
                ms(40),
                EngineEvent::Qr {
                    code: "2@abc,def".into(),
                    timeout: Duration::from_secs(60),
                },
            ),
            (ms(300), connected("628")),
        ])],
    );
    let h = boot(vec![rec], engine.clone(), fast_options()).await;
    let web = &h.gw.web;
    let op = caller(Role::Operator);
    let qr = || GetQr {
        caller: op.clone(),
        id: "linkme".into(),
    };
    let pair = |phone: &str| RequestPairingCode {
        caller: op.clone(),
        id: "linkme".into(),
        phone: phone.into(),
    };

    let err = refused(web, qr()).await;
    assert_eq!(
        err,
        WebError::QrNotAvailable(
            "Session 'linkme' is not started (status created): start it to get a QR code".into()
        )
    );
    assert!(matches!(
        web.send(pair("628123")).await.unwrap(),
        Err(WebError::PairingCodeNotAvailable(_))
    ));

    h.command(id, SessionCommand::Start).await.unwrap();
    let err = refused(web, qr()).await;
    assert_eq!(
        err,
        WebError::QrNotAvailable(
            "The QR code of session 'linkme' is not ready yet; try again in a few seconds".into()
        )
    );

    h.wait_status(id, SessionStatus::QrReady).await;
    let (code, status) = web.send(qr()).await.unwrap().unwrap();
    assert_eq!(
        (code.text.as_str(), status),
        ("2@abc,def", SessionStatus::QrReady)
    );
    assert!(code.expires_at > Utc::now() + chrono::Duration::seconds(50));
    let code = web.send(pair("628123")).await.unwrap().unwrap();
    assert_eq!(
        code,
        PairingCode {
            code: "ABCD1234".into(),
            status: SessionStatus::QrReady
        }
    );
    assert_eq!(
        web.send(pair("0123456")).await.unwrap(),
        Err(WebError::Engine("WhatsApp refused the number".into()))
    );

    h.wait_status(id, SessionStatus::Ready).await;
    let err = refused(web, qr()).await;
    assert_eq!(
        err,
        WebError::QrNotAvailable("Session 'linkme' is already linked: no QR code is needed".into())
    );
    assert!(matches!(
        web.send(pair("628123")).await.unwrap(),
        Err(WebError::PairingCodeNotAvailable(_))
    ));
    let me = web
        .send(GetMe {
            caller: caller(Role::Viewer),
            id: "linkme".into(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        me,
        Some(Me {
            phone: "628".into(),
            push_name: Some("Bot".into())
        })
    );
}

#[actix::test]
async fn api_keys_create_list_get_revoke() {
    let (h, ida, _) = two_sessions().await;
    let web = &h.gw.web;
    let admin = caller(Role::Admin);
    let mut msg = key(admin.clone(), "ci-bot", Some(vec![ida]));
    msg.role = Role::Viewer;
    msg.expires_at = Some(Utc::now() + chrono::Duration::days(1));
    let (rec, secret) = web.send(msg).await.unwrap().unwrap();
    assert!(secret.starts_with("wsp_"));
    assert_eq!(rec.key_prefix, secret[..12]);
    assert_eq!(rec.key_hash, hash_key(&secret));
    assert_eq!(
        (rec.role, rec.allowed_sessions.clone(), rec.revoked_at),
        (Role::Viewer, Some(vec![ida]), None)
    );
    // Stored: the hash, never the secret.
    let stored = h.store.keys.lock().get(&rec.id).cloned().unwrap();
    assert_eq!(stored, rec);
    assert!(!format!("{stored:?}").contains(&secret[4..]));
    // Usable at once, with its role and scope.
    let who = h.gw.keys.authenticate(Some(&secret), Utc::now()).unwrap();
    assert_eq!(
        (who.role, who.scope.clone()),
        (Role::Viewer, Some([ida].into_iter().collect()))
    );

    let list = web
        .send(ListApiKeys {
            caller: admin.clone(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(list.iter().map(|k| k.id).collect::<Vec<_>>(), vec![rec.id]);
    assert_eq!(
        web.send(GetApiKey {
            caller: admin.clone(),
            id: rec.id
        })
        .await
        .unwrap(),
        Ok(rec.clone())
    );
    let missing = Uuid::new_v4();
    assert_eq!(
        web.send(GetApiKey {
            caller: admin.clone(),
            id: missing
        })
        .await
        .unwrap(),
        Err(WebError::ApiKeyNotFound(missing.to_string()))
    );

    assert_eq!(
        web.send(RevokeApiKey {
            caller: admin.clone(),
            id: rec.id
        })
        .await
        .unwrap(),
        Ok(())
    );
    assert_eq!(
        h.gw.keys.authenticate(Some(&secret), Utc::now()),
        Err(AuthError::Revoked)
    );
    assert!(h.store.keys.lock()[&rec.id].revoked_at.is_some());
    // Revoking again is fine; an unknown key is 404.
    assert_eq!(
        web.send(RevokeApiKey {
            caller: admin.clone(),
            id: rec.id
        })
        .await
        .unwrap(),
        Ok(())
    );
    assert_eq!(
        web.send(RevokeApiKey {
            caller: admin.clone(),
            id: missing
        })
        .await
        .unwrap(),
        Err(WebError::ApiKeyNotFound(missing.to_string()))
    );
}

#[actix::test]
async fn api_key_validation() {
    let (h, ida, idb) = two_sessions().await;
    let web = &h.gw.web;
    let admin = caller(Role::Admin);
    let name_rule = WebError::Validation("name must be 1–100 characters".into());
    assert_eq!(refused(web, key(admin.clone(), "", None)).await, name_rule);
    assert_eq!(
        refused(web, key(admin.clone(), "   ", None)).await,
        name_rule
    );
    assert_eq!(
        refused(web, key(admin.clone(), &"k".repeat(101), None)).await,
        name_rule
    );
    assert!(web
        .send(key(admin.clone(), &"k".repeat(100), None))
        .await
        .unwrap()
        .is_ok());

    let ghost = Uuid::new_v4();
    let err = refused(web, key(admin.clone(), "k", Some(vec![ida, ghost]))).await;
    assert_eq!(
        err,
        WebError::Validation(format!("allowedSessions: session '{ghost}' does not exist"))
    );

    let mut past = key(admin.clone(), "k", None);
    past.expires_at = Some(Utc::now() - chrono::Duration::seconds(1));
    assert_eq!(
        refused(web, past).await,
        WebError::Validation("expiresAt must be in the future".into())
    );

    // A scoped admin cannot widen its reach.
    let scoped_admin = scoped(Role::Admin, &[ida]);
    let err = refused(web, key(scoped_admin.clone(), "k", Some(vec![idb]))).await;
    assert_eq!(err, WebError::SessionNotInScope(idb.to_string()));
    assert!(matches!(
        web.send(key(scoped_admin.clone(), "k", None))
            .await
            .unwrap(),
        Err(WebError::ScopeForbidden(_))
    ));
    assert!(web
        .send(key(scoped_admin, "k", Some(vec![ida])))
        .await
        .unwrap()
        .is_ok());

    h.store.down.store(true, Ordering::SeqCst);
    let err = refused(web, key(admin.clone(), "k", None)).await;
    assert_eq!(
        err,
        WebError::Unavailable("The database is unavailable; try again later".into())
    );
    assert_eq!(
        h.gw.keys.list().len(),
        2,
        "a key the store refused is not usable"
    );
}

#[actix::test]
async fn first_boot_gets_one_admin_key() {
    let h = boot(vec![], FakeEngine::default(), fast_options()).await;
    let web = &h.gw.web;
    let secret = web
        .send(BootstrapAdminKey { preset: None })
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let who = h.gw.keys.authenticate(Some(&secret), Utc::now()).unwrap();
    assert_eq!((who.role, who.scope), (Role::Admin, None));
    assert_eq!(h.store.keys.lock().len(), 1);
    // Keys exist: nothing more is created.
    assert_eq!(
        web.send(BootstrapAdminKey { preset: None }).await.unwrap(),
        Ok(None)
    );
    assert_eq!(h.store.keys.lock().len(), 1);

    let h = boot(vec![], FakeEngine::default(), fast_options()).await;
    let preset = "my-own-admin-key-0123456789abcdefghij".to_string();
    let got =
        h.gw.web
            .send(BootstrapAdminKey {
                preset: Some(preset.clone()),
            })
            .await
            .unwrap();
    assert_eq!(got, Ok(Some(preset.clone())));
    assert_eq!(
        h.gw.keys
            .authenticate(Some(&preset), Utc::now())
            .unwrap()
            .role,
        Role::Admin
    );
    let stored = h.store.keys.lock().values().next().cloned().unwrap();
    assert_eq!(
        (stored.key_hash, stored.key_prefix.as_str()),
        (hash_key(&preset), "my-own-a")
    );

    let h = boot(vec![], FakeEngine::default(), fast_options()).await;
    let short =
        h.gw.web
            .send(BootstrapAdminKey {
                preset: Some("short".into()),
            })
            .await
            .unwrap();
    assert!(matches!(short, Err(WebError::Validation(_))));
    assert!(h.gw.keys.is_empty());
}
