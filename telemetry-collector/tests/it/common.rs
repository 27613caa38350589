//! Helpers shared by the integration tests: configs in temporary folders,
//! payload builders, in-process requests and a real collector process.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use serde_json::{Value, json};
use telemetry_collector::config::{Config, ProjectConfig};
use telemetry_collector::{AppState, app};
use telemetry_protocol::{Tier, Uuid};
use tower::ServiceExt;

/// The manifest of the test project `demo`.
pub(crate) const MANIFEST: &str = r#"
project = "demo"
endpoint = "http://127.0.0.1:9"

[events.command]
description = "A command ran"
min_tier = "aggregate"
props.name = { kind = "enum", values = ["greet", "init"], description = "Which command" }

[events.crash]
description = "The tool crashed"
min_tier = "anonymous"

[identity.email]
description = "An address the maintainers may write to"
max_len = 254
"#;

/// The admin token every test config uses.
pub(crate) const TOKEN: &str = "test-admin-token-0123456789";

/// A config for the project `demo` with its database in `dir`, no rate limit.
pub(crate) fn config(dir: &Path) -> Config {
    let manifest = dir.join("demo.telemetry.toml");
    std::fs::write(&manifest, MANIFEST).unwrap();
    let mut config = Config {
        db: dir.join("telemetry.db").to_string_lossy().into_owned(),
        admin_token: Some(TOKEN.to_owned()),
        projects: vec![ProjectConfig {
            name: "demo".into(),
            manifest,
            max_tier: Tier::Full,
            retention_days: 90,
        }],
        ..Config::default()
    };
    config.rate_limit.requests_per_minute = 0;
    config
}

/// The same settings as [`config`], as a TOML file for the binary; returns its path.
pub(crate) fn config_file(dir: &Path, extra: &str) -> PathBuf {
    config_file_at(dir, &dir.join("telemetry.db"), extra)
}

/// [`config_file`] with the database at `db` instead of in `dir`.
pub(crate) fn config_file_at(dir: &Path, db: &Path, extra: &str) -> PathBuf {
    std::fs::write(dir.join("demo.telemetry.toml"), MANIFEST).unwrap();
    let path = dir.join("collector.toml");
    std::fs::write(
        &path,
        format!(
            "db = {db:?}\nadmin_token = {TOKEN:?}\n{extra}\n[rate_limit]\nrequests_per_minute = 0\n\n\
             [[projects]]\nname = \"demo\"\nmanifest = \"demo.telemetry.toml\"\nmax_tier = \"full\"\n",
            db = db.to_string_lossy()
        ),
    )
    .unwrap();
    path
}

/// The state for `config`.
pub(crate) fn state(config: &Config) -> AppState {
    AppState::from_config(config).unwrap().0
}

/// A context object.
pub(crate) fn context() -> Value {
    json!({"tool_version": "1.4.2", "os": "linux", "arch": "x86_64", "toolkit_version": "0.1.0"})
}

/// Today as `YYYY-MM-DD`.
pub(crate) fn today() -> String {
    telemetry_collector::ingest::today().to_string()
}

/// A timestamp on today's date.
pub(crate) fn now_ts() -> String {
    format!("{}T12:00:00.000Z", today())
}

/// An `aggregate` payload with one counter.
pub(crate) fn aggregate(report_id: Uuid, event: &str, count: u64) -> Value {
    json!({
        "project": "demo",
        "tier": "aggregate",
        "context": context(),
        "report_id": report_id,
        "counters": [{"day": today(), "event": event, "count": count}],
    })
}

/// An event object.
pub(crate) fn event(id: Uuid, name: &str) -> Value {
    json!({"id": id, "name": name, "timestamp": now_ts()})
}

/// An `anonymous` payload.
pub(crate) fn anonymous(install: Uuid, events: Vec<Value>) -> Value {
    json!({
        "project": "demo",
        "tier": "anonymous",
        "context": context(),
        "install_id": install,
        "events": events,
    })
}

/// A `full` payload with an e-mail identity.
pub(crate) fn full(install: Uuid, events: Vec<Value>, email: &str) -> Value {
    json!({
        "project": "demo",
        "tier": "full",
        "context": context(),
        "install_id": install,
        "events": events,
        "identity": {"email": email},
    })
}

/// A JSON POST request.
pub(crate) fn post(path: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap()
}

/// Sends `request` through the router in-process.
pub(crate) async fn send(state: &AppState, request: Request<Body>) -> (StatusCode, Response<Body>) {
    let response = app(state.clone()).oneshot(request).await.unwrap();
    (response.status(), response)
}

/// Sends `request` and parses the JSON answer.
pub(crate) async fn send_json(state: &AppState, request: Request<Body>) -> (StatusCode, Value) {
    let (status, response) = send(state, request).await;
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}

/// POSTs `body` as JSON to `/v1/ingest` in-process.
pub(crate) async fn ingest(state: &AppState, body: &Value) -> (StatusCode, Value) {
    send_json(state, post("/v1/ingest", body.to_string())).await
}

/// An admin GET in-process.
pub(crate) async fn admin_get(state: &AppState, path: &str) -> (StatusCode, Value) {
    let request = Request::get(path)
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    send_json(state, request).await
}

/// One integer from the database at `db`.
pub(crate) fn query_i64(db: &Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// A collector process; killed with SIGKILL when dropped.
pub(crate) struct Collector {
    /// The child process.
    pub(crate) child: Child,
    /// `http://127.0.0.1:PORT`.
    pub(crate) url: String,
}

impl Collector {
    /// Starts `telemetry-collector serve --listen 127.0.0.1:0 --config <config>`
    /// and waits for the line that says where it listens.
    pub(crate) fn start(config: &Path, stderr: Stdio) -> Collector {
        Collector::spawn(Command::new(Collector::BIN), config, stderr)
    }

    /// The collector binary under test.
    pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_telemetry-collector");

    /// Like [`Collector::start`], but runs `command`, which must end by
    /// executing [`Collector::BIN`] with the arguments appended here (a
    /// wrapper such as `unshare ... sh -c '... exec "$@"'`). The child's pid
    /// is then the collector's.
    pub(crate) fn spawn(mut command: Command, config: &Path, stderr: Stdio) -> Collector {
        let mut child = command
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(config)
            .env_remove("TELEMETRY_COLLECTOR_DB")
            .env_remove("TELEMETRY_COLLECTOR_LISTEN")
            .env("RUST_LOG", "trace")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines
            .next()
            .expect("the collector printed nothing")
            .unwrap();
        let url = first
            .strip_prefix("telemetry-collector listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {first}"))
            .to_owned();
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Collector { child, url }
    }

    /// Stops the process with SIGTERM and waits for it; returns whether it exited cleanly.
    pub(crate) fn terminate(mut self) -> bool {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.child.wait().unwrap().success()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client with timeouts.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap()
}

/// POSTs JSON over real HTTP; returns the status and the parsed body.
pub(crate) async fn http_post(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
) -> Result<(u16, Value), reqwest::Error> {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// The body of an admin GET over real HTTP.
pub(crate) async fn http_admin_get(client: &reqwest::Client, url: &str) -> String {
    client
        .get(url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A fresh random id (version 4 layout).
pub(crate) fn new_id() -> Uuid {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).unwrap();
    uuid_v4(bytes)
}

fn uuid_v4(mut bytes: [u8; 16]) -> Uuid {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    Uuid::from_bytes(bytes)
}
