//! sesame: a self-hosted SMTP gateway that behaves like Amazon SES.
//!
//! Layering (lower never imports higher): types, config, proto → control →
//! auth, checks, queue → session → app.

pub mod app;
pub mod auth;
pub mod checks;
pub mod config;
pub mod control;
pub mod proto;
pub mod queue;
pub mod session;
pub mod tls;
pub mod types;
