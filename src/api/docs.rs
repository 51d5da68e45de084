//! The API's OpenAPI 3.1 document, generated from the route table
//! (`routes.rs`: the handlers' `#[utoipa::path]` annotations, their error
//! codes, `docs/errors.rs`) and the DTOs' `ToSchema` derives, plus the
//! webhook payloads (`docs/webhooks.rs`). Served at `GET /api/docs-json`,
//! with Swagger UI at `GET /api/docs`: its assets are compiled into the
//! binary (utoipa-swagger-ui, `vendored`), so the page needs no network.

pub mod errors;
mod webhooks;

use std::borrow::Cow;
use std::sync::{Arc, LazyLock};

use actix_web::http::header::{self, ContentType};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use utoipa::openapi::info::{InfoBuilder, LicenseBuilder};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use wasup_actors::{ErrorCode, WebError};

use super::error::{ApiError, ErrorBody};

/// Names of the security schemes; every keyed route accepts either.
pub const API_KEY_SCHEME: &str = "api_key";
pub const BEARER_SCHEME: &str = "bearer";
/// The optional token of `GET /metrics` (not an API key).
pub const METRICS_SCHEME: &str = "metrics_token";

/// What the document says besides its operations (those come from the
/// route table, `super::routes`).
#[derive(OpenApi)]
#[openapi(
    components(schemas(ErrorBody)),
    modifiers(&Security),
    tags(
        (name = "sessions", description = "WhatsApp sessions: create, start, link (QR or pairing code), stop, log out."),
        (name = "messages", description = "Messages of a session: send text through a durable, paced queue, read stored messages and their status, check a number."),
        (name = "webhooks", description = "Webhooks of a session: signed deliveries of its events, their attempts and redrive. The payloads are in the `webhooks` section."),
        (name = "api-keys", description = "API keys and their roles (viewer < operator < admin)."),
        (name = "events", description = "The live event stream: the webhook envelope per event, as Server-Sent Events or WebSocket text frames, resumable by `Last-Event-ID` / `?after=`."),
        (name = "health", description = "Liveness and readiness; no key needed."),
        (name = "dashboard", description = "The dashboard at `/` (no key for the page) and its sign-in: an API key traded for an `HttpOnly; SameSite=Strict` session cookie, which every route then accepts instead of a key (writes also need `X-CSRF-Token`)."),
        (name = "docs", description = "This document and Swagger UI; no key needed."),
        (name = "metrics", description = "Prometheus metrics, outside `/api`; an optional token of their own."),
        (name = "cluster", description = "Cluster mode: the nodes sharing one PostgreSQL, the sessions each owns, and draining a node."),
    )
)]
struct ApiDoc;

/// Tags of the simulator's control routes, which exist only in simulator builds.
#[cfg(feature = "simulator")]
#[derive(OpenApi)]
#[openapi(tags((name = "simulator", description = "Simulator builds only: virtual phones that link sessions, and faults injected into their connections.")))]
struct SimulatorDoc;

/// The document's introduction.
fn description() -> String {
    let example = ApiError::from(WebError::unknown_session_id("x"));
    let status = example.status();
    format!(
        "\
Self-hosted WhatsApp multi-session gateway.

**Auth.** Send an API key as `X-API-Key: <key>` or `Authorization: Bearer <key>`. \
Every route needs one except health, docs and the dashboard's page. The dashboard's \
sign-in cookie (`POST /api/dashboard/session`) is accepted instead of a key; with it, \
writes also need `X-CSRF-Token`. Roles: `viewer` < `operator` < `admin`; \
each operation's description names the role it needs.

**Errors** always have the body `{{\"statusCode\":{},\"error\":\"{}\",\"code\":\"{}\",\"message\":\"…\"}}` \
(`ErrorBody`): `code` is a stable snake_case identifier. Besides the answers listed per \
operation: an unknown route answers {} `{}`, a wrong method {} `{}`.

**Conventions.** JSON in and out; timestamps are ISO-8601 UTC with milliseconds; lists are \
bare arrays; every answer carries `X-Request-Id` (the caller's, or a fresh one). A session's \
`{{id}}` is its UUID or its name. Routes that take no body accept an empty one.

**Webhooks.** The `webhooks` section describes what a receiver gets for each event.",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error"),
        example.code,
        ErrorCode::RouteNotFound.status(),
        ErrorCode::RouteNotFound,
        ErrorCode::MethodNotAllowed.status(),
        ErrorCode::MethodNotAllowed,
    )
}

/// The document as utoipa builds it (without the `webhooks` section, which
/// utoipa cannot express: see `document`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    for route in super::routes::table() {
        doc.merge(route.openapi());
    }
    #[cfg(feature = "simulator")]
    doc.merge(SimulatorDoc::openapi());
    doc.merge(webhooks::Schemas::openapi());
    webhooks::add_envelope_schemas(&mut doc);
    doc.info = InfoBuilder::new()
        .title("wasup")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(description()))
        .license(Some(
            LicenseBuilder::new()
                .name("AGPL-3.0-or-later")
                .identifier(Some("AGPL-3.0-or-later"))
                .build(),
        ))
        .build();
    doc
}

/// The served document: utoipa's, plus the OpenAPI 3.1 `webhooks` section.
#[derive(Serialize)]
struct Document {
    #[serde(flatten)]
    api: utoipa::openapi::OpenApi,
    webhooks: std::collections::BTreeMap<String, utoipa::openapi::PathItem>,
}

/// The OpenAPI document as JSON, built once.
pub fn document() -> &'static [u8] {
    static DOCUMENT: LazyLock<Vec<u8>> = LazyLock::new(|| {
        serde_json::to_vec_pretty(&Document {
            api: openapi(),
            webhooks: webhooks::section(),
        })
        .expect("the OpenAPI document serializes")
    });
    &DOCUMENT
}

/// The security schemes: the same key in either header.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            API_KEY_SCHEME,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "An API key.",
            ))),
        );
        components.add_security_scheme(
            METRICS_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "`GET /metrics` only, when `WASUP_METRICS_TOKEN` is set: that token.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            BEARER_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The same API key as `Authorization: Bearer <key>`."))
                    .build(),
            ),
        );
    }
}

/// Swagger UI's page. Its references are relative to `/api/docs`, so the
/// page also works behind a proxy that mounts the API under a prefix.
const UI_PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="UTF-8">
  <title>wasup API</title>
  <link rel="stylesheet" type="text/css" href="docs/swagger-ui.css">
  <link rel="stylesheet" type="text/css" href="docs/index.css">
  <link rel="icon" type="image/png" href="docs/favicon-32x32.png" sizes="32x32">
  <link rel="icon" type="image/png" href="docs/favicon-16x16.png" sizes="16x16">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="docs/swagger-ui-bundle.js" charset="UTF-8"></script>
  <script src="docs/swagger-ui-standalone-preset.js" charset="UTF-8"></script>
  <script src="docs/swagger-initializer.js" charset="UTF-8"></script>
</body>
</html>
"#;

/// Swagger UI's settings (rendered into `swagger-initializer.js`): the
/// document next to the page, and no online validator (it would send the
/// document to a third party).
fn swagger_config() -> Arc<utoipa_swagger_ui::Config<'static>> {
    static CONFIG: LazyLock<Arc<utoipa_swagger_ui::Config<'static>>> = LazyLock::new(|| {
        Arc::new(utoipa_swagger_ui::Config::new(["docs-json"]).validator_url("none"))
    });
    CONFIG.clone()
}

/// Swagger UI
///
/// The interactive documentation of this API. Its scripts and styles are
/// served by this server (`/api/docs/{file}`).
#[utoipa::path(get, path = "/api/docs", tag = "docs", operation_id = "docsUi",
    responses((status = 200, description = "The page", content_type = "text/html", body = String))
)]
pub async fn ui() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::html())
        .body(UI_PAGE)
}

/// This document
///
/// The OpenAPI 3.1 document of this API, webhook payloads included.
#[utoipa::path(get, path = "/api/docs-json", tag = "docs", operation_id = "docsJson",
    responses((status = 200, description = "The document", body = serde_json::Value))
)]
pub async fn json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(document())
}

/// A Swagger UI asset
///
/// A script, style sheet or icon of Swagger UI, from the binary.
#[utoipa::path(get, path = "/api/docs/{file}", tag = "docs", operation_id = "docsAsset",
    params(("file" = String, Path, description = "File name, e.g. `swagger-ui.css`")),
    responses(
        (status = 200, description = "The file, with its content type", content(
            ("text/javascript"), ("text/css"), ("image/png"), ("text/html"),
        )),
    )
)]
pub async fn asset(file: web::Path<String>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    match utoipa_swagger_ui::serve(&file, swagger_config()) {
        Ok(Some(found)) => {
            let mut res = HttpResponse::Ok();
            res.content_type(found.content_type)
                .insert_header((header::CACHE_CONTROL, "public, max-age=3600"));
            Ok(match found.bytes {
                Cow::Borrowed(bytes) => res.body(bytes),
                Cow::Owned(bytes) => res.body(bytes),
            })
        }
        _ => Err(ApiError::unknown_route(req.method().as_str(), req.path())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> serde_json::Value {
        serde_json::from_slice(document()).unwrap()
    }

    #[test]
    fn document_is_openapi_3_1_with_webhooks() {
        let doc = doc();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(doc["info"]["license"]["identifier"], "AGPL-3.0-or-later");
        for name in wasup_actors::events::EVENT_NAMES {
            assert!(doc["webhooks"][name]["post"].is_object(), "{name}");
        }
    }

    #[test]
    fn operation_ids_are_unique() {
        let doc = doc();
        let mut seen = std::collections::HashSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let id = op["operationId"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{method} {path}"));
                assert!(seen.insert(id.to_string()), "operationId {id} twice");
            }
        }
    }

    #[test]
    fn swagger_ui_assets_are_embedded() {
        for file in [
            "swagger-ui.css",
            "swagger-ui-bundle.js",
            "swagger-ui-standalone-preset.js",
        ] {
            let found = utoipa_swagger_ui::serve(file, swagger_config()).unwrap();
            assert!(found.is_some_and(|f| !f.bytes.is_empty()), "{file}");
        }
        let init = utoipa_swagger_ui::serve("swagger-initializer.js", swagger_config())
            .unwrap()
            .unwrap();
        let init = String::from_utf8(init.bytes.into_owned()).unwrap();
        assert!(init.contains("\"docs-json\""), "{init}");
    }
}
