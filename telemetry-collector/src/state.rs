//! The long-lived server state every handler shares, and how it is built
//! from a [`Config`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use telemetry_protocol::{Manifest, Tier};

use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::secrets::{AdminToken, InstallHasher, SecretError, TokenSource};
use crate::store::{RetentionPolicy, Store, StoreError};

/// A project the collector accepts, with what it was configured to allow.
#[derive(Debug, Clone)]
pub struct Project {
    /// Its manifest; payloads are validated against it.
    pub manifest: Manifest,
    /// The highest tier accepted.
    pub max_tier: Tier,
    /// Days raw events are kept.
    pub retention_days: u32,
}

/// The state shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    /// Where everything is stored; the only way to the database.
    store: Arc<dyn Store>,
    /// Configured projects by name; empty in open mode.
    projects: BTreeMap<String, Project>,
    /// Raw-event retention for projects without a configured one.
    default_retention_days: u32,
    /// Pseudonymizes install ids before they reach the store.
    hasher: InstallHasher,
    /// The admin token's digest.
    admin: AdminToken,
    /// Per-source request limits, in memory only.
    limiter: RateLimiter,
    /// Request and item counters for `/metrics`.
    metrics: Metrics,
    /// The caps on distinct values per day, and what today admitted.
    cardinality: crate::cardinality::Cardinality,
    /// The daily cap on refusal details and the skew-warning throttle.
    skew: crate::skew::SkewLog,
    /// Largest body accepted, before and after decompression.
    body_limit: usize,
    /// Connection limits and timeouts, for [`crate::serve`].
    connections: crate::config::ConnectionConfig,
    /// How often the retention purge runs.
    purge_interval: std::time::Duration,
    /// The dashboard's `[dashboard]` settings.
    dashboard: crate::dashboard::DashboardSettings,
    /// Dashboard sign-ins, in memory only, shared by every router built from this state.
    dashboard_sessions: Arc<crate::dashboard::session::Sessions>,
}

/// What start-up found, for the messages the binary prints.
#[derive(Debug, Clone)]
pub struct Startup {
    /// Where the admin token came from.
    pub token: TokenSource,
    /// Where the pseudonymization key lives.
    pub pseudonym_key: PathBuf,
    /// Whether no projects are configured, so any project is accepted.
    pub open_mode: bool,
}

/// The collector could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A secret file could not be read or created.
    #[error("secret file: {0}")]
    Secret(#[from] SecretError),
    /// The database could not be opened or migrated.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// A project's manifest could not be read.
    #[error("manifest of project {project:?} at {path}: {message}")]
    Manifest {
        /// The project.
        project: String,
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl AppState {
    /// Validates `config`, opens its SQLite database, and loads the manifests,
    /// the pseudonymization key and the admin token (creating those two on
    /// first start).
    pub fn from_config(config: &Config) -> Result<(AppState, Startup), SetupError> {
        config.validate()?;
        let store = crate::store::open(config)?;
        AppState::with_store(config, store)
    }

    /// Like [`AppState::from_config`], with an already opened store.
    pub fn with_store(
        config: &Config,
        store: Arc<dyn Store>,
    ) -> Result<(AppState, Startup), SetupError> {
        config.validate()?;
        let mut projects = BTreeMap::new();
        for p in &config.projects {
            let manifest_err = |message: String| SetupError::Manifest {
                project: p.name.clone(),
                path: p.manifest.clone(),
                message,
            };
            let text =
                std::fs::read_to_string(&p.manifest).map_err(|e| manifest_err(e.to_string()))?;
            let manifest = Manifest::parse(&text).map_err(|e| manifest_err(e.to_string()))?;
            if manifest.project != p.name {
                return Err(manifest_err(format!(
                    "the manifest declares project {:?}",
                    manifest.project
                )));
            }
            projects.insert(
                p.name.clone(),
                Project {
                    manifest,
                    max_tier: p.max_tier,
                    retention_days: p.retention_days,
                },
            );
        }
        let pseudonym_key = config.pseudonym_key_path();
        let hasher = InstallHasher::load_or_create(&pseudonym_key)?;
        let (admin, token) = match (&config.admin_token, &config.admin_token_file) {
            (Some(token), _) => (AdminToken::from_token(token), TokenSource::Config),
            (None, Some(path)) => AdminToken::load_or_create(path)?,
            (None, None) => AdminToken::load_or_create(&config.default_admin_token_path())?,
        };
        let open_mode = projects.is_empty();
        let state = AppState {
            inner: Arc::new(Inner {
                store,
                projects,
                default_retention_days: config.retention_days,
                hasher,
                admin,
                limiter: RateLimiter::new(config.rate_limit),
                metrics: Metrics::default(),
                cardinality: crate::cardinality::Cardinality::new(config.cardinality, open_mode),
                skew: crate::skew::SkewLog::default(),
                body_limit: config.body_limit,
                connections: crate::config::ConnectionConfig {
                    // Behind a proxy every connection comes from the proxy.
                    max_per_source: if config.rate_limit.behind_proxy {
                        0
                    } else {
                        config.connections.max_per_source
                    },
                    ..config.connections
                },
                purge_interval: std::time::Duration::from_secs(config.purge_interval_secs.max(1)),
                dashboard: config.dashboard.clone(),
                dashboard_sessions: Arc::default(),
            }),
        };
        Ok((
            state,
            Startup {
                token,
                pseudonym_key,
                open_mode,
            },
        ))
    }

    /// The store.
    pub fn store(&self) -> &dyn Store {
        &*self.inner.store
    }

    /// The configured project `name`, or `None` (always `None` in open mode).
    pub fn project(&self, name: &str) -> Option<&Project> {
        self.inner.projects.get(name)
    }

    /// The configured projects, by name; empty in open mode.
    pub fn projects(&self) -> &BTreeMap<String, Project> {
        &self.inner.projects
    }

    /// Whether any project is accepted.
    pub fn open_mode(&self) -> bool {
        self.inner.projects.is_empty()
    }

    /// The retention policy built from the configured projects.
    pub fn retention(&self) -> RetentionPolicy {
        RetentionPolicy {
            default_days: self.inner.default_retention_days,
            per_project: self
                .inner
                .projects
                .iter()
                .map(|(name, p)| (name.clone(), p.retention_days))
                .collect(),
        }
    }

    /// Raw-event retention for projects without a configured one (open mode).
    pub fn default_retention_days(&self) -> u32 {
        self.inner.default_retention_days
    }

    /// Version-skew bookkeeping.
    pub fn skew(&self) -> &crate::skew::SkewLog {
        &self.inner.skew
    }

    /// The install-id hasher.
    pub fn hasher(&self) -> &InstallHasher {
        &self.inner.hasher
    }

    /// Whether `token` is the admin token.
    pub fn verify_admin(&self, token: &str) -> bool {
        self.inner.admin.verify(token)
    }

    /// The rate limiter.
    pub fn limiter(&self) -> &RateLimiter {
        &self.inner.limiter
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The cardinality caps.
    pub fn cardinality(&self) -> &crate::cardinality::Cardinality {
        &self.inner.cardinality
    }

    /// The body limit in bytes.
    pub fn body_limit(&self) -> usize {
        self.inner.body_limit
    }

    /// The connection limits [`crate::serve`] applies.
    pub fn connections(&self) -> crate::config::ConnectionConfig {
        self.inner.connections
    }

    /// How often the retention purge runs.
    pub fn purge_interval(&self) -> std::time::Duration {
        self.inner.purge_interval
    }

    /// The dashboard's settings.
    pub fn dashboard(&self) -> &crate::dashboard::DashboardSettings {
        &self.inner.dashboard
    }

    /// The dashboard's live sign-in sessions.
    pub fn dashboard_sessions(&self) -> &Arc<crate::dashboard::session::Sessions> {
        &self.inner.dashboard_sessions
    }
}
