//! The OpenAPI document and Swagger UI, against the real server. The route
//! table (`src/api/routes.rs`) both mounts and documents every operation, so
//! the test checks what that cannot promise by itself: every documented
//! operation reaches its handler over HTTP and answers only the statuses it
//! documents, its references resolve, and Swagger UI loads from this server
//! alone.

use std::collections::BTreeSet;

use crate::common::{Server, TestDb, ADMIN_KEY};
use reqwest::Url;
use serde_json::{json, Value};

fn fetch_document(server: &Server) -> Value {
    let res = server
        .req("GET", "/api/docs-json", None)
        .send()
        .expect("request");
    assert_eq!(res.status().as_u16(), 200, "no key needed");
    let content_type = res.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    res.json().expect("the document is JSON")
}

/// Every (method, path) the document lists under `paths`.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            if [
                "get", "put", "post", "delete", "patch", "head", "options", "trace",
            ]
            .contains(&method.as_str())
            {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// Every `$ref` in the document.
fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// A concrete path for a template: each `{param}` becomes a value that
/// names nothing (or, for a Swagger UI file, a real file).
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|seg| match seg {
            "{file}" => "swagger-ui.css",
            "{phone}" => "628100000000",
            s if s.starts_with('{') => "00000000-0000-4000-8000-000000000000",
            s => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[test]
fn document_covers_every_mounted_route() {
    let server = Server::start(&TestDb::Sqlite);
    let doc = fetch_document(&server);
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "wasup");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(doc["info"]["license"]["name"], "AGPL-3.0-or-later");

    let mounted: BTreeSet<(String, String)> = wasup::api::mounted_routes()
        .into_iter()
        .map(|(method, path)| (method.to_string(), path))
        .collect();
    assert!(mounted.len() > 25, "the route table is read: {mounted:?}");
    // One table makes both lists; this guards the document's assembly
    // (no operation lost when paths are merged).
    let listed = documented(&doc);
    let missing: Vec<_> = mounted.difference(&listed).collect();
    assert!(
        missing.is_empty(),
        "mounted but not documented: {missing:?}"
    );
    let extra: Vec<_> = listed.difference(&mounted).collect();
    assert!(extra.is_empty(), "documented but not mounted: {extra:?}");
    assert_eq!(
        mounted
            .iter()
            .any(|(_, p)| p.starts_with("/api/simulator/")),
        cfg!(feature = "simulator"),
        "simulator routes exactly in simulator builds"
    );

    // Over HTTP too: every documented operation reaches a handler (no
    // route_not_found, no method_not_allowed). Values name nothing, so
    // nothing is created or changed.
    for (method, path) in &listed {
        let url = concrete(path);
        let res = server
            .req(method, &url, Some(ADMIN_KEY))
            .send()
            .expect("request");
        let status = res.status().as_u16();
        let is_json = res
            .headers()
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap().starts_with("application/json"));
        let body: Value = if is_json {
            res.json().unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        assert_ne!(status, 405, "{method} {url}: {body}");
        assert_ne!(body["code"], "route_not_found", "{method} {url}: {body}");
        assert_ne!(body["code"], "method_not_allowed", "{method} {url}: {body}");
        assert!(
            status < 500 || status == 503,
            "{method} {url}: {status} {body}"
        );
        if status >= 400 {
            // The error body has the documented shape.
            let keys: BTreeSet<&str> = body
                .as_object()
                .unwrap_or_else(|| panic!("{method} {url}: {status} without error body"))
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(
                keys,
                BTreeSet::from(["statusCode", "error", "code", "message"]),
                "{method} {url}"
            );
            // …and the document lists that status for the operation.
            let op = &doc["paths"][path][method.to_lowercase()];
            assert!(
                op["responses"][status.to_string()].is_object(),
                "{method} {path} answered {status} ({}), undocumented",
                body["code"]
            );
        }
    }
}

#[test]
fn document_is_consistent() {
    let server = Server::start(&TestDb::Sqlite);
    let doc = fetch_document(&server);

    // Every reference resolves.
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in &all {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("external reference {r}"));
        assert!(doc.pointer(pointer).is_some(), "dangling reference {r}");
    }

    // Every `{name}` in a path is declared as that operation's path
    // parameter, under the same name (clients and fuzzers build URLs from it).
    for (path, item) in doc["paths"].as_object().unwrap() {
        let in_path: BTreeSet<&str> = path
            .split('{')
            .skip(1)
            .filter_map(|rest| rest.split('}').next())
            .collect();
        for (method, op) in item.as_object().unwrap() {
            let declared: BTreeSet<&str> = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter(|p| p["in"] == "path")
                        .filter_map(|p| p["name"].as_str())
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(declared, in_path, "{method} {path}: path parameters");
        }
    }

    // The error body is the contract's: four required fields.
    let error = &doc["components"]["schemas"]["ErrorBody"];
    let props = error["properties"]
        .as_object()
        .expect("ErrorBody properties");
    let names: BTreeSet<&str> = props.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from(["statusCode", "error", "code", "message"])
    );
    assert_eq!(props["statusCode"]["type"], "integer");
    for field in ["error", "code", "message"] {
        assert_eq!(props[field]["type"], "string", "{field}");
    }
    let required: BTreeSet<&str> = error["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(required, names);

    // Security: the key in X-API-Key, or as a bearer token.
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["api_key"]["type"], "apiKey");
    assert_eq!(schemes["api_key"]["in"], "header");
    assert_eq!(schemes["api_key"]["name"], "X-API-Key");
    assert_eq!(schemes["bearer"]["type"], "http");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");

    // Keyed operations say so and document 401; health and docs need none.
    let mut operation_ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().expect("operationId");
            assert!(operation_ids.insert(id), "operationId {id} twice");
            assert!(op["tags"][0].is_string(), "{method} {path} has a tag");
            // The dashboard's page and assets, and signing out, need no key.
            let dashboard = path == "/"
                || path.starts_with("/dashboard/")
                || (path == "/api/dashboard/session" && method == "delete");
            let open =
                path.starts_with("/api/health") || path.starts_with("/api/docs") || dashboard;
            let security = op["security"].as_array();
            if path == "/metrics" {
                // Open, or the metrics token: never an API key.
                assert_eq!(op["security"], json!([{}, {"metrics_token": []}]), "{path}");
                assert_eq!(schemes["metrics_token"]["scheme"], "bearer");
            } else if open {
                assert!(security.is_none_or(|s| s.is_empty()), "{method} {path}");
            } else {
                let security = security.unwrap_or_else(|| panic!("{method} {path}: no security"));
                let names: BTreeSet<&str> = security
                    .iter()
                    .flat_map(|req| req.as_object().unwrap().keys().map(String::as_str))
                    .collect();
                assert_eq!(
                    names,
                    BTreeSet::from(["api_key", "bearer"]),
                    "{method} {path}"
                );
                assert!(
                    op["responses"]["401"].is_object(),
                    "{method} {path}: no 401"
                );
            }
            if op["requestBody"].is_object() {
                assert!(
                    op["responses"]["400"].is_object(),
                    "{method} {path}: no 400"
                );
                assert!(
                    op["responses"]["413"].is_object(),
                    "{method} {path}: no 413"
                );
            }
        }
    }

    // Webhooks: one entry per event a webhook may subscribe to, each with the
    // signed envelope and the delivery headers.
    let webhooks = doc["webhooks"].as_object().expect("webhooks section");
    for name in wasup_actors::events::EVENT_NAMES {
        let op = &webhooks
            .get(*name)
            .unwrap_or_else(|| panic!("webhook {name} missing"))["post"];
        let headers: BTreeSet<String> = op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["in"] == "header")
            .map(|p| p["name"].as_str().unwrap().to_ascii_lowercase())
            .collect();
        for h in [
            "webhook-id",
            "webhook-timestamp",
            "webhook-signature",
            "x-wasup-event",
            "x-wasup-attempt",
        ] {
            assert!(headers.contains(h), "{name}: header {h}");
        }
        let schema_ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: body schema"));
        let schema = doc.pointer(&schema_ref[1..]).unwrap();
        let fields: BTreeSet<&str> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            fields,
            BTreeSet::from([
                "id",
                "event",
                "timestamp",
                "sessionId",
                "sessionName",
                "seq",
                "data"
            ]),
            "{name}"
        );
        assert_eq!(schema["properties"]["event"]["enum"][0], *name);
    }
}

#[test]
fn swagger_ui_is_served_from_the_binary() {
    let server = Server::start(&TestDb::Sqlite);
    let page_url = Url::parse(&server.url("/api/docs")).unwrap();
    let res = server.req("GET", "/api/docs", None).send().unwrap();
    assert_eq!(res.status().as_u16(), 200, "no key needed");
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = res.text().unwrap();
    assert!(html.contains("swagger-ui"), "{html}");

    // Every src= and href= is a file of this server, and loads.
    let mut assets = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for part in html.split(attr).skip(1) {
            assets.push(part.split('"').next().unwrap().to_string());
        }
    }
    assert!(assets.iter().any(|a| a.ends_with(".js")), "{assets:?}");
    assert!(assets.iter().any(|a| a.ends_with(".css")), "{assets:?}");
    for asset in &assets {
        let url = page_url.join(asset).unwrap();
        assert_eq!(
            url.origin(),
            page_url.origin(),
            "{asset} is not on this server"
        );
        let res = reqwest::blocking::get(url.clone()).unwrap();
        assert_eq!(res.status().as_u16(), 200, "{url}");
        let content_type = res.headers()["content-type"].to_str().unwrap().to_string();
        let want = match url.path().rsplit('.').next().unwrap() {
            "js" => "javascript",
            "css" => "text/css",
            "png" => "image/png",
            other => panic!("unexpected asset type {other}"),
        };
        assert!(content_type.contains(want), "{url}: {content_type}");
        assert!(!res.bytes().unwrap().is_empty(), "{url}");
    }

    // The initializer points the UI at this server's document, and at no
    // other host (no online validator).
    let init_url = page_url.join("docs/swagger-initializer.js").unwrap();
    let init = reqwest::blocking::get(init_url).unwrap().text().unwrap();
    assert!(!init.contains("://"), "{init}");
    let spec = init
        .split("\"url\": \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no url in {init}"));
    assert_eq!(page_url.join(spec).unwrap().path(), "/api/docs-json");

    // An unknown file is the contract's 404.
    let res = server.req("GET", "/api/docs/nope.js", None).send().unwrap();
    let (status, body) = crate::common::split(res);
    crate::common::assert_error(status, &body, 404, "route_not_found");
}
