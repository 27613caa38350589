//! The crash test: a real collector process is killed with SIGKILL in the
//! middle of a load; after a restart every acknowledged event is present
//! exactly once, and replaying everything counts nothing twice.

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use serde_json::{Value, json};
use telemetry_protocol::Uuid;
use tokio::sync::Notify;

use crate::common::*;

const WRITERS: usize = 4;
const EVENTS_PER_BATCH: usize = 10;
/// Acknowledged batches before the kill.
const KILL_AFTER: usize = 40;

/// A payload and the event ids it carries.
type Batch = (Value, Vec<Uuid>);

fn batch(install: Uuid) -> Batch {
    let ids: Vec<Uuid> = (0..EVENTS_PER_BATCH).map(|_| new_id()).collect();
    let events = ids
        .iter()
        .map(|id| json!({"id": id, "name": "command", "timestamp": now_ts(), "props": {"name": "greet"}}))
        .collect();
    (anonymous(install, events), ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_collector_mid_load_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), "");
    let db = dir.path().join("telemetry.db");
    let collector = Collector::start(&config, Stdio::null());
    let url = format!("{}/v1/ingest", collector.url);

    let sent: Arc<Mutex<Vec<Batch>>> = Arc::default();
    let acked: Arc<Mutex<Vec<Vec<Uuid>>>> = Arc::default();
    let acked_count = Arc::new(AtomicUsize::new(0));
    let enough = Arc::new(Notify::new());
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..WRITERS {
        let (sent, acked, acked_count, enough, url) = (
            sent.clone(),
            acked.clone(),
            acked_count.clone(),
            enough.clone(),
            url.clone(),
        );
        writers.spawn(async move {
            let client = client();
            let install = new_id();
            // Bounded so a collector that never dies cannot hang the test.
            for _ in 0..2000 {
                let (payload, ids) = batch(install);
                sent.lock().unwrap().push((payload.clone(), ids.clone()));
                match http_post(&client, &url, &payload).await {
                    Ok((200, body)) => {
                        assert_eq!(body["accepted"], EVENTS_PER_BATCH);
                        acked.lock().unwrap().push(ids);
                        if acked_count.fetch_add(1, Ordering::SeqCst) + 1 == KILL_AFTER {
                            enough.notify_one();
                        }
                    }
                    Ok((status, body)) => panic!("unexpected {status}: {body}"),
                    // The collector died under this request; it may or may not have committed.
                    Err(_) => break,
                }
            }
        });
    }
    tokio::select! {
        () = enough.notified() => {}
        stopped = writers.join_next() => panic!("a writer stopped before the kill: {stopped:?}"),
    }
    let mut collector = collector;
    collector.child.kill().unwrap(); // SIGKILL: no chance to flush or drain
    collector.child.wait().unwrap();
    while let Some(result) = writers.join_next().await {
        result.unwrap();
    }
    drop(collector);

    let acked = acked.lock().unwrap().clone();
    let sent = sent.lock().unwrap().clone();
    assert!(acked.len() >= KILL_AFTER);

    // Restart on the same files; SQLite recovers the write-ahead log.
    let collector = Collector::start(&config, Stdio::null());
    let conn = Connection::open(&db).unwrap();
    let mut present = conn
        .prepare("SELECT COUNT(*) FROM events WHERE event_id = ?1")
        .unwrap();
    for id in acked.iter().flatten() {
        let n: i64 = present
            .query_row([id.as_bytes().as_slice()], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1, "acknowledged event {id} is stored exactly once");
    }
    let stored: i64 = conn
        .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
        .unwrap();
    let counted: i64 = conn
        .query_row(
            "SELECT COALESCE(SUM(count), 0) FROM daily_counters",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        stored, counted,
        "the counters match the events: nothing half-committed"
    );

    // Clients retry what was not acknowledged (and may resend what was).
    let client = client();
    let url = format!("{}/v1/ingest", collector.url);
    let acked_set: std::collections::HashSet<Uuid> = acked.iter().flatten().copied().collect();
    for (payload, ids) in &sent {
        let (status, body) = http_post(&client, &url, payload).await.unwrap();
        assert_eq!(status, 200, "{body}");
        if ids.iter().all(|id| acked_set.contains(id)) {
            assert_eq!(body, json!({"accepted": 0, "duplicates": EVENTS_PER_BATCH}));
        }
    }
    let total = (sent.len() * EVENTS_PER_BATCH) as i64;
    let stored: i64 = conn
        .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
        .unwrap();
    let counted: i64 = conn
        .query_row("SELECT SUM(count) FROM daily_counters", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        (stored, counted),
        (total, total),
        "every event once, counted once"
    );
    drop(present);
    drop(conn);
    assert!(collector.terminate(), "SIGTERM stops the collector cleanly");
}
