//! The actors crate's tests, one binary: the actors against fakes of their
//! ports (`common`).

mod common;

mod cluster;
mod settings;
mod supervision;
mod web;
mod webhooks;
