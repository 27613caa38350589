//! The disk-full drill on PostgreSQL: a real collector process, over HTTP,
//! fills the tablespace its database lives in. Every request is answered
//! `200` only once committed, otherwise `503` with `Retry-After` and a JSON
//! reason (the server's SQLSTATE `53100 disk_full`), never `500`; every
//! acknowledged event is in the database, nothing refused is; once there is
//! room the same process takes writes again, and the refused batches count
//! exactly once when retried.
//!
//! The server is a process of its own in the machine's mount namespace, so
//! the private mount of the SQLite drill (`disk_full.rs`) would be invisible
//! to it. Instead the drill mounts a tmpfs at a fresh folder under `/tmp`,
//! hands it to the server's user, and creates a tablespace there and a
//! database in that tablespace. Only the database's files go there; the
//! write-ahead log stays on the server's own disk, so the server keeps
//! running and a transaction that cannot extend a table fails alone. The
//! collector migrates its schema with room to spare, then the tmpfs is
//! remounted just larger than what it holds, and remounted large again to
//! make room. A guard drops the database and the tablespace and unmounts,
//! whether the test passes or panics; a test killed outright leaves a
//! `/tmp/telemetry-pgfull-*` mount and a `tc_full_*` tablespace behind.
//!
//! It needs root (to mount) and a superuser on a PostgreSQL server on this
//! machine (for `CREATE TABLESPACE`), found as in `backends.rs`. With
//! `CI=true` either missing fails the test; elsewhere it is skipped with a
//! printed reason.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use telemetry_protocol::Uuid;

use crate::backends::{pg_connect, postgres_base_url, run_as_admin};
use crate::common::*;
use crate::disk_full::{
    Fill, Sent, assert_refusal, batch, counted, fill, post, storage_unavailable, totals,
};

/// The tmpfs size while there is room: the database's catalogs and the
/// collector's schema take about 2 MiB.
const ROOMY: u64 = 32 << 20;
/// Free space left once the collector's schema is in place: enough for a
/// few hundred batches, so the fill takes a second or so.
const HEADROOM: u64 = 512 << 10;
/// Bounds of the fill phase, whatever the server does.
const MAX_REQUESTS_PER_WRITER: usize = 5000;
const MAX_FILL_TIME: Duration = Duration::from_secs(60);

/// The tmpfs, the tablespace on it and the database in that tablespace;
/// dropping this removes all three, in the reverse order.
struct Tablespace {
    /// The mount point, `/tmp/telemetry-pgfull-<id>`.
    dir: PathBuf,
    /// Whether the tmpfs is mounted at `dir`.
    mounted: bool,
    /// The tablespace, once created.
    tablespace: Option<String>,
    /// The database, once created.
    database: Option<String>,
}

impl Tablespace {
    /// Sets everything up, or says why this machine cannot. A step that
    /// fails after the environment proved able is a test failure.
    async fn create() -> Result<Tablespace, String> {
        let base = postgres_base_url();
        let admin = pg_connect(&base)
            .await
            .map_err(|e| format!("cannot connect to PostgreSQL at TELEMETRY_TEST_POSTGRES: {e}"))?;
        // The tmpfs must belong to the server's user, who owns its data folder.
        let data_dir: String = admin
            .query_one("SELECT current_setting('data_directory')", &[])
            .await
            .map_err(|e| format!("cannot read data_directory (not a superuser?): {e}"))?
            .get(0);
        let owner = std::fs::metadata(&data_dir).map_err(|e| {
            format!("the server's data folder {data_dir} is not on this machine: {e}")
        })?;
        let id = new_id().simple().to_string();
        let mut this = Tablespace {
            dir: Path::new("/tmp").join(format!("telemetry-pgfull-{id}")),
            mounted: false,
            tablespace: None,
            database: None,
        };
        std::fs::create_dir(&this.dir).map_err(|e| format!("creating {:?}: {e}", this.dir))?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={ROOMY},mode=0700"))
            .arg("telemetry-pgfull")
            .arg(&this.dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "`mount -t tmpfs` failed ({}): {} (mounting needs root)",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        this.mounted = true;
        std::os::unix::fs::chown(&this.dir, Some(owner.uid()), Some(owner.gid()))
            .map_err(|e| format!("handing the tmpfs to the server's user: {e}"))?;
        let tablespace = format!("tc_full_{id}");
        admin
            .batch_execute(&format!(
                "CREATE TABLESPACE {tablespace} LOCATION '{}'",
                this.dir.display()
            ))
            .await
            .map_err(|e| format!("CREATE TABLESPACE failed (the server must be local and the user a superuser): {e}"))?;
        this.tablespace = Some(tablespace.clone());
        let database = format!("tc_full_{id}");
        admin
            .batch_execute(&format!(
                "CREATE DATABASE {database} TABLESPACE {tablespace}"
            ))
            .await
            .unwrap();
        this.database = Some(database);
        Ok(this)
    }

    /// A URL for the drill's database, on the server of `base`.
    fn url(&self, base: &str) -> String {
        let database = self.database.as_deref().expect("created");
        let (url, query) = match base.split_once('?') {
            Some((url, query)) => (url, format!("?{query}")),
            None => (base, String::new()),
        };
        let scheme_end = url.find("://").map_or(0, |i| i + 3);
        let server = match url[scheme_end..].find('/') {
            Some(slash) => &url[..scheme_end + slash],
            None => url,
        };
        format!("{server}/{database}{query}")
    }

    /// Bytes the tmpfs holds.
    fn used(&self) -> u64 {
        let output = Command::new("df")
            .args(["-B1", "--output=used"])
            .arg(&self.dir)
            .output()
            .unwrap();
        assert!(output.status.success(), "df {:?}", self.dir);
        let text = String::from_utf8(output.stdout).unwrap();
        text.lines().last().unwrap().trim().parse().unwrap()
    }

    /// Sets the tmpfs size, keeping what it holds.
    fn resize(&self, bytes: u64) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={bytes}")])
            .arg(&self.dir)
            .status()
            .unwrap();
        assert!(status.success(), "remounting the tmpfs at {bytes} bytes");
    }
}

impl Drop for Tablespace {
    // A leftover must be visible in the test output.
    #[allow(clippy::print_stderr)]
    fn drop(&mut self) {
        let (database, tablespace) = (self.database.take(), self.tablespace.take());
        // FORCE ends the connections of a collector still alive.
        let mut statements = Vec::new();
        if let Some(database) = &database {
            statements.push(format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"));
        }
        if let Some(tablespace) = &tablespace {
            statements.push(format!("DROP TABLESPACE IF EXISTS {tablespace}"));
        }
        if !statements.is_empty() {
            run_as_admin(statements);
        }
        if self.mounted {
            let unmounted = Command::new("umount")
                .arg(&self.dir)
                .status()
                .is_ok_and(|s| s.success());
            if !unmounted {
                eprintln!("cannot unmount {:?}; detaching it lazily", self.dir);
                let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Event ids (as stored) and the sum of `aggregate` counts that `sent` holds.
fn expected<'a>(sent: impl IntoIterator<Item = &'a Sent>) -> (BTreeSet<Vec<u8>>, i64) {
    let mut ids = BTreeSet::new();
    let mut counts = 0;
    for s in sent {
        if s.aggregate {
            counts += s.items as i64;
            continue;
        }
        for event in s.payload["events"].as_array().unwrap() {
            let id: Uuid = serde_json::from_value(event["id"].clone()).unwrap();
            ids.insert(id.as_bytes().to_vec());
        }
    }
    (ids, counts)
}

/// Event ids and the sum of `aggregate` counts the database holds.
async fn stored(db: &tokio_postgres::Client) -> (BTreeSet<Vec<u8>>, i64) {
    let ids = db
        .query("SELECT event_id FROM events", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get::<_, Vec<u8>>(0))
        .collect();
    let counts = db
        .query_one(
            "SELECT COALESCE(SUM(count), 0)::BIGINT FROM daily_counters WHERE tier = 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    (ids, counts)
}

/// Asserts that the database holds exactly the events and `aggregate`
/// counts of `sent`.
async fn same<'a>(
    db: &tokio_postgres::Client,
    sent: impl IntoIterator<Item = &'a Sent>,
    what: &str,
) {
    let (want_ids, want_counts) = expected(sent);
    let (ids, counts) = stored(db).await;
    assert_eq!(counts, want_counts, "{what}: aggregate counts");
    assert_eq!(
        (
            ids.len(),
            ids.difference(&want_ids).count(),
            want_ids.difference(&ids).count()
        ),
        (want_ids.len(), 0, 0),
        "{what}: (events stored, stored but not acknowledged, acknowledged but missing)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// A skip, and the figures of a run, must be visible in the test output.
#[allow(clippy::print_stderr)]
async fn a_full_tablespace_gets_503_and_nothing_unwritten_is_acknowledged() {
    let tablespace = match Tablespace::create().await {
        Ok(t) => t,
        Err(why) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true but the PostgreSQL disk-full drill cannot be set up: {why}");
            }
            eprintln!("PostgreSQL disk-full drill skipped: {why}");
            return;
        }
    };
    let db_url = tablespace.url(&postgres_base_url());
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("pseudonym-key");
    let config = config_file_at(
        dir.path(),
        Path::new(&db_url),
        &format!("pseudonym_key_file = {:?}", key.to_string_lossy()),
    );
    let log = dir.path().join("collector.log");
    let collector = Collector::start(&config, Stdio::from(std::fs::File::create(&log).unwrap()));
    let url = collector.url.clone();
    let ingest_url = format!("{url}/v1/ingest");
    let log_tail = || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    };
    // Connected while there is room: a new session may write a cache file
    // into the database's folder.
    let db = pg_connect(&db_url).await.unwrap();

    // The collector has migrated (it listens only after that); take the room away.
    tablespace.resize(tablespace.used() + HEADROOM);

    // Fill the tablespace: concurrent writers, so refusals hit group commits too.
    let started = Instant::now();
    let Fill {
        acked,
        refused,
        others,
    } = fill(&ingest_url, MAX_REQUESTS_PER_WRITER, MAX_FILL_TIME).await;
    assert!(
        others.is_empty(),
        "only 200 and 503 are acceptable answers, got {others:?}\ncollector log:\n{}",
        log_tail()
    );
    assert!(
        !refused.is_empty(),
        "the tablespace never filled: {} batches acknowledged in {:?}",
        acked.len(),
        started.elapsed()
    );
    assert!(
        !acked.is_empty(),
        "nothing was stored before the tablespace filled"
    );
    eprintln!(
        "PostgreSQL disk-full drill: {} batches acknowledged, {} refused in {:?}",
        acked.len(),
        refused.len(),
        started.elapsed()
    );
    for (_, answer) in &refused {
        assert_refusal(answer);
    }
    assert!(
        std::fs::read_to_string(&log).unwrap().contains("(53100)"),
        "the refusals were the server's disk_full\ncollector log:\n{}",
        log_tail()
    );

    // Exactly what was acknowledged is in the database: every acknowledged
    // event, and nothing of a refused batch.
    same(
        &db,
        &acked,
        "the database holds exactly the acknowledged batches while the tablespace is full",
    )
    .await;
    let client = client();
    assert_eq!(
        counted(&client, &url).await,
        totals(&acked),
        "counted == acknowledged while writes fail"
    );

    // While the tablespace stays full, writes keep failing and /metrics says
    // so. A small write may still fit in a page, so probe a few times.
    let (mut acked, mut refused) = (acked, refused);
    let mut flagged = false;
    for n in 0..5 {
        let probe = batch(new_id(), n);
        let answer = post(&client, &ingest_url, &probe.payload).await;
        if answer.0 == 200 {
            acked.push(probe);
            continue;
        }
        assert_refusal(&answer);
        assert_eq!(storage_unavailable(&client, &url).await, "1");
        refused.push((probe, answer));
        flagged = true;
        break;
    }
    assert!(flagged, "writes still fail before room is made");
    same(&db, &acked, "still only the acknowledged batches").await;

    tablespace.resize(ROOMY);

    // Every refused batch is stored now, whole and once: none of it had been.
    for (sent, _) in &refused {
        let answer = post(&client, &ingest_url, &sent.payload).await;
        assert_eq!(
            (answer.0, &answer.2),
            (200, &json!({"accepted": sent.records, "duplicates": 0})),
            "a refused batch is accepted in full once there is room\ncollector log:\n{}",
            log_tail()
        );
    }
    assert_eq!(
        storage_unavailable(&client, &url).await,
        "0",
        "a committed write clears the gauge"
    );
    // New data flows again.
    let install = new_id();
    let fresh: Vec<Sent> = (0..10).map(|n| batch(install, n)).collect();
    for sent in &fresh {
        let answer = post(&client, &ingest_url, &sent.payload).await;
        assert_eq!(
            (answer.0, &answer.2),
            (200, &json!({"accepted": sent.records, "duplicates": 0}))
        );
    }
    // Replaying everything stores nothing twice.
    let everything: Vec<&Sent> = acked
        .iter()
        .chain(refused.iter().map(|(s, _)| s))
        .chain(&fresh)
        .collect();
    for sent in &everything {
        let answer = post(&client, &ingest_url, &sent.payload).await;
        assert_eq!(
            (answer.0, &answer.2),
            (200, &json!({"accepted": 0, "duplicates": sent.records}))
        );
    }
    assert_eq!(
        counted(&client, &url).await,
        totals(everything.iter().copied()),
        "every batch counted exactly once"
    );
    same(
        &db,
        everything.iter().copied(),
        "the database holds every batch once",
    )
    .await;
    drop(db);
    assert!(collector.terminate(), "SIGTERM stops the collector cleanly");
}
