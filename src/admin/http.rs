//! The admin HTTP server: liveness, readiness, Prometheus metrics, PRM documents, the upstream
//! identity issuer's discovery document and JWKS (when configured), and in dev mode the
//! embedded issuer's discovery document and JWKS.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::{Encoder, Registry, TextEncoder};
use serde_json::json;

use crate::dev::DevIssuer;
use crate::engine::Engine;

#[derive(Clone)]
pub struct AdminState {
    pub engine: Arc<Engine>,
    pub registry: Registry,
    pub dev: Option<Arc<DevIssuer>>,
    /// True once shutdown has started: not ready, so Kubernetes takes the pod out of its
    /// endpoints while checks are still answered.
    pub draining: tokio::sync::watch::Receiver<bool>,
}

pub fn router(state: AdminState) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/.well-known/oauth-protected-resource", get(prm))
        .route("/.well-known/oauth-protected-resource/{*rest}", get(prm));
    if let Some(upstream) = state.engine.upstream_identity() {
        let discovery = upstream.discovery_path();
        // The dev issuer has the root discovery path already: with both, the dev one keeps it
        // (`mcp-authz dev` builds its own configuration, so this takes a hand-made mix).
        if state.dev.is_none() || discovery != "/.well-known/openid-configuration" {
            router = router.route(&discovery, get(upstream_discovery));
        } else {
            tracing::warn!(path = %discovery, "the dev issuer serves this path; the upstream identity discovery document is not served");
        }
        router = router.route(&upstream.jwks_path(), get(upstream_jwks));
    }
    if state.dev.is_some() {
        router = router
            .route("/.well-known/oauth-authorization-server", get(dev_metadata))
            .route("/.well-known/openid-configuration", get(dev_metadata))
            .route("/jwks.json", get(dev_jwks));
    }
    router.with_state(state)
}

/// 200 when every issuer has keys and shutdown has not started, else 503; the body names each
/// issuer's state, so a failing IdP is visible without reading logs.
async fn readyz(State(state): State<AdminState>) -> Response {
    let issuers: Vec<_> = state.engine.issuers().iter().map(|i| i.status()).collect();
    let draining = *state.draining.borrow();
    let ready = issuers.iter().all(|i| i.ready) && !draining;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let servers = state.engine.policy_status();
    let config = state.engine.config_status();
    let mut body = json!({
        "ready": ready,
        "draining": draining,
        "issuers": issuers,
        "servers": servers,
    });
    // The first server's live set, as before per-server sets (one set for most deployments).
    if let (Some(first), Some(map)) = (servers.first(), body.as_object_mut()) {
        map.insert(
            "policies".into(),
            json!({
                "hash": first.live.hash,
                "dir": first.live.dir,
                "policies": first.live.policies,
                "loaded_at": first.live.loaded_at,
            }),
        );
        if !config.path.is_empty() {
            map.insert("config".into(), json!(*config));
        }
    }
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let encoder = TextEncoder::new();
    let mut out = Vec::new();
    match encoder.encode(&state.registry.gather(), &mut out) {
        Ok(()) => (
            [(header::CONTENT_TYPE, encoder.format_type().to_owned())],
            out,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn prm(State(state): State<AdminState>, uri: Uri) -> Response {
    let setup = state.engine.setup();
    match setup.servers().metadata_for_path(uri.path()) {
        Some(server) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "max-age=300"),
                (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            ],
            server.prm_json.to_string(),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "no protected resource at this path\n",
        )
            .into_response(),
    }
}

async fn dev_metadata(State(state): State<AdminState>) -> Response {
    match &state.dev {
        Some(dev) => axum::Json(dev.metadata()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn dev_jwks(State(state): State<AdminState>) -> Response {
    match state.dev.as_ref().map(|d| d.jwks()) {
        Some(Ok(jwks)) => {
            ([(header::CACHE_CONTROL, "max-age=300")], axum::Json(jwks)).into_response()
        }
        Some(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The upstream identity issuer's discovery document (`issuer`, `jwks_uri`).
async fn upstream_discovery(State(state): State<AdminState>) -> Response {
    match state.engine.upstream_identity() {
        Some(u) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "max-age=300"),
            ],
            u.discovery_json().to_string(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The upstream identity keys: the signer, the next one, and retired ones whose tokens may
/// still live. Cached for less time than any key is published ahead or kept after use.
async fn upstream_jwks(State(state): State<AdminState>) -> Response {
    match state.engine.upstream_identity() {
        Some(u) => (
            [
                (header::CONTENT_TYPE, "application/json".to_owned()),
                (
                    header::CACHE_CONTROL,
                    format!(
                        "max-age={}",
                        crate::upstream_identity::JWKS_MAX_AGE.as_secs()
                    ),
                ),
            ],
            u.jwks_json().to_string(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
