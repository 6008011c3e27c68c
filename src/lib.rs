//! sesame: a self-hosted SMTP gateway that behaves like Amazon SES.
//!
//! Layering (lower never imports higher): types, config, proto → control →
//! auth, checks, queue → scan → session → app.

pub mod api;
pub mod app;
pub mod auth;
pub mod aws;
pub mod checks;
pub mod config;
pub mod control;
pub mod delivery;
pub mod dns;
pub mod domains;
pub mod proto;
pub mod queue;
pub mod rules;
pub mod scan;
pub mod session;
pub mod signing;
pub mod store;
pub mod tls;
pub mod types;
pub mod webhook;
