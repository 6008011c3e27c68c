//! The tenant HTTP API (axum): read-only access to a tenant's store and
//! events, authenticated with `Authorization: Bearer <api key>`.
//!
//! The key decides the tenant, and every handler reads only that tenant's
//! store, so an id that belongs to another tenant is simply not found
//! (404), never shown.

mod error;
mod handlers;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::http::{HeaderMap, header};
use axum::routing::get;
use tokio::sync::watch;

use crate::config::ApiConfig;
use crate::control::Control;
use crate::store::Stores;
use error::ApiError;

/// The fixed key of the dev tenant (dev mode only, loopback only).
pub const DEV_API_KEY: &str = "ssk_dev_local_only_0000000000000000";

/// The OpenAPI 3 description of exactly the routes below.
pub const OPENAPI: &str = include_str!("openapi.json");

pub struct ApiState {
    pub control: Arc<Control>,
    pub stores: Arc<Stores>,
    /// Whether the dev key is honoured (dev mode).
    pub allow_static: bool,
}

impl ApiState {
    /// The tenant the request's key belongs to.
    async fn tenant(&self, headers: &HeaderMap) -> Result<String, ApiError> {
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <api key>"))?;
        let key = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| ApiError::unauthorized("Authorization must be Bearer <api key>"))?
            .to_string();
        let control = self.control.clone();
        let owner = tokio::task::spawn_blocking(move || control.api_key_owner(&key))
            .await
            .map_err(|e| ApiError::internal(e.into()))??;
        match owner {
            Some(o) if !o.is_static || self.allow_static => Ok(o.tenant),
            _ => Err(ApiError::unauthorized("invalid API key")),
        }
    }
}

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/openapi.json", get(handlers::openapi))
        .route("/v1/threads", get(handlers::threads))
        .route("/v1/threads/{id}", get(handlers::thread))
        .route("/v1/messages", get(handlers::messages))
        .route("/v1/messages/{id}", get(handlers::message))
        .route("/v1/messages/{id}/raw", get(handlers::raw))
        .route(
            "/v1/messages/{id}/attachments/{n}",
            get(handlers::attachment),
        )
        .route("/v1/events", get(handlers::events))
        .fallback(handlers::no_route)
        .with_state(state)
}

/// Binds `api.listen` and serves until `stop` turns true. Returns the bound
/// address (the port may have been 0) and the server task.
pub async fn start(
    config: &ApiConfig,
    state: ApiState,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let addr = config.addr()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("api: cannot bind {addr}"))?;
    let bound = listener.local_addr()?;
    let app = router(Arc::new(state));
    let task = tokio::spawn(async move {
        let shutdown = async move {
            while !*stop.borrow() {
                if stop.changed().await.is_err() {
                    break;
                }
            }
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "HTTP API stopped");
        }
    });
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The document describes exactly the routes the router serves.
    #[test]
    fn the_openapi_document_lists_every_route() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let mut paths: Vec<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        paths.sort();
        let paths: Vec<&str> = paths.iter().map(|p| &p[1..]).collect();
        let source = include_str!("mod.rs");
        let mut routes: Vec<&str> = source
            .lines()
            .map(str::trim)
            .filter_map(|l| {
                l.strip_prefix(".route(\"")
                    .or_else(|| l.strip_prefix("\"/"))
            })
            .filter_map(|l| l.split('"').next())
            .map(|p| p.strip_prefix('/').unwrap_or(p))
            .collect();
        routes.sort();
        assert_eq!(paths, routes);
        for p in doc["paths"].as_object().unwrap().values() {
            assert!(p["get"]["responses"].is_object(), "{p}");
        }
    }
}
