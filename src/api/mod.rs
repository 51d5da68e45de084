//! HTTP API (actix-web): thin handlers over the WebActor.
