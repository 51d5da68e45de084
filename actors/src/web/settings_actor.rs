//! The WebActor's answers to the settings routes (`…/config`, `…/proxy`) and
//! the paged list. A change goes to the session's own actor through the
//! supervisor (`ChangeSettings`), which persists it before the registry shows it.

use actix::prelude::*;

use super::actor::{actors_unavailable, done, Reply, WebActor};
use super::messages::*;
use super::proxy_guard::check_proxy_url;
use super::settings::{EffectiveConfig, ProxyView};
use super::validation::validate_proxy;
use crate::error::WebError;
use crate::protocol::SettingsChange;
use crate::supervisor::ChangeSettings;

impl Handler<ListSessionsPage> for WebActor {
    type Result = Result<SessionPage, WebError>;

    fn handle(&mut self, msg: ListSessionsPage, _: &mut Context<Self>) -> Self::Result {
        let (total, sessions) = self.registry.page(&msg.caller, &msg.page);
        Ok(SessionPage { total, sessions })
    }
}

impl Handler<GetSessionConfig> for WebActor {
    type Result = Result<EffectiveConfig, WebError>;

    fn handle(&mut self, msg: GetSessionConfig, _: &mut Context<Self>) -> Self::Result {
        let view = self.resolve(&msg.caller, &msg.id)?;
        Ok(EffectiveConfig::of(&view.record.config))
    }
}

impl Handler<UpdateSessionConfig> for WebActor {
    type Result = Reply<SettingsChanged<EffectiveConfig>>;

    fn handle(&mut self, msg: UpdateSessionConfig, _: &mut Context<Self>) -> Self::Result {
        let id = match self.resolve_as_operator(&msg.caller, &msg.id) {
            Ok(view) => view.record.id,
            Err(e) => return done(Err(e)),
        };
        let change = self.supervisor.send(ChangeSettings {
            id,
            change: SettingsChange::Config(msg.patch),
        });
        Box::pin(
            async move {
                let view = change.await.map_err(actors_unavailable)??;
                // Every config field is read live: backoff at the next
                // restart decision, pacing at the next send, metadata at once.
                Ok(SettingsChanged {
                    settings: EffectiveConfig::of(&view.record.config),
                    reconnect_required: false,
                })
            }
            .into_actor(self),
        )
    }
}

impl Handler<GetSessionProxy> for WebActor {
    type Result = Result<ProxyView, WebError>;

    fn handle(&mut self, msg: GetSessionProxy, _: &mut Context<Self>) -> Self::Result {
        let view = self.resolve(&msg.caller, &msg.id)?;
        let r = &view.record;
        Ok(ProxyView::of(r.proxy_url.as_deref(), r.proxy_type))
    }
}

impl Handler<UpdateSessionProxy> for WebActor {
    type Result = Reply<SettingsChanged<ProxyView>>;

    fn handle(&mut self, msg: UpdateSessionProxy, _: &mut Context<Self>) -> Self::Result {
        let check = self
            .resolve_as_operator(&msg.caller, &msg.id)
            .and_then(|view| {
                let url = msg.patch.proxy_url.clone().ok_or_else(|| {
                    WebError::Validation(
                        "Field 'proxyUrl' is required (null removes the proxy)".to_string(),
                    )
                })?;
                let kind = validate_proxy(url.as_deref(), msg.patch.proxy_type)?;
                Ok((view.record.id, url, kind))
            });
        let (id, url, kind) = match check {
            Ok(c) => c,
            Err(e) => return done(Err(e)),
        };
        let guard = check_proxy_url(url.clone());
        let supervisor = self.supervisor.clone();
        Box::pin(
            async move {
                guard.await?;
                let view = supervisor
                    .send(ChangeSettings {
                        id,
                        change: SettingsChange::Proxy { url, kind },
                    })
                    .await
                    .map_err(actors_unavailable)??;
                let r = &view.record;
                Ok(SettingsChanged {
                    settings: ProxyView::of(r.proxy_url.as_deref(), r.proxy_type),
                    // The engine dials its proxy once, at start.
                    reconnect_required: view.engine_alive,
                })
            }
            .into_actor(self),
        )
    }
}
