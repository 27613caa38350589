//! The harness behind the end-to-end tests: builds the real `demo-cli` and
//! `telemetry-collector` binaries, runs the collector on a free loopback port
//! with a database in a temporary folder, and runs `demo-cli` in an isolated
//! home folder.
//!
//! Everything here is real: processes, HTTP on 127.0.0.1 and SQLite files.
//! Waits are bounded polls of observable state, never fixed sleeps that the
//! test's correctness depends on.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// How long any wait in these tests may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The folder holding this build's binaries (`target/debug`).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/e2e-<hash> -> target/debug
    exe.ancestors().nth(2).expect("target folder").to_path_buf()
}

/// Builds the two binaries once per test process, with the same cargo and
/// profile as the tests, and returns the folder holding them.
pub fn binaries() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "demo-cli",
                "-p",
                "telemetry-collector",
                "--bins",
            ])
            .current_dir(workspace_root())
            .status()
            .expect("running cargo build");
        assert!(
            status.success(),
            "building demo-cli and telemetry-collector failed"
        );
        bin_dir()
    })
}

/// The workspace's root folder.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The path of a built binary.
pub fn bin(name: &str) -> PathBuf {
    binaries().join(name)
}

/// A free port on 127.0.0.1, found by binding port 0 and letting it go.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

/// Polls `check` until it returns `Some`, failing the test after [`PATIENCE`].
pub fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An event's total in a `stats --format json` report (0 if absent).
pub fn event_count(stats: &Value, event: &str) -> u64 {
    stats["events"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["event"] == event)
        .and_then(|e| e["count"].as_u64())
        .unwrap_or(0)
}

/// A running collector process with its own database folder.
pub struct Collector {
    child: Option<Child>,
    /// The folder holding the database, its key files and the config.
    pub dir: TempDir,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Collector {
    /// Starts a collector that knows the `demo-cli` project (manifest checked,
    /// `max_tier = "full"`) and has no rate limit, on a free port.
    pub fn start() -> Collector {
        let manifest = workspace_root().join("examples/demo-cli/telemetry.toml");
        Collector::start_for("demo-cli", &manifest)
    }

    /// Like [`Collector::start`], for `project` with the manifest at `manifest`.
    pub fn start_for(project: &str, manifest: &Path) -> Collector {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = format!(
            "db = {db:?}\n[rate_limit]\nrequests_per_minute = 0\n\n[[projects]]\nname = {project:?}\nmanifest = {manifest:?}\nmax_tier = \"full\"\nretention_days = 90\n",
            db = dir.path().join("telemetry.db"),
        );
        std::fs::write(dir.path().join("collector.toml"), config).expect("writing config");
        let mut collector = Collector {
            child: None,
            dir,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        collector.restart_on(0);
        collector
    }

    /// (Re)starts the process on `port` (0 for any free port) and waits until it listens.
    pub fn restart_on(&mut self, port: u16) {
        let mut child = Command::new(bin("telemetry-collector"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--config",
            ])
            .arg(self.dir.path().join("collector.toml"))
            .env_remove("TELEMETRY_COLLECTOR_DB")
            .env_remove("TELEMETRY_COLLECTOR_LISTEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting telemetry-collector");
        let stdout = child.stdout.take().expect("collector stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|line| {
                line.strip_prefix("telemetry-collector listening on http://")
                    .map(str::to_owned)
            })
            .expect("the collector announces its address");
        // Keep draining stdout so the collector never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        self.addr = addr.parse().expect("a socket address");
        self.child = Some(child);
    }

    /// The base URL clients send to.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The database file.
    pub fn db(&self) -> PathBuf {
        self.dir.path().join("telemetry.db")
    }

    /// Stops the process with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// `telemetry-collector stats --format json` for `demo-cli`, parsed.
    pub fn stats(&self) -> Value {
        self.stats_of("demo-cli")
    }

    /// `telemetry-collector stats --format json` for `project`, parsed.
    pub fn stats_of(&self, project: &str) -> Value {
        match self.try_stats_of(project) {
            Some(stats) => stats,
            None => panic!("stats failed: {project:?} is not in the database yet"),
        }
    }

    /// Like [`Collector::stats`], but `None` while the database holds nothing
    /// of the demo yet, which `stats` refuses as an unknown project: for
    /// polling before the first upload has arrived.
    pub fn try_stats(&self) -> Option<Value> {
        self.try_stats_of("demo-cli")
    }

    /// Like [`Collector::stats_of`], but `None` while `project` has nothing in
    /// the database yet.
    pub fn try_stats_of(&self, project: &str) -> Option<Value> {
        let out = Command::new(bin("telemetry-collector"))
            .args([
                "stats",
                "--project",
                project,
                "--format",
                "json",
                "--days",
                "30",
                "--db",
            ])
            .arg(self.db())
            .output()
            .expect("running telemetry-collector stats");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() && stderr.contains("unknown project") {
            return None;
        }
        assert!(out.status.success(), "stats failed: {stderr}");
        Some(serde_json::from_slice(&out.stdout).expect("stats JSON"))
    }

    /// The number of rows in `table`.
    pub fn rows(&self, table: &str) -> i64 {
        let conn = rusqlite::Connection::open(self.db()).expect("opening the database");
        conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .expect("counting rows")
    }

    /// The database file and its WAL, as raw bytes, for canary scans.
    pub fn raw_bytes(&self) -> Vec<u8> {
        let mut bytes = std::fs::read(self.db()).unwrap_or_default();
        bytes.extend(std::fs::read(self.dir.path().join("telemetry.db-wal")).unwrap_or_default());
        bytes
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An isolated user: a home folder with its own XDG folders, running `demo-cli`.
pub struct User {
    /// The home folder.
    pub home: TempDir,
    /// The collector URL `demo-cli` sends to.
    pub endpoint: String,
}

impl User {
    /// A new user whose `demo-cli` sends to `endpoint`.
    pub fn new(endpoint: impl Into<String>) -> User {
        User {
            home: tempfile::tempdir().expect("tempdir"),
            endpoint: endpoint.into(),
        }
    }

    /// A `demo-cli` command in this user's environment, with no terminal.
    pub fn demo(&self, args: &[&str]) -> Command {
        self.tool(&bin("demo-cli"), "DEMO_CLI", args)
    }

    /// A command of the tool at `program` in this user's environment, with no
    /// terminal. `prefix` is the tool's environment-variable prefix
    /// (`DEMO_CLI` for demo-cli).
    pub fn tool(&self, program: &Path, prefix: &str, args: &[&str]) -> Command {
        let home = self.home.path();
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env("HOME", home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_STATE_HOME", home.join(".local/state"))
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .env(format!("{prefix}_TELEMETRY_ENDPOINT"), &self.endpoint)
            .env_remove("DO_NOT_TRACK")
            .env_remove(format!("{prefix}_TELEMETRY"))
            .env_remove(format!("{prefix}_TELEMETRY_DEBUG"))
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `demo-cli` and returns its output, failing the test if it failed.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_tool(&bin("demo-cli"), "DEMO_CLI", args)
    }

    /// Runs [`User::tool`] and returns its output, failing the test if it failed.
    pub fn run_tool(&self, program: &Path, prefix: &str, args: &[&str]) -> Output {
        let name = program.file_name().unwrap_or_default().to_string_lossy();
        let out = self
            .tool(program, prefix, args)
            .output()
            .unwrap_or_else(|e| panic!("running {name}: {e}"));
        assert!(
            out.status.success(),
            "{name} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Opts in at `tier` from a script; at `full` with `email` and an organization.
    pub fn enable(&self, tier: &str, email: &str) {
        let email = format!("email={email}");
        let mut args = vec!["telemetry", "enable", tier, "--yes"];
        if tier == "full" {
            args.extend(["--identity", &email, "--identity", "organization=Acme"]);
        }
        self.run(&args);
    }

    /// `demo-cli telemetry status --json`, parsed.
    pub fn status(&self) -> Value {
        let out = self.run(&["telemetry", "status", "--json"]);
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    /// Every file under the user's home, for checking nothing was written.
    pub fn files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.push(path);
                }
            }
        }
        let mut out = Vec::new();
        walk(self.home.path(), &mut out);
        out
    }
}
