//! Admin endpoints and the bearer-token check in front of them:
//! `GET /metrics`, `GET /api/v1/projects` and
//! `GET /api/v1/projects/{project}/stats?from=&to=` (plus `.../stats.csv?table=`).

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use telemetry_protocol::{Day, ErrorCode};

use crate::error::ApiError;
use crate::export::{self, CsvTable};
use crate::ingest::today;
use crate::report::ProjectStats;
use crate::state::AppState;

/// The window used when a stats request names none: the last 30 days.
pub const DEFAULT_WINDOW_DAYS: i32 = 30;
/// The longest window a stats request may ask for, to bound the work.
pub const MAX_WINDOW_DAYS: i32 = 3660;

/// Middleware: lets a request through only with `Authorization: Bearer <admin token>`.
pub async fn require_admin(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // The scheme name is case-insensitive (RFC 9110).
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    match presented {
        Some(token) if state.verify_admin(token) => next.run(request).await,
        _ => ApiError::new(
            ErrorCode::Unauthorized,
            "this endpoint needs the admin token as `Authorization: Bearer <token>`",
        )
        .into_response(),
    }
}

/// `GET /metrics`, in Prometheus text format.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let text = state.metrics().render(&state.store().status());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

/// `GET /api/v1/projects`: configured projects and projects with data.
pub(crate) async fn projects(State(state): State<AppState>) -> Result<Json<Vec<String>>, ApiError> {
    let mut names: Vec<String> = state.projects().keys().cloned().collect();
    names.extend(state.store().projects().await.map_err(internal)?);
    names.sort();
    names.dedup();
    Ok(Json(names))
}

/// The query of the stats endpoints.
#[derive(Debug, Deserialize)]
pub struct WindowQuery {
    /// First day, `YYYY-MM-DD`; default 29 days before `to`.
    pub from: Option<String>,
    /// Last day, inclusive; default today.
    pub to: Option<String>,
    /// For CSV: which table.
    pub table: Option<String>,
}

fn internal(e: crate::store::StoreError) -> ApiError {
    tracing::error!(error = %e, "reading stats failed");
    ApiError::new(ErrorCode::Internal, "the stats could not be read")
}

/// Parses `from`/`to` into a window; both optional.
pub fn window(from: Option<&str>, to: Option<&str>, today: Day) -> Result<(Day, Day), ApiError> {
    let parse = |s: &str, name: &str| {
        s.parse::<Day>().map_err(|_| {
            ApiError::new(
                ErrorCode::MalformedPayload,
                format!("`{name}` must be a day written YYYY-MM-DD"),
            )
        })
    };
    let to = to.map(|s| parse(s, "to")).transpose()?.unwrap_or(today);
    let from = from
        .map(|s| parse(s, "from"))
        .transpose()?
        .unwrap_or_else(|| to.add_days(1 - DEFAULT_WINDOW_DAYS));
    if from > to {
        return Err(ApiError::new(
            ErrorCode::MalformedPayload,
            "`from` must not be after `to`",
        ));
    }
    if to.days_since_epoch() - from.days_since_epoch() >= MAX_WINDOW_DAYS {
        return Err(ApiError::new(
            ErrorCode::MalformedPayload,
            format!("the window may span at most {MAX_WINDOW_DAYS} days"),
        ));
    }
    Ok((from, to))
}

/// Computes the stats for an admin request, 404 for a project the collector never heard of.
pub async fn load_stats(
    state: &AppState,
    project: &str,
    from: Day,
    to: Day,
) -> Result<ProjectStats, ApiError> {
    let known = state.project(project).is_some()
        || state
            .store()
            .projects()
            .await
            .map_err(internal)?
            .iter()
            .any(|p| p == project);
    if !known {
        return Err(ApiError::new(ErrorCode::NotFound, "no such project"));
    }
    let manifest = state.project(project).map(|p| &p.manifest);
    crate::stats::project_stats_declared(state.store(), project, manifest, from, to)
        .await
        .map_err(internal)
}

/// `GET /api/v1/projects/{project}/stats?from=&to=`: the [`ProjectStats`] JSON.
pub(crate) async fn stats(
    State(state): State<AppState>,
    Path(project): Path<String>,
    Query(q): Query<WindowQuery>,
) -> Result<Json<ProjectStats>, ApiError> {
    let (from, to) = window(q.from.as_deref(), q.to.as_deref(), today())?;
    load_stats(&state, &project, from, to).await.map(Json)
}

/// `GET /api/v1/projects/{project}/stats.csv?table=&from=&to=`: one table as CSV.
pub(crate) async fn stats_csv(
    State(state): State<AppState>,
    Path(project): Path<String>,
    Query(q): Query<WindowQuery>,
) -> Result<Response, ApiError> {
    let (from, to) = window(q.from.as_deref(), q.to.as_deref(), today())?;
    let table = match q.table.as_deref() {
        None => CsvTable::Daily,
        Some(name) => name
            .parse::<CsvTable>()
            .map_err(|e| ApiError::new(ErrorCode::MalformedPayload, e.to_string()))?,
    };
    let stats = load_stats(&state, &project, from, to).await?;
    let filename = format!("{}-{}-{from}-{to}.csv", stats.project, table.as_str());
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            ),
            (
                header::CONTENT_DISPOSITION,
                // The project name is a validated [a-z0-9_-] name, safe in a header.
                HeaderValue::from_str(&format!("attachment; filename=\"{filename}\""))
                    .unwrap_or_else(|_| HeaderValue::from_static("attachment")),
            ),
        ],
        export::csv(&stats, table),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_default_and_are_checked() {
        let today: Day = "2026-11-21".parse().unwrap();
        let (from, to) = window(None, None, today).unwrap();
        assert_eq!((from.to_string(), to), ("2026-10-23".to_owned(), today));
        let (from, to) = window(Some("2026-11-01"), Some("2026-11-02"), today).unwrap();
        assert_eq!(
            (from.to_string(), to.to_string()),
            ("2026-11-01".into(), "2026-11-02".into())
        );
        assert!(window(Some("2026-11-03"), Some("2026-11-02"), today).is_err());
        assert!(window(Some("yesterday"), None, today).is_err());
        assert!(window(Some("1990-01-01"), None, today).is_err());
    }
}
