//! `telemetry-collector`: the command line around the collector library.
//!
//! `serve` runs the server; `default-config` prints a commented example
//! config; `stats`, `purge` and `backup` work on a database directly;
//! `check-manifest` compares two versions of a tool's manifest.

// This is the binary's user interface: printing the start-up banner, stats and
// the example config to the terminal is its job.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use telemetry_collector::config::{self, Config};
use telemetry_collector::export::{self, CsvTable};
use telemetry_collector::ingest::today;
use telemetry_collector::secrets::TokenSource;
use telemetry_collector::store::{self, sqlite};
use telemetry_collector::store::{RetentionPolicy, Store};
use telemetry_collector::{AppState, stats};

#[derive(Parser)]
#[command(
    name = "telemetry-collector",
    version,
    about = "Self-hosted, privacy-first telemetry collector"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct Common {
    /// TOML config file.
    #[arg(long, env = "TELEMETRY_COLLECTOR_CONFIG")]
    config: Option<PathBuf>,
    /// SQLite database file or postgres:// URL [default: ./telemetry.db].
    #[arg(long, env = "TELEMETRY_COLLECTOR_DB")]
    db: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the collector.
    Serve {
        #[command(flatten)]
        common: Common,
        /// Address to listen on [default: 127.0.0.1:8750].
        #[arg(long, env = "TELEMETRY_COLLECTOR_LISTEN")]
        listen: Option<String>,
    },
    /// Print a fully commented example config.
    DefaultConfig,
    /// Print a project's stats, or with --event one event's prop breakdowns.
    #[command(after_help = telemetry_collector::report::FIELDS_HELP)]
    Stats {
        #[command(flatten)]
        common: Common,
        /// The project.
        #[arg(long)]
        project: String,
        /// Days to cover, ending today.
        #[arg(long, default_value_t = 30)]
        days: u32,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// For `--format csv`: which table (daily, weekly, versions, os, arch, events, tiers,
        /// retention, props, prop_weeks, adoption, commands).
        #[arg(long, default_value = "daily")]
        table: String,
        /// Print only this event's prop breakdowns (reads only its counters).
        #[arg(long)]
        event: Option<String>,
        /// With --event: only this prop's breakdown.
        #[arg(long, requires = "event")]
        prop: Option<String>,
    },
    /// Delete raw events older than each project's retention now.
    Purge {
        #[command(flatten)]
        common: Common,
    },
    /// Copy the database to FILE with SQLite's online backup API (safe while serving).
    /// SQLite only: back up PostgreSQL with pg_dump.
    Backup {
        #[command(flatten)]
        common: Common,
        /// Where to write the copy; must not exist.
        file: PathBuf,
    },
    /// Check that NEW, a tool's next manifest, keeps every promise OLD made:
    /// exits 1 naming each removed or retyped event, prop, enum value or
    /// identity field, and each raised min_tier. Additions are fine.
    CheckManifest {
        /// The manifest the released tool (and the collector) have now.
        old: PathBuf,
        /// The manifest of the next release.
        new: PathBuf,
    },
    /// Copy a SQLite database into an empty PostgreSQL database.
    Migrate {
        /// The source, as `sqlite:PATH`.
        #[arg(long)]
        from: String,
        /// The target, as `postgres://...`.
        #[arg(long)]
        to: String,
        /// The SQLite deployment's pseudonym key [default: PATH.pseudonym-key].
        /// Its fingerprint is recorded so collectors with another key refuse to start.
        #[arg(long)]
        pseudonym_key: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
    Csv,
}

fn check_manifest(old: &Path, new: &Path) -> Result<()> {
    let read = |path: &Path| -> Result<telemetry_protocol::Manifest> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        telemetry_protocol::Manifest::parse(&text)
            .with_context(|| format!("parsing {}", path.display()))
    };
    let changes =
        telemetry_collector::manifest_check::incompatible_changes(&read(old)?, &read(new)?);
    if changes.is_empty() {
        println!(
            "{} is compatible with {}: it only adds to it",
            new.display(),
            old.display()
        );
        return Ok(());
    }
    for change in &changes {
        println!("incompatible: {change}");
    }
    eprintln!(
        "{} incompatible change{} from {} to {}; declare a new event or prop instead \
         (see docs/integrating.md, 'Manifest evolution rules')",
        changes.len(),
        if changes.len() == 1 { "" } else { "s" },
        old.display(),
        new.display()
    );
    std::process::exit(1);
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // A panic message can quote a request; the hook logs only where it happened.
    telemetry_collector::panic_guard::install_hook();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    match cli.command {
        Command::DefaultConfig => {
            print!("{}", config::EXAMPLE);
            Ok(())
        }
        Command::CheckManifest { old, new } => check_manifest(&old, &new),
        Command::Serve { common, listen } => {
            let config = load_config(&common, listen)?;
            runtime.block_on(serve(config))
        }
        Command::Stats {
            common,
            project,
            days,
            format,
            table,
            event,
            prop,
        } => {
            let config = load_config(&common, None)?;
            let manifest = project_manifest(&config, &project)?;
            let store = open_existing(&config)?;
            let to = today();
            let from = to.add_days(1 - i32::try_from(days.clamp(1, 3660)).unwrap_or(30));
            if let Some(event) = event {
                let breakdown = runtime.block_on(async {
                    let b = async {
                        check_project(&*store, &config, &project).await?;
                        stats::event_breakdown(
                            &*store,
                            &project,
                            manifest.as_ref(),
                            from,
                            to,
                            &event,
                            prop.as_deref(),
                        )
                        .await
                        .context("reading the breakdown")
                    }
                    .await;
                    store.close().await.ok();
                    b
                })?;
                if let Some(prop) = &prop
                    && breakdown.props.is_empty()
                {
                    bail!("event {event:?} has no prop {prop:?}, declared or seen");
                }
                match format {
                    Format::Json => println!(
                        "{}",
                        serde_json::to_string_pretty(&breakdown).context("encoding")?
                    ),
                    Format::Table => print!("{}", export::event_table(&breakdown)),
                    Format::Csv => print!("{}", export::event_csv(&breakdown)),
                }
                return Ok(());
            }
            let stats = runtime.block_on(async {
                let s = async {
                    check_project(&*store, &config, &project).await?;
                    stats::project_stats_declared(&*store, &project, manifest.as_ref(), from, to)
                        .await
                        .context("reading stats")
                }
                .await;
                store.close().await.ok();
                s
            })?;
            match format {
                Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&stats).context("encoding stats")?
                ),
                Format::Table => print!("{}", export::table(&stats)),
                Format::Csv => {
                    let table: CsvTable = table.parse().context("choosing the csv table")?;
                    print!("{}", export::csv(&stats, table));
                }
            }
            Ok(())
        }
        Command::Purge { common } => {
            let config = load_config(&common, None)?;
            config.validate().context("checking the config")?;
            let store = open_existing(&config)?;
            let policy = RetentionPolicy {
                default_days: config.retention_days,
                per_project: config
                    .projects
                    .iter()
                    .map(|p| (p.name.clone(), p.retention_days))
                    .collect(),
            };
            let out = runtime
                .block_on(async {
                    let out = store.purge(&policy, today()).await;
                    store.close().await.ok();
                    out
                })
                .context("purging")?;
            println!(
                "purged {} events, {} installs, {} install-weeks, {} report ids",
                out.events, out.installs, out.install_weeks, out.report_ids
            );
            Ok(())
        }
        Command::Backup { common, file } => {
            let config = load_config(&common, None)?;
            if store::postgres::is_url(&config.db) {
                bail!("backup works on SQLite databases only; back up PostgreSQL with pg_dump");
            }
            let db = config.db_path();
            if !db.exists() {
                bail!("no database at {}", db.display());
            }
            if file.exists() {
                bail!("{} already exists; choose a new file", file.display());
            }
            sqlite::backup(&db, &file).context("backing up the database")?;
            println!("backed up {} to {}", db.display(), file.display());
            println!(
                "also keep a copy of {}: without it, deletion requests for existing installs cannot be matched",
                config.pseudonym_key_path().display()
            );
            Ok(())
        }
        Command::Migrate {
            from,
            to,
            pseudonym_key,
        } => {
            let Some(source) = from.strip_prefix("sqlite:") else {
                bail!("--from must be sqlite:PATH");
            };
            if !store::postgres::is_url(&to) {
                bail!("--to must be a postgres:// URL");
            }
            let source = PathBuf::from(source);
            let key = pseudonym_key.unwrap_or_else(|| {
                let mut name = source.clone().into_os_string();
                name.push(".pseudonym-key");
                PathBuf::from(name)
            });
            // Only an existing key is fingerprinted: migrating must not invent one.
            let fingerprint = if key.exists() {
                let hasher = telemetry_collector::secrets::InstallHasher::load_or_create(&key)
                    .context("reading the pseudonym key")?;
                Some(store::postgres::key_fingerprint(&hasher))
            } else {
                eprintln!(
                    "warning: no pseudonym key at {}; its fingerprint is not recorded",
                    key.display()
                );
                None
            };
            let out = runtime
                .block_on(store::migrate::sqlite_to_postgres(
                    &source,
                    &to,
                    fingerprint.as_deref(),
                ))
                .context("migrating to PostgreSQL")?;
            for (table, rows) in &out.rows {
                println!("{table}: {rows} rows");
            }
            println!(
                "done. Point every collector at the database and set pseudonym_key_file = {:?} \
                 (copy that file to each host) so install ids keep matching",
                display(&key)
            );
            Ok(())
        }
    }
}

/// Flags and env vars (already merged by clap) over the file over defaults.
fn load_config(common: &Common, listen: Option<String>) -> Result<Config> {
    let mut config = match &common.config {
        Some(path) => Config::load(path).context("reading the collector config")?,
        None => Config::default(),
    };
    config.apply_overrides(listen, common.db.clone());
    Ok(config)
}

fn open_existing(config: &Config) -> Result<Arc<dyn Store>> {
    let db = config.db_path();
    if !store::postgres::is_url(&config.db) && !db.exists() {
        bail!("no database at {}", db.display());
    }
    telemetry_collector::store::open(config).context("opening the database")
}

/// The manifest of `project` if the config lists it, so breakdowns know
/// every declared prop and its kind.
fn project_manifest(
    config: &Config,
    project: &str,
) -> Result<Option<telemetry_protocol::Manifest>> {
    let Some(p) = config.projects.iter().find(|p| p.name == project) else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&p.manifest)
        .with_context(|| format!("reading the manifest {}", p.manifest.display()))?;
    telemetry_protocol::Manifest::parse(&text)
        .map(Some)
        .with_context(|| format!("parsing the manifest {}", p.manifest.display()))
}

/// Fails unless `project` has stored data or is configured: a typo must not
/// print a table of zeros and exit 0.
async fn check_project(store: &dyn Store, config: &Config, project: &str) -> Result<()> {
    let stored = store.projects().await.context("listing the projects")?;
    if stored.iter().any(|p| p == project) || config.projects.iter().any(|p| p.name == project) {
        return Ok(());
    }
    let mut known: Vec<&str> = stored.iter().map(String::as_str).collect();
    known.extend(config.projects.iter().map(|p| p.name.as_str()));
    known.sort_unstable();
    known.dedup();
    if known.is_empty() {
        bail!("unknown project {project:?}: this database holds no project yet");
    }
    bail!(
        "unknown project {project:?}: this database holds {}",
        known.join(", ")
    );
}

async fn serve(config: Config) -> Result<()> {
    let (state, startup) = AppState::from_config(&config).context("starting the collector")?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    if startup.open_mode {
        tracing::warn!(
            "OPEN MODE: no projects are configured, so payloads from ANY project are accepted \
             and checked against the generic tier policy only, not against a manifest. \
             List your projects in the config file (see `telemetry-collector default-config`)."
        );
    }
    println!("telemetry-collector listening on http://{addr}");
    println!("dashboard: http://{addr}/");
    if store::postgres::is_url(&config.db) {
        // The URL may hold a password; never print it.
        println!("database: PostgreSQL");
    } else {
        println!("database: {}", display(&config.db_path()));
    }
    match &startup.token {
        TokenSource::Config => println!("admin token: set in the config file"),
        TokenSource::File(path) => println!("admin token: in {}", display(path)),
        TokenSource::Generated(path) => {
            println!("admin token: generated into {} (mode 0600)", display(path))
        }
    }
    tracing::info!(
        projects = state.projects().len(),
        pseudonym_key = %startup.pseudonym_key.display(),
        "collector started"
    );
    telemetry_collector::serve(listener, state, telemetry_collector::shutdown_signal())
        .await
        .context("serving")?;
    tracing::info!("collector stopped; every accepted write is committed");
    Ok(())
}

fn display(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_owned())
        .display()
        .to_string()
}
