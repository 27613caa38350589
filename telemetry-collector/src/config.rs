//! The collector's configuration: the TOML file, its defaults, and the
//! commented example that `telemetry-collector default-config` prints.
//!
//! Precedence is flags > environment variables > this file > defaults. Flags
//! and environment variables are resolved by the binary (clap reads both) and
//! applied on top of a loaded [`Config`] with [`Config::apply_overrides`].

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use telemetry_protocol::Tier;

/// The listen address used when none is configured.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8750";
/// The database used when none is configured.
pub const DEFAULT_DB: &str = "./telemetry.db";
/// The request body limit used when none is configured: 256 KiB.
pub const DEFAULT_BODY_LIMIT: usize = 256 * 1024;
/// Raw-event retention, in days, when a project sets none.
pub const DEFAULT_RETENTION_DAYS: u32 = 90;

/// The whole configuration file. Every key is optional.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The address to listen on.
    pub listen: String,
    /// The SQLite database file, or a `postgres://` URL to share one
    /// PostgreSQL database between several collectors.
    pub db: String,
    /// The admin token itself. Prefer [`Config::admin_token_file`].
    pub admin_token: Option<String>,
    /// A file holding the admin token; created with a random token if missing.
    pub admin_token_file: Option<PathBuf>,
    /// The file holding the per-deployment key that pseudonymizes install ids;
    /// created on first start. Defaults to `<db>.pseudonym-key`.
    pub pseudonym_key_file: Option<PathBuf>,
    /// Largest accepted request body in bytes, before and after decompression.
    pub body_limit: usize,
    /// Raw-event retention for projects that do not set their own (open mode).
    pub retention_days: u32,
    /// How often the retention purge runs, in seconds.
    pub purge_interval_secs: u64,
    /// Per-source request limits for `/v1/ingest` and `/v1/delete`.
    pub rate_limit: RateLimitConfig,
    /// The write queue between request handlers and the storage writer.
    pub queue: QueueConfig,
    /// Limits on connections and on how long a client may take.
    pub connections: ConnectionConfig,
    /// Caps on distinct values per UTC day; see [`crate::cardinality`].
    pub cardinality: CardinalityConfig,
    /// The projects accepted. None means open mode.
    pub projects: Vec<ProjectConfig>,
    /// The web dashboard's public pages and cookie settings.
    pub dashboard: crate::dashboard::DashboardSettings,
}

/// Per-source rate limiting: a token bucket per client address, kept in memory only.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained requests per minute from one source; 0 turns the limit off.
    pub requests_per_minute: u32,
    /// Requests one source may send at once before the sustained rate applies.
    pub burst: u32,
    /// Key the limit by the last address in `X-Forwarded-For` instead of the
    /// peer address. Behind a reverse proxy every peer is the proxy, so without
    /// this one busy client would throttle everyone. Enable it only when the
    /// collector is reachable through the proxy alone, or clients can pick
    /// their own key.
    pub behind_proxy: bool,
}

/// Limits on connections, so that slow or idle clients cannot hold the
/// collector's connections; see [`crate::connections`].
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionConfig {
    /// Seconds a client has to send a whole request head, counted from the
    /// moment the connection waits for one. At most 10 by default.
    pub header_read_timeout_secs: u64,
    /// Seconds a client has to send a whole request body, counted from its head.
    pub body_read_timeout_secs: u64,
    /// Seconds an idle keep-alive connection is kept open.
    pub keep_alive_idle_secs: u64,
    /// Most connections open at once; past it, new ones are answered 503.
    pub max_connections: usize,
    /// Most connections open at once from one source address (IPv6 by /64);
    /// 0 for no limit. Not applied when `rate_limit.behind_proxy` is set,
    /// since every connection then comes from the proxy.
    pub max_per_source: usize,
}

impl ConnectionConfig {
    /// [`ConnectionConfig::header_read_timeout_secs`] as a duration.
    pub fn header_read_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.header_read_timeout_secs)
    }

    /// [`ConnectionConfig::body_read_timeout_secs`] as a duration.
    pub fn body_read_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.body_read_timeout_secs)
    }

    /// [`ConnectionConfig::keep_alive_idle_secs`] as a duration.
    pub fn keep_alive_idle(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.keep_alive_idle_secs)
    }
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 30,
            keep_alive_idle_secs: 15,
            max_connections: 1024,
            max_per_source: 32,
        }
    }
}

/// Caps on how many distinct values one UTC day may add.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CardinalityConfig {
    /// Distinct values per project, prop and day; the same cap holds for
    /// each event's prop combinations and for each context field.
    pub values_per_day: usize,
    /// Open mode only: distinct projects per day.
    pub open_projects_per_day: usize,
    /// Open mode only: distinct event names, and prop names, per project and day.
    pub open_names_per_day: usize,
}

impl Default for CardinalityConfig {
    fn default() -> Self {
        CardinalityConfig {
            values_per_day: 1000,
            open_projects_per_day: 100,
            open_names_per_day: 100,
        }
    }
}

/// The bounded write queue.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Writes waiting for the writer before `/v1/ingest` answers 503.
    pub capacity: usize,
    /// Most writes committed in one transaction.
    pub max_batch: usize,
}

/// One accepted project.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    /// The project name, as in its manifest.
    pub name: String,
    /// The project's `telemetry.toml`; relative paths are resolved against the config file.
    pub manifest: PathBuf,
    /// The highest tier accepted from this project.
    #[serde(default = "max_tier_default")]
    pub max_tier: Tier,
    /// Days raw events are kept; daily counters are kept for ever.
    #[serde(default = "retention_default")]
    pub retention_days: u32,
}

fn max_tier_default() -> Tier {
    Tier::Full
}

fn retention_default() -> u32 {
    DEFAULT_RETENTION_DAYS
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN.to_owned(),
            db: DEFAULT_DB.to_owned(),
            admin_token: None,
            admin_token_file: None,
            pseudonym_key_file: None,
            body_limit: DEFAULT_BODY_LIMIT,
            retention_days: DEFAULT_RETENTION_DAYS,
            purge_interval_secs: 3600,
            rate_limit: RateLimitConfig::default(),
            queue: QueueConfig::default(),
            connections: ConnectionConfig::default(),
            cardinality: CardinalityConfig::default(),
            projects: Vec::new(),
            dashboard: crate::dashboard::DashboardSettings::default(),
        }
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            requests_per_minute: 120,
            burst: 60,
            behind_proxy: false,
        }
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            capacity: 1024,
            max_batch: 256,
        }
    }
}

/// Hides the admin token, as a config may be logged while debugging.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("db", &self.db)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<hidden>"),
            )
            .field("admin_token_file", &self.admin_token_file)
            .field("pseudonym_key_file", &self.pseudonym_key_file)
            .field("body_limit", &self.body_limit)
            .field("retention_days", &self.retention_days)
            .field("purge_interval_secs", &self.purge_interval_secs)
            .field("rate_limit", &self.rate_limit)
            .field("queue", &self.queue)
            .field("connections", &self.connections)
            .field("cardinality", &self.cardinality)
            .field("projects", &self.projects)
            .field("dashboard", &self.dashboard)
            .finish()
    }
}

/// A configuration that could not be read or makes no sense.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("parsing {path}: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// What is wrong, with its position.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads a config file. Relative manifest paths are resolved against the
    /// file's directory, so a config works whatever the working directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Config::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for project in &mut config.projects {
            if project.manifest.is_relative() {
                project.manifest = base.join(&project.manifest);
            }
        }
        Ok(config)
    }

    /// Parses config text; the error names the line and what is wrong.
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Applies values given as flags or environment variables.
    pub fn apply_overrides(&mut self, listen: Option<String>, db: Option<String>) {
        if let Some(listen) = listen {
            self.listen = listen;
        }
        if let Some(db) = db {
            self.db = db;
        }
    }

    /// Checks what serde cannot: addresses, ranges and duplicate projects.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.listen.parse::<SocketAddr>().is_err() {
            return invalid(format!(
                "listen = {:?} is not an address such as 127.0.0.1:8750",
                self.listen
            ));
        }
        if crate::store::postgres::is_url(&self.db) {
            // Collectors sharing a database must hash install ids with one key
            // and accept one admin token; a path beside a URL means nothing.
            if self.pseudonym_key_file.is_none() {
                return invalid(
                    "a PostgreSQL db needs pseudonym_key_file: every collector on one database \
                     must read the same key file"
                        .to_owned(),
                );
            }
            if self.admin_token.is_none() && self.admin_token_file.is_none() {
                return invalid(
                    "a PostgreSQL db needs admin_token or admin_token_file, shared by every collector"
                        .to_owned(),
                );
            }
        }
        if let Some(token) = &self.admin_token
            && !crate::secrets::AdminToken::is_strong(token)
        {
            return invalid(format!(
                "admin_token must be at least {} characters{}; generate one with \
                 `head -c 32 /dev/urandom | base64`, or remove it to have one generated",
                crate::secrets::AdminToken::MIN_CHARS,
                if token.trim().is_empty() {
                    " (it is blank)"
                } else {
                    ""
                }
            ));
        }
        if self.body_limit < 1024 {
            return invalid("body_limit must be at least 1024 bytes".to_owned());
        }
        if self.queue.capacity == 0 || self.queue.max_batch == 0 {
            return invalid("queue.capacity and queue.max_batch must be at least 1".to_owned());
        }
        let c = &self.connections;
        if [
            c.header_read_timeout_secs,
            c.body_read_timeout_secs,
            c.keep_alive_idle_secs,
        ]
        .contains(&0)
            || c.max_connections == 0
        {
            return invalid(
                "connections: timeouts and max_connections must be at least 1".to_owned(),
            );
        }
        let caps = &self.cardinality;
        if caps.values_per_day == 0
            || caps.open_projects_per_day == 0
            || caps.open_names_per_day == 0
        {
            return invalid("cardinality caps must be at least 1".to_owned());
        }
        if self.retention_days == 0 {
            return invalid("retention_days must be at least 1".to_owned());
        }
        let d = &self.dashboard;
        if d.public_min_count < crate::dashboard::public::MIN_MIN_COUNT {
            return invalid(format!(
                "dashboard.public_min_count must be at least {}: smaller counts are mostly noise",
                crate::dashboard::public::MIN_MIN_COUNT
            ));
        }
        // Above 20 a week the noise is below one install per cell and the
        // guarantee means little; say so rather than publish near-exact counts.
        if !(d.public_epsilon_per_week > 0.0 && d.public_epsilon_per_week <= 20.0) {
            return invalid(format!(
                "dashboard.public_epsilon_per_week must be above 0 and at most 20, not {}",
                d.public_epsilon_per_week
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for project in &self.projects {
            if !telemetry_protocol::policy::is_project_name(&project.name) {
                return invalid(format!("project name {:?} is not valid", project.name));
            }
            if !names.insert(&project.name) {
                return invalid(format!("project {:?} is listed twice", project.name));
            }
            if project.max_tier == Tier::Off {
                return invalid(format!(
                    "project {:?}: max_tier = \"off\" would accept nothing; remove the project instead",
                    project.name
                ));
            }
            if project.retention_days == 0 {
                return invalid(format!(
                    "project {:?}: retention_days must be at least 1",
                    project.name
                ));
            }
        }
        Ok(())
    }

    /// The database path, for SQLite.
    pub fn db_path(&self) -> PathBuf {
        PathBuf::from(&self.db)
    }

    /// Where the pseudonymization key lives: configured, or beside the database.
    pub fn pseudonym_key_path(&self) -> PathBuf {
        self.pseudonym_key_file
            .clone()
            .unwrap_or_else(|| beside(&self.db_path(), "pseudonym-key"))
    }

    /// Where a generated admin token lives when none is configured: beside the database.
    pub fn default_admin_token_path(&self) -> PathBuf {
        beside(&self.db_path(), "admin-token")
    }
}

/// `<db>.<suffix>`: a file next to the database, named after it so that
/// several databases in one folder do not share it by accident.
fn beside(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    db.with_file_name(name)
}

/// The fully commented example config printed by `telemetry-collector default-config`.
pub const EXAMPLE: &str = r#"# telemetry-collector configuration.
#
# Every key is optional; the values shown are the defaults. Command-line flags
# override environment variables, which override this file:
#   --listen  TELEMETRY_COLLECTOR_LISTEN
#   --db      TELEMETRY_COLLECTOR_DB
#   --config  TELEMETRY_COLLECTOR_CONFIG

# Address and port to listen on. Keep it on 127.0.0.1 and put a TLS reverse
# proxy in front; the collector itself speaks plain HTTP.
listen = "127.0.0.1:8750"

# The SQLite database file. Two files are kept beside it and must be backed
# up with it: `<db>.pseudonym-key` and, unless configured below,
# `<db>.admin-token`.
db = "./telemetry.db"
# Or a PostgreSQL database that several collectors share. It then needs
# pseudonym_key_file and an admin token, the same on every collector; use TLS
# (sslmode is not built in: keep the server on loopback or a Unix socket, or
# tunnel it) and keep the password out of shared files where you can.
# db = "postgres://telemetry@127.0.0.1:5432/telemetry"

# The admin token for /metrics, the stats API and the dashboard. Either give a
# file holding it (created with a random token, mode 0600, if missing) or the
# token itself. With neither, a token is generated into `<db>.admin-token`.
# Only its SHA-256 is kept in memory.
# admin_token_file = "/etc/telemetry-collector/admin-token"
# admin_token = "a long random string"

# The key that pseudonymizes install ids (a keyed SHA-256). Generated on first
# start. Keep it outside the database so that a copied database cannot be
# joined with the ids on users' machines; point several collectors at the same
# file to share it. Default: `<db>.pseudonym-key`.
# pseudonym_key_file = "/etc/telemetry-collector/pseudonym-key"

# Largest request body in bytes, checked before and after gzip decompression.
body_limit = 262144

# Days raw events are kept for projects that do not set their own (open
# mode). Daily counters are kept for ever.
retention_days = 90

# How often the retention purge runs, in seconds.
purge_interval_secs = 3600

# Per-source limits on /v1/ingest and /v1/delete. The source address is kept
# in memory only and never written anywhere, logs included.
[rate_limit]
# Sustained requests per minute from one address; 0 turns the limit off.
requests_per_minute = 120
# Requests one address may send at once before the sustained rate applies.
burst = 60
# Behind a reverse proxy every request comes from the proxy's address. Set
# this to key the limit by the last address in X-Forwarded-For (the one your
# proxy appends) instead. Only do so if clients cannot reach the collector
# except through the proxy. The address is still kept in memory only.
behind_proxy = false

# The bounded queue in front of the single database writer.
[queue]
# Writes that may wait; when full, /v1/ingest answers 503 with Retry-After.
capacity = 1024
# Most writes committed together in one transaction (group commit).
max_batch = 256

# Limits on connections. Clients that send slowly, or not at all, are cut
# off, and no single address can hold every connection, so /healthz and
# everyone else keep getting answers.
[connections]
# Seconds a client has to send a whole request head (the request line and
# headers), counted from the moment the connection waits for one.
header_read_timeout_secs = 10
# Seconds a client has to send a whole request body, counted from its head.
body_read_timeout_secs = 30
# Seconds an idle keep-alive connection is kept open.
keep_alive_idle_secs = 15
# Most connections open at once; past it, new connections get a 503.
max_connections = 1024
# Most connections open at once from one address (IPv6: one /64); 0 for no
# limit. Not applied with rate_limit.behind_proxy, where every connection
# comes from the proxy.
max_per_source = 32

# Caps on how many distinct values one UTC day (of arrival) may add, so that
# made-up values cannot grow the database without bound. A value past its
# cap is stored as "(other)" and still counted; /metrics counts every fold
# in telemetry_cardinality_overflow_total. The caps hold per collector
# process and start again at midnight UTC.
[cardinality]
# Distinct values per project and prop, prop combinations per project and
# event, and values of each context field (tool version, OS, arch) per project.
values_per_day = 1000
# Open mode only (no [[projects]]): distinct projects a day; a new project
# past it is answered 429 until midnight UTC.
open_projects_per_day = 100
# Open mode only: distinct event names, and prop names, per project a day.
open_names_per_day = 100

# The web dashboard at /dashboard (sign in with the admin token).
[dashboard]
# Projects whose numbers are published read-only, without sign-in, at
# /public/<project> and /public/<project>/stats.json. Off for every project
# unless listed here. Public pages never show identity fields or install ids.
public_projects = []
# Public pages are differentially private: every number carries random noise,
# drawn once and kept, so that no single install can be told apart. This is
# the privacy loss epsilon that one install's data of one week may cost; lower
# is more private and noisier. At 1.0 a weekly count is within about +-90 of
# the truth 95% of the time. See PRIVACY.md, "Public pages".
public_epsilon_per_week = 1.0
# On public pages, any noisy count below this is shown as "< 10". At least 5.
public_min_count = 10
# The session cookie is marked Secure when the request came through a proxy
# that sent `X-Forwarded-Proto: https`. Set this to always mark it Secure.
secure_cookies = false

# Projects. With none listed the collector runs in OPEN MODE: it accepts any
# project and checks payloads against the generic tier policy only. List your
# projects so that payloads are also checked against their manifests.
#
# [[projects]]
# name = "demo-cli"
# # The project's telemetry.toml; relative paths are resolved against this file.
# manifest = "demo-cli.telemetry.toml"
# # The highest tier accepted: "aggregate", "anonymous" or "full".
# max_tier = "full"
# # Days raw events are kept; daily counters are kept for ever.
# retention_days = 90
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_parses_to_the_defaults() {
        let parsed = Config::parse(EXAMPLE).unwrap();
        let default = Config::default();
        assert_eq!(format!("{parsed:?}"), format!("{default:?}"));
        parsed.validate().unwrap();
    }

    #[test]
    fn example_with_the_project_uncommented_parses() {
        let text = EXAMPLE.replace("# [[projects]]", "[[projects]]").replace(
            "# name = \"demo-cli\"\n# # The project's telemetry.toml; relative paths are resolved against this file.\n# manifest",
            "name = \"demo-cli\"\nmanifest",
        );
        let config = Config::parse(&text).unwrap();
        assert_eq!(config.projects.len(), 1);
        assert_eq!(config.projects[0].max_tier, Tier::Full);
        assert_eq!(config.projects[0].retention_days, 90);
    }

    #[test]
    fn debug_hides_the_admin_token() {
        let config = Config {
            admin_token: Some("s3cret-token".to_owned()),
            ..Config::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret-token"), "{shown}");
        assert!(shown.contains("<hidden>"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(Config::parse("listn = \"x\"").is_err());
        let bad_listen = Config::parse("listen = \"localhost\"").unwrap();
        assert!(bad_listen.validate().is_err());
        let twice = Config::parse(
            "[[projects]]\nname = \"a\"\nmanifest = \"a.toml\"\n[[projects]]\nname = \"a\"\nmanifest = \"b.toml\"",
        )
        .unwrap();
        assert!(twice.validate().is_err());
        let off =
            Config::parse("[[projects]]\nname = \"a\"\nmanifest = \"a.toml\"\nmax_tier = \"off\"")
                .unwrap();
        assert!(off.validate().is_err());
    }

    #[test]
    fn blank_or_short_inline_admin_tokens_are_refused() {
        for (token, ok) in [
            ("   ", false),
            ("", false),
            ("fifteen-chars!!", false),
            ("  fifteen-chars!!  ", false),
            ("sixteen-chars!!!", true),
        ] {
            let config = Config {
                admin_token: Some(token.to_owned()),
                ..Config::default()
            };
            assert_eq!(config.validate().is_ok(), ok, "{token:?}");
        }
    }

    #[test]
    fn overrides_replace_file_values_and_files_sit_beside_the_db() {
        let mut config = Config::parse("listen = \"127.0.0.1:1\"\ndb = \"/srv/t/a.db\"").unwrap();
        config.apply_overrides(Some("127.0.0.1:2".to_owned()), None);
        assert_eq!(config.listen, "127.0.0.1:2");
        assert_eq!(config.db, "/srv/t/a.db");
        assert_eq!(
            config.pseudonym_key_path(),
            PathBuf::from("/srv/t/a.db.pseudonym-key")
        );
        assert_eq!(
            config.default_admin_token_path(),
            PathBuf::from("/srv/t/a.db.admin-token")
        );
    }
}
