//! The route table: every operation the server answers and the error codes
//! it may answer. A handler's method and path are written once, in its
//! `#[utoipa::path]`; the table mounts the handler there and puts the same
//! operation in the OpenAPI document, with its error responses and, when it
//! takes an API key, its security. What is mounted and what is documented
//! are one list, so they cannot disagree.

use actix_web::http::Method;
use actix_web::{web, HttpRequest};
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::SecurityRequirement;
use utoipa::OpenApi;
use wasup_actors::ErrorCode;

use super::docs::errors::{BODY, KEY, ROLE, SESSION, UNAVAILABLE, WEBHOOK};
use super::docs::{API_KEY_SCHEME, BEARER_SCHEME};
use super::error::ApiError;
use super::{
    cluster, dashboard, docs, events, health, keys, messages, sessions, settings, webhooks,
};
use ErrorCode::*;

/// Builds `table()`: per row, a one-path OpenAPI document derived from the
/// handler's annotation (its path, method, operation and schemas), the
/// handler, and its error codes (groups of `&[ErrorCode]`).
macro_rules! table {
    ($($(#[$attr:meta])* $($handler:ident)::+ => [$($errors:expr),* $(,)?];)+) => {
        /// Every operation, in the document's order.
        pub fn table() -> Vec<Route> {
            let mut routes = Vec::new();
            $(
                $(#[$attr])*
                routes.push({
                    #[derive(OpenApi)]
                    #[openapi(paths($($handler)::+))]
                    struct Operation;
                    Route::new(Operation::openapi(), |r| r.to($($handler)::+), &[$($errors),*])
                });
            )+
            routes
        }
    };
}

table! {
    health::health => [];
    health::live => [];
    health::ready => [];
    sessions::create => [BODY, &[ProxyUrlNotAllowed], KEY, ROLE, &[ScopeForbidden, SessionNameTaken, LimitExceeded], UNAVAILABLE];
    sessions::list => [&[ValidationFailed], KEY, UNAVAILABLE];
    sessions::overview => [KEY, UNAVAILABLE];
    sessions::get => [KEY, SESSION, UNAVAILABLE];
    sessions::delete => [KEY, SESSION, ROLE, UNAVAILABLE];
    sessions::start => [&[SessionAlreadyStarted], KEY, SESSION, ROLE, UNAVAILABLE];
    sessions::stop => [KEY, SESSION, ROLE, UNAVAILABLE];
    sessions::force_kill => [KEY, SESSION, ROLE, UNAVAILABLE];
    sessions::restart => [KEY, SESSION, ROLE, UNAVAILABLE];
    sessions::logout => [KEY, SESSION, ROLE, UNAVAILABLE];
    sessions::qr => [&[QrNotAvailable, ValidationFailed], KEY, SESSION, ROLE, UNAVAILABLE, &[QrRenderFailed]];
    sessions::pairing_code => [BODY, &[PairingCodeNotAvailable, EngineRejected], KEY, SESSION, ROLE, UNAVAILABLE];
    sessions::me => [KEY, SESSION, UNAVAILABLE];
    settings::config_get => [KEY, SESSION, UNAVAILABLE];
    settings::config_update => [BODY, &[LimitExceeded], KEY, SESSION, ROLE, UNAVAILABLE];
    settings::proxy_get => [KEY, SESSION, UNAVAILABLE];
    settings::proxy_update => [BODY, &[ProxyUrlNotAllowed], KEY, SESSION, ROLE, UNAVAILABLE];
    webhooks::create => [BODY, &[WebhookUrlNotAllowed, LimitExceeded], KEY, SESSION, ROLE, UNAVAILABLE];
    webhooks::list => [KEY, SESSION, UNAVAILABLE];
    webhooks::get => [KEY, SESSION, WEBHOOK, UNAVAILABLE];
    webhooks::update => [BODY, &[WebhookUrlNotAllowed], KEY, SESSION, ROLE, WEBHOOK, UNAVAILABLE];
    webhooks::delete => [KEY, SESSION, ROLE, WEBHOOK, UNAVAILABLE];
    webhooks::test => [KEY, SESSION, ROLE, WEBHOOK, &[TooManyRequests], UNAVAILABLE];
    webhooks::deliveries => [&[ValidationFailed], KEY, SESSION, WEBHOOK, UNAVAILABLE];
    webhooks::redrive => [KEY, SESSION, ROLE, WEBHOOK, &[DeliveryNotFound, DeliveryAlreadyQueued], UNAVAILABLE];
    webhooks::list_all => [KEY, UNAVAILABLE];
    messages::send_text => [BODY, &[InvalidChatId, ValidationFailed], KEY, SESSION, ROLE, &[SessionNotReady], UNAVAILABLE];
    messages::list => [&[ValidationFailed, InvalidChatId], KEY, SESSION, UNAVAILABLE];
    messages::get => [KEY, SESSION, &[MessageNotFound], UNAVAILABLE];
    messages::cancel => [KEY, SESSION, ROLE, &[MessageNotFound, MessageNotPending], UNAVAILABLE];
    messages::check_number => [&[ValidationFailed], KEY, SESSION, ROLE, &[SessionNotReady, EngineRejected], UNAVAILABLE];
    keys::create => [BODY, KEY, &[SessionNotInScope], ROLE, &[ScopeForbidden], UNAVAILABLE];
    keys::list => [KEY, ROLE, UNAVAILABLE];
    keys::get => [KEY, ROLE, &[ApiKeyNotFound], UNAVAILABLE];
    keys::revoke => [KEY, ROLE, &[ApiKeyNotFound], UNAVAILABLE];
    keys::validate => [KEY];
    events::stream => [&[ValidationFailed, InvalidStreamTicket], KEY, &[SessionNotInScope, TooManyRequests], UNAVAILABLE];
    events::ticket => [KEY];
    events::websocket => [&[ValidationFailed, InvalidStreamTicket], KEY, &[SessionNotInScope, TooManyRequests], UNAVAILABLE];
    dashboard::page => [];
    dashboard::script => [];
    dashboard::style => [];
    dashboard::sign_in => [BODY, KEY, &[CsrfRejected]];
    dashboard::who_am_i => [KEY];
    dashboard::sign_out => [&[CsrfRejected]];
    cluster::nodes => [KEY, UNAVAILABLE];
    cluster::drain => [&[ValidationFailed], KEY, ROLE, &[ScopeForbidden, NodeNotFound], UNAVAILABLE];
    crate::metrics::scrape => [&[MissingMetricsToken, InvalidMetricsToken]];
    docs::ui => [];
    docs::json => [];
    docs::asset => [&[RouteNotFound]];
    #[cfg(feature = "simulator")]
    super::simulator::scan => [BODY, &[QrNotAvailable, QrMalformed], KEY, SESSION, ROLE,
        &[QrExpired, SimulatorNotEmbedded, LinkRejected, LinkTimeout, SessionNotConnected], UNAVAILABLE];
    #[cfg(feature = "simulator")]
    super::simulator::fault => [BODY, KEY, SESSION, ROLE,
        &[DeviceNotFound, SimulatorNotEmbedded, SessionNotConnected], UNAVAILABLE];
    #[cfg(feature = "simulator")]
    super::simulator::enter_code => [BODY, &[PairingCodeRejected], KEY, ROLE,
        &[NoPendingPairingCode, SimulatorNotEmbedded, LinkRejected, LinkTimeout, SessionNotConnected], UNAVAILABLE];
    #[cfg(feature = "simulator")]
    super::simulator::phone_devices => [&[ValidationFailed], KEY, &[PhoneNotFound, SimulatorNotEmbedded], UNAVAILABLE];
    #[cfg(feature = "simulator")]
    super::simulator::phone_send => [BODY, KEY, SESSION, ROLE, &[PhoneNotFound, SimulatorNotEmbedded, SessionNotConnected], UNAVAILABLE];
    #[cfg(feature = "simulator")]
    super::simulator::account_send => [BODY, KEY, SESSION, ROLE, &[PhoneNotFound, SimulatorNotEmbedded, SessionNotConnected], UNAVAILABLE];
    #[cfg(feature = "simulator")]
    super::simulator::phone_call => [BODY, KEY, SESSION, ROLE, &[PhoneNotFound, SimulatorNotEmbedded, SessionNotConnected], UNAVAILABLE];
    #[cfg(feature = "simulator")]
    super::simulator::phone_calls => [&[ValidationFailed], KEY, &[SimulatorNotEmbedded], UNAVAILABLE];
    #[cfg(feature = "simulator")]
    super::simulator::phone_messages => [&[ValidationFailed], KEY, &[SimulatorNotEmbedded], UNAVAILABLE];
    #[cfg(feature = "simulator")]
    super::simulator::phone_read => [BODY, KEY, ROLE, &[SimulatorNotEmbedded], UNAVAILABLE];
    #[cfg(feature = "simulator")]
    super::simulator::phone_registered => [BODY, KEY, ROLE, &[SimulatorNotEmbedded], UNAVAILABLE];
}

/// One operation of the table.
pub struct Route {
    /// The handler's annotation as a document of one path and one method.
    doc: utoipa::openapi::OpenApi,
    mount: fn(actix_web::Route) -> actix_web::Route,
    errors: Vec<ErrorCode>,
}

impl Route {
    fn new(
        doc: utoipa::openapi::OpenApi,
        mount: fn(actix_web::Route) -> actix_web::Route,
        errors: &[&[ErrorCode]],
    ) -> Self {
        let route = Route {
            doc,
            mount,
            errors: unique(errors.concat()),
        };
        assert_eq!(route.doc.paths.paths.len(), 1, "one path per handler");
        route
    }

    /// The full path template, e.g. `/api/sessions/{id}`.
    pub fn path(&self) -> &str {
        self.doc.paths.paths.keys().next().expect("one path")
    }

    fn item(&self) -> &PathItem {
        self.doc.paths.paths.values().next().expect("one path")
    }

    /// The one method the handler answers.
    pub fn method(&self) -> Method {
        let item = self.item();
        let methods = [
            (Method::GET, &item.get),
            (Method::POST, &item.post),
            (Method::PUT, &item.put),
            (Method::PATCH, &item.patch),
            (Method::DELETE, &item.delete),
        ];
        let mut found = methods.into_iter().filter(|(_, op)| op.is_some());
        let (method, _) = found.next().expect("a method per handler");
        assert!(found.next().is_none(), "one method per handler");
        method
    }

    /// This operation's part of the OpenAPI document: the annotation's, plus
    /// a response per error status and, when it takes an API key, the key's
    /// security schemes.
    pub fn openapi(&self) -> utoipa::openapi::OpenApi {
        let mut doc = self.doc.clone();
        let item = doc.paths.paths.values_mut().next().expect("one path");
        let op = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ]
        .into_iter()
        .find_map(Option::as_mut)
        .expect("a method per handler");
        self.document_errors(op);
        doc
    }

    fn document_errors(&self, op: &mut Operation) {
        for (status, response) in docs::errors::responses(&self.errors) {
            op.responses.responses.insert(status, response.into());
        }
        if self.errors.contains(&MissingApiKey) && op.security.is_none() {
            op.security = Some(
                [API_KEY_SCHEME, BEARER_SCHEME]
                    .into_iter()
                    .map(|scheme| SecurityRequirement::new::<_, _, &str>(scheme, []))
                    .collect(),
            );
        }
    }
}

/// Mount every route of the table, one actix resource per path, so that a
/// known path with another method answers 405 and an unknown one 404, both
/// in the contract's shape.
pub fn mount(cfg: &mut web::ServiceConfig) {
    let mut paths: Vec<(String, Vec<actix_web::Route>)> = Vec::new();
    for route in table() {
        let handler = (route.mount)(web::method(route.method()));
        match paths.iter_mut().find(|(path, _)| path == route.path()) {
            Some((_, handlers)) => handlers.push(handler),
            None => paths.push((route.path().to_string(), vec![handler])),
        }
    }
    for (path, handlers) in paths {
        let resource = web::resource(path).default_service(web::to(wrong_method));
        cfg.service(handlers.into_iter().fold(resource, |r, h| r.route(h)));
    }
    cfg.default_service(web::to(unknown_route));
}

async fn unknown_route(req: HttpRequest) -> ApiError {
    ApiError::unknown_route(req.method().as_str(), req.path())
}

async fn wrong_method(req: HttpRequest) -> ApiError {
    ApiError::wrong_method(req.method().as_str(), req.path())
}

/// `codes` without repeats, first occurrence kept (groups may overlap, e.g.
/// `KEY` and an explicit `TooManyRequests`).
fn unique(mut codes: Vec<ErrorCode>) -> Vec<ErrorCode> {
    let mut seen = std::collections::HashSet::new();
    codes.retain(|c| seen.insert(*c));
    codes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_one_method_and_a_unique_operation() {
        let mut seen = std::collections::HashSet::new();
        for route in table() {
            let method = route.method();
            assert!(
                seen.insert((method.clone(), route.path().to_string())),
                "{method} {} twice",
                route.path()
            );
        }
        assert!(seen.len() > 25);
    }

    #[test]
    fn keyed_routes_have_the_key_security() {
        for route in table() {
            let doc = route.openapi();
            let json = serde_json::to_value(&doc).unwrap();
            let op = &json["paths"][route.path()][route.method().as_str().to_lowercase()];
            if route.errors.contains(&MissingApiKey) {
                assert!(op["security"].is_array(), "{}", route.path());
                assert!(op["responses"]["401"].is_object(), "{}", route.path());
            }
        }
    }
}
