//! The maintainer dashboard: server-rendered HTML pages with inline SVG charts,
//! sign-in with the admin token, CSV downloads, and the opt-in public pages.
//!
//! Every number shown comes from one [`ProjectStats`], the same type the
//! stats command and the JSON API print, so the page, the JSON and the CSV
//! always agree. The dashboard reads through the [`Backend`] trait and never
//! touches storage itself.
//!
//! # Layout
//!
//! - [`html`]: escaping, number formatting and the page frame.
//! - [`pages`]: the overview, project and sign-in pages.
//! - [`charts`]: the SVG charts.
//! - [`session`]: sign-in sessions and the session cookie.
//! - [`public`]: opt-in public pages, differentially private (see [`crate::release`]).
//! - [`range`]: the `from`/`to`/`by` query.
//! - `backend`: the [`Backend`] implementation over the collector's `AppState`.
//! - `assets/`: the stylesheet and icon, compiled into the binary.
//!
//! # Routes
//!
//! | route | who |
//! | --- | --- |
//! | `GET /` | redirects to `/dashboard` |
//! | `GET /dashboard` | signed in: every project |
//! | `GET /dashboard/projects/{project}?from=&to=&by=` | signed in: one project |
//! | `GET /dashboard/projects/{project}/export/{name}.csv?from=&to=` | signed in, or `Authorization: Bearer <admin token>` |
//! | `GET`, `POST /dashboard/login`; `POST /dashboard/logout` | anyone |
//! | `GET /public/{project}`, `GET /public/{project}/stats.json` | anyone, for projects that opt in; 404 otherwise |
//! | `GET /assets/{file}` | anyone |
//!
//! # Browser security
//!
//! Pages carry a strict Content-Security-Policy: `default-src 'none'` with
//! only the collector's own stylesheet and images allowed, no script at all,
//! and forms that may post only to the collector. Pages work without
//! JavaScript. Nothing is loaded from another host. Every value that came
//! from a client is escaped ([`html::Esc`]). Signed-in pages are sent with
//! `Cache-Control: no-store`.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use telemetry_protocol::{Day, ErrorBody, ErrorCode, Timestamp};

use crate::export::{self, CsvTable};
use crate::release::{Budget, Noise};
use crate::report::ProjectStats;
use crate::store::ReleasedCell;

mod backend;
pub mod charts;
pub mod html;
pub mod pages;
pub mod public;
pub mod range;
pub mod session;

#[cfg(test)]
mod tests;

use html::{Chrome, message_page, url_component};
use public::{PublicProject, PublicStats};
use range::RangeQuery;
use session::Sessions;

/// The future every [`Backend`] method returns; boxed so the trait is object-safe.
pub type BackendFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, BackendError>> + Send + 'a>>;

/// A failure to read stats; its text goes to the log, never to the browser.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BackendError(pub String);

/// What the dashboard needs from the collector.
pub trait Backend: Send + Sync + 'static {
    /// Whether `token` is the admin token (compared in constant time).
    fn check_admin_token(&self, token: &str) -> bool;

    /// Every project the overview lists, sorted.
    fn projects(&self) -> BackendFuture<'_, Vec<String>>;

    /// The stats of `project` over `from..=to`, or `None` if the project is unknown.
    fn stats<'a>(
        &'a self,
        project: &'a str,
        from: Day,
        to: Day,
    ) -> BackendFuture<'a, Option<ProjectStats>>;

    /// The differentially private cells the public page of `project` shows
    /// on `today`, drawing and keeping those that are due (see
    /// [`crate::release::release`]), or `None` if the project is unknown.
    fn public_cells<'a>(
        &'a self,
        project: &'a str,
        settings: PublicProject,
        today: Day,
    ) -> BackendFuture<'a, Option<Vec<ReleasedCell>>>;

    /// What ingest refused, downgraded or ignored for `project` over
    /// `from..=to` (the `refusals` rows); none unless the backend stores them.
    fn skew<'a>(
        &'a self,
        _project: &'a str,
        _from: Day,
        _to: Day,
    ) -> BackendFuture<'a, Vec<crate::store::RefusalRow>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// Today's UTC day; injected so tests can fix the date.
pub type Clock = Arc<dyn Fn() -> Day + Send + Sync>;

/// The system clock's UTC day.
pub fn system_today() -> Day {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Timestamp::from_unix_millis(millis).day()
}

/// The `[dashboard]` section of the collector's config file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DashboardSettings {
    /// Projects whose numbers are published, read-only and without sign-in,
    /// at `/public/{project}` and `/public/{project}/stats.json`. None by default.
    pub public_projects: Vec<String>,
    /// On public pages, noisy counts below this are shown as `< k`; at
    /// least [`public::MIN_MIN_COUNT`].
    pub public_min_count: u64,
    /// The privacy loss epsilon one week of one install's data may cost on
    /// public pages; lower is more private and noisier.
    pub public_epsilon_per_week: f64,
    /// Always mark the session cookie `Secure`; set it when the collector's
    /// public URL is `https://` but the proxy does not send `X-Forwarded-Proto`.
    pub secure_cookies: bool,
}

impl Default for DashboardSettings {
    fn default() -> Self {
        DashboardSettings {
            public_projects: Vec::new(),
            public_min_count: public::DEFAULT_MIN_COUNT,
            public_epsilon_per_week: crate::release::DEFAULT_EPSILON_PER_WEEK,
            secure_cookies: false,
        }
    }
}

impl DashboardSettings {
    /// The dashboard configuration these settings describe, on the system clock.
    pub fn to_config(&self) -> DashboardConfig {
        let project = PublicProject {
            min_count: self.public_min_count,
            budget: Budget {
                epsilon_per_week: self.public_epsilon_per_week,
            },
        };
        DashboardConfig {
            public: self
                .public_projects
                .iter()
                .map(|name| (name.clone(), project))
                .collect(),
            secure_cookies: self.secure_cookies,
            ..DashboardConfig::default()
        }
    }
}

/// How the dashboard is set up.
#[derive(Clone)]
pub struct DashboardConfig {
    /// Projects whose public page is on, with their settings. Empty by default:
    /// public pages are opt-in.
    pub public: BTreeMap<String, PublicProject>,
    /// Always mark the session cookie `Secure`, for a collector whose public
    /// URL is `https://`. Without it, the cookie is `Secure` only for requests
    /// that carry `X-Forwarded-Proto: https`.
    pub secure_cookies: bool,
    /// Today's UTC day.
    pub clock: Clock,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            public: BTreeMap::new(),
            secure_cookies: false,
            clock: Arc::new(system_today),
        }
    }
}

impl std::fmt::Debug for DashboardConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DashboardConfig")
            .field("public", &self.public)
            .field("secure_cookies", &self.secure_cookies)
            .finish_non_exhaustive()
    }
}

/// The dashboard's shared state.
#[derive(Clone)]
struct Ctx {
    /// Where stats come from.
    backend: Arc<dyn Backend>,
    /// Live sign-in sessions.
    sessions: Arc<Sessions>,
    /// The settings.
    config: Arc<DashboardConfig>,
}

/// The dashboard's routes over the collector's own state and its `[dashboard]` settings.
pub fn routes(
    state: &crate::state::AppState,
    settings: &DashboardSettings,
) -> axum::Router<crate::state::AppState> {
    router(
        Arc::new(state.clone()),
        settings.to_config(),
        state.dashboard_sessions().clone(),
    )
}

/// The Content-Security-Policy of every dashboard response.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const STYLESHEET: &str = include_str!("assets/dashboard.css");
const ICON: &str = include_str!("assets/icon.svg");

/// The dashboard's routes, ready to merge into the collector's router.
///
/// `sessions` must outlive any one router: the collector keeps them in its
/// state, so every router built from that state knows the same sign-ins.
pub fn router<S>(
    backend: Arc<dyn Backend>,
    config: DashboardConfig,
    sessions: Arc<Sessions>,
) -> Router<S> {
    let ctx = Ctx {
        backend,
        sessions,
        config: Arc::new(config),
    };
    Router::new()
        .route("/", get(|| async { Redirect::to("/dashboard") }))
        .route("/dashboard", get(overview))
        .route("/dashboard/", get(|| async { Redirect::to("/dashboard") }))
        .route("/dashboard/login", get(login_page).post(login))
        .route("/dashboard/logout", post(logout))
        .route("/dashboard/projects/{project}", get(project_page))
        .route("/dashboard/projects/{project}/export/{file}", get(export))
        .route("/public/{project}", get(public_page))
        .route("/public/{project}/stats.json", get(public_json))
        .route("/assets/{file}", get(asset))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(ctx)
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    // `same-origin` rather than `no-referrer`: under `no-referrer` browsers
    // send `Origin: null` with form posts, which the sign-in's origin check
    // must refuse. Other sites still never see a dashboard URL.
    for (name, value) in [
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "same-origin"),
        ("cache-control", "no-store"),
    ] {
        if !headers.contains_key(name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    response
}

fn html_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

fn json_error(status: StatusCode, error: ErrorCode, message: &str) -> Response {
    let body = ErrorBody {
        error,
        message: message.to_owned(),
        violations: Vec::new(),
    };
    (status, axum::Json(body)).into_response()
}

fn internal_error(err: &BackendError, chrome: Chrome) -> Response {
    tracing::error!(error = %err, "dashboard could not read stats");
    html_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        message_page(
            "Something went wrong",
            chrome,
            "The collector could not read its stats. The details are in its log.",
        ),
    )
}

fn not_found(chrome: Chrome) -> Response {
    html_response(
        StatusCode::NOT_FOUND,
        message_page("Not found", chrome, "There is no such project."),
    )
}

impl Ctx {
    fn today(&self) -> Day {
        (self.config.clock)()
    }

    fn signed_in(&self, headers: &HeaderMap) -> bool {
        session::session_cookie(headers).is_some_and(|id| self.sessions.is_valid(id))
    }

    /// Signed in, or the admin token as a bearer token, for scripts.
    fn admin(&self, headers: &HeaderMap) -> bool {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        self.signed_in(headers) || bearer.is_some_and(|t| self.backend.check_admin_token(t.trim()))
    }

    fn secure(&self, headers: &HeaderMap) -> bool {
        self.config.secure_cookies || session::request_is_tls(headers)
    }
}

/// Sends an unsigned-in browser to the sign-in form, remembering where it was going.
fn to_login(uri: &Uri) -> Response {
    let next = uri.path_and_query().map_or("/dashboard", |pq| pq.as_str());
    Redirect::to(&format!("/dashboard/login?next={}", url_component(next))).into_response()
}

/// Where to go after signing in: only a dashboard path, never another site.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if (n == "/dashboard"
                || n.starts_with("/dashboard/")
                || n.starts_with("/dashboard?"))
                && !n.contains('\\')
                && !n.chars().any(char::is_control) =>
        {
            n
        }
        _ => "/dashboard",
    }
}

/// Whether a state-changing POST came from a page of this collector. Browsers
/// send `Origin` on every POST; `SameSite=Strict` already keeps the session
/// cookie off cross-site requests, and this also stops cross-site sign-in.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, h)| h);
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

async fn overview(State(ctx): State<Ctx>, headers: HeaderMap, uri: Uri) -> Response {
    if !ctx.signed_in(&headers) {
        return to_login(&uri);
    }
    let today = ctx.today();
    let from = today.add_days(1 - range::DEFAULT_DAYS);
    let projects = match ctx.backend.projects().await {
        Ok(p) => p,
        Err(e) => return internal_error(&e, Chrome::Admin),
    };
    let mut summaries = Vec::with_capacity(projects.len());
    for project in &projects {
        match ctx.backend.stats(project, from, today).await {
            Ok(Some(stats)) => summaries.push(pages::ProjectSummary::from_stats(&stats)),
            Ok(None) => {}
            Err(e) => return internal_error(&e, Chrome::Admin),
        }
    }
    html_response(StatusCode::OK, pages::render_overview(&summaries, today))
}

async fn project_page(
    State(ctx): State<Ctx>,
    Path(project): Path<String>,
    Query(query): Query<RangeQuery>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if !ctx.signed_in(&headers) {
        return to_login(&uri);
    }
    let range = match query.resolve(ctx.today()) {
        Ok(r) => r,
        Err(e) => {
            return html_response(
                StatusCode::BAD_REQUEST,
                message_page("Bad date range", Chrome::Admin, &e.to_string()),
            );
        }
    };
    match ctx.backend.stats(&project, range.from, range.to).await {
        Ok(Some(stats)) => {
            // Skew is a side note: failing to read it must not hide the stats.
            let skew = ctx
                .backend
                .skew(&project, range.from, range.to)
                .await
                .unwrap_or_default();
            html_response(
                StatusCode::OK,
                pages::render_project_with_skew(&stats, &range, &skew),
            )
        }
        Ok(None) => not_found(Chrome::Admin),
        Err(e) => internal_error(&e, Chrome::Admin),
    }
}

async fn export(
    State(ctx): State<Ctx>,
    Path((project, file)): Path<(String, String)>,
    Query(query): Query<RangeQuery>,
    headers: HeaderMap,
) -> Response {
    if !ctx.admin(&headers) {
        return json_error(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "sign in or send the admin token as `Authorization: Bearer <token>`",
        );
    }
    let Some(table) = file
        .strip_suffix(".csv")
        .and_then(|name| name.parse::<CsvTable>().ok())
    else {
        return json_error(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such export");
    };
    let range = match query.resolve(ctx.today()) {
        Ok(r) => r,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                ErrorCode::MalformedPayload,
                &e.to_string(),
            );
        }
    };
    match ctx.backend.stats(&project, range.from, range.to).await {
        Ok(Some(stats)) => {
            // The project name came from a URL; keep only safe characters in the file name.
            let safe: String = project
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                .collect();
            let disposition = format!(
                "attachment; filename=\"{safe}-{}-{}-{}.csv\"",
                table.as_str(),
                range.from,
                range.to
            );
            (
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                    (header::CONTENT_DISPOSITION, disposition),
                ],
                export::csv(&stats, table),
            )
                .into_response()
        }
        Ok(None) => json_error(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "no such project",
        ),
        Err(e) => stats_failed(&e),
    }
}

/// The query of the sign-in page.
#[derive(Debug, Default, Deserialize)]
struct LoginQuery {
    #[serde(default)]
    next: Option<String>,
}

async fn login_page(
    State(ctx): State<Ctx>,
    Query(q): Query<LoginQuery>,
    headers: HeaderMap,
) -> Response {
    let next = safe_next(q.next.as_deref());
    if ctx.signed_in(&headers) {
        return Redirect::to(next).into_response();
    }
    html_response(StatusCode::OK, pages::render_login(None, next))
}

/// The sign-in form's fields.
#[derive(Debug, Default, Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    next: Option<String>,
}

async fn login(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if !same_origin(&headers) {
        return html_response(
            StatusCode::FORBIDDEN,
            message_page(
                "Forbidden",
                Chrome::Plain,
                "Sign in from the collector's own page.",
            ),
        );
    }
    let next = safe_next(form.next.as_deref());
    if !ctx.backend.check_admin_token(form.token.trim()) {
        // A short pause makes guessing online even slower than the token's
        // length already does, at no cost to a maintainer who mistyped.
        tokio::time::sleep(Duration::from_millis(250)).await;
        return html_response(
            StatusCode::UNAUTHORIZED,
            pages::render_login(Some("That is not the admin token."), next),
        );
    }
    let Some(id) = ctx.sessions.create() else {
        return html_response(
            StatusCode::SERVICE_UNAVAILABLE,
            message_page(
                "Try again",
                Chrome::Plain,
                "The system could not provide randomness for a session.",
            ),
        );
    };
    let cookie = session::set_cookie(&id, ctx.sessions.ttl(), ctx.secure(&headers));
    ([(header::SET_COOKIE, cookie)], Redirect::to(next)).into_response()
}

async fn logout(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    if !same_origin(&headers) {
        return html_response(
            StatusCode::FORBIDDEN,
            message_page(
                "Forbidden",
                Chrome::Plain,
                "Sign out from the collector's own page.",
            ),
        );
    }
    if let Some(id) = session::session_cookie(&headers) {
        ctx.sessions.remove(id);
    }
    let cookie = session::clear_cookie(ctx.secure(&headers));
    (
        [(header::SET_COOKIE, cookie)],
        Redirect::to("/dashboard/login"),
    )
        .into_response()
}

async fn public_stats(ctx: &Ctx, project: &str) -> Result<Option<PublicStats>, BackendError> {
    let Some(settings) = ctx.config.public.get(project) else {
        return Ok(None);
    };
    let today = ctx.today();
    let Some(cells) = ctx.backend.public_cells(project, *settings, today).await? else {
        return Ok(None);
    };
    let noise =
        Noise::new(settings.budget, settings.min_count).map_err(|e| BackendError(e.to_string()))?;
    Ok(Some(PublicStats::from_released(
        project,
        today,
        settings,
        noise.version_threshold(),
        &cells,
    )))
}

async fn public_page(State(ctx): State<Ctx>, Path(project): Path<String>) -> Response {
    match public_stats(&ctx, &project).await {
        Ok(Some(p)) => html_response(StatusCode::OK, public::render_public(&p)),
        Ok(None) => not_found(Chrome::Plain),
        Err(e) => internal_error(&e, Chrome::Plain),
    }
}

async fn public_json(State(ctx): State<Ctx>, Path(project): Path<String>) -> Response {
    match public_stats(&ctx, &project).await {
        Ok(Some(p)) => axum::Json(p).into_response(),
        Ok(None) => json_error(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "no such public project",
        ),
        Err(e) => stats_failed(&e),
    }
}

async fn asset(Path(file): Path<String>) -> Response {
    let (body, content_type) = match file.as_str() {
        "dashboard.css" => (STYLESHEET, "text/css; charset=utf-8"),
        "icon.svg" => (ICON, "image/svg+xml"),
        _ => return (StatusCode::NOT_FOUND, "not found").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// The JSON answer when stats cannot be read; the cause goes to the log only.
fn stats_failed(e: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %e, "dashboard could not read stats");
    json_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Internal,
        "could not read stats",
    )
}
