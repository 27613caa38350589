//! Shared test fixtures: a fake collector on 127.0.0.1:0 and isolated folders.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use telemetry_client::testing::Folders;
use telemetry_client::{Telemetry, Tier};
use telemetry_protocol::{DeleteRequest, IngestPayload, Uuid};

/// The manifest the in-process tests embed.
pub(crate) const MANIFEST: &str = r#"
project = "it-cli"
endpoint = "https://telemetry.invalid"

[events.command]
description = "A command ran"
props.name = { kind = "enum", values = ["greet", "init"], description = "Which command" }

[identity.email]
description = "An address to write to"
max_len = 32
"#;

/// The probe binary's manifest (tests/probe/telemetry.toml).
pub(crate) const PROBE_MANIFEST: &str = include_str!("../probe/telemetry.toml");

/// How the fake collector answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// 200 with an `IngestResponse`.
    Ok,
    /// Stores the payload, then answers 500: an acknowledgement lost on the way.
    LoseAck,
    /// Answers this status with an error body, storing nothing.
    Status(u16),
    /// 429 with `Retry-After` in seconds.
    RetryAfter(u64),
    /// 503 with `Retry-After` in seconds.
    Unavailable(u64),
    /// 413 for a body over this many bytes, else like `Ok`.
    LimitBytes(usize),
    /// 200, stores the payload, and says this many items were refused.
    OkRefused(u64),
}

/// What the fake collector saw.
#[derive(Default)]
pub(crate) struct Seen {
    /// Every ingest body, in arrival order, duplicates included.
    pub(crate) ingests: Vec<IngestPayload>,
    /// Every delete body.
    pub(crate) deletes: Vec<DeleteRequest>,
    /// The size of every ingest body, in arrival order.
    pub(crate) ingest_bytes: Vec<usize>,
}

struct Shared {
    mode: Mutex<Mode>,
    seen: Mutex<Seen>,
    delay_ms: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    requests: AtomicUsize,
}

/// A small collector stand-in running on its own runtime thread.
pub(crate) struct Collector {
    /// `http://127.0.0.1:<port>`.
    pub(crate) url: String,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Collector {
    pub(crate) fn start(mode: Mode) -> Collector {
        let shared = Arc::new(Shared {
            mode: Mutex::new(mode),
            seen: Mutex::new(Seen::default()),
            delay_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = axum::Router::new()
            .route("/v1/ingest", post(ingest))
            .route("/v1/delete", post(delete))
            .with_state(shared.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await
                    .unwrap();
            });
        });
        Collector {
            url: format!("http://{addr}"),
            shared,
            shutdown: Some(tx),
        }
    }

    pub(crate) fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    pub(crate) fn set_delay(&self, delay: Duration) {
        self.shared
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    pub(crate) fn seen<R>(&self, f: impl FnOnce(&Seen) -> R) -> R {
        f(&self.shared.seen.lock().unwrap())
    }

    pub(crate) fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    pub(crate) fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Every event id received, with how often.
    pub(crate) fn event_ids(&self) -> BTreeMap<Uuid, usize> {
        let mut ids = BTreeMap::new();
        self.seen(|s| {
            for p in &s.ingests {
                for e in p.events.iter().flatten() {
                    *ids.entry(e.id).or_default() += 1;
                }
            }
        });
        ids
    }

    /// Distinct events named `name` (deduplicated by id, as the collector does).
    pub(crate) fn unique_events(&self, name: &str) -> usize {
        let mut ids = HashSet::new();
        self.seen(|s| {
            for p in &s.ingests {
                for e in p.events.iter().flatten().filter(|e| e.name == name) {
                    ids.insert(e.id);
                }
            }
        });
        ids.len()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> Self {
        shared.requests.fetch_add(1, Ordering::SeqCst);
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn answer(shared: &Shared, bytes: usize, store: impl FnOnce(&mut Seen)) -> Response {
    let delay = shared.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let mode = *shared.mode.lock().unwrap();
    let error = |status: u16, code: &str| {
        let body = format!(r#"{{"error":"{code}","message":"test"}}"#);
        (StatusCode::from_u16(status).unwrap(), body).into_response()
    };
    match mode {
        Mode::Ok => {
            store(&mut shared.seen.lock().unwrap());
            (StatusCode::OK, r#"{"accepted":1,"duplicates":0}"#).into_response()
        }
        Mode::LoseAck => {
            store(&mut shared.seen.lock().unwrap());
            error(500, "internal")
        }
        Mode::Status(status) => error(
            status,
            if status == 422 {
                "policy_violation"
            } else {
                "internal"
            },
        ),
        Mode::RetryAfter(secs) | Mode::Unavailable(secs) => {
            let mut r = if matches!(mode, Mode::RetryAfter(_)) {
                error(429, "rate_limited")
            } else {
                error(503, "unavailable")
            };
            r.headers_mut().insert(
                "retry-after",
                HeaderValue::from_str(&secs.to_string()).unwrap(),
            );
            r
        }
        Mode::LimitBytes(limit) if bytes > limit => error(413, "too_large"),
        Mode::LimitBytes(_) => {
            store(&mut shared.seen.lock().unwrap());
            (StatusCode::OK, r#"{"accepted":1,"duplicates":0}"#).into_response()
        }
        Mode::OkRefused(n) => {
            store(&mut shared.seen.lock().unwrap());
            let body = format!(r#"{{"accepted":1,"duplicates":0,"refused":{n}}}"#);
            (StatusCode::OK, body).into_response()
        }
    }
}

async fn ingest(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let _guard = InFlight::enter(&shared);
    assert_eq!(headers.get("content-type").unwrap(), "application/json");
    let payload: IngestPayload = serde_json::from_slice(&body).expect("a protocol payload");
    let bytes = body.len();
    answer(&shared, bytes, |s| {
        s.ingests.push(payload);
        s.ingest_bytes.push(bytes);
    })
    .await
}

async fn delete(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let _guard = InFlight::enter(&shared);
    let request: DeleteRequest = serde_json::from_slice(&body).expect("a delete request");
    answer(&shared, body.len(), |s| s.deletes.push(request)).await
}

/// Isolated folders for one test.
pub(crate) struct Home {
    pub(crate) dir: tempfile::TempDir,
}

impl Home {
    pub(crate) fn new() -> Home {
        Home {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The toolkit folders as `directories` derives them from the XDG
    /// variables that [`Home::command`] sets.
    pub(crate) fn folders(&self) -> Folders {
        Folders::new(
            self.path("config/telemetry-toolkit"),
            self.path("state/telemetry-toolkit"),
        )
    }

    /// An in-process handle on these folders.
    pub(crate) fn telemetry(&self, manifest: &str, endpoint: &str) -> Telemetry {
        Telemetry::builder(manifest)
            .tool_version("2.0.1")
            .folders(self.folders())
            .endpoint(endpoint)
            .system_policy(None)
            .interactive(false)
            .detached_upload(false)
            .build()
    }

    /// Stores `tier` as the user's choice for `tool`.
    pub(crate) fn consent(&self, manifest: &str, tier: Tier) {
        let t = self.telemetry(manifest, "https://unused.invalid");
        t.control()
            .unwrap()
            .set_level(tier, Default::default())
            .unwrap();
    }

    /// The probe binary with HOME and XDG folders pointing into this home and
    /// every variable that could change the outcome removed.
    pub(crate) fn command(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_telemetry-client-probe"));
        cmd.env("HOME", self.path("home"))
            .env("XDG_CONFIG_HOME", self.path("config"))
            .env("XDG_STATE_HOME", self.path("state"))
            .env("XDG_DATA_HOME", self.path("data"))
            .env("XDG_CACHE_HOME", self.path("cache"))
            .env_remove("DO_NOT_TRACK")
            .env_remove("PROBE_CLI_TELEMETRY")
            .env_remove("PROBE_CLI_TELEMETRY_DEBUG")
            .env_remove("TELEMETRY_TOOLKIT_UPLOADER")
            // Plain http to a non-loopback host: the host never starts an
            // uploader unless a test points this at a collector.
            .env("PROBE_CLI_TELEMETRY_ENDPOINT", "http://192.0.2.1:9");
        cmd
    }
}

/// Polls `check` every 50 ms until it holds; panics after `limit` so a broken
/// feature fails the test instead of hanging it. Not a timing assertion: the
/// limit is far above what the work needs.
pub(crate) fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
