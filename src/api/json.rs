//! `Body<T>`: the JSON body extractor of every route that takes a body.
//! It reads at most the configured limit (413 past it) and turns serde's
//! complaints into the contract's codes: malformed JSON → `InvalidJson`,
//! an unknown field → `UnknownField`, a wrong type or a missing field →
//! `ValidationFailed`, always naming the field.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use wasup_actors::ErrorCode;

use super::error::ApiError;

/// Largest body accepted, in bytes (app data; `WASUP_BODY_LIMIT`).
#[derive(Clone, Copy)]
pub struct BodyLimit(pub usize);

pub struct Body<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Body<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = req
            .app_data::<BodyLimit>()
            .map(|l| l.0)
            .unwrap_or(1024 * 1024);
        let declared = req
            .headers()
            .get(actix_web::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let mut payload = payload.take();
        Box::pin(async move {
            if declared.is_some_and(|n| n > limit) {
                return Err(ApiError::body_too_large(limit));
            }
            let mut body = web::BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|_| {
                    ApiError::new(ErrorCode::InvalidBody, "The request body could not be read")
                })?;
                if body.len() + chunk.len() > limit {
                    return Err(ApiError::body_too_large(limit));
                }
                body.extend_from_slice(&chunk);
            }
            parse(&body).map(Body)
        })
    }
}

/// Parse a JSON body into `T`, mapping errors to the contract's codes.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            ErrorCode::InvalidJson,
            "The request body must be a JSON object",
        ));
    }
    // serde would also read a struct from a JSON array: only objects are bodies.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Ok(_) => ApiError::validation("The request body must be a JSON object"),
                Err(e) => classify("", &e),
            },
        );
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        classify(&path, &inner)
    })
}

fn classify(path: &str, err: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    // serde's own text, without its "at line 1 column 7" tail.
    let text = err.to_string();
    let text = text.split(" at line ").next().unwrap_or(&text).to_string();
    match err.classify() {
        Category::Syntax | Category::Eof | Category::Io => ApiError::new(
            ErrorCode::InvalidJson,
            format!("The request body is not valid JSON: {text}"),
        ),
        Category::Data if text.starts_with("unknown field") => {
            let field = text.split('`').nth(1).unwrap_or("?");
            // The path already ends with the unknown field when known.
            let field = if path.is_empty() || path == "." {
                field
            } else {
                path
            };
            ApiError::new(
                ErrorCode::UnknownField,
                format!("Unknown field '{field}' in the request body"),
            )
        }
        Category::Data if text.starts_with("missing field") => {
            let field = text.split('`').nth(1).unwrap_or("?");
            ApiError::validation(format!("Field '{field}' is required"))
        }
        Category::Data => {
            let field = if path.is_empty() || path == "." {
                "body".to_string()
            } else {
                path.to_string()
            };
            ApiError::validation(format!("Field '{field}' is invalid: {text}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
        count: Option<u32>,
    }

    #[test]
    fn errors_name_the_field_and_code() {
        assert_eq!(
            parse::<Sample>(b"{").unwrap_err().code,
            ErrorCode::InvalidJson
        );
        assert_eq!(
            parse::<Sample>(b"").unwrap_err().code,
            ErrorCode::InvalidJson
        );
        assert_eq!(
            parse::<Sample>(b"[1").unwrap_err().code,
            ErrorCode::InvalidJson
        );
        let e = parse::<Sample>(br#"["a", 1]"#).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (
                ErrorCode::ValidationFailed,
                "The request body must be a JSON object"
            )
        );
        let e = parse::<Sample>(br#"{"name":"a","x":1}"#).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (
                ErrorCode::UnknownField,
                "Unknown field 'x' in the request body"
            )
        );
        let e = parse::<Sample>(br#"{"name":5}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::ValidationFailed);
        assert!(e.message.contains("'name'"), "{}", e.message);
        let e = parse::<Sample>(br#"{}"#).unwrap_err();
        assert_eq!(e.message, "Field 'name' is required");
        assert!(parse::<Sample>(br#"{"name":"ok","count":3}"#).is_ok());
    }
}
