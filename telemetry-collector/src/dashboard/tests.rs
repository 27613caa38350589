//! Handler tests of the dashboard's routes over a fixed, in-memory backend.
//! The same routes are tested over the real collector in `tests/it/dashboard.rs`.

use std::sync::Mutex;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use tower::ServiceExt as _;

use super::pages::tests::{HOSTILE, assert_escaped, sample_stats};
use super::*;

const TOKEN: &str = "test-admin-token-0123456789";

/// Serves `sample_stats()` for `demo-cli` and records each window asked for.
#[derive(Default)]
struct FakeBackend {
    asked: Mutex<Vec<(String, Day, Day)>>,
}

impl Backend for FakeBackend {
    fn check_admin_token(&self, token: &str) -> bool {
        token == TOKEN
    }

    fn projects(&self) -> BackendFuture<'_, Vec<String>> {
        Box::pin(async { Ok(vec!["demo-cli".to_owned()]) })
    }

    fn stats<'a>(
        &'a self,
        project: &'a str,
        from: Day,
        to: Day,
    ) -> BackendFuture<'a, Option<ProjectStats>> {
        Box::pin(async move {
            self.asked
                .lock()
                .unwrap()
                .push((project.to_owned(), from, to));
            Ok((project == "demo-cli").then(|| {
                let mut stats = sample_stats();
                stats.from = from;
                stats.to = to;
                stats
            }))
        })
    }

    fn public_cells<'a>(
        &'a self,
        project: &'a str,
        _settings: PublicProject,
        today: Day,
    ) -> BackendFuture<'a, Option<Vec<crate::store::ReleasedCell>>> {
        Box::pin(async move {
            self.asked
                .lock()
                .unwrap()
                .push((project.to_owned(), today, today));
            Ok((project == "demo-cli").then(super::public::tests::sample_cells))
        })
    }
}

fn today() -> Day {
    "2026-11-21".parse().unwrap()
}

fn app_with(public: &[(&str, u64)]) -> (Router, Arc<FakeBackend>) {
    let backend = Arc::new(FakeBackend::default());
    let config = DashboardConfig {
        public: public
            .iter()
            .map(|(p, k)| {
                (
                    p.to_string(),
                    PublicProject {
                        min_count: *k,
                        ..PublicProject::default()
                    },
                )
            })
            .collect(),
        clock: Arc::new(today),
        ..DashboardConfig::default()
    };
    (
        router(backend.clone(), config, Arc::new(Sessions::default())),
        backend,
    )
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, HeaderMap, String) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn get_with_cookie(uri: &str, cookie: &str) -> Request<Body> {
    Request::get(uri)
        .header(header::COOKIE, cookie)
        .body(Body::empty())
        .unwrap()
}

fn login_request(token: &str, next: &str) -> Request<Body> {
    Request::post("/dashboard/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::HOST, "127.0.0.1:8750")
        .header(header::ORIGIN, "http://127.0.0.1:8750")
        .body(Body::from(format!(
            "token={}&next={}",
            url_component(token),
            url_component(next)
        )))
        .unwrap()
}

/// Signs in and returns the `name=value` cookie to send back.
async fn sign_in(app: &Router) -> String {
    let (status, headers, _) = send(app, login_request(TOKEN, "/dashboard")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let set = headers[header::SET_COOKIE].to_str().unwrap();
    set.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn pages_require_sign_in() {
    let (app, backend) = app_with(&[]);
    for (uri, next) in [
        ("/dashboard", "%2Fdashboard"),
        (
            "/dashboard/projects/demo-cli?from=2026-11-01",
            "%2Fdashboard%2Fprojects%2Fdemo-cli%3Ffrom%3D2026-11-01",
        ),
    ] {
        let (status, headers, _) = send(&app, get(uri)).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{uri}");
        assert_eq!(
            headers[header::LOCATION],
            format!("/dashboard/login?next={next}").as_str()
        );
    }
    let (status, _, _) = send(
        &app,
        get_with_cookie("/dashboard", "telemetry_session=forged"),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(
        backend.asked.lock().unwrap().is_empty(),
        "no stats were read without sign-in"
    );
    let (status, _, body) = send(&app, get("/")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(body.is_empty());
}

#[tokio::test]
async fn sign_in_with_the_admin_token_sets_a_strict_http_only_cookie() {
    let (app, _) = app_with(&[]);
    let (status, headers, body) = send(&app, login_request("wrong", "/dashboard")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers.get(header::SET_COOKIE).is_none());
    assert!(body.contains("That is not the admin token."));

    let (status, headers, _) =
        send(&app, login_request(TOKEN, "/dashboard/projects/demo-cli")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/dashboard/projects/demo-cli");
    let cookie = headers[header::SET_COOKIE].to_str().unwrap();
    assert!(cookie.starts_with("telemetry_session="));
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/dashboard"] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP without a proxy: {cookie}"
    );

    let mut behind_tls = login_request(TOKEN, "/dashboard");
    behind_tls
        .headers_mut()
        .insert("x-forwarded-proto", HeaderValue::from_static("https"));
    let (_, headers, _) = send(&app, behind_tls).await;
    assert!(
        headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .ends_with("; Secure")
    );
}

#[tokio::test]
async fn sign_in_refuses_other_sites_and_foreign_redirects() {
    let (app, _) = app_with(&[]);
    let mut cross = login_request(TOKEN, "/dashboard");
    cross.headers_mut().insert(
        header::ORIGIN,
        HeaderValue::from_static("https://evil.example"),
    );
    let (status, headers, _) = send(&app, cross).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(headers.get(header::SET_COOKIE).is_none());

    for next in [
        "https://evil.example/",
        "//evil.example",
        "/dashboardx",
        "/\\evil",
    ] {
        let (_, headers, _) = send(&app, login_request(TOKEN, next)).await;
        assert_eq!(headers[header::LOCATION], "/dashboard", "{next}");
    }
}

#[tokio::test]
async fn signed_in_pages_show_the_numbers_escaped_under_a_strict_policy() {
    let (app, backend) = app_with(&[]);
    let cookie = sign_in(&app).await;

    let (status, headers, body) = send(&app, get_with_cookie("/dashboard", &cookie)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(headers["content-security-policy"], CONTENT_SECURITY_POLICY);
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    assert!(body.contains("<td class=\"n installs-30d\">12</td>"));
    assert_eq!(
        backend.asked.lock().unwrap().last().unwrap(),
        &(
            "demo-cli".to_owned(),
            "2026-10-23".parse().unwrap(),
            today()
        ),
        "the overview covers the last 30 days"
    );

    let (status, _, body) = send(
        &app,
        get_with_cookie(
            "/dashboard/projects/demo-cli?from=2026-11-09&to=2026-11-21",
            &cookie,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_escaped(&body);
    assert!(body.contains(&format!(
        "<td class=\"event-name\">{}</td>",
        html::esc(HOSTILE[0])
    )));
    assert!(body.contains("id=\"stat-setup-completed\">6</div>"));
    assert!(!body.contains("<script"), "the dashboard uses no script");
    assert!(
        !body.contains("http://") && !body.contains("https://"),
        "no external asset"
    );
}

#[tokio::test]
async fn bad_ranges_and_unknown_projects_are_refused() {
    let (app, _) = app_with(&[]);
    let cookie = sign_in(&app).await;
    let (status, _, body) = send(
        &app,
        get_with_cookie("/dashboard/projects/demo-cli?from=%3Cscript%3E", &cookie),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("`from` must be a date"));
    assert!(!body.contains("<script>"));
    let (status, _, _) = send(&app, get_with_cookie("/dashboard/projects/nope", &cookie)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn sign_out_ends_the_session() {
    let (app, _) = app_with(&[]);
    let cookie = sign_in(&app).await;
    let logout = Request::post("/dashboard/logout")
        .header(header::COOKIE, &cookie)
        .body(Body::empty())
        .unwrap();
    let (status, headers, _) = send(&app, logout).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(
        headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let (status, _, _) = send(&app, get_with_cookie("/dashboard", &cookie)).await;
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "the old cookie no longer works"
    );
}

#[tokio::test]
async fn csv_exports_need_the_admin_token_or_a_session() {
    let (app, _) = app_with(&[]);
    let uri = "/dashboard/projects/demo-cli/export/versions.csv?from=2026-11-09&to=2026-11-21";
    let (status, _, body) = send(&app, get(uri)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let err: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["error"], "unauthorized");

    let wrong = Request::get(uri)
        .header(header::AUTHORIZATION, "Bearer nope")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, wrong).await.0, StatusCode::UNAUTHORIZED);

    let bearer = Request::get(uri)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let (status, headers, body) = send(&app, bearer).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/csv; charset=utf-8");
    assert_eq!(
        headers[header::CONTENT_DISPOSITION],
        "attachment; filename=\"demo-cli-versions-2026-11-09-2026-11-21.csv\""
    );
    assert_eq!(body, export::csv(&sample_stats(), CsvTable::Versions));

    let cookie = sign_in(&app).await;
    let (status, _, body) = send(
        &app,
        get_with_cookie("/dashboard/projects/demo-cli/export/daily.csv", &cookie),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.lines().count(), 1 + sample_stats().daily.len());
    let (status, _, _) = send(
        &app,
        get_with_cookie("/dashboard/projects/demo-cli/export/secrets.csv", &cookie),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn public_pages_exist_only_for_projects_that_opt_in() {
    let (closed, _) = app_with(&[]);
    for uri in ["/public/demo-cli", "/public/demo-cli/stats.json"] {
        assert_eq!(
            send(&closed, get(uri)).await.0,
            StatusCode::NOT_FOUND,
            "{uri}"
        );
    }

    let (open, backend) = app_with(&[("demo-cli", 10)]);
    let (status, headers, body) = send(&open, get("/public/demo-cli/stats.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-security-policy"], CONTENT_SECURITY_POLICY);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let want = serde_json::to_value(super::public::tests::sample_public()).unwrap();
    assert_eq!(json, want, "the released cells, as public.rs computes them");
    assert!(json.get("installs_all_time").is_none());
    assert_eq!(json["min_count"], 10);
    assert!(!body.contains("install_id") && !body.contains("identity"));
    assert!(
        !body.contains("alert(1)</script>"),
        "event names are not published"
    );
    assert_eq!(
        backend.asked.lock().unwrap().last().unwrap().1,
        today(),
        "released for the dashboard's clock"
    );

    let (status, _, body) = send(&open, get("/public/demo-cli")).await;
    assert_eq!(status, StatusCode::OK);
    assert_escaped(&body);
    assert!(body.contains("id=\"noise-line\""));
    assert!(!body.contains("Sign out"));
    // Another project stays private even when one is public.
    assert_eq!(
        send(&open, get("/public/other/stats.json")).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn assets_are_served_locally() {
    let (app, _) = app_with(&[]);
    let (status, headers, css) = send(&app, get("/assets/dashboard.css")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/css; charset=utf-8");
    assert!(css.contains("prefers-color-scheme: dark"));
    assert!(!css.contains("url("), "the stylesheet loads nothing else");
    assert!(!css.contains("@import"));
    assert_eq!(send(&app, get("/assets/icon.svg")).await.0, StatusCode::OK);
    assert_eq!(
        send(&app, get("/assets/../Cargo.toml")).await.0,
        StatusCode::NOT_FOUND
    );
}
