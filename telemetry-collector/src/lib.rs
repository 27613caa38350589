//! The self-hosted telemetry collector: an HTTP server that accepts what each
//! consent tier allows and nothing more, stores it durably in SQLite (or
//! PostgreSQL, so several collectors can share one database), and
//! answers stats for maintainers.
//!
//! The library holds everything; the `telemetry-collector` binary only reads
//! flags and calls [`AppState::from_config`] and [`serve`]. Tests build the
//! same [`app`] and drive it in-process or on `127.0.0.1:0`.
//!
//! # Layout
//!
//! - [`config`]: the TOML config, its defaults and the commented example.
//! - [`state`]: [`AppState`], the shared server state, built from a config.
//! - [`connections`]: the accept loop, connection limits and read timeouts.
//! - [`ingest`]: `POST /v1/ingest` and `POST /v1/delete`, with every check.
//! - [`skew`]: per-item acceptance, `max_tier` downgrades and time sanity: version skew.
//! - [`cardinality`]: caps on distinct values per day; the overflow folds into `(other)`.
//! - [`admin`]: the bearer-token check, `/metrics` and the stats API.
//! - [`dashboard`]: the maintainer dashboard (HTML, SVG charts, sign-in) and public pages.
//! - [`store`]: the [`store::Store`] trait, its SQLite ([`store::sqlite`]) and
//!   PostgreSQL ([`store::postgres`]) backends, and [`store::migrate`].
//! - [`stats`]: turns stored counters into a [`report::ProjectStats`].
//! - [`report`]: the stats model every presentation shares.
//! - [`export`]: CSV and terminal-table renderings of the stats.
//! - [`manifest_check`]: the evolution rules `check-manifest OLD NEW` applies.
//! - [`secrets`]: the pseudonymization key, install-id hashing, the admin token.
//! - [`panic_guard`]: a panic in a handler answers 500 and logs only where it happened.
//! - [`ratelimit`], [`metrics`], [`error`], [`retention`]: the smaller parts.

use std::future::Future;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use telemetry_protocol::ErrorCode;
use telemetry_protocol::wire::{DELETE_PATH, INGEST_PATH};

pub mod admin;
pub mod cardinality;
pub mod config;
pub mod connections;
pub mod dashboard;
pub mod error;
pub mod export;
pub mod ingest;
pub mod manifest_check;
pub mod metrics;
pub mod panic_guard;
mod private_files;
pub mod ratelimit;
pub mod release;
pub mod report;
pub mod retention;
pub mod secrets;
pub mod skew;
pub mod state;
pub mod stats;
pub mod store;

pub use config::Config;
pub use state::{AppState, Startup};

/// **Builds the router**: client endpoints, `/healthz`, and the admin
/// endpoints behind the bearer token.
pub fn app(state: AppState) -> Router {
    let client = Router::new()
        .route(INGEST_PATH, post(ingest::ingest))
        .route(DELETE_PATH, post(ingest::delete))
        .layer(DefaultBodyLimit::max(state.body_limit()));
    let admin = Router::new()
        .route("/metrics", get(admin::metrics))
        .route("/api/v1/projects", get(admin::projects))
        .route("/api/v1/projects/{project}/stats", get(admin::stats))
        .route(
            "/api/v1/projects/{project}/stats.csv",
            get(admin::stats_csv),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            admin::require_admin,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(client)
        .merge(admin)
        .merge(dashboard::routes(&state, state.dashboard()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(panic_guard::catch_panic))
        .with_state(state)
}

async fn healthz() -> Response {
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

async fn not_found() -> Response {
    error::ApiError::new(ErrorCode::NotFound, "no such endpoint").into_response()
}

async fn method_not_allowed() -> Response {
    let mut e = error::ApiError::new(
        ErrorCode::NotFound,
        "this endpoint does not answer this method",
    );
    e.status = axum::http::StatusCode::METHOD_NOT_ALLOWED;
    e.into_response()
}

/// **Serves** on an already bound listener until `shutdown` resolves, under
/// the configured connection limits, runs the retention purge in the
/// background, then drains the write queue so every accepted request is
/// committed before this returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let purge = tokio::spawn(retention::run(state.clone()));
    let result =
        connections::serve(listener, app(state.clone()), state.connections(), shutdown).await;
    purge.abort();
    if let Err(e) = state.store().close().await {
        tracing::error!(error = %e, "closing the store failed");
    }
    result
}

/// Resolves on Ctrl-C or, on Unix, SIGTERM: the signals that should stop a collector gracefully.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
